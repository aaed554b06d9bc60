"""Data pipeline: shapes, ranges, determinism and resumption, bad-input handling."""

import logging
import os

import numpy as np
import pytest

from pnen_tf import image_io
from training import builtin_images, data
from training.tasks import configure


def _write(folder, name, shape, seed=0):
    rng = np.random.default_rng(seed)
    image_io.write_image(os.path.join(folder, name), rng.random(shape).astype(np.float32))


def _pairs(task, channels=1, scale=1, convention="same", n=3, side=40):
    rng = np.random.default_rng(1)
    images = [(f"im{i}", rng.integers(0, 256, (side + 3 * i, side, channels), dtype=np.uint8))
              for i in range(n)]
    return _task(task, scale=scale).training_pairs(images, convention)


def _task(name, **settings):
    return configure({"task": name, **settings})


@pytest.mark.parametrize("task,scale,convention,in_side", [
    ("denoise", 1, "same", 24), ("sr", 3, "upsampled", 24), ("sr", 3, "lr", 8)])
def test_batches_have_shapes_ranges_and_content(task, scale, convention, in_side):
    pairs = _pairs(task, scale=scale, convention=convention)
    ds = data.train_dataset(pairs, patch=24, batch=4, seed=0,
                            task=_task(task, scale=scale, sigma=50.0))
    inp, target = next(iter(ds))
    assert inp.shape == (4, in_side, in_side, 1) and target.shape == (4, 24, 24, 1)
    assert inp.dtype == target.dtype == np.float32
    assert 0.0 <= target.numpy().min() and target.numpy().max() <= 1.0
    if task == "denoise":
        residual = (inp - target).numpy()
        assert abs(residual.std() - 50 / 255) < 0.02
    else:
        assert 0.0 <= inp.numpy().min() and inp.numpy().max() <= 1.0


def test_stream_is_reproducible_and_resumes_exactly():
    pairs = _pairs("denoise")
    stream = lambda seed, start=0: data.train_dataset(pairs, patch=16, batch=2, seed=seed,
                                                      task=_task("denoise", sigma=30.0),
                                                      start_step=start)
    first = [b[0].numpy() for b in stream(5).take(4)]
    again = [b[0].numpy() for b in stream(5).take(4)]
    resumed = [b[0].numpy() for b in stream(5, start=2).take(2)]
    other = next(iter(stream(6)))[0].numpy()
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first[2], resumed[0])
    np.testing.assert_array_equal(first[3], resumed[1])
    assert not np.array_equal(first[0], other)


def test_crops_are_aligned_between_lr_input_and_target():
    hr = np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4), np.ones((6, 6), np.uint8))
    lr = hr[::3, ::3]
    pairs = [(lr[..., None], hr[..., None])]
    inp, target = next(iter(data.train_dataset(pairs, patch=12, batch=8, seed=0,
                                                task=_task("sr", scale=3))))
    # Augmented together: every target pixel block repeats its LR pixel.
    np.testing.assert_array_equal(target.numpy()[:, ::3, ::3], inp.numpy())


def test_validation_baseline_is_the_degraded_input(tmp_path):
    pairs = _pairs("sr", channels=3, scale=2, convention="lr")
    items = data.validation_set(pairs, task=_task("sr", scale=2), convention="lr")
    assert items[0]["baseline"].shape == items[0]["target"].shape
    noisy = data.validation_set(_pairs("denoise"), task=_task("denoise", sigma=30.0), seed=3)
    again = data.validation_set(_pairs("denoise"), task=_task("denoise", sigma=30.0), seed=3)
    np.testing.assert_array_equal(noisy[0]["input"], again[0]["input"])
    assert noisy[0]["baseline"] is noisy[0]["input"]


def test_bad_files_are_skipped_with_a_warning(tmp_path, caplog):
    _write(tmp_path, "good.png", (40, 40, 3))
    _write(tmp_path, "gray.png", (40, 40, 1))
    _write(tmp_path, "small.png", (10, 40, 3))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    with caplog.at_level(logging.INFO, logger="training"):
        images = data.load_images(data.list_folder(str(tmp_path)), 3, min_side=24)
    assert sorted(os.path.basename(p) for p, _ in images) == ["good.png", "gray.png"]
    assert all(im.shape[-1] == 3 for _, im in images)
    text = caplog.text
    assert "broken.png" in text and "small.png" in text and "smaller than the 24-pixel" in text
    assert "replicated to RGB" in text and "gray.png" in text


def test_unusable_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(data.DataError, match="no such directory"):
        data.list_folder(str(tmp_path / "missing"))
    with pytest.raises(data.DataError, match="no images found"):
        data.list_folder(str(tmp_path))
    _write(tmp_path, "tiny.png", (8, 8, 3))
    with pytest.raises(data.DataError, match="none of the 1 image"):
        data.load_images(data.list_folder(str(tmp_path)), 3, min_side=24)


