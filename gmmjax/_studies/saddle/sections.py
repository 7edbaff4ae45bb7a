"""The numbers of each section of the saddle study, and the data of its figure.

Each ``section(cfg, ...)`` returns ``(numbers, plot)``: the JSON-able numbers of
the results and the report, and the arrays :mod:`.figures` draws. Closed-form
values come from :func:`.values.evaluate`; every fit is a lane of
:func:`.lanes.run_lanes` (paths are read as the ends of runs with budgets
``1, 2, ...``: the state after ``t`` steps is the end of a run of ``t`` steps).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

import gmmjax
from gmmjax import landscape, toy

from . import lanes as L
from . import runs as R
from .fitters import Alternating, ClosedFormEM, FieldAscent, VarianceSweep
from .values import evaluate

__all__ = [
    "ANNEALING_VARIANCES",
    "Config",
    "alternating",
    "annealing",
    "em",
    "gradient_field",
    "profile",
    "saddle",
    "surface",
]

# the variance sweeps of sections 7 and 8
ANNEALING_VARIANCES = np.geomspace(2.0, 0.05, 40)


class Config:
    """Sizes and budgets of a study run (``quick`` shrinks everything for tests)."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.n_grid = 10 if quick else 50
        self.scipy_stride = 5  # scipy: every 5th grid value of mu and of sigma
        self.em_budget = 2_000 if quick else 10_000
        self.gradient_budget = 1_000 if quick else 10_000
        self.noisy_budget = 1_000 if quick else 3_000
        self.lbfgs_budget = 200
        self.library_budget = 500 if quick else 2_000
        self.trajectory_steps = 1_500
        self.surface_n = 41 if quick else 121
        # lanes per compiled call of a fit (one program per kind of fitter)
        self.chunk = 100 if quick else 250


def _paths(fitter, mu0, sigma0, steps: int, *, chunk: int, guard=False):
    """``(b, steps, 2)``: ``(mu, sigma)`` after ``1 .. steps`` steps of ``fitter``
    from each start (one lane per start and step)."""
    b = np.size(mu0)
    start = np.repeat(np.arange(b), steps)
    budget = np.tile(np.arange(1, steps + 1), b)
    lanes = L.lanes(
        np.ravel(mu0)[start], np.ravel(sigma0)[start], budget=budget, guard=guard
    )
    ended = L.run_lanes(
        L.for_lanes(fitter, start.size), lanes, chunk=chunk, order=np.argsort(budget)
    )
    return np.stack([ended.mu, ended.sigma], -1).reshape(b, steps, 2)


def surface(cfg: Config):
    """1. The surface ``L``, slices across ``sigma = 1``, the curvature in ``mu``."""
    mu = np.linspace(-2, 2, cfg.surface_n)
    sigma = np.linspace(0.5, 2, cfg.surface_n)
    z = evaluate(mu[:, None], sigma[None, :]).ll
    sig_c = np.linspace(0.6, 1.6, 201)
    d2 = evaluate(0.0, sig_c).d_mu_mu
    mu_z = np.linspace(-2, 2, 201)
    slices = np.array([0.9, 0.95, 1.0, 1.05, 1.1])
    vals = evaluate(mu_z[:, None], slices[None, :]).ll
    probe = (0.9, 1.0, 1.1)
    at = evaluate(0.0, np.array(probe)).d_mu_mu
    numbers = {"curvature_mu_at_0": dict(zip(probe, at.tolist(), strict=True))}
    plot = {"mu": mu, "sigma": sigma, "z": z, "mu_z": mu_z, "slices": slices}
    return numbers, {**plot, "vals": vals, "sig_c": sig_c, "d2": d2}


def alternating(cfg: Config):
    """2. Alternating maximization from four starts, six sweeps each."""
    starts = [(0.25, 1.6), (-0.2, 1.2), (0.1, 0.95), (0.02, 0.7)]
    mu0 = np.array([m for m, _ in starts])
    s0 = np.array([s for _, s in starts])
    path = _paths(Alternating(), mu0, s0, 6, chunk=cfg.chunk)  # (b, sweeps, 2)
    mu = np.linspace(-1.2, 1.2, 121)
    sigma = np.linspace(0.2, 2.0, 121)
    z = evaluate(mu[:, None], sigma[None, :]).ll
    walks, rows = [], []
    for j, (m, s) in enumerate(starts):
        # each sweep: mu first (sigma as before), then sigma
        xs, ys = [m], [s]
        before = s
        for m1, s1 in path[j]:
            xs += [m1, m1]
            ys += [before, s1]
            before = s1
        walks.append((xs, ys))
        rows.append([f"({m}, {s})", xs[2], ys[2], xs[-1], ys[-1]])
    numbers = {"paths": rows}
    return numbers, {"mu": mu, "sigma": sigma, "z": z, "starts": starts, "walks": walks}


