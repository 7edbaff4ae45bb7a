"""What every benchmark records about the machine it ran on (imported by the
scripts next to it)."""

from __future__ import annotations

import importlib.metadata
import os
import platform


def _version(distribution: str) -> str | None:
    if distribution == "python":
        return platform.python_version()
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            return round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where the OS has none)."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def machine_info(*distributions: str) -> dict:
    """The platform, cores, memory, JAX's backend and devices, the load average
    now (call it when the run starts), and the versions of Python, JAX, jaxlib,
    NumPy and the named distributions (``None`` when not installed)."""
    import jax

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "load_average_at_start": load_average(),
        "versions": {
            name: _version(name)
            for name in ("python", "jax", "jaxlib", "numpy", *distributions)
        },
    }
