"""Exact out-of-core EM and online EM (gmmjax/_streaming.py)."""

import itertools

import jax
import numpy as np
import pytest
from conftest import COVARIANCE_TYPES
from sklearn.cluster import KMeans

import gmmjax
from gmmjax import _fit as gmmjax_fit

# Chunked and in-memory EM share the M step and differ only in summation order
# (chunk sums, then running totals) and in the centers of the moments (the
# current means versus the data's mean; the 10 eps floor on N applies about them,
# mu = c + s / (N + 10 eps)): ulps per step.
CHUNK_TOL = 1e-9


def max_diff(a, b) -> float:
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in pairs)


def mixture_data(n, d=3, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(3, d))
    labels = rng.integers(0, 3, size=n)
    a = rng.normal(size=(3, d, d)) / np.sqrt(d) + np.eye(d)
    z = rng.normal(size=(n, d))
    return offset + centers[labels] + np.einsum("nd,nde->ne", z, a[labels])


def start(x, k, ctype="full"):
    """A starting model without kmeans++: k spread rows as means, data variance."""
    x = np.asarray(x)
    d = x.shape[1]
    means = x[np.linspace(0, len(x) - 1, k).astype(int)]
    var = np.cov(x.T).reshape(d, d)
    cov = {
        "full": np.broadcast_to(var, (k, d, d)),
        "tied": var,
        "diag": np.broadcast_to(np.diag(var), (k, d)),
        "spherical": np.full(k, np.trace(var) / d),
    }[ctype]
    return gmmjax.GMM.from_natural(
        np.full(k, 1.0 / k), means, cov, covariance_type=ctype
    )


# ------------------------------------------------------------------- chunked EM


def _in_memory(gmm0, x, **kw):
    reg = kw.pop("reg_covar", 1e-6)
    return gmmjax.fit(gmmjax.EM(reg_covar=reg), gmm0, x, **kw)


def _assert_same(a, b, tol=CHUNK_TOL):
    assert int(a.status) == int(b.status)
    assert int(a.n_steps) == int(b.n_steps)
    assert int(a.degenerate_component) == int(b.degenerate_component)
    assert max_diff(a.gmm, b.gmm) < tol
    assert max_diff(a.gmm.covariances, b.gmm.covariances) < tol
    assert abs(float(a.log_likelihood) - float(b.log_likelihood)) < tol * abs(
        float(a.log_likelihood)
    )


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_chunked_memmap_equals_in_memory(tmp_path, ctype):
    x = mixture_data(503)
    path = tmp_path / "x.npy"
    np.save(path, x)
    data = np.load(path, mmap_mode="r")
    assert isinstance(data, np.memmap)
    gmm0 = start(x, 3, ctype)
    # 97 does not divide 503: five full chunks and a padded one
    chunked = gmmjax.fit_em_chunked(gmm0, data, chunk_size=97, max_steps=15)
    _assert_same(_in_memory(gmm0, x, max_steps=15), chunked)


def test_chunked_weights_and_stream_of_irregular_blocks(tmp_path):
    x = mixture_data(401, seed=1)
    w = np.random.default_rng(2).uniform(0.0, 2.0, size=401)
    w[::7] = 0.0
    np.save(tmp_path / "w.npy", w)
    gmm0 = start(x, 3)
    ref = _in_memory(gmm0, x, sample_weight=w, max_steps=20)
    # the chunk size of the test above: its chunk program
    from_memmap = gmmjax.fit_em_chunked(
        gmm0,
        x,
        chunk_size=97,
        max_steps=20,
        sample_weight=np.load(tmp_path / "w.npy", mmap_mode="r"),
    )
    _assert_same(ref, from_memmap)
    cuts = [0, 5, 130, 131, 290, 401]

    def stream():  # blocks smaller and larger than a chunk, as (x, w) pairs
        return ((x[a:b], w[a:b]) for a, b in itertools.pairwise(cuts))

    _assert_same(ref, gmmjax.fit_em_chunked(gmm0, stream, chunk_size=97, max_steps=20))


