"""MATLAB bicubic imresize: hand-computed contributions, identities, graph mode, modcrop."""

import doctest

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pnen_tf.apps.imresize import imresize, modcrop, resize_weights


def test_upscale_weights_match_hand_computed_matlab_contributions():
    # in=4, out=8, scale=2: output 1 sits at u = 1/2 + 0.25 = 0.75, taps -2..3 with kernel
    # values 0, k(1.75), k(0.75), k(0.25), k(1.25), 0 = 0, -0.0234375, 0.2265625, 0.8671875,
    # -0.0703125, 0; MATLAB's mirror maps taps -1, 0 to pixels 2, 1, so row 1 of the matrix
    # is [0.2265625 + 0.8671875, -0.0234375 - 0.0703125, 0, 0].
    w = resize_weights(4, 8, 2.0).numpy()
    np.testing.assert_allclose(w[0], [1.09375, -0.09375, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(w[-1], [0.0, 0.0, -0.09375, 1.09375], atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)


def test_downscale_weights_are_antialiased_like_matlab():
    # in=4, out=2, scale=1/2: the kernel is stretched to width 8; output 1 sits at u = 1.5,
    # taps -3..6 get 0.5 k(d/2) normalised (k(1.75)/2, k(1.25)/2, ... = -0.01171875,
    # -0.03515625, 0.11328125, 0.43359375, ...); mirroring folds them onto pixels 1..4.
    w = resize_weights(4, 2, 0.5).numpy()
    np.testing.assert_allclose(w[0], [0.546875, 0.3984375, 0.1015625, -0.046875], atol=1e-12)
    np.testing.assert_allclose(w[1], w[0][::-1], atol=1e-12)


def test_scale_one_is_the_identity():
    x = np.random.default_rng(0).random((7, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(imresize(x, 1).numpy(), x)


@pytest.mark.parametrize("scale", [0.37, 0.5, 1 / 3, 1.7, 4])
def test_constant_image_stays_constant(scale):
    out = imresize(np.full((2, 9, 11, 2), 0.25, np.float32), scale).numpy()
    np.testing.assert_allclose(out, 0.25, atol=1e-6)


def test_output_size_is_ceil_of_scaled_size():
    x = np.zeros((5, 7, 1), np.float32)
    assert imresize(x, 0.5).shape == (3, 4, 1)
    assert imresize(x, 1 / 3).shape == (2, 3, 1)
    assert imresize(x, output_size=(10, 3)).shape == (10, 3, 1)
    assert imresize(np.zeros((228, 345, 3)), 1 / 3).shape == (76, 115, 3)


@pytest.mark.parametrize("scale", [0.5, 1 / 3, 2, 3])
def test_interior_matches_pillow_bicubic(scale):
    # Pillow's bicubic is an independent implementation of the same antialiased Keys kernel
    # (a = -0.5, support stretched by 1/scale when shrinking) but it renormalises at the
    # borders instead of mirroring, so only pixels farther than the kernel from a border agree.
    x = np.random.default_rng(1).random((30, 36)).astype(np.float32)
    size = (int(np.ceil(36 * scale)), int(np.ceil(30 * scale)))
    pil = np.asarray(Image.fromarray(x, mode="F").resize(size, Image.BICUBIC))
    ours = imresize(x[..., None], scale).numpy()[..., 0]
    m = int(np.ceil(3 * max(scale, 1 / scale)))
    np.testing.assert_allclose(ours[m:-m, m:-m], pil[m:-m, m:-m], atol=2e-5)


def test_batch_equals_per_image():
    x = np.random.default_rng(2).random((3, 8, 6, 2)).astype(np.float32)
    batch = imresize(x, 1 / 2).numpy()
    for i in range(3):
        np.testing.assert_allclose(batch[i], imresize(x[i], 1 / 2).numpy(), atol=1e-6)


def test_runs_in_a_tf_data_map_with_unknown_sizes():
    images = [np.random.default_rng(i).random((9 + i, 12 - i, 3)).astype(np.float32)
              for i in range(2)]
    data = tf.data.Dataset.from_generator(
        lambda: iter(images), output_signature=tf.TensorSpec([None, None, 3], tf.float32))
    resized = list(data.map(lambda im: imresize(modcrop(im, 3), 1 / 3)).as_numpy_iterator())
    for image, out in zip(images, resized):
        np.testing.assert_allclose(out, imresize(modcrop(image, 3), 1 / 3).numpy(), atol=1e-6)


def test_modcrop_numpy_tensor_and_batch():
    x = np.arange(7 * 10).reshape(7, 10)
    assert modcrop(x, 3).shape == (6, 9)
    np.testing.assert_array_equal(modcrop(x, 3), x[:6, :9])
    assert isinstance(modcrop(x, 3), np.ndarray)
    assert modcrop(tf.zeros([7, 10, 3]), 4).shape == (4, 8, 3)
    assert modcrop(np.zeros((2, 7, 10, 3)), 2).shape == (2, 6, 10, 3)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="exactly one"):
        imresize(np.zeros((4, 4, 1)), 2, output_size=(8, 8))
    with pytest.raises(ValueError, match=r"shape \(4, 4\)"):
        imresize(np.zeros((4, 4)), 2)
    with pytest.raises(ValueError, match="positive"):
        imresize(np.zeros((4, 4, 1)), 0)


def test_docstring_examples_run():
    import pnen_tf.apps.imresize as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
