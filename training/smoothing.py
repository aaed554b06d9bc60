"""Edge-preserving smoothing targets that PNEN learns to imitate (paper Sec. IV-A).

Three filters, with the paper's parameters: weighted median filter (r = 10, sigma = 50), L0
smoothing (lambda = 0.02, kappa = 2) and the SD filter (lambda = 15, `training.sd_filter`).
Targets are slow to compute (the SD filter takes several seconds per image), so
`cached_targets` stores each one once on disk, keyed by filter, parameters and image content,
computes the missing ones in parallel processes and logs its progress.

This module must not import TensorFlow (nor `pnen_tf`, which does): the worker processes
import it to run the filters.
"""

import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import os
import time

import cv2
import numpy as np

from training import sd_filter

log = logging.getLogger("training")

FILTERS = {
    "wmf": {"radius": 10, "sigma": 50.0},
    "l0": {"lam": 0.02, "kappa": 2.0},
    "sd": dict(sd_filter.DEFAULTS),
}
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "pnen_tf", "targets")
# The filters are single-threaded C/NumPy code: one process per core, two at most, so that
# target computation leaves room on a shared machine.
WORKERS = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else os.cpu_count() or 1)


def smooth_target(image_uint8, filter_name):
    """The smoothed uint8 image that the network is trained to reproduce.

    Args:
        image_uint8: uint8 image, [H, W] or [H, W, 3] (RGB order).
        filter_name: 'wmf', 'l0' or 'sd'.

    Returns:
        uint8 image of the same shape.

    Example:
        >>> flat = np.full((16, 16, 3), 90, np.uint8)
        >>> int(smooth_target(flat, "l0").max())
        90
    """
    image = np.asarray(image_uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"smooth_target expects a uint8 image, got dtype {image.dtype}")
    if image.ndim not in (2, 3):
        raise ValueError(f"smooth_target expects [H, W] or [H, W, C], got shape {image.shape}")
    if filter_name not in FILTERS:
        raise ValueError(f"unknown smoothing filter {filter_name!r}; choose from {sorted(FILTERS)}")
    params = FILTERS[filter_name]
    if filter_name == "wmf":
        # The joint image is the input itself: the paper filters without external guidance.
        # OpenCV reduces a colour joint image to clusters by k-means++, which draws from the
        # calling thread's RNG: seeded, the same image always gets the same target.
        cv2.setRNGSeed(0)
        out = cv2.ximgproc.weightedMedianFilter(image, image, params["radius"], params["sigma"])
    elif filter_name == "l0":
        out = cv2.ximgproc.l0Smooth(image, lambda_=params["lam"], kappa=params["kappa"])
    else:
        out = sd_filter.sd_filter(image / 255.0, **params) * 255.0
        out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return np.asarray(out, dtype=np.uint8).reshape(image.shape)


def cache_dir(filter_name, root=None):
    """The folder holding one filter's targets: `<root>/<filter>-<hash of its parameters>`."""
    key = json.dumps({"filter": filter_name, **FILTERS[filter_name]}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return os.path.join(root or DEFAULT_CACHE, f"{filter_name}-{digest}")


def target_path(image_uint8, filter_name, root=None):
    """Where the cached target of this image lies: `cache_dir(...)/<hash of the pixels>.png`.

    The name hashes the image bytes and shape, so the same picture under another name or
    folder is filtered once, and an edited picture is filtered again.
    """
    image = np.ascontiguousarray(image_uint8)
    digest = hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()[:24]
    return os.path.join(cache_dir(filter_name, root), f"{digest}.png")


def cached_target(image_uint8, filter_name, root=None):
    """Path of the PNG holding `smooth_target(image_uint8, filter_name)`, computed if missing."""
    path = target_path(image_uint8, filter_name, root)
    if not os.path.isfile(path):
        _write_target(path, smooth_target(np.ascontiguousarray(image_uint8), filter_name))
    return path


def cached_targets(images, filter_name, root=None, workers=None, report_seconds=10.0):
    """Paths of the cached targets of `images` (uint8 arrays), computing the missing ones.

    Missing targets are computed by `workers` processes (default `WORKERS`) and written as they
    come; a line at the start and then at most every `report_seconds` (and at the end) logs
    how many are done, the time elapsed and the time left. Writes are atomic
    (`pnen_tf._atomic`): concurrent runs or a killed one never leave a truncated target.
    """
    paths = [target_path(image, filter_name, root) for image in images]
    missing = {}
    for path, image in zip(paths, images):
        if not os.path.isfile(path):
            missing.setdefault(path, np.ascontiguousarray(image))  # the same picture once
    if missing:
        _compute(missing, filter_name, workers or WORKERS,
                 _Progress(f"{filter_name} targets", len(missing), report_seconds),
                 cached=len(set(paths)) - len(missing))
    return paths


def _compute(missing, filter_name, workers, progress, cached):
    """Compute and write the targets of `missing` ({path: image}), in parallel if it helps."""
    workers = min(workers, len(missing))
    log.info("computing %d %s smoothing target(s) (%d cached) with %d process(es) into %s",
             len(missing), filter_name, cached, workers,
             os.path.dirname(next(iter(missing))))
    if workers == 1:
        for path, image in missing.items():
            _write_target(path, smooth_target(image, filter_name))
            progress.advance()
        return
    # Spawned, not forked: the parent usually runs TensorFlow's threads, which a fork breaks.
    executor = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {executor.submit(smooth_target, image, filter_name): path
                   for path, image in missing.items()}
        for future in concurrent.futures.as_completed(futures):
            _write_target(futures[future], future.result())
            progress.advance()
    finally:
        executor.shutdown(cancel_futures=True)


def _write_target(path, target):
    # Imported here: `pnen_tf` imports TensorFlow, which the worker processes do without.
    from pnen_tf._atomic import write_atomically

    bgr = target if target.ndim == 2 else cv2.cvtColor(target, cv2.COLOR_RGB2BGR)
    encoded, png = cv2.imencode(".png", bgr)
    if not encoded:
        raise OSError(f"could not encode the smoothing target {path!r}")
    write_atomically(path, png.tobytes())


class _Progress:
    """Logs `done/total, elapsed, ETA` on the first item, then every `every` seconds, and last."""

    def __init__(self, what, total, every):
        self.what, self.total, self.every = what, total, every
        self.done, self.start, self.last = 0, time.monotonic(), None

    def advance(self):
        self.done += 1
        now = time.monotonic()
        if self.done < self.total and self.last is not None and now - self.last < self.every:
            return
        self.last, elapsed = now, now - self.start
        eta = elapsed / self.done * (self.total - self.done)
        log.info("%s: %d/%d computed, %s elapsed, ETA %s", self.what, self.done, self.total,
                 _duration(elapsed), _duration(eta))


def _duration(seconds):
    """'1 h 05 min', '4 min 36 s' or '12 s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"