def test_chunked_covariances_accurate_far_from_the_origin():
    # raw moments sum r x x^T - N mu mu^T would lose ~eps * 1e12 = 1e-4 relative
    # here; moments about the current means keep full precision
    # 200 rows, two components, chunks of 64: the programs of the tests below
    x = mixture_data(200, d=2, seed=3, offset=1e6)
    gmm0 = start(x, 2)
    ref = _in_memory(gmm0, x, max_steps=10)
    chunked = gmmjax.fit_em_chunked(gmm0, x, chunk_size=64, max_steps=10)
    cov_ref = np.asarray(ref.gmm.covariances)
    err = np.max(np.abs(np.asarray(chunked.gmm.covariances) - cov_ref))
    assert err < 1e-7 * np.max(np.abs(cov_ref))


def test_chunked_status_semantics_match_fit():
    x = mixture_data(200, d=2, seed=4)
    good = start(x, 2)
    # a component far from every sample empties at once: DEGENERATE, named
    far_means = np.array(good.means)
    far_means[1] = 1e3
    far = gmmjax.GMM(good.logits, far_means, good.log_diag, good.off_diag, "full")
    ref = _in_memory(far, x, max_steps=10)
    assert ref.status_name == "DEGENERATE"
    got = gmmjax.fit_em_chunked(far, x, chunk_size=64, max_steps=10)
    # the emptied component's parameters are arbitrary (its counts are the 10 eps
    # floor); the live component and the verdict must agree
    for field in ("status", "n_steps", "degenerate_component"):
        assert int(getattr(got, field)) == int(getattr(ref, field))
    assert abs(float(got.log_likelihood) - float(ref.log_likelihood)) < CHUNK_TOL * abs(
        float(ref.log_likelihood)
    )
    live = int(ref.degenerate_component) ^ 1
    got_means, ref_means = np.asarray(got.gmm.means), np.asarray(ref.gmm.means)
    assert max_diff(got_means[live], ref_means[live]) < CHUNK_TOL
    got_cov, ref_cov = np.asarray(got.gmm.covariances), np.asarray(ref.gmm.covariances)
    assert max_diff(got_cov[live], ref_cov[live]) < CHUNK_TOL
    # max_steps=0 returns gmm0 and its log-likelihood; tol=0 runs every step
    for kw in ({"max_steps": 0}, {"max_steps": 3, "tol": 0.0}):
        _assert_same(
            _in_memory(good, x, **kw),
            gmmjax.fit_em_chunked(good, x, chunk_size=64, **kw),
        )


def test_chunked_and_online_em_share_the_collapse_rule():
    # the first cluster's members all have feature 1 exactly 0 and lie far from
    # the second: its component's variance there is reg_covar alone. reg_covar
    # holds it far above rounding: no collapse, and chunked EM equals EM in
    # memory. In memory, float64 expands the square about the data's mean, which
    # resolves that variance only to 10 eps (mu - c)^2 ~ 1e-12, 1e-6 relative to
    # reg_covar: hence a looser tolerance than CHUNK_TOL (measured: 4e-7).
    # Shapes as in the test above (shared programs).
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [
            np.column_stack([rng.normal(size=100), np.zeros(100)]),
            rng.normal([50.0, 30.0], 1.0, size=(100, 2)),
        ]
    )
    gmm0 = gmmjax.GMM.from_natural(
        [0.5, 0.5], [[0.0, 0.0], [50.0, 30.0]], np.stack([np.eye(2)] * 2)
    )
    ref = _in_memory(gmm0, x, max_steps=10)
    assert ref.status_name == "CONVERGED"
    _assert_same(ref, gmmjax.fit_em_chunked(gmm0, x, chunk_size=64, max_steps=10), 1e-5)
    # without reg_covar the component collapses: every variant names it. The
    # chunked step is also non-finite (its variance is exactly 0, where the
    # expanded one in memory keeps rounding noise): DEGENERATE ranks first, as in
    # gmmjax.fit; the last finite parameters then differ, the verdicts do not
    ref = _in_memory(gmm0, x, max_steps=10, reg_covar=0.0)
    got = gmmjax.fit_em_chunked(gmm0, x, chunk_size=64, max_steps=10, reg_covar=0.0)
    for result in (ref, got):
        assert result.status_name == "DEGENERATE"
        assert (int(result.n_steps), int(result.degenerate_component)) == (1, 0)
    for reg_covar, component in ((1e-6, -1), (0.0, 0)):
        online = gmmjax.OnlineEM(reg_covar=reg_covar)
        _, info = online.update(online.init(gmm0), x)
        assert int(info.degenerate) == component


