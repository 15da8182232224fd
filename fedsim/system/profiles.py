"""Per-client device and network profiles, drawn from the scenario or read from a trace.

Client ``k`` always gets element ``k``: of the array drawn for an attribute
from the stream ``seeding.rng(seed, "profile", <attribute>)`` (one stream per
attribute, so changing how uplinks are drawn never changes the downlinks), or
of the trace file's row whose ``client_id`` is ``k``.

Trace files (``system.clients.trace``) are CSV with a header row naming the
columns ``client_id, downlink, uplink, rtt, speed, availability`` in any order,
then exactly one row per client (ids 0..K-1, each once, any order). Cells carry
their units as strings, e.g. ``7,20 Mbps,5 Mbps,50 ms,1.2,0.9``; bare numbers
are read in the implied SI unit (bits/s, seconds). Blank lines are ignored.
Every problem raises ``fedsim.errors.InputError`` naming the file and line.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic_core import PydanticCustomError

from fedsim import seeding
from fedsim.errors import InputError
from fedsim.system.csvrows import data_rows
from fedsim.system.spec import CLIENT_DOMAINS, ClientsSpec, Constant, LogNormal, Normal, Uniform

__all__ = ["TRACE_COLUMNS", "ClientProfiles", "draw_profiles", "read_trace", "sample_attribute"]

TRACE_COLUMNS = ("client_id", *CLIENT_DOMAINS)


@dataclass(frozen=True)
class ClientProfiles:
    """One value per client (index = client id) of every attribute.

    Attributes:
        downlink_bps: the client's own download rate cap (bits/s, may be inf).
        uplink_bps: its upload rate cap (bits/s, may be inf).
        rtt_s: round-trip time to the server (s); each message takes rtt/2.
        speed: compute speed factor (reference device = 1).
        availability: probability of being available in a round, in [0, 1].
        s_per_sample: with a device trace (`fedsim.system.devices`), seconds per
            training sample pass of the reference model on each device, which
            then decides compute time (``speed`` only describes it); else None.
    """

    downlink_bps: np.ndarray
    uplink_bps: np.ndarray
    rtt_s: np.ndarray
    speed: np.ndarray
    availability: np.ndarray
    s_per_sample: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.downlink_bps.size)

    def to_frame(self) -> pd.DataFrame:
        """One row per client: client_id and the five attributes (SI units),
        and s_per_sample where a device trace gave it."""
        device = {} if self.s_per_sample is None else {"s_per_sample": self.s_per_sample}
        return pd.DataFrame(
            {
                "client_id": np.arange(len(self), dtype=np.int64),
                "downlink_bps": self.downlink_bps,
                "uplink_bps": self.uplink_bps,
                "rtt_s": self.rtt_s,
                "speed": self.speed,
                "availability": self.availability,
                **device,
            }
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> ClientProfiles:
        """Inverse of ``to_frame`` (rows sorted by client_id)."""
        frame = frame.sort_values("client_id")
        device = frame["s_per_sample"].to_numpy(dtype=float) if "s_per_sample" in frame else None
        return cls(
            **{name: frame[name].to_numpy(dtype=float) for name in
               ("downlink_bps", "uplink_bps", "rtt_s", "speed", "availability")},
            s_per_sample=device,
        )


def sample_attribute(
    dist: Constant | Uniform | Normal | LogNormal, name: str, n_clients: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_clients`` draws of attribute ``name`` from ``dist``, clipped to the
    attribute's domain where it is closed (rtt >= 0, availability in [0, 1])
    and to the distribution's own ``min``/``max``.

    Constants draw nothing from ``rng``.
    """
    domain = CLIENT_DOMAINS[name]
    if isinstance(dist, Constant):
        return np.full(n_clients, dist.value)
    if isinstance(dist, Uniform):
        return rng.uniform(dist.low, dist.high, n_clients)
    if isinstance(dist, Normal):
        values = rng.normal(dist.mean, dist.std, n_clients)
    else:
        values = dist.median * np.exp(dist.sigma * rng.standard_normal(n_clients))
    low = dist.min if dist.min is not None else (domain.low if domain.low_closed else -math.inf)
    high = dist.max if dist.max is not None else (domain.high if domain.high_closed else math.inf)
    return np.clip(values, low, high)


