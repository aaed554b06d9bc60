"""Literature PSNR/SSIM against scikit-image on the same Y channel, plus analytic cases."""

import doctest

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pnen_tf.metrics import calculate_psnr, calculate_ssim, rgb_to_ycbcr, ycbcr_to_rgb


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (40, 48, 3)).astype(np.float64)
    noisy = np.round(np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255))
    return clean, noisy


def _y(rgb255):
    """Y of MATLAB rgb2ycbcr written out independently: 16 + (65.481 R + 128.553 G + 24.966 B)."""
    r, g, b = np.moveaxis(rgb255 / 255.0, -1, 0)
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def test_ycbcr_matches_matlab_reference_values():
    np.testing.assert_allclose(255 * rgb_to_ycbcr([1.0, 1.0, 1.0]), [235, 128, 128], atol=1e-9)
    np.testing.assert_allclose(255 * rgb_to_ycbcr([0.0, 0.0, 0.0]), [16, 128, 128], atol=1e-9)
    # MATLAB: rgb2ycbcr(double([1 0 0])) * 255 = [81.481, 90.203, 240.0]
    np.testing.assert_allclose(255 * rgb_to_ycbcr([1.0, 0.0, 0.0]), [81.481, 90.203, 240.0],
                               atol=1e-9)
    x = np.random.default_rng(1).random((4, 5, 3))
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-12)


def test_psnr_on_y_matches_scikit_image(pair):
    clean, noisy = pair
    ours = calculate_psnr(clean, noisy, crop_border=4, test_y_channel=True)
    a, b = _y(clean)[4:-4, 4:-4], _y(noisy)[4:-4, 4:-4]
    assert ours == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-10)


def test_ssim_on_y_matches_scikit_image(pair):
    # skimage filters the whole image with reflection and then drops
    # (11 - 1) // 2 = 5 pixels per side before averaging: exactly MATLAB's 'valid' positions.
    clean, noisy = pair
    ours = calculate_ssim(clean, noisy, crop_border=3, test_y_channel=True)
    a, b = _y(clean)[3:-3, 3:-3], _y(noisy)[3:-3, 3:-3]
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=255)
    assert ours == pytest.approx(ref, abs=1e-9)


def test_rgb_ssim_is_the_mean_of_channel_ssims(pair):
    clean, noisy = pair
    per_channel = [calculate_ssim(clean[..., c], noisy[..., c]) for c in range(3)]
    assert calculate_ssim(clean, noisy) == pytest.approx(np.mean(per_channel), abs=1e-12)
    ref = structural_similarity(clean, noisy, gaussian_weights=True, sigma=1.5, channel_axis=-1,
                                use_sample_covariance=False, data_range=255)
    assert calculate_ssim(clean, noisy) == pytest.approx(ref, abs=1e-9)


def test_ssim_of_two_constant_images_is_the_luminance_term():
    # Zero variances leave (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1), C1 = (0.01 * 255)^2.
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 120 + c1) / (100**2 + 120**2 + c1)
    assert calculate_ssim(np.full((16, 16), 100), np.full((16, 16), 120)) == pytest.approx(expected)


def test_inputs_are_rounded_and_clipped_to_8_bit():
    x = np.full((12, 12), 100.0)
    assert calculate_psnr(x, x + 0.4) == float("inf")
    assert calculate_psnr(np.full((12, 12), 255.0), np.full((12, 12), 300.0)) == float("inf")
    assert calculate_psnr(x, x + 1) == pytest.approx(20 * np.log10(255))


def test_shaving_ignores_the_border():
    a = np.zeros((20, 20, 3))
    b = a.copy()
    b[:2] = 255
    assert calculate_psnr(a, b, crop_border=2) == float("inf")
    # One white row of the 18 left: MSE = 255^2 / 18, PSNR = 10 log10(18).
    assert calculate_psnr(a, b, crop_border=1) == pytest.approx(10 * np.log10(18))


def test_single_channel_image_is_measured_on_itself_even_with_y(pair):
    # A gray image inside a colour set: its values, not 16 + 219/255 * value.
    gray, noisy = pair[0][..., :1], pair[1][..., :1]
    assert calculate_psnr(gray, noisy, test_y_channel=True) == calculate_psnr(gray[..., 0],
                                                                              noisy[..., 0])
    assert calculate_ssim(gray, noisy, test_y_channel=True) == calculate_ssim(gray, noisy)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(8, 8\) vs \(8, 9\)"):
        calculate_psnr(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match="11x11"):
        calculate_ssim(np.zeros((10, 30)), np.zeros((10, 30)))
    with pytest.raises(ValueError, match="shave 5"):
        calculate_psnr(np.zeros((10, 30)), np.zeros((10, 30)), crop_border=5)


def test_docstring_examples_run():
    import pnen_tf.metrics as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
