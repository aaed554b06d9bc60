"""Asymmetric Pyramid Non-local Block (APNB, Zhu et al., ICCV 2019): the block that the
paper's Table III compares the PNB with."""

import keras
from keras import layers, ops

from pnen_tf.layers._validation import check_feature_map
from pnen_tf.layers.attention import nonlocal_attention
from pnen_tf.layers.nonlocal_base import ResidualAttentionBlock

POOL_SIZES = (1, 3, 6, 8)


def adaptive_average_pool(x, size):
    """PyTorch's `AdaptiveAvgPool2d(size)` on NHWC `x`: `[B, size, size, C]`.

    Output bin i of an axis of length L averages positions floor(i L / size) to
    ceil((i + 1) L / size) - 1, so any L works, also L < size (bins then repeat pixels).
    Written as two products with [size, L] averaging matrices built from the run-time shape:
    the same graph serves every height and width, under TensorFlow and JAX.
    """
    shape = ops.shape(x)
    rows = _bin_weights(shape[1], size, x.dtype)
    columns = _bin_weights(shape[2], size, x.dtype)
    return ops.einsum("jw,biwc->bijc", columns, ops.einsum("ih,bhwc->biwc", rows, x))


def _bin_weights(length, size, dtype):
    """[size, length]: row i holds 1 / (bin width) on the positions of bin i, 0 elsewhere."""
    bins = ops.arange(size)
    start = (bins * length) // size
    end = ((bins + 1) * length + size - 1) // size
    positions = ops.arange(length)[None, :]
    inside = ops.cast(ops.logical_and(positions >= start[:, None], positions < end[:, None]), dtype)
    return inside / ops.sum(inside, axis=1, keepdims=True)


@keras.saving.register_keras_serializable(package="pnen_tf")
class AsymmetricPyramidNonLocalBlock(ResidualAttentionBlock):
    """APNB: full-resolution queries attend to keys and values pooled to a few small grids.

    As the authors' code builds it (MendelXu/ANN, `models/seg/utils/apnb.py`):

        Q = K = ReLU(conv1x1(F))                  one embedding serves queries and keys
        V = conv1x1(F)
        K_p, V_p = P(K), P(V)                     adaptive average pooling to 1x1, 3x3, 6x6, 8x8,
                                                  concatenated: S = 110 positions for any size
        C = W(softmax(Q K_p^T / sqrt(d)) V_p)     W: 1x1 conv back to the input's channels
        F_hat = F + conv1x1([C, F])               fusion of the context with the input

    Choices, where a restoration network differs from a segmentation head:
    - ANN's embedding is conv-BN-ReLU and its fusion conv-BN-ReLU-Dropout2d(0.05). Batch norm
      and dropout are left out, as in this package's PNB and NLB; so is the fusion's ReLU, which
      would clip a signed restoration feature map.
    - The input is added to the fused map (residual output, as the PNB's eq. 12 and the NLB's
      eq. 6): with a linear fusion, F + conv([C, F]) spans the same functions as ANN's
      conv([C, F]) and only starts nearer the identity, so the three blocks are drop-in
      replacements for each other in the models.
    - W starts from Keras' default initialisation, as the PNB's and NLB's convolutions do, not
      from zeros as in ANN: Table III's comparison should differ in the attention, not in the
      initialisation.
    - Average pooling, as ANN's `PSPModule` (`nn.AdaptiveAvgPool2d`), although the PNEN paper
      (Sec. II-B) describes APNB's pooling as max pooling.
    - The logits are scaled by 1/sqrt(d), d = `key_channels`, as in ANN (the PNB and NLB do not
      scale).
    - V is pooled before its convolution: a 1x1 convolution commutes with average pooling
      (weights summing to one keep the bias), so V_p = conv1x1(P(F)) costs 110 positions
      instead of a full-resolution map.

    Memory is linear in the pixels: one query attends to S = 110 keys, and the attention runs
    through `nonlocal_attention` (tiled above `memory_budget_mb`). At C = 64 (d = 32 key and 32
    value channels) the block has 14,528 parameters.

    Args:
        key_channels: width d of the shared query/key embedding (default C/2, as ANN's 256 of
            512).
        value_channels: width of the value embedding (default C/2).
        pool_sizes: output sides of the adaptive pooling (default (1, 3, 6, 8), ANN's).
        memory_budget_mb, query_chunk, key_block: see `nonlocal_attention`.

    Example:

    >>> import numpy as np
    >>> block = AsymmetricPyramidNonLocalBlock()
    >>> tuple(block(np.zeros((2, 5, 7, 8), "float32")).shape)  # any size, also below 8x8
    (2, 5, 7, 8)
    >>> block = AsymmetricPyramidNonLocalBlock()
    >>> block.build((None, None, None, 64))
    >>> block.count_params()
    14528
    """

    def __init__(self, key_channels=None, value_channels=None, pool_sizes=POOL_SIZES,
                 **kwargs):
        super().__init__(**kwargs)
        pool_sizes = tuple(int(s) for s in pool_sizes)
        if not pool_sizes or any(s < 1 for s in pool_sizes):
            raise ValueError(f"AsymmetricPyramidNonLocalBlock: pool_sizes must be positive "
                             f"integers, got {pool_sizes}")
        self.key_channels = key_channels
        self.value_channels = value_channels
        self.pool_sizes = pool_sizes

    def build(self, input_shape):
        channels = check_feature_map(self, input_shape)
        self.channels = channels
        keys = self.key_channels or channels // 2
        values = self.value_channels or channels // 2
        conv = lambda filters, name: layers.Conv2D(filters, 1, name=name,  # noqa: E731
                                                   dtype=self.dtype_policy)
        self.query_key_conv = conv(keys, "query_key")
        self.value_conv = conv(values, "value")
        self.output_conv = conv(channels, "output")
        self.fusion_conv = conv(channels, "fusion")
        any_size = (None, None, None)
        self.query_key_conv.build(any_size + (channels,))
        self.value_conv.build(any_size + (channels,))
        self.output_conv.build(any_size + (values,))
        self.fusion_conv.build(any_size + (2 * channels,))
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: channels})

    def pyramid(self, x):
        """`[B, H, W, C]` -> `[B, 1, S, C]`: every pooled grid, flattened and concatenated."""
        batch, channels = ops.shape(x)[0], ops.shape(x)[3]
        grids = [ops.reshape(adaptive_average_pool(x, size), (batch, 1, size * size, channels))
                 for size in self.pool_sizes]
        return ops.concatenate(grids, axis=2)

    def call(self, inputs, training=None):
        check_feature_map(self, inputs.shape, self.channels)
        embedded = ops.relu(self.query_key_conv(inputs))
        query = embedded * self.query_key_conv.filters ** -0.5
        attended = nonlocal_attention(
            query, self.pyramid(embedded), self.value_conv(self.pyramid(inputs)),
            **self.tiling, sequential=bool(training),
        )
        context = self.output_conv(attended)
        return inputs + self.fusion_conv(ops.concatenate([context, inputs], axis=-1))

    @property
    def branch_end(self):
        """The fusion convolution: the residual branch's last layer."""
        return self.fusion_conv

    def get_config(self):
        return {**super().get_config(), "key_channels": self.key_channels,
                "value_channels": self.value_channels, "pool_sizes": list(self.pool_sizes)}
