"""MemNet's memory block (Tai et al., ICCV 2017), the baseline that PNBs enhance in Section V."""

import keras
from keras import layers, ops

from pnen_tf.layers._validation import check_feature_map


def bn_relu_conv(filters, kernel_size, name, synchronized_bn, dtype, use_bias=False):
    """MemNet's pre-activation unit: BN -> ReLU -> Conv.

    Biases are off by default: in MemNet every feature map is consumed only through the next
    unit's batch norm, whose centring cancels a bias (it would never receive a gradient). Only
    the reconstruction conv, whose output is the image residual, needs one.
    """
    return [
        layers.BatchNormalization(synchronized=synchronized_bn, name=f"{name}_bn", dtype=dtype),
        layers.ReLU(dtype=dtype),
        layers.Conv2D(filters, kernel_size, padding="same", use_bias=use_bias, name=f"{name}_conv",
                      dtype=dtype),
    ]


def apply_unit(unit, x, training):
    norm, relu, conv = unit
    return conv(relu(norm(x, training=training)))


@keras.saving.register_keras_serializable(package="pnen_tf")
class MemoryBlock(layers.Layer):
    """Recursive unit + gate unit over short- and long-term memories.

    Called on the list of long-term memories [B_0, ..., B_{m-1}] (the feature-extraction output
    and every earlier block's output; a single tensor means m = 1). The recursive unit applies one
    residual building block (two BN-ReLU-Conv units, weights shared across recursions) R times to
    B_{m-1}: H_r = F(H_{r-1}) + H_{r-1}. The gate unit, a BN-ReLU-1x1 Conv, fuses the R short-term
    memories H_1..H_R with the m long-term memories into B_m. Gate width: (R + m) x C inputs.

    Args:
        num_recursions: R.
        synchronized_bn: see `DilatedResidualBlock`.

    Example:

    >>> import numpy as np
    >>> x = np.zeros((1, 6, 6, 8), "float32")
    >>> MemoryBlock(num_recursions=2)([x, x]).shape
    (1, 6, 6, 8)
    """

    def __init__(self, num_recursions=6, synchronized_bn=False, **kwargs):
        super().__init__(**kwargs)
        if num_recursions < 1:
            raise ValueError(f"MemoryBlock: num_recursions must be >= 1, got {num_recursions}")
        self.num_recursions = num_recursions
        self.synchronized_bn = synchronized_bn

    def build(self, input_shape):
        shapes = _as_list(input_shape)
        channels = check_feature_map(self, shapes[-1])
        for shape in shapes:
            check_feature_map(self, shape, channels)
        dtype = self.dtype_policy
        self.residual_units = [
            bn_relu_conv(channels, 3, f"recursive_{i}", self.synchronized_bn, dtype) for i in range(2)
        ]
        gate_channels = (self.num_recursions + len(shapes)) * channels
        self.gate = bn_relu_conv(channels, 1, "gate", self.synchronized_bn, dtype)
        for unit in self.residual_units:
            for layer in unit:
                layer.build(shapes[-1])
        for layer in self.gate:
            layer.build(tuple(shapes[-1][:-1]) + (gate_channels,))
        self.channels = channels
        self.num_memories = len(shapes)

    def call(self, inputs, training=None):
        memories = _as_list(inputs)
        if len(memories) != self.num_memories:
            raise ValueError(f"MemoryBlock '{self.name}' was built for {self.num_memories} long-term "
                             f"memories, got {len(memories)}")
        for memory in memories:
            check_feature_map(self, memory.shape, self.channels)
        h = memories[-1]
        short_term = []
        for _ in range(self.num_recursions):
            residual = h
            for unit in self.residual_units:
                residual = apply_unit(unit, residual, training)
            h = h + residual
            short_term.append(h)
        return apply_unit(self.gate, ops.concatenate(short_term + memories, axis=-1), training)

    def compute_output_shape(self, input_shape):
        return _as_list(input_shape)[-1]

    def get_config(self):
        config = super().get_config()
        config.update(num_recursions=self.num_recursions, synchronized_bn=self.synchronized_bn)
        return config


def _as_list(value):
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        return [tuple(v) for v in value]
    if isinstance(value, (list, tuple)) and value and not isinstance(value[0], (int, type(None))):
        return list(value)
    return [value]
