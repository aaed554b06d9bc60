"""`import pnen_tf` registers every layer, as `import keras_hub` does, and stays light."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import pnen_tf.layers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What a user writes: the package imported, then plain Keras loading a model of our layers.
LOAD_WITH_PLAIN_KERAS = textwrap.dedent("""
    import sys
    import numpy as np
    import pnen_tf
    if "{backend}" == "jax":
        assert "tensorflow" not in sys.modules, "import pnen_tf imported TensorFlow under JAX"
    import keras
    assert keras.backend.backend() == "{backend}"
    model = keras.saving.load_model(sys.argv[1])
    np.save(sys.argv[2], np.asarray(model.predict_on_batch(np.load(sys.argv[3]))))
""")


def _every_layer_model():
    """A tiny model holding each registered layer of `pnen_tf.layers` (4-8 channels)."""
    inputs = keras.Input((None, None, 8))
    x = pnen_tf.layers.DilatedResidualBlock(dilations=(1, 2))(inputs)
    x = pnen_tf.layers.PyramidNonLocalBlock(scales=(2,))(x)
    x = pnen_tf.layers.NonLocalBlock()(x)
    x = pnen_tf.layers.AsymmetricPyramidNonLocalBlock()(x)
    x = pnen_tf.layers.ResidualDenseBlock(num_layers=2, growth=4)(x)
    x = pnen_tf.layers.MemoryBlock(num_recursions=1)(x)
    x = pnen_tf.layers.WeightedSum()([x, inputs])
    model = keras.Model(inputs, pnen_tf.layers.PixelShuffle(2)(x))
    used = {type(layer).__name__ for layer in model.layers}
    assert used >= set(n for n in pnen_tf.layers.__all__ if n[0].isupper()), "add the new layer here"
    return model


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_import_pnen_tf_is_enough_for_plain_keras_to_load_our_layers(backend, tmp_path):
    if backend == "jax":
        pytest.importorskip("jax", reason="jax is in the test extra: pip install .[test]")
    model = _every_layer_model()
    model.save(tmp_path / "best.keras")  # plain Keras, as a user's own script would
    x = np.random.default_rng(0).random((1, 9, 10, 8)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITH_PLAIN_KERAS.format(backend=backend),
         str(tmp_path / "best.keras"), str(tmp_path / "y.npy"), str(tmp_path / "x.npy")],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict_on_batch(x),
                               rtol=1e-4, atol=1e-5)
