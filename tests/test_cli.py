"""The real ``gmmjax`` command in a subprocess."""

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gmmjax
from gmmjax import cli, io


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
    assert f"the folder {Path(bad_png).parent} does not exist" in out.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    out = _repo_run("fit", str(empty))
    assert out.returncode == 2 and "the file is empty" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_fit_methods_agree_with_em(capsys):
    # in this process: the subprocess tests above cover the command itself
    results = {}
    for method in ("em", "lbfgs", "anneal"):
        # the Hessian diagnosis is checked once, on the EM fit
        extra = [] if method == "em" else ["--no-diagnosis"]
        argv = ["fit", "--method", method, "--json", "--max-steps", "300", *extra]
        assert cli.main(argv) == 0
        results[method] = json.loads(capsys.readouterr().out)
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


def _frames(err: str) -> list[str]:
    """The states of a progress line drawn with carriage returns."""
    return [frame.rstrip() for frame in err.rstrip("\n").split("\r")[1:]]


def test_fit_progress_on_a_terminal_is_the_piped_run_plus_a_line(capsys, monkeypatch):
    # spherical: the same loop as full covariances, in half the compile time
    argv = ["fit", "--json", "--no-diagnosis", "--max-steps", "200"]
    argv += ["--covariance-type", "spherical"]
    assert cli.main(argv) == 0
    piped = capsys.readouterr()
    assert piped.err == ""  # stderr is not a terminal: no progress
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert cli.main(argv) == 0
    terminal = capsys.readouterr()
    # one compiled loop either way: the same result, bit for bit
    assert terminal.out == piped.out
    n_steps = json.loads(terminal.out)["n_steps"]
    assert 2 < n_steps < 25  # converged early (the old chunks were 25 steps)
    frames = _frames(terminal.err)
    assert frames[0] == "fit: compiling"
    assert frames[-1].startswith(f"fit [############] done after {n_steps} steps, ")
    # --progress redraws it from inside the loop, with the same result
    assert cli.main([*argv, "--progress"]) == 0
    stepwise = capsys.readouterr()
    assert stepwise.out == piped.out
    frames = _frames(stepwise.err)
    assert frames[0] == "fit: compiling"
    assert frames[-1].startswith(f"fit [############] done after {n_steps} steps, ")
    counts = [int(c) for f in frames for c in re.findall(r"(\d+)/200 steps", f)]
    assert all(c < n_steps for c in counts)


def test_fit_progress_counts_restarts_across_batches(capsys, monkeypatch):
    # five restarts in batches of two (as multistart chooses for large data on
    # a CPU): one progress line for all five, the result of a run without it
    from gmmjax import _multistart

    monkeypatch.setattr(_multistart, "_auto_batch_size", lambda n, k: 2)
    argv = ["fit", "--json", "--no-diagnosis", "--n-init", "5", *_FIT]
    assert cli.main(argv) == 0
    piped = capsys.readouterr()
    assert cli.main([*argv, "--progress"]) == 0
    terminal = capsys.readouterr()
    assert terminal.out == piped.out
    frames = _frames(terminal.err)
    # the line is redrawn at most ten times a second: some of the states
    done = [int(c) for f in frames for c in re.findall(r"(\d+)/5 restarts done", f)]
    assert done and done == sorted(done) and done[-1] <= 4
    assert frames[-1].startswith("fit [############] done after ")


def _saddle_study():
    """The study package (another change moves it there); its tests fail, not
    the collection of this file, until it exists."""
    return importlib.import_module("gmmjax._studies.saddle")


