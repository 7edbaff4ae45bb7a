"""Per-feature and scale-relative ``reg_covar`` (issue 23).

References: NumPy's variance, the M step without a floor plus the floor added by
hand, and scikit-learn's ``GaussianMixture`` on standardized data (where the
relative floor is its absolute ``reg_covar``); the log-likelihood of data whose
feature ``f`` is multiplied by ``c`` is the original's minus ``n log c``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import gmmjax
from gmmjax import cli
from gmmjax._selection import _scale_reg_covar
from gmmjax.sklearn import GaussianMixture

TYPES = ["full", "diag", "spherical", "tied"]


@pytest.fixture(scope="module")
def data():
    """Three clusters in 3 features of very different scales (1e-2 to 1e3)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3.0, size=(3, 3))
    x = np.concatenate([rng.normal(c, 1.0, size=(40, 3)) for c in centers])
    return x * np.array([1e-2, 1.0, 1e3])


def test_relative_reg_covar_is_a_fraction_of_each_features_variance(data):
    np.testing.assert_allclose(
        gmmjax.relative_reg_covar(data, 1e-3), 1e-3 * np.var(data, axis=0), rtol=1e-12
    )
    w = np.random.default_rng(1).integers(0, 4, len(data)).astype(float)
    repeated = np.repeat(data, w.astype(int), axis=0)
    np.testing.assert_allclose(
        gmmjax.relative_reg_covar(data, 0.5, sample_weight=w),
        0.5 * np.var(repeated, axis=0),
        rtol=1e-12,
    )
    # a constant feature takes the mean variance of the others
    constant = np.column_stack([data[:, :2], np.full(len(data), 7.0)])
    expected = np.var(data[:, :2], axis=0)
    np.testing.assert_allclose(
        gmmjax.relative_reg_covar(constant, 2.0),
        2.0 * np.r_[expected, expected.mean()],
        rtol=1e-12,
    )
    assert gmmjax.relative_reg_covar(data.astype(np.float32)).dtype == jnp.float32


