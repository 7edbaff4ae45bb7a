"""float32 against float64 on the same data: the mean log-likelihood of the fits
agrees to 1e-4 relative, and degenerate fixtures end finite with the same honest
status.

Both fits start from the same model (a k-means start built on the host in
float64, then cast) on the same numbers (the data rounded to float32 once, then
used in both precisions), so the difference measures the arithmetic alone. The
bound 1e-4 is the issue's; the measured differences are about 1e-6 or smaller on
these fixtures. A float32 run resolves the mean log-likelihood ``l`` only to
about ``eps |l|``, so with a ``tol`` below that it may end ``MAX_STEPS`` where
float64 converges: the statuses are compared only for the degenerate fixtures.
Fixtures of one shape are fitted together under ``vmap`` (one compiled fit per
dtype and covariance type); a single fixture is fitted without it.
"""

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import kmeans_start
from sklearn import datasets as skdatasets

import gmmjax
from gmmjax import _em, _lanes, _validation

RNG = np.random.default_rng(7)
BLOBS = np.concatenate(
    [RNG.normal(size=(60, 2)), RNG.normal(size=(60, 2)) + np.array([4.0, 0.0])]
)

# (120, 2) fixtures with k = 2, stacked to be fitted in one vmapped call
SYNTHETIC = {
    "offset-1e5": BLOBS + 1e5,
    "scales-1e4": BLOBS * [1e4, 1.0],
    "duplicated": np.repeat(BLOBS[:40], 3, axis=0),
    "constant-feature": np.column_stack([BLOBS[:, 0], np.full(120, 7.0)]),
    "all-equal": np.full((120, 2), 3.0),
}
EXPECTED = {
    "offset-1e5": "CONVERGED",
    "scales-1e4": "CONVERGED",
    "duplicated": "CONVERGED",
    "constant-feature": "CONVERGED",
    "all-equal": "DEGENERATE",
}
FIT = dict(max_steps=300, tol=1e-7)


# stacking and slicing pytrees on the host: eager jnp would compile a small
# program per shape
def stack(trees):
    return jax.tree_util.tree_map(lambda *a: np.stack(a), *trees)


def lane(tree, i):
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[i], tree)


def fit_both(x, k, covariance_type):
    """``(r64, r32)``: EM fits of ``(n, d)`` data, or of a ``(b, n, d)`` batch
    under ``vmap``, in float64 and float32."""
    x = np.asarray(x, np.float32).astype(np.float64)
    starts = [
        kmeans_start(xi, k, covariance_type) for xi in x.reshape(-1, *x.shape[-2:])
    ]
    gmm0 = stack(starts)

    def run(g, xi):
        return gmmjax.fit(gmmjax.EM(), g, xi, **FIT)

    if x.ndim == 2:
        gmm0 = lane(gmm0, 0)
    else:
        run = jax.vmap(run)
    r64 = run(gmm0, x)
    gmm0_32 = jax.tree_util.tree_map(lambda a: a.astype(np.float32), gmm0)
    r32 = run(gmm0_32, x.astype(np.float32))
    return jax.device_get((r64, r32))


def relative_gap(r64, r32, n):
    assert r32.gmm.means.dtype == jnp.float32
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(r32))
    m64 = np.asarray(r64.log_likelihood) / n
    m32 = np.asarray(r32.log_likelihood, np.float64) / n
    return np.abs(m32 - m64) / np.abs(m64)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_synthetic_fixtures(covariance_type):
    x = np.stack(list(SYNTHETIC.values()))
    r64, r32 = fit_both(x, 2, covariance_type)
    gap = relative_gap(r64, r32, x.shape[1])
    assert np.all(gap <= 1e-4), dict(zip(SYNTHETIC, gap, strict=True))
    for i, name in enumerate(SYNTHETIC):
        status = gmmjax.Status(int(r64.status[i])).name
        assert status == EXPECTED[name], (name, status)
        if status == "DEGENERATE":
            assert int(r32.status[i]) == int(r64.status[i])
            assert int(r32.degenerate_component[i]) == int(r64.degenerate_component[i])


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_more_components_than_distinct_points(covariance_type):
    # the data of test_collapse's fixture: a full float64 fit of this shape
    # compiles once per test run
    x = np.repeat([[0.0, 0.0], [5.0, 5.0]], 45, axis=0)
    r64, r32 = fit_both(x, 3, covariance_type)
    assert np.all(relative_gap(r64, r32, x.shape[0]) <= 1e-4)
    assert int(r64.status) == int(r32.status) == gmmjax.Status.DEGENERATE


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer"])
def test_real_datasets(name):
    # the data and k of test_em's parity test: the float64 fits compile once per
    # test run (breast cancer's 10 "mean" features; all of the others')
    x = getattr(skdatasets, f"load_{name}")().data
    if name == "breast_cancer":
        x = x[:, :10]
    k = 2 if name == "breast_cancer" else 3
    r64, r32 = fit_both(x, k, "full")
    assert np.all(relative_gap(r64, r32, x.shape[0]) <= 1e-4)
    assert int(r64.status) == gmmjax.Status.CONVERGED


