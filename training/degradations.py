"""What every task's training data shares: the model's channels and the paper's augmentation.

The degradations themselves belong to their task (`training.tasks`: bicubic SR pairs,
Gaussian noise, smoothing targets, JPEG images), each used by training and evaluation alike.
Gray models see the Y of BT.601 YCbCr (MATLAB `rgb2ycbcr`), the channel `pnen_tf.apps.restore`
feeds them and the channel the SR tables measure.
"""

import numpy as np
import tensorflow as tf

from pnen_tf.metrics import rgb_to_ycbcr


def to_channels(image_uint8, channels):
    """A uint8 [H, W, C] image as `channels` (1 or 3) channels: Y of YCbCr, or gray replicated."""
    image = np.asarray(image_uint8)
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        y = rgb_to_ycbcr(image / 255.0)[..., :1]
        return np.round(y * 255.0).astype(np.uint8)
    return np.repeat(image, 3, axis=-1)


def augment(images, seed):
    """The same random flip and 90-degree rotation (paper Sec. IV-A) applied to every image.

    `images` is a tuple of [H, W, C] tensors (input, target) whose sizes may differ by the SR
    scale; the eight dihedral transforms commute with bicubic resizing on modcropped images.
    """
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    turns = tf.random.stateless_uniform([], seed=seed + 1, maxval=4, dtype=tf.int32)

    def transform(image):
        image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
        return tf.image.rot90(image, turns)

    return tuple(transform(image) for image in images)
