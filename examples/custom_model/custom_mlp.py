"""A custom classifier for fedsim: a two-layer perceptron (784-hidden-10).

fedsim builds it from the scenario's ``model: {factory: "custom_mlp:mlp",
kwargs: {hidden: 64}}`` (`fedsim.learn.zoo.resolve`: the factory is imported
and called with ``kwargs`` when a run starts) and trains it batched over the
clients of a round (`fedsim.learn.generic`). What a factory may return: any
``torch.nn.Module`` whose output on ``[N, *model.input_shape]`` is ``[N,
classes]`` logits and whose parameters are only ``weight`` / ``bias`` of its
submodules, with no buffers (BatchNorm's running statistics are refused; use
GroupNorm or LayerNorm).

The module must be importable: run fedsim with this folder on the path,
``PYTHONPATH=examples/custom_model fedsim scenario examples/custom_model/scenario.yaml``.
"""

from __future__ import annotations

from torch import nn


def mlp(hidden: int = 64, num_classes: int = 10) -> nn.Module:
    """784-``hidden``-``num_classes`` ReLU perceptron on ``[N, 1, 28, 28]`` images.

    Parameters: 785·hidden + (hidden+1)·num_classes (50,890 for hidden 64),
    against LeNet-300-100's 266,610: about 5x fewer bytes per message.
    Initialisation: PyTorch's defaults, drawn under fedsim's seed.
    """
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(28 * 28, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )
