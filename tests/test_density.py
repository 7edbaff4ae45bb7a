"""Densities against scipy, closed forms and high-precision arithmetic."""

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from conftest import COVARIANCE_TYPES, full_covariances, random_natural
from jax.test_util import check_grads
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import gmmjax

SHAPES = [(1, 1), (1, 3), (3, 1), (4, 2), (3, 6)]
# (k, d) of the tests below where any mixture will do: one shape, so that their
# models and their calls on 40 rows share programs
SHARED = (4, 2)


def scipy_component_log_prob(weights, means, cov, covariance_type, x):
    k, d = means.shape
    full = full_covariances(cov, covariance_type, k, d)
    return np.stack(
        [
            multivariate_normal(means[j], full[j]).logpdf(x).reshape(-1)
            for j in range(k)
        ],
        axis=1,
    )


def make(rng, k, d, covariance_type, dtype=np.float64):
    weights, means, cov = random_natural(rng, k, d, covariance_type)
    gmm = gmmjax.GMM.from_natural(
        weights.astype(dtype),
        means.astype(dtype),
        cov.astype(dtype),
        covariance_type=covariance_type,
    )
    x = rng.normal(scale=2.5, size=(40, d))
    return gmm, (weights, means, cov), x


# The functions a scipy test checks, traced together: one program per case
# (each function's own kernel, as in an eager call), not one per function.
@jax.jit
def float64_densities(gmm, x):
    return (
        gmmjax.component_log_prob(gmm, x),
        gmmjax.log_prob(gmm, x),
        gmmjax.log_likelihood(gmm, x),
    )


