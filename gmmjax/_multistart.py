"""Many restarts in one compiled call: ``multistart`` and ``best_of``."""

from __future__ import annotations

import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np

from ._em import EM
from ._fit import (
    FitResult,
    Status,
    check_fitter,
    check_fitter_features,
    check_steps,
    run,
)
from ._hc import hc_labels
from ._init import INIT_METHODS, init_gmm_jit
from ._levels import ByWork, fit_work
from ._prior import with_prior
from ._stored import call_stored
from ._validation import (
    check_covariance_type,
    check_data,
    check_key,
    check_nonnegative_scalar,
    check_positive_int,
    check_reg_covar,
    check_sample_weight,
)

__all__ = ["best_index", "best_of", "multistart", "multistart_masked", "start_keys"]


def start_keys(key, n_init: int, first: int = 0) -> jax.Array:
    """The keys of the starts of :func:`multistart`: start ``i`` uses
    ``jax.random.fold_in(key, i)``, so the first starts do not depend on ``n_init``
    (``first``: the keys of starts ``first`` to ``first + n_init - 1``)."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
        key, jnp.arange(first, first + n_init, dtype=jnp.uint32)
    )


class _EveryRestart:
    """The host ``report`` of a run in several batches: it gathers each batch's
    ``(b,)`` arrays into ``(n_init,)`` arrays and hands those to the user's
    ``report``, so a progress display sees every restart at every call.

    Batches run one after the other, in the order of the starts (see
    ``_map_in_order``); a batch ends with the one call in which none of its runs
    is still going, after which the next batch reports. Restarts of batches that
    have not started show 0 steps, ``-inf`` and ``running`` True. One object
    serves every call of its compiled program: it starts afresh after the last
    batch has ended.
    """

    def __init__(self, report, n_init: int, batch_size: int, dtype):
        self.report = report
        self.n_init = n_init
        self.batch_size = batch_size
        self.dtype = dtype
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        self._offset = 0
        self._n_steps = np.zeros(self.n_init, np.int32)
        self._mean_ll = np.full(self.n_init, -np.inf, self.dtype)
        self._running = np.ones(self.n_init, bool)

    def __call__(self, n_steps, mean_ll, running) -> None:
        with self._lock:
            batch = slice(self._offset, self._offset + len(n_steps))
            self._n_steps[batch] = n_steps
            self._mean_ll[batch] = mean_ll
            self._running[batch] = running
            arrays = (self._n_steps.copy(), self._mean_ll.copy(), self._running.copy())
            if not np.any(running):  # this batch has ended
                self._offset = batch.stop
                if self._offset >= self.n_init:
                    self._start()
        # outside the lock, with the state already consistent: an error in the
        # user's function cannot leave it half updated
        self.report(*arrays)


def _map_in_order(f, lanes, x, batch_size):
    """``lax.map(lambda k: f(k, x), lanes, batch_size=batch_size)`` whose
    remainder batch (when ``batch_size`` does not divide the starts) runs after
    the full batches, not beside them: the barrier makes its data depend on
    their results, so the reports of the batches arrive in order. ``lanes`` is
    a pytree of arrays with a leading axis of starts."""
    n = jax.tree_util.tree_leaves(lanes)[0].shape[0]
    n_full = n // batch_size * batch_size
    full = jax.tree_util.tree_map(
        lambda a: a[:n_full].reshape(-1, batch_size, *a.shape[1:]), lanes
    )
    _, ys = jax.lax.scan(lambda _, k: ((), jax.vmap(lambda kk: f(kk, x))(k)), (), full)
    ys = jax.tree_util.tree_map(lambda a: a.reshape(-1, *a.shape[2:]), ys)
    if n_full == n:
        return ys
    x_after, ys = jax.lax.optimization_barrier((x, ys))
    rest = jax.vmap(lambda k: f(k, x_after))(
        jax.tree_util.tree_map(lambda a: a[n_full:], lanes)
    )
    return jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a, b], axis=0), ys, rest
    )


@functools.partial(
    ByWork,
    work=lambda fitter, keys, x, *_, n_components, **__: fit_work(
        x, n_components, keys.shape[0]
    ),
    static_argnames=("n_components", "covariance_type", "init", "batch_size", "report"),
)
def _multistart(
    fitter,
    keys,
    x,
    w,
    max_steps,
    tol,
    reg_covar,
    n_active=None,
    given=None,
    priors=None,
    *,
    n_components,
    covariance_type,
    init,
    batch_size,
    report,
):
    # n_active: None, or (b,) the active components of every start (masking);
    # given: None, or a pair ((P, n) partitions, (b,) int the partition each
    # start is fitted to, -1 for its key's own start); priors: None, or a Prior with
    # a leading (b,) axis, the fitter's prior of every start
    if report is not None and batch_size is not None:
        report = _EveryRestart(report, keys.shape[0], batch_size, x.dtype)
    table, source = (None, None) if given is None else given

    def one(lane, x):
        key, active, row, prior = lane
        start = None
        if table is not None:
            # one row per start, gathered inside its batch
            start = (row >= 0, table[jnp.maximum(row, 0)])
        gmm0 = init_gmm_jit(
            key,
            x,
            w,
            reg_covar,
            active,
            start,
            n_components=n_components,
            covariance_type=covariance_type,
            method=init,
        )
        fit_with = fitter if prior is None else with_prior(fitter, prior)
        return run(fit_with, gmm0, x, w, max_steps, tol, report)[0]

    lanes = (keys, n_active, source, priors)
    if batch_size is None:
        return jax.vmap(lambda lane: one(lane, x))(lanes)
    if report is not None:
        return _map_in_order(one, lanes, x, batch_size)
    # lax.map vmaps `one` over chunks of `batch_size` starts (and the remainder),
    # so only one chunk's responsibilities (batch_size x n x k) live at once.
    return jax.lax.map(lambda lane: one(lane, x), lanes, batch_size=batch_size)


def _check_runs(
    fitter,
    key,
    x,
    n_init,
    covariance_type,
    init,
    max_steps,
    tol,
    sample_weight,
    batch_size,
    reg_covar,
):
    """The validation that :func:`multistart` and :func:`multistart_masked`
    share: ``(keys, x, w, n_init, batch_size, covariance_type)``."""
    check_fitter(fitter)
    n_init = check_positive_int(n_init, "n_init")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    covariance_type = check_covariance_type(covariance_type)
    if not isinstance(init, str) or init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}")
    x = check_data(x)
    w = check_sample_weight(sample_weight, x.shape[0], x.dtype)
    check_steps(max_steps, "max_steps")
    check_nonnegative_scalar(tol, "tol")
    check_reg_covar(reg_covar, n_features=x.shape[1])
    check_fitter_features(fitter, x.shape[1], covariance_type)
    return check_key(key), x, w, n_init, batch_size, covariance_type


def multistart(
    fitter,
    key,
    x,
    *,
    n_components: int,
    n_init: int,
    covariance_type: str = "full",
    init: str = "kmeans++",
    max_steps=500,
    tol=1e-6,
    sample_weight=None,
    batch_size: int | None = None,
    reg_covar=1e-6,
    report=None,
    hc_start: bool = True,
) -> FitResult:
    """Fit from ``n_init`` starts at once, in one compiled call.

    Start ``i`` is ``init_gmm(jax.random.fold_in(key, i), x, ..., reg_covar=
    reg_covar)``, except that with ``hc_start`` (the default) start 0 is
    ``init_gmm(..., method="hc")``: the partition of model-based hierarchical
    clustering, deterministic and scale-free, so one good start is always in
    the batch whatever the keys draw. Every start is then run by
    :func:`gmmjax.fit` with the same
    ``fitter``, ``max_steps`` and ``tol``. Initialization and fitting are
    ``vmap``-ed over the starts, so the restarts run as one batched
    ``while_loop`` (each lane stops updating when its own run ends).
    ``batch_size`` bounds memory: starts are processed ``batch_size`` at a time
    (``lax.map`` over chunks), so at most ``batch_size x n x k``
    responsibilities exist at once. Results do not depend on ``batch_size``,
    only speed and memory do.

    ``reg_covar`` only regularizes the starts, as in :func:`gmmjax.init_gmm`;
    the fitter's own hyperparameters (``EM(reg_covar=...)``) govern its steps.
    Pass the same value to both for scikit-learn's behaviour, e.g.
    ``multistart(Annealed(EM(reg_covar=1e-3), schedule), ..., reg_covar=1e-3)``.

    ``report``, optional, observes the runs from inside the compiled loop, e.g.
    to draw a progress line: a host function ``report(n_steps, mean_ll,
    running)`` of three ``(n_init,)`` NumPy arrays (``n_init`` even when the
    starts run in several batches), called before every step and once when a
    batch of starts has ended: the steps each run has taken, the mean
    log-likelihood of its previous step (``-inf`` before a comparable one) and
    whether it is still going. The batches run one after the other, in the
    order of the starts; while one runs, the runs of the batches before it show
    their final values and those after it 0 steps, ``-inf`` and ``running``
    True. So ``running`` is all False exactly once, in the last call. As in
    :func:`gmmjax.fit`, a run that stopped keeps reporting its final count
    while others of its batch go on. ``report`` only observes: the results are
    those of ``report=None``, whose program has no callback at all (to the last
    bits: XLA may order a sum differently around the callback). It is a
    static argument (a new function compiles a new program), so it must be
    hashable; calls arrive asynchronously, so call ``jax.effects_barrier()``
    before reading what it gathered. Use one top-level call at a time per
    ``report`` (not under ``vmap``).

    Args:
        fitter: a fitter pytree, e.g. :class:`gmmjax.EM`.
        key: a ``jax.random`` key.
        x: ``(n, d)`` data with ``n >= n_components``.
        n_components: the number of components ``k`` (static).
        n_init: the number of starts ``b >= 1``.
        covariance_type: ``"full"``, ``"diag"``, ``"spherical"`` or ``"tied"``.
        init: the :func:`gmmjax.init_gmm` method: ``"kmeans++"``, ``"kmeans"``,
            ``"random"`` or ``"random_from_data"``.
        max_steps: the step budget of every run (an integer >= 0).
        tol: convergence threshold on the change in mean log-likelihood (>= 0).
        sample_weight: optional ``(n,)`` non-negative weights.
        batch_size: optional number of starts fitted together (>= 1). ``None``
            chooses: on CPU, batches whose ``batch_size x n x k`` responsibilities
            stay near the cache (about ``2**19`` numbers), which is faster than
            one huge batch; on accelerators, all ``n_init`` at once.
        reg_covar: added to the diagonal of the initial covariances (>= 0),
            independently of the fitter; traced, so new values do not recompile.
        report: ``None`` or a hashable host function ``report(n_steps,
            mean_ll, running)`` of three ``(b,)`` arrays (see above).
        hc_start: start 0 from the hierarchical partition (see above) instead
            of ``init``'s draw from key 0.

    Returns:
        A :class:`FitResult` whose every leaf has a leading ``(b,)`` axis:
        ``result.gmm.means`` is ``(b, k, d)``, ``result.log_likelihood`` is
        ``(b,)``, and so on. :func:`best_of` picks the best run.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> runs = gmmjax.multistart(gmmjax.EM(), jax.random.key(0), x,
        ...                          n_components=2, n_init=8, batch_size=3)
        >>> runs.log_likelihood.shape, runs.gmm.means.shape
        ((8,), (8, 2, 2))
        >>> round(float(gmmjax.best_of(runs).log_likelihood) / len(x), 3)
        -4.155

        A progress report over the 8 starts, fitted in batches of 3, 3 and 2:

        >>> calls = []
        >>> def report(n_steps, mean_ll, running):
        ...     calls.append((n_steps, running))
        >>> same = gmmjax.multistart(gmmjax.EM(), jax.random.key(0), x,
        ...                          n_components=2, n_init=8, batch_size=3,
        ...                          report=report)
        >>> jax.effects_barrier()
        >>> {len(n_steps) for n_steps, _ in calls}  # every call sees all 8
        {8}
        >>> [bool(running.any()) for _, running in calls].count(False)
        1
        >>> calls[-1][0].tolist() == runs.n_steps.tolist()
        True
        >>> bool(jax.numpy.allclose(same.log_likelihood, runs.log_likelihood,
        ...                         rtol=1e-13))
        True
    """
    n_components = check_positive_int(n_components, "n_components")
    keys, x, w, n_init, batch_size, covariance_type = _check_runs(
        fitter,
        key,
        x,
        n_init,
        covariance_type,
        init,
        max_steps,
        tol,
        sample_weight,
        batch_size,
        reg_covar,
    )
    if x.shape[0] < n_components:
        raise ValueError(
            f"x has {x.shape[0]} samples but n_components={n_components}: "
            "need n_samples >= n_components"
        )
    _check_report(report)
    if batch_size is None:
        batch_size = _auto_batch_size(x.shape[0], n_components)
    batch_size = None if batch_size >= n_init else batch_size
    keys = start_keys(keys, n_init)
    max_steps = jnp.asarray(max_steps, jnp.int32)
    static = {
        "n_components": n_components,
        "covariance_type": covariance_type,
        "init": init,
        "batch_size": batch_size,
    }
    args = (x, w, max_steps, tol, reg_covar)
    if check_hc_start(hc_start):
        tree = hc_labels(x, w, n_clusters=n_components)
        source = np.where(np.arange(n_init) == 0, n_components - 1, -1)
        args = (*args, None, (tree, source.astype(np.int32)))
    if report is not None:
        return _multistart(fitter, keys, *args, **static, report=report)
    return _restarts("multistart", fitter, keys, args, {**static, "report": None})


# random key implementations that a name rebuilds in any process
_BUILTIN_KEYS = ("threefry2x32", "rbg", "unsafe_rbg")


def _restarts(program: str, fitter, keys, args: tuple, static: dict):
    """``_PROGRAMS[program](fitter, keys, *args, **static)``. EM's restarts are
    kept lowered on disk (:mod:`gmmjax._stored`) and a later process skips
    tracing them; other fitters hold functions, which no key names across
    processes."""
    impl = str(jax.random.key_impl(keys))
    if type(fitter) is not EM or impl not in _BUILTIN_KEYS:
        return _PROGRAMS[program](fitter, keys, *args, **static)
    # an exported program takes no typed keys: their raw data, and the name of
    # their implementation
    options = _PROGRAMS[program].options(fitter, keys, *args, **static)
    stored_args = (fitter, jax.random.key_data(keys), *args)
    static = {**static, "program": program, "impl": impl}
    return call_stored(program, _from_key_data, stored_args, static, options)


def _from_key_data(fitter, key_data, *args, program, impl, **static):
    keys = jax.random.wrap_key_data(key_data, impl=impl)
    return _PROGRAMS[program](fitter, keys, *args, **static)


def _check_report(report) -> None:
    if report is None:
        return
    if not callable(report):
        raise TypeError(
            f"report must be a function or None, got {type(report).__name__}"
        )
    try:
        hash(report)
    except TypeError:
        raise TypeError(
            "report must be hashable (it is a static argument of the compiled "
            f"program), got an unhashable {type(report).__name__}"
        ) from None


def check_hc_start(hc_start) -> bool:
    if not isinstance(hc_start, (bool, np.bool_)):
        raise TypeError(f"hc_start must be True or False, got {hc_start!r}")
    return bool(hc_start)


def _masked_work(fitter, keys, x, w, max_steps, tol, reg_covar, n_active, *_, **static):
    return fit_work(x, static["n_components"], keys.shape[0] * n_active.shape[0])


@functools.partial(
    ByWork,
    work=_masked_work,
    static_argnames=("n_components", "covariance_type", "init", "batch_size"),
)
def _best_masked(
    fitter,
    keys,
    x,
    w,
    max_steps,
    tol,
    reg_covar,
    n_active,
    partitions=None,
    priors=None,
    *,
    n_components,
    covariance_type,
    init,
    batch_size,
):
    """The best of the ``(b,)`` starts ``keys`` for every ``(g,)`` number of
    active components ``n_active``, as one program: ``g b`` masked runs with
    ``K = n_components`` components, then :func:`best_index` per group. With
    ``partitions``, ``(g, m, n)`` labels, the last ``m`` starts of group ``i``
    are fitted to ``partitions[i]`` instead, each whose labels are ``>= 0``
    (``-1``: its key's start); with ``priors`` (a :class:`gmmjax.Prior` with
    a leading ``(g,)`` axis), every group's fitter takes its own."""
    g, b = n_active.shape[0], keys.shape[0]
    lane_keys = jnp.broadcast_to(keys[None], (g, b)).reshape(g * b)
    lane_active = jnp.repeat(n_active, b)
    given = None
    if partitions is not None:
        m = partitions.shape[1]
        rows = jnp.arange(g * m).reshape(g, m)
        rows = jnp.where(partitions[:, :, 0] >= 0, rows, -1)
        source = jnp.concatenate([jnp.full((g, b - m), -1, rows.dtype), rows], 1)
        given = (partitions.reshape(g * m, -1), source.reshape(g * b))
    lane_priors = jax.tree_util.tree_map(lambda a: jnp.repeat(a, b, axis=0), priors)
    runs = _multistart(
        fitter,
        lane_keys,
        x,
        w,
        max_steps,
        tol,
        reg_covar,
        lane_active,
        given,
        lane_priors,
        n_components=n_components,
        covariance_type=covariance_type,
        init=init,
        batch_size=batch_size,
        report=None,
    )
    runs = jax.tree_util.tree_map(lambda a: a.reshape(g, b, *a.shape[1:]), runs)
    index = jax.vmap(best_index)(runs.objective, runs.status)
    return jax.tree_util.tree_map(lambda a: jax.vmap(lambda r, i: r[i])(a, index), runs)


