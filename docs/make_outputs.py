"""Record what the ```python blocks of the documentation print, for the site.

    python docs/make_outputs.py [PAGE.md ...]

Each page runs in a fresh Python process, its blocks in order in one namespace, from
an empty working directory with matplotlib's Agg backend: as a reader who pastes them
would run them, and as ``tests/test_docs.py`` runs them. What each block prints goes
to ``docs/outputs.json``, keyed by the page and a hash of the code up to and including
the block; ``docs/hooks.py`` shows it under the block on the built page. Running the
tutorials takes minutes, so the build does not: it reads this file, and fails (strict)
when a block's code changed since it was recorded, naming the command that updates
it. With no argument every page is run again; with pages, only those.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
OUTPUTS = DOCS / "outputs.json"
#: The ```python blocks, found as tests/test_docs.py finds them.
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def block_keys(markdown: str) -> list[tuple[re.Match, str]]:
    """Each ```python block of a page and its key: a hash of the page's code up to
    and including the block (what it prints can depend on every earlier block)."""
    digest = hashlib.sha256()
    out = []
    for match in FENCE.finditer(markdown):
        digest.update(match.group(1).encode("utf-8") + b"\0")
        out.append((match, digest.hexdigest()[:16]))
    return out


def load() -> dict[str, dict[str, str]]:
    """``{page: {key: printed text}}`` as recorded (empty when not yet)."""
    if not OUTPUTS.is_file():
        return {}
    return json.loads(OUTPUTS.read_text(encoding="utf-8"))["pages"]


def run_page(page: Path) -> dict[str, str]:
    """Run one page's blocks here, in this process; ``{key: printed text}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    namespace = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    printed = {}
    text = page.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as empty:
        os.chdir(empty)
        for match, key in block_keys(text):
            line = text.count("\n", 0, match.start()) + 2
            code = compile(match.group(1), f"{page.relative_to(ROOT)}:{line}", "exec")
            stdout = io.StringIO()
            with contextlib.redirect_stdout(stdout):
                exec(code, namespace)
            printed[key] = stdout.getvalue()
        plt.close("all")
    return printed


def pages_with_code() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if FENCE.search(p.read_text("utf-8")))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--run"]:  # the child process of one page
        Path(argv[2]).write_text(json.dumps(run_page(Path(argv[1]).resolve())))
        return
    pages = [Path(a).resolve() for a in argv] or pages_with_code()
    recorded = load()
    for page in pages:
        name = page.relative_to(DOCS).as_posix()
        print(f"running {name} ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "out.json"
            subprocess.run(
                [sys.executable, __file__, "--run", str(page), str(result)],
                check=True,
                cwd=ROOT,
            )
            recorded[name] = json.loads(result.read_text())
    # Pages that no longer exist or have no code drop out.
    recorded = {
        name: blocks
        for name, blocks in sorted(recorded.items())
        if name in {p.relative_to(DOCS).as_posix() for p in pages_with_code()}
    }
    note = "Written by docs/make_outputs.py; shown on the site by docs/hooks.py."
    versions = {
        "python": sys.version.split()[0],
        **{name: importlib.metadata.version(name) for name in ("jax", "numpy")},
    }
    data = {"note": note, "versions": versions, "pages": recorded}
    OUTPUTS.write_text(
        json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(f"wrote {OUTPUTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
