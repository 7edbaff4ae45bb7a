"""Model selection: parameter counts, BIC, AIC, and the K x covariance-type grid."""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import numpy as np

from ._anneal import Annealed
from ._degeneracy import data_variance
from ._density import check_gmm, prepare, total_log_likelihood
from ._em import EM
from ._fit import FitResult, Status, check_fitter, check_steps
from ._gmm import GMM
from ._hc import hc_labels
from ._init import INIT_METHODS
from ._multistart import (
    best_of,
    check_hc_start,
    multistart,
    multistart_masked,
)
from ._prior import Prior, check_prior, check_prior_shapes, with_prior
from ._validation import (
    COVARIANCE_TYPES,
    check_covariance_type,
    check_data,
    check_nonnegative_scalar,
    check_positive_int,
    check_reg_covar,
)
from ._vb import VB

__all__ = [
    "SelectionResult",
    "aic",
    "bic",
    "leading_components",
    "masks_components",
    "n_parameters",
    "padded_components",
    "select",
]

CRITERIA = ("bic", "aic")
REG_SCALES = ("relative", "absolute")


def n_parameters(gmm: GMM) -> int:
    """The number of free parameters of a mixture, as scikit-learn counts them.

    ``k - 1`` weights, ``k d`` means, and the covariance entries: ``k d (d + 1) / 2``
    for ``full``, ``k d`` for ``diag``, ``k`` for ``spherical`` and ``d (d + 1) / 2``
    for ``tied``.

    Args:
        gmm: a :class:`GMM` (its shapes are all that is read).

    Returns:
        The count, a Python ``int``.

    Example:
        >>> import gmmjax
        >>> gmm = gmmjax.GMM.from_natural([0.5, 0.5], [[0.0, 0.0], [3.0, 3.0]],
        ...                               [[1.0, 1.0], [2.0, 0.5]],
        ...                               covariance_type="diag")
        >>> gmmjax.n_parameters(gmm)
        9
    """
    check_gmm(gmm)
    return _count(gmm.n_components, gmm.n_features, gmm.covariance_type)


def _count(k: int, d: int, covariance_type: str) -> int:
    covariance = {
        "full": k * d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
        "tied": d * (d + 1) // 2,
    }[covariance_type]
    return covariance + k * d + k - 1


def bic(gmm: GMM, x) -> jax.Array:
    """The Bayesian information criterion of a mixture on data (lower is better).

    ``BIC = -2 L + p log n`` with ``L`` the total log-likelihood of the ``n``
    samples and ``p = n_parameters(gmm)``: scikit-learn's
    ``GaussianMixture.bic``. Of a MAP fit (``gmmjax.EM(prior=...)``) it is
    mclust's BIC with a prior (up to mclust's sign): the log-likelihood at the
    MAP estimate, the prior left out, and the same parameter count.

    Args:
        gmm: the fitted :class:`GMM`.
        x: ``(n, d)`` data.

    Returns:
        ``()`` the criterion.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> runs = gmmjax.multistart(gmmjax.EM(), jax.random.key(0), x,
        ...                          n_components=2, n_init=4)
        >>> round(float(gmmjax.bic(gmmjax.best_of(runs).gmm, x)), 1)
        2322.2
    """
    x, _ = prepare(gmm, x)
    ll = total_log_likelihood(gmm, x)
    return _criterion("bic", ll, n_parameters(gmm), x.shape[0])


def aic(gmm: GMM, x) -> jax.Array:
    """The Akaike information criterion of a mixture on data (lower is better).

    ``AIC = -2 L + 2 p`` with ``L`` the total log-likelihood and
    ``p = n_parameters(gmm)``: scikit-learn's ``GaussianMixture.aic``.

    Args:
        gmm: the fitted :class:`GMM`.
        x: ``(n, d)`` data.

    Returns:
        ``()`` the criterion.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> runs = gmmjax.multistart(gmmjax.EM(), jax.random.key(0), x,
        ...                          n_components=2, n_init=4)
        >>> round(float(gmmjax.aic(gmmjax.best_of(runs).gmm, x)), 1)
        2282.5
    """
    x, _ = prepare(gmm, x)
    ll = total_log_likelihood(gmm, x)
    return _criterion("aic", ll, n_parameters(gmm), x.shape[0])


