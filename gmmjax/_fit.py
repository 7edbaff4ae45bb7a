"""The fitter protocol and the one loop driver of every fitter.

``run`` is the driver (one ``lax.while_loop``); ``fit`` is its public face and
``fit_trace`` its ``lax.scan`` twin. Both advance the loop with ``advance``, the
one place where a step's report becomes a :class:`Status`; the host loop of
chunked EM calls it too.
"""

from __future__ import annotations

import enum
import functools
import numbers
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from ._density import check_gmm, prepare, total_log_likelihood
from ._gmm import GMM
from ._init import ResponsibilityStart
from ._levels import ByWork, fit_work
from ._prior import Prior, check_prior_shapes
from ._validation import (
    check_count,
    check_data,
    check_nonnegative_scalar,
    check_reg_covar,
    check_sample_weight,
)

__all__ = [
    "RUNNING",
    "FitResult",
    "FitTrace",
    "Fitter",
    "Loop",
    "Status",
    "StepInfo",
    "advance",
    "check_fitter",
    "check_steps",
    "fit",
    "fit_trace",
    "inner_objective",
    "prepare_fit",
    "run",
    "start_loop",
    "total_weight",
]


class StepInfo(NamedTuple):
    """Diagnostics of one fitter step, read by the loop driver.

    Attributes:
        log_likelihood: ``()`` total (weighted) log-likelihood of the parameters the
            step started from.
        degenerate: ``()`` int32, index of the first component that emptied or
            collapsed during the step, ``-1`` if none.
        can_stop: ``()`` bool, whether the driver may test convergence after this
            step (``False`` while an annealing schedule is still below ``beta = 1``).

    Example:
        >>> import jax, gmmjax
        >>> x = jax.numpy.asarray(gmmjax.datasets.faithful())
        >>> gmm = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> fitter = gmmjax.EM()
        >>> state, info = fitter.step(fitter.init(gmm, x), x)
        >>> int(info.degenerate), bool(info.can_stop)
        (-1, True)
    """

    log_likelihood: jax.Array
    degenerate: jax.Array
    can_stop: jax.Array


@runtime_checkable
class Fitter(Protocol):
    """What :func:`gmmjax.fit` drives: a frozen pytree with ``init`` and ``step``.

    ``init(gmm, x, *, sample_weight=None) -> state`` and
    ``step(state, x, *, sample_weight=None, beta=1.0) -> (state, StepInfo)``,
    where ``state.gmm`` is the current model and ``beta`` is the inverse
    temperature of :class:`gmmjax.Annealed`. Numeric hyperparameters are leaves
    of the fitter (traced: new values do not recompile); what sets shapes or
    control flow is static. An optional ``check()`` validates the
    hyperparameters at the API edge, outside ``jit``. A fitter that increases
    something other than the log-likelihood says what with an optional
    ``objective(state, x, *, sample_weight=None) -> ()``, the total objective at
    ``state``; :attr:`FitResult.objective` reports it.

    :class:`gmmjax.EM`, :class:`gmmjax.GradientFitter` and
    :class:`gmmjax.Annealed` follow it.

    Example:
        >>> import gmmjax
        >>> from gmmjax._fit import Fitter
        >>> isinstance(gmmjax.EM(), Fitter), isinstance(object(), Fitter)
        (True, False)
    """

    def init(self, gmm: GMM, x, *, sample_weight=None) -> Any: ...

    def step(
        self, state, x, *, sample_weight=None, beta=1.0
    ) -> tuple[Any, StepInfo]: ...


_MESSAGES = {
    0: "converged: the change in mean log-likelihood fell below tol",
    1: "did not converge: the step budget ran out first",
    2: (
        "a step produced non-finite values; the last finite parameters are kept "
        "(try a larger reg_covar or scaling the data)"
    ),
    3: (
        "a component emptied or its covariance collapsed (try a larger reg_covar, "
        "fewer components or re-seeding)"
    ),
}


