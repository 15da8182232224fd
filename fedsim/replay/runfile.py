"""Reading the CSV of a run trained elsewhere (`fedsim replay`), checked cell by cell.

Three layouts of one long format (docs/replay.md), told apart by their columns:

* **per round** (one row per round): ``round, accuracy`` and optionally
  ``loss``, ``participants`` (the client ids aggregated in that round,
  separated by spaces or ``;``) and ``down_bytes, up_bytes`` (the bytes of one
  client's download and of one client's upload in that round);
* **per client** (one row per round and participant; it has a ``client_id``
  column): ``round, client_id, accuracy`` and optionally ``loss``,
  ``down_bytes, up_bytes``; the participants of a round are its rows, and
  ``accuracy``/``loss`` repeat the round's value on each of them;
* **a fedsim rounds.csv** (it has ``round_bytes`` and ``cum_bytes``): the rows
  of one method (a ``method`` column selects them); its ``participants`` is a
  count, not ids, and is ignored with the other system columns, which the
  replay recomputes on the scenario's network.

A ``method`` column, in any layout, holds runs of several methods: one is
chosen by name. Other columns are ignored. Rounds are 1, 2, ..., R, each
once, ascending (a per-client file: each round's rows together).

Errors name the file, the line (the header is line 1) and the column, with
the value: ``run.csv: line 4, column 'accuracy': 1.7 is not in [0, 1]``.
Reads no torch (the CLI checks a run file before any stage runs).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim.errors import InputError, quote

__all__ = ["RunFile", "read_run"]

REQUIRED = ("round", "accuracy")
BYTE_COLUMNS = ("down_bytes", "up_bytes")
_FEDSIM_ROUNDS = ("round_bytes", "cum_bytes")
_SEPARATOR = re.compile(r"[;\s]+")


@dataclass(frozen=True)
class RunFile:
    """A run read from its CSV.

    Attributes:
        path: the file.
        method: the ``method`` value its rows had, or None without that column.
        accuracy: test accuracy after each round 1..R, in [0, 1].
        loss: test loss per round (NaN where not given).
        participants: per round, the sorted client ids aggregated, or None
            (the scenario's own selection decides).
        down_bytes, up_bytes: one client's download / upload per round in
            bytes, or None (the scenario's payload).
    """

    path: Path
    method: str | None
    accuracy: np.ndarray
    loss: np.ndarray
    participants: list[np.ndarray] | None
    down_bytes: np.ndarray | None
    up_bytes: np.ndarray | None

    @property
    def num_rounds(self) -> int:
        return len(self.accuracy)


def _fail(path: Path, line: int | None, column: str | None, message: str) -> InputError:
    where = "".join([f": line {line}" if line is not None else "",
                     f", column {column!r}" if column is not None and line is not None
                     else (f": column {column!r}" if column is not None else "")])
    return InputError(f"{path}{where}: {message}")


def _numbers(frame: pd.DataFrame, path: Path, column: str, *, integer: bool,
             low: float | None = None, high: float | None = None,
             optional: bool = False) -> np.ndarray:
    """The column as floats, every cell a finite number (an integer where
    ``integer``) in [low, high]; else an InputError naming the first bad cell.
    ``optional``: an empty cell is NaN."""
    out = np.empty(len(frame))
    for i, cell in enumerate(frame[column].tolist()):
        line = int(frame.index[i]) + 2
        text = "" if cell is None else str(cell).strip()
        if optional and not text:
            out[i] = np.nan
            continue
        try:
            value = float(text)
        except ValueError:
            raise _fail(path, line, column, f"{quote(text)} is not a number"
                        if text else "empty cell (a number is required)") from None
        if math.isnan(value) or math.isinf(value):
            raise _fail(path, line, column, f"{quote(text)} is not a finite number")
        if integer and value != int(value):
            raise _fail(path, line, column, f"{quote(text)} is not an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            hint = " (accuracy is a fraction: 0.97, not 97)" if column == "accuracy" and value > 1 else ""
            bounds = f"[{low:g}, {high:g}]" if high is not None else f">= {low:g}"
            raise _fail(path, line, column, f"{quote(text)} is not in {bounds}{hint}"
                        if high is not None else f"{quote(text)} must be {bounds}")
        out[i] = value
    return out


def _client_ids(frame: pd.DataFrame, path: Path, num_clients: int) -> list[np.ndarray]:
    """The ``participants`` cells as sorted id arrays, each id an integer in
    [0, num_clients), none repeated within a round."""
    out = []
    for i, cell in enumerate(frame["participants"].tolist()):
        line = int(frame.index[i]) + 2
        text = "" if cell is None or (isinstance(cell, float) and math.isnan(cell)) else str(cell).strip()
        tokens = [t for t in _SEPARATOR.split(text) if t]
        if not tokens:
            raise _fail(path, line, "participants", "empty cell (client ids separated by spaces or ';')")
        ids = []
        for token in tokens:
            if not re.fullmatch(r"\+?\d+", token):
                raise _fail(path, line, "participants", f"{quote(token)} is not a client id "
                            "(a non-negative integer)")
            ids.append(_known(path, line, "participants", int(token), num_clients))
        if len(set(ids)) != len(ids):
            repeated = next(c for c in ids if ids.count(c) > 1)
            raise _fail(path, line, "participants", f"client {repeated} is listed twice")
        out.append(np.array(sorted(ids), dtype=np.int64))
    return out


def _known(path: Path, line: int, column: str, client: int, num_clients: int) -> int:
    if not 0 <= client < num_clients:
        raise _fail(path, line, column, f"unknown client id {client}: the scenario has "
                    f"{num_clients} clients, ids 0..{num_clients - 1}")
    return client


def _check_rounds(rounds: np.ndarray, lines: np.ndarray, path: Path) -> None:
    """Rounds 1, 2, ..., R ascending, each once (per-round rows)."""
    for i, value in enumerate(rounds.astype(int)):
        expected = i + 1
        if value == expected:
            continue
        earlier = np.flatnonzero(rounds[:i] == value)
        if earlier.size:  # rounds 1..i came first, so a smaller one is a repeat
            message = (f"round {value} repeated (first on line {int(lines[earlier[0]])}; "
                       "rounds ascend, each once, a round's rows together)")
        else:
            message = f"round {value} where round {expected} was expected (rounds are 1, 2, ... without gaps)"
        raise _fail(path, int(lines[i]), "round", message)


def _select_method(frame: pd.DataFrame, path: Path, method: str | None) -> tuple[pd.DataFrame, str | None]:
    if "method" not in frame.columns:
        return frame, None
    names = list(dict.fromkeys(str(m) for m in frame["method"].tolist()))
    if method is None:
        if len(names) != 1:
            raise _fail(path, None, "method", f"holds several methods ({', '.join(names)}); "
                        "choose one with --method")
        method = names[0]
    if method not in names:
        raise _fail(path, None, "method", f"no rows of method {quote(method)}; it holds "
                    f"{', '.join(names) or 'none'}")
    return frame[frame["method"].astype(str) == method], method


def _per_round(values: np.ndarray, starts: np.ndarray, frame: pd.DataFrame, path: Path,
               column: str) -> np.ndarray:
    """One value per round of a per-client file: the rows of a round must agree."""
    ends = np.append(starts[1:], len(values))
    for lo, hi in zip(starts, ends, strict=True):
        same = values[lo:hi]
        bad = np.flatnonzero(~((same == same[0]) | (np.isnan(same) & np.isnan(same[0]))))
        if bad.size:
            row = lo + int(bad[0])
            why = ("fedsim sends one message size per direction and round" if column in BYTE_COLUMNS
                   else "a round has one global model")
            raise _fail(path, int(frame.index[row]) + 2, column,
                        f"{same[bad[0]]:g} differs from {same[0]:g} on line "
                        f"{int(frame.index[lo]) + 2} of the same round ({why})")
    return values[starts]


def read_run(path: str | Path, num_clients: int, method: str | None = None) -> RunFile:
    """Read and check a run file (module docstring).

    Args:
        path: the CSV.
        num_clients: the scenario's clients (ids must be in [0, num_clients)).
        method: which rows of a file with a ``method`` column (required when
            it holds more than one).

    Raises:
        InputError: an unreadable file, a missing column, a non-numeric or
            out-of-range cell, rounds out of order, repeated or missing, an
            unknown client id; the message names the file, line and column.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such run file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable CSV ({str(exc).strip().splitlines()[0]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise _fail(path, None, missing[0], f"missing; the run file needs the columns "
                    f"{', '.join(REQUIRED)} (it has: {', '.join(frame.columns)})")
    given = [c for c in BYTE_COLUMNS if c in frame.columns]
    if len(given) == 1:
        other = next(c for c in BYTE_COLUMNS if c not in given)
        raise _fail(path, None, other, f"missing: give both {' and '.join(BYTE_COLUMNS)}, or neither")
    frame, chosen = _select_method(frame, path, method)
    if frame.empty:
        raise InputError(f"{path}: no rows (a run needs at least round 1)")
    fedsim_rounds = all(c in frame.columns for c in _FEDSIM_ROUNDS)
    per_client = "client_id" in frame.columns

    rounds = _numbers(frame, path, "round", integer=True, low=1)
    accuracy = _numbers(frame, path, "accuracy", integer=False, low=0.0, high=1.0)
    loss = (_numbers(frame, path, "loss", integer=False, optional=True) if "loss" in frame.columns
            else np.full(len(frame), np.nan))
    sizes = {c: _numbers(frame, path, c, integer=True, low=0) for c in given}
    lines = frame.index.to_numpy() + 2

    participants: list[np.ndarray] | None = None
    if per_client:
        clients = _numbers(frame, path, "client_id", integer=True, low=0).astype(np.int64)
        starts = np.flatnonzero(np.r_[True, rounds[1:] != rounds[:-1]])
        _check_rounds(rounds[starts], lines[starts], path)
        participants = []
        for lo, hi in zip(starts, np.append(starts[1:], len(rounds)), strict=True):
            ids = clients[lo:hi]
            for j, client in enumerate(ids):
                _known(path, int(lines[lo + j]), "client_id", int(client), num_clients)
                if client in ids[:j]:
                    raise _fail(path, int(lines[lo + j]), "client_id",
                                f"client {client} appears twice in round {int(rounds[lo])}")
            participants.append(np.sort(ids))
        accuracy = _per_round(accuracy, starts, frame, path, "accuracy")
        loss = _per_round(loss, starts, frame, path, "loss")
        sizes = {c: _per_round(v, starts, frame, path, c) for c, v in sizes.items()}
    else:
        _check_rounds(rounds, lines, path)
        if "participants" in frame.columns and not fedsim_rounds:
            participants = _client_ids(frame, path, num_clients)

    return RunFile(path, chosen, accuracy, loss, participants,
                   sizes["down_bytes"].astype(np.int64) if sizes else None,
                   sizes["up_bytes"].astype(np.int64) if sizes else None)
