"""Pyramid Non-Local Enhanced Networks (Zhu, Fang & Ma, IEEE TIP) for Keras 3.

Importing the package registers every layer for `.keras` (de)serialisation, as `import
keras_hub` does, so `keras.saving.load_model("best.keras")` works after `import pnen_tf`.

The library — `layers`, `models` (with `FAMILIES`), `metrics`, `model_info` (a model's facts),
`saving`, `image_io`, `staged` — uses Keras (`keras.ops`) only: under `KERAS_BACKEND=jax` it
imports no TensorFlow. The applications (the `pnen-tf` command, restoring images, MATLAB's
bicubic in TensorFlow) are `pnen_tf.apps`, which the library never imports.
"""

__version__ = "0.1.0"

from pnen_tf import layers  # noqa: E402  (registers the layers)

__all__ = ["__version__", "layers"]
