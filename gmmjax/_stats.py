"""Sufficient statistics and the M step, once, for every covariance type.

Every EM variant reduces the data to one :class:`Statistics` tuple, the
responsibility-weighted counts, first and second moments about some centers, and
reads its parameters off with :func:`maximize`. They differ only in how the sums
are taken:

- :func:`expanded_statistics`: about one shared center ``c``, as one product
  ``R^T F`` of the responsibilities with the monomials ``F(x - c)`` (counts,
  first and second moments of every component at once). EM's route in float64,
  and in float32 while :func:`gmmjax._em` finds it accurate.
- :func:`two_pass_statistics`: a first pass for the counts and means, a second
  for the scatter about those means (EM's float32 fallback, and
  :func:`gmmjax.init_gmm`).
- :func:`moments_about`: about one center per component (chunked EM sums them
  chunk by chunk about the current means; online EM keeps running averages).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._degeneracy import Spread, regularize, smallest_variance
from ._density import SMALL_D, log_det_precision_cholesky
from ._gmm import GMM
from ._prior import posterior_mode

__all__ = [
    "MStep",
    "Statistics",
    "chunk_rows",
    "coefficients",
    "expanded_statistics",
    "features",
    "map_rows",
    "maximize",
    "moments_about",
    "scan_rows",
    "two_pass_statistics",
]


class Statistics(NamedTuple):
    """Responsibility-weighted sums of the data about centers ``c_j``.

    With weights ``w_i r_ij`` (sample weight times responsibility):

    Attributes:
        counts: ``(k,)`` ``N_j = sum_i w_i r_ij`` (no floor).
        first: ``(k, d)`` ``s_j = sum_i w_i r_ij (x_i - c_j)``, or ``None`` when
            the centers are the weighted means themselves (``s_j = 0`` by
            construction, as after a second pass: ``center`` is then ``(k, d)``).
        second: ``Q_j = sum_i w_i r_ij (x_i - c_j)(x_i - c_j)^T`` in the form the
            covariance type needs: ``(k, d, d)`` for ``full`` and ``tied``, its
            diagonal ``(k, d)`` for ``diag``; for ``spherical`` its diagonal
            ``(k, d)`` or, already summed over features, its trace ``(k, 1)``.
        center: the ``c_j``: ``(d,)`` one center for all, or ``(k, d)``.

    Sums over disjoint sets of samples about the same centers add up field by
    field (``center`` excepted).
    """

    counts: jax.Array
    first: jax.Array
    second: jax.Array
    center: jax.Array


class MStep(NamedTuple):
    """What :func:`maximize` reads off a :class:`Statistics`.

    Attributes:
        gmm: the new :class:`GMM`.
        spread: its components' :class:`gmmjax._degeneracy.Spread` (thinnest
            variance and rounding level) for the collapse test.
        centered: the same statistics about the weighted sample means (the
            new means without a prior; ``first`` ``None``).
    """

    gmm: GMM
    spread: Spread
    centered: Statistics


# --------------------------------------------------------------- rows in chunks

# Rows per chunk of the sample-wise work: chunks keep the working set of the
# per-sample intermediates near 2 MiB in float64 (in cache while both products
# of the expanded step read them), whatever n, so an EM step
# needs O(n k + n d + k d^2) memory beyond the data.
_CHUNK_ELEMENTS = 2**18


def chunk_rows(width: int) -> int:
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


def scan_rows(fn, arrays, rows: int):
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


def map_rows(fn, x, rows: int):
    """``fn(x)`` for a row-wise ``fn``, run ``rows`` rows at a time."""
    n = x.shape[0]
    if n <= rows:
        return fn(x)
    head, tail = _split_rows(x, rows)
    out = jax.lax.map(fn, head)
    out = out.reshape(-1, *out.shape[2:])
    return out if tail is None else jnp.concatenate([out, fn(tail)])


# ------------------------------------------------- the expanded (monomial) route
#
# log pi_j + log N(x | mu_j, Sigma_j) is a quadratic polynomial in x, so it is a
# linear combination of the monomials f(x) = (x_a x_b for a <= b, x_a, 1). With
# every sample's monomials in the rows of F (n, p), the E step is the one product
# C @ F^T with the (k, p) coefficients C, and the statistics are the one product
# R @ F with the responsibilities R (k, n). Both products share F across
# components and, under vmap, across restarts, which turns many tiny
# per-component products into a few large ones. Expanding the square costs digits
# when a component is tight and far from the center: about
# eps (|mu - c| / sigma)^2, far below every tolerance in float64.


def _monomials(covariance_type: str, d: int):
    """Index pairs ``(rows, cols)`` of the second-order monomials ``x_a x_b``."""
    if covariance_type in ("full", "tied"):
        return np.triu_indices(d)
    return np.arange(d), np.arange(d)


def features(xc, covariance_type: str):
    """``F (n, p)``: second-order monomials, the coordinates, and a column of ones.

    ``spherical`` needs only ``sum_a x_a^2`` of the second order.
    """
    rows, cols = _monomials(covariance_type, xc.shape[1])
    second = xc[:, rows] * xc[:, cols]
    if covariance_type == "spherical":
        second = jnp.sum(second, axis=1, keepdims=True)
    ones = jnp.ones((xc.shape[0], 1), xc.dtype)
    return jnp.concatenate([second, xc, ones], axis=1)


def coefficients(gmm: GMM, c, dtype):
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


def expanded_statistics(c, x, sample_weight, covariance_type, k, posterior, extra=None):
    """:class:`Statistics` about ``c`` from the products ``R^T F``, chunk by chunk.

    ``posterior(f, ws, es) -> (resp, total, per_row)`` gives a chunk's
    responsibilities ``(k, rows)`` from its monomials ``f = F(x - c)``
    ``(rows, p)``, its sample weights ``ws`` and its rows ``es`` of ``extra``:
    EM computes them from ``C @ f^T``; :func:`gmmjax.m_step` reads them from
    ``extra``. ``total`` (a pytree) is summed over chunks and ``per_row``
    concatenated, as in :func:`scan_rows`.

    Args:
        c: ``(d,)`` the center.
        x: ``(n, d)`` data.
        sample_weight: ``(n,)`` or ``None``.
        covariance_type: sets the monomials.
        k: the number of components.
        posterior: as above.
        extra: ``(n, ...)`` rows handed to ``posterior``, or ``None``.

    Returns:
        ``(Statistics, total, per_row)``.
    """
    d = c.shape[0]
    q = 1 if covariance_type == "spherical" else len(_monomials(covariance_type, d)[0])

    def chunk(xs, ws, es):
        f = features(xs - c, covariance_type)
        resp, total, per_row = posterior(f, ws, es)
        if ws is not None:
            f = f * ws[:, None]
        return (resp @ f, total), per_row

    rows = chunk_rows(q + d + 1 + 2 * k)
    (sums, total), per_row = scan_rows(chunk, (x, sample_weight, extra), rows)
    counts, first = sums[:, -1], sums[:, q : q + d]
    second = sums[:, :q]
    if covariance_type in ("full", "tied"):
        rows_, cols = _monomials(covariance_type, d)
        raw = jnp.zeros((k, d, d), sums.dtype).at[:, rows_, cols].set(second)
        second = raw.at[:, cols, rows_].set(second)
    return Statistics(counts, first, second, c), total, per_row


# ------------------------------------------------ moments about given centers


def moments_about(xc, resp, mc, covariance_type):
    """``(s (k, d), Q)``: first and second moments about one center per component.

    ``s_j = sum_i r_ij (x_i - m_j)`` and ``Q_j`` as in :class:`Statistics`
    (``(k, d)`` per feature for ``diag`` and ``spherical``), from shifted data
    ``xc (n, d)``, weights ``resp (n, k)`` and shifted centers ``mc (k, d)``.
    Large ``d``, ``full``/``tied``: with ``W_ij = r_ij (x_i - m_j)``,
    ``Q_j = W_j^T (x - m_j) = W_j^T xc - s_j m_j^T`` is one ``(d, n) @ (n, k d)``
    product; nothing is squared around a distant center, so the error stays at
    the level of the direct formula. Otherwise the sums run along the sample
    axis, kept last so that the reductions run over contiguous memory.
    """
    d = xc.shape[1]
    k = mc.shape[0]
    if covariance_type not in ("full", "tied"):
        delta = xc.T - mc[:, :, None]
        weights = resp.T[:, None, :]
        return jnp.sum(weights * delta, axis=-1), jnp.sum(weights * delta**2, axis=-1)
    if d <= SMALL_D:
        rows, cols = np.triu_indices(d)
        delta = xc.T - mc[:, :, None]
        weighted = resp.T[:, None, :] * delta[:, rows]
        packed = jnp.sum(weighted * delta[:, cols], axis=-1)
        out = jnp.zeros((k, d, d), xc.dtype).at[:, rows, cols].set(packed)
        first = jnp.sum(resp.T[:, None, :] * delta, axis=-1)
        return first, out.at[:, cols, rows].set(packed)

    def part(xs, rs):
        w = (rs[:, :, None] * (xs[:, None, :] - mc)).reshape(-1, k * d)
        # (d, n) @ (n, k d): the data operand transposed is the fast layout on CPU
        return (xs.T @ w, jnp.sum(w, axis=0)), None

    (s, wsum), _ = scan_rows(part, (xc, resp), chunk_rows(k * d))
    first = wsum.reshape(k, d)
    s = jnp.moveaxis(s.reshape(d, k, d), 1, 0) - mc[:, :, None] * first[:, None, :]
    return first, 0.5 * (s + jnp.swapaxes(s, -1, -2))


def two_pass_statistics(x, resp, sample_weight, covariance_type, center=None):
    """:class:`Statistics` of the centered two-pass route.

    The data are shifted by ``center`` ``(d,)`` first (the data's mean when not
    given), which keeps float32 accurate far from the origin. The first pass
    gives the counts and means ``m_j``, the second the scatter about them: the
    statistics are about ``c_j = m_j`` (``first`` ``None``). Beyond
    :data:`SMALL_D` features ``diag`` and ``spherical`` take one pass, about
    ``center``: scikit-learn's expansion as one ``(k, n) @ (n, d)`` product.
    """
    if sample_weight is not None:
        resp = resp * sample_weight[:, None]
    if center is None:
        center = jnp.mean(x, axis=0)
    xc = x - center
    counts = jnp.sum(resp, axis=0)
    nk = counts + 10 * jnp.finfo(x.dtype).eps
    d = x.shape[1]
    if covariance_type in ("diag", "spherical") and d > SMALL_D:
        return Statistics(counts, resp.T @ xc, resp.T @ xc**2, center)
    if d <= SMALL_D:
        # sums along the last (sample) axis vectorize; tiny products do not
        mc = jnp.sum(resp.T[:, None, :] * xc.T, axis=-1) / nk[:, None]
    else:
        mc = (resp.T @ xc) / nk[:, None]
    _, second = moments_about(xc, resp, mc, covariance_type)
    return Statistics(counts, None, second, mc + center)


# ------------------------------------------------------------------- the M step


def _model(weights, means, cov, reg_covar, covariance_type) -> GMM:
    """The :class:`GMM` from the weights' numerators (the floored counts
    ``N'_j`` without a prior), means and covariances before ``reg_covar``
    (``(k, d, d)``, ``(d, d)``, ``(k, d)`` or ``(k,)``)."""
    cov = regularize(cov, reg_covar, covariance_type)
    logits = jnp.log(weights / jnp.sum(weights))
    return GMM.from_covariances(logits, means, cov, covariance_type=covariance_type)


def maximize(
    stats: Statistics,
    reg_covar,
    covariance_type,
    *,
    origin=None,
    expanded=True,
    prior=None,
    active=None,
) -> MStep:
    """The M step: maximum-likelihood (or, with a prior, MAP) parameters from
    :class:`Statistics`.

    With the floored counts ``N'_j = N_j + 10 eps`` (scikit-learn's floor):
    ``pi_j = N'_j / sum_l N'_l``, ``mu_j = c_j + delta_j`` with
    ``delta_j = s_j / N'_j``, and the scatter about ``mu_j``,
    ``S_j = Q_j - s_j delta_j^T - delta_j s_j^T + N_j delta_j delta_j^T
    = Q_j - (2 N'_j - N_j) delta_j delta_j^T`` exactly (empty components
    included; rounding that leaves a vanishing variance a hair below zero is
    clamped); with ``first`` ``None`` the centers are the means and ``S_j = Q_j``.
    The floor thus applies about the centers: ``mu_j`` differs from
    ``sum_i w_i r_ij x_i / N'_j`` by ``10 eps c_j / N'_j``. ``Sigma_j = S_j / N'_j +
    reg_covar I``; ``diag`` keeps the diagonal, ``spherical`` its mean, ``tied``
    pools ``sum_j S_j / sum_j N'_j``.

    With a :class:`gmmjax.Prior` the prior's terms enter here, once for every
    route: the means, covariances and weights are the posterior mode of
    :func:`gmmjax._prior.posterior_mode` given the same sample means
    ``mu_j`` and scatter ``S_j`` (``reg_covar`` is still added).

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax._stats import Statistics, maximize
        >>> x = jnp.array([[0.0], [2.0], [10.0]])
        >>> resp = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> c = jnp.zeros(1)  # moments about the origin
        >>> stats = Statistics(resp.sum(0), resp.T @ x, resp.T @ x**2, c)
        >>> step = maximize(stats, 0.0, "diag")
        >>> [round(float(m), 4) for m in step.gmm.means[:, 0]]
        [1.0, 10.0]
        >>> [round(float(v), 4) for v in step.gmm.covariances[:, 0]]
        [1.0, 0.0]

    Args:
        stats: the statistics.
        reg_covar: non-negative value added to every variance.
        covariance_type: ``"full"``, ``"diag"``, ``"spherical"`` or ``"tied"``.
        origin: where the data were shifted to before the sums (the collapse
            test's rounding level grows with the distance of the means from
            it); default ``stats.center``.
        expanded: whether the second moments carry the rounding of an expanded
            square (see :func:`gmmjax._degeneracy.smallest_variance`).
        prior: ``None`` (maximum likelihood) or a :class:`gmmjax.Prior`.
        active: ``(k,)`` bool, the components a prior's pooled (``tied``)
            terms run over; all by default.

    Returns:
        The :class:`MStep`.
    """
    counts, first, second, c = stats
    nk = counts + 10 * jnp.finfo(second.dtype).eps
    d = c.shape[-1]
    if first is None:
        # the centers are the means: the second moments are the scatter
        means, scatter = c, second
    else:
        delta = first / nk[:, None]
        means = delta + c
        shrink = 2 - counts / nk
    if covariance_type in ("full", "tied"):
        if first is not None:
            outer = delta[:, :, None] * delta[:, None, :]
            scatter = second - (nk * shrink)[:, None, None] * outer
            # rounding can leave a vanishing variance a hair below zero
            diag = jnp.diagonal(scatter, axis1=-2, axis2=-1)
            scatter = scatter + jax.vmap(jnp.diag)(jnp.maximum(diag, 0.0) - diag)
        if covariance_type == "full":
            cov = scatter / nk[:, None, None]
        else:
            cov = jnp.sum(scatter, axis=0) / jnp.sum(nk)
        variance = scatter / nk[:, None, None]
    else:
        per_feature = second / nk[:, None]
        if first is not None:
            square = delta**2
            if second.shape[-1] != d:
                square = jnp.sum(square, axis=-1, keepdims=True)
            per_feature = jnp.maximum(per_feature - shrink[:, None] * square, 0.0)
            scatter = per_feature * nk[:, None]
        if covariance_type == "diag":
            cov = variance = per_feature
        else:
            variance = jnp.sum(per_feature, axis=-1)
            cov = variance / d
    weights, centers = nk, means
    if prior is not None:
        means, cov, variance, weights = posterior_mode(
            prior, nk, means, scatter, covariance_type, active
        )
    origin = c if origin is None else origin
    spread = smallest_variance(
        nk, means, origin, variance, covariance_type, reg_covar, expanded=expanded
    )
    gmm = _model(weights, means, cov, reg_covar, covariance_type)
    return MStep(gmm, spread, Statistics(counts, None, scatter, centers))
