"""Load a `.keras` model with its facts and shape it for serving: one NHWC input, one output."""

import os

import keras

import pnen_tf
from pnen_tf import saving
from pnen_tf.model_info import ModelInfo
from pnen_tf.models import single_output


def load(model_path):
    """Return `(model, info)` for the `.keras` file (or preset) at `model_path`.

    `model` has a single output, the restoration Y (a multi-supervised model's first output,
    eq. (5)); `info` is the file's `ModelInfo` completed from the model itself where a file
    saved by plain Keras or an older version lacks facts (`ModelInfo.completed`), plus
    `export`: the source file and the exporting versions.
    Raises `FileNotFoundError` / `ValueError` naming the path for anything that is not a
    loadable single-input image model.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"exporting needs the TensorFlow Keras backend, not {keras.backend.backend()!r}: "
            "set KERAS_BACKEND=tensorflow"
        )
    facts = ModelInfo.read(model_path)
    try:
        model = saving.load_model(model_path)
    except Exception as error:  # Keras raises many types for a damaged or foreign file
        raise ValueError(f"cannot load {model_path!r} as a Keras model: {error}") from error
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise ValueError(f"{model_path!r}: expected one NHWC image input, got {model.inputs}")
    model = single_output(model)
    info, _ = facts.completed(model.inputs[0].shape[-1], model.predict_on_batch,
                              source=repr(model_path))
    return model, info.updated(export={
        "source": os.path.basename(model_path),
        "pnen_tf_version": pnen_tf.__version__,
        "keras_version": keras.__version__,
    })
