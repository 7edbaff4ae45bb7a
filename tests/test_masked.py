"""Masked components: a K-component model with k active components (the others
at weight 0) is the k-component model, in EM, in the initialization and in
``select``, which compiles one program per covariance type."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import COVARIANCE_TYPES

import gmmjax
from gmmjax import _stored
from gmmjax._em import _expanded_update, _two_pass_update
from gmmjax._init import INIT_METHODS, init_gmm_jit
from gmmjax._multistart import _best_masked

X = np.asarray(gmmjax.datasets.faithful())  # (272, 2)

_compiles: list | None = None


def _count(event, duration, **_):
    if _compiles is not None and event == "/jax/core/compile/backend_compile_duration":
        _compiles.append(event)


jax.monitoring.register_event_duration_secs_listener(_count)


def precision_leaves(cov):
    """NumPy ``(log_diag, off_diag)`` of full covariances ``(k, d, d)``: the
    upper precision Cholesky factor ``P = L^-T``, packed as :class:`gmmjax.GMM`
    packs it (built on the host, no program to compile)."""
    p = np.swapaxes(np.linalg.inv(np.linalg.cholesky(cov)), -1, -2)
    rows, cols = np.triu_indices(cov.shape[-1], 1)
    return np.log(np.diagonal(p, axis1=-2, axis2=-1)), p[:, rows, cols]


# a two-component start on Old Faithful, near its two clusters
COV = np.array([[[0.07, 0.5], [0.5, 34.0]], [[0.17, 0.9], [0.9, 36.0]]])
MEANS = np.array([[2.0, 54.5], [4.3, 80.0]])


def two_components(covariance_type: str) -> gmmjax.GMM:
    """The two-component start in ``covariance_type``'s layout, from NumPy."""
    logits = np.log([0.36, 0.64])
    var = np.diagonal(COV, axis1=1, axis2=2)
    if covariance_type == "full":
        return gmmjax.GMM(logits, MEANS, *precision_leaves(COV), "full")
    if covariance_type == "tied":
        log_diag, off_diag = precision_leaves(COV.mean(0, keepdims=True))
        return gmmjax.GMM(logits, MEANS, log_diag[0], off_diag[0], "tied")
    if covariance_type == "diag":
        return gmmjax.GMM(logits, MEANS, -0.5 * np.log(var), None, "diag")
    spherical = -0.5 * np.log(var.mean(1))
    return gmmjax.GMM(logits, MEANS, spherical, None, "spherical")


def masked(gmm: gmmjax.GMM, extra: int, rng) -> gmmjax.GMM:
    """``gmm`` with ``extra`` inactive components appended: weight 0 (logit
    ``-inf``), far from the data and of various shapes, all finite."""
    d = gmm.n_features
    ctype = gmm.covariance_type
    log_diag, off_diag = np.asarray(gmm.log_diag), gmm.off_diag
    if ctype == "full":
        a = rng.normal(size=(extra, d, d))
        new_diag, new_off = precision_leaves(a @ np.swapaxes(a, -1, -2) + np.eye(d))
        log_diag = np.concatenate([log_diag, new_diag])
        off_diag = np.concatenate([np.asarray(off_diag), new_off])
    elif ctype == "diag":
        new_diag = -0.5 * np.log(rng.uniform(0.01, 3.0, size=(extra, d)))
        log_diag = np.concatenate([log_diag, new_diag])
    elif ctype == "spherical":
        new_diag = -0.5 * np.log(rng.uniform(0.01, 3.0, size=extra))
        log_diag = np.concatenate([log_diag, new_diag])
    logits = np.concatenate([gmm.logits, np.full(extra, -np.inf)])
    means = np.concatenate([gmm.means, rng.normal(scale=50.0, size=(extra, d))])
    return gmmjax.GMM(logits, means, log_diag, off_diag, ctype)


