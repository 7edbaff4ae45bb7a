"""Variational Bayesian Gaussian mixtures: scikit-learn's ``BayesianGaussianMixture``.

The model and its mean-field posterior are those of Bishop (2006, section 10.2)
and, for the Dirichlet process, Blei & Jordan (2006), in scikit-learn's
parametrization and with its simplifications, so that a fit reproduces
``sklearn.mixture.BayesianGaussianMixture`` step by step:

- weights: ``pi ~ Dirichlet(alpha_0, ..., alpha_0)`` (``"dirichlet_distribution"``)
  or the stick-breaking ``pi_j = v_j prod_{l<j} (1 - v_l)``,
  ``v_j ~ Beta(1, alpha_0)`` of a Dirichlet process truncated at ``k``
  components (``"dirichlet_process"``);
- precisions: ``Lambda_j ~ Wishart(nu_0, Psi_0^-1)`` (one for ``tied``; for
  ``diag`` and ``spherical`` the same, per feature or shared by the features);
- means: ``mu_j | Lambda_j ~ N(m_0, (beta_0 Lambda_j)^-1)``.

A :class:`VariationalPrior` holds ``(alpha_0, beta_0, m_0, nu_0, Psi_0)``;
:class:`VB` is the fitter (coordinate ascent on the evidence lower bound) that
runs through :func:`gmmjax.fit`'s driver like :class:`gmmjax.EM`; its state,
:class:`VBState`, holds the posterior's parameters and the point estimate
scikit-learn reports (``weights_``, ``means_``, ``covariances_``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln, logsumexp

from ._degeneracy import regularize
from ._density import log_det_precision_cholesky, weighted_log_prob
from ._em import Summary, by_route, expanded_summary, two_pass_summary
from ._fit import StepInfo
from ._gmm import GMM
from ._init import ResponsibilityStart
from ._stats import Statistics, maximize, two_pass_statistics
from ._validation import (
    check_covariance_type,
    check_data,
    check_positive_int,
    check_reg_covar,
    check_sample_weight,
    concrete,
    host_array,
)

__all__ = [
    "VB",
    "WEIGHT_PRIORS",
    "VBState",
    "VariationalPrior",
    "check_variational_prior",
    "expected_log_joint",
]

WEIGHT_PRIORS = ("dirichlet_process", "dirichlet_distribution")


# ------------------------------------------------------------------ the prior


@dataclasses.dataclass(frozen=True)
class VariationalPrior:
    """The prior of a variational Bayesian mixture, as data (a pytree).

    scikit-learn's ``BayesianGaussianMixture`` priors: the numbers are traced
    leaves (a new prior of the same shapes does not recompile; priors batch with
    ``vmap``), the two kinds are static. :meth:`VariationalPrior.default` builds
    scikit-learn's defaults from the data; the plain constructor takes the
    fields as they are (a fit checks them when it starts).

    Attributes:
        weight_concentration: ``()`` ``alpha_0 > 0``: every weight's Dirichlet
            concentration, or the ``b`` of every stick's ``Beta(1, b)`` of a
            Dirichlet process (scikit-learn's ``weight_concentration_prior``).
            Small values favour few active components.
        mean_precision: ``()`` ``beta_0 > 0``, how strongly the means are drawn
            to ``mean`` (``mean_precision_prior``).
        mean: ``(d,)`` ``m_0``, the prior mean of the means (``mean_prior``).
        degrees_of_freedom: ``()`` ``nu_0 > d - 1`` of the Wishart prior on the
            precisions (``degrees_of_freedom_prior``).
        covariance: ``Psi_0``, the prior on the covariances
            (``covariance_prior``): ``(d, d)`` symmetric positive definite for
            ``full`` and ``tied``, ``(d,)`` positive for ``diag``, a positive
            ``()`` for ``spherical`` (semidefinite, or zero variances, where
            the data's covariance is, along directions the data do not vary).
        covariance_type: ``"full"``, ``"diag"``, ``"spherical"`` or ``"tied"``
            (static): the model's, which sets ``covariance``'s shape.
        weight_prior: ``"dirichlet_process"`` or ``"dirichlet_distribution"``
            (static; scikit-learn's ``weight_concentration_prior_type``).

    Example:
        >>> import jax.numpy as jnp, gmmjax
        >>> prior = gmmjax.VariationalPrior(
        ...     weight_concentration=0.5, mean_precision=1.0, mean=jnp.zeros(2),
        ...     degrees_of_freedom=2.0, covariance=jnp.ones(2),
        ...     covariance_type="diag", weight_prior="dirichlet_distribution")
        >>> gmmjax.VB(prior=prior).prior.covariance.shape
        (2,)
    """

    weight_concentration: jax.Array | float
    mean_precision: jax.Array | float
    mean: jax.Array
    degrees_of_freedom: jax.Array | float
    covariance: jax.Array | float
    covariance_type: str = "full"
    weight_prior: str = "dirichlet_process"

    @classmethod
    def default(
        cls,
        x,
        *,
        n_components: int,
        covariance_type: str = "full",
        weight_prior: str = "dirichlet_process",
        weight_concentration=None,
        mean_precision=None,
        mean=None,
        degrees_of_freedom=None,
        covariance=None,
        sample_weight=None,
    ) -> VariationalPrior:
        """scikit-learn's prior for ``x``: every argument left ``None`` takes
        ``BayesianGaussianMixture``'s default.

        With ``W = sum_i w_i`` (``n`` without weights) and the weighted mean
        ``xbar``: ``alpha_0 = 1 / k``, ``beta_0 = 1``, ``m_0 = xbar``,
        ``nu_0 = d`` and ``Psi_0`` the sample covariance
        ``sum_i w_i (x_i - xbar)(x_i - xbar)^T / (W - 1)`` (``numpy.cov``;
        integer weights count repeated rows), its diagonal for ``diag`` and the
        mean of that for ``spherical``.

        Args:
            x: ``(n, d)`` data.
            n_components: ``k``, the number of components (the default
                ``alpha_0`` is ``1 / k``).
            covariance_type: ``"full"``, ``"diag"``, ``"spherical"`` or
                ``"tied"``.
            weight_prior: ``"dirichlet_process"`` or ``"dirichlet_distribution"``.
            weight_concentration: ``alpha_0 > 0``.
            mean_precision: ``beta_0 > 0``.
            mean: ``m_0``, ``(d,)``.
            degrees_of_freedom: ``nu_0 > d - 1``.
            covariance: ``Psi_0`` in ``covariance_type``'s shape (see
                :class:`VariationalPrior`).
            sample_weight: optional ``(n,)`` non-negative weights, for the
                defaults of ``m_0`` and ``Psi_0``.

        Returns:
            The :class:`VariationalPrior`, in ``x``'s dtype.

        Raises:
            ValueError: a value out of its range, of the wrong shape, not
                finite, or a given ``covariance`` that is not positive definite
                (naming the argument); too little data (``W <= 1``) for the
                default ``covariance``.
            TypeError: an argument that is not a number or an array of numbers.

        Example:
            >>> import gmmjax
            >>> x = gmmjax.datasets.faithful()
            >>> prior = gmmjax.VariationalPrior.default(x, n_components=4)
            >>> float(prior.weight_concentration), float(prior.degrees_of_freedom)
            (0.25, 2.0)
            >>> prior.covariance.shape
            (2, 2)
        """
        covariance_type = check_covariance_type(covariance_type)
        _check_weight_prior(weight_prior)
        k = check_positive_int(n_components, "n_components")
        x = check_data(x)
        n, d = x.shape
        w = check_sample_weight(sample_weight, n, x.dtype)
        host = np.asarray(x, np.float64)
        weights = np.ones(n) if w is None else np.asarray(w, np.float64)
        total = weights.sum()
        center = weights @ host / total
        given_covariance = covariance is not None
        if covariance is None:
            if total <= 1:
                raise ValueError(
                    "the default covariance prior is the data's sample covariance, "
                    f"which needs a total sample weight > 1, got {total}: give "
                    "covariance"
                )
            diff = host - center
            empirical = (weights * diff.T) @ diff / (total - 1)
            empirical = 0.5 * (empirical + empirical.T)
            covariance = {
                "full": empirical,
                "tied": empirical,
                "diag": np.diag(empirical),
                "spherical": np.mean(np.diag(empirical)),
            }[covariance_type]
        values = {
            "weight_concentration": (
                1.0 / k if weight_concentration is None else weight_concentration
            ),
            "mean_precision": 1.0 if mean_precision is None else mean_precision,
            "mean": center if mean is None else mean,
            "degrees_of_freedom": (
                float(d) if degrees_of_freedom is None else degrees_of_freedom
            ),
            "covariance": covariance,
        }
        fields = {
            name: host_array(value, name, x.dtype) for name, value in values.items()
        }
        prior = cls(
            **fields, covariance_type=covariance_type, weight_prior=weight_prior
        )
        check_variational_prior(
            prior, n_features=d, prefix="", definite=given_covariance
        )
        return prior


jax.tree_util.register_dataclass(
    VariationalPrior,
    data_fields=[
        "weight_concentration",
        "mean_precision",
        "mean",
        "degrees_of_freedom",
        "covariance",
    ],
    meta_fields=["covariance_type", "weight_prior"],
)


def _check_weight_prior(weight_prior) -> None:
    if not isinstance(weight_prior, str) or weight_prior not in WEIGHT_PRIORS:
        raise ValueError(
            f"weight_prior must be one of {WEIGHT_PRIORS}, got {weight_prior!r}"
        )


def _value(prior: VariationalPrior, name: str, prefix: str):
    """A field's value as a float64 NumPy array, or ``None`` when traced."""
    value = getattr(prior, name)
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        raise TypeError(
            f"{prefix}{name} must be a number or an array of numbers, got {value!r}"
        )
    host = concrete(value)
    if host is None:
        return None
    if not np.issubdtype(host.dtype, np.number) or np.iscomplexobj(host):
        raise TypeError(
            f"{prefix}{name} must hold real numbers, got dtype {host.dtype}"
        )
    if not np.all(np.isfinite(host)):
        raise ValueError(f"{prefix}{name} must be finite, got {host}")
    return host.astype(np.float64)


def _positive(prior, name, prefix, floor=0.0, requirement="> 0") -> None:
    v = _value(prior, name, prefix)
    if v is None:
        return
    if v.ndim != 0:
        raise ValueError(f"{prefix}{name} must be a number, got shape {v.shape}")
    if not v > floor:
        raise ValueError(f"{prefix}{name} must be {requirement}, got {v}")


def check_variational_prior(
    prior, n_features=None, prefix="prior.", *, definite=False
) -> None:
    """Validate a :class:`VariationalPrior`: its kinds, its values (when
    concrete) and its shapes (against ``n_features`` when given). Errors name
    the field, after ``prefix``.

    ``covariance`` must be positive definite (positive variances) when
    ``definite``, as scikit-learn requires of a given ``covariance_prior``;
    else semidefinite, as the data's covariance is when it does not vary in
    some direction (scikit-learn's default then; the posterior's covariances
    still have the data's scatter and ``reg_covar``).
    """
    if not isinstance(prior, VariationalPrior):
        raise TypeError(
            f"prior must be a gmmjax.VariationalPrior, got {type(prior).__name__}"
        )
    ctype = check_covariance_type(prior.covariance_type)
    _check_weight_prior(prior.weight_prior)
    _positive(prior, "weight_concentration", prefix)
    _positive(prior, "mean_precision", prefix)
    _value(prior, "mean", prefix)
    shape = np.shape(prior.mean)
    if len(shape) != 1 or (n_features is not None and shape[0] != n_features):
        want = "(d,)" if n_features is None else f"({n_features},)"
        raise ValueError(
            f"{prefix}mean must have shape {want}, one value per feature, got {shape}"
        )
    d = shape[0]
    _positive(prior, "degrees_of_freedom", prefix, d - 1.0, f"> d - 1 = {d - 1}")
    want = {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": ()}[ctype]
    if np.shape(prior.covariance) != want:
        raise ValueError(
            f"{prefix}covariance for covariance_type={ctype!r} must have shape "
            f"{want}, got {np.shape(prior.covariance)}"
        )
    cov = _value(prior, "covariance", prefix)
    if cov is None:
        return
    scale = np.abs(cov).max()
    eps = np.finfo(jnp.result_type(prior.covariance)).eps
    matrix = cov.ndim == 2
    if matrix:
        if np.any(np.abs(cov - cov.T) > 100 * eps * scale):
            raise ValueError(f"{prefix}covariance must be symmetric")
        cov = np.linalg.eigvalsh(cov)
    lowest = np.min(cov)
    if definite:
        what = "positive definite" if matrix else "positive"
        failed = lowest <= 0
    else:
        # the data's covariance, singular to its rounding where it does not vary
        what = "positive semidefinite" if matrix else "non-negative"
        failed = lowest < -100 * eps * scale
    if failed:
        raise ValueError(
            f"{prefix}covariance must be {what}, got "
            f"{'an eigenvalue' if matrix else 'a variance'} {lowest:.3g}"
        )


def _prior_values(prior: VariationalPrior, dtype):
    """``(alpha_0, beta_0, m_0, nu_0, Psi_0)`` in ``dtype``."""
    return [
        jnp.asarray(getattr(prior, name), dtype)
        for name in (
            "weight_concentration",
            "mean_precision",
            "mean",
            "degrees_of_freedom",
            "covariance",
        )
    ]


# ------------------------------------------------------------------ the state


class VBState(NamedTuple):
    """The variational posterior, and the point estimate that summarizes it.

    With ``k`` components and ``d`` features (scikit-learn's attribute of the
    same meaning in brackets):

    Attributes:
        gmm: the point estimate (``weights_``, ``means_``,
            ``precisions_cholesky_``): the weights' posterior means, the means'
            ``m_j`` and the precisions' Wishart means ``nu_j W_j``.
        weight_concentration: ``dirichlet_distribution``: ``(k,)`` the
            posterior Dirichlet's ``alpha_j``; ``dirichlet_process``: ``(2, k)``
            the sticks' ``Beta(a_j, b_j)`` in two rows
            (``weight_concentration_``, a pair of arrays in scikit-learn).
        mean_precision: ``(k,)`` ``beta_j`` (``mean_precision_``).
        degrees_of_freedom: ``(k,)`` ``nu_j``; ``()`` for ``tied``
            (``degrees_of_freedom_``).
        covariances: ``(nu_j W_j)^-1`` in the covariance type's shape, as
            computed, before the Cholesky factor of the precision that ``gmm``
            holds (``covariances_``).
        lower_bound: ``()`` the total evidence lower bound of the step that
            produced this state, with scikit-learn's constants left out
            (``lower_bound_``); ``-inf`` before the first step.

    Example:
        >>> import jax, gmmjax
        >>> x = jax.numpy.asarray(gmmjax.datasets.faithful())
        >>> prior = gmmjax.VariationalPrior.default(x, n_components=3)
        >>> gmm = gmmjax.init_gmm(jax.random.key(0), x, n_components=3)
        >>> state = gmmjax.VB(prior=prior).init(gmm, x)
        >>> state.weight_concentration.shape, float(state.lower_bound)
        ((2, 3), -inf)
    """

    gmm: GMM
    weight_concentration: jax.Array
    mean_precision: jax.Array
    degrees_of_freedom: jax.Array
    covariances: jax.Array
    lower_bound: jax.Array

    @property
    def n_components(self) -> int:
        """The number of components ``k``."""
        return self.gmm.n_components


# ------------------------------------------------------------- expectations


def _expected_log_weights(weight_prior: str, concentration):
    """``E[log pi_j]`` ``(k,)`` under the weights' posterior."""
    if weight_prior == "dirichlet_distribution":
        return digamma(concentration) - digamma(jnp.sum(concentration))
    a, b = concentration
    both = digamma(a + b)
    sticks = jnp.cumsum(digamma(b) - both)[:-1]
    return digamma(a) - both + jnp.concatenate([jnp.zeros(1, a.dtype), sticks])


def _point_logits(weight_prior: str, concentration):
    """The log of the weights' posterior means, up to a constant: ``alpha_j``,
    or for the sticks ``E[v_j] prod_{l<j} (1 - E[v_l])`` with
    ``E[v_j] = a_j / (a_j + b_j)`` (scikit-learn's ``weights_``, before they are
    normalized)."""
    if weight_prior == "dirichlet_distribution":
        return jnp.log(concentration)
    a, b = concentration
    both = jnp.log(a + b)
    sticks = jnp.cumsum(jnp.log(b) - both)[:-1]
    return jnp.log(a) - both + jnp.concatenate([jnp.zeros(1, a.dtype), sticks])


def _digamma_sum(nu, d: int):
    """``sum_{i<d} psi((nu - i) / 2)`` (``nu`` any shape)."""
    i = jnp.arange(d, dtype=nu.dtype)
    return jnp.sum(digamma(0.5 * (nu[..., None] - i)), axis=-1)


def _gammaln_sum(nu, d: int):
    """``sum_{i<d} log Gamma((nu - i) / 2)`` (``nu`` any shape)."""
    i = jnp.arange(d, dtype=nu.dtype)
    return jnp.sum(gammaln(0.5 * (nu[..., None] - i)), axis=-1)


def _expected_model(prior: VariationalPrior, state: VBState) -> GMM:
    """The point estimate with the logits ``E[log pi_j] + c_j`` whose
    :func:`gmmjax.weighted_log_prob` is :func:`expected_log_joint` less one
    constant: EM's E step of this model is the variational E step.

    With ``S_j = nu_j W_j`` the point estimate's precision:
    ``E[log N(x_i | mu_j, Lambda_j^-1)] = log N(x_i | m_j, S_j^-1) + c_j`` with
    ``c_j = -d / 2 log nu_j
    + (d log 2 + sum_{i<d} psi((nu_j - i) / 2) - d / beta_j) / 2``.
    """
    gmm = state.gmm
    d = gmm.n_features
    nu, beta = state.degrees_of_freedom, state.mean_precision
    log_lambda = d * math.log(2.0) + _digamma_sum(nu, d)
    shift = -0.5 * d * jnp.log(nu) + 0.5 * (log_lambda - d / beta)
    logits = _expected_log_weights(prior.weight_prior, state.weight_concentration)
    return GMM(
        logits + shift, gmm.means, gmm.log_diag, gmm.off_diag, gmm.covariance_type
    )


def expected_log_joint(prior: VariationalPrior, state: VBState, x):
    """``(n, k)`` ``E[log pi_j] + E[log N(x_i | mu_j, Lambda_j^-1)]`` under the
    posterior, scikit-learn's ``_estimate_weighted_log_prob`` (no validation).

    Its softmax over ``j`` is the variational E step; its log-sum-exp over
    ``j`` is scikit-learn's ``score_samples``. See :func:`_expected_model`.
    """
    expected = _expected_model(prior, state)
    # weighted_log_prob normalizes the logits, which the log-sum-exp undoes
    return weighted_log_prob(expected, x) + logsumexp(expected.logits)


def _log_beta(a, b):
    """``log B(a, b)``. ``jax.scipy.special.betaln``'s series for large
    arguments is accurate to about ``2e-8`` in float64 (at ``(5, 14)``, say);
    the difference of log-gammas keeps ``~1e-13`` at these sizes."""
    return gammaln(a) + gammaln(b) - gammaln(a + b)


# ------------------------------------------------------------------ the step


def _posterior(prior: VariationalPrior, centered: Statistics, reg_covar) -> VBState:
    """The variational M step from the statistics about the weighted means
    (:attr:`gmmjax._stats.MStep.centered`); the state's ``lower_bound`` is
    ``-inf``."""
    ctype = prior.covariance_type
    counts, _, scatter, xk = centered
    dtype = scatter.dtype
    alpha0, beta0, m0, nu0, psi0 = _prior_values(prior, dtype)
    reg_covar = jnp.asarray(reg_covar, dtype)
    nk = counts + 10 * jnp.finfo(dtype).eps
    d = xk.shape[1]
    k = xk.shape[0]
    if prior.weight_prior == "dirichlet_distribution":
        concentration = alpha0 + nk
    else:
        # b_j = alpha_0 + sum_{l>j} N_l, summed from the last component
        tail = jnp.cumsum(nk[::-1])[-2::-1]
        rest = jnp.concatenate([tail, jnp.zeros(1, dtype)])
        concentration = jnp.stack([1.0 + nk, alpha0 + rest])
    beta = beta0 + nk
    means = (beta0 * m0 + nk[:, None] * xk) / beta[:, None]
    diff = xk - m0
    if ctype == "full":
        sk = regularize(scatter / nk[:, None, None], reg_covar, ctype)
        outer = diff[:, :, None] * diff[:, None, :]
        nu = nu0 + nk
        cov = psi0 + nk[:, None, None] * sk + (nk * beta0 / beta)[:, None, None] * outer
        cov = cov / nu[:, None, None]
    elif ctype == "tied":
        total = jnp.sum(nk)
        sk = regularize(jnp.sum(scatter, axis=0) / total, reg_covar, ctype)
        nu = nu0 + total / k
        spread = ((nk / beta)[:, None] * diff).T @ diff
        cov = (psi0 + sk * total / k + beta0 / k * spread) / nu
    else:
        per_feature = scatter / nk[:, None]
        nu = nu0 + nk
        if ctype == "diag":
            sk = regularize(per_feature, reg_covar, ctype)
            pull = (beta0 / beta)[:, None] * diff**2
            cov = (psi0 + nk[:, None] * (sk + pull)) / nu[:, None]
        else:
            # per feature, or (the expanded route) already summed over them
            sk = regularize(jnp.sum(per_feature, axis=-1) / d, reg_covar, ctype)
            pull = beta0 / beta * jnp.sum(diff**2, axis=-1) / d
            cov = (psi0 + nk * (sk + pull)) / nu
    logits = _point_logits(prior.weight_prior, concentration)
    gmm = GMM.from_covariances(logits, means, cov, covariance_type=ctype)
    bound = jnp.asarray(-jnp.inf, dtype)
    return VBState(gmm, concentration, beta, nu, cov, bound)


def _statistics(x, resp, w, ctype) -> Statistics:
    """The statistics about the weighted means of given responsibilities."""
    stats = two_pass_statistics(x, resp, w, ctype)
    return maximize(stats, 0.0, ctype, expanded=False).centered


def _vb_update(summarize):
    """One variational step from the E step and statistics of a route of EM's
    (:func:`gmmjax._em.expanded_summary` or
    :func:`gmmjax._em.two_pass_summary`): the new :class:`VBState` with its
    lower bound."""

    def update(expected, x, w, beta, prior, reg_covar):
        summary: Summary = summarize(expected, x, w, beta, entropy=True)
        centered = summary.maximize(0.0, expected.covariance_type).centered
        new = _posterior(prior, centered, reg_covar)
        bound = _lower_bound(prior, new, summary.resp_log_resp)
        return new._replace(lower_bound=bound)

    return update


def _lower_bound(prior: VariationalPrior, state: VBState, resp_log_resp):
    """scikit-learn's evidence lower bound (its constant terms left out):
    ``-sum_i w_i sum_j r_ij log r_ij - sum_j log B(nu_j, W_j)
    - log C(weights) - d / 2 sum_j log beta_j`` with the Wishart normalizers
    ``B`` and the weights' posterior normalizer ``C``, at the posterior that the
    responsibilities were turned into; ``resp_log_resp`` is the first sum."""
    gmm = state.gmm
    d = gmm.n_features
    nu = state.degrees_of_freedom
    log_det = log_det_precision_cholesky(gmm) - 0.5 * d * jnp.log(nu)
    log_wishart = -(nu * log_det + nu * d * 0.5 * math.log(2.0) + _gammaln_sum(nu, d))
    if gmm.covariance_type == "tied":
        log_wishart = gmm.n_components * log_wishart
    else:
        log_wishart = jnp.sum(log_wishart)
    concentration = state.weight_concentration
    if prior.weight_prior == "dirichlet_distribution":
        log_norm_weight = gammaln(jnp.sum(concentration)) - jnp.sum(
            gammaln(concentration)
        )
    else:
        log_norm_weight = -jnp.sum(_log_beta(concentration[0], concentration[1]))
    return (
        -resp_log_resp
        - log_wishart
        - log_norm_weight
        - 0.5 * d * jnp.sum(jnp.log(state.mean_precision))
    )


# ---------------------------------------------------------------- the fitter


@dataclasses.dataclass(frozen=True, kw_only=True)
class VB:
    """Variational Bayes for Gaussian mixtures: scikit-learn's
    ``BayesianGaussianMixture`` as a fitter.

    Mean-field coordinate ascent on the evidence lower bound: the E step gives
    ``r_ij = softmax_j(E[log pi_j] + E[log N(x_i | mu_j, Lambda_j^-1)])`` (see
    :func:`expected_log_joint`), the M step the posterior from the weighted
    statistics ``N_j = sum_i w_i r_ij + 10 eps``, ``xbar_j`` and ``S_j`` (with
    ``reg_covar`` added, as scikit-learn's), for the ``full`` case::

        weights    Dirichlet:  alpha_j = alpha_0 + N_j
                   process:    a_j = 1 + N_j,  b_j = alpha_0 + sum_{l>j} N_l
        means      beta_j = beta_0 + N_j,
                   m_j = (beta_0 m_0 + N_j xbar_j) / beta_j
        precisions nu_j = nu_0 + N_j,
                   nu_j W_j^-1 = Psi_0 + N_j S_j
                                 + N_j beta_0 / beta_j (xbar_j - m_0)(xbar_j - m_0)^T

    (``tied``: one ``nu = nu_0 + sum_j N_j / k`` and the terms summed over
    ``j`` with weights ``1 / k``; ``diag`` and ``spherical``: the diagonal and
    its mean). The E step and the statistics are :class:`gmmjax.EM`'s, by the
    same route (the expanded square in float64, and in float32 unless it would
    cost digits; chunked over the samples), run on the point estimate whose
    logits carry the expectations, so a VB step costs about an EM step. Each
    step reports the lower bound after its M step (:class:`VBState`'s
    ``lower_bound``, the ``StepInfo``'s
    ``log_likelihood``), and :meth:`objective` returns it, so the driver's
    convergence test and :func:`gmmjax.best_of` read the bound: a run has
    converged when ``|L_t - L_{t-1}| / W < tol``. scikit-learn compares the
    *total* bound with its ``tol``: pass ``tol / W`` (``W`` the total sample
    weight, ``n`` without weights) to stop where it stops (the estimator
    :class:`gmmjax.sklearn.BayesianGaussianMixture` does).

    Starts: ``init`` takes a :class:`gmmjax.GMM` (one E step of it, then the
    variational M step: how :func:`gmmjax.fit` and :func:`gmmjax.multistart`
    start), a :class:`ResponsibilityStart` (the M step from those
    responsibilities, as scikit-learn starts) or a :class:`VBState` (continued
    as it is). Sample weights multiply the responsibilities in the statistics
    and the entropy term, so integer weights equal repeated rows. ``beta``
    tempers the E step as it tempers EM's (:class:`gmmjax.Annealed`).

    Components are never reported as emptied: the prior holds their
    posterior, and a Dirichlet process switches off the components the data do
    not need (their weights fall towards 0). A step with non-finite values ends
    the run ``NONFINITE``.

    Args:
        prior: the :class:`VariationalPrior` (traced leaves; its kinds static).
        reg_covar: non-negative value added to the diagonal of the statistics'
            covariances ``S_j`` (scikit-learn's convention), or ``(d,)``, one
            per feature.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> prior = gmmjax.VariationalPrior.default(x, n_components=6)
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(0), x, n_components=6)
        >>> result = gmmjax.fit(gmmjax.VB(prior=prior), gmm0, x, tol=1e-8)
        >>> result.status_name
        'CONVERGED'
        >>> int((result.gmm.weights > 0.01).sum())  # the process keeps what it needs
        2
    """

    prior: VariationalPrior
    reg_covar: float | jax.Array = 1e-6
    #: :func:`gmmjax.fit` may start it from a :class:`ResponsibilityStart`
    takes_responsibilities: ClassVar[bool] = True

    def check(self) -> None:
        """Validate the hyperparameters (called by the drivers at the API edge)."""
        check_variational_prior(self.prior)
        check_reg_covar(self.reg_covar)

    def _check_features(self, x):
        """The prior's shapes against ``x``'s features (static: checked while
        tracing)."""
        d = x.shape[1]
        if np.shape(self.prior.mean) != (d,):
            raise ValueError(
                f"prior.mean has shape {np.shape(self.prior.mean)} but x has {d} "
                f"features: give a prior of the data (VariationalPrior.default)"
            )

    def init(self, start, x, *, sample_weight=None) -> VBState:
        """The state at a start: a :class:`gmmjax.GMM`, a
        :class:`ResponsibilityStart` or a :class:`VBState` (see the class)."""
        self._check_features(x)
        if isinstance(start, VBState):
            return start
        if isinstance(start, ResponsibilityStart):
            resp = jnp.asarray(start.resp, x.dtype)
            if resp.shape[0] != x.shape[0]:
                raise ValueError(
                    f"the start's responsibilities have {resp.shape[0]} rows but x "
                    f"has {x.shape[0]}"
                )
        elif isinstance(start, GMM):
            if start.covariance_type != self.prior.covariance_type:
                raise ValueError(
                    f"the start has covariance_type={start.covariance_type!r} but the "
                    f"prior's is {self.prior.covariance_type!r}"
                )
            # EM's E step of the start, then the variational M step
            state = self._update(start, x, sample_weight, 1.0)
            return state._replace(
                lower_bound=jnp.full_like(state.lower_bound, -jnp.inf)
            )
        else:
            raise TypeError(
                "the start must be a gmmjax.GMM, a gmmjax.ResponsibilityStart or a "
                f"gmmjax.VBState, got {type(start).__name__}"
            )
        ctype = self.prior.covariance_type
        centered = _statistics(x, resp, sample_weight, ctype)
        return _posterior(self.prior, centered, self.reg_covar)

    def _update(self, expected: GMM, x, sample_weight, beta) -> VBState:
        """The E step of ``expected`` by EM's route (float64 expands the square,
        float32 unless that costs digits), then the variational M step."""
        update = (_vb_update(expanded_summary), _vb_update(two_pass_summary))
        args = (x, sample_weight, beta, self.prior, self.reg_covar)
        return by_route(*update, expected, *args)

    def step(self, state: VBState, x, *, sample_weight=None, beta=1.0):
        """One variational E step and M step: ``(VBState, StepInfo)``; the info's
        ``log_likelihood`` is the new lower bound."""
        new = self._update(_expected_model(self.prior, state), x, sample_weight, beta)
        bound = new.lower_bound
        return new, StepInfo(bound, jnp.asarray(-1, jnp.int32), jnp.asarray(True))

    def objective(self, state: VBState, x, *, sample_weight=None):
        """The total lower bound of ``state`` (its ``lower_bound``), which
        :attr:`gmmjax.FitResult.objective` reports and restarts are compared
        by."""
        return state.lower_bound


jax.tree_util.register_dataclass(VB, data_fields=["prior", "reg_covar"], meta_fields=[])
