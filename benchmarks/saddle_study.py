"""The saddle study as a benchmark: run it, time it, keep the numbers.

Writes the figures and ``report.md`` into ``--out`` (default: the docs' figure
folder, so the docs page shows the latest run) and the measured numbers, with
the machine and library versions, to ``benchmarks/results/saddle_study.json``.

    python benchmarks/saddle_study.py            # the full study
    python benchmarks/saddle_study.py --quick    # a short smoke run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gmmjax._studies.saddle import run_saddle_study

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "saddle"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = run_saddle_study(args.out, quick=args.quick, seed=args.seed)
    name = "saddle_study_quick.json" if args.quick else "saddle_study.json"
    path = ROOT / "benchmarks" / "results" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"wall {results['wall_time_s']:.1f} s, CPU {results['cpu_time_s']:.1f} s")
    print(f"report: {Path(args.out) / 'report.md'}; numbers: {path}")


if __name__ == "__main__":
    main()
