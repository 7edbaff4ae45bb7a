import atexit
import contextlib
import gc
import json
import os
import shutil
import tempfile
import warnings

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None


def _share_test_run_settings() -> None:
    """Settings of the whole test run, made before numpy or jax is imported.

    Environment variables, so that the pytest-xdist workers and the subprocesses
    that the tests start inherit them from the process that loads this file first.

    - One thread for OpenBLAS and OpenMP: the references (scikit-learn, scipy)
      work on tiny arrays, and with one pytest worker per core, extra BLAS and
      OpenMP threads only spin and wait (scikit-learn's k-means fits took ten
      times the CPU time with them). At most rounding in the references changes.

    - JAX's persistent compilation cache (``GMMJAX_CACHE_DIR``) in a temporary
      directory of this run, never the user's own, shared by the workers and
      the ``gmmjax`` subprocesses: a program is compiled once per run, not once
      per module (the in-memory caches are cleared after every module, see
      ``_release_compiled_code``), worker and subprocess. Entries are written
      atomically (``gmmjax._cache``), so concurrent writers are safe.
      ``GMMJAX_CACHE_DIR=off pytest`` runs without it.
    """
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    switch = os.environ.get("GMMJAX_CACHE_DIR", "").strip().lower()
    if switch in ("off", "0", "false", "no"):
        return
    root = os.environ.get("GMMJAX_TEST_CACHE_ROOT")
    if root is None:  # the first process of the run: the workers inherit it
        root = tempfile.mkdtemp(prefix="gmmjax-test-cache-")
        os.environ["GMMJAX_TEST_CACHE_ROOT"] = root
        atexit.register(shutil.rmtree, root, ignore_errors=True)
    os.environ["GMMJAX_CACHE_DIR"] = root


_share_test_run_settings()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

import gmmjax  # noqa: E402
from gmmjax import _cache as gmmjax_cache  # noqa: E402
from gmmjax._information import (  # noqa: E402
    from_natural_vector,
    natural_vector,
)

jax.config.update("jax_enable_x64", True)
# the library's own calls too, not only the estimator's and the command's
gmmjax_cache.default_cache()

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")


def random_natural(rng: np.random.Generator, k: int, d: int, covariance_type: str):
    """Random well-conditioned natural parameters (weights, means, covariances)."""
    weights = rng.dirichlet(np.full(k, 2.0))
    means = rng.normal(scale=2.0, size=(k, d))
    if covariance_type == "full":
        a = rng.normal(size=(k, d, d))
        cov = a @ np.swapaxes(a, -1, -2) / d + 0.5 * np.eye(d)
    elif covariance_type == "tied":
        a = rng.normal(size=(d, d))
        cov = a @ a.T / d + 0.5 * np.eye(d)
    elif covariance_type == "diag":
        cov = rng.uniform(0.3, 2.0, size=(k, d))
    else:
        cov = rng.uniform(0.3, 2.0, size=k)
    return weights, means, cov


def full_covariances(cov: np.ndarray, covariance_type: str, k: int, d: int):
    """Expand any covariance type to ``(k, d, d)`` matrices."""
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    return cov[:, None, None] * np.eye(d)


def host_m_step_natural(x, resp, covariance_type, *, w=None, reg_covar=1e-6):
    """One M step in numpy (float64): ``(weights, means, covariances)`` of
    responsibilities ``resp`` ``(n, k)``, with the count floor ``10 eps`` (of
    ``x``'s dtype) of scikit-learn's and gmmjax's M steps and ``reg_covar``; a
    component without responsibility sits at the data's (weighted) mean."""
    eps = np.finfo(np.asarray(x).dtype).eps
    x = np.asarray(x, np.float64)
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    resp = resp * w[:, None]
    counts = resp.sum(axis=0) + 10 * eps
    mean = w @ x / w.sum()
    means = np.where(resp.sum(axis=0)[:, None] > 0, resp.T @ x / counts[:, None], mean)
    diff = x[None] - means[:, None]
    scatter = np.einsum("nk,kna,knb->kab", resp, diff, diff)
    eye = np.eye(x.shape[1])
    if covariance_type == "full":
        cov = scatter / counts[:, None, None] + reg_covar * eye
    elif covariance_type == "tied":
        cov = scatter.sum(axis=0) / counts.sum() + reg_covar * eye
    else:
        cov = np.diagonal(scatter, axis1=1, axis2=2) / counts[:, None] + reg_covar
        if covariance_type == "spherical":
            cov = cov.mean(axis=1)
    return counts / counts.sum(), means, cov


def host_m_step(x, resp, covariance_type, *, w=None, reg_covar=1e-6):
    """:func:`host_m_step_natural` as a :class:`gmmjax.GMM` in ``x``'s dtype.

    Starting models are built on the host where the initialization is not under
    test: ``init_gmm`` compiles a program per shape and covariance type (and a
    float64 start would promote float32 data).
    """
    natural = host_m_step_natural(x, resp, covariance_type, w=w, reg_covar=reg_covar)
    gmm = gmmjax.GMM.from_natural(*natural, covariance_type=covariance_type)
    dtype = np.asarray(x).dtype
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), jax.device_get(gmm))


