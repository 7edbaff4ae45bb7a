"""Deterministic annealing: tempered fitters and the variance sweep."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._density import total_log_likelihood
from ._em import EM, EMState, em_update
from ._fit import (
    FitResult,
    Status,
    StepInfo,
    check_fitter,
    check_steps,
    inner_objective,
    prepare_fit,
    run,
)
from ._gmm import GMM
from ._validation import as_float_array, check_nonnegative_scalar, concrete

__all__ = ["AnnealInfo", "Annealed", "AnnealedState", "anneal_variance"]


class AnnealedState(NamedTuple):
    """What :class:`Annealed` carries: the inner fitter's state and a step count.

    Attributes:
        inner: the state of the wrapped fitter.
        count: ``()`` int32, the number of steps taken, fed to the schedule.

    Example:
        >>> import jax, optax, gmmjax
        >>> x = jax.numpy.asarray(gmmjax.datasets.faithful())
        >>> gmm = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> fitter = gmmjax.Annealed(gmmjax.EM(), optax.linear_schedule(0.5, 1.0, 10))
        >>> state, info = fitter.step(fitter.init(gmm, x), x)
        >>> int(state.count), bool(info.can_stop), state.gmm.means.shape
        (1, False, (2, 2))
    """

    inner: Any
    count: jax.Array

    @property
    def gmm(self) -> GMM:
        """The current model, read from the inner state."""
        return self.inner.gmm


@dataclasses.dataclass(frozen=True)
class Annealed:
    """Deterministic annealing (DAEM, Ueda & Nakano 1998) around any fitter.

    Step ``t`` (from 0) runs the inner fitter at inverse temperature
    ``beta_t = clip(schedule(t), 0, 1)``: EM computes the responsibilities
    ``r_ij ∝ (pi_j N(x_i | mu_j, Sigma_j))^beta_t``, a :class:`GradientFitter`
    follows the gradient of the tempered objective. At small ``beta`` every
    component sees nearly every sample, so the components start together and split
    at the critical temperatures as ``beta`` rises. Annealing ends when ``beta_t``
    reaches 1; only then does the step report ``can_stop``, so the driver's
    convergence test never stops a run mid-schedule. From there on the steps are
    exactly those of the inner fitter.

    ``inner`` is a pytree child (its hyperparameters stay traced); ``schedule`` is
    static metadata, compared by identity: reuse one schedule object to reuse the
    compiled loop.

    Args:
        inner: any fitter (:class:`gmmjax.EM`, :class:`gmmjax.GradientFitter`, ...).
        schedule: ``count -> beta``, e.g. any optax schedule such as
            ``optax.linear_schedule(0.1, 1.0, 100)``, or
            ``optax.exponential_decay(0.05, 1, 1.1, end_value=1.0)`` for a
            geometric ramp. Values are clipped to ``[0, 1]``.

    Example:
        >>> import jax, optax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> fitter = gmmjax.Annealed(gmmjax.EM(), optax.linear_schedule(0.2, 1.0, 30))
        >>> result = gmmjax.fit(fitter, gmm0, x, max_steps=300)
        >>> result.status_name, bool(result.n_steps > 30)
        ('CONVERGED', True)
    """

    inner: Any
    schedule: Callable[[jax.Array], Any]

    def check(self) -> None:
        """Validate the inner fitter and the schedule (called by the drivers)."""
        check_fitter(self.inner)
        if not callable(self.schedule):
            raise TypeError(
                "schedule must be a function count -> beta (e.g. an optax schedule), "
                f"got {type(self.schedule).__name__}"
            )

    def init(self, gmm: GMM, x, *, sample_weight=None) -> AnnealedState:
        """Start state: the inner fitter's start state and a zero count."""
        inner = self.inner.init(gmm, x, sample_weight=sample_weight)
        return AnnealedState(inner, jnp.asarray(0, jnp.int32))

    def step(self, state: AnnealedState, x, *, sample_weight=None, beta=1.0):
        """One inner step at ``beta * schedule(count)``; ``(AnnealedState, StepInfo)``.

        An outer ``beta`` (from an enclosing :class:`Annealed`) multiplies the
        schedule's value.
        """
        scheduled = jnp.clip(jnp.asarray(self.schedule(state.count), x.dtype), 0, 1)
        inner, info = self.inner.step(
            state.inner, x, sample_weight=sample_weight, beta=beta * scheduled
        )
        can_stop = info.can_stop & (scheduled >= 1)
        info = StepInfo(info.log_likelihood, info.degenerate, can_stop)
        return AnnealedState(inner, state.count + 1), info

    @property
    def objective(self):
        """The inner fitter's ``objective`` read at the inner state, or ``None``
        when it has none (see :func:`gmmjax._fit.inner_objective`)."""
        return inner_objective(self.inner)


jax.tree_util.register_dataclass(
    Annealed, data_fields=["inner"], meta_fields=["schedule"]
)


