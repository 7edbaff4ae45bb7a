"""Size buckets: nearby sizes share one compiled program.

Every distinct array shape compiles its own XLA program (seconds on a CPU), so the
estimator rounds the sizes it does not control (samples, restarts, draws) up to a
few buckets and pads: zero-weight rows are exact under weighted EM, extra restarts
and extra draws are discarded. Random draws keep their values under padding
(JAX's default threefry gives the leading rows of a larger draw the same values),
so a padded call returns what an unpadded one would, to rounding.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bucket", "pad_rows", "row_bucket"]

# sizes below this are rounded up to a power of two, above it to one of four
# steps per octave (8, 10, 12, 14, 16, 20, ...): at most 25% padding there
_FINE_FROM = 8
# the fewest rows a bucket of samples holds: below it a program's run time is
# microseconds whatever the size, so every small data set shares one program
# (per feature count and dtype) instead of one per bucket of 10, 12, 14, ... rows;
# iris (150 rows) and its cross-validation folds (120) among them
_MIN_ROWS = 256


def bucket(n: int) -> int:
    """The bucket of a size ``n >= 1``: the smallest of 1, 2, 4, 8, 10, 12, 14,
    16, 20, 24, 28, 32, 40, ... (powers of two below 8, then ``m 2^e`` with ``m`` in
    4..7) that is ``>= n``.

    Example:
        >>> from gmmjax._buckets import bucket
        >>> [bucket(n) for n in (1, 3, 8, 9, 149, 150, 160, 161)]
        [1, 4, 8, 10, 160, 160, 160, 192]
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"a bucketed size must be >= 1, got {n}")
    if n <= _FINE_FROM:
        return 1 << (n - 1).bit_length()
    step = 1 << ((n - 1).bit_length() - 3)  # an eighth of the next power of two
    return -(-n // step) * step


def row_bucket(n: int) -> int:
    """The bucket of ``n >= 1`` samples (or draws): :func:`bucket`, and never fewer
    than 256 rows.

    Example:
        >>> from gmmjax._buckets import row_bucket
        >>> [row_bucket(n) for n in (1, 10, 120, 150, 256, 257, 321)]
        [256, 256, 256, 256, 256, 320, 384]
    """
    return max(bucket(n), _MIN_ROWS)


def pad_rows(x: np.ndarray, w: np.ndarray | None, size: int):
    """``(x, w)`` padded to ``size`` rows: copies of the first row with weight 0.

    Args:
        x: ``(n, d)`` data, ``n <= size``.
        w: ``(n,)`` sample weights, or ``None`` for ones.
        size: the padded number of rows.

    Returns:
        ``(size, d)`` data and ``(size,)`` weights (``w`` then zeros).
    """
    n = x.shape[0]
    w = np.ones(n, x.dtype) if w is None else np.asarray(w, x.dtype)
    rows = np.repeat(x[:1], size - n, axis=0)
    return np.concatenate([x, rows]), np.concatenate([w, np.zeros(size - n, x.dtype)])
