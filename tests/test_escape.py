"""escape_saddle: a planted saddle is left and the fit ends at scikit-learn's best
maximum; at a maximum nothing moves; jit and vmap agree with single calls.

The planted saddle: three clusters and a start whose first two components
coincide over the first two clusters. EM keeps coinciding components identical
(their updates are the same function of the same numbers), so it converges
inside that subspace, to a critical point that is a saddle of the full
likelihood.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import count_compilations
from sklearn.mixture import GaussianMixture

import gmmjax
from gmmjax._levels import quick_options

# unequal clusters under the merged pair: an uphill curvature at second order
SIZES = (40, 70, 40)
CENTERS = (-6.0, 0.0, 6.0)
TOL = 1e-10


def planted(dtype=np.float64):
    """``(x (150, 1), start)``: the data and the start with a merged pair."""
    rng = np.random.default_rng(18)
    x = np.concatenate(
        [rng.normal(c, 1.0, s) for c, s in zip(CENTERS, SIZES, strict=True)]
    )[:, None]
    pair = x[: SIZES[0] + SIZES[1]]
    m, v = float(pair.mean()), float(pair.var())
    start = gmmjax.GMM.from_natural(
        np.array([1 / 3, 1 / 3, 1 / 3], dtype),
        np.array([[m], [m], [CENTERS[2]]], dtype),
        np.array([[[v]], [[v]], [[1.0]]], dtype),
    )
    return x.astype(dtype), start


@pytest.fixture(scope="module")
def case():
    x, start = planted()
    saddle = gmmjax.fit(gmmjax.EM(), start, x, tol=TOL, max_steps=2000)
    out = gmmjax.escape_saddle(gmmjax.EM(), saddle, x, tol=TOL)
    return x, saddle, out


def sklearn_best(x):
    """The best of several scikit-learn fits, with EM's default reg_covar."""
    fits = [
        GaussianMixture(
            3, tol=1e-12, reg_covar=1e-6, max_iter=10_000, random_state=seed
        ).fit(x)
        for seed in range(5)
    ]
    return max(fit.score(x) for fit in fits) * len(x)


def test_planted_saddle_is_left_for_the_best_maximum(case):
    x, saddle, out = case
    means = np.asarray(saddle.gmm.means)[:, 0]
    assert saddle.status_name == "CONVERGED" and means[0] == means[1]
    assert gmmjax.diagnose(saddle, x).kind == "saddle"

    assert bool(out.escaped) and float(out.curvature) > 0
    assert 0 < float(out.step) <= 1 and float(out.gain) > 0
    assert out.fit.status_name == "CONVERGED"
    gained = float(out.fit.log_likelihood - saddle.log_likelihood)
    assert gained > 0.1 * len(x)  # the saddle is about 0.35 per sample lower
    assert gmmjax.diagnose(out.fit, x).kind == "maximum"
    assert sorted(np.asarray(out.fit.gmm.means)[:, 0]) == pytest.approx(
        CENTERS, abs=0.5
    )
    # both fits converged to TOL in mean log-likelihood: far below 1e-8 relative
    reference = sklearn_best(x)
    assert float(out.fit.log_likelihood) == pytest.approx(reference, rel=1e-8)


def test_at_a_maximum_nothing_moves_and_nothing_recompiles(case):
    x, _, escaped = case
    maximum = escaped.fit
    with count_compilations() as log:
        out = gmmjax.escape_saddle(
            gmmjax.EM(),
            maximum,
            x,
            tol=2 * TOL,
            curvature_tol=1e-5,
            key=jax.random.key(3),
        )
    assert log == []  # tol, curvature_tol and the key are traced
    assert not bool(out.escaped) and float(out.curvature) < 0
    assert float(out.step) == 0 and float(out.gain) == 0
    # the continuation is fit's from the given model
    plain = gmmjax.fit(gmmjax.EM(), maximum.gmm, x, tol=2 * TOL)
    assert int(out.fit.n_steps) == int(plain.n_steps)
    assert float(out.fit.log_likelihood) == pytest.approx(
        float(plain.log_likelihood), rel=1e-12
    )
    # EM creeps on by less than TOL per sample and step
    assert float(out.fit.log_likelihood) == pytest.approx(
        float(maximum.log_likelihood), rel=1e-10
    )


