"""The Python API (fedsim/api.py) and docs/python-api.md, whose examples run here.

The scenario of most tests is `SMALL`: 4 MNIST clients x 100 images, dense
FedAvg, 2 rounds, no pre-training (seconds). The torchvision adapter has tests
of its own in this file too, with duck-typed datasets and PIL images
(torchvision itself is not installed here).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import fedsim
from fedsim import api
from fedsim.errors import InputError
from fedsim.learn import methods
from fedsim.store.artifacts import SCENARIO_OUTPUTS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "python-api.md"
EXAMPLE = ROOT / "examples" / "custom_model"

SMALL = {
    "name": "api-small",
    "seed": 0,
    "data": {"dataset": "mnist", "unlabeled": 0,
             "partition": {"scheme": "shards", "num_clients": 4, "shard_size": 10,
                           "shards_per_client": 10}},
    "methods": {"original": {}},
    "system": {"clients": {"downlink": "20 Mbps", "uplink": "5 Mbps", "rtt": "50 ms"}},
    "targets": [0.5],
    "rounds": {"max": 2},
    "device": "cpu",
    "report": {"formats": []},
}


@pytest.fixture
def registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty model and dataset aliases, and a method registry restored afterwards."""
    monkeypatch.setattr(api, "_MODELS", {})
    monkeypatch.setattr(api, "_DATASETS", {})
    if hasattr(methods, "_REGISTRY"):
        monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))


# --------------------------------------------------------------------------- the docs


