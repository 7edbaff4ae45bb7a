"""Matplotlib figures of mixtures, their fits and their likelihood landscape.

Every function returns the :class:`matplotlib.figure.Figure` it drew on and takes an
optional ``ax`` to draw into an existing figure. Figures are built with the
object-oriented API (no ``pyplot`` state, nothing is shown): save them with
``fig.savefig(...)`` or let Jupyter display them.

Two-dimensional pictures show two coordinates ``dims`` of the data; a mixture is
then drawn through its exact marginal on those coordinates (the means and the
covariance sub-blocks).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from ._density import responsibilities
from ._gmm import GMM
from ._plot_helpers import (
    check_dims,
    colour,
    density_grid,
    draw_density_1d,
    draw_ellipses,
    feature_labels,
    figure_and_axes,
    frame_limits,
    frame_steps,
    full_covariances,
    label_axes,
    trace_frame,
)

__all__ = [
    "animate_em",
    "marginal",
    "plot_em_path",
    "plot_hessian_spectrum",
    "plot_log_likelihood",
    "plot_mixture",
    "plot_responsibilities",
    "plot_restarts",
    "plot_samples",
]


def marginal(gmm: GMM, dims) -> GMM:
    """The exact marginal mixture on the coordinates ``dims``.

    Marginalizing a Gaussian keeps its mean's and covariance's entries on ``dims``;
    the weights do not change.

    Args:
        gmm: a mixture with ``d >= len(dims)`` features.
        dims: the coordinates to keep.

    Returns:
        A ``full``-covariance :class:`gmmjax.GMM` on ``len(dims)`` features.

    Example:
        >>> import gmmjax
        >>> from gmmjax.plot import marginal
        >>> gmm = gmmjax.GMM.from_natural([1.0], [[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]],
        ...                               covariance_type="diag")
        >>> m = marginal(gmm, (2, 0))
        >>> [round(float(v), 6) for v in m.means[0]]
        [3.0, 1.0]
        >>> [round(float(v), 6) for v in m.covariances[0].diagonal()]
        [3.0, 1.0]
    """
    idx = np.asarray(dims, dtype=int)
    cov = full_covariances(gmm)[:, idx[:, None], idx[None, :]]
    return GMM.from_natural(
        np.asarray(gmm.weights, np.float64),
        np.asarray(gmm.means, np.float64)[:, idx],
        cov,
        covariance_type="full",
    )


def plot_mixture(
    gmm: GMM,
    x=None,
    *,
    ax=None,
    dims=(0, 1),
    n_sigma=(1, 2, 3),
    contours=True,
    title=None,
    feature_names=None,
):
    """Data with each component's 1, 2, 3 sigma ellipses and density contours.

    The ``s``-sigma ellipse of component ``j`` is the set
    ``(y - mu_j)^T Sigma_j^-1 (y - mu_j) = s^2`` of the marginal on ``dims``;
    contour lines are levels of the marginal log-density. One-dimensional models
    are drawn as a histogram with the mixture density and its weighted components.

    Args:
        gmm: the mixture.
        x: optional ``(n, d)`` data to scatter.
        ax: optional matplotlib axes to draw into.
        dims: the two coordinates shown (ignored when ``d = 1``).
        n_sigma: the Mahalanobis radii of the ellipses.
        contours: whether to draw log-density contours.
        title: optional axes title.
        feature_names: optional ``d`` names for the axis labels (default
            ``x0``, ``x1``, ...).

    Returns:
        The :class:`~matplotlib.figure.Figure`.

    Example:
        >>> import gmmjax
        >>> from gmmjax.plot import plot_mixture
        >>> gmm = gmmjax.GMM.from_natural([0.5, 0.5], [[0.0, 0.0], [4.0, 1.0]],
        ...                               [1.0, 0.5], covariance_type="spherical")
        >>> fig = plot_mixture(gmm)
        >>> len(fig.axes[0].patches)
        6
    """
    names = feature_labels(feature_names, gmm.n_features)
    fig, ax = figure_and_axes(ax)
    points = None if x is None else np.asarray(x, dtype=np.float64)
    if gmm.n_features == 1:
        draw_density_1d(ax, gmm, points, names[0])
    else:
        dims = check_dims(gmm.n_features, dims)
        gmm2 = marginal(gmm, dims)
        shown = np.asarray(gmm2.means) if points is None else points[:, list(dims)]
        lo, hi = frame_limits(shown, gmm2, n_sigma)
        if contours:
            mx, my, z = density_grid(gmm2, lo, hi)
            top = z.max()
            levels = np.sort(top - np.array([0.5, 1.5, 3.0, 5.0, 8.0, 12.0]))
            ax.contour(mx, my, z, levels=levels, colors="0.55", linewidths=0.7)
        if points is not None:
            ax.scatter(shown[:, 0], shown[:, 1], s=8, color="0.25", alpha=0.6)
        draw_ellipses(ax, gmm2, n_sigma)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        label_axes(ax, dims, names)
    if title is not None:
        ax.set_title(title)
    return fig


def plot_responsibilities(
    gmm: GMM, x, *, ax=None, dims=(0, 1), n_sigma=(2,), feature_names=None
):
    """Each point coloured by its responsibilities: a blend of component colours.

    A point whose posterior is split between components gets the mixture of their
    colours, ``rgb_i = sum_j r_ij rgb_j``.

    Args:
        gmm: the mixture.
        x: ``(n, d)`` data, ``d >= 2``.
        ax: optional matplotlib axes.
        dims: the two coordinates shown.
        n_sigma: radii of the component ellipses drawn on top.
        feature_names: optional ``d`` names for the axis labels.

    Returns:
        The :class:`~matplotlib.figure.Figure`.

    Example:
        >>> import gmmjax
        >>> from gmmjax.plot import plot_responsibilities
        >>> gmm = gmmjax.GMM.from_natural([0.5, 0.5], [[0.0, 0.0], [2.0, 0.0]],
        ...                               [1.0, 1.0], covariance_type="spherical")
        >>> fig = plot_responsibilities(gmm, [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
        >>> fig.axes[0].collections[0].get_facecolors().shape
        (3, 4)
    """
    names = feature_labels(feature_names, gmm.n_features)
    fig, ax = figure_and_axes(ax)
    dims = check_dims(gmm.n_features, dims)
    points = np.asarray(x, dtype=np.float64)
    resp = np.asarray(responsibilities(gmm, jnp.asarray(points, gmm.dtype)))
    rgb = np.array([to_rgb(colour(j)) for j in range(gmm.n_components)])
    colours = np.clip(resp @ rgb, 0.0, 1.0)
    shown = points[:, list(dims)]
    ax.scatter(shown[:, 0], shown[:, 1], s=14, c=colours, edgecolors="none")
    gmm2 = marginal(gmm, dims)
    draw_ellipses(ax, gmm2, n_sigma)
    lo, hi = frame_limits(shown, gmm2, n_sigma)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    label_axes(ax, dims, names)
    ax.set_title("responsibilities")
    return fig


def plot_em_path(
    trace, x, *, steps=None, ax=None, dims=(0, 1), n_sigma=(1, 2), feature_names=None
):
    """The EM path as a sequence of frames: the model after chosen steps.

    Args:
        trace: the :class:`gmmjax.FitTrace` of :func:`gmmjax.fit_trace`; frame
            ``t`` shows the model after step ``t + 1``.
        x: ``(n, d)`` data, ``d >= 2``.
        steps: trace indices to show (default: up to six, spaced geometrically).
        ax: optional sequence of axes, one per frame.
        dims: the two coordinates shown.
        n_sigma: ellipse radii.
        feature_names: optional ``d`` names for the axis labels.

    Returns:
        The :class:`~matplotlib.figure.Figure`.

    Example:
        >>> import jax, gmmjax
        >>> from gmmjax.plot import plot_em_path
        >>> x = gmmjax.datasets.faithful()
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> _, trace = gmmjax.fit_trace(gmmjax.EM(), gmm0, x, num_steps=8)
        >>> fig = plot_em_path(trace, x, steps=[0, 3, 7])
        >>> len(fig.axes)
        3
    """
    steps = frame_steps(trace, steps)
    if ax is None:
        fig = Figure(figsize=(3.2 * len(steps), 3.2), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(steps), squeeze=False)[0]
    else:
        axes = list(ax)
        if len(axes) != len(steps):
            raise ValueError(f"ax must hold {len(steps)} axes, got {len(axes)}")
        fig = axes[0].figure
    lls = np.asarray(trace.log_likelihood)
    for a, t in zip(axes, steps, strict=True):
        plot_mixture(
            trace_frame(trace, t),
            x,
            ax=a,
            dims=dims,
            n_sigma=n_sigma,
            contours=False,
            feature_names=feature_names,
        )
        a.set_title(f"step {t + 1}: log L {lls[t]:.1f}", fontsize="small")
    return fig


def animate_em(
    trace,
    x,
    path,
    *,
    fps=4,
    dims=(0, 1),
    n_sigma=(1, 2),
    steps=None,
    feature_names=None,
):
    """Write the EM path as an animated GIF (matplotlib's Pillow writer).

    Args:
        trace: a :class:`gmmjax.FitTrace`.
        x: ``(n, d)`` data, ``d >= 2``.
        path: where to write the ``.gif``.
        fps: frames per second.
        dims: the two coordinates shown.
        n_sigma: ellipse radii.
        steps: trace indices to animate (default: every step).
        feature_names: optional ``d`` names for the axis labels.

    Returns:
        The :class:`~matplotlib.figure.Figure` of the animation (its last frame).

    Example:
        >>> import os, tempfile, jax, gmmjax
        >>> from gmmjax.plot import animate_em
        >>> x = gmmjax.datasets.faithful()
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> _, trace = gmmjax.fit_trace(gmmjax.EM(), gmm0, x, num_steps=3)
        >>> path = os.path.join(tempfile.mkdtemp(), "em.gif")
        >>> _ = animate_em(trace, x, path)
        >>> os.path.getsize(path) > 0
        True
    """
    n = int(np.shape(trace.log_likelihood)[0])
    steps = list(range(n)) if steps is None else frame_steps(trace, steps)
    fig, ax = figure_and_axes(None)
    lls = np.asarray(trace.log_likelihood)
    points = np.asarray(x, dtype=np.float64)
    dims = check_dims(points.shape[1], dims)
    # fixed limits over all frames, so the picture does not jump
    bounds = [
        frame_limits(
            points[:, list(dims)], marginal(trace_frame(trace, t), dims), n_sigma
        )
        for t in steps
    ]
    lo = np.min([b[0] for b in bounds], axis=0)
    hi = np.max([b[1] for b in bounds], axis=0)

    def draw(i):
        ax.clear()
        t = steps[i]
        plot_mixture(
            trace_frame(trace, t),
            points,
            ax=ax,
            dims=dims,
            n_sigma=n_sigma,
            contours=False,
            feature_names=feature_names,
        )
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_title(f"EM step {t + 1}: log-likelihood {lls[t]:.2f}")
        return ax.patches

    animation = FuncAnimation(fig, draw, frames=len(steps), blit=False)
    animation.save(str(path), writer=PillowWriter(fps=fps))
    return fig


def plot_samples(x, labels, *, gmm=None, ax=None, dims=(0, 1), feature_names=None):
    """Samples coloured by the component that generated them.

    Args:
        x: ``(n, d)`` samples, e.g. from :func:`gmmjax.sample`.
        labels: ``(n,)`` integer components.
        gmm: optional mixture whose 2-sigma ellipses are drawn too.
        ax: optional matplotlib axes.
        dims: the two coordinates shown (``d >= 2``).
        feature_names: optional ``d`` names for the axis labels.

    Returns:
        The :class:`~matplotlib.figure.Figure`.

    Example:
        >>> import jax, gmmjax
        >>> from gmmjax.plot import plot_samples
        >>> gmm = gmmjax.GMM.from_natural([0.3, 0.7], [[0.0, 0.0], [3.0, 3.0]],
        ...                               [1.0, 1.0], covariance_type="spherical")
        >>> x, z = gmmjax.sample(jax.random.key(0), gmm, 50)
        >>> len(plot_samples(x, z).axes[0].collections)
        2
    """
    fig, ax = figure_and_axes(ax)
    points = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    if labels.shape != (points.shape[0],):
        raise ValueError(
            f"labels must have shape ({points.shape[0]},), got {labels.shape}"
        )
    dims = check_dims(points.shape[1], dims)
    names = feature_labels(feature_names, points.shape[1])
    for j in np.unique(labels):
        sel = points[labels == j][:, list(dims)]
        ax.scatter(
            sel[:, 0],
            sel[:, 1],
            s=10,
            color=colour(int(j)),
            label=f"component {int(j)} ({sel.shape[0]})",
        )
    if gmm is not None:
        draw_ellipses(ax, marginal(gmm, dims), (2,))
    ax.legend(loc="best", fontsize="small")
    label_axes(ax, dims, names)
    ax.set_title("samples by component")
    return fig


def plot_log_likelihood(traces, *, ax=None, labels=None, per_sample=None):
    """Log-likelihood against the step, for one run or many.

    Args:
        traces: a :class:`gmmjax.FitTrace`, a ``(steps,)`` array, or a
            ``(runs, steps)`` array (e.g. a ``vmap`` of ``fit_trace``).
        ax: optional matplotlib axes.
        labels: optional names of the runs (a legend is drawn).
        per_sample: divide by this sample count to show the mean log-likelihood.

    Returns:
        The :class:`~matplotlib.figure.Figure`.

    Example:
        >>> from gmmjax.plot import plot_log_likelihood
        >>> fig = plot_log_likelihood([[-9.0, -5.0, -4.5], [-8.0, -7.0, -6.9]])
        >>> len(fig.axes[0].lines)
        2
    """
    fig, ax = figure_and_axes(ax)
    values = np.asarray(getattr(traces, "log_likelihood", traces), dtype=np.float64)
    if values.ndim == 1:
        values = values[None]
    if values.ndim != 2:
        raise ValueError(
            f"traces must be (steps,) or (runs, steps), got {values.shape}"
        )
    if per_sample is not None:
        values = values / per_sample
    steps = np.arange(1, values.shape[1] + 1)
    if labels is not None and len(labels) != values.shape[0]:
        raise ValueError(f"labels must name {values.shape[0]} runs, got {len(labels)}")
    for r, v in enumerate(values):
        ax.plot(
            steps,
            v,
            color=colour(r),
            label=None if labels is None else labels[r],
            linewidth=1.3,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("mean log-likelihood" if per_sample else "log-likelihood")
    if labels is not None:
        ax.legend(loc="best", fontsize="small")
    return fig


def plot_restarts(result, *, ax=None, bins=30, per_sample=None):
    """Histogram of the final log-likelihoods of a batch of restarts.

    Runs whose log-likelihood is not finite are counted in the title, not drawn;
    the best run is marked by a vertical line.

    Args:
        result: a batched :class:`gmmjax.FitResult` (leading restart axis) or a
            ``(runs,)`` array of log-likelihoods.
        ax: optional matplotlib axes.
        bins: histogram bins.
        per_sample: divide by this sample count to show mean log-likelihoods.

    Returns:
        The :class:`~matplotlib.figure.Figure`.

    Example:
        >>> from gmmjax.plot import plot_restarts
        >>> fig = plot_restarts([-10.0, -10.0, -12.5, float("nan")])
        >>> fig.axes[0].get_title()
        '4 restarts (1 not finite); best -10'
    """
    fig, ax = figure_and_axes(ax)
    values = np.asarray(getattr(result, "log_likelihood", result), dtype=np.float64)
    values = values.ravel()
    if per_sample is not None:
        values = values / per_sample
    finite = values[np.isfinite(values)]
    bad = values.size - finite.size
    if finite.size:
        ax.hist(finite, bins=bins, color=colour(0), edgecolor="white")
        ax.axvline(finite.max(), color=colour(3), linestyle="--", label="best")
        ax.legend(loc="best", fontsize="small")
    note = f" ({bad} not finite)" if bad else ""
    best = f"; best {finite.max():.6g}" if finite.size else ""
    ax.set_title(f"{values.size} restarts{note}{best}")
    ax.set_xlabel("final mean log-likelihood" if per_sample else "final log-likelihood")
    ax.set_ylabel("restarts")
    return fig


def plot_hessian_spectrum(eigenvalues, *, ax=None, tol=None):
    """Hessian eigenvalues of the log-likelihood at a fitted point, by sign.

    At a local maximum every eigenvalue is negative; a positive one is an uphill
    direction (a saddle). The symmetric-log scale shows both tiny and large
    curvatures; ``tol`` draws the band treated as zero.

    Args:
        eigenvalues: a ``(p,)`` array, or an object with ``.eigenvalues`` such as
            :func:`gmmjax.diagnose`'s result.
        ax: optional matplotlib axes.
        tol: optional absolute threshold below which an eigenvalue counts as zero.

    Returns:
        The :class:`~matplotlib.figure.Figure`.

    Example:
        >>> from gmmjax.plot import plot_hessian_spectrum
        >>> fig = plot_hessian_spectrum([-40.0, -3.0, -0.5, 2.0])
        >>> len(fig.axes[0].patches)
        4
    """
    fig, ax = figure_and_axes(ax)
    values = np.sort(
        np.asarray(getattr(eigenvalues, "eigenvalues", eigenvalues), np.float64).ravel()
    )
    colours = [colour(3) if v > 0 else colour(0) for v in values]
    ax.bar(np.arange(values.size), values, color=colours)
    ax.axhline(0.0, color="k", linewidth=0.8)
    scale = np.abs(values[values != 0]).min() if np.any(values != 0) else 1.0
    ax.set_yscale("symlog", linthresh=max(scale, 1e-12))
    if tol is not None:
        ax.axhspan(-tol, tol, color="0.85", zorder=0)
    n_pos = int(np.sum(values > 0))
    ax.set_title(
        f"Hessian spectrum: {n_pos} positive of {values.size}"
        + (" (saddle)" if n_pos else "")
    )
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("eigenvalue")
    return fig
