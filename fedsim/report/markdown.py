"""GitHub-flavoured markdown tables for summary.md (scenario and study)."""

from __future__ import annotations

from collections.abc import Sequence


def md_cell(text: str) -> str:
    """``text`` safe inside a table cell: pipes escaped, newlines as spaces."""
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    italic: Sequence[bool] | None = None,
) -> str:
    """A GitHub-flavoured markdown table; the first column left-aligned, the
    others right-aligned; row i in italics where ``italic[i]``."""
    lines = [
        "| " + " | ".join(md_cell(h) for h in headers) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    for i, row in enumerate(rows):
        cells = [md_cell(c) for c in row]
        if italic is not None and italic[i]:
            cells = [f"*{c}*" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