def _ll_of_theta(theta):
    return toy.ll(theta[0], theta[1])


def saddle(cfg: Config):
    """3. Gradient, Hessian and classification of ``(0, 1)``; the quartic ridge."""
    at = evaluate(0.0, 1.0)
    grad = np.array([at.d_mu, at.d_sigma])
    hess = np.array([[at.d_mu_mu, at.d_mu_sigma], [at.d_mu_sigma, at.d_sigma_sigma]])
    eig = np.linalg.eigvalsh(hess)
    theta = jnp.array([0.0, 1.0])
    point = landscape.classify(_ll_of_theta, theta)
    escape = landscape.escape_direction(_ll_of_theta, theta)
    base = float(at.ll)
    s_star = float(evaluate(0.1, 1.0).best_sigma)
    points = [(0.1, 0.999), (0.01, 0.99999), (0.1, 1.0), (0.0, 0.999), (0.1, s_star)]
    values = evaluate([m for m, _ in points], [s for _, s in points]).ll - base
    rows = [
        [f"({m}, {_six(s)})", float(d)]
        for (m, s), d in zip(points, values, strict=True)
    ]
    mus = np.geomspace(1e-3, 0.3, 60)
    ridge = evaluate(mus, 1.0).best_sigma
    gain = evaluate(mus, ridge).ll - base
    along_mu = evaluate(mus, 1.0).ll - base
    mz = np.linspace(-0.3, 0.3, 201)
    numbers = {
        "gradient": grad.tolist(),
        "hessian": hess.tolist(),
        "eigenvalues": eig.tolist(),
        "determinant": float(np.linalg.det(hess)),
        "classification": {
            "kind": point.kind,
            "order": int(point.order),
            "n_negative": int(point.n_negative),
            "n_null": int(point.n_null),
        },
        "escape": {
            "direction": np.asarray(escape.direction).tolist(),
            "curvature": np.asarray(escape.curvature).tolist(),
            "order": int(escape.order),
            "rate": float(escape.rate),
        },
        "nearby": rows,
        "ridge_gain_over_mu4": float(gain[-20] / mus[-20] ** 4),
    }
    flat_top = evaluate(mz, 1.0).ll - base
    plot = {"mus": mus, "gain": gain, "along_mu": along_mu, "mz": mz}
    return numbers, {**plot, "flat_top": flat_top}


def _six(s) -> str:
    """``s`` as the study's tables print it with six digits (no trailing zeros)."""
    return str(int(s)) if float(s) == int(s) else f"{float(s):.6g}"


def profile(cfg: Config):
    """4. The best ``sigma`` for a fixed ``mu``."""
    table_mu = np.array([0.1, 0.4, 0.6, 0.8, 1.0, 1.5])
    best = evaluate(table_mu, 1.0).best_sigma
    mu = np.linspace(0.0, 2.5, 251)
    curve = evaluate(mu, 1.0).best_sigma
    sig = np.linspace(0.05, 2.0, 300)
    curves = evaluate(table_mu[:5, None], sig[None, :]).ll
    at_best = evaluate(table_mu[:5], best[:5]).ll
    numbers = {"rows": [[m, s] for m, s in zip(table_mu, best, strict=True)]}
    plot = {"table_mu": table_mu, "best": best, "mu": mu, "curve": curve}
    return numbers, {**plot, "sig": sig, "curves": curves, "at_best": at_best}


def gradient_field(cfg: Config):
    """5. The gradient field and 100-step ascent paths in ``(mu, sigma)``."""
    iters = 100
    panels = []
    for xl, yl, scale, ntraj in (
        ((-2, 2), (0.5, 1.5), 0.03, (7, 7)),
        ((-0.3, 0.3), (0.9, 1.2), 0.03, (21, 5)),
    ):
        mu = np.linspace(*xl, 80)
        sigma = np.linspace(*yl, 80)
        z = evaluate(mu[:, None], sigma[None, :]).ll
        qm, qs = np.meshgrid(np.linspace(*xl, 20), np.linspace(*yl, 20))
        arrows = evaluate(qm, qs)

        def mid(lo, hi, n):
            h = (hi - lo) / (2 * n)
            return np.linspace(lo + h, hi - h, n)

        tm, ts = (
            a.ravel() for a in np.meshgrid(mid(*xl, ntraj[0]), mid(*yl, ntraj[1]))
        )
        step = scale * 20 / iters
        paths = _paths(FieldAscent(step), tm, ts, iters, chunk=cfg.chunk)
        starts = np.stack([tm, ts], -1)[:, None, :]
        panels.append(
            {
                "xl": xl,
                "yl": yl,
                "mu": mu,
                "sigma": sigma,
                "z": z,
                "quiver": (
                    qm.ravel(),
                    qs.ravel(),
                    arrows.d_mu.ravel(),
                    arrows.d_sigma.ravel(),
                ),
                "paths": np.concatenate([starts, paths], axis=1),
                "title": f"gradient field, {iters} ascent steps of {step:g} x grad",
            }
        )
    return {}, {"panels": panels}


