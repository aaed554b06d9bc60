"""`.keras` files with facts: atomic, readable by others, and what a killed save left is cleaned."""

import os

import keras
import numpy as np

from pnen_tf import saving
from pnen_tf.model_info import ModelInfo


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tiny_model():
    inputs = keras.Input((None, None, 1))
    return keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same")(inputs))


def test_a_saved_model_is_readable_and_a_killed_saves_leftover_removed(tmp_path):
    leftover = tmp_path / ".tmp-8k2j_x0q.keras"  # what `kill -9` during a save leaves
    leftover.write_bytes(b"PK half a zip")
    os.utime(leftover, (0, 0))
    model = _tiny_model()
    path = tmp_path / "best.keras"
    saving.save_model(model, str(path), {"task": "denoise"})
    assert os.listdir(tmp_path) == ["best.keras"]
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert ModelInfo.read(str(path)) == ModelInfo(task="denoise")
    x = np.random.default_rng(0).random((1, 5, 6, 1)).astype("float32")
    np.testing.assert_allclose(saving.load_model(str(path))(x), model(x), atol=1e-6)
