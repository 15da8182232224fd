"""Names shared by the paper scripts: the targets, the methods of Table I,
the variants of the paper's settings, the mask encodings of the traffic
table, and which of several runs of one (seed, method) counts (the longest)."""

from __future__ import annotations

import pandas as pd

TARGETS = [0.90, 0.93, 0.94, 0.95]
TABLE_I = ["original", "pretrained", "hp-fl", "random-pruning"]
PRUNED = ["hp-fl", "random-pruning"]
CPU_RUN = "paper, trained on the CPU"
FINISHED = "paper, GPU run finished on the CPU"
#: the variants whose seeds make up the table of the paper's settings; of
#: several runs of one (seed, method), the longest counts
PAPER_VARIANTS = ("paper", CPU_RUN, FINISHED)
#: the variant of original FL with PyTorch's default initialisation (`fedsim.learn.model`)
PYTORCH_INIT = "PyTorch default initialisation"

#: the methods of the traffic table (each (seed, method)'s longest run)
TRAFFIC_METHODS = ("original", "hp-fl-0.41", "hp-fl-0.21", "hp-fl")

#: (name, system.payload overrides)
ENCODINGS = [
    ("values only (paper)", ("system.payload.mask_encoding=none",)),
    ("bitmask once", ("system.payload.mask_encoding=bitmask", "system.payload.mask_every_round=false")),
    ("bitmask every round", ("system.payload.mask_encoding=bitmask", "system.payload.mask_every_round=true")),
    ("indices every round", ("system.payload.mask_encoding=indices", "system.payload.mask_every_round=true")),
]


def _keep_longest(frame: pd.DataFrame, rounds: pd.Series) -> pd.DataFrame:
    """The rows of each (seed, method)'s longest run (variant); ``rounds``:
    each row's rounds run. Of equally long runs, the variant listed last in
    `VARIANTS` (the same trace: a continuation that had nothing to add)."""
    most = rounds.groupby([frame["seed"], frame["method"]]).transform("max")
    frame = frame[rounds == most]
    last = frame.groupby(["seed", "method"])["variant"].transform("last")
    return frame[frame["variant"] == last]


def longest(runs: pd.DataFrame) -> pd.DataFrame:
    """The paper's settings, one run per (seed, method): the longest."""
    paper = runs[runs["variant"].isin(PAPER_VARIANTS)]
    return _keep_longest(paper, paper["rounds_run"])

def longest_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Of each (seed, method)'s runs (variants), the one with the most rounds
    (the same choice as `longest`)."""
    return _keep_longest(curves, curves.groupby(["seed", "method", "variant"])["round"].transform("max"))
