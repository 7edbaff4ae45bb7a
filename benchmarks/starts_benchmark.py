"""How good are ``gmmjax.select``'s starts? Its optimum in every cell against the
best of 100 scikit-learn k-means fits.

For every cell (k = 1..9 components x the four covariance types) of three
scikit-learn datasets, **unscaled** (wine, 178 x 13, features from about 0.1 to
1,000; the first 10 features of breast_cancer, 569 x 10, from about 0.01 to
1,000; iris, 150 x 4), the final log-likelihood of:

- ``gmmjax``: ``gmmjax.select`` with its default starts: a first round of 11
  per cell (``n_init=10`` k-means++ starts in standard units and the
  hierarchical partition), then up to ``split_merge_rounds=3`` rounds of 11
  starts from the neighbouring cells of the same covariance type (the best
  ``k - 1`` fit with a cluster split, the best ``k + 1`` fit with two merged,
  the rest from new keys), each cell keeping the best of its runs;
- ``gmmjax_no_hc``: the same without the hierarchical start;
- ``sklearn_best_of_100``: ``sklearn.mixture.GaussianMixture(n_init=100,
  init_params="kmeans")``, the best of 100 k-means starts in the data's units.

All run EM to ``tol=1e-6`` (change in mean log-likelihood) within 500 steps, in
float64, and maximize the same likelihood, with the same variance floor:

- ``--reg-scale relative`` (the default, ``select``'s): ``1e-6`` times each
  feature's variance. scikit-learn's ``reg_covar`` is absolute, so its fits run
  on the standardized data ``x / sd`` with ``reg_covar=1e-6`` (the same floor;
  the log-likelihood is mapped back to the original units by ``- n sum(log
  sd)``), except ``spherical``, whose relative floor is one number, ``1e-6``
  times the mean variance, given as it is on the original data. (On the
  standardized data scikit-learn's k-means also works in standard units.)
- ``--reg-scale absolute``: ``reg_covar=1e-6`` on the original data, both sides.

A gmmjax cell counts when its best run ended ``CONVERGED`` or ``MAX_STEPS``; a
scikit-learn fit that raises (a collapsed component) counts as missing. The
summary lists, per dataset, the cells where either side is better by more than
1e-6 relative, and by how much, and flags the models whose smallest variance is
within 10 times the floor (in standard units for the relative floor): a
component that only ``reg_covar`` keeps from collapsing onto a subspace of the
data (iris and wine are recorded to a few digits, so many of their rows share
values), whose likelihood is not a better model but a spurious maximum.

Usage: ``python benchmarks/starts_benchmark.py [--datasets wine iris ...]
[--reg-scale relative|absolute] [--dtype float64|float32]``. Results go to
``benchmarks/results/starts.json`` (``starts_absolute.json`` for the absolute
floor, ``..._float32.json`` for fits in float32; their models are evaluated in
float64 on the float64 data and compared to 1e-5 relative). Run it with
``OMP_NUM_THREADS=1`` beside other work: scikit-learn's k-means threads
otherwise spin against the other processes.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
import warnings

import jax
import numpy as np
from _common import machine_info

jax.config.update("jax_enable_x64", True)

import gmmjax  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TYPES = ("full", "tied", "diag", "spherical")
KS = tuple(range(1, 10))
REG_COVAR = 1e-6
SPLIT_MERGE_ROUNDS = 3  # select's default
# a model whose smallest variance is within this factor of reg_covar is held up
# by it: without it the component would collapse
HELD = 10.0
COMPARISONS = (
    "gmmjax_vs_sklearn_best_of_100",
    "gmmjax_no_hc_vs_sklearn_best_of_100",
    "gmmjax_vs_gmmjax_no_hc",
)


def load(name: str) -> np.ndarray:
    from sklearn import datasets

    if name == "wine":
        return datasets.load_wine().data
    if name == "breast_cancer10":
        return datasets.load_breast_cancer().data[:, :10]
    if name == "iris":
        return datasets.load_iris().data
    raise ValueError(f"unknown dataset {name!r}")


def held_up(covariances, covariance_type: str, sd, reg_scale: str) -> bool:
    """Whether a model's smallest variance in any direction (the least
    eigenvalue of its covariances; in standard units ``x / sd`` for the
    relative floor) is within ``HELD`` times the floor."""
    c = np.asarray(covariances)
    if reg_scale == "relative":
        if covariance_type == "spherical":
            c = c / np.mean(sd**2)
        elif covariance_type == "diag":
            c = c / sd**2
        else:
            c = c / np.outer(sd, sd)
    if covariance_type in ("full", "tied"):
        least = float(np.linalg.eigvalsh(c.reshape(-1, *c.shape[-2:])).min())
    else:
        least = float(c.min())
    return least <= HELD * REG_COVAR


def ours(x, hc_start: bool, reg_scale: str, dtype: str):
    """``(log-likelihoods (9, 4), usable (9, 4), held (9, 4), seconds)`` of
    ``select`` on ``x`` in ``dtype``, each cell's model evaluated in float64 on
    the float64 data; ``held``: the model's smallest variance is within ``10``
    times the floor (a component that only ``reg_covar`` keeps from
    collapsing)."""
    start = time.perf_counter()
    result = gmmjax.select(
        jax.random.key(0),
        x.astype(dtype),
        n_components=KS,
        covariance_types=TYPES,
        n_init=10,
        split_merge_rounds=SPLIT_MERGE_ROUNDS,
        max_steps=500,
        tol=1e-6,
        reg_covar=REG_COVAR,
        reg_scale=reg_scale,
        hc_start=hc_start,
    )
    seconds = time.perf_counter() - start
    usable = np.isin(result.status, [0, 1])
    held = np.zeros(usable.shape, bool)
    lls = np.empty(usable.shape)
    sd = x.std(axis=0)
    for i, k in enumerate(KS):
        for j, ctype in enumerate(TYPES):
            gmm = jax.tree_util.tree_map(
                lambda a: np.asarray(a, np.float64), result.fits[(k, ctype)].gmm
            )
            lls[i, j] = float(gmmjax.log_likelihood(gmm, x))
            held[i, j] = held_up(gmm.covariances, ctype, sd, reg_scale)
    return lls, usable, held, seconds


def sklearn_best(x, n_init: int, reg_scale: str):
    """``(log-likelihoods (9, 4), held (9, 4), seconds)``: the best of
    ``n_init`` scikit-learn k-means fits per cell (NaN when it raises), with
    ``select``'s floor (see the module's docstring)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    out = np.full((len(KS), len(TYPES)), np.nan)
    held = np.zeros(out.shape, bool)
    sd = x.std(axis=0)
    start = time.perf_counter()
    for i, k in enumerate(KS):
        for j, ctype in enumerate(TYPES):
            data, reg, shift = x, REG_COVAR, 0.0
            if reg_scale == "relative" and ctype == "spherical":
                reg = REG_COVAR * np.mean(sd**2)
            elif reg_scale == "relative":
                data, shift = x / sd, -len(x) * np.sum(np.log(sd))
            model = GaussianMixture(
                k,
                covariance_type=ctype,
                n_init=n_init,
                init_params="kmeans",
                tol=1e-6,
                max_iter=500,
                reg_covar=reg,
                random_state=0,
            )
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model.fit(data)
            except ValueError:  # a collapsed component in every start
                continue
            out[i, j] = model.score(data) * len(x) + shift
            cov = model.covariances_
            if data is not x:  # back to the original units
                cov = cov * (np.outer(sd, sd) if ctype in ("full", "tied") else sd**2)
            held[i, j] = held_up(cov, ctype, sd, reg_scale)
    return out, held, time.perf_counter() - start


