"""Import FedScale's device and availability traces into fedsim's CSV formats.

FedScale (Lai et al., "FedScale: Benchmarking Model and System Performance of
Federated Learning at Scale", ICML 2022) ships two pickles:

* ``client_device_capacity``: ``{client_key: {"computation": c, "communication":
  b}}`` with ``c`` a device's inference latency in **ms per sample** (FedScale
  times local training as ``3 x batch x steps x c / 1000`` s: a backward pass
  costs about twice a forward one) and ``b`` its bandwidth in **kbit/s**, one
  number for both directions (FedScale times a transfer as ``kbits / b``, with
  its sizes counted as ``bytes * 8 / 1024``, so one kbit there is 1024 bits);
* ``client_behave_trace``: ``{client_key: {"active": [...], "inactive": [...],
  "finish_time": F, ...}}``, the seconds (from the trace's start) at which the
  device came online and went offline; FedScale's client is online while
  ``active[i] <= t mod F <= inactive[i]`` for some i (its
  ``ClientMetadata.is_active``). Other fields (``duration``, ``model``) are
  ignored.

(Checked against FedScale's ``fedscale/cloud/internal/client_metadata.py`` and
``aggregation/aggregator.py``: ``model_update_size = ... / 1024.0 * 8.  #
kbits``, ``get_completion_time``.)

The mapping to fedsim (`import_traces`):

* fedsim client k takes the device entry with the (k mod n)-th smallest key
  and the behaviour entry with the (k mod m)-th smallest key, as FedScale
  assigns its traces to clients round-robin;
* ``profiles.csv`` (``system.clients.trace``): downlink = uplink =
  ``b x 1024`` bits/s, rtt 0 (FedScale models no latency), speed =
  ``reference_ms / (3 c)`` (the reference device of ``system.compute``:
  10 s for 5 epochs over 400 samples is 5 ms per sample pass), availability 1
  (the sessions decide);
* ``sessions.csv`` (``system.clients.sessions``): the intervals ``[active[i],
  inactive[i])`` clipped to ``[0, F)`` and repeated every F seconds up to the
  horizon (default: the largest F, one pass of the trace).

The pickles are read by `RestrictedUnpickler`, which builds plain containers
and numbers only and refuses every class (so no reduce can call a function):
a pickle holding anything else, or data of another shape, is an
``InputError`` naming the file, the client key and the field.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedsim.errors import InputError, quote
from fedsim.store import write_text

__all__ = ["FEDSCALE_KBIT", "FEDSCALE_TRAINING_FACTOR", "REFERENCE_MS_PER_SAMPLE", "RestrictedUnpickler",
           "import_traces", "load_plain_pickle"]

#: bits in FedScale's kbit (its sizes are bytes * 8 / 1024)
FEDSCALE_KBIT = 1024.0
#: FedScale's training time per sample: 3 x the inference latency (``augmentation_factor``)
FEDSCALE_TRAINING_FACTOR = 3.0
#: fedsim's reference device: t_comp_full 10 s / (5 epochs x 400 samples), in ms per sample pass
REFERENCE_MS_PER_SAMPLE = 10.0 / (5 * 400) * 1000.0


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits only what pickle builds without a class:
    dict, list, tuple, set, str, bytes, int, float, bool and None. Any class
    or function (``GLOBAL``/``STACK_GLOBAL``, hence every ``REDUCE``, ``NEWOBJ``,
    ``BUILD`` of an object) and persistent ids are refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused: the pickle names {module}.{name}; only plain data "
                                     "(dicts, lists, numbers, strings) is admitted")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused: the pickle holds a persistent id")


def load_plain_pickle(path: Path, what: str) -> Any:
    """The plain data in pickle ``path`` (``what`` names the option in messages).

    Raises:
        InputError: the file cannot be read, is not a pickle, or names a class.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{what} {str(path)!r}: cannot read the file ({exc.strerror})") from None
    try:
        return RestrictedUnpickler(io.BytesIO(raw)).load()
    except pickle.UnpicklingError as exc:
        if str(exc).startswith("refused"):
            raise InputError(f"{what} {str(path)!r}: {exc}") from None
        raise InputError(f"{what} {str(path)!r}: not a readable pickle ({exc})") from None
    except Exception as exc:  # truncated or not a pickle: EOFError, ValueError, KeyError, ...
        raise InputError(f"{what} {str(path)!r}: not a readable pickle ({type(exc).__name__}: "
                         f"{quote(str(exc))})") from None


