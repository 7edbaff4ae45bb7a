"""Hessians of mixture log-likelihoods: how to build them, and which route
``gmmjax.diagnose`` should take. Two sections.

**Strategies** (``python benchmarks/hessian_benchmark.py``): the exact Hessian of
a large mixture log-likelihood, strategies compared. The objective is the total
log-likelihood of a K=16, D=16 full-covariance mixture on N=10,000 points in
float64, as a function of the model's leaves (logits, means, log-diagonal and
off-diagonal of the precision Cholesky): p = 16 + 256 + 256 + 1920 = 2448
parameters. Strategies (all exact):

- ``fwd_over_rev[c]``: Hessian-vector products ``jvp(grad)`` for ``c`` basis vectors
  at a time under ``lax.map`` (the forward pass is redone for every chunk);
- ``rev_over_rev[c]``: the gradient linearized once (``vjp(grad)``), applied to ``c``
  basis vectors at a time; this is ``gmmjax.landscape.hessian(..., chunk_size=c)``;
- ``jax.hessian`` (``jacfwd(jacrev)``, all 2448 columns in one vectorized pass) needs
  about ``p * N * K * D * 8`` bytes of tangents (~50 GB here), so it is timed on a
  subsample of ``N_SMALL`` points, next to the chunked strategies on that subsample.

Every timing: one warm-up call (compilation), then the median of the repeated calls
(counts in ``PLAN``) with ``block_until_ready``. The load average is recorded: on a
shared machine the absolute times are inflated. Writes
``benchmarks/results/hessian.json``.

Run: ``python benchmarks/hessian_benchmark.py``.

**Routes** (``python benchmarks/hessian_benchmark.py --routes``): ``gmmjax.diagnose``
on its two routes, ``method="dense"`` (the full Hessian from batched
Hessian-vector products, then ``eigh``) and ``method="lanczos"`` (matrix-free
block Lanczos), on full-covariance mixtures of ``p = (k-1) + k d + k d (d+1)/2``
parameters from 44 to about 107,000 (``ROUTE_PROBLEMS``): blobs with centers drawn
from ``N(0, 3^2)`` and unit (identity) noise, modelled by the weights, means and
covariances of the true labels refined by EM (``tol=1e-9``, at most 100 steps) so
that the model is a converged fit, and the digits (1797 x 64, k = 10) fitted by
scikit-learn's ``GaussianMixture``. The fit runs in this process; every
measurement runs in a fresh process (this script with ``--routes-child``) that
loads only the data and the model from an ``.npz`` file, in float64, with
``GMMJAX_CACHE_DIR=off`` and no JAX compilation cache (nothing kept on disk
hides the compilation), and the default threads. Per run: the cold time of the
first ``diagnose`` call (tracing and compilation included), the median of
``WARM_REPEATS`` further calls (``block_until_ready`` on the eigenvalues), the
compilations of each, the process' peak resident memory over the calls (its
peak is reset after the data and model are loaded, so that setup does not
count; the resident memory before the calls is recorded too), the kind, the
number of eigenvalues (dense: ``p``) or Ritz values (the Hessian-vector
products of the matrix-free route), the top three, the predicted gain, and the
load average around the run and a digest of gmmjax's source as the process
read it (per run and at the start and end: a library edited during a run shows
as differing digests). Dense runs up to ``DENSE_PLAN_MAX`` parameters
where its ``4 p^2`` doubles fit in half the available memory; the two largest
problems are matrix-free only (the record says why). ``"auto"`` is the route
``gmmjax._landscape.DENSE_MAX_PARAMETERS`` picks (the record's
``auto_route``); the summary holds the issue's targets, met or not, and the
crossover of the cold times. Writes ``benchmarks/results/hessian_routes.json``;
about 15 minutes on two cores.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import jax
from _common import load_average, machine_info
from _memory import proc_status, reset_peak, run_script

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import gmmjax  # noqa: E402
from gmmjax import landscape  # noqa: E402
from gmmjax._density import total_log_likelihood  # noqa: E402
from gmmjax._landscape import DENSE_MAX_PARAMETERS  # noqa: E402
from gmmjax._levels import QUICK_MAX_WORK  # noqa: E402
from gmmjax._stored import _source_digest  # noqa: E402

K, D, N, N_SMALL = 16, 16, 10_000, 250
# (chunk sizes, repeats) per size: at N = 10,000 one tangent of the (N, K, D)
# intermediates is 20 MB, so chunks of 32 keep the peak to a few GiB on a 24 GiB
# machine; the large size is repeated less often because one Hessian takes minutes
# on two cores
PLAN = {N_SMALL: ((32, 128), 3), N: ((32,), 2)}


def problem(n):
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.full(K, 5.0))
    means = rng.normal(scale=3.0, size=(K, D))
    a = rng.normal(size=(K, D, D))
    cov = a @ np.swapaxes(a, 1, 2) / D + np.eye(D)
    gmm = gmmjax.GMM.from_natural(weights, means, cov)
    x, _ = gmmjax.sample(jax.random.key(0), gmm, n)
    return gmm, x


def fwd_over_rev(f, chunk_size):
    """Hessian columns as Hessian-vector products ``jvp(grad)``, chunked."""

    @jax.jit
    def run(theta):
        flat, unravel = ravel_pytree(theta)
        grad = jax.grad(lambda z: f(unravel(z)))
        basis = jnp.eye(flat.shape[0], dtype=flat.dtype)
        return jax.lax.map(
            lambda e: jax.jvp(grad, (flat,), (e,))[1], basis, batch_size=chunk_size
        )

    return run


def timed(fn, repeats):
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def run_size(n, out):
    gmm, x = problem(n)

    def f(g):
        return total_log_likelihood(g, x)

    p = ravel_pytree(gmm)[0].shape[0]
    chunks, repeats = PLAN[n]
    strategies = {}
    for c in chunks:
        strategies[f"fwd_over_rev[{c}]"] = functools.partial(fwd_over_rev(f, c), gmm)
        strategies[f"rev_over_rev[{c}]"] = functools.partial(
            landscape.hessian, f, gmm, chunk_size=c
        )
    if n == N_SMALL:
        strategies["jax.hessian"] = functools.partial(landscape.hessian, f, gmm)
    values = {}
    for name, fn in strategies.items():
        median, times = timed(fn, repeats)
        values[name] = np.asarray(fn())
        out["results"].append(
            {"n": n, "p": p, "strategy": name, "median_s": median, "times_s": times}
        )
        print(f"N={n:6d} p={p} {name:18s} median {median:8.3f} s", flush=True)
    reference = next(iter(values.values()))
    spread = max(
        float(np.max(np.abs(v - reference)) / np.max(np.abs(reference)))
        for v in values.values()
    )
    out.setdefault("max_relative_disagreement", {})[str(n)] = spread


def main_strategies():
    out = {
        "problem": {"K": K, "D": D, "N": N, "N_small": N_SMALL, "dtype": "float64"},
        "machine": machine_info(),
        "results": [],
    }
    for n in (N_SMALL, N):
        run_size(n, out)
    out["machine"]["load_average_at_end"] = load_average()
    best = min((r for r in out["results"] if r["n"] == N), key=lambda r: r["median_s"])
    out["fastest_at_N"] = best
    path = Path(__file__).parent / "results" / "hessian.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"fastest at N={N}: {best['strategy']} {best['median_s']:.3f} s -> {path}")


# --- routes of gmmjax.diagnose ----------------------------------------------

GIB = 2**30
# (name, k, d, n) of the blobs; "digits": scikit-learn's digits, k = 10
ROUTE_PROBLEMS = [
    ("blobs", 3, 4, 500),
    ("blobs", 5, 8, 1000),
    ("blobs", 5, 16, 1000),
    ("blobs", 8, 20, 2000),
    ("blobs", 10, 32, 4000),
    ("digits", 10, 64, 1797),
    ("blobs", 50, 64, 20_000),
]
# dense is measured up to this many parameters (memory allowing): past it the
# O(p^3) eigendecomposition alone takes longer than the whole matrix-free run
DENSE_PLAN_MAX = 6000
WARM_REPEATS = 3
CHILD_TIMEOUT_S = 1800
# environment of every measured process: no persistent cache of programs
CHILD_ENV = {
    "GMMJAX_CACHE_DIR": "off",
    "JAX_COMPILATION_CACHE_DIR": None,
}
TARGETS = [
    # (what, problem name, route, limit on cold s, limit on peak GiB)
    ("(5,16,1000) full, 764 params: auto diagnose <= 5 s", "blobs-5-16-1000",
     "auto", 5.0, None),
    ("digits k=10 (21,449 params): <= 60 s and <= 4 GiB", "digits-10-64-1797",
     "auto", 60.0, 4.0),
    ("k=50, d=64, n=20000: matrix-free <= 5 min and <= 4 GiB", "blobs-50-64-20000",
     "lanczos", 300.0, 4.0),
]  # fmt: skip


def n_parameters(k, d):
    return (k - 1) + k * d + k * d * (d + 1) // 2


def available_gib():
    """MemAvailable of /proc/meminfo in GiB (``None`` where unreadable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def blobs(k, d, n):
    """Data and a converged full-covariance fit: centers ~ N(0, 3^2), unit noise,
    the true labels' weights, means and covariances refined by EM."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3.0, size=(k, d))
    labels = rng.integers(0, k, size=n)
    x = centers[labels] + rng.normal(size=(n, d))
    weights = np.bincount(labels, minlength=k) / n
    means = np.stack([x[labels == j].mean(0) for j in range(k)])
    cov = np.stack([np.cov(x[labels == j].T, bias=True) for j in range(k)])
    gmm = gmmjax.GMM.from_natural(weights, means, cov)
    start = time.perf_counter()
    result = gmmjax.fit(gmmjax.EM(), gmm, jnp.asarray(x), tol=1e-9, max_steps=100)
    jax.block_until_ready(result)
    fit = {
        "by": "gmmjax.fit(EM(), true labels' model, tol=1e-9, max_steps=100)",
        "status": gmmjax.Status(int(result.status)).name,
        "n_steps": int(result.n_steps),
        "seconds": time.perf_counter() - start,
    }
    g = result.gmm
    return x, (g.weights, g.means, g.covariances), fit


def digits():
    """The digits and scikit-learn's full-covariance fit with 10 components."""
    from sklearn.datasets import load_digits
    from sklearn.mixture import GaussianMixture

    x = load_digits().data.astype(np.float64)
    start = time.perf_counter()
    gm = GaussianMixture(
        10, covariance_type="full", random_state=0, reg_covar=1e-6, tol=1e-8,
        max_iter=500,
    ).fit(x)  # fmt: skip
    fit = {
        "by": "sklearn GaussianMixture(10, 'full', random_state=0, reg_covar=1e-6, "
        "tol=1e-8, max_iter=500)",
        "converged": bool(gm.converged_),
        "n_iter": int(gm.n_iter_),
        "seconds": time.perf_counter() - start,
    }
    return x, (gm.weights_, gm.means_, gm.covariances_), fit


def source_digest():
    """The first 16 hex digits of the digest of gmmjax's source files."""
    return _source_digest()[:16]


def routes_child(path, method, repeats):
    """One measured process: load data and model, then time ``diagnose``."""
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **kw: (
            compiles.append(secs)
            if event == "/jax/core/compile/backend_compile_duration"
            else None
        )
    )
    # the library's source as this process read it (it may change between runs)
    digest = source_digest()
    data = np.load(path)
    x = jax.device_put(data["x"])
    gmm = gmmjax.GMM.from_natural(data["weights"], data["means"], data["covariances"])
    jax.block_until_ready((x, gmm))
    assert x.dtype == jnp.float64
    setup = proc_status()
    maxrss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak_reset = reset_peak()
    n_setup = len(compiles)

    def call():
        d = gmmjax.diagnose(gmm, x, method=method)
        jax.block_until_ready(d.eigenvalues)
        return d

    start = time.perf_counter()
    d = call()
    cold = time.perf_counter() - start
    n_cold = len(compiles)
    cold_peak = proc_status()["VmHWM"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    end = proc_status()
    vals = np.asarray(d.eigenvalues)
    return {
        "cold_s": cold,
        "warm_s": statistics.median(times) if times else None,
        "warm_times_s": times,
        "compilations_setup": n_setup,
        "compilations_cold": n_cold - n_setup,
        "compile_seconds_cold": sum(compiles[n_setup:n_cold]),
        "compilations_warm": len(compiles) - n_cold,
        "rss_before_gib": setup["VmRSS"] / GIB,
        "peak_gib": end["VmHWM"] / GIB,
        "peak_cold_gib": cold_peak / GIB,
        "peak_is_since_setup": peak_reset,
        "ru_maxrss_setup_gib": maxrss_setup / GIB,
        "ru_maxrss_end_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        * 1024
        / GIB,
        "kind": d.kind,
        "n_eigenvalues": int(vals.size),
        "top_eigenvalues": [float(v) for v in vals[::-1][:3]],
        "predicted_gain": float(d.predicted_gain),
        "gradient_norm": float(d.gradient_norm),
        "gmmjax_source_digest": digest,
        "jax_compilation_cache_dir": jax.config.jax_compilation_cache_dir,
        "gmmjax_cache_dir": os.environ.get("GMMJAX_CACHE_DIR"),
        "jax_enable_x64": bool(jax.config.jax_enable_x64),
    }


def measure(path, method, repeats):
    """``routes_child`` in a fresh process; a failure is recorded, not raised."""
    load_before = load_average()
    args = ["--routes-child", str(path), method, str(repeats)]
    try:
        out = run_script(__file__, args, env=CHILD_ENV, timeout=CHILD_TIMEOUT_S)
    except RuntimeError as error:
        out = {"error": str(error)[-1500:]}
    except subprocess.TimeoutExpired:
        out = {"error": f"killed after {CHILD_TIMEOUT_S} s"}
    out["load_average_before"] = load_before
    out["load_average_after"] = load_average()
    return out


def crossover(records):
    """Where the cold times of the two routes cross, from the problems with both:
    the largest p where dense was faster and the smallest where it was slower."""
    pairs = {}
    for r in records:
        if "cold_s" in r:
            pairs.setdefault(r["p"], {})[r["route"]] = r["cold_s"]
    both = sorted((p, t) for p, t in pairs.items() if len(t) == 2)
    dense_wins = [p for p, t in both if t["dense"] < t["lanczos"]]
    lanczos_wins = [p for p, t in both if t["dense"] >= t["lanczos"]]
    return {
        "cold_s_by_p": {str(p): t for p, t in both},
        "largest_p_dense_faster": max(dense_wins, default=None),
        "smallest_p_lanczos_faster": min(lanczos_wins, default=None),
        "dense_max_parameters": DENSE_MAX_PARAMETERS,
        "note": "the crossover lies between these p: only the measured sizes",
    }


def main_routes():
    os.environ["GMMJAX_CACHE_DIR"] = "off"  # the fits of this process, too
    out = {
        "what": "gmmjax.diagnose on its dense and matrix-free (lanczos) routes",
        "dtype": "float64",
        "environment": CHILD_ENV,
        "warm_repeats": WARM_REPEATS,
        "dense_max_parameters": DENSE_MAX_PARAMETERS,
        # diagnose compiles with XLA's quick options up to this n * p
        "quick_max_work": QUICK_MAX_WORK,
        "gmmjax_source_digest_at_start": source_digest(),
        "machine": machine_info("scikit-learn"),
        "problems": [],
        "results": [],
    }
    out["machine"]["available_gib_at_start"] = available_gib()
    with tempfile.TemporaryDirectory() as tmp:
        for name, k, d, n in ROUTE_PROBLEMS:
            x, (weights, means, cov), fit = (
                digits() if name == "digits" else blobs(k, d, n)
            )
            p = n_parameters(k, d)
            key = f"{name}-{k}-{d}-{n}"
            path = Path(tmp) / f"{key}.npz"
            np.savez(path, x=x, weights=weights, means=means, covariances=cov)
            auto = "dense" if p <= DENSE_MAX_PARAMETERS else "lanczos"
            out["problems"].append(
                {"problem": key, "k": k, "d": d, "n": n, "p": p, "fit": fit}
            )
            dense_gib = 4 * p * p * 8 / GIB
            available = available_gib()
            for route in ("dense", "lanczos"):
                record = {"problem": key, "k": k, "d": d, "n": n, "p": p}
                record |= {"route": route, "auto_route": auto == route}
                record["quick_compile"] = n * p <= QUICK_MAX_WORK
                if route == "dense" and p > DENSE_PLAN_MAX:
                    record["skipped"] = (
                        f"matrix-free only: p = {p} > {DENSE_PLAN_MAX}; dense needs "
                        f"{dense_gib:.1f} GiB (4 p^2 doubles) and an O(p^3) eigh"
                    )
                elif route == "dense" and available and dense_gib > 0.5 * available:
                    record["skipped"] = (
                        f"dense needs {dense_gib:.1f} GiB (4 p^2 doubles), more "
                        f"than half of the {available:.1f} GiB available"
                    )
                else:
                    record |= measure(path, route, WARM_REPEATS)
                out["results"].append(record)
                print(summary_line(record), flush=True)
    out["machine"]["load_average_at_end"] = load_average()
    _source_digest.cache_clear()
    out["gmmjax_source_digest_at_end"] = source_digest()
    out["crossover"] = crossover(out["results"])
    out["targets"] = targets(out["results"])
    path = Path(__file__).parent / "results" / "hessian_routes.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"crossover": out["crossover"], "targets": out["targets"]}))
    print(f"-> {path}")


def targets(records):
    found = []
    for what, key, route, seconds, gib in TARGETS:
        rec = next(
            (
                r
                for r in records
                if r["problem"] == key
                and (r["auto_route"] if route == "auto" else r["route"] == route)
            ),
            None,
        )
        if rec is None or "cold_s" not in rec:
            found.append({"target": what, "met": None, "why": "not measured"})
            continue
        met = rec["cold_s"] <= seconds and (gib is None or rec["peak_gib"] <= gib)
        found.append(
            {
                "target": what,
                "route": rec["route"],
                "cold_s": rec["cold_s"],
                "warm_s": rec["warm_s"],
                "peak_gib": rec["peak_gib"],
                "met": met,
                "load_average_before": rec["load_average_before"],
            }
        )
    return found


def summary_line(r):
    head = f"p={r['p']:6d} {r['problem']:18s} {r['route']:7s}"
    if "skipped" in r:
        return f"{head} skipped: {r['skipped']}"
    if "error" in r:
        return f"{head} FAILED: {r['error'][-300:]}"
    return (
        f"{head} cold {r['cold_s']:8.2f} s  warm {r['warm_s']:8.2f} s  "
        f"peak {r['peak_gib']:5.2f} GiB  {r['kind']:12s} "
        f"m={r['n_eigenvalues']:5d}  top {r['top_eigenvalues'][0]:.3g}  "
        f"load {r['load_average_before'][0]:.2f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--routes",
        action="store_true",
        help="gmmjax.diagnose's dense and matrix-free routes "
        "(-> results/hessian_routes.json) instead of the Hessian strategies",
    )
    parser.add_argument("--routes-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.routes_child:
        path, method, repeats = args.routes_child
        print(json.dumps(routes_child(path, method, int(repeats))))
    elif args.routes:
        main_routes()
    else:
        main_strategies()


if __name__ == "__main__":
    main()
