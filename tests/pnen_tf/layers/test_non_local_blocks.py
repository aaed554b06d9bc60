"""PNB and NLB against the NumPy transcription of eq. (6)-(12), plus the shared layer checks."""

import numpy as np
import pytest
import reference
from harness import run_layer_test

from pnen_tf.layers import AsymmetricPyramidNonLocalBlock, NonLocalBlock, PyramidNonLocalBlock

RNG = np.random.default_rng(0)


def _input(batch=2, height=7, width=9, channels=8):
    return RNG.normal(size=(batch, height, width, channels)).astype("float32")


def _assert_matches_reference(layer, x):
    out = np.asarray(layer(x), np.float64)
    expected = reference.nonlocal_block(x.astype(np.float64), *reference.layer_branches(layer))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["official", "paper"])
@pytest.mark.parametrize("tiled", [False, True])
def test_pnb_matches_numpy_equations(variant, tiled):
    # tiled=True forces the memory-linear path with tiles smaller than the problem.
    tiles = {"query_chunk": 5, "key_block": 3} if tiled else {}
    layer = PyramidNonLocalBlock(scales=(1, 2, 4), variant=variant, **tiles)
    _assert_matches_reference(layer, _input())


@pytest.mark.parametrize("size", [(16, 22), (14, 13), (9, 17)])
def test_strided_keys_are_padded_as_same_convolutions_at_every_remainder(size):
    """A 3x3 key at stride 8 needs "same" padding of (ceil(H/8) - 1) * 8 + 3 - H, clamped at 0:
    negative at H % 8 in {0, 6, 7} (16, 22, 14), zero or positive elsewhere (13, 9, 17)."""
    layer = PyramidNonLocalBlock(scales=(2, 4, 8), query_chunk=16, key_block=5)
    _assert_matches_reference(layer, _input(batch=1, height=size[0], width=size[1]))


@pytest.mark.parametrize("variant", ["official", "classic"])
def test_nlb_matches_numpy_equations(variant):
    _assert_matches_reference(NonLocalBlock(variant=variant, query_chunk=7, key_block=10), _input())
    _assert_matches_reference(NonLocalBlock(variant=variant), _input())


def test_pnb_structures_follow_the_code_and_the_text():
    official = PyramidNonLocalBlock()
    official.build((None, None, None, 64))
    assert [c.kernel_size for c in official.key_convs] == [(3, 3)] * 3
    assert [c.strides for c in official.value_convs] == [(2, 2), (4, 4), (8, 8)]
    assert [c.filters for c in official.query_convs] == [32] * 3
    assert official.count_params() == 184_768
    paper = PyramidNonLocalBlock(variant="paper")
    paper.build((None, None, None, 64))
    assert len(paper.query_convs) == 1 and paper.query_convs[0].filters == 64
    assert [c.kernel_size for c in paper.key_convs] == [(2, 2), (4, 4), (8, 8)]
    assert [c.filters for c in paper.value_convs] == [32] * 3
    assert paper.count_params() == 526_752
    nlb = NonLocalBlock()
    nlb.build((None, None, None, 64))
    assert nlb.count_params() == 61_632


@pytest.mark.parametrize("shape", [(1, 7, 9, 8), (3, 1, 1, 8), (2, 17, 5, 8)])
def test_any_size_smaller_than_the_largest_stride(shape):
    layer = PyramidNonLocalBlock()
    assert tuple(layer(np.ones(shape, "float32")).shape) == shape


def _output_and_gradients(layer, x, training):
    import tensorflow as tf

    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * tf.cos(y))
        return y, tape.gradient(loss, [x] + layer.trainable_weights)

    y, grads = run(tf.constant(x))
    return y.numpy(), [g.numpy() if g is not None else None for g in grads]


