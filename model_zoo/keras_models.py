"""Keras models and builders of the built-in zoo.

Imported only when a keras builder is resolved (the registrations refer to the
builders as "model_zoo.keras_models:build_*" strings), so that importing
`model_zoo` never imports tensorflow or keras.

Every builder returns a functional `keras.Model`:
- its inputs are named and ordered as the spec's inputs, with None for every
  symbolic dim; images are NHWC (the specs, like torch, say NCHW and declare
  the Keras layout with `layouts={"keras": {...}}`), sequences NTC;
- its outputs are in the spec's order, each produced by a layer named after
  the spec's output;
- every layer has a fixed name, so two builds have the same structure, names
  and variable paths;
- every weight is overwritten from `np.random.default_rng(SEEDS[name])`
  (`randomize_weights`), so the weights are a pure function of the model's
  seed; building saves and restores the global RNG states Keras initializers
  draw from (Python's `random`, which Keras uses for unseeded initializers,
  and numpy's), and touches no TensorFlow global RNG.

These are the torch twins' architectures written the Keras way (a different
model with different weights: parity is checked per source). Where a torch
default differs, the Keras layer is set to the torch twin's value (BatchNorm
and LayerNorm epsilon 1e-5, exact GELU), except for padding: Keras "same"
pads a strided convolution asymmetrically (bottom/right), which is the
natural Keras form and a converter hazard worth covering.

`mobilenet_v2` is keras.applications.MobileNetV2 itself (Keras only): its
BatchNorm statistics are calibrated on a batch from the input's domain and
then perturbed (`calibrate_batchnorms`), since statistics drawn blind make a
network that deep insensitive to its input.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Callable, Iterator

import keras
import numpy as np

# One fixed seed per model: adding or changing one model never changes another's weights.
SEEDS = {
    "simple": 5001,
    "mlp": 5002,
    "two_outputs": 5003,
    "cnn": 6001,
    "depthwise": 6002,
    "mobilenet_v2": 6003,
    "lstm": 7001,
    "gru": 7002,
    "transformer": 7003,
    "embedding": 7004,
}

_EPS = 1e-5  # the torch twins' BatchNorm / LayerNorm epsilon

MOBILENET_V2_SIZE = (96, 128)  # (H, W): H != W, both divisible by 32


@contextmanager
def _rng_isolated() -> Iterator[None]:
    """Keras draws default seeds of unseeded initializers from Python's global
    `random`; building must leave the caller's global RNG states as they were.
    The image data format is pinned to channels_last while building."""
    py_state, np_state = random.getstate(), np.random.get_state()
    data_format = keras.config.image_data_format()
    try:
        keras.config.set_image_data_format("channels_last")
        yield
    finally:
        keras.config.set_image_data_format(data_format)
        random.setstate(py_state)
        np.random.set_state(np_state)


def _seeded(name: str, make: Callable[[], keras.Model],
            finish: Callable[[keras.Model], None] | None = None) -> keras.Model:
    """`make()`, then every weight drawn from the model's seed, then `finish(model)`
    (a calibration that must run on the final weights), with the global RNG
    states left as they were."""
    with _rng_isolated():
        model = make()
        randomize_weights(model, SEEDS[name])
        if finish is not None:
            finish(model)
    return model


# --- weights -------------------------------------------------------------------------


def _glorot(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def _kernel_fans(path: str, shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 2:  # Dense [in, out]
        return shape[0], shape[1]
    if len(shape) == 4:  # Conv2D [kh, kw, in, out]
        field = shape[0] * shape[1]
        return field * shape[2], field * shape[3]
    if len(shape) == 3:  # MultiHeadAttention's EinsumDense
        if path.endswith("attention_output/kernel"):  # [heads, head_dim, d_model]
            return shape[0] * shape[1], shape[2]
        return shape[0], shape[1] * shape[2]  # query/key/value: [d_model, heads, head_dim]
    raise ValueError(f"kernel {path} of shape {shape}: no rule for its fans")


def _draw(rng: np.random.Generator, path: str, shape: tuple[int, ...]) -> np.ndarray:
    role = path.rsplit("/", 1)[-1]
    if role == "kernel":
        return _glorot(rng, shape, *_kernel_fans(path, shape))
    if role == "depthwise_kernel":  # [kh, kw, channels, multiplier]: each output sees kh*kw inputs
        field = shape[0] * shape[1]
        return _glorot(rng, shape, field, field * shape[3])
    if role == "recurrent_kernel":  # [units, gates * units]: per gate a units x units matrix
        return _glorot(rng, shape, shape[0], shape[0])
    if role == "bias":
        return rng.normal(0.0, 0.1, size=shape)
    if role == "embeddings":  # like torch's nn.Embedding: N(0, 1)
        return rng.normal(0.0, 1.0, size=shape)
    # BatchNormalization and LayerNormalization: not (close to) the identity,
    # so that a converter that folds or drops one wrongly shows in the outputs.
    if role == "gamma":
        return rng.uniform(0.5, 1.5, size=shape)
    if role == "beta":
        return rng.normal(0.0, 0.3, size=shape)
    if role == "moving_mean":
        return rng.normal(0.0, 0.5, size=shape)
    if role == "moving_variance":
        return rng.uniform(0.5, 2.0, size=shape)
    raise ValueError(f"weight {path} of shape {shape}: no rule to randomize it")


def randomize_weights(model: keras.Model, seed: int) -> None:
    """Overwrite every weight of `model` (trainable or not, in `model.weights`
    order) from `np.random.default_rng(seed)`: glorot-uniform kernels, small
    normal biases, N(0, 1) embeddings, and BatchNorm statistics and affine
    parameters that are far from the identity. An unknown kind of weight is an
    error, so that no weight keeps Keras's own (global-seed dependent) draw."""
    rng = np.random.default_rng(seed)
    seen: set[int] = set()
    for variable in model.weights:
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        shape = tuple(int(d) for d in variable.shape)
        variable.assign(_draw(rng, variable.path, shape).astype(variable.dtype))


