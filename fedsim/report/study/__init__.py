"""A study's report: the analysis (`analysis`: intervals, best configuration,
ranking flips; no matplotlib), its figures (`figures`), summary.md
(`summary`) and ``write_sweep_report`` (`writer`)."""
