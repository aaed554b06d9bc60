"""Smoothing targets: the three filters, their parameters, and the on-disk cache."""

import logging
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


@pytest.mark.parametrize("name", ["wmf", "l0", "sd"])
def test_the_same_image_always_gets_the_same_target(name):
    # OpenCV's WMF clusters a colour image by k-means++ from its RNG: unseeded, 25% of this
    # image's values changed from call to call (up to 42 levels on a BSD photograph).
    image = _textured(3)
    first = smoothing.smooth_target(image, name)
    for _ in range(2):
        np.testing.assert_array_equal(smoothing.smooth_target(image, name), first)


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


@pytest.mark.parametrize("workers", [1, 2])
def test_cached_targets_computes_the_missing_in_parallel_with_progress(tmp_path, caplog,
                                                                       workers):
    images = [_textured(seed) for seed in range(4)]
    images.append(images[0].copy())  # the same picture again: computed once
    root = str(tmp_path)
    first = smoothing.cached_target(images[3], "wmf", root)
    with caplog.at_level(logging.INFO, logger="training"):
        paths = smoothing.cached_targets(images, "wmf", root, workers=workers,
                                         report_seconds=0)
    assert paths[3] == first and paths[4] == paths[0] and len(set(paths)) == 4
    for image, path in zip(images, paths):
        cached = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(cached, smoothing.smooth_target(image, "wmf"))
    lines = [r.getMessage() for r in caplog.records]
    assert f"computing 3 wmf smoothing target(s) (1 cached) with {workers} process(es)" in lines[0]
    assert [line.split(":")[1].split(",")[0].strip() for line in lines[1:]] == \
        ["1/3 computed", "2/3 computed", "3/3 computed"]
    assert all("elapsed, ETA" in line for line in lines[1:])
    assert not [n for n in os.listdir(os.path.dirname(first)) if n.startswith(".tmp-")]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="training"):
        assert smoothing.cached_targets(images, "wmf", root, workers=workers) == paths
    assert not caplog.records  # all cached: nothing computed, nothing said


def test_progress_lines_are_throttled_and_durations_readable(caplog):
    progress = smoothing._Progress("sd targets", 5, every=3600)
    with caplog.at_level(logging.INFO, logger="training"):
        for _ in range(5):
            progress.advance()
    assert [r.getMessage().split(",")[0] for r in caplog.records] == \
        ["sd targets: 1/5 computed", "sd targets: 5/5 computed"]
    assert [smoothing._duration(s) for s in (12.4, 276, 3900)] == \
        ["12 s", "4 min 36 s", "1 h 05 min"]


def test_a_failing_filter_stops_the_workers(tmp_path):
    images = [_textured(seed) for seed in range(3)]
    images[1] = images[1][..., :2]  # two channels: the weighted median filter refuses it
    with pytest.raises(cv2.error):
        smoothing.cached_targets(images, "wmf", str(tmp_path), workers=2)