def kmeans_resp(x, k, *, seed=0, w=None):
    """``(n, k)`` one-hot labels of one scikit-learn k-means run on ``x``."""
    with warnings.catch_warnings():
        # scikit-learn warns when the data have fewer distinct points than k
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = KMeans(k, n_init=1, random_state=seed).fit(
            np.asarray(x, np.float64), sample_weight=w
        )
    return np.eye(k)[fit.labels_]


def kmeans_start(x, k, covariance_type, *, seed=0, w=None, reg_covar=1e-6):
    """scikit-learn's own start (``init_params="kmeans"``), built on the host:
    the M step (:func:`host_m_step`) of one k-means run's labels."""
    resp = kmeans_resp(x, k, seed=seed, w=w)
    return host_m_step(x, resp, covariance_type, w=w, reg_covar=reg_covar)


_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compile_logs: list[list] = []


def _record_compilation(event: str, duration: float, **_) -> None:
    if event in _COMPILE_EVENTS:
        for log in _compile_logs:
            log.append(event.rsplit("/", 1)[-1])


jax.monitoring.register_event_duration_secs_listener(_record_compilation)


@contextlib.contextmanager
def count_compilations():
    """Collect the names of JAX's tracing and XLA compilation events in a block.

    A program found in the in-memory caches neither traces nor compiles; one
    loaded from a persistent compilation cache still traces. So an empty list
    means that nothing new was traced or compiled.
    """
    log: list = []
    _compile_logs.append(log)
    try:
        yield log
    finally:
        _compile_logs.remove(log)


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


def once_per_run(tmp_path_factory, name: str, produce):
    """``(directory, value)`` of ``produce(directory)``, computed once per test run.

    For an expensive module fixture (a subprocess of a minute): pytest-xdist
    runs a module fixture once per worker that runs one of its tests, so the first
    worker computes it (under a file lock) into a directory shared by the workers
    of this run, and the others wait and read its JSON-able value. Without xdist,
    or where file locks are not available, it is computed as usual.
    """
    shared = fcntl is not None and "PYTEST_XDIST_WORKER" in os.environ
    if not shared:
        directory = tmp_path_factory.mktemp(name)
        return directory, produce(directory)
    root = tmp_path_factory.getbasetemp().parent  # this run's, shared by workers
    directory, done = root / name, root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return directory, json.loads(done.read_text())
        directory.mkdir(exist_ok=True)
        value = produce(directory)
        done.write_text(json.dumps(value))
        return directory, value


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drop JAX's compiled executables after every test module.

    A pytest worker that compiles thousands of programs (the bad-input and
    property batteries compile a new shape per case) keeps every executable's
    code mapped; full runs then crashed inside XLA's compiler after a few
    hundred tests. Clearing the caches between modules bounds that, at the cost
    of recompiling what two modules share.
    """
    yield
    jax.clear_caches()
    gc.collect()


def expected_complete_information(gmm):
    """``-d^2 Q / d theta^2`` per sample at the mixture's own parameters, in the
    natural vector: ``Q(theta) = sum_j w0_j (log w_j + E_{x ~ N(mu0_j,
    Sigma0_j)} log N(x | mu_j, Sigma_j))`` in closed form (the complete-data
    log-likelihood's expectation), differentiated by jax.hessian."""
    w0, mu0 = np.asarray(gmm.weights), np.asarray(gmm.means)
    k, d = gmm.n_components, gmm.n_features
    cov0 = np.asarray(traced_full_covariances(gmm))

    def q(theta):
        other = from_natural_vector(theta, gmm)
        cov = traced_full_covariances(other)
        total = 0.0
        for j in range(k):
            inv = jnp.linalg.inv(cov[j])
            diff = mu0[j] - other.means[j]
            expected = -0.5 * (
                d * jnp.log(2 * jnp.pi)
                + jnp.linalg.slogdet(cov[j])[1]
                + jnp.trace(inv @ cov0[j])
                + diff @ inv @ diff
            )
            total = total + w0[j] * (jnp.log(other.weights[j]) + expected)
        return total

    return -np.asarray(jax.jit(jax.hessian(q))(natural_vector(gmm)))


def traced_full_covariances(gmm):
    """``(k, d, d)`` covariances of any type, traceable (jax.numpy)."""
    cov = gmm.covariances
    k, d = gmm.n_components, gmm.n_features
    if gmm.covariance_type == "tied":
        return jnp.broadcast_to(cov, (k, d, d))
    if gmm.covariance_type == "diag":
        return jax.vmap(jnp.diag)(cov)
    if gmm.covariance_type == "spherical":
        return cov[:, None, None] * jnp.eye(d)
    return cov
