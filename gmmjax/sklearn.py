"""scikit-learn's ``GaussianMixture`` and ``BayesianGaussianMixture``, fitted by
gmmjax (needs the ``sklearn`` extra).

This module imports scikit-learn; ``import gmmjax`` never does, so the core package
works without it. Every restart of a fit runs as one compiled ``lax.while_loop``
and the restarts are batched with ``vmap``.
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from ._anneal import Annealed
from ._buckets import bucket, pad_rows, row_bucket
from ._cache import default_cache
from ._density import density_work, sample_jit, weighted_log_prob
from ._em import EM, relative_reg_covar
from ._fit import Status
from ._gradient import GradientFitter
from ._histories import EstimatorFit, fit_best, history_capacity
from ._information import diagnose
from ._levels import ByWork, fit_work
from ._selection import (
    REG_SCALES,
    leading_components,
    masks_components,
    n_parameters,
    padded_components,
)
from ._sklearn_checks import check_inits, check_int, check_number, describe_degeneracy
from ._stored import call_stored
from ._streaming import OnlineEM, OnlineEMState, online_update
from ._validation import COVARIANCE_TYPES
from ._vb import VB, WEIGHT_PRIORS, VariationalPrior, VBState, expected_log_joint

__all__ = ["BayesianGaussianMixture", "GaussianMixture"]

# scikit-learn's names of the initializations -> gmmjax.init_gmm's methods
_INIT_PARAMS = {
    "kmeans": "kmeans",
    "k-means++": "kmeans++",
    "random": "random",
    "random_from_data": "random_from_data",
}


_joint_log_prob = ByWork(weighted_log_prob, density_work)

# Small fits, whose cost is compiling their program, run with at least this
# many components, the surplus masked (weight 0, frozen): every n_components up
# to it shares one program (a GridSearchCV over n_components compiles once).
_FEW_COMPONENTS = 8
# "Small": up to this many entries (rows after bucketing, times features). At
# this size an EM step of 8 components takes well under a millisecond, so the
# masked components cost less than one compilation saves.
_MASKED_MAX_ENTRIES = 2**14


def _component_bucket(k: int, n: int, d: int) -> int:
    """The components a fit of ``k`` compiles for on ``n`` (bucketed) rows of
    ``d`` features: ``k`` itself for larger data, else at least
    :data:`_FEW_COMPONENTS`, in :func:`bucket` steps."""
    if n * d > _MASKED_MAX_ENTRIES:
        return k
    return max(_FEW_COMPONENTS, bucket(k))


# scikit-learn's words for a covariance that cannot be inverted and for a fit
# that did not converge: users and their tests look for them
_ILL_DEFINED = (
    "Fitting the mixture model failed because some components have "
    "ill-defined empirical covariance (for instance caused by singleton "
    "or collapsed samples). Try to decrease the number of components, "
    "increase reg_covar, or scale the input data."
)
_NOT_CONVERGED = (
    "Best performing initialization did not converge. Try different init "
    "parameters, or increase max_iter, tol, or check for degenerate data."
)
_FLOAT32_HINT = (
    " The numerical accuracy can also be improved by passing float64"
    " data instead of float32."
)


class _Stream(NamedTuple):
    """Where stepwise EM stands between calls."""

    state: OnlineEMState  # on the host
    bound: float  # running mean log-likelihood; -inf before the first update


def _model_work(online, gmm, *_):
    """The work of a program on the model alone (:func:`fit_work` of its means)."""
    return fit_work(gmm.means, gmm.n_components)


@functools.partial(ByWork, work=_model_work)
def _stream_start(online: OnlineEM, gmm, count) -> OnlineEMState:
    """``online``'s state at ``gmm``, after ``count`` updates."""
    return online.init(gmm)._replace(count=count)


@functools.partial(ByWork, work=functools.partial(_model_work, None))
def _parameters(gmm):
    return {
        "weights_": gmm.weights,
        "means_": gmm.means,
        "covariances_": gmm.covariances,
        "precisions_": gmm.precisions,
        "precisions_cholesky_": gmm.precisions_cholesky,
    }


def _running_bound(previous: float, info) -> float:
    """The stream's running mean log-likelihood after an update: the batch's,
    averaged in with the update's step size (the batch's alone at first)."""
    ll = float(info.log_likelihood)
    if not np.isfinite(previous):
        return ll
    rho = float(info.step_size)
    return (1 - rho) * previous + rho * ll


def _batches(n: int, n_batches: int, rs, mapped: bool):
    """One epoch's minibatches of ``n`` rows: random rows in memory, and for a
    memmap contiguous blocks in random order (its reads stay sequential)."""
    if mapped:
        edges = np.linspace(0, n, n_batches + 1).astype(np.int64)
        for b in rs.permutation(n_batches):
            yield slice(edges[b], edges[b + 1])
    else:
        yield from np.array_split(rs.permutation(n), n_batches)


