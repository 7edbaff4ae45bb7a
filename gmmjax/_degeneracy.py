"""The one definition of an emptied or collapsed component, and re-seeding.

Every EM variant (in memory, chunked, online) and the estimator's warning read
degeneracy through :func:`smallest_variance` (from an M step's moments) or
:func:`model_spread` (from a model and its data), which share one statistic, and
:func:`degenerate_component`, which applies one rule to it.

Side by side, in the same units (a component's variance along its thinnest
direction, over the data's variance along that direction):

- EM, chunked and online EM read it from the M step's moments, ``reg_covar``
  included (:func:`smallest_variance`);
- :class:`gmmjax.GradientFitter`, which has no M step, reads it from the model
  its optimizer step produced (:func:`model_spread`, via
  ``gmmjax._gradient.collapsed_component``);
- the estimator's warning reads it from the fitted model (:func:`model_spread`).

All three call it collapsed at the rounding level of that ratio, and empty below
a thousandth of one average sample's weight.

A component whose logit is ``-inf`` (weight exactly 0) is *inactive*, masked out
of the model: EM fits the others exactly as a mixture of the active components
alone and keeps it frozen (:func:`keep_inactive`), and it is never empty,
collapsed or re-seeded. One compiled program with ``K`` components thus fits
every ``k <= K`` (:func:`gmmjax.select`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._density import SMALL_D
from ._gmm import GMM
from ._linalg import extreme_eigenvalues

__all__ = [
    "Spread",
    "data_variance",
    "degenerate_component",
    "empty_components",
    "keep_inactive",
    "model_spread",
    "reseed_component",
    "sample_count",
    "smallest_variance",
]


class Spread(NamedTuple):
    """Each component's thinnest variance and the level rounding can produce.

    Both are in units of the data's variance (see :func:`smallest_variance`); a
    component is collapsed when ``variance <= level``.

    Attributes:
        variance: ``(k,)`` standardized variance along the thinnest direction,
            ``reg_covar`` included.
        level: ``(k,)`` the rounding level of that variance, in the same units.
    """

    variance: jax.Array
    level: jax.Array


def _spread(cov, means, center, data_mean, data_var, covariance_type, rounding):
    """:class:`Spread` of covariances ``cov`` (``reg_covar`` included) against the
    data's mean ``(d,)`` and variance (``(d,)``; its sum over features for
    ``spherical``). ``center`` (``(d,)`` or ``(k, d)``) is where the moments were
    taken, ``rounding`` their relative rounding level (see
    :func:`smallest_variance`)."""
    eps = jnp.finfo(means.dtype).eps
    k, d = means.shape
    magnitude = (10 * eps * data_mean) ** 2
    offset = (means - center) ** 2
    eig_level = 0.0
    if covariance_type == "spherical":
        varies = (data_var > jnp.sum(magnitude))[None]
        total = jnp.where(varies[0], data_var, 1.0)
        offset = jnp.sum(offset, axis=-1) / total
        variance = d * cov / total
    else:
        varies = data_var > magnitude
        scale = jnp.where(varies, data_var, 1.0)
        offset = jnp.max(jnp.where(varies, offset / scale, 0.0), axis=-1)
        if covariance_type == "diag":
            variance = jnp.min(jnp.where(varies, cov / scale, jnp.inf), axis=-1)
        else:
            if covariance_type == "tied":
                cov = cov[None]
                offset = jnp.max(offset)
            root = jnp.sqrt(scale)
            both = varies[:, None] & varies[None, :]
            eye = jnp.eye(d, dtype=means.dtype)
            standard = jnp.where(both, cov / (root[:, None] * root[None, :]), eye)
            variance, largest = _extreme_eigenvalues(standard)
            eig_level = 2 * d * eps * jnp.abs(largest)
    level = eig_level + rounding * (1 + offset)
    variance = jnp.where(jnp.any(varies), variance, 0.0)
    return Spread(jnp.broadcast_to(variance, (k,)), jnp.broadcast_to(level, (k,)))


def regularize(cov, reg_covar, covariance_type):
    """``cov`` with ``reg_covar`` added to its variances.

    ``reg_covar`` is a scalar (scikit-learn's convention: the same value for
    every feature) or a ``(d,)`` vector, one value per feature (e.g.
    :func:`gmmjax.relative_reg_covar`). ``cov`` is a covariance's diagonal part in
    the layout of ``covariance_type``'s M step: ``(..., d, d)`` matrices for
    ``full`` and ``tied``, ``(..., d)`` variances for ``diag``, ``(...,)``
    variances for ``spherical``, to which a vector adds its mean (the spherical
    variance is the mean of the per-feature ones).
    """
    reg = jnp.asarray(reg_covar, cov.dtype)
    if covariance_type in ("full", "tied"):
        d = cov.shape[-1]
        eye = jnp.eye(d, dtype=cov.dtype)
        return cov + (reg * eye if reg.ndim == 0 else reg[:, None] * eye)
    if covariance_type == "spherical" and reg.ndim == 1:
        return cov + jnp.mean(reg)
    return cov + reg


def smallest_variance(
    nk, means, center, second, covariance_type, reg_covar, *, expanded=False
) -> Spread:
    """Each component's variance along its thinnest direction, ``reg_covar``
    included, in units of the data's variance, and its rounding level.

    A component is *collapsed* when ``reg_covar`` cannot hold its variance up:
    along some direction in which the data spread, its variance **after**
    ``reg_covar`` is at the level rounding alone produces in the moments of the
    step. Only then can the likelihood grow without bound (``reg_covar = 0``) or
    be set by rounding noise. A component whose members share one value of a
    feature (integer pixels, ties) has variance exactly ``reg_covar`` along it;
    held far above the rounding level, that is a bounded maximum of the
    regularized likelihood (scikit-learn's), not a collapse.

    Per feature ``f`` the data variance ``V_f`` comes from the moments by the law
    of total variance, ``V_f = sum_j pi_j (S_j,ff + (m_jf - m_f)^2)`` with ``S_j``
    the covariance before ``reg_covar`` (exact when the responsibilities sum to
    one; ``O(k d)``, no pass over the data). With ``D = diag(V)``,
    ``Sigma_j = S_j + r I`` (``r = reg_covar``) the standardized variance is

    - ``full``: ``s_j = lambda_min(D^-1/2 Sigma_j D^-1/2)``, the variance along
      the component's thinnest direction, so a collapse onto a line or a plane is
      caught, not only one onto a point;
    - ``tied``: the same for the pooled covariance, shared by all components;
    - ``diag``: ``s_j = min_f Sigma_j,ff / V_f``;
    - ``spherical``: ``s_j = (tr S_j + d r) / sum_f V_f``.

    Its rounding level: with the offset ``o_j = max_f (m_jf - c_f)^2 / V_f`` of
    the component from the center ``c`` of the moments,
    ``t_j = 100 eps^2 (1 + o_j)`` for centered two-pass moments (what a point
    collapse leaves), ``10 eps (1 + o_j)`` for expanded ones (``expanded=True``:
    ``E[x^2] - m^2`` loses ``eps o_j``), plus ``2 d eps lambda_max`` for the
    eigenvalues of ``full``/``tied``. The component is collapsed when
    ``s_j <= t_j``. A feature whose data variance is at the rounding level of its
    magnitude (``V_f <= (10 eps m_f)^2``, a constant column) is left out: the data
    have no spread to collapse from there. When no feature varies (all points
    equal) every component is collapsed (``s_j = 0``). The cost is ``O(k d^3)``
    (a ``(k, d, d)`` symmetric eigenvalue problem) for ``full``.

    Args:
        nk: ``(k,)`` (floored) effective counts.
        means: ``(k, d)`` the new means.
        center: ``(d,)`` the point the moments were taken about, or ``(k, d)``
            one per component.
        second: before ``reg_covar``: ``(k, d, d)`` covariances for ``full`` and
            ``tied`` (before pooling), ``(k, d)`` variances for ``diag``, ``(k,)``
            total variances (traces) for ``spherical``.
        covariance_type: the model's covariance type.
        reg_covar: what the M step adds to the variances: a scalar or one value
            per feature (see :func:`regularize`).
        expanded: whether the moments come from an expanded square.

    Returns:
        The :class:`Spread` ``(s_j, t_j)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax._degeneracy import smallest_variance
        >>> nk = jnp.array([5.0, 5.0])
        >>> means = jnp.array([[0.0, 0.0], [4.0, 0.0]])
        >>> second = jnp.array([[1.0, 1.0], [1.0, 0.0]])  # flat along feature 1
        >>> spread = smallest_variance(nk, means, jnp.zeros(2), second, "diag", 0.0)
        >>> (spread.variance <= spread.level).tolist()
        [False, True]
        >>> spread = smallest_variance(nk, means, jnp.zeros(2), second, "diag", 1e-6)
        >>> (spread.variance <= spread.level).tolist()
        [False, False]
    """
    eps = jnp.finfo(means.dtype).eps
    share = nk / jnp.sum(nk)
    data_mean = share @ means
    between = share @ (means - data_mean) ** 2
    rounding = 10 * eps if expanded else 100 * eps**2
    if covariance_type == "spherical":
        d = means.shape[1]
        data_var = share @ second + jnp.sum(between)
        cov = regularize(second / d, reg_covar, covariance_type)
    else:
        full = second.ndim == 3
        var = jnp.diagonal(second, axis1=-2, axis2=-1) if full else second
        data_var = share @ var + between
        if covariance_type == "tied":
            second = jnp.einsum("k,kde->de", share, second)
        cov = regularize(second, reg_covar, "full" if full else "diag")
    return _spread(cov, means, center, data_mean, data_var, covariance_type, rounding)


def model_spread(gmm: GMM, x, sample_weight=None) -> Spread:
    """:func:`smallest_variance`'s statistic for a model and its data.

    The covariances are the model's (``reg_covar`` included), the data's mean and
    per-feature variance are taken from ``x`` directly, and the rounding level is
    that of expanded moments about the data's mean (``10 eps (1 + o_j)``). The
    estimator's warning reads a degenerate fit's numbers through it.

    Args:
        gmm: the model.
        x: ``(n, d)`` data.
        sample_weight: optional ``(n,)`` weights.

    Returns:
        The :class:`Spread` of every component.
    """
    x = jnp.asarray(x)
    data_mean, data_var = _data_moments(x, sample_weight)
    ctype = gmm.covariance_type
    if ctype == "spherical":
        data_var = jnp.sum(data_var)
    eps = jnp.finfo(x.dtype).eps
    means = gmm.means.astype(x.dtype)
    cov = gmm.covariances.astype(x.dtype)
    return _spread(cov, means, data_mean, data_mean, data_var, ctype, 10 * eps)


def _extreme_eigenvalues(a):
    """Smallest and largest eigenvalues of symmetric ``(..., d, d)`` matrices.

    Up to :data:`SMALL_D` features in closed form (the quadratic formula; the
    trigonometric solution of the characteristic cubic): a batched LAPACK call
    on tiny matrices costs far more than the arithmetic, above all under
    ``vmap`` (restarts). Both are accurate to ``eps`` times the largest
    eigenvalue, the resolution :func:`smallest_variance` allows for.
    """
    d = a.shape[-1]
    if d > SMALL_D:
        return extreme_eigenvalues(a)
    if d == 1:
        return a[..., 0, 0], a[..., 0, 0]
    if d == 2:
        half = 0.5 * (a[..., 0, 0] + a[..., 1, 1])
        radius = jnp.hypot(0.5 * (a[..., 0, 0] - a[..., 1, 1]), a[..., 0, 1])
        return half - radius, half + radius
    mean = jnp.trace(a, axis1=-2, axis2=-1) / 3
    shifted = a - mean[..., None, None] * jnp.eye(3, dtype=a.dtype)
    scale = jnp.sqrt(jnp.sum(shifted**2, axis=(-2, -1)) / 6)
    safe = jnp.where(scale > 0, scale, 1.0)
    half_det = jnp.linalg.det(shifted / safe[..., None, None]) / 2
    angle = jnp.arccos(jnp.clip(half_det, -1.0, 1.0)) / 3
    largest = mean + 2 * scale * jnp.cos(angle)
    smallest = mean + 2 * scale * jnp.cos(angle + 2 * math.pi / 3)
    return smallest, largest


def sample_count(x, sample_weight):
    """The number of samples: rows of positive weight (rows of weight 0, such as
    the padding of a size bucket, are not samples)."""
    if sample_weight is None:
        return x.shape[0]
    return jnp.sum(sample_weight > 0)


def empty_components(counts, n, total):
    """``(k,)`` bool: components holding less than a thousandth of an average
    sample's weight, ``counts < 1e-3 total / n``.

    Args:
        counts: ``(k,)`` effective counts ``sum_i w_i r_ij`` (without a floor).
        n: the number of samples (:func:`sample_count`).
        total: ``sum_i w_i`` (``n`` without weights).
    """
    return counts < 1e-3 * total / n


def degenerate_component(counts, spread: Spread, n, total, active=None):
    """Index of the first empty or collapsed component, ``-1`` if there is none.

    A component is *empty* by :func:`empty_components` and *collapsed* when its
    standardized variance, ``reg_covar`` included, is at its rounding level
    (``spread.variance <= spread.level``, see :func:`smallest_variance`). A
    ``tied`` model collapses as a whole and reports its first active component.
    Inactive components (zero weight, see :func:`keep_inactive`) are neither.

    Args:
        counts: ``(k,)`` effective counts (without a floor).
        spread: the components' :class:`Spread`.
        n: the number of samples (:func:`sample_count`).
        total: ``sum_i w_i`` (``n`` without weights).
        active: optional ``(k,)`` bool, the active components (default: all).

    Returns:
        ``()`` int32.
    """
    bad = empty_components(counts, n, total) | (spread.variance <= spread.level)
    if active is not None:
        bad = bad & active
    return jnp.where(jnp.any(bad), jnp.argmax(bad), -1).astype(jnp.int32)


def _data_moments(x, sample_weight):
    """Per-feature (weighted) mean and variance of the data, ``(d,)`` each."""
    w = jnp.ones(x.shape[0], x.dtype) if sample_weight is None else sample_weight
    mean = w @ x / jnp.sum(w)
    return mean, w @ (x - mean) ** 2 / jnp.sum(w)


def data_variance(x, sample_weight):
    """Per-feature (weighted) variance of the data, ``(d,)``, with a fallback for
    features that do not vary: the mean variance of the others, else 1.

    The fallback keeps a re-seeded component's covariance positive definite even
    without ``reg_covar`` (a constant column, all points equal).
    """
    eps = jnp.finfo(x.dtype).eps
    mean, var = _data_moments(x, sample_weight)
    varies = var > (10 * eps * mean) ** 2
    count = jnp.sum(varies)
    typical = jnp.sum(jnp.where(varies, var, 0.0)) / jnp.maximum(count, 1)
    return jnp.where(varies, var, jnp.where(count > 0, typical, 1.0))


def reseed_component(gmm: GMM, j, log_prob, x, sample_weight, reg_covar) -> GMM:
    """Restart component ``j`` at the worst-explained sample.

    The new mean is the sample with the lowest ``log p(x_i)`` (among samples of
    positive weight), the new weight ``1 / k`` (the others are scaled to make room),
    and the new covariance ``diag(V) / k + reg_covar I`` with ``V`` the data's
    per-feature variance (:func:`data_variance`): a component about as wide as a
    ``k``-th of the data, wide enough to gather points again. A ``tied``
    covariance is shared and kept. ``k`` counts the active components only:
    inactive ones (logit ``-inf``) keep weight 0. Jittable, ``j`` may be traced.

    Args:
        gmm: the model after an M step.
        j: ``()`` the component to restart.
        log_prob: ``(n,)`` ``log p(x_i)`` (of the model the step started from).
        x: ``(n, d)`` data.
        sample_weight: ``(n,)`` weights or ``None``.
        reg_covar: the fitter's ``reg_covar``.

    Returns:
        The model with component ``j`` replaced.
    """
    dtype = x.dtype
    # k counts the active components: inactive ones (logit -inf) stay at weight 0
    active = jnp.isfinite(gmm.logits)
    k = jnp.sum(active).astype(dtype)
    fit = (
        log_prob
        if sample_weight is None
        else jnp.where(sample_weight > 0, log_prob, jnp.inf)
    )
    worst = jnp.argmin(jnp.where(jnp.isnan(fit), jnp.inf, fit))
    var = data_variance(x, sample_weight) / k + reg_covar
    log_w = gmm.log_weights.astype(dtype)
    # log(1 - w_j) as the others' total: no cancellation when w_j rounds to 1
    rest = jax.nn.logsumexp(
        jnp.where(jnp.arange(gmm.n_components) == j, -jnp.inf, log_w)
    )
    scaled = jnp.where(k > 1, log_w + jnp.log1p(-1 / k) - rest, log_w)
    scaled = jnp.where(active, scaled, -jnp.inf)
    logits = jnp.where(jnp.arange(gmm.n_components) == j, -jnp.log(k), scaled)
    return gmm.replace_component(j, logits=logits, mean=x[worst], variances=var)


def keep_inactive(new: GMM, old: GMM, counts, active) -> GMM:
    """``new`` (an M step's model) with its inactive components taken from ``old``.

    Masked components: ``active`` ``(k,)`` marks the components of nonzero
    weight. The active ones keep ``new``'s parameters, with their weights
    renormalized over them, ``pi_j = N'_j / sum_{l active} N'_l`` with the
    floored counts ``N'_j = N_j + 10 eps``: exactly the weights an M step over
    the active components alone gives (the others' floors left out). The
    inactive ones take ``old``'s parameters (finite, positive definite) and the
    logit ``-inf``. A ``tied`` covariance is shared: ``new``'s (the inactive
    components' zero scatter changes it by their floors, ``10 eps`` each, at the
    rounding level). When every component is active the result is ``new``, bit
    for bit. Jittable.

    Args:
        new: the model of the M step, ``k`` components.
        old: a model with the same structure: the parameters the inactive
            components keep.
        counts: ``(k,)`` the M step's effective counts ``N_j`` (without a floor).
        active: ``(k,)`` bool.

    Returns:
        The merged :class:`GMM`.

    Example:
        >>> import jax.numpy as jnp, gmmjax
        >>> from gmmjax._degeneracy import keep_inactive
        >>> old = gmmjax.GMM.from_natural([0.5, 0.5, 0.0], [[0.0], [1.0], [9.0]],
        ...                               [1.0, 1.0, 4.0], covariance_type="spherical")
        >>> new = gmmjax.GMM.from_natural([0.4, 0.4, 0.2], [[0.5], [2.0], [0.0]],
        ...                               [1.0, 2.0, 1.0], covariance_type="spherical")
        >>> out = keep_inactive(new, old, jnp.array([3.0, 1.0, 0.0]),
        ...                     jnp.isfinite(old.logits))
        >>> [round(float(w), 6) for w in out.weights], out.means[:, 0].tolist()
        ([0.75, 0.25, 0.0], [0.5, 2.0, 9.0])
    """
    nk = counts.astype(new.dtype) + 10 * jnp.finfo(new.dtype).eps
    share = nk / jnp.sum(jnp.where(active, nk, 0.0))
    logits = jnp.where(active, jnp.log(jnp.where(active, share, 1.0)), -jnp.inf)
    logits = jnp.where(jnp.all(active), new.logits, logits)

    def pick(a, b):
        mask = active.reshape(active.shape + (1,) * (a.ndim - 1))
        return jnp.where(mask, a, b.astype(a.dtype))

    log_diag, off_diag = new.log_diag, new.off_diag
    if new.covariance_type != "tied":
        log_diag = pick(log_diag, old.log_diag)
        if off_diag is not None:
            off_diag = pick(off_diag, old.off_diag)
    means = pick(new.means, old.means)
    return GMM(logits, means, log_diag, off_diag, new.covariance_type)
