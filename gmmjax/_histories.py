"""The estimator's fits: the one driver, with each run's per-step history."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._fit import run, total_weight
from ._gmm import GMM

__all__ = ["fit_with_histories", "history_capacity"]


@dataclasses.dataclass(frozen=True)
class _Recording:
    """A fitter wrapper whose state also records each step's mean log-likelihood.

    scikit-learn's ``lower_bounds_`` is the whole per-step history; the driver
    (``gmmjax._fit.run``) returns the final state, which holds it. The history
    has ``capacity`` slots (:func:`history_capacity`), a power of two at least
    the step budget, so budgets up to it share one compiled program.
    """

    inner: Any
    capacity: int

    def init(self, gmm, x, *, sample_weight=None):
        return _RecordingState(
            self.inner.init(gmm, x, sample_weight=sample_weight),
            jnp.zeros((self.capacity,), x.dtype),
            jnp.asarray(0, jnp.int32),
            total_weight(x, sample_weight),
        )

    def step(self, state, x, *, sample_weight=None, beta=1.0):
        inner, info = self.inner.step(
            state.inner, x, sample_weight=sample_weight, beta=beta
        )
        history = state.history.at[state.count].set(info.log_likelihood / state.total)
        return _RecordingState(inner, history, state.count + 1, state.total), info


jax.tree_util.register_dataclass(
    _Recording, data_fields=["inner"], meta_fields=["capacity"]
)


class _RecordingState(NamedTuple):
    inner: Any
    history: jax.Array  # (capacity,) mean log-likelihood each step started from
    count: jax.Array  # () int32 steps recorded
    total: jax.Array  # () total sample weight

    @property
    def gmm(self) -> GMM:
        return self.inner.gmm


@functools.partial(jax.jit, static_argnames=("capacity",))
def fit_with_histories(fitter, gmm0s, x, w, max_steps, tol, *, capacity):
    """The driver from each of a leading axis of starting models, with the
    per-step histories: ``(FitResult, (b, capacity) histories)``."""
    recording = _Recording(fitter, capacity)

    def one(gmm0):
        result, state = run(recording, gmm0, x, w, max_steps, tol)
        return result, state.history

    return jax.vmap(one)(gmm0s)


# a thousand steps of history cost 8 KB a restart; every max_iter up to it
# shares one compiled program
_MIN_CAPACITY = 1024


def history_capacity(max_iter: int) -> int:
    """The history's slots: the next power of two >= ``max_iter``, at least
    ``_MIN_CAPACITY``."""
    return max(_MIN_CAPACITY, 1 << max(max_iter - 1, 0).bit_length())