@pytest.mark.parametrize("tiles", [{}, {"query_chunk": 6, "key_block": 5}])
@pytest.mark.parametrize("rematerialize", [True, False])
@pytest.mark.parametrize("variant", ["official", "paper"])
def test_training_mode_gives_the_values_and_gradients_of_plain_autodiff(tiles, rematerialize, variant):
    # training=True recomputes each branch in the backward pass and runs the query chunks in
    # turn; values and every gradient must be those of TensorFlow's own differentiation of the
    # direct softmax (the default plan at this size), in inference mode.
    x = _input()
    direct = PyramidNonLocalBlock(scales=(1, 2, 4), variant=variant)
    layer = PyramidNonLocalBlock(scales=(1, 2, 4), variant=variant, rematerialize=rematerialize, **tiles)
    direct(x), layer(x)
    layer.set_weights(direct.get_weights())
    reference_y, reference_grads = _output_and_gradients(direct, x, training=False)
    y, grads = _output_and_gradients(layer, x, training=True)
    np.testing.assert_allclose(y, reference_y, rtol=1e-5, atol=1e-5)
    scale = max(np.abs(g).max() for g in reference_grads if g is not None)
    names = ["input"] + [w.path for w in layer.trainable_weights]
    for name, got, want in zip(names, grads, reference_grads):
        # Key biases get no gradient (see the harness test below): both are zero up to rounding.
        got, want = (np.zeros(1) if g is None else g for g in (got, want))
        tolerance = 1e-4 * (scale if "key" in name and "bias" in name else np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=tolerance, err_msg=name)


# A key bias adds q.b to every logit of a query: softmax cancels it, so it gets no gradient
# (the authors' convs carry it and the paper's parameter counts include it).
@pytest.mark.parametrize("tiles", [{}, {"query_chunk": 16, "key_block": 8}])
def test_pnb_layer_harness(tmp_path, tiles):
    run_layer_test(PyramidNonLocalBlock, {"scales": (2, 4), **tiles}, _input(), tmp_path,
                   no_gradient=("key_0/bias", "key_1/bias"))


def test_nlb_layer_harness(tmp_path):
    run_layer_test(NonLocalBlock, {"variant": "classic"}, _input(), tmp_path,
                   no_gradient=("key_0/bias",))


def test_wrong_channels_rank_and_empty_input_name_the_layer_and_shape():
    layer = PyramidNonLocalBlock(name="pnb_x")
    layer(_input(channels=8))
    with pytest.raises(ValueError, match=r"pnb_x.*\(1, 4, 4, 3\)"):
        layer(np.zeros((1, 4, 4, 3), "float32"))
    with pytest.raises(ValueError, match=r"4-D.*\(4, 4, 8\)"):
        PyramidNonLocalBlock()(np.zeros((4, 4, 8), "float32"))
    with pytest.raises(ValueError, match=r"empty input.*\(1, 0, 4, 8\)"):
        NonLocalBlock(name="nlb_y")(np.zeros((1, 0, 4, 8), "float32"))


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="variant"):
        PyramidNonLocalBlock(variant="papr")
    with pytest.raises(ValueError, match="attention_dtype"):
        NonLocalBlock(attention_dtype="float16")
    with pytest.raises(ValueError, match="kernel_sizes"):
        PyramidNonLocalBlock(scales=(2, 4), kernel_sizes=(3,))


@pytest.mark.parametrize("block", [PyramidNonLocalBlock(), NonLocalBlock(),
                                   AsymmetricPyramidNonLocalBlock(pool_sizes=(1, 3))],
                         ids=["pnb", "nlb", "apnb"])
def test_start_as_identity_returns_the_input_and_still_gets_a_gradient(block):
    """The zeroed branch end passes the input through, and its own gradient is the attended
    features (non-zero), so training grows the branch; the rest is untouched."""
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(1).normal(size=(2, 11, 13, 8)).astype("float32"))
    block(x)
    before = {w.path: np.asarray(w) for w in block.weights}
    block.start_as_identity()
    with tf.GradientTape() as tape:
        y = block(x, training=True)
        loss = tf.reduce_sum(y * tf.sin(x))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    end = {w.path for w in block.branch_end.weights}
    assert before[block.branch_end.kernel.path].any()
    for weight in block.weights:
        if weight.path in end:
            assert not np.asarray(weight).any()
        else:
            np.testing.assert_array_equal(np.asarray(weight), before[weight.path])
    kernel_gradient = tape.gradient(loss, block.branch_end.kernel)
    assert np.abs(np.asarray(kernel_gradient)).max() > 1e-3
