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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = [
    "Analysis",
    "CriticalPoint",
    "EscapeDirection",
    "SecondOrder",
    "analyze",
    "check_chunk_size",
    "check_tol",
    "classify",
    "decide",
    "escape_direction",
    "flat_hessian",
    "gradient",
    "hessian",
    "reduced_batch",
    "second_order",
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

    With ``chunk_size=None``, ``jax.hessian`` (forward over reverse: all ``p``
    Hessian-vector products ``jvp(grad)`` in one vectorized pass; memory grows like
    ``p`` copies of the gradient's intermediates). With an integer, the gradient is
    linearized once (``jax.vjp`` of ``jax.grad``, reverse over reverse) and
    ``jax.lax.map`` applies the linearization to ``chunk_size`` basis vectors at a
    time, so memory is bounded by ``chunk_size`` tapes and the forward pass is not
    repeated per chunk; ``H`` is symmetric, so these rows are its columns. In
    ``benchmarks/hessian_benchmark.py`` (``p = 2448`` parameters, ``N = 10,000``)
    this was the faster of the chunked strategies and the full ``jax.hessian``
    does not fit in 24 GiB.

    Args:
        f: scalar function of ``theta``, twice differentiable.
        theta: any pytree of floating arrays with ``p`` entries in all.
        chunk_size: ``None`` or the number of Hessian columns per vectorized pass.

    Returns:
        ``(p, p)`` symmetric Hessian in ``ravel_pytree`` order. Jittable and
        vmappable over ``theta``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax import landscape
        >>> h = landscape.hessian(lambda t: t[0] ** 2 * t[1], jnp.array([1.0, 2.0]))
        >>> [[round(float(v), 6) for v in row] for row in h]
        [[4.0, 2.0], [2.0, 0.0]]
    """
    return _hessian_jit(f, theta, check_chunk_size(chunk_size))


def check_chunk_size(chunk_size):
    """``chunk_size`` of :func:`hessian`, refused unless ``None`` or an int >= 1."""
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise TypeError("chunk_size must be None or a positive integer")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return chunk_size


@functools.partial(jax.jit, static_argnums=(0, 2))
def _hessian_jit(f, theta, chunk_size):
    fz, flat, _ = _flat(f, theta)
    return flat_hessian(fz, flat, chunk_size)


def flat_hessian(fz, x, chunk_size):
    """``(p, p)`` symmetrized Hessian of ``fz`` at the flat ``x`` (traceable; the
    strategies of :func:`hessian`)."""
    if chunk_size is None:
        h = jax.hessian(fz)(x)
    else:
        _, pullback = jax.vjp(jax.grad(fz), x)
        basis = jnp.eye(x.shape[0], dtype=x.dtype)
        h = jax.lax.map(lambda e: pullback(e)[0], basis, batch_size=chunk_size)
    return 0.5 * (h + h.T)


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


def _reduced(fz, x, null_basis, range_vecs, range_vals, coeffs):
    """Cubic ``c``, quartic ``q`` and the correction ``w`` for ``u = U @ coeffs``."""
    u = null_basis @ coeffs
    third, fourth, t3uu = _taylor(fz, x, u)
    proj = range_vecs.T @ t3uu
    w = -0.5 * range_vecs @ (proj / range_vals)
    quartic = fourth / 24.0 - 0.125 * jnp.sum(proj**2 / range_vals)
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

    Attributes:
        value: ``()`` the function's value.
        gradient: ``(p,)`` the flat gradient.
        gradient_norm: ``()`` its Euclidean norm.
        uphill: ``(p,)`` the gradient over its norm.
        eigenvalues: ``(p,)`` Hessian eigenvalues, ascending.
        eigenvectors: ``(p, p)`` matching orthonormal eigenvectors (columns).
        top: ``(p,)`` the top eigenvector, largest-magnitude entry positive.
        top_rate: ``()`` half the top eigenvalue.
        finite: ``()`` whether the gradient norm and every eigenvalue are finite.
    """

    value: jax.Array
    gradient: jax.Array
    gradient_norm: jax.Array
    uphill: jax.Array
    eigenvalues: jax.Array
    eigenvectors: jax.Array
    top: jax.Array
    top_rate: jax.Array
    finite: jax.Array


def second_order(fz, x) -> SecondOrder:
    """:class:`SecondOrder` of the flat function ``fz`` at ``x``; traceable, for
    callers that fuse it into a larger compiled program (``gmmjax.diagnose``).

    The value, the gradient and the Hessian come from one linearization of
    ``value_and_grad``: one forward and backward pass, then ``p``
    Hessian-vector products (forward over reverse, as ``jax.hessian``) applied
    to the basis under ``vmap``: a third less program to compile than a
    separate ``jax.grad`` and ``jax.hessian``.
    """
    (value, g), lin = jax.linearize(jax.value_and_grad(fz), x)
    h = jax.vmap(lambda e: lin(e)[1])(jnp.eye(x.shape[0], dtype=x.dtype))
    vals, vecs = jnp.linalg.eigh(0.5 * (h + h.T))
    gnorm = jnp.linalg.norm(g)
    finite = jnp.all(jnp.isfinite(vals)) & jnp.isfinite(gnorm)
    top = _canonical_sign(vecs[:, -1])
    return SecondOrder(
        value, g, gnorm, g / gnorm, vals, vecs, top, 0.5 * vals[-1], finite
    )


@functools.partial(jax.jit, static_argnums=0)
def _second_order(f, theta, args):
    fz, x, _ = _flat(f, theta, args)
    # checked while tracing: once per function, shapes and dtypes
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"theta must hold floating arrays, got dtype {x.dtype}")
    return second_order(fz, x)


@functools.partial(jax.jit, static_argnums=0)
def reduced_batch(f, theta, args, null_basis, range_vecs, range_vals, dirs):
    """:func:`_reduced` for every row of ``dirs`` ``(b, m)``, in one program.

    ``f(unravel(z), *args)`` is the objective (``f`` static, hashed by identity):
    only a singular Hessian compiles this third- and fourth-order program, once
    per function, shapes and null-space dimension ``m``.
    """
    fz, x, _ = _flat(f, theta, args)

    def one(c):
        return _reduced(fz, x, null_basis, range_vecs, range_vals, c)

    return jax.vmap(one)(dirs)


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


def analyze(f, theta, tol, gradient_tol) -> Analysis:
    """:func:`classify` and :func:`escape_direction` of one point, in one pass.

    One compiled program finds the gradient and the Hessian's eigenpairs; it is
    reused for every point of the same shapes while ``f`` is the same function
    object. Only a singular Hessian (whose other eigenvalues share one sign) runs
    the third- and fourth-order program.
    """
    tol = check_tol(tol, "tol")
    gradient_tol = (
        tol if gradient_tol is None else check_tol(gradient_tol, "gradient_tol")
    )
    reduced = functools.partial(reduced_batch, f, theta, ())
    return decide(_second_order(f, theta, ()), tol, gradient_tol, reduced)


def decide(second: SecondOrder, tol, gradient_tol, reduced) -> Analysis:
    """The :class:`Analysis` of a point from its :class:`SecondOrder`.

    The decisions are taken on the host, in NumPy, so that no eager operation
    compiles a program of its own. ``reduced(null_basis, range_vecs, range_vals,
    dirs)`` (:func:`reduced_batch` with its function, point and data bound) is
    called only when the Hessian is singular and the point critical; a
    ``gradient_tol`` of ``-inf`` calls every point ``"not_critical"``.
    """
    gnorm_np, vals_np, finite = jax.device_get(
        (second.gradient_norm, second.eigenvalues, second.finite)
    )
    if not finite:
        raise ValueError("the gradient or Hessian of f at theta is not finite")
    thr = tol * max(1.0, float(np.max(np.abs(vals_np))))
    pos, neg = vals_np > thr, vals_np < -thr
    null = ~(pos | neg)
    counts = int(pos.sum()), int(neg.sum()), int(null.sum())
    # NumPy values become jax arrays by device_put: jnp.asarray compiles a
    # program per shape
    zero = jax.device_put(np.zeros_like(vals_np))
    gnorm, vals, vecs = second.gradient_norm, second.eigenvalues, second.eigenvectors

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

    vecs_np = np.asarray(vecs)
    null_basis = vecs_np[:, null]
    bound = functools.partial(reduced, null_basis, vecs_np[:, ~null], vals_np[~null])

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


def classify(f, theta, *, tol=1e-6, gradient_tol=None) -> CriticalPoint:
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
            does not; :func:`gmmjax.diagnose` standardizes it first.
        gradient_tol: threshold on the gradient norm; defaults to ``tol``
            (``float("inf")`` classifies the curvature of any point).

    Returns:
        A :class:`CriticalPoint`.

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax import landscape
        >>> landscape.classify(lambda t: -t[0] ** 4 - t[1] ** 2,
        ...                    jnp.zeros(2)).kind
        'maximum'
        >>> landscape.classify(lambda t: t[0] ** 2 - t[1] ** 2, jnp.zeros(2)).kind
        'saddle'
    """
    return analyze(f, theta, tol, gradient_tol).point


def escape_direction(f, theta, *, tol=1e-6, gradient_tol=None):
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
    return analyze(f, theta, tol, gradient_tol).escape
