"""Pyramid Non-Local Enhanced Networks (Zhu, Fang & Ma, IEEE TIP) for Keras 3.

Importing the package registers every layer for `.keras` (de)serialisation, as `import
keras_hub` does, so `keras.saving.load_model("best.keras")` works after `import pnen_tf`.
The layers use `keras.ops` only: under `KERAS_BACKEND=jax` this imports no TensorFlow.
"""

__version__ = "0.1.0"

from pnen_tf import layers  # noqa: E402,F401  (registers the layers)
