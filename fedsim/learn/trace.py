"""What a federated training run produces: a `TrainingTrace`.

Per round: ``round_num`` (1-based), test ``accuracy`` in [0, 1], mean test
cross-entropy ``loss`` (nats) of the global model after that round's
aggregation, and the number of ``participants``. Per client and round:
``round_num``, ``client_id``, ``samples`` (the client's data size, its FedAvg
weight) and ``local_steps`` (SGD steps it took).

A trace is saved as one ``.npz`` file (columns as arrays, plus a JSON ``meta``
string), written atomically through `fedsim.store.atomic_write`. Where it is
stored is the pipeline's business.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedsim.learn.model import Params
from fedsim.store import atomic_write

ROUND_COLUMNS: tuple[str, ...] = ("round_num", "accuracy", "loss", "participants")
CLIENT_COLUMNS: tuple[str, ...] = ("round_num", "client_id", "samples", "local_steps")


@dataclass(frozen=True)
class RoundRecord:
    """One round of a trace (what ``on_round`` callbacks and ``stop`` predicates see).

    Attributes:
        round_num: 1-based round number.
        accuracy: test accuracy of the global model after the round, in [0, 1].
        loss: mean test cross-entropy (nats) of that model.
        participants: clients aggregated in the round.
        client_ids, samples, local_steps: per participant, in ascending client id.
    """

    round_num: int
    accuracy: float
    loss: float
    participants: int
    client_ids: np.ndarray = field(repr=False)
    samples: np.ndarray = field(repr=False)
    local_steps: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class TrainState:
    """The state of a run after round ``round_num``: all a resume needs, since
    every random stream of later rounds is keyed by (seed, round, client).

    ``round_num`` 0 with the initial parameters is the start of a fresh run.
    ``method_state``: the compression's and server optimiser's state after
    that round (`fedsim.learn.aggregation.MethodState`; None: empty).
    """

    round_num: int
    params: Params
    method_state: Any = None

    def __post_init__(self) -> None:
        if self.round_num < 0:
            raise ValueError(f"round_num {self.round_num} must be >= 0")


@dataclass(frozen=True)
class TrainingTrace:
    """Per-round and per-client-round results of a training run.

    Attributes:
        rounds: DataFrame with `ROUND_COLUMNS`, one row per round, ascending.
        client_rounds: DataFrame with `CLIENT_COLUMNS`, one row per participant
            and round.
        meta: JSON-able facts about the run (device, seed, ...).
    """

    rounds: pd.DataFrame
    client_rounds: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Sequence[RoundRecord], meta: dict[str, Any] | None = None) -> TrainingTrace:
        """Build a trace from round records (in round order)."""
        rounds = pd.DataFrame(
            {
                "round_num": np.array([r.round_num for r in records], dtype=np.int64),
                "accuracy": np.array([r.accuracy for r in records], dtype=np.float64),
                "loss": np.array([r.loss for r in records], dtype=np.float64),
                "participants": np.array([r.participants for r in records], dtype=np.int64),
            }
        )

        def column(name: str) -> np.ndarray:
            parts = [np.asarray(getattr(r, name), dtype=np.int64) for r in records]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

        client_rounds = pd.DataFrame(
            {
                "round_num": np.concatenate(
                    [np.full(r.participants, r.round_num, dtype=np.int64) for r in records]
                )
                if records
                else np.zeros(0, dtype=np.int64),
                "client_id": column("client_ids"),
                "samples": column("samples"),
                "local_steps": column("local_steps"),
            }
        )
        return cls(rounds, client_rounds, dict(meta or {}))

    @property
    def num_rounds(self) -> int:
        return len(self.rounds)

    @property
    def accuracy(self) -> np.ndarray:
        return self.rounds["accuracy"].to_numpy()

    def concat(self, later: TrainingTrace) -> TrainingTrace:
        """This trace followed by ``later`` (e.g. the part after a resume).

        Raises:
            ValueError: ``later`` does not start right after this trace ends.
        """
        if self.num_rounds and later.num_rounds:
            last = int(self.rounds["round_num"].iloc[-1])
            first = int(later.rounds["round_num"].iloc[0])
            if first != last + 1:
                raise ValueError(f"cannot append a trace starting at round {first} to one ending at {last}")
        meta = {**self.meta, **later.meta}
        segments = _merged(self.segments() + later.segments())
        meta.pop("segments", None)
        if len(segments) > 1:
            meta["segments"] = segments
        return TrainingTrace(
            pd.concat([self.rounds, later.rounds], ignore_index=True),
            pd.concat([self.client_rounds, later.client_rounds], ignore_index=True),
            meta,
        )

    def segments(self) -> list[dict[str, Any]]:
        """Which device computed which rounds, in order: ``[{"first": 1,
        "last": 1050, "device": "cuda:0", "device_name": "NVIDIA H200"}, ...]``.
        One segment unless the run was continued on another device
        (``fedsim scenario --continue-from``)."""
        if not self.num_rounds:
            return []
        first, last = int(self.rounds["round_num"].iloc[0]), int(self.rounds["round_num"].iloc[-1])
        stored = self.meta.get("segments") or [{
            "first": first, "last": last, "device": self.meta.get("device"),
            "device_name": self.meta.get("device_name", "unrecorded")}]
        out = []
        for seg in stored:  # clipped to the rounds this trace holds (it may be a head)
            lo, hi = max(int(seg["first"]), first), min(int(seg["last"]), last)
            if lo <= hi:
                out.append({**seg, "first": lo, "last": hi})
        return out

    def computed_on(self) -> str:
        """``"NVIDIA H200"``, or ``"NVIDIA H200 (rounds 1-1050), cpu (x86_64, 1
        threads) (rounds 1051-1735)"`` for a run continued on another device."""
        segments = self.segments()
        if not segments:
            return self.meta.get("device_name", "unrecorded")
        if len(segments) == 1:
            return segments[0]["device_name"]
        return ", ".join(f"{s['device_name']} (rounds {s['first']}-{s['last']})" for s in segments)

    def equals(self, other: TrainingTrace) -> bool:
        """Same rounds and client rounds, value for value (meta ignored)."""
        return self.rounds.equals(other.rounds) and self.client_rounds.equals(other.client_rounds)

    def save(self, path: str | os.PathLike) -> None:
        """Write the trace to ``path`` (compressed ``.npz``) atomically. The
        client rounds of 3000 rounds x 100 clients are 9.6 MB raw, ~0.1 MB
        compressed."""
        arrays = {f"rounds/{c}": self.rounds[c].to_numpy() for c in ROUND_COLUMNS}
        arrays.update({f"client_rounds/{c}": self.client_rounds[c].to_numpy() for c in CLIENT_COLUMNS})
        arrays["meta"] = np.array(json.dumps(self.meta, sort_keys=True, default=str))
        with atomic_write(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainingTrace:
        """Read a trace written by `save`.

        Raises:
            ValueError: the file lacks a column.
        """
        with np.load(path, allow_pickle=False) as data:
            try:
                rounds = pd.DataFrame({c: data[f"rounds/{c}"] for c in ROUND_COLUMNS})
                client_rounds = pd.DataFrame({c: data[f"client_rounds/{c}"] for c in CLIENT_COLUMNS})
                meta = json.loads(str(data["meta"]))
            except KeyError as err:
                raise ValueError(f"{path}: not a training trace (missing {err})") from err
        return cls(rounds, client_rounds, meta)


def _merged(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent segments on the same device joined into one."""
    out: list[dict[str, Any]] = []
    for seg in segments:
        if out and out[-1]["device_name"] == seg["device_name"] and out[-1]["last"] + 1 == seg["first"]:
            out[-1] = {**out[-1], "last": seg["last"]}
        else:
            out.append(dict(seg))
    return out
