"""EM per-iteration cost: gmmjax against scikit-learn, measured in one process.

Fixed work from identical starts: both libraries start from the same weights,
means and precisions and run ``tol=0`` for a set number of iterations. The
per-iteration time is the difference of two runs (``m1`` and ``m2`` iterations)
divided by ``m2 - m1``, so start-up costs (scikit-learn's initialization and
validation, the final log-likelihood pass of ``gmmjax.fit``) cancel. Every time is
the median of repeats after a warm-up; JAX results are waited for with
``block_until_ready``.

Flop model per iteration (multiply-adds count 2), the nominal one of the issue:

- ``full``/``tied``: ``4 n k d^2`` (the ``(n, d) @ (d, k d)`` Mahalanobis product and
  the ``(d, n) @ (n, k d)`` scatter product), plus ``n k`` exponentials not counted.
- ``diag``/``spherical``: ``8 n k d`` (the expanded Mahalanobis products, the
  weighted means and variances).

gmmjax's EM step expands the square (see ``gmmjax/_stats.py``): its E and M steps are
two products with the ``p`` quadratic monomials of the data, ``4 n k p`` flops with
``p = d (d + 1) / 2 + d + 1`` for full covariances, about half the nominal count.
Each row reports both: ``gmmjax_gflops`` on the nominal model (time-to-solution
against the issue's figure) and ``gmmjax_executed_gflops`` on the flops performed.

The matmul peak is measured here with ``jnp`` (square products, float32 and
float64), and each figure is reported as a share of it. Peak memory per iteration
comes from XLA's compiled memory analysis of one jitted EM step.

A second mode (``--restarts``) times the issue-11 case: many restarts of a small
problem fitted at once with ``vmap`` of the ``fit`` driver (100 steps, ``tol=0``),
against scikit-learn's ``n_init`` loop extrapolated from 10 fits.

gmmx is not installed in this environment; it is skipped (noted in the JSON).

Run ``python benchmarks/em_benchmark.py`` (``--quick`` for a smoke run). Runs
unchanged on a GPU when JAX sees one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import warnings
from pathlib import Path

import jax
from _common import machine_info as common_machine_info

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gmmjax  # noqa: E402
from gmmjax import _em, _fit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# the sizes issue 12 sets targets for, then extra ones
ISSUE_SIZES = [
    (200_000, 16, 16, "full"),
    (1_000_000, 4, 8, "full"),
    (500_000, 32, 16, "diag"),
    (100_000, 64, 32, "full"),
]
GRID = [
    *ISSUE_SIZES,
    (200_000, 2, 3, "full"),
    (200_000, 16, 16, "spherical"),
    (200_000, 16, 16, "tied"),
]
QUICK_GRID = [
    (20_000, 16, 16, "full"),
    (50_000, 4, 8, "full"),
    (20_000, 32, 16, "diag"),
    (5_000, 64, 32, "full"),
]


def median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def machine_info():
    """The common record plus what this benchmark compares against: gmmx (not
    timed) and the BLAS threads scikit-learn runs with."""
    info = common_machine_info("scikit-learn")
    info["gmmx"] = (
        "not installed: skipped"
        if importlib.util.find_spec("gmmx") is None
        else "installed, not timed"
    )
    try:
        import threadpoolctl

        info["blas"] = [
            {key: p.get(key) for key in ("internal_api", "num_threads", "version")}
            for p in threadpoolctl.threadpool_info()
        ]
    except ImportError:
        info["blas"] = None
    return info


def matmul_peak(dtype, size, repeats):
    """GFLOP/s of a square ``jnp`` matrix product (the reference peak)."""
    key = jax.random.key(0)
    a = jax.random.normal(key, (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)
    f = jax.jit(jnp.matmul)
    seconds = median_time(lambda: f(a, b).block_until_ready(), repeats)
    return 2 * size**3 / seconds / 1e9


def flops_per_iteration(n, d, k, ctype):
    if ctype in ("full", "tied"):
        return 4 * n * k * d * d
    return 8 * n * k * d


def route_of(gmm0, x):
    """The EM step's route from ``gmm0``: float64 always expands the square,
    float32 does while :func:`gmmjax._em._expansion_is_accurate` holds."""
    if x.dtype == jnp.float64 or bool(_em._expansion_is_accurate(gmm0, x)):
        return "expanded"
    return "two-pass"


def executed_flops(n, d, k, ctype, route):
    """Flops the route performs: the expanded square's two products with the
    ``p`` monomials (``2 n k p`` each), or the two-pass model above."""
    if route == "two-pass":
        return flops_per_iteration(n, d, k, ctype)
    second = {"full": d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": d}
    p = second.get(ctype, 1) + d + 1
    return 4 * n * k * p


def make_problem(n, d, k, ctype, dtype, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d))
    labels = rng.integers(0, k, size=n)
    x = (centers[labels] + rng.normal(size=(n, d))).astype(dtype)
    # start: random data points as means, the data's variances, equal weights
    means = x[rng.choice(n, k, replace=False)]
    var = x.var(axis=0)
    cov = {
        "full": np.broadcast_to(np.diag(var), (k, d, d)),
        "tied": np.diag(var),
        "diag": np.broadcast_to(var, (k, d)),
        "spherical": np.full(k, var.mean()),
    }[ctype]
    gmm0 = gmmjax.GMM.from_natural(
        np.full(k, 1.0 / k), means, np.array(cov), covariance_type=ctype
    )
    return x, jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), gmm0)


def time_gmmjax(gmm0, x, m1, m2, repeats):
    em = gmmjax.EM(reg_covar=1e-6)

    def run(m):
        out = _fit.run(em, gmm0, x, None, jnp.asarray(m, jnp.int32), 0.0)[0]
        out.log_likelihood.block_until_ready()

    t1 = median_time(lambda: run(m1), repeats)
    t2 = median_time(lambda: run(m2), repeats)
    return (t2 - t1) / (m2 - m1)


def step_memory(gmm0, x):
    compiled = _em._em_step_jit.lower(gmm0, x, None, 1e-6, 1.0).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return {
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "argument_bytes": int(analysis.argument_size_in_bytes),
        "output_bytes": int(analysis.output_size_in_bytes),
    }


def sklearn_model(gmm0, ctype, max_iter):
    from sklearn.mixture import GaussianMixture

    weights = np.asarray(gmm0.weights, np.float64)
    return GaussianMixture(
        n_components=gmm0.n_components,
        covariance_type=ctype,
        tol=0.0,
        reg_covar=1e-6,
        max_iter=max_iter,
        init_params="random_from_data",
        weights_init=weights / weights.sum(),
        means_init=np.asarray(gmm0.means, np.float64),
        precisions_init=np.asarray(gmm0.precisions, np.float64),
    )


def time_sklearn(gmm0, x, ctype, m1, m2, repeats):
    from sklearn.exceptions import ConvergenceWarning

    def run(m):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sklearn_model(gmm0, ctype, m).fit(x)

    t1 = median_time(lambda: run(m1), repeats)
    t2 = median_time(lambda: run(m2), repeats)
    return (t2 - t1) / (m2 - m1), t1


def bench_grid(grid, dtypes, peaks, args):
    rows = []
    for n, d, k, ctype in grid:
        for dtype in dtypes:
            x_np, gmm0 = make_problem(n, d, k, ctype, dtype)
            x = jnp.asarray(x_np)
            row = {"n": n, "d": d, "k": k, "covariance_type": ctype, "dtype": dtype}
            per_iter = time_gmmjax(gmm0, x, args.m1, args.m2, args.repeats)
            flops = flops_per_iteration(n, d, k, ctype)
            route = route_of(gmm0, x)
            executed = executed_flops(n, d, k, ctype, route)
            row.update(
                gmmjax_s_per_iter=per_iter,
                flops_per_iter=flops,
                gmmjax_gflops=flops / per_iter / 1e9,
                gmmjax_share_of_peak=flops / per_iter / 1e9 / peaks[dtype],
                route=route,
                executed_flops_per_iter=executed,
                gmmjax_executed_gflops=executed / per_iter / 1e9,
                gmmjax_executed_share_of_peak=executed / per_iter / 1e9 / peaks[dtype],
                memory=step_memory(gmm0, x),
            )
            if not args.no_sklearn:
                sk, sk_first = time_sklearn(
                    gmm0, x_np, ctype, args.m1, args.m2, args.sklearn_repeats
                )
                row.update(
                    sklearn_s_per_iter=sk,
                    sklearn_fit_s_at_m1=sk_first,
                    sklearn_gflops=flops / sk / 1e9,
                    sklearn_share_of_peak=flops / sk / 1e9 / peaks[dtype],
                    speedup=sk / per_iter,
                )
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def bench_restarts(cases, steps, args):
    """Issue 11: ``b`` restarts at once under ``vmap`` vs scikit-learn's loop."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    rows = []
    em = gmmjax.EM(reg_covar=1e-6)
    for n, d, k, b in cases:
        rng = np.random.default_rng(0)
        centers = rng.normal(scale=3.0, size=(k, d))
        x_np = centers[rng.integers(0, k, size=n)] + rng.normal(size=(n, d))
        x = jnp.asarray(x_np)
        keys = jax.random.split(jax.random.key(0), b)
        starts = jax.vmap(
            lambda key, x=x, k=k: gmmjax.init_gmm(
                key, x, n_components=k, method="random_from_data"
            )
        )(keys)
        fit_all = jax.jit(
            jax.vmap(lambda g, x=x: _fit.run(em, g, x, None, steps, 0.0)[0])
        )
        seconds = median_time(
            lambda f=fit_all, s=starts: f(s).log_likelihood.block_until_ready(),
            args.repeats,
        )
        memory = fit_all.lower(starts).compile().memory_analysis()

        def sklearn_fits(x_np=x_np, k=k, count=10):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                for seed in range(count):
                    GaussianMixture(
                        k,
                        max_iter=steps,
                        tol=0.0,
                        init_params="random_from_data",
                        random_state=seed,
                    ).fit(x_np)

        sk10 = median_time(sklearn_fits, args.sklearn_repeats)
        sk_all = sk10 / 10 * b
        row = {
            "n": n,
            "d": d,
            "k": k,
            "restarts": b,
            "steps": steps,
            "gmmjax_s": seconds,
            "restarts_per_s": b / seconds,
            "sklearn_s_extrapolated": sk_all,
            "speedup": sk_all / seconds,
            "temp_bytes": None if memory is None else int(memory.temp_size_in_bytes),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["grid"]
    labels = [
        f"{r['n'] // 1000}k,{r['d']},{r['k']}\n{r['covariance_type']},{r['dtype'][5:]}"
        for r in rows
    ]
    pos = np.arange(len(rows))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, len(rows) * 0.9), 8))
    share = [100 * r["gmmjax_share_of_peak"] for r in rows]
    executed = [100 * r["gmmjax_executed_share_of_peak"] for r in rows]
    axes[0].bar(pos - 0.27, share, 0.27, label="gmmjax (nominal flops)")
    axes[0].bar(pos, executed, 0.27, label="gmmjax (executed flops)")
    if rows and "sklearn_share_of_peak" in rows[0]:
        sk_share = [100 * r["sklearn_share_of_peak"] for r in rows]
        axes[0].bar(pos + 0.27, sk_share, 0.27, label="scikit-learn (nominal)")
        axes[1].bar(pos, [r["speedup"] for r in rows])
        axes[1].axhline(8, color="k", ls="--", lw=0.8)
        axes[1].axhline(4, color="k", ls=":", lw=0.8)
    axes[0].axhline(40, color="k", ls="--", lw=0.8)
    axes[0].set_ylabel("% of measured matmul peak")
    axes[0].legend()
    axes[1].set_ylabel("speed-up per EM iteration vs scikit-learn")
    for ax in axes:
        ax.set_xticks(pos, labels, fontsize=7)
    fig.suptitle(f"EM per iteration, {result['machine']['backend']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sklearn-repeats", type=int, default=3)
    parser.add_argument("--m1", type=int, default=2, help="iterations, short run")
    parser.add_argument("--m2", type=int, default=6, help="iterations, long run")
    parser.add_argument("--no-sklearn", action="store_true")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--only", choices=("grid", "restarts", "both"), default="both")
    parser.add_argument(
        "--issue-sizes",
        action="store_true",
        help="only the four sizes with targets (issue 12), not the extra ones",
    )
    parser.add_argument("--out", default=None, help="JSON path (default results/)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 2)
        args.sklearn_repeats = 1
        args.m1, args.m2 = 1, 3
    gpu = jax.default_backend() != "cpu"
    dtypes = args.dtypes.split(",")
    size = 256 if args.quick else (8192 if gpu else 2048)
    peaks = {dt: matmul_peak(dt, size, args.repeats) for dt in dtypes}
    result = {
        "machine": machine_info(),
        "matmul_peak_gflops": peaks,
        "matmul_peak_size": size,
        "settings": vars(args),
        "flop_model": {
            "full/tied": "4 n k d^2 per iteration",
            "diag/spherical": "8 n k d per iteration",
            "executed": "the expanded route: 4 n k p with p monomials "
            "(d (d + 1) / 2 + d + 1 full/tied, 2 d + 1 diag, d + 2 spherical)",
        },
    }
    print(json.dumps(result), flush=True)
    if args.only in ("grid", "both"):
        grid = QUICK_GRID if args.quick else ISSUE_SIZES if args.issue_sizes else GRID
        result["grid"] = bench_grid(grid, dtypes, peaks, args)
    if args.only in ("restarts", "both"):
        cases = (
            [(200, 2, 3, 100)]
            if args.quick
            else [(200, 2, 3, 1000), (2000, 2, 5, 1000), (200, 2, 3, 10_000)]
        )
        result["restarts"] = bench_restarts(cases, 100, args)
    RESULTS.mkdir(exist_ok=True)
    tag = "quick" if args.quick else jax.default_backend()
    out = Path(args.out) if args.out else RESULTS / f"em_benchmark_{tag}.json"
    out.write_text(json.dumps(result, indent=2))
    if result.get("grid"):
        plot(result, out.with_suffix(".png"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
