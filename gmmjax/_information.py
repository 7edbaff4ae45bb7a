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

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._density import prepare, total_log_likelihood
from ._gmm import GMM
from ._landscape import _analyze, _check_tol, hessian


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


def _objective(gmm, x, sample_weight):
    x, w = prepare(gmm, x, sample_weight)
    theta = natural_vector(gmm).astype(x.dtype)

    def f(t):
        return total_log_likelihood(from_natural_vector(t, gmm), x, w)

    return f, theta


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
        for label, v, e in zip(self.labels, self.values, self.errors, strict=True):
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
    f, theta = _objective(gmm, x, sample_weight)
    matrix = -hessian(f, theta, chunk_size=chunk_size)
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
    chol = jnp.linalg.cholesky(info.matrix)
    if not bool(jnp.all(jnp.isfinite(chol))):
        smallest = float(jnp.linalg.eigvalsh(info.matrix)[0])
        raise ValueError(
            "the observed information is not positive definite (smallest eigenvalue "
            f"{smallest:.3g}): the point is not a strict local maximum of the "
            "likelihood, so standard errors are undefined; see gmmjax.diagnose"
        )
    eye = jnp.eye(info.matrix.shape[0], dtype=info.matrix.dtype)
    cov = jax.scipy.linalg.cho_solve((chol, True), eye)
    cov = 0.5 * (cov + cov.T)
    return StandardErrors(info.labels, info.values, jnp.sqrt(jnp.diag(cov)), cov)


class Diagnosis(NamedTuple):
    """What kind of point a fit ended at, with the evidence.

    Attributes:
        kind: ``"maximum"`` (a local maximum of the likelihood), ``"saddle"``
            (uphill directions remain: escape along ``escape_direction``),
            ``"degenerate"`` (flat to fourth order: a plateau), ``"minimum"`` or
            ``"not_critical"`` (a Newton step would still gain more than the
            tolerance: the fit has not converged).
        log_likelihood: ``()`` total log-likelihood at the point.
        gradient_norm: ``()`` norm of the gradient in the natural vector.
        predicted_gain: ``()`` the change of the log-likelihood a Newton step on
            the non-null directions predicts, ``1/2 sum_i (v_i . g)^2 / |lambda_i|``.
        eigenvalues: ``(p,)`` Hessian eigenvalues, ascending (the top ones are the
            evidence for a saddle).
        escape_direction: ``(p,)`` unit ascent direction in the natural vector, or
            ``None`` at a maximum.
        escape_order: derivative order of the ascent (1 gradient, 2 positive
            curvature, 3 or 4 the higher-order test); 0 without one.
        labels: ``p`` labels of the natural vector.
    """

    kind: str
    log_likelihood: jax.Array
    gradient_norm: jax.Array
    predicted_gain: jax.Array
    eigenvalues: jax.Array
    escape_direction: jax.Array | None
    escape_order: int
    labels: tuple[str, ...]

    def __str__(self) -> str:
        top = ", ".join(f"{float(v):.4g}" for v in self.eigenvalues[::-1][:3])
        lines = [
            f"kind: {self.kind}",
            f"log-likelihood: {float(self.log_likelihood):.6g}",
            f"gradient norm: {float(self.gradient_norm):.3g}",
            f"predicted Newton gain: {float(self.predicted_gain):.3g}",
            f"top Hessian eigenvalues: {top}",
        ]
        if self.escape_direction is not None:
            d = np.asarray(self.escape_direction)
            order = np.argsort(-np.abs(d))[:4]
            parts = ", ".join(f"{self.labels[i]} {d[i]:+.3f}" for i in order)
            lines.append(f"escape direction (order {self.escape_order}): {parts}")
        return "\n".join(lines)


def diagnose(result, x, *, sample_weight=None, tol=1e-6, eigen_tol=1e-6):
    """Say whether a fit ended at a local maximum, a saddle or a flat region.

    The total log-likelihood ``L`` is analysed in the natural parameter vector (no
    logit gauge, see the module docstring) with the machinery of
    :func:`gmmjax.landscape.classify`: the gradient ``g``, the exact Hessian
    (eigenpairs ``lambda_i, v_i``) and, when the Hessian is singular, the
    fourth-order test.

    **Converged?** A fit stopped by a tolerance is never exactly critical, and the
    gradient's size depends on the units of each parameter. The test is instead
    the gain a Newton step would still make, ``1/2 sum_i (v_i . g)^2 / |lambda_i|``
    over the non-null directions, which is unit-free and on the scale of EM's own
    stopping rule: the point counts as converged when this gain is at most
    ``tol * W`` (``W = sum_i w_i``, ``n`` without weights, so ``tol`` bounds the
    gain in *mean* log-likelihood) and the gradient along null directions is at
    most ``sqrt(tol * W)``. Otherwise the kind is ``"not_critical"`` and the
    escape direction is the gradient. A converged point is then classified by its
    curvature: an EM run that stalls near a saddle is reported as a saddle.

    Args:
        result: a fit result with a ``.gmm`` attribute (``gmmjax.FitResult``) or a
            bare :class:`gmmjax.GMM`.
        x: ``(n, d)`` data.
        sample_weight: optional ``(n,)`` non-negative weights.
        tol: bound on the predicted gain in mean log-likelihood (see above).
        eigen_tol: eigenvalues with ``|lambda| <= eigen_tol * max|lambda|`` are
            null (as ``tol`` of :func:`gmmjax.landscape.classify`).

    Returns:
        :class:`Diagnosis`; ``str(diagnosis)`` is a readable summary.

    Example:
        >>> import gmmjax
        >>> gmm = gmmjax.GMM.from_natural([1.0], [[0.0]], [1.0],
        ...                               covariance_type="spherical")
        >>> gmmjax.diagnose(gmm, [[-1.0], [1.0]]).kind
        'maximum'
    """
    gmm = result if isinstance(result, GMM) else getattr(result, "gmm", None)
    if not isinstance(gmm, GMM):
        raise TypeError(
            "result must be a gmmjax.GMM or have a .gmm attribute, got "
            f"{type(result).__name__}"
        )
    tol = _check_tol(tol, "tol")
    f, theta = _objective(gmm, x, sample_weight)
    x_arr, w = prepare(gmm, x, sample_weight)
    total = x_arr.shape[0] if w is None else float(jnp.sum(w))
    analysis = _analyze(f, theta, eigen_tol, math.inf)
    point = analysis.point
    g = jax.grad(f)(theta)
    coef = point.eigenvectors.T @ g
    vals = point.eigenvalues
    thr = float(eigen_tol) * max(1.0, float(jnp.max(jnp.abs(vals))))
    curved = jnp.abs(vals) > thr
    safe = jnp.where(curved, jnp.abs(vals), 1.0)
    gain = 0.5 * jnp.sum(jnp.where(curved, coef**2 / safe, 0.0))
    null_gradient = jnp.linalg.norm(jnp.where(curved, 0.0, coef))
    converged = float(gain) <= tol * total and float(null_gradient) <= math.sqrt(
        tol * total
    )
    if converged:
        kind, escape = point.kind, analysis.escape
        escape_vec = None if escape is None else escape.direction
        order = 0 if escape is None else escape.order
    else:
        kind, escape_vec, order = "not_critical", g / jnp.linalg.norm(g), 1
    return Diagnosis(
        kind=kind,
        log_likelihood=f(theta),
        gradient_norm=point.gradient_norm,
        predicted_gain=gain,
        eigenvalues=vals,
        escape_direction=escape_vec,
        escape_order=order,
        labels=natural_labels(gmm),
    )
