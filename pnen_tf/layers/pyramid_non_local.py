"""Pyramid Non-local Block (PNB), Section III-B, eq. (9)-(12)."""

import keras

from pnen_tf.layers.nonlocal_base import NonLocalBase

VARIANTS = ("official", "paper")


@keras.saving.register_keras_serializable(package="pnen_tf")
class PyramidNonLocalBlock(NonLocalBase):
    """Pyramid non-local block: full-resolution queries attend to keys/values at strides s.

    For each scale s the key and value embeddings (eq. 9-10) are convolutions at stride s, so a
    query pixel correlates with texels of size s (eq. 11); the enhanced maps of all scales are
    concatenated, fused by a 1x1 convolution psi and added to the input (eq. 12).

    Two variants, because the authors' released code (PNEN_Denoise, `NonLocalLayer_Concat`)
    differs from the paper's text and the paper's parameter counts were measured with the code:

    - `"official"` (default, the code): per scale its own 1x1 query (C/2 channels), a 3x3 key
      (C/2) and a 3x3 value (C) conv at stride s. 184,768 parameters at C=64.
    - `"paper"` (the text): one shared 1x1 query (m=C), per scale an s x s key (m) and value
      (n=C/2) conv at stride s. 526,752 parameters at C=64.

    Attention is exact and memory-linear in the number of pixels (see `nonlocal_attention`).

    Args:
        scales: strides of the pyramid, e.g. (2, 4, 8) or a subset (Table II's ablation).
        variant: "official" or "paper".
        query_channels, key_channels, value_channels: embedding widths; None picks the
            variant's default from the input channels C.
        kernel_sizes: key/value kernel per scale; None gives 3 ("official") or s ("paper").
        memory_budget_mb, query_chunk, key_block, attention_dtype, flash_attention: see
            `nonlocal_attention`.
        rematerialize: in training, recompute each branch in the backward pass instead of
            storing its maps (default True; False is faster and needs more memory).

    Example:

    >>> import numpy as np
    >>> block = PyramidNonLocalBlock()  # scales 2, 4, 8
    >>> tuple(block(np.zeros((1, 7, 9, 8), "float32")).shape)  # any size, also below 8x8
    (1, 7, 9, 8)
    >>> for variant in VARIANTS:
    ...     block = PyramidNonLocalBlock(variant=variant)
    ...     block.build((None, None, None, 64))
    ...     print(variant, block.count_params())
    official 184768
    paper 526752
    """

    def __init__(self, scales=(2, 4, 8), variant="official", query_channels=None,
                 key_channels=None, value_channels=None, kernel_sizes=None, **kwargs):
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"PyramidNonLocalBlock: variant must be one of {VARIANTS}, got {variant!r}")
        scales = tuple(int(s) for s in scales)
        if not scales or any(s < 1 for s in scales):
            raise ValueError(f"PyramidNonLocalBlock: scales must be positive integers, got {scales}")
        if kernel_sizes is not None and len(kernel_sizes) != len(scales):
            raise ValueError(f"PyramidNonLocalBlock: {len(kernel_sizes)} kernel_sizes for {len(scales)} scales")
        self.scales = scales
        self.variant = variant
        self.query_channels = query_channels
        self.key_channels = key_channels
        self.value_channels = value_channels
        self.kernel_sizes = None if kernel_sizes is None else tuple(int(k) for k in kernel_sizes)

    def branch_specs(self, channels):
        official = self.variant == "official"
        key = self.key_channels or (channels // 2 if official else channels)
        query = self.query_channels or key
        value = self.value_channels or (channels if official else channels // 2)
        kernels = self.kernel_sizes or tuple(3 if official else s for s in self.scales)
        return [
            {"query": query if official or index == 0 else None, "key": key, "value": value,
             "kernel": kernel, "stride": scale}
            for index, (scale, kernel) in enumerate(zip(self.scales, kernels))
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            scales=list(self.scales), variant=self.variant, query_channels=self.query_channels,
            key_channels=self.key_channels, value_channels=self.value_channels,
            kernel_sizes=None if self.kernel_sizes is None else list(self.kernel_sizes),
        )
        return config
