"""Scale: data sharded over devices, exact EM out of core, and online (stepwise) EM.

**Several devices.** gmmjax uses JAX's own SPMD runtime, not a scheduler of its own.
Put the data on a device mesh, sharded along the sample axis, and call the usual
:func:`gmmjax.fit` (or :func:`gmmjax.init_gmm`, or any function built on them): the
compiled E and M steps compute per-device partial sums and XLA reduces them across
devices, so the result equals the single-device fit up to the order of the
floating-point sums. :func:`shard` does the placement on every local device;
:func:`shard_padded` handles a sample count that the device count does not divide;
:func:`shard_restarts` spreads a batch of starting models (a leading ``n_init`` axis)
over the ``"restarts"`` axis of a 2-D :func:`device_mesh`, so ``jax.vmap`` of a fit
runs restarts on different devices while each restart's data is sharded along
``"data"``.

**Several hosts.** Start every process the same way, with the same code::

    import jax, gmmjax

    jax.distributed.initialize()  # coordinator/ids from the cluster's environment
    mesh = gmmjax.device_mesh()  # every device of every process
    x = gmmjax.shard(local_rows, mesh)  # this process's rows -> one global array
    result = gmmjax.fit(gmmjax.EM(), gmm0, x)  # identical on every process

``jax.distributed.initialize(coordinator_address, num_processes, process_id)`` takes
explicit arguments where the cluster (SLURM, Kubernetes, Cloud TPU) does not provide
them. :func:`device_mesh` builds the mesh over ``jax.devices()`` (global);
:func:`shard` calls ``jax.make_array_from_process_local_data``, which assembles the
rows each process holds into one global ``jax.Array`` (each process must hold a
multiple of its local device count). Every process then calls the same jitted
functions; their outputs are replicated, so each process holds the whole result.
``gmm0`` must be the same on every process (build it from a shared seed). The
single-host case is the same code with ``jax.process_count() == 1``; the tests run it
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` on one CPU. The meshes
here use ``AxisType.Auto`` axes (sharding propagated by the compiler), which the
kernels need: with ``Explicit`` axes their sums over samples would need explicit
output shardings.

**Larger than memory.** :func:`fit_em_chunked` runs exact EM over a numpy memmap or
a stream that can be replayed, one chunk at a time; :class:`OnlineEM` is stepwise EM
for a stream seen once or a few times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ._degeneracy import degenerate_component, smallest_variance
from ._density import check_gmm, prepare, weighted_log_prob
from ._em import _model
from ._fit import FitResult, Status, check_steps
from ._gmm import GMM
from ._validation import (
    check_data,
    check_nonnegative_scalar,
    check_positive_int,
    check_sample_weight,
    concrete,
)

DATA_AXIS = "data"
RESTART_AXIS = "restarts"

# ----------------------------------------------------------------------- devices


def device_mesh(restart_devices: int = 1, *, devices=None) -> Mesh:
    """A 2-D device mesh ``("restarts", "data")`` with compiler-propagated axes.

    The devices are laid out as ``(restart_devices, n_devices / restart_devices)``:
    data is sharded along ``"data"`` and replicated along ``"restarts"``; a batch of
    starting models is sharded along ``"restarts"`` (:func:`shard_restarts`). With
    the default ``restart_devices=1`` the mesh is effectively 1-D: every device holds
    a slice of the samples.

    Args:
        restart_devices: size of the ``"restarts"`` axis; must divide the number of
            devices.
        devices: the devices to use; default ``jax.devices()`` (all devices of all
            processes).

    Returns:
        A ``jax.sharding.Mesh`` with axes ``("restarts", "data")`` of type
        ``AxisType.Auto``.

    Example:
        >>> import gmmjax
        >>> mesh = gmmjax.device_mesh()
        >>> mesh.axis_names
        ('restarts', 'data')
    """
    devices = list(jax.devices() if devices is None else devices)
    restart_devices = check_positive_int(restart_devices, "restart_devices")
    if len(devices) % restart_devices:
        raise ValueError(
            f"restart_devices={restart_devices} must divide the number of devices "
            f"({len(devices)})"
        )
    grid = np.array(devices, dtype=object).reshape(restart_devices, -1)
    return Mesh(grid, (RESTART_AXIS, DATA_AXIS), axis_types=(AxisType.Auto,) * 2)


def _auto_mesh(mesh, axis: str) -> Mesh:
    """``mesh`` (default :func:`device_mesh`) with every axis of type ``Auto``."""
    if mesh is None:
        return device_mesh()
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis not in mesh.axis_names:
        raise ValueError(
            f"mesh must have an axis named {axis!r}, got axes {mesh.axis_names} "
            "(build one with gmmjax.device_mesh)"
        )
    # the E/M kernels sum over the sample axis without naming an output sharding,
    # which Explicit axes reject; the same devices with Auto axes give the same layout
    return Mesh(
        mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * mesh.devices.ndim
    )


def _put(a: np.ndarray | jax.Array, mesh: Mesh, axis: str) -> jax.Array:
    spec = P(axis, *([None] * (a.ndim - 1)))
    return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), a)


def _check_divisible(n: int, mesh: Mesh, axis: str, what: str) -> None:
    parts = mesh.shape[axis]
    if jax.process_count() == 1 and n % parts:
        raise ValueError(
            f"{what} ({n}) must be divisible by the {parts} devices of mesh axis "
            f"{axis!r}; use gmmjax.shard_padded to pad with zero-weight rows"
        )


def shard(x, mesh: Mesh | None = None) -> jax.Array:
    """Put data on all devices of a mesh, sharded along the sample axis.

    Every device of the mesh's ``"data"`` axis gets ``n / n_devices`` consecutive
    rows (replicated along any other axis). :func:`gmmjax.fit`, :func:`gmmjax.init_gmm`
    and the functions built on them accept the result unchanged; sums over samples
    are reduced across devices by XLA. In a multi-process run (see the module
    documentation) ``x`` is this process's block of rows and the result is the
    global array.

    Args:
        x: ``(n, d)`` data; ``n`` must be divisible by the size of the mesh's
            ``"data"`` axis (else use :func:`shard_padded`).
        mesh: a ``jax.sharding.Mesh`` with a ``"data"`` axis; default
            :func:`device_mesh` over all devices. Its axes are used as
            ``AxisType.Auto``.

    Returns:
        ``(n, d)`` ``jax.Array`` with a ``NamedSharding`` ``P("data", None)``.

    Example:
        >>> import gmmjax
        >>> x = gmmjax.shard(gmmjax.datasets.faithful())
        >>> x.shape, x.sharding.spec[0]
        ((272, 2), 'data')
    """
    mesh = _auto_mesh(mesh, DATA_AXIS)
    x = np.asarray(check_data(x))
    _check_divisible(x.shape[0], mesh, DATA_AXIS, "the number of samples")
    return _put(x, mesh, DATA_AXIS)


def shard_padded(x, sample_weight=None, mesh: Mesh | None = None):
    """Shard data whose sample count the device count need not divide.

    Appends copies of the first row with weight zero until the device count divides
    the number of rows, and returns the weights to pass as ``sample_weight``. The fit
    is unchanged: zero-weight rows add nothing to the sufficient statistics, the
    log-likelihood or the total weight ``sum_i w_i`` (which plays the role of ``n``
    in the stopping rule). Copies of a real row keep the padding finite wherever the
    data lie. The only other use of the row count is the threshold for an *empty*
    component (less than ``1e-3 sum_i w_i / n``), which the few extra rows lower by
    at most a factor ``n / (n + n_devices - 1)``.

    Args:
        x: ``(n, d)`` data.
        sample_weight: optional ``(n,)`` non-negative weights (default all ones).
        mesh: as in :func:`shard`.

    Returns:
        ``(x, sample_weight)``: ``(m, d)`` and ``(m,)`` sharded arrays with ``m >= n``
        the next multiple of the ``"data"`` axis size.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()[:271]
        >>> xs, ws = gmmjax.shard_padded(x)
        >>> len(x), xs.shape[0] % len(jax.devices()), float(ws.sum())
        (271, 0, 271.0)
        >>> gmm = gmmjax.GMM.from_natural([0.4, 0.6], [[2.0, 55.0], [4.3, 80.0]],
        ...                               [10.0, 10.0], covariance_type="spherical")
        >>> a = gmmjax.log_likelihood(gmm, x)
        >>> b = gmmjax.log_likelihood(gmm, xs, sample_weight=ws)
        >>> bool(abs(a - b) < 1e-4 * abs(a))
        True
    """
    mesh = _auto_mesh(mesh, DATA_AXIS)
    x = np.asarray(check_data(x))
    n = x.shape[0]
    w = check_sample_weight(sample_weight, n, x.dtype)
    w = np.ones(n, x.dtype) if w is None else np.asarray(w)
    pad = -n % mesh.shape[DATA_AXIS]
    x = np.concatenate([x, np.repeat(x[:1], pad, axis=0)])
    w = np.concatenate([w, np.zeros(pad, w.dtype)])
    return _put(x, mesh, DATA_AXIS), _put(w, mesh, DATA_AXIS)


def shard_restarts(tree: Any, mesh: Mesh | None = None) -> Any:
    """Spread a batch of models (leading ``n_init`` axis) over the ``"restarts"`` axis.

    Every array leaf of ``tree`` is sharded along its first axis over the mesh's
    ``"restarts"`` axis and replicated along ``"data"``. ``jax.vmap`` of a fit over
    such a batch then runs different restarts on different device groups; combine it
    with data from :func:`shard` on the same mesh to use a 2-D mesh.

    Args:
        tree: a pytree of arrays with a common leading axis ``b`` (e.g. a batched
            :class:`GMM` from ``jax.vmap(gmmjax.init_gmm)``); ``b`` must be divisible
            by the ``"restarts"`` axis size.
        mesh: a mesh with a ``"restarts"`` axis; default :func:`device_mesh` with
            every device on ``"restarts"``.

    Returns:
        The same pytree with sharded leaves.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> keys = jax.random.split(jax.random.key(0), 4)
        >>> gmm0s = jax.vmap(lambda k: gmmjax.init_gmm(k, x, n_components=2))(keys)
        >>> gmm0s = gmmjax.shard_restarts(gmm0s)
        >>> lls = jax.vmap(lambda g: gmmjax.log_likelihood(g, x))(gmm0s)
        >>> lls.shape
        (4,)
    """
    if mesh is None:
        mesh = device_mesh(len(jax.devices()))
    mesh = _auto_mesh(mesh, RESTART_AXIS)
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves or any(np.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError("tree must hold arrays with a leading n_init axis")
    b = np.shape(leaves[0])[0]
    if any(np.shape(leaf)[0] != b for leaf in leaves):
        raise ValueError("every leaf of tree must have the same leading n_init axis")
    _check_divisible(b, mesh, RESTART_AXIS, "the number of restarts")
    return jax.tree_util.tree_map(
        lambda a: jax.device_put(
            a, NamedSharding(mesh, P(RESTART_AXIS, *([None] * (np.ndim(a) - 1))))
        ),
        tree,
    )


# ---------------------------------------------------------- sufficient statistics


class _Moments(NamedTuple):
    """Responsibility-weighted moments of the data about per-component centers."""

    counts: jax.Array  # (k,) sum_i w_i r_ij
    first: jax.Array  # (k, d) sum_i w_i r_ij (x_i - c_j)
    second: jax.Array  # (k, d, d) full/tied or its diagonal (k, d) diag/spherical


def _moments(x, wr, centers, covariance_type) -> _Moments:
    """Moments of ``x`` ``(n, d)`` with weights ``wr`` ``(n, k)`` about ``centers``."""
    diff = x[:, None, :] - centers[None, :, :]
    first = jnp.einsum("nk,nkd->kd", wr, diff)
    if covariance_type in ("full", "tied"):
        second = jnp.einsum("nk,nkd,nke->kde", wr, diff, diff)
    else:
        second = jnp.einsum("nk,nkd->kd", wr, diff**2)
    return _Moments(jnp.sum(wr, axis=0), first, second)


def _recenter(moments: _Moments, centers):
    """Floored counts ``(k,)``, new means ``(k, d)`` and the scatter about them.

    With ``N_j`` the count, ``s_j`` and ``S_j`` the first and second moments about
    ``c_j`` and ``N'_j = N_j + 10 eps``, the mean is
    ``mu_j = (s_j + N_j c_j) / N'_j = c_j + delta_j`` and the scatter about it is
    ``S_j - s_j delta_j^T - delta_j s_j^T + N_j delta_j delta_j^T`` exactly. Centers
    near the means keep ``delta`` small, so the correction does not cancel the way
    raw moments ``sum r x x^T - N mu mu^T`` do.
    """
    counts, first, second = moments
    floor = 10 * jnp.finfo(first.dtype).eps
    nk = counts + floor
    # mu_j = sum_i r_ij x_i / N'_j = c_j + delta_j, as in the in-memory M step
    delta = (first - floor * centers) / nk[:, None]
    if second.ndim == 3:
        cross = first[:, :, None] * delta[:, None, :]
        outer = delta[:, :, None] * delta[:, None, :]
        scatter = (
            second - cross - jnp.swapaxes(cross, -1, -2) + counts[:, None, None] * outer
        )
    else:
        scatter = second - 2 * first * delta + counts[:, None] * delta**2
    return nk, centers + delta, scatter


def _degenerate(counts, nk, means, scatter, centers, reg_covar, covariance_type, n):
    """:func:`gmmjax._degeneracy.degenerate_component` of the M step from
    ``counts`` (their sum is the total weight of ``n`` samples) and the scatter
    about ``means``, corrected from the moments about ``centers``.

    The correction cancels terms of size ``(mu_j - c_j)^2`` the way an expanded
    square ``E[x^2] - m^2`` does about ``c_j``: the rounding level of expanded
    moments centered on ``c_j``.
    """
    if covariance_type in ("full", "tied"):
        second = scatter / nk[:, None, None]
    elif covariance_type == "diag":
        second = scatter / nk[:, None]
    else:
        second = jnp.sum(scatter, axis=-1) / nk
    spread = smallest_variance(
        nk, means, centers, second, covariance_type, reg_covar, expanded=True
    )
    return degenerate_component(counts, spread, n, jnp.sum(counts))


def _gmm_from_scatter(nk, means, scatter, reg_covar, covariance_type) -> GMM:
    """The M step's model from floored counts, means and scatter matrices.

    The conventions of :func:`gmmjax.m_step`: ``pi_j = N_j / sum_l N_l``,
    ``Sigma_j = S_j / N_j + reg_covar I`` (``tied`` pools ``sum_j S_j / sum_j N_j``,
    ``spherical`` averages the diagonal).
    """
    if covariance_type == "full":
        cov = scatter / nk[:, None, None]
    elif covariance_type == "tied":
        cov = jnp.sum(scatter, axis=0) / jnp.sum(nk)
    else:
        cov = scatter / nk[:, None]
        if covariance_type == "spherical":
            cov = jnp.mean(cov, axis=-1)
    return _model(nk, means, cov, reg_covar, covariance_type)


def _posterior_weights(gmm: GMM, x, w):
    """``w_i r_ij`` ``(n, k)`` and ``log p(x_i)`` ``(n,)``; zero-weight rows give 0.

    Zero-weight rows (padding) may lie where every component density underflows;
    their posteriors are then NaN, so they are selected away, never multiplied.
    """
    joint = weighted_log_prob(gmm, x)
    log_prob = logsumexp(joint, axis=-1)
    keep = w > 0
    wr = jnp.where(keep[:, None], w[:, None] * jnp.exp(joint - log_prob[:, None]), 0)
    return wr, jnp.where(keep, log_prob, 0)


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


# -------------------------------------------------------------------- chunked EM


class _Pass(NamedTuple):
    """Sums over the data of one EM pass (centers: the means the pass started from)."""

    log_likelihood: jax.Array  # () sum_i w_i log p(x_i)
    weight: jax.Array  # () sum_i w_i
    moments: _Moments


def _empty_pass(gmm: GMM, dtype) -> _Pass:
    k, d = gmm.n_components, gmm.n_features
    second = (k, d, d) if gmm.covariance_type in ("full", "tied") else (k, d)
    zero = jnp.zeros((), dtype)
    moments = _Moments(
        jnp.zeros(k, dtype), jnp.zeros((k, d), dtype), jnp.zeros(second, dtype)
    )
    return _Pass(zero, zero, moments)


@jax.jit
def _accumulate(acc: _Pass, gmm: GMM, x, w) -> _Pass:
    wr, log_prob = _posterior_weights(gmm, x, w)
    chunk = _Pass(
        w @ log_prob, jnp.sum(w), _moments(x, wr, gmm.means, gmm.covariance_type)
    )
    return jax.tree_util.tree_map(jnp.add, acc, chunk)


@jax.jit
def _em_from_pass(
    acc: _Pass, gmm: GMM, n, previous, n_steps, max_steps, tol, reg_covar
):
    """The M step of one pass and the driver's bookkeeping (as in ``gmmjax.fit``)."""
    ctype = gmm.covariance_type
    nk, means, scatter = _recenter(acc.moments, gmm.means)
    new = _gmm_from_scatter(nk, means, scatter, reg_covar, ctype)
    counts = acc.moments.counts
    degenerate = _degenerate(counts, nk, means, scatter, gmm.means, reg_covar, ctype, n)
    n_steps = n_steps + 1
    mean_ll = acc.log_likelihood / acc.weight
    finite = jnp.isfinite(acc.log_likelihood) & _all_finite(new)
    converged = jnp.abs(mean_ll - previous) < tol
    # gmmjax.fit's ranking: a collapse that made the step non-finite is named
    status = jnp.select(
        [degenerate >= 0, ~finite, converged, n_steps >= max_steps],
        [Status.DEGENERATE, Status.NONFINITE, Status.CONVERGED, Status.MAX_STEPS],
        _RUNNING,
    ).astype(jnp.int32)
    gmm = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, gmm)
    return gmm, mean_ll, n_steps, status, degenerate