def draw_profiles(
    clients: ClientsSpec, n_clients: int, seed: int, base_dir: Path | None = None
) -> ClientProfiles:
    """The profiles of ``n_clients`` clients: from the trace file if the
    scenario names one (relative paths resolve against ``base_dir``, default
    the working directory), otherwise drawn from the attributes' distributions.

    Raises:
        InputError: the trace file is missing or malformed (file and line named).
        ValueError: ``n_clients < 1``.
    """
    if n_clients < 1:
        raise ValueError(f"need at least one client, got {n_clients}")
    if clients.trace is not None:
        path = Path(clients.trace)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        return read_trace(path, n_clients)
    drawn = {
        name: sample_attribute(clients.attribute(name), name, n_clients, seeding.rng(seed, "profile", name))
        for name in CLIENT_DOMAINS
    }
    return ClientProfiles(
        downlink_bps=drawn["downlink"],
        uplink_bps=drawn["uplink"],
        rtt_s=drawn["rtt"],
        speed=drawn["speed"],
        availability=drawn["availability"],
    )


def read_trace(path: Path, n_clients: int) -> ClientProfiles:
    """Read a per-client trace CSV (module docstring) for ``n_clients`` clients.

    Raises:
        InputError: missing file, missing or unknown column, a row with the
            wrong number of cells, a bad or out-of-range value, a duplicate or
            out-of-range client_id, or a row count other than ``n_clients``;
            the message names the file and the line.
    """
    where = f"system.clients.trace {str(path)!r}"
    try:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise InputError(f"{where}: cannot read the file ({exc.strerror})") from None
    with handle:
        reader = csv.reader(handle)
        header: list[str] | None = None
        for header_row in reader:
            if any(cell.strip() for cell in header_row):
                header = [cell.strip() for cell in header_row]
                break
        if header is None:
            raise InputError(f"{where}: the file is empty; expected a header row with {', '.join(TRACE_COLUMNS)}")
        header_line = reader.line_num
        unknown = [name for name in header if name not in TRACE_COLUMNS]
        missing = [name for name in TRACE_COLUMNS if name not in header]
        if unknown or missing or len(set(header)) != len(header):
            problems = []
            if missing:
                problems.append(f"missing column(s) {', '.join(missing)}")
            if unknown:
                problems.append(f"unknown column(s) {', '.join(repr(u) for u in unknown)}")
            if len(set(header)) != len(header):
                problems.append("a repeated column")
            raise InputError(
                f"{where} line {header_line}: {'; '.join(problems)}; "
                f"expected the columns {', '.join(TRACE_COLUMNS)}"
            )
        columns = {name: header.index(name) for name in TRACE_COLUMNS}
        values = {name: np.full(n_clients, np.nan) for name in CLIENT_DOMAINS}
        seen_on: dict[int, int] = {}
        rows = 0
        for line, row in data_rows(reader, len(header), where):
            rows += 1
            raw_id = row[columns["client_id"]].strip()
            try:
                client_id = int(raw_id)
            except ValueError:
                raise InputError(f"{where} line {line}: client_id {raw_id!r} is not an integer") from None
            if not 0 <= client_id < n_clients:
                raise InputError(
                    f"{where} line {line}: client_id {client_id} is outside 0..{n_clients - 1} "
                    f"(the scenario has {n_clients} clients)"
                )
            if client_id in seen_on:
                raise InputError(
                    f"{where} line {line}: client_id {client_id} repeats line {seen_on[client_id]}"
                )
            seen_on[client_id] = line
            for name, domain in CLIENT_DOMAINS.items():
                cell = row[columns[name]].strip()
                try:
                    values[name][client_id] = domain.check(cell, domain.parse(cell, ""), "")
                except PydanticCustomError as exc:
                    raise InputError(f"{where} line {line}, column {name}: {exc.message()}") from None
        if rows != n_clients:
            raise InputError(
                f"{where}: {rows} client rows (lines {header_line + 1}..{reader.line_num}), "
                f"but the scenario has {n_clients} clients; expected one row per client"
            )
    return ClientProfiles(
        downlink_bps=values["downlink"],
        uplink_bps=values["uplink"],
        rtt_s=values["rtt"],
        speed=values["speed"],
        availability=values["availability"],
    )
