"""The saddle study: its batched runners against independent references, and the
``gmmjax study saddle`` command end to end (quick mode)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import once_per_run

from gmmjax import _study as S
from gmmjax import toy
from gmmjax._study_report import FIGURES

ROOT = Path(__file__).resolve().parent.parent


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
    # one run for all xdist workers (about a minute of CPU time)
    out, stdout = once_per_run(tmp_path_factory, "saddle", run_quick_study)
    return out, stdout, json.loads((out / "results.json").read_text())


def test_command_writes_report_and_figures(quick_study):
    out, stdout, results = quick_study
    assert "report.md" in stdout
    report = (out / "report.md").read_text()
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"({name})" in report
    for heading in ("## 1.", "## 3.", "## 6.", "## 7.", "## 8.", "## Criteria"):
        assert heading in report
    assert results["wall_time_s"] > 0 and results["cpu_time_s"] > 0
    assert f"{results['wall_time_s']:.1f} s wall" in report


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


def test_gradient_ascent_batch_equals_a_numpy_loop():
    mu0 = np.array([0.05, -0.2, 0.3])
    sigma0 = np.array([1.4, 0.7, 1.0])
    lr, budget = 0.1, 25
    runs = S.run_gradient_ascent(mu0, sigma0, learning_rate=lr, budget=budget)
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


def test_em_convergence_rules_and_escape_estimate():
    mu0 = np.array([0.02, 0.05, -0.1, 0.2])
    sigma0 = np.array([0.8, 1.5, 1.0, 0.3])
    conv = S.em_convergence(toy.em_update, mu0, sigma0, budget=5000)
    assert np.all(conv.tol_step <= conv.exact_step)
    assert np.all(conv.success_step > 0)
    np.testing.assert_allclose(np.abs(conv.mu), 1.0)
    # the escape estimate 3 / (4 u1^2) from the unit-circle map, for small u1
    predicted = S.escape_steps_estimate(mu0[:3], sigma0[:3])
    np.testing.assert_allclose(conv.escape_step[:3], predicted, rtol=0.05)


def test_summarize_counts_by_hand():
    runs = S.Runs(
        mu=np.array([1.0, 0.01, 0.5, 0.9, 0.3]),
        sigma=np.array([0.0, 1.02, 0.05, -0.01, np.nan]),
        n_steps=np.array([10, 20, 30, 40, 50]),
        first_hit=np.array([8, -1, 25, -1, -1]),
        first_escape=np.array([5, -1, 20, 39, -1]),
        finite=np.array([True, True, True, True, False]),
    )
    s = S.summarize(runs)
    assert s["success"] == pytest.approx(2 / 5)  # sigma = 0 at |mu| = 1 counts
    assert s["stuck"] == pytest.approx(1 / 5)
    assert s["invalid"] == pytest.approx(2 / 5)  # sigma < 0, and non-finite
    assert s["escaped"] == pytest.approx(3 / 5)
    assert s["median_steps_to_success"] == pytest.approx(16.5)


def test_clipped_objective_matches_the_library():
    theta = np.array([0.3, 0.7])
    value, grad = S.clipped_objective(theta)
    assert value == pytest.approx(-float(toy.ll(0.3, 0.7)), rel=1e-12)
    ref = jax.grad(lambda t: -toy.ll(t[0], t[1]))(jnp.asarray(theta))
    np.testing.assert_allclose(grad, ref, rtol=1e-10)
    assert S.clipped_objective(np.array([0.3, -0.2]))[0] == 1e9
    assert S.clipped_objective(np.array([0.3, 0.0]))[0] == 1e9


def test_direct_ratio_em_agrees_where_nothing_underflows():
    mu = jnp.array([0.02, 0.3, -0.4])
    sigma = jnp.array([0.8, 1.2, 0.9])
    np.testing.assert_allclose(
        S.em_update_direct(mu, sigma), toy.em_update(mu, sigma), rtol=1e-12
    )


def test_variance_sweep_follows_the_pitchfork():
    variances = np.geomspace(2.0, 0.05, 30)
    path, runs = S.variance_sweep(
        jnp.array([0.0, -0.2]),
        variances=variances,
        inner_steps=200,
        perturbation=1e-3,
        release_steps=30,
    )
    exact = np.asarray(toy.argmax_mu(np.sqrt(variances)))
    hot = variances > 1.2
    cold = variances < 0.8
    # above v = 1 the perturbation decays back towards 0; below it the path sits on
    # the exact maximum (200 fixed-variance EM steps converge at rate 1 / v there)
    assert np.all(np.abs(path[hot]) < 1e-3)
    np.testing.assert_allclose(path[cold, 0], exact[cold], rtol=1e-6)
    np.testing.assert_allclose(path[cold, 1], -exact[cold], rtol=1e-6)
    assert np.all(runs.sigma < S.SUCCESS_SIGMA)
    np.testing.assert_allclose(runs.mu, [1.0, -1.0])
