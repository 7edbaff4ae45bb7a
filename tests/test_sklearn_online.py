"""The estimator's stepwise EM: partial_fit and mini-batch fits (batch_size)."""

import pickle
import warnings

import jax
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import gmmjax
from gmmjax.sklearn import GaussianMixture

# three well-separated clusters in 2-D; minibatches of 100 rows (one row bucket,
# so every test here shares the update program of its dtype)
CENTERS = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, -1.0]])
SHARES = np.array([0.5, 0.3, 0.2])


def draw(rng, n, dtype=np.float64):
    labels = rng.choice(3, size=n, p=SHARES)
    return (CENTERS[labels] + rng.normal(size=(n, 2))).astype(dtype)


def start(dtype=np.float64):
    """A fixed start, as estimator inits and as a gmmjax.GMM."""
    weights = np.full(3, 1 / 3, dtype)
    means = (CENTERS + 1.0).astype(dtype)
    covariances = np.stack([np.eye(2, dtype=dtype) * 2.0] * 3)
    inits = dict(
        weights_init=weights,
        means_init=means,
        precisions_init=np.linalg.inv(covariances),
    )
    with jax.enable_x64(dtype == np.float64):
        gmm = gmmjax.GMM.from_natural(weights, means, covariances)
    return inits, gmm


def batches(seed, count, n=100):
    rng = np.random.default_rng(seed)
    return [draw(rng, n) for _ in range(count)]


