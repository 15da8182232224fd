"""Device speed per client from a trace: seconds per sample, or FLOP/s.

``system.clients.device_trace`` names a CSV with a header row and one row per
client (ids 0..K-1, each once, any order; blank lines ignored), plain numbers:

* ``client_id, s_per_sample`` (or ``ms_per_sample``): seconds (milliseconds)
  one training sample pass -- a forward and backward pass of one sample -- of
  the dense reference model (LeNet-300-100, the workload ``compute.t_comp_full``
  is given for) takes on the client's device;
* ``client_id, flops_per_s``: the FLOP/s the device sustains while training.

It replaces the drawn ``speed``. Client k's compute seconds in every round are

    s_per_sample:  compute_s[k] = samples_k x local_epochs x s_per_sample[k] x work_fraction
    flops_per_s:   compute_s[k] = samples_k x local_epochs x F x work / flops_per_s[k]

where ``work_fraction = work x compute_scale``: ``work`` is the method's share
of the dense model's training work (``compute.work``: P_R, the sparse FLOP
share, or 1), ``compute_scale = F / F_ref`` the model's training FLOPs per
sample F over LeNet-300-100's F_ref = 1,126,800 (`fedsim.learn.counts.
training_flops_per_sample`, the "backward = 2x forward" count of Kaplan et al.
2020, Sec. 2.1). A FLOP/s row is therefore read as
``s_per_sample = F_ref / flops_per_s`` and both cases share the first formula.
``t_comp_full`` and ``reference_samples`` do not enter: the trace times the
device directly. (FedScale's ``client_device_capacity`` gives a device's
inference ms per sample; training costs about 3x that: docs/network-model.md.)

The profile's ``speed`` becomes the device's speed against the reference
device of ``t_comp_full`` (``t_comp_full / (5 x reference_samples)`` seconds
per sample pass): ``speed[k] = reference s_per_sample / s_per_sample[k]``, so
reports that show speed stay meaningful.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.errors import InputError
from fedsim.learn.counts import LENET_FLOPS_PER_SAMPLE
from fedsim.system.csvrows import data_rows
from fedsim.system.payload import REFERENCE_EPOCHS
from fedsim.system.profiles import ClientProfiles
from fedsim.system.spec import SystemConfig

__all__ = ["DEVICE_COLUMNS", "DeviceTrace", "apply_device_trace", "check_device_trace", "device_trace_path",
           "read_device_trace", "trace_compute_s"]

#: Speed columns a device trace may carry (exactly one), and each one's
#: conversion to seconds per sample pass of the reference model.
DEVICE_COLUMNS = {
    "s_per_sample": lambda v: v,
    "ms_per_sample": lambda v: v * 1e-3,
    "flops_per_s": lambda v: LENET_FLOPS_PER_SAMPLE / v,
}


@dataclass(frozen=True)
class DeviceTrace:
    """Per-client device speed read from a trace.

    Attributes:
        s_per_sample: seconds per training sample pass of the dense reference
            model (LeNet-300-100) on client k's device (index = client id).
        column: the speed column the file gave (a key of `DEVICE_COLUMNS`).
    """

    s_per_sample: np.ndarray
    column: str

    def speed(self, t_comp_full_s: float, reference_samples: int) -> np.ndarray:
        """Speed factors against the reference device of ``t_comp_full``
        (module docstring); inf where ``t_comp_full`` is 0 s (every device is
        then slower than the instant reference, and speed means nothing)."""
        reference_s = t_comp_full_s / (REFERENCE_EPOCHS * reference_samples)
        return reference_s / self.s_per_sample if reference_s > 0 else np.full(self.s_per_sample.size, math.inf)


def trace_compute_s(s_per_sample: np.ndarray, client_samples: np.ndarray, local_epochs: int,
                    work_fraction: float) -> np.ndarray:
    """Each client's compute seconds per round:
    ``samples x local_epochs x s_per_sample x work_fraction`` (module docstring).

    Raises:
        ValueError: the sample counts are not one per client of the trace.
    """
    samples = np.asarray(client_samples, dtype=float)
    if samples.shape != s_per_sample.shape:
        raise ValueError(f"{samples.size} sample counts for a device trace of {s_per_sample.size} clients")
    return samples * float(local_epochs) * s_per_sample * float(work_fraction)


def apply_device_trace(profiles: ClientProfiles, system: SystemConfig, base_dir: Path | None) -> ClientProfiles:
    """``profiles`` with the device trace's speeds (``s_per_sample``, and
    ``speed`` against the reference device), or unchanged without one.

    Raises:
        InputError: a bad device trace (`read_device_trace`).
    """
    trace = system.clients.device_trace
    if trace is None:
        return profiles
    device = read_device_trace(device_trace_path(trace, base_dir), len(profiles))
    speed = device.speed(system.compute.t_comp_full, system.compute.reference_samples)
    return dataclasses.replace(profiles, speed=speed, s_per_sample=device.s_per_sample)


def device_trace_path(trace: str, base_dir: Path | None) -> Path:
    """The trace's path, a relative one resolved against ``base_dir`` (the
    scenario's folder)."""
    path = Path(trace)
    return Path(base_dir) / path if not path.is_absolute() and base_dir is not None else path


