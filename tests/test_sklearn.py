"""The scikit-learn estimator: scikit-learn's checks, parity, weights, restarts."""

import os
import subprocess
import sys
import warnings

import jax
import numpy as np
import optax
import pytest
from conftest import count_compilations
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture
from sklearn.utils.estimator_checks import parametrize_with_checks

import gmmjax
from gmmjax.sklearn import GaussianMixture


@parametrize_with_checks([GaussianMixture()])
def test_sklearn_checks(estimator, check):
    check(estimator)


def test_sklearn_array_api_check_runs():
    """The one check above (and in test_vb.py) that scikit-learn skips unless
    SciPy's array API mode is on, which must be set before SciPy is imported:
    here, in a fresh process, for both estimators. It fits with array API
    dispatch enabled and NumPy inputs, and compares."""
    code = (
        "from sklearn.utils.estimator_checks import check_array_api_input\n"
        "from gmmjax.sklearn import BayesianGaussianMixture, GaussianMixture\n"
        "for estimator in (GaussianMixture(), BayesianGaussianMixture()):\n"
        "    check_array_api_input(type(estimator).__name__, estimator,"
        " array_namespace='numpy', expect_only_array_outputs=False)\n"
        "print('checked')\n"
    )
    env = {**os.environ, "SCIPY_ARRAY_API": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "checked"


IRIS = load_iris().data


def _iris_start(ctype):
    """A fixed start for both libraries: one iris row per species as means,
    equal weights, and the precision of the whole data set for every component."""
    means = IRIS[[0, 50, 100]]
    weights = np.full(3, 1 / 3)
    precision = np.linalg.inv(np.cov(IRIS.T))
    precisions = {
        "full": np.stack([precision] * 3),
        "tied": precision,
        "diag": np.stack([np.diag(precision)] * 3),
        "spherical": np.full(3, np.mean(np.diag(precision))),
    }[ctype]
    return dict(weights_init=weights, means_init=means, precisions_init=precisions)


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical", "tied"])
def test_iris_agrees_with_sklearn_from_the_same_start(ctype):
    start = _iris_start(ctype)
    kw = dict(covariance_type=ctype, tol=1e-6, max_iter=500, **start)
    ours = GaussianMixture(3, **kw).fit(IRIS)
    ref = SklearnGaussianMixture(3, **kw).fit(IRIS)
    # the same algorithm from the same point in float64: the two paths differ only
    # by rounding (~1e-16 per step); EM near its optimum contracts such errors, so
    # 1e-6 relative is a generous bound.
    assert ours.n_iter_ == ref.n_iter_
    assert ours.converged_ and ref.converged_
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        np.testing.assert_allclose(
            getattr(ours, name), getattr(ref, name), rtol=1e-6, atol=1e-9
        )
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(ours.score_samples(IRIS), ref.score_samples(IRIS))
    np.testing.assert_allclose(
        ours.predict_proba(IRIS), ref.predict_proba(IRIS), atol=1e-6
    )
    np.testing.assert_array_equal(ours.predict(IRIS), ref.predict(IRIS))
    np.testing.assert_allclose(ours.bic(IRIS), ref.bic(IRIS), rtol=1e-10)
    np.testing.assert_allclose(ours.aic(IRIS), ref.aic(IRIS), rtol=1e-10)


def test_lower_bound_semantics():
    gm = GaussianMixture(3, tol=1e-8, max_iter=300, random_state=0).fit(IRIS)
    bounds = gm.lower_bounds_
    assert bounds.shape == (gm.n_iter_,)
    assert gm.lower_bound_ == bounds[-1]
    assert np.all(np.diff(bounds) >= -1e-12)  # EM is monotone
    # the returned model is the update of the last step: its score is the bound's
    # successor, at least as large and within tol after convergence
    assert 0.0 <= gm.score(IRIS) - gm.lower_bound_ < 1e-8
    start = GaussianMixture(3, max_iter=0, random_state=0).fit(IRIS)
    assert start.n_iter_ == 0 and start.lower_bound_ == -np.inf
    np.testing.assert_allclose(bounds[0], start.score(IRIS), rtol=1e-12)


@pytest.mark.parametrize("ctype", ["full", "spherical"])
def test_integer_sample_weight_equals_repeated_rows(ctype, rng):
    x = IRIS[:, :2] + 0.01 * rng.normal(size=(150, 2))
    w = rng.integers(0, 4, size=150)
    start = _iris_start(ctype)
    start["means_init"] = start["means_init"][:, :2]
    p = start["precisions_init"]
    start["precisions_init"] = p[..., :2, :2] if p.ndim >= 2 and ctype != "diag" else p
    kw = dict(covariance_type=ctype, tol=1e-8, max_iter=500, **start)
    weighted = GaussianMixture(3, **kw).fit(x, sample_weight=w)
    repeated = GaussianMixture(3, **kw).fit(np.repeat(x, w, axis=0))
    assert weighted.n_iter_ == repeated.n_iter_
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(
            getattr(weighted, name), getattr(repeated, name), rtol=1e-9
        )
    np.testing.assert_allclose(weighted.lower_bounds_, repeated.lower_bounds_)


def test_n_init_picks_the_best_restart():
    x = gmmjax_faithful()
    gm = GaussianMixture(
        4, n_init=12, init_params="random_from_data", random_state=3, max_iter=300
    ).fit(x)
    lls = gm.restart_log_likelihoods_
    assert lls.shape == (12,)
    assert lls.max() - lls.min() > 1.0  # the restarts found different optima
    np.testing.assert_allclose(gm.score(x) * len(x), lls.max(), rtol=1e-12)
    single = GaussianMixture(
        4, n_init=1, init_params="random_from_data", random_state=3, max_iter=300
    ).fit(x)
    assert gm.score(x) >= single.score(x)


def gmmjax_faithful():
    import gmmjax

    return gmmjax.datasets.faithful()


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical", "tied"])
def test_fit_predict_equals_fit_then_predict(ctype):
    # two restarts: the programs of test_masked_components_fit_as_the_plain_model
    # and test_verbose_reports_each_restart
    kw = dict(covariance_type=ctype, n_init=2, max_iter=3, random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = GaussianMixture(3, **kw).fit_predict(IRIS)
        again = GaussianMixture(3, **kw).fit(IRIS).predict(IRIS)
    np.testing.assert_array_equal(labels, again)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
def test_integer_sample_weight_equals_repeated_rows_from_the_same_seed(init_params):
    # scikit-learn's check_sample_weight_equivalence with several components:
    # the initializations draw from the weighted data, not from row positions,
    # so shuffled weighted rows and the repeated rows fit the same model
    rng = np.random.default_rng(1)
    w = rng.integers(0, 4, size=150)
    order = rng.permutation(150)
    kw = dict(n_init=2, tol=1e-8, max_iter=300, random_state=0, init_params=init_params)
    weighted = GaussianMixture(3, **kw).fit(IRIS[order], sample_weight=w[order])
    repeated = GaussianMixture(3, **kw).fit(np.repeat(IRIS, w, axis=0))
    # every restart: the same run
    np.testing.assert_allclose(
        weighted.restart_log_likelihoods_, repeated.restart_log_likelihoods_, rtol=1e-9
    )
    # the chosen model (two restarts that reach one optimum with its components
    # in another order tie to rounding, so compare in the order of the means)
    fits = (weighted, repeated)
    ranks = [np.argsort(gm.means_[:, 0]) for gm in fits]
    for name in ("weights_", "means_", "covariances_"):
        ours, theirs = (getattr(gm, name)[r] for gm, r in zip(fits, ranks, strict=True))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    np.testing.assert_allclose(
        weighted.score_samples(IRIS), repeated.score_samples(IRIS), rtol=1e-8
    )


def test_warm_start_continues_the_run():
    kw = dict(tol=0.0, random_state=0, init_params="random")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warm = GaussianMixture(3, max_iter=4, warm_start=True, **kw)
        warm.fit(IRIS).fit(IRIS)
        once = GaussianMixture(3, max_iter=8, **kw).fit(IRIS)
    np.testing.assert_allclose(warm.means_, once.means_, rtol=1e-10)
    np.testing.assert_allclose(warm.lower_bounds_, once.lower_bounds_[4:], rtol=1e-12)


def test_warm_start_continues_the_convergence_test_as_sklearn():
    # from the same start, refits of one step each: the first test of every
    # refit compares with the previous fit's lower_bound_, so both report
    # converged_ at the same refit (and n_iter_ 1 each time)
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    start = dict(
        weights_init=[0.3, 0.3, 0.4],
        means_init=IRIS[[0, 60, 120]],
        precisions_init=np.stack([np.eye(4) * 4.0] * 3),
    )
    models = [
        cls(3, max_iter=1, tol=1e-3, warm_start=True, **start)
        for cls in (GaussianMixture, SkGaussianMixture)
    ]
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(25):
            seen.append(
                [(m.fit(IRIS).n_iter_, m.converged_, m.lower_bound_) for m in models]
            )
    ours, theirs = (np.array([step[i] for step in seen]) for i in (0, 1))
    np.testing.assert_array_equal(ours[:, :2], theirs[:, :2])
    np.testing.assert_allclose(ours[:, 2], theirs[:, 2], rtol=1e-9)
    # the run converges within the refits, not at the first one
    assert not ours[0, 1] and ours[-1, 1]


def test_warnings_say_what_happened():
    with pytest.warns(ConvergenceWarning, match=r"MAX_STEPS.*max_iter=2"):
        GaussianMixture(3, max_iter=2, random_state=0).fit(IRIS)
    # a point repeated far from the rest captures a component, whose covariance
    # collapses onto it (reg_covar=0)
    rng = np.random.default_rng(0)
    x = np.concatenate([np.full((20, 2), 10.0), rng.normal(size=(80, 2))])
    start = dict(
        means_init=[[10.0, 10.0], [0.0, 0.0]],
        weights_init=[0.5, 0.5],
        precisions_init=np.stack([np.eye(2)] * 2),
    )
    with pytest.warns(ConvergenceWarning, match=r"DEGENERATE.*component 0 "):
        gm = GaussianMixture(2, reg_covar=0.0, **start).fit(x)
    assert gm.status_ == "DEGENERATE" and gm.degenerate_component_ == 0


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_collapsed_data_at_reg_covar_0_raise_sklearns_error_or_score_finite(
    covariance_type,
):
    # 20 identical samples: with reg_covar=0 the component that takes them
    # collapses; fit either keeps finite parameters (and warns) or raises
    # scikit-learn's ill-defined-covariance error with gmmjax's account, never
    # another exception or a model that scores NaN
    rng = np.random.default_rng(0)
    x = np.concatenate([np.full((20, 2), 10.0), rng.normal(size=(80, 2))])
    outcomes = []
    for start in ({"means_init": [[10.0, 10.0], [0.0, 0.0]]}, {"random_state": 0}):
        gm = GaussianMixture(2, covariance_type=covariance_type, reg_covar=0.0, **start)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                gm.fit(x)
        except ValueError as error:
            assert str(error).startswith(
                "Fitting the mixture model failed because some components have "
                "ill-defined empirical covariance"
            )
            assert "(gmmjax: the best run stopped at step" in str(error)
            assert not hasattr(gm, "means_")  # no half-fitted model is left
            outcomes.append("raised")
            continue
        assert np.isfinite(gm.score_samples(x)).all()
        assert np.isfinite(gm.precisions_).all() and np.isfinite(gm.covariances_).all()
        outcomes.append(gm.status_)
    # the collapse is real: the starts from the identical samples do not converge
    assert outcomes[0] != "CONVERGED" or covariance_type == "tied"


def _message(make, fit):
    """The text of the error (or ConvergenceWarning) ``fit(make())`` raises."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            fit(make())
        except ValueError as error:
            return str(error)
    return next(str(w.message) for w in caught if w.category is ConvergenceWarning)


@pytest.mark.parametrize(
    "params",
    [
        dict(weights_init=[0.5, 0.5]),
        dict(weights_init=[0.2, 0.2, 0.2]),
        dict(means_init=np.zeros((3, 3))),
        dict(precisions_init=np.ones((3, 4))),
        dict(covariance_type="tied", precisions_init=np.ones(3)),
        dict(precisions_init=np.stack([np.diag([1.0, 1.0, 1.0, -1.0])] * 3)),
        dict(precisions_init=np.stack([np.triu(np.ones((4, 4)))] * 3)),
        dict(covariance_type="diag", precisions_init=-np.ones((3, 4))),
        dict(covariance_type="spherical", precisions_init=[1.0, 0.0, 1.0]),
        dict(max_iter=2, random_state=0),
    ],
    ids=[
        "weights-shape",
        "weights-sum",
        "means-shape",
        "full-shape",
        "tied-shape",
        "full-not-definite",
        "full-not-symmetric",
        "diag-negative",
        "spherical-zero",
        "not-converged",
    ],
)
def test_messages_start_with_sklearns(params):
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    theirs = _message(lambda: SkGaussianMixture(3, **params), lambda m: m.fit(IRIS))
    ours = _message(lambda: GaussianMixture(3, **params), lambda m: m.fit(IRIS))
    assert ours.startswith(theirs) and "(gmmjax: " in ours[len(theirs) :]


def test_messages_of_sklearns_own_slips_start_with_its_words():
    # scikit-learn swaps the range's max and min, and names n_components where
    # it means n_samples: gmmjax keeps the words, with the right values
    with pytest.raises(ValueError) as error:
        GaussianMixture(3, weights_init=[-0.5, 0.5, 1.0]).fit(IRIS)
    assert str(error.value).startswith(
        "The parameter 'weights' should be in the range [0, 1], but got max value "
        "1.00000, min value -0.50000"
    )
    fitted = GaussianMixture(2, random_state=0).fit(IRIS)
    with pytest.raises(ValueError, match=r"^Invalid value for 'n_samples': -3 \. "):
        fitted.sample(-3)


def test_pandas_input_pickling_and_clone():
    import io
    import pickle

    import joblib
    from sklearn.base import clone

    frame = load_iris(as_frame=True).data
    gm = GaussianMixture(3, random_state=0).fit(frame)
    assert list(gm.feature_names_in_) == list(frame.columns)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        gm.predict(frame.to_numpy())
    buffer = io.BytesIO()
    joblib.dump(gm, buffer)
    buffer.seek(0)
    for copy in (joblib.load(buffer), pickle.loads(pickle.dumps(gm))):
        np.testing.assert_array_equal(
            copy.score_samples(frame), gm.score_samples(frame)
        )
        np.testing.assert_array_equal(copy.predict(frame), gm.predict(frame))
    fresh = clone(gm)
    assert fresh.get_params() == gm.get_params() and not hasattr(fresh, "means_")


def test_pipeline_and_grid_search_choose_as_sklearn():
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), GaussianMixture(2, random_state=0))
    scaled = StandardScaler().fit_transform(IRIS)
    np.testing.assert_allclose(
        pipe.fit(IRIS).score(IRIS),
        GaussianMixture(2, random_state=0).fit(scaled).score(scaled),
        rtol=1e-12,
    )

    def minus_bic(estimator, x, y=None):
        return -estimator.bic(x)

    grid = {"n_components": [1, 2, 3, 4], "covariance_type": ["full", "diag"]}
    folds = KFold(5, shuffle=True, random_state=0)
    for scoring in (None, minus_bic):
        ours, theirs = (
            GridSearchCV(cls(n_init=3, random_state=0), grid, scoring=scoring, cv=folds)
            .fit(IRIS)
            .cv_results_
            for cls in (GaussianMixture, SklearnGaussianMixture)
        )
        best = [int(np.argmax(r["mean_test_score"])) for r in (ours, theirs)]
        top = [
            r["mean_test_score"][i] for r, i in zip((ours, theirs), best, strict=True)
        ]
        if scoring is None:
            # by held-out log-likelihood the choice rests on local maxima of
            # the larger models, which the two k-means differ on (ours run in
            # standard units): the chosen model scores at least as well
            assert top[0] >= top[1] - 1e-9
        else:
            # BIC's penalty makes the choice clear-cut: the same model
            assert best[0] == best[1]
            assert ours["params"][best[0]] == {
                "covariance_type": "full",
                "n_components": 2,
            }
        # one component has one optimum: the same scores, fold by fold
        one = [i for i, p in enumerate(ours["params"]) if p["n_components"] == 1]
        np.testing.assert_allclose(
            ours["mean_test_score"][one], theirs["mean_test_score"][one], rtol=1e-9
        )


def test_a_float32_ill_defined_fit_suggests_float64():
    x = np.concatenate([np.full((20, 2), 10.0), np.eye(2), -np.eye(2)])
    gm = GaussianMixture(2, reg_covar=0.0, means_init=[[10.0, 10.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="passing float64 data instead of float32"):
        gm.fit(x.astype(np.float32))


def test_float32_stays_float32_and_sample():
    gm = GaussianMixture(2, random_state=0).fit(IRIS.astype(np.float32))
    assert gm.means_.dtype == np.float32
    assert gm.score_samples(IRIS.astype(np.float32)).dtype == np.float32
    x, y = gm.sample(50)
    assert x.shape == (50, 4) and y.shape == (50,)
    assert np.all(np.diff(y) >= 0)  # grouped by component, as in scikit-learn
    x2, _ = gm.sample(50)
    np.testing.assert_array_equal(x, x2)  # an int random_state is reproducible


def test_bad_parameters():
    with pytest.raises(ValueError, match="n_components"):
        GaussianMixture(0).fit(IRIS)
    with pytest.raises(ValueError, match="init_params"):
        GaussianMixture(2, init_params="nope").fit(IRIS)
    with pytest.raises(ValueError, match="weights_init must sum to 1"):
        GaussianMixture(2, weights_init=[0.5, 0.6]).fit(IRIS)
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture(
            1, precisions_init=-np.eye(4)[None], covariance_type="full"
        ).fit(IRIS)
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(5).fit(IRIS[:4])
    with pytest.raises(TypeError, match="max_iter"):
        GaussianMixture(2, max_iter=1.5).fit(IRIS)


def test_verbose_reports_each_restart(capsys):
    GaussianMixture(2, n_init=2, verbose=2, verbose_interval=1, random_state=0).fit(
        IRIS
    )
    out = capsys.readouterr().out
    assert "Initialization 0" in out and "Initialization 1" in out
    assert "Iteration 2" in out and "converged" in out


def test_core_package_does_not_import_sklearn():
    code = (
        "import sys, gmmjax, gmmjax.io, gmmjax.plot\n"
        "assert 'sklearn' not in sys.modules, 'sklearn imported'\n"
        "import numpy as np\n"
        "from gmmjax.sklearn import GaussianMixture\n"
        # float64 data are fitted in float64 even with jax_enable_x64 off
        "x = gmmjax.datasets.faithful()\n"
        "gm = GaussianMixture(2, random_state=0).fit(x)\n"
        "print(gm.means_.dtype, gm.score_samples(x).dtype)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["float64", "float64"]


FAITHFUL = gmmjax_faithful()


@pytest.fixture(scope="module")
def em_faithful():
    # converges in 9 steps; a budget up to 1,024 steps shares the fit program of
    # test_core_package_does_not_import_sklearn (one history capacity)
    fitted = GaussianMixture(2, tol=1e-10, max_iter=1000, random_state=0).fit(FAITHFUL)
    assert fitted.converged_
    return fitted


def _perturbed_start(em):
    shift = np.array([[0.3, 3.0], [-0.2, -2.0]])
    return dict(
        means_init=em.means_ + shift,
        weights_init=[0.5, 0.5],
        precisions_init=em.precisions_,
    )


def test_optax_optimizer_reaches_the_em_optimum(em_faithful):
    gm = GaussianMixture(
        2,
        optimizer=optax.lbfgs(),
        tol=1e-10,
        max_iter=500,
        **_perturbed_start(em_faithful),
    ).fit(FAITHFUL)
    assert gm.converged_
    # both stop where the mean log-likelihood changes by < 1e-10 per step; the
    # optimum is well conditioned, so they agree to ~1e-8 per sample
    np.testing.assert_allclose(
        gm.score(FAITHFUL), em_faithful.score(FAITHFUL), atol=1e-7
    )
    np.testing.assert_allclose(gm.means_, em_faithful.means_, rtol=1e-4)


def test_annealed_fit_reaches_the_em_optimum(em_faithful):
    steps = 20
    gm = GaussianMixture(
        2,
        anneal=optax.linear_schedule(0.6, 1.0, steps),
        tol=1e-10,
        max_iter=2000,
        **_perturbed_start(em_faithful),
    ).fit(FAITHFUL)
    # the convergence test only applies once beta = 1
    assert gm.converged_ and gm.n_iter_ > steps
    np.testing.assert_allclose(
        gm.score(FAITHFUL), em_faithful.score(FAITHFUL), atol=1e-7
    )
    with pytest.raises(TypeError, match="anneal"):
        GaussianMixture(2, anneal=0.5).fit(FAITHFUL)
    with pytest.raises(TypeError, match="optimizer"):
        GaussianMixture(2, optimizer="adam").fit(FAITHFUL)


def test_diagnose_tells_a_maximum_from_a_saddle(em_faithful):
    assert em_faithful.diagnose(FAITHFUL).kind == "maximum"
    # both components on the single-Gaussian fit: EM stays there (a fixed point),
    # and it is a saddle of the two-component likelihood
    mean = FAITHFUL.mean(axis=0)
    precision = np.linalg.inv(np.cov(FAITHFUL.T, bias=True))
    gm = GaussianMixture(
        2,
        means_init=[mean, mean],
        weights_init=[0.5, 0.5],
        precisions_init=[precision, precision],
        tol=1e-12,
    ).fit(FAITHFUL)
    assert gm.converged_
    diagnosis = gm.diagnose(FAITHFUL)
    assert diagnosis.kind == "saddle"
    # standardized, per-sample curvature: the uphill direction is clearly nonzero
    assert np.max(np.asarray(diagnosis.eigenvalues)) > 0.1


def test_nearby_sizes_and_new_settings_compile_nothing():
    # one fit, one draw and one prediction compile the programs of their buckets
    gm = GaussianMixture(3, n_init=10, random_state=0).fit(IRIS)
    gm.sample(100)
    gm.predict(IRIS)
    with count_compilations() as compiled:
        # a 5-fold training set (120 rows) shares the bucket of 150 (256); n_init
        # 9 that of 10
        short = GaussianMixture(
            3, n_init=9, max_iter=7, tol=1e-2, reg_covar=1e-4, random_state=3
        ).fit(IRIS[:120])
        long = GaussianMixture(3, max_iter=300, tol=1e-5, random_state=4)
        long.set_params(n_init=10).fit(IRIS[5:])
        draws = [len(gm.sample(n)[0]) for n in (97, 112)]
        gm.predict_proba(IRIS[:145]), gm.score(IRIS[3:]), gm.bic(IRIS), gm.aic(IRIS)
        # on small data n_components up to 8 share the program of 8 (masked)
        others = [GaussianMixture(k, n_init=10, random_state=0) for k in (1, 5, 8)]
        labels = [other.fit(IRIS).predict(IRIS) for other in others]
    assert compiled == []
    # the new values are used
    assert short.n_iter_ <= 7 and len(short.lower_bounds_) == short.n_iter_
    assert long.n_iter_ > short.n_iter_
    assert len(short.restart_log_likelihoods_) == 9 and draws == [97, 112]
    for other, found in zip(others, labels, strict=True):
        k = other.n_components
        assert other.means_.shape == (k, 4) and other.covariances_.shape == (k, 4, 4)
        assert np.isclose(other.weights_.sum(), 1.0) and set(found) <= set(range(k))


def plain_restarts(random_state, **options):
    """gmmjax.multistart on the bare iris data from the keys the estimator draws
    with ``random_state`` (k-means starts, the estimator's default budget)."""
    seed = np.random.RandomState(random_state).randint(np.iinfo(np.int32).max)
    return gmmjax.multistart(
        gmmjax.EM(),
        jax.random.key(seed),
        IRIS,
        init="kmeans",
        max_steps=100,
        hc_start=False,
        **options,
    )


def test_padded_restarts_and_rows_are_those_of_the_plain_fit():
    # the estimator pads 150 rows to 256 (weight 0) and 9 restarts to 10
    # (discarded): each restart equals gmmjax.multistart's on the bare data from
    # the same keys, to rounding
    gm = GaussianMixture(2, n_init=9, tol=1e-6, random_state=0).fit(IRIS)
    runs = plain_restarts(0, n_components=2, n_init=9, tol=1e-6)
    np.testing.assert_allclose(
        gm.restart_log_likelihoods_, runs.log_likelihood, rtol=1e-10
    )
    best = gmmjax.best_of(runs)
    np.testing.assert_allclose(gm.means_, best.gmm.means, rtol=1e-8)


@pytest.mark.parametrize("covariance_type", ["tied", "spherical"])
def test_masked_components_fit_as_the_plain_model(covariance_type):
    # small data compile for 8 components, the surplus masked; each restart
    # equals gmmjax.multistart's plain 3-component one from the same keys (full:
    # test_padded_restarts_and_rows_are_those_of_the_plain_fit)
    gm = GaussianMixture(
        3, covariance_type=covariance_type, n_init=2, tol=1e-8, random_state=1
    ).fit(IRIS)
    runs = plain_restarts(
        1, n_components=3, covariance_type=covariance_type, n_init=2, tol=1e-8
    )
    np.testing.assert_allclose(
        gm.restart_log_likelihoods_, runs.log_likelihood, rtol=1e-9
    )
    best = gmmjax.best_of(runs).gmm
    np.testing.assert_allclose(gm.means_, best.means, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(gm.covariances_, best.covariances, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gm.predict_proba(IRIS[:20]).sum(axis=1), 1.0)


def test_large_data_compile_for_their_own_components():
    from gmmjax.sklearn import _component_bucket

    assert _component_bucket(3, 256, 4) == 8
    assert _component_bucket(9, 256, 4) == 10
    assert _component_bucket(3, 20_480, 8) == 3


def test_a_bucket_of_draws_starts_with_the_smaller_draw():
    # sample(n) draws a bucket of samples and keeps the first n: JAX's threefry
    # gives the leading rows of a larger draw the values of the smaller one
    gm = GaussianMixture(2, random_state=0).fit(FAITHFUL)
    key = jax.random.key(5)
    x97, z97 = gmmjax.sample(key, gm.gmm_, 97)
    x112, z112 = gmmjax.sample(key, gm.gmm_, 112)
    np.testing.assert_array_equal(x97, x112[:97])
    np.testing.assert_array_equal(z97, z112[:97])
