"""Data larger than memory: exact EM chunk by chunk, and online (stepwise) EM.

:func:`fit_em_chunked` runs exact EM over a numpy memmap or a stream that can be
replayed, one chunk at a time; :class:`OnlineEM` is stepwise EM for a stream seen
once or a few times. Both sum :class:`gmmjax._stats.Statistics` about the current
means and read the model off with EM's M step (:func:`gmmjax._stats.maximize`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from ._chunks import blocks_of, chunks
from ._degeneracy import degenerate_component, sample_count
from ._density import check_gmm, prepare, weighted_log_prob
from ._fit import (
    RUNNING,
    FitResult,
    Loop,
    StepInfo,
    advance,
    check_steps,
    start_loop,
    total_weight,
)
from ._gmm import GMM
from ._levels import ByWork, fit_work
from ._prior import check_prior, check_prior_shapes, log_prior_density
from ._stats import Statistics, maximize, moments_about
from ._validation import (
    check_nonnegative_scalar,
    check_positive_int,
    check_reg_covar,
    concrete,
)

__all__ = ["OnlineEM", "OnlineEMInfo", "OnlineEMState", "fit_em_chunked"]


def _posterior_weights(gmm: GMM, x, w, beta=1.0):
    """``w_i r_ij`` ``(n, k)`` (tempered by ``beta``) and ``log p(x_i)`` ``(n,)``;
    zero-weight rows give 0.

    Zero-weight rows (padding) may lie where every component density underflows;
    their posteriors are then NaN, so they are selected away, never multiplied.
    """
    joint = weighted_log_prob(gmm, x)
    log_prob = logsumexp(joint, axis=-1)
    tempered = beta * joint
    resp = jnp.exp(tempered - logsumexp(tempered, axis=-1, keepdims=True))
    keep = w > 0
    wr = jnp.where(keep[:, None], w[:, None] * resp, 0)
    return wr, jnp.where(keep, log_prob, 0)


def _about_means(gmm: GMM, x, wr) -> Statistics:
    """:class:`Statistics` of ``x`` with weights ``wr`` about ``gmm``'s means."""
    means = gmm.means
    # shifted to the means' mean: the sums lose no digits far from the origin
    shift = jnp.mean(means, axis=0)
    first, second = moments_about(x - shift, wr, means - shift, gmm.covariance_type)
    return Statistics(jnp.sum(wr, axis=0), first, second, means)


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


# -------------------------------------------------------------------- chunked EM


class _Pass(NamedTuple):
    """Sums over the data of one EM pass (about the means the pass started from)."""

    log_likelihood: jax.Array  # () sum_i w_i log p(x_i)
    weight: jax.Array  # () sum_i w_i
    stats: Statistics


def _empty_pass(gmm: GMM, dtype) -> _Pass:
    k, d = gmm.n_components, gmm.n_features
    second = (k, d, d) if gmm.covariance_type in ("full", "tied") else (k, d)
    zero = jnp.zeros((), dtype)
    stats = Statistics(
        jnp.zeros(k, dtype),
        jnp.zeros((k, d), dtype),
        jnp.zeros(second, dtype),
        gmm.means.astype(dtype),
    )
    return _Pass(zero, zero, stats)


@jax.jit
def _accumulate(acc: _Pass, gmm: GMM, x, w) -> _Pass:
    wr, log_prob = _posterior_weights(gmm, x, w)
    stats = _about_means(gmm, x, wr)
    sums = jax.tree_util.tree_map(jnp.add, acc.stats[:3], stats[:3])
    return _Pass(
        acc.log_likelihood + w @ log_prob,
        acc.weight + jnp.sum(w),
        Statistics(*sums, acc.stats.center),
    )


@jax.jit
def _em_from_pass(
    acc: _Pass, loop: Loop, n, max_steps, tol, reg_covar, prior=None
) -> Loop:
    """The M step of one pass, then the driver's bookkeeping (``advance``);
    with a prior, MAP-EM's step and its log posterior."""
    m = maximize(acc.stats, reg_covar, loop.state.covariance_type, prior=prior)
    counts = acc.stats.counts
    degenerate = degenerate_component(counts, m.spread, n, jnp.sum(counts))
    objective = _log_posterior(acc.log_likelihood, loop.state, prior)
    info = StepInfo(objective, degenerate, jnp.asarray(True))
    return advance(loop, m.gmm, info, acc.weight, tol, max_steps)


