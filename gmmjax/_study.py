"""The saddle study: every optimizer on the symmetric two-point model, batched.

The numerical part of ``gmmjax study saddle`` (figures and the Markdown report are
written by :mod:`gmmjax._study_report`). Each grid of starting points is one
``vmap`` over a ``lax.while_loop`` or ``lax.scan``; only scipy's optimizers, which
cannot be traced, loop over starts in numpy.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import toy
from ._anneal import anneal_variance
from ._em import EM

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
# (mu, sigma)); see ``PARAMETER_TOL`` in the report for why not exact equality.
PARAMETER_TOL = 1e-10


class Grid(NamedTuple):
    """The starting points: ``mu`` x ``sigma``, flattened row-major (sigma fastest
    varying along ``mu``'s rows)."""

    mu: np.ndarray  # (n_mu,)
    sigma: np.ndarray  # (n_sigma,)

    @property
    def starts(self):
        m, s = np.meshgrid(self.mu, self.sigma, indexing="ij")
        return m.ravel(), s.ravel()

    @property
    def shape(self):
        return (self.mu.size, self.sigma.size)


def start_grid(n: int) -> Grid:
    """The study's grid: ``n`` values of ``mu`` in ``[-0.3, 0.3]`` and ``n`` of
    ``sigma`` in ``[0.1, 2]``.

    Example:
        >>> from gmmjax import _study
        >>> grid = _study.start_grid(50)
        >>> grid.shape, grid.starts[0].shape
        ((50, 50), (2500,))
    """
    return Grid(np.linspace(-0.3, 0.3, n), np.linspace(0.1, 2.0, n))


class Runs(NamedTuple):
    """Final states of one method over a batch of starts (all arrays ``(b,)``).

    Attributes:
        mu, sigma: where each run ended (``sigma <= 0`` only for scipy's runs on the
            clipped objective).
        n_steps: the steps (iterations) taken when the method stopped.
        first_hit: the first step at which ``0 <= sigma < SUCCESS_SIGMA``, or ``-1``.
        first_escape: the first step at which ``0 <= sigma < ESCAPE_SIGMA``, or
            ``-1``.
        finite: whether the run stayed finite.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n_steps: np.ndarray
    first_hit: np.ndarray
    first_escape: np.ndarray
    finite: np.ndarray


def summarize(runs: Runs) -> dict[str, Any]:
    """Fractions reaching the optimum / stuck near the saddle / invalid, and step
    medians, for one method."""
    mu, sigma = np.asarray(runs.mu), np.asarray(runs.sigma)
    # sigma = 0 is a valid end only exactly at the degenerate supremum mu = +-1,
    # where closed-form EM lands in floating point; anywhere else (scipy on the
    # clipped objective) sigma <= 0 is outside the model
    valid = np.asarray(runs.finite) & ((sigma > 0) | ((sigma == 0) & (np.abs(mu) == 1)))
    success = valid & (sigma < SUCCESS_SIGMA)
    stuck = valid & (np.abs(mu) < SADDLE_RADIUS) & (np.abs(sigma - 1) < SADDLE_RADIUS)
    hits = np.asarray(runs.first_hit)
    hit_steps = hits[success & (hits >= 0)]
    return {
        "starts": int(mu.size),
        "success": float(np.mean(success)),
        "escaped": float(np.mean(np.asarray(runs.first_escape) >= 0)),
        "stuck": float(np.mean(stuck)),
        "invalid": float(np.mean(~valid)),
        "median_steps": float(np.median(runs.n_steps)),
        "median_steps_to_success": (
            float(np.median(hit_steps)) if hit_steps.size else float("nan")
        ),
    }


# --------------------------------------------------------------------------- driver
def _iterate(update, params_of, state0, budget, tol, may_stop=None):
    """Run ``update`` from ``state0`` until the parameters stop moving (by at most
    ``tol``) while ``may_stop(state)`` holds, turn non-finite, or ``budget`` steps
    have been taken.

    One start; ``vmap`` it. Returns
    ``(state, n_steps, first_hit, first_escape, finite)``.
    """

    def cond(carry):
        _, t, _, _, moving, finite = carry
        return (t < budget) & moving & finite

    def body(carry):
        state, t, first_hit, first_escape, _, _ = carry
        new = update(state, t)
        mu0, s0 = params_of(state)
        mu1, s1 = params_of(new)
        finite = jnp.isfinite(mu1) & jnp.isfinite(s1)
        moving = jnp.maximum(jnp.abs(mu1 - mu0), jnp.abs(s1 - s0)) > tol
        if may_stop is not None:
            moving = moving | ~may_stop(new)
        t = t + 1
        valid = finite & (s1 >= 0)
        hit = (first_hit < 0) & valid & (s1 < SUCCESS_SIGMA)
        first_hit = jnp.where(hit, t, first_hit)
        escape = (first_escape < 0) & valid & (s1 < ESCAPE_SIGMA)
        first_escape = jnp.where(escape, t, first_escape)
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, state)
        return state, t, first_hit, first_escape, moving, finite

    minus_one, true = jnp.int32(-1), jnp.bool_(True)
    carry = (state0, jnp.int32(0), minus_one, minus_one, true, true)
    state, t, first_hit, first_escape, _, finite = jax.lax.while_loop(cond, body, carry)
    return state, t, first_hit, first_escape, finite


def _batched(init, update, params_of, mu0, sigma0, budget, tol, may_stop=None):
    @jax.jit
    def run(mu0, sigma0):
        def one(m, s):
            state, t, hit, esc, finite = _iterate(
                update, params_of, init(m, s), budget, tol, may_stop
            )
            mu, sigma = params_of(state)
            return mu, sigma, t, hit, esc, finite

        return jax.vmap(one)(mu0, sigma0)

    out = run(jnp.asarray(mu0), jnp.asarray(sigma0))
    return Runs(*(np.asarray(a) for a in out))


# ------------------------------------------------------------------------- methods
def run_fitter(fitter, mu0, sigma0, *, budget, tol=PARAMETER_TOL) -> Runs:
    """Any gmmjax fitter (``init``/``step`` protocol) on the toy model, all starts in
    one ``vmap``, stopped by :data:`PARAMETER_TOL` on ``(mu, sigma)`` once the
    fitter's ``StepInfo.can_stop`` allows it (an annealing schedule has ended)."""
    x = toy.data(jnp.float64)

    def init(m, s):
        return fitter.init(toy.to_gmm(m, s), x), jnp.bool_(False)

    def update(state, t):
        new, info = fitter.step(state[0], x)
        return new, info.can_stop

    def params_of(state):
        return toy.from_gmm(state[0].gmm)

    return _batched(init, update, params_of, mu0, sigma0, budget, tol, lambda st: st[1])


def run_closed_form(update_fn, mu0, sigma0, *, budget, tol=PARAMETER_TOL) -> Runs:
    """A closed-form map ``(mu, sigma) -> (mu', sigma')`` (e.g. :func:`toy.em_update`,
    :func:`toy.alternating_update`) from every start."""
    return _batched(
        lambda m, s: (m, s),
        lambda state, t: update_fn(*state),
        lambda state: state,
        mu0,
        sigma0,
        budget,
        tol,
    )


def _mean_ll_log_sigma(theta):
    """The objective of the gradient methods: the mean log-likelihood over the two
    points in the unconstrained coordinates ``(mu, log sigma)``.

    Evaluated from the closed form (tested equal to the general library's
    likelihood), whose autodiff graph is a few elementwise operations: the grid
    runs tens of thousands of batched gradient steps.
    """
    return 0.5 * toy.ll_closed_form(theta[0], jnp.exp(theta[1]))


def _theta_params(theta):
    return theta[0], jnp.exp(theta[1])


def run_gradient_ascent(mu0, sigma0, *, learning_rate, budget) -> Runs:
    """Fixed-step gradient ascent on the mean log-likelihood in ``(mu, log sigma)``."""
    grad = jax.grad(_mean_ll_log_sigma)

    def update(state, t):
        return state + learning_rate * grad(state)

    return _batched(
        lambda m, s: jnp.stack([m, jnp.log(s)]),
        update,
        _theta_params,
        mu0,
        sigma0,
        budget,
        PARAMETER_TOL,
    )


def run_noisy_gradient(key, mu0, sigma0, *, learning_rate, eta, gamma, budget):
    """Gradient ascent with annealed Gaussian noise (the study's open question).

    ``theta <- theta + lr grad + N(0, eta / (1 + t)^gamma)`` in ``(mu, log sigma)``,
    the noise schedule of optax's ``noisy_sgd`` (Neelakantan et al., 2015); each
    start draws its own noise from ``fold_in(key, start)``. Noise keeps the
    parameters moving, so runs end at the budget.
    """
    grad = jax.grad(_mean_ll_log_sigma)
    keys = jax.random.split(key, np.size(mu0))

    def init(m, s, k):
        return jnp.stack([m, jnp.log(s)]), k

    def update(state, t):
        theta, k = state
        std = jnp.sqrt(eta / (1.0 + t) ** gamma)
        noise = std * jax.random.normal(jax.random.fold_in(k, t), (2,), theta.dtype)
        return theta + learning_rate * grad(theta) + noise, k

    @jax.jit
    def run(mu0, sigma0, keys):
        def one(m, s, k):
            state, t, hit, esc, finite = _iterate(
                update,
                lambda st: _theta_params(st[0]),
                init(m, s, k),
                budget,
                -1.0,
            )
            mu, sigma = _theta_params(state[0])
            return mu, sigma, t, hit, esc, finite

        return jax.vmap(one)(mu0, sigma0, keys)

    out = run(jnp.asarray(mu0), jnp.asarray(sigma0), keys)
    return Runs(*(np.asarray(a) for a in out))


def run_optax(optimizer, mu0, sigma0, *, budget, linesearch=False) -> Runs:
    """Any optax optimizer minimizing the negative mean log-likelihood in
    ``(mu, log sigma)``; line-search methods (``linesearch=True``, e.g. L-BFGS)
    reuse the value and gradient stored in their state, as optax recommends."""

    def loss(theta):
        return -_mean_ll_log_sigma(theta)

    if linesearch:
        value_and_grad = optax.value_and_grad_from_state(loss)
    else:

        def value_and_grad(theta, state):
            return jax.value_and_grad(loss)(theta)

    def init(m, s):
        theta = jnp.stack([m, jnp.log(s)])
        return theta, optimizer.init(theta)

    def update(state, t):
        theta, opt_state = state
        value, grad = value_and_grad(theta, state=opt_state)
        updates, opt_state = optimizer.update(
            grad, opt_state, theta, value=value, grad=grad, value_fn=loss
        )
        return optax.apply_updates(theta, updates), opt_state

    return _batched(
        init,
        update,
        lambda st: _theta_params(st[0]),
        mu0,
        sigma0,
        budget,
        PARAMETER_TOL,
    )


def variance_sweep(mu0, *, variances, inner_steps, perturbation, release_steps):
    """Deterministic annealing of the variance on the toy model, in closed form.

    For each ``v`` in the decreasing sequence ``variances``, ``sigma^2`` is held at
    ``v`` and ``mu`` is pushed away from zero by ``perturbation`` (keeping its sign)
    and then re-optimized by ``inner_steps`` EM updates at fixed variance,
    ``mu <- tanh(mu / v)``; finally ``sigma`` is released and ``release_steps`` full
    EM steps follow.

    Args:
        mu0: ``(b,)`` starting means.
        variances: ``(s,)`` decreasing variances.
        inner_steps: EM steps at each fixed variance.
        perturbation: the symmetry-breaking push added to ``|mu|`` at each stage.
        release_steps: EM steps after the release.

    Returns:
        ``(path, runs)``: ``path`` ``(s, b)`` holds ``mu`` at the end of each stage;
        ``runs`` is a :class:`Runs` after the release (steps count every update).
    """
    variances = jnp.asarray(variances)

    @jax.jit
    def run(mu0):
        def stage(mu, v):
            mu = mu + jnp.where(mu < 0, -perturbation, perturbation)
            mu = jax.lax.fori_loop(0, inner_steps, lambda _, m: jnp.tanh(m / v), mu)
            return mu, mu

        mu, path = jax.lax.scan(stage, mu0, variances)
        sigma = jnp.sqrt(variances[-1]) * jnp.ones_like(mu)

        def release(carry, _):
            new = toy.em_update(*carry)
            return new, new[1]

        (mu, sigma), sigmas = jax.lax.scan(release, (mu, sigma), None, release_steps)
        stage_steps = variances.size * inner_steps
        # the stages hold sigma = sqrt(v); count a stage's last step if it is below
        fixed = jnp.repeat(jnp.sqrt(variances), inner_steps)
        fixed = jnp.broadcast_to(fixed[:, None], (stage_steps, mu0.size))
        sigmas = jnp.concatenate([fixed, sigmas])

        def first(threshold):
            below = (sigmas >= 0) & (sigmas < threshold)
            return jnp.where(jnp.any(below, axis=0), 1 + jnp.argmax(below, axis=0), -1)

        return path, mu, sigma, first(SUCCESS_SIGMA), first(ESCAPE_SIGMA)

    path, mu, sigma, hit, esc = run(jnp.asarray(mu0))
    n = np.full(np.size(mu0), np.asarray(variances).size * inner_steps + release_steps)
    runs = Runs(
        np.asarray(mu),
        np.asarray(sigma),
        n,
        np.asarray(hit),
        np.asarray(esc),
        np.isfinite(np.asarray(sigma)),
    )
    return np.asarray(path), runs


# ---------------------------------------------------------------- EM convergence
class EMConvergence(NamedTuple):
    """Three stopping rules applied to the same closed-form EM runs (``(b,)``).

    Attributes:
        tol_step: first step whose parameter change is at most ``PARAMETER_TOL``
            (``budget`` if never).
        exact_step: first step whose iterate equals the previous one exactly, the
            original's rule (``budget`` if never).
        success_step: first step with ``sigma < SUCCESS_SIGMA`` (``-1`` if never).
        escape_step: first step with ``sigma < ESCAPE_SIGMA`` (``-1`` if never).
        mu, sigma: the state at ``budget`` steps or at exact equality.
        finite: whether the state stayed finite.
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
        return Runs(
            self.mu,
            self.sigma,
            self.tol_step,
            self.success_step,
            self.escape_step,
            self.finite,
        )


def em_convergence(update_fn, mu0, sigma0, *, budget) -> EMConvergence:
    """Steps to convergence of a closed-form EM map under three rules, in one
    batched loop that runs until exact equality or ``budget``."""

    @jax.jit
    def run(mu0, sigma0):
        def one(m, s):
            def cond(c):
                return (c[2] < budget) & ~c[3]

            def body(c):
                (m, s), _, t, _, tol_step, hit, esc = c
                m1, s1 = update_fn(m, s)
                t = t + 1
                exact = (m1 == m) & (s1 == s)
                small = jnp.maximum(jnp.abs(m1 - m), jnp.abs(s1 - s)) <= PARAMETER_TOL
                tol_step = jnp.where((tol_step < 0) & small, t, tol_step)
                valid = s1 >= 0
                hit = jnp.where((hit < 0) & valid & (s1 < SUCCESS_SIGMA), t, hit)
                esc = jnp.where((esc < 0) & valid & (s1 < ESCAPE_SIGMA), t, esc)
                return (m1, s1), None, t, exact, tol_step, hit, esc

            minus_one = jnp.int32(-1)
            c = ((m, s), None, jnp.int32(0), jnp.bool_(False), minus_one)
            c = (*c, minus_one, minus_one)
            (m, s), _, t, exact, tol_step, hit, esc = jax.lax.while_loop(cond, body, c)
            tol_step = jnp.where(tol_step < 0, budget, tol_step)
            finite = jnp.isfinite(m) & jnp.isfinite(s)
            return tol_step, jnp.where(exact, t, budget), hit, esc, m, s, finite

        return jax.vmap(one)(mu0, sigma0)

    out = run(jnp.asarray(mu0), jnp.asarray(sigma0))
    return EMConvergence(*(np.asarray(a) for a in out))


def em_update_direct(mu, sigma):
    """EM with the responsibility computed as a plain ratio of densities,
    ``N(1 | mu, sigma) / (N(1 | mu, sigma) + N(1 | -mu, sigma))``, as a naive
    implementation (and the original) would: the same map as
    :func:`toy.em_update` in exact arithmetic, different in floating point."""
    a = jnp.exp(-((1.0 - mu) ** 2) / (2.0 * sigma**2))
    b = jnp.exp(-((1.0 + mu) ** 2) / (2.0 * sigma**2))
    p = jnp.where(sigma == 0, 1.0, a / (a + b))
    mu_new = 2.0 * p - 1.0
    var = p * (1.0 - mu_new) ** 2 + (1.0 - p) * (1.0 + mu_new) ** 2
    return mu_new, jnp.sqrt(var)


def em_library_update(mu, sigma, reg_covar=0.0):
    """One EM step of the general library (``gmmjax.EM(reg_covar=reg_covar)``) read
    back in ``(mu, sigma)`` coordinates."""
    x = toy.data(jnp.result_type(mu, sigma))
    fitter = EM(reg_covar=reg_covar)
    state = fitter.init(toy.to_gmm(mu, sigma), x)
    return toy.from_gmm(fitter.step(state, x)[0].gmm)


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
        >>> from gmmjax import _study
        >>> round(float(_study.escape_steps_estimate(0.02, 0.8)))
        769
    """
    u1 = np.asarray(mu0) / np.asarray(sigma0) ** 2
    return 1.0 + 0.75 / u1**2


# ------------------------------------------------------------------------- scipy
def _ll_numpy(mu, sigma):
    v = sigma * sigma
    z = abs(mu) / v
    log_cosh = z + math.log1p(math.exp(-2.0 * z)) - math.log(2.0)
    return (
        2.0
        * (-math.log(sigma) - 0.5 * math.log(2.0 * math.pi) - (1 + mu * mu) / (2 * v))
        + 2.0 * log_cosh
    )


def _dll_numpy(mu, sigma):
    v = sigma * sigma
    t = math.tanh(mu / v)
    return (2.0 / v * (t - mu), 2.0 / (v * sigma) * (1 + mu * mu - v - 2 * mu * t))


def clipped_objective(theta):
    """The original's objective for R's ``optim``: ``min(-L(mu, max(sigma, 0)),
    1e9)``, where ``sigma <= 0`` gives ``-L = +inf`` (clipped to ``1e9``), with its
    gradient (zero on the clipped plateau).

    Example:
        >>> import numpy as np
        >>> from gmmjax import _study
        >>> value, grad = _study.clipped_objective(np.array([0.0, 1.0]))
        >>> round(value, 6), [abs(round(float(g), 12)) for g in grad]
        (2.837877, [0.0, 0.0])
        >>> _study.clipped_objective(np.array([0.5, -0.1]))[0]
        1000000000.0
    """
    mu, sigma = float(theta[0]), float(theta[1])
    if not sigma > 0:
        return 1e9, np.zeros(2)
    value = -_ll_numpy(mu, sigma)
    if not value < 1e9:
        return 1e9, np.zeros(2)
    g_mu, g_sigma = _dll_numpy(mu, sigma)
    return value, -np.array([g_mu, g_sigma])


def run_scipy(method, mu0, sigma0, *, max_iter=1000) -> Runs:
    """scipy.optimize.minimize from every start (a numpy loop: scipy cannot be
    vmapped), on :func:`clipped_objective`; the exact gradient is supplied to the
    gradient methods."""
    from scipy import optimize

    out = []
    for m, s in zip(np.ravel(mu0), np.ravel(sigma0), strict=True):
        jac = method != "Nelder-Mead"
        if jac:
            fun = clipped_objective
        else:

            def fun(theta):
                return clipped_objective(theta)[0]

        options = {"maxiter": max_iter}
        if method == "L-BFGS-B":
            options["maxfun"] = max_iter
        res = optimize.minimize(
            fun, np.array([m, s]), jac=jac, method=method, options=options
        )
        out.append((res.x[0], res.x[1], res.nit, np.all(np.isfinite(res.x))))
    arr = np.array(out, dtype=float)
    steps = arr[:, 2].astype(int)
    # scipy reports only its end point: "first" steps are the iterations at the end
    hit = np.where((arr[:, 1] > 0) & (arr[:, 1] < SUCCESS_SIGMA), steps, -1)
    esc = np.where((arr[:, 1] > 0) & (arr[:, 1] < ESCAPE_SIGMA), steps, -1)
    return Runs(arr[:, 0], arr[:, 1], steps, hit, esc, arr[:, 3] > 0)


def run_anneal_variance(key, mu0, sigma0, *, variances, max_steps) -> Runs:
    """:func:`gmmjax.anneal_variance` from every start (one ``vmap``), with an
    unregularized release fit (``reg_covar = 0``): the collapse onto the data ends
    it as ``DEGENERATE``. Only the end point is known: the step of success is the
    total step count of a successful run."""
    x = toy.data(jnp.float64)

    @jax.jit
    def run(mu0, sigma0):
        def one(m, s):
            result, _ = anneal_variance(
                key,
                toy.to_gmm(m, s),
                x,
                variances=variances,
                perturbation=1e-3,
                reg_covar=0.0,
                max_steps=max_steps,
            )
            mu, sigma = toy.from_gmm(result.gmm)
            return mu, sigma, result.n_steps

        return jax.vmap(one)(mu0, sigma0)

    mu, sigma, steps = (
        np.asarray(a) for a in run(jnp.asarray(mu0), jnp.asarray(sigma0))
    )
    finite = np.isfinite(mu) & np.isfinite(sigma)
    hit = np.where(finite & (sigma < SUCCESS_SIGMA), steps, -1)
    esc = np.where(finite & (sigma < ESCAPE_SIGMA), steps, -1)
    return Runs(mu, sigma, steps, hit, esc, finite)
