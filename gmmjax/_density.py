"""Exact mixture densities in log space: component terms, log-likelihood, posteriors."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from ._gmm import GMM
from ._levels import ByWork, fit_work
from ._linalg import inverse_lower
from ._validation import (
    check_data,
    check_key,
    check_positive_int,
    check_sample_weight,
)

__all__ = [
    "SMALL_D",
    "center",
    "check_gmm",
    "component_log_prob",
    "density_work",
    "log_det_precision_cholesky",
    "log_likelihood",
    "log_prob",
    "mahalanobis",
    "prepare",
    "responsibilities",
    "sample",
    "sample_jit",
    "total_log_likelihood",
    "weighted_log_prob",
]


def check_gmm(gmm) -> GMM:
    if not isinstance(gmm, GMM):
        raise TypeError(f"gmm must be a gmmjax.GMM, got {type(gmm).__name__}")
    return gmm


def prepare(gmm, x, sample_weight=None):
    """Validate ``(gmm, x, sample_weight)`` and bring them to one floating dtype."""
    check_gmm(gmm)
    x = check_data(x, gmm.n_features)
    dtype = jnp.result_type(gmm.dtype, x.dtype)
    x = x.astype(dtype)
    w = check_sample_weight(sample_weight, x.shape[0], dtype)
    return x, w


# Up to this many features the per-component products are written as broadcast
# multiply-adds that XLA fuses into one loop; beyond it, as matrix products. Tiny
# matrix products are slow on CPU, above all batched under ``vmap`` (restarts).
SMALL_D = 3


def center(gmm: GMM, x: jax.Array):
    """Shift data and means by the (gradient-stopped) mean of the means.

    Every kernel works on ``(x - c, mu - c)``: the results are mathematically
    unchanged but lose far fewer digits when the data sit far from the origin.
    Returns ``(xc (n, d), mc (k, d), c (d,))``.
    """
    means = gmm.means.astype(x.dtype)
    c = jax.lax.stop_gradient(jnp.mean(means, axis=0))
    return x - c, means - c, c


def mahalanobis(gmm: GMM, x: jax.Array) -> jax.Array:
    """Squared Mahalanobis distances ``(n, k)`` of every sample to every component.

    ``||(x_i - mu_j) P_j||^2`` with the precision Cholesky factor ``P_j``, computed on
    centered data (see :func:`center`). For ``full`` covariances all components
    share one ``(n, d) @ (d, k d)`` product with the stacked factors; ``diag`` and
    ``spherical`` expand the square into ``(n, d) @ (d, k)`` products, the way
    scikit-learn does, once ``d`` exceeds :data:`SMALL_D`.
    """
    xc, mc, _ = center(gmm, x)
    k, d = mc.shape
    ctype = gmm.covariance_type
    if ctype in ("full", "tied"):
        prec = gmm.precisions_cholesky.astype(x.dtype)
        if ctype == "tied":
            y = (xc @ prec)[:, None, :] - (mc @ prec)[None, :, :]
        elif d <= SMALL_D:
            y = jnp.sum(xc[:, None, :, None] * prec, axis=2) - jnp.einsum(
                "kd,kde->ke", mc, prec
            )
        else:
            stacked = jnp.moveaxis(prec, 0, 1).reshape(d, k * d)
            y = (xc @ stacked).reshape(-1, k, d) - jnp.einsum("kd,kde->ke", mc, prec)
        return jnp.sum(y**2, axis=-1)
    prec2 = jnp.exp(2 * gmm.log_diag).astype(x.dtype)
    if ctype == "spherical":
        prec2 = jnp.broadcast_to(prec2[:, None], (k, d))
    if d <= SMALL_D:
        return jnp.sum((xc[:, None, :] - mc) ** 2 * prec2, axis=-1)
    quad = (xc**2) @ prec2.T - 2 * xc @ (mc * prec2).T + jnp.sum(mc**2 * prec2, -1)
    # the expansion can round a tiny distance below zero
    return jnp.maximum(quad, 0.0)


def log_det_precision_cholesky(gmm: GMM) -> jax.Array:
    """``log|P_j|`` per component, ``(k,)`` (a scalar broadcast for ``tied``)."""
    if gmm.covariance_type == "spherical":
        return gmm.n_features * gmm.log_diag
    return jnp.sum(gmm.log_diag, axis=-1)


def _component_log_prob(gmm: GMM, x: jax.Array) -> jax.Array:
    d = gmm.n_features
    log_det = log_det_precision_cholesky(gmm).astype(x.dtype)
    return -0.5 * (d * math.log(2 * math.pi) + mahalanobis(gmm, x)) + log_det


def weighted_log_prob(gmm: GMM, x: jax.Array) -> jax.Array:
    """``log pi_j + log N(x_i | mu_j, Sigma_j)``, ``(n, k)``; no validation."""
    return gmm.log_weights.astype(x.dtype) + _component_log_prob(gmm, x)


def component_log_prob(gmm: GMM, x) -> jax.Array:
    """Log-density of every sample under every component, without the weights.

    ``out[i, j] = log N(x_i | mu_j, Sigma_j)``, computed from the precision Cholesky
    factor ``P_j`` (no matrix inverse):
    ``-d/2 log(2 pi) + log|P_j| - ||(x_i - mu_j) P_j||^2 / 2``.

    Args:
        gmm: the mixture, with ``d`` features and ``k`` components.
        x: ``(n, d)`` data.

    Returns:
        ``(n, k)`` array in the promoted floating dtype of ``gmm`` and ``x``.

    Example:
        >>> import gmmjax
        >>> gmm = gmmjax.GMM.from_natural([1.0], [[0.0]], [1.0],
        ...                               covariance_type="spherical")
        >>> round(float(gmmjax.component_log_prob(gmm, [[0.0]])[0, 0]), 6)
        -0.918939
    """
    x, _ = prepare(gmm, x)
    return _component_log_prob_jit(gmm, x)


def log_prob(gmm: GMM, x) -> jax.Array:
    """Log-density of the mixture at each sample.

    ``log p(x_i) = logsumexp_j (log pi_j + log N(x_i | mu_j, Sigma_j))``.

    Args:
        gmm: the mixture.
        x: ``(n, d)`` data.

    Returns:
        ``(n,)`` log-densities.

    Example:
        >>> import gmmjax
        >>> gmm = gmmjax.GMM.from_natural([0.5, 0.5], [[-1.0], [1.0]], [1.0, 1.0],
        ...                               covariance_type="spherical")
        >>> gmmjax.log_prob(gmm, [[0.0], [5.0]]).shape
        (2,)
    """
    x, _ = prepare(gmm, x)
    return _log_prob(gmm, x)


def total_log_likelihood(gmm: GMM, x: jax.Array, sample_weight=None) -> jax.Array:
    """The (weighted) sum of ``log p(x_i)``; no validation."""
    lp = logsumexp(weighted_log_prob(gmm, x), axis=-1)
    if sample_weight is None:
        return jnp.sum(lp)
    return jnp.sum(jnp.where(sample_weight > 0, sample_weight * lp, 0.0))


def log_likelihood(gmm: GMM, x, *, sample_weight=None) -> jax.Array:
    """Total log-likelihood: the **sum** of ``log p(x_i)`` over samples.

    With ``sample_weight`` it is ``sum_i w_i log p(x_i)``: integer weights count
    repeated rows. This is the objective whose gradient and Hessian the landscape
    module studies (divide by ``n`` for scikit-learn's mean ``score``).

    Args:
        gmm: the mixture.
        x: ``(n, d)`` data.
        sample_weight: optional ``(n,)`` non-negative weights, not all zero.

    Returns:
        A scalar.

    Example:
        >>> import gmmjax
        >>> gmm = gmmjax.GMM.from_natural([1.0], [[0.0]], [1.0],
        ...                               covariance_type="spherical")
        >>> round(float(gmmjax.log_likelihood(gmm, [[0.0], [0.0]])), 6)
        -1.837877
    """
    x, w = prepare(gmm, x, sample_weight)
    return _total_log_likelihood(gmm, x, w)


def responsibilities(gmm: GMM, x, *, beta=1.0) -> jax.Array:
    """Tempered posterior probabilities of the components.

    ``r_ij = softmax_j(beta * (log pi_j + log N(x_i | mu_j, Sigma_j)))``. ``beta = 1``
    gives the ordinary posteriors of EM; ``beta < 1`` flattens them as in
    deterministic annealing (``beta = 0`` is uniform).

    Args:
        gmm: the mixture.
        x: ``(n, d)`` data.
        beta: inverse temperature, a scalar (may be traced).

    Returns:
        ``(n, k)``; every row sums to one.

    Example:
        >>> import gmmjax
        >>> gmm = gmmjax.GMM.from_natural([0.5, 0.5], [[-1.0], [1.0]], [1.0, 1.0],
        ...                               covariance_type="spherical")
        >>> [round(float(r), 4) for r in gmmjax.responsibilities(gmm, [[0.0]])[0]]
        [0.5, 0.5]
    """
    x, _ = prepare(gmm, x)
    return _responsibilities(gmm, x, beta)


# The public functions above validate on the host, then run one jitted program
# per shape (called eagerly, the operations would each compile on their own),
# small ones compiled at XLA's level 0 (gmmjax._levels)
def density_work(gmm: GMM, x, *_):
    """The work of a density program of ``gmm`` on ``x`` (:func:`fit_work`)."""
    return fit_work(x, gmm.n_components)


_component_log_prob_jit = ByWork(_component_log_prob, density_work)


@partial(ByWork, work=density_work)
def _log_prob(gmm: GMM, x):
    return logsumexp(weighted_log_prob(gmm, x), axis=-1)


_total_log_likelihood = ByWork(total_log_likelihood, density_work)


@partial(ByWork, work=density_work)
def _responsibilities(gmm: GMM, x, beta):
    return jax.nn.softmax(beta * weighted_log_prob(gmm, x), axis=-1)


def sample(key, gmm: GMM, n: int):
    """Draw ``n`` samples: a component ``z ~ Cat(pi)``, then ``x ~ N(mu_z, Sigma_z)``.

    Args:
        key: a ``jax.random`` key.
        gmm: the mixture.
        n: the number of samples (static).

    Returns:
        ``(x, labels)``: ``(n, d)`` samples and their ``(n,)`` integer components.

    Example:
        >>> import jax, gmmjax
        >>> gmm = gmmjax.GMM.from_natural([0.5, 0.5], [[-5.0], [5.0]], [1.0, 1.0],
        ...                               covariance_type="spherical")
        >>> x, labels = gmmjax.sample(jax.random.key(0), gmm, 100)
        >>> x.shape, labels.shape
        ((100, 1), (100,))
    """
    check_key(key)
    check_gmm(gmm)
    return sample_jit(key, gmm, check_positive_int(n, "n"))


@partial(
    ByWork,
    work=lambda key, gmm, n: n * gmm.n_components * gmm.n_features**2,
    static_argnums=2,
)
def sample_jit(key, gmm: GMM, n: int):
    """:func:`sample`'s jitted kernel, without validation (``n`` static)."""
    key_z, key_x = jax.random.split(key)
    labels = jax.random.categorical(key_z, gmm.logits, shape=(n,))
    z = jax.random.normal(key_x, (n, gmm.n_features), dtype=gmm.dtype)
    ctype = gmm.covariance_type
    if ctype in ("diag", "spherical"):
        scale = jnp.exp(-gmm.log_diag)
        if ctype == "spherical":
            scale = scale[:, None]
        return gmm.means[labels] + z * scale[labels], labels
    # x - mu = P^{-T} z has covariance (P P^T)^{-1}
    root = inverse_lower(jnp.swapaxes(gmm.precisions_cholesky, -1, -2))
    if ctype == "tied":
        noise = z @ root.T
    else:
        noise = jnp.einsum("nde,ne->nd", root[labels], z)
    return gmm.means[labels] + noise, labels
