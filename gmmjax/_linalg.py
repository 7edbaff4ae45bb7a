"""Cholesky factors, triangular inverses and extreme eigenvalues of small batched
matrices, without LAPACK.

The covariances gmmjax factors inside its compiled loops are small ``(k, d, d)``
stacks, often batched again under ``vmap`` (restarts, Hessian directions). On the
CPU, jaxlib 0.10's LAPACK kernels split such a batch over XLA's thread pool and
wait for the parts; called from inside a compiled loop on a machine with few cores,
every pool thread can end up waiting and the process hangs (seen with two cores:
``multistart`` on wine, ``diagnose``). These routines use only elementwise
operations and small products, so they run inside any loop, batch under ``vmap``,
and differentiate to any order. Up to ``_UNROLLED_D`` features they are written out
entry by entry (a batched call on tiny matrices costs more than the arithmetic);
above it, one ``fori_loop`` step per row or column: ``O(d^3)`` work in ``d``
sequential steps, as LAPACK's unblocked algorithms. Each function is jitted, so an
eager call compiles once per shape, not once per call.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

__all__ = ["cholesky", "extreme_eigenvalues", "inverse_lower"]

# Up to this many features the factorizations are unrolled; the unrolled code grows
# like d^3, so above it a rolled loop compiles faster.
_UNROLLED_D = 3


def _lower_from_entries(entries, d: int, like):
    """``(..., d, d)`` lower-triangular matrices from ``{(i, j): (...)}`` entries."""
    zero = jnp.zeros_like(like[..., 0, 0])
    rows = [[entries.get((i, j), zero) for j in range(d)] for i in range(d)]
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


@jax.jit
def cholesky(a: jax.Array) -> jax.Array:
    """Lower Cholesky factor ``L`` of symmetric ``(..., d, d)`` matrices, ``a = L L^T``.

    Reads only the lower triangle. A matrix that is not positive definite gives NaN
    from its first non-positive pivot on, like ``jnp.linalg.cholesky``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax._linalg import cholesky
        >>> cholesky(jnp.array([[4.0, 2.0], [2.0, 5.0]])).tolist()
        [[2.0, 0.0], [1.0, 2.0]]
    """
    d = a.shape[-1]
    if d <= _UNROLLED_D:
        low = {}
        for j in range(d):
            low[j, j] = jnp.sqrt(a[..., j, j] - sum(low[j, m] ** 2 for m in range(j)))
            for i in range(j + 1, d):
                dot = sum(low[i, m] * low[j, m] for m in range(j))
                low[i, j] = (a[..., i, j] - dot) / low[j, j]
        return _lower_from_entries(low, d, a)
    index = jnp.arange(d)

    def column(j, low):
        # column j of a, less the columns of L found so far (L[j, :j] . L[i, :j])
        row_j = jnp.take(low, j, axis=-2)
        col = jnp.take(a, j, axis=-1) - jnp.einsum("...im,...m->...i", low, row_j)
        root = jnp.sqrt(jnp.take(col, j, axis=-1))[..., None]
        new = jnp.where(index == j, root, jnp.where(index > j, col / root, 0.0))
        return jnp.where(index == j, new[..., :, None], low)

    return jax.lax.fori_loop(0, d, column, jnp.zeros_like(a))


@jax.jit
def inverse_lower(low: jax.Array) -> jax.Array:
    """Inverse of lower-triangular ``(..., d, d)`` matrices (lower triangular too).

    Forward substitution row by row: ``M_i = (e_i - L_i,<i M_<i) / L_ii``. A zero or
    non-finite diagonal entry gives non-finite rows from there on.

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax._linalg import inverse_lower
        >>> inverse_lower(jnp.array([[2.0, 0.0], [1.0, 4.0]])).tolist()
        [[0.5, 0.0], [-0.125, 0.25]]
    """
    d = low.shape[-1]
    if d <= _UNROLLED_D:
        inv = {}
        for i in range(d):
            inv[i, i] = 1 / low[..., i, i]
            for j in range(i):
                acc = sum(low[..., i, m] * inv[m, j] for m in range(j, i))
                inv[i, j] = -acc * inv[i, i]
        return _lower_from_entries(inv, d, low)
    index = jnp.arange(d)

    def row(i, inv):
        # rows >= i of inv are still zero, so L_i . inv leaves out L_ii's own term
        low_i = jnp.take(low, i, axis=-2)
        rhs = (index == i) - jnp.einsum("...m,...mc->...c", low_i, inv)
        new = rhs / jnp.take(low_i, i, axis=-1)[..., None]
        return jnp.where((index == i)[:, None], new[..., None, :], inv)

    return jax.lax.fori_loop(0, d, row, jnp.zeros_like(low))


@partial(jax.jit, static_argnames="iterations")
def extreme_eigenvalues(a: jax.Array, iterations: int = 12):
    """Estimates of the smallest and largest eigenvalues of symmetric positive
    semi-definite ``(..., d, d)`` matrices: ``((...), (...))``.

    The largest by power iteration on ``a``; the smallest as the reciprocal of the
    largest eigenvalue of ``a^-1 = M^T M`` (``M = L^-1``, ``L`` the Cholesky
    factor), by power iteration too, so no eigensolver runs. Both start from a
    fixed vector with no special direction and run ``iterations`` steps. Power
    iteration approaches from inside, so the largest is never overstated and the
    smallest never understated; the error shrinks like ``(lambda_2/lambda_1)^(2t)``
    of the operator, so the smallest is exact to rounding exactly when it matters
    for a collapse test: when it is far below the others. A matrix that is not
    positive definite (a zero or negative pivot) has smallest ``0``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax._linalg import extreme_eigenvalues
        >>> low, high = extreme_eigenvalues(jnp.diag(jnp.array([1e-9, 2.0, 3.0])))
        >>> f"{float(low):.3g}", round(float(high), 3)
        ('1e-09', 3.0)
    """
    d = a.shape[-1]
    inv = inverse_lower(cholesky(a))

    def times_a(v):
        return jnp.einsum("...ij,...j->...i", a, v)

    def times_inverse(v):
        u = jnp.einsum("...ij,...j->...i", inv, v)
        return jnp.einsum("...ji,...j->...i", inv, u)

    def unit(w):
        norm = jnp.sqrt(jnp.sum(w**2, axis=-1, keepdims=True))
        return w / jnp.where(norm > 0, norm, 1.0)

    def step(_, vs):
        return unit(times_a(vs[0])), unit(times_inverse(vs[1]))

    start = jnp.cos(jnp.arange(1, d + 1, dtype=a.dtype) * 2.4) + 1.5
    start = jnp.broadcast_to(unit(start), a.shape[:-1])
    high, low = jax.lax.fori_loop(0, iterations, step, (start, start))
    largest = jnp.sum(high * times_a(high), axis=-1)  # Rayleigh quotients
    smallest = 1 / jnp.sum(low * times_inverse(low), axis=-1)
    definite = jnp.all(jnp.isfinite(inv), axis=(-2, -1))
    return jnp.where(definite & jnp.isfinite(smallest), smallest, 0.0), largest
