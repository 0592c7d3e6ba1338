"""Zoo: small fully connected models."""

from harness import InputSpec, OutputSpec, Tolerance, register_model

_BATCH = {"N": (1, 4)}
# Seen with pnnx 20261020 (ONNX -> ncnn): MXNet's ONNX flattens with Flatten(axis=1), which pnnx writes as
# a 2-D Reshape that keeps the sample's batch of one as an axis: outputs come back [1, 1, C] for [1, C].
# tests/test_onnx_ncnn.py keeps the case as a canary that fails the day pnnx changes.
_PNNX_MXNET_FLATTEN = "pnnx 20261020 keeps an extra axis after MXNet's Flatten: outputs [1, 1, C] for [1, C]"

register_model(
    "simple",
    inputs=[InputSpec("input", ("N", 3), dims=_BATCH, layout="NC")],
    outputs=["output"],
    description="One Linear(3, 1): the seed project's SimpleModel.",
    torch="model_zoo.torch_models:build_simple",
    keras="model_zoo.keras_models:build_simple",
    mxnet="model_zoo.mxnet_models:build_simple",
    unsupported={"mxnet->ncnn": _PNNX_MXNET_FLATTEN},
)

register_model(
    "mlp",
    inputs=[InputSpec("x", ("N", 16), dims=_BATCH, layout="NC")],
    outputs=[OutputSpec("logits", layout="NC", class_axis=-1)],
    description="Linear(16,64)-ReLU-Linear(64,32)-GELU-Linear(32,10).",
    torch="model_zoo.torch_models:build_mlp",
    keras="model_zoo.keras_models:build_mlp",
    mxnet="model_zoo.mxnet_models:build_mlp",
    unsupported={"mxnet->ncnn": _PNNX_MXNET_FLATTEN},
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
    unsupported={
        "torch->ncnn": "pnnx lowers torch.argmax to no ncnn layer (ncnn has no ArgMax for this graph): the "
                       "conversion stops, naming it",
        "torch->mnn": "MNN computes int64 tensors as int32: the int64 label comes back int32 (a dtype mismatch)",
        "keras->mnn": "MNN computes int64 tensors as int32: the int64 label comes back int32 (a dtype mismatch)",
        "keras->ncnn": "pnnx 20261020 leaves tf2onnx's TopK as a layer ncnn does not have",
    },
)
