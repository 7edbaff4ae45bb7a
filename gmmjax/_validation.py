"""Checks at the API edge: shapes always, values only of host (NumPy, list) input.

Values of NumPy arrays and lists are checked on the host before they are
transferred. A ``jax.Array`` gets shape and dtype checks only: reading its values
would copy it to the host on every call (the whole dataset, from an
accelerator), so a non-finite value in it is reported by the fitting driver's
``NONFINITE`` status instead. Inside ``jit``/``grad``/``vmap`` the arrays are
tracers, so the same holds there.
"""

from __future__ import annotations

import numbers
import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "COVARIANCE_TYPES",
    "as_float_array",
    "check_count",
    "check_covariance_type",
    "check_data",
    "check_finite",
    "check_key",
    "check_nonnegative_scalar",
    "check_positive_int",
    "check_sample_weight",
    "concrete",
    "host_array",
]

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")


def concrete(a):
    """Return ``a`` as a NumPy array when its value is known, else ``None``."""
    if isinstance(a, jax.core.Tracer):
        return None
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        return None  # a multi-process global array: its values live on other hosts
    try:
        return np.asarray(a)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def check_covariance_type(covariance_type) -> str:
    if not isinstance(covariance_type, str) or covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {COVARIANCE_TYPES}, "
            f"got {covariance_type!r}"
        )
    return covariance_type


_downcast_warned = False


def _warn_float64_downcast(name: str) -> None:
    """Warn, once per process, that float64 input will be computed in float32."""
    global _downcast_warned
    if _downcast_warned:
        return
    _downcast_warned = True
    warnings.warn(
        f"{name} is float64 but JAX's 64-bit mode is off, so gmmjax computes in "
        "float32 (about 7 significant digits); for float64 run "
        'jax.config.update("jax_enable_x64", True) before creating arrays. '
        "This warning is shown once.",
        UserWarning,
        stacklevel=_caller_level(),
    )


def _caller_level() -> int:
    """``stacklevel`` that points a warning at the first frame outside gmmjax."""
    package = os.path.dirname(__file__)
    frame, level = sys._getframe(2), 2
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == package:
        frame, level = frame.f_back, level + 1
    return level


def as_float_array(a, name: str, dtype=None):
    """Convert ``a`` to a floating JAX array, rejecting non-numeric input.

    Float64 NumPy input while JAX's 64-bit mode is off becomes float32 (JAX's
    default); the first time that happens a warning says so.
    """
    if isinstance(a, (str, bytes)) or a is None:
        raise TypeError(f"{name} must be an array of numbers, got {type(a).__name__}")
    if not isinstance(a, jax.Array):
        try:
            a = np.asarray(a)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be an array of numbers: {err}") from None
        if a.dtype == object or not (
            np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_
        ):
            raise TypeError(f"{name} must be an array of numbers, got dtype {a.dtype}")
        if np.iscomplexobj(a):
            raise TypeError(f"{name} must be real, got dtype {a.dtype}")
        if a.dtype == np.float64 and not jax.config.jax_enable_x64:
            _warn_float64_downcast(name)
        if dtype is None and not np.issubdtype(a.dtype, np.floating):
            dtype = jnp.result_type(float)
        # converted on the host and copied: jnp.asarray would compile a small
        # conversion program for every new shape
        target = jax.dtypes.canonicalize_dtype(a.dtype if dtype is None else dtype)
        return jax.device_put(np.asarray(a, target))
    elif jnp.iscomplexobj(a):
        raise TypeError(f"{name} must be real, got dtype {a.dtype}")
    a = jnp.asarray(a)
    if dtype is not None:
        return a.astype(dtype)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    return a


def host_value(a):
    """``a``'s values when they are on the host already (not a ``jax.Array``,
    whose values would have to be copied back), else ``None``."""
    if isinstance(a, jax.Array):
        return None
    return concrete(a)


def check_finite(a, name: str) -> None:
    value = concrete(a)
    if value is not None and not np.all(np.isfinite(value)):
        raise ValueError(f"{name} must be finite, got NaN or infinite values")


