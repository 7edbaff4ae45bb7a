"""MAP-EM under mclust's conjugate prior: the M step, the log posterior, the
default prior, BIC, the landscape, batching, float32 and the named errors.

The reference for mclust is :func:`mclust_me` below: a plain NumPy
transcription of the EM that mclust's ``me()`` runs with ``prior =
priorControl()`` (the Fortran ``mevvvp``, ``meeeep``, ``mevvip`` and
``meviip`` of mclust 6: an M step from the responsibilities, then an E step, the
weights by maximum likelihood) and of ``defaultPrior``'s formulas. R is not part
of CI: the check is that gmmjax's MAP-EM and this reference, run from the same
start on data simulated here, agree on the parameters, on mclust's ``loglik``
(the log-likelihood at the MAP parameters, which its BIC reads) and on the log
posterior to ~1e-12 in float64.
"""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import (
    COVARIANCE_TYPES,
    count_compilations,
    host_m_step,
    kmeans_start,
    random_natural,
)
from scipy import stats
from scipy.special import logsumexp

import gmmjax
from gmmjax import _stats
from gmmjax._information import from_natural_vector, natural_vector

K = 3


def _clusters(seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [4.0, 1.0], [1.0, 5.0]])
    return np.concatenate([rng.normal(c, [1.0, 0.6], size=(20, 2)) for c in centers])


def _lines():
    """Three clusters of 20 points, each on its own line: the data's covariance
    is full rank, every cluster's is singular."""
    t = np.linspace(-1.0, 1.0, 20)
    return np.concatenate(
        [
            np.stack([t, 2 * t], axis=1),
            np.stack([t + 5.0, 1.0 - t], axis=1),
            np.stack([3.0 + 0 * t, 6.0 + 2 * t], axis=1),
        ]
    )


# one data shape for the whole module: every test reuses the programs of (60, 2)
X = _clusters()
LINES = _lines()


# ------------------------------------------------- the reference: mclust's me()


def _natural(prior):
    return (
        float(prior.shrinkage),
        np.asarray(prior.mean, np.float64),
        float(prior.dof),
        np.asarray(prior.scale, np.float64),
        float(prior.concentration),
    )


def _full(cov, ctype, k, d):
    if ctype == "full":
        return cov
    if ctype == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if ctype == "diag":
        return np.stack([np.diag(c) for c in cov])
    return cov[:, None, None] * np.eye(d)


def _e_step(x, weights, means, cov, ctype):
    k, d = means.shape
    full = _full(cov, ctype, k, d)
    joint = np.log(weights) + np.stack(
        [stats.multivariate_normal.logpdf(x, means[j], full[j]) for j in range(k)], 1
    )
    total = logsumexp(joint, axis=1)
    return np.exp(joint - total[:, None]), total.sum()


def _m_step(x, z, ctype, kappa, mu0, nu, scale, alpha):
    """mclust's M step with a prior (Fraley & Raftery 2007, Table 2)."""
    n, d = x.shape
    nk = z.sum(axis=0)
    xbar = z.T @ x / nk[:, None]
    b = 1.0 if kappa > 0 else 0.0
    means = (nk[:, None] * xbar + kappa * mu0) / (nk + kappa)[:, None]
    raw = np.stack(
        [
            (z[:, j, None] * (x - xbar[j])).T @ (x - xbar[j])
            + kappa * nk[j] / (kappa + nk[j]) * np.outer(xbar[j] - mu0, xbar[j] - mu0)
            for j in range(len(nk))
        ]
    )
    if ctype == "full":
        cov = (scale + raw) / (nu + nk + d + 1 + b)[:, None, None]
    elif ctype == "tied":
        cov = (scale + raw.sum(axis=0)) / (nu + n + d + 1 + len(nk) * b)
    elif ctype == "diag":
        diag = np.diagonal(raw, axis1=1, axis2=2)
        cov = (scale + diag) / (nu + nk + 2 + b)[:, None]
    else:
        trace = np.trace(raw, axis1=1, axis2=2)
        cov = (scale + trace) / (nu + d * nk + 2 + d * b)
    weights = (nk + alpha - 1) / (n + len(nk) * (alpha - 1))
    return weights, means, cov


