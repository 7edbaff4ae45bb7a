"""Render the benchmark results in ``benchmarks/results/`` as Markdown.

The documentation build calls :func:`render` (through ``docs/hooks.py``) every time,
so the Benchmarks page always shows the JSON and PNG files that are checked in. Run
this file to print the same Markdown::

    python docs/make_benchmarks.py [RESULTS_DIR]

The benchmark scripts of different issues write JSON of different shapes, so the
renderer is generic and never prints raw JSON: scalar fields (nested dicts of them
flattened to dotted keys) become a two-column table, a list of records (dicts) one
table with a column per key (turned on its side when it has more columns than fit the
page), a dict of records a table with one row or column per record, a list of rows
(lists) a table with numbered columns, any other nested dict a subsection of its own,
the machine and versions their own table; each PNG is shown under the JSON file with
the same stem (or under "Other figures").
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
#: Where the PNGs appear in the built site, relative to the docs root.
IMAGE_PREFIX = "benchmarks/results"
#: Keys that describe where and with what a benchmark ran.
CONTEXT_KEYS = (
    "machine",
    "versions",
    "device",
    "devices",
    "platform",
    "environment",
    "system",
)
MAX_ROWS = 200
#: A list of records with more columns than this (and than rows) is transposed.
MAX_COLUMNS = 10
#: The page's width in characters of table text, and each cell's padding in them.
PAGE_CHARACTERS = 120
CELL_PADDING = 4


def format_value(value) -> str:
    """One table cell: floats to four significant digits, lists inline."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        if len(value) > 8:
            shown = ", ".join(format_value(v) for v in value[:8])
            return f"[{shown}, … ({len(value)} items)]"
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
        )
    return str(value).replace("|", "\\|").replace("\n", " ")


def is_scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def is_scalar_list(value) -> bool:
    return isinstance(value, (list, tuple)) and all(map(is_scalar, value))


def table(header: list[str], rows: list[list]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(format_value(c) for c in row) + " |" for row in rows]
    if len(rows) > MAX_ROWS:
        lines = lines[: MAX_ROWS + 2]
        lines.append(f"\n*… {len(rows) - MAX_ROWS} more rows in the JSON file.*")
    return "\n".join(lines)


def key_value_table(mapping: dict) -> str:
    return table(["key", "value"], [[k, v] for k, v in mapping.items()])


def is_records(value) -> bool:
    """A non-empty list of dicts."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) for v in value)
    )


def is_named_records(value) -> bool:
    """A non-empty dict of dicts."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(v, dict) for v in value.values())
    )


def is_rows(value) -> bool:
    """A list of at least two equally long lists of scalars, too big to show inline
    (more than six cells, or text in a cell)."""
    if not (isinstance(value, list) and len(value) >= 2):
        return False
    if not all(isinstance(v, list) and v and is_scalar_list(v) for v in value):
        return False
    if len({len(v) for v in value}) != 1:
        return False
    cells = [c for row in value for c in row]
    return len(cells) > 6 or any(isinstance(c, str) for c in cells)


def records_table(records: list[dict]) -> str:
    """One column per key, so long as that fits the page (:data:`MAX_COLUMNS`).

    A wider list with fewer records than keys is turned on its side (one row per
    key, one column per record); either way, a table still wider than the page is
    split into several, each repeating the column that names the rows."""
    columns: list[str] = []
    for record in records:
        columns += [k for k in record if k not in columns]
    if len(columns) <= MAX_COLUMNS:
        return table(
            columns, [[record.get(c, "") for c in columns] for record in records]
        )
    if len(records) < len(columns):
        labels = [record.get(columns[0]) for record in records]
        if all(isinstance(v, str) and v for v in labels) and len(set(labels)) == len(
            labels
        ):  # the first column names the records: it becomes the header
            header, fields = [columns[0], *labels], columns[1:]
        else:
            header = ["", *(str(i) for i in range(1, len(records) + 1))]
            fields = columns
        rows = [[f] + [r.get(f, "") for r in records] for f in fields]
    else:
        header = columns
        rows = [[record.get(c, "") for c in columns] for record in records]
    return split_columns(header, rows)


def min_width(cells: list) -> int:
    """A column's narrowest width in characters: its longest unbreakable word."""
    return max(
        len(word) for cell in cells for word in [*format_value(cell).split(), ""]
    )


def split_columns(header: list[str], rows: list[list]) -> str:
    """Tables no wider than the page (:data:`PAGE_CHARACTERS`, at most
    :data:`MAX_COLUMNS` columns), each led by the first column."""
    widths = [
        min_width([name, *(row[i] for row in rows)]) + CELL_PADDING
        for i, name in enumerate(header)
    ]
    groups: list[list[int]] = [[]]
    for i in range(1, len(header)):
        group = groups[-1]
        used = widths[0] + sum(widths[j] for j in group)
        if group and (
            used + widths[i] > PAGE_CHARACTERS or len(group) + 1 >= MAX_COLUMNS
        ):
            groups.append(group := [])
        group.append(i)
    return "\n\n".join(
        table([header[i] for i in [0, *g]], [[row[i] for i in [0, *g]] for row in rows])
        for g in groups
    )


