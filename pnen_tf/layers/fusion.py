"""Small layers the models need: the weighted output fusion (eq. 4) and sub-pixel upsampling."""

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="pnen_tf")
class WeightedSum(layers.Layer):
    """Y = sum_m w_m Y_m with trainable w_m, initialised to 1/M (eq. 4; MemNet's output too).

    Example:

    >>> import numpy as np
    >>> y = WeightedSum()([np.full((1, 2, 2, 1), 3.0, "float32"), np.ones((1, 2, 2, 1), "float32")])
    >>> np.asarray(y)[0, :, :, 0]  # w_m = 1/2 before training
    array([[2., 2.],
           [2., 2.]], dtype=float32)
    """

    def build(self, input_shape):
        count = len(input_shape)
        self.fusion_weights = self.add_weight(
            name="fusion_weights", shape=(count,),
            initializer=keras.initializers.Constant(1.0 / count),
        )

    def call(self, inputs):
        weights = ops.cast(self.fusion_weights, inputs[0].dtype)
        return sum(weights[index] * value for index, value in enumerate(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package="pnen_tf")
class PixelShuffle(layers.Layer):
    """Sub-pixel rearrangement [B, H, W, r^2 C] -> [B, rH, rW, C] (RDN's upsampler).

    Example:

    >>> import numpy as np
    >>> x = np.arange(4, dtype="float32").reshape(1, 1, 1, 4)
    >>> np.asarray(PixelShuffle(2)(x))[0, :, :, 0]  # r^2 = 4 channels of one pixel -> 2x2
    array([[0., 1.],
           [2., 3.]], dtype=float32)
    """

    def __init__(self, block_size, **kwargs):
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, inputs):
        return ops.depth_to_space(inputs, self.block_size)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        r = self.block_size
        scaled = lambda d: None if d is None else d * r  # noqa: E731
        return (batch, scaled(height), scaled(width), channels // (r * r))

    def get_config(self):
        config = super().get_config()
        config.update(block_size=self.block_size)
        return config