def assert_same_model(gm, gmm, rtol=1e-10):
    # the estimator pads each minibatch with rows of weight 0: only the order
    # of floating-point sums differs from OnlineEM's on the bare minibatch
    np.testing.assert_allclose(gm.weights_, gmm.weights, rtol=rtol)
    np.testing.assert_allclose(gm.means_, gmm.means, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(gm.covariances_, gmm.covariances, rtol=rtol)


def test_partial_fit_is_online_em_from_the_same_start():
    inits, gmm0 = start()
    stream = batches(0, 6)
    gm = GaussianMixture(3, **inits)
    for x in stream:
        gm.partial_fit(x)
    online = gmmjax.OnlineEM()
    with jax.enable_x64(True):
        state, lls = online.run(gmm0, stream)
        assert_same_model(gm, state.gmm)
        # the running bound: each minibatch's mean log-likelihood before its
        # update, averaged in with the update's step size
        bound = float(lls[0])
        for t in range(1, len(stream)):
            rho = float(online.step_size(t))
            bound = (1 - rho) * bound + rho * float(lls[t])
    assert gm.n_iter_ == 6 and gm.lower_bounds_.shape == (6,)
    np.testing.assert_allclose(gm.lower_bound_, bound, rtol=1e-12)
    assert gm.lower_bounds_[-1] == gm.lower_bound_
    assert gm.status_ in ("CONVERGED", "MAX_STEPS")
    # learning_decay and learning_offset are OnlineEM's alpha and t0
    gm2 = GaussianMixture(3, learning_decay=0.8, learning_offset=4.0, **inits)
    for x in stream:
        gm2.partial_fit(x)
    with jax.enable_x64(True):
        state, _ = gmmjax.OnlineEM(alpha=0.8, t0=4.0).run(gmm0, stream)
        assert_same_model(gm2, state.gmm)


def test_first_partial_fit_initializes_from_its_batch():
    x = batches(1, 1)[0]
    gm = GaussianMixture(3, random_state=0, n_init=2).partial_fit(x)
    # the fit's own initialization on that batch (best of n_init starts), then
    # one update with the same batch
    init = GaussianMixture(3, random_state=0, n_init=2, max_iter=0).fit(x)
    online = gmmjax.OnlineEM()
    with jax.enable_x64(True):
        state, info = online.update(online.init(init.gmm_), x)
        assert_same_model(gm, state.gmm)
    assert gm.n_iter_ == 1 and not gm.converged_
    np.testing.assert_allclose(gm.lower_bound_, float(info.log_likelihood))
    np.testing.assert_allclose(
        gm.restart_log_likelihoods_, init.restart_log_likelihoods_
    )


def test_integer_weights_are_repeated_rows_in_partial_fit():
    inits, _ = start()
    rng = np.random.default_rng(2)
    counts = [rng.integers(0, 3, size=40) for _ in range(3)]
    xs = [draw(rng, 40) for _ in range(3)]
    weighted = GaussianMixture(3, **inits)
    repeated = GaussianMixture(3, **inits)
    for x, c in zip(xs, counts, strict=True):
        weighted.partial_fit(x, sample_weight=c)
        repeated.partial_fit(np.repeat(x, c, axis=0))
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(
            getattr(weighted, name), getattr(repeated, name), rtol=1e-10
        )
    np.testing.assert_allclose(weighted.lower_bound_, repeated.lower_bound_)


def test_partial_fit_continues_a_fit():
    inits, _ = start()
    rng = np.random.default_rng(3)
    gm = GaussianMixture(3, **inits).fit(draw(rng, 200))
    fitted, n_iter, bound = gm.gmm_, gm.n_iter_, gm.lower_bound_
    x = draw(rng, 100)
    gm.partial_fit(x)
    # the fitted model's statistics, counted as n_iter_ updates of the schedule
    online = gmmjax.OnlineEM()
    with jax.enable_x64(True):
        state = online.init(fitted)._replace(count=np.int32(n_iter))
        state, info = online.update(state, x)
        assert_same_model(gm, state.gmm)
    rho = float(info.step_size)
    np.testing.assert_allclose(rho, (n_iter + 1.0) ** -0.6)
    np.testing.assert_allclose(
        gm.lower_bound_, (1 - rho) * bound + rho * float(info.log_likelihood)
    )
    assert gm.n_iter_ == n_iter + 1 and gm.lower_bounds_.shape == (n_iter + 1,)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_stream_converges_to_the_mixture(dtype):
    rng = np.random.default_rng(4)
    gm = GaussianMixture(3, random_state=0, tol=1e-3)
    calls = 0
    while not gm.converged_ if calls else True:
        gm.partial_fit(draw(rng, 100, dtype))
        calls += 1
        assert calls < 200, "the stream's running bound never settled"
    assert gm.status_ == "CONVERGED" and gm.n_iter_ == calls
    assert gm.means_.dtype == dtype and gm.covariances_.dtype == dtype
    order = np.argsort(gm.means_[:, 0])
    # 100 rows a batch: the running statistics average a few thousand rows by now
    np.testing.assert_allclose(gm.means_[order], CENTERS, atol=0.25)
    np.testing.assert_allclose(gm.weights_[order], SHARES, atol=0.06)
    # the truth scores within a few hundredths of the fitted model on new data
    test = draw(rng, 2000, dtype)
    truth = gmmjax.GMM.from_natural(SHARES, CENTERS, np.stack([np.eye(2)] * 3))
    with jax.enable_x64(True):
        reference = float(gmmjax.log_likelihood(truth, test.astype(np.float64)))
    assert abs(gm.score(test) - reference / len(test)) < 0.03


def test_batch_fit_reaches_em(tmp_path):
    rng = np.random.default_rng(5)
    x = draw(rng, 2500)
    inits, _ = start()
    full = GaussianMixture(3, tol=1e-8, max_iter=500, **inits).fit(x)
    kw = dict(batch_size=250, tol=1e-4, max_iter=100, random_state=0)
    mini = GaussianMixture(3, **inits, **kw).fit(x)
    assert mini.converged_ and mini.status_ == "CONVERGED"
    assert mini.n_iter_ == mini.lower_bounds_.shape[0] and mini.n_iter_ > 1
    assert mini.lower_bound_ == mini.lower_bounds_[-1]
    # ten updates an epoch: the running statistics still carry minibatch noise
    # of order rho_t / sqrt(250); on the data's mean log-likelihood (-3.3) the
    # gap to EM's maximum is a few thousandths
    assert 0 <= full.score(x) - mini.score(x) < 5e-3
    # a memmap is read in contiguous blocks, in random order
    path = tmp_path / "x.npy"
    np.save(path, x)
    mapped = GaussianMixture(3, **inits, **kw).fit(np.load(path, mmap_mode="r"))
    assert mapped.converged_
    assert 0 <= full.score(x) - mapped.score(x) < 5e-3
    # a warm start continues the stream (its model, statistics and step sizes):
    # its first epoch scores as the last one did, where the cold fit's first
    # epoch started far below
    mini.set_params(warm_start=True)
    bound, first = mini.lower_bound_, mini.lower_bounds_[0]
    mini.fit(x)
    assert abs(mini.lower_bounds_[0] - bound) < 2e-3
    assert first < bound - 0.05


def test_a_pickled_stream_goes_on_as_the_original():
    inits, _ = start()
    stream = batches(6, 4)
    gm = GaussianMixture(3, **inits)
    for x in stream[:2]:
        gm.partial_fit(x)
    copy = pickle.loads(pickle.dumps(gm))
    for x in stream[2:]:
        gm.partial_fit(x)
        copy.partial_fit(x)
    np.testing.assert_array_equal(copy.means_, gm.means_)
    np.testing.assert_array_equal(copy.lower_bounds_, gm.lower_bounds_)


def test_partial_fit_raises_on_an_ill_defined_first_batch():
    # two sets of identical rows and reg_covar=0: the initial covariances are
    # singular, as for fit
    x = np.repeat([[0.0, 0.0], [1.0, 1.0]], 50, axis=0)
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        GaussianMixture(2, reg_covar=0.0, random_state=0).partial_fit(x)


def test_partial_fit_warns_when_a_component_empties():
    inits, _ = start()
    inits["weights_init"] = np.array([0.98, 0.01, 0.01])
    inits["means_init"] = np.array([[0.0, 0.0], [60.0, 60.0], [-60.0, 60.0]])
    gm = GaussianMixture(3, **inits)
    with pytest.warns(ConvergenceWarning, match="component 1 emptied"):
        gm.partial_fit(draw(np.random.default_rng(7), 100))
    assert gm.status_ == "DEGENERATE" and gm.degenerate_component_ == 1
    assert np.isfinite(gm.score(CENTERS))


@pytest.mark.parametrize(
    "params, msg",
    [
        ({"batch_size": 0}, r"batch_size must be >= 1, got 0"),
        ({"batch_size": 2.5}, r"batch_size must be an integer"),
        ({"learning_decay": 0.5}, r"learning_decay must be in \(0.5, 1\], got 0.5"),
        ({"learning_decay": 1.5}, r"learning_decay must be in \(0.5, 1\]"),
        ({"learning_offset": 0.5}, r"learning_offset must be >= 1, got 0.5"),
        ({"max_reseeds": 2}, r"does not re-seed components: max_reseeds must be 0"),
        ({"anneal": lambda t: 1.0}, r"stepwise EM: anneal must be None"),
    ],
)
def test_bad_stream_parameters(params, msg):
    x = batches(8, 1)[0]
    gm = GaussianMixture(3, **params)
    with pytest.raises((TypeError, ValueError), match=msg):
        gm.partial_fit(x)
    with pytest.raises((TypeError, ValueError), match=msg):
        gm.set_params(batch_size=params.get("batch_size", 50)).fit(x)


def test_bad_stream_data():
    x = batches(9, 1)[0]
    with pytest.raises(ValueError, match="at least one non-zero"):
        GaussianMixture(3).partial_fit(x, sample_weight=np.zeros(100))
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(3).partial_fit(x[:2])
    with pytest.raises(ValueError, match="batch_size must be >= n_components=3"):
        GaussianMixture(3, batch_size=2).fit(x)
    gm = GaussianMixture(3, random_state=0).partial_fit(x)
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture"):
        gm.partial_fit(np.ones((5, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gm.partial_fit(x[:1])  # later minibatches may hold a single row
    assert gm.n_iter_ == 2
