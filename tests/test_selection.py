"""Model selection: parameter counts and criteria against scikit-learn, select."""

import re
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
from conftest import COVARIANCE_TYPES, random_natural
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

import gmmjax
from gmmjax import _selection, cli
from gmmjax._selection import _merges, _splits, padded_components


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize(("k", "d"), [(1, 1), (3, 2), (4, 5)])
def test_n_parameters_equals_sklearn(covariance_type, k, d, rng):
    gmm = gmmjax.GMM.from_natural(
        *random_natural(rng, k, d, covariance_type), covariance_type=covariance_type
    )
    ref = GaussianMixture(k, covariance_type=covariance_type)
    ref.means_ = np.zeros((k, d))
    assert gmmjax.n_parameters(gmm) == ref._n_parameters()


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_bic_aic_equal_sklearn_on_its_fitted_parameters(covariance_type, rng):
    x = np.concatenate(
        [rng.normal(size=(80, 3)), rng.normal(size=(70, 3)) * 0.5 + [3.0, 1.0, -2.0]]
    )
    ref = GaussianMixture(
        3, covariance_type=covariance_type, random_state=0, n_init=2
    ).fit(x)
    gmm = gmmjax.GMM.from_natural(
        ref.weights_, ref.means_, ref.covariances_, covariance_type=covariance_type
    )
    # the same parameters: only rounding separates the two (about 1e-13 of a
    # criterion near 1e3), so 1e-10 relative is a strict check
    np.testing.assert_allclose(float(gmmjax.bic(gmm, x)), ref.bic(x), rtol=1e-10)
    np.testing.assert_allclose(float(gmmjax.aic(gmm, x)), ref.aic(x), rtol=1e-10)
    # and on other data than it was fitted to
    y = rng.normal(size=(40, 3))
    np.testing.assert_allclose(float(gmmjax.bic(gmm, y)), ref.bic(y), rtol=1e-10)
    np.testing.assert_allclose(float(gmmjax.aic(gmm, y)), ref.aic(y), rtol=1e-10)


def test_criteria_reject_bad_input(rng):
    gmm = gmmjax.GMM.from_natural(
        *random_natural(rng, 2, 2, "diag"), covariance_type="diag"
    )
    with pytest.raises(TypeError, match=r"gmm must be a gmmjax\.GMM"):
        gmmjax.n_parameters("full")
    with pytest.raises(ValueError, match="features"):
        gmmjax.bic(gmm, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="2-D"):
        gmmjax.aic(gmm, np.zeros(5))


def cell_criteria(result, x, penalty):
    """Every cell's criterion ``-2 L + penalty(p)`` from the cell's own model:
    ``p = n_parameters``, and ``L`` its log-likelihood, evaluated on the model
    padded with components of weight 0 to ``max(n_components)`` (the same
    density, see ``padded_components``), so that one compiled program serves
    every cell (``bic`` and ``aic`` compile each operation per shape)."""
    k_max = max(result.n_components)
    out = np.empty((len(result.n_components), len(result.covariance_types)))
    for i, k in enumerate(result.n_components):
        for j, ctype in enumerate(result.covariance_types):
            gmm = result.fits[(k, ctype)].gmm
            assert gmm.n_components == k
            ll = float(gmmjax.log_likelihood(padded_components(gmm, k_max), x))
            out[i, j] = -2.0 * ll + penalty(gmmjax.n_parameters(gmm))
    return out


def separated_mixture(rng, k, n=420):
    """``k`` well separated round clusters in 2-D (same ``n`` for every ``k``, so
    the compiled fits are shared between cases)."""
    angles = 2 * np.pi * np.arange(k) / k
    centers = 12.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.arange(n) % k
    scales = rng.uniform(0.6, 1.2, size=(k, 2))
    return centers[labels] + rng.normal(size=(n, 2)) * scales[labels]


