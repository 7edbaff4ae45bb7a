"""Batched fits: every lane of a batch is one :func:`gmmjax.fit` of a fitter in the
study's :class:`~gmmjax._studies.saddle.fitters.Rule`.

A batch is ``vmap``-ed in chunks of a fixed number of lanes: one compiled program
per kind of fitter (its treedef), whatever the hyperparameters, starts, budgets
and rules of the lanes, which are all traced. A batched loop runs until its
slowest lane is done, so callers order the lanes to put runs of similar length in
one chunk.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gmmjax
from gmmjax import toy

from .fitters import Rule

__all__ = [
    "ANY_CHANGE",
    "Ended",
    "Lanes",
    "Traced",
    "for_lanes",
    "lanes",
    "run_lanes",
    "take",
    "trace_lanes",
]

# gmmjax.fit's likelihood test with this tol always passes: the Rule decides.
ANY_CHANGE = float(np.finfo(np.float64).max)


class Lanes(NamedTuple):
    """What each lane of a batch of fits runs (every field ``(b,)``)."""

    mu0: np.ndarray  # the start
    sigma0: np.ndarray
    budget: np.ndarray  # int32, gmmjax.fit's max_steps
    tol: np.ndarray  # Rule.tol
    threshold: np.ndarray  # Rule.threshold
    guard: np.ndarray  # bool, Rule.guard
    fit_tol: np.ndarray  # gmmjax.fit's tol


def lanes(
    mu0, sigma0, *, budget, tol=-1.0, threshold=-np.inf, guard=False, fit_tol=None
) -> Lanes:
    """:class:`Lanes` with every argument broadcast to the starts' shape ``(b,)``.

    ``fit_tol=None`` is :data:`ANY_CHANGE`: the :class:`Rule` alone decides."""
    mu0 = np.ravel(np.asarray(mu0, np.float64))
    b = mu0.shape

    def full(value, dtype):
        return np.broadcast_to(np.asarray(value, dtype), b).copy()

    return Lanes(
        mu0,
        full(np.ravel(sigma0), np.float64),
        full(budget, np.int32),
        full(tol, np.float64),
        full(threshold, np.float64),
        full(guard, bool),
        full(ANY_CHANGE if fit_tol is None else fit_tol, np.float64),
    )


class Ended(NamedTuple):
    """How each lane's fit ended (every field ``(b,)``, numpy)."""

    mu: np.ndarray
    sigma: np.ndarray
    n_steps: np.ndarray
    status: np.ndarray


@jax.jit
def _fit_chunk(fitter, chunk: Lanes) -> Ended:
    x = toy.data(jnp.float64)

    def one(fitter, lane: Lanes):
        rule = Rule(fitter, lane.tol, lane.threshold, lane.guard)
        gmm0 = toy.to_gmm(lane.mu0, lane.sigma0)
        result = gmmjax.fit(rule, gmm0, x, max_steps=lane.budget, tol=lane.fit_tol)
        return Ended(*toy.from_gmm(result.gmm), result.n_steps, result.status)

    return jax.vmap(one)(fitter, chunk)


def for_lanes(fitter, b: int):
    """``fitter`` with every leaf repeated along a leading lane axis of size ``b``
    (the form :func:`run_lanes` takes: each lane may have its own values)."""
    return jax.tree_util.tree_map(
        lambda a: np.broadcast_to(np.asarray(a), (b, *np.shape(a))), fitter
    )


class _Keys(NamedTuple):
    """PRNG keys kept on the host as their raw data (indexing them is free)."""

    data: np.ndarray
    impl: Any


def _on_host(fitter):
    """The fitter's leaves as numpy arrays (keys as :class:`_Keys`): selecting the
    lanes of a chunk then compiles nothing, whatever the number of lanes."""

    def host(a):
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(
            a.dtype, jax.dtypes.prng_key
        ):
            return _Keys(np.asarray(jax.random.key_data(a)), jax.random.key_impl(a))
        return np.asarray(a)

    return jax.tree_util.tree_map(host, fitter)


