"""Observed information, standard errors and diagnosis against independent references:
finite differences of a scipy log-likelihood, textbook formulas for one Gaussian,
Wald coverage on simulated data, and the saddle of the two-point study."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    COVARIANCE_TYPES,
    count_compilations,
    expected_complete_information,
    kmeans_start,
    random_natural,
)
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture

import gmmjax
from gmmjax import _landscape, landscape
from gmmjax._information import from_natural_vector, natural_vector


def params_from_labels(labels, values, k, d, covariance_type):
    """Rebuild (weights, means, full covariances) by parsing the labels only."""
    weights = np.zeros(k)
    means = np.zeros((k, d))
    cov = np.zeros((k, d, d))
    for label, v in zip(labels, values, strict=True):
        name, idx = re.fullmatch(r"(\w+)\[([\d,]+)\]", label).groups()
        idx = tuple(int(i) for i in idx.split(","))
        if name == "weights":
            weights[idx] = v
        elif name == "means":
            means[idx] = v
        elif covariance_type == "full":
            cov[idx[0], idx[1], idx[2]] = cov[idx[0], idx[2], idx[1]] = v
        elif covariance_type == "tied":
            cov[:, idx[0], idx[1]] = cov[:, idx[1], idx[0]] = v
        elif covariance_type == "diag":
            cov[idx[0], idx[1], idx[1]] = v
        else:
            cov[idx[0]] = v * np.eye(d)
    weights[-1] = 1.0 - weights[:-1].sum()
    return weights, means, cov


def scipy_log_likelihood(weights, means, cov, x):
    comp = np.stack(
        [multivariate_normal(means[j], cov[j]).logpdf(x) for j in range(len(weights))],
        axis=1,
    )
    return float(np.sum(logsumexp(comp + np.log(weights), axis=1)))


def expected_labels(k, d, covariance_type):
    labels = [f"weights[{j}]" for j in range(k - 1)]
    labels += [f"means[{j},{a}]" for j in range(k) for a in range(d)]
    if covariance_type == "full":
        labels += [
            f"covariances[{j},{a},{b}]"
            for j in range(k)
            for a in range(d)
            for b in range(a, d)
        ]
    elif covariance_type == "tied":
        labels += [f"covariances[{a},{b}]" for a in range(d) for b in range(a, d)]
    elif covariance_type == "diag":
        labels += [f"covariances[{j},{a}]" for j in range(k) for a in range(d)]
    else:
        labels += [f"covariances[{j}]" for j in range(k)]
    return tuple(labels)


def faithful_kmeans_start(k):
    """Old Faithful and a start for EM from scikit-learn's k-means clusters (built
    on the host: the start is not under test, and init_gmm compiles a program)."""
    x = gmmjax.datasets.faithful()
    return x, kmeans_start(x, k, "full", reg_covar=0.0)


# The information programs are keyed by (k, d, n, covariance type): the tests
# below share this test's shapes where theirs were arbitrary
K, D, N = 2, 2, 25


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_information_matches_finite_differences_of_scipy(rng, covariance_type):
    k, d, n = K, D, N
    weights, means, cov = random_natural(rng, k, d, covariance_type)
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type=covariance_type)
    x = rng.normal(scale=2.0, size=(n, d))
    info = gmmjax.observed_information(gmm, x)
    assert info.labels == expected_labels(k, d, covariance_type)
    p = len(info.labels)
    assert info.matrix.shape == (p, p)

    def f(theta):
        w, m, c = params_from_labels(info.labels, theta, k, d, covariance_type)
        return scipy_log_likelihood(w, m, c, x)

    theta0 = np.asarray(info.values)
    assert f(theta0) == pytest.approx(float(gmmjax.log_likelihood(gmm, x)), rel=1e-12)
    # central second differences with h = 1e-4 (relative): truncation
    # O(h^2 |D^4 f|) ~ 1e-8 |D^4 f| and rounding O(eps |f| / h^2) ~ 2e-6 for
    # |f| ~ 1e2, both far below the tolerance of 1e-4 max|H|
    h = 1e-4 * np.maximum(1.0, np.abs(theta0))
    eye = np.eye(p)
    fd = np.empty((p, p))
    for i in range(p):
        for j in range(i, p):
            ei, ej = eye[i] * h[i], eye[j] * h[j]
            fd[i, j] = fd[j, i] = (
                f(theta0 + ei + ej)
                - f(theta0 + ei - ej)
                - f(theta0 - ei + ej)
                + f(theta0 - ei - ej)
            ) / (4 * h[i] * h[j])
    scale = np.abs(fd).max()
    np.testing.assert_allclose(-np.asarray(info.matrix), fd, atol=1e-4 * scale)


def test_information_matches_central_differences_of_exact_gradient(rng):
    # the shapes of three components on Old Faithful (272 x 2), whose
    # information program the tests below compile
    k, d = 3, 2
    weights, means, cov = random_natural(rng, k, d, "full")
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type="full")
    x = rng.normal(scale=2.0, size=(272, d))
    info = gmmjax.observed_information(gmm, x)

    @jax.jit  # one program for every evaluation, not one per operation
    def mean_gradient(w, m, c):
        def model(mm):
            return gmmjax.log_likelihood(
                gmmjax.GMM.from_natural(w, mm, c, covariance_type="full"), x
            )

        return jax.grad(model)(m)

    def grad(theta):
        w, m, c = params_from_labels(info.labels, theta, k, d, "full")
        return np.asarray(mean_gradient(w, m, c)).reshape(-1)

    # the mean rows of the Hessian by central differences of the exact gradient in
    # the means (error O(h^2) ~ 1e-8 relative)
    theta0 = np.asarray(info.values)
    start = k - 1
    h = 1e-4
    for i in range(start, start + k * d):
        e = np.zeros_like(theta0)
        e[i] = h
        row = (grad(theta0 + e) - grad(theta0 - e)) / (2 * h)
        np.testing.assert_allclose(
            -np.asarray(info.matrix)[i, start : start + k * d],
            row,
            rtol=1e-6,
            atol=1e-8,
        )


def test_one_gaussian_textbook_standard_errors(rng):
    n = 400
    x = rng.multivariate_normal([1.0, -2.0], [[2.0, 0.6], [0.6, 1.0]], size=n)
    mean = x.mean(axis=0)
    sigma = (x - mean).T @ (x - mean) / n  # the MLE (biased) covariance
    gmm = gmmjax.GMM.from_natural([1.0], mean[None], sigma[None])
    info = gmmjax.observed_information(gmm, x)
    assert info.labels == (
        "means[0,0]",
        "means[0,1]",
        "covariances[0,0,0]",
        "covariances[0,0,1]",
        "covariances[0,1,1]",
    )
    mat = np.asarray(info.matrix)
    # at the MLE the mean block is n Sigma^{-1} and means and covariances decouple
    np.testing.assert_allclose(mat[:2, :2], n * np.linalg.inv(sigma), rtol=1e-10)
    np.testing.assert_allclose(mat[:2, 2:], 0.0, atol=1e-8)
    errors = np.asarray(gmmjax.standard_errors(gmm, x).errors)
    np.testing.assert_allclose(errors[:2], np.sqrt(np.diag(sigma) / n), rtol=1e-10)
    # asymptotic covariance of the MLE of (S_aa, S_ab, S_bb): Var S_ab =
    # (S_aa S_bb + S_ab^2) / n, Var S_aa = 2 S_aa^2 / n
    s = sigma
    expected = np.sqrt(
        np.array([2 * s[0, 0] ** 2, s[0, 0] * s[1, 1] + s[0, 1] ** 2, 2 * s[1, 1] ** 2])
        / n
    )
    np.testing.assert_allclose(errors[2:], expected, rtol=1e-10)


def test_one_dimensional_variance_standard_error(rng):
    n = 150
    x = rng.normal(3.0, 2.0, size=(n, 1))
    var = float(x.var())
    gmm = gmmjax.GMM.from_natural(
        [1.0], [[x.mean()]], [var], covariance_type="spherical"
    )
    se = gmmjax.standard_errors(gmm, x)
    assert se.labels == ("means[0,0]", "covariances[0]")
    errors = np.asarray(se.errors)
    assert errors[0] == pytest.approx(np.sqrt(var / n), rel=1e-10)
    assert errors[1] == pytest.approx(np.sqrt(2 * var**2 / n), rel=1e-10)
    assert "covariances[0]" in str(se)


def test_sample_weight_counts_repeated_rows(rng):
    weights, means, cov = random_natural(rng, K, D, "diag")
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type="diag")
    x = rng.normal(size=(10, D))
    # repeated, the rows are N: the shapes of the tests above
    counts = np.array([1.0, 2.0, 0.0, 3.0, 1.0, 2.0, 4.0, 5.0, 3.0, 4.0])
    assert counts.sum() == N
    weighted = gmmjax.observed_information(gmm, x, sample_weight=counts)
    repeated = gmmjax.observed_information(gmm, np.repeat(x, counts.astype(int), 0))
    np.testing.assert_allclose(weighted.matrix, repeated.matrix, rtol=1e-10)


def test_chunked_information_agrees(rng):
    weights, means, cov = random_natural(rng, K, D, "tied")
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type="tied")
    x = rng.normal(size=(N, D))
    full = gmmjax.observed_information(gmm, x).matrix
    chunked = gmmjax.observed_information(gmm, x, chunk_size=3).matrix
    np.testing.assert_allclose(chunked, full, rtol=1e-12, atol=1e-12)


def newton_polish(theta, like, x, n_steps):
    """Newton-Raphson on the natural vector from a nearby fit (vmappable)."""

    def f(t):
        return gmmjax.log_likelihood(from_natural_vector(t, like), x)

    def step(t, _):
        return t - jnp.linalg.solve(jax.hessian(f)(t), jax.grad(f)(t)), None

    return jax.lax.scan(step, theta, None, length=n_steps)[0]


def test_wald_interval_coverage():
    # 200 simulated data sets from a well-separated two-component mixture, fitted by
    # scikit-learn's EM from the truth and polished by Newton; the information is
    # computed for all replications at once with vmap (jitted: one program, not
    # one per operation)
    truth = gmmjax.GMM.from_natural(
        [0.4, 0.6], [[-2.0], [2.0]], [1.0, 0.7], covariance_type="spherical"
    )
    reps, n = 200, 300
    keys = jax.random.split(jax.random.key(7), reps)
    xs = np.asarray(
        jax.jit(jax.vmap(lambda key: gmmjax.sample(key, truth, n)[0]))(keys)
    )
    starts = []
    for x in xs:
        sk = GaussianMixture(
            2,
            covariance_type="spherical",
            tol=1e-8,
            max_iter=500,
            reg_covar=0.0,
            weights_init=[0.4, 0.6],
            means_init=[[-2.0], [2.0]],
            precisions_init=[1.0, 1 / 0.7],
        ).fit(x)
        starts.append(
            np.concatenate([sk.weights_[:1], sk.means_.ravel(), sk.covariances_])
        )

    @jax.jit
    def polish(starts, xs):
        thetas = jax.vmap(lambda t, x: newton_polish(t, truth, x, 3))(starts, xs)
        fits = jax.vmap(lambda t: from_natural_vector(t, truth))(thetas)
        grads = jax.vmap(
            lambda t, x: jax.grad(
                lambda s: gmmjax.log_likelihood(from_natural_vector(s, truth), x)
            )(t)
        )(thetas, xs)
        infos = jax.vmap(lambda g, x: gmmjax.observed_information(g, x).matrix)(
            fits, xs
        )
        return thetas, fits, grads, infos, natural_vector(truth)

    thetas, fits, grads, infos, true_theta = jax.device_get(
        polish(np.stack(starts), xs)
    )
    assert np.max(np.abs(grads)) < 1e-8  # every replication converged
    errors = np.sqrt(np.diagonal(np.linalg.inv(infos), axis1=1, axis2=2))
    # one eager call agrees with the vmapped information
    one = gmmjax.standard_errors(
        jax.tree_util.tree_map(lambda leaf: leaf[0], fits), xs[0]
    )
    np.testing.assert_allclose(one.errors, errors[0], rtol=1e-10)
    covered = np.abs(thetas - true_theta) <= 1.959964 * errors
    rate = covered.mean(axis=0)
    # binomial(200, 0.95): sd = sqrt(0.95 * 0.05 / 200) = 0.0154; allow 4 sd per
    # parameter (5 parameters) and 3 sd for the pooled rate (its intervals are
    # correlated, so its sd lies between 0.0069 and 0.0154)
    assert np.all(np.abs(rate - 0.95) <= 4 * 0.0154), rate
    assert abs(covered.mean() - 0.95) <= 3 * 0.0154, covered.mean()


def two_point_em(mu, s, n_steps):
    """The closed-form EM update of the symmetric two-point model (seed study)."""
    for _ in range(n_steps):
        a = np.exp(-((1 - mu) ** 2) / (2 * s * s))
        b = np.exp(-((1 + mu) ** 2) / (2 * s * s))
        p = a / (a + b)
        mu = 2 * p - 1
        s = np.sqrt(p * (1 - mu) ** 2 + (1 - p) * (1 + mu) ** 2)
    return mu, s


X_TWO = np.array([[1.0], [-1.0]])


def test_em_stopped_near_the_study_saddle_is_a_saddle():
    mu, s = two_point_em(0.02, 0.8, 50)
    assert 0.0 < mu < 0.05 and abs(s - 1.0) < 1e-3  # still near the saddle
    gmm = gmmjax.GMM.from_natural(
        [0.5, 0.5], [[mu], [-mu]], [s * s, s * s], covariance_type="spherical"
    )
    diag = gmmjax.diagnose(gmm, X_TWO)
    assert diag.kind == "saddle"
    # the escape direction separates the two means (the study's mu axis)
    d = dict(zip(diag.labels, np.asarray(diag.escape_direction), strict=True))
    assert abs(d["means[0,0]"]) > 0.7 and d["means[0,0]"] == pytest.approx(
        -d["means[1,0]"], abs=1e-6
    )
    assert "saddle" in str(diag)
    with pytest.raises(ValueError, match="not positive definite"):
        gmmjax.standard_errors(gmm, X_TWO)


def test_exact_study_saddle_in_the_general_mixture():
    gmm = gmmjax.GMM.from_natural(
        [0.5, 0.5], [[0.0], [0.0]], [1.0, 1.0], covariance_type="spherical"
    )
    diag = gmmjax.diagnose(gmm, X_TWO)
    # coinciding components: the weight and the mean difference are null directions,
    # the fourth-order test finds the ascent
    assert diag.kind == "saddle" and diag.escape_order == 4
    d = dict(zip(diag.labels, np.asarray(diag.escape_direction), strict=True))
    assert d["means[0,0]"] == pytest.approx(1 / np.sqrt(2), abs=1e-8)
    assert d["means[1,0]"] == pytest.approx(-1 / np.sqrt(2), abs=1e-8)


def test_second_diagnosis_compiles_nothing_and_a_maximum_no_higher_order(
    monkeypatch,
):
    # STYLE rule 15 (issue 21): one program per covariance type, shapes and dtype
    # serves every diagnosis, and the third- and fourth-order program is for
    # singular Hessians only
    def refuse(*args):
        raise AssertionError("a nonsingular maximum ran the higher-order program")

    monkeypatch.setattr(_landscape, "reduced_batch", refuse)
    one, wide = (
        gmmjax.GMM.from_natural([1.0], [[0.0]], [v], covariance_type="spherical")
        for v in (1.0, 4.0)
    )
    assert gmmjax.diagnose(one, X_TWO).kind == "maximum"
    wider_data = 2.0 * X_TWO  # whose maximum is `wide`
    with count_compilations() as log:
        diag = gmmjax.diagnose(wide, wider_data)
        text = str(diag)
    assert diag.kind == "maximum" and "maximum" in text
    assert log == []


def test_bad_inputs():
    gmm = gmmjax.GMM.from_natural([1.0], [[0.0]], [1.0], covariance_type="spherical")
    with pytest.raises(TypeError, match="result"):
        gmmjax.diagnose("nope", [[0.0]])
    with pytest.raises(ValueError, match="x"):
        gmmjax.observed_information(gmm, np.zeros(3))
    with pytest.raises(ValueError, match="sample_weight"):
        gmmjax.observed_information(gmm, [[0.0], [1.0]], sample_weight=[1.0])
    assert landscape.classify(lambda t: -jnp.sum(t**2), jnp.zeros(2)).kind == "maximum"


def data_scale(labels, s, covariance_type):
    """The data's scale of every labelled natural parameter, by parsing the labels:
    1, ``s_a``, ``s_a s_b`` (the mean of ``s^2`` for a spherical variance)."""
    out = []
    for label in labels:
        name, idx = re.fullmatch(r"(\w+)\[([\d,]+)\]", label).groups()
        idx = [int(i) for i in idx.split(",")]
        if name == "weights":
            out.append(1.0)
        elif name == "means":
            out.append(s[idx[1]])
        elif covariance_type == "spherical":
            out.append(np.mean(s**2))
        elif covariance_type == "diag":
            out.append(s[idx[1]] ** 2)
        else:
            out.append(s[idx[-2]] * s[idx[-1]])
    return np.array(out)


def test_em_fit_of_old_faithful_is_a_local_maximum():
    x, gmm0 = faithful_kmeans_start(2)
    # default settings: EM stops on a change of mean log-likelihood below 1e-6 with
    # reg_covar = 1e-6, so the gradient is not zero; the predicted Newton gain is
    # what diagnose bounds
    result = gmmjax.fit(gmmjax.EM(), gmm0, x)
    assert result.status_name == "CONVERGED"
    diag = gmmjax.diagnose(result, x)
    assert diag.kind == "maximum", str(diag)
    assert diag.advice == "" and "uphill" in diag.message
    assert float(diag.gradient_norm) > 1e-5
    assert float(diag.predicted_gain) < 1e-6
    assert diag.escape_direction is None
    assert float(diag.log_likelihood) == pytest.approx(
        float(result.log_likelihood), rel=1e-12
    )
    se = gmmjax.standard_errors(result.gmm, x)
    assert np.all(np.isfinite(se.errors)) and np.all(se.errors > 0)
    # two EM steps from the start are far from converged
    early = gmmjax.fit(gmmjax.EM(), gmm0, x, max_steps=2, tol=0.0)
    diag = gmmjax.diagnose(early, x)
    assert diag.kind == "not_critical" and diag.escape_order == 1
    assert "fit on" in diag.advice and "Newton step" in diag.message
    g = jax.jit(
        lambda like: jax.grad(
            lambda t: gmmjax.log_likelihood(from_natural_vector(t, like), x)
        )(natural_vector(like))
    )(early.gmm)
    # steepest ascent in whitened coordinates (theta = theta_0 + T v with T T^T
    # the inverse of the complete-data information per sample, here in closed
    # form): the gradient of the mean log-likelihood in v is T^T g / n, its
    # norm sqrt(g^T I_c^-1 g) / n, and the step T T^T g / n mapped back is
    # I_c^-1 g / n
    inverse = np.linalg.inv(expected_complete_information(early.gmm))
    mean_gradient = np.asarray(g) / len(x)
    np.testing.assert_allclose(
        diag.gradient_norm, np.sqrt(mean_gradient @ inverse @ mean_gradient)
    )
    ascent = inverse @ mean_gradient
    np.testing.assert_allclose(
        diag.escape_direction, ascent / np.linalg.norm(ascent), rtol=1e-8, atol=1e-12
    )


def test_em_stopped_early_near_the_study_saddle():
    gmm0 = gmmjax.GMM.from_natural(
        [0.5, 0.5], [[0.02], [-0.02]], [0.64, 0.64], covariance_type="spherical"
    )
    result = gmmjax.fit(gmmjax.EM(reg_covar=0.0), gmm0, X_TWO, max_steps=50, tol=0.0)
    assert int(result.n_steps) == 50
    # the library's EM follows the closed-form update of the study
    mu, s = two_point_em(0.02, 0.8, 50)
    np.testing.assert_allclose(result.gmm.means.ravel(), [mu, -mu], rtol=1e-8)
    np.testing.assert_allclose(result.gmm.covariances, [s * s, s * s], rtol=1e-8)
    diag = gmmjax.diagnose(result, X_TWO)
    assert diag.kind == "saddle"
    d = dict(zip(diag.labels, np.asarray(diag.escape_direction), strict=True))
    assert abs(d["means[0,0]"]) > 0.7
    assert d["means[0,0]"] == pytest.approx(-d["means[1,0]"], abs=1e-6)


def test_logit_gauge_is_flat_in_the_leaves_and_absent_in_natural_coordinates(rng):
    k, d = K, D
    weights, means, cov = random_natural(rng, k, d, "diag")
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type="diag")
    x = rng.normal(scale=2.0, size=(N, d))
    # the Hessian in the model's own leaves (a GMM pytree) has the logit shift as
    # an exact null vector
    h = np.asarray(landscape.hessian(lambda g: gmmjax.log_likelihood(g, x), gmm))
    shift = gmmjax.GMM(jnp.ones(k), jnp.zeros((k, d)), jnp.zeros((k, d)), None, "diag")
    gauge = np.asarray(jax.flatten_util.ravel_pytree(shift)[0])
    np.testing.assert_allclose(h @ gauge, 0.0, atol=1e-10 * np.abs(h).max())
    # the natural vector drops it: one parameter fewer and no null direction
    info = gmmjax.observed_information(gmm, x)
    assert info.matrix.shape[0] == h.shape[0] - 1
    eig = np.abs(np.linalg.eigvalsh(np.asarray(info.matrix)))
    assert eig.min() > 1e-6 * eig.max()


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_diagnosis_does_not_depend_on_units_or_sample_size(rng, covariance_type):
    # the diagnosis is taken in standardized units of the mean log-likelihood: new
    # units for a feature, or every row counted three times, change none of its
    # numbers
    k, d = 2, 2
    weights, means, cov = random_natural(rng, k, d, covariance_type)
    x = rng.normal(size=(40, d)) + means[rng.integers(k, size=40)]
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type=covariance_type)
    unit = np.array([1.0, 60.0])
    if covariance_type == "spherical":
        unit = np.array([60.0, 60.0])  # one variance for both features
    cov_units = {
        "full": cov * np.outer(unit, unit),
        "tied": cov * np.outer(unit, unit),
        "diag": cov * unit**2,
        "spherical": cov * unit[0] ** 2,
    }[covariance_type]
    rescaled = gmmjax.GMM.from_natural(
        weights, means * unit, cov_units, covariance_type=covariance_type
    )
    base = gmmjax.diagnose(gmm, x)
    assert base.kind == "not_critical"  # a random point
    moved = gmmjax.diagnose(rescaled, x * unit)
    # weights of 3 count every row three times
    tripled = gmmjax.diagnose(gmm, x, sample_weight=np.full(len(x), 3.0))
    for other in (moved, tripled):
        assert other.kind == base.kind
        for name in ("predicted_gain", "gradient_norm", "eigenvalues"):
            np.testing.assert_allclose(
                getattr(other, name), getattr(base, name), rtol=1e-7, atol=1e-12
            )
    # the ascent direction, in natural units, follows the units
    c = data_scale(base.labels, unit, covariance_type)
    expected = c * base.escape_direction
    np.testing.assert_allclose(
        moved.escape_direction, expected / np.linalg.norm(expected), rtol=1e-7
    )


def three_full_components_on_faithful(tol):
    x, gmm0 = faithful_kmeans_start(3)
    return x, gmmjax.fit(gmmjax.EM(), gmm0, x, max_steps=2000, tol=tol)


def test_three_components_on_faithful_are_a_maximum_not_a_flat_point():
    # issue 22: the Hessian of the total log-likelihood in the raw natural vector
    # spans eight decades (the features have variances 1.3 and 185), so a null test
    # relative to its largest eigenvalue called real curvature flat
    x, result = three_full_components_on_faithful(1e-9)
    assert result.status_name == "CONVERGED"
    info = gmmjax.observed_information(result.gmm, x)
    raw = np.linalg.eigvalsh(np.asarray(-info.matrix))
    assert np.all(raw < 0) and raw.min() / raw.max() > 1e7
    diag = gmmjax.diagnose(result, x)
    assert diag.kind == "maximum", str(diag)
    eigenvalues = np.asarray(diag.eigenvalues)
    assert np.all(eigenvalues < 0) and eigenvalues.min() / eigenvalues.max() < 1e5


def test_predicted_gain_is_the_gain_left_after_a_converged_fit():
    # EM stops when a step gains less than tol per sample; on a flat ridge the gain
    # left is larger, and the diagnosis predicts it and says to fit on
    x, result = three_full_components_on_faithful(1e-6)
    assert result.status_name == "CONVERGED"
    diag = gmmjax.diagnose(result, x)
    on = gmmjax.fit(gmmjax.EM(), result.gmm, x, max_steps=2000, tol=1e-12)
    gained = (float(on.log_likelihood) - float(result.log_likelihood)) / len(x)
    assert float(diag.predicted_gain) == pytest.approx(gained, rel=0.1)
    if gained > 1e-6:
        assert diag.kind == "not_critical", str(diag)
        assert "fit on" in diag.advice and "smaller tolerance" in diag.advice
        assert f"{float(diag.predicted_gain):.2g}" in diag.message
    assert gmmjax.diagnose(on, x).kind == "maximum"
