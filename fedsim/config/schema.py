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
from fedsim.learn.counts import (
    LENET_SIZES,
    classifier_shapes,
    iter_level_counts,
    layer_shapes,
    level_counts,
)
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


class ParallelConfig(Section):
    """How a scenario's stages share the machine (`fedsim.pipeline.parallel`):
    ``workers`` processes of ``threads`` torch threads each. ``auto`` chooses
    from a per-machine measurement (docs/performance.md); ``workers: 1`` is the
    sequential schedule. Enters no cache key: results do not depend on it
    beyond the float rounding of the thread count (provenance.json records it)."""

    workers: Literal["auto"] | Annotated[int, Field(strict=True, ge=1)] = Field(
        "auto", description="worker processes (1: one method after another)")
    threads: Literal["auto"] | Annotated[int, Field(strict=True, ge=1)] = Field(
        "auto", description="torch threads per worker (auto: the cores / workers)")


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
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)

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
        from fedsim.learn.methods import is_plugin, required_iterations

        for label, method in self.methods.items():
            if is_plugin(method.kind):
                continue  # imported, and checked so, when a run starts (fedsim.learn.plugins)
            key = next((f"methods.{label}.{name}" for name in ("level", "remaining_rate")
                        if getattr(method, name) is not None), f"methods.{label}")
            entry = get_method(method.kind)
            try:  # pre-training and pruning need the model's autoencoder (checked first: it names both)
                self.model.check_method(method.kind, entry.pruned or entry.iterations > 0)
            except ValueError as exc:
                raise ValueError(f"methods.{label}: {exc}") from None
            try:
                needed = required_iterations(method, self.pretrain, self.model.autoencoder)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
            if needed > 0 and self.data.unlabeled == 0:
                raise ValueError(f"methods.{label}: method {method.kind!r} pre-trains on the "
                                 "unlabeled pool, but data.unlabeled is 0")
        return self

    @model_validator(mode="after")
    def _concurrency_fits_clients(self) -> Scenario:
        """An asynchronous method cannot keep more clients training than there
        are (`fedsim.system.async_spec`; an external partition's count is known
        only when its file is read, and `simulate_async` checks it then)."""
        clients = getattr(self.data.partition, "num_clients", None)
        for label, method in self.methods.items():
            concurrency = method.asynchronous.concurrency if method.asynchronous is not None else 0
            if clients is not None and concurrency > clients:
                raise ValueError(f"methods.{label}.asynchronous.concurrency: {concurrency} exceeds the "
                                 f"{clients} clients of data.partition.num_clients")
            if method.asynchronous is not None:  # fedsim.learn.asynchronous.train_async refuses them too
                for name in ("compression", "server"):
                    if getattr(method, name) is not None or getattr(self.fl, name) is not None:
                        raise ValueError(f"methods.{label}.asynchronous: does not combine with {name} "
                                         f"(set in {'methods.' + label if getattr(method, name) else 'fl'}"
                                         f".{name}); FedBuff's server step is its own")
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
    from fedsim.learn.methods import get, is_plugin, required_iterations
    from fedsim.system.payload import payload_bytes

    method = scenario.methods[label]
    arch = scenario.model.autoencoder  # lenet-5's shapes for it; LeNet-300-100's for the rest
    shapes = classifier_shapes(arch) if arch is not None else layer_shapes(LENET_SIZES)
    weights = level_counts(shapes, scenario.pretrain.prune_fraction, 0)
    surviving = weights
    if is_plugin(method.kind):  # its mask and compression are known only once it runs: RTT alone
        rtt_s = draw_range(scenario.system.clients.rtt, "rtt")[0]
        return rtt_s, f"{label}: a plugin, payload unknown before the run: RTT {rtt_s * 1e3:g} ms"
    if get(method.kind).pruned:
        level = required_iterations(method, scenario.pretrain, arch)
        surviving = tuple(0 for _ in weights)
        if scenario.pretrain.scope == "layerwise":
            for k, counts in enumerate(iter_level_counts(scenario.pretrain, arch or "lenet-300-100")):
                if k == level or counts == surviving:  # surviving: the last level's counts
                    surviving = counts
                    break
                surviving = counts
    system = scenario.system
    compression = method.compression or scenario.fl.compression  # methods.effective_fl, for a built-in
    payload = payload_bytes(weights, surviving, sum(o for _, o in shapes), system.payload, compression)
    down_bps = min(draw_range(system.clients.downlink, "downlink")[1], system.server.downlink)
    up_bps = min(draw_range(system.clients.uplink, "uplink")[1], system.server.uplink)
    rtt_s = draw_range(system.clients.rtt, "rtt")[0]
    seconds = rtt_s + 8 * payload.down_bytes / down_bps + 8 * payload.up_bytes / up_bps
    how = (f"{label}: {payload.down_bytes:,} B down at {down_bps / 1e6:g} Mbps, "
           f"{payload.up_bytes:,} B up at {up_bps / 1e6:g} Mbps, RTT {rtt_s * 1e3:g} ms: "
           f"{seconds:.3g} s")
    return seconds, how