def doc_blocks() -> list[tuple[str, str]]:
    """(info string, code) of every fenced python block of docs/python-api.md."""
    return [(m[1].strip(), m[2]) for m in
            re.finditer(r"^```(python[^\n]*)\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.M | re.S)]


def test_the_docs_examples_compile() -> None:
    """Every block is Python (the fast check; the next test runs them)."""
    blocks = doc_blocks()
    assert len(blocks) >= 9
    for info, code in blocks:
        compile(code, f"{DOC.name} {info} block", "exec")


@pytest.mark.slow  # seven tiny trainings and two reports: 47 s on 2 loaded cores
def test_the_docs_examples_run(tmp_path: Path, cache_root: Path, registries: None,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for name in ("examples", "scenarios"):
        (work / name).symlink_to(ROOT / name)
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the docs insert examples/custom_model
    monkeypatch.delitem(sys.modules, "custom_mlp", raising=False)
    blocks = doc_blocks()
    skipped = [code for info, code in blocks if info != "python"]
    assert len(skipped) == 1 and "needs torchvision" in skipped[0]
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for info, code in blocks:
        if info == "python":
            exec(compile(code, f"{DOC.name} block", "exec"), namespace)
    # what the examples claim
    assert namespace["first"].out_dir is None
    assert (work / "reports" / "custom-model-small" / SCENARIO_OUTPUTS["rounds"]).is_file()
    assert namespace["tiny_mlp"].metrics["params"].iloc[0] == 785 * 32 + 33 * 10
    assert namespace["on_npz"].scenario["data"]["npz"] == str(work / "mnist-small.npz")
    halved = namespace["halved"].rounds["accuracy"].tolist()
    assert halved != namespace["first"].rounds["accuracy"].tolist()  # another start, other accuracies
    sweep = namespace["sweep"]
    assert len(sweep) == 2 and sweep["tta_s"].iloc[0] != sweep["tta_s"].iloc[1]


def test_the_docs_table_lists_every_public_function() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in ("run", "load_report", "load_scenario", "register_model", "register_dataset",
                 "register_method", "replay", "study"):
        assert f"`fedsim.{name}(" in text or f"`fedsim.api.{name}(" in text, name
        assert callable(getattr(api, name))


# --------------------------------------------------------------------------- run and load_report


def test_a_report_loads_as_the_frames_that_were_computed(tmp_path: Path, cache_root: Path) -> None:
    computed = api.run(SMALL)
    assert computed.out_dir is None and computed.provenance is None
    assert computed.rounds["round"].tolist() == [1, 2]
    written = api.run(SMALL, out=tmp_path / "out")
    assert written.out_dir == tmp_path / "out"
    assert written.provenance["command"].startswith("fedsim.api.run <dict>")
    for name in ("rounds", "metrics", "timeline"):
        pd.testing.assert_frame_equal(getattr(written, name), getattr(computed, name))
    assert written.scenario == computed.scenario
    # CSV only (Parquet removed): the same values
    for name in ("rounds_parquet", "metrics_parquet"):
        (tmp_path / "out" / SCENARIO_OUTPUTS[name]).unlink()
    from_csv = api.load_report(tmp_path / "out")
    pd.testing.assert_frame_equal(from_csv.rounds, computed.rounds, check_dtype=False)
    pd.testing.assert_frame_equal(from_csv.metrics, computed.metrics, check_dtype=False)


def test_overrides_rounds_methods_and_device_are_the_cli_options(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump({**{k: v for k, v in SMALL.items() if k != "name"},
                                    "methods": {"a": {"kind": "original"}, "b": {"kind": "original"}}}))
    scenario = api.load_scenario(path, overrides=["system.clients.uplink=1 Mbps"], methods=["b"],
                                 rounds=7, device="auto")
    assert scenario.name == "two"  # the file's stem
    assert list(scenario.methods) == ["b"] and scenario.rounds.max == 7 and scenario.device == "auto"
    assert scenario.system.clients.uplink == api.load_scenario(
        {**SMALL, "system": {"clients": {**SMALL["system"]["clients"], "uplink": "1 Mbps"}}}
    ).system.clients.uplink


@pytest.mark.parametrize(("scenario", "message"), [
    ({**SMALL, "fl": {"lr": -1}}, r"^<dict>: fl\.lr: .*-1"),
    ({k: v for k, v in SMALL.items() if k != "name"}, r"^<dict>: name"),
    ({**SMALL, "model": {"factory": "not a factory"}}, r"model.*'not a factory'"),
])
def test_bad_dicts_are_input_errors_naming_the_key(scenario: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        api.load_scenario(scenario)


def test_bad_files_and_options_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.yaml: cannot read scenario file"):
        api.load_scenario(tmp_path / "missing.yaml")
    study = tmp_path / "s.yaml"
    study.write_text("study: {name: s, base: x.yaml}\n")
    with pytest.raises(InputError, match=r"s\.yaml: is a study file .*`fedsim sweep "):
        api.run(study)
    with pytest.raises(InputError, match=r"--methods: unknown method\(s\) nope"):
        api.load_scenario(SMALL, methods=["nope"])
    with pytest.raises(InputError, match=r"--set 'oops': expected KEY\.PATH=VALUE"):
        api.load_scenario(SMALL, overrides=["oops"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=r"--out .*is a file"):
        api.run(SMALL, out=tmp_path / "file" / "out")


def test_a_factory_that_does_not_import_stops_before_any_stage(
        cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    pipeline_run = importlib.import_module("fedsim.pipeline.runner")

    def no_stage(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stage ran")

    monkeypatch.setattr(pipeline_run, "prepare_data", no_stage)
    with pytest.raises(InputError, match=r"model.factory: cannot import module 'nowhere_xyz'"):
        api.run({**SMALL, "model": {"factory": "nowhere_xyz:net"}})


def test_replay_and_study_raise_input_errors(tmp_path: Path, cache_root: Path) -> None:
    run_csv = tmp_path / "run.csv"
    run_csv.write_text("round,accuracy\n1,0.5\n2,1.5\n")
    with pytest.raises(InputError, match=r"run\.csv: line 3, column 'accuracy': '1\.5' is not in \[0, 1\]"):
        api.replay(run_csv, SMALL)
    scenario_file = tmp_path / "scenario.yaml"
    scenario_file.write_text(yaml.safe_dump(SMALL))
    with pytest.raises(InputError, match=r"scenario\.yaml.*fedsim scenario"):
        api.study(scenario_file)


def test_load_report_refuses_what_is_not_a_report(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothing: not a directory"):
        api.load_report(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: not a fedsim report \(no rounds\.parquet or rounds\.csv\)"):
        api.load_report(tmp_path / "empty")
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.csv").write_text("cell\n")
    with pytest.raises(InputError, match=r"is a study's output.*sweep\.parquet"):
        api.load_report(tmp_path / "sweep")


# --------------------------------------------------------------------------- registries


def test_a_registered_model_is_its_factory_written_out(registries: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from custom_mlp import mlp

    api.register_model("mlp", mlp)
    api.register_model("mlp", "custom_mlp:mlp")  # the same target again: fine
    assert api.registered_models() == {"mlp": "custom_mlp:mlp"}
    by_name = api.load_scenario({**SMALL, "model": {"arch": "mlp", "kwargs": {"hidden": 8}}})
    by_factory = api.load_scenario({**SMALL, "model": {"factory": "custom_mlp:mlp", "kwargs": {"hidden": 8}}})
    assert by_name == by_factory  # hence the same cache keys and resolved YAML
    import torch

    from fedsim.pipeline.keys import train_key

    method, cpu = by_name.methods["original"], torch.device("cpu")
    assert train_key(by_name, method, None, cpu) == train_key(by_factory, method, None, cpu)


def test_models_that_cannot_be_registered(registries: None) -> None:
    with pytest.raises(ValueError, match=r"'lenet-5' is a built-in"):
        api.register_model("lenet-5", "x:y")
    with pytest.raises(ValueError, match=r"cannot be imported by that name \(a lambda"):
        api.register_model("anon", lambda: None)

    def nested() -> None: ...

    with pytest.raises(ValueError, match=r"<locals>.*define it at the top level"):
        api.register_model("nested", nested)
    with pytest.raises(ValueError, match=r"is not \"package.module:function\""):
        api.register_model("bad", "no colon")
    api.register_model("m", "a.b:c")
    with pytest.raises(ValueError, match=r"'m' is already registered as 'a.b:c'"):
        api.register_model("m", "a.b:d")
    with pytest.raises(InputError, match=r"unknown architecture 'unregistered'"):
        api.load_scenario({**SMALL, "model": {"arch": "unregistered"}})


def test_a_registered_dataset_is_its_npz(tmp_path: Path, registries: None) -> None:
    from fedsim.data.torchvision_adapter import save_npz

    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 255, (40, 8, 8), dtype=np.uint8),
              "y_train": np.arange(40) % 4, "x_test": rng.integers(0, 255, (8, 8, 8), dtype=np.uint8),
              "y_test": np.arange(8) % 4}
    path = save_npz(arrays, tmp_path / "d.npz")
    api.register_dataset("tiny-8x8", path)
    scenario = api.load_scenario({**SMALL, "data": {**SMALL["data"], "dataset": "tiny-8x8"}})
    assert scenario.data.npz == str(path.resolve())
    written_out = {k: v for k, v in SMALL["data"].items() if k != "dataset"}
    assert scenario == api.load_scenario({**SMALL, "data": {**written_out, "npz": str(path.resolve())}})
    with pytest.raises(ValueError, match=r"'mnist' is built in"):
        api.register_dataset("mnist", path)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"bad\.npz: (not an \.npz|cannot read)"):
        api.register_dataset("bad", tmp_path / "bad.npz")
    assert "bad" not in api.registered_datasets()


def test_register_method_is_the_method_registry(registries: None) -> None:
    def start(ticket: object, method: object, seed: int) -> None: ...

    assert api.register_method("api-test-method", start) is start
    assert methods.get("api-test-method").fn is start
    decorated = api.register_method("api-test-pruned", pruned=True)(start)
    assert decorated is start and "api-test-pruned" in methods.pruned_names()
    scenario = api.load_scenario({**SMALL, "methods": {"mine": {"kind": "api-test-method"}}})
    assert scenario.methods["mine"].kind == "api-test-method"
    with pytest.raises(ValueError, match="already registered"):
        api.register_method("api-test-method", start)


# --------------------------------------------------------------------------- import weight


def test_import_fedsim_and_the_api_module_stay_light() -> None:
    code = ("import sys, fedsim, fedsim.api\n"
            "fedsim.load_scenario('tests/scenarios/tiny.yaml')\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'simpy'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"
    assert fedsim.run is api.run and fedsim.Result is api.Result


# --------------------------------------------------------------------------- torchvision adapter


class Pairs:
    """A duck-typed map-style dataset: ``len`` and ``[i] -> (sample, label)``."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> object:
        return self.items[index]


def test_pil_images_become_channel_first_uint8() -> None:
    from PIL import Image

    from fedsim.data.torchvision_adapter import from_torchvision

    gray = [(Image.fromarray(np.full((4, 5), i, dtype=np.uint8)), i % 2) for i in range(6)]
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 2] = 7  # blue
    arrays = from_torchvision(Pairs(gray), Pairs(gray[:2]))
    assert arrays["x_train"].shape == (6, 1, 4, 5) and arrays["x_train"].dtype == np.uint8
    assert arrays["x_train"][3, 0, 0, 0] == 3 and arrays["y_train"].tolist() == [0, 1, 0, 1, 0, 1]
    colour = from_torchvision(Pairs([(Image.fromarray(rgb), 0), (Image.fromarray(rgb), 1)]),
                              Pairs([(Image.fromarray(rgb), 1)]))
    assert colour["x_train"].shape == (2, 3, 4, 5)
    assert colour["x_train"][0, :, 0, 0].tolist() == [0, 0, 7]


def test_tensors_and_tensor_labels_are_kept_as_float32(tmp_path: Path) -> None:
    import torch

    from fedsim.data.torchvision_adapter import from_torchvision, save_npz
    from fedsim.data.user import load_npz

    train = Pairs([(torch.full((1, 3, 3), i / 10, dtype=torch.float64), torch.tensor(i % 3))
                   for i in range(9)])
    arrays = from_torchvision(train, train, limit=6)
    assert arrays["x_train"].shape == (6, 1, 3, 3) and arrays["x_train"].dtype == np.float32
    assert arrays["y_test"].dtype == np.int64 and arrays["y_test"].tolist() == [0, 1, 2, 0, 1, 2]
    loaded = load_npz(save_npz(arrays, tmp_path / "t.npz"))
    assert loaded.num_classes == 3 and loaded.sample_shape == (1, 3, 3)
    np.testing.assert_array_equal(loaded.x_train, arrays["x_train"])


@pytest.mark.parametrize(("train", "message"), [
    ([(np.zeros((2, 2)), 0), np.zeros(3)], r"train item 1: expected a \(sample, label\) pair, got ndarray"),
    ([(np.zeros((2, 2)), 0), (np.zeros((2, 2)), 1.5)], r"train item 1: label 1\.5 is not an integer class"),
    ([(np.zeros((2, 2)), 0), (np.zeros((3, 2)), 1)], r"train item 1: sample shape \[3, 2\] differs from item 0's \[2, 2\]"),
    ([(np.zeros((2, 2)), 0), (np.full((2, 2), np.nan), 1)], r"from_torchvision: x_train: non-finite value nan at index \[1, 0, 0\]"),
    ([(np.zeros((2, 2)), 0), ("text", 1)], r"train item 1: sample .*differs|not numeric"),
    ([], r"the train dataset holds no samples"),
])
def test_bad_datasets_name_the_split_and_item(train: list, message: str) -> None:
    from fedsim.data.torchvision_adapter import from_torchvision

    test = Pairs([(np.zeros((2, 2)), 0), (np.ones((2, 2)), 1)])
    with pytest.raises(InputError, match=message):
        from_torchvision(Pairs(train), test)


def test_without_torchvision_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedsim.data.torchvision_adapter import torchvision_datasets

    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(ImportError, match=r"torchvision is not installed.*pip install torchvision"):
        torchvision_datasets("MNIST", "/nonexistent")