def rows_table(rows: list[list]) -> str:
    """A list of rows without names for its columns: columns numbered from 0, as
    they are indexed in the JSON file."""
    return table([str(i) for i in range(len(rows[0]))], rows)


def named_records_table(named: dict) -> str:
    """A dict of records (e.g. one per method): one column per record when the
    records have more fields than there are records, else one row per record."""
    records = {name: flatten(v) for name, v in named.items()}
    fields: list[str] = []
    for record in records.values():
        fields += [f for f in record if f not in fields]
    if len(fields) > len(records):
        rows = [[f] + [r.get(f, "") for r in records.values()] for f in fields]
        return table(["", *records], rows)
    return records_table([{"name": k, **r} for k, r in records.items()])


def flatten(mapping: dict, prefix: str = "") -> dict:
    """Nested dicts of scalars to one dict with dotted keys."""
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def split(mapping: dict, prefix: str = "") -> tuple[dict, list[tuple[str, object]]]:
    """The entries of ``mapping`` that fit a key/value table (nested dicts of them
    flattened to dotted keys), and those that need a table of their own."""
    simple: dict = {}
    own: list[tuple[str, object]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if is_records(value) or is_named_records(value) or is_rows(value):
            own.append((name, value))
        elif isinstance(value, dict) and value:
            inner_simple, inner_own = split(value, f"{name}.")
            simple.update(inner_simple)
            own += inner_own
        elif isinstance(value, dict):
            simple[name] = "(empty)"
        else:
            simple[name] = value
    return simple, own


def render_value(name: str, value, level: int) -> list[str]:
    """Markdown blocks for one top-level (or nested) field of a results file."""
    heading = "#" * min(level, 6) + f" {name}"
    if is_records(value):
        return [heading, records_table([flatten(v) for v in value])]
    if is_named_records(value):
        return [heading, named_records_table(value)]
    if is_rows(value):
        return [heading, rows_table(value)]
    if isinstance(value, dict):
        return [heading, *render_mapping(value, level)]
    return [heading, key_value_table({name: value})]


def render_mapping(mapping: dict, level: int) -> list[str]:
    """A key/value table of the simple entries, then a subsection for each other."""
    simple, own = split(mapping)
    blocks = [key_value_table(simple)] if simple else []
    for name, value in own:
        blocks += render_value(name, value, level + 1)
    return blocks or ["*(empty)*"]


def render_file(path: Path, images: list[Path]) -> str:
    """One section per JSON file: its fields, its machine and versions, its plots."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"## {path.stem}\n\n*Could not read `{path.name}`: {err}.*"
    blocks = [f"## {path.stem}", f"Source: `benchmarks/results/{path.name}`."]
    if not isinstance(data, dict):
        data = {"results": data}
    description = data.get("description") or data.get("title")
    if isinstance(description, str):
        blocks.append(description)
    scalars = {
        k: v
        for k, v in data.items()
        if (is_scalar(v) or is_scalar_list(v)) and k not in ("description", "title")
    }
    if scalars:
        blocks.append(key_value_table(scalars))
    for key, value in data.items():
        if key in scalars or key in ("description", "title") or key in CONTEXT_KEYS:
            continue
        blocks += render_value(key, value, 3)
    context = {k: data[k] for k in CONTEXT_KEYS if k in data}
    if context:
        blocks.append("### Machine and versions")
        blocks += render_mapping(context, 3)
    for image in images:
        blocks.append(f"![{image.stem}]({IMAGE_PREFIX}/{image.name})")
    return "\n\n".join(blocks)


def owning_stem(image_stem: str, stems: list[str]) -> str | None:
    """The longest JSON stem naming this figure: ``x`` owns ``x.png``, ``x_y.png``."""
    matches = [
        s for s in stems if image_stem == s or image_stem.startswith((s + "_", s + "-"))
    ]
    return max(matches, key=len) if matches else None


def render(results_dir: Path = RESULTS_DIR) -> str:
    """The Markdown for every JSON (and PNG) file in ``results_dir``."""
    results_dir = Path(results_dir)
    jsons = sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []
    pngs = sorted(results_dir.glob("*.png")) if results_dir.is_dir() else []
    if not jsons and not pngs:
        return "*No benchmark results are checked in yet.*"
    owner = {p: owning_stem(p.stem, [j.stem for j in jsons]) for p in pngs}
    sections = [
        render_file(path, [p for p in pngs if owner[p] == path.stem]) for path in jsons
    ]
    others = [p for p in pngs if owner[p] is None]
    if others:
        figures = [f"![{p.stem}]({IMAGE_PREFIX}/{p.name})" for p in others]
        sections.append("## Other figures\n\n" + "\n\n".join(figures))
    return "\n\n".join(sections)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    print(render(Path(argv[0]) if argv else RESULTS_DIR))


if __name__ == "__main__":
    main()
