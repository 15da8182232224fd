"""Building blocks of the random asynchronous systems the FedBuff engine
tests draw (tests/test_async_server_fast.py, test_async_flows_jit.py,
test_async_speed_server.py): one home for the client distributions, the
server section and the cells, each test choosing its own value lists and
probabilities. The draws happen in the order the tests always made them, so
their pinned schedules stay as they are."""

from __future__ import annotations

from typing import Any


def clients_section() -> dict[str, Any]:
    """Heterogeneous clients: lognormal links (20 / 5 Mbps medians), RTTs up
    to 150 ms, device speeds 0.3-3x (a new dict: the tests edit it)."""
    return {"downlink": {"dist": "lognormal", "median": "20 Mbps", "sigma": 0.7},
            "uplink": {"dist": "lognormal", "median": "5 Mbps", "sigma": 0.7},
            "rtt": {"dist": "uniform", "low": "0 ms", "high": "150 ms"},
            "speed": {"dist": "uniform", "low": 0.3, "high": 3.0}}


def base_system(stream: Any, downlinks: list[str], uplinks: list[str], dropouts: list[float]) -> dict[str, Any]:
    """The raw system section: those clients, a server with a drawn
    aggregation time (0 or 0.5 s) and links, a drawn dropout (in this order)."""
    return {
        "clients": clients_section(),
        "server": {"aggregation": f"{float(stream.choice([0.0, 0.5]))} s",
                   "downlink": str(stream.choice(downlinks)),
                   "uplink": str(stream.choice(uplinks))},
        "rounds": {"dropout": float(stream.choice(dropouts))},
    }


def maybe_cells(stream: Any, raw: dict[str, Any], probability: float) -> None:
    """With ``probability``, 1-3 cells of 30 / 8 Mbps in ``raw``."""
    if stream.random() < probability:
        raw["cells"] = {f"c{c}": {"capacity_down": "30 Mbps", "capacity_up": "8 Mbps"}
                        for c in range(int(stream.integers(1, 4)))}
