"""Stepwise (mini-batch) EM of the estimator against full-batch EM on a file of
10^7 rows: the final mean log-likelihood, and peak memory bounded by the batch.

Writes a ``(rows, features)`` float64 ``.npy`` file (default 10^7 x 8 = 610 MB; a
4-component mixture whose components overlap) to a temporary directory. Every
run starts from the same model (k-means on the first batch) and is measured in a
fresh child process, so its peak memory is its own:

- ``full_batch``: exact EM to ``--ref-tol`` (``gmmjax.fit_em_chunked``: EM's steps
  on the whole data set, summed chunk by chunk, equal to ``gmmjax.fit`` up to
  the order of the sums; holding 10^7 rows and their responsibilities in memory
  would take gigabytes).
- ``partial_fit``: ``GaussianMixture.partial_fit`` over minibatches of
  ``--batch-size`` rows read from the file with ``np.fromfile`` (nothing mapped),
  ``--epochs`` passes; also on the first tenth of the rows, to show that the
  peak does not grow with the data (its fit, with a tenth of the updates, is
  not compared).
- ``batch_size``: ``GaussianMixture(batch_size=...).fit`` on
  ``np.load(path, mmap_mode="r")`` (contiguous blocks in random order), up to
  ``--epochs`` epochs; in float64, and in float32 on a float32 copy of the file.

The final model of every run is scored by one exact pass over all rows.
Memory is reported as growth over the process after importing and warming up
JAX: anonymous memory (``RssAnon``, what the process allocated, sampled every
10 ms) and the kernel's peak resident set (``VmHWM``, which for a memmap also
counts clean, reclaimable file pages). Results go to
``benchmarks/results/minibatch.json``.

Usage: ``python benchmarks/minibatch_benchmark.py [--rows N] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

import numpy as np
from _common import machine_info
from _memory import MB, PeakSampler, proc_status, run_script, write_data

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "minibatch.json"


def _blocks(path: str, rows: int, d: int, size: int, dtype: str):
    """The file's rows in blocks of ``size``, read with ``np.fromfile``."""
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        for start in range(0, rows, size):
            count = min(size, rows - start) * d
            yield np.fromfile(f, dtype, count=count).reshape(-1, d)


