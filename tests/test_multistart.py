"""multistart: batched restarts equal single fits; best_of picks the right run."""

import jax
import numpy as np
import pytest
from conftest import COVARIANCE_TYPES

import gmmjax
from gmmjax._multistart import start_keys

# Lanes of a vmapped run execute the same operations as a single fit, but XLA may
# order the reductions of a batched op differently: rounding-level (1e-16)
# differences, which EM (a contraction near a maximum) does not amplify. 1e-9
# relative to each array's scale leaves ample room and still catches any mix-up
# between lanes (those differ at order one).
RTOL = 1e-9

# The restart programs are keyed by shapes and static arguments, not by values
# (keys, max_steps, tol, reg_covar): the tests share a few configurations on
# faithful so that they share compiled programs. The every-lane test's
# (K components, N_INIT starts from data) serves the tests that need "some
# restarts", and the report test's (K, spherical, N_MANY starts) those that need
# more starts or batches.
K = 3
N_INIT = 4
N_MANY = 7


def assert_same_fit(got, want):
    assert int(got.status) == int(want.status)
    assert int(got.n_steps) == int(want.n_steps)
    assert int(got.degenerate_component) == int(want.degenerate_component)
    np.testing.assert_allclose(got.log_likelihood, want.log_likelihood, rtol=RTOL)
    for a, b in zip(
        jax.tree_util.tree_leaves(got.gmm),
        jax.tree_util.tree_leaves(want.gmm),
        strict=True,
    ):
        scale = np.max(np.abs(b)) + 1.0
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * scale)


def lane(result, i):
    # indexed on the host: device arrays would compile a slice per shape
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[i], result)


def many_starts(key, faithful, **kwargs):
    """The report test's restarts: ``N_MANY`` spherical starts from data."""
    options = dict(
        n_components=K,
        n_init=N_MANY,
        covariance_type="spherical",
        init="random_from_data",
        hc_start=False,
    )
    return gmmjax.multistart(gmmjax.EM(), key, faithful, **options | kwargs)


@pytest.fixture(scope="module")
def faithful():
    return gmmjax.datasets.faithful()


def test_n_init_one_equals_fit(faithful):
    key = jax.random.key(7)
    result = gmmjax.multistart(
        gmmjax.EM(),
        key,
        faithful,
        n_components=K,
        n_init=1,
        max_steps=200,
        hc_start=False,
    )
    assert result.log_likelihood.shape == (1,)
    assert result.gmm.means.shape == (1, K, 2)
    gmm0 = gmmjax.init_gmm(jax.random.fold_in(key, 0), faithful, n_components=K)
    alone = gmmjax.fit(gmmjax.EM(), gmm0, faithful, max_steps=200)
    assert_same_fit(lane(result, 0), alone)


def test_the_first_start_is_the_hierarchical_partition(faithful):
    key = jax.random.key(7)
    result = gmmjax.multistart(
        gmmjax.EM(), key, faithful, n_components=K, n_init=3, max_steps=200
    )
    # start 0 from init_gmm's "hc" (the key is not used), the others as without
    gmm0 = gmmjax.init_gmm(jax.random.key(99), faithful, n_components=K, method="hc")
    assert_same_fit(
        lane(result, 0), gmmjax.fit(gmmjax.EM(), gmm0, faithful, max_steps=200)
    )
    gmm1 = gmmjax.init_gmm(jax.random.fold_in(key, 1), faithful, n_components=K)
    assert_same_fit(
        lane(result, 1), gmmjax.fit(gmmjax.EM(), gmm1, faithful, max_steps=200)
    )
    with pytest.raises(TypeError, match="hc_start must be True or False, got 1"):
        gmmjax.multistart(
            gmmjax.EM(), key, faithful, n_components=K, n_init=3, hc_start=1
        )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_every_lane_equals_its_start_fitted_alone(faithful, covariance_type):
    key = jax.random.key(11)
    fitter = gmmjax.EM(reg_covar=1e-4)
    result = gmmjax.multistart(
        fitter,
        key,
        faithful,
        n_components=K,
        n_init=N_INIT,
        covariance_type=covariance_type,
        init="random_from_data",
        max_steps=150,
        reg_covar=1e-4,
        hc_start=False,
    )
    starts = []
    for i, k in enumerate(start_keys(key, N_INIT)):
        # the starts get multistart's reg_covar, as init_gmm's do
        gmm0 = gmmjax.init_gmm(
            k,
            faithful,
            n_components=K,
            covariance_type=covariance_type,
            method="random_from_data",
            reg_covar=1e-4,
        )
        starts.append(np.asarray(gmm0.means))
        alone = gmmjax.fit(fitter, gmm0, faithful, max_steps=150)
        assert_same_fit(lane(result, i), alone)
    # the starts differ, so a mix-up between lanes would be caught
    assert not all(np.array_equal(starts[0], m) for m in starts[1:])


