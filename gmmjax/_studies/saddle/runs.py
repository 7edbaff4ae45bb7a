"""The numerical runs of the saddle study: every optimizer from a grid of starts.

Every run is one :func:`gmmjax.fit` of a fitter wrapped in the study's
:class:`~gmmjax._studies.saddle.fitters.Rule`, a lane of :func:`.lanes.run_lanes`;
the lanes of a grid are sorted so that runs of similar length share a chunk.

``gmmjax.fit`` returns the final model, its step count and status, not the
fitter's state, so events inside a run (the first step at which ``sigma`` drops
below a threshold) are measured by :func:`first_below`: the same start again with
a rule that stops there, up to the step at which the first run stopped (the
trajectory is the same, only the stop differs; only the runs whose end does not
already answer the question are repeated). Where the steps are costly and the runs
go the distance, :func:`trace_method` reads everything off ``gmmjax.fit_trace``
paths instead, in one pass.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gmmjax
from gmmjax import toy

from .fitters import rule_step
from .lanes import Ended, lanes, run_lanes, take, trace_lanes

__all__ = [
    "ESCAPE_SIGMA",
    "PARAMETER_TOL",
    "SADDLE_RADIUS",
    "SUCCESS_SIGMA",
    "EMConvergence",
    "Grid",
    "Runs",
    "em_convergence",
    "escape_steps_estimate",
    "first_below",
    "run_anneal_variance",
    "run_method",
    "start_grid",
    "summarize",
    "trace_method",
]

# A run has *reached the optimum* when it ends with a valid sigma below this value
# (the likelihood is unbounded: the supremum is sigma -> 0 at mu = +-1), and is
# *stuck near the saddle* when it ends with |mu| < SADDLE_RADIUS and
# |sigma - 1| < SADDLE_RADIUS.
SUCCESS_SIGMA = 0.1
SADDLE_RADIUS = 0.1
# A run has *left the saddle* once sigma has dropped below this value (after that
# EM and the exact dynamics accelerate to the optimum; a fixed-step method may
# still fail to settle there, see the report).
ESCAPE_SIGMA = 0.5
# Iterative methods stop when no parameter moves by more than this (absolute, in
# (mu, sigma)); see the report for why not exact equality.
PARAMETER_TOL = 1e-10

_NONFINITE = int(gmmjax.Status.NONFINITE)
_CONVERGED = int(gmmjax.Status.CONVERGED)


class Grid(NamedTuple):
    """The starting points: ``mu`` x ``sigma``, flattened row-major (``sigma``
    fastest varying)."""

    mu: np.ndarray  # (n_mu,)
    sigma: np.ndarray  # (n_sigma,)

    @property
    def starts(self):
        m, s = np.meshgrid(self.mu, self.sigma, indexing="ij")
        return m.ravel(), s.ravel()

    @property
    def shape(self):
        return (self.mu.size, self.sigma.size)

    @property
    def order(self) -> np.ndarray:
        """The starts from the easiest to the hardest: by ``|u_1|``, ``u_1 = mu_0 /
        sigma_0^2`` (EM's first iterate, ``tanh u_1``; the escape takes about
        ``3 / (4 u_1^2)`` steps), a good proxy of run length for every method."""
        m, s = self.starts
        return np.argsort(-np.abs(m) / s**2, kind="stable")


def start_grid(n: int) -> Grid:
    """The study's grid: ``n`` values of ``mu`` in ``[-0.3, 0.3]`` and ``n`` of
    ``sigma`` in ``[0.1, 2]``.

    Example:
        >>> from gmmjax._studies.saddle import runs
        >>> grid = runs.start_grid(50)
        >>> grid.shape, grid.starts[0].shape
        ((50, 50), (2500,))
    """
    return Grid(np.linspace(-0.3, 0.3, n), np.linspace(0.1, 2.0, n))


# ------------------------------------------------------------------------- runs
class Runs(NamedTuple):
    """Final states of one method over a batch of starts (all arrays ``(b,)``).

    Attributes:
        mu, sigma: where each run ended (``sigma <= 0`` only for scipy's runs on the
            clipped objective; ``(+-1, 0)`` is the degenerate supremum).
        n_steps: the step at which the method stopped: its rule held, ``gmmjax.fit``
            ended the run (a non-finite step), or the budget ran out.
        first_hit: for runs that end with ``0 <= sigma < SUCCESS_SIGMA``, the first
            step at which that held; ``-1`` for the others.
        escaped: whether ``0 <= sigma < ESCAPE_SIGMA`` at some step.
        finite: whether the run ended finite (``gmmjax.fit`` ends a run that meets a
            non-finite value as ``NONFINITE``; at the supremum, where the likelihood
            is infinite, that is the optimum, not a failure).
    """

    mu: np.ndarray
    sigma: np.ndarray
    n_steps: np.ndarray
    first_hit: np.ndarray
    escaped: np.ndarray
    finite: np.ndarray


def _at_supremum(mu, sigma):
    return (np.asarray(sigma) == 0) & (np.abs(np.asarray(mu)) == 1)


def _valid(mu, sigma, finite):
    mu, sigma = np.asarray(mu), np.asarray(sigma)
    # sigma = 0 is a valid end only exactly at the degenerate supremum mu = +-1,
    # where closed-form EM lands in floating point; anywhere else (scipy on the
    # clipped objective) sigma <= 0 is outside the model
    return np.asarray(finite) & ((sigma > 0) | _at_supremum(mu, sigma))


def summarize(runs: Runs) -> dict[str, Any]:
    """Fractions reaching the optimum / stuck near the saddle / invalid, and step
    medians, for one method."""
    mu, sigma = np.asarray(runs.mu), np.asarray(runs.sigma)
    valid = _valid(runs.mu, runs.sigma, runs.finite)
    success = valid & (sigma < SUCCESS_SIGMA)
    stuck = valid & (np.abs(mu) < SADDLE_RADIUS) & (np.abs(sigma - 1) < SADDLE_RADIUS)
    hits = np.asarray(runs.first_hit)
    hit_steps = hits[success & (hits >= 0)]
    return {
        "starts": int(mu.size),
        "success": float(np.mean(success)),
        "escaped": float(np.mean(runs.escaped)),
        "stuck": float(np.mean(stuck)),
        "invalid": float(np.mean(~valid)),
        "median_steps": float(np.median(runs.n_steps)),
        "median_steps_to_success": (
            float(np.median(hit_steps)) if hit_steps.size else float("nan")
        ),
    }


def _ended_finite(ended: Ended) -> np.ndarray:
    return (ended.status != _NONFINITE) | _at_supremum(ended.mu, ended.sigma)


def _rank(order, b) -> np.ndarray:
    """Each lane's position in ``order`` (zeros without one)."""
    rank = np.zeros(b, int)
    if order is not None:
        rank[np.asarray(order)] = np.arange(b)
    return rank


