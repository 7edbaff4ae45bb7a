"""The estimator's fit as one compiled program: starts, the one driver with each
run's per-step history, the best run and its attributes."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._fit import FitResult, Status, inner_objective, run, total_weight
from ._gmm import GMM
from ._init import ResponsibilityStart, init_gmm_jit, init_responsibilities
from ._levels import ByWork, fit_work
from ._multistart import best_index, start_keys

__all__ = ["EstimatorFit", "fit_best", "history_capacity"]


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

    @property
    def objective(self):
        """The inner fitter's ``objective`` read at the inner state, or ``None``
        when it has none (see :func:`gmmjax._fit.inner_objective`)."""
        return inner_objective(self.inner)


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


class EstimatorFit(NamedTuple):
    """What one estimator fit returns: every run, and the best one's attributes.

    Attributes:
        runs: the ``(b,)`` batched :class:`gmmjax.FitResult` of every run (padding
            runs included: the first ``n_init`` are the real ones).
        histories: ``(b, capacity)`` mean log-likelihood each step started from
            (each step's mean objective, for a fitter with an ``objective``).
        best: ``()`` index of the chosen run.
        state: the chosen run's final fitter state (a variational fitter's
            posterior beside its model).
        gmm: the chosen run's :class:`GMM`.
        weights, means, covariances, precisions, precisions_cholesky: its
            parameters in scikit-learn's conventions.
    """

    runs: FitResult
    histories: jax.Array
    best: jax.Array
    state: Any
    gmm: GMM
    weights: jax.Array
    means: jax.Array
    covariances: jax.Array
    precisions: jax.Array
    precisions_cholesky: jax.Array


def _map(f, batch):
    """``jax.vmap(f)(batch)``; one lane runs unbatched (a batched loop would
    compile a select for every carried value)."""
    if jax.tree_util.tree_leaves(batch)[0].shape[0] != 1:
        return jax.vmap(f)(batch)
    out = f(jax.tree_util.tree_map(lambda a: a[0], batch))
    return jax.tree_util.tree_map(lambda a: a[None], out)


def _starting_models(seed, x, w, reg_covar, n_active, inits, spec, n_runs):
    """``(n_runs, ...)`` starts: initializations (start ``i`` from
    ``fold_in(key(seed), i)``, the first ``n_active`` components active when it
    is given) with the given ``inits`` in place of theirs, or the given model
    alone (``b = 1``) when all three are given. With a ``"responsibilities"``
    spec the starts are the initializations' responsibilities themselves
    (:class:`gmmjax.ResponsibilityStart`), for a fitter that starts from them."""
    weights, means, prec_chol = inits
    k, ctype, method, kind = spec
    if weights is not None and means is not None and prec_chol is not None:
        given = GMM.from_precisions_cholesky(
            weights, means, prec_chol, covariance_type=ctype
        )
        return jax.tree_util.tree_map(lambda a: a[None], given)
    keys = start_keys(jax.random.key(seed), n_runs)
    if kind == "responsibilities":

        def responsibilities(key):
            resp = init_responsibilities(
                key, x, w, n_active, n_components=k, method=method
            )
            return ResponsibilityStart(resp)

        return _map(responsibilities, keys)

    def one(key):
        return init_gmm_jit(
            key,
            x,
            w,
            reg_covar,
            n_active,
            n_components=k,
            covariance_type=ctype,
            method=method,
        )

    gmm0s = _map(one, keys)

    def tile(a):
        return jnp.broadcast_to(a, (n_runs, *a.shape))

    logits = gmm0s.logits if weights is None else tile(jnp.log(weights))
    mu = gmm0s.means if means is None else tile(means)
    log_diag, off_diag = gmm0s.log_diag, gmm0s.off_diag
    if prec_chol is not None:
        given = GMM.from_precisions_cholesky(
            jnp.full(k, 1.0 / k, x.dtype),
            jnp.zeros((k, x.shape[1]), x.dtype),
            prec_chol,
            covariance_type=ctype,
        )
        log_diag = tile(given.log_diag)
        off_diag = None if given.off_diag is None else tile(given.off_diag)
    return GMM(logits, mu, log_diag, off_diag, ctype)


@functools.partial(
    ByWork,
    work=lambda fitter, gmm0s, seed, x, *_, spec, n_runs, **__: fit_work(
        x, spec[0], n_runs
    ),
    static_argnames=("spec", "n_runs", "capacity"),
)
def fit_best(
    fitter,
    gmm0s,
    seed,
    x,
    w,
    inits,
    n_init,
    max_steps,
    tol,
    reg_covar,
    n_active=None,
    previous=None,
    *,
    spec,
    n_runs,
    capacity,
):
    """The estimator's whole fit, one program per kind of problem.

    Args:
        fitter: the fitter of every run.
        gmm0s: ``(b, ...)`` starts that the fitter's ``init`` takes (a warm
            start's model or state), or ``None`` to start from
            initializations.
        seed: ``()`` integer seed of the initializations' key.
        x: ``(n, d)`` data (padded rows allowed, with weight 0).
        w: ``(n,)`` sample weights.
        inits: ``(weights, means, precisions_cholesky)`` given initial values, each
            ``None`` when not given.
        n_init: ``()`` the number of real runs; runs past it (padding of the
            restarts' bucket) never win.
        max_steps, tol: the driver's budget and tolerance (traced).
        reg_covar: ``reg_covar`` of the initializations (traced).
        n_active: ``()`` int (traced), or ``None``: only the first ``n_active``
            of the ``n_components`` components are fitted, the others masked
            (weight 0, frozen; see ``gmmjax._init.init_gmm_jit``), so one program
            serves every ``n_active``. Only for starts from initializations and
            a fitter that masks components (:class:`gmmjax.EM`).
        previous: ``()`` mean log-likelihood (traced), or ``None``: what every
            run's first convergence test compares with (``-inf`` by default;
            a warm start's previous ``lower_bound_``, see ``gmmjax._fit.run``).
        spec: static ``(n_components, covariance_type, init method, kind)``:
            ``kind`` ``"model"`` starts from the initializations' models,
            ``"responsibilities"`` from their responsibilities.
        n_runs: static number of runs (the bucket of ``n_init``).
        capacity: static slots of each run's history (:func:`history_capacity`).

    Returns:
        :class:`EstimatorFit`; the chosen run is the best by
        :attr:`gmmjax.FitResult.objective` (the log-likelihood of maximum
        likelihood EM).
    """
    if gmm0s is None:
        gmm0s = _starting_models(seed, x, w, reg_covar, n_active, inits, spec, n_runs)
    recording = _Recording(fitter, capacity)

    def one(gmm0):
        result, state = run(recording, gmm0, x, w, max_steps, tol, previous=previous)
        return result, state.history, state.inner

    runs, histories, states = _map(one, gmm0s)
    real = jnp.arange(runs.status.shape[0]) < n_init
    objective = jnp.where(real, runs.objective, -jnp.inf)
    status = jnp.where(real, runs.status, Status.NONFINITE)
    best = best_index(objective, status)
    state = jax.tree_util.tree_map(lambda a: a[best], states)
    gmm = state.gmm
    return EstimatorFit(
        runs,
        histories,
        best,
        state,
        gmm,
        gmm.weights,
        gmm.means,
        gmm.covariances,
        gmm.precisions,
        gmm.precisions_cholesky,
    )


# a thousand steps of history cost 8 KB a restart; every max_iter up to it
# shares one compiled program
_MIN_CAPACITY = 1024


def history_capacity(max_iter: int) -> int:
    """The history's slots: the next power of two >= ``max_iter``, at least
    ``_MIN_CAPACITY``."""
    return max(_MIN_CAPACITY, 1 << max(max_iter - 1, 0).bit_length())
