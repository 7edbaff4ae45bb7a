"""A ``lax.cond`` whose rare branch ``vmap`` runs only on the lanes that take it.

Under ``vmap`` with a per-lane predicate, ``lax.cond`` becomes a ``select`` of
both branches: every lane pays for both. EM's float32 accuracy guard (the
two-pass route) and re-seeding are branches that few lanes take, so restarts in
float32 ran both routes at every step (1,000 restarts: 8.6x the float64 time).
:func:`lane_cond` runs the common branch on every lane and the rare one only on
the lanes that need it.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["lane_cond"]


# Under vmap the lanes that take a cond's rare branch run it in rounds. On CPU a
# round is one lane and the unbatched kernel: batched, the two-pass E step of
# tiny models is slower per lane (measured, K=3, D=2, N=200 float32: 10 us per
# lane alone, 25 us per lane in batches of 16). Elsewhere a round is this many
# lanes, or a 64th of the batch when that is more (at most 64 rounds a step).
_RARE_LANES = 16
_RARE_ROUNDS = 64


def _lanes_per_round(b: int) -> int:
    if jax.default_backend() == "cpu":
        return 1
    return min(b, max(_RARE_LANES, -(-b // _RARE_ROUNDS)))


def lane_cond(pred, common, rare, *operands):
    """``lax.cond(pred, common, rare, *operands)`` that ``vmap`` does not turn into
    a select of both branches.

    Under ``vmap`` with a per-lane ``pred``, ``lax.cond`` evaluates both branches
    on every lane. Here ``common`` runs on every lane and ``rare`` only on the
    lanes whose ``pred`` is False, gathered in rounds (:func:`_lanes_per_round`)
    of a loop whose length is their count (none when every lane's ``pred`` holds):
    each lane gets the branch its ``pred`` picks, as unbatched, at the cost of
    ``common`` on all lanes and ``rare`` on about the lanes that need it. Nested
    ``vmap`` applies the same rule at every level. Arrays among ``operands`` are
    traced; other leaves (Python numbers, ``None``) stay static, so a concrete
    ``beta = 1`` keeps its shortcut in :func:`_posteriors`.

    Derivatives (``jvp``, ``grad``, in any order with ``vmap``) evaluate both
    branches and select, as a batched ``lax.cond`` would.
    """
    leaves, treedef = jax.tree_util.tree_flatten(operands)
    traced = [isinstance(a, (jax.Array, np.ndarray)) for a in leaves]

    def call(branch):
        def run(arrays):
            it = iter(arrays)
            full = [next(it) if t else a for a, t in zip(leaves, traced, strict=True)]
            return branch(*treedef.unflatten(full))

        return run

    arrays = [jnp.asarray(a) for a, t in zip(leaves, traced, strict=True) if t]
    return _batch_aware_cond(call(common), call(rare))(pred, arrays)


def _batch_aware_cond(common, rare):
    """The custom-batched, differentiable ``cond(pred, arrays)`` behind
    :func:`lane_cond`; ``common`` and ``rare`` take the list of arrays."""

    def cond(pred, arrays):
        return jax.lax.cond(pred, common, rare, arrays)

    batched = jax.custom_batching.custom_vmap(cond)

    @batched.def_vmap
    def rule(axis_size, in_batched, pred, arrays):
        pred_batched, arrays_batched = in_batched
        axes = ([0 if b else None for b in arrays_batched],)
        common_b = jax.vmap(common, axes, axis_size=axis_size)
        if pred_batched:
            out = _fix_lanes(pred, common_b(arrays), rare, arrays, axes)
        else:  # one branch for all lanes (and its own rule one vmap further out)
            rare_b = jax.vmap(rare, axes, axis_size=axis_size)
            out = _batch_aware_cond(common_b, rare_b)(pred, arrays)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    # custom_vmap has no reverse mode, so derivatives take both branches and a
    # select, each branch seeing the tangents only where it is taken (a NaN in
    # the branch not taken cannot leak). Not a cond of the branches' jvps: under
    # grad(vmap(.)) its batching wraps the tangents in stop_gradient, which has
    # no transpose (jax-ml/jax#39219).
    differentiable = jax.custom_jvp(batched)

    @differentiable.defjvp
    def jvp(primals, tangents):
        pred, arrays = primals
        _, tangent = tangents

        def only(taken):
            return [_where_tangent(taken, t, jnp.zeros_like(t)) for t in tangent]

        common_out = jax.jvp(common, (arrays,), (only(pred),))
        rare_out = jax.jvp(rare, (arrays,), (only(~pred),))
        return jax.tree_util.tree_map(
            partial(_where_tangent, pred), common_out, rare_out
        )

    return differentiable


def _where_tangent(pred, a, b):
    """``where(pred, a, b)``, also for the ``float0`` tangents of integers."""
    if a.dtype == jax.dtypes.float0:
        return a
    return jnp.where(pred, a, b)


def _fix_lanes(pred, out, rare, arrays, axes):
    """``out`` (``(b, ...)`` leaves) with each lane where ``pred`` is False
    replaced by ``rare`` of that lane's ``arrays`` (batched along ``axes``), a
    round of :func:`_lanes_per_round` lanes at a time."""
    b = pred.shape[0]
    lanes = _lanes_per_round(b)
    # the lanes to redo, in order, padded with the out-of-range lane b
    todo = jnp.nonzero(~pred, size=-(-b // lanes) * lanes, fill_value=b)[0]
    rare_b = jax.vmap(rare, axes, axis_size=lanes)

    def select(idx):
        """The arrays of the lanes ``idx`` (of one lane: without the batch axis)."""
        pairs = zip(arrays, axes[0], strict=True)
        if lanes == 1:
            return [a if axis is None else a[idx[0]] for a, axis in pairs]
        return [
            a if axis is None else jnp.take(a, idx, axis=0, mode="clip")
            for a, axis in pairs
        ]

    def redo(i, out):
        idx = jax.lax.dynamic_slice_in_dim(todo, i * lanes, lanes)
        if lanes == 1:  # the unbatched kernel (the loop ends at the last lane)
            new = jax.tree_util.tree_map(lambda a: a[None], rare(select(idx)))
        else:
            new = rare_b(select(idx))
        return jax.tree_util.tree_map(
            lambda o, n: o.at[idx].set(n, mode="drop"), out, new
        )

    n_rare = jnp.sum(~pred)
    return jax.lax.fori_loop(0, (n_rare + lanes - 1) // lanes, redo, out)
