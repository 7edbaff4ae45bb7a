"""Initialization of mixtures from data, in pure JAX (vmappable over keys)."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from ._degeneracy import data_variance, keep_inactive
from ._gmm import GMM
from ._levels import ByWork, fit_work
from ._stats import maximize, two_pass_statistics
from ._validation import (
    check_covariance_type,
    check_data,
    check_key,
    check_positive_int,
    check_reg_covar,
    check_sample_weight,
)

__all__ = [
    "INIT_METHODS",
    "ResponsibilityStart",
    "init_gmm",
    "init_gmm_jit",
    "init_responsibilities",
    "kmeans_plusplus",
]

INIT_METHODS = ("kmeans++", "kmeans", "random", "random_from_data", "hc")

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


def _sq_distances(x, centers, active=None):
    """``(n, k)`` squared Euclidean distances, from one matrix product; ``inf``
    to the inactive centers (``active`` ``(k,)`` bool, default all active), which
    also stay out of the shift."""
    if active is None:
        shift = jnp.mean(centers, axis=0)
    else:
        count = jnp.sum(active).astype(centers.dtype)
        shift = jnp.sum(jnp.where(active[:, None], centers, 0.0), axis=0) / count
    xc, cc = x - shift, centers - shift
    d2 = (
        jnp.sum(xc**2, axis=1)[:, None]
        - 2.0 * xc @ cc.T
        + jnp.sum(cc**2, axis=1)[None, :]
    )
    d2 = jnp.maximum(d2, 0.0)
    return d2 if active is None else jnp.where(active, d2, jnp.inf)


def _value_order(x):
    """Row indices in an order set by the rows' values, not their positions:
    by two fixed projections, then the first feature. Identical rows end up
    side by side, so a row of weight ``m`` and ``m`` copies of it cover the
    same stretch of the cumulative weights; distinct rows tie on all three
    keys only in contrived data."""
    d = x.shape[1]
    j = jnp.arange(d, dtype=x.dtype)
    # weights with no simple ratios between them: a permutation of a row's
    # features changes both projections
    first = jnp.sum(x * jnp.sqrt(j + 2.0), axis=1)
    second = jnp.sum(x * jnp.cos(j + 1.0), axis=1)
    return jnp.lexsort((x[:, 0], second, first))


def _draw(p, w, u):
    """Indices drawn with probability proportional to ``p`` (``(n,)``, in value
    order), by inverting the cumulative weights at the uniforms ``u``: a row's
    chance is its share of the total, however the weight is split among
    identical rows. Where ``p`` is all zero the sample weights ``w`` are used;
    a row of weight 0 is never drawn."""
    p = jnp.where(jnp.sum(p) > 0, p, w)
    cumulative = jnp.cumsum(p)
    index = jnp.searchsorted(cumulative, u * cumulative[-1], side="right")
    last = p.shape[0] - 1 - jnp.argmax(p[::-1] > 0)
    return jnp.minimum(index, last)


def _n_trials(k: int) -> int:
    """Candidates per k-means++ center: ``2 + floor(log k)``, as scikit-learn."""
    return 2 + int(math.log(k))


def kmeans_plusplus(key, x, n_components: int, sample_weight=None, n_active=None):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007).

    Each new center is the best of ``2 + floor(log k)`` candidates drawn with
    probability proportional to ``w_i D(x_i)^2`` (the squared distance to the
    nearest chosen center), as in scikit-learn.

    The draws depend on the weighted data, not on the rows' positions: each is
    the inverse of the cumulative weights, over the rows in an order set by
    their values, at a uniform of its own key (center ``j``, trial ``t``). So
    shuffled rows, a row of integer weight ``m`` in place of ``m`` copies, and
    rows of weight 0 appended (a size bucket's padding) give the same centers;
    and the first ``k`` centers of a ``K``-center call with ``n_active=k`` are
    those of a ``k``-center call.

    Args:
        key: a ``jax.random`` key.
        x: ``(n, d)`` data.
        n_components: the number of centers ``K`` (static).
        sample_weight: optional ``(n,)`` weights.
        n_active: optional ``()`` int, the number ``k <= K`` of centers to seed
            (may be traced); the remaining rows of the result are zero.

    Returns:
        ``(K, d)`` centers, the first ``k`` of them data points.
    """
    x = jnp.asarray(x)
    n, d = x.shape
    w = jnp.ones(n, x.dtype) if sample_weight is None else sample_weight
    order = _value_order(x)
    x, w = x[order], w[order]
    max_trials = _n_trials(n_components)
    if n_active is None:
        n_active, trials = n_components, max_trials
    else:
        table = [_n_trials(max(k, 1)) for k in range(n_components + 1)]
        trials = jnp.asarray(table)[n_active]
    key_first, key_rest = jax.random.split(key)
    first = _draw(w, w, jax.random.uniform(key_first, (), x.dtype))
    centers = jnp.zeros((n_components, d), x.dtype).at[0].set(x[first])
    closest = jnp.sum((x - x[first]) ** 2, axis=1)
    trial_ids = jnp.arange(max_trials)

    def body(j, carry):
        centers, closest = carry
        u = jax.random.uniform(jax.random.fold_in(key_rest, j), (max_trials,), x.dtype)
        candidates = _draw(w * closest, w, u)
        # each candidate's distances on their own (no shared shift), so a
        # candidate's cost does not depend on how many others are drawn
        d2 = jnp.sum((x[None, :, :] - x[candidates][:, None, :]) ** 2, axis=-1)
        new = jnp.minimum(closest[None, :], d2)
        cost = jnp.where(trial_ids < trials, jnp.sum(new * w, axis=1), jnp.inf)
        best = jnp.argmin(cost)
        return centers.at[j].set(x[candidates[best]]), new[best]

    centers, _ = jax.lax.fori_loop(1, n_active, body, (centers, closest))
    return centers


