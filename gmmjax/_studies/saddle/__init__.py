"""``gmmjax study saddle``: the saddle study of the symmetric two-point mixture.

Modules: :mod:`.fitters` (the study's fitters and stopping rule), :mod:`.runs`
(batched runs through :func:`gmmjax.fit`), :mod:`.values` (closed-form values),
:mod:`.scipy_runs` (scipy's optimizers), :mod:`.sections` and :mod:`.comparison`
(the numbers of each section), :mod:`.figures` and :mod:`.report` (with the
template ``report.md``). Only public names of gmmjax are used.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

from .figures import FIGURES

__all__ = ["FIGURES", "STAGES", "run_saddle_study"]

# the sections of the study, in the order they run
STAGES = (
    "surface",
    "alternating",
    "saddle",
    "profile",
    "gradient_field",
    "em",
    "comparison",
    "annealing",
)


def run_saddle_study(
    out_dir, *, quick: bool = False, seed: int = 0, progress=None
) -> dict:
    """Run the saddle study and write its figures and Markdown report.

    Reproduces the findings of the study of the symmetric two-point model (data
    ``+-1``, mixture ``0.5 N(mu, sigma^2) + 0.5 N(-mu, sigma^2)``) with
    :mod:`gmmjax.toy` and the general library, and extends it: the likelihood
    surface and its phase change at ``sigma = 1``, alternating maximization, the
    exact gradient and Hessian at the saddle ``(0, 1)``, the optimal-sigma profile,
    the gradient field, EM from a grid of starts (steps to convergence under stated
    stopping rules), a comparison of optimizers from the same grid, and
    deterministic annealing. Every run goes through :func:`gmmjax.fit` (or
    :func:`gmmjax.anneal_variance`), every grid of starts is one batched JAX
    computation in chunks (scipy's optimizers, which cannot be traced, loop in
    numpy on a coarser grid). Runs in float64.

    Args:
        out_dir: directory for ``report.md``, ``results.json`` and the PNG figures
            (created if missing).
        quick: a small grid and short budgets, for tests and smoke runs.
        seed: seed of the noisy-gradient runs and of the annealing's kicks.
        progress: optional host function ``progress(i, n_stages, name)``, called
            before stage ``i`` (from 0) of the ``n_stages`` of :data:`STAGES`.

    Returns:
        A JSON-serializable dict of the measured numbers, including
        ``wall_time_s`` and ``cpu_time_s`` of the whole study.

    Example:
        The full study takes about a minute of CPU time, so it is run from the
        command line (``tests/test_study.py`` runs it end to end in quick mode)::

            gmmjax study saddle --out saddle-study
            python benchmarks/saddle_study.py --quick
    """
    import jax
    import optax

    from . import report, runs, sections
    from .comparison import comparison
    from .figures import DRAW

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = sections.Config(quick)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    results: dict[str, Any] = {"quick": quick}
    timings = {}

    def stage(name, fn, *args):
        if progress is not None:
            progress(STAGES.index(name), len(STAGES), name)
        t, c = time.perf_counter(), time.process_time()
        numbers, plot, *rest = fn(*args)
        DRAW[name](plot, out)
        results[name] = numbers
        timings[name] = [time.perf_counter() - t, time.process_time() - c]
        return rest

    with jax.enable_x64(True):
        grid = runs.start_grid(cfg.n_grid)
        results["grid"] = list(grid.shape)
        # threefry: its draws do not depend on how the runs are batched (rbg's do)
        key = jax.random.key(seed)
        stage("surface", sections.surface, cfg)
        stage("alternating", sections.alternating, cfg)
        stage("saddle", sections.saddle, cfg)
        stage("profile", sections.profile, cfg)
        stage("gradient_field", sections.gradient_field, cfg)
        (em_runs,) = stage("em", sections.em, cfg, grid)
        stage("comparison", comparison, cfg, grid, key, em_runs)
        stage("annealing", sections.annealing, cfg, key)
    results["section_seconds"] = timings
    results["wall_time_s"] = time.perf_counter() - wall0
    results["cpu_time_s"] = time.process_time() - cpu0
    results["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }
    return report.write(out, results, cfg, grid)
