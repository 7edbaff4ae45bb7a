"""Drawing helpers shared by the figures of :mod:`gmmjax.plot`.

Colours, axes and axis labels, the coordinates shown, sigma ellipses, axis limits,
density grids, the one-dimensional density and the frames of a fit trace. None of
these is public API: :mod:`gmmjax.plot` holds the figures users call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from ._density import log_prob
from ._gmm import GMM

__all__ = [
    "PALETTE",
    "check_dims",
    "colour",
    "density_grid",
    "draw_density_1d",
    "draw_ellipses",
    "feature_labels",
    "figure_and_axes",
    "frame_limits",
    "frame_steps",
    "full_covariances",
    "label_axes",
    "trace_frame",
]


PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def colour(j: int) -> str:
    """Colour of component (or run) ``j``, cycling through ``PALETTE``."""
    return PALETTE[j % len(PALETTE)]


def figure_and_axes(ax):
    """``(figure, axes)``: a new figure with one Agg-backed axes, or ``ax``'s."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=(6.0, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def full_covariances(gmm: GMM) -> np.ndarray:
    """``(k, d, d)`` covariance matrices of any covariance type, in float64."""
    return np.asarray(gmm.full_covariances, dtype=np.float64)


def check_dims(gmm_or_x_d: int, dims) -> tuple[int, int]:
    """``dims`` as two different coordinates of ``d`` features, else an error."""
    i, j = (int(v) for v in dims)
    d = gmm_or_x_d
    if not (0 <= i < d and 0 <= j < d) or i == j:
        raise ValueError(
            f"dims must be two different coordinates in [0, {d}), got {dims}"
        )
    return i, j


def feature_labels(feature_names, d: int) -> list[str]:
    """Axis labels of the ``d`` features: ``feature_names``, else ``x0, x1, ...``."""
    if feature_names is None:
        return [f"x{i}" for i in range(d)]
    names = [str(name) for name in feature_names]
    if len(names) != d:
        raise ValueError(
            f"feature_names must name all {d} features, got {len(names)} names"
        )
    return names


def label_axes(ax, dims, names) -> None:
    """Name the x and y axes after the features ``dims`` shows."""
    ax.set_xlabel(names[dims[0]])
    ax.set_ylabel(names[dims[1]])


def draw_ellipses(ax, gmm2: GMM, n_sigma, alpha=1.0):
    """The ``n_sigma`` ellipses and the mean of each component of a 2-D model."""
    means = np.asarray(gmm2.means)
    covs = np.asarray(gmm2.covariances)
    patches = []
    for j in range(gmm2.n_components):
        values, vectors = np.linalg.eigh(covs[j])
        angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
        for s in n_sigma:
            # the s-sigma contour of N(mu, Sigma): Mahalanobis radius s
            width, height = 2.0 * s * np.sqrt(np.maximum(values[::-1], 0.0))
            patch = Ellipse(
                means[j],
                width,
                height,
                angle=angle,
                fill=False,
                edgecolor=colour(j),
                linewidth=1.5,
                alpha=alpha / (1.0 + 0.5 * (s - 1)),
            )
            ax.add_patch(patch)
            patches.append(patch)
        ax.plot(*means[j], marker="x", color=colour(j), markersize=8, mew=2)
    return patches


def frame_limits(points: np.ndarray, gmm2: GMM, n_sigma) -> tuple:
    """Axis limits holding the points and the widest ellipses."""
    covs = np.asarray(gmm2.covariances)
    means = np.asarray(gmm2.means)
    reach = max(n_sigma) * np.sqrt(np.diagonal(covs, axis1=1, axis2=2))
    lo = np.minimum((means - reach).min(axis=0), points.min(axis=0))
    hi = np.maximum((means + reach).max(axis=0), points.max(axis=0))
    pad = 0.05 * (hi - lo + 1e-12)
    return lo - pad, hi + pad


def density_grid(gmm2: GMM, lo, hi, size=120):
    """``(x, y, log density)`` of a 2-D model on a ``size x size`` grid."""
    gx = np.linspace(lo[0], hi[0], size)
    gy = np.linspace(lo[1], hi[1], size)
    mx, my = np.meshgrid(gx, gy)
    grid = np.stack([mx.ravel(), my.ravel()], axis=1)
    z = np.asarray(log_prob(gmm2, jnp.asarray(grid, gmm2.dtype)))
    return mx, my, z.reshape(mx.shape)


def draw_density_1d(ax, gmm, points, name):
    """A 1-D model: histogram of the data, mixture and weighted components."""
    means = np.asarray(gmm.means)[:, 0]
    sd = np.sqrt(full_covariances(gmm)[:, 0, 0])
    lo, hi = (means - 4 * sd).min(), (means + 4 * sd).max()
    if points is not None:
        lo, hi = min(lo, points.min()), max(hi, points.max())
        ax.hist(points[:, 0], bins=30, density=True, color="0.8", edgecolor="0.6")
    grid = np.linspace(lo, hi, 400)
    g = jnp.asarray(grid[:, None], gmm.dtype)
    ax.plot(grid, np.exp(np.asarray(log_prob(gmm, g))), color="k", label="mixture")
    weights = np.asarray(gmm.weights)
    for j in range(gmm.n_components):
        comp = weights[j] * np.exp(-0.5 * ((grid - means[j]) / sd[j]) ** 2)
        comp /= sd[j] * np.sqrt(2 * np.pi)
        ax.plot(grid, comp, color=colour(j), linestyle="--", label=f"component {j}")
    ax.set_xlabel(name)
    ax.set_ylabel("density")
    ax.legend(loc="best", fontsize="small")


def trace_frame(trace, t: int) -> GMM:
    """The model of step ``t`` of a fit trace."""
    return jax.tree_util.tree_map(lambda a: a[t], trace.gmm)


def frame_steps(trace, steps):
    """Trace indices to draw: ``steps`` checked, else up to six, geometric."""
    n = int(np.shape(trace.log_likelihood)[0])
    if steps is None:
        picks = np.unique(np.round(np.geomspace(1, n, min(n, 6))).astype(int)) - 1
        return [int(t) for t in picks]
    steps = [int(t) for t in steps]
    for t in steps:
        if not 0 <= t < n:
            raise ValueError(f"steps must be in [0, {n}), got {t}")
    return steps
