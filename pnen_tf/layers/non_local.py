"""The original Non-local Block of Wang et al. (embedded Gaussian), eq. (6)-(8)."""

import keras

from pnen_tf.layers.nonlocal_base import NonLocalBase

VARIANTS = ("official", "classic")


@keras.saving.register_keras_serializable(package="pnen_tf")
class NonLocalBlock(NonLocalBase):
    """Non-local block: every pixel attends to every pixel at full resolution.

    F_hat = T(softmax(theta(F) phi(F)^T) g(F)) + F  (eq. 6-8, softmax = the D^-1 exp(.) of eq. 6).

    - `"official"` (default): the authors' NLB baseline (their `NonLocalLayer_Concat` with
      strides=[1]): 1x1 theta (C/2), 3x3 phi (C/2) and 3x3 g (C), 1x1 output conv.
      61,632 parameters at C=64.
    - `"classic"`: Wang et al.'s block, theta/phi/g all 1x1 with C/2 channels.

    The full-resolution attention matrix is never materialised for large inputs: memory stays
    linear in the number of pixels (see `nonlocal_attention`).

    Args:
        variant: "official" or "classic".
        inner_channels: theta/phi width (default C/2); value_channels: g width (default C for
            "official", C/2 for "classic").
        memory_budget_mb, query_chunk, key_block, attention_dtype, flash_attention,
            rematerialize: as for `PyramidNonLocalBlock`.

    Example:

    >>> import numpy as np
    >>> tuple(NonLocalBlock()(np.zeros((2, 5, 6, 8), "float32")).shape)
    (2, 5, 6, 8)
    >>> block = NonLocalBlock()
    >>> block.build((None, None, None, 64))
    >>> block.count_params()
    61632
    """

    def __init__(self, variant="official", inner_channels=None, value_channels=None, **kwargs):
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"NonLocalBlock: variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant
        self.inner_channels = inner_channels
        self.value_channels = value_channels

    def branch_specs(self, channels):
        official = self.variant == "official"
        inner = self.inner_channels or channels // 2
        value = self.value_channels or (channels if official else inner)
        kernel = 3 if official else 1
        return [{"query": inner, "key": inner, "value": value, "kernel": kernel, "stride": 1}]

    def get_config(self):
        config = super().get_config()
        config.update(variant=self.variant, inner_channels=self.inner_channels,
                      value_channels=self.value_channels)
        return config