def check_data(x, n_features: int | None = None, name: str = "x", dtype=None):
    """Validate a data matrix of shape ``(n, d)``; return it as a float array.

    Values are checked only when ``x`` is host data (see the module docstring).
    """
    host = not isinstance(x, jax.Array)
    x = as_float_array(x, name, dtype)
    if x.ndim != 2:
        hint = " (reshape a 1-D array with x[:, None])" if x.ndim == 1 else ""
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features), "
            f"got shape {x.shape}{hint}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} must have at least one sample, got shape {x.shape}")
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(
            f"{name} has {x.shape[1]} features but the model has {n_features}"
        )
    if host:
        check_finite(x, name)
    return x


def check_sample_weight(sample_weight, n: int, dtype):
    """Validate per-sample weights ``(n,)``: finite, non-negative, not all zero."""
    if sample_weight is None:
        return None
    value = host_value(sample_weight)
    w = as_float_array(sample_weight, "sample_weight", dtype)
    if w.shape != (n,):
        raise ValueError(
            f"sample_weight must have shape ({n},) to match x, got {w.shape}"
        )
    if value is not None:
        value = np.asarray(value, np.float64)
    if value is not None:
        if not np.all(np.isfinite(value)):
            raise ValueError("sample_weight must be finite, got NaN or infinite values")
        if np.any(value < 0):
            raise ValueError("sample_weight must be non-negative")
        if not np.any(value > 0):
            raise ValueError("sample_weight must not be all zero")
    return w


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_nonnegative_scalar(value, name: str):
    """Validate a scalar hyperparameter that must be >= 0 (when concrete)."""
    if isinstance(value, (str, bytes, bool)) or value is None:
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = concrete(value)
    if v is not None:
        if v.ndim != 0:
            raise ValueError(f"{name} must be a scalar, got shape {v.shape}")
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v}")
    return value


def check_reg_covar(value, name: str = "reg_covar", n_features=None):
    """Validate a variance floor: a number >= 0 (the same for every feature) or
    a 1-D array of them, one per feature (when concrete; ``n_features``, when
    given, is the length such an array must have)."""
    if isinstance(value, (str, bytes, bool)) or value is None:
        raise TypeError(
            f"{name} must be a number or an array of one per feature, got "
            f"{type(value).__name__}"
        )
    v = concrete(value)
    if v is None:
        return value
    if v.ndim > 1:
        raise ValueError(
            f"{name} must be a number or a 1-D array of one per feature, got shape "
            f"{v.shape}"
        )
    if not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
        raise TypeError(f"{name} must hold real numbers, got dtype {v.dtype}")
    if not (np.all(np.isfinite(v)) and np.all(v >= 0)):
        what = "be a finite number" if v.ndim == 0 else "hold finite numbers"
        raise ValueError(f"{name} must {what} >= 0, got {v}")
    if v.ndim == 1 and n_features is not None and v.shape[0] != n_features:
        raise ValueError(
            f"{name} has {v.shape[0]} values but the data have {n_features} "
            "features: give one per feature, or a number"
        )
    return value


def check_count(value, name: str):
    """An integer >= 0 (a Python or NumPy integer, or a 0-d integer array); a traced
    value is accepted inside ``jit``."""
    v = concrete(value)
    if v is None:
        return value
    if isinstance(value, (bool, np.bool_)) or not (
        isinstance(value, numbers.Integral)
        or (v.ndim == 0 and np.issubdtype(v.dtype, np.integer))
    ):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {int(v)}")
    return value


def check_key(key):
    """A single ``jax.random`` key: a new-style key of shape ``()`` or a raw
    ``uint32`` key of shape ``(2,)``."""
    if not isinstance(key, jax.Array):
        raise TypeError(
            f"key must be a jax.random key, e.g. jax.random.key(0); "
            f"got {type(key).__name__}"
        )
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single key, got shape {key.shape}")
    elif key.shape != (2,) or key.dtype != jnp.uint32:
        raise TypeError(
            "key must be a jax.random key, e.g. jax.random.key(0); "
            f"got an array of shape {key.shape} and dtype {key.dtype}"
        )
    return key


def host_array(value, name: str, dtype):
    """``value`` as a device array of ``dtype``: host values are converted on
    the host (no program is compiled), a ``jax.Array`` is cast."""
    if isinstance(value, jax.Array):
        return value.astype(dtype)
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        raise TypeError(
            f"{name} must be a number or an array of numbers, got {value!r}"
        )
    try:
        host = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of numbers") from None
    return jax.device_put(host.astype(dtype))
