"""Energy per client and round (fedsim.system.energy): hand-computed cases on
hand-built timelines and a simulated deadline cut; ETA@x in the metrics; the
``system.energy`` section (presets, overrides, bad input) and its keys."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from fedsim import config, metrics, pipeline
from fedsim.cli import main
from fedsim.errors import InputError
from fedsim.system import Payload, SystemConfig, simulate
from fedsim.system.energy import CLIENT_ENERGY_COLUMNS, energy_frame, round_energy
from fedsim.system.energy_spec import EnergySpec
from fedsim.system.power import PRESETS

TINY = Path(__file__).parent / "scenarios" / "tiny.yaml"
LTE = PRESETS["lte"]
NAN = math.nan
# a made-up radio with round numbers: 1 W active, 0.5 W per Mbit/s either way,
# a 10 s tail at 1 W, a 1 s promotion at 2 W
ROUND = EnergySpec(base_w=1, down_w_per_mbps=0.5, up_w_per_mbps=0.5, tail_w=1, tail_s=10,
                   promotion_w=2, promotion_s=1, compute_w=3)


def timeline(*rows: tuple) -> pd.DataFrame:
    """Rows (round, client, download start/end, compute start/end, upload
    start/end, down bytes, up bytes, compute_s); NaN: phase not reached."""
    columns = ["round", "client_id", "download_start_s", "download_end_s", "compute_start_s",
               "compute_end_s", "upload_start_s", "upload_end_s", "down_bytes", "up_bytes",
               "compute_s"]
    frame = pd.DataFrame(rows, columns=columns)
    frame.insert(2, "selected", ~frame["download_start_s"].isna())
    return frame


def test_one_client_one_round_with_the_lte_preset_by_hand():
    # download 0-2 s (8 Mbit), compute 2-7 s, upload 7-9 s (4 Mbit); LTE numbers of Huang et al.
    row = energy_frame(timeline((1, 0, 0, 2, 2, 7, 7, 9, 1e6, 5e5, 5.0)), EnergySpec()).iloc[0]
    assert row["compute_j"] == pytest.approx(2.0 * 5)
    assert row["radio_down_j"] == pytest.approx(1.28804 * 2 + 0.05197 * 8)  # 2.99184
    assert row["radio_up_j"] == pytest.approx(1.28804 * 2 + 0.43839 * 4)  # 4.32964
    # the download's tail is cut by the upload 5 s later (5 < 11.576); the upload's runs out
    assert row["tail_j"] == pytest.approx(1.06 * 5 + 1.06 * 11.576)
    assert row["promotion_j"] == pytest.approx(1.2107 * 0.2601)  # once: the upload is in the tail
    assert row["energy_j"] == pytest.approx(10 + 2.99184 + 4.32964 + 1.06 * 16.576 + 0.31490307)


def test_a_single_transfer_pays_promotion_and_the_whole_tail():
    # a client that downloads (0-1 s, 8 Mbit), trains 3 s and drops out: no upload
    row = energy_frame(timeline((1, 0, 0, 1, 1, 4, NAN, NAN, 1e6, 0, 3.0)), ROUND).iloc[0]
    assert row[list(CLIENT_ENERGY_COLUMNS[2:])].tolist() == pytest.approx(
        [3 * 3, 1 * 1 + 0.5 * 8, 0, 10, 2, 9 + 5 + 10 + 2])


def test_two_transfers_within_the_tail_pay_it_once():
    # transfers 0-1 and 4-5: the first tail lasts 3 s, then the second's full 10 s;
    # one promotion. Far apart (0-1, 20-21): two full tails, two promotions.
    near = energy_frame(timeline((1, 0, 0, 1, 1, 4, 4, 5, 0, 0, 0.0)), ROUND).iloc[0]
    far = energy_frame(timeline((1, 0, 0, 1, 1, 20, 20, 21, 0, 0, 0.0)), ROUND).iloc[0]
    assert (near["tail_j"], near["promotion_j"]) == (3 + 10, 2)
    assert (far["tail_j"], far["promotion_j"]) == (10 + 10, 2 + 2)
    # a tail of exactly tail_s: the radio demoted just as the next transfer starts
    edge = energy_frame(timeline((1, 0, 0, 1, 1, 11, 11, 12, 0, 0, 0.0)), ROUND).iloc[0]
    assert (edge["tail_j"], edge["promotion_j"]) == (20, 4)


def test_the_tail_reaches_into_the_next_round_and_other_clients_do_not_cut_it():
    frame = timeline(
        (1, 0, 0, 1, 1, 2, 2, 3, 0, 0, 1.0),    # client 0 uploads until 3 s
        (1, 1, 0, 1, 1, 2, 2, 3, 0, 0, 1.0),    # client 1, the same
        (2, 0, 5, 6, 6, 7, 7, 8, 0, 0, 1.0),    # client 0's next download 2 s after its upload
        (2, 1, NAN, NAN, NAN, NAN, NAN, NAN, 0, 0, 0.0),  # client 1 not selected in round 2
    )
    energy = energy_frame(frame, ROUND)
    # round 1, client 0: tails 1 s (download -> upload) + 2 s (upload -> next round's download)
    assert energy["tail_j"].tolist() == [1 + 2, 1 + 10, 1 + 10, 0]
    assert energy["promotion_j"].tolist() == [2, 2, 0, 0]  # round 2's download found the radio awake
    per_round = round_energy(energy, frame["selected"], 2)
    assert per_round["round_energy_j"].tolist() == pytest.approx(
        [(3 + 1 + 1 + 3 + 2) + (3 + 1 + 1 + 11 + 2), 3 + 1 + 1 + 11])
    assert per_round["mean_client_energy_j"].tolist() == pytest.approx([(10 + 18) / 2, 16])


def test_each_method_is_its_own_device():
    frame = pd.concat([timeline((1, 0, 0, 1, 1, 2, 2, 3, 0, 0, 0.0)).assign(method=m)
                       for m in ("a", "b")], ignore_index=True)
    energy = energy_frame(frame, ROUND)
    assert energy.columns[0] == "method"
    assert energy["promotion_j"].tolist() == [2, 2] and energy["tail_j"].tolist() == [11, 11]


def test_a_deadline_cut_client_pays_until_the_cut(tmp_path):
    """Two clients on 8 Mbps links (rtt 0, unlimited server), 1 MB each way,
    10 s of training at speed 1 and 20 s at speed 0.5; deadline 15 s. Client 0:
    download 0-1, compute 1-11, upload 11-12 (kept). Client 1: download 0-1,
    trains 1-15 and is cut: 14 s of compute, no upload."""
    (tmp_path / "p.csv").write_text("client_id,downlink,uplink,rtt,speed,availability\n"
                                    "0,8 Mbps,8 Mbps,0 s,1,1\n1,8 Mbps,8 Mbps,0 s,0.5,1\n")
    system = SystemConfig.model_validate({"clients": {"trace": "p.csv"},
                                          "rounds": {"deadline": "15 s"}})
    result = simulate(system, client_samples=np.array([400, 400]),
                      payload=Payload(down_bytes=1_000_000, up_bytes=1_000_000),
                      work_fraction=1.0, rounds=1, seed=0, base_dir=tmp_path)
    assert result.timeline["drop_reason"].tolist() == ["", "deadline"]
    energy = energy_frame(result.timeline, EnergySpec()).set_index("client_id")
    promotion = 1.2107 * 0.2601
    down = 1.28804 * 1 + 0.05197 * 8
    assert energy.loc[1, "compute_j"] == pytest.approx(2.0 * 14)
    assert energy.loc[1, "radio_up_j"] == 0
    assert energy.loc[1, "energy_j"] == pytest.approx(28 + down + 1.06 * 11.576 + promotion)
    up = 1.28804 * 1 + 0.43839 * 8
    assert energy.loc[0, "energy_j"] == pytest.approx(
        20 + down + up + 1.06 * (10 + 11.576) + promotion)


def test_bad_timelines_are_refused():
    with pytest.raises(ValueError, match="lacks column"):
        energy_frame(timeline((1, 0, 0, 1, 1, 2, 2, 3, 0, 0, 1.0)).drop(columns="up_bytes"), ROUND)
    with pytest.raises(ValueError, match="download duration must be >= 0"):
        energy_frame(timeline((1, 0, 2, 1, 1, 2, 2, 3, 0, 0, 1.0)), ROUND)


# --- ETA@x in rounds.csv and metrics.csv


def test_eta_is_the_energy_summed_to_nra_and_nan_when_not_reached():
    frame = pd.DataFrame({
        "method": "a", "round": [1, 2, 3], "accuracy": [0.4, 0.6, 0.7], "loss": 0.0,
        "participants": 2, "round_bytes": 1.0, "round_compute_s": 1.0, "round_wallclock_s": 1.0,
        "round_energy_j": [10.0, 20.0, 40.0], "mean_client_energy_j": [5.0, 10.0, 20.0],
    })
    rounds = metrics.rounds_table(frame)
    assert tuple(rounds.columns) == metrics.ROUNDS_COLUMNS + metrics.ENERGY_ROUNDS_COLUMNS
    assert rounds["cum_energy_j"].tolist() == [10, 30, 70]
    table = metrics.metrics_table(rounds, [0.5, 0.7, 0.9], {"a": {"remaining_rate": 1.0, "params": 9}})
    assert tuple(table.columns) == metrics.METRICS_COLUMNS + metrics.ENERGY_METRICS_COLUMNS
    assert table["eta_j"].tolist()[:2] == [30, 70] and math.isnan(table["eta_j"].iloc[2])
    assert metrics.eta_j([10.0, 20.0, 40.0], 2) == 30 and metrics.eta_j([1.0], None) is None


# --- the system.energy section


def test_presets_and_overrides():
    assert EnergySpec().radio() == LTE
    assert EnergySpec(preset="wifi").radio().tail_s == pytest.approx(0.2381)
    radio = EnergySpec.model_validate({"preset": "5g", "tail_s": "500 ms", "up_w_per_mbps": 0.1}).radio()
    assert (radio.tail_s, radio.up_w_per_mbps, radio.base_w) == (0.5, 0.1, PRESETS["5g"].base_w)


@pytest.mark.parametrize(
    ("raw", "where", "message"),
    [
        ({"preset": "3g"}, "energy.preset", "Input should be 'lte', 'wifi' or '5g'"),
        ({"tail_w": -1}, "energy.tail_w", "-1 must be >= 0"),
        ({"compute_w": "inf"}, "energy.compute_w", "'inf' must be finite"),
        ({"tail_s": "2 Mbps"}, "energy.tail_s", "'2 Mbps' is not a duration"),
        ({"tail": 3}, "energy.tail", "Extra inputs are not permitted"),
    ],
)
def test_bad_energy_settings_name_the_key(raw, where, message):
    with pytest.raises(ValidationError) as info:
        SystemConfig.model_validate({"energy": raw})
    (error,) = info.value.errors()
    assert ".".join(str(p) for p in error["loc"]) == where and error["msg"].startswith(message)


def test_a_bad_energy_setting_exits_2_naming_the_file(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nmethods:\n  original: {}\nsystem:\n  energy:\n    tail_w: -2\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: system.energy.tail_w" in err and "-2 must be >= 0" in err
    with pytest.raises(InputError, match=r"system\.energy\.preset"):
        config.from_dict({"name": "x", "methods": {"original": {}},
                          "system": {"energy": {"preset": "lte-a"}}})


def test_energy_settings_leave_the_system_key_alone():
    """Energy is computed at join time: no setting of it re-simulates."""
    base = config.load(TINY)
    wifi = config.load(TINY, ["system.energy.preset=wifi", "system.energy.compute_w=5"])
    assert wifi.system.energy.radio() == PRESETS["wifi"] and wifi.system.energy.compute_w == 5
    payload = Payload(down_bytes=10, up_bytes=10)
    samples = np.full(4, 100, dtype=np.int64)
    assert pipeline.system_key(base, payload, 1.0, samples, None) == \
        pipeline.system_key(wifi, payload, 1.0, samples, None)
    assert config.section_key(base.system) == config.section_key(
        config.load(TINY, ["system.energy.preset=lte"]).system)


# --- the reports: summary.md's ETA column, the figures, a study ranked by energy


def test_the_scenario_report_has_eta_and_the_energy_figures(tmp_path):
    from fedsim.report import write_report
    from fedsim.report._units import format_joules

    system = SystemConfig.model_validate({"clients": {"downlink": "8 Mbps", "uplink": "8 Mbps"}})
    result = simulate(system, client_samples=np.array([400, 400, 400]),
                      payload=Payload(down_bytes=1_000_000, up_bytes=1_000_000),
                      work_fraction=1.0, rounds=3, seed=0)
    timeline = result.timeline
    joules = energy_frame(timeline, EnergySpec(preset="wifi"))
    per_round = round_energy(joules, timeline["selected"], 3)
    frame = result.round_costs().assign(
        method="original", accuracy=[0.4, 0.6, 0.7], loss=1.0,
        round_energy_j=per_round["round_energy_j"], mean_client_energy_j=per_round["mean_client_energy_j"])
    rounds = metrics.rounds_table(frame)
    table = metrics.metrics_table(rounds, [0.5], {"original": {"remaining_rate": 1.0, "params": 10}})
    eta = float(table["eta_j"].iloc[0])
    assert eta == pytest.approx(joules.loc[timeline["round"] <= 2, "energy_j"].sum())
    full = pd.concat([timeline, joules.drop(columns=["round", "client_id"])], axis=1).assign(method="original")
    written = write_report(tmp_path, rounds, table, full, {"name": "energy"}, formats=("svg",), dpi=50)
    assert {"figures/accuracy_vs_energy.svg", "figures/client_energy.svg"} <= set(written)
    summary = (tmp_path / "summary.md").read_text()
    assert "| ETA@50 % |" in summary and f"| {format_joules(eta)} |" in summary
    # without energy columns (an older frame) the report has neither
    plain = write_report(tmp_path / "plain", rounds.drop(columns=list(metrics.ENERGY_ROUNDS_COLUMNS)),
                         table.drop(columns="eta_j"), timeline.assign(method="original"),
                         {"name": "plain"}, formats=("svg",), dpi=50)
    assert not {"figures/accuracy_vs_energy.svg", "figures/client_energy.svg"} & set(plain)
    assert "ETA@50 %" not in (tmp_path / "plain" / "summary.md").read_text()


def test_a_study_ranks_by_energy_as_well_as_by_time(tmp_path):
    """Two link speeds x two configurations: dense FedAvg is faster at 100 Mbps,
    but the pruned one spends less energy at both speeds."""
    from fedsim.report import StudyReportInput, SweepAxis, write_sweep_report

    axis = "system.clients.uplink"
    # (method, rate): (TTA at 10, 100 Mbps), (ETA at 10, 100 Mbps)
    values = {("original", 1.0): ((900.0, 300.0), (5e4, 4e4)),
              ("hpfl", 0.41): ((600.0, 400.0), (3e4, 2e4))}
    rows = [{axis: link, f"{axis}_label": f"{link / 1e6:g} Mbps", "seed": 0, "method": method,
             "remaining_rate": rate, "target_accuracy": 0.9, "nra": 10, "cca_bytes": 1e9,
             "cta_s": 100.0, "tta_s": tta[i], "final_accuracy": 0.95, "rounds_run": 50, "eta_j": eta[i]}
            for (method, rate), (tta, eta) in values.items() for i, link in enumerate((1e7, 1e8))]
    report = StudyReportInput(name="energy study", axes=(SweepAxis(axis, "Client uplink", "bandwidth"),),
                              methods=("original", "hpfl"))
    write_sweep_report(tmp_path, pd.DataFrame(rows), report, formats=("svg",), dpi=50)
    summary = (tmp_path / "summary.md").read_text()
    time_part, energy_part = summary.split("### Best configuration by energy")
    assert "best changes between 10 Mbps and 100 Mbps: hpfl → original" in time_part
    assert "| 10 Mbps | hpfl | 30.0 kJ | original | 50.0 kJ |" in energy_part
    assert "| 100 Mbps | hpfl | 20.0 kJ | original | 40.0 kJ |" in energy_part
    assert "- nowhere: the order is the same" in energy_part
