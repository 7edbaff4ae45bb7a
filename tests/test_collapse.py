"""Collapse detection (thinnest direction, not the trace) and re-seeding."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import gmmjax
from gmmjax._em import reseed_component, smallest_variance

RNG = np.random.default_rng(3)
BLOB = RNG.normal(size=(60, 2))
T = RNG.normal(size=30)
# 30 points exactly on the line y = 2 x + 1 around (8, 9): rank one
LINE = np.column_stack([T, 2 * T + 1]) + np.array([8.0, 8.0])
ON_A_LINE = np.concatenate([BLOB, LINE])
START = gmmjax.GMM.from_natural(
    [0.6, 0.4], [[0.0, 0.0], [8.0, 9.0]], np.stack([np.eye(2)] * 2)
)


@pytest.mark.parametrize("reg_covar", [0.0, 1e-6])
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
    if reg_covar > 0:
        # the returned step's covariance is that of the line plus reg_covar (with
        # reg_covar=0 the step is not finite and the last finite model is kept)
        cov = np.asarray(result.gmm.covariances[1])
        assert np.linalg.eigvalsh(cov)[0] < 1e-5


def test_smallest_variance_is_the_standardized_eigenvalue():
    # against NumPy: lambda_min(D^-1/2 Sigma_j D^-1/2) divided by the rounding level
    nk = np.array([40.0, 60.0])
    mc = np.array([[-1.0, 0.5], [0.7, -0.3]])
    cov = np.array([[[2.0, 0.3], [0.3, 0.5]], [[1.0, -0.2], [-0.2, 0.8]]])
    got = np.asarray(
        smallest_variance(
            jnp.asarray(nk), jnp.asarray(mc), jnp.zeros(2), jnp.asarray(cov), "full"
        )
    )
    share = nk / nk.sum()
    mean = share @ mc
    data_var = share @ (np.diagonal(cov, axis1=1, axis2=2) + (mc - mean) ** 2)
    scale = np.sqrt(np.outer(data_var, data_var))
    eig = np.linalg.eigvalsh(cov / scale)
    eps = np.finfo(np.float64).eps
    level = 100 * eps**2 * (1 + np.max(mc**2 / data_var, axis=1)) + 4 * eps * eig[:, -1]
    np.testing.assert_allclose(got, eig[:, 0] / level, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_constant_feature_is_not_a_collapse(covariance_type):
    # a column without spread: every component has zero variance along it, but
    # so do the data; reg_covar alone sets that variance and EM converges
    x = np.column_stack([BLOB[:, 0], np.full(60, 2.0)])
    gmm0 = gmmjax.init_gmm(
        jax.random.key(0), x, n_components=2, covariance_type=covariance_type
    )
    assert gmmjax.fit(gmmjax.EM(), gmm0, x).status_name == "CONVERGED"


# ------------------------------------------------------------------ re-seeding
FAITHFUL = gmmjax.datasets.faithful()
# a third component far from the data empties at the first step
FAR = gmmjax.GMM.from_natural(
    [0.4, 0.4, 0.2],
    [[2.0, 55.0], [4.5, 80.0], [50.0, 300.0]],
    [[0.1, 30.0]] * 3,
    covariance_type="diag",
)


def test_reseed_rescues_an_emptied_component():
    plain = gmmjax.fit(gmmjax.EM(), FAR, FAITHFUL)
    assert plain.status_name == "DEGENERATE" and int(plain.degenerate_component) == 2
    reseeded = gmmjax.fit(gmmjax.EM(max_reseeds=2), FAR, FAITHFUL)
    assert reseeded.status_name == "CONVERGED"
    assert int(reseeded.degenerate_component) == -1
    assert float(reseeded.gmm.weights[2]) > 0.01
    assert float(reseeded.log_likelihood) > float(plain.log_likelihood)


def test_a_static_zero_budget_compiles_no_reseeding_and_changes_nothing():
    static, traced = gmmjax.EM(), gmmjax.EM(max_reseeds=jnp.asarray(0))
    # the Python 0 is static (not a leaf); an array budget stays traced
    assert len(jax.tree_util.tree_leaves(static)) == 1
    assert len(jax.tree_util.tree_leaves(traced)) == 2
    leaves, tree = jax.tree_util.tree_flatten(gmmjax.EM(reg_covar=1e-3))
    assert jax.tree_util.tree_unflatten(tree, leaves) == gmmjax.EM(reg_covar=1e-3)

    def fit(fitter):
        return gmmjax.fit(fitter, FAR, FAITHFUL, max_steps=200)

    a, b = fit(static), fit(traced)
    assert a.status_name == b.status_name == "DEGENERATE"
    assert int(a.n_steps) == int(b.n_steps)
    assert float(a.log_likelihood) == float(b.log_likelihood)
    # the static budget's program has no re-seed branch: it is smaller
    hlo = [jax.jit(fit).lower(f).as_text() for f in (static, traced)]
    assert hlo[0].count("\n") < 0.9 * hlo[1].count("\n")


def test_reseed_component_puts_it_on_the_worst_point():
    x = jnp.asarray(FAITHFUL)
    log_prob = gmmjax.log_prob(FAR, x)
    new = reseed_component(FAR, 2, log_prob, x, None, 1e-6)
    worst = int(jnp.argmin(log_prob))
    np.testing.assert_allclose(new.means[2], FAITHFUL[worst])
    np.testing.assert_allclose(float(new.weights[2]), 1 / 3, rtol=1e-12)
    # the others keep their proportions
    old = np.asarray(FAR.weights[:2])
    np.testing.assert_allclose(new.weights[:2], old / old.sum() * 2 / 3, rtol=1e-12)
    np.testing.assert_allclose(
        new.covariances[2], FAITHFUL.var(axis=0) / 3 + 1e-6, rtol=1e-10
    )
    np.testing.assert_array_equal(new.means[:2], FAR.means[:2])


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


def test_reseed_is_traced_jittable_and_vmappable():
    fit = jax.jit(
        lambda r: gmmjax.fit(gmmjax.EM(max_reseeds=r), FAR, FAITHFUL, max_steps=200)
    )
    statuses = jax.vmap(lambda r: fit(r).status)(jnp.arange(3))
    # no re-seed: the empty component stops the run; one or two: it converges
    assert [gmmjax.Status(int(s)).name for s in statuses] == [
        "DEGENERATE",
        "CONVERGED",
        "CONVERGED",
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
        means_init=np.asarray(FAR.means),
        weights_init=np.asarray(FAR.weights),
        precisions_init=np.asarray(FAR.precisions),
        covariance_type="diag",
    )
    with pytest.warns(ConvergenceWarning) as record:
        gm = GaussianMixture(3, **start).fit(FAITHFUL)
    message = str(record[0].message)
    assert "component 2 emptied" in message
    assert "reg_covar" in message and "n_components" in message
    assert "max_reseeds" in message
    assert gm.status_ == "DEGENERATE" and gm.degenerate_component_ == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        gm = GaussianMixture(3, max_reseeds=2, **start).fit(FAITHFUL)
    assert gm.status_ == "CONVERGED" and gm.converged_


def test_estimator_collapse_message_names_the_direction():
    from gmmjax.sklearn import GaussianMixture

    with pytest.warns(ConvergenceWarning, match=r"component 1 collapsed: its variance"):
        gm = GaussianMixture(
            2,
            reg_covar=0.0,
            means_init=np.asarray(START.means),
            weights_init=np.asarray(START.weights),
            precisions_init=np.asarray(START.precisions),
        ).fit(ON_A_LINE)
    assert gm.status_ == "DEGENERATE"
    assert np.all(np.isfinite(gm.score_samples(ON_A_LINE)))


# (x, k, status): all (60, 2), so that fits of one dtype and k share a compilation
DEGENERATE_FIXTURES = {
    "all-equal": (np.full((60, 2), 3.0), 2, "DEGENERATE"),
    "more-components-than-points": (
        np.repeat([[0.0, 0.0], [5.0, 5.0]], 30, axis=0),
        3,
        "DEGENERATE",
    ),
    "constant-feature": (
        np.column_stack([BLOB[:, 0], np.full(60, 2.0)]),
        2,
        "CONVERGED",
    ),
    "duplicated": (np.repeat(BLOB[:20], 3, axis=0), 2, "CONVERGED"),
    "offset-float32": ((BLOB + 1e5).astype(np.float32), 2, "CONVERGED"),
}


@pytest.mark.parametrize("name", list(DEGENERATE_FIXTURES))
def test_degenerate_fixtures_end_finite_and_honest(name):
    from gmmjax.sklearn import GaussianMixture

    x, k, status = DEGENERATE_FIXTURES[name]
    # float32 resolves the mean log-likelihood to ~1e-7 |l|: a tol well above it
    tol = 1e-4 if x.dtype == np.float32 else 1e-6
    gmm0 = gmmjax.init_gmm(jax.random.key(0), x, n_components=k)
    result = gmmjax.fit(gmmjax.EM(), gmm0, x, tol=tol)
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
