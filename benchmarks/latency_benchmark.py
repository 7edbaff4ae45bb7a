"""Latency as a new user meets it: fresh processes, first calls, compile included.

Each row runs in a fresh Python process and times the calls a user makes first,
with scikit-learn's equivalent timed the same way in another fresh process. The
imports are timed separately. Two passes: ``cold`` (every process starts with an
empty persistent compilation cache, as on a user's first run) and ``warm`` (the
cache filled by one earlier process running the same code). The estimator and
the ``gmmjax`` command use the cache by themselves (``GMMJAX_CACHE_DIR`` points
them at the pass's directory); the library rows turn it on with
``gmmjax.enable_compilation_cache()``.

Usage::

    python benchmarks/latency_benchmark.py            # both passes, 3 repeats
    python benchmarks/latency_benchmark.py --repeats 1

Writes ``benchmarks/results/latency.json`` and ``latency.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from _common import machine_info

RESULTS = Path(__file__).parent / "results"

# Every snippet prints one JSON object {label: seconds}; ``clock()`` is
# time.perf_counter and ``done(x)`` blocks until a JAX value is ready.
PRELUDE = """
import json, time
t0 = time.perf_counter()
clock = time.perf_counter
"""

GMMJAX_ESTIMATOR = """
import numpy as np
from sklearn.datasets import load_iris
x = load_iris().data
t = clock(); import gmmjax.sklearn as gs; t_import = clock() - t
out = {"import gmmjax.sklearn": t_import}
def timed(label, fn):
    t = clock(); fn(); out[label] = clock() - t
GM = gs.GaussianMixture
gm = GM(3, random_state=0)
timed("estimator first fit, iris k=3", lambda: gm.fit(x))
timed("same estimator, same shape again", lambda: GM(3, random_state=1).fit(x))
timed("iris less one row", lambda: GM(3, random_state=0).fit(x[:-1]))
timed("new max_iter and tol", lambda: GM(3, max_iter=50, tol=1e-4).fit(x))
timed("iris less 10 rows (same bucket)", lambda: GM(3, random_state=0).fit(x[:-10]))
timed("k=4", lambda: GM(4, random_state=0).fit(x))
timed("covariance_type=diag", lambda: GM(3, covariance_type="diag").fit(x))
timed("n_init=10", lambda: GM(3, n_init=10, random_state=0).fit(x))
timed("n_init=9 after n_init=10", lambda: GM(3, n_init=9, random_state=0).fit(x))
timed("sample(100)", lambda: gm.sample(100))
timed("sample(101)", lambda: gm.sample(101))
timed("predict(iris)", lambda: gm.predict(x))
timed("float32 first fit, iris k=3", lambda: GM(3).fit(x.astype(np.float32)))
print(json.dumps(out))
"""

SKLEARN_ESTIMATOR = GMMJAX_ESTIMATOR.replace(
    "import gmmjax.sklearn as gs", "import sklearn.mixture as gs"
).replace('"import gmmjax.sklearn"', '"import sklearn.mixture"')

IMPORT = """
t = clock(); import gmmjax; gmmjax.fit; t_import = clock() - t
print(json.dumps({"import gmmjax (and jax)": t_import}))
"""

SELECT = """
LABEL = "select, iris, k 1-9 x 4 types, n_init=10"
from sklearn.datasets import load_iris
x = load_iris().data
import jax, gmmjax
jax.config.update("jax_enable_x64", True)
gmmjax.enable_compilation_cache()
t = clock()
gmmjax.select(jax.random.key(0), x, n_components=range(1, 10), n_init=10)
print(json.dumps({LABEL: clock() - t}))
"""

SKLEARN_SELECT = """
LABEL = "select, iris, k 1-9 x 4 types, n_init=10"
from sklearn.datasets import load_iris
from sklearn.mixture import GaussianMixture
x = load_iris().data
t = clock()
for k in range(1, 10):
    for ctype in ("full", "tied", "diag", "spherical"):
        gm = GaussianMixture(k, covariance_type=ctype, n_init=10, random_state=0)
        gm.fit(x).bic(x)
