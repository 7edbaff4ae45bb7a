"""Initialization: pure JAX, vmappable over keys, sensible starts."""

import functools

import jax
import numpy as np
import pytest
from conftest import COVARIANCE_TYPES
from sklearn import datasets as skdatasets

import gmmjax
from gmmjax._init import INIT_METHODS, _choice_without_replacement, kmeans_plusplus

X = skdatasets.load_iris().data


@pytest.mark.parametrize("method", INIT_METHODS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_every_method_gives_a_valid_model(method, covariance_type):
    gmm = gmmjax.init_gmm(
        jax.random.key(0),
        X,
        n_components=3,
        covariance_type=covariance_type,
        method=method,
    )
    assert gmm.covariance_type == covariance_type
    assert gmm.means.shape == (3, 4)
    np.testing.assert_allclose(np.sum(gmm.weights), 1.0)
    assert np.isfinite(float(gmmjax.log_likelihood(gmm, X)))


@pytest.mark.parametrize("method", INIT_METHODS)
def test_vmappable_over_keys(method):
    keys = jax.random.split(jax.random.key(1), 5)
    batch = jax.vmap(lambda k: gmmjax.init_gmm(k, X, n_components=3, method=method))(
        keys
    )
    assert batch.means.shape == (5, 3, 4)
    single = gmmjax.init_gmm(keys[2], X, n_components=3, method=method)
    np.testing.assert_allclose(np.asarray(batch.means)[2], single.means, rtol=1e-10)


def test_kmeans_plusplus_picks_distinct_data_points():
    # jitted, as init_gmm runs it: one program, not one per operation
    seeds = jax.jit(kmeans_plusplus, static_argnums=2)
    centers = np.asarray(seeds(jax.random.key(0), X, 5))
    for c in centers:
        assert np.any(np.all(X == c, axis=1))
    assert len(np.unique(centers, axis=0)) == 5


def test_kmeans_plusplus_depends_on_the_weighted_data_not_on_row_positions():
    # a row of integer weight m is m copies of it, wherever the rows are, and a
    # row of weight 0 is no row: the same centers, exactly
    rng = np.random.default_rng(0)
    w = rng.integers(0, 4, size=len(X))
    shuffle = rng.permutation(len(X))
    seeds = jax.jit(kmeans_plusplus, static_argnums=2)
    for seed in range(5):
        key = jax.random.key(seed)
        weighted = seeds(key, X[shuffle], 5, w[shuffle].astype(X.dtype))
        repeated = seeds(key, np.repeat(X, w, axis=0), 5)
        np.testing.assert_array_equal(weighted, repeated)


def inertia(x, centers):
    d2 = ((x[:, None, :] - centers[None]) ** 2).sum(-1)
    return d2.min(1).sum()


def test_kmeans_refines_the_seeds():
    # the 3 components of the tests above, so that their programs serve
    key = jax.random.key(4)
    seeded = gmmjax.init_gmm(key, X, n_components=3, method="kmeans++")
    refined = gmmjax.init_gmm(key, X, n_components=3, method="kmeans")
    # k-means runs in standard units (each feature over its standard deviation)
    scale = X.std(axis=0)
    xs = X / scale
    seeded_means = np.asarray(seeded.means) / scale
    means = np.asarray(refined.means) / scale
    assert inertia(xs, means) <= inertia(xs, seeded_means)
    # Lloyd's fixed point: every mean is the centroid of its nearest points
    labels = ((xs[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    for j in range(3):
        np.testing.assert_allclose(means[j], xs[labels == j].mean(0), rtol=1e-6)


def test_random_responsibilities_start_near_the_mean():
    gmm = gmmjax.init_gmm(jax.random.key(0), X, n_components=3, method="random")
    spread = np.abs(np.asarray(gmm.means) - X.mean(0)).max()
    assert spread < 0.2 * X.std(0).max()


def test_bad_arguments():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="n_components=200 must be <= n_samples"):
        gmmjax.init_gmm(key, X, n_components=200)
    with pytest.raises(ValueError, match="n_components must be >= 1"):
        gmmjax.init_gmm(key, X, n_components=0)
    with pytest.raises(ValueError, match="method must be one of"):
        gmmjax.init_gmm(key, X, n_components=2, method="kmeans+")
    with pytest.raises(ValueError, match="covariance_type"):
        gmmjax.init_gmm(key, X, n_components=2, covariance_type="banana")
    with pytest.raises(ValueError, match="2-D"):
        gmmjax.init_gmm(key, X[:, 0], n_components=2)


# Both jitted, as init_gmm runs the draws: one program per (n, k) each, not one
# per operation; p is traced, so the weights of every case share them.
@functools.partial(jax.jit, static_argnums=2)
def _draws(keys, p, k):
    return jax.vmap(lambda key: _choice_without_replacement(key, p, k))(keys)


@functools.partial(jax.jit, static_argnums=2)
def _jax_choice(key, p, k):
    return jax.random.choice(key, p.shape[0], (k,), replace=False, p=p)


@pytest.mark.parametrize("n, k", [(5, 5), (200, 3), (40, 16), (40, 17), (1000, 30)])
def test_drawing_without_replacement_equals_jax_random_choice(n, k):
    """Few draws take the largest Gumbel keys one at a time, many sort them; both
    are ``jax.random.choice(replace=False, p=p)`` index for index, zero weights
    (last in line, ties to the lower index) and vmap included."""
    rng = np.random.default_rng(n + k)
    keys = jax.random.split(jax.random.key(n), 8)
    for zeros in sorted({0, 1, n - k + 1, n - 1} - {n}):
        w = rng.random(n)
        w[rng.permutation(n)[:zeros]] = 0.0
        p = w / w.sum()
        batch = _draws(keys, p, k)
        for key, got in zip(keys, np.asarray(batch), strict=True):
            want = _jax_choice(key, p, k)
            np.testing.assert_array_equal(got, want)
            assert len(set(got.tolist())) == k
