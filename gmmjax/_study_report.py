"""``gmmjax study saddle``: run the saddle study, write figures and a report."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _study as S
from . import landscape, toy
from ._anneal import Annealed, anneal_variance
from ._em import EM
from ._fit import Status, fit, fit_trace
from ._gradient import GradientFitter, noisy

# the sections of the study, in the order they run
STAGES = (
    "surface",
    "alternating",
    "saddle",
    "profile",
    "gradient_field",
    "em",
    "comparison",
    "annealing",
)

FIGURES = (
    "surface.png",
    "alternating.png",
    "saddle.png",
    "profile.png",
    "gradient_field.png",
    "em_grid.png",
    "em_trajectory.png",
    "comparison.png",
    "annealing.png",
)


class _Config:
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


# ----------------------------------------------------------------------- helpers
def _figure(ncols=1, nrows=1, size=(5.0, 4.0)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, out: Path, name: str) -> None:
    fig.savefig(out / name, dpi=90)


def _fmt(v, digits=4) -> str:
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v) + 0.0  # no "-0"
    if np.isnan(v):
        return "-"
    if np.isfinite(v) and v == int(v) and abs(v) < 1e9:
        return str(int(v))
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [c if isinstance(c, str) else _fmt(c) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# jitted once: eager evaluation of the library likelihood dispatches op by op
_ll_outer = jax.jit(jax.vmap(jax.vmap(toy.ll, (None, 0)), (0, None)))
_ll_points = jax.jit(jax.vmap(toy.ll))
_argmax_sigma = jax.jit(toy.argmax_sigma)
_argmax_mu = jax.jit(toy.argmax_mu)


def _ll_grid(mu, sigma):
    """``L`` over the outer product of ``mu`` and ``sigma`` (library likelihood)."""
    return np.asarray(_ll_outer(jnp.asarray(mu, float), jnp.asarray(sigma, float)))


def _ll(mu, sigma):
    """``L`` at points (library likelihood), as numpy."""
    mu, sigma = np.broadcast_arrays(np.asarray(mu, float), np.asarray(sigma, float))
    flat = _ll_points(jnp.asarray(mu.ravel()), jnp.asarray(sigma.ravel()))
    return np.asarray(flat).reshape(mu.shape)


def _grad_mu_sigma(mu, sigma):
    f = jax.jit(jax.vmap(jax.grad(toy.ll, argnums=(0, 1))))
    g = f(jnp.asarray(mu), jnp.asarray(sigma))
    return np.asarray(g[0]), np.asarray(g[1])


# ---------------------------------------------------------------------- sections
def _surface(cfg, out):
    mu = np.linspace(-2, 2, cfg.surface_n)
    sigma = np.linspace(0.5, 2, cfg.surface_n)
    z = _ll_grid(mu, sigma)
    curvature = jax.jit(jax.vmap(jax.grad(jax.grad(toy.ll), argnums=0), (None, 0)))
    sig_c = np.linspace(0.6, 1.6, 201)
    d2 = np.asarray(curvature(0.0, jnp.asarray(sig_c)))

    fig, ax = _figure(3, 1, (4.6, 3.8))
    cs = ax[0, 0].contourf(mu, sigma, z.T, levels=30, cmap="viridis")
    fig.colorbar(cs, ax=ax[0, 0], label="L(mu, sigma)")
    ax[0, 0].plot([0], [1], "r+", ms=12, mew=2)
    ax[0, 0].set(xlabel="mu", ylabel="sigma", title="log-likelihood (saddle: +)")
    mu_z = np.linspace(-2, 2, 201)
    slices = (0.9, 0.95, 1.0, 1.05, 1.1)
    vals = _ll_grid(mu_z, np.array(slices))
    for j, s in enumerate(slices):
        ax[0, 1].plot(mu_z, vals[:, j] - vals[100, j], label=f"sigma = {s}")
    ax[0, 1].set(
        xlabel="mu", ylabel="L(mu, sigma) - L(0, sigma)", title="the phase change"
    )
    ax[0, 1].legend(fontsize=8)
    ax[0, 2].plot(sig_c, d2)
    ax[0, 2].axhline(0, color="k", lw=0.5)
    ax[0, 2].axvline(1, color="r", lw=0.5)
    ax[0, 2].set(
        xlabel="sigma", ylabel="d2L/dmu2 at mu = 0", title="curvature in mu at mu = 0"
    )
    _save(fig, out, "surface.png")
    probe = (0.9, 1.0, 1.1)
    at = dict(
        zip(probe, np.asarray(curvature(0.0, jnp.asarray(probe))).tolist(), strict=True)
    )
    return {"curvature_mu_at_0": at}


def _alternating(cfg, out):
    starts = [(0.25, 1.6), (-0.2, 1.2), (0.1, 0.95), (0.02, 0.7)]
    mu0 = jnp.array([m for m, _ in starts])
    s0 = jnp.array([s for _, s in starts])

    @jax.jit
    def path(mu, sigma):
        def sweep(carry, _):
            m, s = carry
            m1 = toy.argmax_mu(s, jnp.where(m < 0, -1.0, 1.0))
            s1 = toy.argmax_sigma(m1)
            return (m1, s1), jnp.stack([m1, s, m1, s1])

        _, halves = jax.lax.scan(sweep, (mu, sigma), None, length=6)
        return halves

    halves = np.asarray(path(mu0, s0))  # (6, 4, b): (mu after, sigma before, ...)
    mu = np.linspace(-1.2, 1.2, 121)
    sigma = np.linspace(0.2, 2.0, 121)
    z = _ll_grid(mu, sigma)
    fig, ax = _figure(1, 1, (6.0, 4.6))
    ax = ax[0, 0]
    ax.contourf(mu, sigma, np.maximum(z.T, -8), levels=30, cmap="viridis")
    rows = []
    for j, (m, s) in enumerate(starts):
        xs, ys = [m], [s]
        for k in range(halves.shape[0]):
            xs += [halves[k, 0, j], halves[k, 2, j]]
            ys += [halves[k, 1, j], halves[k, 3, j]]
        ax.plot(xs, ys, "o-", ms=3, color=f"C{j + 1}", label=f"start ({m}, {s})")
        rows.append([f"({m}, {s})", xs[2], ys[2], xs[-1], ys[-1]])
    ax.plot([0], [1], "r+", ms=12, mew=2)
    ax.set(xlabel="mu", ylabel="sigma", title="alternating maximization")
    ax.legend(fontsize=8)
    _save(fig, out, "alternating.png")
    return {"paths": rows}


def _saddle(cfg, out):
    def f(theta):
        return toy.ll(theta[0], theta[1])

    theta = jnp.array([0.0, 1.0])
    grad = np.asarray(jax.jit(jax.grad(f))(theta))
    hess = np.asarray(jax.jit(jax.hessian(f))(theta))
    eig = np.linalg.eigvalsh(hess)
    point = landscape.classify(f, theta)
    escape = landscape.escape_direction(f, theta)
    base = float(_ll(0.0, 1.0))
    s_star = float(_argmax_sigma(jnp.asarray([0.1]))[0])
    points = [
        (0.1, 0.999),
        (0.01, 0.99999),
        (0.1, 1.0),
        (0.0, 0.999),
        (0.1, s_star),
    ]
    values = _ll([m for m, _ in points], [s for _, s in points]) - base
    rows = [
        [f"({m}, {_fmt(s, 6)})", float(d)]
        for (m, s), d in zip(points, values, strict=True)
    ]
    mus = np.geomspace(1e-3, 0.3, 60)
    ridge = np.asarray(_argmax_sigma(jnp.asarray(mus)))
    gain = _ll(mus, ridge) - base
    along_mu = _ll(mus, 1.0) - base
    ratio = float(gain[-20] / mus[-20] ** 4)

    fig, ax = _figure(2, 1, (4.8, 3.8))
    ax[0, 0].loglog(mus, gain, label="along the ridge sigma*(mu)")
    ax[0, 0].loglog(mus, -along_mu, label="minus: along sigma = 1")
    ax[0, 0].loglog(mus, mus**4 / 3, "k:", label="mu^4 / 3")
    ax[0, 0].loglog(mus, mus**4 / 6, "k--", lw=0.7, label="mu^4 / 6")
    ax[0, 0].set(xlabel="mu", ylabel="|L - L(0, 1)|", title="away from (0, 1)")
    ax[0, 0].legend(fontsize=8)
    mz = np.linspace(-0.3, 0.3, 201)
    ax[0, 1].plot(mz, _ll_grid(mz, np.array([1.0]))[:, 0] - base)
    ax[0, 1].set(xlabel="mu", ylabel="L(mu, 1) - L(0, 1)", title="flat top at sigma=1")
    _save(fig, out, "saddle.png")
    return {
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
        "ridge_gain_over_mu4": ratio,
    }


def _profile(cfg, out):
    table_mu = np.array([0.1, 0.4, 0.6, 0.8, 1.0, 1.5])
    best = np.asarray(_argmax_sigma(jnp.asarray(table_mu)))
    mu = np.linspace(0.0, 2.5, 251)
    curve = np.asarray(_argmax_sigma(jnp.asarray(mu)))
    sig = np.linspace(0.05, 2.0, 300)
    fig, ax = _figure(2, 1, (4.8, 3.8))
    curves = _ll_grid(table_mu[:5], sig)
    at_best = _ll(table_mu[:5], best[:5])
    for j, m in enumerate(table_mu[:5]):
        ax[0, 0].plot(sig, curves[j], color=f"C{j}", label=f"mu = {m}")
        if best[j] > 0.05:
            ax[0, 0].plot(best[j], at_best[j], "o", color=f"C{j}")
    ax[0, 0].set(
        xlabel="sigma", ylabel="L(mu, sigma)", ylim=(-8, 2), title="L against sigma"
    )
    ax[0, 0].legend(fontsize=8)
    ax[0, 1].plot(mu, curve)
    ax[0, 1].set(xlabel="mu", ylabel="sigma*(mu)", title="the optimal sigma profile")
    _save(fig, out, "profile.png")
    return {"rows": [[m, s] for m, s in zip(table_mu, best, strict=True)]}


def _gradient_field(cfg, out):
    fig, ax = _figure(2, 1, (5.2, 4.2))
    panels = [
        ((-2, 2), (0.5, 1.5), 0.03, (7, 7)),
        ((-0.3, 0.3), (0.9, 1.2), 0.03, (21, 5)),
    ]
    iters = 100

    @jax.jit
    def trajectories(mu, sigma, step):
        def one(m, s):
            def body(c, _):
                g = jax.grad(toy.ll, argnums=(0, 1))(*c)
                new = (c[0] + step * g[0], c[1] + step * g[1])
                return new, jnp.stack(new)

            _, path = jax.lax.scan(body, (m, s), None, length=iters)
            return path

        return jax.vmap(one)(mu, sigma)

    for j, (xl, yl, scale, ntraj) in enumerate(panels):
        a = ax[0, j]
        mu = np.linspace(*xl, 80)
        sigma = np.linspace(*yl, 80)
        a.contourf(mu, sigma, _ll_grid(mu, sigma).T, levels=30, cmap="Greys")
        qm, qs = np.meshgrid(np.linspace(*xl, 20), np.linspace(*yl, 20))
        gm, gs = _grad_mu_sigma(qm.ravel(), qs.ravel())
        a.quiver(qm.ravel(), qs.ravel(), gm, gs, color="0.45", angles="xy")

        def mid(lo, hi, n):
            h = (hi - lo) / (2 * n)
            return np.linspace(lo + h, hi - h, n)

        tm, ts = np.meshgrid(mid(*xl, ntraj[0]), mid(*yl, ntraj[1]))
        step = scale * 20 / iters
        paths = np.asarray(
            trajectories(jnp.asarray(tm.ravel()), jnp.asarray(ts.ravel()), step)
        )
        for k in range(paths.shape[0]):
            p = np.vstack([[tm.ravel()[k], ts.ravel()[k]], paths[k]])
            a.plot(p[:, 0], p[:, 1], color="darkgreen", lw=0.8)
            a.plot(p[-1, 0], p[-1, 1], ".", color="lime", ms=4)
        a.plot([0, 1, -1], [1, 0, 0], "ro", ms=5, mfc="none")
        a.set(xlim=xl, ylim=yl, xlabel="mu", ylabel="sigma")
        a.set_title(f"gradient field, {iters} ascent steps of {step:g} x grad")
    _save(fig, out, "gradient_field.png")
    return {}


def _em(cfg, out, grid):
    mu0, s0 = grid.starts
    x = toy.data(jnp.float64)
    # 1. the library's EM for exactly 100 steps from every start (tol < 0: never stop)
    lib100 = S.run_fitter(EM(reg_covar=0.0), mu0, s0, budget=100, tol=-1.0)
    cf100 = S.run_closed_form(toy.em_update, mu0, s0, budget=100, tol=-1.0)
    agree = float(
        max(
            np.max(np.abs(lib100.mu - cf100.mu)),
            np.max(np.abs(lib100.sigma - cf100.sigma)),
        )
    )
    # 2. steps to convergence up to the budget, three stopping rules, three codes
    conv = {
        "closed form, p = sigmoid(2 mu / sigma^2)": S.em_convergence(
            toy.em_update, mu0, s0, budget=cfg.em_budget
        ),
        "closed form, p = ratio of densities": S.em_convergence(
            S.em_update_direct, mu0, s0, budget=cfg.em_budget
        ),
        "general library, gmmjax.EM(reg_covar=0)": S.em_convergence(
            S.em_library_update, mu0, s0, budget=cfg.em_budget
        ),
        "general library, gmmjax.EM() (default reg_covar=1e-6)": S.em_convergence(
            lambda m, s: S.em_library_update(m, s, 1e-6), mu0, s0, budget=cfg.em_budget
        ),
    }
    main = conv["closed form, p = sigmoid(2 mu / sigma^2)"]
    conv_rows = []
    exact_gap = {}
    for name, c in conv.items():
        both = (c.exact_step < cfg.em_budget) & (c.tol_step < cfg.em_budget)
        exact_gap[name] = (
            int(np.max(c.exact_step[both] - c.tol_step[both])) if np.any(both) else None
        )
        conv_rows.append(
            [
                name,
                float(np.mean(c.tol_step < cfg.em_budget)),
                float(np.median(c.tol_step)),
                float(np.mean(c.exact_step < cfg.em_budget)),
                float(np.median(c.exact_step)),
                float(np.mean(c.success_step >= 0)),
            ]
        )
    # 3. gmmjax.fit with its default stopping rule (|change of mean L| < 1e-6)
    fitted = jax.jit(
        jax.vmap(
            lambda m, s: fit(
                EM(reg_covar=0.0),
                toy.to_gmm(m, s),
                x,
                max_steps=cfg.em_budget,
                tol=1e-6,
            )
        )
    )(jnp.asarray(mu0), jnp.asarray(s0))
    f_mu, f_sigma = (np.asarray(a) for a in toy.from_gmm(fitted.gmm))
    status = np.asarray(fitted.status)
    near = (np.abs(f_mu) < S.SADDLE_RADIUS) & (np.abs(f_sigma - 1) < S.SADDLE_RADIUS)
    fit_rows = []
    for st in Status:
        sel = status == int(st)
        if np.any(sel):
            fit_rows.append(
                [
                    st.name,
                    float(np.mean(sel)),
                    float(np.mean(sel & near)),
                    float(np.median(np.asarray(fitted.n_steps)[sel])),
                ]
            )
    # 4. the trajectory from (0.02, 0.8) with the library (fit_trace)
    _, trace = fit_trace(
        EM(reg_covar=0.0), toy.to_gmm(0.02, 0.8), x, num_steps=cfg.trajectory_steps
    )
    t_mu, t_sigma = (np.asarray(a) for a in toy.from_gmm(trace.gmm))
    first_half = int(np.argmax(t_sigma < 0.5)) + 1 if np.any(t_sigma < 0.5) else -1
    predicted = float(S.escape_steps_estimate(0.02, 0.8))

    shape = grid.shape
    fig, ax = _figure(2, 1, (5.0, 4.2))
    ext = [grid.mu[0], grid.mu[-1], grid.sigma[0], grid.sigma[-1]]
    im = ax[0, 0].imshow(
        lib100.sigma.reshape(shape).T,
        origin="lower",
        extent=ext,
        aspect="auto",
        vmin=0,
        vmax=1.1,
        cmap="magma",
    )
    fig.colorbar(im, ax=ax[0, 0], label="sigma after 100 EM steps")
    ax[0, 0].set(xlabel="initial mu", ylabel="initial sigma", title="EM: 100 steps")
    im = ax[0, 1].imshow(
        np.log2(main.tol_step.reshape(shape)).T,
        origin="lower",
        extent=ext,
        aspect="auto",
        cmap="viridis",
    )
    fig.colorbar(im, ax=ax[0, 1], label="log2 steps to convergence")
    ax[0, 1].set(
        xlabel="initial mu",
        ylabel="initial sigma",
        title=f"EM: steps until no change > {S.PARAMETER_TOL:g} (cap {cfg.em_budget})",
    )
    _save(fig, out, "em_grid.png")

    fig, ax = _figure(1, 1, (6.0, 3.8))
    steps = np.arange(0, t_mu.size + 1)
    ax[0, 0].plot(steps, np.r_[0.02, t_mu], "k", label="mu")
    ax[0, 0].plot(steps, np.r_[0.8, t_sigma], "r", label="sigma")
    ax[0, 0].axvline(predicted, color="0.5", ls=":", label="predicted escape")
    ax[0, 0].set(xlabel="EM step", title="EM from (mu, sigma) = (0.02, 0.8)")
    ax[0, 0].legend(fontsize=8)
    _save(fig, out, "em_trajectory.png")
    return {
        "library_vs_closed_form_100_steps": agree,
        "sigma_after_100": {
            "median": float(np.median(lib100.sigma)),
            "fraction_above_0.9": float(np.mean(lib100.sigma > 0.9)),
        },
        "convergence": conv_rows,
        "exact_minus_tol_max_steps": exact_gap,
        "predicted_unescaped": float(
            np.mean(S.escape_steps_estimate(mu0, s0) > cfg.em_budget)
        ),
        "measured_unescaped": float(np.mean(main.escape_step < 0)),
        "smallest_mu1": float(np.min(np.abs(np.tanh(mu0 / np.asarray(s0) ** 2)))),
        "smallest_plateau_move": float(
            np.min(2 / 3 * (np.abs(mu0) / np.asarray(s0) ** 2) ** 3)
        ),
        "reg_covar_demo": _reg_covar_demo(cfg),
        "reg_covar_stuck": float(
            np.mean(
                (np.abs(conv[list(conv)[-1]].mu) < S.SADDLE_RADIUS)
                & (np.abs(conv[list(conv)[-1]].sigma - 1) < S.SADDLE_RADIUS)
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
        "library_runs": conv["general library, gmmjax.EM(reg_covar=0)"].as_runs(),
    }


def _daem_schedule(count):
    """DAEM's inverse temperature: ``beta`` from 0.2 to 1 over 100 steps."""
    return jnp.minimum(0.2 + 0.008 * count, 1.0)


