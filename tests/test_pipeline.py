"""The scenario pipeline end to end on the tiny scenario (real MNIST, real
training, real SimPy): outputs, golden metrics, caching, resume, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsim import config, pipeline, store
from fedsim.learn.model import resolve_device
from fedsim.pipeline import outputs, stages, training

GOLDEN = Path(__file__).parent / "golden" / "tiny_metrics.csv"


def run_tiny(tiny_path: Path, out: Path, overrides: tuple[str, ...] = (), **kwargs) -> pipeline.ScenarioResult:
    scenario = config.load(tiny_path, overrides)
    return pipeline.run(scenario, out_dir=out, base_dir=tiny_path.parent, **kwargs)


@pytest.fixture
def tiny_run(tiny_path: Path, cache_root: Path, tmp_path: Path) -> pipeline.ScenarioResult:
    return run_tiny(tiny_path, tmp_path / "out")


def test_outputs_follow_the_contract(tiny_run: pipeline.ScenarioResult, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for name in ("metrics.csv", "rounds.csv", "rounds.parquet", "metrics.parquet", "timeline.parquet",
                 "scenario.resolved.yaml", "summary.md", "provenance.json"):
        assert (out / name).is_file(), name
    assert list(out.glob("figures/*.png"))
    assert not list(out.glob(".partial-*")), "staging directory left behind"
    metrics = pd.read_csv(out / "metrics.csv")
    for column in ("method", "remaining_rate", "params", "comm_bytes_per_round", "compute_s_per_round",
                   "target_accuracy", "nra", "cca_bytes", "cta_s", "tta_s", "final_accuracy", "rounds_run"):
        assert column in metrics.columns
    rounds = pd.read_csv(out / "rounds.csv")
    for column in ("method", "round", "accuracy", "loss", "participants", "round_bytes", "cum_bytes",
                   "round_compute_s", "cum_compute_s", "round_wallclock_s", "cum_wallclock_s"):
        assert column in rounds.columns
    assert len(rounds) == 2 * 3 and len(metrics) == 2 * 2
    # CCA/CTA/TTA at NRA@x are the cum_* values of round NRA@x
    for row in metrics.dropna(subset=["nra"]).itertuples():
        at = rounds[(rounds["method"] == row.method) & (rounds["round"] == row.nra)].iloc[0]
        assert row.cca_bytes == at["cum_bytes"] and row.cta_s == at["cum_compute_s"]
        assert row.tta_s == at["cum_wallclock_s"]
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["fedsim"] and provenance["torch"] and "train" in provenance["stage_seconds"]
    # hp-fl at P_R 0.8 sends fewer bytes than the dense original
    per_round = metrics.groupby("method")["comm_bytes_per_round"].first()
    assert per_round["hp-fl"] < per_round["original"]


def test_golden_metrics(tiny_run: pipeline.ScenarioResult) -> None:
    """The tiny scenario's metrics against a checked-in expectation. Accuracy is
    compared with a tolerance (float summation order may differ across BLAS
    builds); traffic and simulated times are exact arithmetic. The golden file
    is the metrics.csv of a real run (regenerate: `pipeline.compute` on
    tests/scenarios/tiny.yaml, ``metrics.to_csv(GOLDEN, index=False)``)."""
    expected = pd.read_csv(GOLDEN)
    got = tiny_run.metrics.reset_index(drop=True)
    assert list(got["method"]) == list(expected["method"])
    assert list(got["target_accuracy"]) == list(expected["target_accuracy"])
    np.testing.assert_allclose(got["final_accuracy"], expected["final_accuracy"], atol=0.01)
    np.testing.assert_allclose(got["comm_bytes_per_round"], expected["comm_bytes_per_round"], rtol=1e-12)
    np.testing.assert_allclose(got["compute_s_per_round"], expected["compute_s_per_round"], rtol=1e-9)
    assert list(got["nra"].astype("float").fillna(-1)) == list(expected["nra"].fillna(-1))
    for column in ("cca_bytes", "cta_s", "tta_s"):  # NaN where the target is not reached
        np.testing.assert_allclose(got[column].astype(float), expected[column], rtol=1e-9, err_msg=column)
    # the scenario learns: clearly above chance (10 %), and the first target is reached
    assert (got["final_accuracy"] > 0.5).all()
    reached = got.dropna(subset=["nra"])
    assert set(reached["method"]) == {"original", "hp-fl"}
    # what ties the four metrics (so the golden is not an echo of itself): every
    # client takes part in every round, so CCA and CTA are NRA x the per-round
    # figures; TTA is the sum of the round times up to NRA, and a round lasts at
    # least a client's compute, one RTT and its two transfers at the server's rate
    scenario = tiny_run.scenario
    rtt_s = scenario.system.clients.rtt.value
    for row in reached.itertuples():
        nra = int(row.nra)
        rounds = tiny_run.rounds[tiny_run.rounds["method"] == row.method].set_index("round")
        assert rounds.loc[nra, "accuracy"] >= row.target_accuracy > rounds.loc[: nra - 1, "accuracy"].max()
        assert row.cca_bytes == nra * row.comm_bytes_per_round
        assert row.cta_s == pytest.approx(nra * row.compute_s_per_round, rel=1e-12)
        assert row.tta_s == pytest.approx(rounds.loc[:nra, "round_wallclock_s"].sum(), rel=1e-12)
        per_client_bytes = row.comm_bytes_per_round / (2 * scenario.data.partition.num_clients)
        transfers_s = per_client_bytes * 8 / scenario.system.server.downlink + \
            per_client_bytes * 8 / scenario.system.server.uplink
        assert row.tta_s >= row.cta_s + nra * (rtt_s + transfers_s)


def test_second_run_uses_the_cache(tiny_path: Path, cache_root: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    first = run_tiny(tiny_path, tmp_path / "a")

    def forbidden(*args, **kwargs):
        raise AssertionError("a cached stage ran again")

    monkeypatch.setattr(training, "train", forbidden)
    monkeypatch.setattr(stages, "simulate", forbidden)
    monkeypatch.setattr(stages, "pretrain", forbidden)
    second = run_tiny(tiny_path, tmp_path / "b")
    pd.testing.assert_frame_equal(first.metrics, second.metrics)
    pd.testing.assert_frame_equal(first.rounds, second.rounds)


def test_cache_keys_follow_what_each_stage_reads(tiny_path: Path) -> None:
    base = config.load(tiny_path)
    faster = config.load(tiny_path, ["system.clients.uplink=50 Mbps"])
    new_lr = config.load(tiny_path, ["fl.lr=0.05"])
    explicit_default = config.load(tiny_path, ["fl.batch_size=60", "pretrain.noise_var=0.25"])
    more_levels = config.load(tiny_path, ["pretrain.iterations=4"])
    new_noise = config.load(tiny_path, ["pretrain.noise_var=0.1"])
    method = base.methods["hp-fl"]
    cpu = resolve_device("cpu")

    def train_key(s: config.Scenario) -> str:
        return pipeline.train_key(s, s.methods["hp-fl"], None, cpu)

    # a bandwidth changes neither pre-training nor training (full participation)
    assert pipeline.pretrain_key(faster) == pipeline.pretrain_key(base)
    assert train_key(faster) == train_key(base)
    assert config.section_key(faster.system) != config.section_key(base.system)
    # a learning rate re-trains but keeps the ticket
    assert train_key(new_lr) != train_key(base)
    assert pipeline.pretrain_key(new_lr) == pipeline.pretrain_key(base)
    # writing a default explicitly changes nothing
    assert train_key(explicit_default) == train_key(base)
    assert pipeline.pretrain_key(explicit_default) == pipeline.pretrain_key(base)
    # more IMP iterations extend the same ticket; the noise makes another one
    assert pipeline.pretrain_key(more_levels) == pipeline.pretrain_key(base)
    assert pipeline.pretrain_key(new_noise) != pipeline.pretrain_key(base)
    # participation enters the training key
    some = [np.array([0, 1]), np.array([1, 2]), np.array([0, 3])]
    assert pipeline.train_key(base, method, some, cpu) != train_key(base)


def test_bandwidth_change_reruns_only_the_simulation(tiny_path: Path, cache_root: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    first = run_tiny(tiny_path, tmp_path / "a")
    calls = {"simulate": 0}
    real_simulate = stages.simulate

    def counting(*args, **kwargs):
        calls["simulate"] += 1
        return real_simulate(*args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("training ran again for a bandwidth change")

    monkeypatch.setattr(stages, "simulate", counting)
    monkeypatch.setattr(training, "train", forbidden)
    second = run_tiny(tiny_path, tmp_path / "b", ("system.clients.uplink=1 Mbps",))
    assert calls["simulate"] == 2  # one per method
    np.testing.assert_array_equal(first.rounds["accuracy"], second.rounds["accuracy"])
    assert (second.rounds["cum_wallclock_s"].to_numpy() > first.rounds["cum_wallclock_s"].to_numpy()).all()


def test_resume_after_interrupt_equals_uninterrupted(tiny_path: Path, cache_root: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = ("rounds.max=5", "rounds.checkpoint_every=2", "methods={original: {}}")
    reference = run_tiny(tiny_path, tmp_path / "ref", overrides).rounds

    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache2"))
    real_train = training.train

    def interrupted(*args, **kwargs):
        on_round = kwargs["on_round"]

        def hook(round_num, params, record):
            on_round(round_num, params, record)
            if round_num == 3:
                raise KeyboardInterrupt

        return real_train(*args, **{**kwargs, "on_round": hook})

    monkeypatch.setattr(training, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_tiny(tiny_path, tmp_path / "out", overrides)
    assert not (tmp_path / "out" / "metrics.csv").exists()

    started = []

    def resumed(*args, **kwargs):
        started.append(kwargs["start"].round_num if kwargs.get("start") else 0)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(training, "train", resumed)
    again = run_tiny(tiny_path, tmp_path / "out", overrides).rounds
    assert started == [3], "an interrupt checkpoints every finished round (round 3; the last periodic one is 2)"
    pd.testing.assert_frame_equal(reference, again)


def test_corrupt_cache_entry_is_recomputed(tiny_path: Path, cache_root: Path, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    first = run_tiny(tiny_path, tmp_path / "a")
    entries = list((cache_root / "train").iterdir())
    assert entries
    victim = next(p for p in entries[0].iterdir() if p.name.startswith("trace"))
    victim.write_bytes(victim.read_bytes()[:100])  # truncate
    caplog.set_level("WARNING")
    second = run_tiny(tiny_path, tmp_path / "b")
    assert any("corrupt" in r.message for r in caplog.records)
    pd.testing.assert_frame_equal(first.rounds, second.rounds)


def test_failed_report_keeps_earlier_results(tiny_path: Path, cache_root: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    run_tiny(tiny_path, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    import fedsim.report

    monkeypatch.setattr(fedsim.report, "write_report", broken)
    with pytest.raises(RuntimeError):
        run_tiny(tiny_path, out, ("fl.lr=0.05",))
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before


def test_atomic_write_keeps_old_file_on_error(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    store.write_text(path, "old\n")
    with pytest.raises(ValueError), store.atomic_write(path, "w") as handle:
        handle.write("half a ta")
        raise ValueError("crash mid-write")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_cache_entry_detects_tampering(tmp_path: Path) -> None:
    entry = store.CacheEntry("stage", "key", root=tmp_path)
    store.write_bytes(entry.file("a.bin"), b"payload")
    assert not entry.valid()
    entry.seal(["a.bin"])
    assert entry.valid()
    (entry.path / "a.bin").write_bytes(b"payloaX")
    assert not entry.valid()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_results_render_from_the_cache_without_a_gpu(tiny_path: Path, cache_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A run keyed on CUDA reads its cached stages on a CPU-only machine; a
    stage missing from the cache fails with an error naming the device."""
    from fedsim.errors import InputError

    with pytest.raises(InputError, match=r"pre-training to IMP level 1 is not in the cache and must be computed on cuda: device 'cuda'"):
        run_tiny(tiny_path, tmp_path / "none", ("device=cuda",))
    assert not (tmp_path / "none").exists()
    first = run_tiny(tiny_path, tmp_path / "cpu")
    scenario = config.load(tiny_path)
    for key in first.cache_keys:  # stand in for a GPU's run: copy the CPU's traces to the CUDA keys
        if key.startswith("train/"):
            cpu_key = first.cache_keys[key]
            label = key.split("/", 1)[1]
            cuda_key = pipeline.train_key(scenario, scenario.methods[label], None, __import__("torch").device("cuda"))
            assert cuda_key != cpu_key
            (cache_root / "train" / cpu_key).rename(cache_root / "train" / cuda_key)
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("training ran"))
    second = run_tiny(tiny_path, tmp_path / "cuda", ("device=cuda",))
    pd.testing.assert_frame_equal(first.metrics, second.metrics)
    prov = json.loads((tmp_path / "cuda" / "provenance.json").read_text())
    assert prov["device"].startswith("cuda (none on this machine")
    assert set(prov["training_computed_on"].values()) == {next(iter(first.methods.values())).trace.meta["device_name"]}