def test_jit_and_vmap_over_starts_equal_single_calls(case):
    x, saddle, escaped = case
    starts = jax.tree.map(lambda *a: jnp.stack(a), saddle, escaped.fit)

    def one(result):
        return gmmjax.escape_saddle(gmmjax.EM(), result, x, tol=TOL)

    # compiled as gmmjax compiles small problems (XLA's level 0): half the
    # default options' compilation time, the same results to rounding
    batch = jax.jit(jax.vmap(one), compiler_options=quick_options())
    out = batch(starts)
    single = [escaped, gmmjax.escape_saddle(gmmjax.EM(), escaped.fit, x, tol=TOL)]
    for i, one in enumerate(single):
        lane = jax.tree.map(lambda a, i=i: a[i], out)
        assert bool(lane.escaped) == bool(one.escaped)
        assert int(lane.fit.n_steps) == int(one.fit.n_steps)
        # separately compiled programs: equal to rounding, not bit for bit
        for a, b in zip(jax.tree.leaves(lane), jax.tree.leaves(one), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_float32(case):
    x64, saddle64, escaped = case
    x = x64.astype(np.float32)
    # the float64 saddle in float32: its merged pair stays merged
    saddle = jax.tree.map(lambda a: a.astype(np.float32), saddle64.gmm)
    out = gmmjax.escape_saddle(gmmjax.EM(), saddle, x)
    assert out.fit.log_likelihood.dtype == jnp.float32
    assert out.fit.gmm.dtype == jnp.float32 and out.curvature.dtype == jnp.float32
    assert bool(out.escaped) and out.fit.status_name == "CONVERGED"
    # float32 resolves the mean log-likelihood to about 1e-7 of it; tol 1e-6
    assert float(out.fit.log_likelihood) == pytest.approx(
        float(escaped.fit.log_likelihood), rel=1e-5
    )


def test_a_saddle_without_uphill_curvature_is_not_stepped(case):
    # the two-point model's symmetric point (test_information) in the planted
    # case's shapes: its Hessian is singular and the ascent shows only at
    # fourth order, which a line along an eigenvector does not follow
    x = np.repeat([[1.0], [-1.0]], 75, axis=0)
    gmm = gmmjax.GMM.from_natural(
        np.full(3, 1 / 3), np.zeros((3, 1)), np.ones((3, 1, 1))
    )
    out = gmmjax.escape_saddle(gmmjax.EM(), gmm, x)
    assert not bool(out.escaped) and float(out.step) == 0
    assert abs(float(out.curvature)) < 1e-12
    plain = gmmjax.fit(gmmjax.EM(), gmm, x)
    assert float(out.fit.log_likelihood) == pytest.approx(
        float(plain.log_likelihood), rel=1e-12
    )


@pytest.mark.parametrize(
    ("change", "error", "name"),
    [
        ({"fitter": object()}, TypeError, "fitter"),
        ({"result": "nope"}, TypeError, "result"),
        ({"x": np.zeros(150)}, ValueError, "x"),
        ({"x": np.zeros((150, 2))}, ValueError, "x"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"curvature_tol": -1.0}, ValueError, "curvature_tol"),
        ({"max_steps": -1}, ValueError, "max_steps"),
        ({"krylov_dim": 1}, ValueError, "krylov_dim"),
        ({"key": 0}, TypeError, "key"),
        ({"sample_weight": np.ones(3)}, ValueError, "sample_weight"),
    ],
)
def test_bad_input_names_the_argument(change, error, name):
    x, start = planted()
    args = {"fitter": gmmjax.EM(), "result": start, "x": x, **change}
    fitter, result, x = args.pop("fitter"), args.pop("result"), args.pop("x")
    with pytest.raises(error, match=name):
        gmmjax.escape_saddle(fitter, result, x, **args)
