"""Thousands of EM restarts at once (gmmjax.multistart) vs scikit-learn's n_init loop.

Fixed work: every restart runs exactly 100 EM steps (``tol=0``) from a
``random_from_data`` start, full covariances, float64 on both sides; gmmjax is
also timed in float32 on the same data (issue 21: float32 restarts at least as
fast as float64), the two interleaved in one process.

Cases (issue 11):
  a: 1,000 restarts of K=3, D=2, N=200
  b: 1,000 restarts of K=5, D=2, N=2,000
  c: 10,000 restarts of case a

gmmjax: one ``multistart`` call per case (initialization included), timed after a
warm-up (compilation) call, ``block_until_ready``, median of repeats.
scikit-learn: ``GaussianMixture(n_init=10, init_params="random_from_data",
max_iter=100, tol=0)`` -- its own Python loop over starts, measured in the same
process (median of repeats) and extrapolated linearly to the case's restarts.
As a sanity check, the first starts of our batch are also given to scikit-learn
(``weights_init``/``means_init``/``precisions_init``) and the final log-likelihoods
compared.

Each case runs in its own subprocess so that its peak RSS (``getrusage``) is its
own; scikit-learn's numpy peak is measured with ``tracemalloc``.

``--wine`` adds issue 21's user report: ``gmmjax.multistart(gmmjax.EM(), key,
x, n_components=3, n_init=1000)`` with every default, ``x`` the standardized wine
data in float32 (and float64), its first call (compilation included) and the
median of warm calls.

Usage: ``python benchmarks/multistart_benchmark.py [--quick] [--cases abc]
[--wine] [--out STEM]``; results go to ``benchmarks/results/multistart.json`` and
``multistart.png`` (``--quick``: a short smoke run written to
``multistart_quick.*``; ``--out``: another file stem, for a partial run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

from _common import machine_info

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

CASES = {
    "a": dict(k=3, d=2, n=200, restarts=1000),
    "b": dict(k=5, d=2, n=2000, restarts=1000),
    "c": dict(k=3, d=2, n=200, restarts=10000),
}
QUICK = {
    "a": dict(k=3, d=2, n=200, restarts=50),
    "b": dict(k=5, d=2, n=2000, restarts=20),
    "c": dict(k=3, d=2, n=200, restarts=500),
}
STEPS = 100
SKLEARN_INITS = 10


def make_data(k: int, d: int, n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    means = rng.normal(scale=4.0, size=(k, d))
    labels = rng.integers(k, size=n)
    a = rng.normal(size=(k, d, d)) / np.sqrt(d)
    chol = a + np.eye(d)
    noise = np.einsum("nde,ne->nd", chol[labels], rng.normal(size=(n, d)))
    return means[labels] + noise


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def run_case(name: str, spec: dict, repeats: int, sklearn_inits: int) -> dict:
    """Time one case in this process (meant to be a fresh subprocess)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    sys.path.insert(0, str(ROOT))
    import gmmjax
    from gmmjax._multistart import _auto_batch_size, start_keys

    k, d, n, restarts = spec["k"], spec["d"], spec["n"], spec["restarts"]
    x = make_data(k, d, n)

    # scikit-learn first (before JAX starts its thread pools): its own n_init
    # loop, same data, same fixed work. BLAS/OpenMP are held to one thread: on
    # these tiny matrices extra threads only add synchronization (measured 13x
    # slower with 2 threads on the contended 2-core machine), so this is
    # scikit-learn's fastest configuration and the ratios are conservative.
    def sklearn_loop():
        model = GaussianMixture(
            n_components=k,
            covariance_type="full",
            n_init=sklearn_inits,
            init_params="random_from_data",
            max_iter=STEPS,
            tol=0.0,
            reg_covar=1e-6,
            random_state=0,
        )
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(x)

    sklearn_loop()  # warm-up (imports, caches)
    sk_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sklearn_loop()
        sk_times.append(time.perf_counter() - t0)
    sk_time = statistics.median(sk_times)
    tracemalloc.start()
    sklearn_loop()
    _, sk_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    key = jax.random.key(0)
    fitter = gmmjax.EM(reg_covar=1e-6)
    xj = jax.numpy.asarray(x)
    x32 = jax.numpy.asarray(x, np.float32)
    jax.block_until_ready((xj, x32))
    rss_before = current_rss_bytes()

    def ours(data):
        result = gmmjax.multistart(
            fitter,
            key,
            data,
            n_components=k,
            n_init=restarts,
            init="random_from_data",
            max_steps=STEPS,
            tol=0.0,
        )
        return jax.block_until_ready(result)

    t0 = time.perf_counter()
    result = ours(xj)
    first_call = time.perf_counter() - t0
    peak_rss = peak_rss_bytes()  # float64 alone, as before float32 was timed
    t0 = time.perf_counter()
    result32 = ours(x32)
    first_call32 = time.perf_counter() - t0
    # interleaved, so that a busy machine slows both alike
    times, times32 = [], []
    for _ in range(repeats):
        for data, out in ((xj, times), (x32, times32)):
            t0 = time.perf_counter()
            ours(data)
            out.append(time.perf_counter() - t0)
    ours_time = statistics.median(times)
    ours_time32 = statistics.median(times32)
    statuses = np.bincount(np.asarray(result.status), minlength=4)
    statuses32 = np.bincount(np.asarray(result32.status), minlength=4)
    best = gmmjax.best_of(result)

    # parity on identical starts: lane i vs scikit-learn from init i
    parity = []
    for i, start_key in enumerate(start_keys(key, 3)):
        gmm0 = gmmjax.init_gmm(start_key, x, n_components=k, method="random_from_data")
        model = GaussianMixture(
            n_components=k,
            covariance_type="full",
            max_iter=STEPS,
            tol=0.0,
            reg_covar=1e-6,
            weights_init=np.asarray(gmm0.weights),
            means_init=np.asarray(gmm0.means),
            precisions_init=np.asarray(gmm0.precisions),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x)
        ours_mean_ll = float(result.log_likelihood[i]) / n
        parity.append(abs(ours_mean_ll - model.score(x)))

    sk_per_restart = sk_time / sklearn_inits
    ours_per_restart = ours_time / restarts
    # multistart's batch_size=None: restarts fitted together, in cache-sized batches
    batch = min(restarts, _auto_batch_size(n, k))
    responsibilities = batch * n * k * x.dtype.itemsize
    return {
        "case": name,
        **spec,
        "em_steps": STEPS,
        "gmmjax": {
            "seconds_median": ours_time,
            "seconds_all": times,
            "first_call_seconds_incl_compile": first_call,
            "seconds_per_restart": ours_per_restart,
            "restarts_per_second": restarts / ours_time,
            "peak_rss_bytes": peak_rss,
            "rss_before_fit_bytes": rss_before,
            "restarts_per_batch": batch,
            "one_batch_of_responsibilities_bytes": responsibilities,
            "mean_steps": float(np.mean(np.asarray(result.n_steps))),
            "status_counts": {s.name: int(statuses[s]) for s in gmmjax.Status},
            "best_mean_log_likelihood": float(best.log_likelihood) / n,
        },
        "sklearn": {
            "n_init_measured": sklearn_inits,
            "seconds_median": sk_time,
            "seconds_all": sk_times,
            "seconds_per_restart": sk_per_restart,
            "restarts_per_second": 1.0 / sk_per_restart,
            "extrapolated_seconds": sk_per_restart * restarts,
            "tracemalloc_peak_bytes": sk_peak,
            "init": "its own random_from_data (random_state=0)",
            "blas_threads": 1,
        },
        "gmmjax_float32": {
            "seconds_median": ours_time32,
            "seconds_all": times32,
            "first_call_seconds_incl_compile": first_call32,
            "seconds_per_restart": ours_time32 / restarts,
            "restarts_per_second": restarts / ours_time32,
            "mean_steps": float(np.mean(np.asarray(result32.n_steps))),
            "status_counts": {s.name: int(statuses32[s]) for s in gmmjax.Status},
            "best_mean_log_likelihood": float(gmmjax.best_of(result32).log_likelihood)
            / n,
        },
        "float32_over_float64_seconds": ours_time32 / ours_time,
        "speedup": sk_per_restart / ours_per_restart,
        "speedup_float32": sk_per_restart / (ours_time32 / restarts),
        "parity_max_abs_mean_ll_diff_identical_starts": max(parity),
    }


