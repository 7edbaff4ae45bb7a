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
    mean = x.mean(axis=0)
    cov = np.atleast_2d(np.cov(x, rowvar=False, bias=True))
    gmm = gmmjax.GMM.from_natural([1.0], mean[None], cov[None])
    ll = float(gmmjax.log_likelihood(gmm, x))
    print(f"data: {x.shape[0]} samples, {x.shape[1]} features")
    print("model: one Gaussian (closed-form maximum likelihood)")
    print(f"weights: {np.asarray(gmm.weights)}")
    print(f"means:\n{np.asarray(gmm.means)}")
    print(f"covariances:\n{np.asarray(gmm.covariances)}")
    print(f"log-likelihood: {ll:.6f}")
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
    fit.set_defaults(func=_cmd_fit)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as err:
        print(f"gmmjax: error: {err}", file=sys.stderr)
        return 2
