"""The ``gmmjax`` command line: ``gmmjax fit``, ``gmmjax select``, ``gmmjax study``.

This module parses the arguments and runs the commands; the data are read by
``_cli_data`` and the results shown by ``_cli_report``. No jax is imported before
a command has checked its arguments and data, so ``--help`` and mistakes answer
at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ._cli_data import CLIError, Data, load_data, note
from ._cli_report import (
    METHODS,
    PRIOR_LINE,
    FitProgress,
    Line,
    bar,
    diagnosis_or_reason,
    print_outcome,
    print_summary,
    regularization,
    save_plot,
    summary,
)

__all__ = ["CLIError", "Data", "build_parser", "load_data", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block is left to ``--help``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _cmd_fit(args) -> int:
    # every check that needs no fit comes first, and none imports jax, so a
    # mistake costs a fraction of a second, not a fit
    _check_fit_options(args)
    _check_output("--save", args.save)
    _check_output("--plot", args.plot, picture=True)
    data = load_data(args.data, args.columns)
    x = data.values
    _check_components("-k", [args.n_components], x.shape[0])
    import jax

    jax.config.update("jax_enable_x64", True)
    _compilation_cache()
    import gmmjax

    fitter, runs = _fit_runs(args, x)
    result = gmmjax.best_of(runs)
    report = summary(args, data, result, runs)
    if not args.json:
        # the model first: the diagnosis can take a while, or fail
        print_summary(report)
        sys.stdout.flush()
    if not args.no_diagnosis:
        report.update(diagnosis_or_reason(result, x, report["usable"], fitter))
    if args.save is not None:
        from . import io

        try:
            io.save(args.save, result.gmm)
        except OSError as err:
            raise CLIError(f"cannot save the model to {args.save}: {err}") from None
        report["saved"] = args.save
    if args.plot is not None:
        save_plot(args.plot, result.gmm, x, report)
        report["plot"] = args.plot
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_outcome(report)
    if not report["usable"]:
        note(f"error: the best fit is not usable: {report['reason']}")
        return 1
    return 0


def _fit_runs(args, x):
    """``(fitter, runs)``: the fitter and every restart of ``gmmjax fit``,
    :func:`gmmjax.multistart` from the
    hierarchical partition and k-means++ starts. On a terminal a progress line
    on stderr says when the run is done; with ``--progress`` it is redrawn from
    inside the compiled loop. It only observes, so the results are those of a
    piped run."""
    import jax
    import numpy as np

    import gmmjax

    reg_covar = args.reg_covar
    if args.reg_scale == "relative":
        reg_covar = gmmjax.relative_reg_covar(x, reg_covar)

    fitter = _make_fitter(args, x, reg_covar)

    def restarts(report=None):
        return gmmjax.multistart(
            fitter,
            jax.random.key(args.seed),
            x,
            n_components=args.n_components,
            n_init=args.n_init,
            covariance_type=args.covariance_type,
            init="kmeans++",
            max_steps=args.max_steps,
            tol=args.tol,
            reg_covar=reg_covar,
            report=report,
        )

    if not _show_progress(args):
        return fitter, restarts()
    with Line(True) as line:
        line.draw("fit: compiling", force=True)
        if not args.progress:
            # a terminal: the line says when the run is done. Step by step
            # reports (--progress) need a host callback inside the program, and
            # JAX keeps no program with one in its persistent cache
            runs = restarts()
            FitProgress(line, args.max_steps)(
                runs.n_steps, runs.objective / x.shape[0], np.zeros(1, bool)
            )
            return fitter, runs
        runs = restarts(FitProgress(line, args.max_steps))
        # the last report is drawn before the line ends
        jax.effects_barrier()
    return fitter, runs


def _compilation_cache() -> None:
    """JAX's persistent compilation cache (``gmmjax.enable_compilation_cache``),
    turned on once a command has checked its arguments and data and imported jax;
    a directory that cannot be used is a warning line, and the command goes on."""
    import warnings

    from ._cache import default_cache

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        default_cache()
    for warning in caught:
        note(f"warning: {warning.message}")


def _check_fit_options(args) -> None:
    if args.n_init < 1:
        raise CLIError(f"--n-init must be >= 1, got {args.n_init}")
    if args.max_steps < 0:
        raise CLIError(f"--max-steps must be >= 0, got {args.max_steps}")
    if not (args.tol >= 0 and args.reg_covar >= 0):
        raise CLIError("--tol and --reg-covar must be >= 0")
    if args.learning_rate <= 0:
        raise CLIError(f"--learning-rate must be > 0, got {args.learning_rate}")
    if not 0 < args.anneal_start <= 1:
        raise CLIError(f"--anneal-start must be in (0, 1], got {args.anneal_start}")
    if args.anneal_steps < 1:
        raise CLIError(f"--anneal-steps must be >= 1, got {args.anneal_steps}")
    if args.max_reseeds < 0:
        raise CLIError(f"--max-reseeds must be >= 0, got {args.max_reseeds}")
    if args.max_reseeds > 0 and args.method in ("adam", "lbfgs", "vb"):
        raise CLIError(
            f"--max-reseeds needs --method em or anneal, got --method {args.method}"
        )
    if args.prior == "default" and args.method not in ("em", "anneal"):
        raise CLIError(
            "--prior default (MAP-EM) needs --method em or anneal, got --method "
            f"{args.method}"
            + (" (vb has its own prior)" if args.method == "vb" else "")
        )


def _check_components(option: str, candidates: list[int], n: int) -> None:
    """Every number of components in ``[1, n - 1]``: with ``k = n`` each component
    holds one point, a spike whose height only ``reg_covar`` bounds."""
    bad = [k for k in candidates if not 1 <= k < n]
    if bad:
        raise CLIError(
            f"{option} must be between 1 and the number of samples ({n}) minus 1, "
            f"got {bad[0]} (with k = n every component holds one point)"
        )


def _check_output(option: str, path: str | None, *, picture=False) -> None:
    """Fail before the work when ``path`` cannot be written: its folder must exist
    and be writable and, for a picture, its suffix a format matplotlib writes."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise CLIError(f"{option} {path}: is a folder, expected a file name")
    folder = target.parent
    if not folder.is_dir():
        raise CLIError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CLIError(f"{option} {path}: the folder {folder} is not writable")
    if picture and target.suffix:
        from matplotlib.backend_bases import FigureCanvasBase

        formats = FigureCanvasBase.get_supported_filetypes()
        if target.suffix[1:].lower() not in formats:
            raise CLIError(
                f"{option} {path}: unknown picture format {target.suffix!r}, "
                f"expected one of {', '.join(sorted(formats))}"
            )


