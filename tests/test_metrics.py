"""NRA / CCA / CTA / TTA: hand-computed values, and the paper's formulas to the byte."""

import math

import numpy as np
import pandas as pd
import pytest

from fedsim.metrics import (
    METRICS_COLUMNS,
    ROUNDS_COLUMNS,
    cca_bytes,
    cta_s,
    metrics_table,
    nra,
    rounds_table,
    tta_s,
)
from fedsim.system import PayloadSpec, SystemConfig, payload_bytes, remaining_rate, simulate

LENET_WEIGHTS = [784 * 300, 300 * 100, 100 * 10]
LENET_BIASES = 410


def test_nra_is_the_first_round_at_or_above_the_target():
    accuracy = [0.5, 0.8, 0.95, 0.94, 0.97]
    assert nra(accuracy, 0.95) == 3
    assert nra(accuracy, 0.5) == 1
    assert nra(accuracy, 0.96) == 5
    assert nra(accuracy, 0.98) is None
    assert nra([math.nan, 0.96], 0.95) == 2  # a round that was not evaluated never counts
    assert nra([], 0.9) is None


def test_costs_are_prefix_sums_up_to_nra():
    assert cca_bytes([10, 20, 30], 2) == 30.0
    assert cta_s([1.5, 1.5, 1.5], 3) == 4.5
    assert tta_s([2.0, 3.0], 1) == 2.0
    assert cca_bytes([10, 20], None) is None
    with pytest.raises(ValueError, match=r"outside 1\.\.2"):
        tta_s([2.0, 3.0], 3)


def frame_for(method, accuracy, round_bytes, compute_s, wallclock_s):
    rounds = len(accuracy)
    return pd.DataFrame({
        "method": method,
        "round": np.arange(1, rounds + 1),
        "accuracy": accuracy,
        "loss": np.linspace(1, 0.1, rounds),
        "participants": 100,
        "round_bytes": round_bytes,
        "round_compute_s": compute_s,
        "round_wallclock_s": wallclock_s,
    })


def test_rounds_table_adds_running_sums():
    frame = pd.concat([
        frame_for("b", [0.2, 0.6, 0.9], [10.0, 10.0, 10.0], [1.0, 2.0, 3.0], [5.0, 5.0, 6.0]),
        frame_for("a", [0.5, 0.7], [4.0, 4.0], [1.0, 1.0], [2.0, 2.0]).iloc[::-1],
    ])
    table = rounds_table(frame)
    assert tuple(table.columns) == ROUNDS_COLUMNS
    assert table["method"].tolist() == ["b", "b", "b", "a", "a"]
    assert table["round"].tolist() == [1, 2, 3, 1, 2]
    assert table["cum_bytes"].tolist() == [10.0, 20.0, 30.0, 4.0, 8.0]
    assert table["cum_compute_s"].tolist() == [1.0, 3.0, 6.0, 1.0, 2.0]
    assert table["cum_wallclock_s"].tolist() == [5.0, 10.0, 16.0, 2.0, 4.0]
    with pytest.raises(ValueError, match=r"rounds must be 1\.\.2"):
        rounds_table(frame_for("a", [0.5, 0.7], 1.0, 1.0, 1.0).assign(round=[1, 3]))
    with pytest.raises(ValueError, match="lacks column"):
        rounds_table(frame.drop(columns="loss"))


def test_metrics_table_by_hand():
    frame = frame_for("hp-fl", [0.2, 0.6, 0.9, 0.85], [10.0] * 4, [1.0, 2.0, 3.0, 4.0],
                      [5.0, 5.0, 6.0, 7.0])
    table = metrics_table(frame, [0.5, 0.9, 0.95],
                          method_info={"hp-fl": {"remaining_rate": 0.107, "params": 28893}})
    assert tuple(table.columns) == METRICS_COLUMNS
    rows = table.set_index("target_accuracy")
    assert rows.loc[0.5, "nra"] == 2 and rows.loc[0.9, "nra"] == 3
    assert pd.isna(rows.loc[0.95, "nra"]) and math.isnan(rows.loc[0.95, "cca_bytes"])
    assert (rows.loc[0.9, "cca_bytes"], rows.loc[0.9, "cta_s"], rows.loc[0.9, "tta_s"]) == (30.0, 6.0, 16.0)
    assert (rows["final_accuracy"] == 0.85).all() and (rows["rounds_run"] == 4).all()
    assert (rows["comm_bytes_per_round"] == 10.0).all() and (rows["compute_s_per_round"] == 2.5).all()
    assert (rows["remaining_rate"] == 0.107).all() and (rows["params"] == 28893).all()
    assert str(table["nra"].dtype) == "Int64"


@pytest.mark.parametrize(
    ("kept", "nra_round"),
    [
        (LENET_WEIGHTS, 134),  # original FL: NRA@95 = 134 (paper Table I)
        ([round(0.107 * n) for n in LENET_WEIGHTS], 824),  # HP-FL at P_R = 0.107
    ],
)
def test_paper_formulas_to_the_byte_and_microsecond(kept, nra_round):
    """Paper setting: K = 100 identical clients with 400 samples, infinite links,
    no latency, all clients every round, values only at 32 bits, t_comp = 10 s.
    CCA = n_sent * 4 B * 2K * NRA with n_sent = |θ| = 266,610 for the dense model and
    surviving weights + biases for a sparse one; CTA = t_comp * P_R * NRA."""
    clients = 100
    payload = payload_bytes(LENET_WEIGHTS, kept, LENET_BIASES, PayloadSpec())
    p_r = remaining_rate(LENET_WEIGHTS, kept)
    result = simulate(SystemConfig(), client_samples=np.full(clients, 400), payload=payload,
                      work_fraction=p_r, rounds=nra_round + 5, seed=0)
    accuracy = np.where(np.arange(1, nra_round + 6) >= nra_round, 0.96, 0.5)
    frame = result.round_costs().assign(method="m", accuracy=accuracy, loss=0.0)
    row = metrics_table(frame, [0.95]).iloc[0]
    n_sent = sum(kept) + LENET_BIASES
    if kept == LENET_WEIGHTS:
        assert n_sent == 266_610
    assert row["nra"] == nra_round
    assert row["cca_bytes"] == n_sent * 4 * 2 * clients * nra_round  # to the byte
    assert row["cta_s"] == pytest.approx(10.0 * p_r * nra_round, abs=1e-6)  # to the microsecond
    assert row["tta_s"] == pytest.approx(10.0 * p_r * nra_round, abs=1e-6)  # compute-only rounds
    assert cca_bytes(frame["round_bytes"], nra_round) == row["cca_bytes"]
