"""Keras builders of the zoo's "real" tier: published architectures from
`keras.applications`, built from Keras' own code with `weights=None` (nothing
is downloaded) and with their built-in preprocessing layers, and a small
causal language model made of Keras' own layers.

Imported only when a builder is resolved (the registrations in `real.py`
refer to the builders as "model_zoo.real_keras:build_*" strings), so that
importing `model_zoo` never imports tensorflow or keras.

Each builder returns a functional `keras.Model` whose input is named as the
spec's (`image`: NHWC, fixed H and W, symbolic batch; `token_ids`) and whose
output is an Identity layer named after the spec's output (`logits`).

Weights are Keras' own initialization, made deterministic: Keras draws the
seed of every unseeded initializer from Python's `random`, which is seeded
with the model's seed while building and restored afterwards
(`keras_models._rng_isolated`); the initializers then draw from stateless ops
and touch no global RNG. The layers that Keras names from a process-wide
counter ("activation_18", "rescaling_1") are numbered from zero for each
build (`_names_isolated`), so that two builds name every layer, and hash,
alike.

Then what a trained network has and a freshly initialized one lacks, where it
would otherwise hide conversion errors:
- BatchNorm moving statistics calibrated on images drawn from the input's
  domain (`calibration_images`, `keras_models.calibrate_batchnorms`: Keras
  starts them at 0 and 1, and a deep network with those no longer depends on
  its input);
- EfficientNet's preprocessing Normalization holds ImageNet's mean and
  variance, as the imagenet weights carry them (Keras leaves 0 and 1 without
  them, an identity);
- ConvNeXt's LayerScale factors are drawn from U(0.1, 0.5) rather than Keras'
  1e-6: with 1e-6 every block adds a millionth of the residual stream, below
  any tolerance, and a converter bug inside a block could not show.
"""

from __future__ import annotations

import collections
import random
from contextlib import contextmanager
from typing import Callable, Iterator

import keras
import numpy as np

from model_zoo.keras_models import _rng_isolated, calibrate_batchnorms

# One fixed seed per model: adding or changing one model never changes another's weights.
SEEDS = {
    "mobilenet_v3_small": 8001,
    "efficientnet_b0": 8002,
    "convnext_tiny": 8003,
    "resnet50": 8004,
    "causal_lm": 8101,
}

