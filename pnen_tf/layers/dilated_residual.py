"""Dilated Residual Block (DRB), Section III-C and Fig. 3."""

import keras
from keras import layers

from pnen_tf.layers._validation import check_feature_map


@keras.saving.register_keras_serializable(package="pnen_tf")
class DilatedResidualBlock(layers.Layer):
    """Five residual Conv-BN-ReLU-Conv groups with dilations 1, 2, 4, 2, 1 (Fig. 3).

    Dilated convolutions grow the receptive field without lowering the resolution of the
    feature maps; each group adds its output to its input.

    Args:
        channels: feature width; None takes the input's (the residuals need them equal).
        dilations: one dilation rate per group.
        kernel_size: convolution kernel.
        synchronized_bn: batch statistics synchronised across replicas (use under
            MultiWorkerMirroredStrategy, where per-worker statistics drift apart).

    Example:

    >>> import numpy as np
    >>> tuple(DilatedResidualBlock()(np.zeros((1, 9, 7, 16), "float32")).shape)
    (1, 9, 7, 16)
    """

    def __init__(self, channels=None, dilations=(1, 2, 4, 2, 1), kernel_size=3,
                 synchronized_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.dilations = tuple(int(d) for d in dilations)
        self.kernel_size = kernel_size
        self.synchronized_bn = synchronized_bn

    def build(self, input_shape):
        channels = check_feature_map(self, input_shape, self.channels)
        self.groups = []
        for index, rate in enumerate(self.dilations):
            group = [
                # No bias before batch norm: BN's centring would cancel it (it gets no gradient).
                layers.Conv2D(channels, self.kernel_size, padding="same", dilation_rate=rate,
                              use_bias=False, name=f"conv_a_{index}", dtype=self.dtype_policy),
                layers.BatchNormalization(synchronized=self.synchronized_bn, name=f"bn_{index}",
                                          dtype=self.dtype_policy),
                layers.ReLU(dtype=self.dtype_policy),
                layers.Conv2D(channels, self.kernel_size, padding="same", dilation_rate=rate,
                              name=f"conv_b_{index}", dtype=self.dtype_policy),
            ]
            for layer in group:
                layer.build(input_shape)
            self.groups.append(group)
        self.channels = channels
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: channels})

    def call(self, inputs, training=None):
        check_feature_map(self, inputs.shape, self.channels)
        x = inputs
        for conv_a, norm, relu, conv_b in self.groups:
            x = x + conv_b(relu(norm(conv_a(x), training=training)))
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, dilations=list(self.dilations),
                      kernel_size=self.kernel_size, synchronized_bn=self.synchronized_bn)
        return config