# --- basic ---------------------------------------------------------------------------


def _simple() -> keras.Model:
    x = keras.Input((3,), name="input")
    return keras.Model(x, keras.layers.Dense(1, name="output")(x), name="simple")


def _mlp() -> keras.Model:
    x = keras.Input((16,), name="x")
    h = keras.layers.Dense(64, activation="relu", name="dense1")(x)
    h = keras.layers.Dense(32, activation="gelu", name="dense2")(h)
    return keras.Model(x, keras.layers.Dense(10, name="logits")(h), name="mlp")


# Scale of the two_outputs head, so that its logits have the torch twin's
# magnitudes (~100) with these glorot-drawn weights.
TWO_OUTPUTS_SCALE = 80.0


def _two_outputs() -> keras.Model:
    """Float logits and their argmax as an int64 `label`.

    The argmax is the index of `keras.ops.top_k(logits, 1)` (the lowest index
    on a tie, as argmax), not `keras.ops.argmax`: on float inputs Keras 3's
    TensorFlow backend wraps tf.argmax in a -0.0 fix built from Bitcast and
    BitwiseAnd (its `signbit`), which tf2onnx 1.17 cannot convert (no ONNX
    bitcast) and TFLite has no builtin for. The index is int32: cast to int64.
    """
    x = keras.Input((8,), name="x")
    h = keras.layers.Dense(32, activation="relu", name="body1")(x)
    h = keras.layers.Dense(32, activation="tanh", name="body2")(h)
    logits = keras.layers.Dense(5, name="logits")(h)
    _, index = keras.ops.top_k(logits, k=1)
    label = keras.ops.cast(keras.ops.squeeze(index, axis=-1), "int64")
    label = keras.layers.Identity(name="label")(label)
    return keras.Model(x, [logits, label], name="two_outputs")


def _calibrate_two_outputs(model: keras.Model) -> None:
    """Scale the head up and centre its bias on a calibration batch drawn from
    the input's domain, as the torch twin does: the five classes all common,
    logits ~100, top-2 gaps far above float32 noise."""
    head = model.get_layer("logits")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * TWO_OUTPUTS_SCALE, bias])
    calibration = np.random.default_rng(SEEDS["two_outputs"] + 1).uniform(-4.0, 4.0, size=(4096, 8))
    logits = np.asarray(model(calibration.astype("float32"))[0])
    head.set_weights([kernel * TWO_OUTPUTS_SCALE, bias - logits.mean(axis=0)])


def build_simple() -> keras.Model:
    return _seeded("simple", _simple)


def build_mlp() -> keras.Model:
    return _seeded("mlp", _mlp)


def build_two_outputs() -> keras.Model:
    return _seeded("two_outputs", _two_outputs, _calibrate_two_outputs)


# --- vision --------------------------------------------------------------------------


