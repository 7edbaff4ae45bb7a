import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

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


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
