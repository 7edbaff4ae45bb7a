"""The ``gmmjax`` command line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np


class CLIError(Exception):
    """A user-facing error: printed on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block is left to ``--help``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Data(NamedTuple):
    """A table read by :func:`load_data`.

    Attributes:
        values: ``(n, d)`` float64.
        names: the header's name of each of the ``d`` columns (``None`` without a
            header), for the summary and the plot's axes.
        left_out: the columns of the file that are not in ``values``, each with
            the reason (a row index, a constant feature).
    """

    values: np.ndarray
    names: list[str] | None
    left_out: list[str]


def _column(position: int, name: str | None) -> str:
    """A column as messages name it: its place in the file (from 1) and name."""
    return f"column {position} ({name!r})" if name else f"column {position}"


def _note(message: str) -> None:
    print(f"gmmjax: {message}", file=sys.stderr)


def load_data(path: str | None) -> Data:
    """Read ``(n, d)`` data from a CSV or ``.npy`` file; the bundled Old Faithful
    data when ``path`` is ``None``.

    A CSV's delimiter is ``;`` when its first line holds one, else ``,`` when it
    holds one, else whitespace; a first line that is not all numbers is the
    header. A first column without a name in the header that holds distinct whole
    numbers is a row index (pandas' ``to_csv()`` writes one) and is left out, as
    is every constant column (its variance is zero, so the likelihood would grow
    without bound): both with a message on stderr.
    """
    from . import datasets

    if path is None:
        return Data(datasets.faithful(), None, [])
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"data file not found: {path}")
    left_out = []
    if p.suffix == ".npy":
        x, names = _read_npy(p), None
    else:
        x, names = _read_csv(p)
        if names is not None and not names[0] and _is_row_index(x[:, 0]):
            _note(
                f"note: left out column 1: it has no name in the header and holds "
                f"{len(x)} distinct whole numbers, a row index such as pandas' "
                "to_csv() writes"
            )
            left_out.append("column 1 (a row index)")
            x, names = x[:, 1:], names[1:]
    positions = np.arange(x.shape[1]) + 1 + len(left_out)
    constant = np.all(x == x[0], axis=0)
    for j in np.flatnonzero(constant):
        column = _column(int(positions[j]), names[j] if names else None)
        _note(
            f"warning: {column} is constant (every value is {x[0, j]:g}): left "
            "out, since a feature without spread makes the likelihood unbounded"
        )
        left_out.append(f"{column} (constant)")
    if constant.all():
        raise CLIError(f"{path}: every column is constant, nothing to fit")
    if names is not None:
        names = [
            name or f"column {position}"
            for name, position, drop in zip(names, positions, constant, strict=True)
            if not drop
        ]
    return Data(x[:, ~constant], names, left_out)


def _is_row_index(column: np.ndarray) -> bool:
    whole = np.all(column == np.round(column))
    return bool(whole and len(np.unique(column)) == len(column))


