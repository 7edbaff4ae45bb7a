"""Deterministic annealing: the Annealed fitter and the variance sweep."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import COVARIANCE_TYPES
from scipy.special import softmax

import gmmjax

TWO_POINTS = jnp.array([[1.0], [-1.0]])


def two_point(mu, s):
    """The symmetric model of the saddle study: means +-mu, common variance s^2."""
    return gmmjax.GMM.from_natural(
        [0.5, 0.5], [[mu], [-mu]], [s**2, s**2], covariance_type="spherical"
    )


CENTERS = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])


def clusters():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(c, 1.0, size=(20, 2)) for c in CENTERS])


def moments(r, covariance_type):
    """The model of the responsibilities ``r`` (60, 3) on ``clusters()``: an M step
    on the host."""
    x = clusters()
    r = r / r.sum(1, keepdims=True)
    n_k = r.sum(0)
    means = r.T @ x / n_k[:, None]
    full = np.stack(
        [(r[:, j, None] * (x - m)).T @ (x - m) for j, m in enumerate(means)]
    )
    full /= n_k[:, None, None]
    cov = {
        "full": full,
        "tied": np.einsum("k,kde->de", n_k, full) / n_k.sum(),
        "diag": np.diagonal(full, axis1=1, axis2=2),
        "spherical": np.trace(full, axis1=1, axis2=2) / 2,
    }[covariance_type]
    return gmmjax.GMM.from_natural(
        n_k / n_k.sum(), means, cov, covariance_type=covariance_type
    )


def start(covariance_type="full"):
    """A k-means start: the moments of the three generating clusters (far apart,
    k-means finds about the same ones).

    Built on the host: the initialization is not under test here, and init_gmm
    would compile k-means once per covariance type and batch.
    """
    return moments(np.repeat(np.eye(3), 20, axis=0), covariance_type)


def stack(gmms):
    return jax.tree_util.tree_map(lambda *a: np.stack(a), *gmms)


def test_plain_em_stalls_at_the_saddle_and_the_variance_sweep_escapes():
    gmm0 = two_point(0.001, 2.0)
    plain = gmmjax.fit(gmmjax.EM(), gmm0, TWO_POINTS, max_steps=10_000, tol=0.0)
    assert int(plain.n_steps) == 10_000
    assert np.all(np.abs(np.asarray(plain.gmm.means)) < 0.5)
    # it sits at the saddle (mu, sigma) = (0, 1)
    np.testing.assert_allclose(plain.gmm.covariances, 1.0, atol=1e-3)

    variances = np.geomspace(4.0, 0.0025, 40)
    result, info = gmmjax.anneal_variance(
        jax.random.key(0), gmm0, TWO_POINTS, variances=variances
    )
    means = np.asarray(result.gmm.means)[:, 0]
    assert np.all(np.abs(means) > 0.9) and means[0] * means[1] < 0
    assert int(result.n_steps) <= 3000
    assert int(info.total_steps) == int(result.n_steps)
    assert np.sum(np.asarray(info.n_steps)) <= int(info.total_steps)
    np.testing.assert_allclose(info.variances, variances)
    stage_means = np.asarray(info.means)
    assert stage_means.shape == (40, 2, 1)
    # the clusters split only below the critical variance 1 (the sample
    # variance): above it the fixed-variance optimum keeps them together
    # (mu = tanh(mu / v) has only the root 0). Just below it the likelihood is
    # flat, each stage's tol test stops after a few steps, and the split shows a
    # few stages later.
    split = np.abs(stage_means[:, 0, 0]) > 0.1
    assert not np.any(split[variances > 1.0])
    assert np.all(split[variances < 0.3])
    # (two points, two components: the released fit shrinks each onto its point,
    # where reg_covar holds the variance up: a bounded maximum, not a collapse)
    assert result.status_name == "CONVERGED"
    np.testing.assert_allclose(result.gmm.covariances, 1e-6, rtol=1e-6)


def test_fixed_variance_stage_matches_closed_form_and_fixed_point():
    # one stage, no perturbation: the M step is mu_j = sum_i r_ij x_i / sum_i r_ij
    # with the responsibilities of the model whose covariances are v I
    x = clusters()
    weights = np.array([0.2, 0.3, 0.5])
    means = np.array([[0.5, 0.5], [4.0, 1.0], [1.0, 4.0]])
    gmm0 = gmmjax.GMM.from_natural(
        weights, means, np.ones(3), covariance_type="spherical"
    )
    v = 1.7
    result, _ = gmmjax.anneal_variance(
        jax.random.key(0), gmm0, x, variances=[v], perturbation=0.0,
        max_steps_per_stage=1, release=False,
    )  # fmt: skip
    # r_ij is proportional to pi_j exp(-|x_i - mu_j|^2 / 2v) (equal determinants)
    squared = np.sum((x[:, None, :] - means[None]) ** 2, axis=-1)
    r = softmax(np.log(weights) - squared / (2 * v), axis=1)
    n_k = r.sum(0)
    np.testing.assert_allclose(result.gmm.means, (r.T @ x) / n_k[:, None], rtol=1e-12)
    np.testing.assert_allclose(
        softmax(np.asarray(result.gmm.logits)), n_k / n_k.sum(), rtol=1e-12
    )
    np.testing.assert_allclose(result.gmm.covariances, v, rtol=1e-12)
    assert int(result.n_steps) == 1 and result.status_name == "MAX_STEPS"
    # the two-point stage map is mu -> tanh(mu / v): the stage converges to its
    # fixed point, nonzero below the critical variance 1
    v = 0.6
    mu = 0.5
    for _ in range(200):
        mu = np.tanh(mu / v)
    result, _ = gmmjax.anneal_variance(
        jax.random.key(0), two_point(0.5, 1.0), TWO_POINTS, variances=[v],
        perturbation=0.0, max_steps_per_stage=500, tol=1e-14, release=False,
    )  # fmt: skip
    assert result.status_name == "CONVERGED"
    np.testing.assert_allclose(np.asarray(result.gmm.means)[:, 0], [mu, -mu], rtol=1e-6)


def test_stages_are_fits_of_the_driver_and_report_a_nonfinite_stage():
    from gmmjax import _anneal, _fit

    x = clusters()
    gmm0 = start("spherical")
    stage = _anneal._FixedVariance(jnp.asarray(0.8))
    assert isinstance(stage, _fit.Fitter)
    alone = gmmjax.fit(stage, gmm0, x, max_steps=300, tol=1e-12)
    assert alone.status_name == "CONVERGED"
    np.testing.assert_allclose(alone.gmm.covariances, 0.8, rtol=1e-12)
    swept, info = gmmjax.anneal_variance(
        jax.random.key(0), gmm0, x, variances=[0.8], perturbation=0.0,
        max_steps_per_stage=300, tol=1e-12, release=False,
    )  # fmt: skip
    assert swept.status_name == "CONVERGED"
    assert int(swept.n_steps) == int(alone.n_steps) == int(info.n_steps[0])
    np.testing.assert_allclose(swept.gmm.means, alone.gmm.means, rtol=1e-12)
    # a variance so small that the log-likelihood overflows to -inf: the stage
    # stops NONFINITE with its last finite parameters, and the sweep says so,
    # with or without a release fit after it (twelve stages: the programs of the
    # sweeps below)
    for release in (False, True):
        bad, info = gmmjax.anneal_variance(
            jax.random.key(0), gmm0, x * 1e6, variances=np.full(12, 1e-300),
            release=release,
        )  # fmt: skip
        assert bad.status_name == "NONFINITE"
        assert all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(bad.gmm))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_every_covariance_type_is_held_at_v_times_identity(covariance_type):
    x = clusters()
    gmm0 = start(covariance_type)
    variances = np.geomspace(20.0, 0.5, 12)
    held, info = gmmjax.anneal_variance(
        jax.random.key(2), gmm0, x, variances=variances, release=False
    )
    assert held.gmm.covariance_type == covariance_type
    eye = np.eye(2) * 0.5
    expected = {
        "full": np.broadcast_to(eye, (3, 2, 2)),
        "tied": eye,
        "diag": np.full((3, 2), 0.5),
        "spherical": np.full(3, 0.5),
    }[covariance_type]
    np.testing.assert_allclose(held.gmm.covariances, expected, rtol=1e-12)
    np.testing.assert_allclose(
        held.log_likelihood, gmmjax.log_likelihood(held.gmm, x), rtol=1e-12
    )
    assert int(held.n_steps) == np.sum(np.asarray(info.n_steps))
    # the three clusters are found (each mean within 0.5 of a center)
    distance = np.linalg.norm(
        np.asarray(held.gmm.means)[:, None] - CENTERS[None], axis=-1
    )
    assert np.all(distance.min(axis=0) < 0.5)


def test_release_is_an_em_fit_from_the_last_stage():
    x = clusters()
    gmm0 = start("spherical")
    variances = np.geomspace(20.0, 0.5, 12)
    held, _ = gmmjax.anneal_variance(
        jax.random.key(2), gmm0, x, variances=variances, release=False
    )
    released, info = gmmjax.anneal_variance(
        jax.random.key(2), gmm0, x, variances=variances, max_steps=300
    )
    em = gmmjax.fit(gmmjax.EM(), held.gmm, x, max_steps=300)
    np.testing.assert_allclose(released.gmm.means, em.gmm.means, rtol=1e-12)
    np.testing.assert_allclose(released.log_likelihood, em.log_likelihood, rtol=1e-12)
    assert int(released.n_steps) == int(held.n_steps) + int(em.n_steps)
    assert int(info.total_steps) == int(released.n_steps)
    assert released.status_name == em.status_name


def test_anneal_variance_vmaps_over_keys_and_starts():
    x = clusters()
    keys = jax.random.split(jax.random.key(3), 4)
    # four starts: the clusters' moments, their memberships blurred at random
    rng = np.random.default_rng(3)
    hard = np.repeat(np.eye(3), 20, axis=0)
    gmm0s = stack(
        [moments(hard + rng.uniform(0, 0.5, hard.shape), "spherical") for _ in keys]
    )
    variances = np.geomspace(20.0, 0.5, 12)

    def run(key, gmm0):
        return gmmjax.anneal_variance(key, gmm0, x, variances=variances, release=False)

    # jitted as a whole: the batched sweep is one program, not one per output
    batched, info = jax.jit(jax.vmap(run))(keys, gmm0s)
    assert info.means.shape == (4, 12, 3, 2)
    batched_means = np.asarray(batched.gmm.means)
    for i, key in enumerate(keys):
        one = jax.tree_util.tree_map(lambda a, i=i: a[i], gmm0s)
        single, _ = run(key, one)
        np.testing.assert_allclose(batched_means[i], single.gmm.means, rtol=1e-10)


def test_annealed_with_constant_one_schedule_is_plain_fitting():
    x = clusters()
    gmm0 = start()
    one = optax.constant_schedule(1.0)
    for inner in (gmmjax.EM(), gmmjax.GradientFitter(optax.adam, learning_rate=0.05)):
        annealed, trace_a = gmmjax.fit_trace(
            gmmjax.Annealed(inner, one), gmm0, x, num_steps=15
        )
        plain, trace_p = gmmjax.fit_trace(inner, gmm0, x, num_steps=15)
        # beta = 1 tempers nothing: the same arithmetic in two programs, which
        # XLA may compile to sums in another order (the last bits)
        close = functools.partial(np.testing.assert_allclose, rtol=1e-13, atol=1e-13)
        close(trace_a.log_likelihood, trace_p.log_likelihood)
        close(trace_a.gmm.means, trace_p.gmm.means)
        close(annealed.gmm.log_diag, plain.gmm.log_diag)
    # and with the driver's stopping rule: same steps, same end point
    a = gmmjax.fit(gmmjax.Annealed(gmmjax.EM(), one), gmm0, x)
    p = gmmjax.fit(gmmjax.EM(), gmm0, x)
    assert int(a.n_steps) == int(p.n_steps) and a.status_name == p.status_name
    np.testing.assert_allclose(a.gmm.means, p.gmm.means, rtol=1e-13, atol=1e-13)


def test_annealed_em_is_tempered_em_then_plain_em():
    x = clusters()
    gmm0 = start()
    ramp = 4
    # betas 0.5, 0.625, 0.75, 0.875 are exact in binary, so the schedule rounds
    # the same inside and outside jit and the comparison can be exact
    schedule = optax.linear_schedule(0.5, 1.0, ramp)
    _, trace = gmmjax.fit_trace(
        gmmjax.Annealed(gmmjax.EM(), schedule), gmm0, x, num_steps=ramp + 5
    )
    path = jax.tree_util.tree_map(np.asarray, trace.gmm)
    # during the ramp: em_step at beta = schedule(t)
    gmm = gmm0
    for t in range(ramp):
        gmm = gmmjax.em_step(gmm, x, beta=0.5 + 0.125 * t)
        np.testing.assert_array_equal(path.means[t], gmm.means)
    # at beta = 1 the steps are plain EM's (15 steps, of which the first 5 are
    # compared: the plain trace of the test above, one program)
    end_of_ramp = jax.tree_util.tree_map(lambda a: a[ramp - 1], path)
    _, plain = gmmjax.fit_trace(gmmjax.EM(), end_of_ramp, x, num_steps=15)
    plain_means = np.asarray(plain.gmm.means)[:5]
    np.testing.assert_allclose(path.means[ramp:], plain_means, rtol=1e-12)
    np.testing.assert_allclose(
        np.asarray(trace.log_likelihood)[ramp:],
        np.asarray(plain.log_likelihood)[:5],
        rtol=1e-12,
    )


def test_convergence_is_tested_only_after_annealing():
    x = clusters()
    gmm0 = start()
    # tol so large that any two steps at beta = 1 count as converged
    plain = gmmjax.fit(gmmjax.EM(), gmm0, x, tol=1e9)
    assert int(plain.n_steps) == 2 and plain.status_name == "CONVERGED"
    ramp = 20
    fitter = gmmjax.Annealed(gmmjax.EM(), optax.linear_schedule(0.1, 1.0, ramp))
    result = gmmjax.fit(fitter, gmm0, x, tol=1e9)
    # steps 1..ramp run at beta < 1; steps ramp+1 and ramp+2 at beta = 1
    assert int(result.n_steps) == ramp + 2 and result.status_name == "CONVERGED"


def test_annealed_gradient_fitter_under_vmap():
    x = clusters()
    # random responsibilities (init_gmm's method="random", on the host): every
    # start has its means near the data mean
    rng = np.random.default_rng(7)
    gmm0s = stack([moments(rng.uniform(size=(60, 3)), "full") for _ in range(3)])
    fitter = gmmjax.Annealed(
        gmmjax.GradientFitter(optax.adam, learning_rate=0.05),
        optax.linear_schedule(0.3, 1.0, 50),
    )
    result = jax.vmap(lambda g: gmmjax.fit(fitter, g, x, max_steps=400))(gmm0s)
    ll0 = jax.vmap(lambda g: gmmjax.log_likelihood(g, x))(gmm0s)
    assert np.all(np.asarray(result.n_steps) > 50)
    assert np.all(np.asarray(result.log_likelihood) > np.asarray(ll0))


def test_bad_inputs_are_rejected():
    x = TWO_POINTS
    gmm0 = two_point(0.1, 1.0)
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="schedule"):
        gmmjax.fit(gmmjax.Annealed(gmmjax.EM(), 0.5), gmm0, x)
    with pytest.raises(TypeError, match="fitter"):
        gmmjax.fit(gmmjax.Annealed(object(), optax.constant_schedule(1.0)), gmm0, x)
    with pytest.raises(ValueError, match="reg_covar"):
        gmmjax.fit(
            gmmjax.Annealed(gmmjax.EM(reg_covar=-1.0), optax.constant_schedule(1.0)),
            gmm0,
            x,
        )
    cases = [
        (dict(variances=[1.0, 2.0]), ValueError, "non-increasing"),
        (dict(variances=[1.0, -1.0]), ValueError, "positive"),
        (dict(variances=[[1.0]]), ValueError, "1-D"),
        (dict(variances=[]), ValueError, "1-D"),
        (dict(variances="big"), TypeError, "variances"),
        (dict(variances=[1.0], perturbation=-1.0), ValueError, "perturbation"),
        (dict(variances=[1.0], max_steps_per_stage=0), ValueError, "per_stage"),
        (dict(variances=[1.0], max_steps_per_stage=1.5), TypeError, "per_stage"),
        (dict(variances=[1.0], tol=-1.0), ValueError, "tol"),
        (dict(variances=[1.0], reg_covar=-1.0), ValueError, "reg_covar"),
        (dict(variances=[1.0], max_steps=-1), ValueError, "max_steps"),
        (dict(variances=[1.0], release=1), TypeError, "release"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            gmmjax.anneal_variance(key, gmm0, x, **kwargs)
    with pytest.raises(ValueError, match="features"):
        gmmjax.anneal_variance(key, gmm0, jnp.ones((3, 2)), variances=[1.0])
