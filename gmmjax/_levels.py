"""XLA's optimization level by problem size: small problems compile quicker.

A first fit of a small problem (iris, a few hundred rows) runs in microseconds a
step, so its cost is compiling the program. At XLA's backend optimization level
0 EM's loop compiles in 0.9-1.2 s instead of 1.5-2.1 s on a 2-core CPU, and its
steps run 1.5-3.5 times slower. The results are the same to rounding: only the
order of some sums changes. Level 0 is used up to :data:`QUICK_MAX_WORK` units
of work a step (see :func:`fit_work`). At that size the default level's quicker
steps pay for its longer compilation only after about 450 steps in float32 and
2,700 in float64, and later still below it
(``benchmarks/levels_benchmark.py``, ``benchmarks/results/levels.json``).
"""

from __future__ import annotations

import functools

import jax

__all__ = ["QUICK_MAX_WORK", "QUICK_OPTIONS", "ByWork", "fit_work"]

QUICK_OPTIONS = {"xla_backend_optimization_level": 0}
# samples x components x features^2 over all lanes of the batch
QUICK_MAX_WORK = 2**20


def fit_work(x, n_components: int, lanes: int = 1) -> int:
    """Work of one step of ``lanes`` fits of ``n_components`` components to
    ``x``, ``(n, d)``: ``lanes n k d^2`` (a full covariance's cost, an upper
    bound for the other types)."""
    n, d = x.shape[-2], x.shape[-1]
    return lanes * n * n_components * d * d


try:  # whether no transformation is tracing (private; JAX's range is pinned)
    from jax._src.core import trace_state_clean
except ImportError:  # a JAX without it: the default level everywhere

    def trace_state_clean() -> bool:
        return False


class ByWork:
    """``fn`` jitted twice, at XLA's default optimization and at level 0, and
    called through the one the problem's size calls for.

    ``work(*args, **kwargs)`` measures a call's problem; up to
    :data:`QUICK_MAX_WORK` it runs the level-0 program. While a transformation
    traces (whether or not the arguments are tracers: closed-over arrays are
    not) the default one is called: the outer program's compilation decides
    there, and a nested jit takes no compiler options.

    Args:
        fn: the function.
        work: its arguments' problem size.
        **jit_kwargs: ``jax.jit``'s arguments (``static_argnames``, ...).
    """

    def __init__(self, fn, work, **jit_kwargs):
        functools.update_wrapper(self, fn)
        self._work = work
        self._default = jax.jit(fn, **jit_kwargs)
        self._quick = jax.jit(fn, compiler_options=QUICK_OPTIONS, **jit_kwargs)

    def options(self, *args, **kwargs) -> dict | None:
        """The compiler options of the program for these arguments."""
        if not trace_state_clean() or self._work(*args, **kwargs) > QUICK_MAX_WORK:
            return None
        return QUICK_OPTIONS

    def program(self, *args, **kwargs):
        """The jitted function that runs these arguments."""
        return self._default if self.options(*args, **kwargs) is None else self._quick

    def __call__(self, *args, **kwargs):
        return self.program(*args, **kwargs)(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self.program(*args, **kwargs).lower(*args, **kwargs)

    def _cache_size(self) -> int:
        return self._default._cache_size() + self._quick._cache_size()
