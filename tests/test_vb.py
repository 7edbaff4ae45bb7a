"""Variational Bayesian mixtures against scikit-learn's BayesianGaussianMixture."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import count_compilations
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture as SklearnBGM
from sklearn.utils.estimator_checks import parametrize_with_checks

import gmmjax
from gmmjax._buckets import pad_rows, row_bucket
from gmmjax._init import init_responsibilities
from gmmjax._multistart import start_keys
from gmmjax.sklearn import BayesianGaussianMixture

DATA = {
    "iris": load_iris().data,
    "wine": load_wine().data,
    "breast_cancer10": load_breast_cancer().data[:, :10],
}
IRIS = DATA["iris"]
DP, DD = "dirichlet_process", "dirichlet_distribution"
# one k for every test: each (data shape, covariance type, weight prior) is one
# compiled program
K = 3


@parametrize_with_checks([BayesianGaussianMixture()])
def test_sklearn_checks(estimator, check):
    check(estimator)


@jax.jit
def _kmeans_responsibilities(key, x, w):
    return init_responsibilities(key, x, w, n_components=K, method="kmeans")


def estimator_start(x, random_state):
    """The responsibilities the estimator starts its first run from: its
    k-means labels on the rows padded to their bucket, from the key it draws
    with ``random_state``."""
    seed = np.random.RandomState(random_state).randint(np.iinfo(np.int32).max)
    key = start_keys(jax.random.key(seed), 1)[0]
    xp, wp = pad_rows(x, None, row_bucket(len(x)))
    return np.asarray(_kmeans_responsibilities(key, xp, wp))[: len(x)]


def sklearn_from(resp, **params):
    """scikit-learn's estimator started from the responsibilities ``resp``:
    its initialization (the variational M step from the labels of
    ``init_params``) given them instead."""

    class Started(SklearnBGM):
        def _initialize_parameters(self, X, random_state, xp=None):
            self._initialize(X, resp)

    return Started(**params)


def assert_close(ours, ref, rtol=1e-8):
    """Within ``rtol`` of the reference, entries near 0 relative to the array's
    largest (an off-diagonal covariance of 1e-18 has no relative digits)."""
    ref = np.asarray(ref, np.float64)
    scale = np.max(np.abs(ref))
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * scale)


# every covariance type with both weight priors, the data sets among them
PARITY = [
    ("full", DP, "wine"),
    ("full", DD, "breast_cancer10"),
    ("tied", DP, "breast_cancer10"),
    ("tied", DD, "iris"),
    ("diag", DP, "iris"),
    ("diag", DD, "wine"),
    ("spherical", DP, "wine"),
    ("spherical", DD, "iris"),
]


@pytest.mark.parametrize(("covariance_type", "weight_prior", "data"), PARITY)
def test_the_estimator_is_sklearns_from_the_same_start(
    covariance_type, weight_prior, data
):
    x = DATA[data]
    params = dict(
        n_components=K,
        covariance_type=covariance_type,
        weight_concentration_prior_type=weight_prior,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = BayesianGaussianMixture(**params).fit(x)
        ref = sklearn_from(estimator_start(x, 0), **params).fit(x)
    # the same arithmetic in float64 from the same start: the two differ by
    # the rounding of each step (measured: below 1e-10 relative to each
    # array's largest entry after up to 100 steps)
    assert ours.n_iter_ == ref.n_iter_
    assert ours.converged_ == ref.converged_
    # scikit-learn's tied bounds are (1,) arrays
    assert_close(ours.lower_bounds_, np.ravel(ref.lower_bounds_))
    assert_close(ours.lower_bound_, np.ravel(ref.lower_bound_))
    names = (
        "weights_",
        "means_",
        "covariances_",
        "precisions_",
        "precisions_cholesky_",
        "mean_precision_",
        "degrees_of_freedom_",
        "weight_concentration_prior_",
        "mean_precision_prior_",
        "mean_prior_",
        "degrees_of_freedom_prior_",
        "covariance_prior_",
    )
    for name in names:
        assert_close(getattr(ours, name), getattr(ref, name))
    concentration = ours.weight_concentration_
    if weight_prior == DP:
        assert isinstance(concentration, tuple) and len(concentration) == 2
    assert_close(concentration, ref.weight_concentration_)
    assert np.shape(ours.degrees_of_freedom_) == np.shape(ref.degrees_of_freedom_)
    assert_close(ours.score_samples(x), ref.score_samples(x))
    assert_close(ours.predict_proba(x), ref.predict_proba(x), rtol=1e-6)
    np.testing.assert_array_equal(ours.predict(x), ref.predict(x))


def test_a_fit_from_a_model_starts_from_its_responsibilities():
    """``gmmjax.fit`` starts :class:`gmmjax.VB` from a model with one E step of
    it, then the variational M step; with ``tol / n`` it stops where
    scikit-learn stops."""
    x = jnp.asarray(IRIS)
    prior = gmmjax.VariationalPrior.default(x, n_components=K, covariance_type="diag")
    gmm0 = gmmjax.init_gmm(jax.random.key(1), x, n_components=K, covariance_type="diag")
    result = gmmjax.fit(gmmjax.VB(prior=prior), gmm0, x, tol=1e-3 / len(x))
    resp = np.asarray(gmmjax.responsibilities(gmm0, x))
    ref = sklearn_from(resp, n_components=K, covariance_type="diag").fit(IRIS)
    assert int(result.n_steps) == ref.n_iter_
    assert result.status_name == "CONVERGED"
    assert_close(result.objective, ref.lower_bound_)
    assert_close(result.gmm.weights, ref.weights_)
    assert_close(result.gmm.means, ref.means_)
    assert_close(result.gmm.covariances, ref.covariances_)
    assert_close(result.log_likelihood, gmmjax.log_likelihood(result.gmm, x))


def test_fit_starts_from_given_responsibilities():
    """``gmmjax.fit`` takes a :class:`gmmjax.ResponsibilityStart` for VB: from the
    same responsibilities it is scikit-learn's run; other fitters, bad
    responsibilities and ``select`` with VB are refused with named errors."""
    x = jnp.asarray(IRIS)
    prior = gmmjax.VariationalPrior.default(x, n_components=K, covariance_type="diag")
    resp = np.eye(K)[np.arange(len(x)) % K]
    start = gmmjax.ResponsibilityStart(resp)
    result = gmmjax.fit(gmmjax.VB(prior=prior), start, x, tol=1e-3 / len(x))
    ref = sklearn_from(resp, n_components=K, covariance_type="diag").fit(IRIS)
    assert int(result.n_steps) == ref.n_iter_
    assert_close(result.objective, ref.lower_bound_)
    assert_close(result.gmm.means, ref.means_)
    with pytest.raises(TypeError, match=r"EM starts from a gmmjax\.GMM"):
        gmmjax.fit(gmmjax.EM(), start, x)
    with pytest.raises(ValueError, match=r"shape \(n, k\) = \(150, k\)"):
        gmmjax.fit(gmmjax.VB(prior=prior), gmmjax.ResponsibilityStart(resp[1:]), x)
    with pytest.raises(ValueError, match="summing to 1"):
        gmmjax.fit(gmmjax.VB(prior=prior), gmmjax.ResponsibilityStart(2 * resp), x)
    with pytest.raises(TypeError, match="select compares"):
        gmmjax.select(
            jax.random.key(0), x, n_components=[1], fitter=gmmjax.VB(prior=prior)
        )


def test_restarts_are_batched_and_the_best_bound_wins():
    x = jnp.asarray(IRIS)
    prior = gmmjax.VariationalPrior.default(x, n_components=K, covariance_type="diag")
    vb = gmmjax.VB(prior=prior)
    runs = gmmjax.multistart(
        vb,
        jax.random.key(0),
        x,
        n_components=K,
        n_init=4,
        covariance_type="diag",
        tol=1e-8,
        hc_start=False,
    )
    assert runs.objective.shape == (4,)
    # the objective is the bound, not the log-likelihood
    assert not np.allclose(runs.objective, runs.log_likelihood)
    best = gmmjax.best_of(runs)
    assert float(best.objective) == float(jnp.max(runs.objective))
    # a restart of the batch is the run of gmmjax.fit from its start
    keys = start_keys(jax.random.key(0), 4)
    gmm0 = gmmjax.init_gmm(keys[2], x, n_components=K, covariance_type="diag")
    alone = gmmjax.fit(vb, gmm0, x, tol=1e-8)
    assert int(alone.n_steps) == int(runs.n_steps[2])
    assert_close(alone.objective, runs.objective[2], rtol=1e-10)
    assert_close(alone.gmm.means, runs.gmm.means[2], rtol=1e-8)


def test_float32_runs_close_to_float64():
    gmm0 = gmmjax.init_gmm(
        jax.random.key(1), jnp.asarray(IRIS), n_components=K, covariance_type="diag"
    )
    results = {}
    for dtype in (jnp.float32, jnp.float64):
        x = jnp.asarray(IRIS, dtype)
        prior = gmmjax.VariationalPrior.default(
            x, n_components=K, covariance_type="diag"
        )
        start = jax.tree_util.tree_map(lambda a, t=dtype: a.astype(t), gmm0)
        vb = gmmjax.VB(prior=prior)
        results[dtype] = gmmjax.fit(vb, start, x, tol=0.0, max_steps=20)
    low, high = results[jnp.float32], results[jnp.float64]
    assert low.gmm.means.dtype == jnp.float32 and low.status_name == "MAX_STEPS"
    # float32 rounding, amplified by 20 steps that are not yet contracting
    assert_close(low.gmm.weights, high.gmm.weights, rtol=1e-4)
    assert_close(low.gmm.means, high.gmm.means, rtol=1e-4)
    assert_close(low.objective, high.objective, rtol=1e-4)


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_both_of_ems_routes_give_the_variational_step(rng, covariance_type):
    """A VB step takes EM's E step and statistics, by the expanded route (float64
    and most float32) or the two-pass one: from the same posterior, with sample
    weights and a tempered E step, both give the step computed from
    :func:`gmmjax._vb.expected_log_joint`'s softmax (scikit-learn's E step,
    tested above) in NumPy."""
    from scipy.special import log_softmax

    from gmmjax import _vb
    from gmmjax._em import expanded_summary, two_pass_summary

    x = jnp.asarray(IRIS)
    w = rng.uniform(0.5, 2.0, len(IRIS))
    prior = gmmjax.VariationalPrior.default(
        x, n_components=K, covariance_type=covariance_type
    )
    vb = gmmjax.VB(prior=prior)
    resp = rng.dirichlet(np.ones(K), size=len(IRIS))
    state = vb.init(gmmjax.ResponsibilityStart(resp), x, sample_weight=w)
    expected = _vb._expected_model(prior, state)
    beta = 0.4
    log_resp = log_softmax(
        beta * np.asarray(_vb.expected_log_joint(prior, state, x)), 1
    )
    ref = vb.init(gmmjax.ResponsibilityStart(np.exp(log_resp)), x, sample_weight=w)
    ref_bound = _vb._lower_bound(
        prior, ref, np.sum(w[:, None] * np.exp(log_resp) * log_resp)
    )
    for summary in (expanded_summary, two_pass_summary):
        update = jax.jit(_vb._vb_update(summary))
        new = update(expected, x, jnp.asarray(w), beta, prior, vb.reg_covar)
        for name in ("weight_concentration", "mean_precision", "covariances"):
            assert_close(getattr(new, name), getattr(ref, name), rtol=1e-10)
        assert_close(new.gmm.means, ref.gmm.means, rtol=1e-10)
        assert_close(new.lower_bound, ref_bound, rtol=1e-10)


def test_integer_sample_weights_equal_repeated_rows(rng):
    w = rng.integers(0, 3, size=len(IRIS))
    params = dict(
        n_components=K, covariance_type="diag", tol=1e-8, max_iter=300, random_state=0
    )
    weighted = BayesianGaussianMixture(**params).fit(IRIS, sample_weight=w)
    repeated = BayesianGaussianMixture(**params).fit(np.repeat(IRIS, w, axis=0))
    assert weighted.n_iter_ == repeated.n_iter_
    for name in (
        "weights_",
        "means_",
        "covariances_",
        "mean_prior_",
        "covariance_prior_",
    ):
        assert_close(getattr(weighted, name), getattr(repeated, name), rtol=1e-9)
    assert_close(weighted.lower_bounds_, repeated.lower_bounds_, rtol=1e-10)


def test_a_dirichlet_process_switches_off_unneeded_components(rng):
    # two clusters, three components: the process leaves one nearly empty
    x = np.concatenate([rng.normal(-4, 1, (75, 4)), rng.normal(4, 1, (75, 4))])
    bgm = BayesianGaussianMixture(
        n_components=K, covariance_type="diag", max_iter=500, tol=1e-6, random_state=0
    ).fit(x)
    weights = np.sort(bgm.weights_)
    assert bgm.converged_
    assert weights[0] < 0.01
    np.testing.assert_allclose(weights[1:], 0.5, atol=0.01)


def test_warm_start_continues_the_posterior():
    params = dict(n_components=K, covariance_type="diag", tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        once = BayesianGaussianMixture(max_iter=10, **params).fit(IRIS)
        twice = BayesianGaussianMixture(max_iter=5, warm_start=True, **params)
        twice.fit(IRIS).fit(IRIS)
    assert twice.n_iter_ == 5
    assert_close(twice.lower_bounds_, once.lower_bounds_[5:], rtol=1e-12)
    assert_close(twice.means_, once.means_, rtol=1e-12)


def test_new_settings_and_nearby_sizes_compile_nothing():
    params = dict(n_components=K, covariance_type="diag", random_state=0)
    fitted = BayesianGaussianMixture(**params).fit(IRIS)
    fitted.predict(IRIS), fitted.sample(10)
    with count_compilations() as compiled, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        other = BayesianGaussianMixture(
            n_components=K,
            covariance_type="diag",
            tol=1e-5,
            max_iter=40,
            reg_covar=1e-4,
            weight_concentration_prior=0.1,
            mean_precision_prior=0.5,
            degrees_of_freedom_prior=6.0,
            random_state=3,
        ).fit(IRIS[:120])
        other.predict_proba(IRIS[7:]), other.score(IRIS), other.sample(100)
    assert compiled == []
    assert other.n_iter_ <= 40 and other.weight_concentration_prior_ == 0.1


def test_bad_prior_parameters_raise_named_errors():
    x = IRIS
    default = gmmjax.VariationalPrior.default
    bad = [
        ({"weight_concentration": -1.0}, ValueError, "weight_concentration"),
        ({"weight_concentration": np.nan}, ValueError, "weight_concentration"),
        ({"weight_concentration": "a"}, TypeError, "weight_concentration"),
        ({"mean_precision": 0.0}, ValueError, "mean_precision"),
        ({"mean_precision": [1.0, 2.0]}, ValueError, "mean_precision"),
        ({"mean": np.zeros(3)}, ValueError, "mean"),
        ({"mean": [0.0, 0.0, np.inf, 0.0]}, ValueError, "mean"),
        ({"degrees_of_freedom": 3.0}, ValueError, "degrees_of_freedom"),
        ({"degrees_of_freedom": True}, TypeError, "degrees_of_freedom"),
        ({"covariance": np.eye(3)}, ValueError, "covariance"),
        ({"covariance": -np.eye(4)}, ValueError, "positive definite"),
        ({"covariance": np.triu(np.ones((4, 4)))}, ValueError, "symmetric"),
        ({"covariance": np.diag([1.0, 1.0, 1.0, np.nan])}, ValueError, "finite"),
        ({"weight_prior": "dirichlet"}, ValueError, "weight_prior"),
        ({"covariance_type": "round"}, ValueError, "covariance_type"),
        ({"n_components": 0}, ValueError, "n_components"),
        ({"sample_weight": -np.ones(len(x))}, ValueError, "sample_weight"),
    ]
    for kwargs, error, name in bad:
        kwargs = {"n_components": K, **kwargs}
        with pytest.raises(error, match=name):
            default(x, **kwargs)
    for ctype, cov in [("diag", np.ones((4, 4))), ("diag", [1.0, 1.0, 0.0, 1.0])]:
        with pytest.raises(ValueError, match="covariance"):
            default(x, n_components=K, covariance_type=ctype, covariance=cov)
    with pytest.raises(ValueError, match="covariance"):
        default(x, n_components=K, covariance_type="spherical", covariance=-1.0)
    with pytest.raises(ValueError, match="sample weight"):
        default(x[:1], n_components=1)
    # the plain constructor is checked when a fit starts
    prior = default(x, n_components=K)
    gmm0 = gmmjax.init_gmm(jax.random.key(0), x, n_components=K)
    for field, value in [("mean_precision", -1.0), ("degrees_of_freedom", 0.5)]:
        broken = gmmjax.VB(prior=dataclasses.replace(prior, **{field: value}))
        with pytest.raises(ValueError, match=f"prior.{field}"):
            gmmjax.fit(broken, gmm0, x)
    with pytest.raises(TypeError, match="VariationalPrior"):
        gmmjax.fit(gmmjax.VB(prior=None), gmm0, x)
    # the estimator names its own parameters
    for kwargs, name in [
        ({"degrees_of_freedom_prior": 1.0}, "degrees_of_freedom_prior"),
        ({"mean_prior": [0.0]}, "mean_prior"),
        ({"covariance_prior": np.eye(2)}, "covariance_prior"),
        ({"weight_concentration_prior": 0.0}, "weight_concentration_prior"),
        ({"weight_concentration_prior_type": "x"}, "weight_concentration_prior_type"),
    ]:
        with pytest.raises(ValueError, match=name):
            BayesianGaussianMixture(**kwargs).fit(x)
