"""Exact derivatives of any scalar objective, and the type of its critical points.

Everything here is for objectives that are **maximized** (log-likelihoods): a
"maximum" is a local maximum of ``f``, an "escape direction" is a direction along
which ``f`` increases. To study a loss that is minimized, pass ``-loss``.

**Flattening.** ``theta`` may be any pytree; it is flattened with
``jax.flatten_util.ravel_pytree`` and every vector or matrix returned (gradients,
Hessians, eigenvectors, directions) is in that flat order. ``ravel_pytree(theta)[1]``
turns a flat vector back into the pytree.

**Second order.** At a critical point (``grad f = 0``) with Hessian ``H`` (eigenvalues
``lambda_i``, eigenvectors ``v_i``): all ``lambda_i < 0`` is a strict local maximum, all
``> 0`` a strict local minimum, both signs a saddle. An eigenvalue is *null* when
``|lambda_i| <= tol * max(1, max_j |lambda_j|)``.

**Higher order (Lyapunov-Schmidt reduction to fourth order).** When ``H`` is singular
and its non-null eigenvalues share one sign, the second-order test cannot decide. Split
the space into the null space ``N`` (orthonormal basis ``U``) and its complement
``R`` (non-null eigenpairs ``(lambda_r, v_r)``, ``H_R = sum_r lambda_r v_r v_r^T``).
Write a displacement as ``u + w`` with ``u`` in ``N`` and ``w`` in ``R``. With the
derivative tensors ``T3 = D^3 f``, ``T4 = D^4 f`` at the point, for ``w = O(|u|^2)``

    f(theta + u + w) - f(theta) = 1/2 w^T H_R w + 1/6 T3[u,u,u] + 1/2 T3[u,u,w]
                                  + 1/24 T4[u,u,u,u] + O(|u|^5).

The curved directions ``R`` are eliminated by making this stationary in ``w``:
``H_R w = -1/2 b(u)`` with ``b(u) = P_R T3[u,u,.]``, i.e.
``w(u) = -1/2 sum_r (v_r . T3[u,u,.]) / lambda_r v_r``. (When ``H_R`` is negative
definite this ``w`` is the best ``w`` for each ``u``, so ``theta`` is a local maximum
of ``f`` exactly when ``u = 0`` is one of the reduced function.) Substituting,

    g(u) = f(theta + u + w(u)) - f(theta) = c(u) + q(u) + O(|u|^5),
    c(u) = 1/6 T3[u,u,u],
    q(u) = 1/24 T4[u,u,u,u] - 1/8 sum_r (v_r . T3[u,u,.])^2 / lambda_r.

A cubic ``c`` that is not identically zero on ``N`` changes sign: a saddle. Otherwise
the quartic ``q`` decides: ``q > 0`` somewhere on ``N`` means ``f`` rises along the
curve ``theta + t u + t^2 w(u)``, so a point with ``H <= 0`` is a saddle; ``q < 0`` on
the whole unit sphere of ``N`` (with ``H_R`` negative definite) is a strict local
maximum; symmetrically for minima. Anything else (``q`` vanishing in some null
direction) is reported as ``"degenerate"``. All derivative tensors are exact, applied
to vectors only: ``T3[u,u,u]`` and ``T4[u,u,u,u]`` are nested ``jax.jvp`` of
``t -> f(theta + t u)``, ``T3[u,u,.]`` is the second ``jax.jvp`` of the gradient along
``u``. For one null direction the test is exact; for several, ``c`` and ``q`` are
evaluated on a fixed set of directions of ``N`` (the basis, random directions) and
``q`` is then maximized and minimized on the unit sphere of ``N`` by projected
gradient steps.

Worked example (the saddle study, data ``{+1, -1}``, model
``1/2 N(mu, s^2) + 1/2 N(-mu, s^2)``): at ``(mu, s) = (0, 1)`` the gradient is zero
and ``H = diag(0, -4)``. Along ``s = 1`` the log-likelihood falls like ``-mu^4/6``
(``T4 = -4``), but ``T3[mu, mu, s] = -4`` couples the null direction to ``s``:
``w = -1/2 * (-4) / (-4) = -1/2`` and ``q = -1/6 - 1/8 * 16 / (-4) = +1/3``. Along
``s = 1 - mu^2/2`` the log-likelihood *rises* like ``mu^4/3``: a saddle, escaped
along the ``mu`` axis with ``s`` bending down.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import _krylov
from ._krylov import Terms

__all__ = [
    "Analysis",
    "CriticalPoint",
    "EscapeDirection",
    "Route",
    "SecondOrder",
    "analyze",
    "check_chunk_size",
    "check_tol",
    "choose_route",
    "classify",
    "decide",
    "escape_direction",
    "gradient",
    "hessian",
    "reduced_batch",
    "second_order",
    "second_order_free",
]


def _flat(f, theta, args=()):
    """``(z -> f(unravel(z), *args), flat theta, unravel)``, for use under ``jit``.

    Every compiled program here takes the objective ``f`` as a static argument
    (hashed by identity) and the point ``theta`` and the data ``args`` as traced
    ones, so one program serves every point and every dataset of the same shapes
    for as long as ``f`` is the same function object.
    """
    flat, unravel = ravel_pytree(theta)
    return (lambda z: f(unravel(z), *args)), flat, unravel


def gradient(f, theta) -> jax.Array:
    """Exact gradient of a scalar function, flattened over the pytree ``theta``.

    Args:
        f: scalar function of ``theta``.
        theta: any pytree of floating arrays with ``p`` entries in all.

    Returns:
        ``(p,)`` gradient in ``ravel_pytree`` order. Jittable and vmappable over
        ``theta``.

    Example:
        >>> from gmmjax import landscape
        >>> g = landscape.gradient(lambda t: t["a"] ** 2 + 3 * t["b"],
        ...                        {"a": 1.0, "b": 0.0})
        >>> [round(float(v), 6) for v in g]
        [2.0, 3.0]
    """
    return _gradient_jit(f, theta)


# ``f`` is static (hashed by identity): calling again with the same function object
# and shapes reuses the compiled program, and one compilation beats eager dispatch
# of every primitive of the tape.
@functools.partial(jax.jit, static_argnums=0)
def _gradient_jit(f, theta):
    fz, flat, _ = _flat(f, theta)
    return jax.grad(fz)(flat)


def hessian(f, theta, *, chunk_size: int | None = None) -> jax.Array:
    """Exact Hessian of a scalar function, flattened over the pytree ``theta``.

    Built from Hessian-vector products ``H v = jvp(grad f)(theta; v)`` (forward
    over reverse), ``chunk_size`` basis directions at a time under
    ``jax.lax.map``: the memory is ``H`` itself plus ``chunk_size`` tangents of
    ``f``'s intermediates, never ``p`` of them at once (``jax.hessian``'s
    single vectorized pass needs ``p`` times the gradient's memory, hundreds of
    GB for a mixture with ``10^4`` parameters). A Hessian that would not fit in
    memory is refused with a ``ValueError`` before anything is computed; for
    such sizes, :func:`classify` and :func:`escape_direction` with
    ``method="lanczos"`` need only products.

    Args:
        f: scalar function of ``theta``, twice differentiable.
        theta: any pytree of floating arrays with ``p`` entries in all.
        chunk_size: directions per vectorized pass; default ``min(p, 128)``.

    Returns:
        ``(p, p)`` symmetric Hessian in ``ravel_pytree`` order. Jittable and
        vmappable over ``theta``.

    Raises:
        ValueError: when the ``(p, p)`` matrix would not fit in the memory
            available.

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax import landscape
        >>> h = landscape.hessian(lambda t: t[0] ** 2 * t[1], jnp.array([1.0, 2.0]))
        >>> [[round(float(v), 6) for v in row] for row in h]
        [[4.0, 2.0], [2.0, 0.0]]
    """
    chunk_size = check_chunk_size(chunk_size)
    p, dtype = _size(theta)
    check_dense_memory(p, dtype, what="a dense Hessian", factor=3)
    block = min(p, chunk_size or GENERIC_BLOCK)
    return _hessian_jit(f, theta, max(block, 1))


# directions per batch of Hessian-vector products of an arbitrary function (whose
# memory per direction is unknown): the whole Hessian in one pass up to here
GENERIC_BLOCK = 128


def _size(theta) -> tuple[int, np.dtype]:
    """``(p, dtype)`` of the flattened pytree, without flattening it."""
    leaves = jax.tree_util.tree_leaves(theta)
    p = sum(int(np.size(leaf)) for leaf in leaves)
    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    return p, np.dtype(dtype)


def _gib(n_bytes) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def _dense_bytes(p: int, dtype, factor: int) -> int:
    return factor * p * p * np.dtype(dtype).itemsize


def dense_fits(p: int, dtype, factor: int) -> bool:
    """Whether ``factor`` ``(p, p)`` arrays fit in 80% of the available memory."""
    return _dense_bytes(p, dtype, factor) <= 0.8 * _krylov.available_memory()


def check_dense_memory(p: int, dtype, *, what: str, factor: int) -> None:
    """Refuse a dense ``(p, p)`` analysis that would not fit in memory.

    ``factor`` counts the ``(p, p)`` arrays the analysis holds at once (the
    Hessian, its symmetrization, the eigenvectors and the eigensolver's
    workspace); more than 80% of the available memory is refused.
    """
    if dense_fits(p, dtype, factor):
        return
    need, have = _dense_bytes(p, dtype, factor), _krylov.available_memory()
    raise ValueError(
        f"{what} of p = {p} parameters needs about {_gib(need)} "
        f"({factor} {p} x {p} {np.dtype(dtype).name} matrices), more than "
        f"the {_gib(have)} of memory available; use method='lanczos' "
        "(matrix-free: Hessian-vector products and the Lanczos method)"
    )


def check_chunk_size(chunk_size):
    """``chunk_size`` of :func:`hessian`, refused unless ``None`` or an int >= 1."""
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise TypeError("chunk_size must be None or a positive integer")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return chunk_size


@functools.partial(jax.jit, static_argnums=(0, 2))
def _hessian_jit(f, theta, block):
    fz, flat, _ = _flat(f, theta)
    return _krylov.dense_hessian(_one_term(fz), flat, block)[2]


def _one_term(fz) -> Terms:
    """``fz`` as a sum of one term."""
    return Terms(lambda z, _: fz(z))


def _taylor(fz, x, u):
    """Derivatives 3 and 4 of ``t -> fz(x + t u)`` at 0, and ``T3[u, u, .]``."""

    def along(t):
        return fz(x + t * u)

    def d1(t):
        return jax.jvp(along, (t,), (jnp.ones_like(t),))[1]

    def d2(t):
        return jax.jvp(d1, (t,), (jnp.ones_like(t),))[1]

    def d3(t):
        return jax.jvp(d2, (t,), (jnp.ones_like(t),))[1]

    zero = jnp.zeros((), x.dtype)
    third, fourth = jax.jvp(d3, (zero,), (jnp.ones_like(zero),))
    grad = jax.grad(fz)

    def grad_along(t):
        return grad(x + t * u)

    def grad_d1(t):
        return jax.jvp(grad_along, (t,), (jnp.ones_like(t),))[1]

    t3uu = jax.jvp(grad_d1, (zero,), (jnp.ones_like(zero),))[1]
    return third, fourth, t3uu


def _reduced(fz, x, null_basis, solve, coeffs):
    """Cubic ``c``, quartic ``q`` and the correction ``w`` for ``u = U @ coeffs``.

    ``solve(b)`` is ``H_R^{-1} P_R b`` (the curved part of the Hessian inverted
    on its range), so ``w = -1/2 solve(T3[u,u,.])`` and ``sum_r (v_r .
    T3[u,u,.])^2 / lambda_r = T3[u,u,.] . solve(T3[u,u,.]) = -2 T3[u,u,.] . w``.
    """
    u = null_basis @ coeffs
    third, fourth, t3uu = _taylor(fz, x, u)
    w = -0.5 * solve(t3uu)
    quartic = fourth / 24.0 + 0.25 * (t3uu @ w)
    return third / 6.0, quartic, w


class CriticalPoint(NamedTuple):
    """Classification of a point of a scalar objective that is maximized.

    The words of ``kind``, one meaning each:

    - ``"not_critical"``: the gradient norm is above ``gradient_tol``.
    - ``"maximum"``: a strict local maximum (Hessian negative definite, or singular
      with the fourth-order test negative).
    - ``"minimum"``: a strict local minimum (the mirror image).
    - ``"saddle"``: ``f`` rises in some direction and falls in another, at second,
      third or fourth order.
    - ``"degenerate"``: a *degenerate critical point* in Morse's sense: the Hessian
      is singular (a flat direction) and the fourth-order test cannot decide. Not
      the mixture's ``Status.DEGENERATE`` (a collapsed component).

    Attributes:
        kind: one of the words above.
        gradient_norm: ``()`` Euclidean norm of the flat gradient.
        eigenvalues: ``(p,)`` Hessian eigenvalues, ascending.
        eigenvectors: ``(p, p)`` matching orthonormal eigenvectors (columns).
        n_positive: number of eigenvalues above the null threshold.
        n_negative: number of eigenvalues below minus the null threshold.
        n_null: number of null eigenvalues.
        order: the derivative order that decided ``kind`` (1 for not critical, 2 for
            the Hessian, 3 or 4 for the reduction, 0 when undecided).

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax import landscape
        >>> point = landscape.classify(lambda t: t[0] ** 2 - t[1] ** 2, jnp.zeros(2))
        >>> point.kind, point.n_positive, point.n_negative, point.n_null
        ('saddle', 1, 1, 0)
    """

    kind: str
    gradient_norm: jax.Array
    eigenvalues: jax.Array
    eigenvectors: jax.Array
    n_positive: int
    n_negative: int
    n_null: int
    order: int


class EscapeDirection(NamedTuple):
    """A way uphill from a point: ``f(theta + t d + t^2 w)`` increases for small t.

    Attributes:
        direction: ``(p,)`` unit vector ``d`` (flat, ``ravel_pytree`` order).
        curvature: ``(p,)`` second-order correction ``w`` of the path (zero for
            orders 1 and 2).
        order: 1 (the gradient, at a non-critical point), 2 (an eigenvector of a
            positive Hessian eigenvalue), 3 or 4 (the reduction of a singular
            Hessian).
        rate: the leading coefficient: ``f(path(t)) - f(theta) ~ rate * t^order``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax import landscape
        >>> esc = landscape.escape_direction(lambda t: -t[0] ** 2 + t[1] ** 2,
        ...                                  jnp.zeros(2))
        >>> esc.order, round(float(esc.rate), 6)
        (2, 1.0)
    """

    direction: jax.Array
    curvature: jax.Array
    order: int
    rate: jax.Array


class Analysis(NamedTuple):
    """What :func:`analyze` found: the classification and a way uphill (or None)."""

    point: CriticalPoint
    escape: EscapeDirection | None


def _canonical_sign(v):
    i = jnp.argmax(jnp.abs(v))
    return v * jnp.where(v[i] < 0, -1.0, 1.0).astype(v.dtype)


class SecondOrder(NamedTuple):
    """Everything the second-order test needs, from one compiled program.

    On the dense route the eigenpairs are all ``p`` of the Hessian; on the
    matrix-free route they are the ``m`` Ritz pairs of :func:`gmmjax._krylov.ritz`
    (the extreme ones converged; slots after ``n_products`` hold ``nan``).

    Attributes:
        value: ``()`` the function's value.
        gradient: ``(p,)`` the flat gradient.
        gradient_norm: ``()`` its Euclidean norm.
        uphill: ``(p,)`` the gradient over its norm.
        eigenvalues: ``(m,)`` Hessian eigenvalues (or Ritz values), ascending.
        eigenvectors: ``(p, m)`` matching orthonormal eigenvectors (columns).
        residuals: ``(m,)`` ``||H v - lambda v||`` of each pair (0 when dense).
        gradient_coefficients: ``(m,)`` ``v_i . gradient``.
        top: ``(p,)`` the top eigenvector, largest-magnitude entry positive.
        top_rate: ``()`` half the top eigenvalue.
        finite: ``()`` whether the gradient norm and every eigenvalue are finite.
        converged: ``()`` whether the wanted pairs converged (True when dense).
    """

    value: jax.Array
    gradient: jax.Array
    gradient_norm: jax.Array
    uphill: jax.Array
    eigenvalues: jax.Array
    eigenvectors: jax.Array
    residuals: jax.Array
    gradient_coefficients: jax.Array
    top: jax.Array
    top_rate: jax.Array
    finite: jax.Array
    converged: jax.Array


def second_order(terms: Terms, x, block: int) -> SecondOrder:
    """:class:`SecondOrder` of the sum of terms at the flat ``x``, dense route;
    traceable, for callers that fuse it into a larger program
    (``gmmjax.diagnose``).

    The value, the gradient and the Hessian come from the same Hessian-vector
    products (``jvp`` of ``value_and_grad``), ``block`` basis directions at a
    time, then one symmetric eigendecomposition.
    """
    value, g, h = _krylov.dense_hessian(terms, x, block)
    vals, vecs = jnp.linalg.eigh(h)
    gnorm = jnp.linalg.norm(g)
    finite = jnp.all(jnp.isfinite(vals)) & jnp.isfinite(gnorm)
    top = _canonical_sign(vecs[:, -1])
    return SecondOrder(
        value,
        g,
        gnorm,
        g / gnorm,
        vals,
        vecs,
        jnp.zeros_like(vals),
        vecs.T @ g,
        top,
        0.5 * vals[-1],
        finite,
        jnp.asarray(True),
    )


def second_order_free(terms: Terms, x, key, krylov_dim: int) -> SecondOrder:
    """:class:`SecondOrder` of the sum of terms at ``x``, matrix-free route.

    The gradient, then :func:`gmmjax._krylov.ritz` on Hessian-vector products
    from the block Krylov space of the gradient and a random vector: the
    gradient lies in the space (its coefficients give a diagnosis' predicted
    gain), the random vector reaches every eigenvector.
    """
    value, g = _krylov.value_and_grad(terms, x)

    def matvec(v):
        return _krylov.hvp(terms, x, v[None])[2][0]

    # the lowest pair too where products are cheap (where the dense route
    # also runs): only the top decides, and the bottom of a tight cluster of
    # curvatures near -1 can take hundreds of products
    bottom = x.shape[0] <= BOTTOM_MAX_PARAMETERS
    ritz = _krylov.ritz(matvec, g, key, krylov_dim, bottom=bottom)
    last = ritz.n_products - 1
    gnorm = jnp.linalg.norm(g)
    filled = jnp.arange(ritz.values.shape[0]) < ritz.n_products
    finite = jnp.all(jnp.isfinite(ritz.values) | ~filled) & jnp.isfinite(gnorm)
    top = _canonical_sign(ritz.vectors[:, last])
    return SecondOrder(
        value,
        g,
        gnorm,
        g / gnorm,
        ritz.values,
        ritz.vectors,
        ritz.residuals,
        ritz.start_coefficients,
        top,
        0.5 * ritz.values[last],
        finite,
        ritz.converged,
    )


METHODS = ("auto", "dense", "lanczos")
# "auto" analyses up to this many parameters densely. Dense costs p products and
# an O(p^3) eigendecomposition and gives every eigenpair; Lanczos costs a few
# hundred products (benchmarks/hessian_benchmark.py: the crossover)
DENSE_MAX_PARAMETERS = 500
# the most Hessian-vector products of the matrix-free route by default
KRYLOV_DIM = 400
# up to this many parameters the matrix-free route converges the lowest pair as
# well as the top ones, so that both extremes match the dense route's
BOTTOM_MAX_PARAMETERS = 2000
# bytes of tangents per batch of Hessian-vector products on the dense route
BLOCK_BYTES = 2**29


class Route(NamedTuple):
    """How a second-order analysis runs (static: part of the compiled program).

    Attributes:
        method: ``"dense"`` or ``"lanczos"``.
        block: directions per batch of Hessian-vector products (dense route).
        krylov_dim: the most products of the matrix-free route.
    """

    method: str
    block: int
    krylov_dim: int


def check_method(method) -> str:
    """``method`` of the landscape functions, refused unless one of METHODS."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def check_krylov_dim(value):
    """``krylov_dim``: ``None`` or an int >= 2."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"krylov_dim must be None or an integer, got {type(value).__name__}"
        )
    if value < 2:
        raise ValueError(f"krylov_dim must be >= 2, got {value}")
    return value


def choose_route(
    p: int, dtype, method: str, *, direction_bytes: int, krylov_dim=None
) -> Route:
    """The :class:`Route` of an analysis of ``p`` parameters.

    ``"auto"`` is dense up to :data:`DENSE_MAX_PARAMETERS`, matrix-free above.
    The dense route batches as many directions as fit in :data:`BLOCK_BYTES` of
    tangents (``direction_bytes`` each) and is refused, with a ``ValueError``
    naming the memory it needs and the matrix-free option, when its ``(p, p)``
    arrays would not fit; the matrix-free route stores ``2 krylov_dim`` vectors.
    """
    method = check_method(method)
    krylov_dim = check_krylov_dim(krylov_dim)
    itemsize = np.dtype(dtype).itemsize
    if method == "auto":
        method = "dense" if p <= DENSE_MAX_PARAMETERS else "lanczos"
    if method == "dense":
        check_dense_memory(p, dtype, what="a dense analysis", factor=4)
        block = int(np.clip(BLOCK_BYTES // max(direction_bytes, 1), 1, p))
        # equal blocks: no block pays for padding directions
        block = -(-p // -(-p // block))
        return Route("dense", block, 0)
    dim = min(p, krylov_dim or KRYLOV_DIM)
    need = 2 * dim * p * itemsize
    have = _krylov.available_memory()
    if need > 0.8 * have:
        raise ValueError(
            f"a matrix-free analysis of p = {p} parameters with krylov_dim = {dim} "
            f"stores {2 * dim} vectors ({_gib(need)}), more than the "
            f"{_gib(have)} available; pass a smaller krylov_dim"
        )
    return Route("lanczos", 0, dim)


def second_order_route(terms: Terms, x, route: Route) -> SecondOrder:
    """:func:`second_order` or :func:`second_order_free`, as ``route`` says."""
    if route.method == "dense":
        return second_order(terms, x, route.block)
    return second_order_free(terms, x, jax.random.key(0), route.krylov_dim)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _second_order(f, theta, args, route):
    fz, x, _ = _flat(f, theta, args)
    # checked while tracing: once per function, shapes and dtypes
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"theta must hold floating arrays, got dtype {x.dtype}")
    return second_order_route(_one_term(fz), x, route)


def _dense_solve(range_vecs, range_vals):
    def solve(b):
        return range_vecs @ ((range_vecs.T @ b) / range_vals)

    return solve


def _free_solve(fz, x, null_basis, sign, rtol, max_steps):
    """``b -> H_R^{-1} P_R b`` by conjugate gradients on ``sign P H P`` (positive
    definite on the range ``R`` when its eigenvalues have the sign ``sign``)."""
    grad = jax.grad(fz)

    def project(v):
        return v - null_basis @ (null_basis.T @ v)

    def matvec(v):
        return sign * project(jax.jvp(grad, (x,), (project(v),))[1])

    def solve(b):
        return _krylov.conjugate_gradients(
            matvec, sign * project(b), rtol=rtol, max_steps=max_steps
        )[0]

    return solve


@functools.partial(jax.jit, static_argnums=0)
def reduced_batch(f, theta, args, null_basis, range_vecs, range_vals, dirs):
    """:func:`_reduced` for every row of ``dirs`` ``(b, m)``, in one program.

    ``f(unravel(z), *args)`` is the objective (``f`` static, hashed by identity):
    only a singular Hessian compiles this third- and fourth-order program, once
    per function, shapes and null-space dimension ``m``. ``range_vecs`` and
    ``range_vals`` are every non-null eigenpair (the dense route).
    """
    fz, x, _ = _flat(f, theta, args)
    solve = _dense_solve(range_vecs, range_vals)
    return jax.vmap(lambda c: _reduced(fz, x, null_basis, solve, c))(dirs)


@functools.partial(jax.jit, static_argnums=(0, 7))
def reduced_batch_free(
    f, theta, args, null_basis, range_vecs, range_vals, dirs, max_steps
):
    """:func:`reduced_batch` on the matrix-free route: only the sign of the
    non-null Ritz values is used; the curved part is inverted by conjugate
    gradients on Hessian-vector products, projected off the null space."""
    del range_vecs
    fz, x, _ = _flat(f, theta, args)
    # without curved directions the projection is zero and so is every solve
    curved = range_vals.shape[0] > 0
    sign = jnp.where(curved and range_vals[0] < 0, -1.0, 1.0).astype(x.dtype)
    rtol = jnp.sqrt(jnp.finfo(x.dtype).eps)
    solve = _free_solve(fz, x, null_basis, sign, rtol, max_steps)
    return jax.vmap(lambda c: _reduced(fz, x, null_basis, solve, c))(dirs)


def reducer(route: Route, f, theta, args):
    """The ``reduced(null_basis, range_vecs, range_vals, dirs)`` of
    :func:`decide` for this route, with its function, point and data bound."""
    if route.method == "dense":
        return functools.partial(reduced_batch, f, theta, args)
    return functools.partial(
        reduced_batch_free, f, theta, args, max_steps=4 * route.krylov_dim
    )


def _sphere_directions(m, n_random, dtype):
    eye = np.eye(m)
    rng = np.random.default_rng(0)
    rand = rng.normal(size=(n_random, m))
    dirs = np.concatenate([eye, rand / np.linalg.norm(rand, axis=1, keepdims=True)])
    return dirs.astype(dtype)


def _quartic_monomials(m):
    """Index tuples ``(n_monomials, 4)``: monomial ``r`` is ``prod_t c[idx[r, t]]``."""
    return np.array(list(itertools.combinations_with_replacement(range(m), 4)))


def _quartic_extremes(dirs, values, n_starts=256, n_steps=300):
    """Maximizer and minimizer on the unit sphere of a homogeneous quartic.

    ``q`` is exactly a quartic form in the null coordinates, so its coefficients are
    recovered by least squares from its values on more directions than monomials;
    the cheap polynomial is then climbed (and descended) by projected gradient steps
    from many directions. The caller re-evaluates the winners exactly.
    """
    dirs, values = np.asarray(dirs, np.float64), np.asarray(values, np.float64)
    m = dirs.shape[1]
    idx = _quartic_monomials(m)
    coef = np.linalg.lstsq(np.prod(dirs[:, idx], axis=-1), values)[0]
    rng = np.random.default_rng(1)
    start = rng.normal(size=(n_starts, m))
    start = np.concatenate([dirs, start / np.linalg.norm(start, axis=1)[:, None]])
    step = 1.0 / (16.0 * max(np.abs(values).max(), 1e-300))
    ends = _climb_quartic(start, idx, coef, step, n_steps)
    return np.asarray(ends)


@functools.partial(jax.jit, static_argnums=4)
def _climb_quartic(start, idx, coef, step, n_steps):
    def poly(c):
        return jnp.prod(c[idx], axis=-1) @ coef

    def climb(sign, c):
        def body(_, z):
            z = z + sign * step * jax.grad(poly)(z)
            return z / jnp.linalg.norm(z)

        return jax.lax.fori_loop(0, n_steps, body, c)

    ends = []
    for sign in (1.0, -1.0):
        c = jax.vmap(lambda z, sign=sign: climb(sign, z))(start)
        ends.append(c[jnp.argmax(sign * jax.vmap(poly)(c))])
    return jnp.stack(ends)


def analyze(f, theta, tol, gradient_tol, method="auto", krylov_dim=None) -> Analysis:
    """:func:`classify` and :func:`escape_direction` of one point, in one pass.

    One compiled program finds the gradient and the Hessian's eigenpairs (all of
    them, or the extreme ones matrix-free, as :func:`choose_route` decides); it
    is reused for every point of the same shapes while ``f`` is the same
    function object. Only a singular Hessian (whose other eigenvalues share one
    sign) runs the third- and fourth-order program.
    """
    tol = check_tol(tol, "tol")
    gradient_tol = (
        tol if gradient_tol is None else check_tol(gradient_tol, "gradient_tol")
    )
    p, dtype = _size(theta)
    # an arbitrary function's memory per direction is unknown: GENERIC_BLOCK
    route = choose_route(
        p,
        dtype,
        method,
        direction_bytes=BLOCK_BYTES // GENERIC_BLOCK,
        krylov_dim=krylov_dim,
    )
    reduced = reducer(route, f, theta, ())
    return decide(_second_order(f, theta, (), route), tol, gradient_tol, reduced)


def decide(second: SecondOrder, tol, gradient_tol, reduced) -> Analysis:
    """The :class:`Analysis` of a point from its :class:`SecondOrder`.

    The decisions are taken on the host, in NumPy, so that no eager operation
    compiles a program of its own. ``reduced(null_basis, range_vecs, range_vals,
    dirs)`` (:func:`reducer`) is called only when the Hessian is singular and
    the point critical; a ``gradient_tol`` of ``-inf`` calls every point
    ``"not_critical"``.

    On the matrix-free route the pairs are Ritz pairs: a Ritz value above the
    null threshold is a genuine positive curvature (its Ritz vector's Rayleigh
    quotient), so ``n_positive`` and ``n_negative`` count those found (lower
    bounds); a direction is null only when its pair converged to within the
    threshold. A run whose extreme pairs did not converge warns.
    """
    gnorm_np, vals_np, res_np, finite, converged = jax.device_get(
        (
            second.gradient_norm,
            second.eigenvalues,
            second.residuals,
            second.finite,
            second.converged,
        )
    )
    if not finite:
        raise ValueError("the gradient or Hessian of f at theta is not finite")
    filled = ~np.isnan(vals_np)
    partial = not filled.all()
    vals_np, res_np = vals_np[filled], res_np[filled]
    if not converged:
        warnings.warn(
            f"the Lanczos method did not converge in {vals_np.size} Hessian-vector "
            "products (the extreme Ritz pairs' residuals are above the tolerance): "
            "the curvatures are estimates; pass a larger krylov_dim",
            RuntimeWarning,
            stacklevel=3,
        )
    thr = tol * max(1.0, float(np.max(np.abs(vals_np))))
    pos, neg = vals_np > thr, vals_np < -thr
    null = ~(pos | neg) & (res_np <= thr)
    counts = int(pos.sum()), int(neg.sum()), int(null.sum())
    # NumPy values become jax arrays by device_put: jnp.asarray compiles a
    # program per shape
    zero = jax.device_put(np.zeros(second.gradient.shape, vals_np.dtype))
    gnorm = second.gradient_norm
    if partial:
        vecs_np = np.asarray(second.eigenvectors)[:, filled]
        vals, vecs = jax.device_put(vals_np), jax.device_put(vecs_np)
    else:
        vals, vecs = second.eigenvalues, second.eigenvectors
        vecs_np = None

    def result(kind, order, escape=None):
        point = CriticalPoint(kind, gnorm, vals, vecs, *counts, order)
        return Analysis(point, escape)

    second_escape = None
    if counts[0]:
        second_escape = EscapeDirection(second.top, zero, 2, second.top_rate)
    if float(gnorm_np) > gradient_tol:
        uphill = EscapeDirection(second.uphill, zero, 1, gnorm)
        return result("not_critical", 1, uphill)
    if counts[0] and counts[1]:
        return result("saddle", 2, second_escape)
    if not counts[2]:
        return result("minimum" if counts[0] else "maximum", 2, second_escape)

    if vecs_np is None:
        vecs_np = np.asarray(vecs)
    curved = pos | neg
    null_basis = vecs_np[:, null]
    bound = functools.partial(reduced, null_basis, vecs_np[:, curved], vals_np[curved])

    def reduce(dirs):
        return tuple(np.asarray(a) for a in bound(dirs))

    def first_set(dirs, c):
        dirs = dirs.copy()
        dirs[0] = c
        return dirs

    m = counts[2]
    n_random = 0 if m == 1 else 2 * len(_quartic_monomials(m)) + 8
    dirs = _sphere_directions(m, n_random, vals_np.dtype)
    cubic, quartic, _ = reduce(dirs)
    i3 = int(np.argmax(np.abs(cubic)))
    if abs(cubic[i3]) > thr:
        c = np.sign(cubic[i3]) * dirs[i3]
        _, _, w = reduce(first_set(dirs, c))
        escape = EscapeDirection(
            jax.device_put(null_basis @ c),
            jax.device_put(w[0]),
            3,
            jax.device_put(abs(cubic[i3])),
        )
        return result("saddle", 3, second_escape or escape)

    if m > 1:
        dirs = dirs.copy()
        dirs[:2] = _quartic_extremes(dirs, quartic)
        _, quartic, _ = reduce(dirs)
    q_max, q_min = float(quartic.max()), float(quartic.min())
    rises = counts[0] > 0 or q_max > thr
    falls = counts[1] > 0 or q_min < -thr
    escape = second_escape
    if escape is None and q_max > thr:
        i4 = int(np.argmax(quartic))
        _, _, w = reduce(first_set(dirs, dirs[i4]))
        d = null_basis @ dirs[i4]
        d = -d if d[np.argmax(np.abs(d))] < 0 else d
        escape = EscapeDirection(
            jax.device_put(d), jax.device_put(w[0]), 4, jax.device_put(quartic[i4])
        )
    if rises and falls:
        return result("saddle", 4, escape)
    if q_max < -thr and not counts[0]:
        return result("maximum", 4)
    if q_min > thr and not counts[1]:
        return result("minimum", 4, escape)
    return result("degenerate", 0, escape)


def check_tol(value, name):
    """``value`` as a float, refused unless it is a number ``>= 0``."""
    if isinstance(value, (bool, str)) or value is None:
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if np.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value}")
    return value


def classify(
    f, theta, *, tol=1e-6, gradient_tol=None, method="auto", krylov_dim=None
) -> CriticalPoint:
    """Classify a point of a scalar objective ``f`` (maximized) by exact derivatives.

    Gradient first: ``||grad f|| > gradient_tol`` is ``"not_critical"``. Then the
    Hessian's eigenvalues (null when ``|lambda| <= tol * max(1, max |lambda|)``):
    both signs is a saddle; all negative a maximum; all positive a minimum. A
    singular Hessian whose other eigenvalues share one sign is decided by the
    fourth-order reduction described in the module docstring (the cubic form on the
    null space, then the quartic ``q(u) = T4[u]^4/24 - sum_r (v_r . T3[u,u,.])^2 /
    (8 lambda_r)``), which accounts for the coupling of null and curved directions.

    Runs eagerly (the result's ``kind`` is a Python string and the null-space
    dimension is data-dependent); the derivatives inside are compiled once per
    function object and shapes, so classifying many points with the same ``f``
    compiles once (a new ``lambda`` per call compiles anew).

    Args:
        f: scalar function of ``theta``, four times differentiable.
        theta: the point, any pytree of floating arrays (``p`` entries).
        tol: relative threshold for null eigenvalues and higher-order coefficients.
            Relative to the largest curvature, so it compares directions with
            each other: it means the same in every coordinate system only if the
            parameters share a scale. A log-likelihood of data in mixed units
            does not; :func:`gmmjax.diagnose` whitens it first.
        gradient_tol: threshold on the gradient norm; defaults to ``tol``
            (``float("inf")`` classifies the curvature of any point).
        method: ``"dense"`` (every eigenpair of the Hessian, built from
            Hessian-vector products), ``"lanczos"`` (matrix-free: the extreme
            eigenpairs from at most ``krylov_dim`` products, see
            :func:`gmmjax._krylov.ritz`), or ``"auto"``: dense up to 500
            parameters. A dense analysis that would not fit in memory raises a
            ``ValueError`` that says so.
        krylov_dim: the most Hessian-vector products of the matrix-free route
            (default ``min(p, 400)``; up to 2,000 parameters the lowest pair is
            converged as well as the top ones); it stops earlier once the
            extreme pairs converge, and warns if they did not.

    Returns:
        A :class:`CriticalPoint`. On the matrix-free route ``eigenvalues`` and
        ``eigenvectors`` are the Ritz pairs found (the extreme ones converged),
        ``n_positive`` and ``n_negative`` count the curvatures found and
        ``n_null`` the converged null pairs.

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax import landscape
        >>> landscape.classify(lambda t: -t[0] ** 4 - t[1] ** 2,
        ...                    jnp.zeros(2)).kind
        'maximum'
        >>> landscape.classify(lambda t: t[0] ** 2 - t[1] ** 2, jnp.zeros(2)).kind
        'saddle'
    """
    return analyze(f, theta, tol, gradient_tol, method, krylov_dim).point


def escape_direction(
    f, theta, *, tol=1e-6, gradient_tol=None, method="auto", krylov_dim=None
):
    """A direction along which the maximized objective ``f`` increases from ``theta``.

    - Not critical: the normalized gradient (order 1).
    - A positive Hessian eigenvalue: its top eigenvector (order 2);
      ``f(theta + t d) - f(theta) ~ lambda_max t^2 / 2``.
    - Otherwise, the fourth-order reduction (module docstring): a null direction
      ``d`` with a non-zero cubic form (order 3, signed so that ``f`` rises for
      ``t > 0``) or a positive quartic ``q(d)`` (order 4), together with the path
      correction ``w(d)`` of the curved directions: ``f(theta + t d + t^2 w)`` rises
      like ``q(d) t^4``. At the study's saddle ``(mu, s) = (0, 1)`` this is
      ``d = (1, 0)`` (the ``mu`` axis), ``w = (0, -1/2)``, ``q = 1/3``.

    Sign convention: an eigen- or even-order direction ``d`` and ``-d`` both ascend;
    the sign is fixed by making the largest-magnitude entry positive.

    Args:
        f: scalar function of ``theta``.
        theta: any pytree of floating arrays (``p`` entries).
        tol: as in :func:`classify`.
        gradient_tol: as in :func:`classify`.
        method: as in :func:`classify`.
        krylov_dim: as in :func:`classify`.

    Returns:
        An :class:`EscapeDirection` (flat, ``ravel_pytree`` order), or ``None`` when
        ``theta`` is a local maximum or no ascent was found (``"degenerate"`` points
        without a positive quartic).

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax import landscape
        >>> esc = landscape.escape_direction(lambda t: t[0] ** 2 - t[1] ** 2,
        ...                                  jnp.zeros(2))
        >>> [round(float(v), 6) for v in esc.direction], esc.order
        ([1.0, 0.0], 2)
    """
    return analyze(f, theta, tol, gradient_tol, method, krylov_dim).escape
