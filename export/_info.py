"""Where an export keeps the model's facts, and how to read them back from either artifact.

A SavedModel carries them as the asset `assets/pnen_tf.json` (TF Serving ignores it, and it
stays with the version directory when copied); an ONNX file carries them as the metadata
property `pnen_tf`, which onnxruntime exposes as `get_modelmeta().custom_metadata_map`.
"""

import json
import os

INFO_ASSET = "pnen_tf.json"
ONNX_METADATA_KEY = "pnen_tf"


def info_json(info):
    """The facts as the JSON text stored in both artifacts."""
    return json.dumps(info, indent=2, sort_keys=True)


def write_saved_model_info(version_dir, info):
    """Write `info` as `version_dir/assets/pnen_tf.json`."""
    assets = os.path.join(version_dir, "assets")
    os.makedirs(assets, exist_ok=True)
    with open(os.path.join(assets, INFO_ASSET), "w") as file:
        file.write(info_json(info))


def read_export_info(path):
    """The facts dict recorded in an export.

    `path` is an ONNX file, a SavedModel version directory (`DIR/NAME/N`), or the model
    directory `DIR/NAME`, in which case the highest version is read, as TF Serving would serve.
    """
    if str(path).endswith(".onnx"):
        return _read_onnx_info(path)
    asset = os.path.join(saved_model_version_dir(path), "assets", INFO_ASSET)
    if not os.path.isfile(asset):
        raise FileNotFoundError(f"{path!r} was not exported by pnen_tf (no assets/{INFO_ASSET})")
    with open(asset) as file:
        return json.load(file)


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


def _read_onnx_info(path):
    import onnx

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no ONNX file at {path!r}")
    model = onnx.load(path, load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == ONNX_METADATA_KEY:
            return json.loads(prop.value)
    raise ValueError(f"{path!r} was not exported by pnen_tf (no {ONNX_METADATA_KEY!r} metadata)")
