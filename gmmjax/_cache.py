"""JAX's persistent compilation cache in a per-user directory.

A fresh process compiles every program it runs: seconds for the estimator's
first fit, most of the run time of a short ``gmmjax fit``. With the cache, a
later process loads the compiled programs from disk instead. The command line
and :class:`gmmjax.sklearn.GaussianMixture` turn it on by themselves
(:func:`default_cache`); library code turns it on with
:func:`enable_compilation_cache`. One switch, the environment variable
``GMMJAX_CACHE_DIR``: a path moves the cache, ``off`` turns the default off.

Entries are written to a temporary file and renamed into place, so processes
that share the directory (joblib workers, parallel runs) never read a partly
written entry, and a process killed while writing leaves none behind: JAX's own
writer (0.10) writes the entry's file in place, and a torn entry stays in the
directory, read and rejected with a warning by every later process.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path

__all__ = [
    "ENV",
    "default_cache",
    "default_directory",
    "enable_compilation_cache",
    "in_use",
]

#: The environment variable of the cache's directory; ``off`` turns it off.
ENV = "GMMJAX_CACHE_DIR"
_OFF = frozenset({"off", "0", "false", "no"})

_lock = threading.RLock()
_default_done = False
_default: Path | None = None


def default_directory() -> Path | None:
    """The directory of the default cache, or ``None`` when ``GMMJAX_CACHE_DIR``
    turns it off.

    ``GMMJAX_CACHE_DIR`` when set (``off``, ``0``, ``false`` or ``no`` turn the
    cache off; empty is unset), else ``gmmjax/jax-<jax version>`` in the user's
    cache folder: ``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux,
    ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows.
    """
    value = os.environ.get(ENV, "").strip()
    if value.lower() in _OFF:
        return None
    if value:
        return Path(value)
    import jax

    return _user_cache_home() / "gmmjax" / f"jax-{jax.__version__}"


def _user_cache_home() -> Path:
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA", "")
        return Path(local) if local else Path.home() / "AppData" / "Local"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG specification: a relative path is invalid and is ignored
    return Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"


def enable_compilation_cache(
    directory: str | os.PathLike | None = None,
) -> Path | None:
    """Keep compiled programs on disk, so that later processes skip compiling them.

    Turns on JAX's persistent compilation cache (``jax_compilation_cache_dir``)
    and lowers its thresholds so that every program is kept: JAX's default
    keeps only programs that took a second or more to compile, which leaves out
    nearly all of gmmjax's. It may be called at any time, also after programs
    were compiled; those are not written, the next ones are. The command line and
    :class:`gmmjax.sklearn.GaussianMixture` call it by themselves, once per
    process, unless ``GMMJAX_CACHE_DIR=off``.

    The cache is trusted: whoever can write to its directory can make your
    process run their code. Keep it in a directory only you can write to.

    Args:
        directory: where to keep the programs. ``None``: a cache you configured
            for JAX (``jax_compilation_cache_dir`` or
            ``JAX_COMPILATION_CACHE_DIR``) is left as it is; otherwise
            ``GMMJAX_CACHE_DIR`` when set (``off`` turns the cache off), else
            ``gmmjax/jax-<jax version>`` in the user's cache folder
            (``~/.cache`` on Linux, ``~/Library/Caches`` on macOS,
            ``%LOCALAPPDATA%`` on Windows).

    Returns:
        The directory in use, or ``None`` when the cache is off.

    Raises:
        OSError: the directory cannot be created or written to.
        ValueError: ``directory`` is a URL: set ``jax_compilation_cache_dir``
            yourself for a remote cache.

    Example:
        >>> import gmmjax
        >>> directory = gmmjax.enable_compilation_cache()
        >>> directory is None or directory.is_dir()
        True
    """
    import jax

    with _lock:
        if directory is None:
            if jax.config.jax_compilation_cache_dir:
                return in_use()  # the user's own cache, or an earlier call's
            directory = default_directory()
            if directory is None:
                return None
        path = _writable(directory)
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        # -1: no size threshold, and none that JAX substitutes for it
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        _open(path)
        return in_use()


def default_cache() -> Path | None:
    """The cache of the command line and the estimator: :func:`enable_compilation_cache`
    with the default directory, once per process.

    A directory that cannot be used is a ``RuntimeWarning`` and no cache, never
    a failed fit.

    Returns:
        The directory in use, or ``None``.
    """
    global _default_done, _default
    with _lock:
        if not _default_done:
            _default_done = True
            try:
                _default = enable_compilation_cache()
            except (OSError, ValueError, RuntimeError) as err:
                warnings.warn(
                    f"no persistent compilation cache: {err}; set {ENV} to a "
                    "writable directory, or to 'off'",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return _default


def in_use() -> Path | None:
    """The directory of JAX's persistent compilation cache, if one is on."""
    import jax

    directory = jax.config.jax_compilation_cache_dir
    if not (directory and jax.config.jax_enable_compilation_cache):
        return None
    return Path(directory)


def _writable(directory: str | os.PathLike) -> Path:
    """``directory`` as an absolute path, created, after one trial write: JAX warns
    at every program it fails to write, so an unusable directory is one error
    here instead."""
    text = os.fspath(directory)
    if "://" in text:
        raise ValueError(
            f"the compilation cache must be a local directory, got {text!r}; for a "
            "remote cache set jax_compilation_cache_dir yourself"
        )
    # absolute: JAX opens the directory at the next compilation, maybe after a chdir
    path = Path(text).expanduser().absolute()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise OSError(
            f"cannot write compiled programs to {path} "
            f"({err.strerror or type(err).__name__})"
        ) from err
    return path


def _open(path: Path) -> None:
    """Open JAX's file cache at ``path`` now, with atomic writes.

    JAX opens its cache directory once per process, at the first compilation
    after one is set; ``reset_cache`` makes it open the new one. Where JAX's
    internals differ from 0.9-0.10's, or it checks the cache's contents, JAX
    opens the directory itself, with its own writer.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()
    if jax.config.jax_compilation_cache_check_contents:
        return
    try:
        from jax._src import compilation_cache as internals

        cache = _atomic_file_cache()(
            str(path), max_size=jax.config.jax_compilation_cache_max_size
        )
        with internals._cache_initialized_mutex:
            internals._cache = cache
            internals._cache_initialized = True
    except Exception:  # JAX's internals changed: JAX opens it at the next compile
        return


@functools.cache
def _atomic_file_cache() -> type:
    """JAX's file cache with entries written to a temporary file, then renamed."""
    from jax._src import lru_cache

    class AtomicFileCache(lru_cache.LRUCache):
        def put(self, key: str, value: bytes) -> None:
            if self.eviction_enabled:  # JAX writes under its file lock
                return super().put(key, value)
            target = Path(str(self.path), f"{key}{lru_cache._CACHE_SUFFIX}")
            if not key or target.exists():
                return super().put(key, value)  # JAX's error, or nothing to do
            handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(value)
                os.replace(temporary, target)
            except BaseException as err:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                # on Windows a reader's open file blocks the rename: another
                # process has written the entry, which is all that was wanted
                if not (isinstance(err, OSError) and target.exists()):
                    raise

    return AtomicFileCache