# ------------------------------------------------------------------ estimators
class _Mixture(DensityMixin, BaseEstimator):
    """What scikit-learn's mixtures share: input checks, the verbose report,
    and the methods that read a fitted model through ``_joint(X)`` (``(n, k)``
    log joint densities) and ``_padded_model(shape, dtype)``."""

    def _validate_X(self, X, reset):
        return validate_data(
            self,
            X,
            dtype=[np.float64, np.float32],
            ensure_min_samples=2 if reset else 1,
            reset=reset,
        )

    def _check_n_samples(self, X):
        if X.shape[0] < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components but got "
                f"n_components = {self.n_components}, n_samples = {X.shape[0]}"
            )

    @staticmethod
    def _sample_weight(sample_weight, X):
        if sample_weight is None:
            return None
        w = _check_sample_weight(
            sample_weight, X, dtype=X.dtype, ensure_non_negative=True
        )
        if not np.any(w > 0):
            raise ValueError("sample_weight must not be all zero")
        return w

    def _report(self, result, histories, n_runs, scale=1.0):
        """Print every run's steps (``histories``: their mean objective; ``scale``
        turns it into the reported bound)."""
        for i in range(n_runs):
            n = int(result.n_steps[i])
            print(f"Initialization {i}")
            if self.verbose >= 2:
                hist = scale * np.asarray(histories[i][:n])
                for t in range(self.verbose_interval, n + 1, self.verbose_interval):
                    change = hist[t - 1] - (hist[t - 2] if t >= 2 else -np.inf)
                    print(f"  Iteration {t}\t ll change {change:.5g}")
            status = Status(int(result.status[i])).name
            bound = scale * float(histories[i][n - 1]) if n > 0 else -np.inf
            word = "converged" if status == "CONVERGED" else "did not converge"
            print(
                f"Initialization {word} ({status}) after {n} steps, "
                f"lower bound {bound:.5f}"
            )

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the most probable component of every row of ``X``.

        Equal to ``fit(X).predict(X)``: the labels come from the returned model.

        Args:
            X: ``(n, d)`` data.
            y: ignored.
            sample_weight: optional ``(n,)`` non-negative weights.

        Returns:
            ``(n,)`` integer labels.
        """
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def score_samples(self, X):
        """Log density of every row: ``log p(x_i)``.

        Args:
            X: ``(n, d)`` data.

        Returns:
            ``(n,)`` log densities.
        """
        joint = self._joint(X)
        top = joint.max(axis=1, keepdims=True)
        return (top + np.log(np.exp(joint - top).sum(axis=1, keepdims=True)))[:, 0]

    def score(self, X, y=None):
        """Mean log density per sample.

        Args:
            X: ``(n, d)`` data.
            y: ignored.

        Returns:
            A float.
        """
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X):
        """Posterior probability of each component for every row.

        Args:
            X: ``(n, d)`` data.

        Returns:
            ``(n, k)`` responsibilities, rows summing to one.
        """
        joint = self._joint(X)
        top = joint.max(axis=1, keepdims=True)
        p = np.exp(joint - top)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X):
        """The most probable component of every row.

        Args:
            X: ``(n, d)`` data.

        Returns:
            ``(n,)`` integer labels.
        """
        return self._joint(X).argmax(axis=1)

    def sample(self, n_samples=1):
        """Draw samples from the fitted mixture.

        Args:
            n_samples: how many (``>= 1``).

        Returns:
            ``(X, y)``: ``(n_samples, d)`` samples and their ``(n_samples,)``
            components, grouped by component as scikit-learn does.
        """
        default_cache()
        check_is_fitted(self)
        check_int(n_samples, "n_samples", -np.inf)
        if n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples} . The sampling requires "
                f"at least one sample. (gmmjax: n_samples must be >= 1)"
            )
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        n = int(n_samples)
        with jax.enable_x64(True):
            # a bucket of draws, then the first n: the leading draws of a larger
            # batch are the draws of a smaller one, so this is sample(key, n)
            size = row_bucket(n)
            gmm = self._padded_model((size, self.means_.shape[1]), self.means_.dtype)
            x, labels = sample_jit(jax.random.key(seed), gmm, size)
            x, labels = np.asarray(x)[:n], np.asarray(labels)[:n]
        order = np.argsort(labels, kind="stable")
        return x[order], labels[order].astype(np.int64)


class GaussianMixture(_Mixture):
    """A Gaussian mixture with scikit-learn's interface, fitted by gmmjax.

    The parameters, attributes and methods are those of
    ``sklearn.mixture.GaussianMixture``, with the same meaning, plus:

    - ``fit(X, sample_weight=w)``: per-sample weights (integer weights are the same
      as repeating rows);
    - restarts batched with ``vmap`` (one compiled loop for all ``n_init`` starts);
    - one compiled program for nearby data sizes, ``n_init`` and, on small data,
      ``n_components`` (padded rows of weight 0, extra restarts discarded, extra
      components masked; see the scikit-learn tutorial);
    - ``optimizer=``: fit with any optax optimizer through
      :class:`gmmjax.GradientFitter` instead of EM;
    - ``anneal=``: wrap the fitter in :class:`gmmjax.Annealed` with a ``beta``
      schedule (deterministic annealing);
    - ``max_reseeds=``: re-seed components that empty or collapse instead of
      stopping (:class:`gmmjax.EM`);
    - :meth:`diagnose`: whether the fitted point is a maximum or a saddle;
    - attributes ``gmm_`` (the fitted :class:`gmmjax.GMM`), ``status_`` (how the
      chosen run ended), ``degenerate_component_`` and
      ``restart_log_likelihoods_``.

    Float64 data are fitted in float64 whatever the global ``jax_enable_x64``
    setting; float32 data stay float32.

    A fit that ends with a component that emptied or collapsed (status
    ``DEGENERATE``), with non-finite values (``NONFINITE``), or without converging
    warns with a :class:`~sklearn.exceptions.ConvergenceWarning` that says which,
    and keeps the last finite parameters, where scikit-learn would raise. Only
    when even those are not finite (a start whose covariance is already
    singular, e.g. identical samples with ``reg_covar=0``) does ``fit`` raise
    scikit-learn's ``ValueError`` for an ill-defined empirical covariance, with
    what happened appended: a fitted model always scores finite.

    Args:
        n_components: the number of components ``k``.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        tol: convergence threshold on the change of the mean log-likelihood.
        reg_covar: non-negative value added to the diagonal of the covariances
            (see ``reg_scale``).
        max_iter: the step budget of each run (``0``: the initial model).
        n_init: the number of restarts; the one with the highest final
            log-likelihood among the runs that converged or ran out of steps wins.
        init_params: ``"kmeans"``, ``"k-means++"``, ``"random"`` or
            ``"random_from_data"`` (see :func:`gmmjax.init_gmm`).
        weights_init: optional ``(k,)`` initial weights.
        means_init: optional ``(k, d)`` initial means.
        precisions_init: optional initial precisions (inverse covariances), shaped
            like ``covariances_``.
        random_state: ``None``, an int or a ``numpy.random.RandomState``; it seeds
            the ``jax.random`` key of the initializations and of :meth:`sample`.
        warm_start: start the next ``fit`` from the current solution (one run),
            whose first convergence test compares with the previous
            ``lower_bound_``, as in scikit-learn: a model refitted with
            ``max_iter=1`` reports ``converged_`` once a step changes the bound
            by less than ``tol``.
        verbose: ``0`` silent, ``1`` one line per restart, ``2`` also the
            log-likelihood change every ``verbose_interval`` steps (printed after
            the compiled run finishes).
        verbose_interval: steps between two messages at ``verbose=2``.
        optimizer: ``None`` for EM, or an ``optax.GradientTransformation`` (e.g.
            ``optax.adam(1e-2)``, ``optax.lbfgs()``) run by
            :class:`gmmjax.GradientFitter` on the negative mean log-likelihood;
            ``reg_covar`` then only enters the initialization.
        anneal: ``None``, or a schedule ``step -> beta`` (any optax schedule
            rising to 1, e.g. ``optax.linear_schedule(0.1, 1.0, 50)``): the fitter
            is wrapped in :class:`gmmjax.Annealed` (deterministic annealing); the
            convergence test applies once ``beta`` reaches 1.
        max_reseeds: how many times a run may re-seed a component that emptied
            or collapsed (at the worst-explained sample, see :class:`gmmjax.EM`)
            instead of stopping; ``0`` (default) stops with a warning. EM only.
        batch_size: ``None`` (default) for EM on all the data; an integer to fit
            by stepwise EM over minibatches of that many rows instead, as
            repeated :meth:`partial_fit` calls would (the first initializes from
            a random minibatch, then ``max_iter`` epochs at most: random rows of
            an in-memory ``X``, contiguous blocks in random order of a
            ``numpy.memmap``), converged when an epoch's mean log-likelihood
            (each minibatch's, before its update) changes by less than ``tol``.
            Memory is bounded by the minibatch, not by ``X``.
        learning_decay: the step size's exponent ``alpha`` in ``(0.5, 1]`` of
            :meth:`partial_fit` and ``batch_size`` fits: ``rho_t = (t +
            learning_offset)^(-alpha)``.
        learning_offset: the step size's offset ``t0 >= 1`` (``1``: the first
            update replaces the initial model's statistics).
        reg_scale: ``"absolute"`` (default, scikit-learn's convention):
            ``reg_covar`` is added to every variance as it is, whatever the
            feature's units; ``"relative"``: to each feature ``reg_covar`` times
            its (weighted) variance in ``X`` (:func:`gmmjax.relative_reg_covar`),
            so that the fit does not depend on the units of the features (as
            :func:`gmmjax.select` and the ``gmmjax`` command do by default). A
            ``batch_size`` fit and :meth:`partial_fit` take the variances of the
            first minibatch.

    Attributes:
        weights_: ``(k,)`` mixing weights.
        means_: ``(k, d)`` means.
        covariances_: covariances (shape by ``covariance_type``).
        precisions_: their inverses.
        precisions_cholesky_: upper-triangular ``P`` with ``precision = P P^T``
            (``1 / sqrt(variance)`` for diag and spherical).
        converged_: whether the chosen run converged.
        n_iter_: the number of steps of the chosen run (epochs of a
            ``batch_size`` fit; updates of :meth:`partial_fit`, see there).
        lower_bound_: as in scikit-learn, the mean (weighted) log-likelihood of the
            parameters the last step **started from**, i.e. ``lower_bounds_[-1]``.
            For EM this is exactly the evidence lower bound after the last E step.
            The returned parameters come from that step's update, so
            ``score(X) >= lower_bound_`` for EM (monotonicity), with a gap below
            ``tol`` after convergence. ``-inf`` when ``max_iter=0``. It is the
            chosen run's own bound: with ``n_init > 1`` gmmjax keeps the run whose
            returned parameters score highest, where scikit-learn keeps the run
            with the highest ``lower_bound_``, so another run's bound may be
            higher, and ``lower_bound_`` may fall as ``n_init`` grows while the
            fitted log-likelihood does not.
        lower_bounds_: ``(n_iter_,)`` array, the mean log-likelihood each step of
            the chosen run started from (scikit-learn's per-iteration bounds;
            per epoch of a ``batch_size`` fit, the running bound after each
            :meth:`partial_fit` update).
        gmm_: the fitted :class:`gmmjax.GMM`.
        status_: ``"CONVERGED"``, ``"MAX_STEPS"``, ``"NONFINITE"`` or
            ``"DEGENERATE"``.
        degenerate_component_: the component that emptied or collapsed, or ``-1``.
        restart_log_likelihoods_: ``(n_runs,)`` final total log-likelihood of every
            restart (of every initialization, on the first minibatch, for
            stepwise EM).
        n_features_in_: the number of features seen in ``fit``.
        reg_covar_: what the fit added to the variances: ``reg_covar`` (a float)
            with ``reg_scale="absolute"``, the ``(d,)`` per-feature values with
            ``"relative"``.

    Example:
        >>> import numpy as np
        >>> from gmmjax.sklearn import GaussianMixture
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(-3, 1, (100, 1)),
        ...                     rng.normal(3, 1, (100, 1))])
        >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
        >>> np.round(np.sort(gm.means_[:, 0]), 1)
        array([-2.9,  3. ])
        >>> gm.converged_, gm.predict([[-3.0], [3.0]]).tolist() in ([0, 1], [1, 0])
        (True, True)
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        optimizer=None,
        anneal=None,
        max_reseeds=0,
        batch_size=None,
        learning_decay=0.6,
        learning_offset=1.0,
        reg_scale="absolute",
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.optimizer = optimizer
        self.anneal = anneal
        self.max_reseeds = max_reseeds
        self.batch_size = batch_size
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.reg_scale = reg_scale

    # -------------------------------------------------------------- helpers
    def _check_params(self):
        check_int(self.n_components, "n_components", 1)
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, "
                f"got {self.covariance_type!r}"
            )
        check_number(self.tol, "tol")
        check_number(self.reg_covar, "reg_covar")
        if self.reg_scale not in REG_SCALES:
            raise ValueError(
                f"reg_scale must be 'absolute' or 'relative', got {self.reg_scale!r}"
            )
        check_int(self.max_iter, "max_iter", 0)
        check_int(self.n_init, "n_init", 1)
        if self.init_params not in _INIT_PARAMS:
            raise ValueError(
                f"init_params must be one of {tuple(_INIT_PARAMS)}, "
                f"got {self.init_params!r}"
            )
        check_int(self.verbose, "verbose", 0)
        check_int(self.verbose_interval, "verbose_interval", 1)
        if self.optimizer is not None and not isinstance(
            self.optimizer, optax.GradientTransformation
        ):
            raise TypeError(
                "optimizer must be None (EM) or an optax.GradientTransformation, "
                f"e.g. optax.adam(1e-2); got {type(self.optimizer).__name__}"
            )
        check_int(self.max_reseeds, "max_reseeds", 0)
        if self.optimizer is not None and self.max_reseeds > 0:
            raise ValueError(
                "max_reseeds needs the EM fitter (optimizer=None); got "
                f"max_reseeds={self.max_reseeds} with an optimizer"
            )
        if self.anneal is not None and not callable(self.anneal):
            raise TypeError(
                "anneal must be None or a schedule step -> beta, e.g. "
                f"optax.linear_schedule(0.1, 1.0, 50); got {type(self.anneal).__name__}"
            )
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size", 1)
        check_number(self.learning_decay, "learning_decay")
        if not 0.5 < self.learning_decay <= 1:
            raise ValueError(
                f"learning_decay must be in (0.5, 1], got {self.learning_decay}"
            )
        check_number(self.learning_offset, "learning_offset")
        if self.learning_offset < 1:
            raise ValueError(
                f"learning_offset must be >= 1, got {self.learning_offset}"
            )

    def _check_stream_params(self):
        """Stepwise EM (``partial_fit``, ``batch_size``) has no optimizer,
        schedule or re-seeding."""
        for name in ("optimizer", "anneal"):
            if getattr(self, name) is not None:
                raise ValueError(
                    f"partial_fit and batch_size fit by stepwise EM: {name} must be "
                    f"None, got {getattr(self, name)!r}"
                )
        if self.max_reseeds != 0:
            raise ValueError(
                "partial_fit and batch_size fit by stepwise EM, which does not "
                f"re-seed components: max_reseeds must be 0, got {self.max_reseeds}"
            )

    def _init_method(self) -> str:
        return _INIT_PARAMS[self.init_params]

    def _floor(self, X, w):
        """``reg_covar_`` for data ``X`` (weights ``w``): see ``reg_scale``."""
        if self.reg_scale == "absolute":
            return float(self.reg_covar)
        with jax.enable_x64(True):
            floor = relative_reg_covar(X, float(self.reg_covar), sample_weight=w)
            return np.asarray(floor, X.dtype)

    def _fitter(self):
        if self.optimizer is None:
            fitter = EM(reg_covar=self.reg_covar_, max_reseeds=self.max_reseeds)
        else:
            fitter = GradientFitter(self.optimizer)
        if self.anneal is not None:
            fitter = Annealed(fitter, self.anneal)
        return fitter

    def _model_of(self, out: EstimatorFit, k: int | None = None) -> dict:
        """The attributes of the chosen run's first ``k`` components (the others,
        if any, are masked; ``None``: all)."""

        def own(a):
            return np.asarray(a if self.covariance_type == "tied" else a[:k])

        return {
            "weights_": np.asarray(out.weights[:k]),
            "means_": np.asarray(out.means[:k]),
            "covariances_": own(out.covariances),
            "precisions_": own(out.precisions),
            "precisions_cholesky_": own(out.precisions_cholesky),
        }

    def _check_finite(self, model: dict, runs, best: int, dtype) -> None:
        """scikit-learn's error for an ill-defined covariance, with what the best
        run did, when the model it returns is not finite (a component collapsed
        onto identical samples with ``reg_covar=0`` already at the start, or
        the start itself was not finite): such a model would score NaN."""
        if all(np.isfinite(a).all() for a in model.values()):
            return
        status = Status(int(runs.status[best]))
        text = _ILL_DEFINED
        if dtype == np.float32:
            text += _FLOAT32_HINT
        raise ValueError(
            f"{text} (gmmjax: the best run stopped at step "
            f"{int(runs.n_steps[best])} with status {status.name} and parameters "
            "that are not finite: for instance, with reg_covar=0 a component "
            "holding only identical samples has a zero covariance from its "
            f"first M step; reg_covar={self.reg_covar:g})"
        )

    def _warn(self, X, w, budget=True):
        """A ``ConvergenceWarning`` unless the best run converged: the status's own
        message, with this fit's numbers (``X``, ``w``: its data, or the last
        minibatch's); ``budget=False``: none for ``MAX_STEPS``."""
        status = Status[self.status_]
        if status == Status.CONVERGED or (
            status == Status.MAX_STEPS and (self.max_iter == 0 or not budget)
        ):
            return
        text = (
            f"{_NOT_CONVERGED} (gmmjax: the best run stopped at step "
            f"{self.n_iter_} (status {status.name}): {status.message}"
        )
        if status == Status.DEGENERATE:
            what = describe_degeneracy(self, self.degenerate_component_, X, w)
            spent = (
                f"; its max_reseeds={self.max_reseeds} re-seeds were spent"
                if self.max_reseeds > 0
                else "; max_reseeds > 0 re-seeds such components at the "
                "worst-explained samples"
            )
            text += f". {what} (reg_covar={self.reg_covar:g}{spent}))"
        elif status == Status.MAX_STEPS:
            text += (
                f" (max_iter={self.max_iter}, tol={self.tol}); increase max_iter or "
                "tol, or try other initializations)"
            )
        else:
            text += ")"
        warnings.warn(text, ConvergenceWarning, stacklevel=3)

    # -------------------------------------------------------------- fitting
    def fit(self, X, y=None, sample_weight=None):
        """Fit the mixture, keeping the best of ``n_init`` batched restarts.

        With ``batch_size`` set, fit by stepwise EM over minibatches instead
        (see :meth:`partial_fit` and the ``batch_size`` parameter).

        Args:
            X: ``(n, d)`` data, ``n >= max(2, n_components)``; with
                ``batch_size`` set it may be a ``numpy.memmap`` larger than
                memory.
            y: ignored.
            sample_weight: optional ``(n,)`` non-negative weights; integer weights
                give the same fit as repeating the rows, in any order, with the
                k-means initializations (their draws depend on the weighted data,
                not on row positions; ``"random"`` and ``"random_from_data"``
                draw row by row).

        Returns:
            ``self``.
        """
        default_cache()
        self._check_params()
        if self.batch_size is not None:
            self._check_stream_params()
        mapped = isinstance(X, np.memmap)
        X = self._validate_X(X, reset=True)
        self._check_n_samples(X)
        w = self._sample_weight(sample_weight, X)
        warm = self.warm_start and hasattr(self, "converged_")
        if self.batch_size is None:
            self.reg_covar_ = self._floor(X, w)
            self._fit_full(X, w, warm, self.max_iter)
            self._stream = None
            self._warn(X, w)
        else:
            self._fit_batches(X, w, warm, mapped)
        return self

    def _fit_full(self, X, w, warm, max_iter):
        """The best of the restarts (one run from the current model when
        ``warm``), each EM on all of ``X`` for up to ``max_iter`` steps
        (``0``: the initializations, the best by log-likelihood)."""
        n_runs = 1 if warm else self.n_init
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        inits = check_inits(self, X.shape[1], X.dtype)
        # the sample axis and the restarts are padded to buckets (rows of weight 0,
        # runs that never win), and small fits' components too (masked: weight
        # 0, frozen): nearby sizes share one compiled program
        xp, wp = pad_rows(X, w, row_bucket(X.shape[0]))
        k = self.n_components
        fitter = self._fitter()
        masked = not warm and masks_components(fitter) and all(a is None for a in inits)
        size = _component_bucket(k, *xp.shape) if masked else k
        with jax.enable_x64(True):
            gmm0s = None
            if warm:
                gmm0s = jax.tree_util.tree_map(
                    lambda a: np.asarray(a, X.dtype)[None], self.gmm_
                )
            args = (
                fitter,
                gmm0s,
                np.int32(seed),
                xp,
                wp,
                inits,
                np.int32(n_runs),
                np.int32(max_iter),
                float(self.tol),
                self.reg_covar_,
                np.int32(k) if masked else None,
                # a warm start's first convergence test compares with the last
                # fit's bound, as scikit-learn's does
                float(self.lower_bound_) if warm else None,
            )
            static = {
                "spec": (size, self.covariance_type, self._init_method(), "model"),
                "n_runs": 1 if warm else bucket(n_runs),
                "capacity": history_capacity(max_iter),
            }
            if self.optimizer is None and self.anneal is None:
                # EM's program is kept lowered on disk: a later process skips
                # tracing it (an optimizer or a schedule is a Python function,
                # which no key can name across processes)
                out = call_stored("estimator-fit", fit_best, args, static)
            else:
                out = fit_best(*args, **static)
            out = jax.device_get(out)
        # the masked components dropped on the host (slicing on the device would
        # compile a program per k)
        runs = jax.tree_util.tree_map(lambda a: a[:n_runs], out.runs)
        best = int(out.best)
        model = self._model_of(out, k)
        self._check_finite(model, runs, best, X.dtype)
        self.gmm_ = leading_components(out.gmm, k)
        for name, value in model.items():
            setattr(self, name, value)
        histories = out.histories[:n_runs]
        if self.verbose:
            self._report(runs, histories, n_runs)
        self.n_iter_ = int(runs.n_steps[best])
        self.status_ = Status(int(runs.status[best])).name
        self.converged_ = self.status_ == "CONVERGED"
        self.degenerate_component_ = int(runs.degenerate_component[best])
        self.lower_bounds_ = np.asarray(histories[best][: self.n_iter_])
        self.lower_bound_ = (
            float(self.lower_bounds_[-1]) if self.n_iter_ > 0 else -np.inf
        )
        self.restart_log_likelihoods_ = np.asarray(runs.log_likelihood)

    # ------------------------------------------------------- stepwise EM
    def partial_fit(self, X, y=None, sample_weight=None):
        """One stepwise-EM update with the minibatch ``X`` (online learning).

        The first call initializes the model from ``X`` (``init_params``,
        ``n_init`` starts, the best by log-likelihood, or the given ``*_init``
        values), then updates it; every call applies one update of
        :class:`gmmjax.OnlineEM` (the same implementation): running averages of
        the sufficient statistics, ``s_t = (1 - rho_t) s_{t-1} + rho_t
        s_hat(X_t)``, with ``rho_t = (t + learning_offset)^(-learning_decay)``
        for the ``t``-th update, and the model is their M step. A call after
        :meth:`fit` continues from the fitted model (a full fit counts as
        ``n_iter_`` updates of the schedule; a ``batch_size`` fit continues its
        own).

        After each call ``n_iter_`` counts the updates, ``lower_bound_`` is the
        running mean log-likelihood of the stream (each batch's mean
        log-likelihood under the parameters its update started from, averaged
        with the same step sizes), ``lower_bounds_`` its history, and
        ``converged_`` says whether this update changed it by less than ``tol``.
        ``status_`` is ``"CONVERGED"``, ``"MAX_STEPS"`` (the call's one update
        spent), ``"DEGENERATE"`` (a component emptied or collapsed: warns) or
        ``"NONFINITE"`` (the update gave non-finite values and was rejected:
        warns, the model is unchanged).

        Args:
            X: ``(m, d)`` minibatch (the first one needs ``m >= max(2,
                n_components)``); cast to the dtype of the first.
            y: ignored.
            sample_weight: optional ``(m,)`` non-negative weights.

        Returns:
            ``self``.

        Example:
            >>> import numpy as np
            >>> from gmmjax.sklearn import GaussianMixture
            >>> rng = np.random.default_rng(0)
            >>> gm = GaussianMixture(n_components=2, random_state=0)
            >>> for _ in range(30):
            ...     labels = rng.integers(0, 2, 200)
            ...     gm = gm.partial_fit(rng.normal(6.0 * labels - 3.0, 1.0)[:, None])
            >>> np.round(np.sort(gm.means_[:, 0]))
            array([-3.,  3.])
            >>> gm.n_iter_
            30
        """
        default_cache()
        self._check_params()
        self._check_stream_params()
        first = not hasattr(self, "gmm_")
        X = self._validate_X(X, reset=first)
        w = self._sample_weight(sample_weight, X)
        if first:
            self._check_n_samples(X)
            self.reg_covar_ = self._floor(X, w)
            self._fit_full(X, w, False, 0)
            self._stream = None
        dtype = self.means_.dtype
        X = X.astype(dtype, copy=False)
        w = None if w is None else w.astype(dtype, copy=False)
        stream = self._stream_state(dtype)
        state, info = self._stream_update(stream.state, X, w, row_bucket(X.shape[0]))
        self.degenerate_component_ = int(info.degenerate) if info.finite else -1
        if not info.finite:
            self.status_ = Status.NONFINITE.name
        else:
            bound = _running_bound(stream.bound, info)
            self._stream = _Stream(state, bound)
            self._set_model(state.gmm)
            self.n_iter_ += 1
            self.lower_bounds_ = np.append(self.lower_bounds_, bound)
            self.lower_bound_ = bound
            converged = abs(bound - stream.bound) < self.tol
            self.status_ = (
                Status.DEGENERATE.name
                if self.degenerate_component_ >= 0
                else Status.CONVERGED.name
                if converged
                else Status.MAX_STEPS.name
            )
        self.converged_ = self.status_ == "CONVERGED"
        self._warn(X, w, budget=False)
        return self

    def _online(self) -> OnlineEM:
        return OnlineEM(
            alpha=float(self.learning_decay),
            t0=float(self.learning_offset),
            reg_covar=self.reg_covar_,
        )

    def _stream_state(self, dtype) -> _Stream:
        """The stream to continue in ``dtype``: the last stepwise fit's, or else
        the fitted model's statistics, counted as ``n_iter_`` updates."""
        stream = getattr(self, "_stream", None)
        if stream is not None:
            # a warm batch_size fit on data of another dtype computes in that one
            return stream._replace(
                state=jax.tree_util.tree_map(
                    lambda a: a.astype(dtype) if a.dtype.kind == "f" else a,
                    stream.state,
                )
            )
        gmm = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), self.gmm_)
        with jax.enable_x64(True):
            state = _stream_start(self._online(), gmm, np.int32(self.n_iter_))
            return _Stream(jax.device_get(state), float(self.lower_bound_))

    def _stream_update(self, state, X, w, rows):
        """:func:`gmmjax._streaming.online_update` on ``X`` padded to ``rows``
        rows (weight 0): ``(state, info)`` on the host."""
        xp, wp = pad_rows(X, w, rows)
        with jax.enable_x64(True):
            return jax.device_get(online_update(self._online(), state, xp, wp))

    def _set_model(self, gmm):
        with jax.enable_x64(True):
            model = jax.device_get(_parameters(gmm))
        self.gmm_ = gmm
        for name, value in model.items():
            setattr(self, name, np.asarray(value))

    def _fit_batches(self, X, w, warm, mapped):
        """Stepwise EM over minibatches of ``batch_size`` rows, ``max_iter``
        epochs at most; converged when an epoch's mean log-likelihood (each
        batch's under the parameters its update started from) changes by less
        than ``tol`` from the previous epoch's."""
        n = X.shape[0]
        size = min(self.batch_size, n)
        if size < self.n_components:
            raise ValueError(
                f"batch_size must be >= n_components={self.n_components}, "
                f"got {self.batch_size}"
            )
        rs = check_random_state(self.random_state)
        if warm:
            stream = self._stream_state(X.dtype)
        else:
            # initialized on a random batch, as partial_fit's first call is
            rows = np.arange(n) if w is None else np.flatnonzero(w > 0)
            rows = np.sort(rs.choice(rows, min(size, rows.size), replace=False))
            if rows.size < self.n_components:
                raise ValueError(
                    f"sample_weight has {rows.size} positive weights but "
                    f"n_components={self.n_components}: need at least as many"
                )
            first = X[rows], None if w is None else w[rows]
            self.reg_covar_ = self._floor(*first)
            self._fit_full(*first, False, 0)
            self._stream = None
            stream = self._stream_state(X.dtype)
        state, previous = stream
        bounds = []
        status, degenerate = Status.MAX_STEPS, -1
        xb, wb = X[:0], None
        n_batches = -(-n // size)
        # every minibatch padded to one shape: a partial_fit of the same size
        # shares the program
        padded = row_bucket(size)
        for epoch in range(self.max_iter):
            total = weight = 0.0
            for rows in _batches(n, n_batches, rs, mapped):
                xb = np.asarray(X[rows])
                wb = None if w is None else np.asarray(w[rows])
                mass = float(xb.shape[0] if wb is None else wb.sum())
                if mass <= 0:
                    continue
                new, info = self._stream_update(state, xb, wb, padded)
                if not info.finite:
                    status = Status.NONFINITE
                    break
                state = new
                total += mass * float(info.log_likelihood)
                weight += mass
                if info.degenerate >= 0:
                    status, degenerate = Status.DEGENERATE, int(info.degenerate)
                    break
            if weight > 0:
                bounds.append(total / weight)
                if self.verbose:
                    print(f"Epoch {epoch + 1}\t mean log-likelihood {bounds[-1]:.5f}")
            if status != Status.MAX_STEPS:
                break
            if abs(bounds[-1] - previous) < self.tol:
                status = Status.CONVERGED
                break
            previous = bounds[-1]
        self.n_iter_ = len(bounds)
        self.lower_bounds_ = np.asarray(bounds, X.dtype)
        self.lower_bound_ = bounds[-1] if bounds else float(stream.bound)
        self._stream = _Stream(state, self.lower_bound_)
        self._set_model(state.gmm)
        self.status_ = status.name
        self.converged_ = status == Status.CONVERGED
        self.degenerate_component_ = degenerate
        self._warn(xb, wb)

    def diagnose(
        self,
        X,
        sample_weight=None,
        *,
        tol=1e-6,
        eigen_tol=1e-6,
        method="auto",
        krylov_dim=None,
    ):
        """Whether the fitted parameters are a local maximum of the likelihood of
        ``X``, a saddle, or not yet converged (see :func:`gmmjax.diagnose`).

        The exact gradient and Hessian of the mean log-likelihood are taken in the
        natural parameters whitened by the complete-data information; positive
        Hessian eigenvalues are uphill directions.

        Args:
            X: ``(n, d)`` data, normally the training data.
            sample_weight: optional ``(n,)`` weights used in the fit.
            tol: bound on the gain in mean log-likelihood a Newton step may still
                predict at a converged point.
            eigen_tol: relative size under which a Hessian eigenvalue is null.
            method: ``"dense"``, ``"lanczos"`` (matrix-free) or ``"auto"``, as
                in :func:`gmmjax.diagnose`.
            krylov_dim: the most Hessian-vector products of the matrix-free
                route.

        Returns:
            The ``Diagnosis`` of :func:`gmmjax.diagnose`: ``.kind`` is
            ``"maximum"``, ``"saddle"``, ``"degenerate"``, ``"minimum"`` or
            ``"not_critical"``, and ``str(diagnosis)`` is a readable summary.
        """
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        w = None
        if sample_weight is not None:
            w = _check_sample_weight(
                sample_weight, X, dtype=X.dtype, ensure_non_negative=True
            )
        with jax.enable_x64(True):
            gmm = jax.tree_util.tree_map(lambda a: jnp.asarray(a, X.dtype), self.gmm_)
            return diagnose(
                gmm,
                jnp.asarray(X),
                sample_weight=w,
                tol=tol,
                eigen_tol=eigen_tol,
                method=method,
                krylov_dim=krylov_dim,
            )

    # -------------------------------------------------------------- inference
    def _joint(self, X):
        """``(n, k)`` ``log pi_j + log N(x_i | j)``.

        The rows are padded (with copies of the first) to their size bucket, and
        the components as in the fit, so the compiled kernel is reused across
        batch sizes and nearby ``n_components``: rows are independent, and the
        padding does not change the others.
        """
        default_cache()
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        n = X.shape[0]
        padded, _ = pad_rows(X, None, row_bucket(n))
        k = self.n_components
        gmm = self._padded_model(padded.shape, X.dtype)
        with jax.enable_x64(True):
            return np.asarray(_joint_log_prob(gmm, padded))[:n, :k]

    def _padded_model(self, shape, dtype):
        """The fitted model with masked components up to the fit's component
        bucket for data of ``shape``, in ``dtype``: the same density, and one
        compiled inference program for every ``n_components`` in the bucket."""
        gmm = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), self.gmm_)
        return padded_components(gmm, _component_bucket(self.n_components, *shape))

    def bic(self, X):
        """Bayesian information criterion: ``-2 log L + p log n`` (lower is better),
        :func:`gmmjax.bic` of the fitted model.

        Args:
            X: ``(n, d)`` data.

        Returns:
            A float.
        """
        return self._criterion(X, np.log)

    def aic(self, X):
        """Akaike information criterion: ``-2 log L + 2 p`` (lower is better),
        :func:`gmmjax.aic` of the fitted model.

        Args:
            X: ``(n, d)`` data.

        Returns:
            A float.
        """
        return self._criterion(X, lambda n: 2.0)

    def _criterion(self, X, per_parameter):
        """``-2 log L + per_parameter(n) * p`` from the bucketed log densities."""
        log_prob = self.score_samples(X)
        log_likelihood = float(np.sum(log_prob, dtype=np.float64))
        penalty = per_parameter(log_prob.shape[0]) * n_parameters(self.gmm_)
        return -2.0 * log_likelihood + penalty


