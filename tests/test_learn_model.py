"""LeNet-300-100 / DAE parameters, initialisation and evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedsim.learn.model import (
    DAE_SIZES,
    LENET_NUM_PARAMS,
    LENET_SIZES,
    Params,
    as_inputs,
    encoder,
    evaluate,
    init_dae,
    init_params,
    layer_shapes,
    logits,
    resolve_device,
)


def test_lenet_has_the_papers_parameter_count():
    assert LENET_NUM_PARAMS == 266_610
    assert layer_shapes(LENET_SIZES) == ((784, 300), (300, 100), (100, 10))
    assert layer_shapes(DAE_SIZES)[3:] == ((10, 100), (100, 300), (300, 784))


def test_glorot_uniform_bounds_and_zero_biases():
    params = init_params(LENET_SIZES, "glorot_uniform", torch.Generator().manual_seed(0))
    for (fan_in, fan_out), w, b in zip(params.shapes, params.weights, params.biases, strict=True):
        limit = math.sqrt(6 / (fan_in + fan_out))
        assert float(w.abs().max()) <= limit
        assert float(w.abs().max()) > 0.95 * limit  # the whole range is used
        assert torch.count_nonzero(b) == 0
        # U(-l, l) has variance l²/3
        assert abs(float(w.var()) - limit**2 / 3) < 0.1 * limit**2 / 3


def test_pytorch_default_bounds_match_nn_linear():
    params = init_params(LENET_SIZES, "pytorch_default", torch.Generator().manual_seed(0))
    for (fan_in, _), w, b in zip(params.shapes, params.weights, params.biases, strict=True):
        limit = 1 / math.sqrt(fan_in)
        assert float(w.abs().max()) <= limit and float(b.abs().max()) <= limit
        assert float(b.abs().max()) > 0  # biases are random, unlike Keras
    linear = torch.nn.Linear(784, 300)
    assert float(linear.weight.detach().abs().max()) <= 1 / math.sqrt(784)


def test_init_depends_only_on_the_seed():
    a, b, c = init_dae("glorot_uniform", 7), init_dae("glorot_uniform", 7), init_dae("glorot_uniform", 8)
    assert a.equal(b)
    assert not a.equal(c)
    assert a.shapes == layer_shapes(DAE_SIZES)
    theta0 = encoder(a)
    assert theta0.shapes == layer_shapes(LENET_SIZES) and theta0.num_params == 266_610
    assert torch.equal(theta0.weights[0], a.weights[0])


def test_unknown_init_is_rejected():
    with pytest.raises(ValueError, match="glorot_uniform"):
        init_params(LENET_SIZES, "xavier", torch.Generator())  # type: ignore[arg-type]


def test_params_validate_shapes_and_roundtrip_numpy():
    with pytest.raises(ValueError, match="do not match"):
        Params((torch.zeros(3, 4),), (torch.zeros(3),))
    params = init_dae("pytorch_default", 1)
    again = Params.from_numpy(params.to_numpy("x/"), "x/")
    assert again.equal(params)
    assert params.max_abs_diff(again) == 0.0


def test_as_inputs_scales_uint8_and_flattens():
    images = np.array([[[0, 255] * 392]], dtype=np.uint8).reshape(1, 28, 28)
    x = as_inputs(images)
    assert x.shape == (1, 784) and x.dtype == torch.float32
    assert float(x.max()) == 1.0 and float(x.min()) == 0.0
    # any other sample shape is kept (models other than LeNet-300-100; tests/test_any_shape.py)
    assert as_inputs(np.zeros((2, 3, 4, 4), np.uint8)).shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"expected \[N, \*sample_shape\]"):
        as_inputs(np.zeros(10))


def test_evaluate_hand_computed():
    # One layer, identity-like: logits = x @ W + b with W picking inputs 0 and 1.
    w = torch.zeros(784, 2)
    w[0, 0] = 1.0
    w[1, 1] = 1.0
    params = Params((w,), (torch.zeros(2),))
    x = torch.zeros(2, 784)
    x[0, 0] = 2.0  # predicts class 0
    x[1, 0] = 2.0  # predicts class 0, label 1
    labels = torch.tensor([0, 1])
    accuracy, loss = evaluate(params, x, labels, batch_size=1)
    assert accuracy == 0.5
    expected = 0.5 * (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2)))
    assert loss == pytest.approx(expected, rel=1e-6)
    assert torch.equal(logits(params, x), x @ w)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="expected one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
