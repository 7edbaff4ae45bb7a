"""Devices: data sharded along samples, restarts along a second mesh axis.

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

Data larger than memory: see :mod:`gmmjax._streaming`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ._validation import check_data, check_positive_int, check_sample_weight

__all__ = [
    "DATA_AXIS",
    "RESTART_AXIS",
    "device_mesh",
    "shard",
    "shard_padded",
    "shard_restarts",
]

DATA_AXIS = "data"
RESTART_AXIS = "restarts"


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
