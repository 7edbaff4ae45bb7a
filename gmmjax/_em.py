"""Expectation-maximization: the E step, the M step, and the ``EM`` fitter.

The statistics and the M step come from :mod:`gmmjax._stats`; this module adds
the E step (the posteriors, by the expanded or the two-pass route), the route
choice, re-seeding and the fitter. The public :func:`e_step` and :func:`m_step`
run the same kernels as :class:`EM`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._degeneracy import (
    data_variance,
    degenerate_component,
    keep_inactive,
    reseed_component,
    sample_count,
)
from ._density import (
    center,
    mahalanobis,
    prepare,
    total_log_likelihood,
    weighted_log_prob,
)
from ._fit import StepInfo
from ._gmm import GMM
from ._lanes import lane_cond
from ._prior import Prior, check_prior, check_prior_shapes, log_prior_density
from ._stats import (
    MStep,
    Statistics,
    chunk_rows,
    coefficients,
    expanded_statistics,
    features,
    map_rows,
    maximize,
    two_pass_statistics,
)
from ._validation import (
    check_covariance_type,
    check_data,
    check_nonnegative_scalar,
    check_reg_covar,
    check_sample_weight,
    concrete,
)

__all__ = [
    "EM",
    "EMState",
    "Summary",
    "by_route",
    "e_step",
    "em_step",
    "em_update",
    "expanded_summary",
    "m_step",
    "relative_reg_covar",
    "two_pass_summary",
]


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


# --------------------------------------------------------------------- E step


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


def _shift(joint, axis):
    """``(joint - m, m)`` with ``m_i`` the largest entry along ``axis`` (0 where
    not finite)."""
    top = _over_components(jnp.maximum, jnp.max, joint, axis)
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
    return joint - jnp.expand_dims(top, axis), top


def _posteriors(joint, beta, axis=-1, entropy=False):
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
        With ``entropy``, a fourth entry: ``sum_j r_ij log r_ij`` per sample
        (``axis`` dropped), as ``sum_j r_ij u_ij - log sum_j exp(u_ij)`` with
        ``u`` the shifted (tempered) joint, without ``n k`` logarithms.
    """
    k = joint.shape[axis]
    shifted, top = _shift(joint, axis)
    plain = jnp.exp(shifted)
    total = _over_components(jnp.add, jnp.sum, plain, axis)
    log_prob = top + jnp.log(total)
    ll = jnp.sum(top) + _sum_log(total, k)
    if _is_one(beta):
        exponent, norm = shifted, total
        resp = plain / jnp.expand_dims(total, axis)
    else:
        exponent = _temper(beta, shifted)
        norm = _over_components(jnp.add, jnp.sum, jnp.exp(exponent), axis)
        resp = jnp.exp(exponent) / jnp.expand_dims(norm, axis)
    if not entropy:
        return resp, log_prob, ll
    # an inactive component has r = 0 and u = -inf: it adds nothing
    mixed = jnp.where(resp > 0, resp * exponent, 0.0)
    mixed = _over_components(jnp.add, jnp.sum, mixed, axis)
    return resp, log_prob, ll, mixed - jnp.log(norm)