def run_wine(repeats: int) -> dict:
    """Issue 21's user report, timed in this process (a fresh subprocess)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from sklearn.datasets import load_wine
    from sklearn.preprocessing import StandardScaler

    sys.path.insert(0, str(ROOT))
    import gmmjax

    x = StandardScaler().fit_transform(load_wine().data)
    record = {"n_init": 1000, "n_components": 3, "n": x.shape[0], "d": x.shape[1]}
    for dtype in (np.float32, np.float64):
        data = jax.numpy.asarray(x.astype(dtype))

        def call(data=data):
            result = gmmjax.multistart(
                gmmjax.EM(), jax.random.key(0), data, n_components=3, n_init=1000
            )
            return jax.block_until_ready(result)

        t0 = time.perf_counter()
        result = call()
        first = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        statuses = np.bincount(np.asarray(result.status), minlength=4)
        record[np.dtype(dtype).name] = {
            "first_call_seconds_incl_compile": first,
            "seconds_median": statistics.median(times),
            "seconds_all": times,
            "max_steps_taken": int(np.max(np.asarray(result.n_steps))),
            "status_counts": {s.name: int(statuses[s]) for s in gmmjax.Status},
        }
    return record


def environment() -> dict:
    return {
        "machine": machine_info("scikit-learn"),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dtypes": ["float64", "float32"],
        "covariance_type": "full",
        "init": "random_from_data",
        "tol": 0.0,
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [
        f"({r['case']}) {r['restarts']:,} x K={r['k']}, N={r['n']:,}" for r in results
    ]
    ours = [r["gmmjax"]["seconds_per_restart"] * 1e3 for r in results]
    ours32 = [r["gmmjax_float32"]["seconds_per_restart"] * 1e3 for r in results]
    ref = [r["sklearn"]["seconds_per_restart"] * 1e3 for r in results]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    pos = range(len(results))
    h = 0.27
    ax.barh([p + h for p in pos], ref, height=h, label="scikit-learn n_init loop")
    ax.barh(list(pos), ours, height=h, label="gmmjax.multistart, float64")
    ax.barh([p - h for p in pos], ours32, height=h, label="gmmjax.multistart, float32")
    for p, r in zip(pos, results, strict=True):
        ax.text(ours[p], p, f" {r['speedup']:.0f}x", va="center", fontsize=8)
        ax.text(
            ours32[p], p - h, f" {r['speedup_float32']:.0f}x", va="center", fontsize=8
        )
    ax.set_yticks(list(pos), labels)
    ax.set_xscale("log")
    ax.set_xlabel(f"milliseconds per restart ({STEPS} EM steps, full covariances)")
    ax.legend(loc="lower right", fontsize=8)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats")
    parser.add_argument("--cases", default="abc", help="which cases, e.g. ab")
    parser.add_argument("--wine", action="store_true", help="issue 21's user report")
    parser.add_argument("--out", help="results file stem (default multistart)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--case-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    specs = QUICK if args.quick else CASES
    repeats = args.repeats or (1 if args.quick else 3)
    inits = 2 if args.quick else SKLEARN_INITS

    if args.case == "wine":
        Path(args.case_out).write_text(json.dumps(run_wine(repeats)))
        return 0
    if args.case:
        record = run_case(args.case, specs[args.case], repeats, inits)
        Path(args.case_out).write_text(json.dumps(record))
        return 0

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = args.out or ("multistart_quick" if args.quick else "multistart")
    results = []
    env = environment()
    extra = {}
    if args.wine:
        out = RESULTS / f".{stem}_wine.json"
        cmd = [sys.executable, __file__, "--case", "wine", "--case-out", str(out)]
        subprocess.run([*cmd, "--repeats", str(repeats)], check=True)
        extra["user_report_wine"] = json.loads(out.read_text())
        out.unlink()
        for dtype in ("float32", "float64"):
            w = extra["user_report_wine"][dtype]
            print(
                f"(wine, {dtype}) 1000 restarts, defaults: first call "
                f"{w['first_call_seconds_incl_compile']:.1f} s, warm "
                f"{w['seconds_median']:.2f} s",
                flush=True,
            )
        payload = {**env, **extra}
        (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    for name in args.cases:
        out = RESULTS / f".{stem}_{name}.json"
        cmd = [sys.executable, __file__, "--case", name, "--case-out", str(out)]
        cmd += ["--repeats", str(repeats)] + (["--quick"] if args.quick else [])
        subprocess.run(cmd, check=True)
        record = json.loads(out.read_text())
        out.unlink()
        results.append(record)
        g, s = record["gmmjax"], record["sklearn"]
        g32 = record["gmmjax_float32"]
        print(
            f"({name}) {record['restarts']} restarts K={record['k']} "
            f"N={record['n']}: gmmjax {g['seconds_median']:.3f} s "
            f"({g['restarts_per_second']:.0f} restarts/s, peak RSS "
            f"{g['peak_rss_bytes'] / 2**20:.0f} MiB), float32 "
            f"{g32['seconds_median']:.3f} s; scikit-learn "
            f"{s['seconds_per_restart'] * 1e3:.2f} ms/restart -> "
            f"{s['extrapolated_seconds']:.1f} s; speedup {record['speedup']:.1f}x "
            f"(float32 {record['speedup_float32']:.1f}x)",
            flush=True,
        )
        # written after every case, so a long run interrupted keeps what it measured
        payload = {**env, **extra, "cases": results}
        (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
        plot(results, RESULTS / f"{stem}.png")
    print(f"wrote {RESULTS / (stem + '.json')} and {stem}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
