"""Every figure renders to a PNG with Agg and holds the artists it promises."""

import jax
import matplotlib
import numpy as np
import pytest
from conftest import COVARIANCE_TYPES, full_covariances, random_natural
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from PIL import Image

import gmmjax
from gmmjax import plot
from gmmjax._plot_helpers import PALETTE

matplotlib.use("Agg")

X = gmmjax.datasets.faithful()


@pytest.fixture(scope="module")
def fitted():
    gmm0 = gmmjax.init_gmm(jax.random.key(0), X, n_components=3)
    result, trace = gmmjax.fit_trace(gmmjax.EM(), gmm0, X, num_steps=12)
    return result, trace


def _png(fig, tmp_path, name="fig.png"):
    path = tmp_path / name
    fig.savefig(path)
    assert path.stat().st_size > 5000  # a real picture, not an empty canvas
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5  # not a blank page
    return path


def _ellipses(ax):
    return [p for p in ax.patches if isinstance(p, Ellipse)]


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_mixture_ellipses_and_contours(tmp_path, rng, ctype):
    k, d = 3, 3
    weights, means, cov = random_natural(rng, k, d, ctype)
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type=ctype)
    x = rng.normal(size=(60, d))
    fig = plot.plot_mixture(gmm, x, dims=(2, 0))
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    ellipses = _ellipses(ax)
    assert len(ellipses) == 3 * k  # 1, 2 and 3 sigma for each component
    # the s-sigma ellipse of the marginal on (2, 0): axes 2 s sqrt(eig(Sigma_sub))
    full = full_covariances(cov, ctype, k, d)
    sub = full[0][np.ix_([2, 0], [2, 0])]
    lengths = 2 * np.sqrt(np.linalg.eigvalsh(sub))[::-1]
    for s, e in zip((1, 2, 3), ellipses[:3], strict=True):
        np.testing.assert_allclose([e.width, e.height], s * lengths, rtol=1e-10)
        np.testing.assert_allclose(e.center, means[0][[2, 0]], rtol=1e-12)
    assert len(ax.collections) >= 2  # contour set and the scatter
    assert ax.get_xlabel() == "x2" and ax.get_ylabel() == "x0"
    _png(fig, tmp_path)


def test_marginal_is_the_covariance_sub_block(rng):
    weights, means, cov = random_natural(rng, 2, 4, "full")
    gmm = gmmjax.GMM.from_natural(weights, means, cov)
    m = plot.marginal(gmm, (3, 1))
    np.testing.assert_allclose(m.means, means[:, [3, 1]], rtol=1e-12)
    np.testing.assert_allclose(
        m.covariances, cov[:, [3, 1]][:, :, [3, 1]], rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(m.weights, weights, rtol=1e-12)


def test_one_dimensional_mixture(tmp_path):
    gmm = gmmjax.GMM.from_natural(
        [0.3, 0.7], [[0.0], [3.0]], [1.0, 0.5], covariance_type="spherical"
    )
    x, _ = gmmjax.sample(jax.random.key(0), gmm, 200)
    fig = plot.plot_mixture(gmm, x)
    ax = fig.axes[0]
    assert len(ax.lines) == 3  # the mixture and its two weighted components
    # the drawn density is the mixture's: compare with a direct evaluation
    line = ax.lines[0]
    grid = np.asarray(line.get_xdata())[:, None]
    expected = np.exp(np.asarray(gmmjax.log_prob(gmm, grid)))
    np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12)
    total = ax.lines[1].get_ydata() + ax.lines[2].get_ydata()
    np.testing.assert_allclose(total, expected, rtol=1e-10)
    _png(fig, tmp_path)


def test_responsibilities_as_colours(tmp_path, fitted):
    result, _ = fitted
    gmm = result.gmm
    fig = plot.plot_responsibilities(gmm, X)
    ax = fig.axes[0]
    colours = ax.collections[0].get_facecolors()[:, :3]
    resp = np.asarray(gmmjax.responsibilities(gmm, X))
    palette = np.array([to_rgb(c) for c in PALETTE[:3]])
    np.testing.assert_allclose(colours, np.clip(resp @ palette, 0, 1), atol=1e-6)
    assert len(_ellipses(ax)) == 3
    _png(fig, tmp_path)


def test_em_path_frames_and_gif(tmp_path, fitted):
    _, trace = fitted
    steps = [0, 2, 5, 11]
    fig = plot.plot_em_path(trace, X, steps=steps)
    assert len(fig.axes) == len(steps)
    for ax, t in zip(fig.axes, steps, strict=True):
        assert len(_ellipses(ax)) == 2 * 3  # 1 and 2 sigma, 3 components
        assert ax.get_title().startswith(f"step {t + 1}:")
        assert f"{float(trace.log_likelihood[t]):.1f}" in ax.get_title()
    _png(fig, tmp_path)
    gif = tmp_path / "em.gif"
    plot.animate_em(trace, X, gif, steps=[0, 1, 4, 8, 11])
    with Image.open(gif) as image:
        assert image.format == "GIF"
        assert image.n_frames == 5
    with pytest.raises(ValueError, match="steps"):
        plot.plot_em_path(trace, X, steps=[12])


