"""The ``gmmjax`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


class CLIError(Exception):
    """A user-facing error: printed on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block is left to ``--help``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    if args.n_init < 1:
        raise CLIError(f"--n-init must be >= 1, got {args.n_init}")
    if args.max_steps < 0:
        raise CLIError(f"--max-steps must be >= 0, got {args.max_steps}")
    if not (args.tol >= 0 and args.reg_covar >= 0):
        raise CLIError("--tol and --reg-covar must be >= 0")
    fitter = _make_fitter(args)
    key = jax.random.key(args.seed)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
        key, np.arange(args.n_init, dtype=np.uint32)
    )
    gmm0s = jax.vmap(
        lambda k: gmmjax.init_gmm(
            k,
            x,
            n_components=args.n_components,
            covariance_type=args.covariance_type,
            method="kmeans++",
        )
    )(keys)
    show = args.progress or sys.stderr.isatty()
    # only EM's state is its model, so only EM can be resumed chunk by chunk
    chunked = show and args.method == "em"
    runs = _fit_runs(fitter, gmm0s, x, args.max_steps, args.tol, chunked)
    best = _best_run(runs)
    result = jax.tree_util.tree_map(lambda a: a[best], runs)
    summary = _summary(args, x, result, runs)
    if not args.no_diagnosis:
        summary["diagnosis"] = _diagnosis(result, x)
    if args.save is not None:
        from . import io

        try:
            io.save(args.save, result.gmm)
        except OSError as err:
            raise CLIError(f"cannot save the model to {args.save}: {err}") from None
        summary["saved"] = args.save
    if args.plot is not None:
        _save_plot(args.plot, result.gmm, x, summary)
        summary["plot"] = args.plot
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    return 0


_CHUNK = 25  # steps between two progress reports

_METHODS = {
    "em": "EM",
    "adam": "Adam (optax)",
    "lbfgs": "L-BFGS (optax)",
    "anneal": "deterministically annealed EM",
}


def _make_fitter(args):
    import optax

    import gmmjax

    if args.learning_rate <= 0:
        raise CLIError(f"--learning-rate must be > 0, got {args.learning_rate}")
    if not 0 < args.anneal_start <= 1:
        raise CLIError(f"--anneal-start must be in (0, 1], got {args.anneal_start}")
    if args.anneal_steps < 1:
        raise CLIError(f"--anneal-steps must be >= 1, got {args.anneal_steps}")
    if args.max_reseeds < 0:
        raise CLIError(f"--max-reseeds must be >= 0, got {args.max_reseeds}")
    if args.max_reseeds > 0 and args.method in ("adam", "lbfgs"):
        raise CLIError(
            f"--max-reseeds needs --method em or anneal, got --method {args.method}"
        )
    if args.method == "adam":
        return gmmjax.GradientFitter(optax.adam, learning_rate=args.learning_rate)
    if args.method == "lbfgs":
        return gmmjax.GradientFitter(optax.lbfgs())
    em = gmmjax.EM(reg_covar=args.reg_covar, max_reseeds=args.max_reseeds)
    if args.method == "anneal":
        schedule = optax.linear_schedule(args.anneal_start, 1.0, args.anneal_steps)
        return gmmjax.Annealed(em, schedule)
    return em


def _diagnosis(result, x) -> dict:
    import gmmjax

    d = gmmjax.diagnose(result, x)
    eigenvalues = np.sort(np.asarray(d.eigenvalues, np.float64))[::-1]
    return {
        "kind": d.kind,
        "gradient_norm": float(d.gradient_norm),
        "top_hessian_eigenvalues": eigenvalues[:3].tolist(),
    }


def _fit_runs(fitter, gmm0s, x, max_steps, tol, show):
    """Fit every start (vmapped ``gmmjax.fit``); with ``show``, in chunks of steps
    with a progress line on stderr.

    The chunks restart the convergence test, so a run can take one extra step per
    chunk compared with a single call; runs that have stopped are frozen.
    """
    import jax

    import gmmjax

    @jax.jit
    def fit_all(gmms, steps):
        # steps is traced: the chunks share one compiled loop
        return jax.vmap(lambda g: gmmjax.fit(fitter, g, x, max_steps=steps, tol=tol))(
            gmms
        )

    if not show or max_steps <= _CHUNK:
        return fit_all(gmm0s, max_steps)
    runs = None
    gmms = gmm0s
    done = 0
    while done < max_steps:
        chunk = min(_CHUNK, max_steps - done)
        new = fit_all(gmms, chunk)
        if runs is None:
            runs = new
        else:
            runs = _merge_running(runs, new)
        done += chunk
        gmms = runs.gmm
        running = int(np.sum(np.asarray(runs.status) == gmmjax.Status.MAX_STEPS))
        best = float(np.nanmax(np.asarray(runs.log_likelihood)))
        filled = round(20 * done / max_steps)
        bar = "#" * filled + "." * (20 - filled)
        print(
            f"\rfit [{bar}] {done}/{max_steps} steps, {running}/{len(runs.status)} "
            f"restarts running, best log-likelihood {best:.6g}   ",
            end="",
            file=sys.stderr,
            flush=True,
        )
        if running == 0:
            break
    print(file=sys.stderr)
    return runs


