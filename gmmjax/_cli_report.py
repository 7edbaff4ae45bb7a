"""What ``gmmjax fit`` shows: the progress line, the summary, the diagnosis, the plot.

Nothing here imports jax at import time: the functions that need the library
import it when called, after the command's checks have passed.
"""

from __future__ import annotations

import functools
import shutil
import sys
import time

import numpy as np

from ._cli_data import CLIError, Data

__all__ = [
    "METHODS",
    "PRIOR_LINE",
    "FitProgress",
    "Line",
    "bar",
    "diagnosis_or_reason",
    "print_outcome",
    "print_summary",
    "save_plot",
    "summary",
]


def diagnosis_or_reason(result, x, usable: bool, fitter) -> dict:
    """The summary's ``diagnosis``, or ``diagnosis_unavailable`` with the reason:
    the fit is not usable, it is variational (a lower bound of the evidence is
    not a function of the model's parameters alone), or its Hessian cannot be
    computed (not finite where a component has nearly collapsed). A MAP fit is
    diagnosed on its log posterior."""
    import gmmjax

    if not usable:
        return {"diagnosis_unavailable": "the fit is not usable"}
    if isinstance(fitter, gmmjax.VB):
        return {
            "diagnosis_unavailable": "a variational fit maximizes a lower bound "
            "over distributions, not a function of the model's parameters"
        }
    em = fitter.inner if isinstance(fitter, gmmjax.Annealed) else fitter
    prior = em.prior if isinstance(em, gmmjax.EM) else None
    try:
        return {"diagnosis": _diagnosis(result, x, prior)}
    except ValueError as err:
        return {"diagnosis_unavailable": " ".join(str(err).split())}


METHODS = {
    "em": "EM",
    "adam": "Adam (optax)",
    "lbfgs": "L-BFGS (optax)",
    "anneal": "deterministically annealed EM",
    "vb": "variational Bayes (Dirichlet process prior)",
}

PRIOR_LINE = (
    "prior: mclust's default conjugate prior (shrinkage 0.01 towards the data mean, "
    "d + 2 degrees of freedom), MAP-EM without a floor in its steps"
)

# what a fit maximizes where it is not the log-likelihood (FitResult.objective):
# by --method vb, or by --prior default
_OBJECTIVES = {
    "vb": "lower bound (scikit-learn's, without its constant terms)",
    "default": "log posterior",
}
# the weight above which a variational fit's component counts as in use
_USED_WEIGHT = 0.01


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


def _diagnosis(result, x, prior) -> dict:
    """``gmmjax.diagnose`` of the chosen run (of its log posterior with a
    prior), in the command's words."""
    import gmmjax

    d = gmmjax.diagnose(result, x, prior=prior)
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


def bar(done: int, total: int) -> str:
    filled = round(12 * done / total) if total > 0 else 12
    return f"[{'#' * filled}{'.' * (12 - filled)}]"


class Line:
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


class FitProgress:
    """The progress line of ``gmmjax fit``: the ``report`` of
    :func:`gmmjax.multistart`, called from inside the compiled loop with the
    state of every restart (those of batches still to come: 0 steps, running).
    """

    def __init__(self, line: Line, max_steps: int):
        self.line = line
        self.max_steps = max_steps

    def __call__(self, n_steps, mean_ll, running) -> None:
        n_steps, running = np.asarray(n_steps), np.asarray(running)
        finite = np.asarray(mean_ll)[np.isfinite(mean_ll)]
        # the best restart's, when there are several
        ll = f", mean log-lik {finite.max():.6g}" if finite.size else ""
        going = int(np.sum(running))
        if going == 0:
            steps = int(np.max(n_steps))
            text = f"fit {bar(1, 1)} done after {steps} steps"
        else:
            # the runs of the batch under way (later batches show 0 steps)
            steps = int(np.max(n_steps[running]))
            text = f"fit {bar(steps, self.max_steps)} {steps}/{self.max_steps} steps"
            if len(running) > 1:
                text += f", {len(running) - going}/{len(running)} restarts done"
        self.line.draw(f"{text}, {self.line.elapsed()}{ll}", force=going == 0)


@functools.cache
def _model_numbers():
    """A jitted ``(gmm, x) -> (weights, means, covariances, total
    log-likelihood)``: one program for the numbers of the summary, where the
    properties and criteria run op by op would compile a small program each
    (compiled by size, as the density programs)."""
    from ._density import density_work, total_log_likelihood
    from ._levels import ByWork

    def numbers(gmm, x):
        return gmm.weights, gmm.means, gmm.covariances, total_log_likelihood(gmm, x)

    return ByWork(numbers, density_work)


