"""XLA's compiler options for EM's loop: compile time against step time by size.

gmmjax compiles small problems with quick options (``gmmjax._levels``: XLA's
backend optimization level 0 and, on the CPU, its classic emitters): the
compilation is quicker and the code slower. This script measures both sides for
EM's driver (full covariances, float32 and float64) at sizes around the
threshold, the work of a step being ``n k d^2``: the seconds each set of options
spends compiling the loop, its time per step (median of repeats after a warm-up
run), and the number of steps after which the default options' quicker steps
have paid for their longer compilation.

Usage::

    python benchmarks/levels_benchmark.py [--repeats 5]

Writes ``benchmarks/results/levels.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import numpy as np
from _common import machine_info

import gmmjax
from gmmjax import _fit
from gmmjax._levels import QUICK_MAX_WORK, fit_work, quick_options

RESULTS = Path(__file__).parent / "results"
K, D = 4, 8
STEPS = 20
# n = 2^e rows: work n k d^2 = 2^(e + 8)
ROW_EXPONENTS = (8, 10, 12, 14, 16, 18)


def _data(n: int, dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=4.0, size=(K, D))
    return (centers[rng.integers(0, K, n)] + rng.normal(size=(n, D))).astype(dtype)


def _measure(x, options, repeats: int) -> dict:
    program = jax.jit(
        _fit.run.__wrapped__, static_argnames=("report",), compiler_options=options
    )
    gmm0 = gmmjax.GMM.from_natural(
        np.full(K, 1.0 / K), x[:K], np.broadcast_to(np.eye(D), (K, D, D))
    )
    gmm0 = jax.tree_util.tree_map(lambda a: a.astype(x.dtype), gmm0)
    # tol 0: every run takes exactly STEPS steps
    args = (gmmjax.EM(), gmm0, x, None, np.int32(STEPS), 0.0)
    start = time.perf_counter()
    compiled = program.lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return {"compile_s": compile_s, "step_s": statistics.median(times) / STEPS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    machine = machine_info("jax", "jaxlib", "numpy")
    rows = []
    for dtype in (np.float32, np.float64):
        for exponent in ROW_EXPONENTS:
            x = _data(2**exponent, dtype)
            default = _measure(x, None, args.repeats)
            quick = _measure(x, quick_options(), args.repeats)
            saved = default["compile_s"] - quick["compile_s"]
            slower = quick["step_s"] - default["step_s"]
            row = {
                "dtype": np.dtype(dtype).name,
                "n": x.shape[0],
                "k": K,
                "d": D,
                "work": fit_work(x, K),
                "quick_used": fit_work(x, K) <= QUICK_MAX_WORK,
                "default": default,
                "quick": quick,
                "break_even_steps": saved / slower if slower > 0 else None,
            }
            rows.append(row)
            even = row["break_even_steps"]
            print(
                f"{row['dtype']} n={row['n']:6d} work=2^{exponent + 8}: compile "
                f"{default['compile_s']:.2f} s / {quick['compile_s']:.2f} s (quick), "
                f"step {default['step_s'] * 1e3:.3f} / {quick['step_s'] * 1e3:.3f} ms, "
                f"break-even {'-' if even is None else f'{even:.0f}'} steps"
            )
    RESULTS.mkdir(exist_ok=True)
    record = {
        "description": "EM's driver (full, k=4, d=8) compiled with XLA's default "
        f"options and with gmmjax's quick options {quick_options()}: compile "
        f"seconds, seconds per step (median of {args.repeats} runs of {STEPS} "
        "steps), and the steps after which the default options' quicker steps pay "
        "for their longer compilation; gmmjax uses the quick options up to work "
        f"n k d^2 = {QUICK_MAX_WORK}",
        "threshold_work": QUICK_MAX_WORK,
        "results": rows,
        "machine": machine,
    }
    (RESULTS / "levels.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