def _criterion(criterion: str, ll, p: int, n: int):
    """``-2 L`` plus the penalty: ``p log n`` (BIC) or ``2 p`` (AIC)."""
    penalty = p * math.log(n) if criterion == "bic" else 2.0 * p
    return -2.0 * ll + penalty


@dataclasses.dataclass(frozen=True)
class SelectionResult:
    """The outcome of :func:`gmmjax.select`: the criterion table and the choice.

    Rows are the candidate numbers of components, columns the covariance types.
    Each cell holds the best of its restarts (:func:`gmmjax.best_of`). A cell whose
    best run ended ``NONFINITE`` or ``DEGENERATE`` is shown but never chosen
    (unless no cell succeeded).

    Attributes:
        criterion: ``"bic"`` or ``"aic"``.
        n_components: the row labels, ``(r,)`` ints.
        covariance_types: the column labels, ``(c,)`` strings.
        values: ``(r, c)`` NumPy array of criterion values (lower is better).
        log_likelihood: ``(r, c)`` total log-likelihood of each cell's best run.
        n_parameters: ``(r, c)`` parameter counts.
        status: ``(r, c)`` :class:`gmmjax.Status` values of each cell's best run.
        fits: ``{(k, covariance_type): FitResult}``, each cell's best run.
        best: the chosen cell's :class:`gmmjax.FitResult`.
        best_n_components: the chosen number of components.
        best_covariance_type: the chosen covariance type.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> table = gmmjax.select(jax.random.key(0), x, n_components=[1, 2],
        ...                       covariance_types=["full"], n_init=2)
        >>> table.best_n_components, table.best_covariance_type
        (2, 'full')
        >>> table.values.shape
        (2, 1)
    """

    criterion: str
    n_components: tuple[int, ...]
    covariance_types: tuple[str, ...]
    values: np.ndarray
    log_likelihood: np.ndarray
    n_parameters: np.ndarray
    status: np.ndarray
    fits: dict
    best: FitResult
    best_n_components: int
    best_covariance_type: str

    @property
    def best_gmm(self) -> GMM:
        """The chosen model."""
        return self.best.gmm

    def to_markdown(self) -> str:
        """The criterion table in Markdown; failed cells are marked with their
        status, the chosen cell with ``*``."""
        header = f"| k | {' | '.join(self.covariance_types)} |"
        rule = "|---:|" + "---:|" * len(self.covariance_types)
        rows = [header, rule]
        for i, k in enumerate(self.n_components):
            cells = []
            for j, ctype in enumerate(self.covariance_types):
                text = f"{self.values[i, j]:.3f}"
                status = Status(int(self.status[i, j]))
                if status not in (Status.CONVERGED, Status.MAX_STEPS):
                    text += f" ({status.name})"
                if k == self.best_n_components and ctype == self.best_covariance_type:
                    text += " *"
                cells.append(text)
            rows.append(f"| {k} | {' | '.join(cells)} |")
        return "\n".join(rows)

    def __str__(self) -> str:
        choice = (
            f"best by {self.criterion.upper()}: {self.best_n_components} components, "
            f"covariance_type={self.best_covariance_type!r}"
        )
        title = f"{self.criterion.upper()} (lower is better)"
        return f"{title}\n{self.to_markdown()}\n{choice}"


def leading_components(gmm: GMM, k: int) -> GMM:
    """The mixture of ``gmm``'s first ``k`` components, the others dropped (a
    ``tied`` covariance is shared and kept). With the others masked (weight 0,
    see ``gmmjax._em._em_step``) it is the same density. Works on the host
    (NumPy leaves) and on device arrays."""
    per_component = gmm.covariance_type != "tied"
    log_diag, off_diag = gmm.log_diag, gmm.off_diag
    if per_component:
        log_diag = log_diag[:k]
        if off_diag is not None:
            off_diag = off_diag[:k]
    return GMM(gmm.logits[:k], gmm.means[:k], log_diag, off_diag, gmm.covariance_type)


