"""Exact derivatives and critical-point analysis against closed forms.

The two-point model of the saddle study (data {+1, -1}, mixture
1/2 N(mu, s^2) + 1/2 N(-mu, s^2)) has the closed form
ll(mu, s) = 2 [-log s - (1 + mu^2) / (2 s^2) + log cosh(mu / s^2)] - log(2 pi),
the independent reference for every number checked here.
"""

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from conftest import count_compilations

import gmmjax
from gmmjax import landscape

X_TWO = jnp.array([[1.0], [-1.0]])


def two_point_ll(theta):
    """The study's log-likelihood through the library: theta = (mu, sigma)."""
    mu, sigma = theta[0], theta[1]
    gmm = gmmjax.GMM.from_natural(
        jnp.array([0.5, 0.5]),
        jnp.stack([mu[None], -mu[None]]),
        jnp.stack([sigma**2, sigma**2]),
        covariance_type="spherical",
    )
    return gmmjax.log_likelihood(gmm, X_TWO)


def closed_form_ll(mu, s, lib=np):
    return 2 * (
        -lib.log(s) - (1 + mu**2) / (2 * s**2) + lib.log(lib.cosh(mu / s**2))
    ) - lib.log(2 * lib.pi)


def test_two_point_closed_form_value():
    theta = jnp.array([0.3, 0.7])
    # jitted: one program, not one per operation
    value = jax.jit(two_point_ll)(theta)
    assert float(value) == pytest.approx(closed_form_ll(0.3, 0.7))


def test_two_point_saddle_gradient_and_hessian():
    theta = jnp.array([0.0, 1.0])
    np.testing.assert_allclose(landscape.gradient(two_point_ll, theta), 0, atol=1e-9)
    np.testing.assert_allclose(
        landscape.hessian(two_point_ll, theta), np.diag([0.0, -4.0]), atol=1e-9
    )


@pytest.mark.parametrize("s", [0.5, 0.8, 1.0, 1.3, 2.0])
def test_curvature_in_mu_on_the_symmetric_line(s):
    h = landscape.hessian(two_point_ll, jnp.array([0.0, s]))
    # d2 ll / d mu2 at (0, s) = 2 (1 - s^2) / s^4 (second derivative of the closed
    # form); exact autodiff agrees to rounding
    assert float(h[0, 0]) == pytest.approx(2 * (1 - s**2) / s**4, abs=1e-10)
    assert float(h[0, 1]) == pytest.approx(0.0, abs=1e-10)


def test_hessian_matches_mpmath_at_a_generic_point():
    mpmath.mp.dps = 30
    mu, s = 0.3, 0.7

    def f(a, b):
        return closed_form_ll(a, b, lib=mpmath)

    ref = np.array(
        [
            [
                float(mpmath.diff(f, (mu, s), (2, 0))),
                float(mpmath.diff(f, (mu, s), (1, 1))),
            ],
            [
                float(mpmath.diff(f, (mu, s), (1, 1))),
                float(mpmath.diff(f, (mu, s), (0, 2))),
            ],
        ]
    )
    got = landscape.hessian(two_point_ll, jnp.array([mu, s]))
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


def test_study_saddle_is_a_saddle_by_fourth_order():
    point = landscape.classify(two_point_ll, jnp.array([0.0, 1.0]))
    assert point.kind == "saddle"
    assert point.order == 4
    assert (point.n_positive, point.n_negative, point.n_null) == (0, 1, 1)
    np.testing.assert_allclose(point.eigenvalues, [-4.0, 0.0], atol=1e-9)