print(json.dumps({LABEL: clock() - t}))
"""

GRID = """
LABEL = "GridSearchCV, 5 folds, n_components 1-6, iris"
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV
import gmmjax.sklearn as gs
x = load_iris().data
t = clock()
GridSearchCV(gs.GaussianMixture(random_state=0), {"n_components": range(1, 7)}).fit(x)
print(json.dumps({LABEL: clock() - t}))
"""

SKLEARN_GRID = GRID.replace(
    "import gmmjax.sklearn as gs", "import sklearn.mixture as gs"
)


def run_snippet_in(code: str, env: dict) -> dict:
    """Run ``code`` in a fresh interpreter; its printed JSON timings."""
    source = PRELUDE + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", source],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=1200,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_command_in(args: list[str], env: dict) -> float:
    """Wall time of a whole command in a fresh process."""
    import time

    t = time.perf_counter()
    subprocess.run(args, env=env, capture_output=True, check=True, timeout=1200)
    return time.perf_counter() - t


def measure(env: dict, repeats: int, cold: bool) -> dict:
    """``{label: {"gmmjax": median s, "sklearn": median s or None}}``; ``cold``:
    every process gets a new, empty cache directory."""
    rows: dict[str, dict] = {}
    if cold:
        base_env = env

        def run_snippet(code, _):
            with tempfile.TemporaryDirectory() as cache:
                return run_snippet_in(code, {**base_env, "GMMJAX_CACHE_DIR": cache})

        def run_command(args, _):
            with tempfile.TemporaryDirectory() as cache:
                return run_command_in(args, {**base_env, "GMMJAX_CACHE_DIR": cache})

    else:
        run_snippet, run_command = run_snippet_in, run_command_in

    def add(side, timings):
        for label, seconds in timings.items():
            rows.setdefault(label, {"gmmjax": [], "sklearn": []})[side].append(seconds)

    gmmjax_cli = [str(Path(sys.executable).with_name("gmmjax")), "fit"]
    for _ in range(repeats):
        add("gmmjax", run_snippet(IMPORT, env))
        add("gmmjax", run_snippet(GMMJAX_ESTIMATOR, env))
        add("sklearn", run_snippet(SKLEARN_ESTIMATOR, env))
        add("gmmjax", run_snippet(SELECT, env))
        add("sklearn", run_snippet(SKLEARN_SELECT, env))
        add("gmmjax", run_snippet(GRID, env))
        add("sklearn", run_snippet(SKLEARN_GRID, env))
        add(
            "gmmjax",
            {
                "gmmjax fit (README main job, whole process)": run_command(
                    gmmjax_cli, env
                )
            },
        )
    out = {}
    for label, sides in rows.items():
        g = statistics.median(sides["gmmjax"]) if sides["gmmjax"] else None
        s = statistics.median(sides["sklearn"]) if sides["sklearn"] else None
        # the import rows are named after their own library: pair them up
        out[label] = {"gmmjax_s": g, "sklearn_s": s}
    g_imp = out.pop("import gmmjax.sklearn")["gmmjax_s"]
    s_imp = out.pop("import sklearn.mixture")["sklearn_s"]
    out["import the estimator"] = {"gmmjax_s": g_imp, "sklearn_s": s_imp}
    for row in out.values():
        g, s = row["gmmjax_s"], row["sklearn_s"]
        row["ratio"] = None if not (g and s) else g / s
    return out


def plot(results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = list(results["cold"])
    fig = Figure(figsize=(9.0, 0.45 * len(labels) + 1.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    height = 0.27
    for i, (name, colour) in enumerate(
        [("cold", "tab:red"), ("warm", "tab:orange"), ("sklearn", "tab:blue")]
    ):
        values = [
            (
                results["cold"][label]["sklearn_s"]
                if name == "sklearn"
                else results[name][label]["gmmjax_s"]
            )
            or 0.0
            for label in labels
        ]
        ax.barh(
            [j + (i - 1) * height for j in range(len(labels))],
            values,
            height=height,
            color=colour,
            label={
                "cold": "gmmjax, cold",
                "warm": "gmmjax, warm cache",
                "sklearn": "scikit-learn",
            }[name],
        )
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("seconds (fresh process, median)")
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    base.pop("JAX_COMPILATION_CACHE_DIR", None)
    base.pop("GMMJAX_CACHE_DIR", None)
    results = {"cold": measure(base, args.repeats, cold=True)}
    with tempfile.TemporaryDirectory() as cache:
        warm_env = {**base, "GMMJAX_CACHE_DIR": cache}
        measure(warm_env, 1, cold=False)  # fills the cache
        results["warm"] = measure(warm_env, args.repeats, cold=False)
    RESULTS.mkdir(exist_ok=True)
    record = {
        "description": "fresh-process latency, gmmjax vs scikit-learn; median of "
        f"{args.repeats} processes per row; warm = JAX's persistent compilation "
        "cache filled by an earlier process; cold = an empty cache in every process",
        "results": results,
        "machine": machine_info("jax", "jaxlib", "scikit-learn", "numpy"),
    }
    (RESULTS / "latency.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(results, RESULTS / "latency.png")
    width = max(len(label) for label in results["cold"])
    print(f"{'':{width}}  cold s   warm s   sklearn s   cold ratio")
    for label, row in results["cold"].items():
        warm = results["warm"][label]["gmmjax_s"]
        s = row["sklearn_s"]
        print(
            f"{label:{width}}  {row['gmmjax_s']:7.3f}  {warm:7.3f}  "
            f"{'' if s is None else f'{s:9.3f}':>9}  "
            f"{'' if row['ratio'] is None else format(row['ratio'], '.1f') + 'x'}"
        )


if __name__ == "__main__":
    main()
