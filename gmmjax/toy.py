"""The symmetric two-point model of the saddle study.

Two observations, ``x = +1`` and ``x = -1``, and the equal mixture
``0.5 N(mu, sigma^2) + 0.5 N(-mu, sigma^2)``: two parameters, a likelihood that is
unbounded above (``mu -> +-1``, ``sigma -> 0``), no bad local maxima, and one
degenerate saddle at ``(mu, sigma) = (0, 1)`` that slows or stops most optimizers.

Everything here is a thin parameterization over the general library
(:func:`to_gmm` builds a two-component spherical :class:`gmmjax.GMM`), plus the
closed forms that make the model a reference:

- the log-likelihood, with ``v = sigma^2`` and ``z = mu / v``,
  ``L(mu, sigma) = 2 [-log sigma - log(2 pi)/2 - (1 + mu^2) / (2 v) + log cosh z]``;
- its partial derivatives ``dL/dmu = (2 / v) (tanh z - mu)`` and
  ``dL/dsigma = (2 / sigma^3) (1 + mu^2 - v - 2 mu tanh z)``;
- the EM update: the posterior of the ``+mu`` component at ``x = 1`` is
  ``p = N(1 | mu, sigma) / (N(1 | mu, sigma) + N(1 | -mu, sigma)) = sigmoid(2 z)``,
  then ``mu' = 2 p - 1 = tanh z`` and
  ``sigma'^2 = p (1 - mu')^2 + (1 - p) (1 + mu')^2 = 1 - mu'^2``: after one step every
  EM iterate lies on the unit circle ``mu^2 + sigma^2 = 1``;
- the coordinate-wise maximizers used by alternating optimization: for fixed
  ``sigma`` the best ``mu`` solves ``mu = tanh(mu / sigma^2)`` (the mean-field
  equation of a ferromagnet at temperature ``sigma^2``: only ``mu = 0`` when
  ``sigma >= 1``, a pair ``+-mu*`` when ``sigma < 1``), and for fixed ``mu`` the best
  ``sigma^2`` solves ``v = 1 + mu^2 - 2 mu tanh(mu / v)``.

All functions are elementwise, jittable and vmappable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._density import log_likelihood
from ._gmm import GMM

__all__ = [
    "alternating_update",
    "argmax_mu",
    "argmax_sigma",
    "data",
    "dll",
    "em_update",
    "from_gmm",
    "ll",
    "ll_closed_form",
    "to_gmm",
]

# Bisection brackets and iteration count: each halving gains one bit, so 120
# halvings of a bracket of width <= 30 (in log sigma) or 1 (in mu) reach the
# float64 spacing of the root with room to spare.
_BISECTIONS = 120
_LOG_SIGMA_BRACKET = (-20.0, 10.0)


def data(dtype=None) -> jax.Array:
    """The two observations of the study, ``[[1.0], [-1.0]]``.

    Args:
        dtype: floating dtype (default: JAX's default float).

    Returns:
        ``(2, 1)`` array ``(n, d)``.

    Example:
        >>> from gmmjax import toy
        >>> toy.data().shape
        (2, 1)
    """
    return jnp.array([[1.0], [-1.0]], dtype=dtype)


def to_gmm(mu, sigma) -> GMM:
    """The model ``0.5 N(mu, sigma^2) + 0.5 N(-mu, sigma^2)`` as a general mixture.

    Args:
        mu: ``()`` the mean of the first component (the second sits at ``-mu``).
        sigma: ``()`` the common standard deviation, ``> 0``.

    Returns:
        A two-component, one-feature :class:`gmmjax.GMM` with
        ``covariance_type="spherical"``.

    Example:
        >>> from gmmjax import toy
        >>> gmm = toy.to_gmm(0.5, 2.0)
        >>> [float(m) for m in gmm.means[:, 0]], [float(c) for c in gmm.covariances]
        ([0.5, -0.5], [4.0, 4.0])
    """
    mu = jnp.asarray(mu)
    sigma = jnp.asarray(sigma)
    dtype = jnp.result_type(mu, sigma, float)
    mu = mu.astype(dtype)
    var = sigma.astype(dtype) ** 2
    return GMM.from_natural(
        jnp.array([0.5, 0.5], dtype),
        jnp.stack([mu, -mu])[:, None],
        jnp.stack([var, var]),
        covariance_type="spherical",
    )


def from_gmm(gmm: GMM):
    """Read ``(mu, sigma)`` back from a two-component spherical mixture.

    ``mu`` is the first component's mean and ``sigma`` its standard deviation; for a
    model that left the symmetric family (unequal weights, ``mu_2 != -mu_1``) this is
    a projection, not an inverse.

    Args:
        gmm: a :class:`gmmjax.GMM` with two components and one feature (leading
            batch axes allowed).

    Returns:
        ``(mu, sigma)`` arrays with the batch shape of ``gmm``.

    Example:
        >>> from gmmjax import toy
        >>> mu, sigma = toy.from_gmm(toy.to_gmm(0.3, 0.7))
        >>> round(float(mu), 6), round(float(sigma), 6)
        (0.3, 0.7)
    """
    return gmm.means[..., 0, 0], jnp.exp(-gmm.log_diag[..., 0])


def ll(mu, sigma) -> jax.Array:
    """The log-likelihood of the two points under the symmetric mixture.

    Computed by the general library: ``gmmjax.log_likelihood(to_gmm(mu, sigma),
    data())``. Differentiable to any order and vmappable.

    Args:
        mu: ``()`` component mean.
        sigma: ``()`` standard deviation ``> 0``.

    Returns:
        ``()`` the total log-likelihood ``L(mu, sigma)``.

    Example:
        >>> from gmmjax import toy
        >>> round(float(toy.ll(0.0, 1.0)), 6)  # -log(2 pi) - 1
        -2.837877
    """
    gmm = to_gmm(mu, sigma)
    return log_likelihood(gmm, data(gmm.dtype))


def _log_cosh(z):
    a = jnp.abs(z)
    return a + jnp.log1p(jnp.exp(-2.0 * a)) - jnp.log(2.0)


def ll_closed_form(mu, sigma) -> jax.Array:
    """The same log-likelihood from its closed form (an independent reference).

    ``L = 2 [-log sigma - log(2 pi)/2 - (1 + mu^2) / (2 sigma^2) + log cosh(mu /
    sigma^2)]``, with ``log cosh`` evaluated without overflow.

    Args:
        mu: component mean (any shape, broadcast with ``sigma``).
        sigma: standard deviation ``> 0``.

    Returns:
        ``L(mu, sigma)`` with the broadcast shape.

    Example:
        >>> from gmmjax import toy
        >>> round(float(toy.ll_closed_form(0.1, 0.999) - toy.ll_closed_form(0, 1)), 10)
        1.3111e-06
    """
    mu = jnp.asarray(mu, float)
    sigma = jnp.asarray(sigma, float)
    v = sigma**2
    return 2.0 * (
        -jnp.log(sigma)
        - 0.5 * jnp.log(2.0 * jnp.pi)
        - (1.0 + mu**2) / (2.0 * v)
        + _log_cosh(mu / v)
    )


def dll(mu, sigma):
    """The closed-form gradient ``(dL/dmu, dL/dsigma)``.

    ``dL/dmu = (2 / sigma^2) (tanh(mu / sigma^2) - mu)`` and
    ``dL/dsigma = (2 / sigma^3) (1 + mu^2 - sigma^2 - 2 mu tanh(mu / sigma^2))``.

    Args:
        mu: component mean (any shape, broadcast with ``sigma``).
        sigma: standard deviation ``> 0``.

    Returns:
        ``(dL/dmu, dL/dsigma)``.

    Example:
        >>> from gmmjax import toy
        >>> [float(g) for g in toy.dll(0.0, 1.0)]
        [0.0, 0.0]
    """
    mu = jnp.asarray(mu, float)
    sigma = jnp.asarray(sigma, float)
    v = sigma**2
    t = jnp.tanh(mu / v)
    return 2.0 / v * (t - mu), 2.0 / (v * sigma) * (1.0 + mu**2 - v - 2.0 * mu * t)


def em_update(mu, sigma):
    """One EM step of the symmetric model, in closed form.

    ``p = N(1 | mu, sigma) / (N(1 | mu, sigma) + N(1 | -mu, sigma))`` is the
    responsibility of the ``+mu`` component for ``x = 1`` (by symmetry, of ``-mu``
    for ``x = -1``); evaluated in log space as ``sigmoid(2 mu / sigma^2)`` so that it
    neither overflows nor divides ``0 / 0``. Then ``mu' = 2 p - 1`` and
    ``sigma'^2 = p (1 - mu')^2 + (1 - p) (1 + mu')^2``. At ``sigma = 0`` (and
    ``mu != 0``) the responsibility is exactly 0 or 1 and ``(+-1, 0)`` is a fixed
    point.

    Args:
        mu: component mean (any shape, broadcast with ``sigma``).
        sigma: standard deviation ``>= 0``.

    Returns:
        ``(mu', sigma')``.

    Example:
        >>> from gmmjax import toy
        >>> mu, sigma = toy.em_update(0.02, 0.8)
        >>> round(float(mu), 6), round(float(mu**2 + sigma**2), 12)
        (0.03124, 1.0)
    """
    mu = jnp.asarray(mu, float)
    sigma = jnp.asarray(sigma, float)
    p = jax.nn.sigmoid(2.0 * mu / sigma**2)
    mu_new = 2.0 * p - 1.0
    var = p * (1.0 - mu_new) ** 2 + (1.0 - p) * (1.0 + mu_new) ** 2
    return mu_new, jnp.sqrt(var)


def _bisect(increasing_past_root, lo, hi):
    """Bisection for the root of a sign pattern ``(+ ... +, - ... -)``: moves ``lo``
    up while ``increasing_past_root(mid)`` holds."""

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        up = increasing_past_root(mid)
        return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECTIONS, body, (lo, hi))
    return 0.5 * (lo + hi)


def argmax_mu(sigma, sign=1.0):
    """The best ``mu`` for a fixed ``sigma``: ``argmax_mu L(mu, sigma)``.

    The stationarity condition is ``mu = tanh(mu / sigma^2)``. For ``sigma >= 1``
    its only root is ``mu = 0``, the maximum (the two components merge); for
    ``sigma < 1`` the maxima are ``+-mu*`` with ``mu*`` in ``(0, 1)`` and
    ``mu = 0`` becomes a minimum. Found by bisection on ``(0, 1]``.

    Args:
        sigma: standard deviation ``> 0`` (any shape).
        sign: which of the two symmetric maxima to return (its sign is used;
            ``0`` counts as positive).

    Returns:
        ``mu*`` with the sign of ``sign`` (``0`` when ``sigma >= 1``).

    Example:
        >>> from gmmjax import toy
        >>> float(toy.argmax_mu(1.1)), round(float(toy.argmax_mu(0.5)), 6)
        (0.0, 0.999326)
    """
    sigma = jnp.asarray(sigma, float)
    v = sigma**2
    zero = jnp.zeros_like(v)
    root = _bisect(lambda m: jnp.tanh(m / v) > m, zero, zero + 1.0)
    root = jnp.where(v >= 1.0, 0.0, root)
    return jnp.where(jnp.asarray(sign) < 0, -root, root)


def argmax_sigma(mu):
    """The best ``sigma`` for a fixed ``mu``: ``argmax_sigma L(mu, sigma)``, the
    profile of the likelihood.

    With ``v = sigma^2`` the stationarity condition is
    ``g(v) = v - 1 - mu^2 + 2 mu tanh(mu / v) = 0``; ``dL/dsigma`` has the sign of
    ``-g``, which is positive for small ``sigma`` when ``|mu| != 1`` and negative for
    large ``sigma``. Found by bisection on ``log sigma`` in ``[-20, 10]``. At
    ``|mu| = 1`` the likelihood grows without bound as ``sigma -> 0`` and the result
    is the lower end of the bracket, ``exp(-20) ~ 2e-9`` (read: zero).

    Args:
        mu: component mean (any shape).

    Returns:
        ``sigma*(mu)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax import toy
        >>> [round(float(s), 4) for s in toy.argmax_sigma(jnp.array([0.0, 0.1]))]
        [1.0, 0.9949]
    """
    mu = jnp.asarray(mu, float)
    lo = jnp.full_like(mu, _LOG_SIGMA_BRACKET[0])
    hi = jnp.full_like(mu, _LOG_SIGMA_BRACKET[1])

    def rising(log_sigma):
        v = jnp.exp(2.0 * log_sigma)
        return v - 1.0 - mu**2 + 2.0 * mu * jnp.tanh(mu / v) < 0

    return jnp.exp(_bisect(rising, lo, hi))


def alternating_update(mu, sigma):
    """One sweep of alternating (coordinate-wise) maximization: first
    ``mu <- argmax_mu L(mu, sigma)`` (keeping the sign of the current ``mu``), then
    ``sigma <- argmax_sigma L(mu, sigma)``.

    From any ``sigma >= 1`` the first half-sweep sets ``mu = 0`` and the second
    ``sigma = 1``: the saddle ``(0, 1)`` in one sweep, where both coordinates are
    already optimal and the method stops.

    Args:
        mu: component mean (any shape, broadcast with ``sigma``).
        sigma: standard deviation ``> 0``.

    Returns:
        ``(mu', sigma')``.

    Example:
        >>> from gmmjax import toy
        >>> [round(float(v), 6) for v in toy.alternating_update(0.2, 1.5)]
        [0.0, 1.0]
    """
    mu = jnp.asarray(mu, float)
    mu_new = argmax_mu(sigma, jnp.where(mu < 0, -1.0, 1.0))
    return mu_new, argmax_sigma(mu_new)
