"""The persistent compilation cache: a second process compiles nothing new, one
switch turns it off, an unusable directory is a warning, a user's own JAX cache
stands, and entries are written whole."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache as jax_cache

import gmmjax
from gmmjax import _cache
from gmmjax.sklearn import GaussianMixture

ROOT = Path(__file__).resolve().parents[1]
_SETTINGS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@pytest.fixture
def fresh_process(monkeypatch):
    """This process as a fresh one sees it: no JAX cache directory, the default
    cache not yet enabled; the settings of the test run come back afterwards."""
    saved = {name: getattr(jax.config, name) for name in _SETTINGS}
    monkeypatch.setattr(_cache, "_default_done", False)
    monkeypatch.setattr(_cache, "_default", None)
    jax.config.update("jax_compilation_cache_dir", None)
    jax_cache.reset_cache()
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    if saved["jax_compilation_cache_dir"]:
        _cache._open(Path(saved["jax_compilation_cache_dir"]))
    else:
        jax_cache.reset_cache()


SCRIPT = """
import json, jax, numpy as np
events = []
jax.monitoring.register_event_listener(lambda event, **_: events.append(event))
from gmmjax.sklearn import GaussianMixture
x = np.random.default_rng(0).normal(size=(40, 2))
GaussianMixture(2, max_iter=5, random_state=0).fit(x).score_samples(x)
names = ("compile_requests_use_cache", "cache_hits", "cache_misses")
print(json.dumps({n: events.count(f"/jax/compilation_cache/{n}") for n in names}))
"""


def test_a_second_process_compiles_nothing(tmp_path):
    # cache_misses counts the programs compiled and written to the cache
    env = {**os.environ, _cache.ENV: str(tmp_path / "cache")}

    def run():
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        assert "compilation cache" not in out.stderr, out.stderr
        return json.loads(out.stdout.splitlines()[-1])

    first, second = run(), run()
    programs = first["compile_requests_use_cache"]
    assert programs > 0
    assert first == {**first, "cache_hits": 0, "cache_misses": programs}
    assert second == {**first, "cache_hits": programs, "cache_misses": 0}
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(entries) == programs and all(n.endswith("-cache") for n in entries)


@pytest.mark.parametrize("value", ["off", "OFF", "0", "false", " no "])
def test_the_switch_turns_it_off(value, monkeypatch, fresh_process):
    monkeypatch.setenv(_cache.ENV, value)
    assert _cache.default_directory() is None
    assert gmmjax.enable_compilation_cache() is None
    assert _cache.default_cache() is None
    assert jax.config.jax_compilation_cache_dir is None


@pytest.mark.skipif(sys.platform != "linux", reason="the Linux cache folder")
def test_default_directory(tmp_path, monkeypatch):
    version = f"jax-{jax.__version__}"
    monkeypatch.setenv(_cache.ENV, "")  # empty is unset
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _cache.default_directory() == tmp_path / "gmmjax" / version
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # invalid: ignored
    assert _cache.default_directory() == Path.home() / ".cache" / "gmmjax" / version
    monkeypatch.setenv(_cache.ENV, str(tmp_path / "elsewhere"))
    assert _cache.default_directory() == tmp_path / "elsewhere"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_an_unusable_directory_warns_and_the_fit_works(
    tmp_path, monkeypatch, fresh_process
):
    # a file where a folder should be: unusable even for root
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(_cache.ENV, str(tmp_path / "file" / "cache"))
    with pytest.raises(OSError, match="cannot write compiled programs to"):
        gmmjax.enable_compilation_cache()
    x = np.random.default_rng(0).normal(size=(40, 2))
    with pytest.warns(RuntimeWarning, match="no persistent compilation cache"):
        gm = GaussianMixture(2, max_iter=5, random_state=0).fit(x)
    assert np.isfinite(gm.score(x))
    assert jax.config.jax_compilation_cache_dir is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GaussianMixture(2, max_iter=5, random_state=1).fit(x)
    assert not [w for w in caught if "compilation cache" in str(w.message)]  # once
    with pytest.raises(ValueError, match="local directory"):
        gmmjax.enable_compilation_cache("gs://bucket/cache")


def test_a_users_jax_cache_stands(tmp_path, fresh_process):
    mine = str(tmp_path / "mine")
    jax.config.update("jax_compilation_cache_dir", mine)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
    assert gmmjax.enable_compilation_cache() == Path(mine)
    assert _cache.default_cache() == Path(mine)
    assert jax.config.jax_compilation_cache_dir == mine
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.0
    # a directory given explicitly replaces it, with every program kept
    ours = tmp_path / "ours"
    assert gmmjax.enable_compilation_cache(ours) == ours
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    assert jax.config.jax_persistent_cache_min_entry_size_bytes == -1


def test_enabled_late_and_written_whole(tmp_path, monkeypatch, fresh_process):
    jax.jit(lambda a: a - 1.0)(np.arange(3.0))  # compiled before the cache
    directory = gmmjax.enable_compilation_cache(tmp_path / "cache")
    jax.jit(lambda a: a * 3.0 + 1.0)(np.arange(3.0))
    (entry,) = directory.iterdir()  # nothing but the entry: no temporary file
    assert entry.name.startswith("jit__lambda") and entry.name.endswith("-cache")
    # a write that fails leaves neither an entry nor a temporary file
    cache = _cache._atomic_file_cache()(str(directory), max_size=-1)

    def full(*_):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", full)
        with pytest.raises(OSError, match="No space"):
            cache.put("key", b"value")
    assert list(directory.iterdir()) == [entry]
    cache.put("key", b"value")
    assert cache.get("key") == b"value"
