"""How a run treats the cache: one frozen `RunPolicy` instead of mode flags
threaded through every call."""

from __future__ import annotations

from dataclasses import dataclass

#: Device types a run can continue from (``--continue-from``).
DEVICE_TYPES = ("cpu", "cuda")


@dataclass(frozen=True)
class RunPolicy:
    """What a run may read, compute and show.

    Attributes:
        force: recompute every stage, ignoring (and replacing) cached entries.
        cached_only: compute no pre-training or training; report what the
            cache holds (each trace up to ``rounds.max``). System simulations
            are still computed: they are cheap.
        continue_from: ``"cpu"`` or ``"cuda"``: continue each method's cached
            run on that device, where there is one, on the scenario's device
            (e.g. a GPU run cut short by its time slot, finished on a CPU).
        progress: show one progress line over the whole run.

    Raises:
        ValueError: ``force`` with ``cached_only``, or an unknown device type.
    """

    force: bool = False
    cached_only: bool = False
    continue_from: str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.cached_only and self.force:
            raise ValueError("cached_only and force exclude each other")
        if self.continue_from is not None and self.continue_from not in DEVICE_TYPES:
            raise ValueError(f"continue_from must be one of {DEVICE_TYPES} or None, "
                             f"got {self.continue_from!r}")


#: Read the cache, compute what is missing, no progress line.
DEFAULT_POLICY = RunPolicy()
