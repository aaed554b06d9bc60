"""Smoothing targets: the three filters, their parameters, and the on-disk cache."""

import os

import cv2
import numpy as np
import pytest

from training import smoothing


def _textured(seed=0):
    rng = np.random.default_rng(seed)
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, 20:] = 180
    return np.clip(image + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["wmf", "l0", "sd"])
def test_filters_smooth_texture_and_keep_shape(name):
    image = _textured()
    out = smoothing.smooth_target(image, name)
    assert out.shape == image.shape and out.dtype == np.uint8
    left = np.s_[5:35, 3:15]
    assert out[left].astype(float).std() < image[left].astype(float).std()
    # The edge between the halves survives: mean levels of the two sides stay far apart.
    assert out[:, 25:].mean() - out[:, :15].mean() > 120


def test_parameters_are_the_papers():
    assert smoothing.FILTERS["wmf"] == {"radius": 10, "sigma": 50.0}
    assert smoothing.FILTERS["l0"] == {"lam": 0.02, "kappa": 2.0}
    assert smoothing.FILTERS["sd"]["lam"] == 15.0


def test_l0_matches_opencv_directly():
    image = _textured(1)
    expected = cv2.ximgproc.l0Smooth(image, lambda_=0.02, kappa=2.0)
    np.testing.assert_array_equal(smoothing.smooth_target(image, "l0"), expected)


def test_gray_images_and_bad_arguments():
    gray = _textured()[..., 0]
    assert smoothing.smooth_target(gray, "wmf").shape == gray.shape
    with pytest.raises(ValueError, match="uint8"):
        smoothing.smooth_target(gray.astype(np.float32), "l0")
    with pytest.raises(ValueError, match="bilateral"):
        smoothing.smooth_target(gray, "bilateral")


def test_cache_computes_once_and_keys_by_content(tmp_path, monkeypatch):
    image = _textured()
    first = smoothing.cached_target(image, "l0", str(tmp_path))
    assert os.path.basename(os.path.dirname(first)).startswith("l0-")
    cached = cv2.cvtColor(cv2.imread(first), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(cached, smoothing.smooth_target(image, "l0"))
    monkeypatch.setattr(smoothing, "smooth_target", lambda *a: pytest.fail("recomputed"))
    assert smoothing.cached_target(image.copy(), "l0", str(tmp_path)) == first
    other = image.copy()
    other[0, 0, 0] ^= 1
    with pytest.raises(pytest.fail.Exception):
        smoothing.cached_target(other, "l0", str(tmp_path))
    assert smoothing.cache_dir("l0", "r") != smoothing.cache_dir("wmf", "r")
    assert not [n for n in os.listdir(os.path.dirname(first)) if n.startswith(".tmp-")]