def test_center_crop_and_builtin_split():
    (_, crop), = data.center_crop([("a", np.zeros((30, 50, 1)))], 20)
    assert crop.shape == (20, 20, 1)
    train, val = builtin_images.train_paths(), builtin_images.validation_paths()
    assert len(train) >= 4 and len(val) >= 2 and not set(train) & set(val)
    assert all(os.path.isfile(p) for p in train + val)


def test_hold_out_takes_the_last_twentieth_of_every_folder(tmp_path):
    folders = []
    for name, count in (("T91", 41), ("BSD200", 20), ("one", 1)):
        os.makedirs(tmp_path / name)
        for i in range(count):
            (tmp_path / name / f"{i:03d}.png").write_bytes(b"")
        folders.append(str(tmp_path / name))
    per_folder = data.list_folders(folders)
    train, held = data.hold_out(per_folder)
    names = lambda paths: [os.path.relpath(p, tmp_path) for p in paths]
    # max(1, n // 20) of each folder's last images; a folder of one image only trains.
    assert names(held) == ["T91/039.png", "T91/040.png", "BSD200/019.png"]
    assert len(train) == 41 + 20 + 1 - 3 and not set(train) & set(held)
    assert names(train)[:2] == ["T91/000.png", "T91/001.png"] and names(train)[-1] == "one/000.png"
    # One folder: exactly the split of a single --data (the last 1/20 of the sorted list).
    alone = per_folder[0]
    assert data.hold_out([alone]) == (alone[:-2], alone[-2:])
    assert data.hold_out(data.list_folders(folders)) == (train, held)  # deterministic
    with pytest.raises(data.DataError, match="one image only; pass --val"):
        data.hold_out([per_folder[2]])
    with pytest.raises(data.DataError, match="given twice"):
        data.list_folders([folders[0], folders[1], folders[0] + "/"])


def test_blind_noise_draws_one_sigma_per_patch_in_the_range():
    pairs = _pairs("denoise", side=60)
    blind = _task("denoise", sigma_range=(0.0, 55.0))
    stream = lambda: data.train_dataset(pairs, patch=48, batch=32, seed=0, task=blind)
    inp, target = next(iter(stream()))
    sigmas = (inp - target).numpy().reshape(32, -1).std(axis=1) * 255
    assert sigmas.min() < 15 and sigmas.max() > 40 and sigmas.max() < 57  # 2304 pixels each
    np.testing.assert_array_equal(inp.numpy(), next(iter(stream()))[0].numpy())
    fixed = data.train_dataset(pairs, patch=48, batch=32, seed=0,
                               task=_task("denoise", sigma=25.0))
    fixed_inp, fixed_target = next(iter(fixed))
    # Same patches and augmentation; only the noise level differs.
    np.testing.assert_array_equal(target.numpy(), fixed_target.numpy())
    sigmas = (fixed_inp - fixed_target).numpy().reshape(32, -1).std(axis=1) * 255
    assert np.all(np.abs(sigmas - 25) < 2)


def test_smoothing_pairs_come_from_the_target_cache(tmp_path, monkeypatch):
    from training import smoothing

    rng = np.random.default_rng(2)
    images = [(f"im{i}", rng.integers(0, 256, (30, 34, 3), dtype=np.uint8)) for i in range(3)]
    pairs = _task("smooth", filter="l0").training_pairs(images, "same", str(tmp_path))
    for (_, image), (inp, target) in zip(images, pairs):
        assert inp is image
        np.testing.assert_array_equal(target, smoothing.smooth_target(image, "l0"))
    monkeypatch.setattr(smoothing, "smooth_target", lambda *a: pytest.fail("recomputed"))
    again = _task("smooth", filter="l0").training_pairs(images, "same", str(tmp_path))
    np.testing.assert_array_equal(again[1][1], pairs[1][1])


def test_validation_crops_a_smoothing_target_of_the_whole_image(tmp_path):
    from training import smoothing

    # Blocks with noise: L0 smoothing flattens them, and how much depends on the whole image.
    rng = np.random.default_rng(3)
    image = np.kron(rng.integers(0, 256, (6, 7, 3)), np.ones((8, 8, 1)))
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    (inp, target), = _task("smooth", filter="l0").validation_pairs(
        [("a", image)], "same", crop=20, cache_root=str(tmp_path))
    whole = smoothing.smooth_target(image, "l0")
    np.testing.assert_array_equal(inp, image[14:34, 18:38])
    np.testing.assert_array_equal(target, whole[14:34, 18:38])
    # The filter run on the crop alone gives another target: the reason for the order.
    assert np.abs(smoothing.smooth_target(inp.copy(), "l0").astype(int) - target).max() > 0
    (uncropped, _), = _task("smooth", filter="l0").validation_pairs(
        [("a", image)], "same", cache_root=str(tmp_path))
    assert uncropped is image


def test_validation_crops_before_degrading_elsewhere():
    image = np.random.default_rng(4).integers(0, 256, (33, 40, 1), dtype=np.uint8)
    (inp, target), = _task("sr", scale=3).validation_pairs([("a", image)], "lr", crop=24)
    np.testing.assert_array_equal(target, image[4:28, 8:32])
    assert inp.shape == (8, 8, 1)  # the LR of the crop