def test_study_saddle_escape_path_matches_closed_form():
    esc = landscape.escape_direction(two_point_ll, jnp.array([0.0, 1.0]))
    assert esc.order == 4
    np.testing.assert_allclose(esc.direction, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(esc.curvature, [0.0, -0.5], atol=1e-12)
    assert float(esc.rate) == pytest.approx(1.0 / 3.0, rel=1e-9)
    # the closed form along the two curves (relative error O(t^2))
    t = 1e-2
    base = closed_form_ll(0.0, 1.0)
    along_path = closed_form_ll(t, 1.0 - t**2 / 2) - base
    along_axis = closed_form_ll(t, 1.0) - base
    assert along_path == pytest.approx(t**4 / 3, rel=1e-3)
    assert along_axis == pytest.approx(-(t**4) / 6, rel=1e-3)


def test_generic_point_is_not_critical_and_escapes_along_the_gradient():
    theta = jnp.array([0.5, 0.8])
    point = landscape.classify(two_point_ll, theta)
    assert point.kind == "not_critical"
    esc = landscape.escape_direction(two_point_ll, theta)
    g = np.asarray(landscape.gradient(two_point_ll, theta))
    assert esc.order == 1
    np.testing.assert_allclose(esc.direction, g / np.linalg.norm(g), rtol=1e-12)


def log_sigma_ll(theta):
    """The same model with sigma = exp(theta[1]) so that sigma > 0 everywhere."""
    return two_point_ll(jnp.stack([theta[0], jnp.exp(theta[1])]))


def test_find_critical_points_finds_only_the_study_saddle():
    mus = np.linspace(-1.5, 1.5, 7)
    sigmas = np.linspace(0.3, 2.0, 6)
    grid = np.stack(np.meshgrid(mus, np.log(sigmas)), axis=-1).reshape(-1, 2)
    found = landscape.find_critical_points(log_sigma_ll, jnp.asarray(grid))
    assert len(found.classifications) == 1
    mu, log_sigma = np.asarray(found.points[0])
    # Newton converges only linearly at a degenerate point: the gradient vanishes
    # like mu^3, so mu is resolved to about eps^(1/3) ~ 1e-5
    assert abs(mu) < 1e-4
    assert np.exp(log_sigma) == pytest.approx(1.0, abs=1e-8)
    assert found.classifications[0].kind == "saddle"
    assert found.counts.sum() == found.converged.sum() >= 10
    # starts heading for the global maxima (sigma -> 0) never converge
    ends = np.asarray(found.endpoints)
    assert np.all(np.abs(ends[found.converged, 0]) < 1e-4)


def test_find_critical_points_on_pytrees_and_filtering_sigma():
    # direct sigma parameterization: (0, -1) is a critical point too (sigma enters
    # squared); it is filtered out by the domain sigma > 0
    starts = {
        "mu": jnp.array([0.2, -0.3, 0.1, 0.2]),
        "sigma": jnp.array([1.2, 0.9, -1.1, -0.8]),
    }
    found = landscape.find_critical_points(
        lambda t: two_point_ll(jnp.stack([t["mu"], t["sigma"]])), starts
    )
    sigmas = np.asarray(found.points["sigma"])
    assert sorted(np.round(sigmas, 6)) == [-1.0, 1.0]
    keep = sigmas > 0
    assert np.abs(np.asarray(found.points["mu"])[keep]).max() < 1e-4
    assert [c.kind for c in found.classifications] == ["saddle", "saddle"]


def random_quadratic(rng, signs):
    """``(f, a, sorted eigenvalues)`` of ``f(t) = t a t / 2``, whose Hessian is
    the symmetric matrix ``a``."""
    q, _ = np.linalg.qr(rng.normal(size=(len(signs), len(signs))))
    lam = np.asarray(signs, float) * rng.uniform(0.5, 3.0, size=len(signs))
    a = q @ np.diag(lam) @ q.T
    a = 0.5 * (a + a.T)
    a_jax = jnp.asarray(a)
    return (lambda t: 0.5 * t @ a_jax @ t), a, np.sort(lam)


@pytest.mark.parametrize(
    ("signs", "kind"),
    [
        ((-1, -1, -1), "maximum"),
        ((1, 1, 1, 1), "minimum"),
        ((1, -1, -1), "saddle"),
        ((1, 1, -1, -1), "saddle"),
    ],
)
def test_quadratic_signatures(rng, signs, kind):
    f, a, lam = random_quadratic(rng, signs)
    center = jnp.asarray(rng.normal(size=len(signs)))

    # one function object for classify and escape_direction: one program
    def shifted(t):
        return f(t - center)

    point = landscape.classify(shifted, center)
    assert point.kind == kind
    assert point.order == 2
    np.testing.assert_allclose(point.eigenvalues, lam, rtol=1e-12)
    assert point.n_positive == sum(s > 0 for s in signs)
    assert point.n_negative == sum(s < 0 for s in signs)
    esc = landscape.escape_direction(shifted, center)
    if kind == "maximum":
        assert esc is None
    else:
        v = np.asarray(esc.direction)
        # the top eigenvector: its Rayleigh quotient in the Hessian a is the
        # largest eigenvalue
        assert v @ a @ v == pytest.approx(lam[-1], rel=1e-10)


@pytest.mark.parametrize(
    ("f", "n", "kind", "order"),
    [
        (lambda t: -(t[0] ** 4) - t[1] ** 2, 2, "maximum", 4),
        (lambda t: t[0] ** 4 + t[1] ** 2, 2, "minimum", 4),
        (lambda t: t[0] ** 3 - t[1] ** 2, 2, "saddle", 3),
        (lambda t: t[0] ** 3, 1, "saddle", 3),
        (lambda t: -(t[0] ** 4) + t[1] ** 4 - t[2] ** 2, 3, "saddle", 4),
        (lambda t: -(t[0] ** 4) - t[1] ** 4 - t[2] ** 2, 3, "maximum", 4),
        (lambda t: -((t[0] + t[1]) ** 4) - (t[0] - t[1]) ** 4, 2, "maximum", 4),
        # coupled: along y = x^2 / 2 the function rises like x^4 / 4
        (lambda t: -(t[1] ** 2) + t[0] ** 2 * t[1], 2, "saddle", 4),
        # coupled but still a maximum: the max over y is -3/4 x^4
        (lambda t: -(t[1] ** 2) + t[0] ** 2 * t[1] - t[0] ** 4, 2, "maximum", 4),
        # not decidable at fourth order
        (lambda t: -(t[0] ** 2) * t[1] ** 2 - t[2] ** 2, 3, "degenerate", 0),
        (lambda t: -(t[0] ** 6) - t[1] ** 2, 2, "degenerate", 0),
    ],
)
def test_degenerate_hessians_decided_by_higher_order(f, n, kind, order):
    point = landscape.classify(f, jnp.zeros(n))
    assert point.kind == kind
    assert point.order == order


def test_classify_compiles_once_per_function_and_shape():
    # STYLE rule 15: the same function at another point of the same shape reuses
    # the second-order program and, at a singular Hessian, the higher-order one
    f = lambda t: -(t[0] ** 4) - t[1] ** 2  # noqa: E731
    assert landscape.classify(f, jnp.zeros(2)).kind == "maximum"
    moved = jnp.array([0.0, 1e-3])
    with count_compilations() as log:
        point = landscape.classify(f, moved, gradient_tol=float("inf"))
    assert (point.kind, point.order) == ("maximum", 4)
    assert log == []


def test_coupled_escape_curvature():
    f = lambda t: -(t[1] ** 2) + t[0] ** 2 * t[1]  # noqa: E731
    esc = landscape.escape_direction(f, jnp.zeros(2))
    np.testing.assert_allclose(esc.direction, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(esc.curvature, [0.0, 0.5], atol=1e-12)
    assert float(esc.rate) == pytest.approx(0.25, rel=1e-12)
    t = 1e-2
    path = jnp.array([t, t**2 / 2])
    assert float(f(path)) == pytest.approx(t**4 / 4, rel=1e-12)


def test_cubic_escape_points_uphill():
    esc = landscape.escape_direction(lambda t: -(t[0] ** 3) - t[1] ** 2, jnp.zeros(2))
    assert esc.order == 3
    np.testing.assert_allclose(esc.direction, [-1.0, 0.0], atol=1e-12)


def test_pytree_theta_flattening_order():
    theta = {"b": jnp.array([1.0, 2.0]), "a": jnp.array(3.0)}

    def f(t):
        return t["a"] ** 2 * t["b"][0] + jnp.sin(t["b"][1])

    # the closed-form derivatives of f = a^2 b0 + sin(b1) at (a, b0, b1) = (3, 1, 2)
    ref_g = [2 * 3.0 * 1.0, 3.0**2, np.cos(2.0)]
    ref_h = [[2 * 1.0, 2 * 3.0, 0.0], [2 * 3.0, 0.0, 0.0], [0.0, 0.0, -np.sin(2.0)]]
    np.testing.assert_allclose(landscape.gradient(f, theta), ref_g, rtol=1e-14)
    np.testing.assert_allclose(landscape.hessian(f, theta), ref_h, rtol=1e-14)
    # ravel_pytree orders leaves by key: a, b[0], b[1]
    assert float(landscape.gradient(f, theta)[0]) == pytest.approx(2 * 3.0 * 1.0)
    assert landscape.classify(f, theta).kind == "not_critical"


def test_jit_vmap_and_chunked_hessian_agree(rng):
    points = rng.uniform([-1.0, 0.5], [1.0, 1.5], size=(5, 2))
    thetas = jnp.asarray(points)
    loop = np.stack([landscape.hessian(two_point_ll, t) for t in points])
    vmapped = jax.vmap(lambda t: landscape.hessian(two_point_ll, t))(thetas)
    jitted = jax.jit(jax.vmap(lambda t: landscape.hessian(two_point_ll, t)))(thetas)
    chunked = jax.vmap(lambda t: landscape.hessian(two_point_ll, t, chunk_size=1))(
        thetas
    )
    np.testing.assert_allclose(vmapped, loop, rtol=1e-12)
    np.testing.assert_allclose(jitted, loop, rtol=1e-12)
    np.testing.assert_allclose(chunked, loop, rtol=1e-12)
    grads = jax.jit(jax.vmap(lambda t: landscape.gradient(two_point_ll, t)))(thetas)
    # jitted: one program, not one per operation
    grad = jax.jit(jax.grad(two_point_ll))
    np.testing.assert_allclose(grads, np.stack([grad(t) for t in points]), rtol=1e-12)


def test_bad_inputs():
    with pytest.raises(ValueError, match="chunk_size"):
        landscape.hessian(two_point_ll, jnp.zeros(2), chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        landscape.hessian(two_point_ll, jnp.zeros(2), chunk_size=1.5)
    with pytest.raises(ValueError, match="tol"):
        landscape.classify(two_point_ll, jnp.array([0.0, 1.0]), tol=-1.0)
    with pytest.raises(ValueError, match="not finite"):
        landscape.classify(lambda t: jnp.sum(jnp.log(t)), jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="leading axis"):
        landscape.find_critical_points(
            lambda t: t["a"] + t["b"], {"a": jnp.zeros(3), "b": jnp.zeros(2)}
        )
    with pytest.raises(ValueError, match="max_steps"):
        landscape.find_critical_points(two_point_ll, jnp.ones((2, 2)), max_steps=0)
