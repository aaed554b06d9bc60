"""DRB, memory block, dense block and the fusion layers: structure, numerics, harness."""

import keras
import numpy as np
import pytest
import reference
from harness import run_layer_test

from pnen_tf.layers import (DilatedResidualBlock, MemoryBlock, PixelShuffle, ResidualDenseBlock,
                            WeightedSum)

RNG = np.random.default_rng(7)


def _input(channels=8, batch=2, height=7, width=9):
    return RNG.normal(size=(batch, height, width, channels)).astype("float32")


def test_drb_harness_and_dilations(tmp_path):
    layer = run_layer_test(DilatedResidualBlock, {}, _input(), tmp_path)
    rates = [conv.dilation_rate for group in layer.groups for conv in (group[0], group[3])]
    assert rates == [(r, r) for r in (1, 1, 2, 2, 4, 4, 2, 2, 1, 1)]


def test_drb_inference_equals_numpy_groups():
    layer = DilatedResidualBlock(dilations=(1, 1))  # dilation 1: the NumPy "same" conv applies
    x = _input()
    out = np.asarray(layer(x, training=False), np.float64)
    h = x.astype(np.float64)
    for conv_a, norm, _, conv_b in layer.groups:
        gamma, beta, mean, var = (np.asarray(w, np.float64) for w in norm.get_weights())
        a = reference.conv2d_same(h, conv_a.get_weights()[0], 0.0)
        a = np.maximum((a - mean) / np.sqrt(var + norm.epsilon) * gamma + beta, 0)
        h = h + reference.conv2d_same(a, *conv_b.get_weights())
    np.testing.assert_allclose(out, h, rtol=1e-4, atol=1e-4)


def test_drb_rejects_a_channel_mismatch():
    with pytest.raises(ValueError, match=r"built for 16 channels.*\(2, 7, 9, 8\)"):
        DilatedResidualBlock(channels=16)(_input())


def test_memory_block_harness_and_gate_width(tmp_path):
    x = _input()
    layer = run_layer_test(MemoryBlock, {"num_recursions": 3}, [x, x], tmp_path)
    assert layer.gate_conv.kernel.shape == (1, 1, (3 + 2) * 8, 8)


def test_memory_block_recursions_share_convolutions_not_batch_norms():
    one, three = MemoryBlock(num_recursions=1), MemoryBlock(num_recursions=3)
    one(_input()), three(_input())
    conv_params = lambda block: sum(c.count_params() for c in block.recursive_convs)  # noqa: E731
    assert conv_params(one) == conv_params(three) == 2 * 3 * 3 * 8 * 8
    assert len(three.recursive_norms) == 3
    gate_growth = three.gate_conv.count_params() - one.gate_conv.count_params()
    # + the gate's wider batch norm (2 x 8 channels) + two batch norms per extra recursion
    assert three.count_params() - one.count_params() == gate_growth + 4 * 2 * 8 + 2 * 2 * 4 * 8


def test_memory_block_equals_numpy_recursion():
    layer = MemoryBlock(num_recursions=2)
    x = _input()
    out = np.asarray(layer(x, training=False), np.float64)

    def bn_relu_conv(norm, conv, h):
        gamma, beta, mean, var = (np.asarray(w, np.float64) for w in norm.get_weights())
        a = np.maximum((h - mean) / np.sqrt(var + norm.epsilon) * gamma + beta, 0)
        return reference.conv2d_same(a, conv.get_weights()[0], 0.0)

    h, short_term = x.astype(np.float64), []
    for norms in layer.recursive_norms:
        residual = h
        for norm, conv in zip(norms, layer.recursive_convs):
            residual = bn_relu_conv(norm, conv, residual)
        h = h + residual
        short_term.append(h)
    expected = bn_relu_conv(layer.gate_norm, layer.gate_conv,
                            np.concatenate(short_term + [x.astype(np.float64)], -1))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_residual_dense_block_harness_and_growth(tmp_path):
    layer = run_layer_test(ResidualDenseBlock, {"growth": 4, "num_layers": 3}, _input(), tmp_path)
    assert [conv.kernel.shape[2] for conv in layer.dense_convs] == [8, 12, 16]
    assert layer.local_fusion.kernel.shape == (1, 1, 20, 8)


def test_weighted_sum_is_eq4():
    layer = WeightedSum()
    a, b = _input(), _input()
    np.testing.assert_allclose(np.asarray(layer([a, b])), (a + b) / 2, rtol=1e-6, atol=1e-6)
    layer.fusion_weights.assign([0.25, 2.0])
    np.testing.assert_allclose(np.asarray(layer([a, b])), 0.25 * a + 2 * b, rtol=1e-6, atol=1e-6)


def test_pixel_shuffle_is_depth_to_space():
    x = np.arange(2 * 2 * 3 * 9, dtype="float32").reshape(2, 2, 3, 9)
    out = np.asarray(PixelShuffle(3)(x))
    assert out.shape == (2, 6, 9, 1)
    assert out[0, 1, 2, 0] == x[0, 0, 0, 1 * 3 + 2]
    assert PixelShuffle(3).compute_output_shape((None, None, 4, 18)) == (None, None, 12, 2)


def test_blocks_serialise_by_registered_name():
    config = keras.saving.serialize_keras_object(MemoryBlock(num_recursions=2))
    assert config["registered_name"] == "pnen_tf>MemoryBlock"
