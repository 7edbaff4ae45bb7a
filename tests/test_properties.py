"""Property-based tests: no NaN escapes a public function on valid input, EM is
monotone with sample weights, and ``sample`` then ``fit`` recovers the model.

Deterministic (``derandomize=True``) and small: the shapes come from short lists
so that the compiled fits are shared between examples.
"""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import (
    COVARIANCE_TYPES,
    full_covariances,
    kmeans_start,
    random_natural,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import gmmjax

SETTINGS = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

# data configurations a user may hand over, valid but hard
CONFIGURATIONS = (
    "gaussian",
    "duplicated",
    "constant-feature",
    "all-equal",
    "offset-1e5",
    "scales-1e4",
    "tiny-scale",
)


def make_data(rng, n, d, configuration):
    x = rng.normal(size=(n, d)) + rng.choice([-4.0, 0.0, 4.0], size=(n, 1))
    if configuration == "duplicated":
        x = np.repeat(x[: max(1, n // 3)], 3, axis=0)[:n]
        x = np.concatenate([x, x[: n - len(x)]]) if len(x) < n else x
    elif configuration == "constant-feature":
        x[:, -1] = 2.5
    elif configuration == "all-equal":
        x = np.full((n, d), -1.25)
    elif configuration == "offset-1e5":
        x = x + 1e5
    elif configuration == "scales-1e4":
        x = x * np.logspace(0, 4, d)
    elif configuration == "tiny-scale":
        x = x * 1e-4
    return x


def reference_log_likelihood(weights, means, cov, covariance_type, x, w):
    """The weighted log-likelihood by SciPy."""
    k, d = means.shape
    cov = full_covariances(cov, covariance_type, k, d)
    log_joint = [
        np.log(weights[j]) + multivariate_normal(means[j], cov[j]).logpdf(x)
        for j in range(k)
    ]
    return w @ logsumexp(np.stack(log_joint, axis=1), axis=1)


def finite(tree):
    return all(
        np.all(np.isfinite(np.asarray(a))) for a in jax.tree_util.tree_leaves(tree)
    )


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.sampled_from([1, 6]),
    d=st.integers(1, 3),
    k=st.integers(1, 3),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    dtype=st.sampled_from([np.float32, np.float64]),
    configuration=st.sampled_from(CONFIGURATIONS),
    weighted=st.booleans(),
)
def test_density_functions_never_return_nan(
    seed, n, d, k, covariance_type, dtype, configuration, weighted
):
    rng = np.random.default_rng(seed)
    x = make_data(rng, n, d, configuration).astype(dtype)
    weights, means, cov = random_natural(rng, k, d, covariance_type)
    if k > 1 and weighted:
        weights = np.r_[0.0, weights[1:] / weights[1:].sum()]  # an empty component
    gmm = gmmjax.GMM.from_natural(
        weights.astype(dtype),
        means.astype(dtype),
        cov.astype(dtype),
        covariance_type=covariance_type,
    )
    sample_weight = rng.uniform(0, 2, size=n).astype(dtype) if weighted else None
    if sample_weight is not None:
        sample_weight[0] = 1.0  # not all zero
    # far points may have log-densities of -1e10: finite, never NaN
    assert np.all(~np.isnan(gmmjax.component_log_prob(gmm, x)))
    assert np.all(np.isfinite(gmmjax.log_prob(gmm, x)))
    assert np.isfinite(
        float(gmmjax.log_likelihood(gmm, x, sample_weight=sample_weight))
    )
    resp = np.asarray(gmmjax.responsibilities(gmm, x), np.float64)
    assert np.all(np.isfinite(resp))
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-5)
    draws, labels = gmmjax.sample(jax.random.key(seed), gmm, 4)
    assert finite(draws) and np.all(np.asarray(weights)[np.asarray(labels)] > 0)


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    dtype=st.sampled_from([np.float32, np.float64]),
    configuration=st.sampled_from(CONFIGURATIONS),
    weighted=st.booleans(),
    max_reseeds=st.sampled_from([0, 2]),
)
def test_fit_never_returns_nan_and_reports_honestly(
    seed, covariance_type, dtype, configuration, weighted, max_reseeds
):
    # one shape (n=24, d=2, k=3): the compiled fits are shared between examples
    rng = np.random.default_rng(seed)
    x = make_data(rng, 24, 2, configuration).astype(dtype)
    w = rng.integers(0, 3, size=24).astype(dtype) if weighted else None
    if w is not None:
        w[0] = 1.0
    gmm0 = kmeans_start(x, 3, covariance_type, seed=seed % 1000, w=w)
    result = gmmjax.fit(
        gmmjax.EM(max_reseeds=max_reseeds),
        gmm0,
        x,
        sample_weight=w,
        max_steps=60,
        tol=1e-4,
    )
    assert finite(result)
    status = result.status_name
    assert status in ("CONVERGED", "MAX_STEPS", "DEGENERATE")
    assert (int(result.degenerate_component) >= 0) == (status == "DEGENERATE")
    if configuration == "all-equal":
        assert status == "DEGENERATE"
    ll = gmmjax.log_likelihood(result.gmm, x, sample_weight=w)
    np.testing.assert_allclose(float(result.log_likelihood), float(ll), rtol=1e-5)


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    zeros=st.booleans(),
)
def test_weighted_em_is_monotone(seed, covariance_type, zeros):
    rng = np.random.default_rng(seed)
    x = make_data(rng, 40, 2, "gaussian")
    w = rng.uniform(0.2, 3.0, size=40)
    if zeros:
        w[rng.permutation(40)[:10]] = 0.0  # dropped rows
    weights, means, cov = random_natural(rng, 2, 2, covariance_type)
    gmm0 = gmmjax.GMM.from_natural(weights, means, cov, covariance_type=covariance_type)
    # reg_covar=0: the M step is then the exact weighted maximizer
    _, trace = gmmjax.fit_trace(
        gmmjax.EM(reg_covar=0.0), gmm0, x, num_steps=25, sample_weight=w
    )
    # the start's log-likelihood by SciPy: no gmmjax program per covariance type
    start = reference_log_likelihood(weights, means, cov, covariance_type, x, w)
    lls = np.r_[start, np.asarray(trace.log_likelihood)]
    lls = lls[np.isfinite(lls)]
    # float64 rounding of a sum of 40 weighted terms: a few ulps of |ll|
    assert np.all(np.diff(lls) >= -1e-10 * np.abs(lls[1:]) - 1e-12)