def _read_npy(p: Path) -> np.ndarray:
    try:
        x = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise CLIError(f"cannot read {p} as .npy: {err}") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise CLIError(f"{p}: expected a 2-D table of numbers, got shape {x.shape}")
    if x.dtype.kind not in "iuf":
        raise CLIError(f"{p}: expected numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        i, j = bad[0]
        raise CLIError(
            f"{p}: data contain NaN or infinite values: row {i + 1}, column {j + 1} "
            f"(counting from 1) is {x[i, j]}"
        )
    return x


# a CSV's delimiter, from its first line, as messages name it
_DELIMITERS = {";": "';'", ",": "','", None: "whitespace"}


def _read_csv(p: Path) -> tuple[np.ndarray, list[str] | None]:
    """The rows of numbers of a CSV file and its header's names (``None`` when
    the first line is all numbers); errors name the line and the column."""
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as err:
        raise CLIError(f"cannot read {p}: {err}") from None
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not lines:
        raise CLIError(f"{p}: the file is empty")
    delimiter = next((c for c in ";," if c in lines[0][1]), None)
    separated = f"fields separated by {_DELIMITERS[delimiter]}"

    def fields(line: str) -> list[str]:
        return [v.strip().strip('"').strip() for v in line.split(delimiter)]

    first, header = lines[0][0], fields(lines[0][1])
    if _numbers(header) is None:
        lines = lines[1:]
    else:
        header = None
    if not lines:
        raise CLIError(f"{p}: no data rows after the header")
    width = len(header) if header else len(fields(lines[0][1]))
    names = header or [None] * width
    rows = []
    for number, line in lines:
        row = fields(line)
        if len(row) != width:
            raise CLIError(
                f"{p}: rows have different numbers of columns: line {number} has "
                f"{len(row)}, line {first} has {width} ({separated})"
            )
        values = _numbers(row)
        if values is None:
            j = next(j for j, v in enumerate(row) if _numbers([v]) is None)
            if row[j]:
                hint = "; write decimals with a point" if "," in row[j] else ""
                problem = f"is {row[j]!r} ({separated}{hint})"
            else:
                problem = "is empty"
            raise CLIError(
                f"{p}: line {number} is not a row of numbers: "
                f"{_column(j + 1, names[j])} {problem}"
            )
        rows.append(values)
    x = np.array(rows, dtype=np.float64)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        i, j = bad[0]
        raise CLIError(
            f"{p}: data contain NaN or infinite values: line {lines[i][0]}, "
            f"{_column(j + 1, names[j])} is {x[i, j]}"
        )
    return x, header


def _numbers(fields: list[str]) -> list[float] | None:
    """The fields as numbers, ``None`` if one is not a number."""
    try:
        return [float(v) for v in fields]
    except ValueError:
        return None


def _cmd_fit(args) -> int:
    # every check that needs no fit comes first, and none imports jax, so a
    # mistake costs a fraction of a second, not a fit
    _check_fit_options(args)
    _check_output("--save", args.save)
    _check_output("--plot", args.plot, picture=True)
    data = load_data(args.data)
    x = data.values
    _check_components("-k", [args.n_components], x.shape[0])
    import jax

    jax.config.update("jax_enable_x64", True)
    import gmmjax

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
    runs = _fit_runs(fitter, gmm0s, x, args.max_steps, args.tol, _show_progress(args))
    best = _best_run(runs)
    result = jax.tree_util.tree_map(lambda a: a[best], runs)
    summary = _summary(args, data, result, runs)
    if not args.json:
        # the model first: the diagnosis can take a while, or fail
        _print_summary(summary)
        sys.stdout.flush()
    if not args.no_diagnosis:
        summary.update(_diagnosis_or_reason(result, x, summary["usable"]))
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
        _print_outcome(summary)
    if not summary["usable"]:
        _note(f"error: the best fit is not usable: {summary['reason']}")
        return 1
    return 0


def _diagnosis_or_reason(result, x, usable: bool) -> dict:
    """The summary's ``diagnosis``, or ``diagnosis_unavailable`` with the reason:
    the fit is not usable, or its Hessian cannot be computed (not finite where a
    component has nearly collapsed)."""
    if not usable:
        return {"diagnosis_unavailable": "the fit is not usable"}
    try:
        return {"diagnosis": _diagnosis(result, x)}
    except ValueError as err:
        return {"diagnosis_unavailable": " ".join(str(err).split())}


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
    if args.max_reseeds > 0 and args.method in ("adam", "lbfgs"):
        raise CLIError(
            f"--max-reseeds needs --method em or anneal, got --method {args.method}"
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


_METHODS = {
    "em": "EM",
    "adam": "Adam (optax)",
    "lbfgs": "L-BFGS (optax)",
    "anneal": "deterministically annealed EM",
}


def _make_fitter(args):
    import optax

    import gmmjax

    if args.method == "adam":
        return gmmjax.GradientFitter(optax.adam, learning_rate=args.learning_rate)
    if args.method == "lbfgs":
        return gmmjax.GradientFitter(optax.lbfgs())
    em = gmmjax.EM(reg_covar=args.reg_covar, max_reseeds=args.max_reseeds)
    if args.method == "anneal":
        schedule = optax.linear_schedule(args.anneal_start, 1.0, args.anneal_steps)
        return gmmjax.Annealed(em, schedule)
    return em


# The diagnosis' kinds in words that mean one thing each: the summary already uses
# DEGENERATE for a collapsed component, so a singular Hessian is called that.
_VERDICTS = {
    "maximum": "maximum",
    "saddle": "saddle",
    "minimum": "minimum",
    "degenerate": "singular Hessian",
    "not_critical": "not at a critical point yet",
}

_ADVICE = {
    "saddle": "rerun with more --n-init restarts or with --method anneal",
    "minimum": "rerun with more --n-init restarts",
    "degenerate": "the data do not pin down every parameter here: try a smaller -k "
    "or another --covariance-type",
    "not_critical": "rerun with a smaller --tol (say 100 times smaller) or more "
    "--max-steps",
}


def _diagnosis(result, x) -> dict:
    """``gmmjax.diagnose`` of the chosen run, in the command's words."""
    import gmmjax

    d = gmmjax.diagnose(result, x)
    eigenvalues = np.sort(np.asarray(d.eigenvalues, np.float64))[::-1]
    advice = _ADVICE.get(d.kind, "")
    if d.kind == "not_critical" and result.status_name == "CONVERGED":
        advice = (
            "CONVERGED only means that the last step gained less than --tol per "
            f"sample; {advice}"
        )
    return {
        "kind": d.kind,
        "verdict": _VERDICTS[d.kind],
        "message": d.message,
        "advice": advice,
        "predicted_gain": float(d.predicted_gain),
        "gradient_norm": float(d.gradient_norm),
        "top_hessian_eigenvalues": eigenvalues[:3].tolist(),
    }


def _show_progress(args) -> bool:
    return args.progress or sys.stderr.isatty()


def _bar(done: int, total: int) -> str:
    filled = round(12 * done / total) if total > 0 else 12
    return f"[{'#' * filled}{'.' * (12 - filled)}]"


class _Line:
    """One progress line on stderr (nothing when ``on`` is false), redrawn in
    place at most ten times a second (a ``force``-d state is always drawn) and
    cut to the terminal's width. As a context manager it ends the line on exit,
    also on an error, so the error message starts on its own line."""

    def __init__(self, on: bool):
        self.on = on
        self.start = time.perf_counter()
        self._drawn = -float("inf")
        self._width = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self._width:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def elapsed(self) -> str:
        return f"{time.perf_counter() - self.start:.1f} s"

    def draw(self, text: str, *, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.on or (not force and now - self._drawn < 0.1):
            return
        self._drawn = now
        text = text[: shutil.get_terminal_size().columns - 1]
        sys.stderr.write("\r" + text.ljust(self._width))
        sys.stderr.flush()
        self._width = len(text)


class _FitProgress:
    """The progress line of ``gmmjax fit``, fed by a host callback from inside
    the compiled loop (``report`` of ``gmmjax._fit.fit_batch``)."""

    def __init__(self, line: _Line, max_steps: int):
        self.line = line
        self.max_steps = max_steps

    def __call__(self, n_steps, mean_ll, running) -> None:
        steps = int(np.max(n_steps))
        finite = np.asarray(mean_ll)[np.isfinite(mean_ll)]
        # the best restart's, when there are several
        ll = f", mean log-lik {finite.max():.6g}" if finite.size else ""
        going = int(np.sum(running))
        if going == 0:
            text = f"fit {_bar(1, 1)} done after {steps} steps"
        else:
            text = f"fit {_bar(steps, self.max_steps)} {steps}/{self.max_steps} steps"
            if len(running) > 1:
                text += f", {going}/{len(running)} running"
        self.line.draw(f"{text}, {self.line.elapsed()}{ll}", force=going == 0)


def _fit_runs(fitter, gmm0s, x, max_steps, tol, show):
    """Fit every start in one compiled call (``fit`` vmapped over the starts);
    with ``show``, a progress line on stderr drawn from inside the loop. The
    progress only observes: the results are the same with and without it."""
    import jax

    from ._fit import fit_batch

    if not show:
        return fit_batch(fitter, gmm0s, x, max_steps=max_steps, tol=tol)
    with _Line(True) as line:
        line.draw("fit: compiling", force=True)
        report = _FitProgress(line, max_steps)
        runs = fit_batch(fitter, gmm0s, x, max_steps=max_steps, tol=tol, report=report)
        # the last report is drawn before the line ends
        jax.effects_barrier()
    return runs


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


def _summary(args, data: Data, result, runs) -> dict:
    import gmmjax

    gmm = result.gmm
    n, d = data.values.shape
    ll = float(result.log_likelihood)
    p = int(gmmjax.n_parameters(gmm))
    statuses = [gmmjax.Status(int(s)).name for s in np.asarray(runs.status)]
    reason = _unusable(result)
    return {
        "data": {
            "path": args.data,
            "n_samples": int(n),
            "n_features": int(d),
            "columns": data.names,
            "left_out": data.left_out,
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
        "usable": reason is None,
        **({} if reason is None else {"reason": reason}),
        "n_init": int(args.n_init),
        "restarts": {
            "log_likelihoods": [
                float(v) for v in np.asarray(runs.log_likelihood, np.float64)
            ],
            "statuses": statuses,
        },
    }


def _unusable(result) -> str | None:
    """Why the chosen run is not a usable fit (``None`` when it is)."""
    if result.status_name == "DEGENERATE":
        j = int(result.degenerate_component)
        return f"status DEGENERATE, component {j} emptied or collapsed"
    if result.status_name == "NONFINITE":
        return (
            "status NONFINITE, a step gave a non-finite log-likelihood (the model "
            "shown is the last finite one)"
        )
    return None


def _print_summary(s: dict) -> None:
    """The data, the model and how the fit ended: the lines before the diagnosis."""
    n, d = s["data"]["n_samples"], s["data"]["n_features"]
    source = s["data"]["path"] or "bundled Old Faithful"
    with np.printoptions(precision=5, suppress=True):
        print(f"data: {n} samples, {d} features ({source})")
        if s["data"]["columns"]:
            print(f"columns: {', '.join(s['data']['columns'])}")
        if s["data"]["left_out"]:
            print(f"left out: {', '.join(s['data']['left_out'])}")
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


def _print_outcome(s: dict) -> None:
    """The lines after the model: the diagnosis and the files written."""
    if "diagnosis" in s:
        diag = s["diagnosis"]
        top = ", ".join(f"{v:.4g}" for v in diag["top_hessian_eigenvalues"])
        print(f"diagnosis: {diag['verdict']} ({diag['message']})")
        print(
            f"  evidence, per sample in standardized units: gain left "
            f"{diag['predicted_gain']:.2g}, gradient norm "
            f"{diag['gradient_norm']:.2g}, top Hessian eigenvalues {top}"
        )
        if diag["advice"]:
            print(f"  advice: {diag['advice']}")
    if "diagnosis_unavailable" in s:
        print(f"diagnosis: not available ({s['diagnosis_unavailable']})")
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
    names = summary["data"]["columns"]
    fig = plot.plot_mixture(gmm, x, title=title, feature_names=names)
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
    x = load_data(args.data).values
    candidates = _parse_range(args.n_components)
    _check_components("-k values", candidates, x.shape[0])
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
    import jax

    jax.config.update("jax_enable_x64", True)
    import gmmjax

    with _Line(_show_progress(args)) as line:

        def progress(i, n_cells, k, covariance_type):
            line.draw(
                f"select {_bar(i, n_cells)} cell {i + 1}/{n_cells}: k={k}, "
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
            max_steps=args.max_steps,
            tol=args.tol,
            init=args.init,
            fitter=gmmjax.EM(reg_covar=args.reg_covar),
            progress=progress,
        )
        cells = result.values.size
        line.draw(
            f"select {_bar(1, 1)} {cells}/{cells} cells, {line.elapsed()}", force=True
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
    _check_output_folder("--out", args.out)
    from ._study_report import run_saddle_study

    with _Line(_show_progress(args)) as line:

        def progress(i, n_stages, name):
            line.draw(
                f"study saddle {_bar(i, n_stages)} stage {i + 1}/{n_stages}: "
                f"{name}, {line.elapsed()}",
                force=True,
            )

        results = run_saddle_study(
            args.out, quick=args.quick, seed=args.seed, progress=progress
        )
        line.draw(f"study saddle {_bar(1, 1)} done, {line.elapsed()}", force=True)
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
        "first line that is not all numbers is its header. An unnamed first "
        "column of distinct whole numbers (pandas' index) and constant columns "
        "are left out, with a message",
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
        help="variance floor (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help=f"{seed_help} (default: %(default)s)"
    )


def _add_progress(parser) -> None:
    parser.add_argument(
        "--progress",
        action="store_true",
        help="report progress on stderr (default: only when it is a terminal)",
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
    _add_progress(fit)
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