def first_below(fitter, mu0, sigma0, threshold, last, *, chunk, rank=None):
    """The first step ``<= last`` at which ``0 <= sigma < threshold``, else ``-1``
    (every argument but ``fitter`` and ``chunk`` per lane).

    The runs of ``fitter`` (leaves with a lane axis) again from ``(mu0, sigma0)``,
    each stopped by the rule "sigma has dropped below ``threshold``", which the
    driver confirms one step later (``CONVERGED`` at ``n``: the event was at
    ``n - 1``); a run that meets a non-finite step at ``n`` ends on the state of
    step ``n - 1``, which is the event if it lies below. The lanes are chunked by
    ``last``, then by ``rank`` (a guess of the order of the events).
    """
    last = np.asarray(last)
    threshold = np.broadcast_to(np.asarray(threshold, float), last.shape)
    spec = lanes(mu0, sigma0, budget=last + 1, threshold=threshold)
    order = np.lexsort((np.zeros(last.shape) if rank is None else rank, last))
    ended = run_lanes(fitter, spec, chunk=chunk, order=order)
    below = _valid(ended.mu, ended.sigma, True) & (ended.sigma < threshold)
    event = (ended.status == _CONVERGED) | ((ended.status == _NONFINITE) & below)
    return np.where(event & (ended.n_steps - 1 <= last), ended.n_steps - 1, -1)


