"""fedsim's learning core: masked LeNet-300-100, HP-FL pre-training, batched FedAvg.

The stages, in data-flow order (paper: Itahara et al., "Lottery Hypothesis based
Unsupervised Pre-training for Model Compression in Federated Learning"):

* `model`: LeNet-300-100 and the DAE as `Params`, their initialisation;
* `masks`: `Mask`, P_R and per-layer counts, magnitude and random pruning;
* `pretrain`: Protocol 2 (DAE training + iterative magnitude pruning) -> `Ticket`;
* `methods`: original / pretrained / hp-fl / random-pruning -> (θ, mask);
* `federated`: batched FedAvg over all participants at once -> `TrainingTrace`;
* `reference`: the plain per-client trainer the batched one is checked against;
* `spec`: the config sections; `bench`: performance figures.

The package re-exports the main names, but not the function
`pretrain.pretrain`: ``fedsim.learn.pretrain`` stays the module.
"""

from fedsim.learn.federated import ClientData, fedavg, round_flops, train
from fedsim.learn.masks import LayerCount, Mask, prune_magnitude, random_like
from fedsim.learn.methods import Start, build, required_iterations
from fedsim.learn.model import (
    DAE_SIZES,
    LENET_NUM_PARAMS,
    LENET_SIZES,
    Params,
    evaluate,
    init_dae,
    init_params,
    resolve_device,
)
from fedsim.learn.pretrain import Ticket
from fedsim.learn.spec import FLConfig, MethodConfig, ModelConfig, PretrainConfig
from fedsim.learn.trace import RoundRecord, TrainingTrace, TrainState

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
