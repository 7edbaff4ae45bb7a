"""Save and load mixtures: an ``.npz`` archive with JSON metadata, never pickle.

The archive holds the model's leaves exactly as stored (``logits``, ``means``,
``log_diag`` and, for ``full``/``tied``, ``off_diag``), so a round trip is bit for
bit, plus ``metadata``: a JSON string with the format name and version, the
covariance type, the dtype and the shape ``(k, d)``.
"""

from __future__ import annotations

import io as _io
import json
import os
import zipfile

import jax.numpy as jnp
import numpy as np

from ._density import check_gmm
from ._gmm import GMM
from ._validation import COVARIANCE_TYPES, concrete

FORMAT = "gmmjax.GMM"
FORMAT_VERSION = 1
_LEAVES = ("logits", "means", "log_diag", "off_diag")


def _expected_shapes(covariance_type: str, k: int, d: int) -> dict:
    m = d * (d - 1) // 2
    return {
        "full": {"log_diag": (k, d), "off_diag": (k, m)},
        "diag": {"log_diag": (k, d), "off_diag": None},
        "spherical": {"log_diag": (k,), "off_diag": None},
        "tied": {"log_diag": (d,), "off_diag": (m,)},
    }[covariance_type] | {"logits": (k,), "means": (k, d)}


def save(path, gmm: GMM) -> None:
    """Write a mixture to ``path`` as an ``.npz`` archive (no pickle).

    The file is written exactly at ``path`` (no suffix is added).

    Args:
        path: a file path (``str`` or ``os.PathLike``).
        gmm: a :class:`gmmjax.GMM` with concrete (not traced) leaves.

    Raises:
        TypeError: when ``gmm`` is not a :class:`gmmjax.GMM`.
        ValueError: when its leaves are traced or not finite.

    Example:
        >>> import os, tempfile, gmmjax
        >>> from gmmjax import io
        >>> gmm = gmmjax.GMM.from_natural([0.4, 0.6], [[0.0], [3.0]], [1.0, 2.0],
        ...                               covariance_type="spherical")
        >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
        >>> io.save(path, gmm)
        >>> back = io.load(path)
        >>> back.covariance_type, [round(float(w), 2) for w in back.weights]
        ('spherical', [0.4, 0.6])
    """
    _check_path(path)
    check_gmm(gmm)
    arrays = {}
    for name in _LEAVES:
        leaf = getattr(gmm, name)
        if leaf is None:
            continue
        value = concrete(leaf)
        if value is None:
            raise ValueError(f"gmm.{name} is traced: save a concrete model")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"gmm.{name} is not finite: refusing to save it")
        arrays[name] = value
    metadata = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "covariance_type": gmm.covariance_type,
        "dtype": str(arrays["means"].dtype),
        "n_components": int(gmm.n_components),
        "n_features": int(gmm.n_features),
    }
    buffer = _io.BytesIO()
    np.savez(buffer, metadata=np.asarray(json.dumps(metadata)), **arrays)
    with open(os.fspath(path), "wb") as handle:
        handle.write(buffer.getvalue())


def load(path) -> GMM:
    """Read a mixture written by :func:`save`.

    The leaves come back with their stored dtype (``float64`` needs
    ``jax_enable_x64``; otherwise JAX keeps them as ``float32``).

    Args:
        path: a file path (``str`` or ``os.PathLike``).

    Returns:
        The :class:`gmmjax.GMM`.

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: when the file is not a gmmjax model archive (corrupt,
            truncated, foreign, another format version, or inconsistent shapes).

    Example:
        >>> import os, tempfile, gmmjax
        >>> from gmmjax import io
        >>> gmm = gmmjax.GMM.from_natural([1.0], [[1.0, 2.0]], [[[2.0, 0.5],
        ...                               [0.5, 1.0]]])
        >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
        >>> io.save(path, gmm)
        >>> [round(float(v), 3) for v in io.load(path).covariances[0].ravel()]
        [2.0, 0.5, 0.5, 1.0]
    """
    name = os.fsdecode(_check_path(path))
    if not os.path.isfile(name):
        raise FileNotFoundError(f"no such model file: {name}")
    try:
        archive = np.load(name, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive")
        with archive:
            contents = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{name} is not a gmmjax model archive: {err}") from None
    if "metadata" not in contents:
        raise ValueError(f"{name} is not a gmmjax model archive: no metadata")
    metadata = _read_metadata(name, contents.pop("metadata"))
    ctype = metadata["covariance_type"]
    k, d = metadata["n_components"], metadata["n_features"]
    expected = _expected_shapes(ctype, k, d)
    unknown = set(contents) - {key for key, s in expected.items() if s is not None}
    if unknown:
        raise ValueError(f"{name}: unexpected arrays {sorted(unknown)}")
    leaves = {}
    for key, shape in expected.items():
        if shape is None:
            leaves[key] = None
            continue
        if key not in contents:
            raise ValueError(f"{name}: the array {key!r} is missing")
        value = contents[key]
        if value.shape != shape:
            raise ValueError(
                f"{name}: {key} has shape {value.shape}, expected {shape} for a "
                f"{ctype!r} model with k={k}, d={d}"
            )
        if str(value.dtype) != metadata["dtype"]:
            raise ValueError(
                f"{name}: {key} has dtype {value.dtype}, the metadata says "
                f"{metadata['dtype']}"
            )
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name}: {key} contains NaN or infinite values")
        leaves[key] = jnp.asarray(value)
    return GMM(
        leaves["logits"],
        leaves["means"],
        leaves["log_diag"],
        leaves["off_diag"],
        ctype,
    )


def _check_path(path):
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(
            f"path must be a str or os.PathLike file path, got {type(path).__name__}"
        )
    return os.fspath(path)


def _read_metadata(name: str, raw: np.ndarray) -> dict:
    if raw.shape != () or raw.dtype.kind != "U":
        raise ValueError(f"{name}: the metadata entry is not a JSON string")
    try:
        metadata = json.loads(str(raw))
    except json.JSONDecodeError as err:
        raise ValueError(f"{name}: the metadata is not valid JSON: {err}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f"{name} is not a gmmjax model archive (format mismatch)")
    version = metadata.get("version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{name}: format version {version!r} is not supported (this gmmjax "
            f"reads version {FORMAT_VERSION})"
        )
    if metadata.get("covariance_type") not in COVARIANCE_TYPES:
        raise ValueError(
            f"{name}: unknown covariance_type {metadata.get('covariance_type')!r}"
        )
    if metadata.get("dtype") not in ("float16", "bfloat16", "float32", "float64"):
        raise ValueError(f"{name}: unsupported dtype {metadata.get('dtype')!r}")
    for key in ("n_components", "n_features"):
        value = metadata.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: bad {key} {value!r} in the metadata")
    return metadata
