"""LAPACK-free linear algebra (gmmjax._linalg) and the hang it removes.

jaxlib 0.10's CPU LAPACK kernels split a batch of matrices over XLA's thread pool
and wait for the parts; inside compiled loops on a 2-core machine that deadlocked
(``multistart`` on standardized wine in float32 never returned). The library's
compiled programs must therefore hold no LAPACK primitive, and the user's call must
return. References: NumPy's LAPACK, to a few ``d eps`` relative (both algorithms are
backward stable, so they agree to the rounding of the matrix entries).
"""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import jaxprs_in_params
from jax.test_util import check_grads
from sklearn import datasets as skdatasets

import gmmjax
from gmmjax._linalg import (
    _generic_vector,
    cholesky,
    extreme_eigenvalues,
    inverse_lower,
    symmetric_eigh,
)

# the primitives that lower to LAPACK calls on the CPU
LAPACK = {"cholesky", "triangular_solve", "eigh", "lu", "qr", "svd", "schur", "eig"}


def _spd(rng, b, d):
    a = rng.normal(size=(b, d, d))
    return a @ np.swapaxes(a, -1, -2) / d + 0.1 * np.eye(d)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 3, 4, 9])
def test_factorizations_match_lapack(d, dtype):
    rng = np.random.default_rng(d)
    a = _spd(rng, 5, d)
    # an eigenvalue 1e-9 of the largest: the thin directions the collapse test reads
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a[0] = q @ np.diag(np.r_[1e-9, np.linspace(1.0, 2.0, d - 1)]) @ q.T
    eps = np.finfo(dtype).eps
    low = np.asarray(cholesky(jnp.asarray(a, dtype)), np.float64)
    ref = np.linalg.cholesky(a)
    scale = np.sqrt(np.abs(a).max(axis=(-2, -1)))[:, None, None]
    np.testing.assert_array_equal(np.triu(low, 1), 0.0)
    assert np.all(np.abs(low - ref)[1:] <= 20 * d * eps * scale[1:])
    inv = np.asarray(inverse_lower(jnp.asarray(ref, dtype)), np.float64)
    np.testing.assert_array_equal(np.triu(inv, 1), 0.0)
    residual = np.abs(ref @ inv - np.eye(d)).max(axis=(-2, -1))
    cond = np.linalg.cond(ref)
    assert np.all(residual <= 20 * d * eps * cond)
    low_value, high_value = (
        np.asarray(v, np.float64) for v in extreme_eigenvalues(jnp.asarray(a, dtype))
    )
    ref_values = np.linalg.eigvalsh(a)
    largest = ref_values[:, -1]
    # power iteration approaches from inside: never past the true extremes
    assert np.all(high_value <= largest * (1 + 20 * d * eps))
    assert np.all(low_value >= ref_values[:, 0] - 20 * d * eps * largest)
    assert np.all(high_value >= 0.5 * largest)
    # a thin direction far below the others is found to rounding
    assert (
        abs(low_value[0] - ref_values[0, 0])
        <= 20 * d * eps * largest[0] + 1e-3 * (ref_values[0, 0])
    )


def test_not_positive_definite_gives_nan_and_batches_stay_apart():
    a = _spd(np.random.default_rng(0), 4, 5)
    a[1] = -np.eye(5)
    a[2] = np.zeros((5, 5))
    low = np.asarray(cholesky(jnp.asarray(a)))
    assert np.isnan(low[1]).any()
    np.testing.assert_allclose(low[[0, 3]], np.linalg.cholesky(a[[0, 3]]), atol=1e-14)
    smallest, largest = (np.asarray(v) for v in extreme_eigenvalues(jnp.asarray(a)))
    np.testing.assert_array_equal(smallest[1:3], 0.0)  # read as collapsed
    assert largest[2] == 0.0


def test_cholesky_differentiates_to_second_order():
    a = jnp.asarray(_spd(np.random.default_rng(1), 1, 4)[0])
    check_grads(jax.jit(lambda m: cholesky(m @ m.T)), (a,), order=2, modes=["rev"])


def _eigh_errors(a, values, vectors):
    """Per matrix, in units of ``d eps`` of the dtype the results have: the
    eigenvalues' error against NumPy's relative to ``||a||_2``, ``V^T V - I``,
    and ``V diag(l) V^T - a`` relative to ``||a||_2``; all from float64."""
    d = a.shape[-1]
    eps = np.finfo(values.dtype).eps
    a, values, vectors = (np.asarray(m, np.float64) for m in (a, values, vectors))
    norm = np.maximum(np.linalg.norm(a, 2, axis=(-2, -1)), np.finfo(float).tiny)
    ref = np.linalg.eigvalsh(a)
    rebuilt = vectors @ (values[..., :, None] * np.swapaxes(vectors, -1, -2))
    return (
        np.abs(values - ref).max(axis=-1) / norm / (d * eps),
        np.abs(np.swapaxes(vectors, -1, -2) @ vectors - np.eye(d)).max((-2, -1))
        / (d * eps),
        np.abs(rebuilt - a).max((-2, -1)) / norm / (d * eps),
    )