def scipy_log_prior(weights, means, cov, ctype, kappa, mu0, nu, scale, alpha):
    """The prior's log density as a sum of scipy's log densities."""
    k, d = means.shape
    full = _full(cov, ctype, k, d)
    total = stats.dirichlet.logpdf(weights, np.full(k, alpha))
    if ctype == "tied":
        total += stats.invwishart.logpdf(cov, df=nu, scale=scale)
    for j in range(k):
        if ctype == "full":
            total += stats.invwishart.logpdf(cov[j], df=nu, scale=scale)
        elif ctype == "diag":
            half = np.broadcast_to(scale, (d,)) / 2
            total += stats.invgamma.logpdf(cov[j], a=nu / 2, scale=half).sum()
        elif ctype == "spherical":
            total += stats.invgamma.logpdf(cov[j], a=nu / 2, scale=scale / 2)
        if kappa > 0:
            total += stats.multivariate_normal.logpdf(means[j], mu0, full[j] / kappa)
    return total


def mclust_me(x, gmm0, prior, steps):
    """``steps`` EM steps from ``gmm0``: ``(weights, means, cov, loglik,
    log posterior)`` of the final parameters."""
    ctype = gmm0.covariance_type
    theta = (
        np.asarray(gmm0.weights),
        np.asarray(gmm0.means),
        np.asarray(gmm0.covariances),
    )
    for _ in range(steps):
        z, _ = _e_step(x, *theta, ctype)
        theta = _m_step(x, z, ctype, *_natural(prior))
    _, ll = _e_step(x, *theta, ctype)
    return (*theta, ll, ll + scipy_log_prior(*theta, ctype, *_natural(prior)))


def map_em(prior):
    return gmmjax.EM(prior=prior, reg_covar=0.0)


def start(ctype, x=X):
    return jax.device_put(kmeans_start(x, K, ctype, reg_covar=1e-3))


def log_posterior(gmm, prior, x=X):
    return gmmjax.log_likelihood(gmm, x) + gmmjax.log_prior(gmm, prior)


