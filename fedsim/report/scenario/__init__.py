"""A scenario's report: Table I (`tables`), the accuracy and round-time figures
(`curves`), the client figures (`clients`) and ``write_report`` (`writer`)."""