def test_cached_only_reports_what_the_cache_holds(tiny_path: Path, cache_root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """--cached-only trains nothing: each method ends at its last cached
    round, and a method with no cached training is an error."""
    from fedsim.errors import InputError

    with pytest.raises(InputError, match=r"pre-training to IMP level 1 is not in the cache, and --cached-only"):
        run_tiny(tiny_path, tmp_path / "none", cached_only=True)
    short = run_tiny(tiny_path, tmp_path / "short", ("rounds.max=2",))
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("training ran"))
    partial = run_tiny(tiny_path, tmp_path / "partial", cached_only=True)  # rounds.max is 3
    assert set(partial.metrics["rounds_run"]) == {2}
    pd.testing.assert_frame_equal(partial.rounds, short.rounds)
    with pytest.raises(InputError, match=r"training of hp-fl-pre is not in the cache"):
        run_tiny(tiny_path, tmp_path / "new", ("methods.hp-fl-pre={kind: hp-fl-pretrained, level: 1}",),
                 cached_only=True)


def test_a_run_cut_short_on_one_device_continues_on_another(tiny_path: Path, cache_root: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """--continue-from cuda: a GPU run cut short (stood in for by CPU traces
    under the CUDA keys) is continued on the CPU from its last checkpoint,
    into an entry of its own; the trace says which device ran which rounds,
    and the result is the run trained on one device throughout."""
    import torch

    from fedsim.learn import federated

    straight = run_tiny(tiny_path, tmp_path / "straight")  # 3 rounds on the CPU, the reference
    scenario = config.load(tiny_path)
    with monkeypatch.context() as patch:
        for module in (training, outputs, federated):
            patch.setattr(module, "device_name", lambda device: "stand-in GPU")
        short = run_tiny(tiny_path, tmp_path / "short", ("rounds.max=2",), force=True)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    labels = [key.split("/", 1)[1] for key in short.cache_keys if key.startswith("train/")]
    for label in labels:
        (cache_root / "train" / short.cache_keys[f"train/{label}"]).rename(
            cache_root / "train" / pipeline.train_key(scenario, scenario.methods[label], None, cuda))

    starts: list[int] = []
    real_train = training.train

    def train(*args, **kwargs):
        starts.append(kwargs["start"].round_num)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(training, "train", train)
    continued = run_tiny(tiny_path, tmp_path / "continued", continue_from="cuda")
    assert starts == [2] * len(labels)  # only round 3 trained, from the GPU's checkpoint
    pd.testing.assert_frame_equal(continued.rounds, straight.rounds)
    for label in labels:
        key = continued.cache_keys[f"train/{label}"]
        method = scenario.methods[label]
        assert key == pipeline.train_key(scenario, method, None, cpu, continued_from=cuda)
        assert key not in (straight.cache_keys[f"train/{label}"], pipeline.train_key(scenario, method, None, cuda))
        segments = continued.methods[label].trace.segments()
        assert [(s["first"], s["last"], s["device_name"]) for s in segments] == [
            (1, 2, "stand-in GPU"), (3, 3, straight.methods[label].trace.meta["device_name"])]
    prov = json.loads((tmp_path / "continued" / "provenance.json").read_text())
    assert set(prov["training_computed_on"].values()) == {
        f"stand-in GPU (rounds 1-2), {straight.methods[labels[0]].trace.meta['device_name']} (rounds 3-3)"}
    # the GPU's own entries are untouched, and the continued run reports from the cache
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("training ran"))
    gpu = run_tiny(tiny_path, tmp_path / "gpu", ("device=cuda",), cached_only=True)
    assert set(gpu.metrics["rounds_run"]) == {2}
    again = run_tiny(tiny_path, tmp_path / "again", cached_only=True, continue_from="cuda")
    pd.testing.assert_frame_equal(again.rounds, straight.rounds)


def test_continue_from_without_a_run_there_trains_as_usual(tiny_path: Path, cache_root: Path,
                                                           tmp_path: Path) -> None:
    """With no cached run on the --continue-from device, a method trains from
    round 1 into its ordinary entry."""
    plain = run_tiny(tiny_path, tmp_path / "plain")
    other = run_tiny(tiny_path, tmp_path / "other", continue_from="cuda")
    assert other.cache_keys == plain.cache_keys
    pd.testing.assert_frame_equal(other.rounds, plain.rounds)