class AnnealInfo(NamedTuple):
    """The path of :func:`anneal_variance`, one row per stage (leading axis ``s``).

    Attributes:
        variances: ``(s,)`` the fixed variance ``v`` of each stage.
        n_steps: ``(s,)`` int32, EM steps used by each stage.
        means: ``(s, k, d)`` the means at the end of each stage.
        weights: ``(s, k)`` the mixing weights at the end of each stage.
        log_likelihood: ``(s,)`` total log-likelihood at the end of each stage, of
            the model with covariances ``v I``.
        total_steps: ``()`` int32, all EM steps: the stages plus the release fit.

    Example:
        >>> import jax, jax.numpy as jnp, gmmjax
        >>> x = jnp.array([[1.0], [-1.0]])
        >>> gmm0 = gmmjax.GMM.from_natural([0.5, 0.5], [[0.001], [-0.001]],
        ...                                [4.0, 4.0], covariance_type="spherical")
        >>> _, info = gmmjax.anneal_variance(
        ...     jax.random.key(0), gmm0, x, variances=jnp.geomspace(4.0, 0.01, 20),
        ...     release=False)
        >>> info.variances.shape, info.means.shape, info.weights.shape
        ((20,), (20, 2, 1), (20, 2))
    """

    variances: jax.Array
    n_steps: jax.Array
    means: jax.Array
    weights: jax.Array
    log_likelihood: jax.Array
    total_steps: jax.Array


@dataclasses.dataclass(frozen=True)
class _FixedVariance:
    """EM on weights and means with every covariance held at ``variance * I``.

    A stage of :func:`anneal_variance`, run by the driver (:func:`gmmjax.fit`'s
    rule and statuses). The E step and the M step are EM's
    (:func:`gmmjax._em.em_update`); the M step's covariances are dropped:
    ``pi_j = N_j / sum_l N_l`` and ``mu_j = sum_i w_i r_ij x_i / N_j`` with the
    ``10 eps`` floor on ``N_j``. The model is ``spherical``; a fixed covariance
    cannot collapse, so no step reports a degenerate component.
    """

    variance: jax.Array

    def init(self, gmm: GMM, x, *, sample_weight=None) -> EMState:
        start = GMM.isotropic(
            gmm.logits, gmm.means, self.variance, covariance_type="spherical"
        )
        return EMState(start, jnp.asarray(0, jnp.int32))

    def step(self, state: EMState, x, *, sample_weight=None, beta=1.0):
        gmm = state.gmm
        (new, _, _), ll, _ = em_update(gmm, x, sample_weight, 0.0, beta)
        new = dataclasses.replace(gmm, logits=new.logits, means=new.means)
        info = StepInfo(ll, jnp.asarray(-1, jnp.int32), jnp.asarray(True))
        return EMState(new, state.n_reseeds), info


jax.tree_util.register_dataclass(
    _FixedVariance, data_fields=["variance"], meta_fields=[]
)


@functools.partial(jax.jit, static_argnames=("release",))
def _anneal_variance(
    key, gmm0, x, w, variances, perturbation, max_steps_per_stage, tol, reg_covar,
    max_steps, release,
):  # fmt: skip
    dtype = x.dtype
    variances = variances.astype(dtype)
    keys = jax.random.split(key, variances.shape[0])

    def stage(carry, inputs):
        logits, means = carry
        variance, stage_key = inputs
        means = means + perturbation * jax.random.normal(stage_key, means.shape, dtype)
        start = GMM.isotropic(logits, means, variance, covariance_type="spherical")
        fitter = _FixedVariance(variance)
        result, _ = run(fitter, start, x, w, max_steps_per_stage, tol)
        logits, means = result.gmm.logits, result.gmm.means
        weights = jax.nn.softmax(logits)
        out = (result.n_steps, means, weights, result.log_likelihood, result.status)
        return (logits, means), out

    start = (gmm0.logits, gmm0.means)
    (logits, means), path = jax.lax.scan(stage, start, (variances, keys))
    n_steps, stage_means, stage_weights, stage_ll, stage_status = path
    # a stage that went non-finite kept its last finite parameters; the sweep
    # reports it, whatever came after
    finite = jnp.all(stage_status != Status.NONFINITE)
    ctype = gmm0.covariance_type
    last = GMM.isotropic(logits, means, variances[-1], covariance_type=ctype)
    stage_total = jnp.sum(n_steps).astype(jnp.int32)
    if release:
        result, _ = run(EM(reg_covar=reg_covar), last, x, w, max_steps, tol)
        status = jnp.where(finite, result.status, Status.NONFINITE).astype(jnp.int32)
        result = result._replace(n_steps=stage_total + result.n_steps, status=status)
    else:
        status = jnp.where(finite, stage_status[-1], Status.NONFINITE)
        status = status.astype(jnp.int32)
        ll = total_log_likelihood(last, x, w)
        result = FitResult(
            last, ll, stage_total, status, jnp.asarray(-1, jnp.int32), ll
        )
    info = AnnealInfo(
        variances, n_steps, stage_means, stage_weights, stage_ll, result.n_steps
    )
    return result, info


