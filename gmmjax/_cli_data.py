"""The data of the ``gmmjax`` command: CSV and ``.npy`` files, the bundled table.

NumPy reads the numbers (``np.loadtxt``); the ``csv`` module splits the header.
When NumPy refuses a file, the rows are read field by field to name the line and
the column at fault (or, for the few forms only that reader accepts, such as a
quoted number with spaces around its quotes, to read them). Nothing here imports
jax: a data error costs a fraction of a second.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["CLIError", "Data", "describe_column", "load_data", "note"]


class CLIError(Exception):
    """A user-facing error: printed on one line, exit status 2."""


class Data(NamedTuple):
    """A table read by :func:`load_data`.

    Attributes:
        values: ``(n, d)`` float64.
        names: the header's name of each of the ``d`` columns (``None`` without a
            header), for the summary and the plot's axes.
        left_out: the columns of the file that are not in ``values``, each with
            the reason (a row index, a constant feature, text).
    """

    values: np.ndarray
    names: list[str] | None
    left_out: list[str]


def describe_column(position: int, name: str | None) -> str:
    """A column as messages name it: its place in the file (from 1) and name."""
    return f"column {position} ({name!r})" if name else f"column {position}"


def note(message: str) -> None:
    """A line on stderr for the user, prefixed ``gmmjax: ``."""
    print(f"gmmjax: {message}", file=sys.stderr)


class _Table(NamedTuple):
    values: np.ndarray  # (n, m) float64
    names: list[str | None]  # the header's name of each of the m columns
    positions: list[int]  # where each column is in the file, from 0
    header: bool
    left_out: list[str]


def load_data(path: str | None, columns: str | None = None) -> Data:
    """Read ``(n, d)`` data from a CSV or ``.npy`` file; the bundled Old Faithful
    data when ``path`` is ``None``.

    A CSV's delimiter is ``;`` when its first line holds one, else ``,`` when it
    holds one, else whitespace; a first line that is not all numbers is the
    header, unless the second line has no number where it has text (then both
    are rows of a table without a header). ``columns`` picks columns by header
    name or by 0-based position, comma-separated (``"eruptions,waiting"``,
    ``"0,2"``; a name is matched before a position). Without it, every column
    is read, except text columns (no value is a number), a first column
    without a name in the header that holds distinct whole numbers (a row index
    as pandas' ``to_csv()`` writes) and constant columns (their variance is
    zero, so the likelihood would grow without bound): each with a message on
    stderr. A chosen column that is constant is left out too; one that holds
    text is an error.
    """
    if path is None:
        from . import datasets

        table = _whole(datasets.faithful(), "the bundled data", columns)
    else:
        p = Path(path)
        if not p.is_file():
            raise CLIError(f"data file not found: {path}")
        if p.suffix == ".npy":
            table = _whole(_read_npy(p), str(p), columns)
        else:
            table = _read_csv(p, columns)
    x, names, positions = table.values, table.names, table.positions
    left_out = list(table.left_out)
    if columns is None and table.header and not names[0] and positions[0] == 0:
        if _is_row_index(x[:, 0]):
            note(
                f"note: left out column 1: it has no name in the header and holds "
                f"{len(x)} distinct whole numbers, a row index such as pandas' "
                "to_csv() writes"
            )
            left_out.append("column 1 (a row index)")
            x, names, positions = x[:, 1:], names[1:], positions[1:]
    constant = np.all(x == x[0], axis=0)
    for j in np.flatnonzero(constant):
        column = describe_column(positions[j] + 1, names[j])
        note(
            f"warning: {column} is constant (every value is {x[0, j]:g}): left "
            "out, since a feature without spread makes the likelihood unbounded"
        )
        left_out.append(f"{column} (constant)")
    if constant.all():
        raise CLIError(f"{path}: every column is constant, nothing to fit")
    kept = np.flatnonzero(~constant)
    header_names = None
    if table.header:
        header_names = [names[j] or f"column {positions[j] + 1}" for j in kept]
    return Data(x[:, kept], header_names, left_out)


def _is_row_index(column: np.ndarray) -> bool:
    whole = np.all(column == np.round(column))
    return bool(whole and len(np.unique(column)) == len(column))


def _whole(x: np.ndarray, source: str, columns: str | None) -> _Table:
    """A table without a header (``.npy``, the bundled data): columns by position."""
    positions = list(range(x.shape[1]))
    if columns is not None:
        positions = _pick(columns, [None] * x.shape[1], source, header=False)
    return _Table(x[:, positions], [None] * len(positions), positions, False, [])


def _pick(columns: str, names: list[str | None], source: str, *, header: bool):
    """The 0-based positions that ``--columns`` names."""
    picked = []
    width = len(names)
    for token in (t.strip() for t in columns.split(",")):
        if not token:
            raise CLIError(f"--columns {columns!r}: an empty column name")
        if token in names:
            position = names.index(token)
        elif token.lstrip("-").isdigit():
            position = int(token)
            if not 0 <= position < width:
                raise CLIError(
                    f"--columns: position {position} is out of range: {source} has "
                    f"{width} columns (positions 0 to {width - 1})"
                )
        elif not header:
            raise CLIError(
                f"--columns: no column named {token!r}: {source} has no header, "
                f"so pick its columns by position (0 to {width - 1})"
            )
        else:
            known = ", ".join(repr(n) for n in names if n)
            raise CLIError(
                f"--columns: no column named {token!r} in {source}; its columns "
                f"are {known} (or pick by position, 0 to {width - 1})"
            )
        if position in picked:
            raise CLIError(f"--columns {columns!r}: column {token!r} is repeated")
        picked.append(position)
    return picked


def _read_npy(p: Path) -> np.ndarray:
    try:
        x = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise CLIError(f"cannot read {p} as .npy: {err}") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise CLIError(f"{p}: expected a 2-D table of numbers, got shape {x.shape}")
    if x.dtype.kind not in "iuf":
        raise CLIError(f"{p}: expected numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        i, j = bad[0]
        raise CLIError(
            f"{p}: data contain NaN or infinite values: row {i + 1}, column {j + 1} "
            f"(counting from 1) is {x[i, j]}"
        )
    return x


# a CSV's delimiter, from its first line, as messages name it
_DELIMITERS = {";": "';'", ",": "','", None: "whitespace"}


def _split(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        fields = line.split()
    else:
        fields = next(csv.reader([line], delimiter=delimiter))
    return [v.strip().strip('"').strip() for v in fields]


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _looks_numeric(field: str) -> bool:
    """A number, an empty field or a number with a decimal comma: a value of a
    numeric column, if not a well-formed one."""
    return not field or _is_number(field) or _is_number(field.replace(",", "."))


def _read_csv(p: Path, columns: str | None) -> _Table:
    """The numeric columns of a CSV file; errors name the line and the column."""
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as err:
        raise CLIError(f"cannot read {p}: {err}") from None
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not lines:
        raise CLIError(f"{p}: the file is empty")
    delimiter = next((c for c in ";," if c in lines[0][1]), None)
    first = lines[0][0]
    top = _split(lines[0][1], delimiter)
    below = _split(lines[1][1], delimiter) if len(lines) > 1 else None
    # a header has text where the first row has numbers; a first line with text
    # only where the next has text too is a row of a table with text columns
    header = not all(map(_is_number, top)) and (
        below is None
        or any(
            _looks_numeric(b) and not _looks_numeric(a)
            for a, b in zip(top, below, strict=False)  # ragged: the reading says
        )
    )
    if header:
        lines = lines[1:]
    if not lines:
        raise CLIError(f"{p}: no data rows after the header")
    width = len(top) if header else len(_split(lines[0][1], delimiter))
    names = top if header else [None] * width
    wanted = list(range(width))
    if columns is not None:
        wanted = _pick(columns, names, str(p), header=header)
    rows = [line for _, line in lines]
    left_out = []
    text_columns = _text_columns(rows, delimiter, wanted)
    for j in text_columns:
        column = describe_column(j + 1, names[j])
        if columns is not None:
            raise CLIError(f"--columns: {column} of {p} holds text, not numbers")
        note(f"note: left out {column}: it holds text, not numbers")
        left_out.append(f"{column} (text)")
    wanted = [j for j in wanted if j not in text_columns]
    if not wanted:
        raise CLIError(f"{p}: no column holds numbers")
    try:
        x = np.loadtxt(
            rows,
            dtype=np.float64,
            delimiter=delimiter,
            comments=None,
            quotechar='"',
            usecols=None if wanted == list(range(width)) else wanted,
            ndmin=2,
        )
    except ValueError:
        x = _read_rows(p, lines, first, width, delimiter, names, wanted)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        i, j = bad[0]
        raise CLIError(
            f"{p}: data contain NaN or infinite values: line {lines[i][0]}, "
            f"{describe_column(wanted[j] + 1, names[wanted[j]])} is {x[i, j]}"
        )
    return _Table(x, [names[j] for j in wanted], wanted, header, left_out)


def _text_columns(rows: list[str], delimiter, wanted: list[int]) -> list[int]:
    """The wanted columns in which no value looks like a number (the first row
    tells which to look at)."""
    first = _split(rows[0], delimiter)
    suspects = [j for j in wanted if j < len(first) and not _looks_numeric(first[j])]
    if not suspects:
        return []
    try:
        values = np.loadtxt(
            rows,
            dtype=str,
            delimiter=delimiter,
            comments=None,
            quotechar='"',
            usecols=suspects,
            ndmin=2,
        )
    except ValueError:
        return []  # ragged rows: the reading names the line
    return [
        j
        for j, column in zip(suspects, values.T, strict=True)
        if not any(_looks_numeric(v.strip().strip('"').strip()) for v in set(column))
    ]


def _read_rows(p, lines, first, width, delimiter, names, wanted) -> np.ndarray:
    """The wanted columns read field by field, after NumPy refused the file:
    names the first line and column at fault, or reads what only this reader
    accepts."""
    separated = f"fields separated by {_DELIMITERS[delimiter]}"
    rows = []
    for number, line in lines:
        row = _split(line, delimiter)
        if len(row) != width:
            raise CLIError(
                f"{p}: rows have different numbers of columns: line {number} has "
                f"{len(row)}, line {first} has {width} ({separated})"
            )
        for j in wanted:
            if not _is_number(row[j]):
                if row[j]:
                    hint = "; write decimals with a point" if "," in row[j] else ""
                    problem = f"is {row[j]!r} ({separated}{hint})"
                else:
                    problem = "is empty"
                raise CLIError(
                    f"{p}: line {number} is not a row of numbers: "
                    f"{describe_column(j + 1, names[j])} {problem}"
                )
        rows.append([float(row[j]) for j in wanted])
    return np.array(rows, dtype=np.float64)
