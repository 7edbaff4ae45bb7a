"""Write the saddle study's results: ``results.json`` and ``report.md``.

The report's prose is the template ``report.md`` next to this module (shipped in
the wheel as package data), filled by :class:`string.Template` from a flat dict of
already-formatted numbers and tables (:func:`fields`).
"""

from __future__ import annotations

import json
import string
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from . import runs as R

__all__ = ["fields", "fmt", "jsonable", "render", "table", "write"]


def fmt(v, digits=4) -> str:
    """A number as the report prints it: integers plainly, ``-`` for NaN, scientific
    notation outside ``[1e-3, 1e5)``.

    Example:
        >>> from gmmjax._studies.saddle.report import fmt
        >>> fmt(3.0), fmt(0.123456), fmt(2.5e-9), fmt(float("nan")), fmt(-0.0)
        ('3', '0.1235', '2.500e-09', '-', '0')
    """
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v) + 0.0  # no "-0"
    if np.isnan(v):
        return "-"
    if np.isfinite(v) and v == int(v) and abs(v) < 1e9:
        return str(int(v))
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; cells that are not strings go through :func:`fmt`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [c if isinstance(c, str) else fmt(c) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def jsonable(obj):
    """``obj`` with numpy values as Python ones and non-finite floats as ``None``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    return obj


def _vector(values) -> str:
    return str([fmt(v) for v in values])


def _percent(fraction, digits) -> str:
    return f"{100 * fraction:.{digits}f}"


def fields(r: dict, cfg, grid: R.Grid) -> dict[str, str]:
    """The template's fields, formatted from the results ``r`` of the study run
    with config ``cfg`` on ``grid``."""
    em, cmp_, sad = r["em"], r["comparison"], r["saddle"]
    machine = r["machine"]
    splits = []
    for k, v in r["annealing"]["path_split_variance"].items():
        if isinstance(k, int) or str(k).isdigit():
            splits.append(f"{fmt(v)} with {k} EM steps per variance")
        else:
            splits.append(f"{fmt(v)} with {k} (EM to tol at each variance)")
    gaps = [
        "never" if v is None else f"{v} steps"
        for v in em["exact_minus_tol_max_steps"].values()
    ]
    success, escape = R.SUCCESS_SIGMA, R.ESCAPE_SIGMA
    return {
        "quick_flag": " --quick" if cfg.quick else "",
        "wall": f"{r['wall_time_s']:.1f}",
        "cpu": f"{r['cpu_time_s']:.1f}",
        "processor": machine["processor"],
        "platform": machine["platform"],
        "jax": machine["jax"],
        "success_sigma": f"{success}",
        "saddle_radius": f"{R.SADDLE_RADIUS}",
        "escape_sigma": f"{escape}",
        "parameter_tol": f"{R.PARAMETER_TOL:g}",
        "grid_n_mu": str(grid.shape[0]),
        "grid_n_sigma": str(grid.shape[1]),
        "n_starts": str(grid.shape[0] * grid.shape[1]),
        "budget": str(cfg.em_budget),
        "curvature_table": table(
            ["sigma", "d2L/dmu2 at mu = 0 (autodiff of the library)"],
            [[k, v] for k, v in r["surface"]["curvature_mu_at_0"].items()],
        ),
        "alternating_table": table(
            [
                "start",
                "mu after sweep 1",
                "sigma after sweep 1",
                "mu final",
                "sigma final",
            ],
            r["alternating"]["paths"],
        ),
        "gradient": _vector(sad["gradient"]),
        "hessian": str([[fmt(h) for h in row] for row in sad["hessian"]]),
        "eigenvalues": _vector(sad["eigenvalues"]),
        "determinant": fmt(sad["determinant"]),
        "ridge_ratio": fmt(sad["ridge_gain_over_mu4"]),
        "kind": sad["classification"]["kind"],
        "order": str(sad["classification"]["order"]),
        "n_null": str(sad["classification"]["n_null"]),
        "escape_d": _vector(sad["escape"]["direction"]),
        "escape_w": _vector(sad["escape"]["curvature"]),
        "escape_rate": fmt(sad["escape"]["rate"]),
        "escape_order": str(sad["escape"]["order"]),
        "nearby_table": table(["(mu, sigma)", "L(mu, sigma) - L(0, 1)"], sad["nearby"]),
        "profile_table": table(["mu", "sigma*(mu)"], r["profile"]["rows"]),
        "sigma_100_median": fmt(em["sigma_after_100"]["median"]),
        "sigma_100_above": _percent(em["sigma_after_100"]["fraction_above_0.9"], 1),
        "library_agreement": fmt(em["library_vs_closed_form_100_steps"]),
        "predicted_unescaped": _percent(em["predicted_unescaped"], 2),
        "measured_unescaped": _percent(em["measured_unescaped"], 2),
        "convergence_table": table(
            [
                "implementation",
                f"stops, tol {R.PARAMETER_TOL:g}",
                "median steps (tol)",
                "stops, exact equality",
                "median steps (exact)",
                f"reaches sigma < {success}",
            ],
            em["convergence"],
        ),
        "exact_gaps": ", ".join(gaps),
        "smallest_plateau_move": fmt(em["smallest_plateau_move"]),
        "smallest_mu1": fmt(em["smallest_mu1"]),
        "reg_covar_stuck": _percent(em["reg_covar_stuck"], 1),
        "demo_without_floor": fmt(em["reg_covar_demo"]["0"], 6),
        "demo_with_floor": fmt(em["reg_covar_demo"]["1e-06"], 6),
        "fit_rule_table": table(
            ["status", "fraction", "of which stuck near the saddle", "median steps"],
            em["fit_default_rule"],
        ),
        "trajectory_table": table(
            ["EM from (0.02, 0.8)", "value"],
            [[k, v] for k, v in em["trajectory"].items()],
        ),
        "scipy_stride": str(cfg.scipy_stride),
        "comparison_table": table(
            [
                "method",
                "starts",
                f"reached sigma < {success}",
                f"left the saddle (sigma < {escape})",
                "stuck near saddle",
                "invalid",
                "median steps",
                f"median steps to sigma < {success}",
                "stopping rule",
                "wall s (incl. compile)",
            ],
            cmp_["rows"],
        ),
        "scipy_note": (
            "" if cmp_["scipy"] else "scipy is not installed: its rows are omitted."
        ),
        "exact_split": fmt(r["annealing"]["exact_split_variance"]),
        "path_splits": ", ".join(splits),
        "mu_star_table": table(
            ["v", "mu*(v)"], [[k, v] for k, v in r["annealing"]["mu_star"].items()]
        ),
        "section_table": table(
            ["section", "wall seconds", "CPU seconds"],
            [[k, *v] for k, v in r["section_seconds"].items()],
        ),
    }


def render(r: dict, cfg, grid: R.Grid) -> str:
    """The Markdown report: the template filled with :func:`fields`."""
    source = resources.files(__package__).joinpath("report.md").read_text("utf-8")
    return string.Template(source).substitute(fields(r, cfg, grid))


def write(out: Path, r: dict, cfg, grid: R.Grid) -> dict:
    """Write ``report.md`` and ``results.json`` into ``out``; return the
    JSON-able results."""
    (Path(out) / "report.md").write_text(render(r, cfg, grid))
    results = jsonable(r)
    (Path(out) / "results.json").write_text(json.dumps(results, indent=1))
    return results
