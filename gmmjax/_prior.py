"""The conjugate prior of maximum a posteriori EM (mclust's ``priorControl``).

A :class:`Prior` is data: a pytree of arrays handed to a fitter
(``gmmjax.EM(prior=...)``), traced like ``reg_covar`` and batched with ``vmap``
like any leaf. :func:`posterior_mode` is the M step's prior part
(:func:`gmmjax._stats.maximize` calls it), :func:`log_prior_density` the log
density MAP-EM adds to the log-likelihood.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ._density import check_gmm
from ._gmm import GMM
from ._validation import (
    check_covariance_type,
    check_data,
    check_positive_int,
    concrete,
    host_array,
)

__all__ = [
    "Prior",
    "check_prior",
    "check_prior_shapes",
    "log_prior",
    "log_prior_density",
    "posterior_mode",
    "with_prior",
]


@dataclasses.dataclass(frozen=True)
class Prior:
    """The conjugate prior of MAP-EM: a pytree whose every field is a leaf.

    The Normal-inverse-Wishart prior of Fraley & Raftery (2007, "Bayesian
    regularization for normal mixture estimation and model-based clustering",
    J. Classification 24), mclust's ``priorControl()``, with a Dirichlet prior
    on the weights:

    - ``full``: ``Sigma_j ~ IW(nu, Lambda)`` and ``mu_j | Sigma_j ~ N(mu_P,
      Sigma_j / kappa)`` for every component (mclust's VVV);
    - ``tied``: one ``Sigma ~ IW(nu, Lambda)`` and ``mu_j | Sigma ~ N(mu_P,
      Sigma / kappa)`` (EEE);
    - ``diag``: every variance ``sigma_jf^2 ~ IG(nu / 2, s_f / 2)`` and ``mu_j ~
      N(mu_P, diag(sigma_j^2) / kappa)`` (VVI);
    - ``spherical``: ``sigma_j^2 ~ IG(nu / 2, s / 2)`` and ``mu_j ~ N(mu_P,
      sigma_j^2 I / kappa)`` (VII);
    - the weights: ``pi ~ Dirichlet(alpha, ..., alpha)``.

    ``IW(nu, Lambda)`` has the density ``|Lambda|^(nu/2) |Sigma|^(-(nu+d+1)/2)
    exp(-tr(Lambda Sigma^-1) / 2) / (2^(nu d/2) Gamma_d(nu/2))`` (scipy's
    ``invwishart(df=nu, scale=Lambda)``), ``IG(a, b)`` the density ``b^a
    x^(-a-1) exp(-b / x) / Gamma(a)`` (scipy's ``invgamma(a, scale=b)``). With
    ``kappa = 0`` the means' prior is flat and left out of the density.

    Pass it to :class:`gmmjax.EM` (``EM(prior=...)``): every M step then returns
    the posterior mode given the responsibilities, and the fit increases the log
    posterior ``L(theta) + log p(theta)`` (:func:`gmmjax.log_prior`), which
    :attr:`gmmjax.FitResult.objective` reports. Its fields are traced: a new
    prior of the same shapes does not recompile, and priors batch with ``vmap``.
    :meth:`Prior.default` builds mclust's default from the data; the plain
    constructor takes the fields as they are (they are checked when a fit
    starts).

    Attributes:
        shrinkage: ``()`` ``kappa >= 0``, the prior's sample size for the means
            (``0``: flat prior on the means).
        mean: ``(d,)`` ``mu_P``, the prior mean of every component's mean.
        dof: ``()`` ``nu``, the degrees of freedom: ``> d - 1`` for ``full`` and
            ``tied``, ``> 0`` for ``diag`` and ``spherical``.
        scale: ``Lambda``: a ``(d, d)`` symmetric positive definite matrix for
            ``full`` and ``tied``; for ``diag`` a number ``s > 0`` (every
            feature) or ``(d,)`` one per feature; for ``spherical`` a number.
        concentration: ``()`` ``alpha >= 1`` of the Dirichlet prior on the
            weights (``1``, the default: no effect on the fit).

    Example:
        >>> import jax.numpy as jnp, gmmjax
        >>> prior = gmmjax.Prior(shrinkage=0.01, mean=jnp.zeros(2), dof=4.0,
        ...                      scale=jnp.eye(2))
        >>> fitter = gmmjax.EM(prior=prior, reg_covar=0.0)
        >>> fitter.prior.scale.shape
        (2, 2)
    """

    shrinkage: jax.Array | float
    mean: jax.Array
    dof: jax.Array | float
    scale: jax.Array | float
    concentration: jax.Array | float = 1.0

    @classmethod
    def default(
        cls,
        x,
        *,
        n_components: int,
        covariance_type: str = "full",
        shrinkage=0.01,
        mean=None,
        dof=None,
        scale=None,
        concentration=1.0,
    ) -> Prior:
        """mclust's default prior (``priorControl()``, its ``defaultPrior``).

        For ``n`` samples in ``d`` features and ``G = n_components``: ``kappa =
        0.01``, ``mu_P`` the data's mean, ``nu = d + 2`` and the scale
        ``G^(-2/d) V``: for ``full`` and ``tied`` ``V`` is the data's sample
        covariance (its diagonal when ``n <= d``); for ``diag`` and
        ``spherical`` ``V = tr(cov(x)) / d``, the mean of the variances (a
        number). Variances are the unbiased ones (divided by ``n - 1``), as R's
        ``var``. Any argument given replaces its default. The ``diag`` and
        ``spherical`` scale is one number for every feature, so on features of
        very different scales it pulls the small variances up: standardize the
        features first, or give ``scale=`` per feature.

        Args:
            x: ``(n, d)`` data, ``n >= 2``.
            n_components: ``G``, the number of components (the default scale
                shrinks with it).
            covariance_type: ``"full"``, ``"diag"``, ``"spherical"`` or
                ``"tied"``.
            shrinkage: ``kappa``.
            mean: ``mu_P``, ``(d,)``; default the data's mean.
            dof: ``nu``; default ``d + 2``.
            scale: ``Lambda`` in the covariance type's shape (see
                :class:`Prior`); default as above.
            concentration: ``alpha`` of the weights' Dirichlet prior.

        Returns:
            The :class:`Prior`, in ``x``'s dtype.

        Example:
            >>> import gmmjax
            >>> x = gmmjax.datasets.faithful()
            >>> prior = gmmjax.Prior.default(x, n_components=2,
            ...                              covariance_type="spherical")
            >>> float(prior.dof), round(float(prior.scale), 3)
            (4.0, 46.532)
        """
        x = check_data(x)
        covariance_type = check_covariance_type(covariance_type)
        g = check_positive_int(n_components, "n_components")
        n, d = x.shape
        if n < 2:
            raise ValueError(
                f"x must have at least 2 samples for the default prior's "
                f"variances, got {n}"
            )
        host = np.asarray(x, np.float64)
        cov = np.atleast_2d(np.cov(host, rowvar=False))
        factor = (1.0 / g) ** (2.0 / d)
        if scale is None:
            if covariance_type in ("full", "tied"):
                scale = factor * (cov if n > d else np.diag(np.diag(cov)))
                if n > d and np.linalg.eigvalsh(scale)[0] <= 0:
                    raise ValueError(
                        "the default prior's scale is the data's covariance, which "
                        "is singular here (a feature is a linear combination of "
                        "others): drop that feature, or give scale= (e.g. the "
                        "diagonal of the covariance times n_components**(-2/d))"
                    )
            else:
                scale = factor * np.trace(cov) / d
        values = {
            "shrinkage": shrinkage,
            "mean": host.mean(axis=0) if mean is None else mean,
            "dof": d + 2.0 if dof is None else dof,
            "scale": scale,
            "concentration": concentration,
        }
        dtype = x.dtype
        prior = cls(
            **{k: host_array(v, f"prior.{k}", dtype) for k, v in values.items()}
        )
        check_prior(prior)
        check_prior_shapes(prior, d, covariance_type)
        return prior


jax.tree_util.register_dataclass(
    Prior,
    data_fields=["shrinkage", "mean", "dof", "scale", "concentration"],
    meta_fields=[],
)


# ------------------------------------------------------------------ validation


def _field(prior: Prior, name: str):
    """A field's concrete value as a float64 array, or ``None`` when traced."""
    value = getattr(prior, name)
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        raise TypeError(
            f"prior.{name} must be a number or an array of numbers, got {value!r}"
        )
    host = concrete(value)
    if host is None:
        return None
    if not np.issubdtype(host.dtype, np.number) or np.iscomplexobj(host):
        raise TypeError(f"prior.{name} must hold real numbers, got dtype {host.dtype}")
    return host.astype(np.float64)


def _scalar(prior: Prior, name: str, ok, requirement: str) -> None:
    v = _field(prior, name)
    if v is None:
        return
    if v.ndim != 0:
        raise ValueError(f"prior.{name} must be a number, got shape {v.shape}")
    if not (np.isfinite(v) and ok(v)):
        raise ValueError(f"prior.{name} must be a finite number {requirement}, got {v}")


def check_prior(prior) -> Prior:
    """Validate a :class:`Prior`'s values (those that are concrete).

    ``shrinkage >= 0``, ``dof > 0``, ``concentration >= 1``, a finite 1-D
    ``mean``, and a ``scale`` that is a positive number, a 1-D array of them or
    a symmetric positive definite matrix. A ``ValueError`` or ``TypeError``
    names the field.
    """
    if not isinstance(prior, Prior):
        raise TypeError(
            f"prior must be a gmmjax.Prior or None, got {type(prior).__name__}"
        )
    _scalar(prior, "shrinkage", lambda v: v >= 0, ">= 0")
    _scalar(prior, "dof", lambda v: v > 0, "> 0")
    _scalar(prior, "concentration", lambda v: v >= 1, ">= 1")
    mean = _field(prior, "mean")
    if mean is not None:
        if mean.ndim != 1:
            raise ValueError(
                f"prior.mean must be a 1-D array, one value per feature, got shape "
                f"{mean.shape}"
            )
        if not np.all(np.isfinite(mean)):
            raise ValueError("prior.mean must be finite, got NaN or infinite values")
    scale = _field(prior, "scale")
    if scale is None:
        return prior
    if scale.ndim > 2:
        raise ValueError(
            f"prior.scale must be a number, a 1-D array or a (d, d) matrix, got "
            f"shape {scale.shape}"
        )
    if not np.all(np.isfinite(scale)):
        raise ValueError("prior.scale must be finite, got NaN or infinite values")
    if scale.ndim < 2:
        if np.any(scale <= 0):
            raise ValueError(f"prior.scale must be > 0, got {scale}")
        return prior
    if scale.shape[0] != scale.shape[1]:
        raise ValueError(
            f"prior.scale must be a square matrix, got shape {scale.shape}"
        )
    if not np.allclose(scale, scale.T, rtol=1e-10, atol=0.0):
        raise ValueError("prior.scale must be symmetric")
    if np.linalg.eigvalsh(scale)[0] <= 0:
        raise ValueError("prior.scale must be positive definite")
    return prior


def check_prior_shapes(prior: Prior, n_features: int, covariance_type: str) -> None:
    """A :class:`Prior`'s shapes against the data's features and the model's
    covariance type (and ``dof > d - 1`` for an inverse-Wishart)."""
    d = n_features
    mean_shape = np.shape(prior.mean)
    if mean_shape != (d,):
        raise ValueError(
            f"prior.mean has shape {mean_shape} but the data have {d} features: "
            f"give ({d},)"
        )
    shape = np.shape(prior.scale)
    wanted = {
        "full": [(d, d)],
        "tied": [(d, d)],
        "diag": [(), (d,)],
        "spherical": [()],
    }[covariance_type]
    if shape not in wanted:
        what = " or ".join(str(s) for s in wanted)
        raise ValueError(
            f"prior.scale has shape {shape}, but a {covariance_type!r} model "
            f"with {d} features needs {what}"
        )
    dof = _field(prior, "dof")
    if covariance_type in ("full", "tied") and dof is not None and not dof > d - 1:
        raise ValueError(
            f"prior.dof must be > d - 1 = {d - 1} for an inverse-Wishart prior "
            f"({covariance_type!r} covariances), got {dof}"
        )


def with_prior(fitter, prior):
    """``fitter`` with its ``prior`` replaced, also inside a wrapper fitter's
    ``inner`` (:class:`gmmjax.Annealed`)."""
    if hasattr(fitter, "inner"):
        return dataclasses.replace(fitter, inner=with_prior(fitter.inner, prior))
    return dataclasses.replace(fitter, prior=prior)


# ------------------------------------------------------------------ the M step


def _values(prior: Prior, dtype):
    return [
        jnp.asarray(getattr(prior, f.name), dtype) for f in dataclasses.fields(Prior)
    ]


def posterior_mode(prior: Prior, nk, xbar, scatter, covariance_type, active=None):
    """The M step's posterior mode from the weighted sample moments.

    With the counts ``N_j``, sample means ``xbar_j``, scatter ``S_j = sum_i
    r_ij (x_i - xbar_j)(x_i - xbar_j)^T`` about them, ``b = 1`` when ``kappa >
    0`` (the means' prior adds ``|Sigma_j|^-1/2``) else ``0``, and the mean
    term ``M_j = kappa N_j / (kappa + N_j) (xbar_j - mu_P)(xbar_j - mu_P)^T``
    (Fraley & Raftery 2007, Table 2; mclust's ``meVVV``, ``meEEE``, ``meVVI``,
    ``meVII``)::

        mu_j      = (N_j xbar_j + kappa mu_P) / (N_j + kappa)
        full      Sigma_j   = (Lambda + S_j + M_j) / (nu + N_j + d + 1 + b)
        tied      Sigma     = (Lambda + sum_j (S_j + M_j)) / (nu + N + d + 1 + k b)
        diag      sigma_jf^2 = (s_f + S_j,ff + M_j,ff) / (nu + N_j + 2 + b)
        spherical sigma_j^2 = (s + tr S_j + tr M_j) / (nu + d N_j + 2 + d b)
        pi_j ∝ N_j + alpha - 1

    Sums and ``k`` run over the ``active`` components (all by default). With
    ``kappa = 0`` mclust's ``meVVV`` keeps ``+ 2`` in its denominator (as if
    the means' prior were there); here ``b`` follows the density.

    Args:
        prior: the :class:`Prior`.
        nk: ``(k,)`` the (floored) counts.
        xbar: ``(k, d)`` the sample means.
        scatter: ``S_j``: ``(k, d, d)`` for ``full`` and ``tied``, its diagonal
            ``(k, d)`` for ``diag``; for ``spherical`` the diagonal or the
            trace ``(k, 1)``.
        covariance_type: the model's covariance type.
        active: ``(k,)`` bool, or ``None``.

    Returns:
        ``(means, cov, variance, weights)``: the means, the covariances in the
        M step's layout (before ``reg_covar``), the per-component variances
        :func:`gmmjax._degeneracy.smallest_variance` reads (traces for
        ``spherical``) and the weights' unnormalized numerators ``(k,)``.
    """
    k, d = xbar.shape
    kappa, mu0, nu, scale, alpha = _values(prior, xbar.dtype)
    bump = (kappa > 0).astype(xbar.dtype)
    diff = xbar - mu0
    pull = kappa / (nk + kappa)
    means = xbar - pull[:, None] * diff
    weight = nk * pull
    weights = nk + (alpha - 1)
    if covariance_type in ("full", "tied"):
        raw = scatter + weight[:, None, None] * diff[:, :, None] * diff[:, None, :]
        if covariance_type == "full":
            cov = (scale + raw) / (nu + nk + d + 1 + bump)[:, None, None]
            return means, cov, cov, weights
        on = jnp.ones(k, bool) if active is None else active
        total = jnp.sum(jnp.where(on[:, None, None], raw, 0.0), axis=0)
        count = jnp.sum(jnp.where(on, nk, 0.0))
        cov = (scale + total) / (nu + count + d + 1 + bump * jnp.sum(on))
        return means, cov, jnp.broadcast_to(cov, (k, d, d)), weights
    if covariance_type == "diag":
        raw = scatter + weight[:, None] * diff**2
        cov = (scale + raw) / (nu + nk + 2 + bump)[:, None]
        return means, cov, cov, weights
    raw = jnp.sum(scatter, axis=-1) + weight * jnp.sum(diff**2, axis=-1)
    cov = (scale + raw) / (nu + d * nk + 2 + d * bump)
    return means, cov, d * cov, weights


# ---------------------------------------------------------------- the density


def _inverse_gamma(a, b, log_precision):
    """``log IG(v | a, b)`` at ``v = exp(-log_precision)``."""
    return (
        a * jnp.log(b)
        - jax.scipy.special.gammaln(a)
        + (a + 1) * log_precision
        - (b * jnp.exp(log_precision))
    )


def log_prior_density(gmm: GMM, prior: Prior) -> jax.Array:
    """``log p(theta)`` of :func:`log_prior`, unvalidated (for compiled code).

    Inactive components (weight 0, see :func:`gmmjax._degeneracy.keep_inactive`)
    are left out: the prior is that of the mixture of the active ones.
    """
    dtype = gmm.dtype
    d = gmm.n_features
    kappa, mu0, nu, scale, alpha = _values(prior, dtype)
    ctype = gmm.covariance_type
    active = jnp.isfinite(gmm.logits)
    diff = gmm.means - mu0
    if ctype in ("full", "tied"):
        p = gmm.precisions_cholesky
        log_det_p = jnp.sum(gmm.log_diag, axis=-1)  # log|P| = -log|Sigma| / 2
        root = jnp.linalg.cholesky(scale)
        log_det_scale = 2.0 * jnp.sum(jnp.log(jnp.diagonal(root)))
        trace = jnp.sum((root.T @ p) ** 2, axis=(-2, -1))
        covariance = (
            0.5 * nu * log_det_scale
            - 0.5 * nu * d * math.log(2.0)
            - jax.scipy.special.multigammaln(0.5 * nu, d)
            + (nu + d + 1) * log_det_p
            - 0.5 * trace
        )
        if ctype == "full":
            whitened = jnp.einsum("kab,ka->kb", p, diff)
        else:
            whitened = diff @ p
        squared = jnp.sum(whitened**2, axis=-1)
    elif ctype == "diag":
        log_precision = 2.0 * gmm.log_diag
        half = 0.5 * jnp.broadcast_to(scale, (d,))
        covariance = jnp.sum(_inverse_gamma(0.5 * nu, half, log_precision), axis=-1)
        log_det_p = jnp.sum(gmm.log_diag, axis=-1)
        squared = jnp.sum(jnp.exp(log_precision) * diff**2, axis=-1)
    else:
        log_precision = 2.0 * gmm.log_diag
        covariance = _inverse_gamma(0.5 * nu, 0.5 * scale, log_precision)
        log_det_p = d * gmm.log_diag
        squared = jnp.exp(log_precision) * jnp.sum(diff**2, axis=-1)
    shrinks = kappa > 0
    safe = jnp.where(shrinks, kappa, 1.0)
    means = jnp.where(
        shrinks,
        0.5 * d * (jnp.log(safe) - math.log(2 * math.pi))
        + log_det_p
        - 0.5 * safe * squared,
        0.0,
    )
    per_component = jnp.where(active, means, 0.0)
    if ctype == "tied":
        total = covariance + jnp.sum(per_component)
    else:
        total = jnp.sum(per_component + jnp.where(active, covariance, 0.0))
    n_active = jnp.sum(active).astype(dtype)
    log_weights = jnp.where(active, gmm.log_weights, 0.0)
    dirichlet = (
        jax.scipy.special.gammaln(alpha * n_active)
        - n_active * jax.scipy.special.gammaln(alpha)
        + (alpha - 1) * jnp.sum(log_weights)
    )
    return total + dirichlet


_log_prior = jax.jit(log_prior_density)


def log_prior(gmm: GMM, prior: Prior) -> jax.Array:
    """The log density of a mixture's parameters under a :class:`Prior`.

    ``log p(theta) = log Dir(pi | alpha) + sum_j [log p(Sigma_j) + log N(mu_j |
    mu_P, Sigma_j / kappa)]`` (one ``log p(Sigma)`` for ``tied``), every density
    with its normalizing constant: the sum of scipy's ``dirichlet.logpdf``,
    ``invwishart.logpdf`` (``full``, ``tied``) or ``invgamma.logpdf`` of every
    variance (``diag``, ``spherical``), and ``multivariate_normal.logpdf``;
    with ``kappa = 0`` the means' term is left out (a flat prior). MAP-EM
    increases ``L(theta) + log p(theta)``, the log posterior up to the log of
    the evidence. Jitted.

    Args:
        gmm: the mixture.
        prior: the :class:`Prior`, shaped for the mixture's features and
            covariance type.

    Returns:
        ``()`` the log density.

    Example:
        >>> import jax.numpy as jnp, gmmjax
        >>> gmm = gmmjax.GMM.from_natural([1.0], [[0.0]], [1.0],
        ...                               covariance_type="spherical")
        >>> prior = gmmjax.Prior(shrinkage=1.0, mean=jnp.zeros(1), dof=2.0,
        ...                      scale=2.0)
        >>> round(float(gmmjax.log_prior(gmm, prior)), 6)  # IG(1, 1) and N(0, 1)
        -1.918939
    """
    check_gmm(gmm)
    check_prior(prior)
    check_prior_shapes(prior, gmm.n_features, gmm.covariance_type)
    return _log_prior(gmm, prior)
