"""Host-side data for chunked EM: blocks of an array or a replayable stream,
checked and regrouped into equal, zero-weight-padded chunks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import jax.numpy as jnp
import numpy as np

__all__ = ["blocks_of", "chunks", "float_dtype"]


def float_dtype(dtype):
    dtype = np.dtype(dtype)
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise TypeError(f"data must hold numbers, got dtype {dtype}")
    if np.iscomplexobj(np.empty(0, dtype)):
        raise TypeError(f"data must be real, got dtype {dtype}")
    if not np.issubdtype(dtype, np.floating):
        return jnp.result_type(float)
    return dtype


def blocks_of(data, sample_weight):
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
        return blocks, float_dtype(np.asarray(first[0]).dtype)
    if isinstance(data, (str, bytes)) or not hasattr(data, "__getitem__"):
        raise TypeError(
            "data must be an array (e.g. np.load(path, mmap_mode='r')) or a callable "
            f"returning an iterator of arrays, got {type(data).__name__}"
        )
    if not (hasattr(data, "shape") and hasattr(data, "dtype")):
        data = np.asarray(data)
    dtype = float_dtype(data.dtype)
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


def chunks(blocks: Iterator, chunk_size: int, d: int, dtype, check: bool):
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
