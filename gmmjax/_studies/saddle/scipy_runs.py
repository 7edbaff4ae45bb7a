"""scipy's optimizers on the original's clipped objective, from every start.

scipy cannot be traced or ``vmap``-ed, so its runs loop over the starts in numpy
(on a coarser grid); the objective and its gradient are evaluated in closed form
with the ``math`` module. Everything here is independent of JAX.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from .runs import ESCAPE_SIGMA, SUCCESS_SIGMA, Runs

__all__ = ["clipped_objective", "run_scipy"]


def _ll_numpy(mu, sigma):
    v = sigma * sigma
    z = abs(mu) / v
    log_cosh = z + math.log1p(math.exp(-2.0 * z)) - math.log(2.0)
    return (
        2.0
        * (-math.log(sigma) - 0.5 * math.log(2.0 * math.pi) - (1 + mu * mu) / (2 * v))
        + 2.0 * log_cosh
    )


def _dll_numpy(mu, sigma):
    v = sigma * sigma
    t = math.tanh(mu / v)
    return (2.0 / v * (t - mu), 2.0 / (v * sigma) * (1 + mu * mu - v - 2 * mu * t))


def clipped_objective(theta):
    """The original's objective for R's ``optim``: ``min(-L(mu, max(sigma, 0)),
    1e9)``, where ``sigma <= 0`` gives ``-L = +inf`` (clipped to ``1e9``), with its
    gradient (zero on the clipped plateau).

    Example:
        >>> import numpy as np
        >>> from gmmjax._studies.saddle.scipy_runs import clipped_objective
        >>> value, grad = clipped_objective(np.array([0.0, 1.0]))
        >>> round(value, 6), [abs(round(float(g), 12)) for g in grad]
        (2.837877, [0.0, 0.0])
        >>> clipped_objective(np.array([0.5, -0.1]))[0]
        1000000000.0
    """
    mu, sigma = float(theta[0]), float(theta[1])
    if not sigma > 0:
        return 1e9, np.zeros(2)
    value = -_ll_numpy(mu, sigma)
    if not value < 1e9:
        return 1e9, np.zeros(2)
    g_mu, g_sigma = _dll_numpy(mu, sigma)
    return value, -np.array([g_mu, g_sigma])


def _value(theta):
    return clipped_objective(theta)[0]


def _one_blas_thread():
    """BLAS on one thread, where threadpoolctl is installed: L-BFGS-B calls BLAS on
    vectors of two entries, and OpenBLAS's idle threads spin (ten times the CPU
    time of the optimization itself)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def run_scipy(method, mu0, sigma0, *, max_iter=1000) -> Runs:
    """scipy.optimize.minimize from every start on :func:`clipped_objective`; the
    exact gradient is supplied to the gradient methods. scipy reports only its end
    point: a run's step of success is its iteration count at the end."""
    from scipy import optimize

    jac = method != "Nelder-Mead"
    options = {"maxiter": max_iter}
    if method == "L-BFGS-B":
        options["maxfun"] = max_iter
    with _one_blas_thread():
        out = [
            _minimize(optimize, method, jac, options, m, s)
            for m, s in zip(np.ravel(mu0), np.ravel(sigma0), strict=True)
        ]
    arr = np.array(out, dtype=float)
    steps = arr[:, 2].astype(int)
    sigma = arr[:, 1]
    hit = np.where((sigma > 0) & (sigma < SUCCESS_SIGMA), steps, -1)
    escaped = (sigma > 0) & (sigma < ESCAPE_SIGMA)
    return Runs(arr[:, 0], sigma, steps, hit, escaped, arr[:, 3] > 0)


def _minimize(optimize, method, jac, options, m, s):
    res = optimize.minimize(
        clipped_objective if jac else _value,
        np.array([m, s]),
        jac=jac,
        method=method,
        options=options,
    )
    return res.x[0], res.x[1], res.nit, np.all(np.isfinite(res.x))
