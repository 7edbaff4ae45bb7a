"""Checks of the scikit-learn estimator's parameters and explicit starts."""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.utils.validation import check_array

from ._degeneracy import empty_components, model_spread

__all__ = ["check_inits", "check_int", "check_number", "describe_degeneracy"]


def check_int(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_number(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def describe_degeneracy(est, j: int, X, w) -> str:
    """What happened to component ``j`` of a fitted estimator, by the fit's own
    rule (:mod:`gmmjax._degeneracy`): emptied, or collapsed (and how thin its
    fitted covariance is, ``reg_covar`` included, relative to the data)."""
    n = X.shape[0] if w is None else int(np.sum(w > 0))
    total = X.shape[0] if w is None else float(np.sum(w))
    counts = np.asarray(est.weights_, np.float64) * total
    if empty_components(counts, n, total)[j]:
        return (
            f"component {j} emptied (it holds {counts[j]:.2g} samples' worth of weight)"
        )
    with jax.enable_x64(True):
        spread = model_spread(
            est.gmm_, jnp.asarray(X), None if w is None else jnp.asarray(w)
        )
        thin = float(spread.variance[j])
    what = (
        "the tied covariance collapsed"
        if est.covariance_type == "tied"
        else f"component {j} collapsed"
    )
    return (
        f"{what}: along its thinnest direction its variance, reg_covar included, "
        "fell to the rounding level of the step's moments (in the returned model "
        f"it is {thin:.2g} times the data's variance there)"
    )


def upper_cholesky_of(precisions):
    """Upper-triangular ``P`` with ``P P^T = precisions`` (batched ``(..., d, d)``).

    With ``J`` the reversal permutation, ``J A J = L L^T`` gives ``A = U U^T`` for
    the upper-triangular ``U = J L J``: no inverse is formed. A matrix that is
    not positive definite raises ``numpy.linalg.LinAlgError``.
    """
    lower = np.linalg.cholesky(precisions[..., ::-1, ::-1])
    return lower[..., ::-1, ::-1]


# scikit-learn's messages come first (users and their tests look for them), then
# gmmjax's account in parentheses
def _shape_error(sklearn_name, expected, shape, ours):
    return ValueError(
        f"The parameter '{sklearn_name}' should have the shape of {expected}, but "
        f"got {shape} (gmmjax: {ours})"
    )


def check_inits(est, n_features, dtype):
    """Validated ``(weights, means, precisions_cholesky)`` inits (``None`` if unset).

    The errors start with scikit-learn's words for the same condition; weights
    may sum to 1 within 1e-6 (scikit-learn: 1e-8), which float32 weights need.
    """
    k = est.n_components
    weights = means = prec_chol = None
    if est.weights_init is not None:
        weights = check_array(est.weights_init, dtype=dtype, ensure_2d=False)
        if weights.shape != (k,):
            raise _shape_error(
                "weights",
                (k,),
                weights.shape,
                f"weights_init needs one weight per component, n_components={k}",
            )
        if np.any(weights < 0) or np.any(weights > 1):
            raise ValueError(
                "The parameter 'weights' should be in the range [0, 1], but got "
                f"max value {float(weights.max()):.5f}, min value "
                f"{float(weights.min()):.5f} (gmmjax: weights_init must be in [0, 1])"
            )
        if abs(float(weights.sum()) - 1.0) > 1e-6:
            raise ValueError(
                "The parameter 'weights' should be normalized, but got "
                f"sum(weights) = {float(weights.sum()):.5f} (gmmjax: weights_init "
                f"must sum to 1 within 1e-6, got sum {float(weights.sum())!r})"
            )
        weights = weights / weights.sum()
    if est.means_init is not None:
        means = check_array(est.means_init, dtype=dtype)
        if means.shape != (k, n_features):
            raise _shape_error(
                "means",
                (k, n_features),
                means.shape,
                f"means_init needs a row of {n_features} features per component",
            )
    if est.precisions_init is not None:
        ctype = est.covariance_type
        prec = check_array(
            est.precisions_init, dtype=dtype, ensure_2d=False, allow_nd=True
        )
        expected = {
            "full": (k, n_features, n_features),
            "tied": (n_features, n_features),
            "diag": (k, n_features),
            "spherical": (k,),
        }[ctype]
        if prec.shape != expected:
            raise _shape_error(
                f"{ctype} precision",
                expected,
                prec.shape,
                f"precisions_init for covariance_type={ctype!r} must have shape "
                f"{expected}",
            )
        if ctype in ("full", "tied"):
            wrong = (
                f"'{ctype} precision' should be symmetric, positive-definite "
                "(gmmjax: precisions_init must be symmetric and positive definite"
            )
            if not np.allclose(prec, np.swapaxes(prec, -1, -2)):
                raise ValueError(f"{wrong}; it is not symmetric)")
            try:
                prec_chol = upper_cholesky_of(prec.astype(np.float64)).astype(dtype)
            except np.linalg.LinAlgError:
                raise ValueError(
                    f"{wrong}; its Cholesky factorization failed)"
                ) from None
        else:
            if np.any(prec <= 0):
                raise ValueError(
                    f"'{ctype} precision' should be positive (gmmjax: "
                    "precisions_init must be positive)"
                )
            prec_chol = np.sqrt(prec)
    return weights, means, prec_chol
