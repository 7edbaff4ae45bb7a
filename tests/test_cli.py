"""The real ``gmmjax`` command in a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import gmmjax
from gmmjax import io


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "gmmjax", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_fit_bundled_data():
    out = run("fit")
    assert out.returncode == 0, out.stderr
    assert "log-likelihood" in out.stdout
    assert "weights" in out.stdout and "means" in out.stdout
    assert "status: CONVERGED" in out.stdout and "steps:" in out.stdout
    assert "model: 2 components" in out.stdout
    assert "diagnosis: maximum" in out.stdout


def test_fit_options():
    # the Hessian diagnosis is checked in test_fit_bundled_data
    out = run(
        "fit",
        "-k",
        "3",
        "--covariance-type",
        "tied",
        "--max-steps",
        "5",
        "--no-diagnosis",
    )
    assert out.returncode == 0, out.stderr
    assert "3 components" in out.stdout and "'tied'" in out.stdout
    assert "steps: 5" in out.stdout


def test_bad_k_is_one_line_error():
    out = run("fit", "-k", "0")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "-k must be between" in out.stderr


def test_fit_csv_with_header(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.csv"
    rows = "\n".join(f"{a},{b}" for a, b in rng.normal(size=(50, 2)))
    path.write_text("a,b\n" + rows + "\n")
    out = run("fit", str(path), "--no-diagnosis")
    assert out.returncode == 0, out.stderr
    assert "50 samples, 2 features" in out.stdout


def test_missing_file_is_one_line_error(tmp_path):
    out = run("fit", str(tmp_path / "nope.csv"))
    assert out.returncode != 0
    assert "not found" in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_malformed_file_is_one_line_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3,oops\n")
    out = run("fit", str(path))
    assert out.returncode != 0
    assert "line 3" in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def _repo_run(*args):
    """The command from this checkout (so the tests see its gmmjax)."""
    root = Path(__file__).resolve().parents[1]
    return run(*args, cwd=root)


def test_fit_json_save_plot_restarts(tmp_path):
    model = tmp_path / "model.npz"
    png = tmp_path / "fit.png"
    out = _repo_run(
        "fit",
        "-k",
        "3",
        "--n-init",
        "3",
        "--json",
        "--save",
        str(model),
        "--plot",
        str(png),
        "--no-diagnosis",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)  # nothing but JSON on stdout
    assert result["n_components"] == 3 and result["n_init"] == 3
    assert len(result["restarts"]["log_likelihoods"]) == 3
    assert result["log_likelihood"] == max(result["restarts"]["log_likelihoods"])
    assert result["status"] in ("CONVERGED", "MAX_STEPS")
    x = gmmjax.datasets.faithful()
    # the saved model is the reported one: its log-likelihood and BIC agree
    gmm = io.load(model)
    ll = float(gmmjax.log_likelihood(gmm, x))
    np.testing.assert_allclose(ll, result["log_likelihood"], rtol=1e-10)
    p = 3 * 3 + 3 * 2 + 2  # full covariances, means, free weights
    np.testing.assert_allclose(result["bic"], -2 * ll + p * np.log(len(x)), rtol=1e-10)
    np.testing.assert_allclose(result["weights"], np.asarray(gmm.weights), rtol=1e-12)
    assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_summary_and_progress(tmp_path):
    path = tmp_path / "data.npy"
    rng = np.random.default_rng(1)
    np.save(path, np.concatenate([rng.normal(-4, 1, 80), rng.normal(4, 1, 120)]))
    out = _repo_run(
        "fit",
        str(path),
        "--n-init",
        "2",
        "--progress",
        "--max-steps",
        "60",
        "--no-diagnosis",
    )
    assert out.returncode == 0, out.stderr
    for field in ("weights:", "means:", "covariances:", "log-likelihood:", "BIC:"):
        assert field in out.stdout
    assert "200 samples, 1 features" in out.stdout
    assert "best of 2 restarts" in out.stdout and "restarts:" in out.stdout
    assert "fit [" in out.stderr and "steps" in out.stderr  # the progress bar


def test_fit_bad_options_are_one_line_errors(tmp_path):
    out = _repo_run("fit", "--n-init", "0")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == "gmmjax: error: --n-init must be >= 1, got 0"
    bad_png = str(tmp_path / "no" / "dir" / "x.png")
    out = _repo_run("fit", "--plot", bad_png, "--no-diagnosis")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "cannot write the plot" in out.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    out = _repo_run("fit", str(empty))
    assert out.returncode == 2 and "the file is empty" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_fit_methods_agree_with_em():
    results = {}
    for method in ("em", "lbfgs", "anneal"):
        # the Hessian diagnosis is checked once, on the EM fit
        extra = () if method == "em" else ("--no-diagnosis",)
        out = _repo_run(
            "fit", "--method", method, "--json", "--max-steps", "300", *extra
        )
        assert out.returncode == 0, out.stderr
        results[method] = json.loads(out.stdout)
        assert results[method]["method"] == method
        assert results[method]["status"] == "CONVERGED"
    em = results["em"]["mean_log_likelihood"]
    # every method climbs to the same optimum of Old Faithful (k=2, full); the
    # gradient method stops on the same mean log-likelihood change (1e-6), so it
    # is within ~1e-5 per sample of EM's optimum
    for method in ("lbfgs", "anneal"):
        assert abs(results[method]["mean_log_likelihood"] - em) < 1e-4
    assert results["em"]["diagnosis"]["kind"] == "maximum"
    assert all(v < 0 for v in results["em"]["diagnosis"]["top_hessian_eigenvalues"])
