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
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _krylov
from ._density import prepare, total_log_likelihood
from ._gmm import GMM
from ._krylov import Terms
from ._landscape import (
    BLOCK_BYTES,
    Route,
    SecondOrder,
    check_chunk_size,
    check_method,
    check_tol,
    choose_route,
    decide,
    dense_fits,
    reducer,
    second_order_route,
)
from ._levels import ByWork
from ._prior import _log_prior, check_prior, check_prior_shapes, log_prior_density
from ._stored import call_stored

__all__ = [
    "Diagnosis",
    "MixtureRoute",
    "ObservedInformation",
    "StandardErrors",
    "Whitening",
    "diagnose",
    "fitted_gmm",
    "from_natural_vector",
    "likelihood_terms",
    "mixture_route",
    "natural_labels",
    "natural_vector",
    "observed_information",
    "standard_errors",
    "unwhiten",
    "whitening",
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
# close over no array, so each compiles once per covariance type, shapes, dtype
# and route (STYLE rule 15): a second diagnosis of a same-shaped fit compiles
# nothing.


def _log_likelihood_at(theta, gmm, x, w):
    """``L(theta)``: the total log-likelihood at the natural vector ``theta`` (of
    the shapes and type of ``gmm``)."""
    return total_log_likelihood(from_natural_vector(theta, gmm), x, w)


def _log_prior_at(theta, gmm, prior):
    """``log p(theta)`` under a :class:`gmmjax.Prior` at the natural vector."""
    return log_prior_density(from_natural_vector(theta, gmm), prior)


# bytes of tangents per sample and direction, in units of k (d + 2) items: the
# whitened residuals, distances and responsibilities of one sample and their
# derivatives (measured: a peak of about 3 MB a direction for n = 1,000, k = 5,
# d = 16 in float64, i.e. 5 units; 8 leaves a margin)
_TANGENT_UNITS = 8


class MixtureRoute(NamedTuple):
    """A :class:`gmmjax._landscape.Route` and the rows per chunk of samples
    (static: the derivatives are accumulated chunk by chunk of ``rows``)."""

    route: Route
    rows: int


def mixture_route(gmm, x, method, krylov_dim=None, block=None) -> MixtureRoute:
    """The route of a second-order analysis of ``gmm`` on ``x`` and its chunks.

    A direction's tangents cost ``_TANGENT_UNITS k (d + 2)`` items a sample. The
    dense route batches as many directions as :data:`BLOCK_BYTES` holds for the
    whole sample; when not even one fits (or on the matrix-free route, one
    direction at a time) the samples are split into chunks that fit.
    """
    n, d = x.shape
    k = gmm.n_components
    per_row = _TANGENT_UNITS * k * (d + 2) * x.dtype.itemsize
    p = len(natural_labels(gmm))
    route = choose_route(
        p, x.dtype, method, direction_bytes=n * per_row, krylov_dim=krylov_dim
    )
    if block is not None and route.method == "dense":
        route = route._replace(block=min(block, p))
    directions = route.block if route.method == "dense" else 1
    rows = int(np.clip(BLOCK_BYTES // (per_row * directions), 1, n))
    # equal chunks: as little padding as possible
    rows = -(-n // -(-n // rows))
    return MixtureRoute(route, rows)


def _chunked(x, w, rows: int):
    """``(x, w)`` as ``(n_chunks, rows, ...)`` chunks, padded with zero-weight
    rows (which leave every weighted sum unchanged)."""
    n = x.shape[0]
    n_chunks = -(-n // rows)
    pad = n_chunks * rows - n
    if w is None:
        w = jnp.ones(n, x.dtype)
    x = jnp.pad(x, ((0, pad), (0, 0)))
    w = jnp.pad(w, (0, pad))
    return x.reshape(n_chunks, rows, -1), w.reshape(n_chunks, rows)


def likelihood_terms(gmm, x, w, rows, white=None, total=None, prior=None) -> Terms:
    """``L`` at the natural vector (or, with ``white`` and ``total``, the mean
    log-likelihood in whitened coordinates around the mixture's own natural
    vector) as a sum over chunks of rows; with a :class:`gmmjax.Prior`, the
    log posterior ``L + log p`` (the log prior one extra term)."""
    if white is None:

        def term(theta, chunk):
            return _log_likelihood_at(theta, gmm, *chunk)

        def extra(theta):
            return _log_prior_at(theta, gmm, prior)

    else:
        theta = natural_vector(gmm).astype(x.dtype)

        def term(v, chunk):
            return _whitened(v, gmm, *chunk, theta, white, total)

        def extra(v):
            return _whitened_prior(v, gmm, theta, white, total, prior)

    return Terms(term, _chunked(x, w, rows), None if prior is None else extra)


@functools.partial(jax.jit, static_argnums=3)
def _information(gmm, x, w, route: MixtureRoute, prior):
    """``(theta (p,), I (p, p))``: the natural vector and minus the Hessian of L
    (of ``L + log p`` with a prior)."""
    theta = natural_vector(gmm).astype(x.dtype)
    terms = likelihood_terms(gmm, x, w, route.rows, prior=prior)
    h = _krylov.dense_hessian(terms, theta, route.route.block)[2]
    return theta, -h


@functools.partial(jax.jit, static_argnums=3)
def _information_matvec(gmm, x, w, rows, vectors, prior):
    """``I V`` for the ``(b, p)`` rows of ``vectors``, matrix-free."""
    theta = natural_vector(gmm).astype(x.dtype)
    terms = likelihood_terms(gmm, x, w, rows, prior=prior)
    return -_krylov.hvp(terms, theta, vectors.astype(x.dtype))[2]


@jax.jit
def _inverse_information(matrix):
    """``(positive definite?, errors (p,), I^-1 (p, p))`` through the Cholesky
    factor of ``I``."""
    chol = jnp.linalg.cholesky(matrix)
    eye = jnp.eye(matrix.shape[0], dtype=matrix.dtype)
    cov = jax.scipy.linalg.cho_solve((chol, True), eye)
    cov = 0.5 * (cov + cov.T)
    return jnp.all(jnp.isfinite(chol)), jnp.sqrt(jnp.diag(cov)), cov


@functools.partial(jax.jit, static_argnums=(3, 5))
def _inverse_columns(gmm, x, w, rows, selected, max_steps, prior):
    """Columns ``selected`` of ``I^-1`` by conjugate gradients, matrix-free.

    Solved in the whitened coordinates of :func:`diagnose` (:func:`unwhiten`),
    where ``A = T^T I T / W`` is close to the identity at a well-identified
    maximum: ``I^-1 = T A^-1 T^T / W``, and the column ``j`` is ``T A^-1 (T^T
    e_j) / W``. Returns ``(columns (s, p), every solve converged, A positive
    definite on every Krylov space)``.
    """
    total = jnp.asarray(x.shape[0], x.dtype) if w is None else jnp.sum(w)
    white = whitening(gmm)
    terms = likelihood_terms(gmm, x, w, rows, white, total, prior)
    p = len(natural_labels(gmm))
    v0 = jnp.zeros(p, x.dtype)
    eye = jnp.eye(p, dtype=x.dtype)[selected]
    rtol = 1e-10 if x.dtype == jnp.float64 else 1e-4

    def matvec(v):
        return -_krylov.hvp(terms, v0, v[None])[2][0]

    def transpose(e):
        return jax.linear_transpose(lambda v: unwhiten(v, gmm, white), v0)(e)[0]

    def one(e):
        return _krylov.conjugate_gradients(
            matvec, transpose(e), rtol=rtol, max_steps=max_steps
        )

    # a few columns at a time: every column is a batch of tangents
    y, converged, definite = jax.lax.map(one, eye, batch_size=8)
    columns = jax.vmap(lambda v: unwhiten(v, gmm, white))(y) / total
    return columns, jnp.all(converged), jnp.all(definite)


class ObservedInformation(NamedTuple):
    """Observed information of a mixture in its labelled natural parameter vector.

    Attributes:
        labels: ``p`` names such as ``"weights[0]"``, ``"means[1,0]"``,
            ``"covariances[0,0,1]"``.
        values: ``(p,)`` the natural parameters at the point.
        matrix: ``(p, p)`` minus the Hessian of the total log-likelihood, or
            ``None`` on the matrix-free route.
        matvec: ``v -> I v`` for a ``(p,)`` or ``(b, p)`` array (rows), on both
            routes (matrix-free: Hessian-vector products, one compiled program
            per shapes).
    """

    labels: tuple[str, ...]
    values: jax.Array
    matrix: jax.Array | None
    matvec: Callable


class StandardErrors(NamedTuple):
    """Wald standard errors of the natural parameters (all, or those asked for).

    Attributes:
        labels: ``s`` parameter names (as in :class:`ObservedInformation`).
        values: ``(s,)`` the natural parameters (the estimates).
        errors: ``(s,)`` ``sqrt(diag(I^{-1}))``.
        covariance: ``(s, s)`` the block of the inverse observed information
            ``I^{-1}`` of these parameters.
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


def _matrix_method(method, gmm, x) -> str:
    """``method`` of the information functions: ``"auto"`` is the matrix
    wherever it fits in memory (all ``p`` errors need all of it anyway), the
    matrix-free route only where it does not."""
    if check_method(method) != "auto":
        return method
    fits = dense_fits(len(natural_labels(gmm)), x.dtype, factor=4)
    return "dense" if fits else "lanczos"


def _rows_matvec(gmm, x, w, rows, prior):
    """``v -> I v`` for ``(p,)`` or ``(b, p)`` ``v``, matrix-free."""

    def matvec(v):
        v = jnp.asarray(v)
        out = _information_matvec(gmm, x, w, rows, jnp.atleast_2d(v), prior)
        return out[0] if v.ndim == 1 else out

    return matvec


def observed_information(
    gmm: GMM, x, *, sample_weight=None, chunk_size=None, method="auto", prior=None
) -> ObservedInformation:
    """Observed Fisher information ``I = -d^2 L / d theta^2`` of a mixture.

    ``L(theta) = sum_i w_i log p(x_i | theta)`` is the total (weighted) log-likelihood
    (:func:`gmmjax.log_likelihood`) and ``theta`` the natural parameter vector of the
    :mod:`module docstring <gmmjax._information>` (weights without the last, means,
    covariance entries, with their labels). Exact: Hessian-vector products
    (forward over reverse) through the map ``theta -> GMM`` (last weight ``1 -
    sum`` of the others, symmetric covariances from their upper triangle),
    accumulated over chunks of samples, so memory is ``O(p^2)`` for the matrix,
    never ``O(n p^2)``. With a ``prior`` it is minus the Hessian of the log
    posterior ``L + log p(theta)`` (:func:`gmmjax.log_prior`, an exact extra
    term), the precision of the Laplace approximation at a MAP fit.

    Args:
        gmm: the mixture (``k`` components, ``d`` features).
        x: ``(n, d)`` data.
        sample_weight: optional ``(n,)`` non-negative weights.
        chunk_size: directions per batch of Hessian-vector products (default: as
            many as fit in 512 MiB of tangents).
        method: ``"dense"`` (the matrix), ``"lanczos"`` (matrix-free: no
            matrix, only ``matvec``) or ``"auto"`` (the matrix wherever it fits
            in memory). A dense matrix that would not fit raises a
            ``ValueError`` that names the size and the matrix-free option.
        prior: ``None`` or the :class:`gmmjax.Prior` of a MAP fit.

    Returns:
        :class:`ObservedInformation` with ``labels``, ``values`` ``(p,)``,
        ``matrix`` ``(p, p)`` (``None`` matrix-free) and ``matvec``.

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
    _check_prior(prior, gmm)
    chunk_size = check_chunk_size(chunk_size)
    route = mixture_route(gmm, x, _matrix_method(method, gmm, x), block=chunk_size)
    labels = natural_labels(gmm)
    if route.route.method == "lanczos":
        theta = jax.device_put(np.asarray(natural_vector(gmm), x.dtype))
        return ObservedInformation(
            labels, theta, None, _rows_matvec(gmm, x, w, route.rows, prior)
        )
    theta, matrix = _information(gmm, x, w, route, prior)

    def matvec(v):
        return jnp.asarray(v) @ matrix

    return ObservedInformation(labels, theta, matrix, matvec)


def _selected(labels, params) -> np.ndarray:
    """Indices of ``params`` (labels or integer positions) in ``labels``."""
    if params is None:
        return np.arange(len(labels))
    if isinstance(params, (str, int)):
        params = [params]
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for item in params:
        if isinstance(item, str):
            if item not in index:
                raise ValueError(
                    f"params: unknown parameter {item!r}; the labels are "
                    "gmmjax.natural_labels(gmm), e.g. " + ", ".join(labels[:3])
                )
            out.append(index[item])
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < len(labels):
                raise ValueError(
                    f"params: index {item} out of range for {len(labels)} parameters"
                )
            out.append(int(item))
        else:
            raise TypeError(
                "params must hold parameter labels (str) or indices (int), got "
                f"{type(item).__name__}"
            )
    if not out:
        raise ValueError("params must name at least one parameter")
    return np.asarray(out)


def _not_definite(smallest: str) -> ValueError:
    return ValueError(
        f"the observed information is not positive definite ({smallest}): the "
        "point is not a strict local maximum of the likelihood, so standard "
        "errors are undefined; see gmmjax.diagnose"
    )


def standard_errors(
    gmm: GMM,
    x,
    *,
    sample_weight=None,
    chunk_size=None,
    params=None,
    method="auto",
    prior=None,
) -> StandardErrors:
    """Wald standard errors ``sqrt(diag(I^{-1}))`` from the observed information.

    ``I`` is :func:`observed_information`. Dense, it is inverted through its
    Cholesky factor. Matrix-free, the columns of ``I^{-1}`` of the parameters
    in ``params`` are solved for by conjugate gradients on Hessian-vector
    products (in the standardized coordinates of :func:`diagnose`, where ``I``
    is well conditioned), one batched solve for all of them. At a strict local
    maximum of the likelihood ``I`` is positive definite; anywhere else (a
    saddle, a flat direction, a point that is not critical) the errors have no
    meaning and a ``ValueError`` says so.

    Args:
        gmm: the mixture, normally a maximum-likelihood fit.
        x: ``(n, d)`` data.
        sample_weight: optional ``(n,)`` non-negative weights.
        chunk_size: as in :func:`observed_information`.
        params: the parameters wanted: labels (``"means[0,1]"``) or positions
            in the natural vector; all of them by default.
        method: as in :func:`observed_information`.
        prior: ``None`` or the :class:`gmmjax.Prior` of a MAP fit: the errors
            are then the Laplace approximation's posterior standard deviations
            ``sqrt(diag(I^{-1}))`` with ``I`` minus the log posterior's
            Hessian.

    Returns:
        :class:`StandardErrors` of the parameters asked for (``labels``,
        ``values``, ``errors``, ``covariance`` their block of ``I^{-1}``).

    Raises:
        ValueError: when the observed information is not positive definite, or
            a conjugate-gradient solve does not converge.

    Example:
        >>> import gmmjax
        >>> gmm = gmmjax.GMM.from_natural([1.0], [[0.0]], [1.0],
        ...                               covariance_type="spherical")
        >>> se = gmmjax.standard_errors(gmm, [[-1.0], [1.0]])
        >>> [round(float(e), 6) for e in se.errors]
        [0.707107, 1.0]
        >>> gmmjax.standard_errors(gmm, [[-1.0], [1.0]],
        ...                        params=["covariances[0]"]).labels
        ('covariances[0]',)
    """
    check_method(method)
    labels = natural_labels(gmm)
    selected = _selected(labels, params)
    chosen = tuple(labels[i] for i in selected)
    info = observed_information(
        gmm,
        x,
        sample_weight=sample_weight,
        chunk_size=chunk_size,
        method=method,
        prior=prior,
    )
    if info.matrix is not None:
        definite, _, cov = _inverse_information(info.matrix)
        if not bool(definite):
            smallest = float(np.linalg.eigvalsh(np.asarray(info.matrix))[0])
            raise _not_definite(f"smallest eigenvalue {smallest:.3g}")
        cov = np.asarray(cov)[np.ix_(selected, selected)]
    else:
        x, w = prepare(gmm, x, sample_weight)
        rows = mixture_route(gmm, x, "lanczos").rows
        p = len(labels)
        columns, converged, definite = _inverse_columns(
            gmm, x, w, rows, jax.device_put(selected), 4 * p, prior
        )
        if not bool(definite):
            raise _not_definite("a conjugate-gradient direction of negative curvature")
        if not bool(converged):
            raise ValueError(
                f"conjugate gradients did not converge in {4 * p} steps: the "
                "observed information is nearly singular; see gmmjax.diagnose"
            )
        cov = np.asarray(columns)[:, selected]
        cov = 0.5 * (cov + cov.T)
    values = np.asarray(info.values)[selected]
    errors = np.sqrt(np.diag(cov))
    return StandardErrors(
        chosen,
        jax.device_put(values),
        jax.device_put(errors),
        jax.device_put(cov),
    )


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
    (``W = sum_i w_i``, ``n`` without weights) in *whitened* natural parameters
    (see :func:`diagnose`): a unit step carries one unit of complete-data
    information per sample, so they do not depend on the number of samples or
    on the units of the features, and at a maximum the eigenvalues lie near
    ``[-1, 0]``: ``-1`` where the data pin a direction down as well as if every
    sample's component were known, near ``0`` where most of that information is
    missing.

    Attributes:
        kind: one of the words above.
        log_likelihood: ``()`` total log-likelihood at the point.
        gradient_norm: ``()`` norm of the standardized gradient of ``L / W``.
        predicted_gain: ``()`` the gain in mean log-likelihood that one more step
            would still make (the Newton gain of :func:`diagnose`); the point is
            critical when it is at most ``tol``.
        eigenvalues: ``(p,)`` eigenvalues of the standardized Hessian of
            ``L / W``, ascending (the top ones are the evidence for a saddle);
            matrix-free, the ``m`` Ritz values found (the extreme ones
            converged).
        escape_direction: ``(p,)`` unit ascent direction in the natural vector
            (the standardized one mapped back), or ``None`` at a maximum.
        escape_order: derivative order of the ascent (1 gradient, 2 positive
            curvature, 3 or 4 the higher-order test); 0 without one.
        labels: ``p`` labels of the natural vector.
        message: what ``kind`` means at this point, in words.
        advice: what to do about it (empty at a maximum).
        method: the route that ran: ``"dense"`` (every eigenvalue) or
            ``"lanczos"`` (matrix-free, the extreme Ritz values).
        objective: ``()`` the total objective diagnosed: the log-likelihood, or
            with a prior the log posterior ``L + log p(theta)``.
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
    method: str = "dense"
    objective: jax.Array | None = None

    def __str__(self) -> str:
        top = ", ".join(
            f"{float(v):.4g}" for v in np.asarray(self.eigenvalues)[::-1][:3]
        )
        route = ", matrix-free" if self.method == "lanczos" else ""
        lines = [
            f"kind: {self.kind} ({self.message})",
            f"log-likelihood: {float(self.log_likelihood):.6g}",
            *(
                [f"log posterior: {float(self.objective):.6g}"]
                if self.objective is not None
                and float(self.objective) != float(self.log_likelihood)
                else []
            ),
            f"predicted gain per sample: {float(self.predicted_gain):.3g}",
            f"gradient norm (whitened, per sample): {float(self.gradient_norm):.3g}",
            f"top Hessian eigenvalues (whitened, per sample{route}): {top}",
        ]
        if self.escape_direction is not None:
            d = np.asarray(self.escape_direction)
            order = np.argsort(-np.abs(d))[:4]
            parts = ", ".join(f"{self.labels[i]} {d[i]:+.3f}" for i in order)
            lines.append(f"escape direction (order {self.escape_order}): {parts}")
        if self.advice:
            lines.append(f"advice: {self.advice}")
        return "\n".join(lines)


class Whitening(NamedTuple):
    """The factors of the map ``v -> T v`` of :func:`unwhiten` (arrays only).

    Attributes:
        weights: ``(k-1, k-1)`` lower Cholesky factor of ``diag(w') - w' w'^T``
            (``w'`` the weights without the last): the multinomial covariance.
        scales: ``(k,)`` ``1 / sqrt(w_j)``.
        factors: the covariances' square roots: ``(k, d, d)`` Cholesky factors
            (full), ``(d, d)`` (tied), ``(k, d)`` standard deviations (diag),
            ``(k,)`` (spherical).
    """

    weights: jax.Array
    scales: jax.Array
    factors: jax.Array


def whitening(gmm: GMM) -> Whitening:
    """:class:`Whitening` of the mixture at its own parameters (no gradient)."""
    gmm = jax.lax.stop_gradient(gmm)
    w = gmm.weights
    head = w[:-1]
    weights = jnp.linalg.cholesky(jnp.diag(head) - jnp.outer(head, head))
    cov = gmm.covariances
    if gmm.covariance_type in ("full", "tied"):
        factors = jnp.linalg.cholesky(cov)
    else:
        factors = jnp.sqrt(cov)
    return Whitening(weights, 1.0 / jnp.sqrt(w), factors)


def unwhiten(v, gmm: GMM, white: Whitening) -> jax.Array:
    """``T v``: a displacement of the natural vector from whitened coordinates.

    ``T`` is the inverse square root of the complete-data (per-sample) Fisher
    information of the mixture at its parameters: the information the data
    would carry if every sample's component were known. Per block, with ``L_j
    L_j^T = Sigma_j``:

    - weights: ``C v_w`` with ``C C^T = diag(w') - w' w'^T``;
    - ``means[j]``: ``L_j v_j / sqrt(w_j)``;
    - ``covariances[j]``: ``sqrt(2 / w_j) L_j S(v_j) L_j^T``, where ``S(v)`` is
      the symmetric matrix with diagonal ``v_aa`` and off-diagonal ``v_ab /
      sqrt(2)`` (tied: ``sqrt(2) L S L^T``; diag: ``sqrt(2 / w_j) sigma_ja^2
      v_ja``; spherical: ``sqrt(2 / (w_j d)) sigma_j^2 v_j``).

    Then ``T^T I_complete T = 1``: in ``v`` every direction carries one unit of
    complete-data information per sample, and the per-sample Hessian of the
    log-likelihood is ``-(1 - F)``, ``F`` the fraction of missing information,
    whose largest eigenvalue is EM's rate of convergence. The map is linear and
    follows the units of the data.
    """
    k, d, ctype = gmm.n_components, gmm.n_features, gmm.covariance_type
    dtype = v.dtype
    vw = v[: k - 1]
    vm = v[k - 1 : k - 1 + k * d].reshape(k, d)
    vc = v[k - 1 + k * d :]
    dw = white.weights.astype(dtype) @ vw
    scales = white.scales.astype(dtype)
    factors = white.factors.astype(dtype)
    if ctype == "full":
        dm = jnp.einsum("jab,jb->ja", factors, vm) * scales[:, None]
    elif ctype == "tied":
        dm = (vm @ factors.T) * scales[:, None]
    elif ctype == "diag":
        dm = factors * vm * scales[:, None]
    else:
        dm = factors[:, None] * vm * scales[:, None]
    if ctype in ("full", "tied"):
        rows, cols = np.triu_indices(d)
        half = np.where(rows == cols, 1.0, 1.0 / np.sqrt(2.0)).astype(dtype)
        lead = (k,) if ctype == "full" else ()
        upper = vc.reshape((*lead, len(rows))) * half
        # a gather, not a scatter: its transpose (T^T, for the matrix-free
        # standard errors) is a plain scatter-add
        where = np.zeros((d, d), int)
        where[rows, cols] = where[cols, rows] = np.arange(len(rows))
        sym = upper[..., where]
        moved = factors @ sym @ jnp.swapaxes(factors, -1, -2)
        if ctype == "full":
            moved = moved * (math.sqrt(2.0) * scales)[:, None, None]
        else:
            moved = math.sqrt(2.0) * moved
        dc = moved[..., rows, cols].reshape(-1)
    elif ctype == "diag":
        dc = (math.sqrt(2.0) * scales[:, None] * factors**2 * vc.reshape(k, d)).ravel()
    else:
        dc = math.sqrt(2.0 / d) * scales * factors**2 * vc
    return jnp.concatenate([dw, dm.reshape(-1), dc])


def _whitened(v, gmm, x, w, theta, white, total):
    """The mean log-likelihood ``L(theta + T v) / W`` in whitened coordinates."""
    return _log_likelihood_at(theta + unwhiten(v, gmm, white), gmm, x, w) / total


def _whitened_prior(v, gmm, theta, white, total, prior):
    """``log p(theta + T v) / W``: a prior's term of the mean log posterior."""
    return _log_prior_at(theta + unwhiten(v, gmm, white), gmm, prior) / total


def _whitened_posterior(v, gmm, x, w, theta, white, total, prior):
    """The mean log posterior ``(L + log p)(theta + T v) / W``, whitened."""
    likelihood = _whitened(v, gmm, x, w, theta, white, total)
    return likelihood + _whitened_prior(v, gmm, theta, white, total, prior)


_to_natural = jax.jit(unwhiten)


class _Evidence(NamedTuple):
    """What one compiled program finds for :func:`diagnose`."""

    second: SecondOrder  # of _whitened at v = 0
    predicted_gain: jax.Array  # ()
    log_likelihood: jax.Array  # () L(theta)
    theta: jax.Array  # (p,) the natural vector
    white: Whitening
    total: jax.Array  # () W


def _evidence_program(gmm, x, w, prior, route: MixtureRoute) -> _Evidence:
    """Everything a diagnosis needs to second order, in one program."""
    theta = natural_vector(gmm).astype(x.dtype)
    total = jnp.asarray(x.shape[0], x.dtype) if w is None else jnp.sum(w)
    white = whitening(gmm)
    terms = likelihood_terms(gmm, x, w, route.rows, white, total, prior)
    second = second_order_route(terms, jnp.zeros_like(theta), route.route)
    # Ritz slots left unfilled (nan) gain nothing
    filled = ~jnp.isnan(second.eigenvalues)
    coef = jnp.where(filled, jnp.abs(second.gradient_coefficients), 0.0)
    curv = jnp.where(filled, jnp.abs(second.eigenvalues), 1.0)
    inside = coef <= curv
    newton = coef**2 / (2.0 * jnp.where(curv > 0, curv, 1.0))
    gain = jnp.sum(jnp.where(inside, newton, coef - 0.5 * curv))
    # L(theta) = W L(theta + T 0) / W: the same forward pass
    return _Evidence(second, gain, second.value * total, theta, white, total)


# The diagnosis program runs once per diagnosis, so its compilation is most of
# its cost: on Old Faithful (k = 2, full) XLA's default optimization spends about
# 2.5 s of CPU compiling it and level 0 about 1.7 s, for the same ~10 ms run.
# The unoptimized code runs slower on large problems (n = 20,000, p = 83: 1.5 s
# against 1.1 s): its work is counted in sample-parameter pairs.
_evidence = ByWork(
    _evidence_program,
    work=lambda gmm, x, w, prior, route: x.shape[0] * len(natural_labels(gmm)),
    static_argnames=("route",),
)


def _check_prior(prior, gmm: GMM) -> None:
    """A ``prior`` argument: ``None``, or a :class:`gmmjax.Prior` for ``gmm``."""
    if prior is not None:
        check_prior(prior)
        check_prior_shapes(prior, gmm.n_features, gmm.covariance_type)


def fitted_gmm(result) -> GMM:
    """The mixture of a fit result (its ``.gmm``) or a bare :class:`GMM`."""
    gmm = result if isinstance(result, GMM) else getattr(result, "gmm", None)
    if not isinstance(gmm, GMM):
        raise TypeError(
            "result must be a gmmjax.GMM or have a .gmm attribute, got "
            f"{type(result).__name__}"
        )
    return gmm


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
            "restart from other starts, or step along escape_direction and fit on "
            "(gmmjax.escape_saddle does both in one call)",
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


def diagnose(
    result,
    x,
    *,
    sample_weight=None,
    tol=1e-6,
    eigen_tol=1e-6,
    method="auto",
    krylov_dim=None,
    prior=None,
):
    """Say whether a fit ended at a local maximum, a saddle or a flat region.

    **Coordinates.** The mean log-likelihood ``L / W`` (``W = sum_i w_i``, ``n``
    without weights) is analysed in whitened coordinates ``v`` of the natural
    vector (module docstring; no logit gauge): ``theta = theta_0 + T v``, with
    ``T`` the inverse square root of the *complete-data* Fisher information per
    sample at the fit (:func:`unwhiten`: ``L_j / sqrt(w_j)`` for a mean,
    ``sqrt(2 / w_j) L_j S L_j^T`` for a covariance, the multinomial covariance's
    factor for the weights). Its gradient ``g``, exact Hessian (eigenpairs
    ``lambda_i, v_i``) and, where the Hessian is singular, the fourth-order
    test of :func:`gmmjax.landscape.classify` decide the kind; a linear change
    of coordinates changes no kind (Sylvester's law of inertia). In these
    coordinates the Hessian is ``-(1 - F)``, ``F`` the fraction of missing
    information (whose largest eigenvalue is EM's rate of convergence), so
    curvatures do not grow with ``n``, do not depend on the units of the
    features, lie near ``[-1, 0]`` at a maximum, and the relative null test
    ``|lambda| <= eigen_tol * max(1, max|lambda|)`` compares like with like.
    (Three full components on Old Faithful, whose features have variances 1.3
    and 185: the Hessian of the total log-likelihood in the raw natural vector
    runs from ``-2e-4`` to ``-2e4``, and at ``eigen_tol = 1e-6`` two genuine
    curvatures counted as flat, a maximum reported as undecidable.) The same
    coordinates make the matrix-free route work: a spectrum spread over
    ``[-1, 0]`` has its top converge in a few dozen products, where the data's
    standard deviations as scales left a spread of ``10^3`` and needed most of
    ``p`` products.

    **Critical?** A fit stopped by a tolerance is never exactly critical. The test
    is the gain in mean log-likelihood that one more step would still make, on the
    quadratic model ``-1/2 sum_i |lambda_i| t_i^2 + sum_i (v_i . g) t_i`` with
    every ``|t_i| <= 1`` (one unit of complete-data information per sample):

        gain = sum_i  (v_i . g)^2 / (2 |lambda_i|)   where |v_i . g| <= |lambda_i|,
                      |v_i . g| - |lambda_i| / 2      elsewhere.

    Near a maximum this is half the squared Newton decrement ``g^T |H|^-1 g / 2``,
    which does not depend on how the parameters are scaled and predicts the
    log-likelihood the fit has still to gain (on Old Faithful, within a few
    percent); along flat directions, where the Newton step is unbounded, it is the
    gradient's gain over one unit step. The point is critical when
    ``gain <= tol``: the same number, in the same unit (mean log-likelihood), as
    the default ``tol`` of :func:`gmmjax.fit`. That test bounds the gain of the
    fitter's *last step*, which is smaller than the gain left when the fitter
    crawls (EM along a flat ridge, Adam with a small learning rate), so a
    ``CONVERGED`` fit can still be ``"not_critical"``: fit on with a smaller
    ``tol`` (the diagnosis' ``advice`` says so). A critical point is classified by
    its curvature: an EM run that stalls near a saddle is a saddle.

    **Cost.** One compiled program per covariance type, shapes, dtype and route
    finds the log-likelihood, gradient, Hessian eigenpairs and gain; a later
    diagnosis of the same shapes compiles nothing. The third- and fourth-order
    program is compiled and run only at a critical point with a singular
    Hessian. Every derivative is accumulated over chunks of samples from
    Hessian-vector products, so memory never grows like ``n p^2``.

    **Matrix-free.** Past 500 parameters (or with ``method="lanczos"``) the
    Hessian is never formed: a block Lanczos method (:func:`gmmjax._krylov.ritz`)
    on the Krylov space of the gradient and a random vector finds its extreme
    eigenpairs, which decide a maximum or a saddle and give the escape
    direction; the gradient lies in that space, so the gain is computed from
    the same Ritz pairs. ``eigenvalues`` are then the Ritz values (the extreme
    ones converged), and a null direction is one whose Ritz pair converged
    within ``eigen_tol``; the fourth-order test inverts the curved part by
    conjugate gradients.

    Args:
        result: a fit result with a ``.gmm`` attribute (``gmmjax.FitResult``) or a
            bare :class:`gmmjax.GMM`.
        x: ``(n, d)`` data.
        sample_weight: optional ``(n,)`` non-negative weights.
        tol: bound on the predicted gain in mean log-likelihood (see above).
        eigen_tol: eigenvalues of the standardized Hessian with ``|lambda| <=
            eigen_tol * max(1, max|lambda|)`` are null (``tol`` of
            :func:`gmmjax.landscape.classify`).
        method: ``"dense"`` (every eigenpair; memory ``O(p^2)``, time ``p``
            Hessian-vector products and an ``O(p^3)`` eigendecomposition),
            ``"lanczos"`` (matrix-free: the extreme eigenpairs from at most
            ``krylov_dim`` products, memory ``O(krylov_dim p)``) or ``"auto"``:
            dense up to 500 parameters. A dense diagnosis that would not fit
            in memory raises a ``ValueError`` that names the size and the
            matrix-free option.
        krylov_dim: the most Hessian-vector products of the matrix-free route
            (default ``min(p, 400)``; up to 2,000 parameters the lowest pair is
            converged as well as the top ones); it stops once the extreme
            pairs converge.
        prior: ``None`` or the :class:`gmmjax.Prior` of a MAP fit: the
            objective diagnosed is then the mean log posterior ``(L + log
            p(theta)) / W``, whose maximum MAP-EM seeks (the log prior an exact
            extra term of every derivative); :attr:`Diagnosis.objective`
            holds the log posterior.

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
    gmm = fitted_gmm(result)
    tol = check_tol(tol, "tol")
    x, w = prepare(gmm, x, sample_weight)
    _check_prior(prior, gmm)
    eigen_tol = check_tol(eigen_tol, "tol")
    labels = natural_labels(gmm)
    route = mixture_route(gmm, x, method, krylov_dim)
    # kept lowered on disk (gmmjax._stored): a later process skips tracing it
    evidence = call_stored("diagnosis", _evidence, (gmm, x, w, prior), {"route": route})
    gain = float(evidence.predicted_gain)
    # the third- and fourth-order program runs (and compiles) only at a critical
    # point with a singular Hessian; off one, the gradient is the way up
    critical = gain <= tol
    args = (gmm, x, w, evidence.theta, evidence.white, evidence.total)
    objective = _whitened
    if prior is not None:
        args, objective = (*args, prior), _whitened_posterior
    reduced = reducer(
        route.route,
        objective,
        jax.device_put(np.zeros(evidence.theta.shape, x.dtype)),
        args,
    )
    point, escape = decide(
        evidence.second, eigen_tol, math.inf if critical else -math.inf, reduced
    )
    kind = point.kind
    escape_vec = None if escape is None else escape.direction
    order = 0 if escape is None else escape.order
    if escape_vec is not None:
        # back to natural units (one small program per shapes), normalized on
        # the host: eager jax ops would compile
        escape_vec = np.asarray(_to_natural(escape_vec, gmm, evidence.white))
        escape_vec = jax.device_put(escape_vec / np.linalg.norm(escape_vec))
    message, advice = _verdict(kind, point, gain, tol, order)
    objective = evidence.log_likelihood
    log_likelihood = objective
    if prior is not None:
        log_likelihood = objective - _log_prior(gmm, prior).astype(objective.dtype)
    return Diagnosis(
        kind=kind,
        log_likelihood=log_likelihood,
        gradient_norm=point.gradient_norm,
        predicted_gain=evidence.predicted_gain,
        eigenvalues=point.eigenvalues,
        escape_direction=escape_vec,
        escape_order=order,
        labels=labels,
        message=message,
        advice=advice,
        method=route.route.method,
        objective=objective,
    )
