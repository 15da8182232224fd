"""The timeline on disk: written in row groups as rounds are simulated, read back by rounds.

The timeline has a row per client and round for *every* client (K x rounds
rows: 10 million at 100,000 clients x 100 rounds, about 0.9 GB as columns).
With ``simulate(..., timeline_path=...)`` the recorder holds only a chunk of
rounds (about `CHUNK_ROWS` rows) and `TimelineWriter` appends each full chunk
to the Parquet file as one row group (pyarrow's ``ParquetWriter``), so the
memory held for the timeline is a chunk's, whatever the run's length.
`read_timeline` reads the file back whole or only some rounds and columns
(a Parquet filter: row groups of other rounds are skipped), which is what a
Gantt chart of a few rounds needs.

The file is the one `fedsim.system.sim.save_result` writes (same columns,
``drop_reason`` as strings); it is written under a temporary name and renamed
into place when complete, so a crash never leaves a partial timeline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["CHUNK_ROWS", "TimelineWriter", "read_timeline"]

#: Rows per row group (a chunk holds whole rounds: max(1, CHUNK_ROWS // K) of them).
CHUNK_ROWS = 1_000_000


class TimelineWriter:
    """Appends timeline chunks (DataFrames of `TIMELINE_COLUMNS`) to a Parquet
    file as row groups; ``close`` renames the finished file into place.

    Args:
        path: the timeline file to write (replaced on ``close``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self._writer = None
        self.rows = 0
        self.row_groups = 0

    def write(self, chunk: pd.DataFrame | Any) -> None:
        """Append ``chunk`` (a DataFrame or a ``pyarrow.Table``) as one row group."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = chunk if isinstance(chunk, pa.Table) else pa.Table.from_pandas(chunk, preserve_index=False)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # statistics only on "round" (what read_timeline filters on) and a
            # dictionary only for the reason strings: half the encoding time
            self._writer = pq.ParquetWriter(self.partial, table.schema, use_dictionary=["drop_reason"],
                                            write_statistics=["round"])
        self._writer.write_table(table)
        self.rows += len(chunk)
        self.row_groups += 1

    def close(self) -> Path:
        """Finish the file and move it to ``path``; returns ``path``."""
        if self._writer is None:
            raise RuntimeError(f"{self.path}: no timeline chunk was written")
        self._writer.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file (after an error)."""
        if self._writer is not None:
            self._writer.close()
        self.partial.unlink(missing_ok=True)


def read_timeline(path: str | Path, rounds: Sequence[int] | None = None,
                  columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a timeline file, optionally only ``rounds`` (1-based round numbers)
    and ``columns``; row order is the file's (round, then client id).

    Raises:
        FileNotFoundError: no such file.
    """
    filters = None if rounds is None else [("round", "in", [int(r) for r in rounds])]
    return pd.read_parquet(path, columns=None if columns is None else list(columns), filters=filters)
