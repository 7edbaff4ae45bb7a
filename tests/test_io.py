"""Save / load: exact round trips, and clear errors for files that are not models."""

import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import COVARIANCE_TYPES, random_natural

import gmmjax
from gmmjax import io


def _model(rng, ctype, dtype, k=3, d=3):
    weights, means, cov = random_natural(rng, k, d, ctype)
    gmm = gmmjax.GMM.from_natural(weights, means, cov, covariance_type=ctype)
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), gmm)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_round_trip_is_exact(tmp_path, rng, ctype, dtype):
    gmm = _model(rng, ctype, dtype)
    path = tmp_path / "model.npz"
    io.save(path, gmm)
    back = io.load(path)
    assert back.covariance_type == ctype
    for name in ("logits", "means", "log_diag", "off_diag"):
        a, b = getattr(gmm, name), getattr(back, name)
        if a is None:
            assert b is None
            continue
        assert b.dtype == a.dtype
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
    # the model means the same thing: identical densities
    x = rng.normal(size=(20, 3)).astype(dtype)
    np.testing.assert_array_equal(
        np.asarray(gmmjax.log_prob(back, x)), np.asarray(gmmjax.log_prob(gmm, x))
    )


def test_file_is_plain_npz_with_json_metadata(tmp_path, rng):
    path = tmp_path / "m.gmm"
    io.save(path, _model(rng, "full", jnp.float64))
    assert path.exists()  # written exactly where asked, no suffix added
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["metadata"]))
        assert set(archive.files) == {
            "metadata",
            "logits",
            "means",
            "log_diag",
            "off_diag",
        }
    assert meta == {
        "format": "gmmjax.GMM",
        "version": 1,
        "covariance_type": "full",
        "dtype": "float64",
        "n_components": 3,
        "n_features": 3,
    }


def _rewrite(path, metadata=None, **arrays):
    """Write an archive like save() would, with some entries replaced."""
    with np.load(path, allow_pickle=False) as archive:
        contents = {k: archive[k] for k in archive.files}
    meta = json.loads(str(contents.pop("metadata")))
    if metadata is not None:
        meta.update(metadata)
    contents.update(arrays)
    with open(path, "wb") as handle:
        np.savez(handle, metadata=np.asarray(json.dumps(meta)), **contents)


@pytest.fixture
def saved(tmp_path, rng):
    path = tmp_path / "model.npz"
    io.save(path, _model(rng, "full", jnp.float64))
    return path


def test_wrong_version_is_a_clear_error(saved):
    _rewrite(saved, metadata={"version": 99})
    with pytest.raises(ValueError, match="version 99 is not supported"):
        io.load(saved)


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a gmmjax model archive"):
        io.load(saved)


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ValueError, match="not a gmmjax model archive"):
        io.load(path)


def test_foreign_npz_and_npy(tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.ones(3))
    with pytest.raises(ValueError, match="no metadata"):
        io.load(foreign)
    npy = tmp_path / "array.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(ValueError, match=r"not an \.npz archive"):
        io.load(npy)
    other = tmp_path / "other.npz"
    np.savez(other, metadata=np.asarray(json.dumps({"format": "something else"})))
    with pytest.raises(ValueError, match="format mismatch"):
        io.load(other)


def test_pickled_content_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, metadata=np.array([{"format": "gmmjax.GMM"}], dtype=object))
    with pytest.raises(ValueError, match="not a gmmjax model archive"):
        io.load(path)


def test_inconsistent_contents(saved):
    _rewrite(saved, means=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="means has shape"):
        io.load(saved)


def test_bad_values_and_metadata(saved, tmp_path):
    _rewrite(saved, logits=np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        io.load(saved)
    bad_json = tmp_path / "bad.npz"
    np.savez(bad_json, metadata=np.asarray("{not json"))
    with pytest.raises(ValueError, match="not valid JSON"):
        io.load(bad_json)


def test_dtype_mismatch(saved):
    _rewrite(saved, metadata={"dtype": "float32"})
    with pytest.raises(ValueError, match="dtype"):
        io.load(saved)


def test_missing_file_and_bad_arguments(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        io.load(tmp_path / "nope.npz")
    with pytest.raises(TypeError, match=r"gmmjax\.GMM"):
        io.save(tmp_path / "x.npz", {"means": np.zeros((1, 1))})
    gmm = _model(rng, "diag", jnp.float64)
    with pytest.raises(ValueError, match="traced"):
        jax.jit(lambda g: io.save(tmp_path / "x.npz", g))(gmm)


def test_no_pickle_inside(saved):
    # every member of the archive is a plain .npy array readable without pickle
    with zipfile.ZipFile(saved) as archive:
        names = archive.namelist()
    assert all(name.endswith(".npy") for name in names)
    with np.load(saved, allow_pickle=False) as archive:
        for name in archive.files:
            assert archive[name].dtype != object
