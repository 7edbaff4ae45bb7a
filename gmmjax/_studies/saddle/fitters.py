"""The study's fitters: closed-form optimizers of the toy model, and its stopping rule.

Every run of the study goes through :func:`gmmjax.fit`, so every optimizer is a
fitter: a frozen pytree with ``init(gmm, x)`` and ``step(state, x) -> (state,
gmmjax.StepInfo)`` whose state has a ``gmm``. The library's own fitters
(:class:`gmmjax.EM`, :class:`gmmjax.GradientFitter`, :class:`gmmjax.Annealed`)
are used as they are; the optimizers it does not have are here, written for the
symmetric model (data :func:`gmmjax.toy.data`; no sample weights, no tempering):
closed-form EM, alternating maximization, gradient ascent, any optax optimizer in
``(mu, log sigma)`` and the closed-form variance sweep. Numeric hyperparameters are
leaves (traced: one compiled program serves a grid of settings).

Each step reports the closed-form log-likelihood of the parameters it started from.
At the degenerate supremum ``(mu, sigma) = (+-1, 0)``, where closed-form EM lands in
floating point, that is not finite, so ``gmmjax.fit`` ends the run there (status
``NONFINITE``) and keeps ``(+-1, 0)``: the study counts that end as the optimum.

The study's stopping rules (a tolerance on the parameters, "stop once sigma has
dropped below a threshold") are one wrapper, :class:`Rule`, around any fitter: it
decides the step's ``can_stop``, and the driver stops once two successive steps
can stop (see :func:`rule_step`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gmmjax
from gmmjax import toy

__all__ = [
    "Alternating",
    "Ascent",
    "AscentState",
    "ClosedFormEM",
    "FieldAscent",
    "Noise",
    "OptaxAscent",
    "OptaxState",
    "Rule",
    "RuleState",
    "SweepState",
    "ToyState",
    "VarianceSweep",
    "em_update_direct",
    "log_likelihood",
    "params_of",
    "rule_step",
]


def params_of(state):
    """``(mu, sigma)`` of any fitter state: its own ``params`` when it has them
    (exact), else read off its model with :func:`gmmjax.toy.from_gmm`."""
    params = getattr(state, "params", None)
    return toy.from_gmm(state.gmm) if params is None else params


def log_likelihood(mu, sigma):
    """``L(mu, sigma)``, the closed form of :func:`gmmjax.toy.ll_closed_form` without
    its cancellation at small ``sigma``.

    ``|z| - (1 + mu^2) / (2 v) = -(1 - |mu|)^2 / (2 v)`` with ``z = mu / v``, so
    ``L = 2 [-log sigma - log(2 pi) / 2 - (1 - |mu|)^2 / (2 v) - log 2 +
    log1p(exp(-2 |z|))]``: accurate down to ``v`` near the smallest normal number
    (the two large terms of the original cancel to garbage there); ``+inf`` (NaN) at
    the supremum ``(+-1, 0)``. What a step reports to the driver.

    Example:
        >>> import jax
        >>> from gmmjax import toy
        >>> from gmmjax._studies.saddle.fitters import log_likelihood
        >>> with jax.enable_x64(True):
        ...     gap = log_likelihood(0.3, 0.7) - toy.ll_closed_form(0.3, 0.7)
        ...     tiny = log_likelihood(1 - 1e-9, 1e-30)  # -(1e-9)^2 / 1e-60
        >>> abs(float(gap)) < 1e-12, f"{float(tiny):.4e}"
        (True, '-1.0000e+42')
    """
    mu = jnp.abs(jnp.asarray(mu, float))
    sigma = jnp.asarray(sigma, float)
    v = sigma**2
    return 2.0 * (
        -jnp.log(sigma)
        - 0.5 * jnp.log(2.0 * jnp.pi)
        - (1.0 - mu) ** 2 / (2.0 * v)
        - jnp.log(2.0)
        + jnp.log1p(jnp.exp(-2.0 * mu / v))
    )


def _info(log_likelihood) -> gmmjax.StepInfo:
    return gmmjax.StepInfo(
        log_likelihood, jnp.asarray(-1, jnp.int32), jnp.asarray(True)
    )


def em_update_direct(mu, sigma):
    """EM with the responsibility computed as a plain ratio of densities.

    ``p = N(1 | mu, sigma) / (N(1 | mu, sigma) + N(1 | -mu, sigma))``, as a naive
    implementation (and the original) would: the same map as
    :func:`gmmjax.toy.em_update` in exact arithmetic, different in floating point.

    Example:
        >>> from gmmjax._studies.saddle import fitters
        >>> mu, sigma = fitters.em_update_direct(0.02, 0.8)
        >>> round(float(mu), 6), round(float(mu**2 + sigma**2), 6)
        (0.03124, 1.0)
    """
    mu = jnp.asarray(mu, float)
    sigma = jnp.asarray(sigma, float)
    a = jnp.exp(-((1.0 - mu) ** 2) / (2.0 * sigma**2))
    b = jnp.exp(-((1.0 + mu) ** 2) / (2.0 * sigma**2))
    p = jnp.where(sigma == 0, 1.0, a / (a + b))
    mu_new = 2.0 * p - 1.0
    var = p * (1.0 - mu_new) ** 2 + (1.0 - p) * (1.0 + mu_new) ** 2
    return mu_new, jnp.sqrt(var)


# ------------------------------------------------------------------ closed forms
class ToyState(NamedTuple):
    """The parameters of the symmetric model (each ``()``), kept exactly."""

    mu: jax.Array
    sigma: jax.Array

    @property
    def params(self):
        return self.mu, self.sigma

    @property
    def gmm(self) -> gmmjax.GMM:
        return toy.to_gmm(self.mu, self.sigma)


def _start(gmm) -> ToyState:
    return ToyState(*toy.from_gmm(gmm))


@dataclasses.dataclass(frozen=True)
class ClosedFormEM:
    """EM of the symmetric model in closed form, :func:`gmmjax.toy.em_update`.

    Args:
        direct: traced bool; ``True`` computes the responsibility as a plain ratio of
            densities (:func:`em_update_direct`) instead of ``sigmoid(2 mu /
            sigma^2)``.

    Example:
        >>> import jax, gmmjax
        >>> from gmmjax import toy
        >>> from gmmjax._studies.saddle.fitters import ClosedFormEM
        >>> with jax.enable_x64(True):
        ...     result = gmmjax.fit(ClosedFormEM(), toy.to_gmm(0.3, 0.8), toy.data(),
        ...                         max_steps=100)
        >>> [round(float(v), 6) for v in toy.from_gmm(result.gmm)]
        [1.0, 0.0]
    """

    direct: Any = False

    def init(self, gmm, x, *, sample_weight=None) -> ToyState:
        return _start(gmm)

    def step(self, state: ToyState, x, *, sample_weight=None, beta=1.0):
        mu, sigma = state
        log_space = toy.em_update(mu, sigma)
        ratio = em_update_direct(mu, sigma)
        direct = jnp.asarray(self.direct)
        new = ToyState(
            *(jnp.where(direct, r, s) for r, s in zip(ratio, log_space, strict=True))
        )
        return new, _info(log_likelihood(mu, sigma))


@dataclasses.dataclass(frozen=True)
class Alternating:
    """Alternating maximization in closed form, :func:`gmmjax.toy.alternating_update`
    (one step is one sweep: ``mu``, then ``sigma``)."""

    def init(self, gmm, x, *, sample_weight=None) -> ToyState:
        return _start(gmm)

    def step(self, state: ToyState, x, *, sample_weight=None, beta=1.0):
        new = ToyState(*toy.alternating_update(*state))
        return new, _info(log_likelihood(*state))


class Noise(NamedTuple):
    """Annealed Gaussian noise ``sqrt(eta / (1 + t)^gamma) z_t`` at step ``t`` (from
    0), as in optax's ``noisy_sgd`` (Neelakantan et al. 2015).

    ``z`` holds the run's standard normal draws ``z_t`` of every step,
    ``(steps, 2)``, drawn in advance (drawing them inside the loop costs more than
    the ascent itself).
    """

    eta: Any
    gamma: Any
    z: Any


class AscentState(NamedTuple):
    """Gradient-ascent state in ``theta = (mu, log sigma)``."""

    theta: jax.Array  # (2,)
    count: jax.Array  # () int32, steps taken

    @property
    def params(self):
        return self.theta[0], jnp.exp(self.theta[1])

    @property
    def gmm(self) -> gmmjax.GMM:
        return toy.to_gmm(*self.params)


def _mean_ll(theta):
    """The objective of the gradient methods: the mean log-likelihood over the two
    points in the unconstrained coordinates ``(mu, log sigma)``, from the closed
    form, whose autodiff graph is a few elementwise operations (the grid runs tens
    of thousands of batched gradient steps)."""
    return 0.5 * toy.ll_closed_form(theta[0], jnp.exp(theta[1]))


@dataclasses.dataclass(frozen=True)
class Ascent:
    """Fixed-step gradient ascent on the mean log-likelihood in ``(mu, log sigma)``.

    ``theta <- theta + learning_rate * grad(theta) [+ noise]``.

    Args:
        learning_rate: traced step size.
        noise: optional :class:`Noise` added after the step (its presence is static:
            a separate program).
    """

    learning_rate: Any
    noise: Noise | None = None

    def init(self, gmm, x, *, sample_weight=None) -> AscentState:
        mu, sigma = toy.from_gmm(gmm)
        return AscentState(jnp.stack([mu, jnp.log(sigma)]), jnp.asarray(0, jnp.int32))

    def step(self, state: AscentState, x, *, sample_weight=None, beta=1.0):
        theta = state.theta + self.learning_rate * jax.grad(_mean_ll)(state.theta)
        if self.noise is not None:
            eta, gamma, z = self.noise
            std = jnp.sqrt(eta / (1.0 + state.count) ** gamma)
            theta = theta + std * z[state.count]
        new = AscentState(theta, state.count + 1)
        return new, _info(log_likelihood(*state.params))


@dataclasses.dataclass(frozen=True)
class FieldAscent:
    """Fixed-step gradient ascent on ``L`` in ``(mu, sigma)``, with the gradient of
    the general library's likelihood (:func:`gmmjax.toy.ll`): the paths of the
    gradient-field figure.

    Args:
        step: traced step size, ``(mu, sigma) <- (mu, sigma) + step * grad L``.
    """

    step_size: Any

    def init(self, gmm, x, *, sample_weight=None) -> ToyState:
        return _start(gmm)

    def step(self, state: ToyState, x, *, sample_weight=None, beta=1.0):
        g_mu, g_sigma = jax.grad(toy.ll, argnums=(0, 1))(*state)
        new = ToyState(
            state.mu + self.step_size * g_mu, state.sigma + self.step_size * g_sigma
        )
        return new, _info(log_likelihood(*state))


class OptaxState(NamedTuple):
    """An optax optimizer's parameters ``(mu, log sigma)`` and state."""

    theta: jax.Array  # (2,)
    opt_state: Any

    @property
    def params(self):
        return self.theta[0], jnp.exp(self.theta[1])

    @property
    def gmm(self) -> gmmjax.GMM:
        return toy.to_gmm(*self.params)


