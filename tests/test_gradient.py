"""GradientFitter: optax optimizers on the mean log-likelihood, beside EM."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gmmjax
from gmmjax import _fit
from gmmjax._gradient import collapsed_component, tempered_log_likelihood


def three_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    return np.concatenate([rng.normal(c, 1.0, size=(30, 2)) for c in centers])


def starts(n=3):
    """``n`` starts around the true centers, too wide: all lead EM to one optimum.

    Built on the host (no k-means compile): where the start is not under test,
    every test fits from these, so the (90, 2), k = 3 programs are shared.
    """
    rng = np.random.default_rng(1)
    centers = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    gmms = [
        gmmjax.GMM.from_natural(
            np.full(3, 1 / 3),
            centers + rng.normal(scale=1.0, size=(3, 2)),
            np.broadcast_to(3.0 * np.eye(2), (3, 2, 2)),
        )
        for _ in range(n)
    ]
    return jax.tree_util.tree_map(lambda *a: np.stack(a), *gmms)


def start():
    """The first of ``starts``, for the tests of single fits."""
    return jax.tree_util.tree_map(lambda a: a[0], starts(1))


def noisy_sgd(learning_rate, eta):
    return gmmjax.noisy(optax.sgd(learning_rate), eta=eta, key=0)


# (fitter, max_steps, tolerance on the mean log-likelihood gap to EM's optimum).
# The deterministic methods are run to tol=1e-12 and land within rounding of the
# optimum; 1e-6 nats/sample leaves room for the flat directions of slow SGD. The
# noisy run keeps a noise floor: its variance eta / t^0.55 is ~1e-4 after 1500
# steps, and SGD at rate 0.1 turns that into a bias of order 1e-4 nats, so 1e-3.
OPTIMIZERS = {
    "sgd": (gmmjax.GradientFitter(optax.sgd, learning_rate=0.1), 3000, 1e-6),
    "adam": (gmmjax.GradientFitter(optax.adam, learning_rate=0.05), 3000, 1e-6),
    "lbfgs": (gmmjax.GradientFitter(optax.lbfgs()), 200, 1e-6),
    "noisy": (
        gmmjax.GradientFitter(noisy_sgd, learning_rate=0.1, eta=0.01),
        1500,
        1e-3,
    ),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizers_reach_the_em_optimum_under_vmap(name):
    fitter, max_steps, gap = OPTIMIZERS[name]
    x = three_clusters()
    gmm0 = starts()
    n = x.shape[0]
    em = jax.vmap(lambda g: gmmjax.fit(gmmjax.EM(), g, x, max_steps=500, tol=1e-12))(
        gmm0
    )
    lls = jax.vmap(lambda g: gmmjax.log_likelihood(g, x))
    ll0 = np.asarray(lls(gmm0))
    result = jax.vmap(
        lambda g: gmmjax.fit(fitter, g, x, max_steps=max_steps, tol=1e-12)
    )(gmm0)
    ll = np.asarray(result.log_likelihood)
    em_ll = np.asarray(em.log_likelihood)
    assert ll.shape == (3,)
    assert np.all(ll > ll0)
    assert np.all(np.isin(np.asarray(result.status), [0, 1]))
    # EM's optimum from the same starts (all three reach the same, global one)
    np.testing.assert_allclose(em_ll / n, em_ll[0] / n)
    np.testing.assert_allclose(ll / n, em_ll / n, rtol=0, atol=gap)
    # the reported log-likelihood is that of the returned model
    np.testing.assert_allclose(ll, lls(result.gmm), rtol=1e-12)


def test_lbfgs_line_search_never_decreases_the_likelihood():
    # the zoom line search enforces sufficient decrease (Armijo) on value_fn,
    # so the traced log-likelihood is monotone up to rounding of the total (1e-10)
    x = three_clusters()
    fitter = gmmjax.GradientFitter(optax.lbfgs())
    # jitted as a whole: the batched trace is one program, not one per output
    _, trace = jax.jit(
        jax.vmap(lambda g: gmmjax.fit_trace(fitter, g, x, num_steps=25))
    )(starts(2))
    assert np.all(np.diff(np.asarray(trace.log_likelihood), axis=1) >= -1e-10)


def test_new_learning_rates_do_not_recompile():
    x = three_clusters()
    gmm0 = start()
    fit = lambda lr: gmmjax.fit(  # noqa: E731
        gmmjax.GradientFitter(optax.adam, learning_rate=lr), gmm0, x, max_steps=40
    )
    first = fit(0.01)
    size = _fit.run._cache_size()
    second = fit(0.1)
    third = fit(0.03)
    assert _fit.run._cache_size() == size
    # the values are used: the runs differ
    assert float(first.log_likelihood) != float(second.log_likelihood)
    assert float(third.log_likelihood) != float(second.log_likelihood)
    # a ready transformation with the same rate gives the same fit (its rate is a
    # closed-over constant instead of a traced leaf: equal up to rounding)
    static = gmmjax.fit(gmmjax.GradientFitter(optax.adam(0.1)), gmm0, x, max_steps=40)
    np.testing.assert_allclose(
        static.gmm.means, second.gmm.means, rtol=1e-10, atol=1e-12
    )


def test_hyperparameters_vmap_and_flatten_as_leaves():
    x = three_clusters()
    gmm0 = start()
    fitter = gmmjax.GradientFitter(optax.adam, learning_rate=0.05)
    leaves, treedef = jax.tree_util.tree_flatten(fitter)
    assert leaves == [0.05]
    rebuilt = jax.tree_util.tree_unflatten(treedef, [0.2])
    assert rebuilt.optimizer is optax.adam and rebuilt.hyperparameters == {
        "learning_rate": 0.2
    }
    rates = jnp.array([0.01, 0.05])
    batched = jax.vmap(
        lambda lr: gmmjax.fit(
            gmmjax.GradientFitter(optax.adam, learning_rate=lr), gmm0, x, max_steps=40
        )
    )(rates)
    batched_ll = np.asarray(batched.log_likelihood)
    for i, lr in enumerate([0.01, 0.05]):
        single = gmmjax.fit(
            gmmjax.GradientFitter(optax.adam, learning_rate=lr), gmm0, x, max_steps=40
        )
        np.testing.assert_allclose(batched_ll[i], single.log_likelihood, rtol=1e-12)


def test_objective_and_gradient_match_closed_forms():
    x = three_clusters()[::3]
    variances = np.array([1.5, 0.7, 2.0])
    means = np.array([[0.5, 0.0], [5.0, 1.0], [1.0, 5.0]])
    gmm = gmmjax.GMM.from_natural(
        [0.2, 0.3, 0.5], means, variances, covariance_type="spherical"
    )
    w = np.linspace(0.5, 2.0, x.shape[0])
    # one program for every beta (traced), not one per eager operation
    objective = jax.jit(lambda g, b: tempered_log_likelihood(g, x, w, b))
    grad = jax.jit(jax.grad(lambda g, b: objective(g, b)[0]))
    # beta = 1: the plain (weighted) log-likelihood
    value, ll = objective(gmm, 1.0)
    np.testing.assert_allclose(value, gmmjax.log_likelihood(gmm, x, sample_weight=w))
    np.testing.assert_allclose(ll, value)
    # d F_beta / d mu_j = sum_i w_i r_ij(beta) (x_i - mu_j) / sigma_j^2 with the
    # tempered responsibilities of gmmjax.responsibilities
    diff = x[:, None, :] - means[None]
    for beta in (0.0, 0.3, 1.0):
        r = np.asarray(gmmjax.responsibilities(gmm, x, beta=beta)) * w[:, None]
        expected = np.einsum("nk,nkd->kd", r, diff) / variances[:, None]
        np.testing.assert_allclose(
            grad(gmm, beta).means, expected, rtol=1e-10, atol=1e-12
        )
    # beta = 0 is the continuous limit of small beta
    small = objective(gmm, 1e-7)[0]
    zero = objective(gmm, 0.0)[0]
    np.testing.assert_allclose(small, zero, rtol=1e-5)


def test_sample_weight_equals_repeated_rows():
    x = three_clusters()[::2]
    gmm0 = start()
    # 90 repeated rows: the unweighted fit is the program of the tests above
    counts = np.arange(x.shape[0]) % 3 + 1
    fitter = gmmjax.GradientFitter(optax.adam, learning_rate=0.05)
    weighted = gmmjax.fit(
        fitter, gmm0, x, max_steps=30, tol=0.0, sample_weight=counts.astype(float)
    )
    repeated = gmmjax.fit(
        fitter, gmm0, np.repeat(x, counts, axis=0), max_steps=30, tol=0.0
    )
    np.testing.assert_allclose(weighted.gmm.means, repeated.gmm.means, rtol=1e-9)
    np.testing.assert_allclose(
        weighted.log_likelihood, repeated.log_likelihood, rtol=1e-10
    )


def test_collapse_and_empty_components_are_degenerate():
    x = np.array([[1.0], [-1.0]])
    n = 2
    # one program per shape, not one per eager operation
    collapsed = jax.jit(collapsed_component)
    good = gmmjax.GMM.from_natural(
        [0.5, 0.5], [[1.0], [-1.0]], [0.1, 0.1], covariance_type="spherical"
    )
    assert int(collapsed(good, x)) == -1
    empty = gmmjax.GMM(
        np.log(np.array([1 - 1e-4 / n, 1e-4 / n])),
        good.means,
        good.log_diag,
        None,
        "spherical",
    )
    assert int(collapsed(empty, x)) == 1
    # variance 1e-16 is below 10 eps * tr(Cov(x)) = 2.2e-15: collapsed
    narrow = gmmjax.GMM(good.logits, good.means, np.array([0.0, 8.0 * np.log(10)]),
                        None, "spherical")  # fmt: skip
    assert int(collapsed(narrow, x)) == 1
    # full and tied read the largest log-diagonal entry of P
    full = gmmjax.GMM.from_natural(
        [0.5, 0.5],
        [[0.0, 0.0], [1.0, 1.0]],
        [np.eye(2), np.diag([1.0, 1e-17])],
        covariance_type="full",
    )
    assert int(collapsed(full, np.eye(2))) == 1
    tied = gmmjax.GMM.from_natural(
        [0.5, 0.5],
        [[0.0, 0.0], [1.0, 1.0]],
        np.diag([1e-17, 1.0]),
        covariance_type="tied",
    )
    assert int(collapsed(tied, np.eye(2))) == 0
    # gradient ascent on two points shrinks the variances onto them; from
    # unequal variances (a symmetric start stays symmetric, and whether adam's
    # oscillation then breaks the tie within the budget is a matter of rounding)
    uneven = gmmjax.GMM.from_natural(
        [0.5, 0.5], [[1.0], [-1.0]], [0.1, 0.2], covariance_type="spherical"
    )
    result = gmmjax.fit(
        gmmjax.GradientFitter(optax.adam, learning_rate=0.2), uneven, x, max_steps=2000
    )
    assert result.status_name == "DEGENERATE"
    assert int(result.degenerate_component) in (0, 1)
    assert np.all(np.isfinite(np.asarray(result.gmm.log_diag)))


def test_noisy_is_an_optax_chain_with_decaying_noise():
    opt = gmmjax.noisy(optax.sgd(1.0), eta=4.0, gamma=1.0, key=jax.random.key(0))
    params = np.zeros(20000)
    state = opt.init(params)
    update = jax.jit(opt.update)  # both steps in one program, not op by op
    first, state = update(np.zeros_like(params), state, params)
    second, _ = update(np.zeros_like(params), state, params)
    # with zero gradients the updates are pure noise of std sqrt(eta / t^gamma);
    # the sample std of 20000 normals is within 5 * 1/sqrt(2 * 20000) of it
    np.testing.assert_allclose(np.std(np.asarray(first)), 2.0, rtol=0.025)
    np.testing.assert_allclose(np.std(np.asarray(second)), np.sqrt(2.0), rtol=0.025)


def test_bad_optimizers_are_rejected():
    x = three_clusters()
    gmm0 = start()
    with pytest.raises(TypeError, match="optimizer"):
        gmmjax.fit(gmmjax.GradientFitter("adam"), gmm0, x)
    with pytest.raises(TypeError, match="factory"):
        gmmjax.fit(gmmjax.GradientFitter(optax.adam), gmm0, x)
    with pytest.raises(TypeError, match="hyperparameters need an optimizer factory"):
        gmmjax.fit(gmmjax.GradientFitter(optax.adam(0.1), learning_rate=0.1), gmm0, x)
    with pytest.raises(TypeError, match="learning_rate"):
        gmmjax.fit(
            gmmjax.GradientFitter(optax.sgd, learning_rate=optax.constant_schedule(1)),
            gmm0,
            x,
        )
    with pytest.raises(ValueError, match="learning_rate"):
        gmmjax.fit(gmmjax.GradientFitter(optax.sgd, learning_rate=np.nan), gmm0, x)
    with pytest.raises(AttributeError):
        gmmjax.GradientFitter(optax.adam(0.1)).optimizer = None
