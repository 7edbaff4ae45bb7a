"""Memory measurements, a large data file and fresh child processes, shared by
the out-of-core benchmarks (imported by the scripts next to it)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import numpy as np

MB = 2**20


def proc_status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024  # kB -> bytes
    return out


def reset_peak() -> bool:
    """Reset the process' peak resident memory (``VmHWM`` of :func:`proc_status`)
    to its current resident memory, so that a later ``VmHWM`` is the peak of
    what ran in between (Linux: ``/proc/self/clear_refs``). ``False`` where the
    kernel does not allow it (then ``VmHWM`` is the peak since the start)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakSampler:
    """Samples RssAnon and RssFile every 10 ms; keeps the maxima."""

    def __init__(self):
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            s = proc_status()
            for key in self.peak:
                self.peak[key] = max(self.peak[key], s[key])
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def write_data(
    path: pathlib.Path, rows: int, d: int, block: int = 500_000, spread: float = 4.0
) -> None:
    """A 4-component Gaussian mixture of unit covariances whose centers are drawn
    with standard deviation ``spread`` (4: well separated, 1.5: overlapping),
    written block by block (never all in memory)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=spread, size=(4, d))
    header = {"descr": "<f8", "fortran_order": False, "shape": (rows, d)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, rows, block):
            m = min(block, rows - start)
            labels = rng.integers(0, 4, size=m)
            x = centers[labels] + rng.normal(size=(m, d))
            f.write(np.ascontiguousarray(x, "<f8").tobytes())


def run_script(
    script: str,
    args: list[str],
    *,
    env: dict | None = None,
    timeout: float | None = None,
) -> dict:
    """Run ``script`` with ``args`` in a fresh Python process, with the
    repository on its path (its peak memory is its own); its last line of
    output is a JSON object, returned. ``env``: variables set (a ``None``
    value unsets one) on top of this process' environment; ``timeout``:
    seconds before the child is killed (``subprocess.TimeoutExpired``)."""
    root = pathlib.Path(__file__).resolve().parents[1]
    environ = dict(os.environ, PYTHONPATH=str(root))
    for key, value in (env or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    proc = subprocess.run(
        [sys.executable, script, *args],
        capture_output=True,
        text=True,
        env=environ,
        check=False,
        timeout=timeout,
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])