def take(tree, index):
    """The lanes ``index`` of a fitter or of :class:`Lanes` (numpy or host form)."""

    def take(a):
        if isinstance(a, _Keys):
            return jax.random.wrap_key_data(a.data[index], impl=a.impl)
        return a[index]

    return jax.tree_util.tree_map(take, tree, is_leaf=lambda a: isinstance(a, _Keys))


def run_lanes(fitter, spec: Lanes, *, chunk: int, order=None) -> Ended:
    """``gmmjax.fit`` of ``Rule(fitter_i, ...)`` for every lane ``i`` of ``spec``.

    Args:
        fitter: a fitter whose leaves have a leading lane axis ``(b, ...)`` (see
            :func:`for_lanes`).
        spec: the lanes.
        chunk: lanes per compiled call (fixed for a study: one program per kind
            of fitter); the last chunk is padded with lanes of budget 0.
        order: optional permutation of the lanes for chunking (similar run lengths
            together); results come back in lane order.

    Returns:
        :class:`Ended`, in lane order.
    """
    b = spec.mu0.shape[0]
    order = np.arange(b) if order is None else np.asarray(order)
    index = np.concatenate([order, np.full((-b) % chunk, order[0])])
    padded = Lanes(*(np.asarray(a)[index] for a in spec))
    # the padding lanes take no step
    padded = padded._replace(
        budget=np.where(np.arange(index.size) < b, padded.budget, 0)
    )
    fitter = _on_host(fitter)
    outs = []
    for start in range(0, index.size, chunk):
        part = slice(start, start + chunk)
        outs.append(_fit_chunk(take(fitter, index[part]), take(padded, part)))
    ended = [np.concatenate([np.asarray(o[i]) for o in outs])[:b] for i in range(4)]
    result = [np.empty_like(a) for a in ended]
    for r, a in zip(result, ended, strict=True):
        r[order] = a
    return Ended(*result)


class Traced(NamedTuple):
    """Whole paths of fits (numpy): ``path`` ``(b, steps, 2)`` holds ``(mu, sigma)``
    after each step (standing still after a non-finite step), ``n_steps`` and
    ``status`` ``(b,)`` are ``gmmjax.fit_trace``'s."""

    path: np.ndarray
    n_steps: np.ndarray
    status: np.ndarray


@functools.partial(jax.jit, static_argnames="steps")
def _trace_chunk(fitter, mu0, sigma0, steps):
    x = toy.data(jnp.float64)

    def one(fitter, m, s):
        # the rule only passes the collapse report by (fit_trace stops there)
        rule = Rule(fitter, -1.0, -jnp.inf, False)
        result, trace = gmmjax.fit_trace(rule, toy.to_gmm(m, s), x, num_steps=steps)
        path = jnp.stack(toy.from_gmm(trace.gmm), axis=-1)
        return path, result.n_steps, result.status

    return jax.vmap(one)(fitter, mu0, sigma0)


def trace_lanes(fitter, mu0, sigma0, *, steps: int, chunk: int) -> Traced:
    """``gmmjax.fit_trace`` of ``fitter`` (leaves with a lane axis) for ``steps``
    steps from every start, in chunks of lanes (``steps`` is static: its own
    program)."""
    b = np.size(mu0)
    index = np.concatenate([np.arange(b), np.zeros((-b) % chunk, int)])
    mu0, sigma0 = np.ravel(mu0)[index], np.ravel(sigma0)[index]
    fitter = _on_host(fitter)
    outs = [
        _trace_chunk(
            take(fitter, index[i : i + chunk]),
            mu0[i : i + chunk],
            sigma0[i : i + chunk],
            steps,
        )
        for i in range(0, index.size, chunk)
    ]
    return Traced(
        *(np.concatenate([np.asarray(o[j]) for o in outs])[:b] for j in range(3))
    )
