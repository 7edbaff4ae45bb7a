"""Initialization of mixtures from data, in pure JAX (vmappable over keys)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from ._gmm import GMM
from ._stats import maximize, two_pass_statistics
from ._validation import (
    check_covariance_type,
    check_data,
    check_key,
    check_nonnegative_scalar,
    check_positive_int,
    check_sample_weight,
)

__all__ = ["INIT_METHODS", "init_gmm", "init_gmm_jit", "kmeans_plusplus"]

INIT_METHODS = ("kmeans++", "kmeans", "random", "random_from_data")

# Up to this many draws, sampling without replacement picks the largest keys one
# at a time (k passes over the n keys) instead of sorting them: under vmap the
# sort of every lane's n keys cost a tenth of 1,000 restarts of K=3, N=200.
_FEW_DRAWS = 16


def _choice_without_replacement(key, p, k: int):
    """``k`` distinct indices drawn with probabilities ``p`` (``(n,)``, summing to
    1): ``jax.random.choice(key, n, (k,), replace=False, p=p)``, the same indices.

    Both use the Gumbel top-k trick: the ``k`` largest of ``log p_i + G_i`` with
    i.i.d. Gumbel ``G_i``, in decreasing order, ties to the lower index (zero
    weights, ``-inf``, come last).
    """
    g = jax.random.gumbel(key, p.shape, p.dtype) + jnp.log(p)
    if k > _FEW_DRAWS:
        return jax.lax.top_k(g, k)[1]
    idx = jnp.arange(p.shape[0])
    taken = jnp.zeros(p.shape, bool)
    out = []
    for _ in range(k):
        score = jnp.where(taken, -jnp.inf, g)
        i = jnp.argmax((score == jnp.max(score)) & ~taken)
        out.append(i)
        taken = taken | (idx == i)
    return jnp.stack(out)


def _sq_distances(x, centers):
    """``(n, k)`` squared Euclidean distances, from one matrix product."""
    shift = jnp.mean(centers, axis=0)
    xc, cc = x - shift, centers - shift
    d2 = (
        jnp.sum(xc**2, axis=1)[:, None]
        - 2.0 * xc @ cc.T
        + jnp.sum(cc**2, axis=1)[None, :]
    )
    return jnp.maximum(d2, 0.0)


def _log_or_floor(p):
    """``log p`` for a sampling distribution; uniform where ``p`` is all zero."""
    p = jnp.where(jnp.sum(p) > 0, p, jnp.ones_like(p))
    return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)


def kmeans_plusplus(key, x, n_components: int, sample_weight=None):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007).

    Each new center is the best of ``2 + floor(log k)`` candidates drawn with
    probability proportional to ``w_i D(x_i)^2`` (the squared distance to the
    nearest chosen center), as in scikit-learn.

    Args:
        key: a ``jax.random`` key.
        x: ``(n, d)`` data.
        n_components: the number of centers ``k`` (static).
        sample_weight: optional ``(n,)`` weights.

    Returns:
        ``(k, d)`` centers, all of them data points.
    """
    x = jnp.asarray(x)
    n, d = x.shape
    w = jnp.ones(n, x.dtype) if sample_weight is None else sample_weight
    trials = 2 + int(math.log(n_components))
    key_first, key_rest = jax.random.split(key)
    first = jax.random.categorical(key_first, _log_or_floor(w))
    centers = jnp.zeros((n_components, d), x.dtype).at[0].set(x[first])
    closest = jnp.sum((x - x[first]) ** 2, axis=1)

    def body(j, carry):
        centers, closest = carry
        logits = _log_or_floor(w * closest)
        candidates = jax.random.categorical(
            jax.random.fold_in(key_rest, j), logits, shape=(trials,)
        )
        new = jnp.minimum(closest[None, :], _sq_distances(x, x[candidates]).T)
        best = jnp.argmin(new @ w)
        return centers.at[j].set(x[candidates[best]]), new[best]

    centers, _ = jax.lax.fori_loop(1, n_components, body, (centers, closest))
    return centers


