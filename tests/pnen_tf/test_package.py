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


# The applications inside the library's folder.
NOT_LIBRARY = ("pnen_tf.apps",)
IMPORT_THE_LIBRARY = textwrap.dedent("""
    import importlib, sys
    for name in sys.argv[1:]:
        importlib.import_module(name)
    found = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"
                   or m.startswith("pnen_tf.apps"))
    assert not found, found[:5]
""")


def _library_modules():
    package = os.path.join(REPO, "pnen_tf")
    names = []
    for directory, _, files in os.walk(package):
        for file in sorted(f for f in files if f.endswith(".py")):
            parts = os.path.relpath(os.path.join(directory, file), REPO)[:-3].split(os.sep)
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if not name.startswith(NOT_LIBRARY):
                names.append(name)
    return names


def test_the_library_imports_neither_tensorflow_nor_the_applications():
    pytest.importorskip("jax", reason="jax is in the test extra: pip install .[test]")
    names = _library_modules()
    assert {"pnen_tf.model_info", "pnen_tf.models.families", "pnen_tf.staged"} <= set(names)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", IMPORT_THE_LIBRARY, *names], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
