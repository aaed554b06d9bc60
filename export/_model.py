"""Load a `.keras` model with its facts and shape it for serving: one NHWC input, one output."""

import os

import keras

import pnen_tf
from pnen_tf import saving
from pnen_tf.models import single_output

INPUT_CONVENTIONS = ("lr", "upsampled", "same")


def load(model_path):
    """Return `(model, info)` for the `.keras` file at `model_path`.

    `model` has a single output, the restoration Y (a multi-supervised model's first output,
    eq. (5)); `info` is the file's facts completed from the model itself (channels,
    and scale 1 / input 'same' for a file saved by plain Keras), plus the exporting version.
    Raises `FileNotFoundError` / `ValueError` naming the path for anything that is not a
    loadable single-input image model.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"exporting needs the TensorFlow Keras backend, not {keras.backend.backend()!r}: "
            "set KERAS_BACKEND=tensorflow"
        )
    facts = saving.read_info(model_path)
    try:
        model = saving.load_model(model_path)
    except Exception as error:  # Keras raises many types for a damaged or foreign file
        raise ValueError(f"cannot load {model_path!r} as a Keras model: {error}") from error
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise ValueError(f"{model_path!r}: expected one NHWC image input, got {model.inputs}")
    model = single_output(model)
    return model, _complete_info(facts, model, model_path)


def _complete_info(facts, model, model_path):
    channels = model.inputs[0].shape[-1]
    info = {"scale": 1, "input": "same", **facts}
    info.setdefault("in_channels", channels)
    if info["in_channels"] != channels:
        raise ValueError(
            f"{model_path!r}: its facts say in_channels={info['in_channels']} "
            f"but the model takes {channels} channels"
        )
    if info["input"] not in INPUT_CONVENTIONS:
        raise ValueError(f"{model_path!r}: unknown input convention {info['input']!r}")
    info["export"] = {
        "source": os.path.basename(model_path),
        "pnen_tf_version": pnen_tf.__version__,
        "keras_version": keras.__version__,
    }
    return info
