"""The saddle study: its fitters and batched runs against independent references,
its fence (public API only, one loop driver), and the ``gmmjax study saddle``
command end to end (quick mode)."""

import ast
import json
import os
import string
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import once_per_run

from gmmjax import toy
from gmmjax._studies.saddle import FIGURES, STAGES, run_saddle_study
from gmmjax._studies.saddle import fitters as F
from gmmjax._studies.saddle import lanes as L
from gmmjax._studies.saddle import runs as R
from gmmjax._studies.saddle.scipy_runs import clipped_objective

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "gmmjax" / "_studies"


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def run_quick_study(out: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = ["study", "saddle", "--out", str(out), "--quick"]
    proc = subprocess.run(
        [sys.executable, "-m", "gmmjax", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    # one run for all xdist workers (about half a minute of CPU time)
    out, stdout = once_per_run(tmp_path_factory, "saddle", run_quick_study)
    return out, stdout, json.loads((out / "results.json").read_text())


def test_command_writes_report_and_figures(quick_study):
    out, stdout, results = quick_study
    assert "report.md" in stdout
    report_md = (out / "report.md").read_text()
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"({name})" in report_md
    for heading in ("## 1.", "## 3.", "## 6.", "## 7.", "## 8.", "## Criteria"):
        assert heading in report_md
    assert "$" not in report_md  # every field of the template was filled
    assert results["wall_time_s"] > 0 and results["cpu_time_s"] > 0
    assert f"{results['wall_time_s']:.1f} s wall" in report_md
    assert list(results["section_seconds"]) == list(STAGES)


def test_study_numbers(quick_study):
    _, _, r = quick_study
    np.testing.assert_allclose(r["saddle"]["hessian"], [[0, 0], [0, -4]], atol=1e-12)
    np.testing.assert_allclose(r["saddle"]["gradient"], [0, 0], atol=1e-14)
    # the ridge gain is mu^4 / 3 to leading order (see the report)
    assert r["saddle"]["ridge_gain_over_mu4"] == pytest.approx(1 / 3, rel=0.05)
    assert r["saddle"]["classification"]["kind"] == "saddle"
    assert r["saddle"]["escape"]["rate"] == pytest.approx(1 / 3, rel=1e-6)
    nearby = dict(r["saddle"]["nearby"])
    assert nearby["(0.1, 0.999)"] == pytest.approx(1.311065e-6, rel=1e-6)
    profile = dict(r["profile"]["rows"])
    assert profile[0.1] == pytest.approx(0.9949189, abs=1e-6)
    traj = r["em"]["trajectory"]
    assert 500 <= traj["first_step_sigma_below_0.5"] <= 1500
    assert traj["sigma_at_step_300"] > 0.95
    assert traj["final_sigma"] < 1e-6 and abs(traj["final_mu"]) > 1 - 1e-6
    assert r["em"]["library_vs_closed_form_100_steps"] < 1e-12
    curv = r["surface"]["curvature_mu_at_0"]
    assert curv["0.9"] > 0 and curv["1.1"] < 0 and abs(curv["1.0"]) < 1e-12
    names = [row[0] for row in r["comparison"]["rows"]]
    assert any(n.startswith("EM") for n in names)
    assert any("alternating" in n for n in names)
    assert any("scipy Nelder-Mead" in n for n in names)
    summaries = r["comparison"]["summaries"]
    # the library's variance sweep succeeds from every start; DAEM (tempered
    # posteriors, free sigma) pulls mu to 0 and leaves most runs at the saddle
    sweep = summaries["gmmjax.anneal_variance, then EM"]
    assert sweep["success"] == 1.0
    daem = summaries["gmmjax.Annealed(EM), beta 0.2 -> 1 in 100 steps"]
    assert daem["stuck"] > 0.5
    assert (
        summaries["gmmjax.GradientFitter(adam, lr 0.05), GMM leaves"]["success"] > 0.9
    )
    # alternating maximization: exactly the starts with sigma >= 1 end at the saddle
    alternating = summaries["alternating (closed-form argmax)"]
    assert alternating["stuck"] == pytest.approx(np.mean(R.start_grid(10).sigma >= 1))
    # the closed-form variance sweep succeeds from every start, like the library's
    assert summaries["variance sweep (DA), closed form"]["success"] == 1.0


def test_command_requires_a_study_name():
    proc = subprocess.run(
        [sys.executable, "-m", "gmmjax", "study"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "saddle" in proc.stderr


# ----------------------------------------------------------------- the fence
def _study_modules():
    return sorted(STUDY.rglob("*.py"))


def _imported(tree):
    """``(module path parts, imported names)`` of every absolute import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level:
            yield (node.module or "").split("."), [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split("."), []


def test_study_imports_only_public_names():
    # relative imports stay inside the study; gmmjax itself only by public names
    for path in _study_modules():
        for parts, names in _imported(ast.parse(path.read_text())):
            if parts[0] == "gmmjax":
                private = [p for p in parts[1:] + names if p.startswith("_")]
                assert not private, f"{path.name} imports {private} from {parts}"


def test_study_has_one_loop_driver():
    # every fit goes through gmmjax.fit (or gmmjax.anneal_variance)
    for path in _study_modules():
        source = path.read_text()
        for loop in ("while_loop", "fori_loop", "lax.scan"):
            assert loop not in source, f"{path.name} has its own {loop}"


def test_every_study_module_declares_all():
    for path in _study_modules():
        tree = ast.parse(path.read_text())
        targets = [
            t.id
            for node in tree.body
            if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Name)
        ]
        assert "__all__" in targets, path
        assert len(path.read_text().splitlines()) < 500, path


def test_report_template_ships_as_package_data():
    # the prose is a Markdown template next to the code (hatchling ships every
    # file under gmmjax/ in the wheel), filled with ${field} placeholders only
    source = resources.files("gmmjax._studies.saddle").joinpath("report.md")
    template = string.Template(source.read_text("utf-8"))
    assert template.is_valid()
    fields = {m.group("braced") for m in template.pattern.finditer(template.template)}
    assert None not in fields
    assert {"wall", "cpu", "convergence_table", "comparison_table"} <= fields


# ------------------------------------------------------------- runs and rules
def test_gradient_ascent_batch_equals_a_numpy_loop():
    mu0 = np.array([0.05, -0.2, 0.3])
    sigma0 = np.array([1.4, 0.7, 1.0])
    lr, budget = 0.1, 25
    runs = R.run_method(
        L.for_lanes(F.Ascent(lr), 3), mu0, sigma0, budget=budget, chunk=3
    )
    for j in range(3):
        # reference: the same ascent with the closed-form gradient, in numpy
        m, t = mu0[j], np.log(sigma0[j])
        for _ in range(budget):
            s = np.exp(t)
            g_mu, g_sigma = (float(g) for g in toy.dll(m, s))
            m, t = m + lr * 0.5 * g_mu, t + lr * 0.5 * s * g_sigma
        np.testing.assert_allclose(runs.mu[j], m, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(runs.sigma[j], np.exp(t), rtol=1e-10)
    assert np.all(runs.n_steps == budget)


def _em_path(mu, sigma, steps):
    """Closed-form EM in numpy (an independent loop): ``(steps, 2)``."""
    out = []
    with np.errstate(divide="ignore", over="ignore"):
        for _ in range(steps):
            p = 1.0 / (1.0 + np.exp(-2.0 * mu / sigma**2))
            mu = 2 * p - 1
            sigma = np.sqrt(p * (1 - mu) ** 2 + (1 - p) * (1 + mu) ** 2)
            out.append((mu, sigma))
    return np.array(out)


def test_rule_events_equal_a_numpy_loop():
    mu0 = np.array([0.05, -0.1, 0.02])
    sigma0 = np.array([1.5, 1.0, 0.8])
    fitter = L.for_lanes(F.ClosedFormEM(), 3)
    last = np.array([400, 400, 60])
    for threshold in (R.ESCAPE_SIGMA, R.SUCCESS_SIGMA):
        steps = R.first_below(fitter, mu0, sigma0, threshold, last, chunk=3)
        for j in range(3):
            sigma = _em_path(mu0[j], sigma0[j], last[j])[:, 1]
            below = np.flatnonzero(sigma < threshold)
            assert steps[j] == (below[0] + 1 if below.size else -1)
    # the tolerance rule stops at the first step that moves nothing by more than tol
    runs = R.run_method(fitter, mu0, sigma0, budget=3000, chunk=3)
    for j in range(3):
        path = np.vstack([[mu0[j], sigma0[j]], _em_path(mu0[j], sigma0[j], 3000)])
        move = np.max(np.abs(np.diff(path, axis=0)), axis=1)
        assert runs.n_steps[j] == np.flatnonzero(move <= R.PARAMETER_TOL)[0] + 1


def test_em_convergence_rules_and_escape_estimate():
    mu0 = np.array([0.02, 0.05, -0.1, 0.2])
    sigma0 = np.array([0.8, 1.5, 1.0, 0.3])
    conv = R.em_convergence(
        L.for_lanes(F.ClosedFormEM(), 4), mu0, sigma0, budget=5000, chunk=4
    )
    assert np.all(conv.tol_step <= conv.exact_step)
    assert np.all(conv.success_step > 0)
    np.testing.assert_allclose(np.abs(conv.mu), 1.0)
    # the escape estimate 3 / (4 u1^2) from the unit-circle map, for small u1
    predicted = R.escape_steps_estimate(mu0[:3], sigma0[:3])
    np.testing.assert_allclose(conv.escape_step[:3], predicted, rtol=0.05)


def test_one_program_serves_every_setting():
    # hyperparameters, budgets and rules are traced: a new value compiles nothing
    fitter = L.for_lanes(F.Ascent(0.1), 2)
    R.run_method(fitter, np.array([0.1, 0.2]), np.ones(2), budget=5, chunk=2)
    compiled, listening = [], [True]

    def listen(event, duration, **kwargs):
        if listening[0] and event == "/jax/core/compile/backend_compile_duration":
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        other = L.for_lanes(F.Ascent(0.01), 2)
        R.run_method(other, np.array([0.3, -0.2]), np.full(2, 0.7), budget=9, chunk=2)
        spec = L.lanes([0.1, 0.2], [1.0, 1.0], budget=3, tol=0.0)
        L.run_lanes(other, spec, chunk=2)
    finally:
        listening[0] = False
    assert compiled == []


def test_runs_do_not_depend_on_chunking():
    # the events are measured by running a start again in another chunk: a lane's
    # arithmetic must not depend on its neighbours (fixed-step ascent is chaotic
    # near the optimum, so any difference would show)
    mu0 = np.linspace(-0.3, 0.3, 7)
    sigma0 = np.linspace(0.2, 1.4, 7)
    fitter = L.for_lanes(F.Ascent(0.1), 7)
    spec = L.lanes(mu0, sigma0, budget=1500)
    a = L.run_lanes(fitter, spec, chunk=7)
    b = L.run_lanes(fitter, spec, chunk=3, order=np.arange(7)[::-1])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_paths_and_reruns_measure_the_same_runs():
    # trace_method reads the rules off fit_trace paths, run_method stops fit and
    # runs again for the events: the same runs, the same answers
    # (EM: runs that stop, hit, escape, end at the supremum, or never escape)
    mu0 = np.array([0.05, -0.2, 0.3, 0.01, -0.3, 0.003])
    sigma0 = np.array([1.4, 0.7, 0.2, 1.0, 0.1, 1.2])
    for fitter, steps in ((F.ClosedFormEM(), 600), (F.Ascent(0.1), 300)):
        fitter = L.for_lanes(fitter, mu0.size)
        stopped = R.run_method(fitter, mu0, sigma0, budget=steps, chunk=4)
        traced = R.trace_method(fitter, mu0, sigma0, steps=steps, chunk=4)
        for name in ("n_steps", "first_hit", "escaped", "finite"):
            np.testing.assert_array_equal(getattr(stopped, name), getattr(traced, name))
        np.testing.assert_allclose(stopped.mu, traced.mu, atol=R.PARAMETER_TOL)
        np.testing.assert_allclose(stopped.sigma, traced.sigma, atol=R.PARAMETER_TOL)


def test_summarize_counts_by_hand():
    runs = R.Runs(
        mu=np.array([1.0, 0.01, 0.5, 0.9, 0.3]),
        sigma=np.array([0.0, 1.02, 0.05, -0.01, np.nan]),
        n_steps=np.array([10, 20, 30, 40, 50]),
        first_hit=np.array([8, -1, 25, -1, -1]),
        escaped=np.array([True, False, True, True, False]),
        finite=np.array([True, True, True, True, False]),
    )
    s = R.summarize(runs)
    assert s["success"] == pytest.approx(2 / 5)  # sigma = 0 at |mu| = 1 counts
    assert s["stuck"] == pytest.approx(1 / 5)
    assert s["invalid"] == pytest.approx(2 / 5)  # sigma < 0, and non-finite
    assert s["escaped"] == pytest.approx(3 / 5)
    assert s["median_steps_to_success"] == pytest.approx(16.5)


def test_stable_log_likelihood_matches_the_library():
    mu = np.array([0.0, 0.3, -0.7, 1.2])
    sigma = np.array([1.0, 0.7, 0.4, 2.0])
    ref = [float(toy.ll(m, s)) for m, s in zip(mu, sigma, strict=True)]
    np.testing.assert_allclose(F.log_likelihood(mu, sigma), ref, rtol=1e-12)
    # where the closed form cancels to garbage, the stable form stays exact
    mu, sigma = 1 - 1e-6, 1e-9
    square = (1 - mu) ** 2 / (2 * sigma**2)  # about 5e5
    expected = 2 * (-np.log(sigma) - 0.5 * np.log(2 * np.pi) - square - np.log(2))
    assert float(F.log_likelihood(mu, sigma)) == pytest.approx(expected, rel=1e-12)


def test_clipped_objective_matches_the_library():
    theta = np.array([0.3, 0.7])
    value, grad = clipped_objective(theta)
    assert value == pytest.approx(-float(toy.ll(0.3, 0.7)), rel=1e-12)
    ref = jax.grad(lambda t: -toy.ll(t[0], t[1]))(jnp.asarray(theta))
    np.testing.assert_allclose(grad, ref, rtol=1e-10)
    assert clipped_objective(np.array([0.3, -0.2]))[0] == 1e9
    assert clipped_objective(np.array([0.3, 0.0]))[0] == 1e9


def test_direct_ratio_em_agrees_where_nothing_underflows():
    mu = jnp.array([0.02, 0.3, -0.4])
    sigma = jnp.array([0.8, 1.2, 0.9])
    np.testing.assert_allclose(
        F.em_update_direct(mu, sigma), toy.em_update(mu, sigma), rtol=1e-12
    )


def test_variance_sweep_follows_the_pitchfork():
    variances = np.geomspace(2.0, 0.05, 30)
    inner, release = 200, 30
    sweep = F.VarianceSweep(variances, inner, 1e-3)
    starts = np.array([0.0, -0.2])
    ends = (np.arange(variances.size) + 1) * inner  # the end of each stage
    budget = np.concatenate([np.repeat(ends, 2), [ends[-1] + release] * 2])
    mu0 = np.tile(starts, variances.size + 1)
    lanes = L.lanes(mu0, np.ones_like(mu0), budget=budget)
    ended = L.run_lanes(L.for_lanes(sweep, mu0.size), lanes, chunk=62)
    path = ended.mu[:-2].reshape(-1, 2)
    exact = np.asarray(toy.argmax_mu(np.sqrt(variances)))
    hot = variances > 1.2
    cold = variances < 0.8
    # above v = 1 the perturbation decays back towards 0; below it the path sits on
    # the exact maximum (200 fixed-variance EM steps converge at rate 1 / v there)
    assert np.all(np.abs(path[hot]) < 1e-3)
    np.testing.assert_allclose(path[cold, 0], exact[cold], rtol=1e-6)
    np.testing.assert_allclose(path[cold, 1], -exact[cold], rtol=1e-6)
    # the release: free EM collapses onto the data (the supremum ends the run)
    assert np.all(ended.sigma[-2:] < R.SUCCESS_SIGMA)
    np.testing.assert_allclose(ended.mu[-2:], [1.0, -1.0])


def test_run_saddle_study_is_exported():
    assert callable(run_saddle_study)
    assert STAGES[0] == "surface" and len(FIGURES) == 9