def _check_output_folder(option: str, path: str) -> None:
    """A folder the command creates (with its parents): the nearest one that
    exists must be a writable folder."""
    target = Path(path)
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise CLIError(f"{option} {path}: {existing} is a file, expected a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CLIError(f"{option} {path}: the folder {existing} is not writable")


def _make_fitter(args, x, reg_covar):
    """The fitter of ``--method``; with ``--prior default``, MAP-EM with mclust's
    default prior and no floor in its steps (``reg_covar`` still floors the
    starts), as :func:`gmmjax.select` does."""
    import optax

    import gmmjax

    if args.method == "adam":
        return gmmjax.GradientFitter(optax.adam, learning_rate=args.learning_rate)
    if args.method == "lbfgs":
        return gmmjax.GradientFitter(optax.lbfgs())
    shape = {"n_components": args.n_components, "covariance_type": args.covariance_type}
    if args.method == "vb":
        prior = gmmjax.VariationalPrior.default(x, **shape)
        return gmmjax.VB(prior=prior, reg_covar=reg_covar)
    if args.prior == "default":
        prior = gmmjax.Prior.default(x, **shape)
        em = gmmjax.EM(reg_covar=0.0, max_reseeds=args.max_reseeds, prior=prior)
    else:
        em = gmmjax.EM(reg_covar=reg_covar, max_reseeds=args.max_reseeds)
    if args.method == "anneal":
        schedule = optax.linear_schedule(args.anneal_start, 1.0, args.anneal_steps)
        return gmmjax.Annealed(em, schedule)
    return em


def _show_progress(args) -> bool:
    return args.progress or sys.stderr.isatty()


def _parse_range(text: str) -> list[int]:
    """``"3"``, ``"1-6"`` (inclusive) or ``"1,2,5"`` -> a list of ints."""
    try:
        values = []
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                low, high = part.split("-", 1)
                values.extend(range(int(low), int(high) + 1))
            else:
                values.append(int(part))
    except ValueError:
        raise CLIError(
            f"-k must be a number, a range like 1-6, or a list like 1,2,5; got {text!r}"
        ) from None
    if not values:
        raise CLIError(f"-k gives an empty range: {text!r}")
    return values


def _cmd_select(args) -> int:
    x = load_data(args.data, args.columns).values
    candidates = _parse_range(args.n_components)
    _check_components("-k values", candidates, x.shape[0])
    if len(set(candidates)) != len(candidates):
        raise CLIError(f"-k has repeated values: {args.n_components!r}")
    if len(set(args.covariance_types)) != len(args.covariance_types):
        raise CLIError("--covariance-types has repeated values")
    if args.n_init < 1:
        raise CLIError(f"--n-init must be >= 1, got {args.n_init}")
    if args.split_merge_rounds < 0:
        raise CLIError(
            f"--split-merge-rounds must be >= 0, got {args.split_merge_rounds}"
        )
    if args.max_steps < 0:
        raise CLIError(f"--max-steps must be >= 0, got {args.max_steps}")
    if not args.tol >= 0:
        raise CLIError(f"--tol must be >= 0, got {args.tol}")
    if not args.reg_covar >= 0:
        raise CLIError(f"--reg-covar must be >= 0, got {args.reg_covar}")
    import jax

    jax.config.update("jax_enable_x64", True)
    _compilation_cache()
    import gmmjax

    with Line(_show_progress(args)) as line:

        def progress(i, n_cells, k, covariance_type):
            line.draw(
                f"select {bar(i, n_cells)} cell {i + 1}/{n_cells}: k={k}, "
                f"{covariance_type}, {line.elapsed()}",
                force=True,
            )

        result = gmmjax.select(
            jax.random.key(args.seed),
            x,
            n_components=candidates,
            covariance_types=args.covariance_types,
            criterion=args.criterion,
            n_init=args.n_init,
            split_merge_rounds=args.split_merge_rounds,
            max_steps=args.max_steps,
            tol=args.tol,
            init=args.init,
            reg_covar=args.reg_covar,
            reg_scale=args.reg_scale,
            progress=progress,
            prior=None if args.prior == "none" else args.prior,
        )
        cells = result.values.size
        line.draw(
            f"select {bar(1, 1)} {cells}/{cells} cells, {line.elapsed()}", force=True
        )
    print(f"data: {x.shape[0]} samples, {x.shape[1]} features")
    print(
        f"restarts per cell: {args.n_init} ({args.init}) and the hierarchical partition"
    )
    if args.split_merge_rounds:
        print(
            f"then up to {args.split_merge_rounds} rounds of starts from the "
            "neighbouring cells (--split-merge-rounds)"
        )
    print(regularization(args.reg_covar, args.reg_scale))
    if args.prior == "default":
        print(PRIOR_LINE)
    print(result)
    best = result.best
    ll = float(best.log_likelihood)
    print(f"log-likelihood: {ll:.6f} (mean {ll / x.shape[0]:.6f} per sample)")
    print(f"status: {best.status_name}")
    return 0


def _cmd_study_saddle(args) -> int:
    _check_output_folder("--out", args.out)
    from ._studies.saddle import run_saddle_study

    _compilation_cache()

    with Line(_show_progress(args)) as line:

        def progress(i, n_stages, name):
            line.draw(
                f"study saddle {bar(i, n_stages)} stage {i + 1}/{n_stages}: "
                f"{name}, {line.elapsed()}",
                force=True,
            )

        results = run_saddle_study(
            args.out, quick=args.quick, seed=args.seed, progress=progress
        )
        line.draw(f"study saddle {bar(1, 1)} done, {line.elapsed()}", force=True)
    print(f"saddle study written to {Path(args.out) / 'report.md'}")
    print(
        f"wall time {results['wall_time_s']:.1f} s, "
        f"CPU time {results['cpu_time_s']:.1f} s"
    )
    return 0


def _add_data(parser) -> None:
    parser.add_argument(
        "data",
        nargs="?",
        help="CSV or .npy file (default: bundled Old Faithful). A CSV is split on "
        "';' when its first line holds one, else on ',', else on whitespace; a "
        "first line that is not all numbers is its header. Text columns, an "
        "unnamed first column of distinct whole numbers (pandas' index) and "
        "constant columns are left out, with a message",
    )
    parser.add_argument(
        "--columns",
        metavar="COLS",
        help="the columns to fit, comma-separated, by header name or by 0-based "
        "position: eruptions,waiting or 0,2 (default: every numeric column)",
    )


def _add_run_options(parser, seed_help: str) -> None:
    """The options every fitting command shares: budget, tolerance, floor, seed."""
    parser.add_argument(
        "--max-steps", type=int, default=500, help="step budget (default: %(default)s)"
    )
    parser.add_argument(
        "--tol",
        type=float,
        default=1e-6,
        help="tolerance on the mean log-likelihood (default: %(default)s)",
    )
    parser.add_argument(
        "--reg-covar",
        type=float,
        default=1e-6,
        help="variance floor, added to the covariances of the starts and, for "
        "em and anneal, of every step; with --reg-scale relative, a fraction of "
        "each feature's variance (default: %(default)s)",
    )
    parser.add_argument(
        "--reg-scale",
        choices=("relative", "absolute"),
        default="relative",
        help="read --reg-covar as a fraction of each feature's variance, so that "
        "the units of a feature do not change the fit, or as an absolute value "
        "added to every feature, as scikit-learn does (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help=f"{seed_help} (default: %(default)s)"
    )


_PROGRESS = "report progress on stderr (default: only when it is a terminal)"


def _add_progress(parser, text: str = _PROGRESS) -> None:
    parser.add_argument(
        "--progress",
        action="store_true",
        help=text,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gmmjax", description="Gaussian mixture models in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser(
        "fit",
        help="fit a mixture to data and print it",
        epilog="Exit status: 0 for a usable fit; 1 when the best fit is not usable "
        "(status DEGENERATE or NONFINITE: the model is printed, the reason goes to "
        "stderr); 2 for an error in the arguments or the data.",
    )
    _add_data(fit)
    fit.add_argument(
        "-k",
        "--n-components",
        type=int,
        default=2,
        help="number of components (default: %(default)s)",
    )
    fit.add_argument(
        "--covariance-type",
        default="full",
        choices=["full", "diag", "spherical", "tied"],
        help="covariance structure (default: full)",
    )
    _add_run_options(fit, "random seed of the start")
    fit.add_argument(
        "--n-init",
        type=int,
        default=1,
        help="restarts, fitted as one batch (default: %(default)s)",
    )
    fit.add_argument(
        "--method",
        default="em",
        choices=list(METHODS),
        help="em, adam or lbfgs (optax, on the unconstrained parameters), "
        "anneal (EM with a linear beta schedule), or vb (variational Bayes with "
        "scikit-learn's BayesianGaussianMixture defaults: a Dirichlet-process prior "
        "that switches off the components it does not need); default: em",
    )
    fit.add_argument(
        "--prior",
        choices=("none", "default"),
        default="none",
        help="default: MAP-EM with mclust's default conjugate prior (priorControl: "
        "shrinkage 0.01 towards the data mean, d + 2 degrees of freedom), which "
        "keeps covariances from collapsing on small or collinear data; the fit then "
        "reports its log posterior (em and anneal; default: none)",
    )
    fit.add_argument(
        "--max-reseeds",
        type=int,
        default=0,
        help="re-seed a component that empties or collapses, at most this many "
        "times per run (EM and anneal; default: 0, stop with status DEGENERATE)",
    )
    fit.add_argument(
        "--learning-rate",
        type=float,
        default=0.01,
        help="Adam's step size (default: %(default)s)",
    )
    fit.add_argument(
        "--anneal-start",
        type=float,
        default=0.5,
        help="first beta of --method anneal (default: %(default)s)",
    )
    fit.add_argument(
        "--anneal-steps",
        type=int,
        default=50,
        help="steps until beta reaches 1 (default: %(default)s)",
    )
    fit.add_argument(
        "--no-diagnosis",
        action="store_true",
        help="skip the Hessian diagnosis (maximum or saddle) of the result",
    )
    fit.add_argument(
        "--plot",
        metavar="PNG",
        help="save a picture of the fit (the suffix picks the format: .png, .pdf, "
        ".svg, ...)",
    )
    fit.add_argument("--save", metavar="MODEL", help="save the model (.npz)")
    fit.add_argument(
        "--json", action="store_true", help="print the result as JSON on stdout"
    )
    _add_progress(
        fit,
        "report every step's progress on stderr, from inside the compiled loop "
        "(default on a terminal: one line, compiling then done; a program that "
        "reports each step is not kept in the compilation cache)",
    )
    fit.set_defaults(func=_cmd_fit)

    select = sub.add_parser(
        "select",
        help="fit a grid of mixtures and choose one by BIC or AIC",
    )
    _add_data(select)
    select.add_argument(
        "--criterion",
        default="bic",
        choices=["bic", "aic"],
        help="information criterion, lower is better (default: bic)",
    )
    select.add_argument(
        "-k",
        "--n-components",
        default="1-10",
        help="candidate numbers of components: 1-6, 1,2,5 or 3 (default: 1-10)",
    )
    select.add_argument(
        "--covariance-types",
        nargs="+",
        default=["full", "diag", "spherical", "tied"],
        choices=["full", "diag", "spherical", "tied"],
        help="candidate covariance types (default: all four)",
    )
    select.add_argument(
        "--n-init", type=int, default=10, help="restarts per cell (default: 10)"
    )
    select.add_argument(
        "--split-merge-rounds",
        type=int,
        default=3,
        help="rounds of starts from the neighbouring cells after the first: the "
        "best k-1 fit with a cluster split and the best k+1 fit with two merged "
        "(default: 3; 0 for none, the fastest)",
    )
    select.add_argument(
        "--init",
        default="kmeans++",
        choices=["kmeans++", "kmeans", "random", "random_from_data"],
        help="initialization of the restarts, beside one from the hierarchical "
        "partition in every cell (default: kmeans++)",
    )
    select.add_argument(
        "--prior",
        choices=("none", "default"),
        default="none",
        help="default: MAP-EM in every cell with mclust's default conjugate prior "
        "for its k and covariance type, and BIC as mclust computes it with a prior "
        "(the log-likelihood at the MAP fit); default: none",
    )
    _add_run_options(select, "random seed of the starts")
    _add_progress(select)
    select.set_defaults(func=_cmd_select)
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
    _add_progress(saddle)
    saddle.set_defaults(func=_cmd_study_saddle)
    # name the studies, not the destination, when none is given
    studies.metavar = "{" + ",".join(studies.choices) + "}"
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, ValueError, TypeError, OSError) as err:
        # the library's own checks name the bad value; a user needs that line,
        # not a traceback
        message = " ".join(str(err).split())
        print(f"gmmjax: error: {message}", file=sys.stderr)
        return 2
