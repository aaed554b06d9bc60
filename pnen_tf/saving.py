"""Atomic `.keras` files that also carry the model's facts (`pnen_tf.model_info.ModelInfo`).

Keras ignores unknown members of a `.keras` zip, so the facts travel inside the file: a model
copied on its own can still be restored, exported or evaluated. Read them back with
`ModelInfo.read(path)`.

`load_model` (and `ModelInfo.read`) also take a preset's name (`pnen_tf.models.presets`): a
path where nothing exists that names a preset is its file inside the package; an existing
file wins.
"""

import keras

from pnen_tf._atomic import staged_file
from pnen_tf.model_info import ModelInfo, keras_file


def save_model(model, path, info=None):
    """Save `model` to `path` (`.keras`) atomically, with its facts inside.

    `info` is a `ModelInfo`, or a dict of facts (`ModelInfo.from_dict`), or None. The file is
    written beside the target and renamed over it (`pnen_tf._atomic`), so a crash mid-write
    never leaves a truncated model where a good one was; what a killed save left in that
    folder is removed.
    """
    if not str(path).endswith(".keras"):
        raise ValueError(f"save_model: {path!r} must end in '.keras'")
    info = ModelInfo.of(info)
    with staged_file(path, suffix=".keras") as tmp:
        model.save(tmp)
        info.write(tmp)


def load_model(path, compile=False):
    """Load a `.keras` file with `safe_mode=True` (`import pnen_tf` registered our layers)."""
    return keras.saving.load_model(keras_file(path), compile=compile, safe_mode=True)
