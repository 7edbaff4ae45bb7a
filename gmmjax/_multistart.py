"""Many restarts in one compiled call: ``multistart`` and ``best_of``."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ._fit import FitResult, Status, _fit, check_fitter, check_steps
from ._init import INIT_METHODS, _init_gmm
from ._validation import (
    check_covariance_type,
    check_data,
    check_key,
    check_nonnegative_scalar,
    check_positive_int,
    check_sample_weight,
)

_INIT_REG_COVAR = 1e-6


def start_keys(key, n_init: int) -> jax.Array:
    """The keys of the starts of :func:`multistart`: start ``i`` uses
    ``jax.random.fold_in(key, i)``, so the first starts do not depend on ``n_init``."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
        key, jnp.arange(n_init, dtype=jnp.uint32)
    )


@functools.partial(
    jax.jit,
    static_argnames=("n_components", "covariance_type", "init", "batch_size"),
)
def _multistart(
    fitter,
    keys,
    x,
    w,
    max_steps,
    tol,
    init_reg_covar,
    *,
    n_components,
    covariance_type,
    init,
    batch_size,
):
    def one(key):
        gmm0 = _init_gmm(
            key,
            x,
            w,
            init_reg_covar,
            n_components=n_components,
            covariance_type=covariance_type,
            method=init,
        )
        return _fit(fitter, gmm0, x, w, max_steps, tol)

    if batch_size is None:
        return jax.vmap(one)(keys)
    # lax.map vmaps `one` over chunks of `batch_size` starts (and the remainder),
    # so only one chunk's responsibilities (batch_size x n x k) live at once.
    return jax.lax.map(one, keys, batch_size=batch_size)


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
) -> FitResult:
    """Fit from ``n_init`` random starts at once, in one compiled call.

    Start ``i`` is ``init_gmm(jax.random.fold_in(key, i), x, ...)``; every start is
    then run by :func:`gmmjax.fit` with the same ``fitter``, ``max_steps`` and
    ``tol``. Initialization and fitting are ``vmap``-ed over the starts, so the
    restarts run as one batched ``while_loop`` (each lane stops updating when its
    own run ends). ``batch_size`` bounds memory: starts are processed
    ``batch_size`` at a time (``lax.map`` over chunks), so at most
    ``batch_size x n x k`` responsibilities exist at once. Results do not depend
    on ``batch_size``, only speed and memory do. The initial covariances get the
    fitter's ``reg_covar`` when it has one (``1e-6`` otherwise), as in
    scikit-learn.

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
    """
    check_fitter(fitter)
    n_components = check_positive_int(n_components, "n_components")
    n_init = check_positive_int(n_init, "n_init")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    covariance_type = check_covariance_type(covariance_type)
    if not isinstance(init, str) or init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}")
    x = check_data(x)
    if x.shape[0] < n_components:
        raise ValueError(
            f"x has {x.shape[0]} samples but n_components={n_components}: "
            "need n_samples >= n_components"
        )
    w = check_sample_weight(sample_weight, x.shape[0], x.dtype)
    check_steps(max_steps, "max_steps")
    check_nonnegative_scalar(tol, "tol")
    keys = check_key(key)
    if batch_size is None:
        batch_size = _auto_batch_size(x.shape[0], n_components)
    batch_size = None if batch_size >= n_init else batch_size
    init_reg_covar = getattr(fitter, "reg_covar", _INIT_REG_COVAR)
    return _multistart(
        fitter,
        start_keys(keys, n_init),
        x,
        w,
        jnp.asarray(max_steps, jnp.int32),
        tol,
        init_reg_covar,
        n_components=n_components,
        covariance_type=covariance_type,
        init=init,
        batch_size=batch_size,
    )


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
def _best_index(ll, status) -> jax.Array:
    finite = jnp.isfinite(ll)
    usable = finite & ((status == Status.CONVERGED) | (status == Status.MAX_STEPS))
    # tier 0: usable runs; 1: failed runs that still have a finite score; 2: the rest
    tier = jnp.where(usable, 0, jnp.where(finite, 1, 2))
    score = jnp.where(finite, ll, -jnp.inf)
    # lexsort sorts by the last key first: the lowest tier, then the highest score;
    # it is stable, so ties go to the earliest start
    return jnp.lexsort((-score, tier))[0]


def best_of(result: FitResult) -> FitResult:
    """The best run of a batch: the highest log-likelihood among the usable runs.

    A run is usable when it ended ``CONVERGED`` or ``MAX_STEPS`` with a finite
    log-likelihood. Runs that ended ``NONFINITE`` or ``DEGENERATE`` (a collapsed
    component can have an arbitrarily high likelihood) never win while a usable
    run exists. When none is usable, the failed run with the highest finite
    log-likelihood is returned (else the first run), with its own status, so the
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
    ll = jnp.asarray(result.log_likelihood)
    if ll.ndim != 1 or ll.shape[0] == 0:
        raise ValueError(
            "result must be a batched FitResult with a leading n_init axis "
            f"(as returned by multistart); its log_likelihood has shape {ll.shape}"
        )
    index = _best_index(ll, jnp.asarray(result.status))
    return jax.tree_util.tree_map(lambda leaf: leaf[index], result)