_RUNNING = -1


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise TypeError(f"data must hold numbers, got dtype {dtype}")
    if np.iscomplexobj(np.empty(0, dtype)):
        raise TypeError(f"data must be real, got dtype {dtype}")
    if not np.issubdtype(dtype, np.floating):
        return jnp.result_type(float)
    return dtype


def _blocks_of(data, sample_weight):
    """``(blocks, dtype)``: ``blocks()`` is a fresh iterator of ``(x, w | None)``."""
    if callable(data):
        if sample_weight is not None:
            raise ValueError(
                "sample_weight must be None when data is a callable; yield "
                "(x, sample_weight) pairs from its iterator instead"
            )

        def blocks():
            stream = data()
            if not isinstance(stream, Iterable):
                raise TypeError(
                    "data() must return an iterable of arrays, got "
                    f"{type(stream).__name__}"
                )
            for item in stream:
                if isinstance(item, tuple):
                    if len(item) != 2:
                        raise ValueError(
                            "data() must yield arrays x or pairs (x, sample_weight), "
                            f"got a tuple of {len(item)}"
                        )
                    yield item
                else:
                    yield item, None

        first = next(iter(blocks()), None)
        if first is None:
            raise ValueError("data() yielded no arrays")
        return blocks, _float_dtype(np.asarray(first[0]).dtype)
    if isinstance(data, (str, bytes)) or not hasattr(data, "__getitem__"):
        raise TypeError(
            "data must be an array (e.g. np.load(path, mmap_mode='r')) or a callable "
            f"returning an iterator of arrays, got {type(data).__name__}"
        )
    if not (hasattr(data, "shape") and hasattr(data, "dtype")):
        data = np.asarray(data)
    dtype = _float_dtype(data.dtype)
    if len(data.shape) != 2:
        raise ValueError(
            "data must be a 2-D array of shape (n_samples, n_features), got shape "
            f"{tuple(data.shape)}"
        )
    n = data.shape[0]
    if sample_weight is not None and np.shape(sample_weight) != (n,):
        raise ValueError(
            f"sample_weight must have shape ({n},) to match data, got "
            f"{np.shape(sample_weight)}"
        )
    step = max(1, 2**20 // max(1, data.shape[1]))

    def blocks():
        # slices of about 8 MB: a memmap is read only as far as each slice reaches
        for start in range(0, n, step):
            stop = min(n, start + step)
            w = None if sample_weight is None else sample_weight[start:stop]
            yield data[start:stop], w

    return blocks, dtype


def _checked(x, w, d, dtype, check):
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(
            f"data blocks must have shape (rows, {d}) to match the model, got {x.shape}"
        )
    x = np.ascontiguousarray(x, dtype=dtype)
    w = np.ones(len(x), dtype) if w is None else np.asarray(w, dtype=dtype)
    if w.shape != (len(x),):
        raise ValueError(
            f"sample_weight of a block must have shape ({len(x)},), got {w.shape}"
        )
    if check:
        if not np.isfinite(x).all():
            raise ValueError("data must be finite, got NaN or infinite values")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("sample_weight must be finite and non-negative")
    return x, w


def _chunks(blocks: Iterator, chunk_size: int, d: int, dtype, check: bool):
    """Regroup blocks into ``(chunk_size, d)`` chunks: one compiled shape.

    The last chunk is padded with zero rows of weight zero. Yields ``(x, w, rows)``
    with ``rows`` the number of real rows.
    """
    xs, ws, filled = [], [], 0
    for block in blocks:
        x, w = _checked(*block, d, dtype, check)
        start = 0
        while start < len(x):
            take = min(chunk_size - filled, len(x) - start)
            xs.append(x[start : start + take])
            ws.append(w[start : start + take])
            filled += take
            start += take
            if filled == chunk_size:
                yield np.concatenate(xs), np.concatenate(ws), chunk_size
                xs, ws, filled = [], [], 0
    if filled:
        pad = chunk_size - filled
        x = np.concatenate([*xs, np.zeros((pad, d), dtype)])
        w = np.concatenate([*ws, np.zeros(pad, dtype)])
        yield x, w, filled


def _sweep(blocks, gmm: GMM, chunk_size, dtype, check):
    """One pass over the data at ``gmm``: the accumulated sums and the row count."""
    acc = _empty_pass(gmm, dtype)
    n = 0
    for x, w, rows in _chunks(blocks(), chunk_size, gmm.n_features, dtype, check):
        previous, acc = acc, _accumulate(acc, gmm, x, w)
        # dispatch is asynchronous: without a wait the host would read ahead and
        # queue every chunk; waiting for the previous one keeps two in flight
        jax.block_until_ready(previous)
        n += rows
    if check:
        if n < gmm.n_components:
            raise ValueError(
                f"data has {n} samples but the model has {gmm.n_components} "
                "components: need n_samples >= n_components"
            )
        if not float(acc.weight) > 0:
            raise ValueError("sample_weight must not be all zero")
    return acc, n


def fit_em_chunked(
    gmm0: GMM,
    data,
    *,
    chunk_size: int,
    max_steps: int = 500,
    tol=1e-6,
    reg_covar=1e-6,
    sample_weight=None,
) -> FitResult:
    """Exact EM over data larger than memory, one chunk at a time.

    Each EM step is one pass over the data: for every chunk of ``chunk_size`` rows
    one jitted function adds the chunk's sufficient statistics (counts ``N_j``, first
    and second moments about the current means ``m_j``) to running sums; the M step
    then follows from the sums (:func:`gmmjax.m_step`'s conventions: the ``10 eps``
    floor on counts, ``reg_covar`` on the diagonal, pooled ``tied`` scatter). The
    second moments are taken about ``m_j``, not the origin, and corrected exactly to
    the new means, ``S_j - s_j delta^T - delta s_j^T + N_j delta delta^T`` with
    ``delta = mu_j - m_j``; near convergence ``delta`` is tiny, so the covariances do
    not suffer the cancellation of raw moments. Every chunk has the same shape (the
    last is padded with zero-weight rows), so the pass compiles once. The results
    equal :func:`gmmjax.fit` with :class:`gmmjax.EM` on the same data up to the
    order of floating-point sums, with the same stopping rule (step ``t`` reports
    the log-likelihood of the parameters it started from; converged when the change
    in mean log-likelihood is below ``tol``) and the same :class:`gmmjax.Status`
    semantics (``NONFINITE`` keeps the last finite parameters, ``DEGENERATE`` names
    the component). One more pass computes the returned log-likelihood.

    Memory: at most two chunks are in flight, and the working memory of a chunk is
    ``O(chunk_size * k * d)``, whatever the data size
    (``benchmarks/chunked_benchmark.py`` measures it). Pages of a memmapped file
    that have been read count as file-backed resident memory until the kernel
    reclaims them (they are clean, so it can at any time); a callable that reads
    blocks with ``np.fromfile`` avoids even that. The data are read on the host, so
    this is a Python loop over chunks and passes and is not jittable.

    Args:
        gmm0: the starting :class:`GMM` (e.g. from :func:`gmmjax.init_gmm` on a
            subsample).
        data: ``(n, d)`` array-like that supports row slicing (a numpy array or
            ``np.load(path, mmap_mode="r")``), or a callable with no arguments
            returning a **fresh** iterator over the data each time it is called
            (one call per pass), yielding ``(rows, d)`` arrays or
            ``(x, sample_weight)`` pairs of any sizes.
        chunk_size: rows per compiled chunk (blocks are regrouped to this size).
        max_steps: the step (pass) budget, an integer >= 0.
        tol: convergence threshold on the change in mean log-likelihood (>= 0).
        reg_covar: non-negative value added to the diagonal of every covariance.
        sample_weight: optional ``(n,)`` non-negative weights (array-like ``data``
            only; may itself be a memmap).

    Returns:
        A :class:`gmmjax.FitResult`; ``log_likelihood`` is the total log-likelihood
        of the returned model.

    Example:
        >>> import jax, numpy as np, gmmjax
        >>> x = np.asarray(gmmjax.datasets.faithful())
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(1), x, n_components=2)
        >>> chunked = gmmjax.fit_em_chunked(gmm0, x, chunk_size=100)
        >>> full = gmmjax.fit(gmmjax.EM(), gmm0, x)
        >>> chunked.status_name, int(chunked.n_steps) == int(full.n_steps)
        ('CONVERGED', True)
        >>> float(abs(chunked.log_likelihood - full.log_likelihood)) < 1e-3
        True
    """
    check_gmm(gmm0)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if concrete(check_steps(max_steps, "max_steps")) is None:
        raise TypeError("max_steps must be a concrete integer")
    check_nonnegative_scalar(tol, "tol")
    check_nonnegative_scalar(reg_covar, "reg_covar")
    blocks, data_dtype = _blocks_of(data, sample_weight)
    dtype = jnp.result_type(gmm0.dtype, jax.dtypes.canonicalize_dtype(data_dtype))
    gmm = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), gmm0)
    max_steps = jnp.asarray(int(max_steps), jnp.int32)
    tol = jnp.asarray(tol, dtype)
    reg_covar = jnp.asarray(reg_covar, dtype)
    previous = jnp.asarray(-jnp.inf, dtype)
    n_steps = jnp.asarray(0, jnp.int32)
    degenerate = jnp.asarray(-1, jnp.int32)
    status = Status.MAX_STEPS if int(max_steps) == 0 else _RUNNING
    check = True
    while status == _RUNNING:
        acc, n = _sweep(blocks, gmm, chunk_size, dtype, check)
        check = False
        gmm, previous, n_steps, status, degenerate = _em_from_pass(
            acc, gmm, n, previous, n_steps, max_steps, tol, reg_covar
        )
        status = int(status)
    acc, _ = _sweep(blocks, gmm, chunk_size, dtype, check)
    return FitResult(
        gmm, acc.log_likelihood, n_steps, jnp.asarray(status, jnp.int32), degenerate
    )


