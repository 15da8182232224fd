"""paired.md: every comparison that reports/paper/README.md and findings.md
state, with one yardstick: per-seed paired differences, their mean, 95 %
Student-t interval and paired-t p-value; the paper's single runs against
fedsim's 95 % prediction intervals; per-round traffic against the paper's
formula; the mask's entropy bound; the mobile study's crossover.

Input: runs.csv and traffic.csv frames (`paper.traces.runs_frame`,
`traffic_frame`, or the committed CSVs), and the mobile study's sweep.csv.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fedsim import pipeline
from paper.common import PYTORCH_INIT, TABLE_I, TARGETS, longest
from paper.stats import binary_entropy, paired_stats, prediction_interval, t_quantile

#: LeNet-300-100: weights per layer (784x300, 300x100, 100x10) and biases; the
#: per-layer pruning keeps round(P_R x layer) weights, the biases are never pruned
LENET_WEIGHTS = (784 * 300, 300 * 100, 100 * 10)
LENET_BIASES = 300 + 100 + 10
#: clients, both directions, 32-bit values: bytes per round = values x 4 B x 2 x 100
PAPER_CLIENTS = 100

def _fmt_p(p: float) -> str:
    return "—" if math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else "< 0.001")


def _stat_row(label: str, stats: dict, fmt: str, offset: float = 0.0) -> str:
    """One row of a paired comparison; ``offset`` is added to every shown
    value (a ratio tested against 1 is passed as ratio - 1 with offset 1)."""
    diffs = ", ".join(format(d + offset, fmt) for d in stats["diffs"])
    if stats["n"] < 2:
        return f"| {label} | {diffs} | — | — | — | 1 seed |"
    return (f"| {label} | {diffs} | {stats['mean'] + offset:{fmt}} "
            f"| [{stats['low'] + offset:{fmt}}, {stats['high'] + offset:{fmt}}] | {_fmt_p(stats['p'])} "
            f"| {stats['same_sign']} of {stats['n']} |")


_STAT_HEAD = ["| comparison | per seed (0, 1, 2) | mean | 95 % interval (t, df = n-1) | p (paired t) "
              "| same sign |", "|:---|---:|---:|---:|---:|---:|"]


def _at(frame: pd.DataFrame, method: str, target: float, column: str, seeds=(0, 1, 2)) -> list[float]:
    rows = frame[(frame["method"] == method) & np.isclose(frame["target_accuracy"], target)]
    rows = rows.set_index("seed")[column]
    return [float(rows.get(s, np.nan)) for s in seeds]


def mobile_crossover(sweep: pd.DataFrame, work: str = "dense", target: float = 0.9,
                     factors=(0.9, 1.0, 1.1), compute=(1.0,)) -> list[tuple[float, float, str, float]]:
    """Where original FL starts to beat HP-FL in TTA along the uplink axis of
    the mobile study: (NRA factor, compute factor, the grid interval of the
    flip, the log-interpolated uplink in Mbps; NaN: no flip on the grid).

    NRA factor f: HP-FL's TTA times f, as if its NRA ratio against original
    FL were f times what it is, each round's duration kept. Compute factor c:
    each method's round at the fastest uplink (compute-bound) is taken as its
    link-independent part and scaled by c, the rest (time spent on the link)
    kept: TTA' = NRA x (c tau(u_max) + tau(u) - tau(u_max)), tau = TTA / NRA.
    Both are estimates on the simulated grid, not new simulations."""
    at = sweep[(sweep["system.compute.work_label"] == work) & np.isclose(sweep["target_accuracy"], target)]
    tta = at.pivot_table(index="system.clients.uplink.median", columns="method", values="tta_s").sort_index()
    nra = at.groupby("method")["nra"].first()
    labels = at.drop_duplicates("system.clients.uplink.median").set_index(
        "system.clients.uplink.median")["system.clients.uplink.median_label"]
    out = []
    for c in compute:
        scaled = {}
        for m in ("hp-fl", "original"):
            tau = tta[m] / nra[m]
            scaled[m] = nra[m] * (c * tau.iloc[-1] + tau - tau.iloc[-1])
        for f in factors:
            ratio = np.log(f * scaled["hp-fl"] / scaled["original"])  # < 0: HP-FL faster
            uplinks = ratio.index.to_numpy()
            flip = next((i for i in range(1, len(ratio)) if ratio.iloc[i - 1] < 0 <= ratio.iloc[i]), None)
            if flip is None:
                side = "original faster everywhere" if (ratio >= 0).all() else \
                    "HP-FL faster everywhere" if (ratio < 0).all() else "no single flip"
                out.append((f, c, f"none on the grid ({side})", math.nan))
                continue
            x0, x1 = math.log(uplinks[flip - 1]), math.log(uplinks[flip])
            y0, y1 = ratio.iloc[flip - 1], ratio.iloc[flip]
            x = x0 - y0 * (x1 - x0) / (y1 - y0)
            out.append((f, c, f"{labels[uplinks[flip - 1]]} - {labels[uplinks[flip]]}", math.exp(x) / 1e6))
    return out


def paired_report(runs: pd.DataFrame, traffic: pd.DataFrame, sweep: pd.DataFrame | None = None) -> str:
    """paired.md: every comparison that README.md and findings.md state, with
    the per-seed paired differences, their mean, 95 % t interval, paired-t p;
    the paper's single runs against fedsim's 95 % prediction intervals."""
    paper = longest(runs)
    md = ["# Paired statistics: one yardstick for every claim",
          "",
          "Generated by `python scripts/paper_tables.py` (or `--paired-only`, from runs.csv, traffic.csv "
          "and ../mobile_links/sweep.csv). A comparison of two methods pairs them by seed (same data "
          "split, same client shuffles): d = first minus second, per seed; mean of d; 95 % interval "
          "mean ± t(0.975, n-1) s/sqrt(n) (Student t, df = n - 1 = 2 for three seeds, t = "
          f"{t_quantile(0.975, 2):.4f}); p: two-sided paired t-test of mean d = 0; \"same sign\": "
          "how many seeds' d has the sign of the mean. With three seeds, 3 of 3 in sign is the most "
          "the data can say, and p below 0.05 needs |mean| > 4.3 standard errors. A single run (the "
          "paper's) is judged against fedsim's 95 % prediction interval for one new run, mean ± "
          "t(0.975, n-1) s sqrt(1 + 1/n), not against the standard deviation.",
          ""]

    # 1. the headline: HP-FL (0.107) against original FL
    md += ["## HP-FL at P_R 0.107 against original FL (the paper's headline)", "",
           "Seeds 0, 1, 2, each method's longest run, at the paper's 95 % unless stated. "
           "CCA counted the paper's way (surviving values only); CTA: client computation.", "",
           *_STAT_HEAD]
    for target in (0.95, 0.94):
        h, o = _at(paper, "hp-fl", target, "cca_bytes"), _at(paper, "original", target, "cca_bytes")
        md.append(_stat_row(f"CCA@{target:.0%}, HP-FL - original (GB)",
                            paired_stats(np.array(h) / 1e9, np.array(o) / 1e9), "+.1f"))
        md.append(_stat_row(f"CCA@{target:.0%}, HP-FL / original - 1 (%)",
                            paired_stats(100 * (np.array(h) / np.array(o) - 1), np.zeros(3)), "+.0f"))
    h, o = _at(paper, "hp-fl", 0.95, "cta_s"), _at(paper, "original", 0.95, "cta_s")
    md.append(_stat_row("CTA@95%, HP-FL - original (min)", paired_stats(np.array(h) / 60, np.array(o) / 60), "+.1f"))
    md.append(_stat_row("CTA@95%, HP-FL / original - 1 (%)",
                        paired_stats(100 * (np.array(h) / np.array(o) - 1), np.zeros(3)), "+.0f"))
    h, o = _at(paper, "hp-fl", 0.95, "nra"), _at(paper, "original", 0.95, "nra")
    md.append(_stat_row("NRA@95%, HP-FL / original (x)",
                        paired_stats(np.array(h) / np.array(o), np.ones(3)), ".1f", offset=1.0))
    bpr = {m: float(paper[paper["method"] == m]["comm_bytes_per_round"].iloc[0]) for m in ("hp-fl", "original")}
    md += ["", f"Break-even: HP-FL sends {bpr['hp-fl'] / 1e6:.1f} MB per round against "
           f"{bpr['original'] / 1e6:.1f} MB, so it saves traffic only if it needs fewer than "
           f"{bpr['original'] / bpr['hp-fl']:.2f}x original FL's rounds.", ""]

    # 2. FL with pre-training: the cheapest method
    md += ["## FL with pre-training against the others", "", *_STAT_HEAD]
    pre = np.array(_at(paper, "pretrained", 0.95, "cca_bytes")) / 1e9
    orig = np.array(_at(paper, "original", 0.95, "cca_bytes")) / 1e9
    hp = np.array(_at(paper, "hp-fl", 0.95, "cca_bytes")) / 1e9
    md.append(_stat_row("NRA@95%, pre-training - original (rounds)",
                        paired_stats(_at(paper, "pretrained", 0.95, "nra"), _at(paper, "original", 0.95, "nra")), "+.0f"))
    md.append(_stat_row("CCA@95%, pre-training - original (GB)", paired_stats(pre, orig), "+.1f"))
    md.append(_stat_row("CCA@95%, HP-FL 0.107 - pre-training (GB)", paired_stats(hp, pre), "+.1f"))
    md.append(_stat_row("CCA@95%, HP-FL 0.107 / pre-training (x)", paired_stats(hp / pre, np.ones(3)), ".2f", offset=1.0))
    md.append(_stat_row("CTA@95%, HP-FL 0.107 - pre-training (min)",
                        paired_stats(np.array(_at(paper, "hp-fl", 0.95, "cta_s")) / 60,
                                     np.array(_at(paper, "pretrained", 0.95, "cta_s")) / 60), "+.1f"))
    md += ["", "Seed 0, CCA@95 and CTA@95 of every method (HP-FL at 0.41 and 0.21 ran in seed 0 only):", "",
           "| method | CCA@95 | vs pre-training | CTA@95 | vs pre-training |", "|:---|---:|---:|---:|---:|"]
    s0 = paper[(paper["seed"] == 0) & np.isclose(paper["target_accuracy"], 0.95)].set_index("method")
    for method in ("pretrained", "original", "hp-fl-0.41", "hp-fl-0.21", "hp-fl", "random-pruning"):
        row, ref = s0.loc[method], s0.loc["pretrained"]
        md.append(f"| {method} | {row['cca_bytes'] / 1e9:.1f} GB | {row['cca_bytes'] / ref['cca_bytes']:.2f}x "
                  f"| {row['cta_s'] / 60:.1f} min | {row['cta_s'] / ref['cta_s']:.2f}x |")

    # 3. the moderate levels: seed 0 (the GPU's runs), then the seeds trained since on the CPU
    md += ["", "## HP-FL at P_R 0.41 and 0.21", "",
           "Seed 0, paired against original FL of seed 0, and, not paired, against original FL of "
           "seeds 1 and 2 (whose dense runs were faster than seed 0's):", "",
           "| method | CCA@95 | original seed 0 | seed 1 | seed 2 |", "|:---|---:|---:|---:|---:|"]
    for method in ("hp-fl-0.41", "hp-fl-0.21"):
        c = float(s0.loc[method, "cca_bytes"])
        cells = [f"{c / o - 1:+.0%} ({o / 1e9:.1f} GB)" for o in _at(paper, "original", 0.95, "cca_bytes")]
        md.append(f"| {method} | {c / 1e9:.1f} GB | " + " | ".join(cells) + " |")

    # 3b. the moderate levels in further seeds, and random pruning there (CPU runs)
    later = []
    for method in ("hp-fl-0.41", "hp-fl-0.21"):
        for seed in (1, 2):
            nra = _at(paper, method, 0.95, "nra", (seed,))[0]
            if not np.isnan(nra):
                c, o = _at(paper, method, 0.95, "cca_bytes", (seed,))[0], _at(paper, "original", 0.95,
                                                                               "cca_bytes", (seed,))[0]
                later.append(f"| {method} | {seed} | {nra:.0f} | {c / 1e9:.1f} GB | {c / o - 1:+.0%} "
                             f"({o / 1e9:.1f} GB) |")
    if later:
        md += ["", "Further seeds, trained on the CPU (paired with original FL of the same seed):", "",
               "| method | seed | NRA@95 | CCA@95 | against original FL |", "|:---|---:|---:|---:|---:|", *later]
    # 3c. a level run in all three seeds: the paired statistics of section 1
    full = [m for m in ("hp-fl-0.41", "hp-fl-0.21")
            if not np.isnan(_at(paper, m, 0.95, "cca_bytes")).any()]
    if full:
        md += ["", "Levels run to 95 % in all three seeds, paired by seed (CCA@95 the paper's way):", "",
               *_STAT_HEAD]
        for method in full:
            h = np.array(_at(paper, method, 0.95, "cca_bytes"))
            for ref in ("original", "pretrained"):
                r = np.array(_at(paper, ref, 0.95, "cca_bytes"))
                md.append(_stat_row(f"CCA@95%, {method} / {ref} - 1 (%)",
                                    paired_stats(100 * (h / r - 1), np.zeros(3)), "+.0f"))
    for random, hp in (("random41", "hp-fl-0.41"), ("random21", "hp-fl-0.21")):
        got = [(t, _at(paper, random, t, "nra", (0,))[0], _at(paper, hp, t, "nra", (0,))[0]) for t in TARGETS]
        if not all(np.isnan(r) for _, r, _ in got):
            ran = _at(paper, random, TARGETS[0], "rounds_run", (0,))[0]
            cells = "; ".join(f"{t:.0%}: {r:.0f} vs {h:.0f} ({r - h:+.0f})" if not np.isnan(r)
                              else f"{t:.0%}: not reached in its {ran:.0f} rounds vs {h:.0f}" for t, r, h in got)
            md += ["", f"Random pruning at the P_R of {hp} (per layer, seed 0, one paired difference, no "
                   f"interval), NRA random vs HP-FL: {cells}."]

    # 4. HP-FL against random pruning
    md += ["", "## Random pruning minus HP-FL at P_R 0.107 (rounds)", "", *_STAT_HEAD]
    for target in TARGETS:
        md.append(_stat_row(f"NRA@{target:.0%}, random - HP-FL", paired_stats(
            _at(paper, "random-pruning", target, "nra"), _at(paper, "hp-fl", target, "nra")), "+.0f"))
    glob = runs[(runs["variant"] == "global pruning")]
    cells = []
    for target in TARGETS:
        g = _at(glob, "random-pruning", target, "nra", (0,))[0] - _at(glob, "hp-fl", target, "nra", (0,))[0]
        cells.append(f"{target:.0%}: {g:+.0f}")
    md += ["", "The same with global pruning instead of per-layer (seed 0 only, one paired difference, no "
           f"interval): {'; '.join(cells)} rounds (random pruning first at 90 % and 95 %).", ""]

    # 4b. the initialisation ablation (original FL, three seeds each)
    init = runs[runs["variant"] == PYTORCH_INIT]
    if len(init):
        md += ["## Initialisation: PyTorch's default minus Glorot-uniform, original FL (rounds)", "",
               "Both to 95 % in seeds 0-2; Glorot-uniform (Keras' default, the scenario's) is the paper "
               "runs' original FL, PyTorch's default (`nn.Linear`: Kaiming-uniform a = sqrt(5)) "
               "was trained on the CPU (`model.init=pytorch_default`).", "", *_STAT_HEAD]
        for target in TARGETS:
            md.append(_stat_row(f"NRA@{target:.0%}, PyTorch default - Glorot", paired_stats(
                _at(init, "original", target, "nra"), _at(paper, "original", target, "nra")), "+.0f"))
        ratios = [f"{target:.0%}: " + ", ".join(f"{a / b:.2f}" for a, b in zip(
            _at(init, "original", target, "nra"), _at(paper, "original", target, "nra"), strict=True))
            for target in TARGETS]
        md += ["", "Ratio of rounds, PyTorch default / Glorot, per seed: " + "; ".join(ratios) + ".", ""]

    # 5. the paper's single runs against prediction intervals
    md += ["## The paper's single runs against fedsim's 95 % prediction intervals (NRA@95, seeds 0-2)", "",
           "| quantity | paper | fedsim per seed | fedsim mean | 95 % prediction interval | paper inside |",
           "|:---|---:|---:|---:|---:|:---|"]
    ref = {kind: v["nra"] for (kind, rate), v in pipeline.PAPER_REFERENCE.items() if rate in (None, 0.107)}
    quantities = [(m, ref[m], _at(paper, m, 0.95, "nra")) for m in TABLE_I]
    quantities.append(("random - HP-FL", ref["random-pruning"] - ref["hp-fl"],
                       list(np.subtract(_at(paper, "random-pruning", 0.95, "nra"), _at(paper, "hp-fl", 0.95, "nra")))))
    quantities.append(("pre-training - original", ref["pretrained"] - ref["original"],
                       list(np.subtract(_at(paper, "pretrained", 0.95, "nra"), _at(paper, "original", 0.95, "nra")))))
    for name, value, vals in quantities:
        mean, lo, hi = prediction_interval(vals)
        sign = "+" if " - " in name else ""
        md.append(f"| {name} | {value:{sign}.0f} | {', '.join(f'{v:{sign}.0f}' for v in vals)} | {mean:{sign}.0f} "
                  f"| [{lo:{sign}.0f}, {hi:{sign}.0f}] | {'yes' if lo <= value <= hi else 'no'} |")

    # 6. the implementation alternatives: one seed each
    md += ["", "## Implementation alternatives (seed 0, HP-FL at P_R 0.107): one paired difference each", "",
           "Alternative minus the paper's settings, same seed; n = 1, so no interval. Beside it the "
           "seed-to-seed standard deviation of HP-FL's NRA (seeds 0-2), which is not the spread of a "
           "within-seed difference (unmeasured) but the only scale the data gives.", "",
           "| variant | " + " | ".join(f"NRA@{t:.0%}" for t in TARGETS[1:]) + " |",
           "|:---|" + "---:|" * len(TARGETS[1:])]
    base = {t: _at(paper, "hp-fl", t, "nra", (0,))[0] for t in TARGETS}
    sds = {t: float(np.std(_at(paper, "hp-fl", t, "nra"), ddof=1)) for t in TARGETS}
    for variant, method in (("noise std 0.25 (not variance)", "hp-fl"), ("global pruning", "hp-fl"),
                            ("HP-FL from pre-trained weights", "hp-fl-pretrained")):
        rows = runs[runs["variant"] == variant]
        cells = []
        for t in TARGETS[1:]:
            v = _at(rows, method, t, "nra", (0,))[0]
            cells.append("not reached" if math.isnan(v) else f"{v - base[t]:+.0f} ({abs(v - base[t]) / sds[t]:.2f} sd)")
        md.append(f"| {variant} | " + " | ".join(cells) + " |")
    md.append("| seed sd of HP-FL's NRA | " + " | ".join(f"{sds[t]:.0f}" for t in TARGETS[1:]) + " |")

    # 7. per-round traffic against the paper's formula
    sparse = paper[paper["method"] == "hp-fl"].iloc[0]
    weights = sum(LENET_WEIGHTS)
    kept = int(sparse["params"]) - LENET_BIASES
    paper_values = (weights + LENET_BIASES) * 0.107
    per_value = 4 * 2 * PAPER_CLIENTS
    md += ["", "## Per-round traffic at P_R 0.107 against the paper's 22.8 MB", "",
           "| | values per message | MB per round | vs the paper's printed 22.8 MB |", "|:---|---:|---:|---:|",
           f"| the paper's formula, \\|θ\\| P_R = {weights + LENET_BIASES:,} x 0.107 | {paper_values:,.0f} "
           f"| {paper_values * per_value / 1e6:.3f} | {paper_values * per_value / 22.8e6 - 1:+.2%} (the paper's rounding) |",
           f"| + P_R = 0.8^10 = {0.8 ** 10:.5f} instead of 0.107 on the {weights:,} weights "
           f"| {kept - weights * 0.107:+,.0f} | | {(kept - weights * 0.107) * per_value / 22.8e6:+.2%} |",
           f"| + the {LENET_BIASES} biases, never pruned (the formula scales them by 0.107) "
           f"| {LENET_BIASES * (1 - 0.107):+,.0f} | | {LENET_BIASES * (1 - 0.107) * per_value / 22.8e6:+.2%} |",
           f"| fedsim: {kept:,} weights + {LENET_BIASES} biases | {int(sparse['params']):,} "
           f"| {sparse['comm_bytes_per_round'] / 1e6:.3f} | {sparse['comm_bytes_per_round'] / 22.8e6 - 1:+.2%} |",
           ""]

    # 8. the paper's Table I against its own formula
    dense_bytes = 266_610 * per_value
    md += ["## The paper's Table I against its own formula (NRA x bytes per round, NRA x compute per round)", "",
           "| row | NRA@95 | CCA printed | NRA x 213.3 MB | CTA printed | NRA x 10 s |", "|:---|---:|---:|---:|---:|---:|"]
    for (kind, rate), v in pipeline.PAPER_REFERENCE.items():
        per_round = dense_bytes if rate in (None, 1.0) else (weights + LENET_BIASES) * rate * per_value
        secs = 10.0 if rate in (None, 1.0) else 10.0 * rate
        md.append(f"| {kind}{'' if rate is None else f' {rate}'} | {v['nra']} | {v['cca_bytes'] / 1e9:.1f} GB "
                  f"| {v['nra'] * per_round / 1e9:.1f} GB | {v['cta_s'] / 60:.1f} min | {v['nra'] * secs / 60:.1f} min |")
    md += ["", "(For the sparse rows: NRA x |θ| P_R x 4 B x 200 and NRA x 10 s x P_R.)", ""]

    # 9. the mask on the wire
    md += ["## What the mask costs", "",
           "| P_R | H(P_R), bits per weight | entropy-coded mask, once per client | bitmask (1 bit per weight) |",
           "|---:|---:|---:|---:|"]
    for rate in (0.41, 0.21, 0.107):
        h = binary_entropy(rate)
        md.append(f"| {rate} | {h:.3f} | ≤ {h * weights / 8 / 1e3:.1f} kB | {weights / 8 / 1e3:.1f} kB |")
    md.append("")

    # 10. the mobile study's crossover
    if sweep is not None:
        at = sweep[np.isclose(sweep["target_accuracy"], 0.9) & (sweep["system.compute.work_label"] == "dense")]
        n = at.groupby("method")["nra"].first()
        md += ["## Mobile study: the crossover link speed (dense kernels, TTA@90 %, seed 0)", "",
               f"NRA@90: HP-FL {n['hp-fl']:.0f}, original {n['original']:.0f}, pre-training "
               f"{n['pretrained']:.0f}, random pruning {n['random-pruning']:.0f} (pre-training slower than "
               "original here, unlike on the paper's setup). Where original FL starts to beat HP-FL, "
               "with HP-FL's NRA (its ratio to original's) changed by a factor and the link-independent "
               "(compute-bound) part of every round, 10 s per round on the reference phone in the "
               "scenario, scaled by a factor; log-interpolated between the grid points. Estimates from "
               "the simulated grid (one seed, the 90 % target), not new simulations "
               "(`mobile_crossover`).", "",
               "| HP-FL's NRA x | compute x | flip between | interpolated crossover |", "|---:|---:|:---|---:|"]
        for f, c, interval, mbps in mobile_crossover(sweep, compute=(0.5, 1.0, 2.0)):
            md.append(f"| {f:.1f} | {c:.1f} | {interval} | {'—' if math.isnan(mbps) else f'{mbps:.2f} Mbps'} |")
        md.append("")
    return "\n".join(md)

