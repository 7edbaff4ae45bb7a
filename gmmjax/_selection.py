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


def _fit_cells(fitter, key, x, candidates, covariance_type, options, tree, priors):
    """``(i, k, best run)`` for every candidate ``k``, as its result is ready.

    With a fitter that masks components, every ``k`` runs in one program with
    ``max(candidates)`` components (:func:`multistart_masked`); the best runs
    are cut to their ``k`` components on the host (slicing device arrays would
    compile a program per ``k``). Other fitters run
    :func:`gmmjax.multistart` per ``k``. ``tree``: the hierarchical partitions
    (:func:`gmmjax._hc.hc_labels`) that one more start of every ``k`` is
    fitted to, or ``None``; ``priors``: ``None``, or the fitter's
    :class:`gmmjax.Prior` of every ``k``.
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
        tree=tree,
        priors=priors,
        **options,
    )
    bests = jax.device_get(bests)
    for i, k in enumerate(candidates):
        best = jax.tree_util.tree_map(lambda a, i=i: a[i], bests)
        best = best._replace(gmm=leading_components(best.gmm, k))
        # device_put copies without compiling (jnp.asarray compiles per shape)
        yield i, k, jax.device_put(best)


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
            so its calls come together once its program has run, in the order of
            ``n_components``; the covariance types follow one another in the
            order of ``covariance_types``.
        hc_start: add to every cell a start from the hierarchical partition
            (:func:`gmmjax.init_gmm`'s ``"hc"``, one tree for the grid): ``n_init
            + 1`` runs a cell, with a fitter that masks components (EM); other
            fitters run :func:`gmmjax.multistart`'s ``hc_start``, whose first
            start is the hierarchical one.
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
        tree = hc_labels(x, n_clusters=max(candidates))
    done = 0
    for j, ctype in enumerate(types):
        priors = None
        if make_prior is not None:
            priors = [make_prior(k, ctype) for k in candidates]
        cells = _fit_cells(fitter, key, x, candidates, ctype, options, tree, priors)
        for i, k, best in cells:
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
