"""MATLAB-compatible bicubic `imresize`, as separable matrix products in TensorFlow.

The super-resolution literature builds its low-resolution inputs with MATLAB's
`imresize(img, 1/s, 'bicubic')`, which *antialiases* when shrinking; OpenCV's and
`tf.image.resize`'s bicubic do not, and their images differ enough to move PSNR by tenths
of a dB. This module transcribes MATLAB's `contributions` function (toolbox/images/images/
imresize.m):

- cubic kernel with a = -0.5 (Keys 1981):
  k(x) = 1.5|x|^3 - 2.5|x|^2 + 1 for |x| <= 1, -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2 for 1 < |x| <= 2;
- when shrinking (scale < 1) the kernel is stretched, h(x) = scale * k(scale * x), and its
  width 4 grows to 4 / scale;
- output pixel x (1-based) is centred on u = x / scale + 0.5 (1 - 1 / scale) in the input and
  reads the ceil(width) + 2 input pixels from floor(u - width / 2); the weights are normalised
  to sum to one and out-of-range indices are mirrored (`aux = [1:n, n:-1:1]`);
- output size is ceil(scale * input size).

Each axis then is one dense [out, in] weight matrix, built in the graph from the (possibly
unknown) input size, so `imresize` works eagerly on NumPy arrays and inside `tf.data` maps.
Weights are computed in float64 and applied in float32; the result is neither clipped nor
rounded (MATLAB rounds uint8 inputs: callers round when they need that).
"""

import numpy as np
import tensorflow as tf


def _cubic(x):
    """Keys' cubic convolution kernel with a = -0.5, MATLAB's `cubic`."""
    ax = tf.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * tf.cast(ax <= 1.0, x.dtype)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * tf.cast((ax > 1.0) & (ax <= 2.0), x.dtype)
    return near + far


def resize_weights(in_length, out_length, scale):
    """The [out_length, in_length] matrix of MATLAB's bicubic `contributions` (float64).

    Args:
        in_length, out_length: sizes along the axis (ints or int32 scalar tensors).
        scale: out/in scale factor used for the kernel (MATLAB uses the requested scale,
            not out_length / in_length, when the user gives a scale).
    """
    in_length = tf.cast(in_length, tf.int32)
    out_length = tf.cast(out_length, tf.int32)
    scale = tf.cast(scale, tf.float64)
    # Antialiasing: shrinking stretches the kernel by 1/scale; enlarging keeps it as is.
    kernel_scale = tf.minimum(scale, 1.0)
    width = 4.0 / kernel_scale
    u = tf.range(1, out_length + 1, dtype=tf.float64) / scale + 0.5 * (1.0 - 1.0 / scale)
    left = tf.floor(u - width / 2.0)
    taps = tf.cast(tf.math.ceil(width), tf.int32) + 2
    indices = left[:, None] + tf.range(taps, dtype=tf.float64)[None, :]
    weights = kernel_scale * _cubic(kernel_scale * (u[:, None] - indices))
    weights /= tf.reduce_sum(weights, axis=1, keepdims=True)
    # Mirror out-of-range (1-based) indices as MATLAB's aux = [1:n, n:-1:1] does.
    period = 2 * in_length
    folded = tf.math.floormod(tf.cast(indices, tf.int32) - 1, period)
    source = tf.where(folded < in_length, folded, period - 1 - folded)
    rows = tf.broadcast_to(tf.range(out_length)[:, None], tf.shape(source))
    coords = tf.reshape(tf.stack([rows, source], axis=-1), [-1, 2])
    # scatter_nd sums duplicates: several mirrored taps can land on the same border pixel.
    return tf.scatter_nd(coords, tf.reshape(weights, [-1]), tf.stack([out_length, in_length]))


def _axis_plan(in_length, scale, out_length):
    """(out_length, kernel scale) for one axis from either a scale or an output size."""
    in64 = tf.cast(in_length, tf.float64)
    if out_length is None:
        return tf.cast(tf.math.ceil(in64 * scale), tf.int32), tf.constant(scale, tf.float64)
    out_length = tf.cast(out_length, tf.int32)
    return out_length, tf.cast(out_length, tf.float64) / in64


def imresize(images, scale=None, output_size=None):
    """MATLAB `imresize(images, scale, 'bicubic')` (antialiased when shrinking).

    Args:
        images: float [H, W, C] or [B, H, W, C] image(s), tf.Tensor or NumPy array.
        scale: one scale factor for both axes, e.g. 1/3 or 3; the output is
            ceil(scale * H) x ceil(scale * W).
        output_size: (height, width) instead of `scale`; each axis then scales by out / in.

    Returns:
        float32 tensor with the input's rank; values neither clipped nor rounded.

    Example:
        >>> import numpy as np
        >>> lr = imresize(np.ones((6, 9, 3), np.float32), scale=1 / 3)
        >>> tuple(lr.shape), float(lr[0, 0, 0])
        ((2, 3, 3), 1.0)
    """
    if (scale is None) == (output_size is None):
        raise ValueError("imresize: give exactly one of `scale` and `output_size`")
    if scale is not None and not scale > 0:
        raise ValueError(f"imresize: scale must be positive, got {scale!r}")
    x = tf.convert_to_tensor(images)
    rank = x.shape.rank
    if rank not in (3, 4):
        raise ValueError(f"imresize: expected [H, W, C] or [B, H, W, C], got shape {x.shape}")
    x = tf.cast(x, tf.float32)
    batched = x if rank == 4 else x[None]
    shape = tf.shape(batched)
    out_h, out_w = (None, None) if output_size is None else output_size
    out_h, scale_h = _axis_plan(shape[1], scale, out_h)
    out_w, scale_w = _axis_plan(shape[2], scale, out_w)
    rows = tf.cast(resize_weights(shape[1], out_h, scale_h), tf.float32)
    cols = tf.cast(resize_weights(shape[2], out_w, scale_w), tf.float32)
    resized = tf.einsum("oh,bhwc,pw->bopc", rows, batched, cols)
    return resized if rank == 4 else resized[0]


def modcrop(image, scale):
    """Crop H and W down to multiples of `scale` (top-left kept), as the SR protocols do.

    H, W are the first two axes of a rank-2/3 image and axes 1, 2 of a [B, H, W, C] batch.
    NumPy in, NumPy out; tensors in, tensors out.
    """
    scale = int(scale)
    if scale < 1:
        raise ValueError(f"modcrop: scale must be a positive integer, got {scale}")
    lead = 1 if len(image.shape) == 4 else 0
    if isinstance(image, np.ndarray):
        h, w = image.shape[lead], image.shape[lead + 1]
    else:
        image = tf.convert_to_tensor(image)
        h, w = tf.shape(image)[lead], tf.shape(image)[lead + 1]
    crop = (slice(None),) * lead + (slice(0, h - h % scale), slice(0, w - w % scale))
    return image[crop]
