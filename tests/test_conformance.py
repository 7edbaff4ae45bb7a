"""The fitter conformance table: every fitter against the driver's contract.

Rows are fitters (``EM``, ``EM`` with re-seeding, ``GradientFitter`` with adam
and with L-BFGS, ``Annealed`` around EM and around adam); each test is one
clause of the contract of :func:`gmmjax.fit` (docs: ``gmmjax._fit.Fitter``).
All rows share one data shape, so each fitter compiles its loop once for the
whole table (float64 data; the dtype clause adds float32).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gmmjax
from gmmjax import _fit as driver

X = np.asarray(gmmjax.datasets.faithful(), np.float64)
X = (X - X.mean(0)) / X.std(0)
START = gmmjax.GMM.from_natural(
    [0.5, 0.5], [[-1.0, -1.0], [1.0, 1.0]], [np.eye(2)] * 2, covariance_type="full"
)
# a second start for the batched clause
OTHER = gmmjax.GMM.from_natural(
    [0.3, 0.7], [[-1.2, -0.8], [0.5, 0.9]], [np.eye(2) * 0.5] * 2
)
SCHEDULE = optax.linear_schedule(0.5, 1.0, 5)
STEPS = 40


def _fitters():
    adam = gmmjax.GradientFitter(optax.adam, learning_rate=0.05)
    return {
        "em": gmmjax.EM(),
        "em-reseed": gmmjax.EM(max_reseeds=2),
        "adam": adam,
        "lbfgs": gmmjax.GradientFitter(optax.lbfgs()),
        "annealed-em": gmmjax.Annealed(gmmjax.EM(), SCHEDULE),
        "annealed-adam": gmmjax.Annealed(adam, SCHEDULE),
    }


FITTERS = _fitters()
NAMES = list(FITTERS)


def _with_new_hyperparameters(fitter):
    """The same fitter with new values of its numeric leaves (``reg_covar``,
    ``learning_rate``); L-BFGS's transformation is static and has none."""
    leaves, tree = jax.tree_util.tree_flatten(fitter)
    return jax.tree_util.tree_unflatten(tree, [leaf * 1.5 for leaf in leaves])


def pairs(a, b):
    """The leaves of two pytrees of one structure, side by side."""
    return zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)


def fit_(fitter, x=X, gmm0=START, **kw):
    return gmmjax.fit(fitter, gmm0, x, max_steps=kw.pop("max_steps", STEPS), **kw)


@pytest.mark.parametrize("name", NAMES)
def test_is_a_fitter_pytree(name):
    fitter = FITTERS[name]
    assert isinstance(fitter, driver.Fitter)
    leaves, tree = jax.tree_util.tree_flatten(fitter)
    assert jax.tree_util.tree_unflatten(tree, leaves) == fitter or name in (
        "adam",
        "lbfgs",
        "annealed-adam",
    )  # GradientFitter compares by identity: its optimizer is a function
    for leaf in leaves:
        assert np.ndim(leaf) == 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shapes_and_dtypes(name, dtype):
    gmm0 = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), START)
    result = fit_(FITTERS[name], x=X.astype(dtype), gmm0=gmm0, max_steps=3)
    for new, old in pairs(result.gmm, gmm0):
        assert new.shape == old.shape and new.dtype == dtype
    assert result.log_likelihood.shape == () and result.log_likelihood.dtype == dtype
    assert result.n_steps.dtype == result.status.dtype == jnp.int32
    assert result.status_name == "MAX_STEPS" and int(result.n_steps) == 3
    # the reported log-likelihood is that of the returned model
    np.testing.assert_allclose(
        float(result.log_likelihood),
        float(gmmjax.log_likelihood(result.gmm, X.astype(dtype))),
        rtol=1e-12 if dtype == np.float64 else 1e-6,
    )


@pytest.mark.parametrize("name", NAMES)
def test_jit_vmap_equals_a_loop(name):
    fitter = FITTERS[name]
    # stacked and read back on the host: eager jnp compiles a program per shape
    starts = jax.tree_util.tree_map(lambda a, b: np.stack([a, b]), START, OTHER)
    batched = jax.device_get(jax.jit(jax.vmap(lambda g: fit_(fitter, gmm0=g)))(starts))
    for i, start in enumerate((START, OTHER)):
        one = fit_(fitter, gmm0=start)
        assert int(batched.n_steps[i]) == int(one.n_steps)
        assert int(batched.status[i]) == int(one.status)
        # batching changes how XLA groups the floating-point sums, not the steps
        np.testing.assert_allclose(batched.gmm.means[i], one.gmm.means, rtol=1e-9)
        np.testing.assert_allclose(
            float(batched.log_likelihood[i]), float(one.log_likelihood), rtol=1e-12
        )


@pytest.mark.parametrize("name", NAMES)
def test_new_hyperparameters_do_not_recompile(name):
    fitter = FITTERS[name]
    fit_(fitter)
    size = driver.run._cache_size()
    result = fit_(_with_new_hyperparameters(fitter), tol=1e-3, max_steps=STEPS + 7)
    assert driver.run._cache_size() == size
    assert result.status_name in ("CONVERGED", "MAX_STEPS")


@pytest.mark.parametrize("name", NAMES)
def test_a_poisoned_step_ends_nonfinite_with_finite_parameters(name):
    # a jax.Array is not copied to the host for a value check: the driver
    # reports its NaN as a status instead
    poisoned = X.copy()
    poisoned[5, 1] = np.nan
    poisoned = jnp.asarray(poisoned)
    result = fit_(FITTERS[name], x=poisoned)
    assert result.status_name == "NONFINITE"
    assert int(result.n_steps) == 1
    for leaf, start in pairs(result.gmm, START):
        np.testing.assert_array_equal(leaf, start)


# component 1 starts on a single sample with a variance 1e-16 of the data's:
# every fitter must stop at once and name it
PLANTED = gmmjax.GMM.from_natural(
    [0.9, 0.1], [[0.0, 0.0], X[7]], [np.eye(2), np.eye(2) * 1e-16]
)


@pytest.mark.parametrize("name", NAMES)
def test_a_planted_collapse_ends_degenerate_naming_the_component(name):
    fitter = FITTERS[name]
    if name.endswith("em") or name == "em-reseed":
        fitter = jax.tree_util.tree_map(lambda _: 0.0, fitter)  # reg_covar = 0
    result = fit_(fitter, gmm0=PLANTED)
    if name == "em-reseed":
        # re-seeding rescues it instead, and the run goes on
        assert result.status_name in ("CONVERGED", "MAX_STEPS")
        assert int(result.degenerate_component) == -1
        return
    assert result.status_name == "DEGENERATE"
    assert int(result.degenerate_component) == 1
    assert all(
        np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(result.gmm)
    )


@pytest.mark.parametrize("name", NAMES)
def test_beta_one_is_the_plain_objective(name):
    fitter = FITTERS[name]
    x = jnp.asarray(X)
    state = fitter.init(START, x)
    plain_state, plain = jax.jit(lambda s: fitter.step(s, x))(state)
    state_1, info_1 = jax.jit(lambda s: fitter.step(s, x, beta=1.0))(state)
    for a, b in pairs(plain_state, state_1):
        np.testing.assert_array_equal(a, b)
    # a step reports the log-likelihood of the model it started from
    np.testing.assert_allclose(
        float(plain.log_likelihood), float(gmmjax.log_likelihood(START, X)), rtol=1e-12
    )
    assert int(info_1.degenerate) == -1
