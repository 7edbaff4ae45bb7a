"""Section 7 of the saddle study: every optimizer from the same grid of starts.

Each method is a fitter run by :func:`.runs.run_method` (``gmmjax.fit``; one
compiled program per kind of fitter, its grid in chunks of lanes) or, for the
library's gradient fitters, :func:`.runs.trace_method` (``gmmjax.fit_trace``),
except :func:`gmmjax.anneal_variance` (its own function, ``vmap``-ed the same way)
and scipy's optimizers (numpy).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gmmjax

from . import lanes as L
from . import runs as R
from .fitters import Alternating, Ascent, Noise, OptaxAscent, VarianceSweep
from .scipy_runs import run_scipy
from .sections import ANNEALING_VARIANCES, Config

__all__ = ["comparison", "daem_schedule"]


def daem_schedule(count):
    """DAEM's inverse temperature: ``beta`` from 0.2 to 1 over 100 steps."""
    return jnp.minimum(0.2 + 0.008 * count, 1.0)


# One object each: optimizers and schedules are static metadata of the fitters,
# compared by identity, so these keep one compiled program per method.
_SGD = optax.sgd(0.1, momentum=0.9)
_ADAM = optax.adam(0.05)
_LBFGS = optax.lbfgs()


def _methods(cfg: Config, grid: R.Grid, key, em_runs: R.Runs):
    """Every optimizer from every start, as ``{name: (run, grid, stopping rule)}``
    where ``run()`` returns the :class:`.runs.Runs` (called and timed by the
    caller)."""
    mu0, s0 = grid.starts
    b = mu0.size
    coarse = R.Grid(grid.mu[:: cfg.scipy_stride], grid.sigma[:: cfg.scipy_stride])
    cm, cs = coarse.starts

    def method(fitter, budget, tol=R.PARAMETER_TOL, per_lane=False):
        lanes = fitter if per_lane else L.for_lanes(fitter, b)
        return lambda: R.run_method(
            lanes, mu0, s0, budget=budget, tol=tol, chunk=cfg.chunk, order=grid.order
        )

    def traced(fitter, steps, tol=R.PARAMETER_TOL):
        # costly steps, runs that mostly go the distance: read off whole paths
        lanes = L.for_lanes(fitter, b)
        return lambda: R.trace_method(
            lanes, mu0, s0, steps=steps, tol=tol, chunk=cfg.chunk
        )

    rule = f"no parameter moves more than {R.PARAMETER_TOL:g}"
    gb, lb = cfg.gradient_budget, cfg.library_budget
    out = {
        "EM (gmmjax.EM, reg_covar=0)": (
            lambda: em_runs,
            grid,
            f"{rule}, or {cfg.em_budget} steps",
        ),
        "alternating (closed-form argmax)": (
            method(Alternating(), 100),
            grid,
            f"{rule}, or 100 sweeps",
        ),
    }
    for lr in (0.01, 0.1):
        out[f"gradient ascent, step {lr}"] = (
            method(Ascent(lr), gb),
            grid,
            f"{rule}, or {gb} steps",
        )
    # each start draws its own noise (numpy's generator, seeded by the study's key)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
    z = rng.standard_normal((b, cfg.noisy_budget, 2))
    noise = Noise(np.full(b, 0.01), np.full(b, 0.55), z)
    noisy_ascent = Ascent(np.full(b, 0.1), noise)
    out["noisy gradient, step 0.1, eta 0.01"] = (
        method(noisy_ascent, cfg.noisy_budget, tol=-1.0, per_lane=True),
        grid,
        f"{cfg.noisy_budget} steps (noise never stops)",
    )
    for name, optimizer, budget, linesearch in (
        ("optax sgd, lr 0.1, momentum 0.9", _SGD, gb, False),
        ("optax adam, lr 0.05", _ADAM, gb, False),
        ("optax lbfgs (zoom line search)", _LBFGS, cfg.lbfgs_budget, True),
    ):
        out[name] = (
            method(OptaxAscent(optimizer, linesearch), budget),
            grid,
            f"{rule}, or {budget} steps",
        )
    out["gmmjax.GradientFitter(adam, lr 0.05), GMM leaves"] = (
        traced(gmmjax.GradientFitter(optax.adam, learning_rate=0.05), lb),
        grid,
        f"{rule}, or {lb} steps",
    )
    noisy_sgd = gmmjax.noisy(optax.sgd(0.1), eta=0.01, key=key)
    out["gmmjax.GradientFitter(noisy(sgd 0.1), eta 0.01), GMM leaves"] = (
        traced(gmmjax.GradientFitter(noisy_sgd), lb, tol=-1.0),
        grid,
        f"{lb} steps (noise never stops; one noise sequence for all starts)",
    )
    out["gmmjax.Annealed(EM), beta 0.2 -> 1 in 100 steps"] = (
        method(gmmjax.Annealed(gmmjax.EM(reg_covar=0.0), daem_schedule), lb),
        grid,
        f"{rule} once beta = 1, or {lb} steps",
    )
    out["gmmjax.anneal_variance, then EM"] = (
        lambda: R.run_anneal_variance(
            key,
            mu0,
            s0,
            variances=ANNEALING_VARIANCES,
            max_steps=lb,
            chunk=cfg.chunk,
        )[0],
        grid,
        "40 variances 2 -> 0.05 (stage tol 1e-6), release EM until DEGENERATE/tol",
    )
    out["variance sweep (DA), closed form"] = (
        method(VarianceSweep(ANNEALING_VARIANCES, 20, 1e-3), 40 * 20 + 50, tol=-1.0),
        grid,
        "40 variances 2 -> 0.05, 20 EM steps each, then 50 free EM steps",
    )
    try:
        import scipy  # noqa: F401
    except ImportError:
        return out, False
    for name in ("BFGS", "CG", "L-BFGS-B", "Nelder-Mead"):
        out[f"scipy {name} (clipped objective)"] = (
            lambda name=name: run_scipy(name, cm, cs, max_iter=100),
            coarse,
            "scipy's own rule; at most 100 iterations",
        )
    return out, True


def comparison(cfg: Config, grid: R.Grid, key, em_runs: R.Runs):
    """Run and summarize every method; ``(numbers, plot)``."""
    thunks, have_scipy = _methods(cfg, grid, key, em_runs)
    rows, summaries, panels = [], {}, []
    for i, (name, (run, g, rule)) in enumerate(thunks.items()):
        t = time.perf_counter()
        runs = run()
        # the EM runs come from section 6 (timed there)
        seconds = time.perf_counter() - t if i else float("nan")
        s = R.summarize(runs)
        s["seconds"] = seconds
        summaries[name] = s
        rows.append(
            [
                name,
                s["starts"],
                s["success"],
                s["escaped"],
                s["stuck"],
                s["invalid"],
                s["median_steps"],
                s["median_steps_to_success"],
                rule,
                seconds,
            ]
        )
        final = np.where(np.asarray(runs.finite), runs.sigma, np.nan)
        panels.append((name, g, final.reshape(g.shape)))
    numbers = {"rows": rows, "summaries": summaries, "scipy": have_scipy}
    return numbers, {"panels": panels}
