"""Cache keys: today's keys pinned (existing cache entries stay valid), and
the study planner's groups checked against the pipeline's real keys.

The property (hypothesis): for random cells of a small study,

* system: ``system_group(a) == system_group(b)`` exactly when
  ``system_key(a) == system_key(b)`` (the keys computed from the real masks,
  payloads and partition sizes);
* training: equal ``train_group`` imply equal ``train_key`` (the planner
  never merges two trainings the pipeline keeps apart); the converse holds
  when the config guarantees every client in every round for both cells
  (then the group *is* the key). Where participation comes from the
  simulation, groups are conservative: two cells whose different configs
  happen to aggregate the same clients (say a deadline nobody misses, and no
  deadline) share a training key but not a group.

"Exactly" for the system holds within this study's axes, which leave the
``data`` section alone: two data sections can give the same samples per
client (e.g. another ``unlabeled`` count with shards), where the group,
keyed on the data section, is again conservative.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsim import config, pipeline, store
from fedsim.learn import methods as learn_methods
from fedsim.learn.masks import Mask
from fedsim.learn.model import LENET_SIZES, layer_shapes
from fedsim.pipeline import keys
from fedsim.pipeline.data import DataCache
from fedsim.system.payload import Payload

TESTS = Path(__file__).parent
TINY = TESTS / "scenarios" / "tiny.yaml"
MOBILE = TESTS.parent / "scenarios" / "mobile.yaml"
CPU = torch.device("cpu")
CUDA = torch.device("cuda")

# --------------------------------------------------------------------------- pinned keys

#: Keys computed with the code of commit 5e52704 (before the pipeline became a
#: package). A change here invalidates every cache entry of that stage: state it.
PAY = Payload(down_bytes=1_064_000, up_bytes=1_063_000, first_round_extra_bytes=33_000,
              value_bytes=1_060_000, mask_bytes=33_000, overhead_bytes=1000, sent_params=265_000,
              total_params=266_610)
PINNED = {
    TINY: {
        "data": "2cd51be92ab3beb1", "pretrain": "1e89425f9a929e83",
        "method/original": "4a09cb7b8b76898c", "method/hp-fl": "05f3c432d420367d",
        "train/original/all/cpu": "93b198c8f742800d", "train/hp-fl/all/cpu": "dd190ce5f243e482",
        "train/original/part/cuda": "5a1305982a8ddcd5", "train/hp-fl/part/cuda": "00f074940536fbb0",
        "train/original/all/cpu<-cuda": "fa2733c422c35bcc", "train/hp-fl/all/cpu<-cuda": "1020633bd8ca205e",
        "system/synthetic": "d2084221fcd222d9", "system/synthetic/epochs2": "0e786d19b5f9b297",
        "participation": "6916760e9558514c",
    },
    MOBILE: {
        "data": "63e0b6dba2e26311", "pretrain": "97d97388c147fef5",
        "method/original": "4a09cb7b8b76898c", "method/pretrained": "791cd62674f592f4",
        "method/hp-fl": "41273b1542a2852e", "method/random-pruning": "17ba415e250910fc",
        "train/original/all/cpu": "b370736b30f2e06a", "train/pretrained/all/cpu": "0407deff7773f640",
        "train/hp-fl/all/cpu": "a09a314583f774b3", "train/random-pruning/all/cpu": "13f8939fd2c41875",
        "train/original/part/cuda": "1236b61f7d0d139c", "train/pretrained/part/cuda": "2f2d7a3ba97c7189",
        "train/hp-fl/part/cuda": "34f569024351acff", "train/random-pruning/part/cuda": "3ff04f69212a9643",
        "train/original/all/cpu<-cuda": "b644b154897eb68a",
        "train/pretrained/all/cpu<-cuda": "92a8fd7473a3b332",
        "train/hp-fl/all/cpu<-cuda": "a9687a81039fcd22",
        "train/random-pruning/all/cpu<-cuda": "455724ae58b288b4",
        "system/synthetic": "1834ac0b061dd7d1", "system/synthetic/epochs2": "89d4ab0637fbb8d4",
        "participation": "0b1ef5ddafd2fac5",
    },
}


def _keys_of(path: Path) -> dict[str, str]:
    scenario = config.load(path)
    n = scenario.data.partition.num_clients
    samples = np.arange(100, 100 + n, dtype=np.int64)
    part = [np.arange(0, n, 2), np.arange(n)]
    got = {"data": store.stable_hash(pipeline.data_key(scenario)), "pretrain": pipeline.pretrain_key(scenario),
           "participation": pipeline.participation_key(part),
           "system/synthetic": pipeline.system_key(scenario, PAY, 0.41, samples, None),
           "system/synthetic/epochs2": pipeline.system_key(config.load(path, ["fl.local_epochs=2"]), PAY,
                                                           0.41, samples, None)}
    for label, method in scenario.methods.items():
        got[f"method/{label}"] = store.stable_hash(pipeline.method_key(scenario, method))
        got[f"train/{label}/all/cpu"] = pipeline.train_key(scenario, method, None, CPU)
        got[f"train/{label}/part/cuda"] = pipeline.train_key(scenario, method, part, CUDA)
        got[f"train/{label}/all/cpu<-cuda"] = pipeline.train_key(scenario, method, None, CPU, continued_from=CUDA)
    return got


@pytest.mark.parametrize("path", [TINY, MOBILE], ids=["tiny", "mobile"])
def test_cache_keys_are_those_of_earlier_versions(path: Path) -> None:
    assert _keys_of(path) == PINNED[path]


def test_the_tiny_runs_dense_system_key_is_that_of_earlier_versions() -> None:
    """The key `pipeline.compute` gave tiny's ``original`` method (dense mask,
    4 clients of 100 samples) at commit 5e52704."""
    scenario = config.load(TINY)
    payload, work = pipeline.payload_and_work(scenario, Mask.dense(layer_shapes(LENET_SIZES)))
    assert pipeline.system_key(scenario, payload, work, np.full(4, 100, dtype=np.int64), None) == "8eb95acbefd60f70"


def test_the_trace_file_is_hashed_once_for_the_key_and_the_group(tmp_path: Path) -> None:
    trace = tmp_path / "profiles.csv"
    trace.write_text("client_id,downlink,uplink,rtt,speed,availability\n")
    raw = yaml.safe_load(TINY.read_text())
    raw["system"]["clients"] = {"trace": "profiles.csv"}
    scenario = config.from_dict(raw)
    assert keys.trace_sha256(scenario, tmp_path) == store.sha256_file(trace)
    assert keys.system_facts(scenario, tmp_path)["trace_sha256"] == store.sha256_file(trace)
    before = (keys.system_group(scenario, "original", tmp_path), keys.train_group(scenario, "original", tmp_path))
    trace.write_text("client_id,downlink,uplink,rtt,speed,availability\n# edited\n")
    after = (keys.system_group(scenario, "original", tmp_path), keys.train_group(scenario, "original", tmp_path))
    assert before[0] != after[0] and before[1] != after[1]  # the bytes, not the name


# --------------------------------------------------------------------------- the property


def _cell_raw(seed: int, lr: float, epochs: int, uplink: str, participation: float, kind: str,
              rate: float, scope: str, dropout: float, deadline: str | None) -> dict[str, Any]:
    raw = copy.deepcopy(_BASE)
    raw["seed"] = seed
    raw["fl"] = {"local_epochs": epochs, "lr": lr}
    raw["pretrain"]["scope"] = scope
    raw["methods"] = {"m": {"kind": kind, **({"remaining_rate": rate} if kind in ("hp-fl", "random-pruning")
                                              else {})}}
    raw["system"]["clients"]["uplink"] = {"dist": "lognormal", "median": uplink, "sigma": 0.5}
    raw["system"]["rounds"] = {"participation": participation, "dropout": dropout, "deadline": deadline}
    return raw


_BASE = yaml.safe_load(TINY.read_text())
cells = st.builds(
    _cell_raw,
    seed=st.sampled_from([0, 1]),
    lr=st.sampled_from([0.1, 0.05]),
    epochs=st.sampled_from([5, 2]),
    uplink=st.sampled_from(["5 Mbps", "1 Mbps"]),
    participation=st.sampled_from([1.0, 0.5]),
    kind=st.sampled_from(["original", "pretrained", "hp-fl", "random-pruning"]),
    rate=st.sampled_from([0.8, 1.0]),
    scope=st.sampled_from(["layerwise", "global"]),
    dropout=st.sampled_from([0.0, 0.25]),
    # 4 s cuts some clients of tiny's rounds, 600 s none (participation "all", decided by timing)
    deadline=st.sampled_from([None, "4 s", "600 s"]),
)


@dataclass
class _Keys:
    system_group: str
    system_key: str
    train_group: str
    train_key: str
    everyone: bool


class _Pipeline:
    """The real keys of a cell: its mask from a real (tiny) ticket, the real
    samples per client, the real simulation's participation."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.data = DataCache(capacity=2)
        self.tickets: dict[str, Any] = {}

    def keys(self, raw: dict[str, Any]) -> _Keys | None:
        scenario = config.from_dict(raw)
        method = scenario.methods["m"]
        data = self.data.get(scenario)
        key = keys.pretrain_key(scenario)
        if key not in self.tickets:  # one level serves every cell (tiny: pretrain.iterations 1)
            self.tickets[key] = pipeline.pretrain_stage(scenario, data, 1, CPU)
        try:
            start = learn_methods.build(method, self.tickets[key], seed=scenario.seed)
        except ValueError:
            return None
        system, payload, work = pipeline.system_stage(scenario, start.mask, data.client_samples, self.base_dir)
        everyone = all(len(p) == data.clients.num_clients for p in system.participation)
        return _Keys(
            keys.system_group(scenario, "m", self.base_dir),
            keys.system_key(scenario, payload, work, data.client_samples, self.base_dir),
            keys.train_group(scenario, "m", self.base_dir),
            keys.train_key(scenario, method, None if everyone else system.participation, CPU),
            keys.everyone_every_round(scenario),
        )


