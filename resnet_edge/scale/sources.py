"""What to score, as a list of absolute image paths: folders, globs, path lists, Parquet or CSV files of paths."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from ..predictor import expand_input

TABLE_SUFFIXES = (".parquet", ".csv")
PATH_COLUMN = "path"


def _read_table(table: Path) -> list[str]:
    """The ``path`` column (or the only column) of a Parquet or CSV file; relative paths are the file's."""
    try:
        if table.suffix == ".parquet":
            import pyarrow.parquet as pq

            data = pq.read_table(table)
            names = data.column_names
            column = PATH_COLUMN if PATH_COLUMN in names else names[0] if len(names) == 1 else None
            values = data.column(column).to_pylist() if column else None
        else:
            with open(table, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
            header = rows[0] if rows else []
            column = header.index(PATH_COLUMN) if PATH_COLUMN in header else 0 if len(header) == 1 else None
            values = None if column is None else [row[column] for row in rows[1:] if len(row) > column]
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{table}: cannot read the list of images ({' '.join(str(exc).split())[:200]})") from exc
    if values is None:
        raise DataError(f"{table}: no '{PATH_COLUMN}' column (a table of images needs one, or a single column)")
    return [str(table.parent / value) for value in values if value]


def image_paths(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """Every image ``source`` names, in a stable order, as absolute paths (workers may run elsewhere).

    A folder is searched recursively and sorted, a glob is expanded, a ``.parquet``/``.csv`` file lists paths
    in its ``path`` column; a path that does not exist is kept, so it is counted as unreadable, not dropped.
    """
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths: list[str] = []
    for item in items:
        path = Path(item)
        if path.suffix.lower() in TABLE_SUFFIXES and path.is_file():
            paths += _read_table(path)
        else:
            paths += [name for name, _ in expand_input(item)]
    if not paths:
        raise DataError(f"no images found in {' '.join(map(str, items))}")
    return [os.path.abspath(p) for p in paths]