def summary(args, data: Data, result, runs) -> dict:
    """Everything ``gmmjax fit`` reports about the chosen run ``result`` (of the
    restarts ``runs``), as ``--json`` prints it."""
    import jax

    import gmmjax

    gmm = result.gmm
    x = data.values
    n, d = x.shape
    ll = float(result.log_likelihood)
    p = gmmjax.n_parameters(gmm)
    weights, means, covariances, total = jax.device_get(_model_numbers()(gmm, x))
    statuses = [gmmjax.Status(int(s)).name for s in np.asarray(runs.status)]
    reason = _unusable(result)
    objective = _OBJECTIVES.get(args.method if args.method == "vb" else args.prior)
    extra = {}
    if objective is not None:
        extra["objective"] = {"name": objective, "value": float(result.objective)}
        extra["restart_objectives"] = [
            float(v) for v in np.asarray(runs.objective, np.float64)
        ]
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
        # the first restart starts from the hierarchical partition
        "hc_start": True,
        "seed": args.seed,
        "reg_covar": args.reg_covar,
        "reg_scale": args.reg_scale,
        "prior": args.prior,
        "n_components": int(gmm.n_components),
        "covariance_type": gmm.covariance_type,
        "weights": weights.tolist(),
        "means": means.tolist(),
        "covariances": covariances.tolist(),
        "log_likelihood": ll,
        "mean_log_likelihood": ll / n,
        "n_parameters": int(p),
        # gmmjax.bic and gmmjax.aic, from the one program's log-likelihood
        "bic": float(-2.0 * total + p * np.log(n)),
        "aic": float(-2.0 * total + 2.0 * p),
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
        **extra,
    }


def _unusable(result) -> str | None:
    """Why the chosen run is not a usable fit (``None`` when it is), in the
    words of its :class:`gmmjax.Status`."""
    import gmmjax

    status = gmmjax.Status(int(result.status))
    if status == gmmjax.Status.DEGENERATE:
        j = int(result.degenerate_component)
        return f"status DEGENERATE (component {j}): {status.message}"
    if status == gmmjax.Status.NONFINITE:
        return f"status NONFINITE: {status.message}"
    return None


def regularization(reg_covar: float, reg_scale: str) -> str:
    """The line that says what ``--reg-covar`` added to the variances."""
    if reg_scale == "relative":
        what = "x each feature's variance"
    else:
        what = "added to every variance"
    return f"reg_covar: {reg_covar:g} {what} (--reg-scale {reg_scale})"


def print_summary(s: dict) -> None:
    """The data, the model and how the fit ended: the lines before the diagnosis."""
    n, d = s["data"]["n_samples"], s["data"]["n_features"]
    source = s["data"]["path"] or "bundled Old Faithful"
    with np.printoptions(precision=5, suppress=True):
        print(f"data: {n} samples, {d} features ({source})")
        if s["data"]["columns"]:
            print(f"columns: {', '.join(s['data']['columns'])}")
        if s["data"]["left_out"]:
            print(f"left out: {', '.join(s['data']['left_out'])}")
        starts = "the hierarchical partition"
        restarts = ""
        if s["n_init"] > 1:
            starts += " and k-means++"
            restarts = f", best of {s['n_init']} restarts"
        print(
            f"model: {s['n_components']} components, "
            f"covariance_type={s['covariance_type']!r}, "
            f"{METHODS[s['method']]} from {starts}{restarts}"
        )
        print(regularization(s["reg_covar"], s["reg_scale"]))
        if s["prior"] == "default":
            print(PRIOR_LINE)
        print(f"weights: {np.asarray(s['weights'])}")
        if s["method"] == "vb":
            used = int(np.sum(np.asarray(s["weights"]) > _USED_WEIGHT))
            print(
                f"components in use: {used} of {s['n_components']} (weight above "
                f"{_USED_WEIGHT:g}; the prior switched off the others)"
            )
        print(f"means:\n{np.asarray(s['means'])}")
        print(f"covariances:\n{np.asarray(s['covariances'])}")
        ll = s["log_likelihood"]
        print(f"log-likelihood: {ll:.6f} (mean {ll / n:.6f} per sample)")
        if "objective" in s:
            name, value = s["objective"]["name"], s["objective"]["value"]
            print(f"{name}: {value:.6f} (mean {value / n:.6f} per sample)")
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


def print_outcome(s: dict) -> None:
    """The lines after the model: the diagnosis and the files written."""
    if "diagnosis" in s:
        diag = s["diagnosis"]
        top = ", ".join(f"{v:.4g}" for v in diag["top_hessian_eigenvalues"])
        print(f"diagnosis: {diag['verdict']} ({diag['message']})")
        print(
            f"  evidence, per sample in whitened units: gain left "
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


def save_plot(path, gmm, x, summary) -> None:
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