def _merge_running(runs, new):
    """Take ``new`` for the runs that were still running, keep the others; the
    step counts add up."""
    import jax
    import jax.numpy as jnp

    import gmmjax

    running = np.asarray(runs.status) == gmmjax.Status.MAX_STEPS
    new = new._replace(n_steps=new.n_steps + runs.n_steps)

    def pick(a, b):
        return jnp.where(running.reshape(-1, *([1] * (a.ndim - 1))), a, b)

    return jax.tree_util.tree_map(pick, new, runs)


def _best_run(runs) -> int:
    """The highest final log-likelihood among runs that converged or ran out of
    steps (among all finite runs if none did)."""
    import gmmjax

    ll = np.asarray(runs.log_likelihood, dtype=np.float64)
    status = np.asarray(runs.status)
    sound = np.isfinite(ll) & (
        (status == gmmjax.Status.CONVERGED) | (status == gmmjax.Status.MAX_STEPS)
    )
    pool = sound if sound.any() else np.isfinite(ll)
    return int(np.argmax(np.where(pool, ll, -np.inf))) if pool.any() else 0


def _summary(args, x, result, runs) -> dict:
    import gmmjax

    gmm = result.gmm
    n, d = x.shape
    ll = float(result.log_likelihood)
    p = int(gmmjax.n_parameters(gmm))
    statuses = [gmmjax.Status(int(s)).name for s in np.asarray(runs.status)]
    return {
        "data": {
            "path": args.data,
            "n_samples": int(n),
            "n_features": int(d),
        },
        "method": args.method,
        "init": "kmeans++",
        "seed": args.seed,
        "n_components": int(gmm.n_components),
        "covariance_type": gmm.covariance_type,
        "weights": np.asarray(gmm.weights).tolist(),
        "means": np.asarray(gmm.means).tolist(),
        "covariances": np.asarray(gmm.covariances).tolist(),
        "log_likelihood": ll,
        "mean_log_likelihood": ll / n,
        "n_parameters": int(p),
        "bic": -2.0 * ll + p * float(np.log(n)),
        "aic": -2.0 * ll + 2.0 * p,
        "n_steps": int(result.n_steps),
        "status": result.status_name,
        "degenerate_component": int(result.degenerate_component),
        "n_init": int(args.n_init),
        "restarts": {
            "log_likelihoods": [
                float(v) for v in np.asarray(runs.log_likelihood, np.float64)
            ],
            "statuses": statuses,
        },
    }


def _print_summary(s: dict) -> None:
    n, d = s["data"]["n_samples"], s["data"]["n_features"]
    source = s["data"]["path"] or "bundled Old Faithful"
    with np.printoptions(precision=5, suppress=True):
        print(f"data: {n} samples, {d} features ({source})")
        restarts = f", best of {s['n_init']} restarts" if s["n_init"] > 1 else ""
        print(
            f"model: {s['n_components']} components, "
            f"covariance_type={s['covariance_type']!r}, "
            f"{_METHODS[s['method']]} from k-means++{restarts}"
        )
        print(f"weights: {np.asarray(s['weights'])}")
        print(f"means:\n{np.asarray(s['means'])}")
        print(f"covariances:\n{np.asarray(s['covariances'])}")
        ll = s["log_likelihood"]
        print(f"log-likelihood: {ll:.6f} (mean {ll / n:.6f} per sample)")
        p = s["n_parameters"]
        print(f"BIC: {s['bic']:.4f}  AIC: {s['aic']:.4f}  ({p} parameters)")
        print(f"steps: {s['n_steps']}")
        print(f"status: {s['status']}")
        if s["degenerate_component"] >= 0:
            print(
                f"degenerate component: {s['degenerate_component']} (it emptied or "
                "collapsed; try a larger --reg-covar, a smaller -k, or "
                "--max-reseeds N to re-seed it)"
            )
        if s["n_init"] > 1:
            lls = np.asarray(s["restarts"]["log_likelihoods"])
            ok = sum(v == "CONVERGED" for v in s["restarts"]["statuses"])
            print(
                f"restarts: {ok}/{s['n_init']} converged, log-likelihoods "
                f"{np.nanmin(lls):.6f} .. {np.nanmax(lls):.6f}"
            )
        if "diagnosis" in s:
            diag = s["diagnosis"]
            top = ", ".join(f"{v:.4g}" for v in diag["top_hessian_eigenvalues"])
            print(
                f"diagnosis: {diag['kind']} (gradient norm "
                f"{diag['gradient_norm']:.3g}, top Hessian eigenvalues {top})"
            )
        if "saved" in s:
            print(f"saved model: {s['saved']}")
        if "plot" in s:
            print(f"plot: {s['plot']}")