def _symmetric(rng, b, d, definite):
    if definite:
        return _spd(rng, b, d)
    m = rng.normal(size=(b, d, d))
    return (m + np.swapaxes(m, -1, -2)) / 2


# Each rotation is backward stable: the results are exact for a + E with
# ||E|| <= c d eps ||a|| (c small; NumPy's LAPACK likewise), so the eigenvalues
# are within ||E|| of NumPy's (Weyl), V is orthogonal and rebuilds a to a few
# d eps, and an eigenvector's angle to NumPy's is at most ~||E|| / gap
# (Davis-Kahan). Measured: below 1.2 d eps for d = 2..30 in both dtypes; the
# tests allow 10 d eps. One batch shape per d (compiling is the cost here).
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_symmetric_eigh_matches_lapack(dtype):
    rng = np.random.default_rng(3)
    for d in (1, 2, 5, 13):
        a = np.concatenate([_symmetric(rng, 4, d, True), _symmetric(rng, 4, d, False)])
        a = np.asarray(a.astype(dtype), np.float64)  # the matrices the dtype holds
        values, vectors = symmetric_eigh(jnp.asarray(a, dtype))
        assert values.dtype == vectors.dtype == dtype
        assert values.shape == (8, d) and vectors.shape == (8, d, d)
        for error in _eigh_errors(a, values, vectors):
            assert np.all(error <= 10), (d, error)
        values, vectors = (np.asarray(m, np.float64) for m in (values, vectors))
        assert np.all(np.diff(values, axis=-1) >= 0)  # ascending
        ref_values, ref_vectors = np.linalg.eigh(a)
        # |V^T V_ref| = I up to the angles ||E|| / gap (signs aside)
        gap = np.min(np.diff(ref_values, axis=-1), axis=-1, initial=np.inf)
        norm = np.linalg.norm(a, 2, axis=(-2, -1))
        cosines = np.abs(np.swapaxes(vectors, -1, -2) @ ref_vectors)
        angle = np.abs(cosines - np.eye(d)).max((-2, -1))
        assert np.all(angle <= 10 * d * np.finfo(dtype).eps * norm / gap), d
        # the sign rule: each eigenvector on the side of the fixed vector u
        assert np.all(
            np.einsum("...ij,i->...j", vectors, _generic_vector(d, float)) >= 0
        )


def test_symmetric_eigh_repeated_eigenvalues_and_edge_cases():
    """Where the eigenvectors are not unique only the reconstruction and the
    orthogonality are compared; extreme scales; a non-finite entry gives NaN
    for its own matrix only."""
    rng = np.random.default_rng(4)
    d = 5
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = rng.normal(size=(50, 3))
    # two features affine in the others: a correlation matrix of rank 3
    x = np.column_stack([x, x[:, 0] - 2 * x[:, 1], 3 * x[:, 2] + 1])
    spd = _spd(rng, 1, d)[0]
    a = np.stack(
        [
            np.eye(d),
            np.zeros((d, d)),
            np.corrcoef(x, rowvar=False),  # eigenvalue 0 twice
            q @ np.diag([1.0, 1.0, 1.0, 3.0, 3.0]) @ q.T,
            np.ones((d, d)),  # rank 1: eigenvalue 0 four times
            1e300 * spd,  # squares overflow
            1e-300 * spd,  # products below the normal range: XLA flushes them
            spd,
        ]
    )
    a[-1, 1, 3] = a[-1, 3, 1] = np.nan
    values, vectors = (np.asarray(m) for m in symmetric_eigh(jnp.asarray(a)))
    assert np.all(np.isnan(values[-1])) and np.all(np.isnan(vectors[-1]))
    for error in _eigh_errors(a[:-1], values[:-1], vectors[:-1]):
        assert np.all(error <= 10), error
    np.testing.assert_array_equal(values[:2], [np.ones(d), np.zeros(d)])
    np.testing.assert_array_equal(vectors[:2], [np.eye(d), np.eye(d)])
    ref = np.linalg.eigvalsh(a[5:7] / [[[1e300]], [[1e-300]]])
    np.testing.assert_allclose(values[5:7] / [[1e300], [1e-300]], ref, rtol=1e-13)
    # the rank-deficiency rule of gmmjax._hc.svd_scaled reads these zeros
    assert np.all(np.abs(values[2, :2]) <= d * np.finfo(float).eps)
    assert np.all(values[2, 2:] > 0.1)