@settings(max_examples=4, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
)
def test_sample_then_fit_recovers_the_parameters(seed, covariance_type):
    rng = np.random.default_rng(seed)
    weights, _, cov = random_natural(rng, 2, 2, covariance_type)
    weights = 0.3 + 0.4 * weights  # both components well populated
    weights = weights / weights.sum()
    # means 12 standard deviations apart: the clusters cannot be confused
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)
    spread = np.sqrt(
        np.max(np.linalg.eigvalsh(np.atleast_2d(cov).reshape(-1, 2, 2)))
        if covariance_type in ("full", "tied")
        else np.max(cov)
    )
    means = np.stack([np.zeros(2), 12 * spread * direction]) + rng.normal(size=2)
    truth = gmmjax.GMM.from_natural(
        weights, means, cov, covariance_type=covariance_type
    )
    n = 2000
    x, labels = gmmjax.sample(jax.random.key(seed), truth, n)
    runs = gmmjax.multistart(
        gmmjax.EM(),
        jax.random.key(1),
        x,
        n_components=2,
        n_init=2,
        covariance_type=covariance_type,
    )
    fitted = gmmjax.best_of(runs)
    assert fitted.status_name == "CONVERGED"
    # match components by nearest mean
    dist = np.linalg.norm(
        np.asarray(fitted.gmm.means)[:, None, :] - means[None, :, :], axis=-1
    )
    match = np.argmin(dist, axis=0)
    assert sorted(match.tolist()) == [0, 1]
    got_means = np.asarray(fitted.gmm.means)[match]
    got_weights = np.asarray(fitted.gmm.weights)[match]
    # standard errors: a mean from ~n w_j points has error ~ spread / sqrt(n w_j)
    # (< 0.04 spread); a weight ~ sqrt(w (1 - w) / n) < 0.012; 5 sigma bounds
    np.testing.assert_allclose(got_means, means, atol=0.2 * spread)
    np.testing.assert_allclose(got_weights, weights, atol=0.06)
    got_cov = np.asarray(fitted.gmm.covariances)
    if covariance_type != "tied":
        got_cov = got_cov[match]
    # a variance from m points has relative error sqrt(2 / m) < 0.05: 25 %
    np.testing.assert_allclose(got_cov, cov, rtol=0.25, atol=0.1 * spread**2)
    assert jnp.asarray(x).dtype == fitted.gmm.means.dtype
    assert labels.shape == (n,)