def em(cfg: Config, grid: R.Grid):
    """6. EM from the grid: 100 steps, stopping rules, ``gmmjax.fit``'s own rule,
    the variance floor, one trajectory. Also returns the library's runs (the EM
    row of section 7)."""
    mu0, s0 = grid.starts
    b = mu0.size
    budget = cfg.em_budget
    chunk, order = cfg.chunk, grid.order
    # 1. exactly 100 EM steps from every start: the library and the closed form
    lib100 = L.run_lanes(
        L.for_lanes(gmmjax.EM(reg_covar=0.0), b),
        L.lanes(mu0, s0, budget=100),
        chunk=chunk,
        order=order,
    )
    cf100 = L.run_lanes(
        L.for_lanes(ClosedFormEM(), b),
        L.lanes(mu0, s0, budget=100),
        chunk=chunk,
        order=order,
    )
    agree = float(
        max(
            np.max(np.abs(lib100.mu - cf100.mu)),
            np.max(np.abs(lib100.sigma - cf100.sigma)),
        )
    )
    # 2. steps to convergence up to the budget, three rules, four implementations
    twice = np.tile(np.arange(b), 2)
    twice_order = np.concatenate([order, order + b])
    closed = R.em_convergence(
        ClosedFormEM(direct=np.repeat([False, True], b)),
        mu0[twice],
        s0[twice],
        budget=budget,
        chunk=chunk,
        order=twice_order,
    )
    # the library's runs, and two starts inside the basin that reg_covar = 1e-6
    # creates, (0.001, 1): mu after the budget without and with the variance floor
    demo = np.array([0.001, 0.001])
    library = R.em_convergence(
        gmmjax.EM(reg_covar=np.concatenate([np.repeat([0.0, 1e-6], b), [0.0, 1e-6]])),
        np.concatenate([mu0[twice], demo]),
        np.concatenate([s0[twice], [1.0, 1.0]]),
        budget=budget,
        chunk=chunk,
        order=np.concatenate([twice_order, [2 * b, 2 * b + 1]]),
    )

    def half(c, i):
        return R.EMConvergence(*(a[i * b : (i + 1) * b] for a in c))

    conv = {
        "closed form, p = sigmoid(2 mu / sigma^2)": half(closed, 0),
        "closed form, p = ratio of densities": half(closed, 1),
        "general library, gmmjax.EM(reg_covar=0)": half(library, 0),
        "general library, gmmjax.EM() (default reg_covar=1e-6)": half(library, 1),
    }
    main = conv["closed form, p = sigmoid(2 mu / sigma^2)"]
    conv_rows, exact_gap = [], {}
    for name, c in conv.items():
        both = (c.exact_step < budget) & (c.tol_step < budget)
        exact_gap[name] = (
            int(np.max(c.exact_step[both] - c.tol_step[both])) if np.any(both) else None
        )
        conv_rows.append(
            [
                name,
                float(np.mean(c.tol_step < budget)),
                float(np.median(c.tol_step)),
                float(np.mean(c.exact_step < budget)),
                float(np.median(c.exact_step)),
                float(np.mean(c.success_step >= 0)),
            ]
        )
    # 3. gmmjax.fit's own rule (|change of mean L| < 1e-6) and collapse report; the
    # variance-floor demonstration; and the trajectory from (0.02, 0.8), whose
    # points are runs of 1, 2, ... steps (guarded: it stands still once collapsed)
    fitted = L.run_lanes(
        L.for_lanes(gmmjax.EM(reg_covar=0.0), b),
        L.lanes(mu0, s0, budget=budget, tol=np.inf, guard=True, fit_tol=1e-6),
        chunk=chunk,
        order=order,
    )
    near = (np.abs(fitted.mu) < R.SADDLE_RADIUS) & (
        np.abs(fitted.sigma - 1) < R.SADDLE_RADIUS
    )
    fit_rows = []
    for st in gmmjax.Status:
        sel = fitted.status == int(st)
        if np.any(sel):
            fit_rows.append(
                [
                    st.name,
                    float(np.mean(sel)),
                    float(np.mean(sel & near)),
                    float(np.median(fitted.n_steps[sel])),
                ]
            )
    demo = L.run_lanes(
        gmmjax.EM(reg_covar=np.array([0.0, 1e-6])),
        L.lanes([0.001, 0.001], [1.0, 1.0], budget=budget),
        chunk=chunk,
    )
    path = _paths(
        gmmjax.EM(reg_covar=0.0),
        0.02,
        0.8,
        cfg.trajectory_steps,
        chunk=chunk,
        guard=True,
    )[0]
    t_mu, t_sigma = path[:, 0], path[:, 1]
    first_half = int(np.argmax(t_sigma < 0.5)) + 1 if np.any(t_sigma < 0.5) else -1
    predicted = float(R.escape_steps_estimate(0.02, 0.8))
    reg_stuck = conv["general library, gmmjax.EM() (default reg_covar=1e-6)"]
    numbers = {
        "library_vs_closed_form_100_steps": agree,
        "sigma_after_100": {
            "median": float(np.median(lib100.sigma)),
            "fraction_above_0.9": float(np.mean(lib100.sigma > 0.9)),
        },
        "convergence": conv_rows,
        "exact_minus_tol_max_steps": exact_gap,
        "predicted_unescaped": float(
            np.mean(R.escape_steps_estimate(mu0, s0) > budget)
        ),
        "measured_unescaped": float(np.mean(main.escape_step < 0)),
        "smallest_mu1": float(np.min(np.abs(np.tanh(mu0 / s0**2)))),
        "smallest_plateau_move": float(np.min(2 / 3 * (np.abs(mu0) / s0**2) ** 3)),
        "reg_covar_demo": {
            "0": float(library.mu[2 * b]),
            "1e-06": float(library.mu[2 * b + 1]),
        },
        "reg_covar_stuck": float(
            np.mean(
                (np.abs(reg_stuck.mu) < R.SADDLE_RADIUS)
                & (np.abs(reg_stuck.sigma - 1) < R.SADDLE_RADIUS)
            )
        ),
        "fit_default_rule": fit_rows,
        "trajectory": {
            "first_step_sigma_below_0.5": first_half,
            "predicted_escape": predicted,
            "sigma_at_step_300": float(t_sigma[299]),
            "final_mu": float(t_mu[-1]),
            "final_sigma": float(t_sigma[-1]),
        },
    }
    plot = {
        "grid": grid,
        "sigma_after_100": lib100.sigma,
        "tol_steps": main.tol_step,
        "budget": budget,
        "t_mu": t_mu,
        "t_sigma": t_sigma,
        "predicted": predicted,
    }
    return numbers, plot, conv["general library, gmmjax.EM(reg_covar=0)"].as_runs()


