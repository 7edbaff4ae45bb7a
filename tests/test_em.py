"""EM: parity with scikit-learn, monotonicity, the loop driver, degenerate data."""

import dataclasses
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    COVARIANCE_TYPES,
    full_covariances,
    host_m_step,
    kmeans_start,
    random_natural,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn import datasets as skdatasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

import gmmjax
from gmmjax import _fit
from gmmjax._levels import QUICK_MAX_WORK, quick_options

# The house data set: tests that need "some data" use iris with k = 3, so that
# they share the compiled programs of the parity test on iris (gmmjax compiles
# one program per shape, covariance type and fitter structure).
IRIS = skdatasets.load_iris().data
K = 3


def random_start(rng, x, k, covariance_type):
    """``init_gmm(method="random")`` on the host: the M step of uniform random
    responsibilities (every mean near the data's mean)."""
    resp = rng.uniform(size=(len(x), k))
    return host_m_step(x, resp / resp.sum(axis=1, keepdims=True), covariance_type)


def sklearn_fit(x, gmm0, steps, covariance_type, tol=0.0):
    model = GaussianMixture(
        n_components=gmm0.n_components,
        covariance_type=covariance_type,
        tol=tol,
        reg_covar=1e-6,
        max_iter=steps,
        weights_init=np.asarray(gmm0.weights),
        means_init=np.asarray(gmm0.means),
        precisions_init=np.asarray(gmm0.precisions),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize(
    ("loader", "k"),
    [
        (skdatasets.load_iris, 3),
        (skdatasets.load_wine, 3),
        (skdatasets.load_breast_cancer, 2),
    ],
)
def test_parity_with_sklearn(loader, k, covariance_type):
    x = loader().data
    if loader is skdatasets.load_breast_cancer:
        x = x[:, :10]
    steps = 25
    gmm0 = kmeans_start(x, k, covariance_type, seed=3)
    ours = gmmjax.fit(gmmjax.EM(reg_covar=1e-6), gmm0, x, max_steps=steps, tol=0.0)
    ref = sklearn_fit(x, gmm0, steps, covariance_type)
    assert ours.status_name == "MAX_STEPS" and int(ours.n_steps) == steps
    assert ref.n_iter_ == steps
    # EM is a contraction near the optimum, so rounding differences stay ~1e-12;
    # 1e-6 (relative to each array's scale) leaves ample room.
    for got, want in [
        (ours.gmm.weights, ref.weights_),
        (ours.gmm.means, ref.means_),
        (ours.gmm.covariances, ref.covariances_),
    ]:
        scale = np.max(np.abs(want))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(
        float(ours.log_likelihood) / len(x), ref.score(x), rtol=1e-8
    )


def test_stopping_rule_matches_sklearn_n_iter():
    x = IRIS
    gmm0 = kmeans_start(x, K, "full")
    for tol in (1e-2, 1e-3, 1e-5):
        ours = gmmjax.fit(gmmjax.EM(), gmm0, x, max_steps=1000, tol=tol)
        ref = sklearn_fit(x, gmm0, 1000, "full", tol=tol)
        assert ours.status_name == "CONVERGED"
        assert int(ours.n_steps) == ref.n_iter_
        np.testing.assert_allclose(ours.gmm.means, ref.means_, rtol=1e-6)


def mixture_log_likelihood(x, weights, means, cov, covariance_type):
    """The total log-likelihood of natural parameters, by scipy."""
    k, d = means.shape
    covs = full_covariances(cov, covariance_type, k, d)
    joint = [
        np.log(w) + multivariate_normal.logpdf(x, m, c)
        for w, m, c in zip(weights, means, covs, strict=True)
    ]
    return float(np.sum(logsumexp(np.stack(joint, axis=1), axis=1)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    # a fixed set of shapes (each compiles its own programs) that holds the edge
    # cases of the range 1..3: one component, one feature, and neither
    shape=st.sampled_from([(1, 3), (3, 1), (3, 3)]),
)
def test_em_is_monotone(seed, covariance_type, shape):
    k, d = shape
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, d)) + rng.choice([-3.0, 0.0, 3.0], size=(60, 1))
    weights, means, cov = random_natural(rng, k, d, covariance_type)
    gmm0 = gmmjax.GMM.from_natural(weights, means, cov, covariance_type=covariance_type)
    # reg_covar=0: with it the M step is the exact maximizer, so EM is monotone
    _, trace = gmmjax.fit_trace(gmmjax.EM(reg_covar=0.0), gmm0, x, num_steps=30)
    ll0 = mixture_log_likelihood(x, weights, means, cov, covariance_type)
    lls = np.concatenate([[ll0], trace.log_likelihood])
    ok = np.isfinite(lls)
    steps = np.diff(lls[ok])
    # float64 rounding of a sum of 60 terms of size |ll|/60: a few ulps of |ll|
    assert np.all(steps >= -1e-10 * np.abs(lls[ok][1:]) - 1e-12), steps.min()