def _log_posterior(ll, gmm: GMM, prior):
    """``ll + log p(gmm)`` with a prior, else ``ll``."""
    if prior is None:
        return ll
    return ll + log_prior_density(gmm, prior).astype(ll.dtype)


def _sweep(blocks, gmm: GMM, chunk_size, dtype, check):
    """One pass over the data at ``gmm``: the accumulated sums and the row count."""
    acc = _empty_pass(gmm, dtype)
    n = 0
    for x, w, rows in chunks(blocks(), chunk_size, gmm.n_features, dtype, check):
        previous, acc = acc, _accumulate(acc, gmm, x, w)
        # dispatch is asynchronous: without a wait the host would read ahead and
        # queue every chunk; waiting for the previous one keeps two in flight
        jax.block_until_ready(previous)
        n += rows
    if check:
        if n < gmm.n_components:
            raise ValueError(
                f"data has {n} samples but the model has {gmm.n_components} "
                "components: need n_samples >= n_components"
            )
        if not float(acc.weight) > 0:
            raise ValueError("sample_weight must not be all zero")
    return acc, n


def fit_em_chunked(
    gmm0: GMM,
    data,
    *,
    chunk_size: int,
    max_steps: int = 500,
    tol=1e-6,
    reg_covar=1e-6,
    sample_weight=None,
    prior=None,
) -> FitResult:
    """Exact EM over data larger than memory, one chunk at a time.

    Each EM step is one pass over the data: for every chunk of ``chunk_size`` rows
    one jitted function adds the chunk's sufficient statistics (counts ``N_j``, first
    and second moments about the current means ``m_j``) to running sums; the M step
    then follows from the sums: EM's own (:func:`gmmjax._stats.maximize`: the
    ``10 eps`` floor on counts, ``reg_covar`` on the diagonal, pooled ``tied``
    scatter). The second moments are taken about ``m_j``, not the origin, and
    corrected exactly to the new means, ``S_j - (2 N'_j - N_j) delta delta^T`` with
    ``delta = mu_j - m_j``; near convergence ``delta`` is tiny, so the covariances do
    not suffer the cancellation of raw moments. Every chunk has the same shape (the
    last is padded with zero-weight rows), so the pass compiles once. The results
    equal :func:`gmmjax.fit` with :class:`gmmjax.EM` on the same data up to the
    order of floating-point sums, with the same stopping rule (step ``t`` reports
    the log-likelihood of the parameters it started from; converged when the change
    in mean log-likelihood is below ``tol``) and the same :class:`gmmjax.Status`
    semantics (the driver's own bookkeeping, ``gmmjax._fit.advance``, runs after
    every pass: ``NONFINITE`` keeps the last finite parameters, ``DEGENERATE`` names
    the component). One more pass computes the returned log-likelihood.

    Memory: at most two chunks are in flight, and the working memory of a chunk is
    ``O(chunk_size * k * d)``, whatever the data size
    (``benchmarks/chunked_benchmark.py`` measures it). Pages of a memmapped file
    that have been read count as file-backed resident memory until the kernel
    reclaims them (they are clean, so it can at any time); a callable that reads
    blocks with ``np.fromfile`` avoids even that. The data are read on the host, so
    this is a Python loop over chunks and passes and is not jittable.

    Args:
        gmm0: the starting :class:`GMM` (e.g. from :func:`gmmjax.init_gmm` on a
            subsample).
        data: ``(n, d)`` array-like that supports row slicing (a numpy array or
            ``np.load(path, mmap_mode="r")``), or a callable with no arguments
            returning a **fresh** iterator over the data each time it is called
            (one call per pass), yielding ``(rows, d)`` arrays or
            ``(x, sample_weight)`` pairs of any sizes.
        chunk_size: rows per compiled chunk (blocks are regrouped to this size).
        max_steps: the step (pass) budget, an integer >= 0.
        tol: convergence threshold on the change in mean log-likelihood (>= 0).
        reg_covar: non-negative value added to the diagonal of every covariance.
        sample_weight: optional ``(n,)`` non-negative weights (array-like ``data``
            only; may itself be a memmap).
        prior: ``None``, or a :class:`gmmjax.Prior`: MAP-EM, as
            ``gmmjax.EM(prior=...)`` (the convergence test and ``objective``
            read the log posterior).

    Returns:
        A :class:`gmmjax.FitResult`; ``log_likelihood`` is the total log-likelihood
        of the returned model, ``objective`` its log posterior with a prior.

    Example:
        >>> import jax, numpy as np, gmmjax
        >>> x = np.asarray(gmmjax.datasets.faithful())
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(1), x, n_components=2)
        >>> chunked = gmmjax.fit_em_chunked(gmm0, x, chunk_size=100)
        >>> full = gmmjax.fit(gmmjax.EM(), gmm0, x)
        >>> chunked.status_name, full.status_name
        ('CONVERGED', 'CONVERGED')
        >>> float(abs(chunked.log_likelihood - full.log_likelihood)) < 1e-3
        True
    """
    check_gmm(gmm0)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if concrete(check_steps(max_steps, "max_steps")) is None:
        raise TypeError("max_steps must be a concrete integer")
    check_nonnegative_scalar(tol, "tol")
    check_reg_covar(reg_covar, n_features=gmm0.n_features)
    if prior is not None:
        check_prior(prior)
        check_prior_shapes(prior, gmm0.n_features, gmm0.covariance_type)
    blocks, data_dtype = blocks_of(data, sample_weight)
    dtype = jnp.result_type(gmm0.dtype, jax.dtypes.canonicalize_dtype(data_dtype))
    gmm = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), gmm0)
    loop = start_loop(gmm, dtype, int(max_steps) > 0)
    max_steps = jnp.asarray(int(max_steps), jnp.int32)
    tol = jnp.asarray(tol, dtype)
    reg_covar = jnp.asarray(reg_covar, dtype)
    check = True
    # the host loop of gmmjax.fit's driver: one pass per step
    while int(loop.status) == RUNNING:
        acc, n = _sweep(blocks, loop.state, chunk_size, dtype, check)
        check = False
        loop = _em_from_pass(acc, loop, n, max_steps, tol, reg_covar, prior)
    acc, _ = _sweep(blocks, loop.state, chunk_size, dtype, check)
    ll = acc.log_likelihood
    objective = ll if prior is None else _final_objective(ll, loop.state, prior)
    return FitResult(
        loop.state, ll, loop.n_steps, loop.status, loop.degenerate, objective
    )