def _number(value: Any, where: str, low: float, low_closed: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: {quote(value)} is not a number")
    value = float(value)
    if not math.isfinite(value) or not (value >= low if low_closed else value > low):
        raise InputError(f"{where}: {value!r} must be {'>=' if low_closed else '>'} {low:g}")
    return value


def _entries(data: Any, where: str) -> list[tuple[Any, dict[str, Any]]]:
    """The (key, record) pairs of a FedScale pickle, sorted by key."""
    if not isinstance(data, dict) or not data:
        raise InputError(f"{where}: expected a non-empty dict {{client key: record}}, got "
                         f"{type(data).__name__}")
    try:
        keys = sorted(data)
    except TypeError:
        raise InputError(f"{where}: client keys of mixed types cannot be ordered") from None
    for key in keys:
        if not isinstance(data[key], dict):
            raise InputError(f"{where}, client {key!r}: expected a dict, got {type(data[key]).__name__}")
    return [(key, data[key]) for key in keys]


def device_profiles(data: Any, path: Path, reference_ms: float) -> list[tuple[float, float]]:
    """(bits/s, speed factor) of each device entry, in key order.

    Raises:
        InputError: a record without ``computation``/``communication`` or with
            a value that is not a positive finite number (file, key, field named).
    """
    where = f"--device {str(path)!r}"
    rows = []
    for key, record in _entries(data, where):
        values = {}
        for field in ("computation", "communication"):
            if field not in record:
                raise InputError(f"{where}, client {key!r}: no field {field!r}")
            values[field] = _number(record[field], f"{where}, client {key!r}, field {field!r}", 0.0, False)
        speed = reference_ms / (FEDSCALE_TRAINING_FACTOR * values["computation"])
        rows.append((values["communication"] * FEDSCALE_KBIT, speed))
    return rows


def behave_sessions(data: Any, path: Path) -> list[tuple[list[tuple[float, float]], float]]:
    """(online intervals within [0, F), F) of each behaviour entry, in key order.

    Raises:
        InputError: missing or unequal ``active``/``inactive`` lists, a time
            that is negative or not a number, intervals out of order or
            overlapping, a ``finish_time`` <= 0 (file, key, field and index named).
    """
    where = f"--behave {str(path)!r}"
    out = []
    for key, record in _entries(data, where):
        here = f"{where}, client {key!r}"
        lists = {}
        for field in ("active", "inactive"):
            value = record.get(field)
            if not isinstance(value, (list, tuple)):
                raise InputError(f"{here}, field {field!r}: expected a list of seconds, got {quote(value)}")
            lists[field] = [_number(v, f"{here}, field {field!r}[{i}]", 0.0, True) for i, v in enumerate(value)]
        active, inactive = lists["active"], lists["inactive"]
        if len(active) != len(inactive):
            raise InputError(f"{here}: {len(active)} 'active' times but {len(inactive)} 'inactive' ones")
        finish = record.get("finish_time", max(inactive, default=0.0))
        finish = _number(finish, f"{here}, field 'finish_time'", 0.0, False) if finish else None
        if finish is None:
            raise InputError(f"{here}, field 'finish_time': missing or 0 and no session to infer it from")
        intervals = []
        for i, (start, end) in enumerate(zip(active, inactive, strict=True)):
            if end < start:
                raise InputError(f"{here}, field 'inactive'[{i}]: {end:g} s is before 'active'[{i}] {start:g} s")
            if i and start < inactive[i - 1]:
                raise InputError(f"{here}, field 'active'[{i}]: {start:g} s is before 'inactive'[{i - 1}] "
                                 f"{inactive[i - 1]:g} s: sessions out of order or overlapping")
            start, end = min(start, finish), min(end, finish)
            if end > start:
                intervals.append((start, end))
        out.append((intervals, finish))
    return out


def _repeat(intervals: list[tuple[float, float]], period: float, horizon: float) -> Iterable[tuple[float, float]]:
    copies = math.ceil(horizon / period)
    for j in range(copies):
        for start, end in intervals:
            s, e = start + j * period, min(end + j * period, horizon)
            if e > s:
                yield s, e


def import_traces(out_dir: Path, *, device: Path | None = None, behave: Path | None = None,
                  n_clients: int | None = None, horizon_s: float | None = None,
                  reference_ms: float = REFERENCE_MS_PER_SAMPLE) -> dict[str, Path]:
    """Convert FedScale's pickles (module docstring) into ``out_dir/profiles.csv``
    (from ``device``) and ``out_dir/sessions.csv`` (from ``behave``).

    Args:
        n_clients: fedsim clients K (default: the entries of ``device``, else of
            ``behave``); entries are reused round-robin when there are fewer.
        horizon_s: sessions are repeated up to this time (default: the largest
            ``finish_time`` of the clients used).
        reference_ms: ms per sample pass of fedsim's reference device.

    Returns:
        ``{"profiles": path, "sessions": path}`` for the files written.

    Raises:
        InputError: neither file given, bad arguments, or a pickle refused
            or malformed (file, client key and field named).
    """
    if device is None and behave is None:
        raise InputError("fedsim data import-traces: give --device, --behave or both")
    if n_clients is not None and n_clients < 1:
        raise InputError(f"--clients: {n_clients} must be >= 1")
    if horizon_s is not None and not (math.isfinite(horizon_s) and horizon_s > 0):
        raise InputError(f"--horizon: {horizon_s!r} must be a positive finite time")
    if not (math.isfinite(reference_ms) and reference_ms > 0):
        raise InputError(f"--reference-ms: {reference_ms!r} must be > 0")
    devices = (device_profiles(load_plain_pickle(device, "--device"), device, reference_ms)
               if device is not None else None)
    behaviours = behave_sessions(load_plain_pickle(behave, "--behave"), behave) if behave is not None else None
    k = n_clients or len(devices or behaviours or [])
    written: dict[str, Path] = {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if devices is not None:
        lines = ["client_id,downlink,uplink,rtt,speed,availability"]
        for c in range(k):
            bps, speed = devices[c % len(devices)]
            lines.append(f"{c},{bps!r},{bps!r},0,{speed!r},1")
        written["profiles"] = out_dir / "profiles.csv"
        write_text(written["profiles"], "\n".join(lines) + "\n")
    if behaviours is not None:
        used = [behaviours[c % len(behaviours)] for c in range(k)]
        horizon = horizon_s if horizon_s is not None else max(f for _, f in used)
        lines = ["client_id,start_s,end_s"]
        for c, (intervals, period) in enumerate(used):
            lines.extend(f"{c},{s!r},{e!r}" for s, e in _repeat(intervals, period, horizon))
        written["sessions"] = out_dir / "sessions.csv"
        write_text(written["sessions"], "\n".join(lines) + "\n")
    return written
