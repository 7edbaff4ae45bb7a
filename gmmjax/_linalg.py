"""Cholesky factors, triangular inverses and eigenvalues of small batched matrices,
without LAPACK.

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
sequential steps, as LAPACK's unblocked algorithms. The eigendecomposition
(:func:`symmetric_eigh`) is the cyclic Jacobi method: sweeps of ``d (d - 1) / 2``
plane rotations, ``O(d^2)`` work each, until the off-diagonal part is rounding.
Each function is jitted, so an eager call compiles once per shape, not once per
call.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

__all__ = ["cholesky", "extreme_eigenvalues", "inverse_lower", "symmetric_eigh"]

# Up to this many features the factorizations are unrolled; the unrolled code grows
# like d^3, so above it a rolled loop compiles faster.
_UNROLLED_D = 3


def _generic_vector(d: int, dtype):
    """A fixed ``(d,)`` vector of positive entries with no simple ratios between
    them: no special direction, so no structured matrix is aligned with it."""
    return jnp.cos(jnp.arange(1, d + 1, dtype=dtype) * 2.4) + 1.5


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

    start = jnp.broadcast_to(unit(_generic_vector(d, a.dtype)), a.shape[:-1])
    high, low = jax.lax.fori_loop(0, iterations, step, (start, start))
    largest = jnp.sum(high * times_a(high), axis=-1)  # Rayleigh quotients
    smallest = 1 / jnp.sum(low * times_inverse(low), axis=-1)
    definite = jnp.all(jnp.isfinite(inv), axis=(-2, -1))
    return jnp.where(definite & jnp.isfinite(smallest), smallest, 0.0), largest


def _jacobi_rotation(a, v, p, q, index):
    """``a <- J^T a J`` and ``v <- v J`` for the rotation ``J`` in the ``(p, q)``
    plane that zeroes ``a[p, q]`` (Golub & Van Loan, Algorithm 8.5.1)."""
    row_p, row_q = jnp.take(a, p, axis=-2), jnp.take(a, q, axis=-2)
    app, aqq = jnp.take(row_p, p, axis=-1), jnp.take(row_q, q, axis=-1)
    apq = jnp.take(row_p, q, axis=-1)
    rotate = apq != 0
    # t = tan(theta), the root of t^2 + 2 tau t - 1 = 0 of least modulus
    # (|theta| <= pi/4); hypot keeps 1 + tau^2 from overflowing
    tau = (aqq - app) / (2 * jnp.where(rotate, apq, 1.0))
    sign = jnp.where(tau >= 0, 1.0, -1.0).astype(a.dtype)
    t = jnp.where(rotate, sign / (jnp.abs(tau) + jnp.hypot(1.0, tau)), 0.0)
    c = 1 / jnp.sqrt(1 + t * t)
    s = t * c
    c, s, t = c[..., None], s[..., None], t[..., None]
    # rows p and q of J^T a J: the other entries rotated, the 2 x 2 block
    # diagonal (Rutishauser's a_pp - t a_pq, a_qq + t a_pq, a_pq = 0 exactly)
    is_p, is_q = index == p, index == q
    new_p = jnp.where(is_p, app[..., None] - t * apq[..., None], c * row_p - s * row_q)
    new_q = jnp.where(is_q, aqq[..., None] + t * apq[..., None], s * row_p + c * row_q)
    new_p = jnp.where(is_q, 0.0, new_p)
    new_q = jnp.where(is_p, 0.0, new_q)
    a = jnp.where(is_p[:, None], new_p[..., None, :], a)
    a = jnp.where(is_q[:, None], new_q[..., None, :], a)
    a = jnp.where(is_p, new_p[..., :, None], a)  # symmetric: columns = rows
    a = jnp.where(is_q, new_q[..., :, None], a)
    col_p, col_q = jnp.take(v, p, axis=-1), jnp.take(v, q, axis=-1)
    v = jnp.where(is_p, (c * col_p - s * col_q)[..., :, None], v)
    v = jnp.where(is_q, (s * col_p + c * col_q)[..., :, None], v)
    return a, v


def _jacobi_eigh(a, max_sweeps):
    d = a.shape[-1]
    index = jnp.arange(d)
    pairs = [(p, q) for p in range(d) for q in range(p + 1, d)]  # row by row
    ps = jnp.array([p for p, _ in pairs], dtype=jnp.int32)
    qs = jnp.array([q for _, q in pairs], dtype=jnp.int32)
    finite = jnp.all(jnp.isfinite(a), axis=(-2, -1))
    a = jnp.where(finite[..., None, None], a, 0.0)
    # divided by a power of 2 (exactly) to max|a_ij| in [1, 2): no overflow, and
    # no products flushed to zero (XLA's CPU code flushes subnormals), on any
    # scale
    _, exponent = jnp.frexp(jnp.max(jnp.abs(a), axis=(-2, -1)))
    scale = jnp.ldexp(jnp.ones_like(a[..., 0, 0]), exponent - 1)
    scale = jnp.where((scale > 0) & jnp.isfinite(scale), scale, 1.0)
    a = a / scale[..., None, None]

    def norm(a, off=False):
        squares = a * a
        if off:
            squares = jnp.where(index[:, None] != index, squares, 0.0)
        return jnp.sqrt(jnp.sum(squares, axis=(-2, -1)))

    # rotations keep the Frobenius norm: the threshold is fixed from the start
    tol = jnp.finfo(a.dtype).eps * norm(a)

    def sweep(state):
        a, v, n = state

        def rotation(k, av):
            return _jacobi_rotation(*av, ps[k], qs[k], index)

        a, v = jax.lax.fori_loop(0, len(pairs), rotation, (a, v))
        return a, v, n + 1

    def unfinished(state):
        a, _, n = state
        return jnp.any(norm(a, off=True) > tol) & (n < max_sweeps)

    v = jnp.broadcast_to(jnp.eye(d, dtype=a.dtype), a.shape)
    if d > 1:
        a, v, _ = jax.lax.while_loop(unfinished, sweep, (a, v, jnp.int32(0)))
    values = jnp.diagonal(a, axis1=-2, axis2=-1) * scale[..., None]
    order = jnp.argsort(values, axis=-1, stable=True)
    values = jnp.take_along_axis(values, order, axis=-1)
    vectors = jnp.take_along_axis(v, order[..., None, :], axis=-1)
    # each vector's sign by a fixed generic direction, u^T v >= 0: tau = 0 (equal
    # diagonal entries, as in every correlation matrix) switches the rotation's
    # angle from pi/4 to -pi/4, so the loop's signs jump with a rounding error
    side = jnp.einsum("...ij,i->...j", vectors, _generic_vector(d, a.dtype))
    vectors = jnp.where(side[..., None, :] < 0, -vectors, vectors)
    # a non-finite entry: NaN throughout, as LAPACK's
    values = jnp.where(finite[..., None], values, jnp.nan)
    return values, jnp.where(finite[..., None, None], vectors, jnp.nan)


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _eigh(a, max_sweeps):
    return _jacobi_eigh(a, max_sweeps)


@_eigh.defjvp
def _eigh_jvp(max_sweeps, primals, tangents):
    # first-order perturbation theory, as jnp.linalg.eigh's rule: with
    # da' = V^T da V, dl = diag(da'), dV = V (F * da'), F_ij = 1 / (l_j - l_i)
    # off the diagonal and 0 on it (infinite for repeated eigenvalues)
    # da is symmetric: symmetric_eigh passes (a + a^T) / 2
    (a,), (da,) = primals, tangents
    values, vectors = _eigh(a, max_sweeps)
    rotated = jnp.swapaxes(vectors, -1, -2) @ da @ vectors
    gaps = values[..., None, :] - values[..., :, None]
    eye = jnp.eye(a.shape[-1], dtype=bool)
    factor = jnp.where(eye, 0.0, 1 / jnp.where(eye, 1.0, gaps))
    dvalues = jnp.diagonal(rotated, axis1=-2, axis2=-1)
    return (values, vectors), (dvalues, vectors @ (factor * rotated))


@partial(jax.jit, static_argnames="max_sweeps")
def symmetric_eigh(a: jax.Array, max_sweeps: int = 30):
    """Eigenvalues (ascending) and eigenvectors of real symmetric ``(..., d, d)``
    matrices: ``((..., d), (..., d, d))``, ``a = V diag(l) V^T`` with the
    eigenvectors in the columns of ``V``, as ``jnp.linalg.eigh``.

    The cyclic Jacobi method (Golub & Van Loan, 8.5): sweeps over the pairs
    ``p < q`` row by row, each a rotation ``J`` in the ``(p, q)`` plane with
    ``(J^T a J)_pq = 0``,

    .. math::

        \\tau = \\frac{a_{qq} - a_{pp}}{2 a_{pq}}, \\quad
        t = \\frac{\\operatorname{sign}(\\tau)}{|\\tau| + \\sqrt{1 + \\tau^2}},
        \\quad c = \\frac{1}{\\sqrt{1 + t^2}}, \\quad s = t c,

    (the smaller angle, ``|theta| <= pi/4``, which makes the sweeps converge
    quadratically), the diagonal updated as ``a_pp - t a_pq`` and
    ``a_qq + t a_pq`` (Rutishauser) and ``V <- V J``. Sweeps run until the
    off-diagonal Frobenius norm is at most ``eps ||a||_F`` for every matrix of
    the batch, or ``max_sweeps`` of them (in practice 5 to 10 suffice). Each
    rotation is backward stable, so the eigenvalues are exact to a few
    ``d eps ||a||`` and ``V`` is orthogonal to a few ``d eps``; an eigenvector
    is as accurate as its eigenvalue's gap to the others allows (within a
    repeated eigenvalue any orthonormal basis of its space may come out). Each
    eigenvector's sign makes ``u^T v >= 0`` for a fixed vector ``u`` of positive
    entries with no simple ratios between them, so that, like the eigenvalues,
    the eigenvectors of distinct eigenvalues change continuously with ``a`` (the
    rotations' signs do not: at ``a_pp = a_qq`` the angle jumps from ``pi/4``
    to ``-pi/4``).

    ``O(d^2)`` elementwise work per rotation, ``d (d - 1) / 2`` sequential
    rotations per sweep: meant for the small matrices of this package. Reads
    ``(a + a^T) / 2``. Batches under ``vmap`` (and over leading axes); a matrix
    with a non-finite entry gives NaN eigenvalues and eigenvectors.
    Differentiable in both modes by the perturbation rule of
    ``jnp.linalg.eigh`` (infinite derivatives of the eigenvectors at a repeated
    eigenvalue, as there).

    Args:
        a: ``(..., d, d)`` real symmetric matrices.
        max_sweeps: the most sweeps (static).

    Returns:
        ``(eigenvalues, eigenvectors)``: ``(..., d)`` ascending and
        ``(..., d, d)`` orthogonal, column ``j`` for eigenvalue ``j``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax._linalg import symmetric_eigh
        >>> values, vectors = symmetric_eigh(jnp.array([[2.0, 1.0], [1.0, 2.0]]))
        >>> values.tolist()
        [1.0, 3.0]
        >>> [[round(float(e), 4) for e in row] for row in vectors]
        [[-0.7071, 0.7071], [0.7071, 0.7071]]
    """
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    return _eigh((a + jnp.swapaxes(a, -1, -2)) / 2, max_sweeps)