def test_symmetric_eigh_vectors_are_continuous_at_equal_diagonals():
    """A correlation matrix's diagonal entries are all 1, so every rotation of
    the first sweep has tau = 0 give or take rounding, where the angle jumps
    from pi/4 to -pi/4; the sign rule makes the vectors continuous there. (The
    data's row order moves such rounding; a flipped axis of svd_scaled would
    change the rows hc_labels grows its tree on.)"""
    rng = np.random.default_rng(5)
    d = 5
    corr = np.corrcoef(rng.normal(size=(40, d)) @ rng.normal(size=(d, d)), rowvar=False)
    eps = np.finfo(float).eps
    bumps = rng.integers(-3, 4, size=(7, d)) * eps  # a few ulps up and down
    a = np.concatenate([corr[None], corr + bumps[:, :, None] * np.eye(d)])
    _, vectors = (np.asarray(m) for m in symmetric_eigh(jnp.asarray(a)))
    gap = np.min(np.diff(np.linalg.eigvalsh(corr)))
    assert np.abs(vectors - vectors[0]).max() <= 10 * d * eps / gap


def test_symmetric_eigh_batches_under_vmap_and_differentiates():
    rng = np.random.default_rng(6)
    a = jnp.asarray(np.concatenate([_spd(rng, 4, 5), _symmetric(rng, 4, 5, False)]))
    values, vectors = symmetric_eigh(a)
    # each matrix stops its own sweeps under vmap: the same to rounding
    mapped_values, mapped_vectors = jax.vmap(symmetric_eigh)(a)
    np.testing.assert_allclose(mapped_values, values, rtol=0, atol=1e-13)
    np.testing.assert_allclose(mapped_vectors, vectors, rtol=0, atol=1e-12)
    # jnp.linalg.eigh's derivatives (distinct eigenvalues), both modes
    m = jnp.asarray(rng.normal(size=(3, 3)))
    check_grads(
        jax.jit(lambda m: symmetric_eigh(m + m.T)), (m,), order=1, modes=["fwd", "rev"]
    )


def _primitives(jaxpr, found):
    for eqn in jaxpr.eqns:
        found.add(eqn.primitive.name)
        for sub in jaxprs_in_params(eqn.params):
            _primitives(sub, found)
    return found


def test_the_primitive_search_sees_lapack():
    """The check below would fail if the library still called LAPACK."""
    jaxpr = jax.make_jaxpr(jnp.linalg.eigvalsh)(jnp.eye(4)).jaxpr
    assert "eigh" in _primitives(jaxpr, set())


def test_symmetric_eigh_holds_no_lapack():
    eye = jnp.eye(5)
    programs = {
        "symmetric_eigh": symmetric_eigh,
        "vmap": jax.vmap(symmetric_eigh),
        "gradient": jax.grad(lambda m: symmetric_eigh(m)[1][0, -1] ** 2),
    }
    for name, fn in programs.items():
        arg = eye[None] if name == "vmap" else eye
        found = _primitives(jax.make_jaxpr(fn)(arg).jaxpr, set()) & LAPACK
        assert not found, f"{name} calls LAPACK: {sorted(found)}"


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_compiled_programs_hold_no_lapack(covariance_type):
    """Restarts, fits, natural parameters, sampling and the diagnosis' Hessian."""
    x = jnp.asarray(skdatasets.load_wine().data[:40, :5])
    key = jax.random.key(0)

    def restarts(x):
        return gmmjax.multistart(
            gmmjax.EM(max_reseeds=1),
            key,
            x,
            n_components=3,
            n_init=2,
            covariance_type=covariance_type,
        )

    rng = np.random.default_rng(2)
    cov = _spd(rng, 3, 5) if covariance_type == "full" else _spd(rng, 1, 5)[0]
    gmm = gmmjax.GMM.from_natural(
        np.full(3, 1 / 3), rng.normal(size=(3, 5)), cov, covariance_type=covariance_type
    )

    def natural(gmm):
        return gmmjax.GMM.from_natural(
            gmm.weights, gmm.means, gmm.covariances, covariance_type=covariance_type
        )

    programs = {
        "multistart": lambda x: restarts(x).log_likelihood,
        "natural round trip": lambda x: natural(gmm).means,
        "sample": lambda x: gmmjax.sample(key, gmm, 7)[0],
        "hessian of natural": lambda x: (
            jax.hessian(lambda g: gmmjax.log_likelihood(natural(g), x))(gmm).means.means
        ),
    }
    for name, fn in programs.items():
        found = _primitives(jax.make_jaxpr(fn)(x).jaxpr, set()) & LAPACK
        assert not found, f"{name} calls LAPACK: {sorted(found)}"


def test_reported_multistart_on_wine_in_float32_returns():
    """The user's call, in a fresh process (x64 off) under a timeout."""
    script = textwrap.dedent(
        """
        import jax, numpy as np
        from sklearn.datasets import load_wine
        from sklearn.preprocessing import StandardScaler
        import gmmjax
        w = StandardScaler().fit_transform(load_wine().data).astype(np.float32)
        runs = gmmjax.multistart(
            gmmjax.EM(), jax.random.key(0), w, n_components=3, n_init=100
        )
        best = gmmjax.best_of(runs)
        print(best.gmm.means.dtype, best.status_name, float(best.log_likelihood))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    dtype, status, ll = done.stdout.split()
    assert dtype == "float32"
    assert status == "CONVERGED"
    assert np.isfinite(float(ll))
