"""The GMM pytree: round trips between natural and internal parameters, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import COVARIANCE_TYPES, full_covariances, random_natural

import gmmjax


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize(("k", "d"), [(1, 1), (3, 2), (2, 5)])
def test_natural_round_trip(rng, covariance_type, k, d):
    weights, means, cov = random_natural(rng, k, d, covariance_type)
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type=covariance_type)
    assert gmm.n_components == k and gmm.n_features == d
    assert gmm.covariance_type == covariance_type
    np.testing.assert_allclose(gmm.weights, weights, rtol=1e-12)
    np.testing.assert_allclose(gmm.means, means, rtol=1e-12)
    np.testing.assert_allclose(gmm.covariances, cov, rtol=1e-10)
    # sklearn's convention: precision = P P^T, with P upper triangular
    full = full_covariances(cov, covariance_type, k, d)
    prec = np.asarray(gmm.precisions)
    np.testing.assert_allclose(
        full_covariances(prec, covariance_type, k, d),
        np.linalg.inv(full),
        rtol=1e-9,
        atol=1e-12,
    )
    if covariance_type in ("full", "tied"):
        p = np.asarray(gmm.precisions_cholesky)
        np.testing.assert_array_equal(np.tril(p, -1), 0.0)
        np.testing.assert_allclose(p @ np.swapaxes(p, -1, -2), prec, rtol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_leaves_are_unconstrained_and_have_no_dead_entries(rng, covariance_type):
    k, d = 3, 4
    weights, means, cov = random_natural(rng, k, d, covariance_type)
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type=covariance_type)
    n_free = {
        "full": k * d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
        "tied": d * (d + 1) // 2,
    }[covariance_type]
    leaves = jax.tree_util.tree_leaves(gmm)
    assert sum(leaf.size for leaf in leaves) == k + k * d + n_free
    # any real leaves give a valid model
    noisy = jax.tree_util.tree_map(
        lambda a: a + jnp.asarray(rng.normal(size=a.shape)), gmm
    )
    full = full_covariances(np.asarray(noisy.covariances), covariance_type, k, d)
    assert np.all(np.linalg.eigvalsh(full) > 0)
    np.testing.assert_allclose(np.sum(noisy.weights), 1.0, rtol=1e-12)


def test_from_precisions_cholesky_matches_from_natural(rng):
    for covariance_type in COVARIANCE_TYPES:
        weights, means, cov = random_natural(rng, 3, 2, covariance_type)
        a = gmmjax.GMM.from_natural(
            weights, means, cov, covariance_type=covariance_type
        )
        b = gmmjax.GMM.from_precisions_cholesky(
            weights, means, a.precisions_cholesky, covariance_type=covariance_type
        )
        for leaf_a, leaf_b in zip(
            jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True
        ):
            np.testing.assert_allclose(leaf_a, leaf_b, rtol=1e-12, atol=1e-14)


def test_float32_stays_float32(rng):
    weights, means, cov = random_natural(rng, 2, 3, "full")
    gmm = gmmjax.GMM.from_natural(
        weights.astype(np.float32), means.astype(np.float32), cov.astype(np.float32)
    )
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(gmm))
    assert gmm.covariances.dtype == jnp.float32


def test_from_natural_works_under_jit_and_grad(rng):
    weights, means, cov = random_natural(rng, 2, 2, "full")
    x = jnp.asarray(rng.normal(size=(10, 2)))

    @jax.jit
    def ll(m):
        return gmmjax.log_likelihood(gmmjax.GMM.from_natural(weights, m, cov), x)

    g = jax.grad(ll)(jnp.asarray(means))
    assert g.shape == means.shape and np.all(np.isfinite(g))


def test_pytree_is_immutable_and_round_trips(rng):
    weights, means, cov = random_natural(rng, 2, 2, "tied")
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type="tied")
    with pytest.raises(AttributeError):
        gmm.means = means
    leaves, treedef = jax.tree_util.tree_flatten(gmm)
    again = jax.tree_util.tree_unflatten(treedef, leaves)
    assert again.covariance_type == "tied"
    np.testing.assert_array_equal(again.means, gmm.means)


GOOD = ([0.4, 0.6], [[0.0, 0.0], [1.0, 1.0]], [[[1.0, 0.0], [0.0, 1.0]]] * 2)


@pytest.mark.parametrize(
    ("weights", "means", "covariances", "kwargs", "match"),
    [
        ([-0.1, 1.1], GOOD[1], GOOD[2], {}, "weights must be non-negative"),
        ([0.3, 0.3], GOOD[1], GOOD[2], {}, "weights must sum to 1"),
        ([np.nan, 1.0], GOOD[1], GOOD[2], {}, "weights must be finite"),
        (GOOD[0], [[0.0, np.inf], [1.0, 1.0]], GOOD[2], {}, "means must be finite"),
        (GOOD[0], GOOD[1], [[[1.0, 0.0], [0.0, np.nan]]] * 2, {}, "covariances"),
        (GOOD[0], GOOD[1], [[[1.0, 2.0], [2.0, 1.0]]] * 2, {}, "positive definite"),
        (GOOD[0], GOOD[1], [[[1.0, 0.5], [0.0, 1.0]]] * 2, {}, "symmetric"),
        (
            GOOD[0],
            GOOD[1],
            [[1.0, -1.0], [1.0, 1.0]],
            {"covariance_type": "diag"},
            "positive variances",
        ),
        (
            GOOD[0],
            GOOD[1],
            [1.0, 0.0],
            {"covariance_type": "spherical"},
            "positive variances",
        ),
        (GOOD[0], [[0.0, 0.0]], GOOD[2], {}, "means must have shape"),
        (GOOD[0], GOOD[1], [[1.0, 0.0], [0.0, 1.0]], {}, "covariances for"),
        ([[0.4, 0.6]], GOOD[1], GOOD[2], {}, "weights must be a non-empty 1-D"),
        (GOOD[0], GOOD[1], GOOD[2], {"covariance_type": "ful"}, "covariance_type"),
    ],
)
def test_from_natural_rejects_bad_input(weights, means, covariances, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gmmjax.GMM.from_natural(weights, means, covariances, **kwargs)


def test_from_natural_rejects_non_numeric():
    with pytest.raises(TypeError, match="means"):
        gmmjax.GMM.from_natural([1.0], "abc", [1.0], covariance_type="spherical")