def test_frames_into_given_axes(fitted):
    _, trace = fitted
    fig = Figure()
    axes = fig.subplots(1, 2)
    assert plot.plot_em_path(trace, X, steps=[0, 1], ax=axes) is fig
    with pytest.raises(ValueError, match="must hold 3 axes, got 2"):
        plot.plot_em_path(trace, X, steps=[0, 1, 2], ax=axes)


def test_samples_by_component(tmp_path, fitted):
    result, _ = fitted
    x, labels = gmmjax.sample(jax.random.key(1), result.gmm, 300)
    fig = plot.plot_samples(x, labels, gmm=result.gmm)
    ax = fig.axes[0]
    present = np.unique(np.asarray(labels))
    assert len(ax.collections) == present.size
    counts = [int(np.sum(np.asarray(labels) == j)) for j in present]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == [
        f"component {j} ({c})" for j, c in zip(present, counts, strict=True)
    ]
    assert len(_ellipses(ax)) == 3
    _png(fig, tmp_path)
    with pytest.raises(ValueError, match="labels"):
        plot.plot_samples(x, labels[:-1])


def test_log_likelihood_traces(tmp_path, fitted):
    _, trace = fitted
    fig = plot.plot_log_likelihood(trace, per_sample=len(X))
    (line,) = fig.axes[0].lines
    np.testing.assert_allclose(
        line.get_ydata(), np.asarray(trace.log_likelihood) / len(X)
    )
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 13))
    _png(fig, tmp_path)
    many = np.stack([np.asarray(trace.log_likelihood)] * 3) + np.arange(3)[:, None]
    fig = plot.plot_log_likelihood(many, labels=["a", "b", "c"])
    assert len(fig.axes[0].lines) == 3
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "a",
        "b",
        "c",
    ]


def test_restart_histogram(tmp_path):
    keys = jax.random.split(jax.random.key(0), 16)
    starts = jax.vmap(
        lambda k: gmmjax.init_gmm(k, X, n_components=4, method="random_from_data")
    )(keys)
    results = jax.vmap(lambda g: gmmjax.fit(gmmjax.EM(), g, X, max_steps=50))(starts)
    fig = plot.plot_restarts(results, bins=10, per_sample=len(X))
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_height() > 0]
    heights = sum(p.get_height() for p in ax.patches)
    assert heights == 16 and len(bars) >= 1
    best = float(np.max(np.asarray(results.log_likelihood))) / len(X)
    assert ax.lines[0].get_xdata()[0] == pytest.approx(best)
    assert ax.get_title().startswith("16 restarts; best")
    _png(fig, tmp_path)


def test_hessian_spectrum(tmp_path):
    eigenvalues = np.array([-2000.0, -300.0, -5.0, -0.1, 0.5, 30.0])
    fig = plot.plot_hessian_spectrum(eigenvalues, tol=1e-3)
    ax = fig.axes[0]
    bars = list(ax.containers[0])
    assert len(bars) == 6
    np.testing.assert_array_equal([b.get_height() for b in bars], eigenvalues)
    red = [p for p in bars if np.allclose(p.get_facecolor()[:3], to_rgb("#d62728"))]
    assert len(red) == 2
    assert "2 positive of 6 (saddle)" in ax.get_title()
    _png(fig, tmp_path)


def test_drawing_into_an_existing_axes_returns_its_figure(fitted):
    result, _ = fitted
    fig = Figure()
    ax = fig.add_subplot()
    assert plot.plot_mixture(result.gmm, X, ax=ax) is fig
    assert len(_ellipses(ax)) == 9
    with pytest.raises(ValueError, match="dims"):
        plot.plot_mixture(result.gmm, X, dims=(0, 0))


def test_feature_names_label_the_axes(fitted):
    result, _ = fitted
    names = ["eruptions", "waiting"]

    def labels(fig):
        return fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()

    fig = plot.plot_mixture(result.gmm, dims=(1, 0), feature_names=names)
    assert labels(fig) == ("waiting", "eruptions")
    fig = plot.plot_responsibilities(result.gmm, X, feature_names=names)
    assert labels(fig) == ("eruptions", "waiting")
    one = gmmjax.GMM.from_natural([1.0], [[0.0]], [1.0], covariance_type="spherical")
    assert labels(plot.plot_mixture(one, feature_names=["waiting"])) == (
        "waiting",
        "density",
    )
    with pytest.raises(ValueError, match="feature_names must name all 2 features"):
        plot.plot_mixture(result.gmm, X, feature_names=["eruptions"])
