"""Client-stacked gradients without ``vmap``: one autograd pass over K clients of a traced module.

`fedsim.learn.generic.GenericTrainer` needs, at every local step, the
gradient of every client's loss with respect to that client's own parameters.
``torch.func.vmap(grad(loss))`` gives it for any module, but ``vmap`` turns K
clients' ``conv2d`` (one weight per client) into one grouped convolution in
NCHW, which oneDNN runs slower on the CPU than K separate ones (LeNet-5
batched was 0.7x its per-client loop). The same grouped convolution in
channels-last memory is 2-3x faster than the loop (docs/performance.md), and
this module computes the same gradients with plain autograd on a
client-stacked forward pass built around it:

* the module is traced once with ``torch.fx.symbolic_trace``; every node must
  be a per-sample operation (the allow-lists `_ELEMENTWISE`,
  `_ELEMENTWISE_MODULES`, `_ELEMENTWISE_METHODS`; ``flatten`` from dim 1) or
  an ``nn.Linear`` / ``nn.Conv2d`` (groups 1, numeric zero padding); anything
  else raises `Unsupported` and the caller keeps ``vmap``;
* activations hold the K clients folded into the batch dimension
  (``[K·B, ...]``), or, from a convolution on, into the channels
  (`_Grouped`: ``[B, K·C, H, W]`` in channels-last memory, the grouped
  convolution's own layout); per-channel operations (activations, 2-d
  pooling, sums of two grouped activations) run on either unchanged, anything
  else gets the batch layout back (one copy);
* ``nn.Conv2d`` is one ``conv2d`` with groups = K over the stacked weights
  ``[K·O, C, kh, kw]``; ``nn.Linear`` is one ``baddbmm``, computed transposed
  so the weight gradient is contiguous (`_linear`);
* the loss is the sum over clients of ``Σ_i w_i · CE(z_i, y_i)``; clients
  share no parameter, so ``torch.autograd.grad`` of the sum gives each client
  exactly the gradient of its own loss, i.e. what ``vmap(grad(loss))`` gives,
  up to float32 rounding (tests/test_conv_batched.py).

Refs: torch.fx (Reed et al., "torch.fx: Practical Program Capture and
Transformation for Deep Learning in Python", MLSys 2022); grouped convolutions
(Krizhevsky et al., "ImageNet Classification with Deep Convolutional Neural
Networks", NeurIPS 2012) used here to batch independent models, as in
per-example-gradient work (Rochette et al., "Efficient Per-Example Gradient
Computations in Convolutional Neural Networks", 2019).
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

__all__ = ["StackedGrads", "Unsupported", "stacked_grads"]


class Unsupported(ValueError):
    """The module has an operation the client-stacked forward pass cannot run."""


#: Modules without parameters that act on each sample alone.
_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU,
                        nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.MaxPool1d, nn.AvgPool1d)
#: Functions that act on each sample alone (their first argument is the batch).
_ELEMENTWISE = {torch.relu, F.relu, torch.tanh, torch.sigmoid, F.gelu, F.silu, F.leaky_relu, F.elu,
                F.max_pool2d, F.avg_pool2d, F.max_pool1d, F.avg_pool1d, torch.nn.functional.relu6,
                operator.add, operator.mul, operator.sub, operator.truediv, torch.add, torch.mul}
_ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid", "add", "mul", "sub"}
#: Of those, the ones that act on each channel alone, so they may run on the
#: clients-in-channels layout of a grouped convolution (`_Grouped`).
_GROUPED_MODULES = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU,
                    nn.Identity, nn.MaxPool2d, nn.AvgPool2d)
_GROUPED_FUNCTIONS = _ELEMENTWISE - {F.max_pool1d, F.avg_pool1d}


def _flatten_ok(node: fx.Node) -> bool:
    """``flatten`` keeps the batch dimension: ``start_dim`` given and >= 1."""
    start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
    return isinstance(start, int) and start >= 1


def _check(graph_module: fx.GraphModule) -> None:
    """Raise `Unsupported` for any node outside the allow-list (module docstring)."""
    modules = dict(graph_module.named_modules())
    inputs = 0
    for node in graph_module.graph.nodes:
        if node.op == "placeholder":
            inputs += 1
        elif node.op == "call_module":
            sub = modules[node.target]
            if isinstance(sub, nn.Conv2d):
                if sub.groups != 1 or sub.padding_mode != "zeros" or isinstance(sub.padding, str):
                    raise Unsupported(f"{node.target}: conv2d with groups, string padding or non-zero padding mode")
            elif isinstance(sub, nn.Flatten):
                if sub.start_dim < 1:
                    raise Unsupported(f"{node.target}: flatten over the batch dimension")
            elif not isinstance(sub, (nn.Linear, *_ELEMENTWISE_MODULES)):
                raise Unsupported(f"{node.target}: module {type(sub).__name__}")
        elif node.op == "call_function":
            if node.target is torch.flatten:
                if not _flatten_ok(node):
                    raise Unsupported("torch.flatten over the batch dimension")
            elif node.target not in _ELEMENTWISE:
                raise Unsupported(f"function {getattr(node.target, '__name__', node.target)}")
        elif node.op == "call_method":
            if node.target == "flatten":
                if not _flatten_ok(node):
                    raise Unsupported("Tensor.flatten over the batch dimension")
            elif node.target not in _ELEMENTWISE_METHODS:
                raise Unsupported(f"method Tensor.{node.target}")
        elif node.op == "get_attr":
            raise Unsupported(f"direct use of attribute {node.target}")
    if inputs != 1:
        raise Unsupported(f"{inputs} inputs; one expected")


def _linear(x: Tensor, w: Tensor, b: Tensor | None, k: int) -> Tensor:
    """``nn.Linear`` of K clients: ``x [K·B, in]``, ``w [K, out, in]``, ``b [K, out]``.

    Computed transposed, ``outᵀ = W xᵀ + b``, so that autograd's weight
    gradient ``gᵀ x`` comes out ``[K, out, in]`` contiguous like the weight
    (the other order gives a transposed gradient, and the SGD update reading it
    took a quarter of a LeNet-300-100 round)."""
    xs = x.reshape(k, -1, x.shape[-1])
    out_t = torch.bmm(w, xs.transpose(1, 2)) if b is None else torch.baddbmm(b.unsqueeze(2), w, xs.transpose(1, 2))
    return out_t.transpose(1, 2).reshape(-1, w.shape[1])


class _Grouped:
    """An activation with the clients folded into the channels: ``t [B, K·C, H, W]``
    in channels-last memory (``[B, H, W, K, C]``), the layout a grouped
    convolution over the K clients takes and returns."""

    __slots__ = ("t",)

    def __init__(self, t: Tensor) -> None:
        self.t = t


def _to_grouped(x: Tensor | _Grouped, k: int) -> Tensor:
    """``[K·B, C, H, W]`` -> ``[B, K·C, H, W]`` channels-last (one copy)."""
    if isinstance(x, _Grouped):
        return x.t
    n, c, h, w = x.shape
    b = n // k
    return x.reshape(k, b, c, h, w).permute(1, 3, 4, 0, 2).contiguous().view(b, h, w, k * c).permute(0, 3, 1, 2)


def _to_batch(x: object, k: int) -> object:
    """A `_Grouped` activation back in the batch layout ``[K·B, C, H, W]`` (one copy)."""
    if not isinstance(x, _Grouped):
        return x
    b, kc, h, w = x.t.shape
    return x.t.reshape(b, k, kc // k, h, w).transpose(0, 1).reshape(k * b, kc // k, h, w)


def _per_sample(fn: Callable[..., Tensor], args: tuple, kwargs: dict, k: int, grouped_ok: bool) -> object:
    """``fn`` of per-sample activations: on the grouped layout when every tensor
    argument is grouped and ``fn`` acts per channel (``grouped_ok``), else on the
    batch layout."""
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor | _Grouped)]
    if grouped_ok and tensors and all(isinstance(a, _Grouped) for a in tensors):
        unwrap = lambda a: a.t if isinstance(a, _Grouped) else a  # noqa: E731
        return _Grouped(fn(*map(unwrap, args), **{n: unwrap(v) for n, v in kwargs.items()}))
    return fn(*(_to_batch(a, k) for a in args), **{n: _to_batch(v, k) for n, v in kwargs.items()})


def _conv2d(x: Tensor | _Grouped, w: Tensor, b: Tensor | None, k: int, conv: nn.Conv2d) -> _Grouped:
    """``nn.Conv2d`` of K clients as one grouped convolution (groups = K) in
    channels-last memory: ``w [K, O, C, kh, kw]``, ``b [K, O]``."""
    weight = w.reshape(-1, *w.shape[2:]).contiguous(memory_format=torch.channels_last)
    bias = None if b is None else b.reshape(-1)
    out = F.conv2d(_to_grouped(x, k), weight, bias, conv.stride, conv.padding, conv.dilation, groups=k)
    return _Grouped(out)


class StackedGrads:
    """Per-client gradients of a traced module, all clients in one autograd pass.

    Called like ``torch.vmap(torch.func.grad(loss))`` in
    `fedsim.learn.generic.GenericTrainer`: ``(stacked params by name [K, ...],
    x [K, B, *input_shape], y [K, B], w [K, B]) -> grads by name [K, ...]``.

    Raises:
        Unsupported: at construction, for a module it cannot run (see the module
            docstring); ``torch.fx`` tracing errors are reported the same way.
    """

    def __init__(self, module: nn.Module) -> None:
        try:
            self.graph_module = fx.symbolic_trace(module)
        except Exception as exc:  # tracing runs the model's Python with proxies
            raise Unsupported(f"torch.fx cannot trace the model ({type(exc).__name__}: {exc})") from None
        _check(self.graph_module)
        self._modules = dict(self.graph_module.named_modules())
        self._nodes = list(self.graph_module.graph.nodes)

    def forward(self, named: dict[str, Tensor], x: Tensor, k: int) -> Tensor:
        """Logits ``[K·B, classes]`` of K clients' parameters ``named`` on ``x [K·B, *input_shape]``."""
        env: dict[fx.Node, object] = {}
        load = lambda a: fx.node.map_arg(a, env.__getitem__)  # noqa: E731
        result: object = None
        for node in self._nodes:
            if node.op == "placeholder":
                env[node] = x
            elif node.op == "call_module":
                sub = self._modules[node.target]
                (arg,) = load(node.args)
                prefix = f"{node.target}."
                if isinstance(sub, nn.Conv2d):
                    env[node] = _conv2d(arg, named[prefix + "weight"], named.get(prefix + "bias"), k, sub)
                elif isinstance(sub, nn.Linear):
                    env[node] = _linear(_to_batch(arg, k), named[prefix + "weight"], named.get(prefix + "bias"), k)
                else:
                    env[node] = _per_sample(sub, (arg,), {}, k, isinstance(sub, _GROUPED_MODULES))
            elif node.op == "call_function":
                env[node] = _per_sample(node.target, load(node.args), load(node.kwargs), k,
                                        node.target in _GROUPED_FUNCTIONS)
            elif node.op == "call_method":
                self_arg, *rest = load(node.args)
                method = lambda t, *a, _name=node.target, **kw: getattr(t, _name)(*a, **kw)  # noqa: E731
                env[node] = _per_sample(method, (self_arg, *rest), load(node.kwargs), k,
                                        node.target in _ELEMENTWISE_METHODS)
            elif node.op == "output":
                result = _to_batch(load(node.args[0]), k)
        return result  # type: ignore[return-value]

    def __call__(self, block: dict[str, Tensor], x: Tensor, y: Tensor, w: Tensor) -> dict[str, Tensor]:
        k = int(x.shape[0])
        leaves = {name: t.detach().requires_grad_() for name, t in block.items()}
        with torch.enable_grad():
            z = self.forward(leaves, x.reshape(-1, *x.shape[2:]), k)
            loss = (F.cross_entropy(z, y.reshape(-1), reduction="none") * w.reshape(-1)).sum()
            grads = torch.autograd.grad(loss, list(leaves.values()))
        return dict(zip(leaves, grads, strict=True))


def stacked_grads(module: nn.Module) -> Callable[..., dict[str, Tensor]] | None:
    """`StackedGrads` of ``module``, or None when it cannot run it (use ``vmap``)."""
    try:
        return StackedGrads(module)
    except Unsupported:
        return None