class Status(enum.IntEnum):
    """How a fit ended. ``FitResult.status`` holds one of these values as an int32.

    Attributes:
        CONVERGED: the change in mean log-likelihood fell below ``tol``.
        MAX_STEPS: the step budget ran out first (always the case with ``tol=0``).
        NONFINITE: a step produced a non-finite log-likelihood or parameters; the
            result holds the last finite parameters.
        DEGENERATE: a component emptied or its covariance collapsed (onto a point,
            a line or a plane); ``FitResult.degenerate_component`` says which. It
            takes precedence over ``NONFINITE`` when the collapse made the step's
            new parameters non-finite (the result then holds the last finite
            parameters); a step that starts from a non-finite log-likelihood
            (NaN in a ``jax.Array`` of data) ends ``NONFINITE``.

    Example:
        >>> import gmmjax
        >>> gmmjax.Status(0).name
        'CONVERGED'
    """

    CONVERGED = 0
    MAX_STEPS = 1
    NONFINITE = 2
    DEGENERATE = 3

    @property
    def message(self) -> str:
        """What the status means for the user, in one sentence.

        Example:
            >>> import gmmjax
            >>> gmmjax.Status.MAX_STEPS.message
            'did not converge: the step budget ran out first'
        """
        return _MESSAGES[int(self)]


# the status of a loop that has not ended (never a FitResult's)
RUNNING = -1


class FitResult(NamedTuple):
    """The outcome of :func:`gmmjax.fit` (a pytree: batches stack along axis 0).

    Attributes:
        gmm: the fitted model (the last finite parameters).
        log_likelihood: ``()`` total (weighted) log-likelihood **of** ``gmm``.
        n_steps: ``()`` int32, the number of steps taken.
        status: ``()`` int32, a :class:`Status` value.
        degenerate_component: ``()`` int32, the component that emptied or collapsed
            when ``status == DEGENERATE``, else ``-1``.
        objective: ``()`` the total objective the fitter increases, at the end of
            the run: the log-likelihood (``== log_likelihood``) for maximum
            likelihood fitters; a fitter with an ``objective`` method (a prior's
            log posterior, a variational lower bound) reports its own. Restarts
            are compared by it (:func:`gmmjax.best_of`).

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(1), x, n_components=2)
        >>> result = gmmjax.fit(gmmjax.EM(), gmm0, x)
        >>> result.status_name, int(result.degenerate_component)
        ('CONVERGED', -1)
        >>> bool(result.log_likelihood == gmmjax.log_likelihood(result.gmm, x))
        True
    """

    gmm: GMM
    log_likelihood: jax.Array
    n_steps: jax.Array
    status: jax.Array
    degenerate_component: jax.Array
    objective: jax.Array

    @property
    def status_name(self) -> str | list:
        """The :class:`Status` name of the run, e.g. ``"CONVERGED"``; for a batch
        of runs (:func:`gmmjax.multistart`), a list of names in the batch's
        shape (nested lists for more than one batch axis)."""
        codes = np.asarray(self.status)
        names = np.vectorize(lambda code: Status(int(code)).name, otypes=[object])
        return names(codes).tolist()


class FitTrace(NamedTuple):
    """Per-step history of :func:`gmmjax.fit_trace` (leading axis: steps).

    Attributes:
        log_likelihood: ``(num_steps,)`` total log-likelihood of ``gmm[t]``.
        gmm: the parameters after each step, stacked along a leading axis.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(1), x, n_components=2)
        >>> _, trace = gmmjax.fit_trace(gmmjax.EM(), gmm0, x, num_steps=5)
        >>> trace.gmm.weights.shape
        (5, 2)
        >>> increase = trace.log_likelihood[1:] - trace.log_likelihood[:-1]
        >>> bool((increase > -1e-2).all())  # EM is monotone, up to float32 rounding
        True
    """

    log_likelihood: jax.Array
    gmm: GMM


def check_fitter(fitter) -> None:
    """A :class:`Fitter`, whose own ``check()`` (if any) passes."""
    if not isinstance(fitter, Fitter):
        raise TypeError(
            "fitter must provide init(gmm, x, ...) and step(state, x, ...), e.g. "
            f"gmmjax.EM(); got {type(fitter).__name__}"
        )
    check = getattr(fitter, "check", None)
    if check is not None:
        check()


def check_fitter_features(fitter, n_features: int, covariance_type: str) -> None:
    """A per-feature ``reg_covar`` of ``fitter``, or of any fitter it wraps
    (:class:`gmmjax.Annealed`'s ``inner``), has one value per feature, and a
    :class:`gmmjax.Prior` of theirs the shapes of the data's features and the
    model's covariance type."""
    while fitter is not None:
        if hasattr(fitter, "reg_covar"):
            check_reg_covar(fitter.reg_covar, n_features=n_features)
        prior = getattr(fitter, "prior", None)
        if isinstance(prior, Prior):
            check_prior_shapes(prior, n_features, covariance_type)
        fitter = getattr(fitter, "inner", None)


def check_steps(value, name: str):
    """An integer step count >= 0; a traced integer is accepted inside jit."""
    return check_count(value, name)


def prepare_fit(fitter, gmm0, x, sample_weight):
    """Validate the common arguments of the fitting drivers."""
    check_fitter(fitter)
    if isinstance(gmm0, ResponsibilityStart):
        return _prepare_responsibilities(fitter, gmm0, x, sample_weight)
    check_gmm(gmm0)
    x, w = prepare(gmm0, x, sample_weight)
    if x.shape[0] < gmm0.n_components:
        raise ValueError(
            f"x has {x.shape[0]} samples but the model has {gmm0.n_components} "
            "components: need n_samples >= n_components"
        )
    check_fitter_features(fitter, x.shape[1], gmm0.covariance_type)
    gmm0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, x.dtype), gmm0)
    return gmm0, x, w


def _prepare_responsibilities(fitter, start, x, sample_weight):
    """:func:`prepare_fit` for a start given as responsibilities: ``(n, k)``
    finite, non-negative rows that sum to 1, for a fitter that starts from them
    (:class:`gmmjax.VB`)."""
    if not getattr(fitter, "takes_responsibilities", False):
        raise TypeError(
            f"{type(fitter).__name__} starts from a gmmjax.GMM, not from "
            "responsibilities (gmmjax.VB starts from either)"
        )
    x = check_data(x)
    w = check_sample_weight(sample_weight, x.shape[0], x.dtype)
    resp = np.asarray(start.resp)
    n = x.shape[0]
    if resp.ndim != 2 or resp.shape[0] != n or resp.shape[1] < 1:
        raise ValueError(
            f"the start's responsibilities must have shape (n, k) = ({n}, k), "
            f"got {resp.shape}"
        )
    if n < resp.shape[1]:
        raise ValueError(
            f"x has {n} samples but the start has {resp.shape[1]} components: "
            "need n_samples >= n_components"
        )
    rows = resp.sum(axis=1)
    tolerance = 1e3 * np.finfo(np.float32).eps
    if not (np.all(np.isfinite(resp)) and np.all(resp >= 0)) or np.any(
        np.abs(rows - 1) > tolerance
    ):
        raise ValueError(
            "the start's responsibilities must be finite and non-negative, with "
            "every row summing to 1"
        )
    return ResponsibilityStart(jnp.asarray(resp, x.dtype)), x, w


def _all_finite(tree) -> jax.Array:
    """Whether every leaf is finite; a model's logits may also be ``-inf`` (an
    inactive, masked component of weight 0) while one of them is finite."""
    checks = []
    for node in jax.tree_util.tree_leaves(tree, is_leaf=_is_gmm):
        if isinstance(node, GMM):
            logits = node.logits
            checks.append(jnp.all(jnp.any(jnp.isfinite(logits), axis=-1)))
            checks.append(jnp.all(jnp.isfinite(logits) | (logits == -jnp.inf)))
            node = (node.means, node.log_diag, node.off_diag)
        checks += [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(node)]
    return jnp.all(jnp.stack(checks))


def _is_gmm(node) -> bool:
    return isinstance(node, GMM)


def total_weight(x, w):
    """``W = sum_i w_i`` (``n`` without weights), in ``x``'s dtype."""
    return jnp.asarray(x.shape[0], x.dtype) if w is None else jnp.sum(w)


class Loop(NamedTuple):
    """The driver's carry: the fitter's state and the bookkeeping of the run."""

    state: Any
    previous: jax.Array  # () mean log-likelihood of the previous step, or -inf
    n_steps: jax.Array  # () int32 steps taken
    status: jax.Array  # () int32 RUNNING or a Status
    degenerate: jax.Array  # () int32 the component named by DEGENERATE, or -1


def advance(loop: Loop, state, info: StepInfo, total, tol, max_steps) -> Loop:
    """The carry after a step that returned ``(state, info)``: the one place
    where a step's report becomes a :class:`Status`.

    A step that starts from a non-finite log-likelihood (NaN data, a poisoned
    start) is ``NONFINITE``: no collapse of this step caused it. Otherwise a
    collapse outranks non-finite new parameters (it names their cause), then
    come convergence (``|l_t - l_{t-1}| < tol`` in mean log-likelihood, once the
    step ``can_stop``) and the step budget. A non-finite step is not taken.
    """
    n_steps = loop.n_steps + 1
    mean_ll = info.log_likelihood / total
    poisoned = ~jnp.isfinite(info.log_likelihood)
    finite = ~poisoned & _all_finite(state)
    converged = info.can_stop & (jnp.abs(mean_ll - loop.previous) < tol)
    degenerate = jnp.where(poisoned, -1, info.degenerate).astype(jnp.int32)
    status = jnp.select(
        [degenerate >= 0, ~finite, converged, n_steps >= max_steps],
        [Status.DEGENERATE, Status.NONFINITE, Status.CONVERGED, Status.MAX_STEPS],
        RUNNING,
    ).astype(jnp.int32)
    # a non-finite step is not taken: the result keeps the last finite parameters
    state = jax.tree_util.tree_map(
        lambda new, old: jnp.where(finite, new, old), state, loop.state
    )
    previous = jnp.where(info.can_stop, mean_ll, -jnp.inf)
    return Loop(state, previous, n_steps, status, degenerate)


def _step(fitter, loop: Loop, x, w, total, tol, max_steps) -> Loop:
    state, info = fitter.step(loop.state, x, sample_weight=w)
    return advance(loop, state, info, total, tol, max_steps)


def start_loop(state, dtype, running) -> Loop:
    """The loop carry before the first step (``running`` False: nothing to do)."""
    return Loop(
        state,
        jnp.asarray(-jnp.inf, dtype),
        jnp.asarray(0, jnp.int32),
        jnp.where(running, RUNNING, Status.MAX_STEPS).astype(jnp.int32),
        jnp.asarray(-1, jnp.int32),
    )


def fitter_objective(fitter, state, x, w, ll):
    """The total objective ``fitter`` increases, at ``state``: its own
    ``objective`` method's value, else the log-likelihood ``ll``."""
    objective = getattr(fitter, "objective", None)
    if objective is None:
        return ll
    return jnp.asarray(objective(state, x, sample_weight=w), ll.dtype)


def inner_objective(inner):
    """The ``objective`` of a fitter that wraps ``inner`` and keeps its state in
    ``state.inner`` (:class:`gmmjax.Annealed`, the estimator's recorder): the
    inner fitter's, read at the inner state, or ``None`` when it has none."""
    objective = getattr(inner, "objective", None)
    if objective is None:
        return None

    def wrapped(state, x, *, sample_weight=None):
        return objective(state.inner, x, sample_weight=sample_weight)

    return wrapped


