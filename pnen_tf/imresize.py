"""MATLAB's bicubic moved to `pnen_tf.apps.imresize` (TensorFlow, apart from the Keras-only
library); `benchmarks/bicubic_set5.py` still imports it from here. Remove this module once
that benchmark imports `pnen_tf.apps.imresize`."""

from pnen_tf.apps.imresize import imresize, modcrop

__all__ = ["imresize", "modcrop"]
