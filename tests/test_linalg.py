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
from gmmjax._linalg import cholesky, extreme_eigenvalues, inverse_lower

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