def _save_plot(path, gmm, x, summary) -> None:
    from . import plot

    title = (
        f"{summary['n_components']} components ({summary['covariance_type']}), "
        f"log-likelihood {summary['log_likelihood']:.2f}"
    )
    fig = plot.plot_mixture(gmm, x, title=title)
    try:
        fig.savefig(path)
    except (OSError, ValueError) as err:
        raise CLIError(f"cannot write the plot to {path}: {err}") from None


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
    import jax

    jax.config.update("jax_enable_x64", True)
    import gmmjax

    x = load_data(args.data)
    candidates = _parse_range(args.n_components)
    bad = [k for k in candidates if k < 1 or k > x.shape[0]]
    if bad:
        raise CLIError(
            f"-k values must be between 1 and the number of samples ({x.shape[0]}), "
            f"got {bad[0]}"
        )
    if len(set(candidates)) != len(candidates):
        raise CLIError(f"-k has repeated values: {args.n_components!r}")
    if len(set(args.covariance_types)) != len(args.covariance_types):
        raise CLIError("--covariance-types has repeated values")
    if args.n_init < 1:
        raise CLIError(f"--n-init must be >= 1, got {args.n_init}")
    if args.max_steps < 0:
        raise CLIError(f"--max-steps must be >= 0, got {args.max_steps}")
    if not args.tol >= 0:
        raise CLIError(f"--tol must be >= 0, got {args.tol}")
    if not args.reg_covar >= 0:
        raise CLIError(f"--reg-covar must be >= 0, got {args.reg_covar}")
    result = gmmjax.select(
        jax.random.key(args.seed),
        x,
        n_components=candidates,
        covariance_types=args.covariance_types,
        criterion=args.criterion,
        n_init=args.n_init,
        max_steps=args.max_steps,
        tol=args.tol,
        init=args.init,
        fitter=gmmjax.EM(reg_covar=args.reg_covar),
    )
    print(f"data: {x.shape[0]} samples, {x.shape[1]} features")
    print(f"restarts per cell: {args.n_init} ({args.init})")
    print(result)
    best = result.best
    ll = float(best.log_likelihood)
    print(f"log-likelihood: {ll:.6f} (mean {ll / x.shape[0]:.6f} per sample)")
    print(f"status: {best.status_name}")
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


def _add_data(parser) -> None:
    parser.add_argument(
        "data", nargs="?", help="CSV or .npy file (default: bundled Old Faithful)"
    )


def _add_run_options(parser, seed_help: str) -> None:
    """The options every fitting command shares: budget, tolerance, floor, seed."""
    parser.add_argument("--max-steps", type=int, default=500, help="EM step budget")
    parser.add_argument(
        "--tol", type=float, default=1e-6, help="tolerance on the mean log-likelihood"
    )
    parser.add_argument("--reg-covar", type=float, default=1e-6, help="variance floor")
    parser.add_argument("--seed", type=int, default=0, help=seed_help)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gmmjax", description="Gaussian mixture models in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a mixture to data and print it")
    _add_data(fit)
    fit.add_argument(
        "-k", "--n-components", type=int, default=2, help="number of components"
    )
    fit.add_argument(
        "--covariance-type",
        default="full",
        choices=["full", "diag", "spherical", "tied"],
        help="covariance structure (default: full)",
    )
    _add_run_options(fit, "random seed of the start")
    fit.add_argument(
        "--n-init", type=int, default=1, help="restarts, fitted as one batch"
    )
    fit.add_argument(
        "--method",
        default="em",
        choices=list(_METHODS),
        help="em, adam or lbfgs (optax, on the unconstrained parameters), or "
        "anneal (EM with a linear beta schedule); default: em",
    )
    fit.add_argument(
        "--max-reseeds",
        type=int,
        default=0,
        help="re-seed a component that empties or collapses, at most this many "
        "times per run (EM and anneal; default: 0, stop with status DEGENERATE)",
    )
    fit.add_argument(
        "--learning-rate", type=float, default=0.01, help="Adam's step size"
    )
    fit.add_argument(
        "--anneal-start", type=float, default=0.5, help="first beta of --method anneal"
    )
    fit.add_argument(
        "--anneal-steps", type=int, default=50, help="steps until beta reaches 1"
    )
    fit.add_argument(
        "--no-diagnosis",
        action="store_true",
        help="skip the Hessian diagnosis (maximum or saddle) of the result",
    )
    fit.add_argument("--plot", metavar="PNG", help="save a picture of the fit")
    fit.add_argument("--save", metavar="MODEL", help="save the model (.npz)")
    fit.add_argument(
        "--json", action="store_true", help="print the result as JSON on stdout"
    )
    fit.add_argument(
        "--progress",
        action="store_true",
        help="report progress on stderr (default: only when it is a terminal)",
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
        "--init",
        default="kmeans++",
        choices=["kmeans++", "kmeans", "random", "random_from_data"],
        help="initialization of the restarts (default: kmeans++)",
    )
    _add_run_options(select, "random seed of the starts")
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