def _temper(beta, shifted):
    """``beta * shifted``, ``-inf`` where ``shifted`` is (an inactive component,
    weight 0): ``0 * -inf`` would be NaN at ``beta = 0``."""
    return jnp.where(shifted == -jnp.inf, -jnp.inf, beta * shifted)


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
    Inactive components (weight 0) contribute nothing and are left out.
    """
    c = jnp.mean(x, axis=0)
    distance = mahalanobis(gmm, c[None, :])[0]
    distance = jnp.where(jnp.isfinite(gmm.logits), distance, 0.0)
    return jnp.finfo(x.dtype).eps * jnp.max(distance) <= _EXPANSION_ERROR


def by_route(expanded, two_pass, gmm: GMM, *args):
    """float64 always expands the square; float32 expands it unless
    :func:`_expansion_is_accurate` says that would cost digits. Under ``vmap``
    the two-pass route runs only on the lanes that need it
    (:func:`gmmjax._lanes.lane_cond`)."""
    x = args[0]
    if x.dtype == jnp.float64:
        return expanded(gmm, *args)
    accurate = _expansion_is_accurate(gmm, x)
    return lane_cond(accurate, expanded, two_pass, gmm, *args)


def _expanded_center(gmm: GMM, x):
    """The center ``c`` of the expansion and the coefficients ``C`` about it."""
    c = jax.lax.stop_gradient(jnp.mean(x, axis=0))
    return c, coefficients(gmm, c, x.dtype)


def _expanded_joint(gmm: GMM, x):
    c, coef = _expanded_center(gmm, x)
    rows = chunk_rows(coef.shape[1] + 2 * gmm.n_components)

    def joint(xs):
        # the product in EM's layout, C @ F^T, kept (XLA would otherwise fold the
        # transpose into a product F @ C^T, which sums in another order)
        product = coef @ features(xs - c, gmm.covariance_type).T
        return jax.lax.optimization_barrier(product).T

    return map_rows(joint, x, rows)


def _two_pass_joint(gmm: GMM, x):
    k, d = gmm.means.shape
    return map_rows(partial(weighted_log_prob, gmm), x, chunk_rows(k * d))


@jax.jit
def _e_step(gmm: GMM, x, beta):
    joint = by_route(_expanded_joint, _two_pass_joint, gmm, x)
    shifted, top = _shift(joint, -1)
    total = _over_components(jnp.add, jnp.sum, jnp.exp(shifted), -1)
    log_prob = top + jnp.log(total)
    tempered = _temper(beta, shifted)
    norm = _over_components(jnp.add, jnp.sum, jnp.exp(tempered), -1)
    return tempered - jnp.log(norm)[:, None], log_prob


def e_step(gmm: GMM, x, *, beta=1.0):
    """The E step: tempered log-responsibilities and the per-sample log-density.

    ``log r_ij = log_softmax_j(beta * (log pi_j + log N(x_i | mu_j, Sigma_j)))`` and
    ``log p(x_i) = logsumexp_j(log pi_j + log N(x_i | mu_j, Sigma_j))`` (untempered),
    from the log-densities :class:`gmmjax.EM` computes (the same route and
    kernels). Jitted.

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


# --------------------------------------------------------------------- M step


def _given(f, ws, rs):
    # materialize the (k, rows) responsibilities: EM's product R @ F has this
    # layout, and a transposed operand would sum in another order
    return jax.lax.optimization_barrier(rs.T), (), None


@partial(jax.jit, static_argnames=("covariance_type",))
def _m_step(x, resp, w, reg_covar, covariance_type):
    if x.dtype == jnp.float64:
        c = jax.lax.stop_gradient(jnp.mean(x, axis=0))
        k = resp.shape[1]
        stats, _, _ = expanded_statistics(c, x, w, covariance_type, k, _given, resp)
        return maximize(stats, reg_covar, covariance_type).gmm
    stats = two_pass_statistics(x, resp, w, covariance_type)
    return maximize(stats, reg_covar, covariance_type, expanded=False).gmm


def m_step(x, resp, *, covariance_type="full", sample_weight=None, reg_covar=1e-6):
    """The M step: maximum-likelihood parameters given responsibilities.

    With ``N_j = sum_i w_i r_ij + 10 eps`` (scikit-learn's floor on the counts):
    ``pi_j = N_j / sum_l N_l``, ``mu_j = sum_i w_i r_ij x_i / N_j`` and
    ``Sigma_j = sum_i w_i r_ij (x_i - mu_j)(x_i - mu_j)^T / N_j + reg_covar I``
    (``diag`` keeps the diagonal, ``spherical`` its mean, ``tied`` pools the scatter
    of all components over ``sum_j N_j``). The kernels of :class:`gmmjax.EM`:
    float64 sums the expanded square about the data's mean, as EM does; float32
    takes EM's centered two-pass route (accurate wherever the data lie). Jitted.

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
    check_reg_covar(reg_covar, n_features=x.shape[1])
    return _m_step(x, resp, w, reg_covar, covariance_type)


# ---------------------------------------------------------------- one EM step


def _weighted_sum(ws, per_row):
    """``sum_i w_i v_i`` (rows of weight 0 add nothing, even where ``v_i`` is
    not finite); the plain sum without weights."""
    if ws is None:
        return jnp.sum(per_row)
    return jnp.sum(jnp.where(ws > 0, ws * per_row, 0.0))


def _active(gmm: GMM, prior):
    """The components a prior's pooled terms run over (``None`` without one)."""
    return None if prior is None else jnp.isfinite(gmm.logits)


