"""The HP-FL paper's published values (Tables I and II), shown beside
fedsim's in a scenario's report when ``report.reference: paper``.

Units: ``cca_bytes`` bytes, ``cta_s`` and ``compute_s_per_round`` seconds,
``comm_bytes_per_round`` bytes, ``final_accuracy`` a fraction; every value is
at the paper's target accuracy of 95 %.
"""

from __future__ import annotations

from typing import Any

#: The paper's values, keyed by (method kind, P_R rounded to 3 places; None for dense methods).
PAPER_REFERENCE = {
    ("original", None): {"nra": 134, "cca_bytes": 29.2e9, "cta_s": 22.5 * 60,
                         "final_accuracy": 0.976, "comm_bytes_per_round": 213e6,
                         "compute_s_per_round": 10.0},
    ("pretrained", None): {"nra": 126, "cca_bytes": 29.0e9, "cta_s": 22.3 * 60,
                           "final_accuracy": 0.972, "comm_bytes_per_round": 213e6,
                           "compute_s_per_round": 10.0},
    ("hp-fl", 0.107): {"nra": 824, "cca_bytes": 18.8e9, "cta_s": 14.7 * 60,
                       "final_accuracy": 0.963, "comm_bytes_per_round": 22.8e6,
                       "compute_s_per_round": 1.1},
    ("random-pruning", 0.107): {"nra": 1388, "cca_bytes": 31.7e9, "cta_s": 24.8 * 60,
                                "final_accuracy": 0.957, "comm_bytes_per_round": 22.8e6,
                                "compute_s_per_round": 1.1},
    ("hp-fl", 0.41): {"nra": 267, "cca_bytes": 23.4e9, "cta_s": 18.2 * 60,
                      "final_accuracy": 0.973, "comm_bytes_per_round": 87.3e6,
                      "compute_s_per_round": 4.1},
    ("hp-fl", 0.21): {"nra": 513, "cca_bytes": 23.0e9, "cta_s": 18.0 * 60,
                      "final_accuracy": 0.967, "comm_bytes_per_round": 44.7e6,
                      "compute_s_per_round": 2.1},
    ("hp-fl", 1.0): {"nra": 134, "cca_bytes": 29.2e9, "cta_s": 22.3 * 60,
                     "final_accuracy": 0.976, "comm_bytes_per_round": 213e6,
                     "compute_s_per_round": 10.0},
}

#: The target accuracy at which the paper reports NRA, CCA and CTA.
PAPER_TARGET_ACCURACY = 0.95


def reference_for(scenario: Any) -> dict[str, dict[str, float]] | None:
    """The paper's values for those of ``scenario``'s methods (a
    `fedsim.config.Scenario`) that Tables I/II report, by method label; None
    unless ``report.reference`` is ``paper``."""
    if scenario.report.reference != "paper":
        return None
    out = {}
    for label, method in scenario.methods.items():
        rate = None if method.remaining_rate is None else round(method.remaining_rate, 3)
        values = PAPER_REFERENCE.get((method.kind, rate))
        if values is not None:
            out[label] = {**values, "target_accuracy": PAPER_TARGET_ACCURACY}
    return out
