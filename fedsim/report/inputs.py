"""What a report is told besides its frames: typed, frozen, checked once.

``ScenarioReportInput`` goes with a scenario's rounds, metrics and timeline
frames into `fedsim.report.write_report`; ``StudyReportInput`` with a study's
sweep frame into `fedsim.report.write_sweep_report`. Each holds exactly the
fields its report reads. Both writers still accept the old ``meta`` mapping
with the same keys (``from_mapping``), so existing callers keep working.

This module imports neither matplotlib nor pandas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: What an axis of a study sets, as far as the report cares: a link speed in
#: bit/s ("bandwidth": the heatmap's horizontal axis, values shown in bit/s
#: units), a method's remaining rate ("remaining_rate": it varies the
#: configuration, not the cell), or anything else ("other").
AxisRole = Literal["bandwidth", "remaining_rate", "other"]
AXIS_ROLES: tuple[str, ...] = ("bandwidth", "remaining_rate", "other")


def _mapping(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}


@dataclass(frozen=True)
class ScenarioReportInput:
    """What a scenario's report shows besides its frames.

    Attributes:
        name: the scenario's name (title page, summary.md heading; empty:
            "fedsim report").
        description: the scenario's description (may be empty).
        methods: the method order; it fixes every method's colour.
        targets: target accuracies (fractions); empty: those in the metrics.
        labels: method -> display label (optional).
        deadline_s: the round deadline, seconds after a round's start (None:
            no deadline).
        provenance: str -> str lines for the title page and summary.md.
        reference: the paper's values per method, shown beside fedsim's
            (layout: `fedsim.report.scenario.tables`); None: none.
    """

    name: str = ""
    description: str = ""
    methods: tuple[str, ...] = ()
    targets: tuple[float, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    deadline_s: float | None = None
    provenance: Mapping[str, str] = field(default_factory=dict)
    reference: Mapping[str, Any] | None = None

    @classmethod
    def from_mapping(cls, meta: Mapping[str, Any]) -> ScenarioReportInput:
        """From the old ``meta`` dict (keys as the attributes; ``scenario``
        stands in for a missing ``name``)."""
        deadline = meta.get("deadline_s")
        return cls(
            name=str(meta.get("name") or meta.get("scenario") or ""),
            description=str(meta.get("description") or ""),
            methods=tuple(str(m) for m in meta.get("methods") or ()),
            targets=tuple(float(t) for t in meta.get("targets") or ()),
            labels=_mapping(meta.get("labels")),
            deadline_s=None if deadline is None else float(deadline),
            provenance=_mapping(meta.get("provenance")),
            reference=meta.get("reference") or None,
        )

    @classmethod
    def coerce(cls, value: ScenarioReportInput | Mapping[str, Any]) -> ScenarioReportInput:
        """``value`` itself, or built from a ``meta`` mapping."""
        return value if isinstance(value, cls) else cls.from_mapping(value)


@dataclass(frozen=True)
class SweepAxis:
    """One axis of a study as its report sees it.

    Attributes:
        column: the sweep frame's column of the axis' numbers (SI units:
            bit/s for a link speed); its dotted scenario key.
        title: the axis' title in figures and summary.md (empty: ``column``).
        role: what the axis sets (`AxisRole`), decided by the study from the
            scenario field the axis sets, never guessed from a name here.
    """

    column: str
    title: str = ""
    role: AxisRole = "other"

    def __post_init__(self) -> None:
        if self.role not in AXIS_ROLES:
            raise ValueError(f"axis {self.column!r}: role {self.role!r} is not one of {AXIS_ROLES}")


@dataclass(frozen=True)
class StudyReportInput:
    """What a study's report shows besides its sweep frame.

    Attributes:
        name: the study's name (title page, summary.md heading; empty: "fedsim
            sweep" in summary.md and the PDF's metadata, "fedsim report" on the
            title page, as before).
        axes: the study's axes, in order (at least one).
        description: the study's description (may be empty).
        methods: the method order; it fixes every method's colour.
        labels: method -> display label (optional).
        targets: target accuracies (fractions); empty: those in the sweep.
        provenance: str -> str lines for the title page and summary.md.
        zipped: the axes move together (study mode ``zip``): the link axis, or
            the first, stands for all.
        link_axis: the column the heatmap spreads horizontally; None: the first
            ``bandwidth`` axis, else the first axis that is not a remaining rate
            (`heatmap_axis`).

    Raises ValueError (from the constructor) for no axes, repeated axis
    columns, or a ``link_axis`` that is not an axis.
    """

    name: str
    axes: tuple[SweepAxis, ...]
    description: str = ""
    methods: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    targets: tuple[float, ...] = ()
    provenance: Mapping[str, str] = field(default_factory=dict)
    zipped: bool = False
    link_axis: str | None = None

    def __post_init__(self) -> None:
        if not self.axes:
            raise ValueError("a study report needs at least one axis column of the sweep")
        columns = [a.column for a in self.axes]
        if len(set(columns)) != len(columns):
            raise ValueError(f"axis columns repeat: {columns}")
        if self.link_axis is not None and self.link_axis not in columns:
            raise ValueError(f"link axis {self.link_axis!r} is not one of the axes {columns}")

    @property
    def axis_columns(self) -> list[str]:
        """The axes' sweep columns, in order."""
        return [a.column for a in self.axes]

    def axis(self, column: str) -> SweepAxis:
        """The axis of ``column``. Raises KeyError for a column that is none."""
        for axis in self.axes:
            if axis.column == column:
                return axis
        raise KeyError(column)

    def is_rate_axis(self, column: str) -> bool:
        """Whether ``column``'s axis sets a remaining rate."""
        return self.axis(column).role == "remaining_rate"

    def axis_title(self, column: str) -> str:
        """The title of ``column``'s axis ("" for no axis)."""
        if not column:
            return ""
        return self.axis(column).title or column

    def heatmap_axis(self) -> str | None:
        """The axis the heatmap spreads horizontally: ``link_axis``, else the
        first bandwidth axis, else the first axis that is not a remaining rate
        (None when every axis is one)."""
        if self.link_axis is not None:
            return self.link_axis
        candidates = [a for a in self.axes if a.role != "remaining_rate"]
        for axis in candidates:
            if axis.role == "bandwidth":
                return axis.column
        return candidates[0].column if candidates else None

    @classmethod
    def from_mapping(cls, meta: Mapping[str, Any]) -> StudyReportInput:
        """From the old ``meta`` dict: ``axes`` (columns, required), ``name``,
        ``description``, ``methods``, ``labels``, ``targets``, ``provenance``,
        ``mode`` ("zip" or "grid"), ``axis_labels`` (column -> title),
        ``link_axis`` and ``axis_roles`` (column -> `AxisRole`, default
        "other"). Roles are not guessed from the axis names: a caller that
        wants the heatmap over a link speed says so (``axis_roles`` or
        ``link_axis``).

        Raises ValueError when ``meta["axes"]`` is empty."""
        columns = [str(a) for a in meta.get("axes") or []]
        if not columns:
            raise ValueError('meta["axes"] must name at least one axis column of the sweep')
        titles = _mapping(meta.get("axis_labels"))
        roles = _mapping(meta.get("axis_roles"))
        link = meta.get("link_axis")
        return cls(
            name=str(meta.get("name") or ""),
            axes=tuple(
                SweepAxis(c, titles.get(c, ""), roles.get(c, "other"))  # type: ignore[arg-type]
                for c in columns
            ),
            description=str(meta.get("description") or ""),
            methods=tuple(str(m) for m in meta.get("methods") or ()),
            labels=_mapping(meta.get("labels")),
            targets=tuple(float(t) for t in meta.get("targets") or ()),
            provenance=_mapping(meta.get("provenance")),
            zipped=meta.get("mode") == "zip",
            link_axis=None if not link else str(link),
        )

    @classmethod
    def coerce(cls, value: StudyReportInput | Mapping[str, Any]) -> StudyReportInput:
        """``value`` itself, or built from a ``meta`` mapping."""
        return value if isinstance(value, cls) else cls.from_mapping(value)


__all__ = ["AXIS_ROLES", "AxisRole", "ScenarioReportInput", "StudyReportInput", "SweepAxis"]