CLASSES = 10
# (H, W) of each image model: H != W; multiples of 32 (every stride of these
# networks divides them), small enough for a few seconds per example on 2 cores.
IMAGE_SIZES = {
    "mobilenet_v3_small": (96, 128),
    "efficientnet_b0": (96, 128),
    "convnext_tiny": (64, 96),
    "resnet50": (64, 96),
}
PIXELS = (0.0, 255.0)  # the input of a network with built-in preprocessing
# ResNet50 has none: its input is keras.applications.resnet50.preprocess_input's
# output ("caffe": BGR pixels minus ImageNet's mean, [-123.68, 151.061]).
CAFFE_PIXELS = (-124.0, 152.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # of pixels scaled to [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)

VOCABULARY = 1000
MAX_TOKENS = 32
WIDTH = 64


@contextmanager
def _names_isolated() -> Iterator[None]:
    """Keras numbers unnamed layers from a process-wide counter; while building,
    the counter starts from zero, and is put back afterwards."""
    from keras.src.backend.common import global_state

    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
    try:
        yield
    finally:
        global_state.set_global_attribute("object_name_uids", saved)


def _keras_initialized(name: str, make: Callable[[], keras.Model],
                       finish: Callable[[keras.Model], None] | None = None) -> keras.Model:
    """`make()` with Keras' own initializers seeded by the model's seed, then
    `finish(model)`; the global RNG states and Keras' name counters are left
    as they were."""
    with _rng_isolated(), _names_isolated():
        random.seed(SEEDS[name])  # Keras draws each unseeded initializer's seed from it
        model = make()
        if finish is not None:
            finish(model)
    return model


def calibration_images(name: str, domain: tuple[float, float]) -> np.ndarray:
    """Eight NHWC images from the input's domain, two of each kind the parity
    inputs have: uniform noise, smooth (a coarse random grid blown up 8x),
    flat at one end of the domain with 1% of the pixels at the other (a dark
    and a bright image), and bimodal (each value in the lowest or the highest
    quarter of the domain).

    Statistics from noise alone leave a network unprepared for the rest:
    calibrated on uniform noise, EfficientNetB0 amplified a nearly black
    image into logits of 2.4e4, where its own float32 error was 2.4% of them;
    calibrated on these, its logits stay below 10 on such images (below 200
    on bimodal ones) and its float32 error within 1.3e-5 of them."""
    rng = np.random.default_rng(SEEDS[name] + 1)
    low, high = domain
    height, width = IMAGE_SIZES[name]
    shape = (height, width, 3)
    images = []
    for _ in range(2):
        noise = rng.uniform(low, high, shape)
        coarse = rng.uniform(low, high, (height // 8 + 1, width // 8 + 1, 3))
        smooth = np.kron(coarse, np.ones((8, 8, 1)))[:height, :width]
        quarter = (high - low) / 4
        bimodal = np.where(rng.random(shape) < 0.5, rng.uniform(low, low + quarter, shape),
                           rng.uniform(high - quarter, high, shape))
        images += [noise, smooth, bimodal]
    for level, sprinkle in ((low, high), (high, low)):
        flat = np.full(shape, level)
        flat[rng.random((height, width)) < 0.01] = sprinkle
        images.append(flat)
    return np.stack(images).astype("float32")


def _classifier(name: str, application: Callable[..., keras.Model], **options) -> keras.Model:
    """`application(weights=None)` at the model's size with 10 classes and
    logits, its input named `image`, its output `logits`."""
    height, width = IMAGE_SIZES[name]
    image = keras.Input((height, width, 3), name="image")
    base = application(input_shape=(height, width, 3), input_tensor=image, include_top=True, weights=None,
                       classes=CLASSES, classifier_activation=None, **options)
    for layer in base.layers:
        if layer.name == "logits":  # MobileNetV3's classifier conv: the name is the output's
            layer.name = "classifier_logits"
    logits = keras.layers.Identity(name="logits")(base.output)
    return keras.Model(image, logits, name=name)


# --- keras.applications ----------------------------------------------------------------


def build_mobilenet_v3_small() -> keras.Model:
    """MobileNetV3Small: Rescaling to [-1, 1], hard-swish, squeeze-excitation
    with hard sigmoid (bare keras.ops in the graph), depthwise convs."""
    def make() -> keras.Model:
        return _classifier("mobilenet_v3_small", keras.applications.MobileNetV3Small, include_preprocessing=True)

    def finish(model: keras.Model) -> None:
        calibrate_batchnorms(model, SEEDS["mobilenet_v3_small"] + 2, calibration_images("mobilenet_v3_small", PIXELS))

    return _keras_initialized("mobilenet_v3_small", make, finish)


def build_efficientnet_b0() -> keras.Model:
    """EfficientNetB0: Rescaling and Normalization, swish (a custom gradient
    in TensorFlow), squeeze-excitation, depthwise convs, stochastic-depth
    Dropout (inactive in inference)."""
    def make() -> keras.Model:
        return _classifier("efficientnet_b0", keras.applications.EfficientNetB0)

    def finish(model: keras.Model) -> None:
        (norm,) = [layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)]
        *_, count = norm.get_weights()
        norm.set_weights([np.array(IMAGENET_MEAN, "float32"), np.square(IMAGENET_STD).astype("float32"), count])
        norm.finalize_state()
        calibrate_batchnorms(model, SEEDS["efficientnet_b0"] + 2, calibration_images("efficientnet_b0", PIXELS))

    return _keras_initialized("efficientnet_b0", make, finish)


def build_convnext_tiny() -> keras.Model:
    """ConvNeXtTiny: a Normalization given ImageNet's mean and variance (held
    as constants), patchify stem, 7x7 depthwise convs, LayerNorm, GELU,
    LayerScale, residual adds."""
    def make() -> keras.Model:
        return _classifier("convnext_tiny", keras.applications.ConvNeXtTiny, include_preprocessing=True)

    def finish(model: keras.Model) -> None:
        rng = np.random.default_rng(SEEDS["convnext_tiny"] + 2)
        scales = [layer for layer in model.layers if type(layer).__name__ == "LayerScale"]
        if not scales:
            raise ValueError("convnext_tiny: no LayerScale layer found")
        for layer in scales:
            (gamma,) = layer.get_weights()
            layer.set_weights([rng.uniform(0.1, 0.5, size=gamma.shape).astype(gamma.dtype)])

    return _keras_initialized("convnext_tiny", make, finish)


def build_resnet50() -> keras.Model:
    """ResNet50 (v1): 7x7 stem, bottleneck blocks with BatchNorm and
    projection shortcuts, max pooling; no built-in preprocessing."""
    def make() -> keras.Model:
        return _classifier("resnet50", keras.applications.ResNet50)

    def finish(model: keras.Model) -> None:
        calibrate_batchnorms(model, SEEDS["resnet50"] + 2, calibration_images("resnet50", CAFFE_PIXELS))

    return _keras_initialized("resnet50", make, finish)


# --- text ------------------------------------------------------------------------------


def build_causal_lm() -> keras.Model:
    """A one-block decoder-only language model: token and learned position
    embeddings, causal 4-head self-attention, post-norm residual blocks, a GELU
    MLP, logits over the vocabulary for every position: [N, T, 1000]."""
    def make() -> keras.Model:
        token_ids = keras.Input((None,), dtype="int64", name="token_ids")
        # Positions 0..T-1 from the ids' own shape (T is symbolic).
        positions = keras.ops.cumsum(keras.ops.ones_like(token_ids), axis=1) - 1
        tokens = keras.layers.Embedding(VOCABULARY, WIDTH, name="token_embedding")(token_ids)
        places = keras.layers.Embedding(MAX_TOKENS, WIDTH, name="position_embedding")(positions)
        x = keras.layers.Add(name="embedded")([tokens, places])
        attended = keras.layers.MultiHeadAttention(num_heads=4, key_dim=WIDTH // 4, name="attention")(
            x, x, use_causal_mask=True)
        x = keras.layers.LayerNormalization(epsilon=1e-5, name="norm1")(
            keras.layers.Add(name="residual1")([x, attended]))
        h = keras.layers.Dense(4 * WIDTH, activation="gelu", name="mlp1")(x)
        h = keras.layers.Dense(WIDTH, name="mlp2")(h)
        x = keras.layers.LayerNormalization(epsilon=1e-5, name="norm2")(keras.layers.Add(name="residual2")([x, h]))
        logits = keras.layers.Dense(VOCABULARY, name="lm_head")(x)
        return keras.Model(token_ids, keras.layers.Identity(name="logits")(logits), name="causal_lm")

    return _keras_initialized("causal_lm", make)