def annealing(cfg: Config, key):
    """8. Variance annealing: closed-form sweeps and ``gmmjax.anneal_variance``."""
    v = np.geomspace(2.0, 0.05, 200)
    exact = evaluate(0.0, np.sqrt(v)).best_mu
    variances = ANNEALING_VARIANCES
    starts = np.array([0.0, 0.3, -0.05])
    paths = {}
    for inner in (5, 50):
        sweep = VarianceSweep(variances, inner, 1e-3)
        ends = _paths(
            sweep, starts, np.ones(3), len(variances) * inner, chunk=cfg.chunk
        )
        paths[inner] = ends[:, inner - 1 :: inner, 0].T  # (stages, starts)
    _, means = R.run_anneal_variance(
        key,
        [0.0],
        [1.0],
        variances=variances,
        max_steps=0,
        max_steps_per_stage=500,
        chunk=cfg.chunk,
    )
    library_path = means[0]  # (stages, 2)
    paths["gmmjax.anneal_variance"] = library_path
    split: dict[Any, Any] = {}
    for inner, path in paths.items():
        big = np.abs(path[:, 0]) > 0.1
        split[inner] = float(variances[np.argmax(big)]) if np.any(big) else None
    mu_star = evaluate(0.0, np.sqrt([1.0, 0.9, 0.5, 0.1])).best_mu
    numbers = {
        "exact_split_variance": float(v[np.argmax(exact > 0)]),
        "mu_star": {
            f"{vv:g}": float(m)
            for vv, m in zip((1.0, 0.9, 0.5, 0.1), mu_star, strict=True)
        },
        "path_split_variance": split,
    }
    plot = {"v": v, "exact": exact, "variances": variances, "paths": paths}
    return numbers, plot
