"""Expectation-maximization: the E step, the M step, and the ``EM`` fitter."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from ._density import prepare, weighted_log_prob
from ._gmm import GMM, pack_cholesky
from ._validation import (
    check_covariance_type,
    check_data,
    check_nonnegative_scalar,
    check_sample_weight,
)


class StepInfo(NamedTuple):
    """Diagnostics of one fitter step, read by the loop driver.

    Attributes:
        log_likelihood: ``()`` total (weighted) log-likelihood of the parameters the
            step started from.
        degenerate: ``()`` int32, index of the first component that emptied or
            collapsed onto a point during the step, ``-1`` if none.
        can_stop: ``()`` bool, whether the driver may test convergence after this
            step (``False`` while an annealing schedule is still below ``beta = 1``).

    Example:
        >>> import jax, gmmjax
        >>> x = jax.numpy.asarray(gmmjax.datasets.faithful())
        >>> gmm = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> fitter = gmmjax.EM()
        >>> state, info = fitter.step(fitter.init(gmm, x), x)
        >>> int(info.degenerate), bool(info.can_stop)
        (-1, True)
    """

    log_likelihood: jax.Array
    degenerate: jax.Array
    can_stop: jax.Array


class EMState(NamedTuple):
    """What EM carries from one step to the next: just the model.

    Attributes:
        gmm: the current :class:`GMM`.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> state = gmmjax.EM().init(gmm, x)
        >>> state.gmm is gmm
        True
    """

    gmm: GMM


def e_step(gmm: GMM, x, *, beta=1.0):
    """The E step: tempered log-responsibilities and the per-sample log-density.

    ``log r_ij = log_softmax_j(beta * (log pi_j + log N(x_i | mu_j, Sigma_j)))`` and
    ``log p(x_i) = logsumexp_j(log pi_j + log N(x_i | mu_j, Sigma_j))`` (untempered).

    Args:
        gmm: the current mixture.
        x: ``(n, d)`` data.
        beta: inverse temperature of deterministic annealing (``1`` for plain EM).

    Returns:
        ``(log_resp, log_prob)`` with shapes ``(n, k)`` and ``(n,)``.

    Example:
        >>> import gmmjax
        >>> gmm = gmmjax.GMM.from_natural([0.5, 0.5], [[-1.0], [1.0]], [1.0, 1.0],
        ...                               covariance_type="spherical")
        >>> log_resp, log_prob = gmmjax.e_step(gmm, [[0.0], [2.0]])
        >>> log_resp.shape, log_prob.shape
        ((2, 2), (2,))
    """
    x, _ = prepare(gmm, x)
    return _e_step(gmm, x, beta)


def _e_step(gmm: GMM, x, beta):
    joint = weighted_log_prob(gmm, x)
    log_prob = logsumexp(joint, axis=-1)
    tempered = beta * joint
    log_resp = tempered - logsumexp(tempered, axis=-1, keepdims=True)
    return log_resp, log_prob


class _Moments(NamedTuple):
    gmm: GMM
    counts: jax.Array  # (k,) effective counts without the floor
    spread: jax.Array  # (k,) trace of each component's scatter / count, before reg


def m_step(x, resp, *, covariance_type="full", sample_weight=None, reg_covar=1e-6):
    """The M step: maximum-likelihood parameters given responsibilities.

    With ``N_j = sum_i w_i r_ij + 10 eps`` (scikit-learn's floor on the counts):
    ``pi_j = N_j / sum_l N_l``, ``mu_j = sum_i w_i r_ij x_i / N_j`` and
    ``Sigma_j = sum_i w_i r_ij (x_i - mu_j)(x_i - mu_j)^T / N_j + reg_covar I``
    (``diag`` keeps the diagonal, ``spherical`` its mean, ``tied`` pools the scatter
    of all components over ``sum_j N_j``).

    Args:
        x: ``(n, d)`` data.
        resp: ``(n, k)`` responsibilities (rows on the simplex).
        covariance_type: ``"full"``, ``"diag"``, ``"spherical"`` or ``"tied"``.
        sample_weight: optional ``(n,)`` non-negative sample weights.
        reg_covar: non-negative value added to every variance.

    Returns:
        The new :class:`GMM`.

    Example:
        >>> import jax.numpy as jnp, gmmjax
        >>> x = jnp.array([[0.0], [1.0], [10.0], [11.0]])
        >>> resp = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        >>> gmm = gmmjax.m_step(x, resp, covariance_type="diag", reg_covar=0.0)
        >>> [round(float(m), 3) for m in gmm.means[:, 0]]
        [0.5, 10.5]
    """
    covariance_type = check_covariance_type(covariance_type)
    x = check_data(x)
    resp = jnp.asarray(resp, x.dtype)
    if resp.ndim != 2 or resp.shape[0] != x.shape[0]:
        raise ValueError(
            f"resp must have shape (n, k) = ({x.shape[0]}, k), got {resp.shape}"
        )
    w = check_sample_weight(sample_weight, x.shape[0], x.dtype)
    check_nonnegative_scalar(reg_covar, "reg_covar")
    return _m_step(x, resp, w, reg_covar, covariance_type).gmm


def _m_step(x, resp, sample_weight, reg_covar, covariance_type) -> _Moments:
    dtype = x.dtype
    eps = jnp.finfo(dtype).eps
    if sample_weight is not None:
        resp = resp * sample_weight[:, None]
    counts = jnp.sum(resp, axis=0)
    nk = counts + 10 * eps
    means = (resp.T @ x) / nk[:, None]
    d = x.shape[1]
    if covariance_type in ("full", "tied"):
        diff = x[:, None, :] - means[None, :, :]
        scatter = jnp.einsum("nk,nkd,nke->kde", resp, diff, diff)
        spread = jnp.trace(scatter, axis1=-2, axis2=-1) / nk
        if covariance_type == "full":
            cov = scatter / nk[:, None, None]
        else:
            cov = jnp.sum(scatter, axis=0) / jnp.sum(nk)
        cov = cov + reg_covar * jnp.eye(d, dtype=dtype)
        chol = jnp.linalg.cholesky(cov)
        eye = jnp.broadcast_to(jnp.eye(d, dtype=dtype), chol.shape)
        prec_chol = jnp.swapaxes(solve_triangular(chol, eye, lower=True), -1, -2)
        log_diag, off_diag = pack_cholesky(prec_chol)
    else:
        diff = x[:, None, :] - means[None, :, :]
        var = jnp.einsum("nk,nkd->kd", resp, diff**2) / nk[:, None]
        spread = jnp.sum(var, axis=-1)
        if covariance_type == "spherical":
            var = jnp.mean(var, axis=-1)
        log_diag, off_diag = -0.5 * jnp.log(var + reg_covar), None
    logits = jnp.log(nk / jnp.sum(nk))
    gmm = GMM(logits, means, log_diag, off_diag, covariance_type)
    return _Moments(gmm, counts, spread)


def degenerate_component(counts, spread, x, sample_weight):
    """Index of the first empty or collapsed component, ``-1`` if there is none.

    A component is *empty* when it holds less than a thousandth of an average
    sample's weight, and *collapsed* when the trace of its scatter (before
    ``reg_covar``) is below the rounding level of the data: ``10 eps`` times the
    total variance plus ``100 eps^2`` times the squared magnitude of the data.
    """
    dtype = x.dtype
    eps = jnp.finfo(dtype).eps
    n = x.shape[0]
    if sample_weight is None:
        sample_weight = jnp.ones(n, dtype)
    total = jnp.sum(sample_weight)
    mean = sample_weight @ x / total
    variance = jnp.sum(sample_weight @ (x - mean) ** 2) / total
    floor = 10 * eps * variance + 100 * eps**2 * jnp.sum(mean**2)
    bad = (counts < 1e-3 * total / n) | (spread <= floor)
    return jnp.where(jnp.any(bad), jnp.argmax(bad), -1).astype(jnp.int32)


def _em_update(gmm: GMM, x, sample_weight, reg_covar, beta):
    log_resp, log_prob = _e_step(gmm, x, beta)
    if sample_weight is None:
        ll = jnp.sum(log_prob)
    else:
        ll = jnp.sum(jnp.where(sample_weight > 0, sample_weight * log_prob, 0.0))
    moments = _m_step(
        x, jnp.exp(log_resp), sample_weight, reg_covar, gmm.covariance_type
    )
    degenerate = degenerate_component(moments.counts, moments.spread, x, sample_weight)
    return moments.gmm, StepInfo(ll, degenerate, jnp.asarray(True))


@jax.jit
def _em_step_jit(gmm, x, sample_weight, reg_covar, beta):
    return _em_update(gmm, x, sample_weight, reg_covar, beta)[0]


def em_step(gmm: GMM, x, *, sample_weight=None, reg_covar=1e-6, beta=1.0) -> GMM:
    """One jitted EM iteration: an E step at inverse temperature ``beta``, then an M
    step.

    At ``beta = 1`` the total log-likelihood never decreases (up to rounding).
    ``reg_covar`` and ``beta`` are traced: new values do not recompile.

    Args:
        gmm: the current mixture.
        x: ``(n, d)`` data.
        sample_weight: optional ``(n,)`` non-negative weights.
        reg_covar: added to the diagonal of every covariance.
        beta: inverse temperature of the responsibilities (deterministic annealing).

    Returns:
        The updated :class:`GMM`.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> gmm1 = gmmjax.em_step(gmm, x)
        >>> bool(gmmjax.log_likelihood(gmm1, x) >= gmmjax.log_likelihood(gmm, x))
        True
    """
    x, w = prepare(gmm, x, sample_weight)
    check_nonnegative_scalar(reg_covar, "reg_covar")
    return _em_step_jit(gmm, x, w, reg_covar, beta)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EM:
    """The expectation-maximization fitter, for every covariance type.

    A frozen pytree whose ``reg_covar`` is a traced leaf: fitting with a new value
    does not recompile. Use it with :func:`gmmjax.fit`, :func:`gmmjax.fit_trace` or
    :func:`gmmjax.multistart`.

    Args:
        reg_covar: non-negative value added to the diagonal of every covariance in
            the M step (scikit-learn's convention), keeping covariances positive
            definite.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> result = gmmjax.fit(gmmjax.EM(reg_covar=1e-6), gmm0, x)
        >>> gmmjax.Status(int(result.status)).name
        'CONVERGED'
    """

    reg_covar: float | jax.Array = 1e-6

    def check(self) -> None:
        """Validate the hyperparameters (called by the drivers at the API edge)."""
        check_nonnegative_scalar(self.reg_covar, "reg_covar")

    def init(self, gmm: GMM, x, *, sample_weight=None) -> EMState:
        """Start state: the initial model."""
        return EMState(gmm)

    def step(self, state: EMState, x, *, sample_weight=None, beta=1.0):
        """One EM iteration; returns ``(EMState, StepInfo)``."""
        gmm, info = _em_update(state.gmm, x, sample_weight, self.reg_covar, beta)
        return EMState(gmm), info


jax.tree_util.register_dataclass(EM, data_fields=["reg_covar"], meta_fields=[])