def test_lanes_with_sample_weight(rng):
    x = rng.normal(size=(60, 2)) + np.repeat([[0.0, 0.0], [4.0, 1.0]], 30, axis=0)
    w = rng.uniform(0.2, 3.0, size=60)
    key = jax.random.key(5)
    result = gmmjax.multistart(
        gmmjax.EM(),
        key,
        x,
        n_components=2,
        n_init=3,
        covariance_type="diag",
        sample_weight=w,
        init="kmeans",
        hc_start=False,
    )
    for i, k in enumerate(start_keys(key, 3)):
        gmm0 = gmmjax.init_gmm(
            k,
            x,
            n_components=2,
            covariance_type="diag",
            method="kmeans",
            sample_weight=w,
        )
        alone = gmmjax.fit(gmmjax.EM(), gmm0, x, sample_weight=w)
        assert_same_fit(lane(result, i), alone)


def test_start_i_does_not_depend_on_n_init(faithful):
    # the every-lane test's N_INIT starts against the report test's N_MANY
    key = jax.random.key(3)
    few = many_starts(key, faithful, n_init=N_INIT, max_steps=50)
    many = many_starts(key, faithful, max_steps=50)
    for i in range(N_INIT):
        assert_same_fit(lane(many, i), lane(few, i))


def test_batch_size_does_not_change_results(faithful):
    # the report test's restarts and batches (all at once, and 3 at a time)
    key = jax.random.key(2)
    whole = many_starts(key, faithful, max_steps=100)
    # 3 does not divide 7 (a remainder chunk), 1 is a plain loop, 50 > n_init
    for batch_size in (3, 1, 50):
        chunked = many_starts(key, faithful, max_steps=100, batch_size=batch_size)
        assert chunked.log_likelihood.shape == (N_MANY,)
        for i in range(N_MANY):
            assert_same_fit(lane(chunked, i), lane(whole, i))


def test_multistart_under_jit(faithful):
    # eagerly, the every-lane test's diag restarts
    kwargs = dict(
        n_components=K,
        n_init=N_INIT,
        covariance_type="diag",
        init="random_from_data",
        max_steps=30,
    )

    @jax.jit
    def run(key, tol):
        return gmmjax.multistart(gmmjax.EM(), key, faithful, tol=tol, **kwargs)

    key = jax.random.key(9)
    eager = gmmjax.multistart(gmmjax.EM(), key, faithful, tol=1e-6, **kwargs)
    jitted = run(key, 1e-6)
    for i in range(N_INIT):
        assert_same_fit(lane(jitted, i), lane(eager, i))


def test_fixed_work_with_tol_zero(faithful):
    result = gmmjax.multistart(
        gmmjax.EM(),
        jax.random.key(4),
        faithful,
        n_components=K,
        n_init=N_INIT,
        covariance_type="diag",
        init="random_from_data",
        max_steps=30,
        tol=0.0,
    )
    np.testing.assert_array_equal(result.n_steps, 30)
    np.testing.assert_array_equal(result.status, int(gmmjax.Status.MAX_STEPS))


def fake_result(lls, statuses):
    """A batched FitResult whose lanes are labelled by their means (NumPy
    leaves: device arrays built here would compile a program per shape)."""
    b = len(lls)
    gmm = gmmjax.GMM(
        logits=np.zeros((b, 1)),
        means=np.arange(b, dtype=float).reshape(b, 1, 1),
        log_diag=np.zeros((b, 1)),
        off_diag=None,
        covariance_type="spherical",
    )
    degenerate = [0 if s == gmmjax.Status.DEGENERATE else -1 for s in statuses]
    return gmmjax.FitResult(
        gmm,
        np.asarray(lls, float),
        np.full(b, 10, np.int32),
        np.asarray([int(s) for s in statuses], np.int32),
        np.asarray(degenerate, np.int32),
        np.asarray(lls, float),
    )


S = gmmjax.Status


