"""Zoo: small fully connected models."""

from harness import InputSpec, OutputSpec, Tolerance, register_model

_BATCH = {"N": (1, 4)}

register_model(
    "simple",
    inputs=[InputSpec("input", ("N", 3), dims=_BATCH, layout="NC")],
    outputs=["output"],
    description="One Linear(3, 1): the seed project's SimpleModel.",
    torch="model_zoo.torch_models:build_simple",
    keras="model_zoo.keras_models:build_simple",
    mxnet="model_zoo.mxnet_models:build_simple",
)

register_model(
    "mlp",
    inputs=[InputSpec("x", ("N", 16), dims=_BATCH, layout="NC")],
    outputs=[OutputSpec("logits", layout="NC", class_axis=-1)],
    description="Linear(16,64)-ReLU-Linear(64,32)-GELU-Linear(32,10).",
    torch="model_zoo.torch_models:build_mlp",
    keras="model_zoo.keras_models:build_mlp",
    mxnet="model_zoo.mxnet_models:build_mlp",
)

register_model(
    "two_outputs",
    inputs=[InputSpec("x", ("N", 8), dims=_BATCH, layout="NC")],
    outputs=[
        # float32, magnitudes ~100: the default float tolerance applies.
        OutputSpec("logits", layout="NC", class_axis=-1),
        # int64 argmax of the logits: compared exactly (integer default), except
        # under TF32 on CUDA, whose logit error (~2e-3 of max|logit|, ~0.4 here)
        # can legitimately flip the rare near-tie (1% of rows have a top-2 gap
        # under 0.4): one row of a batch of up to 4 may differ there.
        OutputSpec("label", target_tolerances={"onnxruntime:cuda": Tolerance(max_mismatch=0.25)}),
    ],
    description="A 5-class classifier with float logits scaled to ~100 and their int64 argmax, "
    "two outputs of different scale and dtype; the logits are well separated so that float noise "
    "cannot flip the argmax.",
    torch="model_zoo.torch_models:build_two_outputs",
    keras="model_zoo.keras_models:build_two_outputs",
)