def test_vmap_of_fit_equals_a_loop():
    x = IRIS
    rng = np.random.default_rng(5)
    starts = [random_start(rng, x, K, "full") for _ in range(6)]
    batch = jax.tree_util.tree_map(lambda *a: np.stack(a), *starts)
    batched = jax.vmap(lambda g: gmmjax.fit(gmmjax.EM(), g, x, max_steps=200))(batch)
    for i, g in enumerate(starts):
        single = gmmjax.fit(gmmjax.EM(), g, x, max_steps=200)
        assert int(batched.n_steps[i]) == int(single.n_steps)
        assert int(batched.status[i]) == int(single.status)
        np.testing.assert_allclose(
            batched.log_likelihood[i], single.log_likelihood, rtol=1e-10
        )
        np.testing.assert_allclose(batched.gmm.means[i], single.gmm.means, rtol=1e-8)


def test_no_recompilation_for_new_hyperparameters():
    x = IRIS
    gmm0 = kmeans_start(x, K, "full")
    gmmjax.fit(gmmjax.EM(reg_covar=1e-6), gmm0, x, max_steps=10, tol=1e-3)
    before = _fit.run._cache_size()
    gmmjax.fit(gmmjax.EM(reg_covar=1e-4), gmm0, x, max_steps=30, tol=1e-5)
    gmmjax.fit(gmmjax.EM(reg_covar=1e-2), gmm0, x, max_steps=7, tol=0.0)
    assert _fit.run._cache_size() == before

    traces = 0

    def run(g, tol, reg, steps):
        nonlocal traces
        traces += 1
        return gmmjax.fit(gmmjax.EM(reg_covar=reg), g, x, max_steps=steps, tol=tol)

    jitted = jax.jit(run)
    jitted(gmm0, 1e-3, 1e-6, 10)
    jitted(gmm0, 1e-5, 1e-3, 50)
    assert traces == 1


def test_tol_zero_runs_exactly_max_steps():
    x = IRIS
    gmm0 = kmeans_start(x, K, "full")
    for steps in (0, 1, 17):
        result = gmmjax.fit(gmmjax.EM(), gmm0, x, max_steps=steps, tol=0.0)
        assert int(result.n_steps) == steps
        assert result.status_name == "MAX_STEPS"


