"""Hessian-vector products of a sum of terms, and what is built on them.

An objective is a **sum of terms** ``f(z) = sum_c term(z, chunk_c) [+
extra(z)]``: a log-likelihood split into chunks of samples (plus, for a MAP
fit, the log prior as one extra term), or any function as one term
(``chunks=None``). Derivatives are accumulated term by term in a ``lax.scan``,
so memory is bounded by one chunk of samples, never by ``n``:

- :func:`value_and_grad`: ``f`` and its gradient;
- :func:`hvp`: Hessian-vector products ``H v`` for a batch of directions
  (``jax.jvp`` of ``jax.grad``, forward over reverse), the primal pass shared by
  the batch;
- :func:`dense_hessian`: ``H`` column block by column block, ``block`` directions
  at a time: memory ``O(p^2)`` for ``H`` plus ``block`` tangents of one chunk;
- :func:`ritz`: Rayleigh-Ritz on a block Krylov space (Lanczos with full
  reorthogonalization): the extreme eigenpairs of ``H`` from a few hundred
  products, without forming ``H``;
- :func:`conjugate_gradients`: solves with a definite ``H`` (or a projection of
  it), matrix-free.

Everything here is traceable, jittable and vmappable; the callers decide what to
compile.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Ritz",
    "Terms",
    "available_memory",
    "conjugate_gradients",
    "dense_hessian",
    "hvp",
    "ritz",
    "value_and_grad",
]


class Terms(NamedTuple):
    """``f(z) = sum_c fn(z, chunks[c]) + extra(z)`` (``fn(z, None)`` when
    ``chunks`` is None; no extra term when ``extra`` is None).

    ``fn`` and ``extra`` are Python functions (static: part of the compiled
    program); ``chunks`` a pytree of arrays whose leaves share a leading axis
    (traced).
    """

    fn: Callable
    chunks: Any = None
    extra: Callable | None = None


def _accumulate(terms: Terms, one, init, single):
    """``sum_c one(chunk_c)``, one chunk at a time (a single chunk unrolled),
    plus ``single(terms.extra)`` when there is an extra term."""
    if terms.chunks is None:
        total = one(None)
    elif jax.tree_util.tree_leaves(terms.chunks)[0].shape[0] == 1:
        total = one(jax.tree_util.tree_map(lambda a: a[0], terms.chunks))
    else:

        def body(acc, chunk):
            return jax.tree_util.tree_map(jnp.add, acc, one(chunk)), None

        total = jax.lax.scan(body, init, terms.chunks)[0]
    if terms.extra is None:
        return total
    return jax.tree_util.tree_map(jnp.add, total, single(terms.extra))


def value_and_grad(terms: Terms, z):
    """``(f(z), grad f(z))``, accumulated chunk by chunk."""

    def one(chunk):
        return jax.value_and_grad(terms.fn)(z, chunk)

    def single(fn):
        return jax.value_and_grad(fn)(z)

    init = (jnp.zeros((), z.dtype), jnp.zeros_like(z))
    return _accumulate(terms, one, init, single)


def _term_hvp(fn, z, directions):
    """``(fn(z), grad fn(z), H V)`` of one term."""
    vg = jax.value_and_grad(fn)
    primal, tangent = jax.vmap(lambda v: jax.jvp(vg, (z,), (v,)), out_axes=(None, 0))(
        directions
    )
    return primal[0], primal[1], tangent[1]


def hvp(terms: Terms, z, directions):
    """``(f(z), grad f(z), H V)`` for the ``(b, p)`` rows ``V`` of ``directions``.

    Forward over reverse (``jvp`` of ``value_and_grad``) under ``vmap`` over the
    directions: the primal pass (which gives the value and the gradient) is
    shared, and the tangents of one chunk of ``b`` directions are the memory.
    """

    def one(chunk):
        return _term_hvp(lambda t: terms.fn(t, chunk), z, directions)

    def single(fn):
        return _term_hvp(fn, z, directions)

    init = (jnp.zeros((), z.dtype), jnp.zeros_like(z), jnp.zeros_like(directions))
    return _accumulate(terms, one, init, single)


def dense_hessian(terms: Terms, z, block: int):
    """``(f(z), grad f(z), H)``: the symmetrized ``(p, p)`` Hessian from
    Hessian-vector products, ``block`` basis directions at a time
    (``lax.map``: one copy of the product in the program); the value and the
    gradient come with every block, and the first block's are kept."""
    p = z.shape[0]
    n_blocks = -(-p // block)
    basis = jnp.eye(n_blocks * block, p, dtype=z.dtype).reshape(n_blocks, block, p)
    if n_blocks == 1:
        value, grad, h = hvp(terms, z, basis[0])
    else:
        values, grads, h = jax.lax.map(lambda vs: hvp(terms, z, vs), basis)
        value, grad = values[0], grads[0]
    h = h.reshape(-1, p)[:p]
    return value, grad, 0.5 * (h + h.T)


class Ritz(NamedTuple):
    """Rayleigh-Ritz pairs of ``H`` on a Krylov space of dimension ``m``.

    Attributes:
        values: ``(m,)`` Ritz values, ascending: the extreme ones approximate the
            extreme eigenvalues of ``H`` (from inside: ``values[-1] <=
            lambda_max``, ``values[0] >= lambda_min``).
        vectors: ``(p, m)`` the matching orthonormal Ritz vectors (columns).
        residuals: ``(m,)`` ``||H y - theta y||`` of each pair: exact, from the
            stored products; an eigenvalue of ``H`` lies within it of ``theta``.
        start_coefficients: ``(m,)`` the coefficients of the first start vector
            (the gradient, in a diagnosis) in the Ritz vectors: it lies in the
            space, so their squares sum to its squared norm.
        n_products: ``()`` the Hessian-vector products made (``m``, or fewer if
            the extreme pairs converged first).
        converged: ``()`` whether the wanted top pairs met the tolerance.
    """

    values: jax.Array
    vectors: jax.Array
    residuals: jax.Array
    start_coefficients: jax.Array
    n_products: jax.Array
    converged: jax.Array


def _orthogonalize(basis, v):
    """``v`` minus its projection on the rows of ``basis`` (twice: classical
    Gram-Schmidt reorthogonalized, enough in floating point)."""
    v = v - basis.T @ (basis @ v)
    return v - basis.T @ (basis @ v)


def ritz(
    matvec,
    start,
    key,
    max_dim: int,
    *,
    n_wanted: int = 3,
    bottom: bool = False,
    rtol=None,
    check_every: int = 8,
) -> Ritz:
    """Extreme eigenpairs of a symmetric operator from its products only.

    The space is the block Krylov space of ``[start, r]`` with ``r`` a random
    vector (``key``): ``start`` (a gradient) makes the space contain it, ``r``
    gives every eigenvector a non-zero share even when ``start`` has none (a
    gradient that is symmetric under a relabelling never sees the direction
    that breaks the symmetry). Vector ``j + 2`` is ``H v_j`` orthogonalized
    against all earlier ones (full reorthogonalization); a vector that
    orthogonalizes to nothing (an invariant subspace) is replaced by a fresh
    random one, so ``max_dim = p`` spans the whole space and the pairs are exact.
    Every product ``H v_j`` is stored, so the projected matrix ``V^T H V`` and
    every pair's residual are exact.

    Every ``check_every`` products the ``n_wanted`` top pairs (and the lowest,
    with ``bottom``) are tested: the loop stops when each residual is at most
    ``rtol`` times the largest ``|theta|`` (default ``max(1e-8, 100 eps)``;
    the lowest pair's to ``max(rtol, 1e-6, 1000 eps)``).
    The top of the spectrum decides a maximum (every eigenvalue below zero) and
    gives the escape direction; the bottom need not be waited for: a Ritz
    value below zero is a genuine negative curvature whether or not it
    converged, and the lowest Ritz value is an upper bound of the lowest
    eigenvalue.

    Args:
        matvec: ``v -> H v`` for ``(p,)`` vectors (traceable).
        start: ``(p,)`` the first vector (need not be normalized; zero is allowed).
        key: a PRNG key for the random vectors.
        max_dim: the most products (``<= p``; static).
        n_wanted: how many of the top pairs must converge (static).
        bottom: whether the lowest pair must converge too (static).
        rtol: residual tolerance relative to the spectrum's scale.
        check_every: products between convergence tests (static).

    Returns:
        :class:`Ritz` with ``m = max_dim`` slots, the first ``n_products``
        filled; unfilled slots (after an early stop) hold ``nan`` values and
        residuals, zero vectors and coefficients.
    """
    p = start.shape[0]
    dtype = start.dtype
    m = int(max_dim)
    if rtol is None:
        rtol = max(1e-8, 100 * float(jnp.finfo(dtype).eps))
    n_wanted = min(n_wanted, m)
    tiny = jnp.finfo(dtype).eps
    # the lowest pair is only reported: it is waited for to about 1e-6 (an
    # eigenvalue lies within the residual of a Ritz value), and not counted in
    # ``converged``
    bottom_rtol = max(rtol, 1e-6, 1e3 * float(tiny))
    start_norm = jnp.linalg.norm(start)
    slots = jnp.arange(m)

    def fresh(j, basis):
        r = jax.random.normal(jax.random.fold_in(key, j), (p,), dtype)
        return _orthogonalize(basis, r / jnp.linalg.norm(r))

    def projected(t, j):
        """Ritz values and coefficients of the ``j`` filled slots of ``t``."""
        filled = slots < j
        t = jnp.where(filled[:, None] & filled[None, :], t, 0.0)
        # unfilled slots get a value above the whole spectrum: their Ritz
        # values are the top ones and the filled block keeps its own
        bound = 2.0 * jnp.sqrt(jnp.sum(t**2)) + 1.0
        return jnp.linalg.eigh(t + jnp.diag(jnp.where(filled, 0.0, bound)))

    def residuals(basis, products, coef, j):
        """``||H y - theta y||`` of every Ritz pair: product ``i`` lies in the
        span of vectors ``0 .. i + 2``, so only the last two products reach
        outside the space, and the residual is their outside part."""
        last = jnp.maximum(j - 2, 0) + jnp.arange(2)
        outside = jax.vmap(lambda i: _orthogonalize(basis, products[i]))(last)
        outside = jnp.where((last < j)[:, None], outside, 0.0)
        gram = outside @ outside.T
        weights = coef[last]  # (2, m)
        squared = jnp.einsum("am,ab,bm->m", weights, gram, weights)
        return jnp.sqrt(jnp.maximum(squared, 0.0))

    def scale(vals, j):
        """The spectrum's scale: the largest filled ``|theta|`` (at least eps)."""
        return jnp.maximum(jnp.max(jnp.where(slots < j, jnp.abs(vals), 0.0)), tiny)

    def top_converged(vals, res, j):
        wanted = (slots >= j - n_wanted) & (slots < j)
        ok = res <= rtol * scale(vals, j)
        return jnp.all(jnp.where(wanted, ok, True))

    def body(carry):
        j, basis, products, t, _ = carry
        # the random vector of this step: the second start, the replacement of
        # a zero first start, or of a vector that orthogonalizes to nothing
        random = fresh(j, basis)
        previous = products[jnp.maximum(j - 2, 0)]
        candidate = jnp.where(j == 0, start, jnp.where(j == 1, random, previous))
        candidate = jnp.where((j == 0) & ~(start_norm > 0), random, candidate)
        v = _orthogonalize(basis, candidate)
        norm = jnp.linalg.norm(v)
        lost = ~(norm > 1e3 * tiny * jnp.maximum(jnp.linalg.norm(candidate), tiny))
        v = jnp.where(lost, random, v)
        v = v / jnp.linalg.norm(v)
        hv = matvec(v)
        basis = basis.at[j].set(v)
        products = products.at[j].set(hv)
        # the projected matrix V^T H V, one row and column a step
        row = jnp.where(slots <= j, basis @ hv, 0.0)
        t = t.at[j].set(row).at[:, j].set(row)
        j = j + 1

        def test():
            vals, coef = projected(t, j)
            res = residuals(basis, products, coef, j)
            done = top_converged(vals, res, j)
            if bottom:
                done = done & (res[0] <= bottom_rtol * scale(vals, j))
            return done

        done = jax.lax.cond(
            (j % check_every == 0) | (j == m), test, lambda: jnp.asarray(False)
        )
        return j, basis, products, t, done

    def cond(carry):
        j, done = carry[0], carry[-1]
        return (j < m) & ~done

    init = (
        jnp.asarray(0),
        jnp.zeros((m, p), dtype),
        jnp.zeros((m, p), dtype),
        jnp.zeros((m, m), dtype),
        jnp.asarray(False),
    )
    j, basis, products, t, _ = jax.lax.while_loop(cond, body, init)
    vals, coef = projected(t, j)
    res = residuals(basis, products, coef, j)
    converged = top_converged(vals, res, j)
    keep = slots < j
    coef = jnp.where(keep[:, None] & keep[None, :], coef, 0.0)
    vecs = basis.T @ coef
    start_coef = start @ vecs
    vals = jnp.where(keep, vals, jnp.nan)
    res = jnp.where(keep, res, jnp.nan)
    return Ritz(vals, vecs, res, start_coef, j, converged)


def conjugate_gradients(matvec, b, *, rtol, max_steps: int):
    """``(x, converged, definite)``: conjugate gradients for ``A x = b``.

    ``A`` (``matvec``) should be positive definite; ``definite`` is False when a
    search direction met ``d^T A d <= 0`` (the iteration then stops: ``A`` is
    not positive definite on the Krylov space of ``b``). ``converged``: ``||A x
    - b|| <= rtol ||b||`` within ``max_steps`` products.
    """
    target = (rtol * jnp.linalg.norm(b)) ** 2

    def cond(c):
        rr, step, definite = c[3], c[4], c[5]
        return (rr > target) & (step < max_steps) & definite

    def body(c):
        x, r, d, rr, step, _ = c
        ad = matvec(d)
        curvature = d @ ad
        definite = curvature > 0
        alpha = jnp.where(definite, rr / jnp.where(definite, curvature, 1.0), 0.0)
        x = x + alpha * d
        r = r - alpha * ad
        rr_new = r @ r
        d = r + (rr_new / rr) * d
        return x, r, d, jnp.where(definite, rr_new, rr), step + 1, definite

    zero = jnp.zeros_like(b)
    init = (zero, b, b, b @ b, 0, jnp.asarray(True))
    x, _, _, rr, _, definite = jax.lax.while_loop(cond, body, init)
    return x, rr <= target, definite


def available_memory() -> int:
    """Bytes the default device can still give: its allocator's limit on an
    accelerator; on a CPU, Linux's ``MemAvailable`` (free memory plus what the
    page cache would give back), else the free pages, else 8 GiB."""
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30
