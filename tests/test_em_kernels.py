"""The EM step's routes: the expanded square (float64, and float32 while accurate),
the centered two-pass fallback, and chunking over samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import COVARIANCE_TYPES
from sklearn.cluster import kmeans_plusplus

import gmmjax
from gmmjax import _degeneracy, _density, _em, _stats

# One shape for the step tests: the chunked test's (two chunks of 256 rows and a
# tail), so that both run the one program of _steps.
N, D, K = 700, 5, 4
ROUTES = (_em._expanded_update, _em._two_pass_update)


def _blobs(rng, n, d, k, spread=1.0, offset=0.0):
    """``(x, labels)``: ``k`` blobs of ``n`` samples in ``d`` dimensions."""
    centers = rng.normal(scale=4.0, size=(k, d))
    labels = rng.integers(k, size=n)
    return centers[labels] + spread * rng.normal(size=(n, d)) + offset, labels


def _start(x, labels, k, ctype):
    """The M step of hard ``labels``, in numpy: a model near the data, built on the
    host (the initialization is not under test here, and ``init_gmm`` compiles a
    program per shape and covariance type)."""
    x = np.asarray(x, np.float64)
    n, d = x.shape
    resp = np.eye(k)[labels]
    nk = resp.sum(axis=0)
    means = resp.T @ x / nk[:, None]
    diff = x[None, :, :] - means[:, None, :]
    cov = np.einsum("nk,kni,knj->kij", resp, diff, diff) / nk[:, None, None]
    if ctype == "full":
        cov = cov + 1e-6 * np.eye(d)
    elif ctype == "tied":
        cov = np.einsum("k,kij->ij", nk, cov) / n + 1e-6 * np.eye(d)
    else:
        cov = np.diagonal(cov, axis1=1, axis2=2) + 1e-6
        if ctype == "spherical":
            cov = cov.mean(axis=1)
    return gmmjax.GMM.from_natural(nk / n, means, cov, covariance_type=ctype)


def _cast(gmm, dtype):
    """``gmm`` with its leaves in ``dtype``, cast on the host."""
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), gmm)


def _route_step(route, gmm, x, w):
    m, ll, log_prob = route(gmm, x, w, 1e-6, 1.0)
    return m.gmm, m.centered.counts, ll, log_prob


@jax.jit
def _steps(gmm, x, w):
    """Every route's step, unweighted and weighted (``[route][weighting]``),
    jitted as EM runs them (beta the concrete 1 of plain EM): one program per
    covariance type, which compiles in half the time of one per step."""
    return [[_route_step(route, gmm, x, v) for v in (None, w)] for route in ROUTES]


def _assert_models_close(a, b, rtol):
    leaves = zip(*map(jax.tree_util.tree_leaves, (a, b)), strict=True)
    for u, v in leaves:
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_expanded_step_equals_two_pass_in_float64(rng, covariance_type):
    # both are exact in exact arithmetic; float64 rounding of the expansion is
    # eps (|mu - c| / sigma)^2 ~ 1e-14 on these blobs
    x, labels = _blobs(rng, N, D, K)
    w = rng.uniform(0.5, 2.0, N)
    gmm = _start(x, labels, K, covariance_type)
    for expanded, two_pass in zip(*_steps(gmm, x, w), strict=True):
        _assert_models_close(expanded[0], two_pass[0], 1e-9)
        np.testing.assert_allclose(expanded[1], two_pass[1], rtol=1e-12)
        np.testing.assert_allclose(expanded[2], two_pass[2], rtol=1e-12)
        np.testing.assert_allclose(expanded[3], two_pass[3], rtol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunked_step_equals_one_pass(rng, monkeypatch, covariance_type):
    # 700 rows in chunks of 256: two scanned chunks and a tail of 188
    x, labels = _blobs(rng, N, D, K)
    w = rng.uniform(0.0, 2.0, N)
    gmm = _start(x, labels, K, covariance_type)
    whole = [weighted for _, weighted in _steps(gmm, x, w)]
    monkeypatch.setattr(_stats, "_CHUNK_ELEMENTS", 1)
    assert _stats.chunk_rows(100) == 256
    # a fresh function, so traced anew: the chunk size is read while tracing
    chunked_steps = jax.jit(lambda g, x, w: [_route_step(r, g, x, w) for r in ROUTES])(
        gmm, x, w
    )
    for chunked, reference in zip(chunked_steps, whole, strict=True):
        _assert_models_close(chunked[0], reference[0], 1e-10)
        np.testing.assert_allclose(chunked[2], reference[2], rtol=1e-12)
        np.testing.assert_allclose(chunked[3], reference[3], rtol=1e-12)


@jax.jit
def _tight_fits(starts, x):
    """60 EM steps from each start in float64 and in float32, each result's mean
    log-likelihood in float64, and whether float32 may expand the square about
    the float64 ``full`` model (converged: the start is already the M step of
    the true clusters). One program for the whole test, which compiles in half
    the time of one per fit, and the spreads share it."""

    def mean_ll_after(gmm, dtype):
        gmm = jax.tree_util.tree_map(lambda a: a.astype(dtype), gmm)
        result = gmmjax.fit(gmmjax.EM(), gmm, x.astype(dtype), max_steps=60, tol=0.0)
        model = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), result.gmm)
        return model, gmmjax.log_likelihood(model, x) / x.shape[0]

    ref = [mean_ll_after(gmm, jnp.float64) for gmm in starts]
    got = [mean_ll_after(gmm, jnp.float32)[1] for gmm in starts]
    converged = ref[COVARIANCE_TYPES.index("full")][0]
    converged32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), converged)
    accurate = _em._expansion_is_accurate(converged32, x.astype(jnp.float32))
    return [ll for _, ll in ref], got, accurate


@pytest.mark.parametrize("spread", [1e-1, 1e-3])
def test_float32_matches_float64_for_tight_clusters_far_from_the_mean(spread):
    # spread 1e-3 at distance ~1 from the data mean: expanding the square in
    # float32 would lose ~eps * 1e6 of every log-density, so the guard must route
    # those steps through the centered two-pass kernels
    rng = np.random.default_rng(1)
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    x = np.repeat(corners, 100, axis=0) + spread * rng.normal(size=(300, 2)) + 3.0
    labels = np.repeat(np.arange(3), 100)
    starts = [_start(x, labels, 3, ctype) for ctype in COVARIANCE_TYPES]
    refs, gots, accurate = _tight_fits(starts, x)
    assert bool(accurate) == (spread > 1e-2)
    for ctype, ref, got in zip(COVARIANCE_TYPES, refs, gots, strict=True):
        ref, got = float(ref), float(got)
        assert abs(got - ref) <= 1e-5 * abs(ref), (ctype, got, ref)


def test_float32_step_is_jittable_and_vmappable_over_models(rng):
    x, _ = _blobs(rng, 200, 2, 3)
    # four starts as init_gmm's k-means++ draws them: every sample to the nearest
    # of greedy k-means++ seeds
    starts = []
    for seed in range(4):
        seeds, _ = kmeans_plusplus(x, 3, random_state=seed)
        labels = np.argmin(((x[:, None] - seeds) ** 2).sum(axis=-1), axis=1)
        starts.append(_cast(_start(x, labels, 3, "full"), np.float32))
    gmms = jax.tree_util.tree_map(lambda *a: np.stack(a), *starts)
    x = np.asarray(x, np.float32)
    stepped = jax.jit(jax.vmap(lambda g: gmmjax.em_step(g, x)))(gmms)
    stepped = jax.tree_util.tree_map(np.asarray, stepped)
    for i, start in enumerate(starts):
        alone = gmmjax.em_step(start, x)
        lane = jax.tree_util.tree_map(lambda a, i=i: a[i], stepped)
        _assert_models_close(lane, alone, 1e-5)


@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_extreme_eigenvalues_match_numpy(rng, d):
    # closed forms up to d = 3, power iteration beyond; rank-one and scaled-identity
    # matrices are the edge cases of the quadratic and cubic formulas
    a = rng.normal(size=(40, d, d))
    a = a @ np.swapaxes(a, -1, -2)
    a[0] = np.outer(np.arange(1.0, d + 1), np.arange(1.0, d + 1))
    a[1] = 2.0 * np.eye(d)
    smallest, largest = jax.jit(_degeneracy._extreme_eigenvalues)(a)
    smallest, largest = np.asarray(smallest), np.asarray(largest)
    eig = np.linalg.eigvalsh(a)
    # accurate to a few tens of eps of the largest eigenvalue (the cubic's
    # trigonometric solution cancels for the smallest)
    tol = 64 * np.finfo(np.float64).eps * eig[:, -1]
    if d <= 3:
        assert np.all(np.abs(smallest - eig[:, 0]) <= tol)
        assert np.all(np.abs(largest - eig[:, -1]) <= tol)
    else:
        # power iteration (no LAPACK in the loops): from inside, exact to rounding
        # on the edge cases (a rank-one matrix has smallest 0: not definite)
        assert np.all(smallest >= eig[:, 0] - tol)
        assert np.all(largest <= eig[:, -1] + tol)
        assert np.all(np.abs(smallest - eig[:, 0])[:2] <= tol[:2])
        assert np.all(np.abs(largest - eig[:, -1])[:2] <= tol[:2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k, n", [(1, 5), (3, 199), (8, 64), (9, 1000), (40, 199)])
def test_posteriors_match_scipy_for_unrolled_and_reduced_components(dtype, k, n):
    """Up to 8 components the E step reduces over them slice by slice, beyond with
    reductions; both give scipy's softmax and logsumexp, and the summed
    log-density (from block products) equals the sum of the per-sample ones."""
    from scipy.special import logsumexp, softmax

    rng = np.random.default_rng(k * 1000 + n)
    # the references see the same (rounded) inputs
    joint = (rng.normal(scale=30.0, size=(k, n)) - 50.0).astype(dtype).astype(float)
    eps = np.finfo(dtype).eps
    scale = np.max(np.abs(joint))

    # one program for the three calls; beta stays a concrete Python number, as
    # plain EM's 1 is (it shares the exponentials)
    def posteriors(a, a_t):
        plain = [_em._posteriors(a, 1.0, 0), _em._posteriors(a_t, 1.0, -1)]
        return plain, _em._posteriors(a, 0.25, 0)

    both, (tempered, _, _) = jax.jit(posteriors)(
        np.asarray(joint, dtype), np.asarray(joint.T, dtype)
    )
    for (axis, a), (resp, log_prob, total) in zip(
        [(0, joint), (-1, joint.T)], both, strict=True
    ):
        # exp(a - max) carries the rounding of a - max, eps |a|
        np.testing.assert_allclose(resp, softmax(a, axis=axis), atol=4 * eps * scale)
        expected = logsumexp(a, axis=axis)
        np.testing.assert_allclose(log_prob, expected, rtol=0, atol=4 * eps * scale)
        # the error of a sum of n terms of size |log p|: n eps max |log p|
        bound = 4 * n * eps * np.max(np.abs(expected))
        assert abs(float(total) - np.sum(expected)) <= bound
    want = softmax(0.25 * joint, axis=0)
    np.testing.assert_allclose(tempered, want, atol=4 * eps * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [2, 3, 50, 10**6])
def test_sum_log_matches_exact_sums_and_propagates_non_finite_values(dtype, k):
    import math

    rng = np.random.default_rng(k)
    ts = []
    for n in [1, 64, 65, 4097]:
        # the worst case for the block products: every value at the top, k
        t = np.where(rng.random(n) < 0.5, float(k), 1 + (k - 1) * rng.random(n))
        ts.append(t.astype(dtype))
    for i, value in [(7, 0.0), (150, np.inf), (199, np.nan)]:
        t = np.ones(200, dtype)
        t[i] = value
        ts.append(t)
    # one program for every call
    sums = [float(s) for s in jax.jit(lambda ts: [_em._sum_log(t, k) for t in ts])(ts)]
    for t, got in zip(ts[:4], sums[:4], strict=True):
        n = len(t)
        exact = math.fsum(math.log(float(v)) for v in t)
        assert np.isfinite(got)
        assert abs(got - exact) <= 4 * n * np.finfo(dtype).eps * max(1, math.log(k))
    assert sums[4] == -np.inf
    assert sums[5] == np.inf
    assert np.isnan(sums[6])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_m_step_from_statistics_about_any_centers(rng, covariance_type):
    # one meaning of the statistics: about the data's mean (the expanded route),
    # about one center per component (chunked and online EM) or about the new
    # means (the two-pass route), the M step reads off the same model
    x, labels = _blobs(rng, 400, 3, 3, offset=50.0)
    w = rng.uniform(0.5, 2.0, 400)
    gmm = _start(x, labels, 3, covariance_type)

    # one program (as the statistics run inside EM's) rather than an eager one
    # per operation
    @jax.jit
    def m_steps(gmm, x, w):
        resp = _density._responsibilities(gmm, x, 1.0)
        wr = resp * w[:, None]
        c = jnp.mean(x, axis=0)
        expanded, _, _ = _stats.expanded_statistics(
            c, x, w, covariance_type, 3, lambda f, ws, rs: (rs.T, (), None), resp
        )
        centers = gmm.means + 0.3  # anywhere near the means
        first, second = _stats.moments_about(x - c, wr, centers - c, covariance_type)
        about = _stats.Statistics(jnp.sum(wr, axis=0), first, second, centers)
        two_pass = _stats.two_pass_statistics(x, resp, w, covariance_type)
        assert two_pass.first is None
        models = [
            _stats.maximize(s, 1e-6, covariance_type).gmm
            for s in (expanded, about, two_pass)
        ]
        # the M step of the statistics about the new means is the same model again
        step = _stats.maximize(about, 1e-6, covariance_type)
        again = _stats.maximize(step.centered, 1e-6, covariance_type).gmm
        return models, step, again, about.counts

    models, step, again, counts = m_steps(gmm, x, w)
    # float64 rounding of the expansion about c: eps (|mu - c| / sigma)^2 ~ 1e-14
    for other in models[1:]:
        _assert_models_close(other, models[0], 1e-10)
    _assert_models_close(again, step.gmm, 1e-12)
    np.testing.assert_allclose(step.centered.counts, counts, rtol=0)
