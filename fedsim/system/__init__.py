"""The system stage: device/network profiles, shared links, the SimPy rounds.

It needs payload sizes and compute work, never weights: ``payload_bytes`` and
``work_fraction`` turn a method's per-layer counts into both, and ``simulate``
returns the per-client, per-round timeline, the per-round costs and who is
aggregated in each round. See docs/network-model.md.
"""

from fedsim.system.links import (
    FluidSchedule,
    SharedLink,
    fluid_schedule,
    max_min_rates,
    water_level,
)
from fedsim.system.payload import (
    Payload,
    flops_fraction,
    payload_bytes,
    remaining_rate,
    work_fraction,
)
from fedsim.system.profiles import ClientProfiles, draw_profiles, read_trace
from fedsim.system.sim import (
    DROP_REASONS,
    ROUNDS_COLUMNS,
    TIMELINE_COLUMNS,
    Server,
    SystemResult,
    load_result,
    save_result,
    simulate,
)
from fedsim.system.spec import (
    ClientsSpec,
    ComputeSpec,
    PayloadSpec,
    RoundsSpec,
    ServerSpec,
    SystemConfig,
)

__all__ = [
    "DROP_REASONS",
    "ROUNDS_COLUMNS",
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