@pytest.mark.parametrize(
    ("lls", "statuses", "winner"),
    [
        # the highest usable log-likelihood wins
        ([-5.0, -3.0, -4.0], [S.CONVERGED, S.MAX_STEPS, S.CONVERGED], 1),
        # a degenerate or non-finite run never wins while a usable one exists
        ([-5.0, 1e6, -4.0], [S.CONVERGED, S.DEGENERATE, S.MAX_STEPS], 2),
        ([np.nan, -9.0, 3.0], [S.CONVERGED, S.CONVERGED, S.NONFINITE], 1),
        ([np.inf, -9.0], [S.CONVERGED, S.MAX_STEPS], 1),
        # ties go to the earliest start
        ([-2.0, -1.0, -1.0], [S.CONVERGED] * 3, 1),
        # nothing usable: the failed run with the best finite score, status kept
        ([np.nan, -7.0, -6.0], [S.NONFINITE, S.DEGENERATE, S.NONFINITE], 2),
        # nothing finite at all: the first run
        ([np.nan, np.nan], [S.NONFINITE, S.CONVERGED], 0),
    ],
)
def test_best_of_rules(lls, statuses, winner):
    result = fake_result(lls, statuses)
    # a batch names the status of every run, one run its own
    assert result.status_name == [S(int(s)).name for s in statuses]
    best = gmmjax.best_of(result)
    assert best.status_name == S(int(statuses[winner])).name
    assert best.log_likelihood.shape == ()
    assert best.gmm.means.shape == (1, 1)
    assert float(best.gmm.means[0, 0]) == winner
    assert int(best.status) == int(statuses[winner])
    # jittable, with the same answer
    jitted = jax.jit(gmmjax.best_of)(result)
    assert float(jitted.gmm.means[0, 0]) == winner


def test_best_of_real_runs_is_the_best_usable_lane(faithful):
    # key 2's starts end at two local maxima, and one start degenerates
    result = many_starts(jax.random.key(2), faithful)
    best = gmmjax.best_of(result)
    lls = np.asarray(result.log_likelihood)
    usable = np.isin(
        np.asarray(result.status), [S.CONVERGED, S.MAX_STEPS]
    ) & np.isfinite(lls)
    assert usable.any() and not usable.all()
    assert len(np.unique(np.round(lls[usable]))) > 1
    assert float(best.log_likelihood) == np.max(lls[usable])
    np.testing.assert_allclose(
        float(best.log_likelihood),
        float(gmmjax.log_likelihood(best.gmm, faithful)),
        rtol=1e-12,
    )


def test_best_of_rejects_bad_input(faithful):
    # the n_init=1 test's start and fit
    gmm0 = gmmjax.init_gmm(jax.random.key(0), faithful, n_components=K)
    single = gmmjax.fit(gmmjax.EM(), gmm0, faithful, max_steps=5)
    with pytest.raises(ValueError, match="leading n_init axis"):
        gmmjax.best_of(single)
    with pytest.raises(TypeError, match="FitResult"):
        gmmjax.best_of({"log_likelihood": np.zeros(3)})


class _Unhashable:
    __hash__ = None

    def __call__(self, n_steps, mean_ll, running):
        pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(n_init=0), ValueError, "n_init must be >= 1"),
        (dict(n_init=2.0), TypeError, "n_init must be an integer"),
        (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
        (dict(batch_size=1.5), TypeError, "batch_size must be an integer"),
        (dict(init="bogus"), ValueError, "init must be one of"),
        (dict(covariance_type="round"), ValueError, "covariance_type must be one"),
        (dict(n_components=0), ValueError, "n_components must be >= 1"),
        (dict(n_components=300), ValueError, "need n_samples >= n_components"),
        (dict(max_steps=-1), ValueError, "max_steps must be >= 0"),
        (dict(tol=-1.0), ValueError, "tol must be"),
        (dict(reg_covar=-1.0), ValueError, "reg_covar must be a finite number >= 0"),
        (dict(reg_covar="big"), TypeError, "reg_covar must be a number"),
        (dict(report=3), TypeError, "report must be a function or None, got int"),
        (dict(report=_Unhashable()), TypeError, "report must be hashable"),
        (dict(sample_weight=np.ones(5)), ValueError, "sample_weight must have"),
    ],
)
def test_multistart_rejects_bad_arguments(faithful, kwargs, error, match):
    args = dict(n_components=2, n_init=2) | kwargs
    with pytest.raises(error, match=match):
        gmmjax.multistart(gmmjax.EM(), jax.random.key(0), faithful, **args)


def test_multistart_rejects_bad_key_fitter_and_data(faithful):
    kwargs = dict(n_components=2, n_init=2)
    with pytest.raises(TypeError, match=r"key must be a jax\.random key"):
        gmmjax.multistart(gmmjax.EM(), 0, faithful, **kwargs)
    with pytest.raises(ValueError, match="single key"):
        gmmjax.multistart(
            gmmjax.EM(), jax.random.split(jax.random.key(0)), faithful, **kwargs
        )
    with pytest.raises(TypeError, match="fitter must provide"):
        gmmjax.multistart(object(), jax.random.key(0), faithful, **kwargs)
    with pytest.raises(ValueError, match="reg_covar"):
        gmmjax.multistart(
            gmmjax.EM(reg_covar=-1.0), jax.random.key(0), faithful, **kwargs
        )
    with pytest.raises(ValueError, match="2-D array"):
        gmmjax.multistart(gmmjax.EM(), jax.random.key(0), faithful[:, 0], **kwargs)


