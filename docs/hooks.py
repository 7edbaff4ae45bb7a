"""mkdocs hooks: the Benchmarks page and the outputs of the code blocks.

- ``docs/benchmarks.md`` holds the prose and a marker; at build time the marker is
  replaced by the tables of :mod:`make_benchmarks` and the PNG plots of
  ``benchmarks/results/`` are added to the site, so the page can never go stale.
- Under each ```python block of a page, what the block prints is shown as an
  "Output" block, from ``docs/outputs.json`` (written by :mod:`make_outputs`, which
  runs the pages as ``tests/test_docs.py`` does). A block whose code changed since
  its output was recorded is a warning, so the strict build fails and says how to
  record it again.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

from mkdocs.structure.files import File

MARKER = "<!-- benchmark-results -->"
_HERE = Path(__file__).resolve().parent
log = logging.getLogger("mkdocs.hooks.gmmjax")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, _HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_benchmarks = _load("make_benchmarks")
make_outputs = _load("make_outputs")
_outputs: dict[str, dict[str, str]] = {}


def on_pre_build(config):
    _outputs.clear()
    _outputs.update(make_outputs.load())


def on_files(files, config):
    results = make_benchmarks.RESULTS_DIR
    if results.is_dir():
        for png in sorted(results.glob("*.png")):
            uri = f"{make_benchmarks.IMAGE_PREFIX}/{png.name}"
            files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files


def output_block(text: str) -> str:
    """A fenced block titled "Output" (longer fences when the text has some)."""
    runs = [len(run) for run in re.findall(r"`{3,}", text)]
    fence = "`" * max([3, *(n + 1 for n in runs)])
    return f'{fence} {{ .text .output title="Output" }}\n{text.rstrip()}\n{fence}'


def with_outputs(markdown: str, page_uri: str) -> str:
    """The page with an Output block under every ```python block that prints."""
    recorded = _outputs.get(page_uri, {})
    pieces, end, stale = [], 0, []
    for match, key in make_outputs.block_keys(markdown):
        pieces.append(markdown[end : match.end()])
        end = match.end()
        if key not in recorded:
            stale.append(markdown.count("\n", 0, match.start()) + 1)
        elif recorded[key].strip():
            pieces.append("\n\n" + output_block(recorded[key]))
    if stale:
        why = (
            f"the python block(s) at line(s) {', '.join(map(str, stale))} changed "
            "(or a block before them) since their outputs were recorded"
            if recorded
            else "its python blocks have no recorded outputs"
        )
        log.warning(
            f"{page_uri}: {why}: run `python docs/make_outputs.py docs/{page_uri}`"
        )
    return "".join(pieces) + markdown[end:]


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, make_benchmarks.render())
    if make_outputs.FENCE.search(markdown):
        markdown = with_outputs(markdown, page.file.src_uri)
    return markdown