class Summary(NamedTuple):
    """What one E step by a route leaves for an M step.

    Attributes:
        stats: the :class:`gmmjax._stats.Statistics` of the responsibilities.
        origin: the point the data were shifted to (``maximize``'s ``origin``).
        expanded: whether the second moments are of an expanded square (static).
        ll: the total (weighted) log-likelihood ``sum_i w_i log p(x_i)``.
        log_prob: ``(n,)`` ``log p(x_i)``.
        resp_log_resp: ``sum_i w_i sum_j r_ij log r_ij`` when asked for (the
            responsibilities' negative entropy), else ``None``.
    """

    stats: Statistics
    origin: jax.Array
    expanded: bool
    ll: jax.Array
    log_prob: jax.Array
    resp_log_resp: jax.Array | None

    def maximize(self, reg_covar, covariance_type, **options) -> MStep:
        """:func:`gmmjax._stats.maximize` of these statistics, with the route's
        origin and rounding."""
        return maximize(
            self.stats,
            reg_covar,
            covariance_type,
            origin=self.origin,
            expanded=self.expanded,
            **options,
        )


def expanded_summary(gmm: GMM, x, sample_weight, beta, entropy=False) -> Summary:
    """The E step and statistics of the expanded route (see :class:`Summary`)."""
    c, coef = _expanded_center(gmm, x)

    def posterior(f, ws, _):
        # components first, samples last: the reductions over components then
        # run along contiguous rows of samples (k is often tiny)
        resp, log_prob, ll, *rest = _posteriors(coef @ f.T, beta, 0, entropy)
        ll = ll if ws is None else _weighted_sum(ws, log_prob)
        return resp, (ll, *(_weighted_sum(ws, r) for r in rest)), log_prob

    ctype, k = gmm.covariance_type, gmm.n_components
    stats, (ll, *rest), log_prob = expanded_statistics(
        c, x, sample_weight, ctype, k, posterior
    )
    return Summary(stats, c, True, ll, log_prob, rest[0] if entropy else None)


def two_pass_summary(gmm: GMM, x, sample_weight, beta, entropy=False) -> Summary:
    """The E step and statistics of the centered two-pass route (see
    :class:`Summary`)."""
    resp, log_prob, ll, *rest = _posteriors(_two_pass_joint(gmm, x), beta, -1, entropy)
    if sample_weight is not None:
        ll = _weighted_sum(sample_weight, log_prob)
    _, _, c = center(gmm, x)
    # materialize the posteriors once: otherwise XLA may fuse their exponentials
    # into every reduction of the M step and recompute them there
    resp = jax.lax.optimization_barrier(resp)
    stats = two_pass_statistics(x, resp, sample_weight, gmm.covariance_type, c)
    summed = _weighted_sum(sample_weight, rest[0]) if entropy else None
    return Summary(stats, c, False, ll, log_prob, summed)


def _update_by(summarize):
    """One EM step by a route (``summarize``: :func:`expanded_summary` or
    :func:`two_pass_summary`): ``(MStep, total log-likelihood, log p(x_i))``."""

    def update(gmm: GMM, x, sample_weight, reg_covar, beta, prior=None):
        summary = summarize(gmm, x, sample_weight, beta)
        m = summary.maximize(
            reg_covar, gmm.covariance_type, prior=prior, active=_active(gmm, prior)
        )
        return m, summary.ll, summary.log_prob

    return update


_expanded_update = _update_by(expanded_summary)
_two_pass_update = _update_by(two_pass_summary)


def em_update(gmm: GMM, x, sample_weight, reg_covar, beta, prior=None):
    """One EM step by EM's route: ``((gmm, counts, spread), ll, log_prob)``.

    The new model (the posterior mode with a :class:`gmmjax.Prior`), the counts
    ``N_j`` ``(k,)`` and the :class:`Spread` of the M step, the total
    log-likelihood of ``gmm`` and ``log p(x_i)`` under it ``(n,)``. No
    validation.
    """

    def route(update):
        def run(gmm, x, sample_weight, reg_covar, beta, prior):
            m, ll, log_prob = update(gmm, x, sample_weight, reg_covar, beta, prior)
            return (m.gmm, m.centered.counts, m.spread), ll, log_prob

        return run

    args = (x, sample_weight, reg_covar, beta, prior)
    return by_route(route(_expanded_update), route(_two_pass_update), gmm, *args)


