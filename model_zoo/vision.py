"""Zoo: convolutional models on NCHW images."""

from harness import InputSpec, OutputSpec, register_model

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
)

register_model(
    "depthwise",
    inputs=[InputSpec("image", ("N", 3, "H", "W"), dims=_IMAGE_DIMS, layout="NCHW", domain=_DOMAIN)],
    outputs=[OutputSpec("logits", layout="NC")],
    description="MobileNet-style: stem conv, two depthwise-separable blocks (depthwise conv with "
    "groups=C, pointwise 1x1, BN, ReLU6; the second strided), global average pool, Linear(64,10).",
    torch="model_zoo.torch_models:build_depthwise",
)