# one object: the schedule is static metadata of Annealed, compared by identity
_DAEM_SCHEDULE = _daem_schedule


def _reg_covar_demo(cfg):
    """EM from ``(0.001, 1)``, inside the basin that ``reg_covar = 1e-6`` creates:
    ``mu`` after ``em_budget`` steps without and with the variance floor."""
    mu0, s0 = np.array([0.001, 0.001]), np.array([1.0, 1.0])
    out = {}
    for r in (0.0, 1e-6):
        runs = S.run_closed_form(
            lambda m, s, r=r: S.em_library_update(m, s, r),
            mu0[:1],
            s0[:1],
            budget=cfg.em_budget,
            tol=-1.0,
        )
        out[f"{r:g}"] = float(runs.mu[0])
    return out


def _methods(cfg, grid, key, em_runs):
    """Every optimizer from every start, as ``{name: (run, grid, stopping rule)}``
    where ``run()`` returns the :class:`Runs` (called and timed by the caller)."""
    mu0, s0 = grid.starts
    coarse = S.Grid(grid.mu[:: cfg.scipy_stride], grid.sigma[:: cfg.scipy_stride])
    cm, cs = coarse.starts
    tol = f"no parameter moves more than {S.PARAMETER_TOL:g}"
    gb = cfg.gradient_budget
    out = {
        "EM (gmmjax.EM, reg_covar=0)": (
            lambda: em_runs,
            grid,
            f"{tol}, or {cfg.em_budget} steps",
        ),
        "alternating (closed-form argmax)": (
            lambda: S.run_closed_form(toy.alternating_update, mu0, s0, budget=100),
            grid,
            f"{tol}, or 100 sweeps",
        ),
    }
    for lr in (0.01, 0.1):
        out[f"gradient ascent, step {lr}"] = (
            lambda lr=lr: S.run_gradient_ascent(mu0, s0, learning_rate=lr, budget=gb),
            grid,
            f"{tol}, or {gb} steps",
        )
    out["noisy gradient, step 0.1, eta 0.01"] = (
        lambda: S.run_noisy_gradient(
            key,
            mu0,
            s0,
            learning_rate=0.1,
            eta=0.01,
            gamma=0.55,
            budget=cfg.noisy_budget,
        ),
        grid,
        f"{cfg.noisy_budget} steps (noise never stops)",
    )
    for name, opt, budget, ls in (
        ("optax sgd, lr 0.1, momentum 0.9", optax.sgd(0.1, momentum=0.9), gb, False),
        ("optax adam, lr 0.05", optax.adam(0.05), gb, False),
        ("optax lbfgs (zoom line search)", optax.lbfgs(), cfg.lbfgs_budget, True),
    ):
        out[name] = (
            lambda opt=opt, budget=budget, ls=ls: S.run_optax(
                opt, mu0, s0, budget=budget, linesearch=ls
            ),
            grid,
            f"{tol}, or {budget} steps",
        )
    lb = cfg.library_budget
    out["gmmjax.GradientFitter(adam, lr 0.05), GMM leaves"] = (
        lambda: S.run_fitter(
            GradientFitter(optax.adam, learning_rate=0.05), mu0, s0, budget=lb
        ),
        grid,
        f"{tol}, or {lb} steps",
    )
    out["gmmjax.GradientFitter(noisy(sgd 0.1), eta 0.01), GMM leaves"] = (
        lambda: S.run_fitter(
            GradientFitter(noisy(optax.sgd(0.1), eta=0.01, key=key)),
            mu0,
            s0,
            budget=lb,
            tol=-1.0,
        ),
        grid,
        f"{lb} steps (noise never stops; one noise sequence for all starts)",
    )
    out["gmmjax.Annealed(EM), beta 0.2 -> 1 in 100 steps"] = (
        lambda: S.run_fitter(
            Annealed(EM(reg_covar=0.0), _DAEM_SCHEDULE), mu0, s0, budget=lb
        ),
        grid,
        f"{tol} once beta = 1, or {lb} steps",
    )
    out["gmmjax.anneal_variance, then EM"] = (
        lambda: S.run_anneal_variance(
            key, mu0, s0, variances=np.geomspace(2.0, 0.05, 40), max_steps=lb
        ),
        grid,
        "40 variances 2 -> 0.05 (stage tol 1e-6), release EM until DEGENERATE/tol",
    )
    out["variance sweep (DA), closed form"] = (
        lambda: S.variance_sweep(
            jnp.asarray(mu0),
            variances=np.geomspace(2.0, 0.05, 40),
            inner_steps=20,
            perturbation=1e-3,
            release_steps=50,
        )[1],
        grid,
        "40 variances 2 -> 0.05, 20 EM steps each, then 50 free EM steps",
    )
    try:
        import scipy  # noqa: F401
    except ImportError:
        return out, False
    for method in ("BFGS", "CG", "L-BFGS-B", "Nelder-Mead"):
        out[f"scipy {method} (clipped objective)"] = (
            lambda method=method: S.run_scipy(method, cm, cs, max_iter=100),
            coarse,
            "scipy's own rule; at most 100 iterations",
        )
    return out, True


