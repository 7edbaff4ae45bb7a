"""Regenerate the tutorial figures in ``docs/figures/``.

    python docs/make_figures.py [NAME ...]

Every figure is computed with gmmjax itself, on the data of its tutorial page, in
float64, and drawn with ``gmmjax.plot`` where it has the picture (plain matplotlib for
the rest). The PNGs are checked in (small: about 90 dpi). With names (of functions in
``FIGURES``, such as ``priors_dirichlet``), only those figures are made.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Ellipse

import gmmjax
import gmmjax.plot

jax.config.update("jax_enable_x64", True)

OUT = Path(__file__).resolve().parent / "figures"
DPI = 90
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def save(fig, name: str) -> None:
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    print("wrote", OUT / name)


def full_covariances(gmm) -> np.ndarray:
    """``(k, d, d)`` covariance matrices whatever the covariance type."""
    cov = np.asarray(gmm.covariances)
    k, d = gmm.n_components, gmm.n_features
    if gmm.covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if gmm.covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    if gmm.covariance_type == "spherical":
        return cov[:, None, None] * np.eye(d)
    return cov


def draw_components(ax, gmm, levels=(1, 2)) -> None:
    """Ellipses at 1 and 2 standard deviations around each component's mean."""
    for j, (mean, cov) in enumerate(
        zip(np.asarray(gmm.means), full_covariances(gmm), strict=True)
    ):
        values, vectors = np.linalg.eigh(cov)
        angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
        for level in levels:
            width, height = 2 * level * np.sqrt(values[::-1])
            ax.add_patch(
                Ellipse(
                    mean,
                    width,
                    height,
                    angle=angle,
                    fill=False,
                    color=COLORS[j % len(COLORS)],
                    lw=1.5,
                )
            )
        ax.plot(*mean, "x", color="k")


def mixture_density() -> None:
    means, variances = [[-3.0], [0.0], [4.0]], [0.5, 1.0, 2.0]
    grid = jnp.linspace(-7.0, 9.0, 600)[:, None]
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8), sharey=True)
    for ax, weights in zip(
        axes, ([0.2, 0.5, 0.3], [0.6, 0.2, 0.2], [0.0, 1.0, 0.0]), strict=True
    ):
        gmm = gmmjax.GMM.from_natural(
            weights, means, variances, covariance_type="spherical"
        )
        comps = np.exp(gmmjax.component_log_prob(gmm, grid)) * np.asarray(weights)
        for j in range(3):
            ax.plot(grid[:, 0], comps[:, j], "--", color=COLORS[j], lw=1)
        ax.plot(grid[:, 0], np.exp(gmmjax.log_prob(gmm, grid)), "k", lw=2)
        ax.set_title(f"weights {weights}", fontsize=10)
        ax.set_xlabel("x")
    axes[0].set_ylabel("density")
    save(fig, "mixture_density.png")


def mixture_samples() -> None:
    gmm = gmmjax.GMM.from_natural(
        [0.4, 0.6],
        [[0.0, 0.0], [4.0, 2.0]],
        [[[1.0, 0.8], [0.8, 1.0]], [[0.5, 0.0], [0.0, 2.0]]],
    )
    x, labels = gmmjax.sample(jax.random.key(2), gmm, 1000)
    fig = gmmjax.plot.plot_samples(x, labels, gmm=gmm)
    fig.set_size_inches(4.5, 3.8)
    fig.axes[0].set_title("1,000 samples and their components", fontsize=10)
    save(fig, "mixture_samples.png")


