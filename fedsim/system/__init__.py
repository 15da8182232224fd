"""The system stage: device/network profiles, shared links, the SimPy rounds.

It needs payload sizes and compute work, never weights: ``payload_bytes`` and
``work_fraction`` turn a method's per-layer counts into both, and ``simulate``
returns the per-client, per-round timeline, the per-round costs and who is
aggregated in each round. See docs/network-model.md.
"""


# Names are imported on first use (PEP 562), so that ``import fedsim.system.spec``
# (the config section) does not import simpy or pandas; see docs/performance.md.
from fedsim import lazy

_EXPORTS: dict[str, str] = {
    "FluidSchedule": "links", "SharedLink": "links", "fluid_schedule": "links",
    "max_min_rates": "links", "water_level": "links",
    "Payload": "payload", "flops_fraction": "payload", "payload_bytes": "payload",
    "remaining_rate": "payload", "work_fraction": "payload",
    "ClientProfiles": "profiles", "draw_profiles": "profiles", "read_trace": "profiles",
    "SIM_ROUND_COLUMNS": "frames", "TIMELINE_COLUMNS": "frames",
    "DROP_REASONS": "sim", "Server": "sim",
    "SystemResult": "sim", "load_result": "sim", "save_result": "sim", "simulate": "sim",
    "ClientsSpec": "spec", "ComputeSpec": "spec", "PayloadSpec": "spec", "RoundsSpec": "spec",
    "ServerSpec": "spec", "SystemConfig": "spec",
}


__getattr__, __dir__ = lazy.exports(globals(), _EXPORTS)


__all__ = [
    "DROP_REASONS",
    "SIM_ROUND_COLUMNS",
    "TIMELINE_COLUMNS",
    "ClientProfiles",
    "ClientsSpec",
    "ComputeSpec",
    "FluidSchedule",
    "Payload",
    "PayloadSpec",
    "RoundsSpec",
    "Server",
    "ServerSpec",
    "SharedLink",
    "SystemConfig",
    "SystemResult",
    "draw_profiles",
    "flops_fraction",
    "fluid_schedule",
    "load_result",
    "max_min_rates",
    "payload_bytes",
    "read_trace",
    "remaining_rate",
    "save_result",
    "simulate",
    "water_level",
    "work_fraction",
]
