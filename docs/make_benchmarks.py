"""Render the benchmark results in ``benchmarks/results/`` as Markdown.

The documentation build calls :func:`render` (through ``docs/hooks.py``) every time,
so the Benchmarks page always shows the JSON and PNG files that are checked in. Run
this file to print the same Markdown::

    python docs/make_benchmarks.py [RESULTS_DIR]

The benchmark scripts of different issues write JSON of different shapes, so the
renderer is generic: scalar fields become a two-column table, a list of records (dicts)
becomes one table with a column per key, a dict of records becomes a table with one
row per key, the machine and versions become their own table, and each PNG is shown
under the JSON file with the same stem (or under "Other figures").
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
        return ", ".join(f"{k}: {format_value(v)}" for k, v in value.items())
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


def records_table(records: list[dict]) -> str:
    columns: list[str] = []
    for record in records:
        columns += [k for k in record if k not in columns]
    rows = [[record.get(c, "") for c in columns] for record in records]
    return table(columns, rows)


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


def render_value(name: str, value, level: int) -> list[str]:
    """Markdown blocks for one top-level (or nested) field of a results file."""
    heading = "#" * level + f" {name}"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [heading, records_table([flatten(v) for v in value])]
    if (
        isinstance(value, dict)
        and value
        and all(isinstance(v, dict) for v in value.values())
    ):
        return [heading, named_records_table(value)]
    if isinstance(value, dict):
        flat = flatten(value)
        if all(is_scalar(v) or isinstance(v, (list, tuple)) for v in flat.values()):
            return [heading, key_value_table(flat)]
    text = json.dumps(value, indent=1)
    if len(text) > 2000:
        text = text[:2000] + "\n…"
    return [heading, "```json\n" + text + "\n```"]


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
        blocks.append(key_value_table(flatten(context)))
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
