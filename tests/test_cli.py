"""The real ``gmmjax`` command in a subprocess."""

import subprocess
import sys

import numpy as np


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


def test_fit_options():
    out = run("fit", "-k", "3", "--covariance-type", "tied", "--max-steps", "5")
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
    out = run("fit", str(path))
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
