"""The cost model: estimated seconds of the heavy stages of a scenario.

One home for what a stage is expected to cost, read by the study planner
(`fedsim.study.planner`: the estimated time and the scheduling order of a sweep)
and by the progress display (`fedsim.progress`: the weight of a pre-training
epoch against a training round, so that one bar spans a whole scenario).

Seconds on one core of the development machine; only their ratios matter to
the progress display, which measures its own rate (see docs/performance.md
for measured stage times). FedAvg trains dense tensors, masked or not, so a
pruned method's round costs what a dense one does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedsim.config import Scenario
    from fedsim.learn.spec import MethodConfig

#: Cost model of the time estimate: seconds on one core of the development
#: machine (2-core x86-64, torch 2.13 CPU, otherwise idle), calibrated from the
#: stage times in provenance.json of scenarios/quickstart.yaml (FedAvg 0.38 s
#: per round of 20 clients x 400 samples x 5 epochs at 2 threads, 0.83 s at 1;
#: one IMP iteration of 2 DAE epochs on 20,000 images 1.7 s) and from the DES
#: (0.9 s for 3000 rounds x 100 clients, 0.1 s to store the timeline):
#: FedAvg per client sample and local epoch, evaluation per test image and
#: round, DAE training per unlabeled image and epoch, the DES per client and
#: round, a fixed cost per task (data loading and partition, cache reads, the
#: join of the metrics), the worker pool's start and the report. Torch stages
#: run sqrt(threads) times faster with more threads (1.46x measured at 2). A
#: machine busy with other work is slower: the quickstart ran 6x slower on this
#: machine while others trained, so read the estimate as a lower bound there.
COST_MODEL: dict[str, float] = {
    "fedavg_s_per_sample_epoch": 20e-6,
    "eval_s_per_test_image": 3e-6,
    "dae_s_per_image_epoch": 45e-6,
    "des_s_per_client_round": 3.5e-6,
    "task_s": 0.8,
    "startup_s": 4.0,
    "report_s": 6.0,
}


def client_samples_total(scenario: Scenario) -> int:
    """Labelled samples held by all clients together (a round's local data)."""
    from fedsim.data import DATASETS

    partition = scenario.data.partition
    if partition.scheme == "shards":
        return int(partition.min_samples())
    return int(DATASETS[scenario.data.dataset].train_size - scenario.data.unlabeled)


def round_s(scenario: Scenario, method: MethodConfig | None = None) -> float:
    """Estimated seconds (one thread) of one FedAvg round of ``scenario``:
    local training of every client's samples for ``fl.local_epochs``, then the
    evaluation on the test set. Equal for dense and pruned methods. For an
    asynchronous ``method`` (FedBuff, ``method.asynchronous``) a round is a
    server step: the local training of ``buffer_size`` mean clients, then the
    same evaluation."""
    from fedsim.data import DATASETS

    test_images = DATASETS[scenario.data.dataset].test_size
    training_s = client_samples_total(scenario) * scenario.fl.local_epochs * COST_MODEL["fedavg_s_per_sample_epoch"]
    if method is not None and method.asynchronous is not None:
        training_s *= method.asynchronous.buffer_size / scenario.data.partition.num_clients
    return training_s + test_images * COST_MODEL["eval_s_per_test_image"]


def pretrain_epoch_s(scenario: Scenario) -> float:
    """Estimated seconds (one thread) of one DAE epoch over the unlabeled pool."""
    return scenario.data.unlabeled * COST_MODEL["dae_s_per_image_epoch"]


def simulation_s(scenario: Scenario) -> float:
    """Estimated seconds of one method's system simulation (every round)."""
    return (scenario.data.partition.num_clients * scenario.rounds.max
            * COST_MODEL["des_s_per_client_round"])


__all__ = ["COST_MODEL", "client_samples_total", "pretrain_epoch_s", "round_s", "simulation_s"]
