"""The EM step's routes: the expanded square (float64, and float32 while accurate),
the centered two-pass fallback, and chunking over samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import COVARIANCE_TYPES

import gmmjax
from gmmjax import _degeneracy, _em, _stats


def _blobs(rng, n, d, k, spread=1.0, offset=0.0):
    centers = rng.normal(scale=4.0, size=(k, d))
    labels = rng.integers(k, size=n)
    return centers[labels] + spread * rng.normal(size=(n, d)) + offset


def _start(x, k, ctype):
    return gmmjax.init_gmm(jax.random.key(3), x, n_components=k, covariance_type=ctype)


def _step(route, gmm, x, w=None):
    m, ll, log_prob = route(gmm, x, w, 1e-6, 1.0)
    return m.gmm, m.centered.counts, ll, log_prob


def _assert_models_close(a, b, rtol):
    leaves = zip(*map(jax.tree_util.tree_leaves, (a, b)), strict=True)
    for u, v in leaves:
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_expanded_step_equals_two_pass_in_float64(rng, covariance_type):
    # both are exact in exact arithmetic; float64 rounding of the expansion is
    # eps (|mu - c| / sigma)^2 ~ 1e-14 on these blobs
    x = jnp.asarray(_blobs(rng, 300, 3, 3))
    w = jnp.asarray(rng.uniform(0.5, 2.0, 300))
    gmm = _start(x, 3, covariance_type)
    for weights in (None, w):
        expanded = _step(_em._expanded_update, gmm, x, weights)
        two_pass = _step(_em._two_pass_update, gmm, x, weights)
        _assert_models_close(expanded[0], two_pass[0], 1e-9)
        np.testing.assert_allclose(expanded[1], two_pass[1], rtol=1e-12)
        np.testing.assert_allclose(expanded[2], two_pass[2], rtol=1e-12)
        np.testing.assert_allclose(expanded[3], two_pass[3], rtol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunked_step_equals_one_pass(rng, monkeypatch, covariance_type):
    # 700 rows in chunks of 256: two scanned chunks and a tail of 188
    x = jnp.asarray(_blobs(rng, 700, 5, 4))
    w = jnp.asarray(rng.uniform(0.0, 2.0, 700))
    gmm = _start(x, 4, covariance_type)
    whole = {
        route: _step(route, gmm, x, w)
        for route in (_em._expanded_update, _em._two_pass_update)
    }
    monkeypatch.setattr(_stats, "_CHUNK_ELEMENTS", 1)
    assert _stats.chunk_rows(100) == 256
    for route, reference in whole.items():
        chunked = _step(route, gmm, x, w)
        _assert_models_close(chunked[0], reference[0], 1e-10)
        np.testing.assert_allclose(chunked[2], reference[2], rtol=1e-12)
        np.testing.assert_allclose(chunked[3], reference[3], rtol=1e-12)


def _mean_ll_after(x, k, ctype, dtype, steps=60):
    gmm = _start(jnp.asarray(x, jnp.float64), k, ctype)
    gmm = jax.tree_util.tree_map(lambda a: a.astype(dtype), gmm)
    result = gmmjax.fit(gmmjax.EM(), gmm, jnp.asarray(x, dtype), max_steps=steps, tol=0)
    model = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), result.gmm)
    return float(gmmjax.log_likelihood(model, np.asarray(x, np.float64))) / len(x)


@pytest.mark.parametrize("spread", [1e-1, 1e-3])
def test_float32_matches_float64_for_tight_clusters_far_from_the_mean(spread):
    # spread 1e-3 at distance ~1 from the data mean: expanding the square in
    # float32 would lose ~eps * 1e6 of every log-density, so the guard must route
    # those steps through the centered two-pass kernels
    rng = np.random.default_rng(1)
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    x = np.repeat(corners, 100, axis=0) + spread * rng.normal(size=(300, 2)) + 3.0
    x32 = jnp.asarray(x, jnp.float32)
    tight = _start(jnp.asarray(x), 3, "full")
    converged = gmmjax.fit(gmmjax.EM(), tight, jnp.asarray(x)).gmm
    converged32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), converged)
    assert bool(_em._expansion_is_accurate(converged32, x32)) == (spread > 1e-2)
    for ctype in COVARIANCE_TYPES:
        ref = _mean_ll_after(x, 3, ctype, jnp.float64)
        got = _mean_ll_after(x, 3, ctype, jnp.float32)
        assert abs(got - ref) <= 1e-5 * abs(ref), (ctype, got, ref)


def test_float32_step_is_jittable_and_vmappable_over_models(rng):
    x = jnp.asarray(_blobs(rng, 200, 2, 3), jnp.float32)
    keys = jax.random.split(jax.random.key(0), 4)
    gmms = jax.vmap(lambda key: gmmjax.init_gmm(key, x, n_components=3))(keys)
    stepped = jax.jit(jax.vmap(lambda g: gmmjax.em_step(g, x)))(gmms)
    for i in range(4):
        alone = gmmjax.em_step(jax.tree_util.tree_map(lambda a, i=i: a[i], gmms), x)
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
    smallest, largest = _degeneracy._extreme_eigenvalues(jnp.asarray(a))
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
    for axis, a in [(0, joint), (-1, joint.T)]:
        resp, log_prob, total = _em._posteriors(jnp.asarray(a, dtype), 1.0, axis)
        # exp(a - max) carries the rounding of a - max, eps |a|
        np.testing.assert_allclose(resp, softmax(a, axis=axis), atol=4 * eps * scale)
        expected = logsumexp(a, axis=axis)
        np.testing.assert_allclose(log_prob, expected, rtol=0, atol=4 * eps * scale)
        # the error of a sum of n terms of size |log p|: n eps max |log p|
        bound = 4 * n * eps * np.max(np.abs(expected))
        assert abs(float(total) - np.sum(expected)) <= bound
    tempered, _, _ = _em._posteriors(jnp.asarray(joint, dtype), 0.25, 0)
    want = softmax(0.25 * joint, axis=0)
    np.testing.assert_allclose(tempered, want, atol=4 * eps * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [2, 3, 50, 10**6])
def test_sum_log_matches_exact_sums_and_propagates_non_finite_values(dtype, k):
    import math

    rng = np.random.default_rng(k)
    for n in [1, 64, 65, 4097]:
        # the worst case for the block products: every value at the top, k
        t = np.where(rng.random(n) < 0.5, float(k), 1 + (k - 1) * rng.random(n))
        t = t.astype(dtype)
        exact = math.fsum(math.log(float(v)) for v in t)
        got = float(_em._sum_log(jnp.asarray(t), k))
        assert np.isfinite(got)
        assert abs(got - exact) <= 4 * n * np.finfo(dtype).eps * max(1, math.log(k))
    t = jnp.ones(200, dtype)
    assert float(_em._sum_log(t.at[7].set(0.0), k)) == -np.inf
    assert float(_em._sum_log(t.at[150].set(np.inf), k)) == np.inf
    assert np.isnan(float(_em._sum_log(t.at[199].set(np.nan), k)))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_m_step_from_statistics_about_any_centers(rng, covariance_type):
    # one meaning of the statistics: about the data's mean (the expanded route),
    # about one center per component (chunked and online EM) or about the new
    # means (the two-pass route), the M step reads off the same model
    x = jnp.asarray(_blobs(rng, 400, 3, 3, offset=50.0))
    w = jnp.asarray(rng.uniform(0.5, 2.0, 400))
    gmm = _start(x, 3, covariance_type)
    resp = gmmjax.responsibilities(gmm, x)
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
    # float64 rounding of the expansion about c: eps (|mu - c| / sigma)^2 ~ 1e-14
    for other in models[1:]:
        _assert_models_close(other, models[0], 1e-10)
    # the M step of the statistics about the new means is the same model again
    step = _stats.maximize(about, 1e-6, covariance_type)
    again = _stats.maximize(step.centered, 1e-6, covariance_type).gmm
    _assert_models_close(again, step.gmm, 1e-12)
    np.testing.assert_allclose(step.centered.counts, about.counts, rtol=0)
