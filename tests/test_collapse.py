"""Collapse detection (thinnest direction, not the trace; ``reg_covar`` included)
and re-seeding."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import host_m_step_natural, kmeans_resp, kmeans_start
from sklearn.exceptions import ConvergenceWarning

import gmmjax
from gmmjax._degeneracy import reseed_component, smallest_variance

RNG = np.random.default_rng(3)
BLOB = RNG.normal(size=(60, 2))
T = RNG.normal(size=30)
# 30 points exactly on the line y = 2 x + 1 around (8, 9): rank one
LINE = np.column_stack([T, 2 * T + 1]) + np.array([8.0, 8.0])
ON_A_LINE = np.concatenate([BLOB, LINE])
# natural parameters kept on the host too, as the estimators' ``*_init`` (reading
# them back from a GMM compiles a small program per property)
START_NATURAL = ([0.6, 0.4], [[0.0, 0.0], [8.0, 9.0]], np.stack([np.eye(2)] * 2))
START = gmmjax.GMM.from_natural(*START_NATURAL)
START_INIT = dict(
    weights_init=np.asarray(START_NATURAL[0]),
    means_init=np.asarray(START_NATURAL[1]),
    precisions_init=np.linalg.inv(START_NATURAL[2]),
)


# a reg_covar below what the moments resolve cannot hold the variance across the
# line up (the step is not finite: the last finite model is kept)
@pytest.mark.parametrize("reg_covar", [0.0, 1e-16])
def test_collapse_onto_a_line_is_caught(reg_covar):
    result = gmmjax.fit(gmmjax.EM(reg_covar=reg_covar), START, ON_A_LINE)
    assert result.status_name == "DEGENERATE"
    assert int(result.degenerate_component) == 1
    assert np.isfinite(float(result.log_likelihood))
    # the captured points have a large trace but no width: a trace test (the
    # previous criterion) could not see this collapse
    line_cov = np.cov(LINE.T)
    assert np.trace(line_cov) > 0.1 * ON_A_LINE.var(axis=0).sum()
    assert np.linalg.eigvalsh(line_cov)[0] < 1e-10


def test_smallest_variance_is_the_standardized_eigenvalue():
    # against NumPy: lambda_min(D^-1/2 (S_j + r I) D^-1/2), D from the moments
    # before reg_covar, and the rounding level about the center
    nk = np.array([40.0, 60.0])
    means = np.array([[-1.0, 0.5], [0.7, -0.3]])
    center = np.array([0.2, 0.1])
    cov = np.array([[[2.0, 0.3], [0.3, 0.5]], [[1.0, -0.2], [-0.2, 0.8]]])
    reg = 1e-3
    # jitted: run eagerly, every operation would compile a program of its own
    got = jax.jit(smallest_variance, static_argnums=4, static_argnames="expanded")(
        nk, means, center, cov, "full", reg, expanded=True
    )
    share = nk / nk.sum()
    mean = share @ means
    data_var = share @ (np.diagonal(cov, axis1=1, axis2=2) + (means - mean) ** 2)
    scale = np.sqrt(np.outer(data_var, data_var))
    eig = np.linalg.eigvalsh((cov + reg * np.eye(2)) / scale)
    eps = np.finfo(np.float64).eps
    offset = np.max((means - center) ** 2 / data_var, axis=1)
    level = 10 * eps * (1 + offset) + 4 * eps * eig[:, -1]
    np.testing.assert_allclose(got.variance, eig[:, 0], rtol=1e-12)
    np.testing.assert_allclose(got.level, level, rtol=1e-12)


def test_reg_covar_holds_a_flat_component_up():
    # the line of the test above with the default reg_covar: the component's
    # variance across the line is reg_covar, 6e-8 of the data's (standardized)
    # but far above the rounding level (7e-15), so the likelihood is bounded: a
    # maximum of the regularized likelihood, where scikit-learn converges too.
    # The expanded moments resolve that variance to 10 eps (V + m^2) ~ 2e-13, so
    # the mean log-likelihoods agree to about 1e-7 (measured: 2e-9).
    from sklearn.mixture import GaussianMixture as Reference

    result = gmmjax.fit(gmmjax.EM(reg_covar=1e-6), START, ON_A_LINE, tol=1e-10)
    assert result.status_name == "CONVERGED"
    cov = np.asarray(result.gmm.covariances[1])
    np.testing.assert_allclose(np.linalg.eigvalsh(cov)[0], 1e-6, rtol=1e-3)
    reference = Reference(2, tol=1e-10, **START_INIT).fit(ON_A_LINE)
    mean_ll = float(result.log_likelihood) / len(ON_A_LINE)
    np.testing.assert_allclose(mean_ll, reference.score(ON_A_LINE), rtol=0, atol=1e-7)


# ------------------------------------------------------------------ re-seeding
FAITHFUL = gmmjax.datasets.faithful()
# a third component far from the data empties at the first step
FAR_NATURAL = (
    np.array([0.4, 0.4, 0.2]),
    np.array([[2.0, 55.0], [4.5, 80.0], [50.0, 300.0]]),
    np.array([[0.1, 30.0]] * 3),
)
FAR = gmmjax.GMM.from_natural(*FAR_NATURAL, covariance_type="diag")
# good starts of the same shape: the M steps of k-means labels
GOOD = [kmeans_start(FAITHFUL, 3, "diag", seed=seed) for seed in (0, 1)]


def test_reseed_rescues_an_emptied_component():
    plain = gmmjax.fit(gmmjax.EM(), FAR, FAITHFUL)
    assert plain.status_name == "DEGENERATE" and int(plain.degenerate_component) == 2
    reseeded = gmmjax.fit(gmmjax.EM(max_reseeds=2), FAR, FAITHFUL)
    assert reseeded.status_name == "CONVERGED"
    assert int(reseeded.degenerate_component) == -1
    assert np.asarray(reseeded.gmm.weights)[2] > 0.01
    assert float(reseeded.log_likelihood) > float(plain.log_likelihood)


@pytest.mark.parametrize("tiny", [1e-9, 1e-3])
def test_reseeding_the_component_of_almost_all_weight_stays_finite(tiny):
    # float32: 1 - 2e-9 rounds to 1, so log(1 - w_j) taken from w_j is -inf; the
    # others' weights (their ratio kept, their total 1 - 1/k) come from their own
    weights = np.array([1 - 2 * tiny, tiny, tiny])
    gmm = gmmjax.GMM.from_natural(
        weights.astype(np.float32),
        np.zeros((3, 2), np.float32),
        np.ones((3, 2), np.float32),
        covariance_type="diag",
    )
    x = np.asarray(FAITHFUL, np.float32)
    log_prob = -np.arange(len(x), dtype=np.float32)
    new = jax.jit(reseed_component)(gmm, 0, log_prob, x, None, 1e-6)
    expected = np.array([1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(np.asarray(new.weights), expected, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(new.means)[0], x[-1])  # worst sample


def test_a_static_zero_budget_compiles_no_reseeding_and_changes_nothing():
    # the budget is static: never a leaf, part of the treedef
    for budget in (0, 2):
        em = gmmjax.EM(reg_covar=1e-3, max_reseeds=budget)
        leaves, tree = jax.tree_util.tree_flatten(em)
        assert len(leaves) == 1
        assert jax.tree_util.tree_unflatten(tree, leaves) == em
    assert jax.tree_util.tree_structure(gmmjax.EM()) != jax.tree_util.tree_structure(
        gmmjax.EM(max_reseeds=2)
    )

    def fit(fitter, gmm0=FAR):
        return gmmjax.fit(fitter, gmm0, FAITHFUL, max_steps=200)

    # without a degeneracy the re-seed branch is never taken: the same numbers, to
    # the rounding of two separately compiled programs (XLA may order a sum
    # differently in each; bitwise equal on CPUs with AVX-512)
    a, b = fit(gmmjax.EM(), GOOD[0]), fit(gmmjax.EM(max_reseeds=2), GOOD[0])
    assert a.status_name == b.status_name == "CONVERGED"
    assert int(a.n_steps) == int(b.n_steps)
    np.testing.assert_allclose(a.log_likelihood, b.log_likelihood, rtol=1e-13)
    # the budget-0 program has no re-seed branch: it is smaller
    hlo = [
        jax.jit(fit).lower(gmmjax.EM(max_reseeds=r)).as_text().count("\n")
        for r in (0, 2)
    ]
    assert hlo[0] < 0.9 * hlo[1]


@pytest.mark.parametrize(
    ("budget", "error", "match"),
    [
        (jnp.asarray(2), TypeError, "max_reseeds must be an integer"),
        (np.asarray(2), TypeError, "max_reseeds must be an integer"),
        (2.0, TypeError, "max_reseeds must be an integer"),
        (True, TypeError, "max_reseeds must be an integer"),
        (-1, ValueError, "max_reseeds must be >= 0"),
    ],
)
def test_reseed_budget_is_a_python_integer(budget, error, match):
    with pytest.raises(error, match=match):
        gmmjax.fit(gmmjax.EM(max_reseeds=budget), FAR, FAITHFUL)
    gmmjax.EM(max_reseeds=np.int64(2)).check()  # a NumPy integer is an integer


def test_reseed_component_puts_it_on_the_worst_point():
    log_prob = gmmjax.log_prob(FAR, FAITHFUL)

    # jitted: run eagerly, every operation would compile a program of its own
    @jax.jit
    def reseeded(gmm, log_prob, x):
        new = reseed_component(gmm, 2, log_prob, x, None, 1e-6)
        return new.means, new.weights, new.covariances

    means, weights, covariances = jax.device_get(reseeded(FAR, log_prob, FAITHFUL))
    worst = np.argmin(np.asarray(log_prob))
    np.testing.assert_allclose(means[2], FAITHFUL[worst])
    np.testing.assert_allclose(weights[2], 1 / 3, rtol=1e-12)
    # the others keep their proportions
    old = FAR_NATURAL[0][:2]
    np.testing.assert_allclose(weights[:2], old / old.sum() * 2 / 3, rtol=1e-12)
    np.testing.assert_allclose(
        covariances[2], FAITHFUL.var(axis=0) / 3 + 1e-6, rtol=1e-10
    )
    np.testing.assert_array_equal(means[:2], FAR_NATURAL[1][:2])


def test_reseed_budget_then_honest_degenerate():
    # two distinct points, three components: every re-seed collapses again
    x = np.repeat([[0.0], [5.0]], 10, axis=0)
    gmm0 = gmmjax.GMM.from_natural(
        [0.4, 0.3, 0.3], [[0.0], [5.0], [20.0]], [1.0] * 3, covariance_type="spherical"
    )
    fitter = gmmjax.EM(max_reseeds=3)
    result = gmmjax.fit(fitter, gmm0, x)
    assert result.status_name == "DEGENERATE"
    assert np.isfinite(float(result.log_likelihood))
    assert all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(result))
    # the budget was spent: stepping by hand counts the re-seeds
    state = fitter.init(gmm0, jnp.asarray(x))
    step = jax.jit(lambda s: fitter.step(s, jnp.asarray(x)))
    reports = []
    for _ in range(int(result.n_steps)):
        state, info = step(state)
        reports.append(int(info.degenerate))
    assert int(state.n_reseeds) == 3
    assert reports[-1] >= 0 and reports.count(-1) == len(reports) - 1


def test_reseed_is_jittable_and_vmappable():
    # one compiled fit, vmapped over starts: the far start needs its re-seeds,
    # the others converge without; the budget itself is static
    starts = jax.tree_util.tree_map(lambda *a: np.stack(a), jax.device_get(FAR), *GOOD)

    @jax.jit
    def statuses(budget_fitter, gmm0s):
        fit = lambda g: gmmjax.fit(budget_fitter, g, FAITHFUL, max_steps=200)  # noqa: E731
        return jax.vmap(fit)(gmm0s).status

    names = [
        [gmmjax.Status(int(s)).name for s in statuses(gmmjax.EM(max_reseeds=r), starts)]
        for r in (0, 2)
    ]
    # no re-seed: the empty component stops the far run; two: it converges
    assert names == [
        ["DEGENERATE", "CONVERGED", "CONVERGED"],
        ["CONVERGED", "CONVERGED", "CONVERGED"],
    ]
    runs = gmmjax.multistart(
        gmmjax.EM(max_reseeds=2),
        jax.random.key(0),
        FAITHFUL,
        n_components=3,
        n_init=3,
        max_steps=100,
    )
    assert runs.status.shape == (3,)
    assert np.all(np.isfinite(np.asarray(runs.log_likelihood)))


# ------------------------------------------------------------------ the estimator
def test_estimator_warns_specifically_and_reseeds():
    from gmmjax.sklearn import GaussianMixture

    start = dict(
        weights_init=FAR_NATURAL[0],
        means_init=FAR_NATURAL[1],
        precisions_init=1 / FAR_NATURAL[2],
        covariance_type="diag",
    )
    with pytest.warns(ConvergenceWarning) as record:
        gm = GaussianMixture(3, **start).fit(FAITHFUL)
    message = str(record[0].message)
    assert "component 2 emptied" in message
    # the remedies: a larger reg_covar, fewer components, re-seeding
    assert "reg_covar" in message and "components" in message
    assert "max_reseeds" in message
    assert gm.status_ == "DEGENERATE" and gm.degenerate_component_ == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        gm = GaussianMixture(3, max_reseeds=2, **start).fit(FAITHFUL)
    assert gm.status_ == "CONVERGED" and gm.converged_


def test_estimator_collapse_message_names_the_direction():
    from gmmjax.sklearn import GaussianMixture

    with pytest.warns(ConvergenceWarning, match=r"component 1 collapsed: along its"):
        gm = GaussianMixture(2, reg_covar=0.0, **START_INIT).fit(ON_A_LINE)
    assert gm.status_ == "DEGENERATE"
    assert np.all(np.isfinite(gm.score_samples(ON_A_LINE)))


# (x, k, status): all (90, 2), the shape of ON_A_LINE, so that fits of one dtype
# and k share a compilation (the full k = 2 fit with the tests above)
WIDE_BLOB = np.random.default_rng(4).normal(size=ON_A_LINE.shape)
DEGENERATE_FIXTURES = {
    "all-equal": (np.full((90, 2), 3.0), 2, "DEGENERATE"),
    "more-components-than-points": (
        np.repeat([[0.0, 0.0], [5.0, 5.0]], 45, axis=0),
        3,
        "DEGENERATE",
    ),
    "constant-feature": (
        np.column_stack([WIDE_BLOB[:, 0], np.full(90, 2.0)]),
        2,
        "CONVERGED",
    ),
    "duplicated": (np.repeat(WIDE_BLOB[:30], 3, axis=0), 2, "CONVERGED"),
    "offset-float32": ((WIDE_BLOB + 1e5).astype(np.float32), 2, "CONVERGED"),
}


@pytest.mark.parametrize("name", list(DEGENERATE_FIXTURES))
def test_degenerate_fixtures_end_finite_and_honest(name):
    from gmmjax.sklearn import GaussianMixture

    x, k, status = DEGENERATE_FIXTURES[name]
    # float32 resolves the mean log-likelihood to ~1e-7 |l|: a tol well above it
    tol = 1e-4 if x.dtype == np.float32 else 1e-6
    gmm0 = kmeans_start(x, k, "full")
    result = gmmjax.fit(gmmjax.EM(), gmm0, x, tol=tol)
    assert result.log_likelihood.dtype == x.dtype  # fitted in the data's dtype
    assert all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(result))
    assert result.status_name == status
    assert (int(result.degenerate_component) >= 0) == (status == "DEGENERATE")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        gm = GaussianMixture(k, random_state=0, max_iter=500).fit(x)
    assert np.all(np.isfinite(gm.means_)) and np.all(np.isfinite(gm.covariances_))
    assert np.isfinite(gm.score(x))
    if status == "DEGENERATE":
        assert gm.status_ == "DEGENERATE"
        assert any("DEGENERATE" in str(w.message) for w in record)
    else:
        assert gm.status_ == "CONVERGED"


# ------------------------------------------------------------------ digits
# scikit-learn's digits (1,797 x 64 integer pixels, three constant columns): the
# members of a component often share a pixel value exactly, so its variance there
# is reg_covar alone, which the collapse test must accept (a test of the variance
# before reg_covar stopped every such fit at step 1, DEGENERATE, far below).
# From the same start both run the same EM steps and stopping rule; rounding,
# amplified along the path, moves the score by up to 7e-9 relative (measured),
# so 1e-6 relative bounds it, far below the gap of another optimum.
DIGITS_SETTINGS = {
    "defaults": ({}, "full", False),
    "reg_covar=1e-3": ({"reg_covar": 1e-3}, "full", False),
    "max_reseeds=10": ({"max_reseeds": 10}, "full", False),
    "diag": ({}, "diag", False),
    "constant-columns-dropped": ({}, "full", True),
}


def _kmeans_start(x, covariance_type, reg_covar):
    """scikit-learn's ``init_params="kmeans"`` start as ``*_init`` arguments."""
    weights, means, cov = host_m_step_natural(
        x, kmeans_resp(x, 10), covariance_type, reg_covar=reg_covar
    )
    precisions = np.linalg.inv(cov) if covariance_type == "full" else 1 / cov
    return dict(
        covariance_type=covariance_type,
        weights_init=weights,
        means_init=means,
        precisions_init=precisions,
    )


@pytest.mark.parametrize("setting", list(DIGITS_SETTINGS))
def test_digits_fits_as_well_as_sklearn(setting):
    from sklearn.datasets import load_digits
    from sklearn.mixture import GaussianMixture as Reference

    from gmmjax.sklearn import GaussianMixture

    options, covariance_type, drop = DIGITS_SETTINGS[setting]
    x = load_digits().data
    if drop:
        x = x[:, x.var(axis=0) > 0]
    reg = {"reg_covar": options["reg_covar"]} if "reg_covar" in options else {}
    start = _kmeans_start(x, covariance_type, reg.get("reg_covar", 1e-6))
    reference = Reference(10, **start, **reg).fit(x)
    assert reference.converged_
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        gm = GaussianMixture(10, **start, **options).fit(x)
    assert gm.status_ == "CONVERGED" and gm.degenerate_component_ == -1
    assert gm.score(x) >= reference.score(x) - 1e-6 * abs(reference.score(x))
