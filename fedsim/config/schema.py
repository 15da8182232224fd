"""The scenario's schema: the top-level sections and the checks across them.

Every section is a frozen pydantic model that forbids unknown keys
(`fedsim.schema.Section`); each domain owns its section's schema
(``fedsim.data.spec``, ``fedsim.learn.spec``, ``fedsim.system.spec``) and
`Scenario` composes them. Checks across sections refuse scenarios in which
nothing could ever train (`fastest_round_s`).

Validating a scenario imports neither torch nor simpy: the checks read model
and pruning-level sizes from `fedsim.learn.counts` (plain arithmetic) and the
method registry (`fedsim.learn.methods`), whose tensor code is imported only
when a method runs (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from fedsim.data.spec import DataConfig
from fedsim.learn.counts import LENET_SIZES, iter_level_counts, layer_shapes, level_counts
from fedsim.learn.spec import FLConfig, MethodConfig, ModelConfig, PretrainConfig
from fedsim.schema import Section
from fedsim.system.spec import SystemConfig, draw_range

#: Longest scenario or study name: a file name of its own (reports/<name>/, and a
#: study's cells are named <study>.c000) within the 255 bytes that Linux, macOS
#: and Windows file systems allow for one path component.
MAX_NAME_CHARS = 200


class RoundsConfig(Section):
    """How many FL rounds to train, and when to checkpoint."""

    max: int = Field(3000, ge=1, description="rounds to train per method")
    stop_when_reached: bool = Field(
        False, description="stop a method early once it has reached every target")
    checkpoint_every: int = Field(50, ge=1, description="save the global model every N rounds")


class ReportConfig(Section):
    """What the report contains."""

    formats: list[Literal["png", "pdf", "svg"]] = Field(default_factory=lambda: ["png", "pdf"])
    gantt_rounds: Annotated[list[Annotated[int, Field(strict=True, ge=1)]], Field(min_length=1)] | None = Field(
        None, description="rounds shown in the Gantt figure (default: first and last); "
                          "each <= rounds.max")
    reference: Literal["none", "paper"] = Field(
        "none", description="'paper': print the HP-FL paper's Table I/II values beside fedsim's")


class Scenario(Section):
    """A whole scenario: what to train, on which system, and what to report."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_NAME_CHARS,
                      description="used as the default output directory reports/<name>/")
    description: str = ""
    seed: int = Field(0, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    fl: FLConfig = Field(default_factory=FLConfig)
    methods: dict[str, MethodConfig] = Field(min_length=1)
    system: SystemConfig = Field(default_factory=SystemConfig)
    targets: list[float] = Field(default_factory=lambda: [0.95], min_length=1)
    rounds: RoundsConfig = Field(default_factory=RoundsConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    report: ReportConfig = Field(default_factory=ReportConfig)

    @model_validator(mode="before")
    @classmethod
    def _method_kind_defaults_to_label(cls, raw: Any) -> Any:
        """``methods: {hp-fl: {remaining_rate: 0.1}}`` means kind hp-fl; a label
        that is not a method kind (``hp-fl-0.41``) must give ``kind``."""
        if isinstance(raw, Mapping) and isinstance(raw.get("methods"), Mapping):
            methods = {}
            for label, settings in raw["methods"].items():
                if settings is None:
                    settings = {}
                if isinstance(settings, Mapping) and "kind" not in settings:
                    settings = {"kind": label, **settings}
                methods[label] = settings
            raw = {**raw, "methods": methods}
        return raw

    @model_validator(mode="after")
    def _methods_fit_pretraining(self) -> Scenario:
        """A pruning method's level or rate must be one that ``pretrain.iterations``
        makes, and a method that needs pre-training needs unlabeled data."""
        from fedsim.learn.methods import get as get_method
        from fedsim.learn.methods import required_iterations

        for label, method in self.methods.items():
            key = next((f"methods.{label}.{name}" for name in ("level", "remaining_rate")
                        if getattr(method, name) is not None), f"methods.{label}")
            try:
                needed = required_iterations(method, self.pretrain)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
            try:  # pre-training and pruning need the model's autoencoder
                self.model.check_method(method.kind, needed > 0 or get_method(method.kind).pruned)
            except ValueError as exc:
                raise ValueError(f"methods.{label}: {exc}") from None
            if needed > 0 and self.data.unlabeled == 0:
                raise ValueError(f"methods.{label}: method {method.kind!r} pre-trains on the "
                                 "unlabeled pool, but data.unlabeled is 0")
        return self

    @model_validator(mode="after")
    def _gantt_rounds_run(self) -> Scenario:
        late = [r for r in self.report.gantt_rounds or () if r > self.rounds.max]
        if late:
            raise ValueError(f"report.gantt_rounds: round {late[0]} is beyond rounds.max "
                             f"{self.rounds.max}")
        return self

    @model_validator(mode="after")
    def _deadline_leaves_time(self) -> Scenario:
        """A deadline shorter than the fastest possible round of every method
        means that no update can ever arrive (see `fastest_round_s`)."""
        deadline = self.system.rounds.deadline
        if deadline is None or self.system.clients.trace is not None or self.system.clients.dynamics is not None:
            return self  # a trace's links are read at run time; dynamic links have no fastest value
        fastest = min((fastest_round_s(self, label) for label in self.methods), key=lambda f: f[0])
        if deadline < fastest[0]:
            raise ValueError(f"system.rounds.deadline: {deadline:g} s is shorter than the fastest "
                             f"possible round of any method ({fastest[1]}); no update could "
                             "ever arrive in time")
        return self

    @field_validator("targets")
    @classmethod
    def _targets_are_accuracies(cls, targets: list[float]) -> list[float]:
        for target in targets:
            if not 0.0 < target <= 1.0:
                raise ValueError(f"target accuracy {target!r} must be in (0, 1] (e.g. 0.95 for 95 %)")
        return sorted(set(targets))


def fastest_round_s(scenario: Scenario, label: str) -> tuple[float, str]:
    """A lower bound (seconds) on any client's round in method ``label``, and
    how it was found: the smallest RTT a client can draw (half before the
    model arrives, half before the update does) plus a download and an upload
    of the method's payload after round 1 at the fastest rate a client's link
    can draw, capped by the server's link. Computation counts as 0 (a client's
    speed may be unbounded). A global-pruning method's survivors are unknown
    before training and count as 0 (biases and the mask encoding only).

    Raises:
        ValueError: as `fedsim.learn.methods.required_iterations` (a level or
            rate that the pre-training does not make).
    """
    from fedsim.learn.methods import get, required_iterations
    from fedsim.system.payload import payload_bytes

    method = scenario.methods[label]
    shapes = layer_shapes(LENET_SIZES)
    weights = level_counts(shapes, scenario.pretrain.prune_fraction, 0)
    surviving = weights
    if get(method.kind).pruned:
        level = required_iterations(method, scenario.pretrain)
        surviving = tuple(0 for _ in weights)
        if scenario.pretrain.scope == "layerwise":
            for k, counts in enumerate(iter_level_counts(scenario.pretrain)):
                if k == level or counts == surviving:  # surviving: the last level's counts
                    surviving = counts
                    break
                surviving = counts
    system = scenario.system
    payload = payload_bytes(weights, surviving, sum(LENET_SIZES[1:]), system.payload, scenario.fl.compression)
    down_bps = min(draw_range(system.clients.downlink, "downlink")[1], system.server.downlink)
    up_bps = min(draw_range(system.clients.uplink, "uplink")[1], system.server.uplink)
    rtt_s = draw_range(system.clients.rtt, "rtt")[0]
    seconds = rtt_s + 8 * payload.down_bytes / down_bps + 8 * payload.up_bytes / up_bps
    how = (f"{label}: {payload.down_bytes:,} B down at {down_bps / 1e6:g} Mbps, "
           f"{payload.up_bytes:,} B up at {up_bps / 1e6:g} Mbps, RTT {rtt_s * 1e3:g} ms: "
           f"{seconds:.3g} s")
    return seconds, how
