"""The SD filter: image smoothing with joint static and dynamic guidance.

Ham, Cho & Ponce, "Robust image filtering using joint static and dynamic guidance" (CVPR 2015;
TPAMI 2018 as "Robust guided image filtering using nonconvex potentials"). The PNEN paper
(Sec. IV-A) trains its networks to imitate this filter with lambda = 15.

The filtered image u minimises, for the input f and the static guidance g (here g = f),

    E(u) = sum_i (u_i - f_i)^2
           + lambda * sum_{i~j} phi_mu(g_i - g_j) * psi_nu(u_i - u_j),

over 4-connected neighbours i~j, with the Gaussian static weight phi_mu(x) = exp(-mu |x|^2) and
the nonconvex Welsch potential psi_nu(x) = (1 - exp(-nu |x|^2)) / nu on the output (the dynamic
guidance). psi_nu is majorised at the current iterate u^k by a quadratic whose slope is
exp(-nu |u_i^k - u_j^k|^2), so each majorize-minimize (MM) step solves the sparse linear system

    (I + lambda * L(u^k)) u^{k+1} = f,

L(u^k) being the graph Laplacian with weights phi_mu(g_i - g_j) exp(-nu |u_i^k - u_j^k|^2). MM
never increases E; colour channels share one Laplacian (distances are taken over all channels),
so one factorisation serves the three right-hand sides.

The PNEN paper gives only lambda; mu, nu and the number of steps follow the authors' smoothing
demo (mu = 500, nu = 200, 10 steps on images in [0, 1]) and are part of the target cache key.
"""

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

DEFAULTS = {"lam": 15.0, "mu": 500.0, "nu": 200.0, "steps": 10}


def _edges(height, width):
    """Index pairs (i, j) of the 4-connected grid, each edge once."""
    index = np.arange(height * width).reshape(height, width)
    right = (index[:, :-1].ravel(), index[:, 1:].ravel())
    down = (index[:-1, :].ravel(), index[1:, :].ravel())
    return np.concatenate([right[0], down[0]]), np.concatenate([right[1], down[1]])


def _squared_differences(image, i, j):
    flat = image.reshape(-1, image.shape[-1])
    return np.sum((flat[i] - flat[j]) ** 2, axis=-1)


def _laplacian(weights, i, j, size):
    adjacency = scipy.sparse.coo_matrix((weights, (i, j)), shape=(size, size))
    adjacency = adjacency + adjacency.T
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    return scipy.sparse.diags(degree) - adjacency


def objective(u, f, lam=DEFAULTS["lam"], mu=DEFAULTS["mu"], nu=DEFAULTS["nu"], guidance=None):
    """E(u) above, for float images [H, W, C] in [0, 1] (the quantity MM decreases)."""
    u, f = _as_hwc(u), _as_hwc(f)
    g = f if guidance is None else _as_hwc(guidance)
    i, j = _edges(*f.shape[:2])
    static = np.exp(-mu * _squared_differences(g, i, j))
    welsch = (1.0 - np.exp(-nu * _squared_differences(u, i, j))) / nu
    return float(np.sum((u - f) ** 2) + lam * np.sum(static * welsch))


def sd_filter(f, lam=DEFAULTS["lam"], mu=DEFAULTS["mu"], nu=DEFAULTS["nu"],
              steps=DEFAULTS["steps"], guidance=None, callback=None):
    """Smooth a float image ([H, W] or [H, W, C], values in [0, 1]) with the SD filter.

    Args:
        f: the image to filter.
        lam: regularisation weight lambda (15 in the PNEN paper).
        mu: bandwidth of the static guidance weight phi_mu.
        nu: bandwidth of the Welsch potential psi_nu (the dynamic guidance).
        steps: number of majorize-minimize iterations.
        guidance: static guidance g; the image itself when None.
        callback: called as `callback(step, u)` after each iteration (to monitor E(u)).

    Returns:
        The filtered image, float64, same shape as `f`.

    Example:
        >>> flat = np.full((8, 8), 0.5)
        >>> bool(np.allclose(sd_filter(flat, steps=2), 0.5))
        True
    """
    f = np.asarray(f, dtype=np.float64)
    f3 = _as_hwc(f)
    g = f3 if guidance is None else _as_hwc(np.asarray(guidance, dtype=np.float64))
    height, width, channels = f3.shape
    size = height * width
    i, j = _edges(height, width)
    static = np.exp(-mu * _squared_differences(g, i, j))
    rhs = f3.reshape(size, channels)
    identity = scipy.sparse.identity(size, format="csc")
    u = f3
    for step in range(steps):
        weights = static * np.exp(-nu * _squared_differences(u, i, j))
        system = (identity + lam * _laplacian(weights, i, j, size)).tocsc()
        solve = scipy.sparse.linalg.factorized(system)
        u = np.stack([solve(rhs[:, c]) for c in range(channels)], axis=-1)
        u = u.reshape(height, width, channels)
        if callback is not None:
            callback(step, u.reshape(f.shape))
    return u.reshape(f.shape)


def _as_hwc(image):
    image = np.asarray(image, dtype=np.float64)
    return image[..., None] if image.ndim == 2 else image