def _negative_mean_ll(theta):
    return -_mean_ll(theta)


@dataclasses.dataclass(frozen=True)
class OptaxAscent:
    """Any optax optimizer minimizing the negative mean log-likelihood in
    ``(mu, log sigma)``.

    Args:
        optimizer: the ``optax.GradientTransformation`` (static: keep one object
            per optimizer to reuse its program).
        linesearch: static; line-search methods (L-BFGS) reuse the value and
            gradient stored in their state, as optax recommends.
    """

    optimizer: optax.GradientTransformation
    linesearch: bool = False

    def init(self, gmm, x, *, sample_weight=None) -> OptaxState:
        mu, sigma = toy.from_gmm(gmm)
        theta = jnp.stack([mu, jnp.log(sigma)])
        return OptaxState(theta, self.optimizer.init(theta))

    def step(self, state: OptaxState, x, *, sample_weight=None, beta=1.0):
        theta, opt_state = state
        if self.linesearch:
            value_and_grad = optax.value_and_grad_from_state(_negative_mean_ll)
            value, grad = value_and_grad(theta, state=opt_state)
        else:
            value, grad = jax.value_and_grad(_negative_mean_ll)(theta)
        updates, opt_state = self.optimizer.update(
            grad, opt_state, theta, value=value, grad=grad, value_fn=_negative_mean_ll
        )
        new = OptaxState(optax.apply_updates(theta, updates), opt_state)
        return new, _info(log_likelihood(*state.params))