@pytest.fixture(scope="module")
def real_pipeline(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> _Pipeline:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEDSIM_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield _Pipeline(TESTS / "scenarios")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raws=st.lists(cells, min_size=2, max_size=5))
def test_planner_groups_are_equal_exactly_when_pipeline_keys_are(real_pipeline: _Pipeline,
                                                                    raws: list[dict[str, Any]]) -> None:
    found = [k for k in (real_pipeline.keys(raw) for raw in raws) if k is not None]
    for i, a in enumerate(found):
        for b in found[i + 1:]:
            assert (a.system_group == b.system_group) == (a.system_key == b.system_key), (a, b)
            if a.train_group == b.train_group:
                assert a.train_key == b.train_key, (a, b)
            if a.everyone and b.everyone:  # the group is the key: equal exactly when the keys are
                assert a.train_group == a.train_key and b.train_group == b.train_key


def test_the_system_group_follows_local_epochs_as_the_key_does() -> None:
    """The divergence the property test exists for: the system key depends on
    ``fl.local_epochs`` (compute time scales with it), so the group must."""
    five = config.load(TINY)
    two = config.load(TINY, ["fl.local_epochs=2"])
    assert keys.system_group(five, "original", TESTS) != keys.system_group(two, "original", TESTS)
    assert keys.system_facts(five, None) != keys.system_facts(two, None)