def child(args) -> dict:
    """One run in this (fresh) process; returns a JSON-able dict."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import gmmjax
    from gmmjax.sklearn import GaussianMixture

    data = np.load(args.path, mmap_mode="r")
    all_rows, d = data.shape
    rows = all_rows // 10 if args.tenth else all_rows
    head = np.array(data[: args.batch_size])
    # the same start for every run, in the file's dtype
    with jax.enable_x64(True):
        gmm0 = gmmjax.init_gmm(
            jax.random.key(0), head.astype(np.float64), n_components=args.components
        )
    gmm0 = jax.tree_util.tree_map(lambda a: np.asarray(a, data.dtype), gmm0)
    inits = {
        "weights_init": np.asarray(gmm0.weights),
        "means_init": np.asarray(gmm0.means),
        "precisions_init": np.asarray(gmm0.precisions),
    }
    kw = dict(n_components=args.components, tol=args.tol, **inits)

    def new_model(**extra):
        return GaussianMixture(**kw, **extra)

    def stream(rows=rows):
        return _blocks(args.path, rows, d, args.batch_size, data.dtype.str)

    # warm-up: compile this run's programs on the first batch
    if args.mode == "full_batch":
        gmmjax.fit_em_chunked(gmm0, head, chunk_size=args.batch_size, max_steps=1)
    elif args.mode == "batch_size":
        new_model(batch_size=args.batch_size, max_iter=1).fit(head)
    else:
        new_model().partial_fit(head)
    base = proc_status()
    out = {"mode": args.mode, "rows": rows, "dtype": data.dtype.name}
    with PeakSampler() as sampler:
        start = time.perf_counter()
        if args.mode == "full_batch":
            res = gmmjax.fit_em_chunked(
                gmm0,
                data,
                chunk_size=args.batch_size,
                max_steps=args.ref_max_steps,
                tol=args.ref_tol,
            )
            out.update(status=res.status_name, n_steps=int(res.n_steps))
            gmm = res.gmm
        elif args.mode == "batch_size":
            gm = new_model(
                batch_size=args.batch_size, max_iter=args.epochs, random_state=0
            )
            gm.fit(data)
            out.update(
                status=gm.status_,
                epochs=gm.n_iter_,
                epoch_bounds=[float(b) for b in gm.lower_bounds_],
            )
            gmm = gm.gmm_
        else:
            gm = new_model()
            updates = 0
            for _ in range(args.epochs):
                for x in stream():
                    gm.partial_fit(x)
                    updates += 1
            out.update(
                updates=updates,
                epochs=args.epochs,
                converged=bool(gm.converged_),
                running_bound=float(gm.lower_bound_),
            )
            gmm = gm.gmm_
        elapsed = time.perf_counter() - start
    end = proc_status()
    # one exact pass over all rows scores the final model (not timed)
    with jax.enable_x64(True):
        gmm64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), gmm)
        scored = gmmjax.fit_em_chunked(
            gmm64,
            lambda: (x.astype(np.float64) for x in stream(all_rows)),
            chunk_size=args.batch_size,
            max_steps=0,
        )
    out.update(
        {
            "mean_log_likelihood": float(scored.log_likelihood) / all_rows,
            "seconds": elapsed,
            "peak_anon_growth_mb": (sampler.peak["RssAnon"] - base["RssAnon"]) / MB,
            "peak_rss_growth_mb": (end["VmHWM"] - base["VmRSS"]) / MB,
            "baseline_rss_mb": base["VmRSS"] / MB,
        }
    )
    return out


def run_child(args, mode: str, path: pathlib.Path, tenth: bool = False) -> dict:
    cmd = ["--child", "--mode", mode, "--path", str(path)]
    cmd += ["--tenth"] if tenth else []
    for name in (
        "batch_size",
        "components",
        "epochs",
        "tol",
        "ref_tol",
        "ref_max_steps",
    ):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return run_script(__file__, cmd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--components", type=int, default=4)
    parser.add_argument(
        "--spread",
        type=float,
        default=1.5,
        help="standard deviation of the centers (1.5: overlapping components, "
        "which full-batch EM takes about 20 steps to fit from the start)",
    )
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--ref-tol", type=float, default=1e-8)
    parser.add_argument("--ref-max-steps", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--tenth", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.quick:
        args.rows, args.batch_size, args.epochs = 500_000, 10_000, 2
    info = machine_info("scikit-learn")
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "data.npy"
        t = time.perf_counter()
        write_data(path, args.rows, args.features, spread=args.spread)
        print(f"wrote the data in {time.perf_counter() - t:.1f} s", flush=True)
        path32 = pathlib.Path(tmp) / "data32.npy"
        data = np.load(path, mmap_mode="r")
        copy = np.lib.format.open_memmap(path32, "w+", np.float32, data.shape)
        for start in range(0, args.rows, 1_000_000):
            copy[start : start + 1_000_000] = data[start : start + 1_000_000]
        copy.flush()
        del copy, data
        runs = {}
        for name, mode, file in (
            ("full_batch", "full_batch", path),
            ("partial_fit", "partial_fit", path),
            ("partial_fit_tenth_of_rows", "partial_fit", path),
            ("batch_size", "batch_size", path),
            ("batch_size_float32", "batch_size", path32),
        ):
            runs[name] = run_child(args, mode, file, tenth="tenth" in name)
            print(name, json.dumps(runs[name]), flush=True)
    reference = runs["full_batch"]["mean_log_likelihood"]
    batch_mb = args.batch_size * args.features * 8 / MB
    summary = {
        name: {
            "mean_log_likelihood_below_full_batch": reference
            - run["mean_log_likelihood"],
            "within_1e-3": abs(reference - run["mean_log_likelihood"]) < 1e-3,
            "peak_anon_growth_over_batch": run["peak_anon_growth_mb"] / batch_mb,
        }
        for name, run in runs.items()
        if name != "full_batch"
    }
    # the tenth of the rows is there for its memory: fewer updates, another fit
    del summary["partial_fit_tenth_of_rows"]["within_1e-3"]
    result = {
        "benchmark": "minibatch_em",
        "config": {
            "rows": args.rows,
            "features": args.features,
            "components": args.components,
            "center_spread": args.spread,
            "covariance_type": "full",
            "batch_size": args.batch_size,
            "batch_mb_float64": batch_mb,
            "epochs": args.epochs,
            "tol": args.tol,
            "learning_decay": 0.6,
            "learning_offset": 1.0,
            "ref_tol": args.ref_tol,
            "file_mb": args.rows * args.features * 8 / MB,
            "quick": args.quick,
        },
        "runs": runs,
        "summary": summary,
        "machine": info,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
