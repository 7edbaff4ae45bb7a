"""Data sharded over devices and over hosts (gmmjax/_sharding.py)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import COVARIANCE_TYPES, once_per_run

import gmmjax

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Sharded and single-device runs differ only in the order of the floating-point
# sums (per-device partial sums, then an all-reduce): a few ulps per step, far
# below 1e-9 in float64 for these well-conditioned fits of ~10 steps.
SHARD_TOL = 1e-9


def run_sharded_script(_) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "sharded_script.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    # one run for all xdist workers (about a minute of CPU time)
    return once_per_run(tmp_path_factory, "sharded", run_sharded_script)[1]


def test_shard_places_rows_on_four_devices(sharded):
    assert sharded["n_devices"] == 4
    assert sharded["shard"] == {"devices": 4, "shard_rows": [100]}


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_sharded_fit_equals_single_device(sharded, ctype):
    res = sharded["fit"][ctype]
    assert res["gmm"] < SHARD_TOL
    assert res["ll_rel"] < SHARD_TOL
    assert res["steps"][0] == res["steps"][1]
    assert res["status"] == [gmmjax.Status.CONVERGED] * 2
    assert res["out_devices"] == 4


def test_kmeans_plusplus_on_sharded_data(sharded):
    assert sharded["init"] < SHARD_TOL


def test_sharded_step_reduces_across_devices(sharded):
    # partial sums on each device, combined by an all-reduce; the data never gathered
    assert sharded["hlo"] == {"all_reduce": True, "all_gather": False}


def test_padded_shards_equal_unpadded_fit(sharded):
    res = sharded["padded"]
    assert res["rows"] == 400
    assert res["gmm"] < SHARD_TOL and res["ll_rel"] < SHARD_TOL
    assert res["steps"][0] == res["steps"][1]
    assert "shard_padded" in sharded["odd_error"]


def test_restarts_on_a_2d_mesh_equal_a_loop(sharded):
    res = sharded["restarts"]
    assert res["restart_spec"] == ["restarts", None, None]
    assert res["gmm"] < SHARD_TOL
    # total log-likelihoods of ~1500: 1e-9 relative
    assert res["ll"] < 1e-9 * 1500
    assert res["steps"][0] == res["steps"][1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_two_processes_fit_one_global_array():
    # jax.distributed on one machine: 2 processes x 2 CPU devices, gloo collectives
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT)
    port = str(_free_port())
    script = str(ROOT / "tests" / "multihost_script.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script, port, str(i)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    for res in results:
        assert res["process_count"] == 2 and res["device_count"] == 4
        assert res["global_shape"] == [272, 2] and not res["fully_addressable"]
        assert res["gmm"] < SHARD_TOL
        assert abs(res["ll"][0] - res["ll"][1]) < SHARD_TOL * abs(res["ll"][1])
        assert res["steps"][0] == res["steps"][1]
        assert res["status"] == [gmmjax.Status.CONVERGED] * 2
    # both processes hold the same (replicated) result
    assert results[0]["ll"][0] == results[1]["ll"][0]


def test_sharded_multistart_equals_unsharded(sharded):
    res = sharded["multistart"]
    assert res["gmm"] < SHARD_TOL and res["ll_rel"] < SHARD_TOL
    assert res["steps"][0] == res["steps"][1]


def test_estimator_fits_sharded_input(sharded):
    res = sharded["estimator"]
    assert res["means"] < SHARD_TOL and res["covariances"] < SHARD_TOL
    assert abs(res["score"][0] - res["score"][1]) < SHARD_TOL * abs(res["score"][0])
    assert res["predict_equal"]


def test_shard_rejects_bad_input():
    with pytest.raises(ValueError, match="x must be a 2-D"):
        gmmjax.shard(np.zeros(8))
    with pytest.raises(TypeError, match="mesh"):
        gmmjax.shard(np.zeros((8, 2)), mesh="data")
    with pytest.raises(ValueError, match="restart_devices"):
        gmmjax.device_mesh(len(jax.devices()) + 1)
    with pytest.raises(ValueError, match="axis named 'data'"):
        mesh = jax.make_mesh((len(jax.devices()),), ("batch",))
        gmmjax.shard(np.zeros((8, 2)), mesh)


def test_shard_accepts_an_explicit_mesh():
    # jax.make_mesh gives Explicit axes; shard re-types them Auto, same devices
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    x = np.arange(16.0).reshape(8, 2)
    xs = gmmjax.shard(x, mesh)
    np.testing.assert_array_equal(np.asarray(xs), x)
    assert xs.sharding.spec[0] == "data"
