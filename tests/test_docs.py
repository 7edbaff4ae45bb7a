"""The documentation: every snippet runs, every public name is documented, the site
builds with ``mkdocs build --strict``."""

import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
#: Modules whose public functions and classes make up the API.
PUBLIC_MODULES = (
    "gmmjax",
    "gmmjax.datasets",
    "gmmjax.landscape",
    "gmmjax.sklearn",
    "gmmjax.io",
    "gmmjax.plot",
    "gmmjax.toy",
)


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """``(line, code)`` of every fenced ```python block of a Markdown page."""
    text = page.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)
    ]


PAGES = sorted(p for p in DOCS.rglob("*.md") if python_blocks(p))


def test_snippet_extraction_finds_every_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```python\na = 1\n```\n\n```bash\nls\n```\n```python\nb = a + 1\n```\n"
    )
    assert python_blocks(page) == [(3, "a = 1\n"), (10, "b = a + 1\n")]


def test_tutorials_have_snippets():
    tutorials = sorted((DOCS / "tutorials").glob("*.md"))
    assert tutorials
    assert all(p in PAGES for p in tutorials)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_snippets_run(page, tmp_path, monkeypatch):
    """The ```python blocks of a page run in order, in one namespace (as a reader
    would paste them), from an empty working directory."""
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    try:
        for line, code in python_blocks(page):
            name = f"{page.relative_to(ROOT)}:{line}"
            exec(compile(code, name, "exec"), namespace)
    finally:
        plt.close("all")


def test_home_page_setup_matches_readme():
    """The two set-up commands of the home page are the README's."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    home = (DOCS / "index.md").read_text(encoding="utf-8")
    for command in ('pip install -e ".[dev]" && gmmjax fit', "pytest"):
        assert command in readme
        assert command in home


def defined_by(origin: str, module_name: str) -> bool:
    """Whether an object from module ``origin`` is part of ``module_name``'s API:
    anything of gmmjax's for the package itself; for a public submodule, what it
    defines or re-exports from its private twin (``gmmjax.landscape`` from
    ``gmmjax._landscape``), not the helpers it imports."""
    if module_name == "gmmjax":
        return origin.startswith("gmmjax")
    package, _, name = module_name.rpartition(".")
    return origin in (module_name, f"{package}._{name}")


def public_objects():
    """``(qualified name, object)`` for every public function and class of gmmjax."""
    out = []
    for module_name in PUBLIC_MODULES:
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        for name in sorted(dir(module)):
            obj = getattr(module, name)
            if name.startswith("_") or not (
                inspect.isfunction(obj) or inspect.isclass(obj)
            ):
                continue
            exported = name in getattr(module, "__all__", ())
            if exported or defined_by(
                getattr(obj, "__module__", "") or "", module_name
            ):
                out.append((f"{module_name}.{name}", obj))
    return out


PUBLIC = public_objects()


def test_the_api_is_found():
    names = {name for name, _ in PUBLIC}
    assert {"gmmjax.GMM", "gmmjax.fit", "gmmjax.datasets.faithful"} <= names


def takes_arguments(obj) -> bool:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    return bool(signature.parameters)


def returns_something(func) -> bool:
    annotation = inspect.signature(func).return_annotation
    return annotation not in (None, "None")


@pytest.mark.parametrize(("name", "obj"), PUBLIC, ids=[n for n, _ in PUBLIC])
def test_public_name_docstring(name, obj):
    """Google style: a summary, Args (or a class's Attributes), Returns, an Example."""
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name} has no docstring"
    sections = set(re.findall(r"^(\w+):\s*$", doc, re.MULTILINE))
    missing = []
    if not sections & {"Example", "Examples"}:
        missing.append("Example")
    if inspect.isclass(obj):
        enum_like = issubclass(obj, int) and hasattr(obj, "__members__")
        if (enum_like or takes_arguments(obj)) and not sections & {
            "Args",
            "Attributes",
        }:
            missing.append("Args/Attributes")
    else:
        if takes_arguments(obj) and "Args" not in sections:
            missing.append("Args")
        if returns_something(obj) and "Returns" not in sections:
            missing.append("Returns")
    assert not missing, f"{name}: docstring lacks {', '.join(missing)}"


def documented_names() -> set[str]:
    names = set()
    for page in (DOCS / "api").glob("*.md"):
        text = page.read_text(encoding="utf-8")
        names |= set(re.findall(r"^:::\s*([\w.]+)", text, re.MULTILINE))
    return names