def _stop(fitter, mu0, sigma0, ended: Ended, tol, *, chunk) -> np.ndarray:
    """The step at which the tolerance rule stopped each run of :func:`run_lanes`.

    :func:`~.fitters.rule_step`, except when the step that would have confirmed the
    rule was non-finite (from the supremum, where the likelihood is infinite): then
    the last step's move is measured directly, against the state one step before
    (a run of ``n - 2`` steps).
    """
    stop = rule_step(ended.n_steps, ended.status)
    i = np.flatnonzero((ended.status == _NONFINITE) & (stop >= 2) & (tol >= 0))
    if i.size:
        before = run_lanes(
            take(fitter, i), lanes(mu0[i], sigma0[i], budget=stop[i] - 2), chunk=chunk
        )
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: no move
            move = np.maximum(
                np.abs(ended.mu[i] - before.mu), np.abs(ended.sigma[i] - before.sigma)
            )
        stop[i] -= move <= tol
    return stop


def run_method(fitter, mu0, sigma0, *, budget, tol=PARAMETER_TOL, chunk, order=None):
    """One method from every start: ``fitter`` (leaves with a lane axis) stopped by
    :data:`PARAMETER_TOL` on ``(mu, sigma)`` (``tol < 0``: never) or ``budget``.

    Returns:
        :class:`Runs`; the first hits and escapes are measured by
        :func:`first_below` for the runs whose end does not show them.
    """
    own = run_lanes(
        fitter, lanes(mu0, sigma0, budget=budget, tol=tol), chunk=chunk, order=order
    )
    stop = _stop(fitter, mu0, sigma0, own, tol, chunk=chunk)
    finite = _ended_finite(own)
    valid = _valid(own.mu, own.sigma, finite)
    # the end is the state of a step (not the start) unless the first step failed
    a_step = (own.n_steps >= 2) | ((own.n_steps == 1) & (own.status != _NONFINITE))
    success = valid & (own.sigma < SUCCESS_SIGMA)
    escaped = valid & a_step & (own.sigma < ESCAPE_SIGMA)
    hit, unknown = np.flatnonzero(success), np.flatnonzero(~escaped)
    i = np.concatenate([hit, unknown])
    threshold = np.repeat([SUCCESS_SIGMA, ESCAPE_SIGMA], [hit.size, unknown.size])
    first_hit = np.full(stop.shape, -1)
    if i.size:
        rank = _rank(order, stop.size)[i]
        steps = first_below(
            take(fitter, i),
            mu0[i],
            sigma0[i],
            threshold,
            stop[i],
            chunk=chunk,
            rank=rank,
        )
        first_hit[hit] = steps[: hit.size]
        escaped[unknown] = steps[hit.size :] >= 0
    return Runs(own.mu, own.sigma, stop, first_hit, escaped, finite)


def trace_method(fitter, mu0, sigma0, *, steps, tol=PARAMETER_TOL, chunk) -> Runs:
    """One method from every start, read off whole paths (``gmmjax.fit_trace``).

    For fitters whose steps are costly and whose runs mostly go the distance (the
    library's gradient fitters): one pass answers every question, where
    :func:`run_method` would run again for the events. The rules are those of
    :func:`run_method`, applied to the path: the run stops at the first step that
    moves no parameter by more than ``tol`` (``tol < 0``: never), or at a
    non-finite step, or after ``steps``.
    """
    traced = trace_lanes(fitter, mu0, sigma0, steps=steps, chunk=chunk)
    b = traced.n_steps.size
    path = traced.path
    start = np.stack([np.ravel(mu0), np.ravel(sigma0)], -1)[:, None, :]
    move = np.max(np.abs(np.diff(np.concatenate([start, path], 1), axis=1)), axis=2)
    # the steps before a failure are the run's own (the path stands still after)
    failed = traced.status == _NONFINITE
    last = np.where(failed, traced.n_steps - 1, steps)
    t = np.arange(1, steps + 1)
    genuine = t[None, :] <= last[:, None]
    small = genuine & (move <= tol)
    stop = np.where(
        small.any(1), np.argmax(small, 1) + 1, np.where(failed, last + 1, steps)
    )
    end = np.clip(np.minimum(stop, last), 1, steps) - 1
    mu, sigma = path[np.arange(b), end, 0], path[np.arange(b), end, 1]
    finite = ~(failed & (stop > last)) | _at_supremum(mu, sigma)
    before = genuine & (t[None, :] <= stop[:, None]) & (path[..., 1] >= 0)
    hit = before & (path[..., 1] < SUCCESS_SIGMA)
    first_hit = np.where(hit.any(1), np.argmax(hit, 1) + 1, -1)
    success = _valid(mu, sigma, finite) & (sigma < SUCCESS_SIGMA)
    first_hit = np.where(success, first_hit, -1)
    escaped = (before & (path[..., 1] < ESCAPE_SIGMA)).any(1)
    return Runs(mu, sigma, stop, first_hit, escaped, finite)


