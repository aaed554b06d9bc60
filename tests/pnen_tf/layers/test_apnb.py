"""APNB against a NumPy transcription of ANN's block, the shared layer checks, any size under
`tf.function` and JAX, and its place in the builders and `training.fit`."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import reference
from harness import run_layer_test

from pnen_tf import models
from pnen_tf.layers import AsymmetricPyramidNonLocalBlock
from pnen_tf.layers.asymmetric_pyramid import adaptive_average_pool

RNG = np.random.default_rng(0)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _input(batch=2, height=7, width=9, channels=8):
    return RNG.normal(size=(batch, height, width, channels)).astype("float32")


def _weights(conv):
    return [np.asarray(w, np.float64) for w in conv.get_weights()]


def _reference(layer, x):
    convs = (layer.query_key_conv, layer.value_conv, layer.output_conv, layer.fusion_conv)
    return reference.asymmetric_pyramid_block(x.astype(np.float64), *map(_weights, convs),
                                              pool_sizes=layer.pool_sizes)


def test_pooling_bins_are_pytorchs():
    # torch.nn.AdaptiveAvgPool1d(3) gives [0.5, 2.0, 3.5] for arange(5.) and [0.0, 0.5, 1.0]
    # for arange(2.): windows [0, 2), [1, 4), [3, 5) and, longer than the input, [0, 1), [0, 2),
    # [1, 2).
    five = np.arange(5.0, dtype="float32").reshape(1, 5, 1, 1) * np.ones((1, 1, 2, 1), "float32")
    pooled = np.asarray(adaptive_average_pool(five, 3))
    np.testing.assert_allclose(pooled[0, :, 0, 0], [0.5, 2, 3.5])
    two = np.arange(2.0, dtype="float32").reshape(1, 1, 2, 1)
    np.testing.assert_allclose(np.asarray(adaptive_average_pool(two, 3))[0, 0, :, 0], [0, 0.5, 1])


@pytest.mark.parametrize("shape", [(2, 7, 9), (1, 1, 1), (1, 3, 5), (1, 8, 8), (1, 17, 13)])
def test_matches_numpy_reference_at_any_size(shape):
    x = _input(*shape)
    layer = AsymmetricPyramidNonLocalBlock()
    out = np.asarray(layer(x), np.float64)
    np.testing.assert_allclose(out, _reference(layer, x), rtol=1e-5, atol=1e-5)
    pooled = np.asarray(adaptive_average_pool(x, 6), np.float64)
    np.testing.assert_allclose(pooled, reference.adaptive_average_pool(x, 6), rtol=1e-5, atol=1e-6)


def test_tiled_attention_and_other_widths_match_the_reference():
    x = _input(2, 11, 6)
    layer = AsymmetricPyramidNonLocalBlock(key_channels=3, value_channels=5, pool_sizes=(2, 4),
                                           query_chunk=16, key_block=7)
    np.testing.assert_allclose(np.asarray(layer(x), np.float64), _reference(layer, x),
                               rtol=1e-5, atol=1e-5)
    assert layer.value_conv.filters == 5 and layer.pyramid(x).shape == (2, 1, 20, 8)


def test_parameters_at_64_channels():
    layer = AsymmetricPyramidNonLocalBlock()
    layer.build((None, None, None, 64))
    # query/key 64*32+32, value 64*32+32, W 32*64+64, fusion 128*64+64
    assert layer.count_params() == 14_528
    assert sum(s * s for s in layer.pool_sizes) == 110


def test_layer_harness(tmp_path):
    run_layer_test(AsymmetricPyramidNonLocalBlock, {"pool_sizes": (1, 3), "key_channels": 4},
                   _input(), tmp_path)


def test_one_graph_serves_every_size():
    import tensorflow as tf

    layer = AsymmetricPyramidNonLocalBlock()
    layer(_input())
    graph = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, 8])])
    for shape in [(1, 2, 3), (2, 9, 7), (1, 30, 17)]:
        x = _input(*shape)
        np.testing.assert_allclose(graph(x).numpy(), np.asarray(layer(x)), rtol=1e-5, atol=1e-5)
    assert graph.experimental_get_tracing_count() == 1


def test_training_mode_gives_the_gradients_of_plain_autodiff():
    # training=True runs the tiled attention's query chunks in turn (custom gradient); the
    # values and gradients must be those of TensorFlow's differentiation of the direct softmax.
    import tensorflow as tf

    x = tf.constant(_input())
    direct = AsymmetricPyramidNonLocalBlock()
    tiled = AsymmetricPyramidNonLocalBlock(query_chunk=16, key_block=8)
    direct(x), tiled(x)
    tiled.set_weights(direct.get_weights())

    def run(layer, training):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * tf.cos(y))
        return y.numpy(), [g.numpy() for g in tape.gradient(loss, [x] + layer.trainable_weights)]

    (want_y, want), (got_y, got) = run(direct, False), run(tiled, True)
    np.testing.assert_allclose(got_y, want_y, rtol=1e-5, atol=1e-5)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max())


def test_cost_counter_sees_the_attention():
    from benchmarks.measure import count_macs

    layer = AsymmetricPyramidNonLocalBlock()
    with count_macs() as macs:
        layer(_input(2, 12, 10, 8))
    assert macs["attention"] == 2 * 12 * 10 * 110 * (4 + 4)
    # Full-resolution 1x1 convs (query/key, W, fusion); the value conv on the 110 pooled positions.
    assert macs["conv"] == 2 * 12 * 10 * (8 * 4 + 4 * 8 + 16 * 8) + 2 * 110 * 8 * 4


def test_builders_and_training_flag_select_it():
    from training.config import build_options, parser, resolve

    for name, options in [("pnen", {"num_groups": 1}), ("memnet", {"num_memory_blocks": 1,
                                                                   "num_recursions": 1}),
                          ("rdn", {"num_blocks": 2, "num_layers": 2, "growth": 4})]:
        model = models.build(name, channels=8, nonlocal_block="apnb", **options)
        blocks = [la for la in model.layers if isinstance(la, AsymmetricPyramidNonLocalBlock)]
        assert blocks and blocks[0].name.startswith("apnb_"), name
        image = np.zeros((1, 9, 10, model.inputs[0].shape[-1]), "float32")
        assert model(image).shape[1:3] == (9, 10)
    with pytest.raises(ValueError, match="apnb.*variant"):
        models.build("memnet", channels=8, nonlocal_block="apnb", nonlocal_variant="official")
    config = resolve(parser().parse_args(["--task", "smooth", "--nonlocal", "apnb"]))
    assert build_options(config)["nonlocal_block"] == "apnb"


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="pool_sizes"):
        AsymmetricPyramidNonLocalBlock(pool_sizes=(0, 3))
    with pytest.raises(ValueError, match=r"apnb_z.*\(1, 4, 4, 3\)"):
        layer = AsymmetricPyramidNonLocalBlock(name="apnb_z")
        layer(_input(channels=8))
        layer(np.zeros((1, 4, 4, 3), "float32"))


JAX_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import jax, jax.numpy as jnp
    import keras
    assert keras.backend.backend() == "jax"
    from pnen_tf.saving import load_model

    directory = sys.argv[1]
    model = load_model(f"{directory}/apnb.keras")
    for name in ("small", "large"):
        x = np.load(f"{directory}/{name}.npy")
        np.save(f"{directory}/{name}_jax.npy", np.asarray(model.predict_on_batch(x)))
    x = jnp.asarray(np.load(f"{directory}/large.npy"))
    grad = jax.grad(lambda a: jnp.sum(jnp.sin(model(a, training=True))))(x)
    np.save(f"{directory}/grad_jax.npy", np.asarray(grad))
""")


def test_same_numbers_under_jax(tmp_path):
    pytest.importorskip("jax", reason="jax is in the test extra: pip install .[test]")
    import keras
    import tensorflow as tf

    from pnen_tf.saving import save_model

    inputs = keras.Input((None, None, 8))
    model = keras.Model(inputs, AsymmetricPyramidNonLocalBlock(query_chunk=16, key_block=8)(inputs))
    save_model(model, str(tmp_path / "apnb.keras"))
    arrays = {"small": _input(1, 3, 5), "large": _input(2, 13, 11)}
    for name, x in arrays.items():
        np.save(tmp_path / f"{name}.npy", x)
    large = tf.constant(arrays["large"])
    with tf.GradientTape() as tape:
        tape.watch(large)
        loss = tf.reduce_sum(tf.sin(model(large, training=True)))
    tf_grad = tape.gradient(loss, large).numpy()
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name, x in arrays.items():
        np.testing.assert_allclose(np.load(tmp_path / f"{name}_jax.npy"), model.predict_on_batch(x),
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "grad_jax.npy"), tf_grad, rtol=1e-4,
                               atol=1e-4 * np.abs(tf_grad).max())
