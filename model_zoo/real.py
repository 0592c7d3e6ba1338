"""Zoo, tier "real": published architectures built from their libraries' code
(`--tier=real`, or `--tier=all`; not run by default).

The Keras models are `keras.applications` networks with their built-in
preprocessing (images 0..255), and a small causal language model; their
builders are in `real_keras.py`. The image specs say NCHW, as the rest of the
zoo, and declare the Keras models' NHWC; H and W are fixed (the networks'
zero-paddings and strides are computed for them) and differ.
"""

from harness import InputSpec, OutputSpec, register_model

_BATCH = {"N": (1, 2)}
_NHWC = {"keras": {"image": "NHWC"}}
_PIXELS = (0.0, 255.0)
# pnnx 20261020 (ONNX -> ncnn) leaves tf2onnx's explicit padding (before strided convs) as a Pad ncnn has no layer for
_PNNX_PAD = {"keras->ncnn": "pnnx 20261020 leaves tf2onnx's Pad (the padding before strided convs) as a layer ncnn "
                            "does not have"}


def _image(height: int, width: int, domain: tuple[float, float] = _PIXELS) -> InputSpec:
    return InputSpec("image", ("N", 3, height, width), dims=_BATCH, layout="NCHW", domain=domain)


_LOGITS = [OutputSpec("logits", layout="NC", class_axis=-1)]

register_model(
    "mobilenet_v3_small",
    inputs=[_image(96, 128)],
    outputs=_LOGITS,
    description="keras.applications.MobileNetV3Small(weights=None, include_preprocessing=True, classes=10, "
    "classifier_activation=None) at 96x128: Rescaling, hard-swish, squeeze-excitation with hard sigmoid, "
    "depthwise convs; Keras' own initialization, BatchNorm statistics calibrated on 0..255 pixels; logits [N,10].",
    keras="model_zoo.real_keras:build_mobilenet_v3_small",
    layouts=_NHWC,
    tier="real",
    unsupported=_PNNX_PAD,
)

register_model(
    "efficientnet_b0",
    inputs=[_image(96, 128)],
    outputs=_LOGITS,
    description="keras.applications.EfficientNetB0(weights=None, classes=10, classifier_activation=None) at "
    "96x128: Rescaling and Normalization (ImageNet's mean and variance), swish, squeeze-excitation, depthwise "
    "convs; Keras' own initialization, BatchNorm statistics calibrated on 0..255 pixels; logits [N,10].",
    keras="model_zoo.real_keras:build_efficientnet_b0",
    layouts=_NHWC,
    tier="real",
    unsupported=_PNNX_PAD,
)

register_model(
    "convnext_tiny",
    inputs=[_image(64, 96)],
    outputs=_LOGITS,
    description="keras.applications.ConvNeXtTiny(weights=None, include_preprocessing=True, classes=10, "
    "classifier_activation=None) at 64x96: Normalization with ImageNet's statistics as constants, patchify "
    "stem, 7x7 depthwise convs, LayerNorm, GELU, LayerScale (factors U(0.1, 0.5)); 28M parameters; logits [N,10].",
    keras="model_zoo.real_keras:build_convnext_tiny",
    layouts=_NHWC,
    tier="real",
)

register_model(
    "resnet50",
    # Its input is what keras.applications.resnet50.preprocess_input makes of
    # 0..255 pixels: BGR minus ImageNet's mean, [-123.68, 151.061].
    inputs=[_image(64, 96, domain=(-124.0, 152.0))],
    outputs=_LOGITS,
    description="keras.applications.ResNet50(weights=None, classes=10, classifier_activation=None) at 64x96: "
    "bottleneck blocks, BatchNorm, projection shortcuts, max pooling; Keras' own initialization, BatchNorm "
    "statistics calibrated on the input's domain; 24M parameters; logits [N,10].",
    keras="model_zoo.real_keras:build_resnet50",
    layouts=_NHWC,
    tier="real",
    unsupported=_PNNX_PAD,
)

# Seen with TF 2.21; with a fixed T it converts. No upstream issue found; the
# nearest, for a Transformer, is tensorflow/tensorflow#33616 (closed, stale).
_TFLITE_CAUSAL_MASK = (
    "TFLiteConverter (TF 2.21) cannot lower the StridedSlice with new_axis_mask that Keras' causal attention "
    "applies to its [T, T] mask (keras/src/backend/tensorflow/nn.py, _apply_masks: mask[None, None, :, :]) when T "
    "is symbolic: \"'tf.StridedSlice' op is neither a custom op nor a flex op\" "
    "(nearest upstream report: https://github.com/tensorflow/tensorflow/issues/33616)")

register_model(
    "causal_lm",
    inputs=[InputSpec("token_ids", ("N", "T"), dims={"N": (1, 3), "T": (2, 32)}, dtype="int64", layout="NT",
                      domain=(0, 999))],
    outputs=[OutputSpec("logits", layout="NTC", class_axis=-1)],
    description="A one-block decoder-only language model of Keras layers: Embedding(1000, 64) plus learned "
    "positions, causal 4-head MultiHeadAttention, LayerNorm, GELU MLP (256), residuals, logits over the "
    "vocabulary [N,T,1000]; Keras' own initialization.",
    keras="model_zoo.real_keras:build_causal_lm",
    unsupported={"keras->tflite": _TFLITE_CAUSAL_MASK,
                 "keras->ncnn": "pnnx 20261020 aborts on tf2onnx's graph of it (std::out_of_range in its pass_level1)"},
    tier="real",
)
