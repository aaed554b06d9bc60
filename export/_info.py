"""Reading an export's facts back: `read_export_info(path)` for a SavedModel or an ONNX file.

The facts are the model's `pnen_tf.model_info.ModelInfo`, which also says where each artifact
keeps them (a SavedModel's asset, an ONNX file's metadata property); an export adds `export`
(source file, versions, ONNX opset).
"""

import os

from pnen_tf.model_info import ModelInfo


def read_export_info(path):
    """The `ModelInfo` recorded in an export.

    `path` is an ONNX file, a SavedModel version directory (`DIR/NAME/N`), or the model
    directory `DIR/NAME`, in which case the highest version is read, as TF Serving would serve.
    Raises `FileNotFoundError` / `ValueError` for something pnen_tf did not export.
    """
    onnx = str(path).endswith(".onnx")
    info = ModelInfo.read(path if onnx else saved_model_version_dir(path))
    if info == ModelInfo():
        raise (ValueError if onnx else FileNotFoundError)(
            f"{path!r} was not exported by pnen_tf (it records no model facts)")
    return info


def saved_model_version_dir(path):
    """`path` itself if it holds `saved_model.pb`, else its highest numeric version directory."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = []
    if os.path.isdir(path):
        versions = [
            int(name)
            for name in os.listdir(path)
            if name.isdigit() and os.path.isfile(os.path.join(path, name, "saved_model.pb"))
        ]
    if not versions:
        raise FileNotFoundError(
            f"no SavedModel at {path!r}: expected saved_model.pb there or in a numeric "
            "version directory below it"
        )
    return os.path.join(path, str(max(versions)))
