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
    the upper-triangular ``U = J L J``: no inverse is formed.
    """
    flipped = precisions[..., ::-1, ::-1]
    try:
        lower = np.linalg.cholesky(flipped)
    except np.linalg.LinAlgError:
        raise ValueError("precisions_init must be positive definite") from None
    return lower[..., ::-1, ::-1]


def check_inits(est, n_features, dtype):
    """Validated ``(weights, means, precisions_cholesky)`` inits (``None`` if unset)."""
    k = est.n_components
    weights = means = prec_chol = None
    if est.weights_init is not None:
        weights = check_array(est.weights_init, dtype=dtype, ensure_2d=False)
        if weights.shape != (k,):
            raise ValueError(
                f"weights_init must have shape ({k},), got {weights.shape}"
            )
        if np.any(weights < 0) or np.any(weights > 1):
            raise ValueError("weights_init must be in [0, 1]")
        if abs(float(weights.sum()) - 1.0) > 1e-6:
            raise ValueError(
                f"weights_init must sum to 1, got sum {float(weights.sum())!r}"
            )
        weights = weights / weights.sum()
    if est.means_init is not None:
        means = check_array(est.means_init, dtype=dtype)
        if means.shape != (k, n_features):
            raise ValueError(
                f"means_init must have shape ({k}, {n_features}), got {means.shape}"
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
            raise ValueError(
                f"precisions_init for covariance_type={ctype!r} must have shape "
                f"{expected}, got {prec.shape}"
            )
        if ctype in ("full", "tied"):
            if not np.allclose(prec, np.swapaxes(prec, -1, -2)):
                raise ValueError("precisions_init must be symmetric")
            prec_chol = upper_cholesky_of(prec.astype(np.float64)).astype(dtype)
        else:
            if np.any(prec <= 0):
                raise ValueError("precisions_init must be positive")
            prec_chol = np.sqrt(prec)
    return weights, means, prec_chol
