"""Expectation-maximization: the E step, the M step, and the ``EM`` fitter."""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ._degeneracy import (
    Spread,
    degenerate_component,
    reseed_component,
    smallest_variance,
)
from ._density import (
    SMALL_D,
    center,
    log_det_precision_cholesky,
    mahalanobis,
    prepare,
    weighted_log_prob,
)
from ._gmm import GMM, precision_leaves
from ._validation import (
    check_count,
    check_covariance_type,
    check_data,
    check_nonnegative_scalar,
    check_sample_weight,
    concrete,
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
    """What EM carries from one step to the next: the model and the re-seed count.

    Attributes:
        gmm: the current :class:`GMM`.
        n_reseeds: ``()`` int32, how many components have been re-seeded so far
            (see ``EM(max_reseeds=...)``).

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> state = gmmjax.EM().init(gmm, x)
        >>> state.gmm is gmm
        True
    """

    gmm: GMM
    n_reseeds: jax.Array | int = 0


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


def _is_one(beta) -> bool:
    value = concrete(beta)
    return value is not None and value.shape == () and value == 1


# Up to this many components the reductions over components are written out as
# elementwise maxima and sums of the component slices, which XLA fuses with the
# shift and the exponentials instead of running separate reductions along a tiny
# axis (measured: 8% less time for 1,000 restarts of K=3, N=200).
_UNROLL_COMPONENTS = 8


def _over_components(op, reduce, a, axis):
    """``reduce(a, axis)`` as a chain of ``op`` over the slices when the axis is
    short."""
    k = a.shape[axis]
    if k > _UNROLL_COMPONENTS:
        return reduce(a, axis=axis)
    parts = [jax.lax.index_in_dim(a, j, axis, keepdims=False) for j in range(k)]
    out = parts[0]
    for part in parts[1:]:
        out = op(out, part)
    return out


def _posteriors(joint, beta, axis=-1):
    """Tempered responsibilities and the untempered log-density from ``joint``.

    ``joint`` holds ``log pi_j + log N(x_i | mu_j, Sigma_j)`` with the components
    along ``axis``. One max-shift ``m_i`` serves everything:
    ``r = exp(beta (joint - m)) / sum(...)`` and ``log p(x_i) = m_i + log t_i`` with
    ``t_i = sum_j exp(joint_ij - m_i)``. When ``beta`` is the concrete value 1
    (plain EM) the ``n k`` exponentials are computed once and shared.

    Returns:
        ``(resp, log_prob, ll)``: the responsibilities (``joint``'s shape),
        ``log p(x_i)`` (``axis`` dropped) and ``sum_i log p(x_i)``, computed by
        :func:`_sum_log` from ``m`` and ``t`` (far fewer logarithms than ``n``).
    """
    k = joint.shape[axis]
    top = _over_components(jnp.maximum, jnp.max, joint, axis)
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
    shifted = joint - jnp.expand_dims(top, axis)
    plain = jnp.exp(shifted)
    total = _over_components(jnp.add, jnp.sum, plain, axis)
    log_prob = top + jnp.log(total)
    ll = jnp.sum(top) + _sum_log(total, k)
    if _is_one(beta):
        return plain / jnp.expand_dims(total, axis), log_prob, ll
    tempered = jnp.exp(beta * shifted)
    norm = _over_components(jnp.add, jnp.sum, tempered, axis)
    return tempered / jnp.expand_dims(norm, axis), log_prob, ll


def _sum_log(t, k: int):
    """``sum_i log t_i`` for ``t_i`` in ``[1, k]`` (a sum of ``k`` shifted
    exponentials, the largest 1) with one logarithm per block of ``t``'s.

    A logarithm costs several exponentials, and the E step needs only the sum. The
    product of a block of ``b`` values stays below ``k**b``, kept under the square
    root of the dtype's largest number, so it neither overflows nor underflows;
    its rounding, ``b eps`` relative, adds ``b eps`` per block: the same ``n eps``
    in total as summing the ``n`` logarithms. Zeros, infinities and NaNs propagate
    as they would through the logarithms.
    """
    n = t.shape[0]
    limit = math.log(jnp.finfo(t.dtype).max) / 2
    block = int(min(64, max(1, limit // math.log(max(k, 2)))))
    head = n - n % block
    if block == 1 or head == 0:
        return jnp.sum(jnp.log(t))
    blocks = jnp.prod(t[:head].reshape(-1, block), axis=1)
    return jnp.sum(jnp.log(blocks)) + jnp.sum(jnp.log(t[head:]))


def _e_step(gmm: GMM, x, beta):
    joint = weighted_log_prob(gmm, x)
    log_prob = logsumexp(joint, axis=-1)
    tempered = beta * joint
    log_resp = tempered - logsumexp(tempered, axis=-1, keepdims=True)
    return log_resp, log_prob


class _Moments(NamedTuple):
    gmm: GMM
    counts: jax.Array  # (k,) effective counts without the floor
    spread: Spread  # (k,) thinnest variance and its rounding level


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


# Rows per chunk of the sample-wise work: chunks keep the working set of the
# per-sample intermediates near 2 MiB in float64 (in cache while both products
# of the expanded step read them), whatever n, so an EM step
# needs O(n k + n d + k d^2) memory beyond the data.
_CHUNK_ELEMENTS = 2**18


def _chunk_rows(width: int) -> int:
    """Rows per chunk when every row carries ``width`` intermediate numbers."""
    return max(256, _CHUNK_ELEMENTS // width)


def _split_rows(arrays, rows: int):
    """``(head, tail)``: the leading ``n // rows`` chunks of every array stacked
    on a new leading axis, and the remaining rows (``None`` when none remain)."""
    n = jax.tree_util.tree_leaves(arrays)[0].shape[0]
    full = n // rows

    def head(a):
        return a[: full * rows].reshape(full, rows, *a.shape[1:])

    tail = None
    if full * rows < n:
        tail = jax.tree_util.tree_map(lambda a: a[full * rows :], arrays)
    return jax.tree_util.tree_map(head, arrays), tail


def _scan_rows(fn, arrays, rows: int):
    """Run ``fn(*arrays) -> (total, per_row)`` ``rows`` rows at a time.

    ``total`` (a pytree) sums over rows and is added up over the chunks;
    ``per_row`` (an array with one entry per row, or ``None``) is concatenated.
    ``None`` entries of ``arrays`` pass through.
    """
    n = jax.tree_util.tree_leaves(arrays)[0].shape[0]
    if n <= rows:
        return fn(*arrays)
    head, tail = _split_rows(arrays, rows)

    def body(total, block):
        part, per_row = fn(*block)
        return jax.tree_util.tree_map(jnp.add, total, part), per_row

    first = jax.tree_util.tree_map(lambda a: a[0], head)
    shapes = jax.eval_shape(fn, *first)[0]
    zero = jax.tree_util.tree_map(lambda t: jnp.zeros(t.shape, t.dtype), shapes)
    total, per_row = jax.lax.scan(body, zero, head)
    if per_row is not None:
        per_row = per_row.reshape(-1, *per_row.shape[2:])
    if tail is not None:
        part, tail_rows = fn(*tail)
        total = jax.tree_util.tree_map(jnp.add, total, part)
        if per_row is not None:
            per_row = jnp.concatenate([per_row, tail_rows])
    return total, per_row


def _map_rows(fn, x, rows: int):
    """``fn(x)`` for a row-wise ``fn``, run ``rows`` rows at a time."""
    n = x.shape[0]
    if n <= rows:
        return fn(x)
    head, tail = _split_rows(x, rows)
    out = jax.lax.map(fn, head)
    out = out.reshape(-1, *out.shape[2:])
    return out if tail is None else jnp.concatenate([out, fn(tail)])


def _scatter(xc, resp, mc):
    """Weighted scatter matrices ``S_j = sum_i r_ij (x_i - m_j)(x_i - m_j)^T``.

    ``(k, d, d)`` from centered data ``xc (n, d)``, weights ``resp (n, k)`` and the
    centered weighted means ``mc (k, d)``. Large ``d``: with
    ``W_ij = r_ij (x_i - m_j)``, ``S_j = W_j^T (x - m_j) = W_j^T xc - (sum_i W_ij)
    m_j^T`` is one ``(d, n) @ (n, k d)`` product; the correction term removes the
    rounding of ``sum_i W_ij = 0`` to first order, and nothing is squared around a
    distant center, so the error stays at the level of the direct formula. Small
    ``d``: the ``d (d + 1) / 2`` distinct entries as sums along the sample axis,
    kept last so that the reductions run over contiguous memory.
    """
    d = xc.shape[1]
    k = mc.shape[0]
    if d <= SMALL_D:
        rows, cols = np.triu_indices(d)
        delta = xc.T - mc[:, :, None]
        weighted = resp.T[:, None, :] * delta[:, rows]
        packed = jnp.sum(weighted * delta[:, cols], axis=-1)
        out = jnp.zeros((k, d, d), xc.dtype).at[:, rows, cols].set(packed)
        return out.at[:, cols, rows].set(packed)

    def part(xs, rs):
        w = (rs[:, :, None] * (xs[:, None, :] - mc)).reshape(-1, k * d)
        # (d, n) @ (n, k d): the data operand transposed is the fast layout on CPU
        return (xs.T @ w, jnp.sum(w, axis=0)), None

    (s, wsum), _ = _scan_rows(part, (xc, resp), _chunk_rows(k * d))
    s = jnp.moveaxis(s.reshape(d, k, d), 1, 0) - mc[:, :, None] * wsum.reshape(k, 1, d)
    return 0.5 * (s + jnp.swapaxes(s, -1, -2))


def _m_step(x, resp, sample_weight, reg_covar, covariance_type, center=None):
    """Moments of the M step; ``center (d,)`` shifts the data first (the mean of
    the data when not given), which keeps float32 accurate far from the origin."""
    eps = jnp.finfo(x.dtype).eps
    if sample_weight is not None:
        resp = resp * sample_weight[:, None]
    if center is None:
        center = jnp.mean(x, axis=0)
    xc = x - center
    counts = jnp.sum(resp, axis=0)
    nk = counts + 10 * eps
    d = x.shape[1]
    if d <= SMALL_D:
        # sums along the last (sample) axis vectorize; tiny products do not
        mc = jnp.sum(resp.T[:, None, :] * xc.T, axis=-1) / nk[:, None]
    else:
        mc = (resp.T @ xc) / nk[:, None]
    if covariance_type in ("full", "tied"):
        scatter = _scatter(xc, resp, mc)
        if covariance_type == "full":
            cov = scatter / nk[:, None, None]
        else:
            cov = jnp.sum(scatter, axis=0) / jnp.sum(nk)
        spread = smallest_variance(
            nk,
            mc + center,
            center,
            scatter / nk[:, None, None],
            covariance_type,
            reg_covar,
        )
    elif d <= SMALL_D:
        delta = xc.T - mc[:, :, None]
        cov = jnp.sum(resp.T[:, None, :] * delta**2, axis=-1) / nk[:, None]
    else:
        # scikit-learn's expansion as one (k, n) @ (n, d) product, around the
        # center; clamp the rounding of a vanishing variance at zero
        cov = jnp.maximum((resp.T @ xc**2) / nk[:, None] - mc**2, 0.0)
    if covariance_type == "diag":
        spread = smallest_variance(
            nk, mc + center, center, cov, covariance_type, reg_covar
        )
    elif covariance_type == "spherical":
        spread = smallest_variance(
            nk, mc + center, center, jnp.sum(cov, -1), covariance_type, reg_covar
        )
        cov = jnp.mean(cov, axis=-1)
    gmm = _model(nk, mc + center, cov, reg_covar, covariance_type)
    return _Moments(gmm, counts, spread)


def _model(nk, means, cov, reg_covar, covariance_type) -> GMM:
    """The M step's :class:`GMM` from floored counts ``nk``, means and covariances
    before ``reg_covar`` (``(k, d, d)``, ``(d, d)``, ``(k, d)`` or ``(k,)``)."""
    if covariance_type in ("full", "tied"):
        eye = jnp.eye(means.shape[1], dtype=means.dtype)
        log_diag, off_diag = precision_leaves(cov + reg_covar * eye)
    else:
        log_diag, off_diag = -0.5 * jnp.log(cov + reg_covar), None
    logits = jnp.log(nk / jnp.sum(nk))
    return GMM(logits, means, log_diag, off_diag, covariance_type)


# ------------------------------------------------- the expanded (float64) EM step
#
# log pi_j + log N(x | mu_j, Sigma_j) is a quadratic polynomial in x, so it is a
# linear combination of the monomials f(x) = (x_a x_b for a <= b, x_a, 1). With
# every sample's monomials in the rows of F (n, p), the E step is the one product
# C @ F^T with the (k, p) coefficients C, and the sufficient statistics of the M
# step are the one product R @ F with the responsibilities R (k, n): counts,
# first and second moments of every component at once. Both products share F
# across components and, under vmap, across restarts, which turns many tiny
# per-component products into a few large ones. Expanding the square costs digits
# when a component is tight and far from the center: in float64 that is about
# eps (|mu - c| / sigma)^2, far below every tolerance, so float64 always takes
# this route; float32 takes it while that factor is moderate and otherwise falls
# back on the centered two-pass kernels above.


def _monomials(covariance_type: str, d: int):
    """Index pairs ``(rows, cols)`` of the second-order monomials ``x_a x_b``."""
    if covariance_type in ("full", "tied"):
        return np.triu_indices(d)
    return np.arange(d), np.arange(d)


def _features(xc, covariance_type: str):
    """``F (n, p)``: second-order monomials, the coordinates, and a column of ones.

    ``spherical`` needs only ``sum_a x_a^2`` of the second order.
    """
    rows, cols = _monomials(covariance_type, xc.shape[1])
    second = xc[:, rows] * xc[:, cols]
    if covariance_type == "spherical":
        second = jnp.sum(second, axis=1, keepdims=True)
    ones = jnp.ones((xc.shape[0], 1), xc.dtype)
    return jnp.concatenate([second, xc, ones], axis=1)


def _coefficients(gmm: GMM, c, dtype):
    """``C (k, p)`` with ``F(x - c) @ C^T = log pi_j + log N(x | mu_j, Sigma_j)``.

    With the precision ``A_j = P_j P_j^T`` and ``m_j = mu_j - c``:
    ``-1/2 (x - m)^T A (x - m) = -1/2 x^T A x + (A m)^T x - 1/2 m^T A m``.
    """
    k, d = gmm.means.shape
    ctype = gmm.covariance_type
    m = gmm.means.astype(dtype) - c
    if ctype in ("full", "tied"):
        prec_chol = gmm.precisions_cholesky.astype(dtype)
        a = prec_chol @ jnp.swapaxes(prec_chol, -1, -2)
        a = jnp.broadcast_to(a, (k, d, d))
        rows, cols = _monomials(ctype, d)
        # x_a x_b and x_b x_a share one monomial when a < b
        second = (
            -0.5 * np.where(rows == cols, 1.0, 2.0).astype(dtype) * a[:, rows, cols]
        )
        am = jnp.einsum("kab,kb->ka", a, m)
    else:
        prec = jnp.exp(2 * gmm.log_diag).astype(dtype)
        if ctype == "spherical":
            prec = prec[:, None]
        second = jnp.broadcast_to(-0.5 * prec, (k, 1 if ctype == "spherical" else d))
        am = prec * m
    log_det = log_det_precision_cholesky(gmm).astype(dtype)
    constant = (
        gmm.log_weights.astype(dtype)
        + log_det
        - 0.5 * (d * math.log(2 * math.pi) + jnp.sum(m * am, axis=-1))
    )
    return jnp.concatenate([second, am, constant[:, None]], axis=1)


def _expanded_statistics(coef, c, x, w, beta, covariance_type):
    """``((R^T F_w (k, p), sum_i w_i log p(x_i)), log p(x_i) (n,))``, chunk by
    chunk."""
    k, p = coef.shape

    def chunk(xs, ws):
        f = _features(xs - c, covariance_type)
        # components first, samples last: the reductions over components then
        # run along contiguous rows of samples (k is often tiny)
        resp, log_prob, ll = _posteriors(coef @ f.T, beta, axis=0)
        if ws is None:
            return (resp @ f, ll), log_prob
        ll = jnp.sum(jnp.where(ws > 0, ws * log_prob, 0.0))
        return (resp @ (f * ws[:, None]), ll), log_prob

    return _scan_rows(chunk, (x, w), _chunk_rows(p + 2 * k))


def _expanded_moments(stats, c, reg_covar, covariance_type) -> _Moments:
    """The M step from ``R^T F_w``: counts, means and covariances.

    With the raw sums ``N_j``, ``s_j = sum r x`` and ``Q_j = sum r x x^T`` (about
    ``c``), the floored ``N'_j = N_j + 10 eps`` and ``m_j = s_j / N'_j``, the
    scatter ``sum_i r_ij (x_i - m_j)(x_i - m_j)^T`` is exactly
    ``Q_j - (2 N'_j - N_j) m_j m_j^T``: the same covariance as the two-pass
    formula, empty components included.
    """
    k, p = stats.shape
    dtype = stats.dtype
    d = c.shape[0]
    q = p - d - 1
    counts = stats[:, -1]
    nk = counts + 10 * jnp.finfo(dtype).eps
    mc = stats[:, q : q + d] / nk[:, None]
    shrink = (2 - counts / nk)[:, None]
    if covariance_type in ("full", "tied"):
        rows, cols = _monomials(covariance_type, d)
        raw = jnp.zeros((k, d, d), dtype).at[:, rows, cols].set(stats[:, :q])
        raw = raw.at[:, cols, rows].set(stats[:, :q])
        scatter = raw - (nk * (2 - counts / nk))[:, None, None] * (
            mc[:, :, None] * mc[:, None, :]
        )
        # rounding can leave a vanishing variance a hair below zero
        diag = jnp.diagonal(scatter, axis1=-2, axis2=-1)
        scatter = scatter + jax.vmap(jnp.diag)(jnp.maximum(diag, 0.0) - diag)
        if covariance_type == "full":
            cov = scatter / nk[:, None, None]
        else:
            cov = jnp.sum(scatter, axis=0) / jnp.sum(nk)
        second = scatter / nk[:, None, None]
    else:
        mean_square = stats[:, :q] / nk[:, None]
        if covariance_type == "diag":
            cov = jnp.maximum(mean_square - shrink * mc**2, 0.0)
            second = cov
        else:
            total = mean_square[:, 0] - shrink[:, 0] * jnp.sum(mc**2, axis=-1)
            second = jnp.maximum(total, 0.0)
            cov = second / d
    spread = smallest_variance(
        nk, mc + c, c, second, covariance_type, reg_covar, expanded=True
    )
    gmm = _model(nk, mc + c, cov, reg_covar, covariance_type)
    return _Moments(gmm, counts, spread)


def _expanded_update(gmm: GMM, x, sample_weight, reg_covar, beta):
    """One EM step by the expanded route: ``(moments, total log-likelihood,
    log p(x_i))``."""
    c = jax.lax.stop_gradient(jnp.mean(x, axis=0))
    coef = _coefficients(gmm, c, x.dtype)
    (stats, ll), log_prob = _expanded_statistics(
        coef, c, x, sample_weight, beta, gmm.covariance_type
    )
    moments = _expanded_moments(stats, c, reg_covar, gmm.covariance_type)
    return moments, ll, log_prob


def _two_pass_update(gmm: GMM, x, sample_weight, reg_covar, beta):
    """One EM step by the centered two-pass route: ``(moments, log-likelihood,
    log p(x_i))``."""
    k, d = gmm.means.shape
    joint = _map_rows(partial(weighted_log_prob, gmm), x, _chunk_rows(k * d))
    resp, log_prob, ll = _posteriors(joint, beta)
    if sample_weight is not None:
        ll = jnp.sum(jnp.where(sample_weight > 0, sample_weight * log_prob, 0.0))
    _, _, c = center(gmm, x)
    # materialize the posteriors once: otherwise XLA may fuse their exponentials
    # into every reduction of the M step and recompute them there
    resp = jax.lax.optimization_barrier(resp)
    moments = _m_step(x, resp, sample_weight, reg_covar, gmm.covariance_type, c)
    return moments, ll, log_prob


# float32 expands the square while the rounding it amplifies stays below this
# (relative to the log-densities); see _expansion_is_accurate
_EXPANSION_ERROR = 1e-3


def _expansion_is_accurate(gmm: GMM, x):
    """Whether the expanded step keeps float32's accuracy from ``gmm``.

    Expanding ``(x - mu)^T A (x - mu)`` around the data mean ``c`` cancels terms
    of size ``(c - mu)^T A (c - mu)``, the squared Mahalanobis distance of the
    center from the component, so the rounding grows like ``eps`` times it. A
    tight component far from the center (or one collapsing onto a point) makes
    it large; the two-pass route, centered on every component, then takes over.
    """
    c = jnp.mean(x, axis=0)
    distance = mahalanobis(gmm, c[None, :])
    return jnp.finfo(x.dtype).eps * jnp.max(distance) <= _EXPANSION_ERROR


def _em_update(gmm: GMM, x, sample_weight, reg_covar, beta):
    """One EM step: ``(gmm, StepInfo, log p(x_i) of the starting model)``.

    float64 always expands the square (see above); float32 expands it unless
    :func:`_expansion_is_accurate` says that would cost digits. Under ``vmap`` a
    per-lane choice evaluates both routes.
    """
    args = (gmm, x, sample_weight, reg_covar, beta)
    if x.dtype == jnp.float64:
        moments, ll, log_prob = _expanded_update(*args)
    else:
        moments, ll, log_prob = jax.lax.cond(
            _expansion_is_accurate(gmm, x),
            _expanded_update,
            _two_pass_update,
            *args,
        )
    n = x.shape[0]
    total = n if sample_weight is None else jnp.sum(sample_weight)
    degenerate = degenerate_component(moments.counts, moments.spread, n, total)
    return moments.gmm, StepInfo(ll, degenerate, jnp.asarray(True)), log_prob


def _reseed_step(log_prob, gmm, info, x, sample_weight, reg_covar, used, budget):
    """Re-seed the component ``info.degenerate`` reports while the budget lasts.

    ``log_prob`` is ``log p(x_i)`` under the model the step started from, which
    the E step computed anyway: the worst-explained samples are those where it is
    lowest. A re-seeded step reports no degeneracy and
    ``can_stop=False`` (its jump in likelihood must not be read as convergence);
    past the budget the step's report passes through, so the run ends
    ``DEGENERATE``.
    """
    j = info.degenerate
    go = (j >= 0) & (used < budget)

    def reseed():
        return reseed_component(
            gmm, jnp.maximum(j, 0), log_prob, x, sample_weight, reg_covar
        )

    new = jax.lax.cond(go, reseed, lambda: gmm)
    info = StepInfo(
        info.log_likelihood, jnp.where(go, -1, j).astype(jnp.int32), info.can_stop & ~go
    )
    return new, info, used + go.astype(jnp.int32)


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

    With ``max_reseeds > 0`` a component that empties or collapses (see
    :func:`gmmjax.fit`'s ``DEGENERATE`` status) is re-seeded instead of ending the
    run: it restarts at the worst-explained sample (lowest ``log p(x_i)``) with
    weight ``1 / k`` and covariance ``diag(V) / k + reg_covar I`` (``V`` the data's
    per-feature variance), and EM continues. Each re-seed uses one of
    ``max_reseeds``; once they are spent the next degeneracy ends the run with
    ``DEGENERATE``, as without re-seeding. A re-seed step may lower the
    log-likelihood (EM is monotone between re-seeds) and never counts as
    convergence. Everything stays inside the compiled loop (a ``lax.cond``), so
    re-seeding is jittable and vmappable (:func:`gmmjax.multistart`).

    ``max_reseeds`` is a traced leaf, so a new budget does not recompile, except
    for the Python integer ``0`` (the default): that budget is static and compiles
    a step without the re-seed code, which compiles about a fifth faster and, under
    ``vmap``, runs faster (a per-lane ``lax.cond`` evaluates both branches).

    Args:
        reg_covar: non-negative value added to the diagonal of every covariance in
            the M step (scikit-learn's convention), keeping covariances positive
            definite.
        max_reseeds: the number of re-seeds a run may use (an integer >= 0,
            traced: a new value does not recompile); ``0`` (default) never
            re-seeds, and as a Python integer is static (see above).

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> result = gmmjax.fit(gmmjax.EM(reg_covar=1e-6), gmm0, x)
        >>> gmmjax.Status(int(result.status)).name
        'CONVERGED'

        A third component started far from the data empties at once; re-seeding
        moves it to the worst-explained sample and the run converges.

        >>> g0 = gmmjax.GMM.from_natural(
        ...     [0.4, 0.4, 0.2], [[2.0, 55.0], [4.5, 80.0], [50.0, 300.0]],
        ...     [[0.1, 30.0]] * 3, covariance_type="diag")
        >>> gmmjax.fit(gmmjax.EM(), g0, x).status_name
        'DEGENERATE'
        >>> gmmjax.fit(gmmjax.EM(max_reseeds=2), g0, x).status_name
        'CONVERGED'
    """

    reg_covar: float | jax.Array = 1e-6
    max_reseeds: int | jax.Array = 0

    def check(self) -> None:
        """Validate the hyperparameters (called by the drivers at the API edge)."""
        check_nonnegative_scalar(self.reg_covar, "reg_covar")
        check_count(self.max_reseeds, "max_reseeds")

    def init(self, gmm: GMM, x, *, sample_weight=None) -> EMState:
        """Start state: the initial model, no re-seed used."""
        return EMState(gmm, jnp.asarray(0, jnp.int32))

    def step(self, state: EMState, x, *, sample_weight=None, beta=1.0):
        """One EM iteration (and a re-seed if needed); ``(EMState, StepInfo)``."""
        gmm, info, log_prob = _em_update(
            state.gmm, x, sample_weight, self.reg_covar, beta
        )
        if _never(self.max_reseeds):
            return EMState(gmm, state.n_reseeds), info
        gmm, info, used = _reseed_step(
            log_prob,
            gmm,
            info,
            x,
            sample_weight,
            self.reg_covar,
            jnp.asarray(state.n_reseeds, jnp.int32),
            self.max_reseeds,
        )
        return EMState(gmm, used), info


def _never(max_reseeds) -> bool:
    """Whether a re-seed budget is the static ``0``: a Python (or NumPy) integer,
    not an array."""
    return (
        isinstance(max_reseeds, (int, np.integer))
        and not isinstance(max_reseeds, bool)
        and max_reseeds == 0
    )


def _flatten_em(em: EM):
    # a budget of 0 goes into the static part (see EM's docstring)
    if _never(em.max_reseeds):
        return (em.reg_covar,), True
    return (em.reg_covar, em.max_reseeds), False


def _unflatten_em(never: bool, leaves) -> EM:
    if never:
        return EM(reg_covar=leaves[0])
    return EM(reg_covar=leaves[0], max_reseeds=leaves[1])


jax.tree_util.register_pytree_node(EM, _flatten_em, _unflatten_em)