def _em_step(gmm: GMM, x, sample_weight, reg_covar, beta, prior=None):
    """One EM step: ``(gmm, StepInfo, log p(x_i) of the starting model)``.

    Components of weight 0 (logit ``-inf``) are inactive: their posteriors are
    exactly 0, so the active ones get the step of the mixture of the active
    components alone (to rounding), while the inactive ones keep their
    parameters and weight 0 (:func:`gmmjax._degeneracy.keep_inactive`) and never
    count as empty or collapsed. With a :class:`gmmjax.Prior` the step is
    MAP-EM's and the :class:`StepInfo` carries the log posterior
    ``L + log p(theta)`` of the starting model, so that the driver's
    convergence test reads the objective MAP-EM increases.
    """
    (new, counts, spread), ll, log_prob = em_update(
        gmm, x, sample_weight, reg_covar, beta, prior
    )
    active = jnp.isfinite(gmm.logits)
    # the weights' numerators: the Dirichlet prior adds alpha - 1 to every count
    shares = counts if prior is None else counts + (prior.concentration - 1)
    new = keep_inactive(new, gmm, shares, active)
    n = sample_count(x, sample_weight)
    total = x.shape[0] if sample_weight is None else jnp.sum(sample_weight)
    degenerate = degenerate_component(counts, spread, n, total, active)
    if prior is not None:
        ll = ll + log_prior_density(gmm, prior).astype(ll.dtype)
    return new, StepInfo(ll, degenerate, jnp.asarray(True)), log_prob


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

    def keep(gmm, *_):
        return gmm

    # re-seeds are rare: under vmap only the lanes that re-seed run it
    args = (jnp.maximum(j, 0), log_prob, x, sample_weight, reg_covar)
    new = lane_cond(~go, keep, reseed_component, gmm, *args)
    info = StepInfo(
        info.log_likelihood, jnp.where(go, -1, j).astype(jnp.int32), info.can_stop & ~go
    )
    return new, info, used + go.astype(jnp.int32)


@jax.jit
def _em_step_jit(gmm, x, sample_weight, reg_covar, beta, prior):
    return _em_step(gmm, x, sample_weight, reg_covar, beta, prior)[0]


