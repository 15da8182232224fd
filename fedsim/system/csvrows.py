"""The rows of a per-client CSV file (client traces, sessions, device speeds,
bandwidth series): one home for skipping blank lines and checking each row's
width, so every reader reports a malformed row the same way."""

from __future__ import annotations

import csv
from collections.abc import Iterator

from fedsim.errors import InputError

__all__ = ["data_rows"]


def data_rows(reader: csv.Reader, width: int, where: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each non-blank row after the header.

    Raises:
        InputError: a row with another number of cells than ``width``
            (``"{where} line N: K cells, expected W"``).
    """
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        if len(row) != width:
            raise InputError(f"{where} line {line}: {len(row)} cells, expected {width}")
        yield line, row
