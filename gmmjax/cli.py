"""The ``gmmjax`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


class CLIError(Exception):
    """A user-facing error: printed on one line, exit status 2."""


def load_data(path: str | None) -> np.ndarray:
    """Read ``(n, d)`` data from a CSV (header detected) or ``.npy`` file; the bundled
    Old Faithful data when ``path`` is ``None``."""
    from . import datasets

    if path is None:
        return datasets.faithful()
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"data file not found: {path}")
    if p.suffix == ".npy":
        try:
            x = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise CLIError(f"cannot read {path} as .npy: {err}") from None
    else:
        x = _read_csv(p)
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise CLIError(f"{path}: expected a 2-D table of numbers, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise CLIError(f"{path}: expected numbers, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise CLIError(f"{path}: data contain NaN or infinite values")
    return x.astype(np.float64)


def _read_csv(p: Path) -> np.ndarray:
    try:
        text = p.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as err:
        raise CLIError(f"cannot read {p}: {err}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise CLIError(f"{p}: the file is empty")
    delimiter = "," if "," in lines[0] else None

    def parse(line: str) -> list[float]:
        return [float(v.strip().strip('"')) for v in line.split(delimiter)]

    try:
        parse(lines[0])
        start = 0
    except ValueError:
        start = 1  # a header row
    rows = []
    for number, line in enumerate(lines[start:], start=start + 1):
        try:
            rows.append(parse(line))
        except ValueError:
            raise CLIError(f"{p}: line {number} is not a row of numbers") from None
    if not rows:
        raise CLIError(f"{p}: no data rows after the header")
    if len({len(r) for r in rows}) != 1:
        raise CLIError(f"{p}: rows have different numbers of columns")
    return np.array(rows, dtype=np.float64)


def _cmd_fit(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    import gmmjax

    x = load_data(args.data)
    if args.n_components < 1 or args.n_components > x.shape[0]:
        raise CLIError(
            f"-k must be between 1 and the number of samples ({x.shape[0]}), "
            f"got {args.n_components}"
        )
    gmm0 = gmmjax.init_gmm(
        jax.random.key(args.seed),
        x,
        n_components=args.n_components,
        covariance_type=args.covariance_type,
        method="kmeans++",
    )
    result = gmmjax.fit(
        gmmjax.EM(reg_covar=args.reg_covar),
        gmm0,
        x,
        max_steps=args.max_steps,
        tol=args.tol,
    )
    gmm = result.gmm
    with np.printoptions(precision=5, suppress=True):
        print(f"data: {x.shape[0]} samples, {x.shape[1]} features")
        print(
            f"model: {gmm.n_components} components, "
            f"covariance_type={gmm.covariance_type!r}, EM from k-means++"
        )
        print(f"weights: {np.asarray(gmm.weights)}")
        print(f"means:\n{np.asarray(gmm.means)}")
        print(f"covariances:\n{np.asarray(gmm.covariances)}")
        ll = float(result.log_likelihood)
        print(f"log-likelihood: {ll:.6f} (mean {ll / x.shape[0]:.6f} per sample)")
        print(f"steps: {int(result.n_steps)}")
        print(f"status: {result.status_name}")
        if int(result.degenerate_component) >= 0:
            print(f"degenerate component: {int(result.degenerate_component)}")
    return 0


def _cmd_study_saddle(args) -> int:
    from ._study_report import run_saddle_study

    results = run_saddle_study(args.out, quick=args.quick, seed=args.seed)
    print(f"saddle study written to {Path(args.out) / 'report.md'}")
    print(
        f"wall time {results['wall_time_s']:.1f} s, "
        f"CPU time {results['cpu_time_s']:.1f} s"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gmmjax", description="Gaussian mixture models in JAX."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a mixture to data and print it")
    fit.add_argument(
        "data", nargs="?", help="CSV or .npy file (default: bundled Old Faithful)"
    )
    fit.add_argument(
        "-k", "--n-components", type=int, default=2, help="number of components"
    )
    fit.add_argument(
        "--covariance-type",
        default="full",
        choices=["full", "diag", "spherical", "tied"],
        help="covariance structure (default: full)",
    )
    fit.add_argument("--max-steps", type=int, default=500, help="EM step budget")
    fit.add_argument(
        "--tol", type=float, default=1e-6, help="tolerance on the mean log-likelihood"
    )
    fit.add_argument("--reg-covar", type=float, default=1e-6, help="variance floor")
    fit.add_argument("--seed", type=int, default=0, help="random seed of the start")
    fit.set_defaults(func=_cmd_fit)
    study = sub.add_parser("study", help="reproducible studies with figures")
    studies = study.add_subparsers(dest="study", required=True)
    saddle = studies.add_parser(
        "saddle", help="the saddle study of the symmetric two-point mixture"
    )
    saddle.add_argument(
        "--out", default="saddle-study", help="output directory (default: %(default)s)"
    )
    saddle.add_argument(
        "--quick", action="store_true", help="small grid and budgets (a smoke run)"
    )
    saddle.add_argument("--seed", type=int, default=0, help="seed of the noisy runs")
    saddle.set_defaults(func=_cmd_study_saddle)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as err:
        print(f"gmmjax: error: {err}", file=sys.stderr)
        return 2