# --------------------------------------------------------------------- online EM


class OnlineEMState(NamedTuple):
    """What stepwise EM carries between minibatches.

    Attributes:
        gmm: the current model (the M step of the running statistics).
        counts: ``(k,)`` running average of the responsibilities ``E[r_j]``.
        scatter: running average of ``r_j (x - mu_j)(x - mu_j)^T`` about the current
            means: ``(k, d, d)`` for ``full``/``tied``, its diagonal ``(k, d)`` for
            ``diag``/``spherical``.
        count: ``()`` int32, the number of updates applied so far.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> state = gmmjax.OnlineEM().init(gmm)
        >>> int(state.count), state.counts.shape, state.scatter.shape
        (0, (2,), (2, 2, 2))
    """

    gmm: GMM
    counts: jax.Array
    scatter: jax.Array
    count: jax.Array


class OnlineEMInfo(NamedTuple):
    """Diagnostics of one :meth:`OnlineEM.update`.

    Attributes:
        log_likelihood: ``()`` mean (weighted) log-likelihood of the minibatch under
            the parameters the update started from (a running, noisy estimate of
            the expected log-likelihood).
        step_size: ``()`` the step size ``rho_t`` used.
        finite: ``()`` bool; ``False`` when the update gave non-finite values and
            was rejected (the state is returned unchanged).
        degenerate: ``()`` int32, the first component of the updated model that
            is empty (its running share below a thousandth of one sample of the
            minibatch) or collapsed (as in :func:`gmmjax.fit`'s ``DEGENERATE``),
            ``-1`` if none.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> online = gmmjax.OnlineEM(alpha=0.6)
        >>> state, info = online.update(online.init(gmm), x[:100])
        >>> float(info.step_size), bool(info.finite), int(info.degenerate)
        (1.0, True, -1)
    """

    log_likelihood: jax.Array
    step_size: jax.Array
    finite: jax.Array
    degenerate: jax.Array


