"""mkdocs hooks: the Benchmarks page is rendered from ``benchmarks/results/``.

``docs/benchmarks.md`` holds the prose and a marker; at build time the marker is
replaced by the tables of :mod:`make_benchmarks` and the PNG plots of
``benchmarks/results/`` are added to the site, so the page can never go stale.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.structure.files import File

MARKER = "<!-- benchmark-results -->"
_HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "make_benchmarks", _HERE / "make_benchmarks.py"
)
make_benchmarks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_benchmarks)


def on_files(files, config):
    results = make_benchmarks.RESULTS_DIR
    if results.is_dir():
        for png in sorted(results.glob("*.png")):
            uri = f"{make_benchmarks.IMAGE_PREFIX}/{png.name}"
            files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        return markdown.replace(MARKER, make_benchmarks.render())
    return markdown