def padded_components(gmm: GMM, size: int) -> GMM:
    """``gmm`` with inactive components appended up to ``size``: weight 0
    (logit ``-inf``) and the first component's other parameters, finite and
    positive definite. The same density: :func:`leading_components` undoes it.
    On the host (NumPy leaves), so no program is compiled per size.

    Example:
        >>> import gmmjax
        >>> from gmmjax._selection import padded_components
        >>> gmm = gmmjax.GMM.from_natural([0.5, 0.5], [[0.0], [1.0]], [1.0, 1.0],
        ...                               covariance_type="spherical")
        >>> padded_components(gmm, 4).weights.tolist()
        [0.5, 0.5, 0.0, 0.0]
    """
    gmm = jax.tree_util.tree_map(np.asarray, gmm)
    extra = size - gmm.logits.shape[0]

    def pad(a):
        return np.concatenate([a, np.repeat(a[:1], extra, axis=0)])

    logits = np.concatenate([gmm.logits, np.full(extra, -np.inf, gmm.logits.dtype)])
    log_diag, off_diag = gmm.log_diag, gmm.off_diag
    if gmm.covariance_type != "tied":
        log_diag = pad(log_diag)
        if off_diag is not None:
            off_diag = pad(off_diag)
    return GMM(logits, pad(gmm.means), log_diag, off_diag, gmm.covariance_type)


def _scale_reg_covar(fitter, scale):
    """``fitter`` with the ``reg_covar`` of its :class:`gmmjax.EM` (itself, or
    inside :class:`gmmjax.Annealed`) multiplied by ``scale``, ``(d,)``."""
    if isinstance(fitter, Annealed):
        return dataclasses.replace(fitter, inner=_scale_reg_covar(fitter.inner, scale))
    if isinstance(fitter, EM):
        return dataclasses.replace(fitter, reg_covar=fitter.reg_covar * scale)
    return fitter


def masks_components(fitter) -> bool:
    """Whether ``fitter`` keeps components of weight 0 frozen at weight 0 and
    fits the others as a mixture of them alone: :class:`gmmjax.EM` does, and so
    does :class:`gmmjax.Annealed` around it."""
    while isinstance(fitter, Annealed):
        fitter = fitter.inner
    return isinstance(fitter, EM)


# the rows :func:`_host_log_joint` projects at once
_HOST_ROWS = 2**14


def _host_log_joint(gmm: GMM, x: np.ndarray) -> np.ndarray:
    """``(n, k)`` ``log pi_j + log N(x_i | mu_j, Sigma_j)`` of a mixture with
    NumPy leaves, in NumPy: nothing compiles per number of components."""
    logits = np.asarray(gmm.logits, np.float64)
    means = np.asarray(gmm.means, np.float64)
    log_diag = np.asarray(gmm.log_diag, np.float64)
    k, d = means.shape
    top = np.max(logits)
    log_w = logits - (top + np.log(np.sum(np.exp(logits - top))))
    if gmm.covariance_type in ("full", "tied"):
        # the upper precision Cholesky factors P, packed as GMM packs them
        rows, cols = np.triu_indices(d, 1)
        off = np.broadcast_to(np.asarray(gmm.off_diag, np.float64), (k, len(rows)))
        log_diag = np.broadcast_to(log_diag, (k, d))
        p = np.zeros((k, d, d))
        p[:, np.arange(d), np.arange(d)] = np.exp(log_diag)
        p[:, rows, cols] = off
    else:
        if gmm.covariance_type == "spherical":
            log_diag = np.repeat(log_diag[:, None], d, axis=1)
        p = np.exp(log_diag)
    centers = np.einsum("kd,kde->ke", means, p) if p.ndim == 3 else means * p
    quad = np.empty((x.shape[0], k))
    # in chunks of rows: the (rows, k, d) projections of all n would be large
    for start in range(0, x.shape[0], _HOST_ROWS):
        chunk = x[start : start + _HOST_ROWS]
        if p.ndim == 3:
            y = np.einsum("nd,kde->nke", chunk, p) - centers
        else:
            y = chunk[:, None, :] * p - centers
        quad[start : start + len(chunk)] = np.sum(y * y, axis=-1)
    return log_w + np.sum(log_diag, axis=-1) - 0.5 * (d * np.log(2 * np.pi) + quad)


def _host_responsibilities(gmm: GMM, x: np.ndarray) -> np.ndarray:
    """``(n, k)`` responsibilities of a mixture with NumPy leaves, in NumPy."""
    joint = _host_log_joint(gmm, x)
    joint = np.exp(joint - np.max(joint, axis=1, keepdims=True))
    return joint / np.sum(joint, axis=1, keepdims=True)