def _lloyd(x, centers, w, active=None, max_iter=100):
    """Lloyd's k-means iterations until the assignment of the samples of
    positive weight stops changing; inactive centers get no samples."""
    k = centers.shape[0]

    def assign(c):
        return jnp.argmin(_sq_distances(x, c, active), axis=1)

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
        changed = jnp.any((new_labels != labels) & (w > 0))
        return centers, new_labels, changed, i + 1

    labels = assign(centers)
    centers, _, _, _ = jax.lax.while_loop(
        cond, body, (centers, labels, jnp.asarray(True), 0)
    )
    return centers


def _uniform_columns(key, n: int, k: int, dtype):
    """``(n, k)`` uniform draws, column ``j`` from its own key: the first columns
    do not depend on ``k``, the first rows not on ``n``."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(k))
    return jax.vmap(lambda kk: jax.random.uniform(kk, (n,), dtype))(keys).T


def _frozen(x, w, gmm: GMM) -> GMM:
    """``gmm``'s structure with every component at the data's (weighted) mean
    and per-feature variance: the finite, positive-definite parameters an
    inactive component keeps. Diagonal covariances, so their precision factors
    are written down, not factorized."""
    k, d = gmm.means.shape
    weights = jnp.ones(x.shape[0], x.dtype) if w is None else w
    mean = weights @ x / jnp.sum(weights)
    var = data_variance(x, w)
    ctype = gmm.covariance_type
    means = jnp.broadcast_to(mean, (k, d))
    if ctype == "spherical":
        log_diag = jnp.full((k,), -0.5 * jnp.log(jnp.mean(var)))
    else:
        log_diag = jnp.broadcast_to(
            -0.5 * jnp.log(var), (d,) if ctype == "tied" else (k, d)
        )
    off_diag = None if gmm.off_diag is None else jnp.zeros_like(gmm.off_diag)
    return GMM(gmm.logits, means, log_diag, off_diag, ctype)


@dataclasses.dataclass(frozen=True)
class ResponsibilityStart:
    """A start given as responsibilities: :class:`gmmjax.VB` begins with the
    variational M step from them, as scikit-learn's ``BayesianGaussianMixture``
    begins from its initialization's (k-means labels, random draws).

    Pass it to :func:`gmmjax.fit` as the start of a fitter that takes one
    (:class:`gmmjax.VB`), or to such a fitter's ``init``.
    :func:`init_responsibilities` makes the starts of the initialization
    methods.

    Attributes:
        resp: ``(n, k)`` responsibilities, rows on the simplex.

    Example:
        >>> import jax.numpy as jnp, gmmjax
        >>> x = jnp.array([[0.0], [0.2], [5.0], [5.3]])
        >>> prior = gmmjax.VariationalPrior.default(x, n_components=2)
        >>> start = gmmjax.ResponsibilityStart(jnp.eye(2)[jnp.array([0, 0, 1, 1])])
        >>> state = gmmjax.VB(prior=prior).init(start, x)
        >>> [round(float(m), 3) for m in state.gmm.means[:, 0]]
        [0.942, 4.308]
    """

    resp: jax.Array

    @property
    def n_components(self) -> int:
        """The number of components ``k``."""
        return self.resp.shape[-1]


jax.tree_util.register_dataclass(
    ResponsibilityStart, data_fields=["resp"], meta_fields=[]
)


def init_responsibilities(
    key, x, w, n_active=None, given=None, *, n_components, method
):
    """``(n, k)`` starting responsibilities of an initialization ``method``:
    the one-hot labels of the k-means methods, ``"random_from_data"`` and
    ``"hc"``, or ``"random"``'s uniform draws normalized per row (no validation;
    arguments as in :func:`init_gmm_jit`). :func:`init_gmm_jit` fits a model to
    them; a fitter that starts from responsibilities (scikit-learn's
    variational mixture) takes them as they are. Inactive components (past
    ``n_active``) get no responsibility."""
    n = x.shape[0]
    k = n_components
    weights = jnp.ones(n, x.dtype) if w is None else w
    active = None if n_active is None else jnp.arange(k) < n_active
    if method == "hc":
        # imported here: the hierarchical clustering builds on this module
        from ._hc import hc_labels

        tree = hc_labels(x, weights, n_clusters=k)
        labels = tree[k - 1] if n_active is None else tree[n_active - 1]
        resp = jax.nn.one_hot(labels, k, dtype=x.dtype)
    elif method == "random":
        resp = _uniform_columns(key, n, k, x.dtype)
        if active is not None:
            resp = jnp.where(active, resp, 0.0)
        resp = resp / jnp.sum(resp, axis=1, keepdims=True)
    else:
        if method == "random_from_data":
            p = weights / jnp.sum(weights)
            idx = _choice_without_replacement(key, p, k)
            labels = jnp.argmin(_sq_distances(x, x[idx], active), axis=1)
        else:
            # seeded and refined in standard units: a feature measured in
            # thousands would otherwise decide every distance
            xs = x / jnp.sqrt(data_variance(x, w))
            centers = kmeans_plusplus(key, xs, k, w, n_active)
            if method == "kmeans":
                centers = _lloyd(xs, centers, weights, active)
            labels = jnp.argmin(_sq_distances(xs, centers, active), axis=1)
        resp = jax.nn.one_hot(labels, k, dtype=x.dtype)
    if given is not None:
        use, labels = given
        resp = jnp.where(use, jax.nn.one_hot(labels, k, dtype=x.dtype), resp)
    return resp


@functools.partial(
    ByWork,
    work=lambda key, x, *_, n_components, **__: fit_work(x, n_components),
    static_argnames=("n_components", "covariance_type", "method"),
)
def init_gmm_jit(
    key,
    x,
    w,
    reg_covar,
    n_active=None,
    given=None,
    *,
    n_components,
    covariance_type,
    method,
):
    """:func:`init_gmm`'s jitted kernel, without validation (``w``: weights or
    ``None``).

    ``given``, optional, is a pair ``(use, labels)``: a ``()`` bool and ``(n,)``
    int labels in ``0..k-1``; where ``use`` is true the start is fitted to that
    partition instead of the method's own (a lane of a batch of starts that
    starts from the hierarchical partition, computed once for the batch).

    ``n_active`` (``()`` int, traced; default ``n_components``) masks
    components: the first ``k = n_active`` of the ``K = n_components`` are
    initialized as :func:`init_gmm` with ``n_components=k`` and the same key
    initializes them (to rounding), the others are inactive: logit ``-inf``
    (weight 0) and the data's mean and per-feature variance, so one compiled
    program serves every ``k <= K``. Rows of weight 0 appended to ``x`` change
    nothing but rounding.
    """
    resp = init_responsibilities(
        key, x, w, n_active, given, n_components=n_components, method=method
    )
    stats = two_pass_statistics(x, resp, w, covariance_type)
    m = maximize(stats, reg_covar, covariance_type, expanded=False)
    if n_active is None:
        return m.gmm
    active = jnp.arange(n_components) < n_active
    frozen = _frozen(x, w, m.gmm)
    return keep_inactive(m.gmm, frozen, m.centered.counts, active)


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

    - ``"kmeans++"``: greedy k-means++ seeds, each sample assigned to its nearest;
      the draws depend on the weighted data, not on the rows' positions (see
      :func:`kmeans_plusplus`), so integer weights equal repeated rows.
    - ``"kmeans"``: the same seeds refined by Lloyd's iterations (jitted, until the
      assignment is stable, at most 100).

    Both k-means methods measure distances in standard units: each feature
    divided by its (weighted) standard deviation, so the start does not depend
    on the features' units (multiplying a feature by 1,000 gives the same
    partition), where k-means in raw units lets the largest-scale feature
    decide. The model is then fitted to the partition in the original units.
    - ``"random"``: uniform random responsibilities (all means start near the data
      mean — close to the symmetric saddle of the likelihood).
    - ``"random_from_data"``: ``k`` distinct data points drawn at random as seeds,
      each sample assigned to its nearest.
    - ``"hc"``: the partition into ``k`` clusters of model-based agglomerative
      hierarchical clustering (Ward's criterion, the classification likelihood
      of spherical equal-volume Gaussians, on mclust's scaled SVD of the
      standardized data, on at most 2,000 rows; see :func:`gmmjax._hc.hc_labels`).
      Deterministic: the key is not used.

    Vmappable over ``key`` for many starts at once.

    Args:
        key: a ``jax.random`` key.
        x: ``(n, d)`` data with ``n >= n_components``.
        n_components: the number of components ``k`` (static).
        covariance_type: ``"full"``, ``"diag"``, ``"spherical"`` or ``"tied"``.
        method: one of ``"kmeans++"``, ``"kmeans"``, ``"random"``,
            ``"random_from_data"``, ``"hc"``.
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
    check_reg_covar(reg_covar, n_features=x.shape[1])
    return init_gmm_jit(
        key,
        x,
        w,
        reg_covar,
        n_components=n_components,
        covariance_type=covariance_type,
        method=method,
    )
