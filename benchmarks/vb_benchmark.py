"""Variational Bayes per-iteration cost: gmmjax against scikit-learn, in one process.

Issue 20's benchmark: :class:`gmmjax.VB` against scikit-learn's
``BayesianGaussianMixture`` at the EM benchmark's sizes (``em_benchmark.py``),
with the same targets as EM (at least 8x in float32, 4x in float64), and
restarts.

Fixed work from identical starts: both libraries start from the same
responsibilities with the same (scikit-learn's default) prior, a Dirichlet
process on the weights. scikit-learn through a subclass whose
``_initialize_parameters`` calls ``_initialize(X, resp)`` (its variational M step
from ``resp``), gmmjax through ``gmmjax.ResponsibilityStart(resp)``, which takes
the same M step. Both run ``tol=0``, so exactly ``max_iter`` iterations
(scikit-learn's ``n_iter_``) and ``max_steps`` steps (``FitResult.n_steps``),
each one E step, one M step and the lower bound. The per-iteration time is the
difference of two runs (``m1`` and ``m2`` iterations) divided by ``m2 - m1``, so
the start-up costs cancel (scikit-learn's validation, prior and initialization
and its final E step; gmmjax's initial M step and the final log-likelihood
pass). The ``m1`` and ``m2`` runs are timed in turns after a warm-up, so a
change of the machine's load falls on both; the figures compared with the
targets come from the medians, a second set from the minima (the least
disturbed runs), and the raw times are kept. JAX results are waited for with
``block_until_ready``.

That the two sides compute the same thing is checked once per row, untimed:
the last ``m2``-iteration fit of each side (kept from the timing runs) is
compared, the relative difference of the means, the weights' largest difference
and the lower bounds' relative difference, and both iteration counts.

scikit-learn computes in float64 whatever the input: given float32 data it keeps
``X`` float32, but its prior's covariance (``numpy.cov``) and so its precisions
are float64, and every product with ``X`` is promoted to float64. Its float32
row is therefore a float64 computation on float32 input (as in the EM
benchmark, which passes the float32 data and float64 starts); gmmjax computes in
the data's dtype.

Where the time goes, per row (``--no-profile`` skips it): gmmjax's EM per
iteration on the same data from the EM benchmark's start (``gmmjax.EM``, the
difference of two runs like VB's; ``None`` where the run stopped early), and
one VB step jitted alone. The VB step takes EM's E step and statistics (the
expanded route in float64, and in float32 where it keeps the digits), so the
two should cost about the same per iteration.

The restarts (``--only restarts``; ``--only grid`` skips them) time many
restarts of a small problem fitted at once by
``gmmjax.multistart(VB(...), ...)`` (one vmapped program, 100 steps, ``tol=0``,
``init="random_from_data"``, no hierarchical start, float64) against
scikit-learn's ``n_init`` loop (``BayesianGaussianMixture(n_init=10,
init_params="random_from_data", max_iter=100, tol=0)``) extrapolated from those
10 fits. The starts differ (gmmjax's VB begins with an E step from a model whose
means are random data points, scikit-learn's with an M step from one-hot
responsibilities of random data points), the work per step does not.

The load averages before and after every row are recorded: the machine may be
shared (``--wait-for-load L`` waits before every row, up to ``--max-wait``
seconds, until the 1-minute load average is below ``L``, and records the wait).
So is the time of a ``2 x 2`` ``scipy.linalg.solve_triangular``, a fixed
cost that scikit-learn pays ``k`` times per iteration and that BLAS threads
waiting for a busy core inflate (from microseconds to milliseconds). Thread
settings are left at their defaults and recorded.

Run ``python benchmarks/vb_benchmark.py`` (``--quick`` for a smoke run,
``--only grid|restarts``). Runs unchanged on a GPU when JAX sees one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import jax
from _common import load_average
from _common import machine_info as common_machine_info

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import em_benchmark  # noqa: E402
from em_benchmark import GRID, ISSUE_SIZES, QUICK_GRID, median_time  # noqa: E402

import gmmjax  # noqa: E402
from gmmjax import _fit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

TARGETS = {"float32": 8.0, "float64": 4.0}
REG_COVAR = 1e-6
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "XLA_FLAGS",
)


def paired_times(run, m1, m2, repeats, warm_up=(True, True)):
    """Per-iteration seconds from ``run(m1)`` and ``run(m2)`` timed in turns
    (so a change of the machine's load falls on both), after a warm-up call of
    each (``warm_up``): ``(t(m2) - t(m1)) / (m2 - m1)`` of the medians, the
    same of the minima (the least disturbed calls), and the raw times."""
    for m, warm in zip((m1, m2), warm_up, strict=True):
        if warm:
            run(m)
    times = {m1: [], m2: []}
    for _ in range(repeats):
        for m in (m1, m2):
            start = time.perf_counter()
            run(m)
            times[m].append(time.perf_counter() - start)
    return {
        "median": (np.median(times[m2]) - np.median(times[m1])) / (m2 - m1),
        "min": (min(times[m2]) - min(times[m1])) / (m2 - m1),
        "times_m1": times[m1],
        "times_m2": times[m2],
    }


def wait_for_quiet(threshold, max_wait):
    """Sleep until the 1-minute load average is below ``threshold`` (no wait
    when ``None``), at most ``max_wait`` seconds: the seconds waited."""
    if threshold is None:
        return 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait:
        load = load_average()
        if load is None or load[0] < threshold:
            break
        time.sleep(10)
    return time.perf_counter() - start


def solve_triangular_probe(repeats=200):
    """Seconds of one ``2 x 2`` ``scipy.linalg.solve_triangular``: the fixed
    cost that scikit-learn pays ``k`` times per iteration (its precisions'
    Cholesky factors), which BLAS threads waiting on a loaded machine inflate."""
    from scipy.linalg import solve_triangular

    a = np.array([[2.0, 0.0], [1.0, 3.0]])
    eye = np.eye(2)
    solve_triangular(a, eye, lower=True)
    start = time.perf_counter()
    for _ in range(repeats):
        solve_triangular(a, eye, lower=True)
    return (time.perf_counter() - start) / repeats


def machine_info():
    """The common record plus the thread settings: the environment variables
    (unset: the libraries' defaults) and the BLAS/OpenMP pools scikit-learn
    runs with."""
    info = common_machine_info("scikit-learn")
    info["thread_environment"] = {
        name: os.environ.get(name) for name in THREAD_VARIABLES
    }
    try:
        import threadpoolctl

        info["blas"] = [
            {key: p.get(key) for key in ("internal_api", "num_threads", "version")}
            for p in threadpoolctl.threadpool_info()
        ]
    except ImportError:
        info["blas"] = None
    return info


# ------------------------------------------------------------------ problems


def make_problem(n, d, k, ctype, dtype, seed=0):
    """``(x, resp, gmm0)``: ``em_benchmark.py``'s data and start for
    :class:`gmmjax.EM` (``k`` random data points as means, the data's
    variances, equal weights), and one-hot starting responsibilities: every
    point given to the nearest of those ``k`` points (no component empty: each
    holds its own point), in ``dtype``."""
    x, gmm0 = em_benchmark.make_problem(n, d, k, ctype, dtype, seed)
    host, means = x.astype(np.float64), np.asarray(gmm0.means, np.float64)
    distance = (host**2).sum(1)[:, None] - 2 * host @ means.T + (means**2).sum(1)
    resp = np.zeros((n, k), dtype)
    resp[np.arange(n), np.argmin(distance, axis=1)] = 1
    return x, resp, gmm0


def vb_fitter(x, k, ctype):
    prior = gmmjax.VariationalPrior.default(
        x, n_components=k, covariance_type=ctype, weight_prior="dirichlet_process"
    )
    return gmmjax.VB(prior=prior, reg_covar=REG_COVAR)


# -------------------------------------------------------------------- gmmjax


def time_gmmjax(fitter, start, x, m1, m2, repeats):
    """Per-iteration seconds of ``fitter`` from ``start`` (:func:`paired_times`)
    and the ``m2``-step result."""
    last = {}

    def run(m):
        out = _fit.run(fitter, start, x, None, jnp.asarray(m, jnp.int32), 0.0)[0]
        out.log_likelihood.block_until_ready()
        last[m] = out

    return paired_times(run, m1, m2, repeats), last[m2]


def profile_vb_step(vb, state, x, repeats):
    """Seconds of one VB step (E step, M step and lower bound) jitted alone."""

    @jax.jit
    def step(vb, state, x):
        return vb.step(state, x)[0]

    return {
        "vb_step_s": median_time(
            lambda: step(vb, state, x).lower_bound.block_until_ready(), repeats
        ),
    }


# -------------------------------------------------------------- scikit-learn


def sklearn_class():
    from sklearn.mixture import BayesianGaussianMixture

    class FromResponsibilities(BayesianGaussianMixture):
        """scikit-learn's model started from given responsibilities: its
        ``_initialize`` (the variational M step) from ``start_resp`` instead of
        the responsibilities of ``init_params``."""

        start_resp = None

        def _initialize_parameters(self, X, random_state, xp=None):
            self._initialize(X, np.asarray(self.start_resp, X.dtype))

    return FromResponsibilities


def sklearn_model(resp, ctype, max_iter):
    model = sklearn_class()(
        n_components=resp.shape[1],
        covariance_type=ctype,
        tol=0.0,
        reg_covar=REG_COVAR,
        max_iter=max_iter,
        weight_concentration_prior_type="dirichlet_process",
        random_state=0,
    )
    model.start_resp = resp
    return model


def time_sklearn(resp, x, ctype, m1, m2, repeats):
    """Per-iteration seconds (:func:`paired_times`; one warm-up fit, of ``m1``
    iterations: nothing is compiled) and the ``m2``-iteration model."""
    from sklearn.exceptions import ConvergenceWarning

    last = {}

    def run(m):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            last[m] = sklearn_model(resp, ctype, m).fit(x)

    return paired_times(run, m1, m2, repeats, warm_up=(True, False)), last[m2]


def agreement(result, model, steps):
    """How far the two ``steps``-iteration fits are apart."""
    means = np.asarray(result.gmm.means, np.float64)
    weights = np.asarray(result.gmm.weights, np.float64)
    bound = float(result.objective)
    # scikit-learn's bound is a 1-element array for tied covariances
    reference = np.asarray(model.lower_bound_, np.float64).item()
    return {
        "iterations": steps,
        "gmmjax_n_steps": int(result.n_steps),
        "gmmjax_status": result.status_name,
        "sklearn_n_iter": int(model.n_iter_),
        "means_rel_diff": float(
            np.max(np.abs(means - model.means_)) / np.max(np.abs(model.means_))
        ),
        "weights_max_abs_diff": float(np.max(np.abs(weights - model.weights_))),
        "lower_bound_rel_diff": abs(bound - reference) / abs(reference),
    }


# ---------------------------------------------------------------------- grid


def bench_grid(grid, dtypes, args, rows, save):
    """Time every size and dtype; each row is appended to ``rows`` and
    ``save()`` called (a run cut short keeps what it measured)."""
    for n, d, k, ctype in grid:
        for dtype in dtypes:
            waited = wait_for_quiet(args.wait_for_load, args.max_wait)
            load_before = load_average()
            x_np, resp_np, gmm0 = make_problem(n, d, k, ctype, dtype)
            x = jnp.asarray(x_np)
            vb = vb_fitter(x, k, ctype)
            start = gmmjax.ResponsibilityStart(jnp.asarray(resp_np))
            # the public API once, which validates the start and the fitter
            check = gmmjax.fit(vb, start, x, max_steps=1, tol=0.0)
            check.log_likelihood.block_until_ready()
            row = {
                "n": n,
                "d": d,
                "k": k,
                "covariance_type": ctype,
                "dtype": dtype,
                "issue_size": (n, d, k, ctype) in ISSUE_SIZES,
                "waited_for_load_s": waited,
                "load_average_before": load_before,
            }
            timed, result = time_gmmjax(vb, start, x, args.m1, args.m2, args.repeats)
            per_iter = timed["median"]
            row.update(
                gmmjax_s_per_iter=per_iter,
                gmmjax_s_per_iter_from_minima=timed["min"],
                gmmjax_times=[timed["times_m1"], timed["times_m2"]],
            )
            if not args.no_profile:
                state = vb.init(start, x)
                em, em_result = time_gmmjax(
                    gmmjax.EM(reg_covar=REG_COVAR),
                    gmm0,
                    x,
                    args.m1,
                    args.m2,
                    args.repeats,
                )
                # a run that stopped early (a component collapsed) is no
                # per-iteration time
                ran = int(em_result.n_steps) == args.m2
                row["em_n_steps_status"] = [
                    int(em_result.n_steps),
                    em_result.status_name,
                ]
                row["em_s_per_iter"] = em["median"] if ran else None
                row["em_s_per_iter_from_minima"] = em["min"] if ran else None
                row["vb_over_em"] = per_iter / em["median"] if ran else None
                row.update(profile_vb_step(vb, state, x, args.repeats))
            if not args.no_sklearn:
                row["solve_triangular_2x2_s"] = solve_triangular_probe(50)
                sk, model = time_sklearn(
                    resp_np, x_np, ctype, args.m1, args.m2, args.sklearn_repeats
                )
                speedup = sk["median"] / per_iter
                row.update(
                    sklearn_s_per_iter=sk["median"],
                    sklearn_s_per_iter_from_minima=sk["min"],
                    sklearn_times=[sk["times_m1"], sk["times_m2"]],
                    sklearn_compute_dtype="float64",
                    speedup=speedup,
                    speedup_from_minima=sk["min"] / timed["min"],
                    target=TARGETS.get(dtype),
                    target_met=(
                        None
                        if dtype not in TARGETS
                        else bool(speedup >= TARGETS[dtype])
                    ),
                    agreement=agreement(result, model, args.m2),
                )
            row["load_average_after"] = load_average()
            print(json.dumps(row), flush=True)
            rows.append(row)
            save()


# ------------------------------------------------------------------ restarts


def bench_restarts(cases, steps, dtype, args, rows, save):
    """``b`` restarts at once in one ``multistart`` vs scikit-learn's ``n_init``
    loop, extrapolated from 10 of its fits; rows saved as in :func:`bench_grid`."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    for n, d, k, b in cases:
        waited = wait_for_quiet(args.wait_for_load, args.max_wait)
        load_before = load_average()
        rng = np.random.default_rng(0)
        centers = rng.normal(scale=3.0, size=(k, d))
        x_np = (centers[rng.integers(0, k, size=n)] + rng.normal(size=(n, d))).astype(
            dtype
        )
        x = jnp.asarray(x_np)
        vb = vb_fitter(x, k, "full")
        last = {}

        def fit_all(vb=vb, x=x, k=k, b=b, last=last):
            runs = gmmjax.multistart(
                vb,
                jax.random.key(0),
                x,
                n_components=k,
                n_init=b,
                covariance_type="full",
                init="random_from_data",
                max_steps=steps,
                tol=0.0,
                reg_covar=REG_COVAR,
                hc_start=False,
            )
            runs.log_likelihood.block_until_ready()
            last["runs"] = runs

        seconds = median_time(fit_all, args.repeats)
        runs = last["runs"]

        def sklearn_fits(x_np=x_np, k=k, count=10, last=last):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                last["sklearn"] = BayesianGaussianMixture(
                    n_components=k,
                    max_iter=steps,
                    tol=0.0,
                    reg_covar=REG_COVAR,
                    init_params="random_from_data",
                    n_init=count,
                    random_state=0,
                ).fit(x_np)

        probe = solve_triangular_probe(50)
        sk10 = median_time(sklearn_fits, args.sklearn_repeats)
        sk_all = sk10 / 10 * b
        statuses = np.asarray(runs.status)
        row = {
            "n": n,
            "d": d,
            "k": k,
            "covariance_type": "full",
            "dtype": dtype,
            "restarts": b,
            "steps": steps,
            "waited_for_load_s": waited,
            "load_average_before": load_before,
            "gmmjax_s": seconds,
            "restarts_per_s": b / seconds,
            "gmmjax_all_ran_steps": bool(np.all(np.asarray(runs.n_steps) == steps)),
            "gmmjax_statuses": {
                name: int(np.sum(statuses == int(getattr(gmmjax.Status, name))))
                for name in ("MAX_STEPS", "CONVERGED", "NONFINITE", "DEGENERATE")
            },
            "gmmjax_best_lower_bound": float(np.max(np.asarray(runs.objective))),
            "solve_triangular_2x2_s": probe,
            "sklearn_10_fits_s": sk10,
            "sklearn_s_extrapolated": sk_all,
            "sklearn_n_iter": int(last["sklearn"].n_iter_),
            "sklearn_best_of_10_lower_bound": float(last["sklearn"].lower_bound_),
            "speedup": sk_all / seconds,
            "load_average_after": load_average(),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
        save()


# ---------------------------------------------------------------------- plot


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
    bars = [("gmmjax VB", "gmmjax_s_per_iter"), ("gmmjax EM", "em_s_per_iter")]
    bars.append(("scikit-learn", "sklearn_s_per_iter"))
    bars = [(name, key) for name, key in bars if rows and key in rows[0]]
    width = 0.8 / len(bars)
    for i, (name, key) in enumerate(bars):
        offset = (i - (len(bars) - 1) / 2) * width
        values = [np.nan if r.get(key) is None else r[key] for r in rows]
        axes[0].bar(pos + offset, values, width, label=name)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("seconds per iteration")
    axes[0].legend()
    if rows and "speedup" in rows[0]:
        colors = ["C0" if r["dtype"] == "float32" else "C1" for r in rows]
        axes[1].bar(pos, [r["speedup"] for r in rows], color=colors)
        axes[1].axhline(8, color="k", ls="--", lw=0.8, label="float32 target 8x")
        axes[1].axhline(4, color="k", ls=":", lw=0.8, label="float64 target 4x")
        axes[1].legend()
    axes[1].set_ylabel("VB speed-up per iteration vs scikit-learn")
    for ax in axes:
        ax.set_xticks(pos, labels, fontsize=7)
    fig.suptitle(
        f"VB per iteration, {result['machine']['backend']} "
        f"({result['machine']['cpu_count']} cores)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sklearn-repeats", type=int, default=2)
    parser.add_argument("--m1", type=int, default=2, help="iterations, short run")
    parser.add_argument("--m2", type=int, default=5, help="iterations, long run")
    parser.add_argument("--no-sklearn", action="store_true")
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="skip gmmjax's EM and the VB step's parts at every size",
    )
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--only", choices=("grid", "restarts", "both"), default="both")
    parser.add_argument(
        "--issue-sizes",
        action="store_true",
        help="only the EM benchmark's four issue sizes, not the extra ones",
    )
    parser.add_argument(
        "--wait-for-load",
        type=float,
        default=None,
        help="before every row, wait until the 1-minute load average is below this",
    )
    parser.add_argument(
        "--max-wait", type=float, default=600.0, help="seconds, per row (default 600)"
    )
    parser.add_argument("--out", default=None, help="JSON path (default results/)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 2)
        args.sklearn_repeats = 1
        args.m1, args.m2 = 1, 3
    dtypes = args.dtypes.split(",")
    started = time.perf_counter()
    result = {
        "machine": machine_info(),
        "scipy_solve_triangular_2x2_s_at_start": solve_triangular_probe(),
        "settings": vars(args),
        "targets": {
            "speedup_per_iteration": TARGETS,
            "source": "issue 20: the same as EM's (issue 12), at the EM "
            "benchmark's sizes",
        },
        "method": {
            "per_iteration": "(t(m2) - t(m1)) / (m2 - m1), tol=0, the m1 and m2 "
            "runs timed in turns after a warm-up; *_s_per_iter from the medians "
            "(the figures compared with the targets), *_from_minima from the "
            "fastest runs, raw times [m1 runs, m2 runs] kept",
            "start": "identical one-hot responsibilities (every point to the "
            "nearest of k random data points): scikit-learn's _initialize(X, "
            "resp) through a subclass, gmmjax.ResponsibilityStart(resp)",
            "prior": "scikit-learn's defaults (Dirichlet process, alpha_0 = 1/k, "
            "beta_0 = 1, m_0 the mean, nu_0 = d, Psi_0 the covariance), "
            "gmmjax.VariationalPrior.default; reg_covar 1e-6",
            "sklearn_dtype": "scikit-learn computes in float64 whatever the "
            "input: float32 X stays float32 but its prior covariance (numpy.cov) "
            "and so its precisions are float64 and every product with X is "
            "promoted, so its float32 rows are float64 computations on float32 "
            "input; gmmjax computes in the data's dtype",
            "agreement": "untimed: the last m2-iteration fits of both sides",
            "profile": "em_s_per_iter: gmmjax.EM per iteration on the same data "
            "from em_benchmark.py's start (k random data points as means, the "
            "data's variances), same method (None where it stopped early); "
            "vb_step_s: one VB step (EM's E step and statistics, the "
            "posterior, the lower bound) jitted alone",
        },
    }
    print(json.dumps(result), flush=True)
    RESULTS.mkdir(exist_ok=True)
    default = "vb_quick.json" if args.quick else "vb.json"
    out = Path(args.out) if args.out else RESULTS / default

    def save():
        result["wall_s"] = time.perf_counter() - started
        out.write_text(json.dumps(result, indent=2))

    if args.only in ("grid", "both"):
        grid = QUICK_GRID if args.quick else ISSUE_SIZES if args.issue_sizes else GRID
        result["grid"] = []
        bench_grid(grid, dtypes, args, result["grid"], save)
    if args.only in ("restarts", "both"):
        cases = (
            [(200, 2, 3, 100)]
            if args.quick
            else [(200, 2, 3, 1000), (2000, 2, 5, 1000), (200, 2, 3, 10_000)]
        )
        result["restarts"] = []
        bench_restarts(cases, 100, "float64", args, result["restarts"], save)
    result["load_average_at_end"] = load_average()
    result["scipy_solve_triangular_2x2_s_at_end"] = solve_triangular_probe()
    result["complete"] = True
    save()
    if result.get("grid"):
        plot(result, out.with_suffix(".png"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
