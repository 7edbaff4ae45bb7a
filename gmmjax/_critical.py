"""Critical points of a scalar objective, found from many starts at once.

The objective is **maximized**, as in :mod:`gmmjax._landscape`, but the search finds
critical points of every kind (maxima, minima, saddles, degenerate points): every
start runs a damped Newton iteration on the residual ``grad f = 0``
(``_newton_search``), all starts together under ``jax.vmap`` in one jitted
``lax.while_loop``. The converged end points are merged when they are close and
each distinct point is classified by :func:`gmmjax.landscape.classify`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._landscape import check_tol, classify

__all__ = ["CriticalPoints", "find_critical_points"]


class CriticalPoints(NamedTuple):
    """Distinct critical points found by :func:`find_critical_points`.

    Attributes:
        points: pytree like ``theta`` with a leading axis of length ``m`` (the
            distinct points, in order of first discovery).
        classifications: ``m`` :class:`CriticalPoint` results.
        counts: ``(m,)`` number of starts that converged to each point.
        converged: ``(b,)`` boolean, which starts converged (finite, gradient norm
            at most ``tol``).
        endpoints: pytree like ``thetas``: where every start ended.

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax import landscape
        >>> found = landscape.find_critical_points(
        ...     lambda t: -(t[0] ** 2 - 1.0) ** 2, jnp.linspace(-2.0, 2.0, 5)[:, None])
        >>> len(found.classifications), int(found.counts.sum())
        (3, 5)
    """

    points: Any
    classifications: tuple
    counts: np.ndarray
    converged: np.ndarray
    endpoints: Any


def _newton_search(fz, x0, max_steps, tol, xtol, max_step):
    """Levenberg-Marquardt on the residual ``grad f = 0`` (its Jacobian is ``H``).

    In the eigenbasis of ``H`` the step is ``delta = -sum_i lambda_i / (lambda_i^2 +
    mu max lambda^2) (v_i . g) v_i`` (Newton as ``mu -> 0``), clipped to norm
    ``max_step``. It is accepted when it lowers the residual measured in the metric
    ``|H|^{-1}`` of the current point (``mu /= 3``), else rejected (``mu *= 4``).
    That metric (the Newton decrement of ``|H|``) weighs a stiff and a soft
    direction alike: with the plain ``||g||`` a step along a nearly null direction
    is rejected whenever it disturbs a stiff one, and the search stalls near a
    degenerate critical point. Critical points of every kind are found, not only
    maxima. The loop goes on after ``||g|| <= tol`` until the accepted steps are
    shorter than ``xtol`` or none is accepted any more: at a degenerate critical
    point the gradient vanishes like a power of the distance, so a small gradient
    alone leaves the point unresolved.
    """
    grad = jax.grad(fz)
    stall = 1e10
    floor = jnp.finfo(x0.dtype).eps

    def body(state):
        x, g, damping, _, step = state
        h = jax.hessian(fz)(x)
        vals, vecs = jnp.linalg.eigh(0.5 * (h + h.T))
        big = jnp.max(vals**2) + jnp.finfo(x.dtype).tiny
        coef = vecs.T @ g
        delta = -vecs @ (vals / (vals**2 + damping * big) * coef)
        norm = jnp.linalg.norm(delta)
        delta = delta * jnp.minimum(1.0, max_step / jnp.maximum(norm, 1e-300))
        x_new = x + delta
        g_new = grad(x_new)
        metric = jnp.maximum(jnp.abs(vals), floor * jnp.sqrt(big))
        before = jnp.sum(coef**2 / metric)
        after = jnp.sum((vecs.T @ g_new) ** 2 / metric)
        ok = jnp.all(jnp.isfinite(g_new)) & (after < before)
        x = jnp.where(ok, x_new, x)
        g = jnp.where(ok, g_new, g)
        moved = jnp.where(ok, jnp.linalg.norm(delta), jnp.inf)
        damping = jnp.where(ok, damping / 3.0, damping * 4.0)
        return x, g, jnp.clip(damping, 1e-30, 4 * stall), moved, step + 1

    def cond(state):
        _, g, damping, moved, step = state
        done = (jnp.linalg.norm(g) <= tol) & (moved <= xtol)
        return (step < max_steps) & ~done & (damping < stall)

    g0 = grad(x0)
    one = jnp.ones((), x0.dtype)
    state = (x0, g0, 1e-3 * one, jnp.inf * one, 0)
    x, g, _, _, _ = jax.lax.while_loop(cond, body, state)
    return x, jnp.linalg.norm(g)


def find_critical_points(
    f,
    thetas,
    *,
    max_steps: int = 200,
    tol=1e-8,
    distance_tol=1e-4,
    max_step=1.0,
    classify_tol=1e-6,
) -> CriticalPoints:
    """Find the distinct critical points of ``f`` reached from many starts at once.

    Every start runs a damped Newton iteration on the gradient (Levenberg-Marquardt
    on the residual ``grad f = 0``; see ``_newton_search``), all starts together
    under ``jax.vmap`` inside one jitted ``lax.while_loop``. Starts that end with a
    non-finite value or a gradient norm above ``tol`` are discarded (they ran off to
    a boundary or to infinity; steps are clipped to ``max_step`` so that critical
    points "at infinity" are not reached in ``max_steps``). Converged end points
    closer than ``distance_tol`` (Euclidean, flat) to an earlier one are merged;
    each distinct point is classified with :func:`classify`.

    Constraints such as ``sigma > 0`` belong in the parameterization of ``f``
    (e.g. ``sigma = exp(log_sigma)``), or filter ``points`` afterwards.

    Args:
        f: scalar function of one ``theta`` pytree.
        thetas: pytree like ``theta`` whose leaves carry a leading axis ``b`` of
            starts.
        max_steps: iteration limit per start.
        tol: gradient-norm threshold for convergence.
        distance_tol: merge radius for duplicates.
        max_step: trust radius of one step (flat Euclidean norm).
        classify_tol: ``tol`` passed to :func:`classify` (with
            ``gradient_tol=tol``).

    Returns:
        :class:`CriticalPoints`.

    Example:
        >>> import jax.numpy as jnp
        >>> from gmmjax import landscape
        >>> f = lambda t: -(t[0] ** 2 - 1.0) ** 2
        >>> starts = jnp.linspace(-2.0, 2.0, 9)[:, None]
        >>> found = landscape.find_critical_points(f, starts)
        >>> sorted(round(float(p[0]), 6) + 0.0 for p in found.points)
        [-1.0, 0.0, 1.0]
        >>> sorted(c.kind for c in found.classifications)
        ['maximum', 'maximum', 'minimum']
    """
    leaves = jax.tree_util.tree_leaves(thetas)
    if not leaves:
        raise ValueError("thetas must contain at least one array")
    b = leaves[0].shape[0] if leaves[0].ndim else None
    if b is None or any(leaf.ndim == 0 or leaf.shape[0] != b for leaf in leaves):
        raise ValueError("every leaf of thetas must have the same leading axis (b,)")
    first = jax.tree_util.tree_map(lambda leaf: leaf[0], thetas)
    _, unravel = ravel_pytree(first)
    flat = jax.vmap(lambda t: ravel_pytree(t)[0])(thetas)
    tol = check_tol(tol, "tol")
    distance_tol = check_tol(distance_tol, "distance_tol")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")

    def fz(z):
        return f(unravel(z))

    search = jax.jit(
        jax.vmap(
            lambda z: _newton_search(
                fz, z, max_steps, tol, 0.01 * distance_tol, max_step
            )
        )
    )
    ends, gnorms = search(flat)
    ends_np, gnorms_np = np.asarray(ends), np.asarray(gnorms)
    converged = np.all(np.isfinite(ends_np), axis=1) & (gnorms_np <= tol)
    good = ends_np[converged].reshape(-1, flat.shape[1])
    dist = np.linalg.norm(good[:, None, :] - good[None, :, :], axis=-1)
    representative = np.argmax(dist <= distance_tol, axis=1) if len(good) else []
    reps, counts = np.unique(np.asarray(representative, int), return_counts=True)
    points = good[reps]
    classes = tuple(
        classify(fz, jnp.asarray(p), tol=classify_tol, gradient_tol=tol) for p in points
    )
    return CriticalPoints(
        points=jax.vmap(unravel)(jnp.asarray(points).reshape(-1, flat.shape[1])),
        classifications=classes,
        counts=counts,
        converged=converged,
        endpoints=jax.vmap(unravel)(ends),
    )