def _stats_of(gmm: GMM):
    """Running statistics equivalent to a model: ``(pi_j, pi_j Sigma_j)``."""
    weights = gmm.weights
    cov = gmm.covariances
    k, d = gmm.n_components, gmm.n_features
    if gmm.covariance_type == "tied":
        cov = jnp.broadcast_to(cov, (k, d, d))
    elif gmm.covariance_type == "spherical":
        cov = jnp.broadcast_to(cov[:, None], (k, d))
    return weights, weights.reshape((k,) + (1,) * (cov.ndim - 1)) * cov


@jax.jit
def _online_update(fitter, state: OnlineEMState, x, w):
    gmm = state.gmm
    w = jnp.ones(x.shape[0], x.dtype) if w is None else w
    total = jnp.sum(w)
    wr, log_prob = _posterior_weights(gmm, x, w)
    batch = _moments(x, wr / total, gmm.means, gmm.covariance_type)
    rho = fitter.step_size(state.count).astype(x.dtype)
    # the running first moment about the current means is zero (they are its mean)
    running = _Moments(
        (1 - rho) * state.counts + rho * batch.counts,
        rho * batch.first,
        (1 - rho) * state.scatter + rho * batch.second,
    )
    ctype = gmm.covariance_type
    nk, means, scatter = _recenter(running, gmm.means)
    new = OnlineEMState(
        _gmm_from_scatter(nk, means, scatter, fitter.reg_covar, ctype),
        running.counts,
        scatter,
        state.count + 1,
    )
    degenerate = _degenerate(
        running.counts,
        nk,
        means,
        scatter,
        gmm.means,
        fitter.reg_covar,
        ctype,
        x.shape[0],
    )
    ll = w @ log_prob / total
    finite = jnp.isfinite(ll) & _all_finite(new)
    state = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, state)
    return state, OnlineEMInfo(ll, rho, finite, degenerate)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OnlineEM:
    """Stepwise (online) EM for streams of minibatches (Cappé & Moulines, 2009).

    The state holds running averages of the sufficient statistics,
    ``s_t = (1 - rho_t) s_{t-1} + rho_t s_hat(x_batch; theta_{t-1})``, where
    ``s_hat`` averages the responsibilities ``r_j``, ``r_j x`` and
    ``r_j x x^T`` over the (weighted) minibatch under the current parameters, and the
    parameters are the M step of ``s_t`` (the conventions of :func:`gmmjax.m_step`).
    The step size is ``rho_t = (t + t0)^(-alpha)`` for the ``t``-th update
    (``t = 0, 1, ...``); with ``alpha`` in ``(0.5, 1]`` the sum of ``rho_t``
    diverges and the sum of ``rho_t^2`` converges, so the iterates converge to a
    stationary point of the expected log-likelihood. With ``t0 = 1`` the first
    update has ``rho_0 = 1``, so the starting model only supplies the first
    responsibilities; a larger ``t0`` gives its statistics (``pi_j``,
    ``pi_j Sigma_j``) a lasting weight. The second moments are kept about the
    current means, so no raw-moment cancellation occurs. A pytree: ``alpha``,
    ``t0`` and ``reg_covar`` are traced leaves (new values do not recompile).

    ``init`` and ``update`` are pure (``update`` is jitted, one compilation per
    minibatch shape); :meth:`run` loops over an iterable of minibatches.

    Args:
        alpha: the decay exponent of the step size, in ``(0.5, 1]``.
        t0: the offset of the step size, ``>= 1`` (so ``rho_t <= 1``).
        reg_covar: non-negative value added to the diagonal of every covariance.

    Example:
        >>> import jax, gmmjax
        >>> x = gmmjax.datasets.faithful()
        >>> gmm0 = gmmjax.init_gmm(jax.random.key(0), x, n_components=2)
        >>> online = gmmjax.OnlineEM(alpha=0.6)
        >>> batches = [x[i : i + 68] for i in range(0, 272, 68)] * 5
        >>> state, lls = online.run(gmm0, batches)
        >>> int(state.count), lls.shape
        (20, (20,))
    """

    alpha: float | jax.Array = 0.6
    t0: float | jax.Array = 1.0
    reg_covar: float | jax.Array = 1e-6

    def check(self) -> None:
        """Validate the hyperparameters (when they are concrete)."""
        check_nonnegative_scalar(self.reg_covar, "reg_covar")
        check_nonnegative_scalar(self.alpha, "alpha")
        check_nonnegative_scalar(self.t0, "t0")
        alpha, t0 = concrete(self.alpha), concrete(self.t0)
        if alpha is not None and not 0.5 < alpha <= 1:
            raise ValueError(f"alpha must be in (0.5, 1], got {alpha}")
        if t0 is not None and t0 < 1:
            raise ValueError(f"t0 must be >= 1, got {t0}")

    def step_size(self, count) -> jax.Array:
        """``rho = (count + t0)^(-alpha)`` for the update after ``count`` updates."""
        return (jnp.asarray(count) + self.t0) ** (-jnp.asarray(self.alpha))

    def init(self, gmm: GMM) -> OnlineEMState:
        """The starting state: the statistics ``(pi_j, pi_j Sigma_j)`` of ``gmm``."""
        check_gmm(gmm)
        counts, scatter = _stats_of(gmm)
        return OnlineEMState(gmm, counts, scatter, jnp.asarray(0, jnp.int32))

    def update(self, state: OnlineEMState, x, *, sample_weight=None):
        """One stepwise-EM update with the minibatch ``x`` ``(m, d)``.

        Returns:
            ``(OnlineEMState, OnlineEMInfo)``.
        """
        self.check()
        x, w = prepare(state.gmm, x, sample_weight)
        return _online_update(self, state, x, w)

    def run(self, gmm0: GMM, batches: Iterable):
        """Apply :meth:`update` to every minibatch of an iterable, in order.

        Args:
            gmm0: the starting model.
            batches: an iterable of ``(m, d)`` arrays or ``(x, sample_weight)``
                pairs (e.g. a generator reading a file, or shuffled slices of an
                array, repeated for several passes).

        Returns:
            ``(state, log_likelihoods)``: the final :class:`OnlineEMState` and the
            ``(n_batches,)`` mean log-likelihood of each minibatch before its update.
        """
        state = self.init(gmm0)
        lls = []
        for batch in batches:
            x, w = batch if isinstance(batch, tuple) else (batch, None)
            state, info = self.update(state, x, sample_weight=w)
            lls.append(info.log_likelihood)
        if not lls:
            raise ValueError("batches must hold at least one minibatch")
        return state, jnp.stack(lls)


jax.tree_util.register_dataclass(
    OnlineEM, data_fields=["alpha", "t0", "reg_covar"], meta_fields=[]
)