# ------------------------------------------------------------------- the tests


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_map_em_reproduces_mclust_me(covariance_type):
    """gmmjax's MAP-EM and mclust's me() (NumPy transcription) from one start:
    mclust's default prior, no shrinkage, and a Dirichlet concentration; the
    priors are traced, so one compiled program runs all three. Along the way
    the log posterior never decreases."""
    gmm0 = start(covariance_type)
    default = gmmjax.Prior.default(X, n_components=K, covariance_type=covariance_type)
    priors = [
        default,
        dataclasses.replace(default, shrinkage=jnp.asarray(0.0)),
        dataclasses.replace(default, concentration=jnp.asarray(4.0)),
    ]
    steps = 30
    for prior in priors:
        result = gmmjax.fit(map_em(prior), gmm0, X, tol=0.0, max_steps=steps)
        weights, means, cov, ll, log_post = mclust_me(X, gmm0, prior, steps)
        np.testing.assert_allclose(result.gmm.weights, weights, rtol=1e-11)
        np.testing.assert_allclose(result.gmm.means, means, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(result.gmm.covariances, cov, rtol=1e-11)
        np.testing.assert_allclose(result.log_likelihood, ll, rtol=1e-13)
        np.testing.assert_allclose(result.objective, log_post, rtol=1e-13)
    # max_steps is traced: the path costs no compilation
    path = [
        float(gmmjax.fit(map_em(default), gmm0, X, tol=0.0, max_steps=t).objective)
        for t in range(12)
    ]
    assert np.all(np.diff(path) >= -1e-12 * np.abs(path[1:]))
    assert path[1] > path[0]


def _random_prior(rng, ctype, d):
    a = rng.normal(size=(d, d))
    scale = {
        "full": a @ a.T + np.eye(d),
        "tied": a @ a.T + np.eye(d),
        "diag": rng.uniform(0.5, 2.0, size=d),
        "spherical": 1.7,
    }[ctype]
    return gmmjax.Prior(
        shrinkage=0.3,
        mean=rng.normal(size=d),
        dof=d + 1.5,
        scale=scale,
        concentration=2.5,
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_log_prior_matches_scipy(covariance_type, rng):
    weights, means, cov = random_natural(rng, K, 2, covariance_type)
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type=covariance_type)
    prior = _random_prior(rng, covariance_type, 2)
    want = scipy_log_prior(weights, means, cov, covariance_type, *_natural(prior))
    np.testing.assert_allclose(gmmjax.log_prior(gmm, prior), want, rtol=1e-12)
    flat = dataclasses.replace(prior, shrinkage=0.0)
    want = scipy_log_prior(weights, means, cov, covariance_type, *_natural(flat))
    np.testing.assert_allclose(gmmjax.log_prior(gmm, flat), want, rtol=1e-12)


def test_log_prior_leaves_out_inactive_components(rng):
    """A masked component (weight 0) is not part of the prior: the density is
    that of the mixture of the active components."""
    gmm = start("tied")
    prior = _random_prior(rng, "tied", 2)
    two = gmmjax.GMM(gmm.logits[:2], gmm.means[:2], gmm.log_diag, gmm.off_diag, "tied")
    masked = dataclasses.replace(gmm, logits=gmm.logits.at[2].set(-jnp.inf))
    np.testing.assert_allclose(
        gmmjax.log_prior(masked, prior), gmmjax.log_prior(two, prior), rtol=1e-13
    )


def test_every_route_gets_the_prior():
    """The expanded (float64) and two-pass (float32 fallback) statistics give
    the same posterior mode: the prior's terms live in the one M step."""
    resp = np.random.default_rng(1).dirichlet(np.ones(K), size=len(X))

    def given(f, ws, rs):
        return rs.T, (), None

    @functools.partial(jax.jit, static_argnums=3)
    def both(x, resp, prior, ctype):
        expanded, _, _ = _stats.expanded_statistics(
            x.mean(axis=0), x, None, ctype, K, given, resp
        )
        two_pass = _stats.two_pass_statistics(x, resp, None, ctype)
        a = _stats.maximize(expanded, 0.0, ctype, prior=prior).gmm
        b = _stats.maximize(two_pass, 0.0, ctype, prior=prior, expanded=False).gmm
        return a, b

    for ctype in COVARIANCE_TYPES:
        prior = gmmjax.Prior.default(X, n_components=K, covariance_type=ctype)
        a, b = both(X, resp, prior, ctype)
        for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(leaf_a, leaf_b, rtol=1e-10, atol=1e-12)
        _, means, cov = _m_step(X, resp, ctype, *_natural(prior))
        np.testing.assert_allclose(a.means, means, rtol=1e-12)
        np.testing.assert_allclose(a.covariances, cov, rtol=1e-12)


def test_without_a_prior_nothing_changes():
    """``prior=None`` is plain EM: no objective method, no extra leaf, and the
    objective is the log-likelihood bit for bit."""
    fitter = gmmjax.EM()
    assert fitter.prior is None and fitter.objective is None
    assert len(jax.tree.leaves(fitter)) == 1
    result = gmmjax.fit(fitter, start("diag"), X, max_steps=5, tol=0.0)
    assert result.objective == result.log_likelihood


def test_map_fit_is_a_maximum_of_the_log_posterior():
    """A converged MAP-EM fit is a critical point of the log posterior (the M
    step is its exact conditional maximizer), not of the log-likelihood, and
    diagnose(prior=) finds a maximum of the log posterior."""
    prior = gmmjax.Prior.default(X, n_components=K, covariance_type="full")
    result = gmmjax.fit(map_em(prior), start("full"), X, tol=1e-14, max_steps=5000)
    assert result.status_name == "CONVERGED"

    @jax.jit
    def gradients(theta):
        def likelihood(t):
            return gmmjax.log_likelihood(from_natural_vector(t, result.gmm), X)

        def prior_term(t):
            return gmmjax.log_prior(from_natural_vector(t, result.gmm), prior)

        return jax.grad(likelihood)(theta), jax.grad(prior_term)(theta)

    likelihood, prior_term = gradients(natural_vector(result.gmm))
    assert np.max(np.abs(likelihood + prior_term)) < 1e-7
    assert np.max(np.abs(likelihood)) > 1e-2
    diagnosis = gmmjax.diagnose(result, X, prior=prior)
    assert diagnosis.kind == "maximum"
    np.testing.assert_allclose(diagnosis.objective, result.objective, rtol=1e-13)
    np.testing.assert_allclose(
        diagnosis.log_likelihood, result.log_likelihood, rtol=1e-12
    )
    assert "log posterior" in str(diagnosis)


def _direct_log_prior(gmm, kappa, mu0, nu, scale):
    """The diag (VVI) prior's log density written out from the variances, with
    the Dirichlet(1) constant ``log (k - 1)!``."""
    var = gmm.covariances
    a, b = nu / 2, scale / 2
    inverse_gamma = a * jnp.log(b) - jax.scipy.special.gammaln(a)
    inverse_gamma = inverse_gamma - (a + 1) * jnp.log(var) - b / var
    squared = kappa * (gmm.means - mu0) ** 2 / var
    normal = -0.5 * (jnp.log(2 * jnp.pi * var / kappa) + squared)
    dirichlet = jax.scipy.special.gammaln(float(gmm.n_components))
    return jnp.sum(inverse_gamma + normal) + dirichlet


def test_information_is_minus_the_hessian_of_the_log_posterior():
    """observed_information(prior=) against jax.hessian of the log-likelihood
    plus a direct formula of the log prior (the landscape's extra term)."""
    prior = gmmjax.Prior.default(X, n_components=K, covariance_type="diag")
    gmm = gmmjax.fit(map_em(prior), start("diag"), X, max_steps=50).gmm
    posterior = gmmjax.observed_information(gmm, X, prior=prior).matrix
    kappa, mu0, nu, scale, _ = _natural(prior)

    @jax.jit
    def hessians(theta):
        def likelihood(t):
            return gmmjax.log_likelihood(from_natural_vector(t, gmm), X)

        def direct(t):
            g = from_natural_vector(t, gmm)
            return _direct_log_prior(g, kappa, mu0, nu, scale)

        return jax.hessian(likelihood)(theta), jax.hessian(direct)(theta)

    likelihood, prior_term = hessians(natural_vector(gmm))
    assert np.max(np.abs(prior_term)) > 1e-2
    want = likelihood + prior_term
    np.testing.assert_allclose(-posterior, want, rtol=1e-9, atol=1e-8)


def test_priors_batch_with_vmap_and_do_not_recompile():
    """A batch of priors under vmap equals the fits one by one, and a new prior
    of the same shapes compiles nothing."""
    ctype = "diag"
    gmm0 = start(ctype)
    priors = [
        gmmjax.Prior.default(X, n_components=K, covariance_type=ctype, shrinkage=s)
        for s in (0.0, 0.01, 1.0)
    ]
    one = [gmmjax.fit(map_em(p), gmm0, X, tol=0.0, max_steps=30) for p in priors[:2]]
    with count_compilations() as log:
        one.append(gmmjax.fit(map_em(priors[2]), gmm0, X, tol=0.0, max_steps=30))
    assert log == []
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *priors)
    batched = jax.vmap(lambda p: gmmjax.fit(map_em(p), gmm0, X, tol=0.0, max_steps=30))(
        stacked
    )
    for i, result in enumerate(one):
        np.testing.assert_allclose(batched.gmm.means[i], result.gmm.means, rtol=1e-10)
        np.testing.assert_allclose(batched.objective[i], result.objective, rtol=1e-12)


