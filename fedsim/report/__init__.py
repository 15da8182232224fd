"""The report: Table I-style tables, figures, one PDF and summary.md.

``write_report`` turns a scenario's frames (rounds, metrics, timeline) into
figures, ``report.pdf`` and ``summary.md`` (`fedsim.report.scenario`);
``write_sweep_report`` does the same for a parameter study
(`fedsim.report.study`). What each is told besides its frames is a typed input
(`fedsim.report.inputs`). ``method_colors`` is the one mapping from the
scenario's method order to colours that every figure uses.

Names are imported on first use (PEP 562): ``fedsim.report.inputs`` and
``fedsim.report.study.analysis`` import no matplotlib.
"""


from fedsim import lazy

_EXPORTS: dict[str, str] = {
    "ScenarioReportInput": "fedsim.report.inputs",
    "StudyReportInput": "fedsim.report.inputs",
    "SweepAxis": "fedsim.report.inputs",
    "method_colors": "fedsim.report.methods",
    "write_report": "fedsim.report.scenario.writer",
    "write_sweep_report": "fedsim.report.study.writer",
}


__getattr__, __dir__ = lazy.exports(globals(), _EXPORTS)


__all__ = [
    "ScenarioReportInput",
    "StudyReportInput",
    "SweepAxis",
    "method_colors",
    "write_report",
    "write_sweep_report",
]