@pytest.mark.parametrize("k", [2, 4, 6])
def test_select_finds_the_generating_k(k, rng):
    x = separated_mixture(rng, k)
    result = gmmjax.select(
        jax.random.key(k),
        x,
        n_components=range(1, 8),
        covariance_types=["full"],
        n_init=3,
        init="kmeans",
    )
    assert result.best_n_components == k
    assert result.best_covariance_type == "full"
    assert result.values.shape == (7, 1)
    # the table holds the BIC of each cell's model
    np.testing.assert_allclose(
        result.values,
        cell_criteria(result, x, lambda p: p * np.log(len(x))),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        float(result.best.log_likelihood),
        float(gmmjax.log_likelihood(result.best_gmm, x)),
        rtol=1e-12,
    )


def test_select_on_faithful_agrees_with_sklearn():
    x = gmmjax.datasets.faithful()
    ks = range(1, 5)
    n_init = 10
    # (4, spherical)'s best maximum is rare: about one k-means start in 40
    # reaches it, so whether ten starts find it depends on the seed; key 3's do
    # (2 of the keys 0-11), as scikit-learn's random_state=0 do
    ours = gmmjax.select(
        jax.random.key(3), x, n_components=ks, n_init=n_init, init="kmeans"
    )
    ref = np.empty((len(ks), len(COVARIANCE_TYPES)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i, k in enumerate(ks):
            for j, ctype in enumerate(COVARIANCE_TYPES):
                model = GaussianMixture(
                    k,
                    covariance_type=ctype,
                    n_init=n_init,
                    init_params="kmeans",
                    tol=1e-6,
                    max_iter=500,
                    random_state=0,
                ).fit(x)
                ref[i, j] = model.bic(x)
    # Both searches take 10 k-means starts per cell (ours in standard units,
    # and one more from the hierarchical partition), run to |change in mean
    # log-likelihood| < 1e-6: the convergence slack, with a linear rate r, is
    # about 272 * 1e-6 * r / (1 - r) in log-likelihood, under 0.03 for
    # r <= 0.99, i.e. 0.06 in BIC. Ours never ends at a worse maximum; where
    # it finds a better one, it is better by whole units.
    assert np.all(ours.values <= ref + 0.1)
    better = ours.values < ref - 1.0
    np.testing.assert_allclose(ours.values[~better], ref[~better], rtol=0, atol=0.1)
    # (3, full) and (4, full): scikit-learn's raw-unit k-means starts miss the
    # best maxima that starts in standard units reach
    assert better[2, 0] and better[3, 0]
    assert (ours.best_n_components, ours.best_covariance_type) == (3, "tied")
    i, j = np.unravel_index(np.argmin(ref), ref.shape)
    assert (ks[i], COVARIANCE_TYPES[j]) == (3, "tied")
    full = COVARIANCE_TYPES.index("full")
    assert ks[int(np.argmin(ours.values[:, full]))] == 2
    assert ks[int(np.argmin(ref[:, full]))] == 2
    text = str(ours)
    assert "BIC" in text and "| 3 |" in text and "*" in text
    assert ours.to_markdown().count("\n") == len(ks) + 1


def test_select_aic_and_failed_cells_are_never_chosen(rng):
    # five exact copies of one point inside a cloud: a start that seeds a
    # component there collapses it (DEGENERATE, a huge likelihood)
    x = np.concatenate([rng.normal(size=(40, 2)), np.tile([[0.3, -0.2]], (5, 1))])
    result = gmmjax.select(
        jax.random.key(1),
        x,
        n_components=[1, 2, 3],
        covariance_types=["spherical"],
        criterion="aic",
        n_init=4,
        init="random_from_data",
        fitter=gmmjax.EM(reg_covar=0.0),
    )
    assert result.criterion == "aic"
    ok = np.isin(result.status, [gmmjax.Status.CONVERGED, gmmjax.Status.MAX_STEPS])
    i = result.n_components.index(result.best_n_components)
    assert ok[i, 0]
    assert result.values[i, 0] == np.min(result.values[ok])
    # the table holds the AIC of each cell's model
    np.testing.assert_allclose(
        result.values, cell_criteria(result, x, lambda p: 2 * p), rtol=1e-12
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_host_log_joint_is_the_weighted_component_log_prob(
    covariance_type, rng, monkeypatch
):
    # the NumPy E step of the split and merge starts (no program per k), in
    # chunks of rows
    x = rng.normal(size=(50, 3))
    gmm = gmmjax.GMM.from_natural(
        *random_natural(rng, 4, 3, covariance_type), covariance_type=covariance_type
    )
    monkeypatch.setattr(_selection, "_HOST_ROWS", 16)
    got = _selection._host_log_joint(jax.tree_util.tree_map(np.asarray, gmm), x)
    want = gmmjax.component_log_prob(gmm, x) + np.log(np.asarray(gmm.weights))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_splits_cut_the_widest_cluster_across_its_principal_axis(rng):
    # a cluster stretched along the first axis and a small round one
    wide = rng.normal(size=(60, 2)) * [4.0, 0.3]
    small = rng.normal(size=(40, 2)) * 0.3 + [0.0, 10.0]
    xs = np.concatenate([wide, small])
    labels = np.repeat([0, 1], [60, 40])
    first, second = _splits(labels, xs, 3, 2)
    for split in (first, second):
        assert sorted(np.unique(split)) == [0, 1, 2]
    # the widest first: the stretched cluster cut across its long axis
    assert np.array_equal(first[60:], labels[60:])
    side = wide[:, 0] > wide[:, 0].mean()
    assert np.array_equal(first[:60] == 2, side) or np.array_equal(
        first[:60] == 2, ~side
    )
    # then the small one, the stretched one kept
    assert np.array_equal(second[:60], labels[:60])
    assert np.sum(second == 2) > 0 and np.sum(second == 1) > 0
    # a cluster of one point is not cut, one of two is
    (split,) = _splits(np.array([0, 1, 1]), np.eye(3)[:, :2], 3, 2)
    assert split[0] == 0 and sorted(split[1:]) == [1, 2]


def test_merges_join_the_components_that_share_their_points_first():
    # components 1 and 2 split the last 20 points between them, 0 is apart
    resp = np.zeros((40, 3))
    resp[:20, 0] = 1.0
    resp[20:, 1] = np.linspace(0.2, 0.8, 20)
    resp[20:, 2] = 1.0 - resp[20:, 1]
    first, second = _merges(resp, 2, 2)
    np.testing.assert_array_equal(first, np.repeat([0, 1], 20))
    # then a pair that shares nothing: 0 joined with the merged 2 (or 1)
    assert sorted(np.unique(second)) == [0, 1]
    assert not np.array_equal(second, first)


def test_split_merge_rounds_only_improve_cells_and_find_better_maxima():
    """The rounds of starts from the neighbouring cells run after the same
    first round (the same keys), and a cell keeps the best of all its runs: no
    cell is worse than without them, and here some are better: with one
    k-means++ start a cell, splits of the k - 1 fit and merges of the k + 1 fit
    find maxima that the one start misses."""
    x = gmmjax.datasets.faithful()
    kwargs = dict(
        n_components=range(1, 7),
        covariance_types=["full", "spherical"],
        n_init=1,
        hc_start=False,
        max_steps=100,
    )
    with jax.enable_x64(True):
        plain = gmmjax.select(jax.random.key(0), x, split_merge_rounds=0, **kwargs)
        rounds = gmmjax.select(jax.random.key(0), x, split_merge_rounds=2, **kwargs)
    assert np.all(rounds.log_likelihood >= plain.log_likelihood - 1e-9)
    # (3, full) and (4, full) by 0.7 and 0.9
    assert np.sum(rounds.log_likelihood > plain.log_likelihood + 0.5) >= 2
    # the table holds each cell's (better) fit
    for (k, _), fit in rounds.fits.items():
        assert fit.gmm.n_components == k
        np.testing.assert_allclose(
            float(fit.log_likelihood),
            float(gmmjax.log_likelihood(fit.gmm, x)),
            rtol=1e-9,
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(criterion="dic"), ValueError, "criterion must be one of"),
        (dict(n_components=[]), ValueError, "n_components must not be empty"),
        (dict(n_components=[1, 1]), ValueError, "repeated value 1"),
        (dict(n_components=[0, 1]), ValueError, "n_components must be >= 1"),
        (dict(n_components=[500]), ValueError, "must be <= n_samples"),
        (dict(n_components=2.5), TypeError, "n_components must be an int"),
        (dict(covariance_types=["full", "rond"]), ValueError, "covariance_type"),
        (dict(covariance_types=[]), ValueError, "must not be empty"),
        (dict(covariance_types=["tied", "tied"]), ValueError, "repeated"),
        (dict(n_init=0), ValueError, "n_init must be >= 1"),
        (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
        (dict(init="best"), ValueError, "init must be one of"),
        (dict(tol=-1.0), ValueError, "tol must be"),
        (dict(max_steps=-3), ValueError, "max_steps must be >= 0"),
        (dict(fitter=object()), TypeError, "fitter must provide"),
        (dict(progress="yes"), TypeError, "progress must be a function"),
        (dict(split_merge_rounds=-1), ValueError, "split_merge_rounds must be >="),
        (dict(split_merge_rounds=1.0), TypeError, "split_merge_rounds must be an"),
    ],
)
def test_select_rejects_bad_arguments(kwargs, error, match):
    x = gmmjax.datasets.faithful()
    with pytest.raises(error, match=match):
        gmmjax.select(jax.random.key(0), x, **kwargs)


# two columns of the faithful test's grid (4 components, 10 k-means starts), so
# its compiled programs serve the command too
CLI_SELECT = [
    "select",
    "-k",
    "1-4",
    "--covariance-types",
    "full",
    "diag",
    "--n-init",
    "10",
    "--init",
    "kmeans",
]


def test_cli_select_prints_the_table_and_choice(capsys):
    code = cli.main(CLI_SELECT)
    out = capsys.readouterr().out
    assert code == 0
    assert "272 samples" in out and "| k | full | diag |" in out
    assert "restarts per cell: 10 (kmeans) and the hierarchical partition" in out
    assert "then up to 3 rounds of starts from the neighbouring cells" in out
    assert "best by BIC: 2 components" in out
    assert "status: CONVERGED" in out


def test_cli_select_shows_progress_per_cell_on_a_terminal(capsys, monkeypatch):
    # the grid of the test above, so its compiled programs serve this one too
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code = cli.main(CLI_SELECT)
    out = capsys.readouterr()
    assert code == 0 and "best by BIC: 2 components" in out.out
    frames = [f.rstrip() for f in out.err.rstrip("\n").split("\r")[1:]]
    # one call per cell as its result is ready: the cells of a covariance type
    # are fitted together, so they come type by type
    cells = [(k, ctype) for ctype in ("full", "diag") for k in range(1, 5)]
    assert len(frames) == len(cells) + 1
    for i, (k, covariance_type) in enumerate(cells):
        cell = f"cell {i + 1}/8: k={k}, {covariance_type}, "
        assert re.fullmatch(rf"select \[[#.]{{12}}\] {cell}\d+\.\d s", frames[i])
    assert re.fullmatch(r"select \[#{12}\] 8/8 cells, \d+\.\d s", frames[-1])


def test_cli_select_subprocess_with_csv_and_aic(tmp_path, rng):
    path = tmp_path / "data.csv"
    x = separated_mixture(rng, 2, n=60)
    path.write_text("a,b\n" + "\n".join(f"{a},{b}" for a, b in x) + "\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gmmjax",
            "select",
            str(path),
            "--criterion",
            "aic",
            "-k",
            "1,2",
            "--covariance-types",
            "spherical",
            "--n-init",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "AIC (lower is better)" in out.stdout
    assert "best by AIC: 2 components, covariance_type='spherical'" in out.stdout


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["select", "-k", "a-b"], "-k must be a number"),
        (["select", "-k", "0-2"], "-k values must be between 1"),
        (["select", "-k", "1,1"], "-k has repeated values"),
        (["select", "--n-init", "0"], "--n-init must be >= 1"),
        (["select", "--split-merge-rounds", "-1"], "--split-merge-rounds must be >= 0"),
        (["select", "--tol", "-1"], "--tol must be >= 0"),
        (["select", "no-such-file.csv"], "data file not found"),
    ],
)
def test_cli_select_errors_are_one_line(argv, match, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("gmmjax: error:")
    assert match in err
