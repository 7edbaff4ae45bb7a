"""Fitting by any optax optimizer on the negative mean log-likelihood."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp

from ._degeneracy import degenerate_component, model_spread, sample_count
from ._density import weighted_log_prob
from ._fit import StepInfo
from ._gmm import GMM
from ._validation import concrete

__all__ = [
    "GradientFitter",
    "GradientState",
    "collapsed_component",
    "noisy",
    "tempered_log_likelihood",
]


class GradientState(NamedTuple):
    """What a :class:`GradientFitter` carries from one step to the next.

    Attributes:
        gmm: the current model (the optimizer's parameters).
        opt_state: the optax optimizer state.

    Example:
        >>> import jax, optax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> fitter = gmmjax.GradientFitter(optax.adam(1e-2))
        >>> state = fitter.init(gmm, x)
        >>> state.gmm is gmm, type(state.opt_state).__name__
        (True, 'tuple')
    """

    gmm: GMM
    opt_state: Any


def tempered_log_likelihood(gmm: GMM, x, sample_weight=None, beta=1.0):
    """Deterministic-annealing objective and plain log-likelihood, both summed.

    With ``a_ij = log pi_j + log N(x_i | mu_j, Sigma_j)`` the tempered objective is
    ``F_beta = sum_i w_i [(logsumexp_j(beta a_ij) - log k) / beta + log k]``, whose
    gradient ``sum_ij w_i r_ij(beta) grad a_ij`` uses the tempered responsibilities
    of :func:`gmmjax.responsibilities`; it equals the log-likelihood at
    ``beta = 1`` and tends to ``sum_i w_i (mean_j a_ij + log k)`` as ``beta -> 0``
    (the limit is used at ``beta = 0``, so every ``beta >= 0`` is finite).

    Returns:
        ``(F_beta, log_likelihood)``, two scalars.
    """
    joint = weighted_log_prob(gmm, x)
    k = joint.shape[-1]
    log_k = math.log(k)
    log_prob = logsumexp(joint, axis=-1)
    positive = beta > 0
    safe_beta = jnp.where(positive, beta, 1.0)  # the double-where keeps grads finite
    tempered = (logsumexp(safe_beta * joint, axis=-1) - log_k) / safe_beta + log_k
    tempered = jnp.where(positive, tempered, jnp.mean(joint, axis=-1) + log_k)
    if sample_weight is None:
        return jnp.sum(tempered), jnp.sum(log_prob)
    keep = sample_weight > 0
    return (
        jnp.sum(jnp.where(keep, sample_weight * tempered, 0.0)),
        jnp.sum(jnp.where(keep, sample_weight * log_prob, 0.0)),
    )


def collapsed_component(gmm: GMM, x, sample_weight=None) -> jax.Array:
    """Index of the first empty or collapsed component of ``gmm``, ``-1`` if none.

    EM's rule (:func:`gmmjax._degeneracy.degenerate_component`) read off the model
    itself: a component is *empty* when its weight falls below ``1e-3 / n`` (a
    thousandth of one average sample) and *collapsed* when its variance along its
    thinnest direction, in units of the data's variance, is at the rounding level
    (:func:`gmmjax._degeneracy.model_spread`).
    """
    n = sample_count(x, sample_weight)
    total = x.shape[0] if sample_weight is None else jnp.sum(sample_weight)
    spread = model_spread(gmm, x, sample_weight)
    return degenerate_component(gmm.weights * total, spread, n, total)


class GradientFitter:
    """Maximum likelihood by an optax optimizer over the unconstrained leaves of GMM.

    Each step minimizes ``-F_beta / W``, the negative *mean* (tempered)
    log-likelihood, over every leaf of :class:`GMM` (logits, means and the
    log-diagonal and off-diagonal entries of the precision Cholesky factor, all
    unconstrained), with ``W = sum_i w_i`` and ``F_beta`` as in deterministic
    annealing: ``F_1`` is the log-likelihood, and at ``beta < 1`` the gradient uses
    the tempered responsibilities (see :class:`gmmjax.Annealed`).

    There are two ways to give the optimizer:

    - ``GradientFitter(optax.adam(1e-2))``: a ready ``optax.GradientTransformation``.
      Its functions are static metadata of the pytree, so a transformation with a
      new learning rate (a new object) compiles again.
    - ``GradientFitter(optax.adam, learning_rate=1e-2)``: a factory and its numeric
      hyperparameters. The hyperparameters are traced leaves and the
      transformation is rebuilt inside the compiled step, so new values do **not**
      recompile (and can be batched with ``vmap``). Options that set shapes or
      control flow (L-BFGS's ``memory_size``, ``nesterov``) belong in the factory,
      e.g. ``functools.partial(optax.lbfgs, memory_size=5)``. Keep one factory
      object, and pass values of one kind (Python floats, or arrays of one
      dtype), to reuse the compilation.

    Optimizers that need the objective itself, such as ``optax.lbfgs`` and its
    zoom line search, receive ``value``, ``grad`` and ``value_fn`` as extra
    arguments of ``update``; ``value_fn`` closes over the data inside the step, so
    one compiled step serves every dataset of a shape. A step reports the total
    log-likelihood of the parameters it started from; the run is ``DEGENERATE``
    when a component's weight falls below ``1e-3 / n`` or its covariance collapses
    (see :func:`collapsed_component`).

    Args:
        optimizer: an ``optax.GradientTransformation``, or a callable returning one
            from the keyword ``hyperparameters``.
        **hyperparameters: numeric arguments of the factory (``learning_rate``,
            ``eta``, ...); only allowed with a factory.

    Example:
        >>> import jax, optax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> x = (x - x.mean(0)) / x.std(0)
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> fitter = gmmjax.GradientFitter(optax.adam, learning_rate=0.05)
        >>> result = gmmjax.fit(fitter, gmm0, x, max_steps=500, tol=1e-8)
        >>> em = gmmjax.fit(gmmjax.EM(), gmm0, x, tol=1e-8)
        >>> gap = (em.log_likelihood - result.log_likelihood) / len(x)
        >>> bool(abs(gap) < 1e-3)
        True
    """

    __slots__ = ("hyperparameters", "optimizer")

    optimizer: optax.GradientTransformation | Callable[..., Any]
    hyperparameters: dict

    def __init__(self, optimizer, /, **hyperparameters):
        object.__setattr__(self, "optimizer", optimizer)
        object.__setattr__(self, "hyperparameters", dict(hyperparameters))

    def __setattr__(self, name, value):
        raise AttributeError("GradientFitter is immutable")

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.hyperparameters.items())
        return f"GradientFitter({self.optimizer!r}{extra})"

    def check(self) -> None:
        """Validate the optimizer and hyperparameters (called by the drivers)."""
        opt = self.optimizer
        is_transformation = isinstance(opt, optax.GradientTransformation)
        if self.hyperparameters:
            if is_transformation or not callable(opt):
                raise TypeError(
                    "hyperparameters need an optimizer factory such as optax.adam, "
                    f"got {type(opt).__name__}; pass either GradientFitter("
                    "optax.adam(1e-2)) or GradientFitter(optax.adam, "
                    "learning_rate=1e-2)"
                )
            for name, value in self.hyperparameters.items():
                if isinstance(value, jax.core.Tracer) or (
                    isinstance(value, jax.Array)
                    and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)
                ):
                    continue
                if callable(value) or isinstance(value, (str, bytes)) or value is None:
                    raise TypeError(
                        f"hyperparameter {name} must be a number or array (it is "
                        f"traced), got {type(value).__name__}; put schedules and "
                        "structural options in the factory"
                    )
                v = concrete(value)
                if (
                    v is not None
                    and np.issubdtype(v.dtype, np.number)
                    and not np.all(np.isfinite(v))
                ):
                    raise ValueError(f"hyperparameter {name} must be finite, got {v}")
        elif not is_transformation:
            if not callable(opt):
                raise TypeError(
                    "optimizer must be an optax.GradientTransformation or a factory "
                    f"returning one, got {type(opt).__name__}"
                )
            raise TypeError(
                "optimizer is a factory but no hyperparameters were given: call it, "
                "e.g. GradientFitter(optax.adam(1e-2)), or pass its arguments, "
                "e.g. GradientFitter(optax.adam, learning_rate=1e-2)"
            )

    def transformation(self) -> optax.GradientTransformationExtraArgs:
        """The optax transformation, built from the (possibly traced) leaves."""
        opt = self.optimizer
        if self.hyperparameters:
            opt = opt(**self.hyperparameters)
        return optax.with_extra_args_support(opt)

    def init(self, gmm: GMM, x, *, sample_weight=None) -> GradientState:
        """Start state: the model and a fresh optimizer state."""
        return GradientState(gmm, self.transformation().init(gmm))

    def step(self, state: GradientState, x, *, sample_weight=None, beta=1.0):
        """One optimizer update; returns ``(GradientState, StepInfo)``."""
        if sample_weight is None:
            total = jnp.asarray(x.shape[0], x.dtype)
        else:
            total = jnp.sum(sample_weight)

        def objective(gmm):
            tempered, ll = tempered_log_likelihood(gmm, x, sample_weight, beta)
            return -tempered / total, ll

        def value_fn(gmm):
            return objective(gmm)[0]

        (value, ll), grad = jax.value_and_grad(objective, has_aux=True)(state.gmm)
        updates, opt_state = self.transformation().update(
            grad, state.opt_state, state.gmm, value=value, grad=grad, value_fn=value_fn
        )
        gmm = optax.apply_updates(state.gmm, updates)
        degenerate = collapsed_component(gmm, x, sample_weight)
        return GradientState(gmm, opt_state), StepInfo(
            ll, degenerate, jnp.asarray(True)
        )


# GradientFitter is the one fitter not declared with register_dataclass: its
# public constructor takes the factory's hyperparameters as keyword arguments
# (GradientFitter(optax.adam, learning_rate=1e-2)), which the keyword
# constructor register_dataclass rebuilds through cannot express.
def _flatten(fitter: GradientFitter):
    names = tuple(sorted(fitter.hyperparameters))
    children = tuple(fitter.hyperparameters[name] for name in names)
    return children, (fitter.optimizer, names)


def _flatten_with_keys(fitter: GradientFitter):
    children, aux = _flatten(fitter)
    keys = tuple(jax.tree_util.DictKey(name) for name in aux[1])
    return tuple(zip(keys, children, strict=True)), aux


def _unflatten(aux, children) -> GradientFitter:
    # no validation here: pytrees are rebuilt on every unflatten
    fitter = object.__new__(GradientFitter)
    optimizer, names = aux
    object.__setattr__(fitter, "optimizer", optimizer)
    hyperparameters = dict(zip(names, children, strict=True))
    object.__setattr__(fitter, "hyperparameters", hyperparameters)
    return fitter


jax.tree_util.register_pytree_with_keys(
    GradientFitter, _flatten_with_keys, _unflatten, _flatten
)


def noisy(
    optimizer: optax.GradientTransformation,
    *,
    eta,
    gamma=0.55,
    key,
) -> optax.GradientTransformation:
    """Add annealed Gaussian noise to the gradient before ``optimizer``.

    The update at step ``t`` (from 1) sees ``g_t + sqrt(eta / t^gamma) z_t`` with
    ``z_t ~ N(0, I)`` (Neelakantan et al. 2015, ``optax.add_noise``), so the noise
    that lets the iterates leave a saddle's neighbourhood fades as the fit settles.
    It is an optax transformation like any other: use it in :class:`GradientFitter`,
    directly or inside a factory whose ``eta`` is then a traced hyperparameter.

    Args:
        optimizer: the transformation the noisy gradient is fed to (``optax.sgd``,
            ``optax.adam``, ...).
        eta: variance of the noise at the first step (>= 0), in squared units of
            the gradient of the negative mean log-likelihood.
        gamma: decay exponent of the variance.
        key: a PRNG key or integer seed for the noise.

    Returns:
        ``optax.chain(optax.add_noise(eta, gamma, key), optimizer)``.

    Example:
        >>> import jax, optax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> x = (x - x.mean(0)) / x.std(0)
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(0), x, n_components=2,
        ...                        method="random")
        >>> opt = gmmjax.noisy(optax.adam(0.05), eta=0.01, key=jax.random.key(1))
        >>> result = gmmjax.fit(gmmjax.GradientFitter(opt), gmm0, x, max_steps=200,
        ...                     tol=0.0)
        >>> bool(result.log_likelihood > gmmjax.log_likelihood(gmm0, x))
        True
    """
    return optax.chain(optax.add_noise(eta, gamma, key), optimizer)
