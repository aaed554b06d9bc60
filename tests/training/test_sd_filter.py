"""SD filter (Ham, Cho & Ponce): edges kept, flat regions smoothed, and equal to a plain
transcription of the authors' released `sdfilter.m`."""

import numpy as np
import pytest

from training.sd_filter import _nested_dissection, sd_filter


def _noisy_step(seed=0, size=32, noise=0.03):
    rng = np.random.default_rng(seed)
    clean = np.full((size, size), 0.2)
    clean[:, size // 2:] = 0.8
    return clean, clean + rng.normal(0.0, noise, clean.shape)


def test_step_edge_stays_sharp():
    clean, noisy = _noisy_step()
    out = sd_filter(noisy)
    half = clean.shape[1] // 2
    # The jump across the edge keeps (almost) its full height; a blur would spread it.
    jump = out[:, half].mean() - out[:, half - 1].mean()
    assert jump > 0.5
    assert np.abs(out - clean).mean() < np.abs(noisy - clean).mean()


def test_noise_variance_in_flat_regions_drops():
    clean, noisy = _noisy_step()
    out = sd_filter(noisy)
    flat = np.s_[4:-4, 2:12]  # inside the left half, away from the edge and the border
    assert out[flat].var() < 0.25 * noisy[flat].var()


def test_colour_channels_share_the_guidance():
    _, noisy = _noisy_step(seed=2, size=16)
    rgb = np.stack([noisy, noisy, noisy], axis=-1)
    out = sd_filter(rgb, steps=3)
    assert out.shape == rgb.shape
    # One Laplacian for all channels: identical channels stay identical.
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-9)


def _reference_sd_filter(f, lam=15.0, mu=50.0, nu=400.0, steps=10):
    """The authors' `sdfilter.m` (SDFilter 1.1) line by line: `lattice` with 8 neighbours,
    `makeweightsL2` (squared distances, Grady's min-max `normalize`, + 1e-5), Lab through
    `colorspace` for colour, u0 = ones, and one fresh sparse system and solve per step."""
    import scipy.sparse
    import scipy.sparse.linalg
    from skimage.color import rgb2lab

    f3 = f[..., None] if f.ndim == 2 else f
    height, width, channels = f3.shape
    size = height * width
    edges = [((r, c), (r + dr, c + dc)) for r in range(height) for c in range(width)
             for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1))
             if 0 <= r + dr < height and 0 <= c + dc < width]
    i = np.array([r * width + c for (r, c), _ in edges], dtype=int)
    j = np.array([r * width + c for _, (r, c) in edges], dtype=int)

    def make_weights(image, scale):
        values = (rgb2lab(image) if channels == 3 else image).reshape(size, -1)
        distances = np.sum((values[i] - values[j]) ** 2, axis=1)
        low, high = distances.min(), distances.max()
        if high != low:
            distances = (distances - low) / (high - low)
        return np.exp(-scale * distances) + 1e-5

    static = make_weights(f3, mu)
    u0 = np.ones_like(f3)
    for _ in range(steps):
        w = static * make_weights(u0, nu)
        adjacency = scipy.sparse.coo_matrix((w, (i, j)), shape=(size, size))
        adjacency = (adjacency + adjacency.T).tocsr()
        degree = np.asarray(adjacency.sum(axis=1)).ravel()
        laplacian = scipy.sparse.diags(degree) - adjacency
        system = (scipy.sparse.identity(size) + lam * laplacian).tocsc()
        u0 = scipy.sparse.linalg.spsolve(system, f3.reshape(size, channels)).reshape(f3.shape)
    return u0.reshape(f.shape)


@pytest.mark.parametrize("shape", [(1, 2), (5, 3), (23, 37, 3), (41, 19), (6, 70, 1), (2, 9, 3)])
def test_matches_the_released_code_transcribed(shape):
    # Nested-dissection order, one structure refilled per step, no pivoting, three channels at
    # once: only the float rounding of the solve may differ.
    rng = np.random.default_rng(sum(shape))
    image = rng.random(shape) * 0.3
    if shape[1] > 2:
        image[:, shape[1] // 2:] += 0.6  # an edge to keep, noise to remove
    out = sd_filter(image, steps=4)
    assert out.shape == image.shape
    np.testing.assert_allclose(out, _reference_sd_filter(image, steps=4), rtol=0, atol=1e-8)
    assert np.abs(out - image).max() > 1e-3  # it did filter


def test_gray_filter_commutes_with_affine_intensity_maps():
    # Distances are normalised by the largest edge and the start is constant: a*f + b gives
    # a*u + b exactly (with float rounding), whatever lambda does to the image.
    _, noisy = _noisy_step(seed=3, size=20)
    np.testing.assert_allclose(sd_filter(0.5 * noisy + 0.2, steps=5),
                               0.5 * sd_filter(noisy, steps=5) + 0.2, rtol=0, atol=1e-9)


def test_colour_edge_is_kept_and_texture_removed():
    # A red-to-blue edge of equal brightness (a gray guidance would not see it) in noise.
    rng = np.random.default_rng(4)
    image = np.zeros((16, 16, 3))
    image[:, :8] = (0.6, 0.3, 0.3)
    image[:, 8:] = (0.3, 0.3, 0.6)
    noisy = image + rng.normal(0.0, 0.02, image.shape)
    out = sd_filter(noisy)
    jump = (out[:, 8] - out[:, 7]).mean(axis=0)
    np.testing.assert_allclose(jump, (-0.3, 0.0, 0.3), atol=0.05)
    flat = np.s_[2:-2, 1:6]
    assert out[flat].var(axis=(0, 1)).max() < 0.25 * noisy[flat].var(axis=(0, 1)).min()


def test_nested_dissection_orders_every_pixel_once():
    for height, width in ((1, 1), (3, 40), (33, 17), (64, 64)):
        order = _nested_dissection(height, width)
        np.testing.assert_array_equal(np.sort(order), np.arange(height * width))