def _splits(labels, xs, k: int, count: int) -> list:
    """Up to ``count`` partitions into ``k`` clusters from ``labels``, a
    partition into ``k - 1``: each cuts one cluster in two across its principal
    axis (in the standard units of ``xs``), the clusters of the largest scatter
    first, as bisecting k-means does."""
    scatter = []
    for c in range(k - 1):
        part = xs[labels == c]
        if len(part) >= 2:
            scatter.append((float(np.sum((part - part.mean(0)) ** 2)), c))
    out = []
    for _, c in sorted(scatter, reverse=True)[:count]:
        inside = np.flatnonzero(labels == c)
        part = xs[inside] - xs[inside].mean(0)
        side = part @ np.linalg.svd(part, full_matrices=False)[2][0] > 0
        if side.any() and not side.all():
            split = labels.copy()
            split[inside[side]] = k - 1
            out.append(split)
    return out


def _merges(resp, k: int, count: int) -> list:
    """Up to ``count`` partitions into ``k`` clusters from ``resp``, the ``(n,
    k + 1)`` responsibilities of a ``k + 1``-component fit: the hard partition
    with two of its components merged, the pairs whose merge lowers the entropy
    of the responsibilities most first (Baudry et al. 2010, the pairs that
    share their points most)."""
    tiny = np.finfo(np.float64).tiny
    entropy = resp * np.log(resp + tiny)
    gains = []
    for a in range(k + 1):
        for b in range(a + 1, k + 1):
            both = resp[:, a] + resp[:, b]
            gain = np.sum(both * np.log(both + tiny) - entropy[:, a] - entropy[:, b])
            gains.append((float(gain), a, b))
    hard = np.argmax(resp, axis=1)
    out = []
    for _, a, b in sorted(gains, reverse=True)[:count]:
        merged = np.where(hard == b, a, hard)
        out.append(np.where(merged > b, merged - 1, merged))
    return out