def _cnn() -> keras.Model:
    image = keras.Input((None, None, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(image)
    x = keras.layers.BatchNormalization(epsilon=_EPS, name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.MaxPool2D(2, name="pool")(x)  # "valid": odd H/W floor, like torch
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv2")(x)
    x = keras.layers.BatchNormalization(epsilon=_EPS, name="bn2")(x)
    return keras.Model(image, keras.layers.ReLU(name="features")(x), name="cnn")


def _conv_bn_relu6(x, filters: int, kernel: int, name: str, stride: int = 1):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=_EPS, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x)


def _depthwise_separable(x, filters: int, stride: int, name: str):
    """MobileNet v1 block: depthwise 3x3 then pointwise 1x1, each with BN + ReLU6."""
    x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = keras.layers.BatchNormalization(epsilon=_EPS, name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
    return _conv_bn_relu6(x, filters, 1, name=f"{name}_pw")


def _depthwise() -> keras.Model:
    image = keras.Input((None, None, 3), name="image")
    x = _conv_bn_relu6(image, 16, 3, name="stem")
    x = _depthwise_separable(x, 32, stride=1, name="block1")
    x = _depthwise_separable(x, 64, stride=2, name="block2")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(image, keras.layers.Dense(10, name="logits")(x), name="depthwise")


def _mobilenet_v2() -> keras.Model:
    """keras.applications.MobileNetV2 (alpha 0.35, 10 classes, logits) at a
    fixed non-square size; the input is named `image` (given as input_tensor),
    the output `logits` (an Identity after the classifier). weights=None: the
    application never downloads anything."""
    height, width = MOBILENET_V2_SIZE
    image = keras.Input((height, width, 3), name="image")
    base = keras.applications.MobileNetV2(
        input_shape=(height, width, 3),
        input_tensor=image,
        alpha=0.35,
        include_top=True,
        weights=None,
        classes=10,
        classifier_activation=None,
        name="mobilenet_v2",
    )
    for layer in base.layers:
        # The application leaves its pooling layer unnamed, so Keras would number
        # it by how many models the process has built; names must not vary.
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            layer.name = "global_average_pooling"
    logits = keras.layers.Identity(name="logits")(base.output)
    return keras.Model(image, logits, name="mobilenet_v2")


def calibrate_batchnorms(model: keras.Model, seed: int, batch: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics from the activations it actually
    sees on `batch`, perturbed as in `randomize_weights` but in units of the
    channel's own statistics: moving_mean = mean + N(0, 0.5) * std,
    moving_variance = var * U(0.5, 2). One forward pass of the model itself, in
    which each BatchNorm, when first called, sets its statistics from its
    input and then normalizes with them, so each BatchNorm sees what the
    already calibrated ones produce; the graph may hold bare keras.ops nodes
    (MobileNetV3's hard sigmoid), nested models and shared layers.

    For a deep network: statistics drawn without regard to the activations
    (as `randomize_weights` does) leave a per-channel offset in every layer
    that the next BatchNorm does not remove, and after a dozen blocks the
    output no longer depends on the input at float32 precision (MobileNetV2:
    across-input std 1e-7 of the logits' size); a trained network's
    BatchNorms track their inputs, and so do these.
    """
    rng = np.random.default_rng(seed)
    norms = [layer for layer in model._flatten_layers(include_self=False)
             if isinstance(layer, keras.layers.BatchNormalization)]
    calibrated: list[str] = []

    def calibrating(norm: keras.layers.BatchNormalization) -> Callable:
        call = norm.call

        def calibrate_then_call(inputs, *args, **kwargs):
            del norm.__dict__["call"]  # once: later calls are the layer's own
            if norm.axis not in (-1, len(inputs.shape) - 1) or not (norm.center and norm.scale):
                raise ValueError(f"{norm.name}: calibration expects a channels-last BatchNorm with gamma and beta")
            activations = np.asarray(inputs, dtype=np.float64).reshape(-1, inputs.shape[-1])
            mean, var = activations.mean(axis=0), np.maximum(activations.var(axis=0), 1e-4)
            gamma, beta, _, _ = norm.get_weights()
            channels = mean.shape[0]
            moving_mean = mean + rng.normal(0.0, 0.5, size=channels) * np.sqrt(var)
            moving_variance = var * rng.uniform(0.5, 2.0, size=channels)
            norm.set_weights([gamma, beta, moving_mean.astype("float32"), moving_variance.astype("float32")])
            calibrated.append(norm.name)
            return call(inputs, *args, **kwargs)

        return calibrate_then_call

    for norm in norms:
        object.__setattr__(norm, "call", calibrating(norm))  # past Keras' attribute tracking
    try:
        model(batch, training=False)
    finally:
        for norm in norms:
            norm.__dict__.pop("call", None)
    if len(calibrated) != len(norms):
        left = sorted({n.name for n in norms} - set(calibrated))
        raise ValueError(f"calibrate_batchnorms: the forward pass did not reach the BatchNorms {left}")


def build_cnn() -> keras.Model:
    return _seeded("cnn", _cnn)


def build_depthwise() -> keras.Model:
    return _seeded("depthwise", _depthwise, _calibrate_depthwise)


DEPTHWISE_CALIBRATION_SHAPE = (28, 34, 3)  # (H, W, C): within the spec's bounds, H != W
# The share of the features' mean on the domain the head's bias takes away. Measured (Keras depthwise,
# 10 examples, ONNX Runtime and OpenVINO CPU): at 0.5 the int8 logits move 2.3x int8's allowed error
# across inputs and int8-dynamic's worst error is 0.75 of its tolerance; at 1.0 int8-dynamic's
# correct builds fail (cosine 0.993); at 0.3 int8 is barely conclusive (1.06x).
DEPTHWISE_HEAD_CENTRING = 0.5


def _calibrate_depthwise(model: keras.Model) -> None:
    """BatchNorm statistics from the spec's own distribution (normal: N(0, 1) on its -3..3 domain),
    then the classifier's bias moved toward centring its logits on a batch drawn uniformly from the
    domain, as two_outputs' head is (DEPTHWISE_HEAD_CENTRING of the way). With the statistics drawn
    blind, the global average of ~500 positions of noise gave logits that moved by 1e-3 of int8's
    allowed error across inputs; a trained head has no constant part that swamps what the features
    say."""
    rng = np.random.default_rng(SEEDS["depthwise"] + 1)
    batch = rng.normal(0.0, 1.0, size=(4, *DEPTHWISE_CALIBRATION_SHAPE)).astype("float32")
    calibrate_batchnorms(model, SEEDS["depthwise"] + 2, batch)
    pooled = keras.Model(model.input, model.get_layer("pool").output)
    domain = rng.uniform(-3.0, 3.0, size=(8, *DEPTHWISE_CALIBRATION_SHAPE)).astype("float32")
    features = np.asarray(pooled(domain), dtype=np.float64)
    head = model.get_layer("logits")
    kernel, bias = head.get_weights()
    head.set_weights([kernel, (bias - DEPTHWISE_HEAD_CENTRING * features.mean(axis=0) @ kernel).astype("float32")])


def _calibrate_mobilenet_v2(model: keras.Model) -> None:
    rng = np.random.default_rng(SEEDS["mobilenet_v2"] + 1)
    calibration = rng.uniform(-1.0, 1.0, size=(4, *MOBILENET_V2_SIZE, 3)).astype("float32")  # the input's domain
    calibrate_batchnorms(model, SEEDS["mobilenet_v2"] + 2, calibration)


def build_mobilenet_v2() -> keras.Model:
    return _seeded("mobilenet_v2", _mobilenet_v2, _calibrate_mobilenet_v2)


# --- sequence ------------------------------------------------------------------------


def _lstm() -> keras.Model:
    sequence = keras.Input((None, 12), name="sequence")
    hidden = keras.layers.LSTM(20, return_sequences=True, name="hidden_states")(sequence)
    return keras.Model(sequence, hidden, name="lstm")


def _gru() -> keras.Model:
    # reset_after=True (Keras's default) is torch's GRU formulation.
    sequence = keras.Input((None, 12), name="sequence")
    x = keras.layers.GRU(20, return_sequences=True, name="gru1")(sequence)
    hidden = keras.layers.GRU(20, return_sequences=True, name="hidden_states")(x)
    return keras.Model(sequence, hidden, name="gru")


def _transformer() -> keras.Model:
    """One post-norm encoder block, as the torch twin: attention (4 heads of 8),
    residual, LayerNorm, GELU MLP (64), residual, LayerNorm."""
    tokens = keras.Input((None, 32), name="tokens")
    attended = keras.layers.MultiHeadAttention(num_heads=4, key_dim=8, name="attention")(tokens, tokens)
    x = keras.layers.Add(name="residual1")([tokens, attended])
    x = keras.layers.LayerNormalization(epsilon=_EPS, name="norm1")(x)
    ff = keras.layers.Dense(64, activation="gelu", name="ff1")(x)
    ff = keras.layers.Dense(32, name="ff2")(ff)
    x = keras.layers.Add(name="residual2")([x, ff])
    return keras.Model(tokens, keras.layers.LayerNormalization(epsilon=_EPS, name="encoded")(x), name="transformer")


def _embedding() -> keras.Model:
    token_ids = keras.Input((None,), dtype="int64", name="token_ids")
    x = keras.layers.Embedding(100, 16, name="embed")(token_ids)
    h = keras.layers.Dense(32, activation="gelu", name="mlp1")(x)
    h = keras.layers.Dense(16, name="mlp2")(h)
    return keras.Model(token_ids, keras.layers.Add(name="embedded")([x, h]), name="embedding")


def build_lstm() -> keras.Model:
    return _seeded("lstm", _lstm)


def build_gru() -> keras.Model:
    return _seeded("gru", _gru)


def build_transformer() -> keras.Model:
    return _seeded("transformer", _transformer)


def build_embedding() -> keras.Model:
    return _seeded("embedding", _embedding)