def em_trace() -> None:
    x = gmmjax.datasets.faithful()
    gmm = gmmjax.GMM.from_natural(
        [0.5, 0.5],
        [[3.0, 60.0], [3.5, 75.0]],
        [np.diag([1.0, 100.0]), np.diag([1.0, 100.0])],
    )
    result, trace = gmmjax.fit_trace(gmmjax.EM(), gmm, x, num_steps=40)
    start = float(gmmjax.log_likelihood(gmm, x))
    ll = np.concatenate([[start], np.asarray(trace.log_likelihood)]) / len(x)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(np.arange(len(ll)), ll, "o-", ms=3)
    ax1.set_xlabel("EM step")
    ax1.set_ylabel("mean log-likelihood")
    ax1.set_title("EM never decreases the likelihood", fontsize=10)
    resp = np.asarray(gmmjax.responsibilities(result.gmm, x))
    ax2.scatter(x[:, 0], x[:, 1], s=8, c=resp[:, 0], cmap="coolwarm", vmin=0, vmax=1)
    draw_components(ax2, gmm, levels=(2,))
    for patch in ax2.patches:
        patch.set_linestyle(":")
    draw_components(ax2, result.gmm)
    ax2.set_xlabel("eruption (minutes)")
    ax2.set_ylabel("waiting (minutes)")
    ax2.set_title("start (dotted), fit, responsibilities (colour)", fontsize=10)
    save(fig, "em_trace.png")


def covariance_types() -> None:
    x = gmmjax.datasets.faithful()
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2), sharey=True)
    for ax, ctype in zip(axes, ("full", "diag", "spherical", "tied"), strict=True):
        gmm0 = gmmjax.init_gmm(
            jax.random.key(0), x, n_components=3, covariance_type=ctype, method="kmeans"
        )
        result = gmmjax.fit(gmmjax.EM(), gmm0, x)
        gmmjax.plot.plot_mixture(result.gmm, x, ax=ax, n_sigma=(1, 2), contours=False)
        ax.set_ylabel("")
        mean_ll = float(result.log_likelihood) / len(x)
        ax.set_title(f"{ctype}: mean log-lik {mean_ll:.3f}", fontsize=10)
        ax.set_xlim(1.0, 5.8)
        ax.set_xlabel("eruption (minutes)")
    axes[0].set_ylabel("waiting (minutes)")
    save(fig, "covariance_types.png")


def init_plateau() -> None:
    x = gmmjax.datasets.faithful()
    n = len(x)
    mean, cov = x.mean(axis=0), np.cov(x.T, bias=True)
    symmetric = gmmjax.GMM.from_natural([0.5, 0.5], [mean, mean], [cov, cov])
    single = float(gmmjax.log_likelihood(symmetric, x)) / n
    keys = jax.random.split(jax.random.key(0), 32)

    def traces(method):
        starts = jax.vmap(
            lambda key: gmmjax.init_gmm(key, x, n_components=2, method=method)
        )(keys)
        _, trace = jax.vmap(
            lambda g: gmmjax.fit_trace(gmmjax.EM(), g, x, num_steps=60)
        )(starts)
        return np.asarray(trace.log_likelihood) / n

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for method, color in (("random", "tab:red"), ("kmeans++", "tab:blue")):
        lls = traces(method)
        for i, ll in enumerate(lls):
            ax1.plot(
                np.arange(1, len(ll) + 1),
                ll,
                color=color,
                alpha=0.4,
                lw=1,
                label=method if i == 0 else None,
            )
    axis = np.linalg.eigh(cov)[1][:, -1]
    for eps in (1e-1, 1e-2, 1e-3, 1e-4):
        means = symmetric.means + eps * jnp.stack([axis, -axis])
        gmm0 = dataclasses.replace(symmetric, means=means)
        _, trace = gmmjax.fit_trace(gmmjax.EM(), gmm0, x, num_steps=120)
        ax2.plot(
            np.arange(1, 121), np.asarray(trace.log_likelihood) / n, label=f"{eps:.0e}"
        )
    for ax in (ax1, ax2):
        ax.axhline(single, color="k", ls="--", lw=1)
        ax.set_xlabel("EM step")
    ax1.set_ylabel("mean log-likelihood")
    ax1.set_title("32 starts each; dashed: the saddle (one Gaussian)", fontsize=10)
    ax2.set_title("starts at distance ε from the saddle", fontsize=10)
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8, title="ε")
    save(fig, "init_plateau.png")