def test_small_problems_compile_at_level_0_to_the_default_levels_numbers():
    x = IRIS
    gmm0 = kmeans_start(x, K, "full")
    args = (gmmjax.EM(), gmm0, x, None, np.int32(40), 0.0)
    assert _fit.run.options(*args) == quick_options()
    quick = gmmjax.fit(gmmjax.EM(), gmm0, x, max_steps=40, tol=0.0)
    default = jax.jit(_fit.run.__wrapped__, static_argnames=("report",))(*args)[0]
    # the same program but for the order of some sums: rounding apart
    np.testing.assert_allclose(quick.log_likelihood, default.log_likelihood, rtol=1e-13)
    for a, b in zip(
        jax.tree.leaves(quick.gmm), jax.tree.leaves(default.gmm), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    # above the threshold, and inside another transformation, the default level
    rows = QUICK_MAX_WORK // (K * 4 * 4) + 1
    big = jax.ShapeDtypeStruct((rows, 4), x.dtype)
    assert _fit.run.options(gmmjax.EM(), gmm0, big, None, 1, 0.0) is None

    def traced(x):
        assert _fit.run.options(gmmjax.EM(), gmm0, x, None, 1, 0.0) is None
        # closed-over arrays are no tracers, and a nested jit takes no options
        assert _fit.run.options(gmmjax.EM(), gmm0, IRIS, None, 1, 0.0) is None
        return gmmjax.sample(jax.random.key(0), gmm0, 7)[0]

    jax.make_jaxpr(traced)(x)


def two_point_closed_form(mu, s, steps):
    path = []
    for _ in range(steps):
        a = np.exp(-((1 - mu) ** 2) / (2 * s**2))
        b = np.exp(-((1 + mu) ** 2) / (2 * s**2))
        p = a / (a + b)
        mu = 2 * p - 1
        s = np.sqrt(p * (1 - mu) ** 2 + (1 - p) * (1 + mu) ** 2)
        path.append((mu, s))
    return np.array(path)


def test_two_point_em_matches_the_closed_form_update():
    x = np.array([[1.0], [-1.0]])
    mu0, s0 = 0.05, 1.4  # near the saddle: 40 steps stay far from the collapse
    gmm0 = gmmjax.GMM.from_natural(
        [0.5, 0.5], [[mu0], [-mu0]], [s0**2, s0**2], covariance_type="spherical"
    )
    _, trace = gmmjax.fit_trace(gmmjax.EM(reg_covar=0.0), gmm0, x, num_steps=40)
    means = np.asarray(trace.gmm.means[:, :, 0])
    sigmas = np.sqrt(np.asarray(trace.gmm.covariances))
    # symmetry is kept: weights 1/2, means +-mu, equal variances
    np.testing.assert_allclose(trace.gmm.weights, 0.5, rtol=1e-12)
    np.testing.assert_allclose(means[:, 0], -means[:, 1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sigmas[:, 0], sigmas[:, 1], rtol=1e-12)
    expected = two_point_closed_form(mu0, s0, 40)
    np.testing.assert_allclose(means[:, 0], expected[:, 0], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(sigmas[:, 0], expected[:, 1], rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_all_points_equal_is_degenerate_not_nan(rng, covariance_type):
    x = np.full(IRIS.shape, 3.0)
    weights, means, cov = random_natural(rng, K, x.shape[1], covariance_type)
    gmm0 = gmmjax.GMM.from_natural(weights, means, cov, covariance_type=covariance_type)
    result = gmmjax.fit(gmmjax.EM(), gmm0, x)
    assert np.isfinite(float(result.log_likelihood))
    assert result.status_name == "DEGENERATE"
    assert 0 <= int(result.degenerate_component) < K


def test_more_components_than_distinct_points(rng):
    # without reg_covar, components on a point of zero variance collapse (with it,
    # the variance reg_covar holds them up, as in scikit-learn)
    points = np.array([[0.0] * 4, [5.0] * 4])
    x = np.repeat(points, len(IRIS) // 2, axis=0)
    gmm0 = random_start(rng, x, K, "full")
    result = gmmjax.fit(gmmjax.EM(reg_covar=0.0), gmm0, x)
    assert np.isfinite(float(result.log_likelihood))
    assert result.status_name == "DEGENERATE"


def test_constant_column_stays_finite():
    x = IRIS.copy()
    x[:, 3] = 2.0
    for ctype in COVARIANCE_TYPES:
        gmm0 = kmeans_start(x, K, ctype)
        result = gmmjax.fit(gmmjax.EM(), gmm0, x)
        assert np.isfinite(float(result.log_likelihood))
        assert result.status_name in ("CONVERGED", "DEGENERATE")
        assert all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(result))


def test_singleton_component_is_reported_degenerate():
    # without reg_covar, a component left with one point collapses onto it
    x = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [9.0, 9.0]])
    gmm0 = gmmjax.GMM.from_natural(
        [0.5, 0.5], [[0.0, 0.0], [9.0, 9.0]], [1.0, 1.0], covariance_type="spherical"
    )
    result = gmmjax.fit(gmmjax.EM(reg_covar=0.0), gmm0, x)
    assert result.status_name == "DEGENERATE"
    assert int(result.degenerate_component) == 1
    assert np.isfinite(float(result.log_likelihood))


class PoisonedState(NamedTuple):
    gmm: gmmjax.GMM
    count: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PoisonedEM:
    """EM whose means turn NaN from a given step on: exercises the driver."""

    poison_at: int

    def init(self, gmm, x, *, sample_weight=None):
        return PoisonedState(gmm, jnp.asarray(0))

    def step(self, state, x, *, sample_weight=None, beta=1.0):
        inner, info = gmmjax.EM().step(gmmjax.EMState(state.gmm), x)
        count = state.count + 1
        means = jnp.where(count >= self.poison_at, jnp.nan, inner.gmm.means)
        return PoisonedState(dataclasses.replace(inner.gmm, means=means), count), info


def test_nonfinite_run_stops_keeps_finite_parameters_and_is_never_converged():
    x = IRIS
    gmm0 = kmeans_start(x, K, "full")
    result = gmmjax.fit(PoisonedEM(poison_at=4), gmm0, x, max_steps=50, tol=1e-12)
    assert result.status_name == "NONFINITE"
    assert int(result.n_steps) == 4
    leaves = jax.tree_util.tree_leaves(result.gmm)
    assert all(np.all(np.isfinite(a)) for a in leaves)
    ref = gmmjax.fit(gmmjax.EM(), gmm0, x, max_steps=3, tol=0.0)
    np.testing.assert_allclose(result.gmm.means, ref.gmm.means, rtol=1e-12)
    assert np.isfinite(float(result.log_likelihood))


def test_fit_trace_matches_fit():
    x = IRIS
    gmm0 = kmeans_start(x, K, "diag")
    result, trace = gmmjax.fit_trace(gmmjax.EM(), gmm0, x, num_steps=15)
    ref = gmmjax.fit(gmmjax.EM(), gmm0, x, max_steps=15, tol=0.0)
    np.testing.assert_allclose(result.gmm.means, ref.gmm.means, rtol=1e-12)
    np.testing.assert_allclose(trace.log_likelihood[-1], ref.log_likelihood)
    for t in (0, 7):
        g = jax.tree_util.tree_map(lambda a, t=t: a[t], trace.gmm)
        np.testing.assert_allclose(
            trace.log_likelihood[t], gmmjax.log_likelihood(g, x), rtol=1e-12
        )


def test_sample_weight_equals_repeated_rows():
    # every other iris row, repeated 1 to 3 times: the repeated rows are 150, so
    # their fit is the program the other iris tests compile
    x = IRIS[::2]
    counts = np.random.default_rng(1).permutation(np.tile([1, 2, 3], len(x) // 3))
    gmm0 = kmeans_start(x, K, "full")
    a = gmmjax.fit(gmmjax.EM(), gmm0, x, max_steps=20, tol=0.0, sample_weight=counts)
    b = gmmjax.fit(
        gmmjax.EM(), gmm0, np.repeat(x, counts, axis=0), max_steps=20, tol=0.0
    )
    np.testing.assert_allclose(a.gmm.means, b.gmm.means, rtol=1e-9)
    np.testing.assert_allclose(a.gmm.covariances, b.gmm.covariances, rtol=1e-8)
    np.testing.assert_allclose(a.log_likelihood, b.log_likelihood, rtol=1e-10)


def test_em_step_and_m_step_api():
    x = IRIS
    gmm0 = kmeans_start(x, K, "full")
    one = gmmjax.em_step(gmm0, x)
    log_resp, _ = gmmjax.e_step(gmm0, x)
    again = gmmjax.m_step(x, jnp.exp(log_resp), covariance_type="full")
    np.testing.assert_allclose(one.means, again.means, rtol=1e-12)
    ref = gmmjax.fit(gmmjax.EM(), gmm0, x, max_steps=1, tol=0.0)
    np.testing.assert_allclose(one.covariances, ref.gmm.covariances, rtol=1e-12)
    hot = gmmjax.em_step(gmm0, x, beta=0.0)
    np.testing.assert_allclose(hot.weights, 1 / 3, rtol=1e-9)


def _separated(rng, d, gap):
    """Three clusters ``gap`` standard deviations apart: every posterior is
    exactly 0 or 1 in float64 (log-density gaps of thousands). Iris's number of
    rows: at ``d = 4`` the steps are the programs of the iris part."""
    labels = np.arange(len(IRIS)) % K
    x = gap * np.eye(K, d)[labels] + rng.normal(size=(len(labels), d))
    return x, np.eye(K)[labels]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_e_step_and_m_step_are_em_step_bit_for_bit(rng, covariance_type):
    # m_step and e_step run EM's kernels (float64: the expanded square about the
    # data's mean, the same chunking, the same M step). Where the posteriors are
    # exact (0 or 1), exp(log r) is exactly EM's r and the composition is EM's
    # step bit for bit. d = 2 and d = 4: both sides of SMALL_D (3).
    for d in (2, 4):
        x, hard = _separated(rng, d, 100.0)
        w = rng.uniform(0.5, 2.0, len(x))
        # the model of every other sample: weights 0 on the others rather than
        # x[::2], which would compile m_step for a second shape
        half = (np.arange(len(x)) % 2 == 0).astype(float)
        gmm = gmmjax.m_step(
            x, hard, covariance_type=covariance_type, sample_weight=half
        )
        log_resp, _ = gmmjax.e_step(gmm, x)
        resp = jnp.exp(log_resp)
        assert np.array_equal(resp, hard)
        for weights in (None, w):
            one = gmmjax.em_step(gmm, x, sample_weight=weights)
            again = gmmjax.m_step(
                x, resp, covariance_type=covariance_type, sample_weight=weights
            )
            for a, b in zip(*map(jax.tree_util.tree_leaves, (one, again)), strict=True):
                np.testing.assert_array_equal(a, b)
    # general data: exp(log r) and EM's r differ by the rounding of the
    # logarithm and the exponential (a few eps), and so do the steps
    x = IRIS
    gmm = kmeans_start(x, K, covariance_type)
    one = gmmjax.em_step(gmm, x)
    again = gmmjax.m_step(
        x, jnp.exp(gmmjax.e_step(gmm, x)[0]), covariance_type=covariance_type
    )
    for a, b in zip(*map(jax.tree_util.tree_leaves, (one, again)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    # e_step's log-density is EM's: its sum is the log-likelihood the step reports
    _, log_prob = gmmjax.e_step(gmm, x)
    em = gmmjax.EM()
    _, info = jax.jit(em.step)(em.init(gmm, x), jnp.asarray(x))
    np.testing.assert_allclose(jnp.sum(log_prob), info.log_likelihood, rtol=1e-14)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_steps": -1}, ValueError, "max_steps"),
        ({"max_steps": 2.5}, TypeError, "max_steps"),
        ({"tol": -1e-3}, ValueError, "tol"),
        ({"sample_weight": np.zeros(150)}, ValueError, "sample_weight"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, error, match):
    x = IRIS
    gmm0 = kmeans_start(x, K, "full")
    with pytest.raises(error, match=match):
        gmmjax.fit(gmmjax.EM(), gmm0, x, **kwargs)


def test_fit_rejects_bad_fitters_and_data():
    x = IRIS
    gmm0 = kmeans_start(x, K, "full")
    with pytest.raises(ValueError, match="reg_covar"):
        gmmjax.fit(gmmjax.EM(reg_covar=-1.0), gmm0, x)
    with pytest.raises(TypeError, match="fitter"):
        gmmjax.fit("em", gmm0, x)
    with pytest.raises(ValueError, match="features"):
        gmmjax.fit(gmmjax.EM(), gmm0, x[:, :2])
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        gmmjax.fit(gmmjax.EM(), gmm0, x[:1])