_final_objective = jax.jit(_log_posterior)


# --------------------------------------------------------------------- online EM


class OnlineEMState(NamedTuple):
    """What stepwise EM carries between minibatches.

    Attributes:
        gmm: the current model (the M step of the running statistics).
        counts: ``(k,)`` running average of the responsibilities ``E[r_j]``.
        scatter: running average of ``r_j (x - mu_j)(x - mu_j)^T`` about the current
            means: ``(k, d, d)`` for ``full``/``tied``, its diagonal ``(k, d)`` for
            ``diag``/``spherical``.
        count: ``()`` int32, the number of updates applied so far.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> state = gmmjax.OnlineEM().init(gmm)
        >>> int(state.count), state.counts.shape, state.scatter.shape
        (0, (2,), (2, 2, 2))
    """

    gmm: GMM
    counts: jax.Array
    scatter: jax.Array
    count: jax.Array


class OnlineEMInfo(NamedTuple):
    """Diagnostics of one :meth:`OnlineEM.update`.

    Attributes:
        log_likelihood: ``()`` mean (weighted) log-likelihood of the minibatch under
            the parameters the update started from (a running, noisy estimate of
            the expected log-likelihood).
        step_size: ``()`` the step size ``rho_t`` used.
        finite: ``()`` bool; ``False`` when the update gave non-finite values and
            was rejected (the state is returned unchanged).
        degenerate: ``()`` int32, the first component of the updated model that
            is empty (its running share below a thousandth of one sample of the
            minibatch) or collapsed (as in :func:`gmmjax.fit`'s ``DEGENERATE``),
            ``-1`` if none.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> online = gmmjax.OnlineEM(alpha=0.6)
        >>> state, info = online.update(online.init(gmm), x[:100])
        >>> float(info.step_size), bool(info.finite), int(info.degenerate)
        (1.0, True, -1)
    """

    log_likelihood: jax.Array
    step_size: jax.Array
    finite: jax.Array
    degenerate: jax.Array


