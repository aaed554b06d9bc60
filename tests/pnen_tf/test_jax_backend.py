"""The same layer code runs under the JAX backend and gives the TensorFlow numbers."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pnen_tf import models
from pnen_tf.saving import save_model

pytest.importorskip("jax", reason="jax is in the test extra: pip install .[test]")

JAX_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import jax, jax.numpy as jnp
    import keras
    assert keras.backend.backend() == "jax"
    from pnen_tf.saving import load_model
    from pnen_tf.layers import tiled_attention

    directory = sys.argv[1]
    x = np.load(f"{directory}/x.npy")
    for name in ("pnen", "rdn"):
        model = load_model(f"{directory}/{name}.keras")
        np.save(f"{directory}/{name}_jax.npy", np.asarray(model.predict_on_batch(x)))

    # PNEN again, stage by stage: each stage a Keras model jitted by JAX.
    from pnen_tf.staged import StagedForward
    staged = StagedForward(load_model(f"{directory}/pnen.keras"), f"{directory}/staged")
    np.save(f"{directory}/pnen_staged_jax.npy", staged(x))

    # A PNB in training mode (rematerialised branches, chunks in turn) under jax.grad.
    block = load_model(f"{directory}/pnb.keras")
    grad = jax.grad(lambda a: jnp.sum(jnp.sin(block(a, training=True))))(jnp.asarray(x))
    np.save(f"{directory}/pnb_grad_jax.npy", np.asarray(grad))

    # The custom gradient of the tiled attention, under jax.grad, against plain softmax.
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=s).astype("float32") for s in ((2, 19, 4), (2, 11, 4), (2, 11, 3)))
    tiled = jax.grad(lambda a, b, c: jnp.sum(tiled_attention(a, b, c, 4, 3) ** 2), (0, 1, 2))(q, k, v)
    direct = jax.grad(lambda a, b, c: jnp.sum((jax.nn.softmax(a @ b.transpose(0, 2, 1)) @ c) ** 2),
                      (0, 1, 2))(q, k, v)
    print("max_grad_error", max(float(jnp.abs(t - d).max() / jnp.abs(d).max()) for t, d in zip(tiled, direct)))

    # Flash attention asked for on a CPU (no cuDNN): a warning, and the tiled result.
    import warnings
    from pnen_tf.layers import nonlocal_attention
    maps = [a[:, None] for a in (q, k, v)]
    tiles = {"query_chunk": 4, "key_block": 3, "attention_dtype": "bfloat16"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flash = nonlocal_attention(*maps, flash_attention=True, **tiles)
    assert any("cuDNN" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert (np.asarray(flash) == np.asarray(nonlocal_attention(*maps, **tiles))).all()
""")


def _tensorflow_input_gradient(path, x):
    """Save a tiled PNB at `path`; return d sum(sin(PNB(x))) / dx by TensorFlow's autodiff of
    the same weights on the direct (untiled) path, the independent reference."""
    import keras
    import tensorflow as tf

    from pnen_tf.layers import PyramidNonLocalBlock

    inputs = keras.Input((None, None, x.shape[-1]))
    tiled = keras.Model(inputs, PyramidNonLocalBlock(scales=(1, 2), query_chunk=16, key_block=8)(inputs))
    save_model(tiled, str(path))
    direct = PyramidNonLocalBlock(scales=(1, 2))
    direct(x)
    direct.set_weights(tiled.get_weights())
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.sin(direct(x)))
    return tape.gradient(loss, x).numpy()


def test_models_give_the_same_outputs_under_jax(tmp_path):
    x = np.random.default_rng(1).random((2, 11, 13, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    tiny = {
        # Tiles forced small so the memory-linear path runs under JAX too.
        "pnen": models.build("pnen", channels=8, num_groups=2,
                             nonlocal_options={"query_chunk": 32, "key_block": 16}),
        "rdn": models.build("rdn", scale=2, channels=8, num_blocks=2, num_layers=2, growth=4,
                            nonlocal_block="pnb", nonlocal_after=(1,)),
    }
    expected = {}
    for name, model in tiny.items():
        save_model(model, str(tmp_path / f"{name}.keras"))
        expected[name] = model.predict_on_batch(x)
    expected["pnb_grad"] = _tensorflow_input_gradient(tmp_path / "pnb.keras", x)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([repo, env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in tiny:
        got = np.load(tmp_path / f"{name}_jax.npy")
        np.testing.assert_allclose(got, expected[name], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "pnen_staged_jax.npy"), expected["pnen"],
                               rtol=1e-4, atol=1e-5)
    got = np.load(tmp_path / "pnb_grad_jax.npy")
    np.testing.assert_allclose(got, expected["pnb_grad"], rtol=1e-4, atol=1e-4 * np.abs(got).max())
    error = float(result.stdout.split("max_grad_error")[1])
    assert error < 1e-4
