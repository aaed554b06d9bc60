"""PSNR and SSIM exactly as the restoration literature reports them (NumPy only).

Conventions, each an explicit parameter with the literature's default (BasicSR's
`calculate_psnr(img, img2, crop_border, test_y_channel)`; MATLAB `Evaluate_PSNR_SSIM.m` of
EDSR/RCAN; Wang et al.'s `ssim_index.m`):

- Images are on the [0, 255] scale and rounded to 8-bit integers first (clipped to [0, 255]),
  as when results are saved as PNGs and measured afterwards.
- `crop_border` pixels are shaved from every side (the SR tables shave `scale`).
- `test_y_channel`: RGB images are measured on the luma of ITU-R BT.601 YCbCr in MATLAB's
  `rgb2ycbcr` form, Y = 16 + (65.481 R + 128.553 G + 24.966 B) for R, G, B in [0, 1], so
  Y is in [16, 235]; Y is kept in floating point, as `rgb2ycbcr` on doubles and BasicSR do.
  A single-channel image is measured on that channel whatever `test_y_channel` says, as the
  published tables do for the grayscale images inside colour sets.
- PSNR = 10 log10(255^2 / MSE), MSE over all pixels and channels; infinite for equal images.
- SSIM (Wang et al. 2004, eq. 13): 11x11 Gaussian window with sigma = 1.5, K1 = 0.01,
  K2 = 0.03, L = 255, statistics from 'valid' filtering only (no padding), averaged over the
  map and then over channels.
"""

import numpy as np

_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0
# MATLAB rgb2ycbcr: rows give Y, Cb, Cr from R, G, B in [0, 1], on the [0, 255] scale.
_YCBCR_MATRIX = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]
) / 255.0


def rgb_to_ycbcr(rgb):
    """MATLAB `rgb2ycbcr` (BT.601, studio range) for RGB in [0, 1]; YCbCr in [0, 1]."""
    return np.asarray(rgb, np.float64) @ _YCBCR_MATRIX.T + _YCBCR_OFFSET


def ycbcr_to_rgb(ycbcr):
    """MATLAB `ycbcr2rgb`, the exact inverse of `rgb_to_ycbcr`; RGB in [0, 1] (unclipped)."""
    return (np.asarray(ycbcr, np.float64) - _YCBCR_OFFSET) @ np.linalg.inv(_YCBCR_MATRIX).T


def _prepare(img, img2, crop_border, test_y_channel):
    """Round to 8-bit, shave the border, take Y if asked; float64 [H, W, C] pair."""
    img, img2 = (np.asarray(a, np.float64) for a in (img, img2))
    if img.shape != img2.shape:
        raise ValueError(f"image shapes differ: {img.shape} vs {img2.shape}")
    if img.ndim == 2:
        img, img2 = img[..., None], img2[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise ValueError(f"expected an [H, W], [H, W, 1] or [H, W, 3] image, got {img.shape}")
    img, img2 = (np.round(np.clip(a, 0.0, 255.0)) for a in (img, img2))
    if crop_border:
        if min(img.shape[:2]) <= 2 * crop_border:
            raise ValueError(f"image {img.shape[:2]} too small to shave {crop_border} pixels")
        img, img2 = (a[crop_border:-crop_border, crop_border:-crop_border] for a in (img, img2))
    if test_y_channel and img.shape[-1] == 3:
        img, img2 = (255.0 * rgb_to_ycbcr(a / 255.0)[..., :1] for a in (img, img2))
    return img, img2


def calculate_psnr(img, img2, crop_border=0, test_y_channel=False):
    """PSNR in dB between two images on the [0, 255] scale ([H, W] or [H, W, C]).

    Example:
        >>> import numpy as np
        >>> round(calculate_psnr(np.zeros((8, 8)), np.full((8, 8), 1.0)), 2)
        48.13
    """
    img, img2 = _prepare(img, img2, crop_border, test_y_channel)
    mse = np.mean((img - img2) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def gaussian_window(size=11, sigma=1.5):
    """1-D normalised Gaussian (MATLAB `fspecial('gaussian')`'s separable factor)."""
    x = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(img, g):
    """Separable 'valid' correlation of a 2-D image with the 1-D window `g` on both axes."""
    windows = np.lib.stride_tricks.sliding_window_view(img, len(g), axis=0)
    rows = windows @ g
    return np.lib.stride_tricks.sliding_window_view(rows, len(g), axis=1) @ g


def _ssim_channel(a, b, g):
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return ssim_map.mean()


def calculate_ssim(img, img2, crop_border=0, test_y_channel=False):
    """Mean SSIM between two images on the [0, 255] scale ([H, W] or [H, W, C]).

    Example:
        >>> import numpy as np
        >>> x = np.arange(256.0).reshape(16, 16)
        >>> calculate_ssim(x, x)
        1.0
    """
    img, img2 = _prepare(img, img2, crop_border, test_y_channel)
    g = gaussian_window()
    if min(img.shape[:2]) < len(g):
        raise ValueError(f"image {img.shape[:2]} smaller than SSIM's {len(g)}x{len(g)} window")
    return float(np.mean([_ssim_channel(img[..., c], img2[..., c], g) for c in range(img.shape[-1])]))
