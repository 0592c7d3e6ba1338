"""MXNet Gluon blocks and builders of the built-in zoo.

Imported only when an mxnet builder is resolved (the registrations refer to the
builders as "model_zoo.mxnet_models:build_*" strings), so that importing
`model_zoo` never imports mxnet. mxnet is imported through
`harness.sources.mxnet.import_mxnet`, which applies the shims mxnet 1.9 needs
on today's numpy and onnx.

Every builder returns a hybridized HybridBlock whose parameters are a pure
function of the model's fixed seed: the block is initialized, run once on a
dummy input (to finish deferred initialization), then EVERY parameter is
overwritten from `np.random.default_rng(seed)`; no global mxnet or numpy RNG
state is read or changed. Each top-level block gets a fixed prefix, so that
parameter (and exported symbol) names do not depend on how many blocks the
process has built before.

The architectures are the torch twins' (torch_models.py); Gluon's Conv2D is
NCHW and its LSTM here is batch-major (layout="NTC"), as the specs are.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from harness.sources.mxnet import import_mxnet

mx = import_mxnet()
from mxnet import gluon  # noqa: E402  (after the shims)

# One fixed seed per model, apart from the torch and Keras seeds.
SEEDS = {
    "simple": 5001,
    "mlp": 5002,
    "cnn": 6001,
    "depthwise": 6002,
    "lstm": 7001,
}

# Shapes of the dummy input that finishes deferred initialization.
_DUMMY = {
    "simple": (2, 3),
    "mlp": (2, 16),
    "cnn": (2, 3, 16, 20),
    "depthwise": (2, 3, 16, 20),
    "lstm": (2, 3, 12),
}

_EPS = 1e-5  # torch's BatchNorm epsilon (Gluon's default too)


# --- weights -------------------------------------------------------------------------


def _glorot(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def _draw(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name.endswith(("i2h_weight", "h2h_weight")):  # LSTM [4 * units, in]: per gate an in -> units matrix
        return _glorot(rng, shape, shape[1], shape[0] // 4)
    if name.endswith("_weight"):
        if len(shape) == 2:  # Dense [out, in]
            return _glorot(rng, shape, shape[1], shape[0])
        if len(shape) == 4:  # Conv2D [out, in / groups, kh, kw]
            field = shape[2] * shape[3]
            return _glorot(rng, shape, field * shape[1], field * shape[0])
        raise ValueError(f"weight {name} of shape {shape}: no rule for its fans")
    if name.endswith("_bias"):
        return rng.normal(0.0, 0.1, size=shape)
    # BatchNorm: far from the identity, so that a converter that folds or drops
    # one wrongly shows in the outputs.
    if name.endswith("_gamma"):
        return rng.uniform(0.5, 1.5, size=shape)
    if name.endswith("_beta"):
        return rng.normal(0.0, 0.3, size=shape)
    if name.endswith("_running_mean"):
        return rng.normal(0.0, 0.5, size=shape)
    if name.endswith("_running_var"):
        return rng.uniform(0.5, 2.0, size=shape)
    raise ValueError(f"parameter {name} of shape {shape}: no rule to randomize it")


def randomize_parameters(block, seed: int) -> None:
    """Overwrite every parameter of `block` (trainable or not, in
    `collect_params()` order, which follows the block's structure) from
    `np.random.default_rng(seed)`. An unknown kind of parameter is an error,
    so that none keeps mxnet's own (global-seed dependent) draw."""
    rng = np.random.default_rng(seed)
    for name, param in block.collect_params().items():
        shape = tuple(int(d) for d in param.shape)
        param.set_data(mx.nd.array(_draw(rng, name, shape), dtype=param.dtype))


def _seeded(name: str, make: Callable[[], "gluon.HybridBlock"]):
    """`make()`, initialized, run once on a dummy input, every parameter drawn
    from the model's seed, hybridized."""
    block = make()
    # The initializer's draws are all overwritten below; Zero() draws nothing at all.
    block.initialize(mx.init.Zero(), ctx=mx.cpu())
    block(mx.nd.zeros(_DUMMY[name], ctx=mx.cpu()))
    randomize_parameters(block, SEEDS[name])
    block.hybridize()
    return block


# --- blocks --------------------------------------------------------------------------


class ReLU6(gluon.HybridBlock):
    def hybrid_forward(self, F, x):
        return F.clip(x, 0.0, 6.0)


def _simple():
    net = gluon.nn.HybridSequential(prefix="simple_")
    with net.name_scope():
        net.add(gluon.nn.Dense(1, in_units=3))
    return net


def _mlp():
    net = gluon.nn.HybridSequential(prefix="mlp_")
    with net.name_scope():
        net.add(gluon.nn.Dense(64, in_units=16, activation="relu"),
                gluon.nn.Dense(32, in_units=64),
                gluon.nn.GELU(),  # erf-based, as torch's nn.GELU()
                gluon.nn.Dense(10, in_units=32))
    return net


def _cnn():
    """Conv3x3(3->8)-BN-ReLU-MaxPool2-Conv3x3(8->16)-BN-ReLU; [N,3,H,W] -> [N,16,H//2,W//2]."""
    net = gluon.nn.HybridSequential(prefix="cnn_")
    with net.name_scope():
        net.add(gluon.nn.Conv2D(8, 3, padding=1, in_channels=3),
                gluon.nn.BatchNorm(epsilon=_EPS, in_channels=8),
                gluon.nn.Activation("relu"),
                gluon.nn.MaxPool2D(2),  # floors, like torch
                gluon.nn.Conv2D(16, 3, padding=1, in_channels=8),
                gluon.nn.BatchNorm(epsilon=_EPS, in_channels=16),
                gluon.nn.Activation("relu"))
    return net


def _conv_bn_relu6(net, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
    net.add(gluon.nn.Conv2D(cout, kernel, strides=stride, padding=kernel // 2, groups=groups, use_bias=False,
                            in_channels=cin),
            gluon.nn.BatchNorm(epsilon=_EPS, in_channels=cout),
            ReLU6())


def _depthwise():
    """The torch twin's TinyMobileNet: stem conv, two depthwise-separable blocks
    (depthwise 3x3 with groups=C, pointwise 1x1, each BN + ReLU6; the second
    strided), global average pool, Dense(64 -> 10); [N,3,H,W] -> [N,10]."""
    net = gluon.nn.HybridSequential(prefix="depthwise_")
    with net.name_scope():
        _conv_bn_relu6(net, 3, 16, 3)
        for cin, cout, stride in ((16, 32, 1), (32, 64, 2)):
            _conv_bn_relu6(net, cin, cin, 3, stride=stride, groups=cin)
            _conv_bn_relu6(net, cin, cout, 1)
        net.add(gluon.nn.GlobalAvgPool2D(), gluon.nn.Dense(10, in_units=64))  # Dense flattens [N,64,1,1]
    return net


class HiddenStates(gluon.HybridBlock):
    """One-layer batch-major LSTM(12 -> 20) that returns every step's hidden state [N,T,20]."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        with self.name_scope():
            self.lstm = gluon.rnn.LSTM(20, layout="NTC", input_size=12)

    def hybrid_forward(self, F, sequence):
        return self.lstm(sequence)  # no begin state given: zeros, and only the output sequence is returned


def _lstm():
    return HiddenStates(prefix="lstm_")


# --- builders ------------------------------------------------------------------------


def build_simple():
    return _seeded("simple", _simple)


def build_mlp():
    return _seeded("mlp", _mlp)


def build_cnn():
    return _seeded("cnn", _cnn)


def build_depthwise():
    return _seeded("depthwise", _depthwise)


def build_lstm():
    return _seeded("lstm", _lstm)
