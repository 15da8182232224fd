"""An external partition: which samples each client holds, read from a file.

Natural partitions (FEMNIST's writers, a hospital per client; Caldas et al.
2018, "LEAF: A Benchmark for Federated Settings") come as a mapping client ->
sample indices. fedsim reads two forms (``data.partition: {scheme: external,
file: ...}``):

* JSON, ``{"0": [12, 40, ...], "1": [...], ...}``: an object whose keys are the
  client ids and whose values are lists of sample indices;
* CSV with the header ``client_id,index``, one row per (client, sample).

Indices point into the *labeled pool*: the training set after the server's
unlabeled pool (``data.unlabeled``) is split off, in the order of
`fedsim.data.splits.Splits.labeled_idx` (with ``unlabeled: 0``, the training
set itself). Checks (`read_partition`): client ids are exactly 0..K-1, no
client is empty, every index is an integer in range of the labeled pool, and
no index is held by two clients unless ``allow_overlap`` (a repeat within one
client is always an error). Every failure is an `InputError` naming the file
and the client (for a CSV, the row and column too). K, the number of clients,
comes from the file.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from fedsim.errors import InputError, quote

#: The largest partition file read (bytes): FEMNIST's 800k samples fit in far less.
MAX_PARTITION_BYTES = 256 << 20
CSV_COLUMNS = ("client_id", "index")


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_PARTITION_BYTES:
            raise InputError(f"{path}: {size:,} bytes, more than the {MAX_PARTITION_BYTES:,} a "
                             "partition file may have")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (data.partition.file)") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None


def _client_id(path: Path, text: object, where: str) -> int:
    """A client id: a non-negative integer written in decimal digits."""
    if isinstance(text, str) and text.strip().isdigit():
        return int(text.strip())
    raise InputError(f"{path}: {where}: client id {quote(text)} is not a non-negative integer")


def _index(path: Path, value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise InputError(f"{path}: {where}: index {quote(value)} is not an integer")
    return value


def _parse_json(path: Path, text: str) -> dict[int, list[int]]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a JSON object {{\"0\": [indices], ...}}, got {type(raw).__name__}")
    clients: dict[int, list[int]] = {}
    for key, values in raw.items():
        client = _client_id(path, key, f"key {quote(key)}")
        if client in clients:
            raise InputError(f"{path}: client {client} appears twice (key {quote(key)})")
        if not isinstance(values, list):
            raise InputError(f"{path}: client {client}: expected a list of sample indices, "
                             f"got {type(values).__name__}")
        clients[client] = [_index(path, v, f"client {client}") for v in values]
    return clients


def _parse_csv(path: Path, text: str) -> dict[int, list[int]]:
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None or tuple(h.strip() for h in header) != CSV_COLUMNS:
        raise InputError(f"{path}: row 1: header {quote(header)}; expected {','.join(CSV_COLUMNS)}")
    clients: dict[int, list[int]] = {}
    for row_num, row in enumerate(rows, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise InputError(f"{path}: row {row_num}: {len(row)} fields {quote(row)}; expected "
                             f"{','.join(CSV_COLUMNS)}")
        client = _client_id(path, row[0], f"row {row_num}, column client_id")
        index = _index(path, row[1], f"row {row_num}, column index (client {client})")
        clients.setdefault(client, []).append(index)
    return clients


def read_partition(path: str | Path, labeled_size: int, *, allow_overlap: bool = False
                   ) -> list[np.ndarray]:
    """The clients' sample indices from ``path`` (``.json`` or ``.csv``).

    Args:
        path: the partition file.
        labeled_size: samples in the labeled pool; indices must be in
            ``0..labeled_size-1``.
        allow_overlap: let two clients hold the same sample.

    Returns:
        Per client 0..K-1, sorted int64 indices into the labeled pool (the
        form `fedsim.data.make_partition` returns).

    Raises:
        InputError: unreadable, not JSON/CSV, client ids not 0..K-1, an empty
            client, an index out of range or repeated, or (without
            ``allow_overlap``) held by two clients; the message names the
            file and the client.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise InputError(f"{path}: a partition file is .json or .csv, got {quote(path.suffix or 'no suffix')}")
    text = _read_text(path)
    clients = _parse_json(path, text) if suffix == ".json" else _parse_csv(path, text)
    if not clients:
        raise InputError(f"{path}: holds no clients")
    k = len(clients)
    missing = sorted(set(range(k)) - set(clients))
    if missing:
        extra = sorted(set(clients) - set(range(k)))
        raise InputError(f"{path}: client ids must be 0..{k - 1} ({k} clients); client {missing[0]} "
                         f"is missing and client {extra[0]} is out of that range")
    parts: list[np.ndarray] = []
    owner = np.full(labeled_size, -1, dtype=np.int64)
    for client in range(k):
        idx = np.asarray(clients[client], dtype=np.int64)
        if idx.size == 0:
            raise InputError(f"{path}: client {client} holds no samples")
        outside = idx[(idx < 0) | (idx >= labeled_size)]
        if outside.size:
            raise InputError(f"{path}: client {client}: index {int(outside[0])} is outside the labeled "
                             f"pool 0..{labeled_size - 1} (training samples minus data.unlabeled)")
        idx = np.sort(idx)
        repeats = idx[1:][idx[1:] == idx[:-1]]
        if repeats.size:
            raise InputError(f"{path}: client {client}: index {int(repeats[0])} is listed twice")
        if not allow_overlap:
            taken = owner[idx] >= 0
            if taken.any():
                first = int(idx[taken][0])
                raise InputError(f"{path}: client {client}: index {first} is also held by client "
                                 f"{int(owner[first])}; clients must be disjoint (or set "
                                 "data.partition.allow_overlap: true)")
            owner[idx] = client
        parts.append(idx)
    return parts


__all__ = ["CSV_COLUMNS", "MAX_PARTITION_BYTES", "read_partition"]