def test_study_progress_per_stage(capsys, monkeypatch, tmp_path):
    study = _saddle_study()

    def fake_study(out, *, quick, seed, progress):
        for i, name in enumerate(study.STAGES):
            progress(i, len(study.STAGES), name)
        return {"wall_time_s": 1.0, "cpu_time_s": 2.0}

    monkeypatch.setattr(study, "run_saddle_study", fake_study)
    argv = ["study", "saddle", "--quick", "--out", str(tmp_path), "--progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr()
    assert "saddle study written to" in out.out
    frames = _frames(out.err)
    stages = study.STAGES
    assert len(frames) == len(stages) + 1
    for i, (frame, name) in enumerate(zip(frames, stages, strict=False)):
        stage = f"stage {i + 1}/{len(stages)}: {name}, "
        assert re.fullmatch(rf"study saddle \[[#.]{{12}}\] {stage}\d+\.\d s", frame)
    assert frames[-1].startswith("study saddle [############] done, ")


def test_fit_diagnosis_says_what_it_found_and_what_to_do(capsys):
    # issue 22, item 3, as the user ran it (in-process, bundled Old Faithful): each
    # verdict is a word with one meaning, a CONVERGED fit that is not yet at a
    # critical point says so and what to do, and doing it gives a maximum
    verdicts = {"maximum", "saddle", "minimum", "singular Hessian"}
    not_yet = "not at a critical point yet"
    for argv in (
        ["--method", "adam"],
        ["--method", "lbfgs"],
        ["-k", "4", "--covariance-type", "tied"],
    ):
        assert cli.main(["fit", *argv]) == 0
        out = capsys.readouterr().out
        assert "status: CONVERGED" in out
        line = next(t for t in out.splitlines() if t.startswith("diagnosis: "))
        verdict = line.removeprefix("diagnosis: ").split(" (")[0]
        assert verdict in verdicts | {not_yet}, line
        if verdict == not_yet:
            assert "would still gain" in line
            assert "  advice: CONVERGED only means" in out and "smaller --tol" in out
        top = re.search(r"top Hessian eigenvalues (\S+),", out)
        if float(top.group(1)) > 0:
            assert "1 positive eigenvalue" in line or verdict == "saddle"

    assert cli.main(["fit", "-k", "3", "--json"]) == 0
    diagnosis = json.loads(capsys.readouterr().out)["diagnosis"]
    assert all(v < 0 for v in diagnosis["top_hessian_eigenvalues"])
    assert diagnosis["kind"] in ("maximum", "not_critical"), diagnosis
    if diagnosis["kind"] == "not_critical":
        assert diagnosis["predicted_gain"] > 1e-6 and "--tol" in diagnosis["advice"]
    assert cli.main(["fit", "-k", "3", "--tol", "1e-8", "--json"]) == 0
    diagnosis = json.loads(capsys.readouterr().out)["diagnosis"]
    assert diagnosis["kind"] == "maximum" and diagnosis["advice"] == "", diagnosis
    assert diagnosis["verdict"] == "maximum" and diagnosis["predicted_gain"] < 1e-6


# Issue 22: what a new user did, in this process. The fits share one compiled
# program with the progress test above: Old Faithful's shape (272, 2), two
# spherical components.
FAITHFUL = gmmjax.datasets.faithful()
_FIT = ["--covariance-type", "spherical", "--max-steps", "200"]


def _main(capsys, *argv):
    """``gmmjax.cli.main(argv)``: (exit status, stdout, stderr)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's --help and its own errors
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_output_paths_are_checked_before_the_fit(capsys, monkeypatch, tmp_path):
    def no_work(*args, **kwargs):
        raise AssertionError("the command started its work before the check")

    monkeypatch.setattr(gmmjax, "multistart", no_work)
    try:
        monkeypatch.setattr(_saddle_study(), "run_saddle_study", no_work)
    except ModuleNotFoundError:
        pass  # not there yet; the command checks --out before it imports it
    missing = tmp_path / "missing"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("")
    for argv, message in [
        (
            ["fit", "--save", missing / "m.npz"],
            f"--save {missing / 'm.npz'}: the folder {missing} does not exist",
        ),
        (
            ["fit", "--plot", missing / "fit.png"],
            f"--plot {missing / 'fit.png'}: the folder {missing} does not exist",
        ),
        (["fit", "--save", tmp_path], f"--save {tmp_path}: is a folder, expected a "),
        (["fit", "--plot", tmp_path / "fit.pnj"], "unknown picture format '.pnj'"),
        (
            ["study", "saddle", "--out", a_file / "study"],
            f"--out {a_file / 'study'}: {a_file} is a file, expected a folder",
        ),
    ]:
        code, out, err = _main(capsys, *argv)
        assert code == 2 and out == ""
        assert err.startswith("gmmjax: error: ") and message in err
        assert len(err.splitlines()) == 1


def test_the_model_is_printed_before_a_diagnosis_that_fails(capsys, monkeypatch):
    reason = "the gradient or Hessian of f at theta is not finite"
    printed = []

    def diagnose(result, x, *, prior):
        assert prior is None  # plain EM: the log-likelihood is diagnosed
        printed.append(capsys.readouterr().out)
        raise ValueError(reason)

    monkeypatch.setattr(gmmjax, "diagnose", diagnose)
    code, out, err = _main(capsys, "fit", *_FIT)
    assert code == 0 and err == ""
    # the whole model was on stdout when the diagnosis started
    assert "means:" in printed[0] and "status: CONVERGED" in printed[0]
    assert out == f"diagnosis: not available ({reason})\n"
    code, out, err = _main(capsys, "fit", "--json", *_FIT)
    result = json.loads(out)
    assert code == 0 and err == "" and "diagnosis" not in result
    assert result["diagnosis_unavailable"] == reason and result["usable"]


def test_an_unusable_best_fit_is_printed_and_exits_1(capsys, tmp_path):
    # a quarter of the points on one far point: without --reg-covar the component
    # that takes them collapses onto it at the first step
    x = FAITHFUL.copy()
    x[::4] = [10.0, 150.0]
    path = tmp_path / "far.npy"
    np.save(path, x)
    code, out, err = _main(capsys, "fit", path, "--reg-covar", "0", *_FIT)
    assert code == 1
    assert "means:" in out and "status: DEGENERATE" in out and "BIC:" in out
    assert "diagnosis: not available (the fit is not usable)" in out
    message = gmmjax.Status.DEGENERATE.message
    prefix = "gmmjax: error: the best fit is not usable: "
    assert re.fullmatch(
        rf"{prefix}status DEGENERATE \(component [0-2]\): {re.escape(message)}\n", err
    )
    code, out, _ = _main(capsys, "fit", path, "--reg-covar", "0", "--json", *_FIT)
    result = json.loads(out)
    assert code == 1 and not result["usable"]
    assert err == f"{prefix}{result['reason']}\n"


def test_k_equal_to_the_number_of_points_is_refused(capsys, tmp_path):
    path = tmp_path / "six.csv"
    np.savetxt(path, FAITHFUL[:6], delimiter=",", header="a,b", comments="")
    code, out, err = _main(capsys, "fit", path, "-k", "6")
    assert code == 2 and out == ""
    assert err == (
        "gmmjax: error: -k must be between 1 and the number of samples (6) minus 1, "
        "got 6 (with k = n every component holds one point)\n"
    )


def test_a_pandas_csv_names_the_axes_and_its_index_is_left_out(
    capsys, monkeypatch, tmp_path
):
    import pandas as pd

    from gmmjax import plot

    path = tmp_path / "faithful.csv"
    pd.DataFrame(FAITHFUL, columns=["eruptions", "waiting"]).to_csv(path)
    figures = []
    draw = plot.plot_mixture

    def keep(*args, **kwargs):
        figures.append(draw(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(plot, "plot_mixture", keep)
    png = tmp_path / "fit.png"
    argv = ["--json", "--no-diagnosis", *_FIT]
    code, out, err = _main(capsys, "fit", path, *argv, "--plot", png)
    assert code == 0
    assert err == (
        "gmmjax: note: left out column 1: it has no name in the header and holds 272 "
        "distinct whole numbers, a row index such as pandas' to_csv() writes\n"
    )
    result = json.loads(out)
    assert result["data"]["columns"] == ["eruptions", "waiting"]
    assert result["data"]["left_out"] == ["column 1 (a row index)"]
    ax = figures[0].axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("eruptions", "waiting")
    # the same fit as of the bundled data, which has no index column
    code, out, _ = _main(capsys, "fit", *argv)
    assert json.loads(out)["means"] == result["means"]


def test_a_constant_column_is_named_and_left_out(capsys, tmp_path):
    path = tmp_path / "site.csv"
    table = np.column_stack([FAITHFUL, np.full(len(FAITHFUL), 3.0)])
    np.savetxt(path, table, delimiter=",", header="eruptions,waiting,site", comments="")
    code, out, err = _main(capsys, "fit", path, "--no-diagnosis", *_FIT)
    assert code == 0
    assert err == (
        "gmmjax: warning: column 3 ('site') is constant (every value is 3): left out, "
        "since a feature without spread makes the likelihood unbounded\n"
    )
    assert "272 samples, 2 features" in out
    assert "left out: column 3 ('site') (constant)" in out
    _, bundled, _ = _main(capsys, "fit", "--no-diagnosis", *_FIT)
    assert out.splitlines()[-6:] == bundled.splitlines()[-6:]  # the same model
    flat = tmp_path / "flat.csv"
    flat.write_text("a,b\n1,2\n1,2\n1,2\n")
    code, _, err = _main(capsys, "fit", flat)
    assert code == 2 and err.endswith("every column is constant, nothing to fit\n")


def test_csv_errors_name_the_line_the_column_and_the_delimiter(capsys, tmp_path):
    cases = {
        # a blank line still counts: line numbers are the file's
        "nan.csv": (
            "a,b\n1,2\n\n3,4\n5,nan\n",
            "data contain NaN or infinite values: line 5, column 2 ('b') is nan",
        ),
        "decimal-comma.csv": (
            "a;b\n1,5;2,5\n",
            "line 2 is not a row of numbers: column 1 ('a') is '1,5' (fields "
            "separated by ';'; write decimals with a point)",
        ),
        "empty-field.csv": (
            "1,2\n3,\n",
            "line 2 is not a row of numbers: column 2 is empty",
        ),
        "ragged.csv": (
            "a b c\n1 2 3\n4 5\n",
            "rows have different numbers of columns: line 3 has 2, line 1 has 3 "
            "(fields separated by whitespace)",
        ),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        code, _, err = _main(capsys, "fit", path)
        assert code == 2 and err == f"gmmjax: error: {path}: {message}\n"


def test_a_semicolon_csv_is_read(capsys, tmp_path):
    path = tmp_path / "semicolon.csv"
    np.savetxt(path, FAITHFUL, delimiter=";", header="eruptions;waiting", comments="")
    code, out, err = _main(capsys, "fit", path, "--json", "--no-diagnosis", *_FIT)
    result = json.loads(out)
    assert code == 0 and err == "" and result["data"]["n_features"] == 2
    assert result["data"]["columns"] == ["eruptions", "waiting"]


def test_help_shows_the_defaults_and_the_exit_status(capsys):
    code, out, _ = _main(capsys, "fit", "--help")
    assert code == 0
    text = " ".join(out.split())
    for default in (
        "number of components (default: 2)",
        "step budget (default: 500)",
        "fitted as one batch (default: 1)",
        "mean log-likelihood (default: 1e-06)",
        "Exit status: 0 for a usable fit; 1 when the best fit is not usable",
    ):
        assert default in text


def test_help_and_input_errors_answer_without_importing_jax(tmp_path):
    nan = tmp_path / "nan.csv"
    nan.write_text("a,b\n1,nan\n")
    calls = [
        ["--help"],
        ["fit", "--help"],
        ["fit", "-k", "x"],
        ["fit", "--n-init", "0"],
        ["fit", "-k", "272"],
        ["fit", str(nan)],
        ["fit", "--save", str(tmp_path / "missing" / "m.npz")],
        ["select", "-k", "0-3"],
    ]
    script = f"""
import sys
from gmmjax.cli import main
for argv in {calls!r}:
    try:
        main(argv)
    except SystemExit:
        pass
print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"jax", "optax"}}))
"""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=root
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]"
    assert len(out.stderr.splitlines()) == len(calls) - 2  # one line per error


def _table_with_text(tmp_path):
    """Old Faithful between two text columns, with a header."""
    path = tmp_path / "stations.csv"
    rows = [
        f"geyser-{i},{a!r},{'yes' if i % 2 else 'no'},{b!r}"
        for i, (a, b) in enumerate(FAITHFUL.tolist())
    ]
    path.write_text("station,eruptions,reviewed,waiting\n" + "\n".join(rows) + "\n")
    return path


def test_text_columns_are_named_and_left_out(capsys, tmp_path):
    path = _table_with_text(tmp_path)
    data = cli.load_data(str(path))
    np.testing.assert_array_equal(data.values, FAITHFUL)
    assert data.names == ["eruptions", "waiting"]
    assert data.left_out == [
        "column 1 ('station') (text)",
        "column 3 ('reviewed') (text)",
    ]
    assert capsys.readouterr().err == (
        "gmmjax: note: left out column 1 ('station'): it holds text, not numbers\n"
        "gmmjax: note: left out column 3 ('reviewed'): it holds text, not numbers\n"
    )
    # without a header too: the first row is data, not names
    bare = tmp_path / "bare.csv"
    bare.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")
    data = cli.load_data(str(bare))
    np.testing.assert_array_equal(data.values, FAITHFUL)
    assert data.names is None


def test_columns_by_name_or_by_position(capsys, tmp_path):
    path = _table_with_text(tmp_path)
    for columns in ("eruptions,waiting", "1,3", "eruptions, 3"):
        data = cli.load_data(str(path), columns)
        np.testing.assert_array_equal(data.values, FAITHFUL)
        assert data.names == ["eruptions", "waiting"] and data.left_out == []
    assert capsys.readouterr().err == ""  # chosen: no note about the others
    data = cli.load_data(str(path), "waiting")
    np.testing.assert_array_equal(data.values, FAITHFUL[:, 1:])
    # the bundled data and .npy files have no header: by position
    np.testing.assert_array_equal(cli.load_data(None, "1").values, FAITHFUL[:, 1:])
    npy = tmp_path / "faithful.npy"
    np.save(npy, FAITHFUL)
    np.testing.assert_array_equal(
        cli.load_data(str(npy), "1,0").values, FAITHFUL[:, ::-1]
    )
    # the whole command, as a user runs it: the fit of the bundled data
    argv = ["--json", "--no-diagnosis", *_FIT]
    code, out, err = _main(capsys, "fit", path, "--columns", "eruptions,waiting", *argv)
    assert code == 0 and err == ""
    result = json.loads(out)
    assert result["data"]["columns"] == ["eruptions", "waiting"]
    code, bundled, _ = _main(capsys, "fit", *argv)
    assert result["means"] == json.loads(bundled)["means"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (
            "eruptions,wait",
            "--columns: no column named 'wait' in {path}; its columns are 'station', "
            "'eruptions', 'reviewed', 'waiting' (or pick by position, 0 to 3)",
        ),
        (
            "1,4",
            "--columns: position 4 is out of range: {path} has 4 columns "
            "(positions 0 to 3)",
        ),
        ("waiting,3", "--columns 'waiting,3': column '3' is repeated"),
        ("eruptions,", "--columns 'eruptions,': an empty column name"),
        (
            "station,waiting",
            "--columns: column 1 ('station') of {path} holds text, not numbers",
        ),
    ],
)
def test_a_bad_column_choice_is_a_one_line_error(capsys, tmp_path, columns, message):
    path = _table_with_text(tmp_path)
    for command in ("fit", "select"):
        code, out, err = _main(capsys, command, path, "--columns", columns)
        assert code == 2 and out == ""
        assert err == f"gmmjax: error: {message.format(path=path)}\n"


def test_columns_by_name_need_a_header(capsys, tmp_path):
    code, _, err = _main(capsys, "fit", "--columns", "waiting")
    assert code == 2
    assert err == (
        "gmmjax: error: --columns: no column named 'waiting': the bundled data has "
        "no header, so pick its columns by position (0 to 1)\n"
    )


def test_fit_with_mclusts_prior_reports_the_log_posterior(capsys, monkeypatch):
    """``--prior default``: MAP-EM with mclust's default prior; the reported log
    posterior is the log-likelihood of the printed model (scipy) plus its log
    prior, and the diagnosis is asked for the log posterior's (test_prior.py
    checks that diagnosis itself)."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    asked = []

    def diagnose(result, x, *, prior):
        asked.append(prior)
        raise ValueError("not computed in this test")

    monkeypatch.setattr(gmmjax, "diagnose", diagnose)
    argv = ["fit", "--prior", "default", "--json", "--tol", "1e-9"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prior"] == "default" and out["objective"]["name"] == "log posterior"
    x = np.asarray(gmmjax.datasets.faithful(), np.float64)
    weights, means = np.asarray(out["weights"]), np.asarray(out["means"])
    covariances = np.asarray(out["covariances"])
    joint = np.stack(
        [
            np.log(w) + multivariate_normal(m, c).logpdf(x)
            for w, m, c in zip(weights, means, covariances, strict=True)
        ],
        axis=1,
    )
    ll = logsumexp(joint, axis=1).sum()
    np.testing.assert_allclose(out["log_likelihood"], ll, rtol=1e-6)
    gmm = gmmjax.GMM.from_natural(weights, means, covariances)
    prior = gmmjax.Prior.default(x, n_components=2)
    log_prior = float(gmmjax.log_prior(gmm, prior))
    np.testing.assert_allclose(out["objective"]["value"], ll + log_prior, rtol=1e-6)
    (asked_prior,) = asked
    np.testing.assert_allclose(asked_prior.scale, prior.scale, rtol=1e-12)
    assert out["diagnosis_unavailable"] == "not computed in this test"


def test_fit_by_variational_bayes_switches_components_off(capsys):
    argv = ["fit", "--method", "vb", "-k", "5", "--n-init", "2", "--json"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["objective"]["name"].startswith("lower bound")
    assert len(out["restart_objectives"]) == 2
    assert out["objective"]["value"] == max(out["restart_objectives"])
    # Old Faithful has two clusters: the Dirichlet process keeps two components
    assert np.sum(np.asarray(out["weights"]) > 0.01) == 2
    assert "variational" in out["diagnosis_unavailable"]
    assert cli.main(["fit", "--method", "vb", "-k", "5", "--n-init", "2"]) == 0
    assert "components in use: 2 of 5" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--prior", "default", "--method", "adam"], "--prior default (MAP-EM) needs"),
        (["--prior", "default", "--method", "vb"], "vb has its own prior"),
        (["--method", "vb", "--max-reseeds", "1"], "--max-reseeds needs"),
    ],
)
def test_prior_and_method_conflicts_are_one_line_errors(capsys, options, message):
    assert cli.main(["fit", *options]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_select_with_mclusts_prior(capsys):
    import jax

    argv = ["select", "-k", "1-2", "--covariance-types", "spherical", "--n-init", "2"]
    assert cli.main([*argv, "--prior", "default"]) == 0
    out = capsys.readouterr().out
    assert "prior: mclust's default conjugate prior" in out
    x = gmmjax.datasets.faithful()
    result = gmmjax.select(
        jax.random.key(0),
        x,
        n_components=[1, 2],
        covariance_types=["spherical"],
        n_init=2,
        prior="default",
    )
    for value in np.asarray(result.values).ravel():
        assert f"{value:.3f}" in out
