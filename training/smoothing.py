"""Edge-preserving smoothing targets that PNEN learns to imitate (paper Sec. IV-A).

Three filters, with the paper's parameters: weighted median filter (r = 10, sigma = 50), L0
smoothing (lambda = 0.02, kappa = 2) and the SD filter (lambda = 15, `training.sd_filter`).
Targets are slow to compute (the SD filter takes seconds per image), so `cached_target`
stores each one once on disk, keyed by filter, parameters and image content.
"""

import hashlib
import json
import os
import tempfile

import cv2
import numpy as np

from training import sd_filter

FILTERS = {
    "wmf": {"radius": 10, "sigma": 50.0},
    "l0": {"lam": 0.02, "kappa": 2.0},
    "sd": dict(sd_filter.DEFAULTS),
}
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "pnen_tf", "targets")


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


def cached_target(image_uint8, filter_name, root=None):
    """Path of the PNG holding `smooth_target(image_uint8, filter_name)`, computed if missing.

    The file name is a hash of the image bytes, so the same picture under another name or
    folder is filtered once, and an edited picture is filtered again. Writes are atomic
    (temporary file, then rename), so concurrent workers or a killed run never leave a
    truncated target behind.
    """
    image = np.ascontiguousarray(image_uint8)
    digest = hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()[:24]
    folder = cache_dir(filter_name, root)
    path = os.path.join(folder, f"{digest}.png")
    if os.path.isfile(path):
        return path
    os.makedirs(folder, exist_ok=True)
    target = smooth_target(image, filter_name)
    bgr = target if target.ndim == 2 else cv2.cvtColor(target, cv2.COLOR_RGB2BGR)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=folder)
    os.close(fd)
    try:
        if not cv2.imwrite(tmp, bgr):
            raise OSError(f"could not write smoothing target {tmp!r}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
