"""Closed-form values of the toy model at many points, in one compiled program.

The surface, its derivatives and the coordinate-wise maximizers are evaluated by
:mod:`gmmjax.toy` (the likelihood and its derivatives through the general library,
``gmmjax.log_likelihood``) in chunks of a fixed size, whatever the number of
points: every figure and table of the study reuses one program instead of
compiling one per grid shape.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gmmjax import toy

__all__ = ["Values", "evaluate"]

_CHUNK = 4096


class Values(NamedTuple):
    """The toy model at points ``(mu, sigma)`` (each field has their shape).

    Attributes:
        ll: ``L(mu, sigma)``, :func:`gmmjax.toy.ll`.
        d_mu, d_sigma: its gradient (autodiff).
        d_mu_mu, d_mu_sigma, d_sigma_sigma: its Hessian (autodiff).
        best_sigma: ``argmax_sigma L(mu, .)``, :func:`gmmjax.toy.argmax_sigma`.
        best_mu: ``argmax_mu L(., sigma) >= 0``, :func:`gmmjax.toy.argmax_mu`.
    """

    ll: np.ndarray
    d_mu: np.ndarray
    d_sigma: np.ndarray
    d_mu_mu: np.ndarray
    d_mu_sigma: np.ndarray
    d_sigma_sigma: np.ndarray
    best_sigma: np.ndarray
    best_mu: np.ndarray


def _at(mu, sigma) -> Values:
    grad = jax.grad(toy.ll, argnums=(0, 1))(mu, sigma)
    (h_mm, h_ms), (_, h_ss) = jax.hessian(toy.ll, argnums=(0, 1))(mu, sigma)
    return Values(
        toy.ll(mu, sigma),
        *grad,
        h_mm,
        h_ms,
        h_ss,
        toy.argmax_sigma(mu),
        toy.argmax_mu(sigma),
    )


_values = jax.jit(jax.vmap(_at))


def evaluate(mu, sigma) -> Values:
    """Every field of :class:`Values` at the broadcast points ``(mu, sigma)``.

    Runs in float64 (inside ``jax.enable_x64``, as the study does) or the default
    precision otherwise.

    Example:
        >>> import jax, numpy as np
        >>> from gmmjax._studies.saddle.values import evaluate
        >>> with jax.enable_x64(True):
        ...     v = evaluate(np.array([0.0, 0.1]), 1.0)
        >>> [round(float(h), 6) for h in v.d_sigma_sigma]
        [-4.0, -3.861193]
        >>> round(float(v.best_sigma[1]), 4)
        0.9949
    """
    mu, sigma = np.broadcast_arrays(np.asarray(mu, float), np.asarray(sigma, float))
    shape = mu.shape
    n = mu.size
    pad = (-n) % _CHUNK
    flat_mu = np.concatenate([mu.ravel(), np.zeros(pad)])
    flat_sigma = np.concatenate([sigma.ravel(), np.ones(pad)])
    dtype = jnp.result_type(float)
    parts = [
        _values(
            jnp.asarray(flat_mu[i : i + _CHUNK], dtype),
            jnp.asarray(flat_sigma[i : i + _CHUNK], dtype),
        )
        for i in range(0, flat_mu.size, _CHUNK)
    ]
    return Values(
        *(
            np.concatenate([np.asarray(p[j]) for p in parts])[:n].reshape(shape)
            for j in range(len(Values._fields))
        )
    )
