"""Bundled datasets."""

from __future__ import annotations

from importlib import resources

import numpy as np


def faithful() -> np.ndarray:
    """Old Faithful geyser eruptions: 272 rows of (duration in minutes, waiting in
    minutes until the next eruption).

    Returns:
        A ``(272, 2)`` float64 NumPy array.

    Example:
        >>> import gmmjax
        >>> gmmjax.datasets.faithful().shape
        (272, 2)
    """
    path = resources.files("gmmjax") / "data" / "faithful.csv"
    with path.open("r", encoding="utf-8") as handle:
        return np.loadtxt(handle, delimiter=",", skiprows=1, dtype=np.float64)
