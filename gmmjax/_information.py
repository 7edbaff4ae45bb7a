"""Observed information, standard errors and fit diagnosis in natural coordinates.

**The natural parameter vector.** A mixture with ``k`` components in ``d``
dimensions is described by the labelled vector

- ``weights[0] .. weights[k-2]``: the weights without the last one, which is
  ``1 - sum`` of the others;
- ``means[j,a]`` for every component ``j`` and feature ``a`` (row-major);
- the covariance entries: ``full``, the upper triangle with the diagonal,
  ``covariances[j,a,b]`` for ``a <= b`` (row-major per component); ``diag``,
  ``covariances[j,a]``; ``spherical``, ``covariances[j]``; ``tied``,
  ``covariances[a,b]`` for ``a <= b``.

**Gauges.** The model's own leaves have a continuous gauge: adding a constant to all
logits changes nothing, which would be an exactly flat direction of every Hessian
taken in the leaves and could be mistaken for a plateau. The natural vector has no
such freedom (the last weight is determined by the others, a covariance by its upper
triangle), so its Hessian is singular only for real reasons. Label switching
(permuting components) is a discrete symmetry: at a generic point it creates no null
direction, but where components coincide (equal means and covariances, such as the
symmetric point ``mu = 0`` of the two-point model) the weights of the coinciding
components become exactly flat and the classification falls to the higher-order test
of :mod:`gmmjax.landscape`.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._density import prepare, total_log_likelihood
from ._gmm import GMM
from ._landscape import (
    SecondOrder,
    check_chunk_size,
    check_tol,
    decide,
    flat_hessian,
    reduced_batch,
    second_order,
)
from ._levels import ByWork
from ._stored import call_stored

__all__ = [
    "Diagnosis",
    "ObservedInformation",
    "StandardErrors",
    "diagnose",
    "from_natural_vector",
    "natural_labels",
    "natural_vector",
    "observed_information",
    "standard_errors",
]


def natural_labels(gmm: GMM) -> tuple[str, ...]:
    """Labels of the natural parameter vector of ``gmm`` (see the module docstring)."""
    k, d, ctype = gmm.n_components, gmm.n_features, gmm.covariance_type
    labels = [f"weights[{j}]" for j in range(k - 1)]
    labels += [f"means[{j},{a}]" for j in range(k) for a in range(d)]
    rows, cols = np.triu_indices(d)
    if ctype == "full":
        labels += [
            f"covariances[{j},{a},{b}]"
            for j in range(k)
            for a, b in zip(rows, cols, strict=True)
        ]
    elif ctype == "tied":
        labels += [f"covariances[{a},{b}]" for a, b in zip(rows, cols, strict=True)]
    elif ctype == "diag":
        labels += [f"covariances[{j},{a}]" for j in range(k) for a in range(d)]
    else:
        labels += [f"covariances[{j}]" for j in range(k)]
    return tuple(labels)


def natural_vector(gmm: GMM) -> jax.Array:
    """The natural parameter vector ``(p,)`` of ``gmm`` (labels: ``natural_labels``)."""
    cov = gmm.covariances
    if gmm.covariance_type in ("full", "tied"):
        rows, cols = np.triu_indices(gmm.n_features)
        cov = cov[..., rows, cols]
    return jnp.concatenate([gmm.weights[:-1], gmm.means.reshape(-1), cov.reshape(-1)])


def from_natural_vector(theta, like: GMM) -> GMM:
    """Inverse of :func:`natural_vector` for the shapes and type of ``like``.

    Differentiable (to any order) in ``theta``; values are not validated, so it also
    works under ``jit`` and ``jax.hessian``.
    """
    k, d, ctype = like.n_components, like.n_features, like.covariance_type
    weights = jnp.concatenate([theta[: k - 1], 1.0 - jnp.sum(theta[: k - 1])[None]])
    means = theta[k - 1 : k - 1 + k * d].reshape(k, d)
    rest = theta[k - 1 + k * d :]
    if ctype in ("full", "tied"):
        rows, cols = np.triu_indices(d)
        shape = (k, d, d) if ctype == "full" else (d, d)
        upper = rest.reshape((*shape[:-2], len(rows)))
        cov = jnp.zeros(shape, theta.dtype).at[..., rows, cols].set(upper)
        cov = cov.at[..., cols, rows].set(upper)
    elif ctype == "diag":
        cov = rest.reshape(k, d)
    else:
        cov = rest
    return GMM.from_natural(weights, means, cov, covariance_type=ctype)


# The programs below take the mixture, the data and the weights as arguments and
# close over no array, so each compiles once per covariance type, shapes and dtype
# (STYLE rule 15): a second diagnosis of a same-shaped fit compiles nothing.


def _log_likelihood_at(theta, gmm, x, w):
    """``L(theta)``: the total log-likelihood at the natural vector ``theta`` (of
    the shapes and type of ``gmm``)."""
    return total_log_likelihood(from_natural_vector(theta, gmm), x, w)


@functools.partial(jax.jit, static_argnums=3)
def _information(gmm, x, w, chunk_size):
    """``(theta (p,), I (p, p))``: the natural vector and minus the Hessian of L."""
    theta = natural_vector(gmm).astype(x.dtype)
    h = flat_hessian(lambda t: _log_likelihood_at(t, gmm, x, w), theta, chunk_size)
    return theta, -h


@jax.jit
def _inverse_information(matrix):
    """``(positive definite?, errors (p,), I^-1 (p, p))`` through the Cholesky
    factor of ``I``."""
    chol = jnp.linalg.cholesky(matrix)
    eye = jnp.eye(matrix.shape[0], dtype=matrix.dtype)
    cov = jax.scipy.linalg.cho_solve((chol, True), eye)
    cov = 0.5 * (cov + cov.T)
    return jnp.all(jnp.isfinite(chol)), jnp.sqrt(jnp.diag(cov)), cov


class ObservedInformation(NamedTuple):
    """Observed information of a mixture in its labelled natural parameter vector.

    Attributes:
        labels: ``p`` names such as ``"weights[0]"``, ``"means[1,0]"``,
            ``"covariances[0,0,1]"``.
        values: ``(p,)`` the natural parameters at the point.
        matrix: ``(p, p)`` minus the Hessian of the total log-likelihood.
    """

    labels: tuple[str, ...]
    values: jax.Array
    matrix: jax.Array


class StandardErrors(NamedTuple):
    """Wald standard errors of the natural parameters.

    Attributes:
        labels: ``p`` parameter names (as in :class:`ObservedInformation`).
        values: ``(p,)`` the natural parameters (the estimates).
        errors: ``(p,)`` ``sqrt(diag(I^{-1}))``.
        covariance: ``(p, p)`` the inverse observed information ``I^{-1}``.
    """

    labels: tuple[str, ...]
    values: jax.Array
    errors: jax.Array
    covariance: jax.Array

    def __str__(self) -> str:
        width = max(len(label) for label in self.labels)
        lines = [f"{'parameter':<{width}}  {'estimate':>12}  {'std. error':>12}"]
        values, errors = np.asarray(self.values), np.asarray(self.errors)
        for label, v, e in zip(self.labels, values, errors, strict=True):
            lines.append(f"{label:<{width}}  {float(v):12.6g}  {float(e):12.6g}")
        return "\n".join(lines)


def observed_information(
    gmm: GMM, x, *, sample_weight=None, chunk_size=None
) -> ObservedInformation:
    """Observed Fisher information ``I = -d^2 L / d theta^2`` of a mixture.

    ``L(theta) = sum_i w_i log p(x_i | theta)`` is the total (weighted) log-likelihood
    (:func:`gmmjax.log_likelihood`) and ``theta`` the natural parameter vector of the
    :mod:`module docstring <gmmjax._information>` (weights without the last, means,
    covariance entries, with their labels). The Hessian is exact: ``jax.hessian``
    through the map ``theta -> GMM`` (last weight ``1 - sum`` of the others,
    symmetric covariances from their upper triangle).

    Args:
        gmm: the mixture (``k`` components, ``d`` features).
        x: ``(n, d)`` data.
        sample_weight: optional ``(n,)`` non-negative weights.
        chunk_size: passed to :func:`gmmjax.landscape.hessian` to bound memory.

    Returns:
        :class:`ObservedInformation` with ``labels``, ``values`` ``(p,)`` and
        ``matrix`` ``(p, p)``.

    Example:
        >>> import gmmjax
        >>> gmm = gmmjax.GMM.from_natural([1.0], [[0.0]], [1.0],
        ...                               covariance_type="spherical")
        >>> info = gmmjax.observed_information(gmm, [[-1.0], [1.0]])
        >>> info.labels
        ('means[0,0]', 'covariances[0]')
        >>> [[round(float(v), 6) + 0.0 for v in row] for row in info.matrix]
        [[2.0, 0.0], [0.0, 1.0]]
    """
    x, w = prepare(gmm, x, sample_weight)
    theta, matrix = _information(gmm, x, w, check_chunk_size(chunk_size))
    return ObservedInformation(natural_labels(gmm), theta, matrix)


def standard_errors(
    gmm: GMM, x, *, sample_weight=None, chunk_size=None
) -> StandardErrors:
    """Wald standard errors ``sqrt(diag(I^{-1}))`` from the observed information.

    ``I`` is :func:`observed_information`; it is inverted through its Cholesky
    factor. At a strict local maximum of the likelihood ``I`` is positive definite;
    anywhere else (a saddle, a flat direction, a point that is not critical) the
    errors have no meaning and a ``ValueError`` says so.

    Args:
        gmm: the mixture, normally a maximum-likelihood fit.
        x: ``(n, d)`` data.
        sample_weight: optional ``(n,)`` non-negative weights.
        chunk_size: passed to :func:`gmmjax.landscape.hessian`.

    Returns:
        :class:`StandardErrors` (``labels``, ``values``, ``errors``, ``covariance``).

    Raises:
        ValueError: when the observed information is not positive definite.

    Example:
        >>> import gmmjax
        >>> gmm = gmmjax.GMM.from_natural([1.0], [[0.0]], [1.0],
        ...                               covariance_type="spherical")
        >>> se = gmmjax.standard_errors(gmm, [[-1.0], [1.0]])
        >>> [round(float(e), 6) for e in se.errors]
        [0.707107, 1.0]
    """
    info = observed_information(
        gmm, x, sample_weight=sample_weight, chunk_size=chunk_size
    )
    definite, errors, cov = _inverse_information(info.matrix)
    if not bool(definite):
        smallest = float(np.linalg.eigvalsh(np.asarray(info.matrix))[0])
        raise ValueError(
            "the observed information is not positive definite (smallest eigenvalue "
            f"{smallest:.3g}): the point is not a strict local maximum of the "
            "likelihood, so standard errors are undefined; see gmmjax.diagnose"
        )
    return StandardErrors(info.labels, info.values, errors, cov)


class Diagnosis(NamedTuple):
    """What kind of point a fit ended at, with the evidence and what to do.

    The words of ``kind`` (those of :func:`gmmjax.landscape.classify`), one
    meaning each:

    - ``"maximum"``: a local maximum of the likelihood; no direction goes uphill.
    - ``"saddle"``: a critical point with uphill directions left: the fit stalled,
      ``escape_direction`` points uphill.
    - ``"minimum"``: a local minimum (every direction goes uphill).
    - ``"degenerate"``: a *degenerate critical point*: the Hessian is singular (a
      flat direction) and derivatives up to fourth order cannot tell a maximum
      from a saddle. Unrelated to ``Status.DEGENERATE`` (a collapsed or emptied
      component); the command line calls it "singular Hessian".
    - ``"not_critical"``: not yet at a critical point: a step would still gain
      more than ``tol`` in mean log-likelihood; fit on (``advice`` says how).

    Curvatures and gradients are those of the *mean* log-likelihood ``L / W``
    (``W = sum_i w_i``, ``n`` without weights) in *standardized* natural
    parameters: every parameter divided by the data's scale of it (see
    :func:`diagnose`), so that they do not depend on the number of samples or on
    the units of the features.

    Attributes:
        kind: one of the words above.
        log_likelihood: ``()`` total log-likelihood at the point.
        gradient_norm: ``()`` norm of the standardized gradient of ``L / W``.
        predicted_gain: ``()`` the gain in mean log-likelihood that one more step
            would still make (the Newton gain of :func:`diagnose`); the point is
            critical when it is at most ``tol``.
        eigenvalues: ``(p,)`` eigenvalues of the standardized Hessian of
            ``L / W``, ascending (the top ones are the evidence for a saddle).
        escape_direction: ``(p,)`` unit ascent direction in the natural vector
            (the standardized one mapped back), or ``None`` at a maximum.
        escape_order: derivative order of the ascent (1 gradient, 2 positive
            curvature, 3 or 4 the higher-order test); 0 without one.
        labels: ``p`` labels of the natural vector.
        message: what ``kind`` means at this point, in words.
        advice: what to do about it (empty at a maximum).
    """

    kind: str
    log_likelihood: jax.Array
    gradient_norm: jax.Array
    predicted_gain: jax.Array
    eigenvalues: jax.Array
    escape_direction: jax.Array | None
    escape_order: int
    labels: tuple[str, ...]
    message: str
    advice: str

    def __str__(self) -> str:
        top = ", ".join(
            f"{float(v):.4g}" for v in np.asarray(self.eigenvalues)[::-1][:3]
        )
        lines = [
            f"kind: {self.kind} ({self.message})",
            f"log-likelihood: {float(self.log_likelihood):.6g}",
            f"predicted gain per sample: {float(self.predicted_gain):.3g}",
            f"gradient norm (standardized, per sample): "
            f"{float(self.gradient_norm):.3g}",
            f"top Hessian eigenvalues (standardized, per sample): {top}",
        ]
        if self.escape_direction is not None:
            d = np.asarray(self.escape_direction)
            order = np.argsort(-np.abs(d))[:4]
            parts = ", ".join(f"{self.labels[i]} {d[i]:+.3f}" for i in order)
            lines.append(f"escape direction (order {self.escape_order}): {parts}")
        if self.advice:
            lines.append(f"advice: {self.advice}")
        return "\n".join(lines)


def _natural_scale(gmm: GMM, x, w) -> jax.Array:
    """``(p,)`` the data's scale of every natural parameter.

    With ``s_a`` the (weighted) standard deviation of feature ``a`` (1 where a
    feature is constant): 1 for a weight, ``s_a`` for ``means[j,a]``, ``s_a s_b``
    for a covariance entry ``[a,b]`` and the mean of ``s_a^2`` for a spherical
    variance. Dividing by it is fitting the data in standardized units.
    """
    if w is None:
        w = jnp.ones(x.shape[0], x.dtype)
    center = w @ x / jnp.sum(w)
    s = jnp.sqrt(w @ (x - center) ** 2 / jnp.sum(w))
    s = jnp.where(s > 0, s, 1.0)
    k, d, ctype = gmm.n_components, gmm.n_features, gmm.covariance_type
    rows, cols = np.triu_indices(d)
    if ctype == "full":
        cov = jnp.tile(s[rows] * s[cols], k)
    elif ctype == "tied":
        cov = s[rows] * s[cols]
    elif ctype == "diag":
        cov = jnp.tile(s**2, k)
    else:
        cov = jnp.full(k, jnp.mean(s**2))
    return jnp.concatenate([jnp.ones(k - 1, x.dtype), jnp.tile(s, k), cov])


def _standardized(z, gmm, x, w, scale, total):
    """The mean log-likelihood ``L(c z) / W`` in the standardized vector ``z``."""
    return _log_likelihood_at(z * scale, gmm, x, w) / total


class _Evidence(NamedTuple):
    """What one compiled program finds for :func:`diagnose`."""

    second: SecondOrder  # of _standardized at z
    predicted_gain: jax.Array  # ()
    log_likelihood: jax.Array  # () L(theta)
    z: jax.Array  # (p,) theta / scale
    scale: jax.Array  # (p,)
    total: jax.Array  # () W


def _evidence_program(gmm, x, w) -> _Evidence:
    """Everything a diagnosis needs to second order, in one program."""
    theta = natural_vector(gmm).astype(x.dtype)
    total = jnp.asarray(x.shape[0], x.dtype) if w is None else jnp.sum(w)
    scale = _natural_scale(gmm, x, w)
    z = theta / scale
    second = second_order(lambda t: _standardized(t, gmm, x, w, scale, total), z)
    coef = jnp.abs(second.eigenvectors.T @ second.gradient)
    curv = jnp.abs(second.eigenvalues)
    inside = coef <= curv
    newton = coef**2 / (2.0 * jnp.where(curv > 0, curv, 1.0))
    gain = jnp.sum(jnp.where(inside, newton, coef - 0.5 * curv))
    # L(theta) = W L(c z) / W: the same forward pass
    return _Evidence(second, gain, second.value * total, z, scale, total)


# The diagnosis program runs once per diagnosis, so its compilation is most of
# its cost: on Old Faithful (k = 2, full) XLA's default optimization spends about
# 2.5 s of CPU compiling it and level 0 about 1.7 s, for the same ~10 ms run.
# The unoptimized code runs slower on large problems (n = 20,000, p = 83: 1.5 s
# against 1.1 s): its work is counted in sample-parameter pairs.
_evidence = ByWork(
    _evidence_program,
    work=lambda gmm, x, w: x.shape[0] * len(natural_labels(gmm)),
)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _verdict(kind, point, gain, tol, order) -> tuple[str, str]:
    """``(message, advice)`` of a diagnosis: what ``kind`` means here, what to do."""
    if kind == "not_critical":
        message = (
            f"one Newton step would still gain {gain:.2g} in mean log-likelihood, "
            f"more than the diagnosis' tol = {tol:g}"
        )
        if point.n_positive:
            message += (
                f"; the Hessian has {_plural(point.n_positive, 'positive eigenvalue')}"
                ", so the fit may be crawling past a saddle"
            )
        advice = (
            "fit on from this point with a smaller tolerance or more steps: the "
            "fit's own test bounds the gain of its last step, not the gain left"
        )
        return message, advice
    if kind == "maximum":
        return "no direction goes uphill", ""
    if kind == "saddle":
        return (
            f"the likelihood still rises along the escape direction, at order "
            f"{order}: the fit stalled short of a maximum",
            "restart from other starts, or step along escape_direction and fit on",
        )
    if kind == "minimum":
        return "every direction goes uphill", "restart from other starts"
    return (
        f"the Hessian is singular, with {_plural(point.n_null, 'flat direction')}, "
        "and derivatives up to fourth order cannot tell a maximum from a saddle: "
        "a degenerate critical point, not a collapsed component",
        "the data do not pin down every parameter here (components that "
        "coincide, say): try fewer components or other starts",
    )


def diagnose(result, x, *, sample_weight=None, tol=1e-6, eigen_tol=1e-6):
    """Say whether a fit ended at a local maximum, a saddle or a flat region.

    **Coordinates.** The mean log-likelihood ``L / W`` (``W = sum_i w_i``, ``n``
    without weights) is analysed in the standardized natural vector ``z = theta /
    c``: each natural parameter (module docstring; no logit gauge) divided by the
    data's scale of it, ``c = 1`` for a weight, the feature's standard deviation
    ``s_a`` for a mean, ``s_a s_b`` for a covariance entry. Its gradient ``g``,
    exact Hessian (eigenpairs ``lambda_i, v_i``) and, where the Hessian is
    singular, the fourth-order test of :func:`gmmjax.landscape.classify` decide
    the kind. In these coordinates curvatures do not grow with ``n`` and do not
    depend on the units of the features, so the relative null test
    ``|lambda| <= eigen_tol * max(1, max|lambda|)`` compares like with like. (Three
    full components on Old Faithful, whose features have variances 1.3 and 185:
    the Hessian of the total log-likelihood in the raw natural vector runs from
    ``-2e-4`` to ``-2e4``, and at ``eigen_tol = 1e-6`` two genuine curvatures
    counted as flat, a maximum reported as undecidable; standardized they run
    from ``-8e-3`` to ``-2e2``.)

    **Critical?** A fit stopped by a tolerance is never exactly critical. The test
    is the gain in mean log-likelihood that one more step would still make, on the
    quadratic model ``-1/2 sum_i |lambda_i| t_i^2 + sum_i (v_i . g) t_i`` with
    every ``|t_i| <= 1`` (one standard deviation of the data):

        gain = sum_i  (v_i . g)^2 / (2 |lambda_i|)   where |v_i . g| <= |lambda_i|,
                      |v_i . g| - |lambda_i| / 2      elsewhere.

    Near a maximum this is half the squared Newton decrement ``g^T |H|^-1 g / 2``,
    which does not depend on how the parameters are scaled and predicts the
    log-likelihood the fit has still to gain (on Old Faithful, within a few
    percent); along flat directions, where the Newton step is unbounded, it is the
    gradient's gain over one standard deviation. The point is critical when
    ``gain <= tol``: the same number, in the same unit (mean log-likelihood), as
    the default ``tol`` of :func:`gmmjax.fit`. That test bounds the gain of the
    fitter's *last step*, which is smaller than the gain left when the fitter
    crawls (EM along a flat ridge, Adam with a small learning rate), so a
    ``CONVERGED`` fit can still be ``"not_critical"``: fit on with a smaller
    ``tol`` (the diagnosis' ``advice`` says so). A critical point is classified by
    its curvature: an EM run that stalls near a saddle is a saddle.

    **Cost.** One compiled program per covariance type, shapes and dtype finds
    the log-likelihood, gradient, Hessian eigenpairs and gain; a later diagnosis
    of the same shapes compiles nothing. The third- and fourth-order program is
    compiled and run only at a critical point with a singular Hessian.

    Args:
        result: a fit result with a ``.gmm`` attribute (``gmmjax.FitResult``) or a
            bare :class:`gmmjax.GMM`.
        x: ``(n, d)`` data.
        sample_weight: optional ``(n,)`` non-negative weights.
        tol: bound on the predicted gain in mean log-likelihood (see above).
        eigen_tol: eigenvalues of the standardized Hessian with ``|lambda| <=
            eigen_tol * max(1, max|lambda|)`` are null (``tol`` of
            :func:`gmmjax.landscape.classify`).

    Returns:
        :class:`Diagnosis`; ``str(diagnosis)`` is a readable summary.

    Example:
        >>> import gmmjax
        >>> gmm = gmmjax.GMM.from_natural([1.0], [[0.0]], [1.0],
        ...                               covariance_type="spherical")
        >>> gmmjax.diagnose(gmm, [[-1.0], [1.0]]).kind
        'maximum'

        Off the maximum, in (mean, variance) ``g = (-1/2, 1/8)`` and ``H = [[-1,
        1/2], [1/2, -3/4]]``, so a Newton step gains ``g^T (-H)^-1 g / 2 = 9/64``:

        >>> off = gmmjax.GMM.from_natural([1.0], [[0.5]], [1.0],
        ...                               covariance_type="spherical")
        >>> d = gmmjax.diagnose(off, [[-1.0], [1.0]])
        >>> d.kind, round(float(d.predicted_gain), 4)
        ('not_critical', 0.1406)
        >>> d.advice.startswith("fit on")
        True
    """
    gmm = result if isinstance(result, GMM) else getattr(result, "gmm", None)
    if not isinstance(gmm, GMM):
        raise TypeError(
            "result must be a gmmjax.GMM or have a .gmm attribute, got "
            f"{type(result).__name__}"
        )
    tol = check_tol(tol, "tol")
    x, w = prepare(gmm, x, sample_weight)
    eigen_tol = check_tol(eigen_tol, "tol")
    labels = natural_labels(gmm)
    # kept lowered on disk (gmmjax._stored): a later process skips tracing it
    evidence = call_stored("diagnosis", _evidence, (gmm, x, w), {})
    gain = float(evidence.predicted_gain)
    # the third- and fourth-order program runs (and compiles) only at a critical
    # point with a singular Hessian; off one, the gradient is the way up
    critical = gain <= tol
    reduced = functools.partial(
        reduced_batch,
        _standardized,
        evidence.z,
        (gmm, x, w, evidence.scale, evidence.total),
    )
    point, escape = decide(
        evidence.second, eigen_tol, math.inf if critical else -math.inf, reduced
    )
    kind = point.kind
    escape_vec = None if escape is None else escape.direction
    order = 0 if escape is None else escape.order
    if escape_vec is not None:
        # back to natural units, on the host: eager jax ops would compile
        escape_vec = np.asarray(escape_vec) * np.asarray(evidence.scale)
        escape_vec = jax.device_put(escape_vec / np.linalg.norm(escape_vec))
    message, advice = _verdict(kind, point, gain, tol, order)
    return Diagnosis(
        kind=kind,
        log_likelihood=evidence.log_likelihood,
        gradient_norm=point.gradient_norm,
        predicted_gain=evidence.predicted_gain,
        eigenvalues=point.eigenvalues,
        escape_direction=escape_vec,
        escape_order=order,
        labels=labels,
        message=message,
        advice=advice,
    )
