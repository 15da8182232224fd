"""fedsim's learning core: masked LeNet-300-100 (and any nn.Module), HP-FL pre-training, batched FedAvg.

The stages, in data-flow order (paper: Itahara et al., "Lottery Hypothesis based
Unsupervised Pre-training for Model Compression in Federated Learning"):

* `counts`: layer shapes, parameter and pruning-level counts (no torch);
* `model`: LeNet-300-100 and the DAE as `Params`, their initialisation;
* `masks`: `Mask`, P_R and per-layer counts, magnitude and random pruning;
* `pretrain`: Protocol 2 (DAE training + iterative magnitude pruning) -> `Ticket`;
  `dae`: its Training step, the DAE trained by hand-written passes;
* `methods`: original / pretrained / hp-fl / random-pruning -> (θ, mask), and
  `effective_fl` (a method's own compression, server, FedProx μ); `plugins`:
  methods from outside fedsim (``"module:object"``, ``fedsim.methods``);
* `federated`: batched FedAvg over all participants at once -> `TrainingTrace`;
  `schedule`: the clients' data, participation and each round's mini-batches;
  `batched`: the kernels that train a round's participants as stacked tensors;
* `zoo`: models as ``nn.Module`` (LeNet-5, factories, entry points) and their
  `Params` layout; `generic`: any model's round batched over clients (``vmap``
  of ``grad``), where `batched` is LeNet-300-100's hand-written fast path;
* `reference`: the plain per-client trainer the batched one is checked against;
* `spec`: the config sections (performance figures: `fedsim.bench.learn`).

The package re-exports the main names, on first use (so that the config
sections in `spec` import no torch), but not the function `pretrain.pretrain`:
``fedsim.learn.pretrain`` stays the module.
"""


# Names are imported on first use (PEP 562), so that ``import fedsim.learn.spec``
# (the config sections) does not import torch; see docs/performance.md.
from fedsim import lazy

_EXPORTS: dict[str, str] = {
    "ClientData": "federated", "fedavg": "federated", "round_flops": "federated",
    "train": "federated",
    "LayerCount": "masks", "Mask": "masks", "prune_magnitude": "masks", "random_like": "masks",
    "Start": "methods", "build": "methods", "required_iterations": "methods",
    "Method": "methods", "effective_fl": "methods",
    "DAE_SIZES": "counts", "LENET_NUM_PARAMS": "counts", "LENET_SIZES": "counts",
    "Params": "model", "evaluate": "model", "init_dae": "model", "init_params": "model",
    "resolve_device": "model",
    "Ticket": "pretrain",
    "FLConfig": "spec", "MethodConfig": "spec", "ModelConfig": "spec", "PretrainConfig": "spec",
    "RoundRecord": "trace", "TrainingTrace": "trace", "TrainState": "trace",
}


__getattr__, __dir__ = lazy.exports(globals(), _EXPORTS)


__all__ = [
    "DAE_SIZES",
    "LENET_NUM_PARAMS",
    "LENET_SIZES",
    "ClientData",
    "FLConfig",
    "LayerCount",
    "Mask",
    "MethodConfig",
    "ModelConfig",
    "Params",
    "PretrainConfig",
    "RoundRecord",
    "Start",
    "Ticket",
    "TrainState",
    "TrainingTrace",
    "build",
    "evaluate",
    "fedavg",
    "init_dae",
    "init_params",
    "prune_magnitude",
    "random_like",
    "required_iterations",
    "resolve_device",
    "round_flops",
    "train",
]
