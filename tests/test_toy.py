"""The symmetric two-point model: closed forms against the general library, mpmath
and scipy."""

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import optimize

import gmmjax
from gmmjax import toy

mpmath.mp.dps = 50


def _ll_mpmath(mu, sigma):
    """The log-likelihood at 50 digits, straight from the mixture density."""
    mu, sigma = mpmath.mpf(mu), mpmath.mpf(sigma)

    def mix(x):
        return 0.5 * mpmath.npdf(x, mu, sigma) + 0.5 * mpmath.npdf(x, -mu, sigma)

    return mpmath.log(mix(1)) + mpmath.log(mix(-1))


def _grid():
    mu, sigma = np.meshgrid(np.linspace(-2, 2, 9), np.linspace(0.2, 2.5, 7))
    return mu.ravel(), sigma.ravel()


def test_ll_matches_mpmath_and_closed_form():
    mu, sigma = _grid()
    library = jax.jit(jax.vmap(toy.ll))(mu, sigma)
    closed = toy.ll_closed_form(mu, sigma)
    pairs = zip(mu, sigma, strict=True)
    reference = np.array([float(_ll_mpmath(m, s)) for m, s in pairs])
    # |L| <= 60 on this grid: 1e-12 relative is a few hundred ulps of float64
    np.testing.assert_allclose(library, reference, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(closed, reference, rtol=1e-12, atol=1e-12)


def test_nearby_better_points_of_the_saddle():
    # differences of O(1e-6) between values of O(3): float64 leaves ~1e-15
    # absolute error, i.e. ~1e-9 relative on the difference
    for mu, sigma in [(0.1, 0.999), (0.01, 0.99999)]:
        reference = float(_ll_mpmath(mu, sigma) - _ll_mpmath(0, 1))
        got = float(toy.ll(mu, sigma) - toy.ll(0.0, 1.0))
        assert reference > 0
        np.testing.assert_allclose(got, reference, rtol=1e-4)
    np.testing.assert_allclose(
        float(toy.ll(0.1, 0.999) - toy.ll(0.0, 1.0)), 1.311065e-6, rtol=1e-6
    )


def test_gradient_and_hessian_at_the_saddle():
    def f(theta):
        return toy.ll(theta[0], theta[1])

    theta = jnp.array([0.0, 1.0])
    grad = jax.jit(jax.grad(f))(theta)
    hess = jax.jit(jax.hessian(f))(theta)
    np.testing.assert_allclose(grad, [0.0, 0.0], atol=1e-14)
    # the exact Hessian is diag(0, -4): d2L/dmu2 = (2/v)(1/v - 1) = 0 at v = 1, and
    # d2L/dsigma2 = 2 (1/sigma^2 - 3 (1 + mu^2 - 2 mu tanh z) / sigma^4) = -4
    np.testing.assert_allclose(hess, [[0.0, 0.0], [0.0, -4.0]], atol=1e-12)
    assert float(jnp.linalg.det(hess)) == pytest.approx(0.0, abs=1e-12)


def test_landscape_classifies_the_degenerate_saddle():
    from gmmjax import landscape

    def f(theta):
        return toy.ll(theta[0], theta[1])

    theta = jnp.array([0.0, 1.0])
    np.testing.assert_allclose(
        landscape.hessian(f, theta), [[0.0, 0.0], [0.0, -4.0]], atol=1e-12
    )
    point = landscape.classify(f, theta)
    assert point.kind == "saddle" and point.n_null == 1
    escape = landscape.escape_direction(f, theta)
    # the ridge sigma*(mu)^2 = 1 - mu^2 + O(mu^4): w = (0, -1/2), gain mu^4 / 3
    np.testing.assert_allclose(np.abs(escape.direction), [1.0, 0.0], atol=1e-10)
    np.testing.assert_allclose(escape.curvature, [0.0, -0.5], atol=1e-8)
    assert float(escape.rate) == pytest.approx(1 / 3, rel=1e-6)


def test_closed_form_gradient_and_second_order_grads():
    mu, sigma = _grid()
    g_mu, g_sigma = jax.jit(jax.vmap(jax.grad(toy.ll, argnums=(0, 1))))(mu, sigma)
    c_mu, c_sigma = toy.dll(mu, sigma)
    np.testing.assert_allclose(g_mu, c_mu, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(g_sigma, c_sigma, rtol=1e-10, atol=1e-10)
    check_grads(jax.jit(toy.ll), (0.3, 0.8), order=2, modes=("rev",))


def test_phase_change_of_the_curvature_in_mu():
    # d2L/dmu2 at mu = 0 is (2/sigma^2)(1/sigma^2 - 1): positive below sigma = 1
    d2 = jax.jit(jax.vmap(jax.grad(jax.grad(toy.ll), argnums=0)))
    sigma = jnp.array([0.8, 0.95, 1.05, 1.3])
    got = d2(jnp.zeros(4), sigma)
    np.testing.assert_allclose(got, 2 / sigma**2 * (1 / sigma**2 - 1), rtol=1e-10)
    assert np.all(np.sign(got) == [1, 1, -1, -1])


def test_profile_sigma_matches_scipy():
    mus = np.array([0.1, 0.4, 0.6, 0.8, 1.5, -0.4])
    got = np.asarray(toy.argmax_sigma(mus))
    for mu, s in zip(mus, got, strict=True):
        ref = optimize.minimize_scalar(
            lambda s, mu=mu: -float(toy.ll_closed_form(mu, s)),
            bounds=(0.05, 3.0),
            method="bounded",
            options={"xatol": 1e-10},
        ).x
        # a bounded scalar search on a smooth maximum locates it to ~sqrt(eps)
        np.testing.assert_allclose(s, ref, rtol=1e-6)
    assert got[0] == pytest.approx(0.9949189, abs=1e-6)
    assert got[0] > 0.9  # the study's remark: wider than 1 - mu
    np.testing.assert_allclose(toy.dll(mus, got)[1], 0.0, atol=1e-9)
    assert float(toy.argmax_sigma(1.0)) < 1e-8  # unbounded likelihood at mu = 1
    np.testing.assert_allclose(float(toy.argmax_sigma(0.0)), 1.0, rtol=1e-12)


def test_argmax_mu_solves_the_mean_field_equation():
    sigmas = np.array([0.3, 0.6, 0.9, 0.99])
    got = np.asarray(toy.argmax_mu(sigmas))
    for s, m in zip(sigmas, got, strict=True):
        ref = optimize.brentq(lambda m, s=s: np.tanh(m / s**2) - m, 1e-3, 1.0)
        np.testing.assert_allclose(m, ref, rtol=1e-10)
    assert np.all(np.asarray(toy.argmax_mu(np.array([1.0, 1.5, 3.0]))) == 0.0)
    assert float(toy.argmax_mu(0.6, -1.0)) == pytest.approx(-got[1])


def test_em_update_equals_the_general_library():
    mu, sigma = _grid()
    x = toy.data()

    def library(m, s):
        return toy.from_gmm(gmmjax.em_step(toy.to_gmm(m, s), x, reg_covar=0.0))

    lib_mu, lib_sigma = jax.vmap(library)(mu, sigma)
    cf_mu, cf_sigma = toy.em_update(mu, sigma)
    # the library floors the counts at N_j + 10 eps: relative error ~1e-15
    np.testing.assert_allclose(lib_mu, cf_mu, rtol=1e-12, atol=1e-14)
    # variances carry ~eps absolute rounding in both (cancellation in 1 - mu'),
    # so compare them on that scale rather than sigma relatively
    np.testing.assert_allclose(lib_sigma**2, cf_sigma**2, rtol=1e-12, atol=1e-14)
    # after one step every iterate is on the unit circle: sigma'^2 = 1 - mu'^2
    np.testing.assert_allclose(cf_mu**2 + cf_sigma**2, 1.0, rtol=1e-12)


def test_em_from_near_the_saddle_lingers_then_collapses():
    def step(carry, _):
        new = toy.em_update(*carry)
        return new, new

    _, (mus, sigmas) = jax.lax.scan(step, (0.02, 0.8), None, length=3000)
    mus, sigmas = np.asarray(mus), np.asarray(sigmas)
    first_below = int(np.argmax(sigmas < 0.5)) + 1  # step number, from 1
    assert 500 <= first_below <= 1500
    assert np.all(sigmas[:400] > 0.95)  # hundreds of steps next to sigma = 1
    assert sigmas[-1] < 1e-6 and abs(mus[-1]) > 1 - 1e-6


def test_general_library_em_traces_the_same_path():
    result, trace = gmmjax.fit_trace(
        gmmjax.EM(reg_covar=0.0), toy.to_gmm(0.02, 0.8), toy.data(), num_steps=1000
    )
    mus, sigmas = toy.from_gmm(trace.gmm)

    def step(carry, _):
        new = toy.em_update(*carry)
        return new, new

    _, (cf_mu, cf_sigma) = jax.lax.scan(step, (0.02, 0.8), None, length=1000)
    near = np.asarray(sigmas) > 0.5  # before the collapse the paths agree closely
    np.testing.assert_allclose(np.asarray(sigmas)[near], cf_sigma[near], rtol=1e-8)
    np.testing.assert_allclose(np.asarray(mus)[near], cf_mu[near], rtol=1e-8)
    assert 500 <= int(np.argmax(np.asarray(sigmas) < 0.5)) + 1 <= 1500
    assert float(sigmas[-1]) < 0.01
    assert result.status_name in ("DEGENERATE", "MAX_STEPS", "NONFINITE")


def test_alternating_walks_into_the_saddle():
    mu = jnp.array([0.2, -0.05, 0.3, 0.01])
    sigma = jnp.array([1.5, 1.0, 2.0, 1.2])
    m, s = toy.alternating_update(mu, sigma)
    np.testing.assert_allclose(m, 0.0, atol=1e-15)
    np.testing.assert_allclose(s, 1.0, rtol=1e-12)
    m2, s2 = toy.alternating_update(m, s)
    np.testing.assert_allclose((m2, s2), (m, s), atol=1e-15)
    # below sigma = 1 the first sweep already separates the components
    m, s = toy.alternating_update(0.01, 0.8)
    assert float(m) > 0.5 and float(s) < 0.8


def test_parameterization_round_trip_and_validation():
    gmm = toy.to_gmm(-0.4, 1.3)
    assert gmm.covariance_type == "spherical"
    np.testing.assert_allclose(gmm.weights, [0.5, 0.5])
    mu, sigma = toy.from_gmm(gmm)
    assert float(mu) == pytest.approx(-0.4) and float(sigma) == pytest.approx(1.3)
    with pytest.raises(ValueError, match="covariances"):
        toy.to_gmm(0.1, 0.0)
    batched = jax.vmap(toy.ll)(jnp.array([0.1, 0.5]), jnp.array([1.0, 0.7]))
    looped = [float(toy.ll(0.1, 1.0)), float(toy.ll(0.5, 0.7))]
    np.testing.assert_allclose(batched, looped, rtol=1e-14)