def anneal_variance(
    key,
    gmm0: GMM,
    x,
    *,
    variances,
    perturbation=1e-3,
    max_steps_per_stage=100,
    tol=1e-6,
    release=True,
    reg_covar=1e-6,
    max_steps=500,
    sample_weight=None,
):
    """Sweep a fixed isotropic variance downwards, re-fitting means at each stage.

    The variance annealing of the saddle study: for each ``v`` in the decreasing
    ``variances`` every covariance is held at ``v I``; the means get a random kick
    ``perturbation * z`` (``z ~ N(0, I)``, a fresh key per stage) that breaks the
    symmetry of components sitting on top of each other, then EM re-optimizes the
    weights and means with the covariances fixed (M step
    ``mu_j = sum_i r_ij x_i / N_j``, ``pi_j = N_j / n``) until the mean
    log-likelihood changes by less than ``tol`` or ``max_steps_per_stage`` steps.
    Above a critical variance the optimum keeps components merged; below it they
    split, so a slow sweep follows the clusters as they separate instead of
    drifting to the collapsed saddle. With ``release=True`` a final unconstrained
    :class:`gmmjax.EM` fit (``max_steps``, ``tol``, ``reg_covar``) starts from the
    last stage, with covariances ``v_last I`` in ``gmm0``'s covariance type.

    The stages run in one ``lax.scan`` over ``variances``, each a run of
    :func:`gmmjax.fit`'s driver (one ``lax.while_loop``, its stopping rule and
    statuses) with EM's E and M steps and the covariances held; the whole sweep
    is jitted and ``vmap``-able over keys and starting models. All numeric
    arguments are traced; ``release`` is static.

    Args:
        key: a PRNG key for the perturbations.
        gmm0: the starting model; its covariances are ignored (replaced by
            ``variances[0] I``), its covariance type sets the result's.
        x: ``(n, d)`` data.
        variances: ``(s,)`` positive, non-increasing stage variances (in squared
            units of ``x``), e.g. ``jnp.geomspace(4.0, 0.0025, 40)``.
        perturbation: standard deviation of the kick to the means at each stage, in
            units of ``x`` (>= 0).
        max_steps_per_stage: EM step budget of each stage (>= 1).
        tol: convergence threshold on the change in mean log-likelihood, for the
            stages and the release fit.
        release: whether to finish with an unconstrained EM fit.
        reg_covar: ``reg_covar`` of the release fit.
        max_steps: step budget of the release fit.
        sample_weight: optional ``(n,)`` non-negative weights.

    Returns:
        ``(FitResult, AnnealInfo)``. ``FitResult.n_steps`` counts every EM step
        (stages and release). ``status`` is ``NONFINITE`` when a stage went
        non-finite (it kept its last finite parameters); otherwise, without
        release, the last stage's (``CONVERGED`` or ``MAX_STEPS``), and the model
        has covariances ``v_last I``.

    Example:
        >>> import jax, jax.numpy as jnp, gmmjax
        >>> x = jnp.array([[1.0], [-1.0]])
        >>> gmm0 = gmmjax.GMM.from_natural([0.5, 0.5], [[0.001], [-0.001]],
        ...                                [4.0, 4.0], covariance_type="spherical")
        >>> result, info = gmmjax.anneal_variance(
        ...     jax.random.key(0), gmm0, x, variances=jnp.geomspace(4.0, 0.01, 30),
        ...     release=False)
        >>> [round(abs(float(m)), 2) for m in result.gmm.means[:, 0]]
        [1.0, 1.0]
        >>> info.means.shape
        (30, 2, 1)
    """
    gmm0, x, w = prepare_fit(EM(reg_covar=reg_covar), gmm0, x, sample_weight)
    variances = as_float_array(variances, "variances", x.dtype)
    if variances.ndim != 1 or variances.shape[0] == 0:
        raise ValueError(
            f"variances must be a non-empty 1-D array, got shape {variances.shape}"
        )
    v = concrete(variances)
    if v is not None:
        if not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise ValueError("variances must be finite and positive")
        if np.any(np.diff(v) > 0):
            raise ValueError("variances must be non-increasing (a cooling sweep)")
    check_nonnegative_scalar(perturbation, "perturbation")
    check_nonnegative_scalar(tol, "tol")
    check_steps(max_steps_per_stage, "max_steps_per_stage")
    if concrete(max_steps_per_stage) is not None and max_steps_per_stage < 1:
        raise ValueError(
            f"max_steps_per_stage must be >= 1, got {int(max_steps_per_stage)}"
        )
    check_steps(max_steps, "max_steps")
    if not isinstance(release, (bool, np.bool_)):
        raise TypeError(f"release must be a bool, got {type(release).__name__}")
    return _anneal_variance(
        key,
        gmm0,
        x,
        w,
        variances,
        perturbation,
        jnp.asarray(max_steps_per_stage, jnp.int32),
        tol,
        reg_covar,
        jnp.asarray(max_steps, jnp.int32),
        bool(release),
    )
