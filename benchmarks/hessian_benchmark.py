"""Exact Hessian of a large mixture log-likelihood: strategies compared.

The objective is the total log-likelihood of a K=16, D=16 full-covariance mixture on
N=10,000 points in float64, as a function of the model's leaves (logits, means,
log-diagonal and off-diagonal of the precision Cholesky): p = 16 + 256 + 256 + 1920 =
2448 parameters. Strategies (all exact):

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
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from pathlib import Path

import jax
from _common import load_average, machine_info

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import gmmjax  # noqa: E402
from gmmjax import landscape  # noqa: E402
from gmmjax._density import total_log_likelihood  # noqa: E402

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


def main():
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


if __name__ == "__main__":
    main()
