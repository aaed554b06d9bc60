"""Residual Dense Block of RDN (Zhang et al., TPAMI 2020), the baseline of Section V."""

import keras
from keras import layers, ops

from pnen_tf.layers._validation import check_feature_map


@keras.saving.register_keras_serializable(package="pnen_tf")
class ResidualDenseBlock(layers.Layer):
    """C densely connected Conv-ReLU layers of growth G, 1x1 local fusion, local residual.

    Layer c sees the block input and every earlier layer's output concatenated (G0 + (c-1) G
    channels); the 1x1 local feature fusion maps G0 + C G channels back to G0 and the block input
    is added (local residual learning).

    Args:
        growth: G, channels added by each layer.
        num_layers: C.

    Example:

    >>> import numpy as np
    >>> tuple(ResidualDenseBlock(growth=4, num_layers=3)(np.zeros((1, 5, 5, 8), "float32")).shape)
    (1, 5, 5, 8)
    """

    def __init__(self, growth=64, num_layers=8, **kwargs):
        super().__init__(**kwargs)
        self.growth = growth
        self.num_layers = num_layers

    def build(self, input_shape):
        channels = check_feature_map(self, input_shape)
        prefix = tuple(input_shape[:-1])
        self.dense_convs = []
        for index in range(self.num_layers):
            conv = layers.Conv2D(self.growth, 3, padding="same", activation="relu",
                                 name=f"dense_{index}", dtype=self.dtype_policy)
            conv.build(prefix + (channels + index * self.growth,))
            self.dense_convs.append(conv)
        self.local_fusion = layers.Conv2D(channels, 1, name="local_fusion", dtype=self.dtype_policy)
        self.local_fusion.build(prefix + (channels + self.num_layers * self.growth,))
        self.channels = channels
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: channels})

    def call(self, inputs):
        check_feature_map(self, inputs.shape, self.channels)
        features = inputs
        for conv in self.dense_convs:
            features = ops.concatenate([features, conv(features)], axis=-1)
        return inputs + self.local_fusion(features)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(growth=self.growth, num_layers=self.num_layers)
        return config