def resolve(name: str):
    module_name, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def test_api_entries_name_real_objects():
    for name in documented_names():
        module_name, _, attr = name.rpartition(".")
        module = importlib.import_module(module_name)
        assert hasattr(module, attr), f"docs/api names {name}, which does not exist"


def test_every_public_name_has_an_api_entry():
    """Each public object has a ``::: name`` entry (a name re-exported by two modules
    needs one entry, under either)."""
    documented = [resolve(name) for name in documented_names()]
    missing = [
        name for name, obj in PUBLIC if not any(obj is entry for entry in documented)
    ]
    assert not missing, f"no ::: entry in docs/api/ for {missing}"


def test_benchmark_renderer(tmp_path):
    """Every JSON shape the benchmark scripts write becomes a table; plots follow
    the JSON file of the same stem."""
    spec = importlib.util.spec_from_file_location(
        "make_benchmarks", DOCS / "make_benchmarks.py"
    )
    make_benchmarks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_benchmarks)
    assert "No benchmark results" in make_benchmarks.render(tmp_path)
    (tmp_path / "em.json").write_text(
        json.dumps(
            {
                "benchmark": "em",
                "repeats": 5,
                "machine": {"cpu": "test-cpu", "cores": 2},
                "versions": {"jax": "0.0.1"},
                "results": [
                    {"n": 1000, "gmmjax_s": 0.0123456, "sklearn_s": 0.5},
                    {"n": 2000, "gmmjax_s": 0.02, "speedup": 20.0},
                ],
                "by_case": {"a": {"ratio": 3.25}, "b": {"ratio": 4.5}},
                "methods": {
                    "em": {"steps": 3, "ok": True, "wall": {"median": 1.5}},
                    "adam": {"steps": 40, "ok": True, "wall": {"median": 2.5}},
                },
            }
        )
    )
    (tmp_path / "em_times.png").write_bytes(b"\x89PNG")
    (tmp_path / "stray.png").write_bytes(b"\x89PNG")
    (tmp_path / "broken.json").write_text("{not json")
    text = make_benchmarks.render(tmp_path)
    assert "| n | gmmjax_s | sklearn_s | speedup |" in text
    assert "| 1000 | 0.01235 | 0.5 |  |" in text
    assert "| a | 3.25 |" in text
    assert "|  | em | adam |" in text  # more fields than records: transposed
    assert "| wall.median | 1.5 | 2.5 |" in text
    assert "| machine.cpu | test-cpu |" in text
    assert "| versions.jax | 0.0.1 |" in text
    assert "| repeats | 5 |" in text
    em_section = text[text.index("## em") :]
    assert "(benchmarks/results/em_times.png)" in em_section
    assert "## Other figures" in text
    assert "(benchmarks/results/stray.png)" in text
    assert "Could not read `broken.json`" in text
    real = make_benchmarks.render()
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        assert f"## {path.stem}" in real


def test_benchmark_renderer_splits_wide_tables():
    """A list of records wider than the page, on its side or not, becomes several
    tables, each within the page's width and led by the column naming the rows."""
    spec = importlib.util.spec_from_file_location(
        "make_benchmarks", DOCS / "make_benchmarks.py"
    )
    make_benchmarks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_benchmarks)
    limit = make_benchmarks.PAGE_CHARACTERS
    for n_records in (14, 40):  # fewer records than fields (on its side), and more
        records = [
            {f"field_{j:02d}": f"value-{i:02d}-{j:02d}-xxxxxxxx" for j in range(32)}
            for i in range(n_records)
        ]
        text = make_benchmarks.records_table(records)
        tables = text.split("\n\n")
        assert len(tables) > 1
        cells, leads = set(), []
        for part in tables:
            lines = [line.strip("| ").split(" | ") for line in part.splitlines()]
            header, rows = lines[0], lines[2:]
            assert len(header) <= make_benchmarks.MAX_COLUMNS
            widths = [
                max(len(row[i]) for row in [header, *rows])
                + make_benchmarks.CELL_PADDING
                for i in range(len(header))
            ]
            assert sum(widths) <= limit
            leads.append([row[0] for row in rows])
            cells |= {c for row in rows for c in row[1:]}
        assert all(lead == leads[0] for lead in leads)
        assert len(cells) == n_records * 31  # every value but the naming one, once


def test_mkdocs_build_strict(tmp_path):
    """The site builds with no warning: every page, link, figure and API entry."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "index.html").is_file()
    fitting = (tmp_path / "api" / "fitting" / "index.html").read_text("utf-8")
    assert 'id="gmmjax.fit"' in fitting