# the restart programs that :func:`_restarts` runs, by name
_PROGRAMS = {"multistart": _multistart, "best-masked": _best_masked}


def multistart_masked(
    fitter,
    key,
    x,
    *,
    n_active,
    n_init: int,
    covariance_type: str = "full",
    init: str = "kmeans++",
    max_steps=500,
    tol=1e-6,
    sample_weight=None,
    batch_size: int | None = None,
    reg_covar=1e-6,
    partitions=None,
    first_key: int = 0,
    priors=None,
) -> FitResult:
    """:func:`multistart` and :func:`best_of` for several numbers of components
    at once, in one compiled program per covariance type.

    For every ``k`` of ``n_active`` (``(g,)`` ints in ``1..K``), ``n_init``
    starts are fitted with ``K = max(n_active)`` components of which the first
    ``k`` are active and the others masked (weight 0, frozen; see
    ``gmmjax._em._em_step``), all ``g n_init`` runs batched together, and the
    best run of each ``k`` is kept (:func:`best_index`). A masked run equals the
    ``k``-component run to rounding. Start ``j`` of every ``k`` is
    :func:`multistart`'s start from ``jax.random.fold_in(key, first_key + j)``
    (with ``first_key=0``, the keys of ``multistart(..., n_init=n_init)``),
    except where ``partitions`` gives one.

    ``partitions``, optional, holds ``(g, m, n)`` integer labels (``m <=
    n_init``): the last ``m`` starts of ``k = n_active[i]`` are fitted to the
    partitions ``partitions[i]`` of ``x`` into ``k`` clusters (labels in
    ``0..k-1``), except those whose labels are ``-1``, which keep their keyed
    start. E.g. the hierarchical partitions (:func:`gmmjax._hc.hc_labels`),
    or those of the fits of other cells of a grid.

    ``priors``, optional, is a :class:`gmmjax.Prior` whose leaves have a
    leading ``(g,)`` axis: the ``k = n_active[i]`` runs use ``fitter`` with the
    prior ``i`` (mclust's default prior depends on ``k``), as one program.

    The program depends on ``K``, ``g``, ``n_init``, ``m``, the labels'
    integer type and the static arguments, not on the values of ``n_active``,
    ``partitions`` or ``first_key``. Validation as in :func:`multistart`
    (``n_active`` and ``partitions`` excepted, checked by the caller);
    ``batch_size`` bounds the runs fitted together, over all ``g n_init`` of
    them.

    Returns:
        A :class:`FitResult` with a leading ``(g,)`` axis whose models have
        ``K`` components, the first ``k`` active: slice them to ``k``
        components (:func:`gmmjax._selection.leading_components`).
    """
    keys, x, w, n_init, batch_size, covariance_type = _check_runs(
        fitter,
        key,
        x,
        n_init,
        covariance_type,
        init,
        max_steps,
        tol,
        sample_weight,
        batch_size,
        reg_covar,
    )
    n_active = np.asarray(n_active, np.int32)
    k_max = int(n_active.max())
    n_runs = n_init * n_active.shape[0]
    if batch_size is None:
        batch_size = _auto_batch_size(x.shape[0], k_max)
    batch_size = None if batch_size >= n_runs else batch_size
    args = (x, w, jnp.asarray(max_steps, jnp.int32), tol, reg_covar)
    static = {
        "n_components": k_max,
        "covariance_type": covariance_type,
        "init": init,
        "batch_size": batch_size,
    }
    keys = start_keys(keys, n_init, first_key)
    if partitions is not None:
        # device_put copies without compiling; the labels keep their integer
        # type (int8 up to K = 127: g n_init n bytes)
        partitions = jax.device_put(np.asarray(partitions))
    args = (*args, jnp.asarray(n_active), partitions, priors)
    return _restarts("best-masked", fitter, keys, args, static)


