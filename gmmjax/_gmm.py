"""The Gaussian mixture model as an immutable pytree of unconstrained leaves."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ._linalg import cholesky, inverse_lower
from ._validation import (
    as_float_array,
    check_covariance_type,
    check_finite,
    concrete,
)

__all__ = ["GMM", "precision_leaves"]


def _n_offdiag(d: int) -> int:
    return d * (d - 1) // 2


# The array helpers below are jitted: called eagerly (a model's properties, the
# builders) each compiles one program per shape instead of one per operation.


@jax.jit
def pack_cholesky(prec_chol):
    """Split upper-triangular factors ``(..., d, d)`` into log-diagonal and packed
    strictly-upper entries ``(..., d)``, ``(..., d(d-1)/2)``."""
    d = prec_chol.shape[-1]
    rows, cols = np.triu_indices(d, 1)
    log_diag = jnp.log(jnp.diagonal(prec_chol, axis1=-2, axis2=-1))
    return log_diag, prec_chol[..., rows, cols]


@jax.jit
def precision_leaves(cov):
    """``(log_diag, off_diag)`` leaves of the precision Cholesky factor of
    ``(..., d, d)`` covariances.

    With ``cov = L L^T`` (lower ``L``) the precision factor is ``P = L^{-T}``, both
    computed without LAPACK (see :mod:`gmmjax._linalg`), so this runs inside
    compiled loops. A non-positive-definite input gives NaN.
    """
    return pack_cholesky(jnp.swapaxes(inverse_lower(cholesky(cov)), -1, -2))


@jax.jit
def unpack_cholesky(log_diag, off_diag):
    """Inverse of :func:`pack_cholesky`: upper-triangular ``(..., d, d)``."""
    d = log_diag.shape[-1]
    rows, cols = np.triu_indices(d, 1)
    eye = jnp.eye(d, dtype=log_diag.dtype)
    out = jnp.exp(log_diag)[..., None, :] * eye
    return out.at[..., rows, cols].set(off_diag)


@dataclasses.dataclass(frozen=True)
class GMM:
    """A Gaussian mixture model, stored in unconstrained coordinates.

    The density is ``p(x) = sum_j pi_j N(x | mu_j, Sigma_j)``. Every leaf is free: any
    real values give a valid model, so gradient methods need no projection.
    ``covariance_type`` is static metadata. Build models with :meth:`GMM.from_natural`
    (which validates its inputs); the plain constructor takes the leaves as they are.

    Attributes:
        logits: ``(k,)``, ``pi = softmax(logits)``. Adding a constant to every logit
            does not change the model (a gauge freedom).
        means: ``(k, d)`` component means ``mu_j``.
        log_diag: the log of the diagonal of the precision Cholesky factor ``P``
            (upper triangular, ``Sigma^-1 = P P^T``, scikit-learn's convention):
            ``(k, d)`` for ``full`` and ``diag``, ``(k,)`` for ``spherical`` (one
            value per component), ``(d,)`` for ``tied``.
        off_diag: the strictly upper entries of ``P``, packed row by row:
            ``(k, d(d-1)/2)`` for ``full``, ``(d(d-1)/2,)`` for ``tied`` and ``None``
            for ``diag``/``spherical``.
        covariance_type: ``"full"``, ``"diag"``, ``"spherical"`` or ``"tied"``
            (static).

    Example:
        >>> import gmmjax
        >>> gmm = gmmjax.GMM.from_natural(
        ...     [0.3, 0.7], [[0.0], [2.0]], [1.0, 0.25], covariance_type="spherical")
        >>> gmm.n_components, gmm.n_features
        (2, 1)
        >>> [round(float(v), 6) for v in gmm.covariances]
        [1.0, 0.25]
    """

    logits: jax.Array
    means: jax.Array
    log_diag: jax.Array
    off_diag: jax.Array | None
    covariance_type: str = "full"

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_natural(cls, weights, means, covariances, *, covariance_type="full"):
        """Build a model from weights, means and covariances.

        Args:
            weights: ``(k,)`` mixing weights, non-negative and summing to one.
            means: ``(k, d)`` component means.
            covariances: ``(k, d, d)`` for ``full``, ``(k, d)`` for ``diag``,
                ``(k,)`` for ``spherical``, ``(d, d)`` for ``tied``; symmetric
                positive definite (positive variances).
            covariance_type: one of ``"full"``, ``"diag"``, ``"spherical"``,
                ``"tied"``.

        Returns:
            The :class:`GMM`. Shapes are always checked; values (finite, weights on
            the simplex, positive definite) are checked when the inputs are concrete,
            so the constructor also works inside ``jit`` and ``grad``.

        Raises:
            ValueError: naming the offending argument.

        Example:
            >>> import gmmjax
            >>> gmm = gmmjax.GMM.from_natural(
            ...     [0.5, 0.5], [[0.0, 0.0], [3.0, 3.0]], [[1.0, 1.0], [2.0, 0.5]],
            ...     covariance_type="diag")
            >>> gmm.covariances.shape
            (2, 2)
        """
        covariance_type = check_covariance_type(covariance_type)
        weights, means, covariances = _common_dtype(
            ("weights", weights), ("means", means), ("covariances", covariances)
        )
        k, d = _check_weights_means(weights, means)
        _check_covariance_shape(covariances, covariance_type, k, d)
        check_finite(covariances, "covariances")
        _check_covariance_values(covariances, covariance_type)
        return cls.from_covariances(
            jnp.log(weights), means, covariances, covariance_type=covariance_type
        )

    @classmethod
    def from_covariances(cls, logits, means, covariances, *, covariance_type):
        """The model with these logits, means and natural covariances, unchecked.

        For compiled code (the M step, annealing): nothing is validated, and a
        covariance that is not positive definite gives NaN leaves.
        :meth:`from_natural` is the checked front door.

        Example:
            >>> import jax.numpy as jnp, gmmjax
            >>> gmm = gmmjax.GMM.from_covariances(
            ...     jnp.zeros(2), jnp.zeros((2, 1)), jnp.array([[1.0], [4.0]]),
            ...     covariance_type="diag")
            >>> gmm.covariances.tolist()
            [[1.0], [4.0]]
        """
        if covariance_type in ("full", "tied"):
            log_diag, off_diag = precision_leaves(covariances)
        else:
            log_diag, off_diag = -0.5 * jnp.log(covariances), None
        return cls(logits, means, log_diag, off_diag, covariance_type)

    @classmethod
    def isotropic(cls, logits, means, variance, *, covariance_type):
        """The model whose every covariance is ``variance * I``, in the layout of
        ``covariance_type`` (unchecked, for compiled code).

        Example:
            >>> import jax.numpy as jnp, gmmjax
            >>> gmm = gmmjax.GMM.isotropic(
            ...     jnp.zeros(2), jnp.zeros((2, 2)), 4.0, covariance_type="full")
            >>> gmm.covariances[0].tolist()
            [[4.0, 0.0], [0.0, 4.0]]
        """
        k, d = means.shape
        dtype = means.dtype
        half = -0.5 * jnp.log(variance).astype(dtype)
        off = _n_offdiag(d)
        if covariance_type == "full":
            off_diag = jnp.zeros((k, off), dtype)
            return cls(logits, means, jnp.full((k, d), half), off_diag, "full")
        if covariance_type == "tied":
            off_diag = jnp.zeros((off,), dtype)
            return cls(logits, means, jnp.full((d,), half), off_diag, "tied")
        if covariance_type == "diag":
            return cls(logits, means, jnp.full((k, d), half), None, "diag")
        return cls(logits, means, jnp.full((k,), half), None, "spherical")

    def replace_component(self, j, *, logits, mean, variances) -> GMM:
        """This model with component ``j`` restarted (unchecked, ``j`` may be
        traced).

        Args:
            j: ``()`` the component.
            logits: ``(k,)`` the new logits of every component.
            mean: ``(d,)`` component ``j``'s new mean.
            variances: ``(d,)`` component ``j``'s new covariance, diagonal
                (``spherical`` takes their mean; a ``tied`` covariance is shared by
                every component and stays).

        Example:
            >>> import jax.numpy as jnp, gmmjax
            >>> gmm = gmmjax.GMM.from_natural(
            ...     [0.5, 0.5], [[0.0], [1.0]], [1.0, 1.0], covariance_type="spherical")
            >>> new = gmm.replace_component(
            ...     1, logits=jnp.zeros(2), mean=jnp.array([5.0]),
            ...     variances=jnp.array([4.0]))
            >>> new.means[:, 0].tolist(), new.covariances.tolist()
            ([0.0, 5.0], [1.0, 4.0])
        """
        here = jnp.arange(self.n_components) == j
        means = jnp.where(here[:, None], mean, self.means)
        log_diag, off_diag = self.log_diag, self.off_diag
        ctype = self.covariance_type
        if ctype in ("full", "diag"):
            log_diag = jnp.where(here[:, None], -0.5 * jnp.log(variances), log_diag)
        elif ctype == "spherical":
            log_diag = jnp.where(here, -0.5 * jnp.log(jnp.mean(variances)), log_diag)
        if ctype == "full":
            off_diag = jnp.where(here[:, None], 0.0, off_diag)
        return GMM(logits, means, log_diag, off_diag, ctype)

    @classmethod
    def from_precisions_cholesky(
        cls, weights, means, precisions_cholesky, *, covariance_type="full"
    ):
        """Build a model from scikit-learn's ``precisions_cholesky_`` convention.

        Args:
            weights: ``(k,)`` mixing weights on the simplex.
            means: ``(k, d)`` component means.
            precisions_cholesky: upper-triangular ``P`` with ``Sigma^-1 = P P^T``:
                ``(k, d, d)`` full, ``(d, d)`` tied; ``1/sqrt(variance)`` with shape
                ``(k, d)`` diag or ``(k,)`` spherical. Diagonals must be positive.
            covariance_type: as in :meth:`from_natural`.

        Returns:
            The :class:`GMM`.

        Example:
            >>> import gmmjax
            >>> gmm = gmmjax.GMM.from_precisions_cholesky(
            ...     [1.0], [[0.0]], [2.0], covariance_type="spherical")
            >>> float(gmm.covariances[0])
            0.25
        """
        covariance_type = check_covariance_type(covariance_type)
        weights, means, prec = _common_dtype(
            ("weights", weights),
            ("means", means),
            ("precisions_cholesky", precisions_cholesky),
        )
        k, d = _check_weights_means(weights, means)
        _check_covariance_shape(prec, covariance_type, k, d, "precisions_cholesky")
        check_finite(prec, "precisions_cholesky")
        value = concrete(prec)
        if covariance_type in ("full", "tied"):
            if value is not None:
                diag = np.diagonal(value, axis1=-2, axis2=-1)
                lower = np.tril(value, -1)
                if np.any(diag <= 0) or np.any(lower != 0):
                    raise ValueError(
                        "precisions_cholesky must be upper triangular with a positive "
                        "diagonal"
                    )
            log_diag, off_diag = pack_cholesky(prec)
        else:
            if value is not None and np.any(value <= 0):
                raise ValueError("precisions_cholesky must be positive")
            log_diag, off_diag = jnp.log(prec), None
        return cls(jnp.log(weights), means, log_diag, off_diag, covariance_type)

    # ----------------------------------------------------------------- read-outs
    @property
    def n_components(self) -> int:
        """The number of components ``k``."""
        return self.means.shape[-2]

    @property
    def n_features(self) -> int:
        """The dimension ``d`` of the data."""
        return self.means.shape[-1]

    @property
    def dtype(self):
        """The floating dtype of the parameters."""
        return self.means.dtype

    @property
    def log_weights(self) -> jax.Array:
        """``(k,)`` log mixing weights, ``log_softmax(logits)``."""
        return jax.nn.log_softmax(self.logits, axis=-1)

    @property
    def weights(self) -> jax.Array:
        """``(k,)`` mixing weights on the simplex."""
        return jax.nn.softmax(self.logits, axis=-1)

    @property
    def precisions_cholesky(self) -> jax.Array:
        """scikit-learn's ``precisions_cholesky_``: ``P`` with ``Sigma^-1 = P P^T``.

        Upper triangular ``(k, d, d)`` full, ``(d, d)`` tied; ``(k, d)`` diag and
        ``(k,)`` spherical.
        """
        if self.covariance_type in ("full", "tied"):
            return unpack_cholesky(self.log_diag, self.off_diag)
        return jnp.exp(self.log_diag)

    @property
    def precisions(self) -> jax.Array:
        """scikit-learn's ``precisions_``: the inverse covariances, shaped as
        :attr:`covariances`."""
        return _precisions(self)

    @property
    def covariances(self) -> jax.Array:
        """Covariances in natural form, shaped as in :meth:`from_natural`."""
        return _covariances(self)

    @property
    def full_covariances(self) -> jax.Array:
        """``(k, d, d)`` covariance matrices, whatever the covariance type.

        Example:
            >>> import gmmjax
            >>> gmm = gmmjax.GMM.from_natural(
            ...     [1.0], [[0.0, 0.0]], [2.0], covariance_type="spherical")
            >>> gmm.full_covariances.tolist()
            [[[2.0, 0.0], [0.0, 2.0]]]
        """
        return _full_covariances(self)


@jax.jit
def _precisions(gmm: GMM) -> jax.Array:
    p = gmm.precisions_cholesky
    if gmm.covariance_type in ("full", "tied"):
        return p @ jnp.swapaxes(p, -1, -2)
    return p**2


@jax.jit
def _covariances(gmm: GMM) -> jax.Array:
    if gmm.covariance_type in ("full", "tied"):
        # Sigma = (P P^T)^-1 = M M^T with the lower M = (P^T)^-1
        m = inverse_lower(jnp.swapaxes(gmm.precisions_cholesky, -1, -2))
        return m @ jnp.swapaxes(m, -1, -2)
    return jnp.exp(-2.0 * gmm.log_diag)


@jax.jit
def _full_covariances(gmm: GMM) -> jax.Array:
    cov = gmm.covariances
    k, d = gmm.n_components, gmm.n_features
    eye = jnp.eye(d, dtype=cov.dtype)
    if gmm.covariance_type == "full":
        return cov
    if gmm.covariance_type == "tied":
        return jnp.broadcast_to(cov, (k, d, d))
    if gmm.covariance_type == "diag":
        return cov[:, :, None] * eye
    return cov[:, None, None] * eye


jax.tree_util.register_dataclass(
    GMM,
    data_fields=["logits", "means", "log_diag", "off_diag"],
    meta_fields=["covariance_type"],
)


def _common_dtype(*named):
    arrays = [as_float_array(a, name) for name, a in named]
    dtype = jnp.result_type(*arrays)
    return [a.astype(dtype) for a in arrays]


def _check_weights_means(weights, means):
    if weights.ndim != 1 or weights.shape[0] == 0:
        raise ValueError(
            f"weights must be a non-empty 1-D array of shape (k,), got {weights.shape}"
        )
    k = weights.shape[0]
    if means.ndim != 2 or means.shape[0] != k or means.shape[1] == 0:
        raise ValueError(
            f"means must have shape (k, d) = ({k}, d) to match weights, got "
            f"{means.shape}"
        )
    check_finite(weights, "weights")
    check_finite(means, "means")
    value = concrete(weights)
    if value is not None:
        if np.any(value < 0):
            raise ValueError("weights must be non-negative")
        tol = max(1e-8, 10 * k * float(np.finfo(value.dtype).eps))
        if abs(float(value.sum()) - 1.0) > tol:
            raise ValueError(f"weights must sum to 1, got sum {float(value.sum())!r}")
    return k, means.shape[1]


def _check_covariance_shape(cov, covariance_type, k, d, name="covariances"):
    expected = {
        "full": (k, d, d),
        "diag": (k, d),
        "spherical": (k,),
        "tied": (d, d),
    }[covariance_type]
    if cov.shape != expected:
        raise ValueError(
            f"{name} for covariance_type={covariance_type!r} must have shape "
            f"{expected}, got {cov.shape}"
        )


def _check_covariance_values(cov, covariance_type):
    value = concrete(cov)
    if value is None:
        return
    if covariance_type in ("diag", "spherical"):
        if np.any(value <= 0):
            raise ValueError(
                f"covariances for covariance_type={covariance_type!r} must be "
                "positive variances"
            )
        return
    scale = np.maximum(np.abs(value).max(axis=(-2, -1), keepdims=True), 1e-300)
    eps = float(np.finfo(value.dtype).eps)
    if np.any(np.abs(value - np.swapaxes(value, -1, -2)) > 100 * eps * scale):
        raise ValueError("covariances must be symmetric")
    try:
        np.linalg.cholesky(value.astype(np.float64))
    except np.linalg.LinAlgError:
        raise ValueError("covariances must be positive definite") from None