def compare(a, a_usable, a_held, b, b_held, tol=1e-6) -> dict:
    """Cells where ``a`` is worse / better than ``b`` by more than ``tol``
    relative (``b`` missing: not compared); each cell says whether either
    side's model is held up by ``reg_covar`` alone."""
    worse, better = [], []
    for i, k in enumerate(KS):
        for j, ctype in enumerate(TYPES):
            if not np.isfinite(b[i, j]):
                continue
            gap = (a[i, j] - b[i, j]) / abs(b[i, j])
            cell = {
                "k": k,
                "covariance_type": ctype,
                "gmmjax": float(a[i, j]),
                "reference": float(b[i, j]),
                "difference": float(a[i, j] - b[i, j]),
                "gmmjax_held_by_reg_covar": bool(a_held[i, j]),
                "reference_held_by_reg_covar": bool(b_held[i, j]),
            }
            if not a_usable[i, j] or gap < -tol:
                worse.append(cell)
            elif gap > tol:
                better.append(cell)
    return {
        "cells_compared": int(np.isfinite(b).sum()),
        "worse": worse,
        "better": better,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", nargs="+", default=["wine", "breast_cancer10", "iris"]
    )
    parser.add_argument("--sklearn-n-init", type=int, default=100)
    parser.add_argument(
        "--reg-scale", choices=("relative", "absolute"), default="relative"
    )
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args()
    if args.out is None:
        suffix = "" if args.reg_scale == "relative" else "_absolute"
        suffix += "" if args.dtype == "float64" else "_float32"
        args.out = RESULTS / f"starts{suffix}.json"
    # float32 fits stop within rounding of the float64 optimum: compared to 1e-5
    tol = 1e-6 if args.dtype == "float64" else 1e-5
    info = machine_info("scikit-learn")
    runs = {}
    for name in args.datasets:
        x = load(name)
        ll, usable, held, seconds = ours(x, True, args.reg_scale, args.dtype)
        ll_no_hc, usable_no_hc, held_no_hc, seconds_no_hc = ours(
            x, False, args.reg_scale, args.dtype
        )
        ref, ref_held, ref_seconds = sklearn_best(
            x, args.sklearn_n_init, args.reg_scale
        )
        runs[name] = {
            "shape": list(x.shape),
            "feature_std_range": [float(x.std(0).min()), float(x.std(0).max())],
            "seconds": {
                "gmmjax": seconds,
                "gmmjax_no_hc": seconds_no_hc,
                "sklearn_best_of_100": ref_seconds,
            },
            "gmmjax_vs_sklearn_best_of_100": compare(
                ll, usable, held, ref, ref_held, tol
            ),
            "gmmjax_no_hc_vs_sklearn_best_of_100": compare(
                ll_no_hc, usable_no_hc, held_no_hc, ref, ref_held, tol
            ),
            "gmmjax_vs_gmmjax_no_hc": compare(
                ll, usable, held, ll_no_hc, held_no_hc, tol
            ),
            "log_likelihood": {
                "k": list(KS),
                "covariance_types": list(TYPES),
                "gmmjax": ll.tolist(),
                "gmmjax_no_hc": ll_no_hc.tolist(),
                "sklearn_best_of_100": ref.tolist(),
            },
        }
        for key in COMPARISONS:
            cells = runs[name][key]
            held = sum(c["gmmjax_held_by_reg_covar"] for c in cells["better"])
            spurious = sum(c["reference_held_by_reg_covar"] for c in cells["worse"])
            print(
                f"{name} {key}: worse in {len(cells['worse'])} ({spurious} of them "
                f"against a reference held by reg_covar), better in "
                f"{len(cells['better'])} ({held} of them held by reg_covar) of "
                f"{cells['cells_compared']} cells",
                flush=True,
            )
    result = {
        "benchmark": "select_starts_vs_sklearn_best_of_100",
        "config": {
            "k": list(KS),
            "covariance_types": list(TYPES),
            "n_init": 10,
            "split_merge_rounds": SPLIT_MERGE_ROUNDS,
            "sklearn_n_init": args.sklearn_n_init,
            "tol": 1e-6,
            "max_steps": 500,
            "reg_covar": REG_COVAR,
            "reg_scale": args.reg_scale,
            "held_by_reg_covar": f"smallest variance <= {HELD:g} times the floor",
            "dtype": args.dtype,
            "log_likelihood_of": "each model in float64 on the float64 data",
            "relative_tolerance": tol,
        },
        "runs": runs,
        "machine": info,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