# ------------------------------------------------------------- EM convergence
class EMConvergence(NamedTuple):
    """Stopping rules applied to the same EM runs (all ``(b,)``).

    Attributes:
        tol_step: first step whose parameter change is at most ``PARAMETER_TOL``
            (``budget`` if never).
        exact_step: first step whose iterate equals the previous one exactly, the
            original's rule (``budget`` if never). A run that reaches the exact
            supremum ``(+-1, 0)``, a fixed point of the map, stops under both rules
            at the next step, whose likelihood is infinite (``NONFINITE``).
        success_step: first step with ``sigma < SUCCESS_SIGMA`` (``-1`` if never).
        escape_step: first step with ``sigma < ESCAPE_SIGMA`` (``-1`` if never).
        mu, sigma: the state at ``exact_step``.
        finite: whether the state is finite.
    """

    tol_step: np.ndarray
    exact_step: np.ndarray
    success_step: np.ndarray
    escape_step: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    finite: np.ndarray

    def as_runs(self) -> Runs:
        """The runs as stopped by the tolerance rule (the end state differs from the
        state at that step by at most rounding-level moves)."""
        hit = np.where(self.sigma < SUCCESS_SIGMA, self.success_step, -1)
        return Runs(
            self.mu,
            self.sigma,
            self.tol_step,
            hit,
            self.escape_step >= 0,
            self.finite,
        )


def em_convergence(fitter, mu0, sigma0, *, budget, chunk, order=None):
    """Steps to convergence of EM (``fitter``, leaves with a lane axis) under the
    rules of :class:`EMConvergence`: one run to exact equality or ``budget``, then
    the other rules on the same trajectories, each up to that step.

    EM's ``sigma`` never rises after the first step (its iterates lie on the unit
    circle and move away from the saddle), so a run that ends above a threshold
    never crossed it: only the runs that end below are run again for the step.
    """
    own = run_lanes(
        fitter, lanes(mu0, sigma0, budget=budget, tol=0.0), chunk=chunk, order=order
    )
    exact = _stop(fitter, mu0, sigma0, own, 0.0, chunk=chunk)
    b = exact.size
    below = _valid(own.mu, own.sigma, _ended_finite(own))
    hit = np.flatnonzero(below & (own.sigma < SUCCESS_SIGMA))
    escape = np.flatnonzero(below & (own.sigma < ESCAPE_SIGMA))
    i = np.concatenate([np.arange(b), hit, escape])
    n = [b, hit.size, escape.size]
    spec = lanes(
        mu0[i],
        sigma0[i],
        budget=exact[i] + 1,
        tol=np.repeat([PARAMETER_TOL, -1.0, -1.0], n),
        threshold=np.repeat([-np.inf, SUCCESS_SIGMA, ESCAPE_SIGMA], n),
    )
    rank = _rank(order, b)[i]
    ended = run_lanes(
        take(fitter, i), spec, chunk=chunk, order=np.lexsort((rank, spec.budget))
    )
    first = Ended(*(a[:b] for a in ended))
    tol_step = _stop(fitter, mu0, sigma0, first, PARAMETER_TOL, chunk=chunk)
    tol_step = np.minimum(tol_step, budget)
    lies = _valid(ended.mu, ended.sigma, True) & (ended.sigma < spec.threshold)
    event = (ended.status == _CONVERGED) | ((ended.status == _NONFINITE) & lies)
    steps = np.where(event & (ended.n_steps - 1 <= exact[i]), ended.n_steps - 1, -1)
    success_step, escape_step = np.full(b, -1), np.full(b, -1)
    success_step[hit] = steps[b : b + hit.size]
    escape_step[escape] = steps[b + hit.size :]
    return EMConvergence(
        tol_step,
        exact,
        success_step,
        escape_step,
        own.mu,
        own.sigma,
        _ended_finite(own),
    )