def _comparison(cfg, out, grid, key, em_runs):
    thunks, have_scipy = _methods(cfg, grid, key, em_runs)
    em_thunk = next(iter(thunks.values()))[0]
    rows, summaries, methods = [], {}, {}
    for name, (run, g, rule) in thunks.items():
        t = time.perf_counter()
        runs = run()
        # the EM runs come from section 6 (already timed there)
        seconds = time.perf_counter() - t if run is not em_thunk else float("nan")
        methods[name] = (runs, g, rule)
        s = S.summarize(runs)
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
    n = len(methods)
    ncols = 4
    nrows = -(-n // ncols)
    fig, ax = _figure(ncols, nrows, (3.6, 3.0))
    for a in ax.ravel()[n:]:
        a.set_visible(False)
    for a, (name, (runs, g, _)) in zip(ax.ravel(), methods.items(), strict=False):
        sigma = np.where(np.asarray(runs.finite), runs.sigma, np.nan)
        ext = [g.mu[0], g.mu[-1], g.sigma[0], g.sigma[-1]]
        im = a.imshow(
            sigma.reshape(g.shape).T,
            origin="lower",
            extent=ext,
            aspect="auto",
            vmin=-0.1,
            vmax=1.2,
            cmap="magma",
        )
        a.set_title(name, fontsize=8)
        a.set_xlabel("initial mu", fontsize=7)
        a.set_ylabel("initial sigma", fontsize=7)
    fig.colorbar(im, ax=ax, label="final sigma (blank: non-finite)", shrink=0.6)
    _save(fig, out, "comparison.png")
    return {"rows": rows, "summaries": summaries, "scipy": have_scipy}


def _annealing(cfg, out):
    v = np.geomspace(2.0, 0.05, 200)
    exact = np.asarray(_argmax_mu(jnp.sqrt(jnp.asarray(v))))
    variances = np.geomspace(2.0, 0.05, 40)
    starts = jnp.array([0.0, 0.3, -0.05])
    paths = {}
    for inner in (5, 50):
        path, _ = S.variance_sweep(
            starts,
            variances=variances,
            inner_steps=inner,
            perturbation=1e-3,
            release_steps=1,
        )
        paths[inner] = path
    _, info = anneal_variance(
        jax.random.key(0),
        toy.to_gmm(0.0, 1.0),
        toy.data(jnp.float64),
        variances=variances,
        perturbation=1e-3,
        max_steps_per_stage=500,
        release=False,
    )
    library_path = np.asarray(info.means[:, :, 0])
    paths["gmmjax.anneal_variance"] = library_path
    fig, ax = _figure(1, 1, (6.0, 4.0))
    a = ax[0, 0]
    a.plot(v, exact, "k", lw=2, label="exact maxima +-mu*(v)")
    a.plot(
        variances,
        library_path[:, 0],
        "s",
        ms=3,
        mfc="none",
        color="C3",
        label="gmmjax.anneal_variance (both means)",
    )
    a.plot(variances, library_path[:, 1], "s", ms=3, mfc="none", color="C3")
    a.plot(v, -exact, "k", lw=2)
    for j, (inner, path) in enumerate(
        (k, p) for k, p in paths.items() if isinstance(k, int)
    ):
        for b in range(path.shape[1]):
            a.plot(
                variances,
                path[:, b],
                "o-",
                ms=2,
                lw=0.8,
                color=f"C{j}",
                label=f"DA path, {inner} EM steps per variance" if b == 0 else None,
            )
    a.axvline(1.0, color="r", lw=0.5)
    a.set_xscale("log")
    a.invert_xaxis()
    a.set(xlabel="fixed variance v = sigma^2 (decreasing)", ylabel="mu")
    a.set_title("deterministic annealing: the symmetric solution splits at v = 1")
    a.legend(fontsize=8)
    _save(fig, out, "annealing.png")
    split = {}
    for inner, path in paths.items():
        big = np.abs(path[:, 0]) > 0.1
        split[inner] = float(variances[np.argmax(big)]) if np.any(big) else None
    return {
        "exact_split_variance": float(v[np.argmax(exact > 0)]),
        "mu_star": {
            f"{vv:g}": float(toy.argmax_mu(np.sqrt(vv))) for vv in (1.0, 0.9, 0.5, 0.1)
        },
        "path_split_variance": split,
    }


# --------------------------------------------------------------------- the report
def run_saddle_study(
    out_dir, *, quick: bool = False, seed: int = 0, progress=None
) -> dict:
    """Run the saddle study and write its figures and Markdown report.

    Reproduces the findings of the study of the symmetric two-point model (data
    ``+-1``, mixture ``0.5 N(mu, sigma^2) + 0.5 N(-mu, sigma^2)``) with
    :mod:`gmmjax.toy` and the general library, and extends it: the likelihood
    surface and its phase change at ``sigma = 1``, alternating maximization, the
    exact gradient and Hessian at the saddle ``(0, 1)``, the optimal-sigma profile,
    the gradient field, EM from a grid of starts (steps to convergence under stated
    stopping rules), a comparison of optimizers from the same grid, and
    deterministic annealing. Every grid of starts is one batched JAX computation
    (scipy's optimizers, which cannot be traced, loop in numpy on a coarser grid).
    Runs in float64.

    Args:
        out_dir: directory for ``report.md``, ``results.json`` and the PNG figures
            (created if missing).
        quick: a small grid and short budgets, for tests and smoke runs.
        seed: seed of the noisy-gradient runs.
        progress: optional host function ``progress(i, n_stages, name)``, called
            before stage ``i`` (from 0) of the ``n_stages`` of :data:`STAGES`.

    Returns:
        A JSON-serializable dict of the measured numbers, including
        ``wall_time_s`` and ``cpu_time_s`` of the whole study.

    Example:
        The full study takes about a minute of CPU time, so it is run from the
        command line (``tests/test_study.py`` runs it end to end in quick mode)::

            gmmjax study saddle --out saddle-study
            python benchmarks/saddle_study.py --quick
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = _Config(quick)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with jax.enable_x64(True):
        grid = S.start_grid(cfg.n_grid)
        results: dict[str, Any] = {"quick": quick, "grid": list(grid.shape)}
        timings = {}

        def timed(name, fn, *args):
            if progress is not None:
                progress(STAGES.index(name), len(STAGES), name)
            t, c = time.perf_counter(), time.process_time()
            value = fn(*args)
            timings[name] = [time.perf_counter() - t, time.process_time() - c]
            return value

        results["surface"] = timed("surface", _surface, cfg, out)
        results["alternating"] = timed("alternating", _alternating, cfg, out)
        results["saddle"] = timed("saddle", _saddle, cfg, out)
        results["profile"] = timed("profile", _profile, cfg, out)
        results["gradient_field"] = timed("gradient_field", _gradient_field, cfg, out)
        results["em"] = timed("em", _em, cfg, out, grid)
        key = jax.random.key(seed, impl="rbg")  # the fastest CPU generator
        em_runs = results["em"].pop("library_runs")
        results["comparison"] = timed(
            "comparison", _comparison, cfg, out, grid, key, em_runs
        )
        results["annealing"] = timed("annealing", _annealing, cfg, out)
    results["section_seconds"] = timings
    results["wall_time_s"] = time.perf_counter() - wall0
    results["cpu_time_s"] = time.process_time() - cpu0
    results["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }
    (out / "report.md").write_text(_report(results, cfg, grid))
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
    return _jsonable(results)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    return obj


def _report(r: dict, cfg: _Config, grid: S.Grid) -> str:
    em, cmp_, sad = r["em"], r["comparison"], r["saddle"]
    budget = cfg.em_budget
    n_starts = grid.shape[0] * grid.shape[1]
    lines = [
        "# The saddle study, reproduced with gmmjax",
        "",
        f"Generated by `gmmjax study saddle`{' --quick' if cfg.quick else ''}. "
        f"Whole study: **{r['wall_time_s']:.1f} s wall, {r['cpu_time_s']:.1f} s CPU** "
        f"on {r['machine']['processor']} ({r['machine']['platform']}), "
        f"jax {r['machine']['jax']}, float64.",
        "",
        "Model: data `x = +1, -1`, mixture `0.5 N(mu, sigma^2) + 0.5 N(-mu, sigma^2)` "
        "built as a two-component spherical `gmmjax.GMM` (`gmmjax.toy.to_gmm`); "
        "`L(mu, sigma)` is the total log-likelihood of both points.",
        "",
        "## Criteria",
        "",
        f"- **reached the optimum**: the run ends finite with `0 <= sigma < "
        f"{S.SUCCESS_SIGMA}` (the likelihood is unbounded; its supremum is "
        "`sigma -> 0` at `mu = +-1`). `sigma = 0` counts only exactly at `|mu| = 1`, "
        "where closed-form EM lands in floating point.",
        f"- **stuck near the saddle**: the run ends with `|mu| < {S.SADDLE_RADIUS}` "
        f"and `|sigma - 1| < {S.SADDLE_RADIUS}`.",
        f"- **left the saddle**: `sigma < {S.ESCAPE_SIGMA}` at some step.",
        "- **invalid**: non-finite parameters, or `sigma <= 0` anywhere else (scipy "
        "on the original's clipped objective: `sigma < 0` is outside the model, "
        "whatever the optimizer reports).",
        f"- **converged** (iterative methods): no parameter moves by more than "
        f"`{S.PARAMETER_TOL:g}` in one step. The original stopped EM on exact "
        "equality of successive iterates; that rule measures the floating-point "
        "implementation as much as the algorithm (see section 6).",
        f"- Grid of starts: {grid.shape[0]} x {grid.shape[1]} = {n_starts}, `mu` in "
        f"`[-0.3, 0.3]`, `sigma` in `[0.1, 2]`; every grid is one `vmap`.",
        "",
        "## 1. The surface and the phase change at sigma = 1",
        "",
        "![surface](surface.png)",
        "",
        "At `mu = 0` the curvature in `mu` is `d2L/dmu2 = (2 / sigma^2)(1 / sigma^2 "
        "- 1)`: positive (a minimum in `mu`, the components repel) below "
        "`sigma = 1`, negative (a maximum, they merge) above. The critical "
        "temperature `sigma^2 = 1` is the sample variance of the data. "
        "The stationarity condition in `mu` is the mean-field equation "
        "`mu = tanh(mu / sigma^2)`.",
        "",
        _table(
            ["sigma", "d2L/dmu2 at mu = 0 (autodiff of the library)"],
            [[k, v] for k, v in r["surface"]["curvature_mu_at_0"].items()],
        ),
        "",
        "## 2. Alternating maximization walks into (0, 1)",
        "",
        "![alternating](alternating.png)",
        "",
        "First `mu <- argmax_mu L` (closed form: the root of `mu = tanh(mu / "
        "sigma^2)`), then `sigma <- argmax_sigma L` (root of `v = 1 + mu^2 - 2 mu "
        "tanh(mu / v)`, `v = sigma^2`). From any `sigma >= 1` one sweep lands "
        "exactly on the saddle, where both coordinates are optimal and the method "
        "stops.",
        "",
        _table(
            [
                "start",
                "mu after sweep 1",
                "sigma after sweep 1",
                "mu final",
                "sigma final",
            ],
            r["alternating"]["paths"],
        ),
        "",
        "## 3. Gradient and Hessian at (0, 1)",
        "",
        "![saddle](saddle.png)",
        "",
        f"Exact (autodiff through `gmmjax.log_likelihood`): gradient "
        f"`{[_fmt(g) for g in sad['gradient']]}`, Hessian "
        f"`{[[_fmt(h) for h in row] for row in sad['hessian']]}`, eigenvalues "
        f"`{[_fmt(e) for e in sad['eigenvalues']]}`, determinant "
        f"`{_fmt(sad['determinant'])}`. The Hessian is singular: the second-order "
        "test cannot classify the point. Along the null direction (`mu`, at "
        "`sigma = 1`) the likelihood falls like `mu^4 / 6`, so the point looks like "
        "a maximum on both axes; along the curved ridge `sigma = sigma*(mu)` it "
        f"rises like `mu^4 / 3` (measured ratio {_fmt(sad['ridge_gain_over_mu4'])}): "
        "a **degenerate saddle** with better points arbitrarily close. "
        "`gmmjax.landscape.classify` decides it from exact derivatives up to "
        f"fourth order: kind `{sad['classification']['kind']}` (decided at order "
        f"{sad['classification']['order']}, {sad['classification']['n_null']} null "
        "direction); `gmmjax.landscape.escape_direction` gives the path "
        "`(mu, sigma) = (0, 1) + t d + t^2 w` with "
        f"`d = {[_fmt(v) for v in sad['escape']['direction']]}`, "
        f"`w = {[_fmt(v) for v in sad['escape']['curvature']]}` and "
        f"`L - L(0, 1) ~ {_fmt(sad['escape']['rate'])} t^"
        f"{sad['escape']['order']}`, the ridge above. Nearby points:",
        "",
        _table(["(mu, sigma)", "L(mu, sigma) - L(0, 1)"], sad["nearby"]),
        "",
        "## 4. The optimal sigma for fixed mu",
        "",
        "![profile](profile.png)",
        "",
        "`sigma*(mu)` by bisection on the first-order condition. At `mu = 0.1` it is "
        "above `0.9`: the component at `0.1` widens to explain the far point as "
        "well. At `mu = 1` the likelihood is unbounded as `sigma -> 0` (the value "
        "printed is the bracket's end); beyond `mu = 1` the optimum grows again.",
        "",
        _table(["mu", "sigma*(mu)"], r["profile"]["rows"]),
        "",
        "## 5. Gradient field and gradient-ascent paths",
        "",
        "![gradient field](gradient_field.png)",
        "",
        "The field in `(mu, sigma)` with 100 fixed steps of gradient ascent from a "
        "lattice of starts (the original's step sizes). Starting above `sigma = 1`, "
        "`sigma` moves much faster than `mu`: the paths fall onto the ridge near "
        "`sigma = 1` and then creep along it.",
        "",
        "## 6. EM from the grid of starts",
        "",
        "![EM grid](em_grid.png)",
        "",
        f"Left: `sigma` after exactly 100 steps of `gmmjax.EM(reg_covar=0)` "
        f"(median {_fmt(em['sigma_after_100']['median'])}; "
        f"{100 * em['sigma_after_100']['fraction_above_0.9']:.1f}% of starts still "
        f"have `sigma > 0.9`). The library agrees with the closed-form update "
        f"(`gmmjax.toy.em_update`) to {_fmt(em['library_vs_closed_form_100_steps'])} "
        f"after 100 steps from every start. Right: log2 of the steps until no "
        f"parameter moves more than `{S.PARAMETER_TOL:g}` (capped at {budget}).",
        "",
        "After one step every EM iterate lies on the unit circle: "
        "`sigma'^2 = p (1 - mu')^2 + (1 - p)(1 + mu')^2 = 1 - mu'^2`. Writing "
        "`mu = tanh u`, `sigma = sech u`, the map is `u' = sinh(2u) / 2 = u + 2u^3/3 "
        "+ ...`: the saddle repels only at third order, `1 / u^2` falls by `4/3` per "
        "step, and the escape from a start takes about `3 / (4 u_1^2)` steps with "
        "`u_1 = mu_0 / sigma_0^2`. Predicted share of starts that have not "
        f"escaped (`sigma < {S.ESCAPE_SIGMA}`) within {budget} steps: "
        f"{100 * em['predicted_unescaped']:.2f}%; measured: "
        f"{100 * em['measured_unescaped']:.2f}%.",
        "",
        "Stopping rules compared on the same runs (fractions of starts that stop "
        f"within {budget} steps; medians include the capped runs):",
        "",
        _table(
            [
                "implementation",
                f"stops, tol {S.PARAMETER_TOL:g}",
                "median steps (tol)",
                "stops, exact equality",
                "median steps (exact)",
                f"reaches sigma < {S.SUCCESS_SIGMA}",
            ],
            em["convergence"],
        ),
        "",
        "Exact equality of successive iterates happens only once the "
        "responsibilities have rounded to exactly 0 and 1 (or the iterate has hit "
        "a floating-point fixed point): a property of the arithmetic, not of the "
        "algorithm. Here the collapse onto the data is so fast that it fires at "
        "most "
        + ", ".join(
            f"{v} steps" if v is not None else "never"
            for v in em["exact_minus_tol_max_steps"].values()
        )
        + " (per row) after the tolerance rule, so the original's step counts "
        "are reproducible, but only by luck of the arithmetic: "
        "on the plateau the parameter moves of about `(2/3) u^3` per step "
        "(smallest on this grid: "
        f"{_fmt(em['smallest_plateau_move'])}) never round to an exact repeat, "
        "and a tolerance must stay below that size or it stops runs on the "
        "plateau. "
        "With a variance floor `reg_covar = r` (the library's default is "
        "`1e-6`) EM's map near the saddle is `mu' = mu (1 - r + (2/3) mu^2)`: the "
        "symmetric point becomes a *stable* fixed point for `mu^2 < 1.5 r`. Every "
        "start of this grid begins outside that basin (its smallest `|mu_1|` is "
        f"`{_fmt(em['smallest_mu1'])} > sqrt(1.5e-6) = 0.0012`), so the last row "
        "matches the others "
        f"({100 * em['reg_covar_stuck']:.1f}% end near the saddle, all of them "
        "for lack of steps); from `(0.001, 1)`, inside the basin, "
        f"{budget} EM steps move `mu` to "
        f"{_fmt(em['reg_covar_demo']['0'], 6)} without the floor and to "
        f"{_fmt(em['reg_covar_demo']['1e-06'], 6)} with it: repelled versus "
        "attracted.",
        "",
        "`gmmjax.fit` with its default, scikit-learn-style rule (stop when the mean "
        "log-likelihood changes by less than `tol = 1e-6`) on the same starts:",
        "",
        _table(
            ["status", "fraction", "of which stuck near the saddle", "median steps"],
            em["fit_default_rule"],
        ),
        "",
        "A likelihood-change rule declares convergence on the plateau around the "
        "saddle: the likelihood there changes by `O(mu^4)` per step. "
        "`DEGENERATE` is the library's report of the collapse `sigma -> 0` onto the "
        "data points, which here is the supremum.",
        "",
        "![EM trajectory](em_trajectory.png)",
        "",
        _table(
            ["EM from (0.02, 0.8)", "value"],
            [[k, v] for k, v in em["trajectory"].items()],
        ),
        "",
        "## 7. Optimizers compared from the same starts",
        "",
        "![comparison](comparison.png)",
        "",
        "Gradient methods work in the unconstrained coordinates `(mu, log sigma)` on "
        "the mean log-likelihood; scipy's methods minimize the original's clipped "
        "objective `min(-L(mu, max(sigma, 0)), 1e9)` in `(mu, sigma)` with the exact "
        "gradient, on every "
        f"{cfg.scipy_stride}th grid value of `mu` and of `sigma` (scipy cannot be "
        "vmapped; its loop over starts is numpy). Steps are iterations (EM steps, "
        "sweeps, optimizer updates); for scipy the steps to success are its "
        "iterations at the end.",
        "",
        _table(
            [
                "method",
                "starts",
                f"reached sigma < {S.SUCCESS_SIGMA}",
                f"left the saddle (sigma < {S.ESCAPE_SIGMA})",
                "stuck near saddle",
                "invalid",
                "median steps",
                "median steps to sigma < 0.1",
                "stopping rule",
                "wall s (incl. compile)",
            ],
            cmp_["rows"],
        ),
        "",
        "Notes: fixed-step gradient ascent in `log sigma` cannot settle at the "
        "optimum: the curvature in `mu` there grows like `1 / sigma^2`, so a step "
        "`lr` is stable only while `sigma^2 > lr / 2`; it leaves the saddle and then "
        "oscillates (or diverges) at `sigma ~ sqrt(lr / 2)`. EM is the same ascent "
        "with the step `sigma^2` in `mu`, exactly the stable one. "
        + ("" if cmp_["scipy"] else "scipy is not installed: its rows are omitted."),
        "",
        "## 8. Deterministic annealing of the variance",
        "",
        "![annealing](annealing.png)",
        "",
        "Hold `sigma^2 = v` fixed, sweep `v` down, re-optimize `mu` by EM at each "
        "`v` from the previous solution pushed away from 0. For `v >= 1` the only "
        "maximum is `mu = 0`; below `v = 1` it splits into `+-mu*(v)`, the "
        f"pitchfork of the mean-field equation (exact split at v = "
        f"{_fmt(r['annealing']['exact_split_variance'])} on the plotted grid). With "
        "few EM steps per variance the path lags behind the split, because the "
        "linear rate `1 / v` of the fixed-variance EM map is critically slow at "
        "`v = 1`. The variance at which the path first has `|mu| > 0.1`: "
        + ", ".join(
            f"{_fmt(v)} with {k} EM steps per variance"
            if isinstance(k, int) or k.isdigit()
            else f"{_fmt(v)} with {k} (EM to tol at each variance)"
            for k, v in r["annealing"]["path_split_variance"].items()
        )
        + ".",
        "",
        _table(["v", "mu*(v)"], [[k, v] for k, v in r["annealing"]["mu_star"].items()]),
        "",
        "## Where the original's conclusions need care",
        "",
        "- *EM converges to the saddle for many starts*: with 100 steps it looks "
        "so; with a tolerance on the parameters and enough steps almost every "
        "start collapses onto the optimum. The exact-equality rule gives "
        "implementation-dependent step counts (table in section 6).",
        "- *CG and BFGS succeed by driving sigma negative*: on the clipped "
        "objective a run that ends with `sigma <= 0` has left the model; we count "
        "it as invalid, not as a success. In `log sigma` the issue does not arise.",
        "- *Gradient ascent evades the saddle*: the 100-step picture holds for "
        "starts with `|mu|` not too small; from the grid used for EM, fixed-step "
        "ascent needs far more steps than EM to leave the plateau (table), and then "
        "cannot settle at `sigma -> 0` without a shrinking step.",
        "- *The symmetric solution is a stable point*: it is a degenerate saddle "
        "(singular Hessian, a quartic ridge of ascent); a tolerance on the "
        "likelihood (scikit-learn's rule) stops there.",
        "",
        "## Time per section",
        "",
        _table(
            ["section", "wall seconds", "CPU seconds"],
            [[k, *v] for k, v in r["section_seconds"].items()],
        ),
        "",
    ]
    return "\n".join(lines)
