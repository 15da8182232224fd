"""User data (``data.npz``) and external partitions (``data.partition.scheme: external``).

Every check of `fedsim.data.user` and `fedsim.data.external_partition` on a
small hand-made file, the data key (the file's bytes, not its name), the model
fit check before any stage, and one tiny run through the CLI on a synthetic
npz (10 classes, each a bright horizontal band: learnable in 2 rounds).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsim import config, store
from fedsim.data.external_partition import read_partition
from fedsim.data.resolve import keyed_section, resolve_data_files
from fedsim.data.user import check_arrays, float_rows, load_npz
from fedsim.errors import InputError

# --------------------------------------------------------------------------- helpers


def band_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 28x28 images and labels 0..9: class c is a bright band on rows
    2c+4..2c+6 over dark noise (an easy rule a linear model learns at once)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 2 * c + 4: 2 * c + 7, :] = 255
    return x, y.astype(np.int64)


def write_npz(path: Path, **overrides: object) -> Path:
    x_train, y_train = band_images(300, 1)
    x_test, y_test = band_images(100, 2)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def scenario_file(folder: Path, data: str, extra: str = "") -> Path:
    path = folder / "user.yaml"
    path.write_text(f"""name: user-data
seed: 0
data: {data}
fl: {{local_epochs: 2, batch_size: 20}}
methods:
  original: {{}}
system:
  clients: {{downlink: "20 Mbps", uplink: "5 Mbps", rtt: "50 ms"}}