def test_float32_map_em_agrees_with_float64():
    gmm0 = start("full")
    prior = gmmjax.Prior.default(X, n_components=K, covariance_type="full")
    x32 = X.astype(np.float32)
    gmm32 = jax.tree.map(lambda a: a.astype(np.float32), gmm0)
    prior32 = gmmjax.Prior.default(x32, n_components=K, covariance_type="full")
    assert prior32.scale.dtype == np.float32
    r64 = gmmjax.fit(map_em(prior), gmm0, X, tol=0.0, max_steps=30)
    r32 = gmmjax.fit(map_em(prior32), gmm32, x32, tol=0.0, max_steps=30)
    assert r32.objective.dtype == np.float32
    np.testing.assert_allclose(r32.gmm.means, r64.gmm.means, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(r32.objective, r64.objective, rtol=1e-5)


@pytest.mark.parametrize("name", ["lines", "points"])
def test_default_prior_keeps_degenerate_data_finite(name):
    """Clusters on lines (singular within) or on a few repeated points: plain EM
    without a floor collapses, MAP-EM with mclust's default prior converges to
    positive definite covariances."""
    x = LINES if name == "lines" else np.repeat(X[:5], 12, axis=0)
    blocks = np.repeat(np.eye(K), len(x) // K, axis=0)
    gmm0 = host_m_step(x, blocks, "full", reg_covar=1e-3)
    plain = gmmjax.fit(gmmjax.EM(reg_covar=0.0), gmm0, x)
    assert plain.status_name in ("DEGENERATE", "NONFINITE")
    prior = gmmjax.Prior.default(x, n_components=K, covariance_type="full")
    result = gmmjax.fit(map_em(prior), gmm0, x, tol=1e-10)
    assert result.status_name == "CONVERGED"
    assert np.all(np.linalg.eigvalsh(np.asarray(result.gmm.covariances)) > 0)
    assert np.isfinite(float(result.objective))


def _unstack(gmm, b):
    return [jax.tree.map(lambda a, i=i: a[i], gmm) for i in range(b)]


def test_select_with_prior_is_mclusts_bic():
    """select(prior="default"): every cell a MAP fit with its own default prior
    (one batched program per covariance type), scored by mclust's BIC, -2
    L(theta_MAP) + p log n; a masked cell equals the k-component restarts,
    which are compared by the log posterior."""
    key = jax.random.key(0)
    table = gmmjax.select(
        key,
        LINES,
        n_components=[1, 2, 3],
        covariance_types=["tied"],
        n_init=2,
        prior="default",
        hc_start=False,
    )
    assert np.all(np.isfinite(table.values))
    for i, k in enumerate(table.n_components):
        fit = table.fits[(k, "tied")]
        np.testing.assert_allclose(table.values[i, 0], gmmjax.bic(fit.gmm, LINES))
        prior = gmmjax.Prior.default(LINES, n_components=k, covariance_type="tied")
        np.testing.assert_allclose(
            fit.objective, log_posterior(fit.gmm, prior, LINES), rtol=1e-12
        )
    prior = gmmjax.Prior.default(LINES, n_components=2, covariance_type="tied")
    runs = gmmjax.multistart(
        map_em(prior),
        key,
        LINES,
        n_components=2,
        n_init=2,
        covariance_type="tied",
        hc_start=False,
        reg_covar=gmmjax.relative_reg_covar(LINES, 1e-6),
    )
    best = gmmjax.best_of(runs)
    np.testing.assert_allclose(table.fits[(2, "tied")].objective, best.objective)
    posterior = [float(log_posterior(g, prior, LINES)) for g in _unstack(runs.gmm, 2)]
    np.testing.assert_allclose(runs.objective, posterior, rtol=1e-12)
    assert best.objective == np.max(runs.objective)


def test_chunked_and_annealed_em_take_the_prior():
    prior = gmmjax.Prior.default(X, n_components=K, covariance_type="diag")
    gmm0 = start("diag")
    full = gmmjax.fit(map_em(prior), gmm0, X, tol=0.0, max_steps=30)
    chunked = gmmjax.fit_em_chunked(
        gmm0, X, chunk_size=32, prior=prior, reg_covar=0.0, tol=0.0, max_steps=30
    )
    np.testing.assert_allclose(chunked.gmm.means, full.gmm.means, rtol=1e-10)
    np.testing.assert_allclose(chunked.objective, full.objective, rtol=1e-12)
    annealed = gmmjax.Annealed(map_em(prior), optax.constant_schedule(1.0))
    state = annealed.init(full.gmm, X)
    np.testing.assert_allclose(
        annealed.objective(state, X), log_posterior(full.gmm, prior), rtol=1e-12
    )


# ------------------------------------------------------------------ validation

GOOD = dict(shrinkage=0.01, mean=np.zeros(2), dof=4.0, scale=np.eye(2))


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(shrinkage=-1.0), ValueError, "prior.shrinkage"),
        (dict(shrinkage=np.nan), ValueError, "prior.shrinkage"),
        (dict(shrinkage=[0.1, 0.2]), ValueError, "prior.shrinkage"),
        (dict(shrinkage="0.1"), TypeError, "prior.shrinkage"),
        (dict(dof=0.0), ValueError, "prior.dof"),
        (dict(dof=1.0), ValueError, "prior.dof must be > d - 1"),
        (dict(concentration=0.5), ValueError, "prior.concentration"),
        (dict(mean=np.zeros((1, 2))), ValueError, "prior.mean"),
        (dict(mean=np.zeros(3)), ValueError, "prior.mean"),
        (dict(mean=[np.inf, 0.0]), ValueError, "prior.mean"),
        (dict(mean=None), TypeError, "prior.mean"),
        (dict(scale=-np.eye(2)), ValueError, "prior.scale must be positive"),
        (dict(scale=[[1.0, 0.5], [0.0, 1.0]]), ValueError, "prior.scale must be sym"),
        (dict(scale=np.eye(3)), ValueError, "prior.scale has shape"),
        (dict(scale=1.0), ValueError, "prior.scale has shape"),
        (dict(scale=np.ones((2, 2, 2))), ValueError, "prior.scale"),
        (dict(scale=[[np.nan, 0.0], [0.0, 1.0]]), ValueError, "prior.scale"),
    ],
)
def test_bad_prior_parameters_are_named(change, error, match):
    prior = gmmjax.Prior(**{**GOOD, **change})
    with pytest.raises(error, match=re.escape(match)):
        gmmjax.fit(map_em(prior), start("full"), X)


