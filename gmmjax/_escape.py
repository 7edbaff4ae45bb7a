"""Escape a saddle and keep fitting, in one compiled call.

A fit that stalls at a saddle of the likelihood (two components that coincide:
EM keeps them identical, a subspace it cannot leave) is left along the top
eigenvector of the Hessian, found matrix-free (:func:`gmmjax._krylov.ritz`), by a
line search on the log-likelihood; the same fitter then continues from there
through the one driver, :func:`gmmjax._fit.run`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._density import total_log_likelihood
from ._fit import FitResult, check_steps, prepare_fit, run, total_weight
from ._information import (
    fitted_gmm,
    from_natural_vector,
    likelihood_terms,
    mixture_route,
    natural_labels,
    natural_vector,
    unwhiten,
    whitening,
)
from ._krylov import hvp, ritz, value_and_grad
from ._levels import ByWork, fit_work
from ._validation import check_key, check_nonnegative_scalar, check_positive_int

__all__ = ["EscapeResult", "escape_saddle"]

#: The most Hessian-vector products by default (capped at the number of
#: parameters ``p``, where the Ritz pairs are exact).
KRYLOV_DIM = 64
#: The line search's longest step, in the whitened coordinates of
#: :func:`gmmjax.diagnose` (one unit of complete-data information per sample:
#: a mean of weight ``w_j`` moves by ``1 / sqrt(w_j)`` of its standard deviation).
FIRST_STEP = 1.0
#: Steps ``FIRST_STEP * 2**-j`` for ``j < N_STEPS``, in both directions.
N_STEPS = 12
#: Log-likelihoods within ``TIES * eps * |L|`` of the best are ties (rounding):
#: the first of them wins, the longest step, along ``+v`` before ``-v``.
TIES = 1e3
#: ``v`` is oriented by its first entry of at least this fraction of its largest.
SIGNIFICANT = 1e-3


class EscapeResult(NamedTuple):
    """The outcome of :func:`gmmjax.escape_saddle` (a pytree of arrays: batches
    stack along axis 0).

    Attributes:
        fit: the :class:`gmmjax.FitResult` of the fitter continued from the
            point after the step (from the given point when there was none).
        escaped: ``()`` bool, whether a step was taken.
        curvature: ``()`` the top eigenvalue found of the Hessian of the mean
            log-likelihood in the coordinates of :func:`gmmjax.diagnose` (a Ritz
            value, the top of ``Diagnosis.eigenvalues`` when exact; positive at
            a saddle left at second order).
        step: ``()`` the length of the step taken along the top eigenvector, in
            those coordinates (0 without a step).
        gain: ``()`` the total log-likelihood the step gained, before the fitter
            continued (0 without a step).

    Example:
        >>> from gmmjax._escape import EscapeResult
        >>> EscapeResult._fields
        ('fit', 'escaped', 'curvature', 'step', 'gain')
    """

    fit: FitResult
    escaped: jax.Array
    curvature: jax.Array
    step: jax.Array
    gain: jax.Array


def _valid_weights(theta, k: int):
    """Whether the natural vector ``theta`` has every weight (the last is ``1 -``
    the sum of the others) positive."""
    head = theta[: k - 1]
    return jnp.all(head > 0) & (jnp.sum(head) < 1)


def _oriented(v):
    """``v`` or ``-v``, whichever has its first significant entry positive.

    The same in every program: the entries of a coinciding pair tie in
    magnitude (``+a`` for one component, ``-a`` for the other), so which of
    them is largest, and the sign it would set, is decided by rounding.
    """
    big = jnp.abs(v) >= SIGNIFICANT * jnp.max(jnp.abs(v))
    return jnp.where(v[jnp.argmax(big)] < 0, -v, v)


def _program(
    fitter, gmm, x, w, key, max_steps, tol, curvature_tol, *, krylov_dim, rows
):
    total = total_weight(x, w)
    k = gmm.n_components
    # the whitened coordinates v of gmmjax.diagnose (v = 0 at gmm), one
    # whitening for the curvature and the line search
    white = whitening(gmm)
    theta0 = natural_vector(gmm).astype(x.dtype)

    def to_natural(v):
        return theta0 + unwhiten(v, gmm, white)

    origin = jnp.zeros_like(theta0)
    # the mean log-likelihood at to_natural(v), accumulated over chunks of rows
    terms = likelihood_terms(gmm, x, w, rows, white, total)
    _, gradient = value_and_grad(terms, origin)
    pairs = ritz(lambda v: hvp(terms, origin, v[None])[2][0], gradient, key, krylov_dim)
    last = pairs.n_products - 1
    top = pairs.values[last]
    filled = jnp.arange(pairs.values.shape[0]) < pairs.n_products
    spread = jnp.max(jnp.where(filled, jnp.abs(pairs.values), 0.0))
    # the relative null test of gmmjax.diagnose: a top value above it is an
    # uphill curvature; at a saddle the gradient vanishes, so either sign of the
    # eigenvector ascends at second order
    rising = top > curvature_tol * jnp.maximum(1.0, spread)
    direction = _oriented(pairs.vectors[:, last])

    lengths = FIRST_STEP * 2.0 ** -jnp.arange(N_STEPS, dtype=x.dtype)
    steps = jnp.concatenate([lengths, -lengths])

    def moved(t):
        theta = to_natural(t * direction)
        return theta, from_natural_vector(theta, gmm)

    def score(t):
        theta, candidate = moved(t)
        ll = total_log_likelihood(candidate, x, w)
        # a step off the set of mixtures (a weight <= 0, a covariance that is
        # not positive definite: NaN leaves) is no candidate
        finite = jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(candidate)])
        )
        valid = _valid_weights(theta, k) & finite & jnp.isfinite(ll)
        return jnp.where(valid, ll, -jnp.inf)

    # two candidates at a time: the memory of two forward passes, not 2 N_STEPS
    lls = jax.lax.map(score, steps, batch_size=2)
    here = total_log_likelihood(gmm, x, w)
    # at a coinciding pair +v and -v are the same mixture relabelled, equal to
    # rounding: the first of the ties wins, so every program picks the same
    slack = TIES * jnp.finfo(x.dtype).eps * jnp.maximum(jnp.abs(here), 1.0)
    best = jnp.argmax(lls >= jnp.max(lls) - slack)
    escaped = rising & (lls[best] > here)
    step = jnp.where(escaped, steps[best], 0.0)
    # without a step the fitter starts from the given model itself, not its
    # round trip through the natural vector
    start = jax.tree.map(lambda a, b: jnp.where(escaped, a, b), moved(step)[1], gmm)
    result, _ = run(fitter, start, x, w, max_steps, tol)
    gain = jnp.where(escaped, lls[best] - here, 0.0)
    return EscapeResult(result, escaped, top, jnp.abs(step), gain)


def _work(fitter, gmm, x, *_, **__):
    # the fit's steps, or the Hessian-vector products (n samples x p each)
    return max(fit_work(x, gmm.n_components), x.shape[0] * len(natural_labels(gmm)))


_escape = ByWork(_program, work=_work, static_argnames=("krylov_dim", "rows"))


def escape_saddle(
    fitter,
    result,
    x,
    *,
    key=None,
    sample_weight=None,
    max_steps=500,
    tol=1e-6,
    krylov_dim=None,
    curvature_tol=1e-6,
) -> EscapeResult:
    """Step off a saddle along its top Hessian eigenvector, then fit on.

    For a fit that :func:`gmmjax.diagnose` calls a ``"saddle"``, in one compiled
    program (jittable, and vmappable over restarts):

    1. **Curvature.** In the coordinates of :func:`gmmjax.diagnose`, ``theta =
       theta_0 + T u`` (the natural vector whitened by the complete-data
       information at the fit: a unit of ``u`` carries one unit of it per
       sample), the top eigenpair ``(lambda, v)`` of the Hessian of the mean
       log-likelihood ``L / W`` at ``u = 0`` comes from Lanczos on
       Hessian-vector products (never the ``(p, p)`` matrix): at most ``min(p,
       krylov_dim)`` products, exact when that is ``p``.
    2. **Step.** When ``lambda > curvature_tol * max(1, max_i |lambda_i|)`` (the
       null test of :func:`gmmjax.diagnose`) the likelihood rises along ``v``:
       the line search tries ``u = +- t v`` for ``t = 2^{-j}``, ``j = 0 .. 11``
       (one unit down to 1/2048 of one), drops the
       steps off the set of mixtures (a weight ``<= 0``, a covariance that is
       not positive definite) and takes the one of highest log-likelihood if it
       beats the point's own (ties, such as the mirror steps of a coinciding
       pair, go to the longer step and to ``+v``, with ``v`` oriented by its
       first significant entry, so that every compiled program picks the
       same). Otherwise the point stays.
    3. **Fit on.** ``fitter`` runs from the new point as :func:`gmmjax.fit`
       would (the same driver, so the same ``status``), with ``max_steps`` and
       ``tol``. Without a step, that is ``fit(fitter, gmm, x)`` from the given
       model.

    A saddle whose uphill direction shows only at third or fourth order (a
    singular Hessian without a positive eigenvalue, such as two coinciding
    components over the data ``{-1, 1}``, the saddle study's point) has no
    uphill line: nothing is stepped, ``escaped`` is False, and the fitter
    continues from the point.

    Arguments are checked here, outside ``jit``; inside ``jit`` or ``vmap`` only
    their shapes are (as in :func:`gmmjax.fit`). ``max_steps``, ``tol``,
    ``curvature_tol`` and the key are traced: new values do not recompile;
    ``krylov_dim`` is static.

    Args:
        fitter: the fitter to continue with, e.g. :class:`gmmjax.EM` (the one
            that stalled).
        result: the stalled fit: a result with a ``.gmm`` attribute
            (:class:`gmmjax.FitResult`) or a bare :class:`gmmjax.GMM` with ``k``
            components.
        x: ``(n, d)`` data, ``n >= k``.
        key: a ``jax.random`` key for the random start of Lanczos; default
            ``jax.random.key(0)``.
        sample_weight: optional ``(n,)`` non-negative weights.
        max_steps: the continued fit's step budget (an integer >= 0).
        tol: the continued fit's convergence threshold (>= 0), as in
            :func:`gmmjax.fit`.
        krylov_dim: the most Hessian-vector products (an integer >= 2; default
            64, capped at ``p``).
        curvature_tol: the relative null test of the top eigenvalue (>= 0).

    Returns:
        :class:`~gmmjax._escape.EscapeResult`: the continued ``fit``, whether the
        fit ``escaped``, the top ``curvature``, the ``step`` length and the
        ``gain`` of the step in total log-likelihood.

    Example:
        Three clusters, and a start whose first two components coincide over the
        first two clusters: EM keeps them identical and stalls at a saddle.

        >>> import jax, jax.numpy as jnp, gmmjax
        >>> x = jnp.concatenate([jnp.linspace(-7.0, -5.0, 20),
        ...                      jnp.linspace(-1.0, 1.0, 40),
        ...                      jnp.linspace(5.0, 7.0, 20)])[:, None]
        >>> start = gmmjax.GMM.from_natural(
        ...     [0.35, 0.4, 0.25], [[-2.0], [-2.0], [6.0]], [8.0, 8.0, 1.0],
        ...     covariance_type="spherical")
        >>> stuck = gmmjax.fit(gmmjax.EM(), start, x)
        >>> out = gmmjax.escape_saddle(gmmjax.EM(), stuck, x)
        >>> bool(out.escaped), out.fit.status_name
        (True, 'CONVERGED')
        >>> gained = (out.fit.log_likelihood - stuck.log_likelihood) / len(x)
        >>> bool(gained > 0.1)
        True
    """
    gmm, x, w = prepare_fit(fitter, fitted_gmm(result), x, sample_weight)
    check_steps(max_steps, "max_steps")
    check_nonnegative_scalar(tol, "tol")
    check_nonnegative_scalar(curvature_tol, "curvature_tol")
    if krylov_dim is not None:
        check_positive_int(krylov_dim, "krylov_dim", minimum=2)
    key = jax.random.key(0) if key is None else check_key(key)
    p = len(natural_labels(gmm))
    dim = min(p, KRYLOV_DIM if krylov_dim is None else int(krylov_dim))
    rows = mixture_route(gmm, x, "lanczos", dim).rows
    return _escape(
        fitter,
        gmm,
        x,
        w,
        key,
        jnp.asarray(max_steps, jnp.int32),
        tol,
        curvature_tol,
        krylov_dim=dim,
        rows=rows,
    )