def read_device_trace(path: Path, n_clients: int) -> DeviceTrace:
    """Read a device trace CSV (module docstring) for ``n_clients`` clients.

    Raises:
        InputError: a missing or empty file; a header without ``client_id`` or
            without exactly one speed column, or with an unknown column; a row
            with the wrong number of cells; a client_id that is not an integer
            in 0..K-1 or repeats; a speed that is not a finite number > 0; a
            client without a row. The message names the file, the line, the
            column and the value.
    """
    where = f"system.clients.device_trace {str(path)!r}"
    try:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise InputError(f"{where}: cannot read the file ({exc.strerror})") from None
    expected = f"client_id and one of {', '.join(DEVICE_COLUMNS)}"
    values = np.full(n_clients, math.nan)
    seen_on: dict[int, int] = {}
    with handle:
        reader = csv.reader(handle)
        header = next(([c.strip() for c in r] for r in reader if any(c.strip() for c in r)), None)
        if header is None:
            raise InputError(f"{where}: the file is empty; expected a header row with {expected}")
        line = reader.line_num
        unknown = [c for c in header if c != "client_id" and c not in DEVICE_COLUMNS]
        speeds = [c for c in header if c in DEVICE_COLUMNS]
        if unknown or "client_id" not in header or len(speeds) != 1 or len(set(header)) != len(header):
            problem = (f"unknown column {unknown[0]!r}" if unknown else "no client_id column"
                       if "client_id" not in header else "a repeated column" if len(set(header)) != len(header)
                       else f"{len(speeds)} speed columns")
            raise InputError(f"{where} line {line}: {problem}; expected {expected}")
        id_col, speed_col = header.index("client_id"), header.index(speeds[0])
        to_seconds = DEVICE_COLUMNS[speeds[0]]
        for line, row in data_rows(reader, len(header), where):
            raw_id = row[id_col].strip()
            try:
                client = int(raw_id)
            except ValueError:
                client = -1
            if not 0 <= client < n_clients:
                raise InputError(f"{where} line {line}, column client_id: {raw_id!r} is not a client id "
                                 f"in 0..{n_clients - 1} (the scenario has {n_clients} clients)")
            if client in seen_on:
                raise InputError(f"{where} line {line}, column client_id: client {client} repeats line "
                                 f"{seen_on[client]}")
            seen_on[client] = line
            raw = row[speed_col].strip()
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"{where} line {line}, column {speeds[0]}: {raw!r} must be a finite number > 0")
            values[client] = to_seconds(value)
    if len(seen_on) != n_clients:
        absent = [k for k in range(n_clients) if k not in seen_on]
        raise InputError(f"{where}: no row for client_id {', '.join(map(str, absent[:5]))}"
                         f"{' ...' if len(absent) > 5 else ''} (the scenario has {n_clients} clients; "
                         "one row per client)")
    return DeviceTrace(s_per_sample=values, column=speeds[0])


def check_device_trace(trace: str | None, n_clients: int, base_dir: Path | None) -> None:
    """Read the device trace, if the scenario names one, so that a bad file
    stops the run before any stage (the pipeline calls this first).

    Raises:
        InputError: the trace's first problem (`read_device_trace`).
    """
    if trace is not None:
        read_device_trace(device_trace_path(trace, base_dir), n_clients)
