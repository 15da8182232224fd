"""`fedsim replay`: the cost of a run trained elsewhere on a scenario's network
(docs/replay.md).

`runfile` reads and checks the run's CSV (no torch); `simulate` runs the
system model with the run's participants and message sizes; `run.replay`
joins them with the run's accuracy and writes the scenario report. Names are
re-exported lazily (PEP 562), so importing the package imports no torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RunFile", "read_run", "replay"]


def __getattr__(name: str) -> Any:
    if name in ("RunFile", "read_run"):
        from fedsim.replay import runfile

        return getattr(runfile, name)
    if name == "replay":
        from fedsim.replay.run import replay

        return replay
    raise AttributeError(f"module 'fedsim.replay' has no attribute {name!r}")