@pytest.mark.parametrize("covariance_type", TYPES)
def test_m_step_adds_a_per_feature_floor(data, covariance_type):
    rng = np.random.default_rng(2)
    resp = rng.dirichlet(np.ones(3), size=len(data))
    r = np.array([1e-3, 0.5, 2e4])
    bare = gmmjax.m_step(data, resp, covariance_type=covariance_type, reg_covar=0.0)
    floored = gmmjax.m_step(data, resp, covariance_type=covariance_type, reg_covar=r)
    expected = np.asarray(bare.covariances)
    if covariance_type in ("full", "tied"):
        expected = expected + np.diag(r)
    elif covariance_type == "diag":
        expected = expected + r
    else:
        expected = expected + r.mean()
    np.testing.assert_allclose(floored.covariances, expected, rtol=1e-10)
    np.testing.assert_allclose(floored.means, bare.means, rtol=1e-12)
    # a vector of equal values is the scalar
    same = gmmjax.m_step(
        data, resp, covariance_type=covariance_type, reg_covar=np.full(3, 0.25)
    )
    scalar = gmmjax.m_step(data, resp, covariance_type=covariance_type, reg_covar=0.25)
    np.testing.assert_allclose(same.covariances, scalar.covariances, rtol=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied"])
def test_relative_floor_makes_the_fit_equivariant_under_units(data, covariance_type):
    # one feature measured in units 1000 times smaller: the same fit, in the new
    # units, from the same (k-means++ in standard units) start
    c = np.array([1e3, 1.0, 1.0])
    fits = []
    for x in (data, data * c):
        gmm0 = gmmjax.init_gmm(
            jax.random.key(0),
            x,
            n_components=3,
            covariance_type=covariance_type,
            reg_covar=gmmjax.relative_reg_covar(x, 1e-2),
        )
        em = gmmjax.EM(reg_covar=gmmjax.relative_reg_covar(x, 1e-2))
        fits.append(gmmjax.fit(em, gmm0, x, max_steps=50, tol=0.0))
    n = len(data)
    np.testing.assert_allclose(
        fits[1].log_likelihood + n * np.log(1e3), fits[0].log_likelihood, rtol=1e-9
    )
    np.testing.assert_allclose(fits[1].gmm.means / c, fits[0].gmm.means, rtol=1e-7)
    # the absolute floor is not: 1e-2 is most of the first feature's variance
    absolute = []
    for x in (data, data * c):
        gmm0 = gmmjax.init_gmm(
            jax.random.key(0), x, n_components=3, covariance_type=covariance_type
        )
        em = gmmjax.EM(reg_covar=1e-2)
        absolute.append(gmmjax.fit(em, gmm0, x, max_steps=50, tol=0.0).log_likelihood)
    gap = absolute[1] + n * np.log(1e3) - absolute[0]
    assert abs(float(gap)) > 1.0


def _start(x, covariance_type):
    """Weights, means and covariances of a rough start on ``x``: the clusters
    of the fixture's construction."""
    labels = np.repeat(np.arange(3), 40)
    means = np.stack([x[labels == j].mean(0) for j in range(3)])
    if covariance_type == "full":
        cov = np.stack([np.cov(x[labels == j].T) for j in range(3)])
    else:
        cov = np.stack([x[labels == j].var(0) for j in range(3)])
    return np.full(3, 1 / 3), means, cov


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_relative_floor_is_sklearns_floor_on_standardized_data(data, covariance_type):
    # from the same start, 10 EM steps on the raw data with the relative floor
    # against scikit-learn's 10 on the standardized data with reg_covar=fraction
    fraction = 0.2
    sd = data.std(axis=0)
    z = data / sd
    weights, means, cov = _start(data, covariance_type)
    scale = np.outer(sd, sd) if covariance_type == "full" else sd**2
    theirs = SkGaussianMixture(
        3,
        covariance_type=covariance_type,
        reg_covar=fraction,
        weights_init=weights,
        means_init=means / sd,
        precisions_init=np.linalg.inv(cov / scale)
        if covariance_type == "full"
        else scale / cov,
        max_iter=10,
        tol=0.0,
    ).fit(z)
    gmm0 = gmmjax.GMM.from_natural(weights, means, cov, covariance_type=covariance_type)
    em = gmmjax.EM(reg_covar=gmmjax.relative_reg_covar(data, fraction))
    ours = gmmjax.fit(em, gmm0, data, max_steps=10, tol=0.0).gmm
    np.testing.assert_allclose(ours.means / sd, theirs.means_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        ours.covariances / scale, theirs.covariances_, rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(
        float(gmmjax.log_likelihood(ours, data)) / len(data) + np.sum(np.log(sd)),
        theirs.score(z),
        rtol=1e-10,
    )


def test_per_feature_floor_is_traced_jittable_and_vmappable(data):
    gmm0 = gmmjax.init_gmm(jax.random.key(0), data, n_components=3)
    floors = jnp.stack([gmmjax.relative_reg_covar(data, f) for f in (1e-3, 1e-1)])
    steps = jax.vmap(lambda r: gmmjax.em_step(gmm0, data, reg_covar=r))(floors)
    for r, batched in zip(floors, steps.covariances, strict=True):
        one = gmmjax.em_step(gmm0, data, reg_covar=r)
        np.testing.assert_allclose(batched, one.covariances, rtol=1e-10)

    @jax.jit
    def fitted(r):
        return gmmjax.fit(gmmjax.EM(reg_covar=r), gmm0, data, max_steps=5).gmm

    fitted(floors[0])
    fitted(floors[1])
    assert fitted._cache_size() == 1  # a new floor does not recompile


@pytest.mark.parametrize(
    "value, message",
    [
        (-1.0, "reg_covar must be a finite number >= 0"),
        (np.array([1e-6, np.nan, 1e-6]), "reg_covar must hold finite numbers >= 0"),
        (np.ones((3, 3)), "reg_covar must be a number or a 1-D array"),
        (np.ones(2), "reg_covar has 2 values but the data have 3 features"),
    ],
)
def test_bad_floors_are_refused_with_the_argument_named(data, value, message):
    gmm0 = gmmjax.init_gmm(jax.random.key(0), data, n_components=2)
    with pytest.raises(ValueError, match=message):
        gmmjax.fit(gmmjax.EM(reg_covar=value), gmm0, data)
    with pytest.raises(ValueError, match=message):
        gmmjax.init_gmm(jax.random.key(0), data, n_components=2, reg_covar=value)
    with pytest.raises(ValueError, match=message):
        gmmjax.em_step(gmm0, data, reg_covar=value)
    with pytest.raises(ValueError, match=message):
        gmmjax.select(jax.random.key(0), data, n_components=1, reg_covar=value)
    inner = gmmjax.Annealed(gmmjax.EM(reg_covar=value), lambda t: 1.0)
    with pytest.raises(ValueError, match=message):
        gmmjax.fit(inner, gmm0, data)
    with pytest.raises(ValueError, match=message):
        gmmjax.multistart(inner, jax.random.key(0), data, n_components=2, n_init=2)


def test_bad_fraction_and_reg_scale_are_refused(data):
    with pytest.raises(ValueError, match="fraction must be a finite number >= 0"):
        gmmjax.relative_reg_covar(data, -1.0)
    with pytest.raises(TypeError, match="reg_covar must be a number or an array"):
        gmmjax.EM(reg_covar="relative").check()
    with pytest.raises(ValueError, match="reg_scale must be one of"):
        gmmjax.select(jax.random.key(0), data, n_components=1, reg_scale="standard")
    with pytest.raises(ValueError, match="reg_scale must be 'absolute' or 'relative'"):
        GaussianMixture(reg_scale="both").fit(data)


def test_select_reads_reg_covar_relative_to_each_feature_by_default(data):
    options = dict(n_components=[1, 2], covariance_types=["diag"], n_init=2)
    key = jax.random.key(0)
    relative = gmmjax.select(key, data, reg_covar=1e-2, **options)
    floor = gmmjax.relative_reg_covar(data, 1e-2)
    by_hand = gmmjax.select(
        key,
        data,
        reg_covar=floor,
        fitter=gmmjax.EM(reg_covar=floor),
        reg_scale="absolute",
        **options,
    )
    np.testing.assert_allclose(relative.log_likelihood, by_hand.log_likelihood)
    # a fitter's floor is scaled too, also inside Annealed; other fitters have none
    em = gmmjax.EM(reg_covar=1e-2, max_reseeds=1)
    scale = jnp.asarray(data.var(axis=0))
    for fitter in (em, gmmjax.Annealed(em, lambda t: 1.0)):
        scaled = _scale_reg_covar(fitter, scale)
        inner = scaled.inner if isinstance(scaled, gmmjax.Annealed) else scaled
        np.testing.assert_allclose(inner.reg_covar, 1e-2 * data.var(axis=0))
        assert inner.max_reseeds == 1
    adam = gmmjax.GradientFitter(optax.adam, learning_rate=0.1)
    assert _scale_reg_covar(adam, scale) is adam


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimator_relative_floor_matches_sklearn_on_standardized_data(data):
    sd = data.std(axis=0)
    weights, means, cov = _start(data, "full")
    common = dict(reg_covar=0.2, weights_init=weights, max_iter=10, tol=0)
    ours = GaussianMixture(
        3,
        reg_scale="relative",
        means_init=means,
        precisions_init=np.linalg.inv(cov),
        **common,
    ).fit(data)
    theirs = SkGaussianMixture(
        3,
        means_init=means / sd,
        precisions_init=np.linalg.inv(cov / np.outer(sd, sd)),
        **common,
    ).fit(data / sd)
    np.testing.assert_allclose(ours.reg_covar_, 0.2 * sd**2, rtol=1e-12)
    np.testing.assert_allclose(ours.means_ / sd, theirs.means_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        ours.score(data) + np.sum(np.log(sd)), theirs.score(data / sd), rtol=1e-10
    )
    assert GaussianMixture().fit(data).reg_covar_ == 1e-6  # scikit-learn's default


def test_cli_says_how_reg_covar_was_read(capsys, tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, np.random.default_rng(3).normal(size=(60, 2)) * [1e-3, 1e3])
    common = ["-k", "1", "--json", "--no-diagnosis", "--reg-covar", "0.5"]
    lls = {}
    for scale in ("relative", "absolute"):
        assert cli.main(["fit", str(path), *common, "--reg-scale", scale]) == 0
        report = __import__("json").loads(capsys.readouterr().out)
        assert report["reg_scale"] == scale and report["reg_covar"] == 0.5
        lls[scale] = report["log_likelihood"]
    x = np.load(path)
    var = x.var(axis=0)
    n = len(x)
    # one Gaussian: the sample covariance plus the floor, closed form
    cov = np.cov(x.T, bias=True)
    for scale, floor in (("relative", 0.5 * var), ("absolute", np.full(2, 0.5))):
        sigma = cov + np.diag(floor)
        _, logdet = np.linalg.slogdet(sigma)
        quad = np.trace(np.linalg.solve(sigma, cov))
        expected = -0.5 * n * (2 * np.log(2 * np.pi) + logdet + quad)
        np.testing.assert_allclose(lls[scale], expected, rtol=1e-9)
    assert cli.main(["fit", str(path), "-k", "1", "--no-diagnosis"]) == 0
    assert "reg_covar: 1e-06 x each feature's variance" in capsys.readouterr().out