targets: [0.5]
rounds: {{max: 2, checkpoint_every: 1}}
device: cpu
report: {{formats: [png]}}
{extra}""")
    return path


# --------------------------------------------------------------------------- the npz checks


def test_a_valid_npz_loads_with_its_classes_and_digest(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "d.npz")
    data = load_npz(path)
    assert (data.train_size, len(data.y_test), data.sample_shape, data.num_classes) == (300, 100, (28, 28), 10)
    assert data.sha256 == store.sha256_file(path)
    assert not data.x_train.flags.writeable
    rows = float_rows(data.x_test)
    assert rows.shape == (100, 784) and rows.dtype == np.float32 and rows.max() == 1.0
    floats = np.full((2, 3, 2), 7.5)  # not uint8: taken as already scaled
    assert float_rows(floats).tolist() == [[7.5] * 6] * 2


@pytest.mark.parametrize(("overrides", "message"), [
    ({"y_test": None}, "missing array(s) y_test"),
    ({"y_train": np.zeros(299, dtype=np.int64)}, "y_train: shape [299]: expected [300]"),
    ({"y_train": np.full(300, 1.5)}, "y_train: label 1.5 at row 0 is not an integer class"),
    ({"y_train": np.r_[-1, np.arange(299) % 10]}, "y_train: label -1 at row 0 is negative"),
    ({"y_train": np.array(["a"] * 300)}, "y_train: dtype <U1"),
    ({"y_test": np.r_[np.arange(99) % 10, 12]}, "y_test label 12 at row 99 is out of range"),
    ({"x_train": np.full((300, 28, 28), np.nan)}, "x_train: non-finite value nan at index [0, 0, 0]"),
    ({"x_test": np.zeros((100, 27, 28))}, "x_test samples are [27, 28], x_train's [28, 28]"),
    ({"x_train": np.array(["x"] * 300)}, "x_train: dtype <U1 is not numeric"),
    ({"x_train": np.zeros(300)}, "x_train: shape [300]: expected [N, *sample_shape]"),
    ({"y_train": np.zeros(300, dtype=np.int64), "y_test": np.zeros(100, dtype=np.int64)},
     "y_train holds one class only"),
])
def test_each_check_names_the_file_and_the_array(tmp_path: Path, overrides: dict, message: str) -> None:
    path = write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(InputError) as err:
        load_npz(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_pickles_and_non_npz_files_are_refused(tmp_path: Path) -> None:
    objects = write_npz(tmp_path / "obj.npz", y_test=np.array([1, "a"], dtype=object))
    with pytest.raises(InputError, match="array y_test: cannot be read without pickle"):
        load_npz(objects)
    text = tmp_path / "text.npz"
    text.write_text("not a zip")
    with pytest.raises(InputError, match=r"text\.npz: (not an \.npz|cannot read)"):
        load_npz(text)
    single = tmp_path / "one.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(InputError, match=r"single \.npy array"):
        load_npz(single)
    with pytest.raises(InputError, match="no such file"):
        load_npz(tmp_path / "missing.npz")


def test_check_arrays_accepts_any_sample_shape_and_integral_float_labels() -> None:
    arrays = {"x_train": np.zeros((4, 3, 8, 8), np.float32), "y_train": np.array([0.0, 1.0, 2.0, 1.0]),
              "x_test": np.zeros((2, 3, 8, 8), np.float32), "y_test": np.array([2, 0])}
    out, classes = check_arrays(arrays, "mem")
    assert classes == 3 and out["y_train"].dtype == np.int64 and out["y_train"].tolist() == [0, 1, 2, 1]


# --------------------------------------------------------------------------- external partitions


def test_json_and_csv_partitions_give_sorted_indices(tmp_path: Path) -> None:
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"1": [5, 3], "0": [0, 1, 2], "2": [4]}))
    parts = read_partition(js, 6)
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 5], [4]]
    csv = tmp_path / "p.csv"
    csv.write_text("client_id,index\n1,5\n0,0\n1,3\n0,1\n0,2\n2,4\n")
    assert [p.tolist() for p in read_partition(csv, 6)] == [[0, 1, 2], [3, 5], [4]]
    assert all(p.dtype == np.int64 for p in read_partition(csv, 6))


@pytest.mark.parametrize(("content", "message"), [
    ({"0": [0, 1], "1": [6]}, "client 1: index 6 is outside the labeled pool 0..5"),
    ({"0": [0, 1], "1": [1, 2]}, "client 1: index 1 is also held by client 0"),
    ({"0": [0, 1], "1": []}, "client 1 holds no samples"),
    ({"0": [0], "2": [1]}, "client ids must be 0..1 (2 clients); client 1 is missing and client 2"),
    ({"0": [0, 0]}, "client 0: index 0 is listed twice"),
    ({"a": [0]}, "client id 'a' is not a non-negative integer"),
    ({"0": [0, 1.5]}, "client 0: index 1.5 is not an integer"),
    ({"0": 3}, "client 0: expected a list of sample indices"),
    ({}, "holds no clients"),
    ([[0, 1]], "expected a JSON object"),
])
def test_bad_json_partitions_name_the_file_and_client(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "clients.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError) as err:
        read_partition(path, 6)
    assert str(path) in str(err.value) and message in str(err.value)


def test_overlap_is_allowed_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"0": [0, 1], "1": [1, 2]}))
    assert [p.tolist() for p in read_partition(path, 3, allow_overlap=True)] == [[0, 1], [1, 2]]


@pytest.mark.parametrize(("text", "message"), [
    ("client,idx\n0,1\n", "row 1: header ['client', 'idx']; expected client_id,index"),
    ("client_id,index\n0,1\n0,x\n", "row 3, column index (client 0): index 'x' is not an integer"),
    ("client_id,index\n-1,1\n", "row 2, column client_id: client id '-1'"),
    ("client_id,index\n0,1,2\n", "row 2: 3 fields"),
])
def test_bad_csv_partitions_name_the_row_and_column(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "clients.csv"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_partition(path, 6)
    assert str(path) in str(err.value) and message in str(err.value)


def test_partition_file_suffix_and_presence(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"a partition file is \.json or \.csv"):
        read_partition(tmp_path / "p.txt", 5)
    with pytest.raises(InputError, match="no such file"):
        read_partition(tmp_path / "p.json", 5)


# --------------------------------------------------------------------------- schema, resolution, keys


def test_schema_takes_npz_and_external_and_refuses_both_datasets() -> None:
    raw = {"name": "u", "methods": {"original": {}},
           "data": {"npz": "d.npz", "unlabeled": 0, "partition": {"scheme": "external", "file": "c.json"}}}
    scenario = config.from_dict(raw)
    assert scenario.data.npz == "d.npz" and scenario.data.partition.num_clients is None
    with pytest.raises(InputError, match=r"give dataset \('mnist'\) or npz \('d\.npz'\), not both"):
        config.from_dict({**raw, "data": {"dataset": "mnist", "npz": "d.npz"}})
    with pytest.raises(InputError, match=r"data\.partition\.file"):
        config.from_dict({**raw, "data": {"partition": {"scheme": "external"}}})
    with pytest.raises(InputError, match="alpha"):  # a key of another scheme
        config.from_dict({**raw, "data": {"partition": {"scheme": "external", "file": "c.json", "alpha": 1}}})


def test_resolution_is_relative_to_the_scenario_and_fills_num_clients(tmp_path: Path) -> None:
    write_npz(tmp_path / "d.npz")
    (tmp_path / "c.json").write_text(json.dumps({str(k): list(range(k * 50, k * 50 + 50)) for k in range(4)}))
    raw = {"name": "u", "methods": {"original": {}},
           "data": {"npz": "d.npz", "unlabeled": 100, "partition": {"scheme": "external", "file": "c.json"}}}
    resolved = resolve_data_files(config.from_dict(raw), tmp_path)
    assert resolved.data.npz == str(tmp_path / "d.npz")
    assert resolved.data.partition.file == str(tmp_path / "c.json")
    assert resolved.data.partition.num_clients == 4
    with pytest.raises(InputError, match=r"data.partition.num_clients: 3, but .*c\.json holds 4"):
        raw3 = {**raw, "data": {**raw["data"], "partition": {"scheme": "external", "file": "c.json",
                                                             "num_clients": 3}}}
        resolve_data_files(config.from_dict(raw3), tmp_path)
    with pytest.raises(InputError, match=r"c\.json: client 3: index 199 is outside the labeled pool 0..198"):
        resolve_data_files(config.from_dict({**raw, "data": {**raw["data"], "unlabeled": 101}}), tmp_path)
    with pytest.raises(InputError, match=r"data.unlabeled: 301 exceeds the 300 samples of x_train"):
        resolve_data_files(config.from_dict({**raw, "data": {**raw["data"], "unlabeled": 301}}), tmp_path)
    shards = {"npz": "d.npz", "unlabeled": 0, "partition": {"num_clients": 2, "shard_size": 100}}
    with pytest.raises(InputError, match=r"scheme shards needs 400 labeled samples but npz:d.npz has 300"):
        resolve_data_files(config.from_dict({**raw, "data": shards}), tmp_path)


def test_mnist_data_keys_are_unchanged_and_files_key_by_content(tmp_path: Path) -> None:
    mnist = config.from_dict({"name": "m", "methods": {"original": {}},
                              "data": {"partition": {"scheme": "iid", "num_clients": 7}}})
    assert keyed_section(mnist.data) == config.section_key(mnist.data)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_npz(a / "d.npz")
    write_npz(b / "other-name.npz")  # the same bytes under another name and folder
    key_a = keyed_section(config.from_dict({"name": "u", "methods": {"original": {}},
                                            "data": {"npz": str(a / "d.npz")}}).data)
    key_b = keyed_section(config.from_dict({"name": "u", "methods": {"original": {}},
                                            "data": {"npz": str(b / "other-name.npz")}}).data)
    assert key_a == key_b == {"npz": f"sha256:{store.sha256_file(a / 'd.npz')}"}
    write_npz(b / "other-name.npz", y_test=(np.arange(100)[::-1] % 10).astype(np.int32))  # new bytes, size
    key_c = keyed_section(config.from_dict({"name": "u", "methods": {"original": {}},
                                            "data": {"npz": str(b / "other-name.npz")}}).data)
    assert key_c != key_a


# --------------------------------------------------------------------------- the CLI


def test_a_model_that_does_not_fit_exits_2_before_any_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    from fedsim.cli import main

    pipeline_run = importlib.import_module("fedsim.pipeline.runner")

    def no_stage(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stage ran")

    monkeypatch.setattr(pipeline_run, "prepare_data", no_stage)
    write_npz(tmp_path / "d.npz", y_train=np.arange(300) % 3, y_test=np.arange(100) % 3)
    path = scenario_file(tmp_path, "{npz: d.npz, unlabeled: 0, partition: {scheme: iid, num_clients: 2}}")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model 'lenet-300-100' and data.npz" in err and "d.npz" in err
    assert "gives 10 classes" in err and "784 values and 3 classes" in err
    assert main(["scenario", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "do not fit" in capsys.readouterr().err
    (tmp_path / "d.npz").unlink()
    assert main(["scenario", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "d.npz: no such file (data.npz)" in capsys.readouterr().err


def test_a_tiny_run_on_user_data_and_an_external_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """300 training images, 3 clients of 100 from a CSV, 2 rounds of LeNet-300-100."""
    from fedsim.cli import main

    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    write_npz(tmp_path / "d.npz")
    (tmp_path / "clients.csv").write_text("client_id,index\n" + "".join(
        f"{k},{i}\n" for k in range(3) for i in range(k, 300, 3)))
    path = scenario_file(tmp_path, "{npz: d.npz, unlabeled: 0, partition: {scheme: external, file: clients.csv}}")
    assert main(["validate", str(path)]) == 0
    out = tmp_path / "out"
    assert main(["scenario", str(path), "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    rounds = pd.read_csv(out / "rounds.csv")
    assert rounds["round"].tolist() == [1, 2]
    assert rounds["participants"].tolist() == [3, 3]
    assert rounds["accuracy"].iloc[-1] > 0.5  # chance is 0.1
    resolved = (out / "scenario.resolved.yaml").read_text()
    assert "num_clients: 3" in resolved and str(tmp_path / "d.npz") in resolved
    # a second run is served from the cache, whatever folder the run starts in
    monkeypatch.chdir(tmp_path.parent)
    assert main(["scenario", str(path), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    again = pd.read_csv(tmp_path / "again" / "rounds.csv")
    assert again["accuracy"].tolist() == rounds["accuracy"].tolist()


def test_a_factory_model_trains_on_three_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A model other than LeNet-300-100 takes the npz's classes (here 3), and
    a shards partition spreads the npz's labeled pool."""
    from fedsim.cli import main

    (tmp_path / "three_class_models.py").write_text(
        "from torch import nn\n\n\ndef linear(classes=3):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    x_train, _ = band_images(300, 1)
    x_test, _ = band_images(90, 2)
    y_train, y_test = np.arange(300) % 3, np.arange(90) % 3
    for x, y in ((x_train, y_train), (x_test, y_test)):  # three bands, one per class
        x[:] = np.random.default_rng(0).integers(0, 60, size=x.shape)
        for i, c in enumerate(y):
            x[i, 8 * c + 2: 8 * c + 6, :] = 255
    np.savez(tmp_path / "d.npz", x_train=x_train.astype(np.float32) / 255, y_train=y_train,
             x_test=x_test.astype(np.float32) / 255, y_test=y_test)
    model = 'model: {factory: "three_class_models:linear", input_shape: [784]}\n'
    path = scenario_file(tmp_path, "{npz: d.npz, unlabeled: 0, partition: {num_clients: 2, shard_size: 50, "
                                   "shards_per_client: 3}}", model)
    out = tmp_path / "out"
    assert main(["scenario", str(path), "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    rounds = pd.read_csv(out / "rounds.csv")
    assert rounds["participants"].tolist() == [2, 2] and rounds["accuracy"].iloc[-1] > 0.6  # chance 1/3
    lenet5 = scenario_file(tmp_path, "{npz: d.npz, unlabeled: 0, partition: {scheme: iid, num_clients: 2}}",
                           "model: {arch: lenet-5}\n")
    assert main(["scenario", str(lenet5), "--out", str(out), "--quiet"]) == 2
    assert "expected [2, 3]" in capsys.readouterr().err


def test_an_external_partition_of_mnist_resolves_without_loading_it(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("client_id,index\n0,0\n1,39999\n")
    raw = {"name": "m", "methods": {"original": {}},
           "data": {"dataset": "mnist", "partition": {"scheme": "external", "file": "c.csv"}}}
    resolved = resolve_data_files(config.from_dict(raw), tmp_path)
    assert resolved.data.partition.num_clients == 2 and resolved.data.npz is None
    (tmp_path / "c.csv").write_text("client_id,index\n0,0\n1,40000\n")  # 60,000 - 20,000 unlabeled
    with pytest.raises(InputError, match=r"c\.csv: client 1: index 40000 is outside the labeled pool 0\.\.39999"):
        resolve_data_files(config.from_dict(raw), tmp_path)


def test_validating_user_data_imports_no_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    write_npz(tmp_path / "d.npz")
    (tmp_path / "c.json").write_text(json.dumps({"0": list(range(150)), "1": list(range(150, 300))}))
    path = scenario_file(tmp_path, "{npz: d.npz, unlabeled: 0, partition: {scheme: external, file: c.json}}")
    code = (f"import sys\nfrom fedsim.cli import main\nassert main(['validate', {str(path)!r}]) == 0\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'simpy'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_a_study_resolves_its_cells_data_files_as_a_run_does(tmp_path: Path) -> None:
    """Study cells see the same resolved scenario as `pipeline.compute`: the
    npz and partition file absolute (relative to the base scenario, not the
    working directory), ``num_clients`` filled, so the planner's keys are the
    pipeline's."""
    from fedsim import study
    from fedsim.pipeline import keys

    folder = tmp_path / "exp"
    folder.mkdir()
    write_npz(folder / "d.npz")
    (folder / "c.json").write_text(json.dumps({str(k): list(range(k * 50, k * 50 + 50)) for k in range(4)}))
    scenario_file(folder, '{npz: d.npz, unlabeled: 100, partition: {scheme: external, file: c.json}}')
    (folder / "study.yaml").write_text("study:\n  name: s\n  base: user.yaml\n"
                                       "  axes: {fl.lr: [0.05, 0.1]}\n")
    loaded = study.load(folder / "study.yaml")
    for cell in loaded.cells:
        assert cell.scenario.data.npz == str(folder / "d.npz")
        assert cell.scenario.data.partition.num_clients == 4
        direct = resolve_data_files(cell.scenario, None)  # already absolute: unchanged
        assert keys.data_key(direct) == keys.data_key(cell.scenario)