def _progress_sender(report):
    """A traced ``send(loop)`` that hands ``report`` on the host three ``(b,)``
    arrays (``b = 1`` outside ``vmap``): the steps taken, the mean
    log-likelihood of the previous step and whether the run is still going.

    ``jax.debug.callback`` alone calls the host once per lane under ``vmap``;
    the custom batching rule sends the whole batch in one call instead (nested
    ``vmap``s flattened), so ``report`` sees every restart together.
    """

    @jax.custom_batching.custom_vmap
    def send(n_steps, mean_ll, running):
        jax.debug.callback(report, n_steps.ravel(), mean_ll.ravel(), running.ravel())

    @send.def_vmap
    def send_batch(axis_size, in_batched, *args):
        args = [
            a if batched else jnp.broadcast_to(a, (axis_size, *a.shape))
            for a, batched in zip(args, in_batched, strict=True)
        ]
        send(*args)
        return None, None

    return lambda loop: send(loop.n_steps, loop.previous, loop.status == RUNNING)


def _driver_work(fitter, gmm0, x, *_, **__):
    return fit_work(x, gmm0.n_components)


@functools.partial(ByWork, work=_driver_work, static_argnames=("report",))
def run(fitter, gmm0, x, w, max_steps, tol, report=None, previous=None):
    """The driver: :func:`fit`'s loop, returning ``(FitResult, final state)``.

    The final fitter state is what a wrapper fitter accumulated (the estimator's
    per-step history, an annealing count); callers that only need the result
    drop it, and XLA drops its computation with it. ``report``, a host function,
    is called with the carry before every step and once at the end (see
    ``_progress_sender``); it is static, so without it no callback is compiled.
    ``previous`` (traced, default ``-inf``) is the mean log-likelihood the first
    step's convergence test compares with: a run continued from an earlier one
    passes that run's last value, as scikit-learn's ``warm_start`` does.
    """
    total = total_weight(x, w)
    state = fitter.init(gmm0, x, sample_weight=w)
    start = start_loop(state, x.dtype, max_steps > 0)
    if previous is not None:
        start = start._replace(previous=jnp.asarray(previous, x.dtype))

    send = None if report is None else _progress_sender(report)

    def body(c):
        if send is not None:
            # the carry, not the step's result: under vmap a finished lane's
            # carry is its final state, while the step is computed (and
            # discarded) for it until every lane is done
            send(c)
        return _step(fitter, c, x, w, total, tol, max_steps)

    loop = jax.lax.while_loop(lambda c: c.status == RUNNING, body, start)
    if send is not None:
        send(loop)
    gmm = loop.state.gmm
    ll = total_log_likelihood(gmm, x, w)
    result = FitResult(
        gmm,
        ll,
        loop.n_steps,
        loop.status,
        loop.degenerate,
        fitter_objective(fitter, loop.state, x, w, ll),
    )
    return result, loop.state


