"""The modules of scripts/paper_tables.py: the reproduction of the HP-FL paper
in reports/paper/ (statistics, per-round traces, tables, paired statistics,
figures). Scripts, not the package: they import fedsim, fedsim does not import
them."""