class SweepState(NamedTuple):
    """The variance sweep's parameters and step count (each ``()``)."""

    mu: jax.Array
    sigma: jax.Array
    count: jax.Array  # int32

    @property
    def params(self):
        return self.mu, self.sigma

    @property
    def gmm(self) -> gmmjax.GMM:
        return toy.to_gmm(self.mu, self.sigma)


@dataclasses.dataclass(frozen=True)
class VarianceSweep:
    """Deterministic annealing of the variance in closed form, one EM step per step.

    For each ``v`` in the decreasing ``variances`` (``s`` stages of ``inner_steps``
    steps), ``sigma^2`` is held at ``v``; the first step of a stage pushes ``mu``
    away from zero by ``perturbation`` (keeping its sign), and every stage step is
    EM at fixed variance, ``mu <- tanh(mu / v)``. After ``s * inner_steps`` steps
    ``sigma`` is released: full EM steps (:func:`gmmjax.toy.em_update`). The end of
    stage ``i`` is the state after ``(i + 1) * inner_steps`` steps.

    Args:
        variances: ``(s,)`` decreasing variances (traced).
        inner_steps: traced int, EM steps per stage.
        perturbation: traced, the push of ``|mu|`` at each stage.
    """

    variances: Any
    inner_steps: Any
    perturbation: Any

    def init(self, gmm, x, *, sample_weight=None) -> SweepState:
        mu, sigma = toy.from_gmm(gmm)
        return SweepState(mu, sigma, jnp.asarray(0, jnp.int32))

    def step(self, state: SweepState, x, *, sample_weight=None, beta=1.0):
        mu, sigma, count = state
        variances = jnp.asarray(self.variances)
        inner = jnp.asarray(self.inner_steps, jnp.int32)
        n_stages = variances.shape[0]
        v = variances[jnp.minimum(count // inner, n_stages - 1)]
        push = jnp.where(mu < 0, -self.perturbation, self.perturbation)
        pushed = jnp.where(count % inner == 0, mu + push, mu)
        released = toy.em_update(mu, sigma)
        fixed = count < n_stages * inner
        new_mu = jnp.where(fixed, jnp.tanh(pushed / v), released[0])
        new_sigma = jnp.where(fixed, jnp.sqrt(v), released[1])
        new = SweepState(new_mu, new_sigma, count + 1)
        return new, _info(log_likelihood(mu, sigma))


# --------------------------------------------------------------- stopping rule
class RuleState(NamedTuple):
    """:class:`Rule`'s state: the inner fitter's and whether sigma has dropped below
    the threshold."""

    inner: Any
    reached: jax.Array  # () bool

    @property
    def params(self):
        return params_of(self.inner)

    @property
    def gmm(self) -> gmmjax.GMM:
        return self.inner.gmm


@dataclasses.dataclass(frozen=True)
class Rule:
    """The study's stopping rule around any fitter (all fields but ``inner`` traced).

    A step may stop (``StepInfo.can_stop``) when the inner fitter allows it (an
    annealing schedule has ended) and no parameter of ``(mu, sigma)`` moved by more
    than ``tol``, or once ``sigma`` has been in ``[0, threshold)`` at some step. The
    driver ends the run when two successive steps may stop (see :func:`rule_step`).
    ``tol < 0`` never stops on the parameters, ``tol = inf`` leaves the decision to
    the driver's likelihood test; ``threshold = -inf`` never stops on sigma.

    ``guard`` passes the inner fitter's collapse report on to the driver
    (``DEGENERATE``); without it the run goes on, as the study's rules, which know
    nothing of a collapse, prescribe: here the collapse onto the data is the optimum.
    """

    inner: Any
    tol: Any = -1.0
    threshold: Any = -jnp.inf
    guard: Any = False

    def check(self) -> None:
        check = getattr(self.inner, "check", None)
        if check is not None:
            check()

    def init(self, gmm, x, *, sample_weight=None) -> RuleState:
        inner = self.inner.init(gmm, x, sample_weight=sample_weight)
        return RuleState(inner, jnp.asarray(False))

    def step(self, state: RuleState, x, *, sample_weight=None, beta=1.0):
        inner, info = self.inner.step(
            state.inner, x, sample_weight=sample_weight, beta=beta
        )
        (mu0, sigma0), (mu1, sigma1) = params_of(state.inner), params_of(inner)
        move = jnp.maximum(jnp.abs(mu1 - mu0), jnp.abs(sigma1 - sigma0))
        valid = jnp.isfinite(mu1) & jnp.isfinite(sigma1) & (sigma1 >= 0)
        reached = state.reached | (valid & (sigma1 < self.threshold))
        can_stop = (info.can_stop & (move <= self.tol)) | reached
        degenerate = jnp.where(self.guard, info.degenerate, -1).astype(jnp.int32)
        info = gmmjax.StepInfo(info.log_likelihood, degenerate, can_stop)
        return RuleState(inner, reached), info


def rule_step(n_steps, status) -> np.ndarray:
    """The step at which a :class:`Rule` stopped a run of ``gmmjax.fit``.

    The driver ends a run as ``CONVERGED`` at step ``n`` when steps ``n - 1`` and
    ``n`` may both stop, so the rule held from step ``n - 1`` on (the run's last
    step confirms it and moves nothing: by at most ``tol``, or not at all at an
    exact fixed point); any other end is at ``n``.
    """
    n_steps = np.asarray(n_steps)
    return np.where(np.asarray(status) == gmmjax.Status.CONVERGED, n_steps - 1, n_steps)


for _cls, _data, _meta in (
    (ClosedFormEM, ["direct"], []),
    (Alternating, [], []),
    (Ascent, ["learning_rate", "noise"], []),
    (FieldAscent, ["step_size"], []),
    (OptaxAscent, [], ["optimizer", "linesearch"]),
    (VarianceSweep, ["variances", "inner_steps", "perturbation"], []),
    (Rule, ["inner", "tol", "threshold", "guard"], []),
):
    jax.tree_util.register_dataclass(_cls, data_fields=_data, meta_fields=_meta)
