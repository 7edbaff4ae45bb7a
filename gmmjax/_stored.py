"""Lowered programs kept on disk, so that a later process neither traces nor
lowers them.

JAX's persistent compilation cache keeps XLA's executables, but the key of an
entry is the lowered program: a fresh process still traces and lowers a program
before it can look the executable up (0.6 s of the estimator's 0.8 s warm first
fit on iris). :func:`call_stored` also keeps the lowered program itself
(``jax.export``, serialized) in a ``programs`` folder of the compilation cache,
keyed by everything that shapes it: gmmjax's source, the JAX and jaxlib
versions, the platform, the arguments' structure, shapes and dtypes, the static
arguments and the 64-bit mode. A later process deserializes it in milliseconds;
XLA's executable then comes from the persistent cache. The program is the same
StableHLO either way, so are the results.

Only for functions whose static arguments and pytree structure print the same
in every process (no functions or object addresses among them): the
estimator's EM fit, :func:`gmmjax.multistart` with :class:`gmmjax.EM` (the
``gmmjax fit`` command's restarts) and :func:`gmmjax.diagnose`'s program.
Anything that fails on the way (an unwritable folder, a truncated file, an
export JAX refuses) falls back to the plain jitted call.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import tempfile
import threading
from pathlib import Path

import jax

from ._cache import in_use

__all__ = ["call_stored"]

_lock = threading.Lock()
# key -> (jitted call of the exported program, output tree), or None: plain call
_loaded: dict[str, tuple | None] = {}


@functools.cache
def _source_digest() -> str:
    """A digest of gmmjax's own source: a changed program is a new key."""
    digest = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _avals(leaves):
    """The abstract values ``jit`` sees: Python scalars are weakly typed."""
    return [
        jax.ShapeDtypeStruct(t.shape, t.dtype, weak_type=t.weak_type)
        for t in map(jax.typeof, leaves)
    ]


def _key(name: str, leaves, treedef, static: dict, options: dict) -> str:
    import jaxlib

    avals = [repr(a) for a in _avals(leaves)]
    text = repr(
        (
            name,
            _source_digest(),
            jax.__version__,
            jaxlib.__version__,
            jax.default_backend(),
            str(treedef),
            avals,
            sorted(static.items()),
            sorted(options.items()),
            bool(jax.config.jax_enable_x64),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _export(name, fn, leaves, treedef, static):
    """The exported program of ``fn`` and its output tree."""
    out_tree = []
    # the jitted function's own body: a nested jit takes no compiler options
    body = getattr(fn, "__wrapped__", fn)

    def flat(*arrays):
        out = body(*jax.tree_util.tree_unflatten(treedef, arrays), **static)
        parts, tree = jax.tree_util.tree_flatten(out)
        out_tree.append(tree)
        return parts

    flat.__name__ = flat.__qualname__ = "stored_" + name.replace("-", "_")
    exported = jax.export.export(jax.jit(flat))(*_avals(leaves))
    return exported, out_tree[0]


def _write(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(blob)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _program(name, fn, leaves, treedef, static, options):
    """``(jitted call, output tree)`` of the stored program, or ``None``."""
    directory = in_use()
    if directory is None:
        return None
    key = _key(name, leaves, treedef, static, options)
    with _lock:
        if key in _loaded:
            return _loaded[key]
    path = directory / "programs" / f"{name}-{key[:32]}.bin"
    program = None
    try:
        exported_bytes, out_tree = pickle.loads(path.read_bytes())
        exported = jax.export.deserialize(bytearray(exported_bytes))
        program = (jax.jit(exported.call, compiler_options=options), out_tree)
    except Exception:  # not stored yet, or unreadable: store it anew
        try:
            exported, out_tree = _export(name, fn, leaves, treedef, static)
            _write(path, pickle.dumps((exported.serialize(), out_tree)))
            program = (jax.jit(exported.call, compiler_options=options), out_tree)
        except Exception:
            program = None
    with _lock:
        _loaded[key] = program
    return program


def call_stored(name: str, fn, args: tuple, static: dict, compiler_options=None):
    """``fn(*args, **static)``, through a stored lowered program when JAX's
    persistent compilation cache is on (see the module's docstring).

    Args:
        name: a label of the program (part of its file name).
        fn: a jitted function (or one that only calls jitted functions).
        args: its traced arguments (a pytree). Under a transformation (tracers
            among them) ``fn`` is called directly: an exported program has no
            batching or differentiation rule.
        static: its static keyword arguments.
        compiler_options: XLA options of the stored program's compilation; ``fn``
            must be jitted with the same ones. By default a
            :class:`gmmjax._levels.ByWork` function's options for ``args``.

    Returns:
        What ``fn`` returns.
    """
    leaves, treedef = jax.tree_util.tree_flatten(args)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return fn(*args, **static)
    if compiler_options is None and hasattr(fn, "options"):
        compiler_options = fn.options(*args, **static)
    program = _program(name, fn, leaves, treedef, static, compiler_options or {})
    if program is None:
        return fn(*args, **static)
    call, out_tree = program
    return jax.tree_util.tree_unflatten(out_tree, call(*leaves))