def test_bad_prior_arguments_are_named():
    gmm0 = start("spherical")
    with pytest.raises(TypeError, match=re.escape("prior must be a gmmjax.Prior")):
        gmmjax.fit(gmmjax.EM(prior={"dof": 3.0}), gmm0, X)
    with pytest.raises(ValueError, match=re.escape("prior.scale has shape")):
        gmmjax.fit(map_em(gmmjax.Prior(**GOOD)), gmm0, X)
    diag = gmmjax.Prior(**{**GOOD, "scale": -np.ones(2)})
    with pytest.raises(ValueError, match=re.escape("prior.scale must be > 0")):
        gmmjax.log_prior(start("diag"), diag)
    with pytest.raises(ValueError, match=re.escape("at least 2 samples")):
        gmmjax.Prior.default(X[:1], n_components=1)
    with pytest.raises(ValueError, match=re.escape("n_components must be >= 1")):
        gmmjax.Prior.default(X, n_components=0)
    with pytest.raises(ValueError, match=re.escape("covariance, which is singular")):
        gmmjax.Prior.default(np.repeat(X[:1], 5, axis=0), n_components=2)
    collinear = np.column_stack([X, X @ np.ones(X.shape[1])])
    with pytest.raises(ValueError, match=re.escape("give scale=")):
        gmmjax.Prior.default(collinear, n_components=2)
    with pytest.raises(ValueError, match=re.escape("prior must be None, 'default'")):
        gmmjax.select(jax.random.key(0), X, n_components=[1], prior="mclust")
    with pytest.raises(TypeError, match=re.escape("or a function")):
        gmmjax.select(jax.random.key(0), X, n_components=[1], prior=3)
    gradient = gmmjax.GradientFitter(optax.adam(1e-2))
    with pytest.raises(ValueError, match=re.escape("prior needs an EM fitter")):
        gmmjax.select(
            jax.random.key(0), X, n_components=[1], prior="default", fitter=gradient
        )
    bad = gmmjax.Prior(**{**GOOD, "dof": -1.0, "scale": 1.0})
    with pytest.raises(ValueError, match=re.escape("prior.dof")):
        gmmjax.diagnose(gmm0, X, prior=bad)
    with pytest.raises(ValueError, match=re.escape("prior.dof")):
        gmmjax.em_step(gmm0, X, prior=bad)
