"""The figures of the saddle study, drawn from the data of :mod:`.sections`.

One function per section, ``draw(plot, out)``, each writing one or two PNG files
(``FIGURES``) with matplotlib's object-oriented API (no global state, no display).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .runs import PARAMETER_TOL

__all__ = ["DRAW", "FIGURES"]

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


def _figure(ncols=1, nrows=1, size=(5.0, 4.0)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, out: Path, name: str) -> None:
    fig.savefig(Path(out) / name, dpi=90)


def surface(p, out):
    fig, ax = _figure(3, 1, (4.6, 3.8))
    cs = ax[0, 0].contourf(p["mu"], p["sigma"], p["z"].T, levels=30, cmap="viridis")
    fig.colorbar(cs, ax=ax[0, 0], label="L(mu, sigma)")
    ax[0, 0].plot([0], [1], "r+", ms=12, mew=2)
    ax[0, 0].set(xlabel="mu", ylabel="sigma", title="log-likelihood (saddle: +)")
    vals = p["vals"]
    for j, s in enumerate(p["slices"]):
        ax[0, 1].plot(p["mu_z"], vals[:, j] - vals[100, j], label=f"sigma = {s}")
    ax[0, 1].set(
        xlabel="mu", ylabel="L(mu, sigma) - L(0, sigma)", title="the phase change"
    )
    ax[0, 1].legend(fontsize=8)
    ax[0, 2].plot(p["sig_c"], p["d2"])
    ax[0, 2].axhline(0, color="k", lw=0.5)
    ax[0, 2].axvline(1, color="r", lw=0.5)
    ax[0, 2].set(
        xlabel="sigma", ylabel="d2L/dmu2 at mu = 0", title="curvature in mu at mu = 0"
    )
    _save(fig, out, "surface.png")


def alternating(p, out):
    fig, ax = _figure(1, 1, (6.0, 4.6))
    ax = ax[0, 0]
    ax.contourf(
        p["mu"], p["sigma"], np.maximum(p["z"].T, -8), levels=30, cmap="viridis"
    )
    for j, ((m, s), (xs, ys)) in enumerate(zip(p["starts"], p["walks"], strict=True)):
        ax.plot(xs, ys, "o-", ms=3, color=f"C{j + 1}", label=f"start ({m}, {s})")
    ax.plot([0], [1], "r+", ms=12, mew=2)
    ax.set(xlabel="mu", ylabel="sigma", title="alternating maximization")
    ax.legend(fontsize=8)
    _save(fig, out, "alternating.png")


def saddle(p, out):
    mus = p["mus"]
    fig, ax = _figure(2, 1, (4.8, 3.8))
    ax[0, 0].loglog(mus, p["gain"], label="along the ridge sigma*(mu)")
    ax[0, 0].loglog(mus, -p["along_mu"], label="minus: along sigma = 1")
    ax[0, 0].loglog(mus, mus**4 / 3, "k:", label="mu^4 / 3")
    ax[0, 0].loglog(mus, mus**4 / 6, "k--", lw=0.7, label="mu^4 / 6")
    ax[0, 0].set(xlabel="mu", ylabel="|L - L(0, 1)|", title="away from (0, 1)")
    ax[0, 0].legend(fontsize=8)
    ax[0, 1].plot(p["mz"], p["flat_top"])
    ax[0, 1].set(xlabel="mu", ylabel="L(mu, 1) - L(0, 1)", title="flat top at sigma=1")
    _save(fig, out, "saddle.png")


def profile(p, out):
    fig, ax = _figure(2, 1, (4.8, 3.8))
    best = p["best"]
    for j, m in enumerate(p["table_mu"][:5]):
        ax[0, 0].plot(p["sig"], p["curves"][j], color=f"C{j}", label=f"mu = {m}")
        if best[j] > 0.05:
            ax[0, 0].plot(best[j], p["at_best"][j], "o", color=f"C{j}")
    ax[0, 0].set(
        xlabel="sigma", ylabel="L(mu, sigma)", ylim=(-8, 2), title="L against sigma"
    )
    ax[0, 0].legend(fontsize=8)
    ax[0, 1].plot(p["mu"], p["curve"])
    ax[0, 1].set(xlabel="mu", ylabel="sigma*(mu)", title="the optimal sigma profile")
    _save(fig, out, "profile.png")


def gradient_field(p, out):
    fig, ax = _figure(2, 1, (5.2, 4.2))
    for a, panel in zip(ax[0], p["panels"], strict=True):
        a.contourf(panel["mu"], panel["sigma"], panel["z"].T, levels=30, cmap="Greys")
        a.quiver(*panel["quiver"], color="0.45", angles="xy")
        for path in panel["paths"]:
            a.plot(path[:, 0], path[:, 1], color="darkgreen", lw=0.8)
            a.plot(path[-1, 0], path[-1, 1], ".", color="lime", ms=4)
        a.plot([0, 1, -1], [1, 0, 0], "ro", ms=5, mfc="none")
        a.set(xlim=panel["xl"], ylim=panel["yl"], xlabel="mu", ylabel="sigma")
        a.set_title(panel["title"])
    _save(fig, out, "gradient_field.png")


def em(p, out):
    grid = p["grid"]
    ext = [grid.mu[0], grid.mu[-1], grid.sigma[0], grid.sigma[-1]]
    fig, ax = _figure(2, 1, (5.0, 4.2))
    im = ax[0, 0].imshow(
        p["sigma_after_100"].reshape(grid.shape).T,
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
        np.log2(p["tol_steps"].reshape(grid.shape)).T,
        origin="lower",
        extent=ext,
        aspect="auto",
        cmap="viridis",
    )
    fig.colorbar(im, ax=ax[0, 1], label="log2 steps to convergence")
    ax[0, 1].set(
        xlabel="initial mu",
        ylabel="initial sigma",
        title=f"EM: steps until no change > {PARAMETER_TOL:g} (cap {p['budget']})",
    )
    _save(fig, out, "em_grid.png")

    fig, ax = _figure(1, 1, (6.0, 3.8))
    steps = np.arange(0, p["t_mu"].size + 1)
    ax[0, 0].plot(steps, np.r_[0.02, p["t_mu"]], "k", label="mu")
    ax[0, 0].plot(steps, np.r_[0.8, p["t_sigma"]], "r", label="sigma")
    ax[0, 0].axvline(p["predicted"], color="0.5", ls=":", label="predicted escape")
    ax[0, 0].set(xlabel="EM step", title="EM from (mu, sigma) = (0.02, 0.8)")
    ax[0, 0].legend(fontsize=8)
    _save(fig, out, "em_trajectory.png")


def comparison(p, out):
    panels = p["panels"]
    n = len(panels)
    ncols = 4
    fig, ax = _figure(ncols, -(-n // ncols), (3.6, 3.0))
    for a in ax.ravel()[n:]:
        a.set_visible(False)
    for a, (name, g, final) in zip(ax.ravel(), panels, strict=False):
        im = a.imshow(
            final.T,
            origin="lower",
            extent=[g.mu[0], g.mu[-1], g.sigma[0], g.sigma[-1]],
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


def annealing(p, out):
    variances, paths = p["variances"], p["paths"]
    library_path = paths["gmmjax.anneal_variance"]
    fig, ax = _figure(1, 1, (6.0, 4.0))
    a = ax[0, 0]
    a.plot(p["v"], p["exact"], "k", lw=2, label="exact maxima +-mu*(v)")
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
    a.plot(p["v"], -p["exact"], "k", lw=2)
    sweeps = [(k, path) for k, path in paths.items() if isinstance(k, int)]
    for j, (inner, path) in enumerate(sweeps):
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


# the figure of each stage of the study (:data:`gmmjax._studies.saddle.STAGES`)
DRAW = {
    "surface": surface,
    "alternating": alternating,
    "saddle": saddle,
    "profile": profile,
    "gradient_field": gradient_field,
    "em": em,
    "comparison": comparison,
    "annealing": annealing,
}
