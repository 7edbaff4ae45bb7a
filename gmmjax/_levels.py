"""XLA's compiler options by problem size: small problems compile quicker.

A first fit of a small problem (iris, a few hundred rows) runs in microseconds a
step, so its cost is compiling the program. Small problems are compiled with
:func:`quick_options`: XLA's backend optimization level 0 and, on the CPU,
XLA's classic loop emitters in place of its MLIR fusion emitters (which take
about twice as long to compile). EM's loop then compiles in 0.5-0.9 s instead
of 1.3-2.1 s on a 2-core CPU, and its steps run 1.5-3 times slower. The results
are the same to rounding: only the order of some sums and the code of some
elementary functions change. The quick options are used up to
:data:`QUICK_MAX_WORK` units of work a step (see :func:`fit_work`): there the
default options' quicker steps pay for their longer compilation only
after 1,000-2,000 steps (``benchmarks/levels_benchmark.py``,
``benchmarks/results/levels.json``). Above it they pay sooner, and sooner still
for many lanes run together: 1,000 restarts of 200 rows (2.4 x 2^20) run 100
steps 4-5 times slower with the quick options, which would cost more than
their compilation saves.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["QUICK_MAX_WORK", "ByWork", "fit_work", "quick_options"]

_LEVEL_0 = {"xla_backend_optimization_level": 0}
_CLASSIC_EMITTERS = {"xla_cpu_use_fusion_emitters": False}
# samples x components x features^2 over all lanes of the batch
QUICK_MAX_WORK = 2**20


def fit_work(x, n_components: int, lanes: int = 1) -> int:
    """Work of one step of ``lanes`` fits of ``n_components`` components to
    ``x``, ``(n, d)``: ``lanes n k d^2`` (a full covariance's cost, an upper
    bound for the other types)."""
    n, d = x.shape[-2], x.shape[-1]
    return lanes * n * n_components * d * d


@functools.cache
def quick_options() -> dict:
    """The compiler options of small problems: XLA's optimization level 0, and on
    the CPU its classic emitters when this jaxlib has the option (checked once,
    by compiling a one-line program)."""
    if jax.default_backend() != "cpu":
        return dict(_LEVEL_0)
    options = {**_LEVEL_0, **_CLASSIC_EMITTERS}
    try:
        jax.jit(jnp.negative, compiler_options=options).lower(np.int32(0)).compile()
    except Exception:  # an XLA without the option: level 0 alone
        return dict(_LEVEL_0)
    return options


try:  # whether no transformation is tracing (private; JAX's range is pinned)
    from jax._src.core import trace_state_clean
except ImportError:  # a JAX without it: the default level everywhere

    def trace_state_clean() -> bool:
        return False


class ByWork:
    """``fn`` jitted twice, with XLA's default options and with
    :func:`quick_options`, and called through the one the problem's size calls
    for.

    ``work(*args, **kwargs)`` measures a call's problem; up to
    :data:`QUICK_MAX_WORK` it runs the program compiled with
    :func:`quick_options`. While a transformation traces (whether or not the
    arguments are tracers: closed-over arrays are not) the default one is
    called: the outer program's compilation decides there, and a nested jit
    takes no compiler options.

    Args:
        fn: the function.
        work: its arguments' problem size.
        **jit_kwargs: ``jax.jit``'s arguments (``static_argnames``, ...).
    """

    def __init__(self, fn, work, **jit_kwargs):
        functools.update_wrapper(self, fn)
        self._work = work
        self._jit_kwargs = jit_kwargs
        self._default = jax.jit(fn, **jit_kwargs)

    @functools.cached_property
    def _quick(self):
        # jitted on first use: the options are known once JAX has a backend
        return jax.jit(
            self.__wrapped__, compiler_options=quick_options(), **self._jit_kwargs
        )

    def options(self, *args, **kwargs) -> dict | None:
        """The compiler options of the program for these arguments."""
        if not trace_state_clean() or self._work(*args, **kwargs) > QUICK_MAX_WORK:
            return None
        return quick_options()

    def program(self, *args, **kwargs):
        """The jitted function that runs these arguments."""
        return self._default if self.options(*args, **kwargs) is None else self._quick

    def __call__(self, *args, **kwargs):
        return self.program(*args, **kwargs)(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self.program(*args, **kwargs).lower(*args, **kwargs)

    def _cache_size(self) -> int:
        quick = self.__dict__.get("_quick")
        return self._default._cache_size() + (quick._cache_size() if quick else 0)
