"""The persistent compilation cache: a second process compiles nothing new (and
traces no stored program), one switch turns it off, an unusable directory is a
warning, a user's own JAX cache stands, and entries are written whole."""

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
from gmmjax import _cache, _stored
from gmmjax._multistart import multistart_masked
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
events, traced = [], []
jax.monitoring.register_event_listener(lambda event, **_: events.append(event))
def on_duration(event, duration, fun_name=None, **_):
    if event.endswith("jaxpr_trace_duration"):
        traced.append(str(fun_name))
jax.monitoring.register_event_duration_secs_listener(on_duration)
import gmmjax
from gmmjax.sklearn import GaussianMixture
x = np.random.default_rng(0).normal(size=(40, 2))
gm = GaussianMixture(2, max_iter=5, random_state=0).fit(x)
score = gm.score_samples(x)
# the restarts and the diagnosis of `gmmjax fit`
runs = gmmjax.multistart(gmmjax.EM(), jax.random.key(0), x, n_components=2, n_init=3)
diagnosis = gmmjax.diagnose(gmmjax.best_of(runs).gmm, x)
names = ("compile_requests_use_cache", "cache_hits", "cache_misses")
out = {n: events.count(f"/jax/compilation_cache/{n}") for n in names}
out["traced"] = sorted({name for name in traced if name.startswith("stored_")})
out["score"] = score.tolist()
out["restarts"] = runs.log_likelihood.tolist()
out["diagnosis"] = [diagnosis.kind, diagnosis.eigenvalues.tolist()]
print(json.dumps(out))
"""


def test_a_second_process_compiles_nothing(tmp_path):
    # cache_misses counts the programs compiled and written to the cache; the
    # estimator's fit is also kept lowered (gmmjax._stored), so a second process
    # does not even trace it
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
    stored_programs = ["stored_diagnosis", "stored_estimator_fit", "stored_multistart"]
    assert first["traced"] == stored_programs and second["traced"] == []
    assert first == {**first, "cache_hits": 0, "cache_misses": programs}
    expected = {**first, "cache_hits": programs, "cache_misses": 0}
    # the same scores, restarts and diagnosis too
    assert second == {**expected, "traced": []}
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert entries.pop() == "programs"
    assert len(entries) == programs and all(n.endswith("-cache") for n in entries)
    stored = sorted(p.name for p in (tmp_path / "cache" / "programs").iterdir())
    assert [name.rsplit("-", 1)[0] for name in stored] == [
        "diagnosis",
        "estimator-fit",
        "multistart",
    ]


def test_a_damaged_stored_program_is_stored_anew(tmp_path, monkeypatch, fresh_process):
    gmmjax.enable_compilation_cache(tmp_path)
    monkeypatch.setattr(_stored, "_loaded", {})
    x = np.random.default_rng(1).normal(size=(30, 2))
    first = GaussianMixture(2, random_state=0).fit(x).means_
    (path,) = (tmp_path / "programs").iterdir()
    whole = path.stat().st_size
    path.write_bytes(path.read_bytes()[: whole // 2])  # a truncated file
    monkeypatch.setattr(_stored, "_loaded", {})  # as a new process finds it
    again = GaussianMixture(2, random_state=0).fit(x).means_
    np.testing.assert_array_equal(again, first)
    assert path.stat().st_size == whole


def test_without_a_cache_no_program_is_stored(tmp_path, monkeypatch, fresh_process):
    monkeypatch.setattr(_stored, "_loaded", {})
    assert _cache.in_use() is None
    double = jax.jit(lambda a, scale: scale * a)
    out = _stored.call_stored("double", double, (np.arange(3.0), 2.0), {})
    np.testing.assert_array_equal(out, [0.0, 2.0, 4.0])
    assert _stored._loaded == {}


def test_a_stored_program_keeps_python_scalars_weakly_typed(
    tmp_path, monkeypatch, fresh_process
):
    # jit sees a Python float as a weak type, which takes the dtype of the array
    # it meets: the stored program must too
    gmmjax.enable_compilation_cache(tmp_path)
    monkeypatch.setattr(_stored, "_loaded", {})
    scale = jax.jit(lambda a, factor: a * factor)
    args = (np.ones(3, np.float32), 0.5)
    out = _stored.call_stored("scale", scale, args, {})
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, scale(*args))
    (path,) = (tmp_path / "programs").iterdir()
    assert path.name.startswith("scale-")


def test_stored_restarts_and_diagnosis_equal_the_plain_programs(
    tmp_path, monkeypatch, fresh_process
):
    # without a cache (fresh_process) the jitted programs run; with one, their
    # exported twins: the same StableHLO, so the same bits
    monkeypatch.setattr(_stored, "_loaded", {})
    x = np.random.default_rng(2).normal(size=(40, 2))

    def restarts_and_diagnosis():
        runs = gmmjax.multistart(
            gmmjax.EM(), jax.random.key(1), x, n_components=2, n_init=3
        )
        # select's program: the best restart of every k, masked components
        cells = multistart_masked(
            gmmjax.EM(), jax.random.key(1), x, n_active=[1, 2], n_init=2
        )
        return runs, cells, gmmjax.diagnose(gmmjax.best_of(runs).gmm, x)

    plain = restarts_and_diagnosis()
    assert _stored._loaded == {}
    gmmjax.enable_compilation_cache(tmp_path)
    stored = restarts_and_diagnosis()
    names = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "programs").iterdir())
    assert names == ["best-masked", "diagnosis", "multistart"]
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(stored), strict=True):
        np.testing.assert_array_equal(a, b)


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
