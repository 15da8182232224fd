"""The system simulation of a replayed run: the scenario's network and devices,
with the participants and message sizes that the run file gives.

It reuses `fedsim.system.sim` as it is (the same ``Server``, rounds and
recorder; docs/network-model.md), through ``simulate``'s ``given_participants``:
only who is selected in a round and how big its messages are change.

* **participants given**: in round r exactly the listed clients are selected
  (availability, the selection fraction and over-commit are not drawn: the
  run decided who took part), and no one drops out (the run aggregated them).
  The scenario's deadline still applies: a participant that this network
  makes late is cut, as fedsim would cut it, and the report shows it.
* **bytes given**: every participant of round r downloads ``down_bytes[r]``
  and uploads ``up_bytes[r]`` bytes (`RoundPayload`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedsim.system import sim
from fedsim.system.payload import REFERENCE_EPOCHS, Payload
from fedsim.system.spec import SystemConfig

__all__ = ["RoundPayload", "simulate_replay"]


@dataclass(frozen=True)
class RoundPayload(Payload):
    """A `Payload` whose message sizes change from round to round.

    Attributes:
        down_by_round, up_by_round: one client's download / upload in bytes
            in rounds 1..R (``down_bytes``/``up_bytes`` hold their means, for
            the report's per-round figures).
    """

    down_by_round: tuple[int, ...] = field(default=(), repr=False)
    up_by_round: tuple[int, ...] = field(default=(), repr=False)

    @classmethod
    def from_rounds(cls, down: np.ndarray, up: np.ndarray, base: Payload) -> RoundPayload:
        """Sizes per round; ``base`` (the scenario's payload) keeps its parameter counts."""
        return cls(down_bytes=round(float(np.mean(down))), up_bytes=round(float(np.mean(up))),
                   sent_params=base.sent_params, total_params=base.total_params,
                   down_by_round=tuple(int(b) for b in down), up_by_round=tuple(int(b) for b in up))

    def down_bytes_in_round(self, round_num: int) -> int:
        return self.down_by_round[round_num - 1]

    def up_bytes_in_round(self, round_num: int) -> int:
        return self.up_by_round[round_num - 1]


def simulate_replay(system: SystemConfig, *, client_samples: np.ndarray, payload: Payload,
                    work_fraction: float, participants: list[np.ndarray], seed: int,
                    local_epochs: int = REFERENCE_EPOCHS, base_dir: Path | None = None
                    ) -> sim.SystemResult:
    """Simulate len(participants) rounds in which round r selects
    ``participants[r - 1]`` (module docstring); the other arguments and
    everything else as `fedsim.system.sim.simulate`.

    Raises:
        fedsim.errors.InputError: a missing or malformed client trace file.
    """
    return sim.simulate(system, client_samples=client_samples, payload=payload,
                        work_fraction=work_fraction, rounds=len(participants), seed=seed,
                        local_epochs=local_epochs, base_dir=base_dir,
                        given_participants=participants)