def test_chunked_compiles_one_chunk_shape(tmp_path):
    x = mixture_data(250, d=2, seed=5)
    gmm0 = start(x, 2, "diag")
    from gmmjax import _streaming

    before = _streaming._accumulate._cache_size()
    gmmjax.fit_em_chunked(gmm0, x, chunk_size=33, max_steps=3)
    gmmjax.fit_em_chunked(gmm0, x[:200], chunk_size=33, max_steps=3)
    assert _streaming._accumulate._cache_size() - before == 1


def test_chunked_rejects_bad_input():
    # the data and chunk shapes of the tests above (the weight checks run a pass)
    x = mixture_data(200, d=2)
    gmm0 = start(x, 2)
    fit = gmmjax.fit_em_chunked
    with pytest.raises(ValueError, match="chunk_size"):
        fit(gmm0, x, chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        fit(gmm0, x, chunk_size=2.5)
    with pytest.raises(ValueError, match="2-D"):
        fit(gmm0, x[:, 0], chunk_size=64)
    with pytest.raises(ValueError, match=r"shape \(rows, 2\)"):
        fit(gmm0, np.zeros((10, 3)), chunk_size=64)
    bad = x.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fit(gmm0, bad, chunk_size=64)
    with pytest.raises(ValueError, match="sample_weight"):
        fit(gmm0, x, chunk_size=64, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="sample_weight"):
        fit(gmm0, x, chunk_size=64, sample_weight=-np.ones(200))
    with pytest.raises(ValueError, match="all zero"):
        fit(gmm0, x, chunk_size=64, sample_weight=np.zeros(200))
    with pytest.raises(ValueError, match="sample_weight must be None"):
        fit(gmm0, lambda: iter([x]), chunk_size=64, sample_weight=np.ones(200))
    with pytest.raises(ValueError, match="no arrays"):
        fit(gmm0, lambda: iter([]), chunk_size=64)
    with pytest.raises(TypeError, match="data"):
        fit(gmm0, "x.npy", chunk_size=64)
    with pytest.raises(ValueError, match="n_components"):
        fit(gmm0, x[:1], chunk_size=64)
    with pytest.raises(ValueError, match="tol"):
        fit(gmm0, x, chunk_size=64, tol=-1.0)
    with pytest.raises(ValueError, match="max_steps"):
        fit(gmm0, x, chunk_size=64, max_steps=-1)
    with pytest.raises(TypeError, match="gmm"):
        fit("gmm", x, chunk_size=64)


# -------------------------------------------------------------------- online EM


def test_online_first_update_is_the_batch_m_step():
    # t0 = 1 gives rho_0 = 1: the first update is exactly m_step(responsibilities)
    # (200 rows, two components: the programs of the other tests)
    x = mixture_data(200, d=2, seed=6)

    @jax.jit  # the batch references of a model in one program
    def batch(gmm):
        r = gmmjax.responsibilities(gmm, x)
        m = gmmjax.m_step(x, r, covariance_type=gmm.covariance_type, reg_covar=1e-3)
        return m, gmmjax.log_likelihood(gmm, x)

    for ctype in COVARIANCE_TYPES:
        gmm0 = start(x, 2, ctype)
        online = gmmjax.OnlineEM(reg_covar=1e-3)
        state, info = online.update(online.init(gmm0), x)
        ref, ll = batch(gmm0)
        assert max_diff(state.gmm, ref) < 1e-10
        assert float(info.step_size) == 1.0
        assert abs(float(info.log_likelihood) - float(ll) / len(x)) < 1e-12
        assert int(state.count) == 1


def test_online_weights_equal_repeated_rows_and_jit():
    # minibatches of 200 rows; the counts 0, 1, 2, 1 repeat them to 200 rows too:
    # the unweighted update is one program, that of the other tests
    x = mixture_data(400, d=2, seed=7)
    gmm0 = start(x, 2)
    online = gmmjax.OnlineEM(alpha=0.7, t0=3.0)
    state = online.update(online.init(gmm0), x[:200])[0]
    w = np.resize([0, 1, 2, 1], 200)
    weighted, _ = online.update(state, x[200:], sample_weight=w)
    repeated, _ = online.update(state, np.repeat(x[200:], w, axis=0))
    assert max_diff(weighted, repeated) < 1e-10
    jitted, _ = jax.jit(lambda s, b, f: f.update(s, b, sample_weight=w))(
        state, x[200:], online
    )
    assert max_diff(weighted, jitted) < 1e-12
    # step size rho_t = (t + t0)^(-alpha), here after one update
    assert np.isclose(float(online.step_size(1)), 4.0**-0.7, rtol=1e-14)


def test_online_rejects_a_nonfinite_update():
    # points so far out that every density underflows: log p(x) = -inf and the
    # responsibilities are NaN
    gmm0 = gmmjax.GMM.from_natural([1.0], [[0.0, 0.0]], [np.eye(2)])
    online = gmmjax.OnlineEM()
    state = online.init(gmm0)
    new, info = online.update(state, np.full((5, 2), 1e200))
    assert not bool(info.finite)
    assert max_diff(new, state) == 0.0
    # identical points and reg_covar=0: the covariance collapses, and is named
    _, info = gmmjax.OnlineEM(reg_covar=0.0).update(state, np.ones((5, 2)))
    assert int(info.degenerate) == 0


def test_online_rejects_bad_hyperparameters():
    gmm0 = gmmjax.GMM.from_natural([1.0], [[0.0]], [[[1.0]]])
    for kw, name in (
        ({"alpha": 0.5}, "alpha"),
        ({"alpha": 1.2}, "alpha"),
        ({"t0": 0.5}, "t0"),
        ({"reg_covar": -1.0}, "reg_covar"),
    ):
        online = gmmjax.OnlineEM(**kw)
        with pytest.raises(ValueError, match=name):
            online.update(online.init(gmm0), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="at least one"):
        gmmjax.OnlineEM().run(gmm0, [])
    with pytest.raises(ValueError, match="2-D"):
        gmmjax.OnlineEM().run(gmm0, [np.zeros(3)])


def test_online_reaches_the_batch_optimum():
    # 200k samples, minibatches of 2k, two shuffled passes (200 updates)
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[0.0, 0.0], [4.0, 1.0], [-2.0, 5.0]])
    cov = np.array(
        [
            [[1.0, 0.3], [0.3, 0.8]],
            [[0.5, 0.0], [0.0, 1.5]],
            [[1.2, -0.4], [-0.4, 0.7]],
        ]
    )
    # drawn and started on the host (sampling and k-means are not under test)
    rng = np.random.default_rng(8)
    labels = rng.choice(3, size=200_000, p=weights)
    z = rng.standard_normal((200_000, 2))
    x = means[labels] + np.einsum("nde,ne->nd", np.linalg.cholesky(cov)[labels], z)
    first = x[:2000]
    labels = KMeans(3, n_init=1, random_state=9).fit(first).labels_
    gmm0 = gmmjax.GMM.from_natural(
        np.bincount(labels) / len(first),
        np.stack([first[labels == j].mean(0) for j in range(3)]),
        np.stack([np.cov(first[labels == j].T) for j in range(3)]),
    )
    batch = gmmjax.fit(gmmjax.EM(), gmm0, x, tol=1e-10)
    assert batch.status_name == "CONVERGED"
    rng = np.random.default_rng(10)
    batches = (
        x[perm[i : i + 2000]]
        for perm in (rng.permutation(len(x)) for _ in range(2))
        for i in range(0, len(x), 2000)
    )
    state, lls = gmmjax.OnlineEM(alpha=0.6).run(gmm0, batches)
    assert lls.shape == (200,) and int(state.count) == 200
    gap = (
        float(batch.log_likelihood) - float(gmmjax.log_likelihood(state.gmm, x))
    ) / len(x)
    # At the end rho = 200^-0.6 = 0.042, so the statistics average about
    # N_eff = 2000 / 0.042 = 48k samples: the expected per-sample deficit of such an
    # estimate is p / (2 N_eff) = 17 / 96k = 1.8e-4 (p = 17 free parameters). We
    # allow 5e-4 (measured: ~5e-5, the averaging over past minibatches helps).
    assert -1e-9 < gap < 5e-4
    sorted_weights = [np.sort(np.asarray(m.gmm.weights)) for m in (state, batch)]
    assert max_diff(*sorted_weights) < 0.01


