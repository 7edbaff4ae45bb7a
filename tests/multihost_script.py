"""One of two processes of a multi-host run on one machine (tests/test_sharding.py).

Usage: ``python multihost_script.py PORT PROCESS_ID``, with
``XLA_FLAGS=--xla_force_host_platform_device_count=2``: two processes of two CPU
devices each form one 4-device global mesh through ``jax.distributed``. Each process
shards its half of the rows, fits the global array, fits all rows alone (the
single-device reference) and prints one JSON line.
"""

import json
import sys

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")

import gmmjax  # noqa: E402


def main(port: int, process_id: int) -> dict:
    jax.distributed.initialize(
        f"localhost:{port}", num_processes=2, process_id=process_id
    )
    x = np.asarray(gmmjax.datasets.faithful())  # 272 rows: 136 per process
    local = x[process_id * 136 : (process_id + 1) * 136]
    gmm0 = gmmjax.GMM.from_natural(
        [0.4, 0.6],
        [[2.0, 55.0], [4.3, 80.0]],
        [[1.0, 30.0], [1.0, 30.0]],
        covariance_type="diag",
    )
    xs = gmmjax.shard(local, gmmjax.device_mesh())
    sharded = gmmjax.fit(gmmjax.EM(), gmm0, xs, tol=1e-8)
    single = gmmjax.fit(gmmjax.EM(), gmm0, x, tol=1e-8)
    pairs = zip(
        jax.tree_util.tree_leaves(sharded.gmm),
        jax.tree_util.tree_leaves(single.gmm),
        strict=True,
    )
    return {
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "global_shape": list(xs.shape),
        "fully_addressable": xs.is_fully_addressable,
        "gmm": max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in pairs
        ),
        "ll": [float(sharded.log_likelihood), float(single.log_likelihood)],
        "steps": [int(sharded.n_steps), int(single.n_steps)],
        "status": [int(sharded.status), int(single.status)],
    }


if __name__ == "__main__":
    result = main(int(sys.argv[1]), int(sys.argv[2]))
    print(json.dumps(result), flush=True)
    jax.distributed.shutdown()