def _stats_of(gmm: GMM):
    """Running statistics equivalent to a model: ``(pi_j, pi_j Sigma_j)``."""
    weights = gmm.weights
    cov = gmm.covariances
    k, d = gmm.n_components, gmm.n_features
    if gmm.covariance_type == "tied":
        cov = jnp.broadcast_to(cov, (k, d, d))
    elif gmm.covariance_type == "spherical":
        cov = jnp.broadcast_to(cov[:, None], (k, d))
    return weights, weights.reshape((k,) + (1,) * (cov.ndim - 1)) * cov


def _online_step(fitter, state: OnlineEMState, x, sample_weight, beta):
    """One stepwise-EM update, not rejected when non-finite:
    ``(OnlineEMState, StepInfo)``."""
    gmm = state.gmm
    w = jnp.ones(x.shape[0], x.dtype) if sample_weight is None else sample_weight
    wr, log_prob = _posterior_weights(gmm, x, w, beta)
    batch = _about_means(gmm, x, wr / jnp.sum(w))
    rho = fitter.step_size(state.count).astype(x.dtype)
    # the running first moment about the current means is zero (they are its mean)
    running = Statistics(
        (1 - rho) * state.counts + rho * batch.counts,
        rho * batch.first,
        (1 - rho) * state.scatter + rho * batch.second,
        gmm.means,
    )
    m = maximize(running, fitter.reg_covar, gmm.covariance_type)
    new = OnlineEMState(m.gmm, running.counts, m.centered.second, state.count + 1)
    # empty: a running share below a thousandth of one sample of the minibatch
    # (its rows of positive weight: padding rows are not samples)
    counts = running.counts
    n = sample_count(x, sample_weight)
    degenerate = degenerate_component(counts, m.spread, n, jnp.sum(counts))
    return new, StepInfo(w @ log_prob, degenerate, jnp.asarray(True))