def escape_steps_estimate(mu0, sigma0):
    """Predicted EM steps from a start to the escape from the saddle.

    After one step every EM iterate lies on the unit circle, ``mu = tanh u``,
    ``sigma = sech u``, and the map becomes ``u' = sinh(2 u) / 2 = u + 2u^3/3 + ...``
    with ``u_1 = mu0 / sigma0^2``; so ``1 / u^2`` falls by ``4/3`` per step and the
    escape takes about ``3 / (4 u_1^2)`` steps.

    Args:
        mu0: starting means (any shape, nonzero).
        sigma0: starting standard deviations.

    Returns:
        The predicted step count, ``1 + 3 / (4 u_1^2)``.

    Example:
        >>> from gmmjax._studies.saddle import runs
        >>> round(float(runs.escape_steps_estimate(0.02, 0.8)))
        769
    """
    u1 = np.asarray(mu0) / np.asarray(sigma0) ** 2
    return 1.0 + 0.75 / u1**2


# ---------------------------------------------------------- variance annealing
@jax.jit
def _anneal_chunk(key, mu0, sigma0, variances, per_stage, max_steps):
    x = toy.data(jnp.float64)

    def one(key, m, s, per_stage, max_steps):
        result, info = gmmjax.anneal_variance(
            key,
            toy.to_gmm(m, s),
            x,
            variances=variances,
            perturbation=1e-3,
            max_steps_per_stage=per_stage,
            reg_covar=0.0,
            max_steps=max_steps,
        )
        mu, sigma = toy.from_gmm(result.gmm)
        return mu, sigma, result.n_steps, info.means[:, :, 0]

    return jax.vmap(one)(key, mu0, sigma0, per_stage, max_steps)


def run_anneal_variance(
    key, mu0, sigma0, *, variances, max_steps, max_steps_per_stage=100, chunk
):
    """:func:`gmmjax.anneal_variance` from every start (one key for all: the same
    kicks), with an unregularized release fit (``reg_covar = 0``) of ``max_steps``
    (``0``: none); the collapse onto the data ends it as ``DEGENERATE``.

    Returns:
        ``(runs, path)``: :class:`Runs` (only the end point is known: the step of
        success is the total step count of a successful run) and ``(b, s, 2)`` the
        two means at the end of each stage.
    """
    b = np.size(mu0)
    pad = (-b) % chunk
    mu0 = np.concatenate([np.ravel(mu0), np.full(pad, 0.1)])
    sigma0 = np.concatenate([np.ravel(sigma0), np.ones(pad)])
    steps = np.where(np.arange(mu0.size) < b, max_steps, 0).astype(np.int32)
    per_stage = np.full(mu0.size, max_steps_per_stage, np.int32)
    keys = jnp.broadcast_to(key, (chunk,))
    outs = []
    for start in range(0, mu0.size, chunk):
        part = slice(start, start + chunk)
        outs.append(
            _anneal_chunk(
                keys,
                mu0[part],
                sigma0[part],
                jnp.asarray(variances, jnp.float64),
                per_stage[part],
                steps[part],
            )
        )
    mu, sigma, steps, path = (
        np.concatenate([np.asarray(o[i]) for o in outs])[:b] for i in range(4)
    )
    finite = np.isfinite(mu) & np.isfinite(sigma)
    hit = np.where(finite & (sigma < SUCCESS_SIGMA), steps, -1)
    escaped = finite & (sigma < ESCAPE_SIGMA)
    return Runs(mu, sigma, steps, hit, escaped, finite), path
