"""write_report end to end on small synthetic frames that follow the column
contracts of docs/architecture.md, plus the Table I numbers by hand."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import colors as mcolors
from matplotlib import image as mimage

from fedsim.errors import InputError
from fedsim.report import write_report
from fedsim.report.scenario import clients as C
from fedsim.report.scenario import curves as F
from fedsim.report.scenario.tables import metrics_tables, summary_markdown
from fedsim.report.style import MethodStyle, method_colors

METHODS = ("original", "hpfl", "random")
REMAINING = {"original": 1.0, "hpfl": 0.107, "random": 0.107}
PARAMS = {"original": 266_610, "hpfl": 28_696, "random": 28_696}
# accuracy(r) = top - (top - 0.1) * exp(-r / tau): "random" never reaches 95 %
CURVES = {"original": (0.976, 6.0), "hpfl": (0.963, 12.0), "random": (0.94, 20.0)}
TARGETS = (0.9, 0.95)
DEADLINE_S = 6.0


def make_frames(
    n_rounds: int = 50, n_clients: int = 5, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """(rounds, metrics, timeline, meta) of a plausible 3-method run: clients
    with different link speeds and devices, 5 % dropouts, a deadline that the
    slowest client sometimes misses, absolute simulated times."""
    gen = np.random.default_rng(seed)
    downlink_bps = np.linspace(20e6, 60e6, n_clients)
    uplink_bps = np.linspace(5e6, 15e6, n_clients)
    full_compute_s = np.linspace(1.5, 3.5, n_clients)
    round_rows, client_rows, metric_rows = [], [], []
    for method in METHODS:
        payload_bytes = 4 * PARAMS[method]
        top, tau = CURVES[method]
        now_s = 0.0
        cum = {"bytes": 0.0, "compute": 0.0, "wall": 0.0}
        accs = []
        for round_num in range(1, n_rounds + 1):
            down_s = payload_bytes * 8 / downlink_bps
            compute_s = full_compute_s * REMAINING[method] * gen.uniform(0.9, 1.6, n_clients)
            up_s = payload_bytes * 8 / uplink_bps
            finish_s = down_s + compute_s + up_s
            dropout = gen.random(n_clients) < 0.05
            late = ~dropout & (finish_s > DEADLINE_S)
            kept = ~dropout & ~late
            round_s = DEADLINE_S if late.any() else float(finish_s[kept].max(initial=0.0))
            for k in range(n_clients):
                ds, de = now_s, now_s + down_s[k]
                cs, ce = de, de + compute_s[k]
                us, ue = (ce, ce + up_s[k]) if not dropout[k] else (np.nan, np.nan)
                reason = "dropout" if dropout[k] else ("deadline" if late[k] else "")
                client_rows.append(
                    dict(
                        method=method,
                        round=round_num,
                        client_id=k,
                        selected=True,
                        kept=bool(kept[k]),
                        drop_reason=reason,
                        download_start_s=ds,
                        download_end_s=de,
                        compute_start_s=cs,
                        compute_end_s=ce,
                        upload_start_s=us,
                        upload_end_s=ue,
                        down_bytes=payload_bytes,
                        up_bytes=0 if dropout[k] else payload_bytes,
                        compute_s=compute_s[k],
                    )
                )
            round_bytes = payload_bytes * (n_clients + int((~dropout).sum()))
            mean = {
                name: float(v[kept].mean())
                for name, v in (("download", down_s), ("compute", compute_s), ("upload", up_s))
            }
            accuracy = top - (top - 0.1) * np.exp(-round_num / tau) + gen.normal(0, 0.002)
            accs.append(accuracy)
            cum["bytes"] += round_bytes
            cum["compute"] += mean["compute"]
            cum["wall"] += round_s
            round_rows.append(
                dict(
                    method=method,
                    round=round_num,
                    accuracy=accuracy,
                    loss=1.0 - accuracy,
                    participants=int(kept.sum()),
                    round_bytes=round_bytes,
                    cum_bytes=cum["bytes"],
                    round_compute_s=mean["compute"],
                    cum_compute_s=cum["compute"],
                    round_wallclock_s=round_s,
                    cum_wallclock_s=cum["wall"],
                    mean_download_s=mean["download"],
                    mean_compute_s=mean["compute"],
                    mean_upload_s=mean["upload"],
                    mean_wait_s=round_s - sum(mean.values()),
                )
            )
            now_s += round_s
        method_rounds = pd.DataFrame([r for r in round_rows if r["method"] == method])
        for target in TARGETS:
            reached = method_rounds.loc[method_rounds["accuracy"] >= target]
            row = reached.iloc[0] if len(reached) else None
            metric_rows.append(
                dict(
                    method=method,
                    remaining_rate=REMAINING[method],
                    params=PARAMS[method],
                    comm_bytes_per_round=payload_bytes * 2 * n_clients,
                    compute_s_per_round=float(method_rounds["round_compute_s"].mean()),
                    target_accuracy=target,
                    nra=np.nan if row is None else row["round"],
                    cca_bytes=np.nan if row is None else row["cum_bytes"],
                    cta_s=np.nan if row is None else row["cum_compute_s"],
                    tta_s=np.nan if row is None else row["cum_wallclock_s"],
                    final_accuracy=accs[-1],
                    rounds_run=n_rounds,
                )
            )
    metrics = pd.DataFrame(metric_rows)
    metrics["nra"] = metrics["nra"].astype("Int64")  # as fedsim.metrics writes it
    meta = {
        "name": "synthetic",
        "description": "Three methods, five clients, fifty rounds of made-up accuracy.",
        "methods": list(METHODS),
        "targets": list(TARGETS),
        "labels": {"hpfl": "HP-FL"},
        "deadline_s": DEADLINE_S,
        "provenance": {"command": "pytest", "git commit": "0123abc"},
    }
    return pd.DataFrame(round_rows), metrics, pd.DataFrame(client_rows), meta


PAGE = re.compile(rb"/Type\s*/Page\b")
FIGURES = (
    "accuracy_vs_round",
    "accuracy_vs_traffic",
    "accuracy_vs_compute",
    "accuracy_vs_wallclock",
    "round_time_breakdown",
    "client_gantt",
    "client_round_times",
    "metrics_table",
)


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    return make_frames()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, frames) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("report")
    return out, write_report(out, *frames, dpi=50)


def test_write_report_writes_every_figure_the_pdf_and_the_summary(report) -> None:
    out, written = report
    expected = {f"figures/{name}.png" for name in FIGURES} | {"report.pdf", "summary.md"}
    assert set(written) == expected
    for relative, path in written.items():
        assert path == out / relative and path.is_file() and path.stat().st_size > 0
    for name in FIGURES:
        pixels = mimage.imread(out / "figures" / f"{name}.png")
        height, width, channels = pixels.shape
        assert channels in (3, 4)
        assert 120 <= height <= 2000 and 200 <= width <= 2000, (name, pixels.shape)
        assert pixels[..., :3].std() > 0.01, f"{name} is blank"
    pdf = (out / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    assert len(PAGE.findall(pdf)) == 1 + len(FIGURES)  # title page + figures
    # no temporary files left behind by the atomic writes
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_summary_links_the_figures_and_lists_both_targets(report) -> None:
    out, _ = report
    text = (out / "summary.md").read_text()
    assert text.startswith("# synthetic\n")
    assert "## Results at 90 % test accuracy" in text
    assert "## Results at 95 % test accuracy" in text
    assert "| git commit | 0123abc |" in text
    for name in FIGURES:
        assert f"(figures/{name}.png)" in text
    # "random" tops out near 87 % after 50 rounds: not reached at either target
    random_rows = [line for line in text.splitlines() if line.startswith("| random |")]
    assert len(random_rows) == 2
    assert all("| not reached (best " in row and "| — | — | — |" in row for row in random_rows)


def test_report_files_are_reproducible(tmp_path: Path, frames, report) -> None:
    out, _ = report
    again = write_report(tmp_path, *frames, dpi=50, formats=("pdf",))
    assert set(again) == {"report.pdf", "summary.md"}
    assert (tmp_path / "report.pdf").read_bytes() == (out / "report.pdf").read_bytes()
    # without PNGs the summary has no figure links; the tables are the same
    first = (out / "summary.md").read_text().split("## Figures")[0]
    assert (tmp_path / "summary.md").read_text().split("## Figures")[0].rstrip() == first.rstrip()


def _paper_frames() -> tuple[pd.DataFrame, pd.DataFrame, MethodStyle]:
    """Table I numbers by hand: LeNet-300-100 (266,610 parameters), K = 100."""
    payload_round_bytes = 266_610 * 4 * 200  # 213,288,000 B = 213.3 MB
    metrics = pd.DataFrame(
        [
            dict(
                method="original",
                remaining_rate=1.0,
                params=266_610,
                comm_bytes_per_round=payload_round_bytes,
                compute_s_per_round=10.0,
                target_accuracy=0.95,
                nra=129,
                cca_bytes=129 * payload_round_bytes,
                cta_s=129 * 10.0,
                tta_s=9000.0,
                final_accuracy=0.9761,
                rounds_run=3000,
            ),
            dict(
                method="random",
                remaining_rate=0.107,
                params=28_696,
                comm_bytes_per_round=28_696 * 4 * 200,
                compute_s_per_round=1.07,
                target_accuracy=0.95,
                nra=np.nan,
                cca_bytes=np.nan,
                cta_s=np.nan,
                tta_s=np.nan,
                final_accuracy=0.9402,
                rounds_run=400,
            ),
        ]
    )
    # random: best 94.1 % first at round 300 (again at 350), 94.02 % at the end
    accuracy = np.full(400, 0.90)
    accuracy[299] = accuracy[349] = 0.941
    accuracy[-1] = 0.9402
    rounds = pd.DataFrame({"method": "random", "round": np.arange(1, 401), "accuracy": accuracy})
    style = MethodStyle.build(
        {"methods": ["original", "pretrain", "hpfl", "random"]}, ["original", "random"]
    )
    return metrics, rounds, style


def test_table_i_numbers_by_hand() -> None:
    metrics, rounds, style = _paper_frames()
    (table,) = metrics_tables(metrics, rounds, style, [0.95])
    assert table.headers == (
        "Method",
        "P_R",
        "Params",
        "Comm./round",
        "Compute/round",
        "NRA@95 %",
        "CCA@95 %",
        "CTA@95 %",
        "TTA@95 %",
        "Final acc. (rounds run)",
    )
    # 129 x 213,288,000 B = 27.514 GB; 129 x 10 s = 1290 s = 21.5 min; 9000 s = 2.5 h
    assert table.rows[0] == (
        "original",
        "1.0",
        "266,610",
        "213.3 MB",
        "10.0 s",
        "129",
        "27.5 GB",
        "21.5 min",
        "2.5 h",
        "97.6 % (3000)",
    )
    # 28,696 x 4 B x 200 = 22,956,800 B = 23.0 MB
    assert table.rows[1] == (
        "random",
        "0.107",
        "28,696",
        "23.0 MB",
        "1.1 s",
        "not reached (best 94.1 % at round 300)",
        "—",
        "—",
        "—",
        "94.0 % (400)",
    )
    text = summary_markdown([table], {"name": "paper"})
    assert (
        "| original | 1.0 | 266,610 | 213.3 MB | 10.0 s | 129 | 27.5 GB | 21.5 min | 2.5 h | 97.6 % (3000) |"
        in text
    )


def test_reference_rows_show_the_paper_and_the_difference() -> None:
    metrics, rounds, style = _paper_frames()
    reference = {
        "original": {
            "nra": 134,
            "cca_bytes": 29.2e9,
            "cta_s": 22.5 * 60,
            "final_accuracy": 0.976,
            "comm_bytes_per_round": 213e6,
            "compute_s_per_round": 10,
        },
        "random": {"nra": 1388, "final_accuracy": 0.957, "target_accuracy": 0.9},
    }
    (table,) = metrics_tables(metrics, rounds, style, [0.95], reference)
    assert table.kinds == ("fedsim", "paper", "difference", "fedsim", "paper", "difference")
    paper, difference = table.rows[1], table.rows[2]
    assert paper == (
        "↳ paper",
        "",
        "",
        "213.0 MB",
        "10.0 s",
        "134",
        "29.2 GB",
        "22.5 min",
        "",
        "97.6 %",
    )
    # 129 - 134 = -5 rounds = -3.7 %; 27.514 - 29.2 GB = -1.686 GB = -5.8 %;
    # 1290 - 1350 s = -60 s = -4.4 %; 97.61 - 97.6 % = +0.0 pp
    assert difference[5:8] == ("-5 (-3.7 %)", "-1.7 GB (-5.8 %)", "-60.0 s (-4.4 %)")
    assert difference[3] == "+288.0 kB (+0.1 %)"
    assert difference[9] == "+0.0 pp"
    # random's nra belongs to the 90 % target: only its final accuracy applies at 95 %
    assert table.rows[4][5] == "" and table.rows[4][9] == "95.7 %"
    assert table.rows[5][9] == "-1.7 pp"
    text = summary_markdown([table], {"name": "paper"})
    assert "| *↳ paper* |  |  | *213.0 MB* | *10.0 s* | *134* |" in text


def test_a_method_keeps_its_colour_in_every_figure(frames) -> None:
    rounds, metrics, timeline, meta = frames
    style = MethodStyle.build(meta, METHODS)
    expected = method_colors(METHODS)
    assert dict(style.colors) == expected
    assert expected["original"] == "#1f77b4" and expected["random"] == "#2ca02c"
    # a report of a subset keeps the scenario's colours
    subset = MethodStyle.build(meta, ["random"])
    assert subset.order == ("random",) and subset.colors["random"] == expected["random"]

    curves = F.accuracy_curve(rounds, metrics, style, "traffic", list(TARGETS))
    ecdf = C.round_time_distribution(timeline, style)
    method_lines = {
        line.get_label(): mcolors.to_hex(line.get_color())
        for fig in (curves, ecdf)
        for line in fig.axes[0].get_lines()
        if not line.get_label().startswith("_")
    }
    assert method_lines["HP-FL"] == expected["hpfl"]
    ecdf_labels = [label for label in method_lines if "dropped" in label]
    assert len(ecdf_labels) == 3
    for method in METHODS:
        label = style.label(method)
        (ecdf_label,) = [lab for lab in ecdf_labels if lab.startswith(f"{label} (")]
        assert method_lines[label] == method_lines[ecdf_label] == expected[method]


def test_gantt_defaults_to_the_method_with_most_drops(frames) -> None:
    _, _, timeline, meta = frames
    style = MethodStyle.build(meta, METHODS)
    dropped = timeline.loc[timeline["selected"] & ~timeline["kept"]]
    counts = dropped.groupby("method").size()
    method, rounds = C.default_gantt_selection(timeline, style)
    assert counts[method] == counts.max()
    worst = dropped.loc[dropped["method"] == method].groupby("round").size().idxmax()
    assert rounds == sorted({1, 50, int(worst)})


def test_gantt_draws_one_bar_per_reached_phase(frames) -> None:
    _, _, timeline, meta = frames
    style = MethodStyle.build(meta, METHODS)
    fig = C.client_gantt(timeline, style, "original", [3], deadline_s=DEADLINE_S)
    (ax,) = fig.axes
    rows = timeline.loc[(timeline["method"] == "original") & (timeline["round"] == 3)]
    reached = int(
        rows[["download_end_s", "compute_end_s", "upload_end_s"]].notna().to_numpy().sum()
    )
    waits = int((rows["kept"] & rows["upload_end_s"].notna()).sum())
    assert len(ax.patches) == reached + waits
    # the deadline line sits at 6 s after the round's first download
    assert any(list(line.get_xdata()) == [DEADLINE_S, DEADLINE_S] for line in ax.get_lines())


def test_write_report_rejects_broken_inputs(tmp_path: Path, frames) -> None:
    rounds, metrics, timeline, meta = frames
    with pytest.raises(ValueError, match=r"rounds frame lacks columns \['cum_bytes'\]"):
        write_report(tmp_path, rounds.drop(columns="cum_bytes"), metrics, timeline, meta)
    with pytest.raises(ValueError, match="unknown report formats"):
        write_report(tmp_path, rounds, metrics, timeline, meta, formats=("png", "gif"))
    with pytest.raises(InputError, match=r"gantt_rounds: rounds \[51\]"):
        write_report(tmp_path, rounds, metrics, timeline, meta, gantt_rounds=[1, 51])
    assert not list(tmp_path.iterdir())


def test_report_without_timeline_skips_the_client_figures(tmp_path: Path, frames) -> None:
    rounds, metrics, _, meta = frames
    written = write_report(tmp_path, rounds, metrics, None, meta, formats=("svg",), dpi=50)
    assert "figures/client_gantt.svg" not in written
    assert "figures/accuracy_vs_round.svg" in written
    assert (tmp_path / "figures" / "accuracy_vs_round.svg").read_text().lstrip().startswith("<?xml")