# ------------------------------------------------- variational Bayesian mixture

# VariationalPrior.default's arguments -> the estimator's parameters
_PRIOR_PARAMS = {
    "weight_concentration": "weight_concentration_prior",
    "mean_precision": "mean_precision_prior",
    "mean": "mean_prior",
    "degrees_of_freedom": "degrees_of_freedom_prior",
    "covariance": "covariance_prior",
}


def _state_work(vb, state, x):
    return fit_work(x, state.n_components)


@functools.partial(ByWork, work=_state_work)
def _expected_joint(vb: VB, state: VBState, x):
    return expected_log_joint(vb.prior, state, x)


class BayesianGaussianMixture(_Mixture):
    """Variational Bayesian Gaussian mixture with scikit-learn's interface,
    fitted by :class:`gmmjax.VB`.

    The parameters, attributes and methods are those of
    ``sklearn.mixture.BayesianGaussianMixture``, with the same meaning and
    defaults, and its numbers: from the same starting responsibilities the
    lower bounds, the fitted parameters and ``n_iter_`` are scikit-learn's to
    rounding. In addition:

    - ``fit(X, sample_weight=w)``: per-sample weights, which multiply the
      responsibilities in the statistics and the entropy of the bound, and
      weigh the data's mean and covariance in the default priors (integer
      weights equal repeated rows);
    - restarts batched with ``vmap`` in one compiled program; nearby data
      sizes and ``n_init`` share it (padded rows of weight 0, extra restarts
      discarded), and new ``tol``, ``max_iter``, ``reg_covar`` or prior values
      compile nothing;
    - attributes ``gmm_`` (the point estimate as a :class:`gmmjax.GMM`) and
      ``status_`` (how the chosen run ended).

    The initializations are gmmjax's (see :func:`gmmjax.init_gmm`; k-means in
    standard units, drawn from ``random_state``'s seed), so the starts differ
    from scikit-learn's; as there, the first step is the variational M step
    from the initialization's responsibilities. ``tol`` is scikit-learn's: on
    the change of the *total* lower bound (the driver compares
    ``tol / sum(weights)`` with the change of its mean). As in scikit-learn,
    ``predict``, ``predict_proba`` and ``score_samples`` use the posterior's
    expected log weights and densities (``score_samples`` is their
    log-sum-exp, not the point estimate's log density), and ``sample`` draws
    from the point estimate (``weights_``, ``means_``, ``covariances_``).

    Float64 data are fitted in float64 whatever the global ``jax_enable_x64``
    setting; float32 data stay float32. A fit that does not converge warns
    with a :class:`~sklearn.exceptions.ConvergenceWarning`; one whose
    parameters are not finite keeps the last finite ones (and raises
    scikit-learn's ``ValueError`` for an ill-defined covariance if even those
    are not).

    Args:
        n_components: the number of components ``k`` (an upper bound: the
            prior may leave some nearly empty).
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        tol: convergence threshold on the change of the lower bound.
        reg_covar: non-negative value added to the diagonal of the statistics'
            covariances.
        max_iter: the step budget of each run (``0``: the initialization).
        n_init: the number of restarts; the one with the highest lower bound
            among the runs that converged or ran out of steps wins.
        init_params: ``"kmeans"``, ``"k-means++"``, ``"random"`` or
            ``"random_from_data"`` (see :func:`gmmjax.init_gmm`).
        weight_concentration_prior_type: ``"dirichlet_process"`` or
            ``"dirichlet_distribution"``.
        weight_concentration_prior: ``alpha_0 > 0``, default ``1 / k``.
        mean_precision_prior: ``beta_0 > 0``, default ``1``.
        mean_prior: ``m_0``, ``(d,)``, default the data's mean.
        degrees_of_freedom_prior: ``nu_0 > d - 1``, default ``d``.
        covariance_prior: ``Psi_0``: ``(d, d)`` for ``full`` and ``tied``,
            ``(d,)`` for ``diag``, a number for ``spherical``; default the
            data's covariance (its diagonal, their mean).
        random_state: ``None``, an int or a ``numpy.random.RandomState``; it
            seeds the ``jax.random`` key of the initializations and of
            :meth:`sample`.
        warm_start: continue the next ``fit`` from the current posterior (one
            run), its first convergence test against the previous
            ``lower_bound_``.
        verbose: ``0`` silent, ``1`` one line per restart, ``2`` also the
            change of the bound every ``verbose_interval`` steps.
        verbose_interval: steps between two messages at ``verbose=2``.

    Attributes:
        weights_: ``(k,)`` the weights' posterior means.
        means_: ``(k, d)`` the means' posterior means ``m_j``.
        covariances_: the inverse of the precisions' posterior means (shape by
            ``covariance_type``).
        precisions_: the precisions' posterior means ``nu_j W_j``.
        precisions_cholesky_: their upper-triangular Cholesky factors
            (``1 / sqrt(variance)`` for diag and spherical).
        converged_: whether the chosen run converged.
        n_iter_: the number of steps of the chosen run.
        lower_bound_: the chosen run's last total lower bound (``-inf`` when
            ``max_iter=0``).
        lower_bounds_: ``(n_iter_,)`` its lower bound after every step.
        weight_concentration_prior_: ``alpha_0``.
        weight_concentration_: the posterior's ``alpha_j`` ``(k,)``
            (``dirichlet_distribution``), or the sticks' Beta parameters as a
            pair of ``(k,)`` arrays (``dirichlet_process``).
        mean_precision_prior_: ``beta_0``.
        mean_precision_: ``(k,)`` ``beta_j``.
        mean_prior_: ``(d,)`` ``m_0``.
        degrees_of_freedom_prior_: ``nu_0``.
        degrees_of_freedom_: ``(k,)`` ``nu_j`` (a number for ``tied``).
        covariance_prior_: ``Psi_0``.
        gmm_: the point estimate as a :class:`gmmjax.GMM`.
        status_: ``"CONVERGED"``, ``"MAX_STEPS"`` or ``"NONFINITE"``.
        n_features_in_: the number of features seen in ``fit``.

    Example:
        >>> import numpy as np
        >>> from gmmjax.sklearn import BayesianGaussianMixture
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(-3, 1, (100, 1)),
        ...                     rng.normal(3, 1, (100, 1))])
        >>> bgm = BayesianGaussianMixture(n_components=5, max_iter=500,
        ...                               random_state=0).fit(X)
        >>> bgm.converged_, int((bgm.weights_ > 0.05).sum())
        (True, 2)
        >>> np.round(np.sort(bgm.means_[bgm.weights_ > 0.05, 0]), 1)
        array([-2.9,  2.9])
    """

    def __init__(
        self,
        *,
        n_components=1,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval

    def _check_params(self):
        check_int(self.n_components, "n_components", 1)
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, "
                f"got {self.covariance_type!r}"
            )
        check_number(self.tol, "tol")
        check_number(self.reg_covar, "reg_covar")
        check_int(self.max_iter, "max_iter", 0)
        check_int(self.n_init, "n_init", 1)
        if self.init_params not in _INIT_PARAMS:
            raise ValueError(
                f"init_params must be one of {tuple(_INIT_PARAMS)}, "
                f"got {self.init_params!r}"
            )
        if self.weight_concentration_prior_type not in WEIGHT_PRIORS:
            raise ValueError(
                f"weight_concentration_prior_type must be one of {WEIGHT_PRIORS}, "
                f"got {self.weight_concentration_prior_type!r}"
            )
        check_int(self.verbose, "verbose", 0)
        check_int(self.verbose_interval, "verbose_interval", 1)

    def _prior(self, X, w) -> VariationalPrior:
        """The prior of this fit (scikit-learn's defaults from ``X``), and its
        ``*_prior_`` attributes."""
        given = {name: getattr(self, param) for name, param in _PRIOR_PARAMS.items()}
        try:
            with jax.enable_x64(True):
                prior = VariationalPrior.default(
                    X,
                    n_components=self.n_components,
                    covariance_type=self.covariance_type,
                    weight_prior=self.weight_concentration_prior_type,
                    sample_weight=w,
                    **given,
                )
        except (TypeError, ValueError) as err:
            # the messages name VariationalPrior.default's arguments
            text = str(err)
            for name, param in _PRIOR_PARAMS.items():
                if text.startswith(f"{name} "):
                    text = param + text[len(name) :]
            raise type(err)(text) from None
        with jax.enable_x64(True):
            values = jax.device_get(prior)
        self.weight_concentration_prior_ = float(values.weight_concentration)
        self.mean_precision_prior_ = float(values.mean_precision)
        self.mean_prior_ = np.asarray(values.mean)
        self.degrees_of_freedom_prior_ = float(values.degrees_of_freedom)
        cov = np.asarray(values.covariance)
        self.covariance_prior_ = float(cov) if cov.ndim == 0 else cov
        return prior

    def fit(self, X, y=None, sample_weight=None):
        """Fit the posterior, keeping the best of ``n_init`` batched restarts.

        Args:
            X: ``(n, d)`` data, ``n >= max(2, n_components)``.
            y: ignored.
            sample_weight: optional ``(n,)`` non-negative weights; integer
                weights give the same fit as repeating the rows, with the
                k-means initializations (see
                :meth:`gmmjax.sklearn.GaussianMixture.fit`).

        Returns:
            ``self``.
        """
        default_cache()
        self._check_params()
        X = self._validate_X(X, reset=True)
        self._check_n_samples(X)
        w = self._sample_weight(sample_weight, X)
        prior = self._prior(X, w)
        warm = self.warm_start and hasattr(self, "converged_")
        self._fit_runs(X, w, prior, warm)
        if self.status_ != "CONVERGED" and self.max_iter > 0:
            status = Status[self.status_]
            warnings.warn(
                f"{_NOT_CONVERGED} (gmmjax: the best run stopped at step "
                f"{self.n_iter_} (status {status.name}): {status.message}; "
                f"max_iter={self.max_iter}, tol={self.tol})",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _fit_runs(self, X, w, prior, warm):
        """The best of the restarts (one run from the current posterior when
        ``warm``), each up to ``max_iter`` variational steps."""
        n_runs = 1 if warm else self.n_init
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        # rows of weight 0 and runs that never win pad the data and the
        # restarts to buckets: nearby sizes share one compiled program
        xp, wp = pad_rows(X, w, row_bucket(X.shape[0]))
        total = float(X.shape[0] if w is None else np.sum(w, dtype=np.float64))
        fitter = VB(prior=prior, reg_covar=float(self.reg_covar))
        with jax.enable_x64(True):
            starts = None
            if warm:
                starts = jax.tree_util.tree_map(
                    lambda a: np.asarray(a, X.dtype)[None], self._state
                )
            args = (
                fitter,
                starts,
                np.int32(seed),
                xp,
                wp,
                (None, None, None),
                np.int32(n_runs),
                np.int32(self.max_iter),
                # scikit-learn's tol is on the total bound, the driver's on its
                # mean
                float(self.tol) / total,
                float(self.reg_covar),
                None,
                float(self.lower_bound_) / total if warm else None,
            )
            static = {
                "spec": (
                    self.n_components,
                    self.covariance_type,
                    _INIT_PARAMS[self.init_params],
                    "responsibilities",
                ),
                "n_runs": 1 if warm else bucket(n_runs),
                "capacity": history_capacity(self.max_iter),
            }
            out = jax.device_get(call_stored("bayesian-fit", fit_best, args, static))
        runs = jax.tree_util.tree_map(lambda a: a[:n_runs], out.runs)
        best = int(out.best)
        state = jax.tree_util.tree_map(np.asarray, out.state)
        if not all(
            np.all(np.isfinite(a))
            for a in jax.tree_util.tree_leaves((state.gmm, state.covariances))
        ):
            status = Status(int(runs.status[best]))
            text = _ILL_DEFINED + (_FLOAT32_HINT if X.dtype == np.float32 else "")
            raise ValueError(
                f"{text} (gmmjax: the best run stopped at step "
                f"{int(runs.n_steps[best])} with status {status.name} and "
                "parameters that are not finite)"
            )
        histories = out.histories[:n_runs]
        if self.verbose:
            self._report(runs, histories, n_runs, scale=total)
        self._vb = fitter
        self._state = state
        self.gmm_ = state.gmm
        self.weights_ = np.asarray(out.weights)
        self.means_ = np.asarray(out.means)
        self.covariances_ = state.covariances
        self.precisions_ = np.asarray(out.precisions)
        self.precisions_cholesky_ = np.asarray(out.precisions_cholesky)
        concentration = state.weight_concentration
        if self.weight_concentration_prior_type == "dirichlet_process":
            concentration = (concentration[0], concentration[1])
        self.weight_concentration_ = concentration
        self.mean_precision_ = state.mean_precision
        self.degrees_of_freedom_ = state.degrees_of_freedom[()]
        self.n_iter_ = int(runs.n_steps[best])
        self.status_ = Status(int(runs.status[best])).name
        self.converged_ = self.status_ == "CONVERGED"
        self.lower_bounds_ = total * np.asarray(histories[best][: self.n_iter_])
        self.lower_bound_ = (
            float(self.lower_bounds_[-1]) if self.n_iter_ > 0 else -np.inf
        )

    # -------------------------------------------------------------- inference
    def _joint(self, X):
        """``(n, k)`` ``E[log pi_j] + E[log N(x_i | mu_j, Lambda_j^-1)]`` under
        the posterior (scikit-learn's ``_estimate_weighted_log_prob``), rows
        padded to their size bucket as in
        :meth:`gmmjax.sklearn.GaussianMixture.predict`."""
        default_cache()
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        n = X.shape[0]
        padded, _ = pad_rows(X, None, row_bucket(n))

        def cast(a):
            return np.asarray(a, X.dtype)

        vb = jax.tree_util.tree_map(cast, self._vb)
        state = jax.tree_util.tree_map(cast, self._state)
        with jax.enable_x64(True):
            return np.asarray(_expected_joint(vb, state, padded))[:n]

    def _padded_model(self, shape, dtype):
        """The point estimate in ``dtype`` (for :meth:`sample`)."""
        return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), self.gmm_)