def leaves(gmm):
    return {
        "logits": gmm.logits,
        "means": gmm.means,
        "log_diag": gmm.log_diag,
        "off_diag": gmm.off_diag,
    }


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_masked_em_is_the_fit_of_the_active_components(covariance_type, rng):
    gmm2 = two_components(covariance_type)
    gmm4 = masked(gmm2, 2, rng)
    # an inactive component (no points at all) must not count as empty, and
    # reg_covar = 0: the M step gives the inactive components a zero covariance
    # (non-finite leaves) which must not leak into the model; with re-seeding
    # (once: a larger program) an inactive component must not be re-seeded
    reseeds = 1 if covariance_type == "full" else 0
    fitter = gmmjax.EM(reg_covar=0.0, max_reseeds=reseeds)
    want = gmmjax.fit(fitter, gmm2, X)
    got = gmmjax.fit(fitter, gmm4, X)
    assert got.status_name == want.status_name == "CONVERGED"
    assert int(got.n_steps) == int(want.n_steps)
    assert int(got.degenerate_component) == -1
    # float64 expanded route: the same sums but for the inactive components'
    # 10 eps floors in the tied pool, so rounding of a few eps per step
    np.testing.assert_allclose(got.log_likelihood, want.log_likelihood, rtol=1e-13)
    tied = covariance_type == "tied"
    for name, value in leaves(got.gmm).items():
        if value is None:
            continue
        start = leaves(gmm4)[name]
        shared = tied and name in ("log_diag", "off_diag")
        active = value if shared else value[:2]
        np.testing.assert_allclose(
            active, leaves(want.gmm)[name], rtol=1e-9, atol=1e-12
        )
        if not shared:  # frozen, bit for bit, and finite
            np.testing.assert_array_equal(value[2:], start[2:])
    np.testing.assert_allclose(np.sum(got.gmm.weights), 1.0, rtol=1e-15)
    assert np.all(np.asarray(got.gmm.weights[2:]) == 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_route_stays_finite_and_exact_with_inactive_components(dtype, rng):
    x = jnp.asarray(X, dtype)
    gmm2 = two_components("full")
    gmm4 = masked(gmm2, 2, rng)
    gmm2, gmm4 = (
        jax.tree_util.tree_map(lambda a: a.astype(dtype), g) for g in (gmm2, gmm4)
    )

    @jax.jit
    def steps(gmm2, gmm4, x):
        # both routes (float32 picks one per step; float64 always expands)
        return [
            (update(gmm2, x, None, 0.0, 1.0), update(gmm4, x, None, 0.0, 1.0))
            for update in (_expanded_update, _two_pass_update)
        ]

    eps = np.finfo(dtype).eps
    for (m2, ll2, lp2), (m4, ll4, lp4) in steps(gmm2, gmm4, x):
        np.testing.assert_allclose(ll4, ll2, rtol=100 * eps)
        np.testing.assert_allclose(lp4, lp2, rtol=100 * eps, atol=100 * eps)
        np.testing.assert_array_equal(m4.centered.counts[2:], 0.0)
        np.testing.assert_allclose(
            m4.gmm.means[:2], m2.gmm.means, rtol=1e3 * eps, atol=1e3 * eps
        )
    # the public E step at any temperature, 0 included (0 * -inf is NaN):
    # inactive responsibilities are exactly 0
    for beta in (0.0, 0.5, 1.0):
        log_resp, log_prob = gmmjax.e_step(gmm4, x, beta=beta)
        assert np.all(np.isfinite(log_resp[:, :2])) and np.all(np.isfinite(log_prob))
        assert np.all(log_resp[:, 2:] == -np.inf)


@pytest.mark.parametrize("method", INIT_METHODS)
def test_init_with_n_active_and_padding_equals_the_plain_init(method):
    # one call shows both (each call compiles): k = 2 active of K = 4 components
    # on data with rows of weight 0 appended (a size bucket's padding, copies of
    # the first row) starts as the plain 2-component init on the data; the
    # two-pass statistics center on the unweighted mean, so only rounding differs
    key = jax.random.key(5)
    spec = dict(covariance_type="full", method=method)
    plain = init_gmm_jit(key, jnp.asarray(X), None, 1e-6, n_components=2, **spec)
    padded = np.concatenate([X, np.repeat(X[:1], 48, axis=0)])
    w = np.concatenate([np.ones(len(X)), np.zeros(48)])
    got = init_gmm_jit(
        key, jnp.asarray(padded), jnp.asarray(w), 1e-6, 2, n_components=4, **spec
    )
    for name, value in leaves(got).items():
        np.testing.assert_allclose(
            value[:2], leaves(plain)[name], rtol=1e-10, atol=1e-12
        )
    # the inactive components: weight 0, the data's mean and variance
    assert np.all(np.asarray(got.logits[2:]) == -np.inf)
    for value in (got.means, got.log_diag, got.off_diag):
        assert np.all(np.isfinite(value))
    np.testing.assert_allclose(got.means[2:], [X.mean(0)] * 2, rtol=1e-12)
    np.testing.assert_allclose(
        np.exp(-2 * np.asarray(got.log_diag[2:])), [X.var(0)] * 2, rtol=1e-12
    )


def _select_programs() -> int:
    """The programs select has run in this process: jitted, or (with the
    persistent cache on, as in the test run) stored lowered (gmmjax._stored)."""
    return _best_masked._cache_size() + len(_stored._loaded)


def test_select_compiles_one_program_per_covariance_type_and_equals_multistart():
    global _compiles
    # without the rounds of starts from the neighbouring cells: a cell is the
    # best of its n_init starts and the hierarchical one
    kwargs = dict(
        n_components=[1, 3],
        covariance_types=["diag", "tied"],
        n_init=3,
        max_steps=50,
        split_merge_rounds=0,
    )
    before = _select_programs()
    result = gmmjax.select(jax.random.key(0), X, **kwargs)
    assert _select_programs() - before == 2
    # the most masked cell (1 of 3 components) against multistart + best_of
    cell = result.fits[(1, "diag")]
    floor = gmmjax.relative_reg_covar(X, 1e-6)  # select's default
    runs = gmmjax.multistart(
        gmmjax.EM(reg_covar=floor),
        jax.random.key(0),
        X,
        n_components=1,
        n_init=3,
        covariance_type="diag",
        max_steps=50,
        reg_covar=floor,
    )
    want = gmmjax.best_of(runs)
    assert cell.gmm.means.shape == (1, 2)
    assert int(cell.n_steps) == int(want.n_steps)
    assert int(cell.status) == int(want.status)
    np.testing.assert_allclose(cell.log_likelihood, want.log_likelihood, rtol=1e-12)
    for got, ref in zip(
        jax.tree_util.tree_leaves(cell.gmm),
        jax.tree_util.tree_leaves(want.gmm),
        strict=True,
    ):
        np.testing.assert_allclose(got, ref, rtol=1e-9)
    np.testing.assert_allclose(
        result.values[0, 0], float(gmmjax.bic(want.gmm, X)), rtol=1e-12
    )
    # new data of the same shape and a new seed: nothing compiles
    _compiles = []
    try:
        gmmjax.select(jax.random.key(1), X + 1.0, **kwargs)
        assert _compiles == []
    finally:
        _compiles = None


def test_split_merge_rounds_run_through_the_first_rounds_program():
    """The rounds of starts from the neighbouring cells reuse the program of
    the first round: one program per covariance type, however many rounds,
    and nothing compiles for new data of the same shape and a new seed."""
    global _compiles
    kwargs = dict(
        n_components=[1, 2, 3],
        covariance_types=["diag", "tied"],
        n_init=2,
        max_steps=50,
        split_merge_rounds=2,
    )
    before = _select_programs()
    gmmjax.select(jax.random.key(0), X, **kwargs)
    assert _select_programs() - before == 2
    _compiles = []
    try:
        gmmjax.select(jax.random.key(1), X + 1.0, **kwargs)
        gmmjax.select(jax.random.key(1), X, **{**kwargs, "split_merge_rounds": 5})
        assert _compiles == []
    finally:
        _compiles = None