# On CPU a batch of restarts works best when its responsibilities, about
# 2**19 numbers (4 MiB in float64), stay near the cache: measured on the
# issue-11 cases (EM without re-seeding), 1,000 restarts of K=5, N=2,000 ran
# 1.5x faster in batches of 50 than all at once or in batches of 6, and
# K=3, N=200 1.4x faster in batches of 250-1,000 than of 100. Accelerators want
# every restart at once.
_CACHE_ELEMENTS = 2**19


def _auto_batch_size(n: int, k: int, backend: str | None = None) -> int:
    """The restarts :func:`multistart` fits together when ``batch_size=None``:
    a cache-sized batch on CPU, unbounded elsewhere."""
    if (backend or jax.default_backend()) != "cpu":
        return 2**31 - 1
    return max(1, _CACHE_ELEMENTS // (n * k))


@jax.jit
def best_index(ll, status) -> jax.Array:
    """The index of :func:`best_of`'s run among ``(b,)`` log-likelihoods and
    statuses: the best usable run, else the best finite one, else the first."""
    finite = jnp.isfinite(ll)
    usable = finite & ((status == Status.CONVERGED) | (status == Status.MAX_STEPS))
    # tier 0: usable runs; 1: failed runs that still have a finite score; 2: the rest
    tier = jnp.where(usable, 0, jnp.where(finite, 1, 2))
    score = jnp.where(finite, ll, -jnp.inf)
    # lexsort sorts by the last key first: the lowest tier, then the highest score;
    # it is stable, so ties go to the earliest start
    return jnp.lexsort((-score, tier))[0]


@jax.jit
def _take_best(result: FitResult) -> FitResult:
    # one program: indexed leaf by leaf, op by op, a fresh process compiled a
    # small program per leaf
    index = best_index(result.objective, result.status)
    return jax.tree_util.tree_map(lambda leaf: leaf[index], result)


def best_of(result: FitResult) -> FitResult:
    """The best run of a batch: the highest objective among the usable runs.

    The objective is :attr:`FitResult.objective`: the log-likelihood, or the log
    posterior or lower bound of a fitter that increases one of those. A run is
    usable when it ended ``CONVERGED`` or ``MAX_STEPS`` with a finite
    objective. Runs that ended ``NONFINITE`` or ``DEGENERATE`` (a collapsed
    component can have an arbitrarily high likelihood) never win while a usable
    run exists. When none is usable, the failed run with the highest finite
    objective is returned (else the first run), with its own status, so the
    status says that no run succeeded. Ties go to the earliest start. Jittable.

    Args:
        result: a batched :class:`FitResult` with a leading ``(b,)`` axis, as
            returned by :func:`multistart`.

    Returns:
        The chosen run as an unbatched :class:`FitResult`.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> runs = gmmjax.multistart(gmmjax.EM(), jax.random.key(1), x,
        ...                          n_components=3, n_init=4)
        >>> best = gmmjax.best_of(runs)
        >>> best.status_name, best.gmm.means.shape
        ('CONVERGED', (3, 2))
    """
    if not isinstance(result, FitResult):
        raise TypeError(
            f"result must be a gmmjax.FitResult, got {type(result).__name__}"
        )
    shape = np.shape(result.log_likelihood)
    if len(shape) != 1 or shape[0] == 0:
        raise ValueError(
            "result must be a batched FitResult with a leading n_init axis "
            f"(as returned by multistart); its log_likelihood has shape {shape}"
        )
    return _take_best(result)