def test_online_em_is_a_fitter_and_converges_to_em():
    # all of x as every step's minibatch: stepwise EM is a damped EM with EM's
    # fixed points, driven by gmmjax.fit (its rule, its statuses); 200 rows, two
    # components: the programs of the other tests
    x = mixture_data(200, d=2, seed=11)
    gmm0 = start(x, 2)
    online = gmmjax.OnlineEM(alpha=0.6)
    assert isinstance(online, gmmjax_fit.Fitter)
    em = gmmjax.fit(gmmjax.EM(), gmm0, x, tol=1e-12, max_steps=2000)
    result = gmmjax.fit(online, gmm0, x, tol=1e-10, max_steps=5000)
    assert em.status_name == result.status_name == "CONVERGED"
    assert int(result.n_steps) > int(em.n_steps)
    # the damping rho_t = (t + 1)^-0.6 slows the last steps: at tol 1e-10 in
    # mean log-likelihood the iterate is within ~1e-8 of the fixed point
    gap = (float(em.log_likelihood) - float(result.log_likelihood)) / len(x)
    assert -1e-9 < gap < 1e-7
    assert max_diff(result.gmm.means, em.gmm.means) < 1e-3
    # the first step of the driver is update's first step (rho_0 = 1); jitted,
    # as the driver runs it: one program, not one per operation
    state, info = jax.jit(lambda g, b: online.step(online.init(g, b), b))(gmm0, x)
    updated, _ = online.update(online.init(gmm0), x)
    assert max_diff(state, updated) < 1e-12
    assert float(info.log_likelihood) == pytest.approx(
        float(gmmjax.log_likelihood(gmm0, x)), rel=1e-12
    )


def test_online_em_under_annealing_and_a_nonfinite_step():
    import optax

    x = mixture_data(200, d=2, seed=12)
    gmm0 = start(x, 2, "diag")
    schedule = optax.linear_schedule(0.3, 1.0, 20)
    annealed = gmmjax.Annealed(gmmjax.OnlineEM(), schedule)
    result = gmmjax.fit(annealed, gmm0, x, max_steps=3000, tol=1e-9)
    assert result.status_name == "CONVERGED" and int(result.n_steps) > 20
    # identical points and reg_covar=0: the step is not finite; the driver says so
    # (update rejects it, step leaves the verdict to the driver)
    one = gmmjax.GMM.from_natural([1.0], [[0.0, 0.0]], [np.eye(2)])
    bad = gmmjax.fit(gmmjax.OnlineEM(reg_covar=0.0), one, np.ones((5, 2)))
    assert bad.status_name in ("NONFINITE", "DEGENERATE")
    assert all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(bad.gmm))
