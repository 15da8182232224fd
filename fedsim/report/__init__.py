"""The report: Table I-style tables, figures, one PDF and summary.md.

``write_report`` turns a scenario's frames (rounds, metrics, timeline) into
figures, ``report.pdf`` and ``summary.md``; ``write_sweep_report`` does the same
for a parameter study. ``method_colors`` is the one mapping from the scenario's
method order to colours that every figure uses.
"""

from fedsim.report.style import method_colors
from fedsim.report.sweep import write_sweep_report
from fedsim.report.writer import write_report

__all__ = ["method_colors", "write_report", "write_sweep_report"]
