"""Run by tests/test_sharding.py in a subprocess with 4 forced host devices.

``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before jax is
imported, hence a separate process. Prints one JSON object of measured differences.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import gmmjax  # noqa: E402


def max_diff(a, b) -> float:
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in pairs)


def same_fit(a, b) -> dict:
    return {
        "gmm": max_diff(a.gmm, b.gmm),
        "ll_rel": float(abs(a.log_likelihood - b.log_likelihood))
        / float(abs(a.log_likelihood)),
        "steps": [int(a.n_steps), int(b.n_steps)],
        "status": [int(a.status), int(b.status)],
    }


def main() -> dict:
    out = {"n_devices": jax.device_count()}
    true = gmmjax.GMM.from_natural(
        [0.5, 0.3, 0.2],
        [[0.0, 0.0, 0.0], [4.0, 1.0, 0.0], [-2.0, 5.0, 1.0]],
        [1.0, 0.5, 1.5],
        covariance_type="spherical",
    )
    x, _ = gmmjax.sample(jax.random.key(0), true, 400)
    x = np.asarray(x)
    xs = gmmjax.shard(x)
    out["shard"] = {
        "devices": len(xs.sharding.device_set),
        "shard_rows": sorted({s.data.shape[0] for s in xs.addressable_shards}),
    }
    # sharded fit == single-device fit, every covariance type
    out["fit"] = {}
    for ctype in ("full", "diag", "spherical", "tied"):
        # a cheap deterministic start per type (kmeans++ is checked once below)
        gmm0 = gmmjax.m_step(x, np.eye(3)[np.arange(len(x)) % 3], covariance_type=ctype)
        single = gmmjax.fit(gmmjax.EM(), gmm0, x, tol=1e-8)
        sharded = gmmjax.fit(gmmjax.EM(), gmm0, xs, tol=1e-8)
        out["fit"][ctype] = same_fit(single, sharded)
        out["fit"][ctype]["out_devices"] = len(sharded.gmm.means.sharding.device_set)
    # kmeans++ initialization on sharded data
    out["init"] = max_diff(
        gmmjax.init_gmm(jax.random.key(1), x, n_components=3),
        gmmjax.init_gmm(jax.random.key(1), xs, n_components=3),
    )
    # the compiled step keeps the data sharded and reduces partial sums
    hlo = jax.jit(gmmjax.em_step).lower(gmm0, xs).compile().as_text()
    out["hlo"] = {"all_reduce": "all-reduce" in hlo, "all_gather": "all-gather" in hlo}
    # n not divisible by the device count: zero-weight padding
    x_odd = x[:397]
    gmm0 = gmmjax.init_gmm(jax.random.key(2), x, n_components=3)
    xp, wp = gmmjax.shard_padded(x_odd)
    out["padded"] = same_fit(
        gmmjax.fit(gmmjax.EM(), gmm0, x_odd, tol=1e-8),
        gmmjax.fit(gmmjax.EM(), gmm0, xp, sample_weight=wp, tol=1e-8),
    )
    out["padded"]["rows"] = int(xp.shape[0])
    try:
        gmmjax.shard(x_odd)
        out["odd_error"] = None
    except ValueError as err:
        out["odd_error"] = str(err)
    # restarts along "restarts" and data along "data" of a 2 x 2 mesh
    mesh = gmmjax.device_mesh(2)
    keys = jax.random.split(jax.random.key(3), 4)
    gmm0s = jax.vmap(lambda k: gmmjax.init_gmm(k, x, n_components=3))(keys)
    fit_all = jax.vmap(
        lambda g, data: gmmjax.fit(gmmjax.EM(), g, data, tol=1e-8), in_axes=(0, None)
    )
    looped = [
        gmmjax.fit(
            gmmjax.EM(), jax.tree_util.tree_map(lambda a, i=i: a[i], gmm0s), x, tol=1e-8
        )
        for i in range(4)
    ]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *looped)
    gmm0s_sharded = gmmjax.shard_restarts(gmm0s, mesh)
    batched = fit_all(gmm0s_sharded, gmmjax.shard(x, mesh))
    out["restarts"] = {
        "gmm": max_diff(stacked.gmm, batched.gmm),
        "ll": max_diff(stacked.log_likelihood, batched.log_likelihood),
        "steps": [
            np.asarray(stacked.n_steps).tolist(),
            np.asarray(batched.n_steps).tolist(),
        ],
        "restart_spec": list(gmm0s_sharded.means.sharding.spec),
    }
    runs = [
        gmmjax.multistart(
            gmmjax.EM(), jax.random.key(4), data, n_components=3, n_init=4, tol=1e-8
        )
        for data in (x, xs)
    ]
    out["multistart"] = {
        "gmm": max_diff(runs[0].gmm, runs[1].gmm),
        "ll_rel": max_diff(runs[0].log_likelihood, runs[1].log_likelihood)
        / float(np.max(np.abs(runs[0].log_likelihood))),
        "steps": [np.asarray(r.n_steps).tolist() for r in runs],
    }
    from gmmjax.sklearn import GaussianMixture

    models = [
        GaussianMixture(n_components=3, n_init=2, random_state=0, tol=1e-8).fit(data)
        for data in (x, xs)
    ]
    out["estimator"] = {
        "means": float(np.max(np.abs(models[0].means_ - models[1].means_))),
        "covariances": float(
            np.max(np.abs(models[0].covariances_ - models[1].covariances_))
        ),
        "score": [float(m.score(x)) for m in models],
        "predict_equal": bool(
            np.array_equal(models[0].predict(x), models[1].predict(xs))
        ),
    }
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
