"""The methods of a report: their display order, colours and labels.

Every figure of a report and of a sweep colours a method the same way: the
colour is a function of the method's position in the scenario's method order,
taken from matplotlib's qualitative ``tab10`` palette (as hex strings: this
module imports no matplotlib, so the study analysis can use it without).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# matplotlib's tab10 (the default colour cycle), then the light halves of tab20
# for methods 11..20, so adding an 11th method never recolours the first ten.
TAB10: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
TAB20_LIGHT: tuple[str, ...] = (
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
)
PALETTE: tuple[str, ...] = TAB10 + TAB20_LIGHT


def method_order(preferred: Iterable[str] | None, present: Iterable[str]) -> list[str]:
    """The methods to show, in order: those of ``preferred`` (the scenario's
    order) that are ``present`` in the data, then any other present method in
    order of first appearance."""
    present_list = list(dict.fromkeys(str(m) for m in present))
    present_set = set(present_list)
    ordered = [m for m in dict.fromkeys(str(m) for m in (preferred or [])) if m in present_set]
    return ordered + [m for m in present_list if m not in set(ordered)]


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """The colour (hex) of each method: ``methods[i]`` gets ``PALETTE[i]``
    (tab10, then the light tab20 hues, then repeating).

    Pass the scenario's method order (``meta["methods"]``) so a method keeps its
    colour in every figure of a report, and in every report of the scenario.
    """
    return {str(m): PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}


@dataclass(frozen=True)
class MethodStyle:
    """The methods of a report in display order, with their colours and labels."""

    order: tuple[str, ...]
    colors: Mapping[str, str]
    labels: Mapping[str, str]

    @classmethod
    def build(cls, source: Any, present: Iterable[str]) -> MethodStyle:
        """From the report input ``source`` (`fedsim.report.inputs`; a mapping
        with the same keys is accepted): its ``methods`` (order; colours are
        assigned over the whole scenario order, so a report of a subset keeps
        the scenario's colours) and ``labels`` (method -> display label), and
        the methods present in the data."""
        if isinstance(source, Mapping):
            methods, given = source.get("methods") or [], source.get("labels") or {}
        else:
            methods, given = source.methods, source.labels
        preferred = [str(m) for m in methods]
        order = method_order(preferred, present)
        full = preferred + [m for m in order if m not in set(preferred)]
        labels = {str(k): str(v) for k, v in given.items()}
        return cls(
            order=tuple(order),
            colors=method_colors(full),
            labels={m: labels.get(m, m) for m in full},
        )

    def label(self, method: str) -> str:
        """The display label of ``method`` (its name when it has none)."""
        return self.labels.get(method, method)