def fit(fitter, gmm0: GMM, x, *, max_steps=500, tol=1e-6, sample_weight=None):
    """Run a fitter from ``gmm0`` until it converges, fails or runs out of steps.

    One ``lax.while_loop``. Step ``t`` (from 1) reports the total log-likelihood
    ``L(theta_{t-1})`` of the parameters it started from, then updates them; with
    ``W = sum_i w_i`` (``n`` without weights) the run has **converged** after step
    ``t >= 2`` when ``|L(theta_{t-1}) - L(theta_{t-2})| / W < tol`` — scikit-learn's
    rule on the change in mean log-likelihood, so ``n_steps`` equals its ``n_iter_``
    and ``tol=0`` runs exactly ``max_steps`` steps. In float32 the mean
    log-likelihood ``l`` is resolved to about ``eps |l| ~ 1e-7 |l|``: a finer
    ``tol`` may end with ``MAX_STEPS`` while the parameters still improve (EM
    being monotone); pick ``tol`` above that level for float32 data. A step whose
    log-likelihood or parameters are not finite ends the run with ``NONFINITE``
    (its parameters are discarded); a component that empties or collapses ends it
    with ``DEGENERATE``.
    Nothing is raised inside ``jit``; ``tol``, ``max_steps`` and the fitter's
    hyperparameters are traced, so new values do not recompile.

    Args:
        fitter: an object with ``init(gmm, x, *, sample_weight)`` and
            ``step(state, x, *, sample_weight, beta) -> (state, StepInfo)``,
            e.g. :class:`gmmjax.EM`.
        gmm0: the starting :class:`GMM`; or, for a fitter that starts from
            responsibilities (:class:`gmmjax.VB`), a
            :class:`gmmjax.ResponsibilityStart`.
        x: ``(n, d)`` data, ``n >= k``.
        max_steps: the step budget (an integer >= 0).
        tol: convergence threshold on the change in mean log-likelihood (>= 0).
        sample_weight: optional ``(n,)`` non-negative weights.

    Returns:
        A :class:`FitResult`; ``log_likelihood`` is the total log-likelihood of the
        returned model.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(1), x, n_components=2)
        >>> result = gmmjax.fit(gmmjax.EM(), gmm0, x, max_steps=100)
        >>> result.status_name, round(float(result.log_likelihood) / len(x), 3)
        ('CONVERGED', -4.155)
    """
    gmm0, x, w = prepare_fit(fitter, gmm0, x, sample_weight)
    check_steps(max_steps, "max_steps")
    check_nonnegative_scalar(tol, "tol")
    return run(fitter, gmm0, x, w, jnp.asarray(max_steps, jnp.int32), tol)[0]


@functools.partial(ByWork, work=_driver_work, static_argnames=("num_steps",))
def _fit_trace(fitter, gmm0, x, w, num_steps):
    total = total_weight(x, w)
    state = fitter.init(gmm0, x, sample_weight=w)
    start = start_loop(state, x.dtype, True)

    def body(loop, _):
        new = _step(fitter, loop, x, w, total, 0.0, num_steps)
        # after a failure the run stands still: keep the first failure's report
        stopped = loop.status != RUNNING
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(stopped, a, b), loop, new)
        return new, new.state.gmm

    loop, gmms = jax.lax.scan(body, start, None, length=num_steps)
    lls = jax.lax.map(lambda g: total_log_likelihood(g, x, w), gmms)
    status = jnp.where(loop.status == RUNNING, Status.MAX_STEPS, loop.status)
    result = FitResult(
        loop.state.gmm,
        lls[-1],
        loop.n_steps,
        status.astype(jnp.int32),
        loop.degenerate,
        fitter_objective(fitter, loop.state, x, w, lls[-1]),
    )
    return result, FitTrace(lls, gmms)


def fit_trace(fitter, gmm0: GMM, x, *, num_steps: int, sample_weight=None):
    """Run exactly ``num_steps`` steps with ``lax.scan`` and keep the whole path.

    For plots and studies of the dynamics. The run does not stop on convergence;
    after a non-finite or degenerate step the parameters stay where they were and
    the status says why.

    Args:
        fitter: as in :func:`gmmjax.fit`.
        gmm0: the starting :class:`GMM`.
        x: ``(n, d)`` data.
        num_steps: the number of steps (static: it sets the trace's length).
        sample_weight: optional ``(n,)`` non-negative weights.

    Returns:
        ``(FitResult, FitTrace)``: the trace holds, for ``t = 0 .. num_steps - 1``,
        the parameters after step ``t + 1`` and their total log-likelihood (the
        starting point is ``gmm0``, not repeated in the trace).

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(1), x, n_components=2)
        >>> result, trace = gmmjax.fit_trace(gmmjax.EM(), gmm0, x, num_steps=20)
        >>> trace.log_likelihood.shape, trace.gmm.means.shape
        ((20,), (20, 2, 2))
    """
    gmm0, x, w = prepare_fit(fitter, gmm0, x, sample_weight)
    if isinstance(num_steps, (bool, np.bool_)) or not isinstance(
        num_steps, numbers.Integral
    ):
        raise TypeError(f"num_steps must be an integer, got {num_steps!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return _fit_trace(fitter, gmm0, x, w, int(num_steps))