def em_step(
    gmm: GMM, x, *, sample_weight=None, reg_covar=1e-6, beta=1.0, prior=None
) -> GMM:
    """One jitted EM iteration: an E step at inverse temperature ``beta``, then an M
    step.

    At ``beta = 1`` the total log-likelihood never decreases (up to rounding);
    with a ``prior`` (and ``reg_covar = 0``) the log posterior never does.
    ``reg_covar``, ``beta`` and the prior are traced: new values do not
    recompile.

    Args:
        gmm: the current mixture.
        x: ``(n, d)`` data.
        sample_weight: optional ``(n,)`` non-negative weights.
        reg_covar: added to the diagonal of every covariance.
        beta: inverse temperature of the responsibilities (deterministic annealing).
        prior: ``None``, or a :class:`gmmjax.Prior` for MAP-EM's step.

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
    check_reg_covar(reg_covar, n_features=x.shape[1])
    if prior is not None:
        check_prior(prior)
        check_prior_shapes(prior, x.shape[1], gmm.covariance_type)
    return _em_step_jit(gmm, x, w, reg_covar, beta, prior)


# ------------------------------------------------------------ regularization


def relative_reg_covar(x, fraction=1e-6, *, sample_weight=None) -> jax.Array:
    """A scale-relative ``reg_covar``: ``fraction`` times each feature's variance.

    scikit-learn's ``reg_covar`` is absolute: the same value is added to every
    feature's variance, whatever its units. On data whose features differ in
    scale by orders of magnitude that is a large change to the small ones (``1e-6``
    added to a variance of ``1e-5`` is 10%) and none to the large ones, and
    measuring a feature in other units changes the fit. This returns one value
    per feature, ``r_f = fraction * V_f`` with ``V_f`` the data's (weighted)
    variance of feature ``f``, for the ``reg_covar`` of :class:`EM`,
    :func:`em_step`, :func:`m_step`, :func:`gmmjax.init_gmm`,
    :func:`gmmjax.multistart` and the other fitters. With it the ``full``,
    ``diag`` and ``tied`` fits are equivariant under rescaling a feature: the same
    fit, in the new units, with the log-likelihood shifted by ``n log c`` (the
    Jacobian); on standardized data it is scikit-learn's ``reg_covar=fraction``.
    A ``spherical`` model adds the vector's mean, one number, to its variance.
    :func:`gmmjax.select` and the ``gmmjax`` command line use it by default
    (``reg_scale="relative"``).

    A feature that does not vary (variance at the rounding level of its values)
    takes the mean variance of the others (``1`` if none varies), so the floor
    stays positive.

    Args:
        x: ``(n, d)`` data.
        fraction: a number ``>= 0``, the floor in units of each feature's variance.
        sample_weight: optional ``(n,)`` non-negative weights.

    Returns:
        ``(d,)`` the per-feature floor, in ``x``'s dtype.

    Example:
        >>> import jax.numpy as jnp, gmmjax
        >>> x = jnp.array([[0.0, 0.0], [2.0, 2000.0], [4.0, 4000.0]])
        >>> [round(float(r), 4) for r in gmmjax.relative_reg_covar(x, 1e-3)]
        [0.0027, 2666.6667]
    """
    x = check_data(x)
    check_nonnegative_scalar(fraction, "fraction")
    w = check_sample_weight(sample_weight, x.shape[0], x.dtype)
    return jnp.asarray(fraction, x.dtype) * data_variance(x, w)


# ----------------------------------------------------------------- the fitter


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

    ``max_reseeds`` is static (part of the pytree's structure, not a leaf): a new
    budget compiles a new program, and the default ``0`` compiles a step without
    the re-seed code, which compiles about a fifth faster; under ``vmap`` only
    the restarts that re-seed run the re-seed.

    **MAP-EM.** With a :class:`gmmjax.Prior` every M step is the posterior mode
    given the responsibilities (:func:`gmmjax._prior.posterior_mode`, mclust's
    ``me`` with ``prior = priorControl()``), and EM increases the log posterior
    ``L(theta) + log p(theta)`` (:func:`gmmjax.log_prior`): the step reports it
    for the convergence test, and :meth:`objective` gives it, so
    :attr:`gmmjax.FitResult.objective` holds it and :func:`gmmjax.best_of`
    compares restarts by it (``FitResult.log_likelihood`` stays the
    log-likelihood, which mclust's BIC reads). ``reg_covar`` is still added
    after the MAP step: pass ``reg_covar=0`` for exact MAP-EM. The prior is a
    pytree of leaves (traced: a new prior of the same shapes does not
    recompile; batched with ``vmap``); ``prior=None`` compiles plain EM.

    Args:
        reg_covar: non-negative value added to the diagonal of every covariance in
            the M step (scikit-learn's convention), keeping covariances positive
            definite; or a ``(d,)`` array, one value per feature, e.g.
            :func:`relative_reg_covar`'s scale-relative floor.
        max_reseeds: the number of re-seeds a run may use, a Python integer
            ``>= 0`` (static); ``0`` (default) never re-seeds.
        prior: ``None`` (maximum likelihood, the default) or a
            :class:`gmmjax.Prior` shaped for the data and the model's
            covariance type (checked when a fit starts).

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

        MAP-EM with mclust's default prior: the fit's objective is the log
        posterior.

        >>> prior = gmmjax.Prior.default(x, n_components=2)
        >>> result = gmmjax.fit(gmmjax.EM(prior=prior, reg_covar=0.0), gmm0, x)
        >>> gap = result.objective - result.log_likelihood
        >>> bool(abs(gap - gmmjax.log_prior(result.gmm, prior)) < 1e-3)
        True
    """

    reg_covar: float | jax.Array = 1e-6
    max_reseeds: int = 0
    prior: Prior | None = None

    def check(self) -> None:
        """Validate the hyperparameters (called by the drivers at the API edge)."""
        check_reg_covar(self.reg_covar)
        if self.prior is not None:
            check_prior(self.prior)
        budget = self.max_reseeds
        if isinstance(budget, (bool, np.bool_)) or not isinstance(
            budget, numbers.Integral
        ):
            raise TypeError(
                "max_reseeds must be an integer (a Python int: it is static, not "
                f"traced), got {budget!r}"
            )
        if budget < 0:
            raise ValueError(f"max_reseeds must be >= 0, got {budget}")

    def init(self, gmm: GMM, x, *, sample_weight=None) -> EMState:
        """Start state: the initial model, no re-seed used."""
        return EMState(gmm, jnp.asarray(0, jnp.int32))

    def step(self, state: EMState, x, *, sample_weight=None, beta=1.0):
        """One EM iteration (and a re-seed if needed); ``(EMState, StepInfo)``."""
        gmm, info, log_prob = _em_step(
            state.gmm, x, sample_weight, self.reg_covar, beta, self.prior
        )
        if self.max_reseeds == 0:
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

    @property
    def objective(self):
        """``objective(state, x, *, sample_weight=None) -> ()``, the total log
        posterior ``L(theta) + log p(theta)`` at ``state``, with a prior;
        ``None`` without one (the objective is then the log-likelihood).
        :attr:`gmmjax.FitResult.objective` reads it."""
        if self.prior is None:
            return None
        prior = self.prior

        def log_posterior(state, x, *, sample_weight=None):
            ll = total_log_likelihood(state.gmm, x, sample_weight)
            return ll + log_prior_density(state.gmm, prior).astype(ll.dtype)

        return log_posterior


jax.tree_util.register_dataclass(
    EM, data_fields=["reg_covar", "prior"], meta_fields=["max_reseeds"]
)
