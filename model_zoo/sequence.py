"""Zoo: recurrent, attention and embedding models on sequences."""

from harness import InputSpec, OutputSpec, register_model

_SEQ_DIMS = {"N": (1, 4), "T": (2, 16)}

# Seen with TF 2.21: "TensorListReserve requires element_shape to be static"
# when the batch dim is symbolic; with a fixed batch it converts and matches.
_TFLITE_RNN = ("TFLiteConverter (TF 2.21) cannot lower a Keras RNN loop with a symbolic batch dim to "
               "builtin ops (TensorListReserve needs a static element_shape)")

# Seen with onnx2tf 1.28.8 (ONNX -> TFLite): its LSTM and GRU build Keras RNN layers whose initial state
# does not fit ("An `initial_state` was passed that is not compatible with `cell.state_size`").
_ONNX2TF_RNN = ("onnx2tf 1.28.8 builds the RNN with an initial state that does not fit its cell "
                "(ValueError: initial_state not compatible with cell.state_size)")
# Seen with pnnx 20261020 (ONNX -> ncnn): ops it writes under its own names, which ncnn has no layer for.
_PNNX_ONNX_RNN = "pnnx 20261020 leaves the RNN's Expand/Loop ops as pnnx layers ncnn does not have"

register_model(
    "lstm",
    inputs=[InputSpec("sequence", ("N", "T", 12), dims=_SEQ_DIMS, layout="NTC")],
    outputs=[OutputSpec("hidden_states", layout="NTC")],
    description="One-layer batch-first LSTM(12 -> 20); every step's hidden state [N,T,20].",
    torch="model_zoo.torch_models:build_lstm",
    keras="model_zoo.keras_models:build_lstm",
    mxnet="model_zoo.mxnet_models:build_lstm",
    unsupported={"keras->tflite": _TFLITE_RNN, "torch->tflite": _ONNX2TF_RNN, "mxnet->tflite": _ONNX2TF_RNN,
                 "keras->ncnn": _PNNX_ONNX_RNN, "mxnet->ncnn": _PNNX_ONNX_RNN},
)

# Seen with OpenVINO 2026.4: its ONNX frontend refuses the Loop tf2onnx writes
# for this two-layer Keras GRU (the torch GRU, exported as a GRU op, passes).
_OPENVINO_TF2ONNX_GRU = ("OpenVINO 2026.4's ONNX frontend cannot convert the Loop tf2onnx writes for a Keras GRU "
                         "(loop.cpp:310: loop-carried dependencies do not match its inputs); ONNX Runtime runs it")

register_model(
    "gru",
    inputs=[InputSpec("sequence", ("N", "T", 12), dims=_SEQ_DIMS, layout="NTC")],
    outputs=[OutputSpec("hidden_states", layout="NTC")],
    description="Two-layer batch-first GRU(12 -> 20); the last layer's hidden states [N,T,20].",
    torch="model_zoo.torch_models:build_gru",
    keras="model_zoo.keras_models:build_gru",
    unsupported={"keras->tflite": _TFLITE_RNN, "keras->openvino": _OPENVINO_TF2ONNX_GRU,
                 "torch->tflite": _ONNX2TF_RNN, "keras->ncnn": _PNNX_ONNX_RNN},
)

register_model(
    "transformer",
    inputs=[InputSpec("tokens", ("N", "T", 32), dims=_SEQ_DIMS, layout="NTC")],
    outputs=[OutputSpec("encoded", layout="NTC")],
    description="One post-norm transformer encoder block (d_model 32, 4 heads, feed-forward 64, "
    "GELU, LayerNorm, softmax attention), written out explicitly; [N,T,32].",
    torch="model_zoo.torch_models:build_transformer",
    keras="model_zoo.keras_models:build_transformer",
    unsupported={"torch->tflite": "onnx2tf 1.28.8 builds a transpose with a 4-axis perm for the attention's "
                                  "rank-4 reshape and fails (tf.transpose, perm ['0', '1', '4', '2'])",
                 "keras->ncnn": "pnnx 20261020 crashes (signal 11) on tf2onnx's graph of this block"},
)

register_model(
    "embedding",
    inputs=[
        InputSpec("token_ids", ("N", "T"), dims=_SEQ_DIMS, dtype="int64", layout="NT", domain=(0, 99)),
    ],
    outputs=[OutputSpec("embedded", layout="NTC")],
    description="Embedding(100, 16) over int64 token ids, then a per-token GELU MLP with a "
    "residual; [N,T,16].",
    torch="model_zoo.torch_models:build_embedding",
    keras="model_zoo.keras_models:build_embedding",
    unsupported={"keras->ncnn": "pnnx 20261020 leaves tf2onnx's Gather and mask ops as pnnx layers ncnn does "
                                "not have"},
)
