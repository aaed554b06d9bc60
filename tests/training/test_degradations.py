"""Degradations: bicubic pairs agree with evaluation, noise statistics, augmentation invariants."""

import types

import numpy as np
import pytest
import tensorflow as tf

from pnen_tf.apps.imresize import imresize
from pnen_tf.metrics import rgb_to_ycbcr
from training import degradations, evaluate
from training.tasks.denoise import add_noise, draw_sigma
from training.tasks.sr import bicubic_pair


def _photo(shape=(50, 61, 3), seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, shape[1])[None, :, None] * np.ones(shape)
    return np.clip(x + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("convention", ["lr", "upsampled"])
def test_bicubic_pair_is_what_evaluation_measures(convention):
    hr = _photo()
    inp, target = bicubic_pair(hr, 3, convention)
    args = types.SimpleNamespace(task="sr", scale=3)
    eval_lr, eval_hr = evaluate.degrade(args, "x.png", hr)
    np.testing.assert_array_equal(target, eval_hr)
    assert target.shape == (48, 60, 3)
    if convention == "lr":
        assert inp.dtype == np.uint8 and inp.shape == (16, 20, 3)
        np.testing.assert_array_equal(inp / np.float32(255), eval_lr)
    else:
        # MemNet's input: the evaluation LR enlarged by the restorer's bicubic, unrounded.
        assert inp.dtype == np.float32 and inp.shape == target.shape
        np.testing.assert_allclose(inp, imresize(eval_lr, 3).numpy(), atol=1e-6)


def test_bicubic_downscale_of_a_constant_is_the_constant():
    inp, _ = bicubic_pair(np.full((12, 12, 1), 77, np.uint8), 4, "lr")
    np.testing.assert_array_equal(inp, 77)


def test_gray_conversion_is_matlab_rgb2ycbcr_y():
    rgb = _photo((4, 5, 3))
    y = degradations.to_channels(rgb, 1)
    expected = np.round(rgb_to_ycbcr(rgb / 255.0)[..., :1] * 255)
    np.testing.assert_array_equal(y, expected)
    gray = degradations.to_channels(y, 3)
    assert gray.shape == (4, 5, 3) and (gray[..., 0] == gray[..., 2]).all()


def test_noise_has_sigma_over_255_and_depends_on_seed_only():
    clean = tf.fill([64, 64, 1], 0.5)
    noisy = add_noise(clean, 30.0, tf.constant([1, 2], tf.int64)).numpy()
    residual = noisy - 0.5
    assert abs(residual.std() - 30 / 255) < 0.01 and abs(residual.mean()) < 0.01
    assert noisy.max() > 0.5 + 2 * 30 / 255  # not clipped to the clean range
    again = add_noise(clean, 30.0, tf.constant([1, 2], tf.int64)).numpy()
    other = add_noise(clean, 30.0, tf.constant([1, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(noisy, again)
    assert not np.array_equal(noisy, other)


def test_augment_covers_the_dihedral_group_and_keeps_pairs_aligned():
    hr = _photo((24, 24, 1)).astype(np.float32)
    lr = imresize(hr, scale=1 / 3).numpy()
    seen = set()
    for seed in range(64):
        a_lr, a_hr = degradations.augment((tf.constant(lr), tf.constant(hr)),
                                          tf.constant([seed, 7], tf.int64))
        seen.add(a_hr.numpy().tobytes())
        # Flips and quarter turns commute with the symmetric bicubic kernel on modcropped images.
        np.testing.assert_allclose(imresize(a_hr, scale=1 / 3).numpy(), a_lr.numpy(), atol=1e-3)
    assert len(seen) == 8


def test_blind_sigma_is_uniform_in_the_range_and_stateless():
    draws = np.array([float(draw_sigma((5.0, 55.0), tf.constant([0, n], tf.int64)))
                      for n in range(400)])
    assert draws.min() >= 5 and draws.max() < 55
    assert abs(draws.mean() - 30) < 3 and draws.std() == pytest.approx(50 / np.sqrt(12), rel=0.1)
    again = draw_sigma((5.0, 55.0), tf.constant([0, 7], tf.int64))
    assert float(again) == draws[7]