def _lloyd(x, centers, w, max_iter=100):
    """Lloyd's k-means iterations until the assignment stops changing."""
    k = centers.shape[0]

    def assign(c):
        return jnp.argmin(_sq_distances(x, c), axis=1)

    def cond(carry):
        _, _, changed, i = carry
        return changed & (i < max_iter)

    def body(carry):
        centers, labels, _, i = carry
        onehot = jax.nn.one_hot(labels, k, dtype=x.dtype) * w[:, None]
        counts = jnp.sum(onehot, axis=0)
        sums = onehot.T @ x
        # an empty cluster keeps its center
        safe = jnp.where(counts > 0, counts, 1.0)
        centers = jnp.where(counts[:, None] > 0, sums / safe[:, None], centers)
        new_labels = assign(centers)
        return centers, new_labels, jnp.any(new_labels != labels), i + 1

    labels = assign(centers)
    centers, _, _, _ = jax.lax.while_loop(
        cond, body, (centers, labels, jnp.asarray(True), 0)
    )
    return centers


@functools.partial(
    jax.jit, static_argnames=("n_components", "covariance_type", "method")
)
def init_gmm_jit(key, x, w, reg_covar, *, n_components, covariance_type, method):
    """:func:`init_gmm`'s jitted kernel, without validation (``w``: weights or
    ``None``)."""
    n = x.shape[0]
    weights = jnp.ones(n, x.dtype) if w is None else w
    if method == "random":
        resp = jax.random.uniform(key, (n, n_components), x.dtype)
        resp = resp / jnp.sum(resp, axis=1, keepdims=True)
    else:
        if method == "random_from_data":
            p = weights / jnp.sum(weights)
            idx = _choice_without_replacement(key, p, n_components)
            centers = x[idx]
        else:
            centers = kmeans_plusplus(key, x, n_components, w)
            if method == "kmeans":
                centers = _lloyd(x, centers, weights)
        labels = jnp.argmin(_sq_distances(x, centers), axis=1)
        resp = jax.nn.one_hot(labels, n_components, dtype=x.dtype)
    stats = two_pass_statistics(x, resp, w, covariance_type)
    return maximize(stats, reg_covar, covariance_type, expanded=False).gmm


def init_gmm(
    key,
    x,
    *,
    n_components: int,
    covariance_type: str = "full",
    method: str = "kmeans++",
    sample_weight=None,
    reg_covar=1e-6,
) -> GMM:
    """Initial mixture parameters from data, in pure JAX.

    Every method produces responsibilities and turns them into a model with one M
    step (so covariances, weights and means are consistent with the data):

    - ``"kmeans++"``: greedy k-means++ seeds, each sample assigned to its nearest.
    - ``"kmeans"``: the same seeds refined by Lloyd's iterations (jitted, until the
      assignment is stable, at most 100).
    - ``"random"``: uniform random responsibilities (all means start near the data
      mean — close to the symmetric saddle of the likelihood).
    - ``"random_from_data"``: ``k`` distinct data points drawn at random as seeds,
      each sample assigned to its nearest.

    Vmappable over ``key`` for many starts at once.

    Args:
        key: a ``jax.random`` key.
        x: ``(n, d)`` data with ``n >= n_components``.
        n_components: the number of components ``k`` (static).
        covariance_type: ``"full"``, ``"diag"``, ``"spherical"`` or ``"tied"``.
        method: one of ``"kmeans++"``, ``"kmeans"``, ``"random"``,
            ``"random_from_data"``.
        sample_weight: optional ``(n,)`` non-negative weights.
        reg_covar: added to the diagonal of the initial covariances.

    Returns:
        The initial :class:`GMM`.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm = gmmjax.init_gmm(jax.random.key(0), x, n_components=3,
        ...                       covariance_type="diag", method="kmeans")
        >>> gmm.means.shape, gmm.covariances.shape
        ((3, 2), (3, 2))
    """
    check_key(key)
    covariance_type = check_covariance_type(covariance_type)
    if not isinstance(method, str) or method not in INIT_METHODS:
        raise ValueError(f"method must be one of {INIT_METHODS}, got {method!r}")
    n_components = check_positive_int(n_components, "n_components")
    x = check_data(x)
    if x.shape[0] < n_components:
        raise ValueError(
            f"n_components={n_components} must be <= n_samples={x.shape[0]}"
        )
    w = check_sample_weight(sample_weight, x.shape[0], x.dtype)
    check_nonnegative_scalar(reg_covar, "reg_covar")
    return init_gmm_jit(
        key,
        x,
        w,
        reg_covar,
        n_components=n_components,
        covariance_type=covariance_type,
        method=method,
    )
