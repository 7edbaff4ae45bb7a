"""Peak memory of out-of-core EM (gmmjax.fit_em_chunked) on a file larger than a budget.

Writes an ``(rows, features)`` float64 ``.npy`` file chunk by chunk to a temporary
directory (default 10^7 x 8 = 640 MB), then fits it in fresh child processes, so each
process's peak resident memory belongs to one run:

- ``memmap``: ``np.load(path, mmap_mode="r")`` passed to ``fit_em_chunked``.
- ``stream``: a callable reading blocks with ``np.fromfile`` (no mapping at all).
- ``in_memory``: the reference, ``gmmjax.fit(gmmjax.EM(), ...)`` on the first
  ``--ref-rows`` rows loaded into memory, next to ``fit_em_chunked`` on the same
  rows in the same process (time per EM pass of both).

Each child reports the kernel's peak resident set (``VmHWM``) and, sampled every
10 ms by a thread, the peak anonymous memory (``RssAnon``: what the process itself
allocated) and file-backed memory (``RssFile``: pages of a mapped file, clean and
reclaimable by the kernel at any time), all as growth over the process after
importing and warming up JAX. Results go to ``benchmarks/results/chunked.json``.

Usage: ``python benchmarks/chunked_benchmark.py [--rows N] [--quick]``.
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
RESULTS = ROOT / "benchmarks" / "results" / "chunked.json"


def child(args) -> dict:
    """One measurement in this (fresh) process; returns a JSON-able dict."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import gmmjax

    data = np.load(args.path, mmap_mode="r")
    rows, d = data.shape
    head = np.array(data[: min(rows, 20_000)])
    gmm0 = gmmjax.init_gmm(jax.random.key(0), head, n_components=args.components)
    # warm-up: compile the chunk function on data of the chunk's shape
    gmmjax.fit_em_chunked(gmm0, head, chunk_size=args.chunk_size, max_steps=1)
    base = proc_status()
    out = {"mode": args.mode, "rows": rows}
    with PeakSampler() as sampler:
        start = time.perf_counter()
        if args.mode == "memmap":
            res = gmmjax.fit_em_chunked(
                gmm0, data, chunk_size=args.chunk_size, max_steps=args.steps, tol=0.0
            )
        elif args.mode == "stream":
            with open(args.path, "rb") as f:
                np.lib.format.read_magic(f)
                np.lib.format.read_array_header_1_0(f)
                offset = f.tell()
            block = args.chunk_size

            def stream():
                with open(args.path, "rb") as f:
                    f.seek(offset)
                    for _ in range(0, rows, block):
                        yield np.fromfile(f, "<f8", count=block * d).reshape(-1, d)

            res = gmmjax.fit_em_chunked(
                gmm0, stream, chunk_size=args.chunk_size, max_steps=args.steps, tol=0.0
            )
        else:  # in_memory reference next to the chunked fit, same rows
            x = np.array(data[: args.ref_rows])
            out["rows"] = len(x)
            xj = jax.device_put(x)
            ref = gmmjax.fit(gmmjax.EM(), gmm0, xj, max_steps=1, tol=0.0)  # compile
            jax.block_until_ready(ref)
            times = {"in_memory": [], "chunked": []}
            for _ in range(args.repeats):
                t = time.perf_counter()
                ref = gmmjax.fit(gmmjax.EM(), gmm0, xj, max_steps=args.steps, tol=0.0)
                jax.block_until_ready(ref)
                times["in_memory"].append(time.perf_counter() - t)
                t = time.perf_counter()
                res = gmmjax.fit_em_chunked(
                    gmm0, x, chunk_size=args.chunk_size, max_steps=args.steps, tol=0.0
                )
                jax.block_until_ready(res)
                times["chunked"].append(time.perf_counter() - t)
            # fit: steps passes + the final log-likelihood; chunked: one pass more
            out["seconds_per_pass"] = {
                "in_memory": float(np.median(times["in_memory"])) / (args.steps + 1),
                "chunked": float(np.median(times["chunked"])) / (args.steps + 2),
            }
            out["max_abs_diff_means"] = float(
                np.max(np.abs(np.asarray(ref.gmm.means) - np.asarray(res.gmm.means)))
            )
            out["ll_rel_diff"] = float(
                abs(ref.log_likelihood - res.log_likelihood) / abs(ref.log_likelihood)
            )
        jax.block_until_ready(res)
        elapsed = time.perf_counter() - start
    end = proc_status()
    out.update(
        {
            "status": res.status_name,
            "n_steps": int(res.n_steps),
            "mean_log_likelihood": float(res.log_likelihood) / out["rows"],
            "seconds": elapsed,
            "peak_rss_growth_mb": (end["VmHWM"] - base["VmRSS"]) / MB,
            "peak_anon_growth_mb": (sampler.peak["RssAnon"] - base["RssAnon"]) / MB,
            "peak_file_backed_growth_mb": (sampler.peak["RssFile"] - base["RssFile"])
            / MB,
            "baseline_rss_mb": base["VmRSS"] / MB,
        }
    )
    if args.mode != "in_memory":
        out["seconds_per_pass"] = elapsed / (args.steps + 2)
    return out


def run_child(args, mode: str, path: pathlib.Path) -> dict:
    cmd = [
        "--child",
        "--mode",
        mode,
        "--path",
        str(path),
        "--chunk-size",
        str(args.chunk_size),
        "--components",
        str(args.components),
        "--steps",
        str(args.steps),
        "--ref-rows",
        str(args.ref_rows),
        "--repeats",
        str(args.repeats),
    ]
    return run_script(__file__, cmd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--components", type=int, default=4)
    parser.add_argument("--chunk-size", type=int, default=16_384)
    parser.add_argument("--steps", type=int, default=3, help="EM passes (tol=0)")
    parser.add_argument("--budget-mb", type=float, default=256.0)
    parser.add_argument("--ref-rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.quick:
        args.rows, args.chunk_size, args.budget_mb = 1_500_000, 8192, 64.0
        args.ref_rows, args.steps, args.repeats = 100_000, 2, 1
    args.ref_rows = min(args.ref_rows, args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "data.npy"
        t = time.perf_counter()
        write_data(path, args.rows, args.features)
        file_mb = path.stat().st_size / MB
        print(f"wrote {file_mb:.0f} MB in {time.perf_counter() - t:.1f} s", flush=True)
        runs = {}
        for mode in ("memmap", "stream", "in_memory"):
            runs[mode] = run_child(args, mode, path)
            print(mode, json.dumps(runs[mode]), flush=True)
    chunk_mb = args.chunk_size * args.features * 8 / MB
    result = {
        "benchmark": "chunked_em_peak_memory",
        "config": {
            "rows": args.rows,
            "features": args.features,
            "components": args.components,
            "covariance_type": "full",
            "chunk_size": args.chunk_size,
            "chunk_mb": chunk_mb,
            "steps": args.steps,
            "file_mb": file_mb,
            "budget_mb": args.budget_mb,
            "quick": args.quick,
        },
        "runs": runs,
        "summary": {
            "file_larger_than_budget": file_mb > args.budget_mb,
            "stream_peak_rss_within_budget": runs["stream"]["peak_rss_growth_mb"]
            < args.budget_mb,
            "memmap_peak_anon_within_budget": runs["memmap"]["peak_anon_growth_mb"]
            < args.budget_mb,
        },
        "machine": machine_info(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"]))


if __name__ == "__main__":
    main()
