"""The degradations that make training pairs (paper Sec. IV-A and V), one place for all tasks.

- denoise: additive white Gaussian noise of standard deviation sigma / 255, drawn afresh for
  every patch, not clipped (the Set12/BSD68 protocol of DnCNN and MemNet); blind denoising
  draws each patch's sigma uniformly from a range first (DnCNN-B: [0, 55]);
- sr: MATLAB-compatible antialiased bicubic downscaling by 1/s of the modcropped image, with
  the shared `pnen_tf.imresize` used by evaluation; MemNet then takes the bicubic
  re-upsampled image ('upsampled'), RDN the low-resolution one ('lr');
- smooth: the input is the image, the target its filtered version (`training.smoothing`).

Gray models see the Y of BT.601 YCbCr (MATLAB `rgb2ycbcr`), the channel `pnen_tf.restore`
feeds them and the channel the SR tables measure.
"""

import numpy as np
import tensorflow as tf

from pnen_tf.imresize import imresize, modcrop
from pnen_tf.metrics import rgb_to_ycbcr

TASKS = ("smooth", "denoise", "sr")


def to_channels(image_uint8, channels):
    """A uint8 [H, W, C] image as `channels` (1 or 3) channels: Y of YCbCr, or gray replicated."""
    image = np.asarray(image_uint8)
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        y = rgb_to_ycbcr(image / 255.0)[..., :1]
        return np.round(y * 255.0).astype(np.uint8)
    return np.repeat(image, 3, axis=-1)


def bicubic_pair(hr_uint8, scale, convention):
    """(network input, target) for x`scale` SR of one whole image, as `training.evaluate` does.

    The low-resolution image is rounded to 8 bits, as a saved LR file would be, and is the
    input for the 'lr' convention (uint8). For 'upsampled' the input is that image enlarged
    back with the same bicubic `imresize`, unrounded (float32 in [0, 1]).
    """
    hr = modcrop(np.asarray(hr_uint8), scale)
    lr = np.clip(np.round(imresize(hr.astype(np.float32), scale=1.0 / scale).numpy()), 0, 255)
    lr = lr.astype(np.uint8)
    if convention == "lr":
        return lr, hr
    if convention != "upsampled":
        raise ValueError(f"SR input convention must be 'lr' or 'upsampled', got {convention!r}")
    return imresize(lr / np.float32(255.0), scale=scale).numpy(), hr


def add_noise(clean, sigma, seed):
    """`clean` (float in [0, 1]) plus N(0, (sigma/255)^2) noise, stateless in `seed` ([2] int)."""
    noise = tf.random.stateless_normal(tf.shape(clean), seed=seed, stddev=sigma / 255.0)
    return clean + noise


def draw_sigma(sigma_range, seed):
    """A noise level uniform in [low, high) (blind denoising), stateless in `seed` ([2] int)."""
    low, high = sigma_range
    return tf.random.stateless_uniform([], seed=seed, minval=low, maxval=high)


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
