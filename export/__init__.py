"""Export PNEN-family models for serving: TF Serving SavedModels and ONNX files.

Run the exporters as `python -m export.saved_model` and `python -m export.onnx` (or through
`pnen-tf export-savedmodel` / `pnen-tf export-onnx`); talk to a running TF Serving with
`python -m export.client`. The facts an export was made from are read back with
`read_export_info(path)` for either artifact.
"""

import os

# The exporters trace the model with TensorFlow; default to its Keras backend unless the
# user already chose one (a wrong choice is reported by `export._model.load`).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from export._info import read_export_info  # noqa: E402

__all__ = ["read_export_info"]