def gradient_paths() -> None:
    x = gmmjax.datasets.faithful()
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    n = len(x)
    gmm0 = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
    best = gmmjax.fit(gmmjax.EM(), gmm0, x, tol=1e-10).log_likelihood
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, fitter in (
        ("EM", gmmjax.EM()),
        ("adam(0.05)", gmmjax.GradientFitter(optax.adam(0.05))),
        ("lbfgs", gmmjax.GradientFitter(optax.lbfgs())),
        ("sgd(0.2)", gmmjax.GradientFitter(optax.sgd(0.2))),
    ):
        _, trace = gmmjax.fit_trace(fitter, gmm0, x, num_steps=100)
        gap = np.maximum(np.asarray(best - trace.log_likelihood) / n, 1e-16)
        ax.semilogy(np.arange(1, 101), gap, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("gap to the optimum (mean log-lik)")
    ax.set_title("standardized Old Faithful, k = 2, one start", fontsize=10)
    ax.legend(fontsize=8)
    save(fig, "gradient_paths.png")


def anneal_split() -> None:
    x = jnp.array([[1.0], [-1.0]])
    start = gmmjax.GMM.from_natural(
        [0.5, 0.5], [[0.001], [-0.001]], [4.0, 4.0], covariance_type="spherical"
    )
    variances = jnp.geomspace(4.0, 0.0025, 40)
    _, info = gmmjax.anneal_variance(
        jax.random.key(0), start, x, variances=variances, release=False
    )
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for j in range(2):
        ax.semilogx(info.variances, info.means[:, j, 0], "o-", ms=3, color=COLORS[j])
    ax.axvline(1.0, color="k", ls="--", lw=1)
    ax.invert_xaxis()
    ax.set_xlabel("fixed variance v (swept downwards)")
    ax.set_ylabel("component means")
    ax.set_title("two points ±1: merged means unstable below v = 1", fontsize=10)
    save(fig, "anneal_split.png")


def multistart_hist() -> None:
    x = gmmjax.datasets.faithful()
    runs = gmmjax.multistart(
        gmmjax.EM(),
        jax.random.key(0),
        x,
        n_components=3,
        n_init=200,
        init="random_from_data",
    )
    fig = gmmjax.plot.plot_restarts(runs, per_sample=len(x))
    fig.set_size_inches(5.5, 3.4)
    save(fig, "multistart_hist.png")


def priors_small_sample() -> None:
    from sklearn.datasets import load_iris

    iris = load_iris()
    flowers = iris.data[::5]
    names = [name.removesuffix(" (cm)") for name in iris.feature_names]
    grid = dict(n_components=range(1, 7), covariance_types=("full",))
    ml = gmmjax.select(jax.random.key(0), flowers, **grid)
    mp = gmmjax.select(jax.random.key(0), flowers, **grid, prior="default")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ks = np.arange(1, 7)
    for table, label, color in (
        (ml, "maximum likelihood", "tab:red"),
        (mp, "MAP, default prior", "tab:blue"),
    ):
        values = np.asarray(table.values)[:, 0]
        axes[0].plot(ks, values, "o-", color=color, label=label)
        best = table.best_n_components
        axes[0].plot(best, values[best - 1], "*", ms=14, color=color)
    axes[0].set_xlabel("number of components k")
    axes[0].set_ylabel("BIC (lower is better)")
    axes[0].set_title("30 iris flowers, full covariances", fontsize=10)
    axes[0].legend(fontsize=8)
    for ax, table, title in (
        (axes[1], ml, "maximum likelihood, k = 6"),
        (axes[2], mp, "MAP, k = 6"),
    ):
        gmm = table.fits[(6, "full")].gmm
        gmmjax.plot.plot_mixture(
            gmm,
            flowers,
            ax=ax,
            dims=(2, 3),
            n_sigma=(1, 2),
            contours=False,
            feature_names=names,
        )
        ax.set_title(title, fontsize=10)
        ax.set_xlim(0.5, 7.5)
        ax.set_ylim(-0.4, 2.9)
    fig.tight_layout()
    save(fig, "priors_small_sample.png")


def priors_dirichlet() -> None:
    from sklearn.cluster import KMeans

    x = gmmjax.datasets.faithful()
    n, k = len(x), 8
    labels = KMeans(n_clusters=k, n_init=1, random_state=0).fit(x).labels_
    start = gmmjax.ResponsibilityStart(np.eye(k)[labels])
    fits = {}
    for weight_prior in ("dirichlet_process", "dirichlet_distribution"):
        prior = gmmjax.VariationalPrior.default(
            x, n_components=k, weight_prior=weight_prior
        )
        fits[weight_prior] = gmmjax.fit(
            gmmjax.VB(prior=prior), start, x, tol=1e-3 / n, max_steps=500
        )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    width = 0.4
    for i, (weight_prior, color) in enumerate(
        (("dirichlet_process", "tab:blue"), ("dirichlet_distribution", "tab:orange"))
    ):
        weights = np.maximum(np.asarray(fits[weight_prior].gmm.weights), 1e-12)
        axes[0].bar(
            np.arange(k) + (i - 0.5) * width,
            weights,
            width,
            color=color,
            label=weight_prior.replace("_", " "),
        )
    axes[0].set_yscale("log")
    axes[0].set_ylim(1e-10, 2)
    axes[0].set_xticks(np.arange(k), [str(j) for j in range(k)])
    axes[0].set_xlabel("component")
    axes[0].set_ylabel("weight (log scale)")
    axes[0].set_title("eight components on Old Faithful", fontsize=10)
    axes[0].legend(fontsize=8, loc="lower left")
    dp = fits["dirichlet_process"].gmm
    used = np.asarray(dp.weights) > 0.01
    kept = gmmjax.GMM.from_covariances(
        np.log(np.asarray(dp.weights)[used]),
        np.asarray(dp.means)[used],
        np.asarray(dp.covariances)[used],
        covariance_type="full",
    )
    gmmjax.plot.plot_mixture(
        kept,
        x,
        ax=axes[1],
        n_sigma=(1, 2),
        contours=False,
        feature_names=["eruption (minutes)", "waiting (minutes)"],
    )
    axes[1].set_title(
        f"Dirichlet process: the {used.sum()} components in use", fontsize=10
    )
    table = gmmjax.select(
        jax.random.key(0), x, n_components=range(1, k + 1), covariance_types=("full",)
    )
    values = np.asarray(table.values)[:, 0]
    axes[2].plot(np.arange(1, k + 1), values, "o-", color="tab:red")
    best = table.best_n_components
    axes[2].plot(best, values[best - 1], "*", ms=14, color="tab:red")
    axes[2].axvline(
        used.sum(), color="tab:blue", ls="--", lw=1, label="in use (process)"
    )
    axes[2].set_xlabel("number of components k")
    axes[2].set_ylabel("BIC (lower is better)")
    axes[2].set_title("BIC, maximum likelihood, full covariances", fontsize=10)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    save(fig, "priors_dirichlet.png")


FIGURES = (
    mixture_density,
    mixture_samples,
    em_trace,
    covariance_types,
    init_plateau,
    gradient_paths,
    anneal_split,
    multistart_hist,
    priors_small_sample,
    priors_dirichlet,
)


def main(argv: list[str] | None = None) -> None:
    names = sys.argv[1:] if argv is None else argv
    known = {make.__name__: make for make in FIGURES}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SystemExit(f"unknown figures {unknown}; known: {sorted(known)}")
    for make in FIGURES:
        if not names or make.__name__ in names:
            make()


if __name__ == "__main__":
    main()
