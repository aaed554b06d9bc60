"""MemNet's memory block (Tai et al., ICCV 2017), the baseline that PNBs enhance in Section V."""

import keras
from keras import layers, ops

from pnen_tf.layers._validation import check_feature_map


def batch_norm(name, synchronized_bn, dtype=None):
    return layers.BatchNormalization(synchronized=synchronized_bn, name=name, dtype=dtype)


def bn_relu_conv(norm, conv, x, training=None):
    """MemNet's pre-activation unit: BN -> ReLU -> Conv (the conv may be shared, the BN not)."""
    return conv(ops.relu(norm(x, training=training)))


@keras.saving.register_keras_serializable(package="pnen_tf")
class MemoryBlock(layers.Layer):
    """Recursive unit + gate unit over short- and long-term memories.

    Called on the list of long-term memories [B_0, ..., B_{m-1}] (the feature-extraction output
    and every earlier block's output; a single tensor means m = 1). The recursive unit applies one
    residual building block (two BN-ReLU-Conv units) R times to B_{m-1}:
    H_r = F(H_{r-1}) + H_{r-1}. Its convolutions are shared across the recursions (MemNet's
    recursive learning); each recursion keeps its own batch norm, because the statistics of H_r
    differ from one recursion to the next and one shared set of moving averages would mix them.
    The gate unit, a BN-ReLU-1x1 Conv, fuses the R short-term memories H_1..H_R with the m
    long-term memories into B_m. Gate width: (R + m) x C inputs.

    Convolutions carry no bias: every map they produce is consumed through a batch norm, whose
    centring would cancel it (it would never receive a gradient).

    Args:
        num_recursions: R.
        synchronized_bn: see `DilatedResidualBlock`.

    Example:

    >>> import numpy as np
    >>> x = np.zeros((1, 6, 6, 8), "float32")
    >>> tuple(MemoryBlock(num_recursions=2)([x, x]).shape)  # m = 2 long-term memories
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
        conv = lambda filters, kernel, name: layers.Conv2D(  # noqa: E731
            filters, kernel, padding="same", use_bias=False, name=name, dtype=self.dtype_policy)
        sync, dtype = self.synchronized_bn, self.dtype_policy
        self.recursive_convs = [conv(channels, 3, f"recursive_conv_{i}") for i in range(2)]
        self.recursive_norms = [
            [batch_norm(f"recursion_{r}_bn_{i}", sync, dtype) for i in range(2)]
            for r in range(self.num_recursions)
        ]
        gate_channels = (self.num_recursions + len(shapes)) * channels
        self.gate_norm = batch_norm("gate_bn", sync, dtype)
        self.gate_conv = conv(channels, 1, "gate_conv")
        for layer in self.recursive_convs + [n for pair in self.recursive_norms for n in pair]:
            layer.build(shapes[-1])
        gate_shape = tuple(shapes[-1][:-1]) + (gate_channels,)
        self.gate_norm.build(gate_shape)
        self.gate_conv.build(gate_shape)
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
        for norms in self.recursive_norms:
            residual = h
            for norm, conv in zip(norms, self.recursive_convs):
                residual = bn_relu_conv(norm, conv, residual, training)
            h = h + residual
            short_term.append(h)
        gate_input = ops.concatenate(short_term + memories, axis=-1)
        return bn_relu_conv(self.gate_norm, self.gate_conv, gate_input, training)

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