def _neighbour_partitions(cells, candidates, changed, x, xs, slots: int, dtype):
    """``(g, slots, n)`` labels of the starts that :func:`select`'s next round
    gives every ``k`` (``-1``: none, a keyed start), or ``None`` when no cell
    has a new one: the splits of the best ``k - 1`` fit and the merges of the
    best ``k + 1`` fit of the same covariance type (``cells``: host
    :class:`FitResult` by ``k``), where that fit is new (``changed``: the
    ``k`` whose fits changed in the last round)."""
    out = np.full((len(candidates), slots, x.shape[0]), -1, dtype)
    found_any = False
    for i, k in enumerate(candidates):
        found = []
        merge = k + 1 in cells and k + 1 in changed
        if k - 1 in cells and k - 1 in changed:
            # half the slots, or all of them when there is nothing to merge
            labels = np.argmax(_host_log_joint(cells[k - 1].gmm, x), axis=1)
            found += _splits(labels, xs, k, (slots + 1) // 2 if merge else slots)
        if merge:
            resp = _host_responsibilities(cells[k + 1].gmm, x)
            found += _merges(resp, k, slots - len(found))
        # a start needs every one of its k clusters
        found = [f for f in found if len(np.unique(f)) == k][:slots]
        for s, labels in enumerate(found):
            out[i, s] = labels
        found_any = found_any or bool(found)
    return out if found_any else None


def _usable_tier(result) -> int:
    """:func:`gmmjax._multistart.best_index`'s tier of a run: 0 usable, 1
    failed with a finite objective, 2 the rest."""
    if not np.isfinite(float(result.objective)):
        return 2
    return 0 if int(result.status) in (Status.CONVERGED, Status.MAX_STEPS) else 1


def _better(new, old) -> bool:
    """Whether :func:`gmmjax.best_of` prefers run ``new`` to run ``old``
    (a tie goes to ``old``, the earlier)."""
    a, b = _usable_tier(new), _usable_tier(old)
    if a != b:
        return a < b
    return a < 2 and float(new.objective) > float(old.objective)


def _label_dtype(k_max: int):
    """The smallest integer type of labels ``-1..k_max - 1``."""
    for dtype in (np.int8, np.int16):
        if k_max <= np.iinfo(dtype).max:
            return dtype
    return np.int32


def _fit_cells(
    fitter,
    key,
    x,
    candidates,
    covariance_type,
    options,
    tree,
    priors,
    partitions=None,
    first_key=0,
):
    """``(i, k, best run)`` for every candidate ``k``, as its result is ready.

    With a fitter that masks components, every ``k`` runs in one program with
    ``max(candidates)`` components (:func:`multistart_masked`, ``options``'
    ``n_init`` starts a ``k``, those of ``partitions`` among them, the others
    from the keys from ``first_key`` on); the best runs are cut to their ``k``
    components on the host (slicing device arrays would compile a program per
    ``k``) and stay there (NumPy leaves). Other fitters run
    :func:`gmmjax.multistart` per ``k``, one more start from the hierarchical
    partitions ``tree`` unless it is ``None``. ``priors``: ``None``, or the
    fitter's :class:`gmmjax.Prior` of every ``k``.
    """
    if not masks_components(fitter):
        for i, k in enumerate(candidates):
            runs = multistart(
                fitter if priors is None else with_prior(fitter, priors[i]),
                key,
                x,
                n_components=k,
                covariance_type=covariance_type,
                hc_start=tree is not None,
                **options,
            )
            yield i, k, best_of(runs)
        return
    if priors is not None:
        # one batch of priors, stacked on the host (no program per k)
        priors = jax.device_put(
            jax.tree_util.tree_map(lambda *a: np.stack(a), *jax.device_get(priors))
        )
    bests = multistart_masked(
        fitter,
        key,
        x,
        n_active=candidates,
        covariance_type=covariance_type,
        partitions=partitions,
        first_key=first_key,
        priors=priors,
        **options,
    )
    bests = jax.device_get(bests)
    for i, k in enumerate(candidates):
        best = jax.tree_util.tree_map(lambda a, i=i: a[i], bests)
        yield i, k, best._replace(gmm=leading_components(best.gmm, k))


def _host_data(x):
    """``(x, x in standard units)`` on the host in float64, which the split and
    merge starts of every covariance type read."""
    host_x = np.asarray(x, np.float64)
    return host_x, (host_x - host_x.mean(0)) / np.sqrt(
        np.asarray(data_variance(x, None))
    )


def _fit_type(
    fitter, key, x, candidates, covariance_type, options, tree, priors, rounds, host
):
    """``{k: best run}`` of one covariance type (host leaves with a fitter that
    masks components): the first round of starts (``options``' ``n_init``
    keyed starts and the hierarchical one of ``tree``), then up to ``rounds``
    rounds of starts from the neighbouring cells (see :func:`select`), all
    through one program. ``host``: ``x`` in float64 and in standard units,
    NumPy arrays (see :func:`_host_data`), needed with ``rounds``."""
    n_runs = options["n_init"]
    if not masks_components(fitter):
        return {
            k: best
            for _, k, best in _fit_cells(
                fitter, key, x, candidates, covariance_type, options, tree, priors
            )
        }
    n_runs += tree is not None
    options = {**options, "n_init": n_runs}
    partitions = None
    slots = n_runs if rounds else int(tree is not None)
    dtype = _label_dtype(max(candidates))
    if slots:
        # the hierarchical start last: the keyed starts keep their keys
        partitions = np.full((len(candidates), slots, x.shape[0]), -1, dtype)
        if tree is not None:
            partitions[:, -1] = tree[np.asarray(candidates) - 1]
    cells, changed = {}, set()
    for r in range(rounds + 1):
        if r:
            partitions = _neighbour_partitions(
                cells, candidates, changed, *host, slots, dtype
            )
            if partitions is None:
                break
            changed = set()
        for _, k, best in _fit_cells(
            fitter,
            key,
            x,
            candidates,
            covariance_type,
            options,
            None,
            priors,
            partitions,
            first_key=r * n_runs,
        ):
            if k not in cells or _better(best, cells[k]):
                cells[k] = best
                changed.add(k)
    return cells


def _prior_maker(prior, fitter, x):
    """``(k, covariance_type) -> Prior`` of :func:`select`'s ``prior`` (its
    priors checked), or ``None`` without one."""
    if prior is None:
        return None
    inner = fitter
    while isinstance(inner, Annealed):
        inner = inner.inner
    if not isinstance(inner, EM):
        raise ValueError(
            "prior needs an EM fitter (gmmjax.EM, or gmmjax.Annealed around it), "
            f"got {type(fitter).__name__}"
        )
    if isinstance(prior, str):
        if prior != "default":
            raise ValueError(
                f"prior must be None, 'default' or a function, got {prior!r}"
            )

        def make(k, covariance_type):
            return Prior.default(x, n_components=k, covariance_type=covariance_type)

        return make
    if not callable(prior):
        raise TypeError(
            "prior must be None, 'default' or a function (n_components, "
            f"covariance_type) -> gmmjax.Prior, got {type(prior).__name__}"
        )

    def checked(k, covariance_type):
        made = check_prior(prior(k, covariance_type))
        check_prior_shapes(made, x.shape[1], covariance_type)
        return made

    return checked


def _check_candidates(n_components, n_samples: int) -> tuple[int, ...]:
    if isinstance(n_components, numbers.Integral) and not isinstance(
        n_components, (bool, np.bool_)
    ):
        n_components = [n_components]
    try:
        values = list(n_components)
    except TypeError:
        raise TypeError(
            "n_components must be an int or an iterable of ints, got "
            f"{type(n_components).__name__}"
        ) from None
    if not values:
        raise ValueError("n_components must not be empty")
    out = []
    for value in values:
        k = check_positive_int(value, "n_components")
        if k > n_samples:
            raise ValueError(f"n_components={k} must be <= n_samples={n_samples}")
        if k in out:
            raise ValueError(f"n_components has a repeated value {k}")
        out.append(k)
    return tuple(out)


def _check_types(covariance_types) -> tuple[str, ...]:
    if isinstance(covariance_types, str):
        covariance_types = [covariance_types]
    try:
        values = list(covariance_types)
    except TypeError:
        raise TypeError(
            "covariance_types must be a string or an iterable of strings, got "
            f"{type(covariance_types).__name__}"
        ) from None
    if not values:
        raise ValueError("covariance_types must not be empty")
    out = []
    for value in values:
        check_covariance_type(value)
        if value in out:
            raise ValueError(f"covariance_types has a repeated value {value!r}")
        out.append(value)
    return tuple(out)


def select(
    key,
    x,
    *,
    n_components=range(1, 11),
    covariance_types=COVARIANCE_TYPES,
    criterion: str = "bic",
    n_init: int = 10,
    max_steps=500,
    tol=1e-6,
    init: str = "kmeans++",
    fitter=None,
    batch_size: int | None = None,
    reg_covar=1e-6,
    progress=None,
    hc_start: bool = True,
    reg_scale: str = "relative",
    prior=None,
    split_merge_rounds: int = 3,
) -> SelectionResult:
    """Fit every (number of components, covariance type) pair and pick the best.

    Each cell of the grid is fitted as by :func:`gmmjax.multistart` with
    ``n_init`` batched restarts (the same keys in every cell; with
    ``hc_start``, every cell also runs one more start, from the partition of
    one model-based hierarchical clustering of ``x`` cut at its ``k``, so its
    best run is never worse than without it), its best run is
    kept (:func:`gmmjax.best_of`) and scored by the criterion
    (:func:`gmmjax.bic` or :func:`gmmjax.aic`, lower is better). The chosen model
    minimizes the criterion over the cells whose best run ended normally; ties go
    to the fewer components, then to the earlier covariance type.

    **Starts from the neighbouring cells.** A cell's restarts often miss its
    best optimum when a neighbour has found it already: the ``k``-component
    optimum is often the ``(k - 1)``-component one with a cluster cut in two,
    or the ``(k + 1)``-component one with two clusters joined. So, with a
    fitter that masks components (EM), after the first round every cell runs
    up to ``split_merge_rounds`` more rounds of ``n_init (+ 1)`` starts, from
    the partitions of its neighbours of the same covariance type: the best
    ``k - 1`` fit's hard partition with one of its clusters (those of the
    largest scatter in standard units first) cut across its principal axis,
    and the best ``k + 1`` fit's with two of its components merged (those
    whose merge lowers the entropy of its responsibilities most, Baudry et al.
    2010), each round from the neighbours' fits of the round before, the
    remaining starts of the round from new keys. A cell keeps the best of all
    its runs, so a round never makes it worse; the rounds end early when no
    cell of the covariance type has improved. They run through the first
    round's program: no program compiles for them.

    All the cells of one covariance type run as one compiled program: every
    candidate ``k`` is fitted with ``K = max(n_components)`` components of which
    ``k`` are active and the others masked (weight 0, frozen), which is the
    ``k``-component fit to rounding, and each cell's best run is cut back to its
    ``k`` components. So a grid compiles one program per covariance type, not
    one per cell, at the price of ``K``-component arithmetic for every ``k``.

    **With a prior** (``prior="default"``: mclust's ``Mclust(...,
    prior = priorControl())``) every cell is fitted by MAP-EM with its own
    prior (:meth:`gmmjax.Prior.default` depends on ``k`` and the covariance
    type), the restarts are compared by the log posterior, and the criterion
    reads the log-likelihood at the MAP fit, as mclust's BIC does: ``BIC = -2
    L(theta_MAP) + p log n``. The priors of one covariance type are a batch of
    leaves of its one program.

    Args:
        key: a ``jax.random`` key.
        x: ``(n, d)`` data.
        n_components: candidate numbers of components (an int or an iterable of
            distinct ints in ``1..n``).
        covariance_types: candidate covariance types (distinct, from ``"full"``,
            ``"diag"``, ``"spherical"``, ``"tied"``).
        criterion: ``"bic"`` or ``"aic"``.
        n_init: restarts per cell (>= 1).
        max_steps: the step budget of every run.
        tol: convergence threshold on the change in mean log-likelihood.
        init: the :func:`gmmjax.init_gmm` method of the starts.
        fitter: the fitter of every run; default ``gmmjax.EM(reg_covar=
            reg_covar)``.
        batch_size: the number of runs fitted together (>= 1), over all the
            ``len(n_components) * n_init`` runs of a covariance type, to bound
            memory; ``None`` chooses as :func:`gmmjax.multistart` does for ``K``
            components.
        reg_covar: added to the diagonal of the starting covariances
            (:func:`gmmjax.multistart`'s ``reg_covar``) and of the default
            fitter's; a fitter you pass keeps its own, so give both, e.g.
            ``fitter=gmmjax.EM(reg_covar=1e-3, max_reseeds=2), reg_covar=1e-3``,
            as scikit-learn does. A number, or one per feature.
        progress: optional host function ``progress(i, n_cells, k,
            covariance_type)``, called once per cell as its result is ready,
            ``i`` counting the calls from 0 to ``n_cells - 1``, e.g. to draw a
            progress line. The cells of one covariance type are fitted together,
            so its calls come together once its rounds have run, in the order
            of ``n_components``; the covariance types follow one another in the
            order of ``covariance_types``.
        hc_start: add to every cell a start from the hierarchical partition
            (:func:`gmmjax.init_gmm`'s ``"hc"``, one tree for the grid): ``n_init
            + 1`` runs a cell, with a fitter that masks components (EM); other
            fitters run :func:`gmmjax.multistart`'s ``hc_start``, whose first
            start is the hierarchical one.
        split_merge_rounds: the most rounds of starts from the neighbouring
            cells (see above; an integer >= 0, ``0`` for none), with a fitter
            that masks components (EM); other fitters run none. Each round
            costs about as much as the first; on wine (178 x 13, k = 1..9, the
            four types) 3 rounds took the warm grid from 1.5 to 5-6 s and left
            1 of its 36 cells below the best of 100 scikit-learn k-means fits
            (against 21 without them), 8 rounds none, in 13 s.
        reg_scale: how ``reg_covar`` and the fitter's ``reg_covar`` (of
            :class:`gmmjax.EM`, also inside :class:`gmmjax.Annealed`) are read:
            ``"relative"`` (the default) as fractions of each feature's variance
            (:func:`gmmjax.relative_reg_covar`), so that the grid does not depend
            on the units of the features; ``"absolute"`` as they are, like
            scikit-learn's ``GaussianMixture`` (the same value for every feature,
            whatever its scale: ``1e-6`` on a feature of variance ``1e-5`` is a
            10% change of the model).
        prior: ``None`` (maximum likelihood), ``"default"`` (mclust's default
            prior in every cell, :meth:`gmmjax.Prior.default`) or a function
            ``prior(n_components, covariance_type) -> gmmjax.Prior``. It is
            given to the fitter (:class:`gmmjax.EM`, also inside
            :class:`gmmjax.Annealed`). The default fitter is then
            ``gmmjax.EM(reg_covar=0)``, exact MAP-EM (``reg_covar`` still
            regularizes the starts); a fitter you pass keeps its own.

    Returns:
        A :class:`SelectionResult` with the table and the chosen model.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> result = gmmjax.select(jax.random.key(0), x, n_components=[2, 3],
        ...                        covariance_types=["full", "tied"], n_init=3)
        >>> result.best_n_components, result.best_covariance_type
        (3, 'tied')
    """
    if not isinstance(criterion, str) or criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    x = check_data(x)
    n, d = x.shape
    candidates = _check_candidates(n_components, n)
    types = _check_types(covariance_types)
    n_init = check_positive_int(n_init, "n_init")
    rounds = check_positive_int(split_merge_rounds, "split_merge_rounds", minimum=0)
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
    check_steps(max_steps, "max_steps")
    check_nonnegative_scalar(tol, "tol")
    if not isinstance(init, str) or init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}")
    check_reg_covar(reg_covar, n_features=d)
    if not isinstance(reg_scale, str) or reg_scale not in REG_SCALES:
        raise ValueError(f"reg_scale must be one of {REG_SCALES}, got {reg_scale!r}")
    if fitter is None:
        # a prior regularizes the steps itself: exact MAP-EM, mclust's
        fitter = EM(reg_covar=reg_covar if prior is None else 0.0)
    check_fitter(fitter)
    if isinstance(fitter, VB):
        raise TypeError(
            "select compares maximum-likelihood (or MAP) fits by an information "
            "criterion; a gmmjax.VB fit's prior depends on k and its lower bound is "
            "not a likelihood. Fit the largest k with a Dirichlet-process "
            "VariationalPrior instead: it switches off the components it does not "
            "need (or give select prior='default' for mclust's MAP-EM)"
        )
    if reg_scale == "relative":
        scale = data_variance(x, None)
        reg_covar = reg_covar * scale
        fitter = _scale_reg_covar(fitter, scale)
    if progress is not None and not callable(progress):
        raise TypeError(
            f"progress must be a function or None, got {type(progress).__name__}"
        )
    make_prior = _prior_maker(prior, fitter, x)

    shape = (len(candidates), len(types))
    values = np.empty(shape)
    lls = np.empty(shape)
    counts = np.empty(shape, dtype=np.int64)
    status = np.empty(shape, dtype=np.int32)
    fits = {}
    options = dict(
        n_init=n_init,
        init=init,
        max_steps=max_steps,
        tol=tol,
        batch_size=batch_size,
        reg_covar=reg_covar,
    )
    tree = None
    if check_hc_start(hc_start):
        tree = np.asarray(hc_labels(x, n_clusters=max(candidates)))
    host = _host_data(x) if rounds and masks_components(fitter) else None
    done = 0
    for j, ctype in enumerate(types):
        priors = None
        if make_prior is not None:
            priors = [make_prior(k, ctype) for k in candidates]
        cells = _fit_type(
            fitter, key, x, candidates, ctype, options, tree, priors, rounds, host
        )
        for i, k in enumerate(candidates):
            # device_put copies without compiling (jnp.asarray compiles per shape)
            best = jax.device_put(cells[k])
            p = _count(k, d, ctype)
            ll = float(best.log_likelihood)
            values[i, j] = _criterion(criterion, ll, p, n)
            lls[i, j] = ll
            counts[i, j] = p
            status[i, j] = int(best.status)
            fits[(k, ctype)] = best
            if progress is not None:
                progress(done, values.size, k, ctype)
            done += 1

    usable = np.isin(status, [Status.CONVERGED, Status.MAX_STEPS]) & np.isfinite(values)
    pool = usable if usable.any() else np.isfinite(values)
    if not pool.any():
        pool = np.ones(shape, dtype=bool)
    scores = np.where(pool & np.isfinite(values), values, np.inf)
    # np.argmin takes the first minimum in row-major order: fewer components first
    i, j = np.unravel_index(np.argmin(scores), shape)
    return SelectionResult(
        criterion=criterion,
        n_components=candidates,
        covariance_types=types,
        values=values,
        log_likelihood=lls,
        n_parameters=counts,
        status=status,
        fits=fits,
        best=fits[(candidates[i], types[j])],
        best_n_components=candidates[i],
        best_covariance_type=types[j],
    )
