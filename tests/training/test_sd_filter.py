"""SD filter (Ham, Cho & Ponce) properties: edges kept, flat regions smoothed, MM descent."""

import numpy as np
import pytest

from training.sd_filter import _nested_dissection, objective, sd_filter


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


def test_objective_never_increases():
    _, noisy = _noisy_step(seed=1, size=24)
    energies = [objective(noisy, noisy)]
    sd_filter(noisy, steps=6, callback=lambda step, u: energies.append(objective(u, noisy)))
    assert len(energies) == 7
    assert all(b <= a + 1e-9 for a, b in zip(energies, energies[1:])), energies
    assert energies[-1] < energies[0]


def test_colour_channels_share_the_guidance():
    _, noisy = _noisy_step(seed=2, size=16)
    rgb = np.stack([noisy, noisy, noisy], axis=-1)
    out = sd_filter(rgb, steps=3)
    assert out.shape == rgb.shape
    # One Laplacian for all channels: identical channels stay identical.
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-9)


def test_objective_matches_hand_computation():
    # 1x2 image: E = (u0-f0)^2 + (u1-f1)^2 + lam exp(-mu (f0-f1)^2) (1-exp(-nu (u0-u1)^2)) / nu
    f = np.array([[0.2, 0.4]])
    u = np.array([[0.25, 0.3]])
    lam, mu, nu = 15.0, 500.0, 200.0
    expected = (0.05**2 + 0.1**2
                + lam * np.exp(-mu * 0.2**2) * (1 - np.exp(-nu * 0.05**2)) / nu)
    assert abs(objective(u, f, lam, mu, nu) - expected) < 1e-12


def _reference_sd_filter(f, lam=15.0, mu=500.0, nu=200.0, steps=10):
    """The filter as first written here: one fresh sparse system and LU per step (a plain
    transcription of the MM iteration in the module docstring), to pin the faster solver."""
    import scipy.sparse
    import scipy.sparse.linalg

    f3 = f[..., None] if f.ndim == 2 else f
    height, width, channels = f3.shape
    size = height * width
    index = np.arange(size).reshape(height, width)
    i = np.concatenate([index[:, :-1].ravel(), index[:-1, :].ravel()])
    j = np.concatenate([index[:, 1:].ravel(), index[1:, :].ravel()])

    def squared_differences(image):
        flat = image.reshape(size, channels)
        return np.sum((flat[i] - flat[j]) ** 2, axis=-1)

    static = np.exp(-mu * squared_differences(f3))
    u = f3
    for _ in range(steps):
        weights = static * np.exp(-nu * squared_differences(u))
        adjacency = scipy.sparse.coo_matrix((weights, (i, j)), shape=(size, size))
        adjacency = adjacency + adjacency.T
        degree = np.asarray(adjacency.sum(axis=1)).ravel()
        laplacian = scipy.sparse.diags(degree) - adjacency
        system = (scipy.sparse.identity(size, format="csc") + lam * laplacian).tocsc()
        solve = scipy.sparse.linalg.factorized(system)
        u = np.stack([solve(f3.reshape(size, channels)[:, c]) for c in range(channels)], -1)
        u = u.reshape(height, width, channels)
    return u.reshape(f.shape)


@pytest.mark.parametrize("shape", [(1, 2), (5, 3), (23, 37, 3), (41, 19), (6, 70, 1)])
def test_matches_the_reference_transcription(shape):
    # Nested-dissection order, one structure refilled per step, no pivoting: only the float
    # rounding of the solve may change (measured: <= 2e-14 on a 481x321 BSD image).
    rng = np.random.default_rng(sum(shape))
    image = rng.random(shape) * 0.3
    if shape[1] > 2:
        image[:, shape[1] // 2:] += 0.6  # an edge to keep, noise to remove
    out = sd_filter(image, steps=4)
    assert out.shape == image.shape
    np.testing.assert_allclose(out, _reference_sd_filter(image, steps=4), rtol=0, atol=1e-6)
    assert np.abs(out - image).max() > 1e-3  # it did filter


def test_nested_dissection_orders_every_pixel_once():
    for height, width in ((1, 1), (3, 40), (33, 17), (64, 64)):
        order = _nested_dissection(height, width)
        np.testing.assert_array_equal(np.sort(order), np.arange(height * width))