def test_float64_input_without_x64_warns_once_and_runs_in_float32(monkeypatch):
    """What a user without x64 gets: float64 data computed in float32, said once."""
    monkeypatch.setattr(_validation, "_downcast_warned", False)
    gmm = gmmjax.GMM.from_natural(
        np.array([1.0], np.float32),
        np.zeros((1, 2), np.float32),
        np.ones((1, 2), np.float32),
        covariance_type="diag",
    )
    with jax.enable_x64(False):
        with pytest.warns(UserWarning, match="64-bit mode is off") as record:
            ll = gmmjax.log_likelihood(gmm, BLOBS)
        assert ll.dtype == jnp.float32
        assert "x is float64" in str(record[0].message)
        assert record[0].filename == __file__  # points at the user's call
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            gmmjax.log_likelihood(gmm, BLOBS)  # once per process
    monkeypatch.setattr(_validation, "_downcast_warned", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gmmjax.log_likelihood(gmm, BLOBS)  # x64 on: nothing is downcast
        with jax.enable_x64(False):
            gmmjax.log_likelihood(gmm, BLOBS.astype(np.float32))


# ------------------------------------------------------ the route under vmap
#
# float32 expands the square in the E step unless that costs digits: a tight
# component far from the data's mean (``gmmjax._em._expansion_is_accurate``); the
# lanes of a vmapped fit choose one by one. TIGHT is BLOBS with its second blob
# shrunk 100-fold about (4, 0), 2 from the mean: a component there of standard
# deviation ``sd`` is inaccurate to expand for ``eps (2 / sd)^2 > 1e-3``, that is
# ``sd`` below about 0.02.
TIGHT = np.concatenate([BLOBS[:60], (BLOBS[60:] - [4.0, 0.0]) / 100 + [4.0, 0.0]])
TIGHT = TIGHT.astype(np.float32)
# a batch of lanes (the sd of the component on the tight blob): accurate,
# inaccurate, accurate, inaccurate
MIXED_SD = [1.0, 1e-3, 0.3, 3e-3]
# Batched and unbatched programs are compiled separately and XLA may sum over the
# n = 120 samples in another order: they agree to about n eps = 1.4e-5 of each
# output's largest entry, the bound below (measured on CPUs with AVX-512: bitwise
# equal; with AVX2 only, not). The expanded route's variances are differences of
# moments about the origin, of size up to max x^2, so there a reordered sum moves
# a variance by up to SAME max x^2: a percent of the tight blob's 1e-4.
SAME = 1.5e-5
EXPANDED_SCALE = float(np.max(TIGHT.astype(np.float64) ** 2))
# jitted: run eagerly, every operation would compile a program of its own
is_accurate = jax.jit(_em._expansion_is_accurate)
expanded_update = jax.jit(_em._expanded_update)


def tight_model(sd, dtype=np.float32):
    """k = 2, diag: a unit component at the origin and one of standard deviation
    ``sd`` on TIGHT's tight blob."""
    return gmmjax.GMM.from_natural(
        np.array([0.5, 0.5], dtype),
        np.array([[0.0, 0.0], [4.0, 0.0]], dtype),
        np.array([[1.0, 1.0], [sd**2, sd**2]], dtype),
        covariance_type="diag",
    )


def step_outputs(gmm, x):
    """Everything an EM step computes: the new model, the log-likelihood of
    ``gmm`` and ``log p(x_i)`` under it."""
    new, info, log_prob = _em._em_step(gmm, x, None, 1e-6, 1.0)
    return new, info.log_likelihood, log_prob


def assert_same(got, expected):
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(got), leaves(expected), strict=True):
        b = np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=0, atol=SAME * np.max(np.abs(b)))


def assert_same_step(got, expected, expanded):
    """:func:`assert_same` for :func:`step_outputs`, the new model compared by its
    weights, means and covariances; with ``expanded`` (the lane's route) the
    covariances to ``SAME`` times the data's largest square (see above)."""
    (new, *rest), (want, *want_rest) = got, expected
    assert_same((new.weights, new.means, rest), (want.weights, want.means, want_rest))
    b = np.asarray(want.covariances)
    scale = EXPANDED_SCALE if expanded else np.max(np.abs(b))
    np.testing.assert_allclose(new.covariances, b, rtol=0, atol=SAME * scale)


