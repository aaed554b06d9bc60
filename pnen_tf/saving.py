"""Atomic `.keras` files that also carry the model's facts (task, scale, input convention).

Keras ignores unknown members of a `.keras` zip, so the facts travel inside the file as
`pnen_tf.json`: a model copied on its own can still be restored, exported or evaluated.

`read_info` and `load_model` also take a preset's name (`pnen_tf.models.presets`): a path where
nothing exists that names a preset is its file inside the package; an existing file wins.
"""

import json
import os
import zipfile

import keras

from pnen_tf._atomic import staged_file

INFO_MEMBER = "pnen_tf.json"


def save_model(model, path, info=None):
    """Save `model` to `path` (`.keras`) atomically, with `info` (a JSON-able dict) inside.

    The file is written beside the target and renamed over it (`pnen_tf._atomic`), so a
    crash mid-write never leaves a truncated model where a good one was; what a killed
    save left in that folder is removed.
    """
    if not str(path).endswith(".keras"):
        raise ValueError(f"save_model: {path!r} must end in '.keras'")
    with staged_file(path, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(INFO_MEMBER, json.dumps(info or {}, indent=2, sort_keys=True))


def read_info(path):
    """The facts dict saved by `save_model`, or `{}` for a `.keras` file saved by plain Keras."""
    path = _model_file(path)
    with zipfile.ZipFile(path) as archive:
        if INFO_MEMBER not in archive.namelist():
            return {}
        return json.loads(archive.read(INFO_MEMBER))


def load_model(path, compile=False):
    """Load a `.keras` file with `safe_mode=True` (`import pnen_tf` registered our layers)."""
    path = _model_file(path)
    return keras.saving.load_model(path, compile=compile, safe_mode=True)


def _model_file(path):
    """`path`, or the file of the preset it names, checked to be a `.keras` (zip) file."""
    from pnen_tf.models.presets import resolve

    path = resolve(path)  # FileNotFoundError for a preset this version does not ship
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path!r} (nor a preset: see `pnen-tf presets`)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not a .keras model file (not a zip archive)")
    return path
