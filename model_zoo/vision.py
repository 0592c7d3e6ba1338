"""Zoo: convolutional models on images.

The specs say NCHW (torch's layout); the Keras models take NHWC images and
declare it through `layouts=`, so the harness transposes explicitly.
"""

from harness import InputSpec, OutputSpec, Tolerance, register_model

# H and W get different bounds on purpose, so that swapping them (an NCHW/NHWC
# mix-up) changes the shape; odd sizes are in range to exercise flooring.
_IMAGE_DIMS = {"N": (1, 4), "H": (16, 40), "W": (20, 48)}
_DOMAIN = (-3.0, 3.0)

register_model(
    "cnn",
    inputs=[InputSpec("image", ("N", 3, "H", "W"), dims=_IMAGE_DIMS, layout="NCHW", domain=_DOMAIN)],
    outputs=[OutputSpec("features", layout="NCHW")],
    description="Conv3x3(3->8)-BN-ReLU-MaxPool2-Conv3x3(8->16)-BN-ReLU; "
    "features [N,16,H//2,W//2]; BatchNorms with non-trivial statistics.",
    torch="model_zoo.torch_models:build_cnn",
    keras="model_zoo.keras_models:build_cnn",
    mxnet="model_zoo.mxnet_models:build_cnn",
    layouts={"keras": {"image": "NHWC", "features": "NHWC"}},
)

register_model(
    "depthwise",
    inputs=[InputSpec("image", ("N", 3, "H", "W"), dims=_IMAGE_DIMS, layout="NCHW", domain=_DOMAIN)],
    outputs=[OutputSpec("logits", layout="NC", class_axis=-1)],
    description="MobileNet-style: stem conv, two depthwise-separable blocks (depthwise conv with "
    "groups=C, pointwise 1x1, BN, ReLU6; the second strided), global average pool, Linear(64,10).",
    torch="model_zoo.torch_models:build_depthwise",
    keras="model_zoo.keras_models:build_depthwise",
    mxnet="model_zoo.mxnet_models:build_depthwise",
    layouts={"keras": {"image": "NHWC"}},
    unsupported={"torch->tflite": "onnx2tf 1.28.8 folds the batch into another axis before the classifier: "
                                  "logits come back [15, 10] for [3, 10] (refused when converted)"},
)

register_model(
    "mobilenet_v2",
    # Fixed spatial size (MobileNetV2 wants multiples of 32), H != W; [-1, 1]
    # is MobileNetV2's own input range.
    inputs=[InputSpec("image", ("N", 3, 96, 128), dims={"N": (1, 2)}, layout="NCHW", domain=(-1.0, 1.0))],
    # 60 layers deep: float32 rounding alone (torch's or TF's own noise floor
    # against float64) reaches ~1.4e-5 of max|logit|, above the CPU default of
    # 1e-5; conversions measured at 1.3-1.4x that floor.
    outputs=[OutputSpec("logits", layout="NC", class_axis=-1, tolerance=Tolerance(atol=1e-7, rtol=1e-5, atol_by_max=5e-5),
                        # fp16: measured 0.025-0.056 of max|logit| on four targets (see below)
                        target_tolerances={"fp16": Tolerance(atol=1e-4, rtol=1e-2, atol_by_max=0.12)})],
    description="A published architecture: keras.applications.MobileNetV2(alpha=0.35, classes=10, "
    "classifier_activation=None, weights=None) at 96x128, inverted residual blocks with depthwise "
    "convs, ReLU6, residual adds and ZeroPadding before strided convs; BatchNorm statistics calibrated "
    "on the input domain then perturbed; logits [N,10]. Keras only.",
    keras="model_zoo.keras_models:build_mobilenet_v2",
    layouts={"keras": {"image": "NHWC"}},
    # Random weights through 60 layers amplify rounding: correct conversions measured (2026-11, ONNX
    # Runtime, OpenVINO, LiteRT and ONNX's reference evaluator, 25 examples each) at 0.025-0.056 of
    # max|logit| in fp16, and in int8 (static and dynamic) at cosine 0.88-0.99, SNR 4.7-17 dB, up to
    # 0.56 of max|logit|: near where a doubled activation scale takes the zoo CNN (SNR 3.3 dB, cosine
    # 0.973), so an int8 check of this model cannot tell a bug from quantization.
    unsupported={"keras->ncnn": "pnnx 20261020 leaves the ZeroPadding's Pad as a layer ncnn does not have",
                 "int8": "random weights through 60 layers: a correct int8 conversion measured at cosine "
                         "0.88-0.97 and SNR 4.7-12 dB, where a bug would be (see model_zoo/vision.py)",
                 "int8-dynamic": "random weights through 60 layers: a correct int8-dynamic conversion measured at "
                                 "cosine 0.89-0.99 and SNR 5-17 dB (see model_zoo/vision.py)"},
)
