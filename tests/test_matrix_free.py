"""Hessians at any size (issue 18): Hessian-vector products in blocks, the Lanczos
route against dense eigendecompositions, the whitened coordinates against the
closed-form complete-data information, and the memory errors.

Problems are tiny and share shapes: the matrix-free route is exact when its
Krylov space is the whole space, and the routes are compared there and below it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    COVARIANCE_TYPES,
    count_compilations,
    expected_complete_information,
    random_natural,
)

import gmmjax
from gmmjax import _krylov, _landscape, landscape
from gmmjax._information import natural_vector, unwhiten, whitening

N, D = 48, 2


def symmetric(rng, p):
    a = rng.normal(size=(p, p))
    return (a + a.T) / 2


def matvec_of(h):
    h = jnp.asarray(h)
    return lambda v: h @ v


def test_dense_hessian_in_blocks_and_chunks_equals_jax_hessian(rng):
    # a sum over chunks of rows, differentiated block by block of directions:
    # the same matrix as jax.hessian of the whole sum, whatever the blocks
    a = jnp.asarray(rng.normal(size=(6, 4, 5)))

    def term(z, chunk):
        return jnp.sum(jnp.sin(chunk @ z) * jnp.cosh(0.1 * chunk @ z))

    z = jnp.asarray(rng.normal(size=5))
    expected = jax.hessian(lambda t: sum(term(t, c) for c in a))(z)
    for block in (1, 2, 5):
        value, grad, h = jax.jit(
            lambda t, c, block=block: _krylov.dense_hessian(
                _krylov.Terms(term, c), t, block
            )
        )(z, a)
        np.testing.assert_allclose(h, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(value, sum(term(z, c) for c in a), rtol=1e-13)
    np.testing.assert_allclose(
        grad, jax.grad(lambda t: sum(term(t, c) for c in a))(z), rtol=1e-12
    )


def test_ritz_on_the_whole_space_is_the_eigendecomposition(rng):
    p = 12
    h = symmetric(rng, p)
    start = jnp.asarray(rng.normal(size=p))
    ritz = jax.jit(
        lambda s: _krylov.ritz(matvec_of(h), s, jax.random.key(0), p, rtol=0.0)
    )(start)
    assert int(ritz.n_products) == p
    np.testing.assert_allclose(ritz.values, np.linalg.eigvalsh(h), atol=1e-12)
    vecs = np.asarray(ritz.vectors)
    np.testing.assert_allclose(vecs.T @ vecs, np.eye(p), atol=1e-12)
    # the residuals are the true ones, and the start lies in the space
    true = np.linalg.norm(h @ vecs - vecs * np.asarray(ritz.values), axis=0)
    np.testing.assert_allclose(ritz.residuals, true, atol=1e-11)
    np.testing.assert_allclose(
        np.sum(np.asarray(ritz.start_coefficients) ** 2), start @ start, rtol=1e-12
    )


def test_ritz_finds_the_extremes_early_and_survives_a_zero_start(rng):
    # a spectrum with separated extremes converges long before p products; a
    # zero start (a gradient at a critical point) falls back on random vectors
    p = 120
    q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    eig = np.concatenate([[-5.0], rng.uniform(-1.0, 1.0, p - 2), [3.0]])
    h = (q * eig) @ q.T
    for start in (jnp.asarray(rng.normal(size=p)), jnp.zeros(p)):
        ritz = jax.jit(
            lambda s: _krylov.ritz(matvec_of(h), s, jax.random.key(1), p, n_wanted=1)
        )(start)
        n = int(ritz.n_products)
        assert bool(ritz.converged) and n < p
        values = np.asarray(ritz.values)
        assert np.isnan(values[n:]).all()
        assert values[n - 1] == pytest.approx(3.0, abs=1e-10)
        top = np.asarray(ritz.vectors)[:, n - 1]
        assert abs(top @ q[:, -1]) == pytest.approx(1.0, abs=1e-8)


def test_conjugate_gradients_solves_and_reports_indefinite(rng):
    p = 10
    a = rng.normal(size=(p, p))
    spd = a @ a.T + np.eye(p)
    b = jnp.asarray(rng.normal(size=p))
    x, converged, definite = _krylov.conjugate_gradients(
        matvec_of(spd), b, rtol=1e-12, max_steps=100
    )
    assert bool(converged) and bool(definite)
    np.testing.assert_allclose(x, np.linalg.solve(spd, b), rtol=1e-9)
    _, converged, definite = _krylov.conjugate_gradients(
        matvec_of(-spd), b, rtol=1e-12, max_steps=100
    )
    assert not bool(definite) and not bool(converged)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_whitening_inverts_the_complete_data_information(rng, covariance_type):
    # T^T I_c T = 1: the whitened coordinates carry one unit of complete-data
    # information per sample in every direction
    weights, means, cov = random_natural(rng, 2, D, covariance_type)
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type=covariance_type)
    p = natural_vector(gmm).shape[0]
    jacobian = jax.jit(jax.jacfwd(lambda v: unwhiten(v, gmm, whitening(gmm))))
    t = np.asarray(jacobian(jnp.zeros(p)))
    info = expected_complete_information(gmm)
    np.testing.assert_allclose(t.T @ info @ t, np.eye(p), atol=1e-10)


def separated(rng, covariance_type, k=2):
    """Clusters a thousand standard deviations apart and the mixture of their own
    sample moments: responsibilities are 0 or 1, no information is missing."""
    centers = np.array([[0.0, 0.0], [1e3, -1e3], [-1e3, 2e3]])[:k]
    labels = np.repeat(np.arange(k), N // k)
    x = centers[labels] + rng.normal(size=(N, D)) * [1.0, 2.0]
    weights = np.bincount(labels) / N
    means = np.stack([x[labels == j].mean(0) for j in range(k)])
    cov = np.stack([np.cov(x[labels == j].T, bias=True) for j in range(k)])
    cov = {
        "full": cov,
        "tied": np.einsum("j,jab->ab", weights, cov),
        "diag": np.diagonal(cov, axis1=1, axis2=2),
        "spherical": np.diagonal(cov, axis1=1, axis2=2).mean(1),
    }[covariance_type]
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type=covariance_type)
    return x, gmm


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_no_missing_information_means_every_curvature_is_minus_one(
    rng, covariance_type
):
    # at the maximum of perfectly separated clusters the observed information is
    # the complete-data one: the whitened Hessian is minus the identity, on
    # both routes
    x, gmm = separated(rng, covariance_type)
    for method in ("dense", "lanczos"):
        diag = gmmjax.diagnose(gmm, x, method=method)
        assert diag.kind == "maximum"
        np.testing.assert_allclose(diag.eigenvalues, -1.0, atol=1e-8)


def study_saddle():
    """The seed's degenerate saddle: ``{-1, 1}``, two coinciding unit-variance
    components at 0 (a singular Hessian, decided at fourth order)."""
    x = np.array([[-1.0], [1.0]])
    gmm = gmmjax.GMM.from_natural(
        [0.5, 0.5], [[0.0], [0.0]], [1.0, 1.0], covariance_type="spherical"
    )
    return x, gmm


def planted(rng):
    """Three clusters, a start with two coinciding components over two of them:
    EM stalls at a saddle with a positive curvature."""
    x = np.concatenate(
        [rng.normal(c, 1.0, size=(n, 1)) for c, n in ((-6, 14), (0, 20), (6, 14))]
    )
    start = gmmjax.GMM.from_natural(
        [0.35, 0.35, 0.3],
        [[-3.0], [-3.0], [6.0]],
        [9.0, 9.0, 1.0],
        covariance_type="spherical",
    )
    return x, gmmjax.fit(gmmjax.EM(), start, x, tol=1e-12, max_steps=2000).gmm


def test_routes_agree_on_maxima_saddles_and_the_degenerate_saddle(rng):
    x_max, gmm_max = separated(rng, "full", k=3)
    off = gmmjax.GMM.from_natural(
        gmm_max.weights, gmm_max.means + 0.5, gmm_max.covariances
    )
    cases = {
        "maximum": (x_max, gmm_max),
        "saddle": planted(rng),
        "not_critical": (x_max, off),
        "degenerate saddle": study_saddle(),
    }
    for name, (x, gmm) in cases.items():
        dense = gmmjax.diagnose(gmm, x, method="dense")
        free = gmmjax.diagnose(gmm, x, method="lanczos")
        assert dense.kind == free.kind == name.split()[-1], name
        d_vals, f_vals = np.asarray(dense.eigenvalues), np.asarray(free.eigenvalues)
        for got, want in ((f_vals[-1], d_vals[-1]), (f_vals[0], d_vals[0])):
            assert got == pytest.approx(want, rel=1e-6, abs=1e-12), name
        assert float(free.predicted_gain) == pytest.approx(
            float(dense.predicted_gain), rel=1e-6, abs=1e-14
        )
        if dense.escape_direction is None:
            assert free.escape_direction is None
        else:
            cos = np.asarray(dense.escape_direction) @ np.asarray(free.escape_direction)
            assert abs(cos) == pytest.approx(1.0, abs=1e-6), name
            assert free.escape_order == dense.escape_order


def test_classify_routes_agree_on_the_study_function():
    # the seed's two-point log-likelihood in (mu, sigma): a saddle decided at
    # fourth order at (0, 1), a maximum at the symmetric optimum of sigma
    def f(t):
        mu, s = t
        a = -0.5 * ((1 - mu) / s) ** 2
        b = -0.5 * ((1 + mu) / s) ** 2
        return 2 * (jnp.logaddexp(a, b) - jnp.log(2 * s))

    for theta, kind in ((jnp.array([0.0, 1.0]), "saddle"),):
        dense = landscape.classify(f, theta, method="dense")
        free = landscape.classify(f, theta, method="lanczos")
        assert dense.kind == free.kind == kind
        assert dense.order == free.order == 4
        esc = landscape.escape_direction(f, theta, method="lanczos")
        assert esc.order == 4 and abs(float(esc.direction[0])) == pytest.approx(1.0)


def test_matrix_free_information_and_standard_errors_match_dense(rng):
    x, gmm = separated(rng, "diag", k=2)
    gmm = gmmjax.fit(gmmjax.EM(reg_covar=0.0), gmm, x, tol=0.0, max_steps=3).gmm
    dense = gmmjax.observed_information(gmm, x, method="dense")
    free = gmmjax.observed_information(gmm, x, method="lanczos")
    assert free.matrix is None and free.labels == dense.labels
    v = rng.normal(size=(3, len(dense.labels)))
    np.testing.assert_allclose(
        free.matvec(v), v @ np.asarray(dense.matrix), rtol=1e-10, atol=1e-8
    )
    np.testing.assert_allclose(free.matvec(v[0]), dense.matvec(v[0]), rtol=1e-10)
    chosen = ["means[1,0]", "covariances[0,1]", 0]
    se_dense = gmmjax.standard_errors(gmm, x, params=chosen, method="dense")
    se_free = gmmjax.standard_errors(gmm, x, params=chosen, method="lanczos")
    assert (
        se_dense.labels
        == se_free.labels
        == ("means[1,0]", "covariances[0,1]", "weights[0]")
    )
    full = gmmjax.standard_errors(gmm, x)
    inverse = np.linalg.inv(np.asarray(dense.matrix))
    index = [full.labels.index(label) for label in se_dense.labels]
    np.testing.assert_allclose(
        se_dense.covariance, inverse[np.ix_(index, index)], rtol=1e-9
    )
    np.testing.assert_allclose(se_free.covariance, se_dense.covariance, rtol=1e-7)
    np.testing.assert_allclose(se_free.errors, np.asarray(full.errors)[index])


def test_standard_errors_refuse_bad_params_and_a_saddle(rng):
    x, gmm = study_saddle()
    with pytest.raises(ValueError, match="params: unknown parameter 'means\\[7,0\\]'"):
        gmmjax.standard_errors(gmm, x, params=["means[7,0]"])
    with pytest.raises(ValueError, match="params: index 9"):
        gmmjax.standard_errors(gmm, x, params=[9])
    with pytest.raises(TypeError, match="params"):
        gmmjax.standard_errors(gmm, x, params=[1.5])
    saddle_x, saddle = planted(rng)
    for method in ("dense", "lanczos"):
        with pytest.raises(ValueError, match="not positive definite"):
            gmmjax.standard_errors(saddle, saddle_x, method=method)


def test_a_dense_analysis_that_does_not_fit_is_refused(monkeypatch, rng):
    monkeypatch.setattr(_krylov, "available_memory", lambda: 1000)
    x, gmm = separated(rng, "full", k=3)
    p = len(gmmjax._information.natural_labels(gmm))
    match = rf"p = {p} parameters needs about .* GiB.*method='lanczos'"
    with pytest.raises(ValueError, match=match):
        gmmjax.diagnose(gmm, x, method="dense")
    with pytest.raises(ValueError, match="method='lanczos'"):
        gmmjax.observed_information(gmm, x, method="dense")
    with pytest.raises(ValueError, match="method='lanczos'"):
        landscape.hessian(lambda t: jnp.sum(t**4), jnp.zeros(400))
    with pytest.raises(ValueError, match="krylov_dim"):
        gmmjax.diagnose(gmm, x, method="lanczos", krylov_dim=p)
    for bad, error in (("qr", ValueError), (1.5, ValueError)):
        with pytest.raises(error, match="method"):
            gmmjax.diagnose(gmm, x, method=bad)
    with pytest.raises(ValueError, match="krylov_dim"):
        gmmjax.diagnose(gmm, x, method="lanczos", krylov_dim=1)
    with pytest.raises(TypeError, match="krylov_dim"):
        gmmjax.diagnose(gmm, x, method="lanczos", krylov_dim=2.0)


def test_auto_route_and_a_second_matrix_free_diagnosis_compiles_nothing(rng):
    x, gmm = separated(rng, "full", k=3)
    route = gmmjax._information.mixture_route(gmm, jnp.asarray(x), "auto")
    assert route.route.method == "dense"  # 17 parameters
    big = _landscape.choose_route(
        _landscape.DENSE_MAX_PARAMETERS + 1, np.float64, "auto", direction_bytes=8
    )
    assert big.method == "lanczos"
    gmmjax.diagnose(gmm, x, method="lanczos")
    moved = x + 1.0
    shifted = gmmjax.GMM.from_natural(
        gmm.weights, gmm.means + 1.0, gmm.covariances, covariance_type="full"
    )
    with count_compilations() as log:
        diag = gmmjax.diagnose(shifted, moved, method="lanczos")
    assert diag.kind == "maximum" and log == []


def test_float32_matrix_free_diagnosis(rng):
    x, gmm = separated(rng, "spherical")
    x32 = np.asarray(x, np.float32)
    gmm32 = gmmjax.GMM.from_natural(
        np.asarray(gmm.weights, np.float32),
        np.asarray(gmm.means, np.float32),
        np.asarray(gmm.covariances, np.float32),
        covariance_type="spherical",
    )
    for method in ("dense", "lanczos"):
        diag = gmmjax.diagnose(gmm32, x32, method=method)
        assert diag.eigenvalues.dtype == np.float32
        assert diag.kind == "maximum"
        np.testing.assert_allclose(diag.eigenvalues, -1.0, atol=1e-4)


def test_one_plus_the_top_curvature_is_the_rate_of_em():
    # in whitened coordinates the Hessian at the maximum is -(1 - F), F EM's
    # rate matrix (the fraction of missing information): EM's observed linear
    # rate of convergence is 1 + the top eigenvalue, on both routes
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 1, (100, 1)), rng.normal(1.2, 0.8, (100, 1))])
    start = gmmjax.GMM.from_natural(
        [0.5, 0.5], [[-0.5], [0.5]], [1.0, 1.0], covariance_type="spherical"
    )
    em = gmmjax.EM(reg_covar=0.0)
    best = gmmjax.fit(em, start, x, tol=0.0, max_steps=20000)
    _, trace = gmmjax.fit_trace(em, start, x, num_steps=300)
    path = np.asarray(jax.vmap(natural_vector)(trace.gmm))
    error = np.linalg.norm(path - np.asarray(natural_vector(best.gmm)), axis=1)
    rate = error[250] / error[249]
    for method in ("dense", "lanczos"):
        top = float(gmmjax.diagnose(best, x, method=method).eigenvalues[-1])
        assert 1.0 + top == pytest.approx(rate, rel=1e-6)