@jax.jit
def float32_densities(gmm, x):
    return (
        gmmjax.log_prob(gmm, x),
        gmmjax.component_log_prob(gmm, x),
        gmmjax.responsibilities(gmm, x),
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize(("k", "d"), SHAPES)
def test_against_scipy_float64(rng, covariance_type, k, d):
    gmm, (weights, means, cov), x = make(rng, k, d, covariance_type)
    ref_comp = scipy_component_log_prob(weights, means, cov, covariance_type, x)
    ref = logsumexp(np.log(weights) + ref_comp, axis=1)
    comp, log_prob, log_likelihood = float64_densities(gmm, x)
    assert comp.shape == (40, k) and comp.dtype == jnp.float64
    np.testing.assert_allclose(comp, ref_comp, rtol=1e-10)
    np.testing.assert_allclose(log_prob, ref, rtol=1e-10)
    np.testing.assert_allclose(log_likelihood, ref.sum(), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize(("k", "d"), SHAPES)
def test_against_scipy_float32(rng, covariance_type, k, d):
    gmm, (weights, means, cov), x = make(rng, k, d, covariance_type, np.float32)
    w32, m32, c32 = (np.asarray(a, np.float32) for a in (weights, means, cov))
    x32 = x.astype(np.float32)
    # the reference uses the float32-rounded parameters and data, in float64
    comp = scipy_component_log_prob(w32, m32, c32, covariance_type, x32)
    ref = logsumexp(np.log(w32.astype(np.float64)) + comp, axis=1)
    out, comp32, r = float32_densities(gmm, x32)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, rtol=1e-4)
    assert comp32.dtype == jnp.float32
    assert r.dtype == jnp.float32


def test_weighted_log_likelihood_is_the_weighted_sum(rng):
    gmm, _, x = make(rng, *SHARED, "full")
    w = rng.uniform(0.0, 3.0, size=x.shape[0])
    w[:5] = 0.0
    expected = np.sum(w * np.asarray(gmmjax.log_prob(gmm, x)))
    np.testing.assert_allclose(
        gmmjax.log_likelihood(gmm, x, sample_weight=w), expected, rtol=1e-12
    )
    # integer weights count repeated rows
    counts = rng.integers(0, 4, size=x.shape[0])
    counts[0] = 1
    np.testing.assert_allclose(
        gmmjax.log_likelihood(gmm, x, sample_weight=counts),
        gmmjax.log_likelihood(gmm, np.repeat(x, counts, axis=0)),
        rtol=1e-12,
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_responsibilities(rng, covariance_type):
    gmm, (weights, means, cov), x = make(rng, *SHARED, covariance_type)
    r = gmmjax.responsibilities(gmm, x)
    np.testing.assert_allclose(np.sum(r, axis=1), 1.0, rtol=1e-12)
    joint = np.log(weights) + scipy_component_log_prob(
        weights, means, cov, covariance_type, x
    )
    np.testing.assert_allclose(
        r, np.exp(joint - logsumexp(joint, axis=1, keepdims=True)), rtol=1e-9
    )
    tempered = gmmjax.responsibilities(gmm, x, beta=0.3)
    ref = np.exp(0.3 * joint - logsumexp(0.3 * joint, axis=1, keepdims=True))
    np.testing.assert_allclose(tempered, ref, rtol=1e-9)
    np.testing.assert_allclose(gmmjax.responsibilities(gmm, x, beta=0.0), 0.25)


def test_far_away_points_do_not_underflow(rng):
    gmm, _, _ = make(rng, 2, 2, "diag")
    x = np.array([[1e3, -1e3], [0.0, 0.0]])
    lp = gmmjax.log_prob(gmm, x)
    assert np.all(np.isfinite(lp)) and lp[0] < -1e4
    r = gmmjax.responsibilities(gmm, x)
    assert np.all(np.isfinite(r))
    np.testing.assert_allclose(np.sum(r, axis=1), 1.0)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_gradients_to_second_order(rng, covariance_type):
    gmm, _, x = make(rng, 2, 2, covariance_type)
    x = x[:8]
    check_grads(
        lambda g: gmmjax.log_likelihood(g, x), (gmm,), order=2, modes=["fwd", "rev"]
    )
    check_grads(
        lambda xx: gmmjax.log_prob(gmm, xx), (jnp.asarray(x),), order=2, modes=["rev"]
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_vmap_over_models_equals_a_loop(rng, covariance_type):
    models = [make(rng, *SHARED, covariance_type)[0] for _ in range(4)]
    x = rng.normal(size=(40, 2))
    batch = jax.tree_util.tree_map(lambda *a: np.stack(a), *models)
    # both batched functions in one program
    batched, r = jax.jit(
        jax.vmap(lambda g: (gmmjax.log_prob(g, x), gmmjax.responsibilities(g, x)))
    )(batch)
    looped = np.stack([gmmjax.log_prob(g, x) for g in models])
    np.testing.assert_allclose(batched, looped, rtol=1e-12)
    assert r.shape == (4, 40, 4)


def test_no_recompilation_for_new_values(rng):
    traces = 0

    def ll(gmm, x, w):
        nonlocal traces
        traces += 1
        return gmmjax.log_likelihood(gmm, x, sample_weight=w)

    jitted = jax.jit(ll)
    for _ in range(3):
        gmm, _, x = make(rng, *SHARED, "full")
        jitted(gmm, x, jnp.asarray(rng.uniform(size=40))).block_until_ready()
    assert traces == 1


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_matches_the_parameters(rng, covariance_type):
    k, d, n = 3, 2, 200_000
    weights, means, cov = random_natural(rng, k, d, covariance_type)
    weights = np.array([0.2, 0.3, 0.5])
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type=covariance_type)
    x, labels = gmmjax.sample(jax.random.key(7), gmm, n)
    x, labels = np.asarray(x), np.asarray(labels)
    assert x.shape == (n, d) and labels.shape == (n,)
    # label frequencies: binomial standard error sqrt(p(1-p)/n) <= 1.2e-3; allow 5 se
    freq = np.bincount(labels, minlength=k) / n
    np.testing.assert_allclose(freq, weights, atol=5 * math.sqrt(0.25 / n))
    full = full_covariances(cov, covariance_type, k, d)
    for j in range(k):
        xj = x[labels == j]
        nj = len(xj)
        # mean: se = sqrt(var / n_j); covariance entries: se ~ sqrt(2 var^2 / n_j)
        se_mean = np.sqrt(np.diag(full[j]) / nj)
        np.testing.assert_array_less(np.abs(xj.mean(0) - means[j]), 5 * se_mean)
        scale = np.sqrt(np.outer(np.diag(full[j]), np.diag(full[j])))
        se_cov = np.sqrt(2.0 / nj) * scale
        np.testing.assert_array_less(
            np.abs(np.cov(xj, rowvar=False) - full[j]), 5 * se_cov
        )


def two_point_ll(mu, s):
    gmm = gmmjax.GMM.from_natural(
        [0.5, 0.5], [[mu], [-mu]], [s**2, s**2], covariance_type="spherical"
    )
    return gmmjax.log_likelihood(gmm, np.array([[1.0], [-1.0]]))


def mp_two_point_ll(mu, s):
    mpmath.mp.dps = 50
    mu, s = mpmath.mpf(mu), mpmath.mpf(s)

    def pdf(x, m):
        return mpmath.exp(-((x - m) ** 2) / (2 * s**2)) / (
            s * mpmath.sqrt(2 * mpmath.pi)
        )

    return sum(mpmath.log((pdf(x, mu) + pdf(x, -mu)) / 2) for x in (1, -1))


def test_two_point_model_precision():
    ll0 = two_point_ll(0.0, 1.0)
    np.testing.assert_allclose(ll0, -1.0 - math.log(2 * math.pi), rtol=0, atol=1e-12)
    diff = float(two_point_ll(0.1, 0.999) - ll0)
    assert diff == pytest.approx(1.311065063628e-6, rel=5e-6)
    reference = float(mp_two_point_ll("0.1", "0.999") - mp_two_point_ll(0, 1))
    assert diff == pytest.approx(reference, rel=1e-6)


def test_bad_data_is_rejected(rng):
    gmm, _, x = make(rng, 1, 3, "full")
    with pytest.raises(ValueError, match="2-D"):
        gmmjax.log_prob(gmm, x[:, 0])
    with pytest.raises(ValueError, match="features"):
        gmmjax.log_prob(gmm, x[:, :2])
    with pytest.raises(ValueError, match="x must be finite"):
        gmmjax.log_prob(gmm, np.where(np.eye(40, 3) > 0, np.nan, x))
    with pytest.raises(TypeError, match="gmm must be"):
        gmmjax.log_prob("gmm", x)
    with pytest.raises(ValueError, match="sample_weight must be non-negative"):
        gmmjax.log_likelihood(gmm, x, sample_weight=-np.ones(40))
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        gmmjax.log_likelihood(gmm, x, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="n must be"):
        gmmjax.sample(jax.random.key(0), gmm, 0)