def test_reg_covar_regularizes_the_starts_whatever_the_fitter(faithful):
    # Annealed has no reg_covar of its own: the starts used to get 1e-6 whatever
    # the inner EM's was; now they get multistart's, and only it. The starts are
    # the n_init=1 test's (K components, full, k-means++)
    key = jax.random.key(6)
    kwargs = dict(n_components=K, n_init=2, max_steps=0, hc_start=False)
    fitter = gmmjax.Annealed(gmmjax.EM(reg_covar=1e-3), lambda t: 1.0)
    for reg_covar, expected in ((None, 1e-6), (1e-3, 1e-3), (0.5, 0.5)):
        extra = {} if reg_covar is None else {"reg_covar": reg_covar}
        runs = gmmjax.multistart(fitter, key, faithful, **kwargs, **extra)
        for i, k in enumerate(start_keys(key, 2)):
            gmm0 = gmmjax.init_gmm(k, faithful, n_components=K, reg_covar=expected)
            # max_steps=0: the result is the start itself
            np.testing.assert_allclose(
                lane(runs, i).gmm.covariances, gmm0.covariances, rtol=1e-12
            )


def _recorder():
    calls = []

    def report(n_steps, mean_ll, running):
        calls.append((np.array(n_steps), np.array(mean_ll), np.array(running)))

    return report, calls


@pytest.mark.parametrize("batch_size", [None, 3])
def test_report_sees_every_restart_and_changes_nothing(faithful, batch_size):
    # 7 starts in batches of 3, 3 and 1 (a remainder batch), or all at once
    kwargs = dict(max_steps=60, batch_size=batch_size or N_MANY)
    key = jax.random.key(8)
    plain = many_starts(key, faithful, **kwargs)
    report, calls = _recorder()
    seen = many_starts(key, faithful, report=report, **kwargs)
    jax.effects_barrier()
    # the report only observes: the same results (the programs differ by the
    # callback alone, around which XLA may order a sum differently: the last bits
    # may differ, and EM's contraction keeps them the last bits)
    for a, b in zip(
        jax.tree_util.tree_leaves(seen), jax.tree_util.tree_leaves(plain), strict=True
    ):
        if np.issubdtype(np.asarray(a).dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
        else:
            np.testing.assert_array_equal(a, b)
    n = np.asarray(plain.n_steps)
    batches = [slice(0, 7)] if batch_size is None else [slice(0, 3), slice(3, 6)]
    batches += [] if batch_size is None else [slice(6, 7)]
    assert len({int(n[b].max()) for b in batches}) > 1 or batch_size is None
    # every call shows all 7 restarts; each batch reports before each step of its
    # slowest run and once at its end, one batch after the other
    assert all(steps.shape == (7,) for steps, _, _ in calls)
    assert len(calls) == sum(int(n[b].max()) + 1 for b in batches)
    t = 0
    for batch in batches:
        before, after = slice(0, batch.start), slice(batch.stop, 7)
        for step in range(int(n[batch].max()) + 1):
            steps, mean_ll, running = calls[t]
            t += 1
            np.testing.assert_array_equal(steps[batch], np.minimum(step, n[batch]))
            np.testing.assert_array_equal(running[batch], step < n[batch])
            # the batches before have ended, those after have not started
            np.testing.assert_array_equal(steps[before], n[before])
            assert not running[before].any() and running[after].all()
            assert (steps[after] == 0).all() and (mean_ll[after] == -np.inf).all()
    final_steps, final_ll, final_running = calls[-1]
    assert not final_running.any()
    assert sum(not running.any() for _, _, running in calls) == 1
    np.testing.assert_array_equal(final_steps, n)
    assert np.all(final_ll <= np.asarray(plain.log_likelihood) / len(faithful))
    # a second call of the same program reports afresh
    calls.clear()
    many_starts(key, faithful, report=report, **kwargs)
    jax.effects_barrier()
    assert len(calls) == sum(int(n[b].max()) + 1 for b in batches)
    np.testing.assert_array_equal(calls[-1][0], n)


def test_without_report_the_program_has_no_callback(faithful):
    from gmmjax._multistart import _multistart

    x = jax.numpy.asarray(faithful)
    keys = start_keys(jax.random.key(0), 4)
    args = (gmmjax.EM(), keys, x, None, np.int32(10), 1e-6, 1e-6)
    static = dict(n_components=2, covariance_type="spherical", init="kmeans++")
    report, _ = _recorder()
    for batch_size in (None, 3):
        lowered = _multistart.lower(*args, **static, batch_size=batch_size, report=None)
        assert "callback" not in lowered.as_text()
        lowered = _multistart.lower(
            *args, **static, batch_size=batch_size, report=report
        )
        assert "callback" in lowered.as_text()