@pytest.fixture(scope="module")
def route_steps():
    """``(one, batched, nested, rounds, calls)``: EM steps (:func:`step_outputs`)
    jitted alone, under vmap and under vmap of vmap, and under vmap with the
    two-pass lanes redone 3 at a time (as on accelerators; CPU redoes them one by
    one), compiled with a two-pass route that appends to ``calls`` (once per lane)
    whenever it runs."""
    calls = []
    two_pass = _em._two_pass_update

    def counted(*args):
        jax.debug.callback(lambda: calls.append(1))
        return two_pass(*args)

    x = jnp.asarray(TIGHT)
    models = stack([tight_model(sd) for sd in MIXED_SD])
    batch = jax.vmap(step_outputs, in_axes=(0, None))
    one = jax.jit(step_outputs)
    batched = jax.jit(batch)
    nested = jax.jit(jax.vmap(batch, in_axes=(0, None)))
    rounds = jax.jit(lambda g, x: batch(g, x))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_em, "_two_pass_update", counted)
        # compiled now, with the counter: later calls reuse these programs
        one(lane(models, 0), x)
        batched(models, x)
        nested(stack([models, models]), x)
        patch.setattr(_lanes, "_lanes_per_round", lambda b: min(b, 3))
        rounds(models, x)
        jax.effects_barrier()
    calls.clear()
    return one, batched, nested, rounds, calls


def test_vmap_gives_every_lane_its_unbatched_route(route_steps):
    """Under vmap (also vmap of vmap, and two-pass lanes redone in rounds) each
    lane of a batch mixing accurate and inaccurate lanes gets the step it gets
    alone: the two-pass one where the expansion would cost digits, which is far
    from the expanded one there."""
    one, batched, nested, rounds, calls = route_steps
    x = jnp.asarray(TIGHT)
    models = [tight_model(sd) for sd in MIXED_SD]
    accurate = [bool(is_accurate(g, x)) for g in models]
    assert accurate == [True, False, True, False]
    jax.effects_barrier()
    calls.clear()
    got = batched(stack(models), x)
    jax.effects_barrier()
    assert calls  # the inaccurate lanes ran the two-pass route
    got_nested = nested(stack([stack(models), stack(models[::-1])]), x)
    got_rounds = rounds(stack(models), x)
    for i, gmm in enumerate(models):
        expected = one(gmm, x)
        assert_same_step(lane(got, i), expected, accurate[i])
        assert_same_step(lane(got_rounds, i), expected, accurate[i])
        assert_same_step(lane(lane(got_nested, 0), i), expected, accurate[i])
        assert_same_step(lane(lane(got_nested, 1), 3 - i), expected, accurate[i])
        if not accurate[i]:
            _, _, log_prob = expanded_update(gmm, x, None, 1e-6, 1.0)
            gap = np.max(np.abs(log_prob - expected[2]))
            assert gap > 100 * SAME * np.max(np.abs(expected[2])), gap


def test_vmap_of_accurate_lanes_runs_only_the_expanded_route(route_steps):
    """A batch whose lanes are all accurate never runs the two-pass route (the
    common case costs one route) and gives each lane its unbatched step."""
    one, batched, _, _, calls = route_steps
    x = jnp.asarray(TIGHT)
    models = [tight_model(sd) for sd in (1.0, 0.3, 0.5, 2.0)]
    assert all(bool(is_accurate(g, x)) for g in models)
    jax.effects_barrier()
    calls.clear()
    got = batched(stack(models), x)
    jax.effects_barrier()
    assert not calls
    for i, gmm in enumerate(models):
        assert_same_step(lane(got, i), one(gmm, x), True)


def test_derivatives_through_float32_em_step():
    """grad and jvp through em_step in float32 match float64 on an accurate and an
    inaccurate model, and grad of a vmapped loss matches the lanes' own.

    The loss sums the new means, log standard deviations and log weights. float32
    rounds the data's sums to about n eps = 1.4e-5; the bound 1e-4 of the largest
    derivative leaves margin (measured: 1e-5 or less). The expanded route would
    miss it by over 10% on the inaccurate model.
    """

    def loss(gmm, x):
        new = gmmjax.em_step(gmm, x)
        return jnp.sum(new.means) + jnp.sum(new.log_diag) + jnp.sum(new.log_weights)

    grad = jax.grad(loss, argnums=(0, 1))
    grad_64 = jax.jit(grad)

    @jax.jit
    def grad_and_jvp_32(g, x, t):
        # one program for the float32 derivatives
        return grad(g, x), jax.jvp(partial(loss, g), (x,), (t,))[1]

    x32 = TIGHT
    x64 = x32.astype(np.float64)
    tangent = np.random.default_rng(0).normal(size=x32.shape)
    sds = [1.0, 1e-3]
    grads_x = []
    for sd in sds:
        g32, g64 = tight_model(sd), tight_model(sd, np.float64)
        assert bool(is_accurate(g32, x32)) == (sd == 1.0)
        got, forward = grad_and_jvp_32(g32, x32, tangent.astype(np.float32))
        expected = grad_64(g64, x64)
        leaves = jax.tree_util.tree_leaves
        for a, b in zip(leaves(got), leaves(expected), strict=True):
            assert np.all(np.isfinite(a))
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.max(np.abs(b)))
        np.testing.assert_allclose(forward, np.vdot(expected[1], tangent), rtol=1e-4)
        grads_x.append(np.asarray(got[1]))
    models = stack([tight_model(sd) for sd in sds])
    summed = jax.jit(jax.grad(lambda x: jnp.sum(jax.vmap(loss, (0, None))(models, x))))
    assert_same(summed(x32), grads_x[0] + grads_x[1])
