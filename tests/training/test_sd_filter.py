"""SD filter (Ham, Cho & Ponce) properties: edges kept, flat regions smoothed, MM descent."""

import numpy as np

from training.sd_filter import objective, sd_filter


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