@functools.partial(
    ByWork, work=lambda fitter, state, x, *_: fit_work(x, state.gmm.n_components)
)
def online_update(fitter, state: OnlineEMState, x, w):
    """:meth:`OnlineEM.update` on validated arrays (``w``: ``None`` or weights of
    positive sum; rows of weight 0 pad a minibatch to a shared shape)."""
    rho = fitter.step_size(state.count).astype(x.dtype)
    new, info = fitter.step(state, x, sample_weight=w)
    ll = info.log_likelihood / total_weight(x, w)
    finite = jnp.isfinite(ll) & _all_finite(new)
    state = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, state)
    return state, OnlineEMInfo(ll, rho, finite, info.degenerate)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OnlineEM:
    """Stepwise (online) EM for streams of minibatches (Cappé & Moulines, 2009).

    The state holds running averages of the sufficient statistics,
    ``s_t = (1 - rho_t) s_{t-1} + rho_t s_hat(x_batch; theta_{t-1})``, where
    ``s_hat`` averages the responsibilities ``r_j``, ``r_j x`` and
    ``r_j x x^T`` over the (weighted) minibatch under the current parameters, and the
    parameters are the M step of ``s_t`` (the conventions of :func:`gmmjax.m_step`).
    The step size is ``rho_t = (t + t0)^(-alpha)`` for the ``t``-th update
    (``t = 0, 1, ...``); with ``alpha`` in ``(0.5, 1]`` the sum of ``rho_t``
    diverges and the sum of ``rho_t^2`` converges, so the iterates converge to a
    stationary point of the expected log-likelihood. With ``t0 = 1`` the first
    update has ``rho_0 = 1``, so the starting model only supplies the first
    responsibilities; a larger ``t0`` gives its statistics (``pi_j``,
    ``pi_j Sigma_j``) a lasting weight. The second moments are kept about the
    current means, so no raw-moment cancellation occurs. A pytree: ``alpha``,
    ``t0`` and ``reg_covar`` are traced leaves (new values do not recompile).

    ``init`` and ``update`` are pure (``update`` is jitted, one compilation per
    minibatch shape); :meth:`run` loops over an iterable of minibatches. The
    scikit-learn estimator's ``partial_fit`` and ``batch_size`` fits run these
    same updates.
    ``init`` and :meth:`step` also make it a fitter: ``gmmjax.fit(OnlineEM(),
    gmm0, x)`` runs stepwise EM with all of ``x`` as every step's minibatch (a
    damped EM whose fixed points are EM's), with the driver's stopping rule and
    statuses; ``beta`` (e.g. from :class:`gmmjax.Annealed`) tempers the
    responsibilities as in EM.

    Args:
        alpha: the decay exponent of the step size, in ``(0.5, 1]``.
        t0: the offset of the step size, ``>= 1`` (so ``rho_t <= 1``).
        reg_covar: non-negative value added to the diagonal of every covariance.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> online = gmmjax.OnlineEM(alpha=0.6)
        >>> batches = [x[i : i + 68] for i in range(0, 272, 68)] * 5
        >>> state, lls = online.run(gmm0, batches)
        >>> int(state.count), lls.shape
        (20, (20,))

        As a fitter, on a fixed dataset:

        >>> gmmjax.fit(online, gmm0, x, max_steps=2000).status_name
        'CONVERGED'
    """

    alpha: float | jax.Array = 0.6
    t0: float | jax.Array = 1.0
    reg_covar: float | jax.Array = 1e-6

    def check(self) -> None:
        """Validate the hyperparameters (when they are concrete)."""
        check_reg_covar(self.reg_covar)
        check_nonnegative_scalar(self.alpha, "alpha")
        check_nonnegative_scalar(self.t0, "t0")
        alpha, t0 = concrete(self.alpha), concrete(self.t0)
        if alpha is not None and not 0.5 < alpha <= 1:
            raise ValueError(f"alpha must be in (0.5, 1], got {alpha}")
        if t0 is not None and t0 < 1:
            raise ValueError(f"t0 must be >= 1, got {t0}")

    def step_size(self, count) -> jax.Array:
        """``rho = (count + t0)^(-alpha)`` for the update after ``count`` updates."""
        return (jnp.asarray(count) + self.t0) ** (-jnp.asarray(self.alpha))

    def init(self, gmm: GMM, x=None, *, sample_weight=None) -> OnlineEMState:
        """The starting state: the statistics ``(pi_j, pi_j Sigma_j)`` of ``gmm``.

        ``x`` and ``sample_weight`` are not used (the fitter protocol's signature).
        """
        check_gmm(gmm)
        counts, scatter = _stats_of(gmm)
        return OnlineEMState(gmm, counts, scatter, jnp.asarray(0, jnp.int32))

    def step(self, state: OnlineEMState, x, *, sample_weight=None, beta=1.0):
        """One update with the minibatch ``x`` ``(m, d)``, as a fitter step.

        The fitter protocol's step (no validation, not rejected when non-finite:
        the driver judges): ``beta`` tempers the responsibilities, as in
        :class:`gmmjax.EM`.

        Returns:
            ``(OnlineEMState, StepInfo)``; ``StepInfo.log_likelihood`` is the
            **total** (weighted) log-likelihood of the minibatch under the
            parameters the step started from.
        """
        return _online_step(self, state, x, sample_weight, beta)

    def update(self, state: OnlineEMState, x, *, sample_weight=None):
        """One stepwise-EM update with the minibatch ``x`` ``(m, d)``.

        Returns:
            ``(OnlineEMState, OnlineEMInfo)``.
        """
        self.check()
        x, w = prepare(state.gmm, x, sample_weight)
        return online_update(self, state, x, w)

    def run(self, gmm0: GMM, batches: Iterable):
        """Apply :meth:`update` to every minibatch of an iterable, in order.

        Args:
            gmm0: the starting model.
            batches: an iterable of ``(m, d)`` arrays or ``(x, sample_weight)``
                pairs (e.g. a generator reading a file, or shuffled slices of an
                array, repeated for several passes).

        Returns:
            ``(state, log_likelihoods)``: the final :class:`OnlineEMState` and the
            ``(n_batches,)`` mean log-likelihood of each minibatch before its update.
        """
        state = self.init(gmm0)
        lls = []
        for batch in batches:
            x, w = batch if isinstance(batch, tuple) else (batch, None)
            state, info = self.update(state, x, sample_weight=w)
            lls.append(info.log_likelihood)
        if not lls:
            raise ValueError("batches must hold at least one minibatch")
        return state, jnp.stack(lls)


jax.tree_util.register_dataclass(
    OnlineEM, data_fields=["alpha", "t0", "reg_covar"], meta_fields=[]
)
