"""Zoo, real tier, torch: published architectures from Hugging Face
`transformers` (tiny configurations, random initialisation, BatchNorms
calibrated) and from torchvision (where a build matching torch is installed;
elsewhere their cases skip, naming the import's error).

Run with `--tier=real` (or name them with --model). Their inputs are the
keyword arguments of the models' forward (`pixel_values`, `input_ids`,
`attention_mask`), bound by name; their outputs are entries of the returned
`ModelOutput`, picked by name.
"""

from harness import InputSpec, OutputSpec, register_model

_BUILDERS = "model_zoo.transformers_models"
# Normalised images: H and W with different bounds; the smallest keeps every
# stage of a 32x-downsampling network at least 2 pixels wide.
_PIXELS = InputSpec("pixel_values", ("N", 3, "H", "W"), dims={"N": (1, 3), "H": (64, 96), "W": (72, 112)},
                    layout="NCHW", domain=(-2.5, 2.5))
_FEATURES = ("last_hidden_state", "pooler_output")


def _fixed_pixels(height: int, width: int) -> InputSpec:
    """Images of one size, for models whose position embeddings fix it."""
    return InputSpec("pixel_values", ("N", 3, height, width), dims={"N": (1, 3)}, layout="NCHW", domain=(-2.5, 2.5))


def _tokens(vocab: int = 1000) -> InputSpec:
    return InputSpec("input_ids", ("N", "T"), dims={"N": (1, 3), "T": (4, 48)}, dtype="int64", layout="NT",
                     domain=(0, vocab - 1))


# As tokenizers make it (right padding, every sequence at least one token): a row of
# zeros makes eager transformers and the exported graph differ where nothing can be
# attended to (tests/test_zoo_real.py keeps that case as a check the harness fails).
_MASK = InputSpec("attention_mask", ("N", "T"), dims={"N": (1, 3), "T": (4, 48)}, dtype="int64", layout="NT",
                  domain=(0, 1), kind="padding_mask")


# What the mobile converters cannot do with these models (2026-11: MNN 3.6.1, pnnx 20261020, onnx2tf
# 1.28.8), each the tool's own error; a model's cases through them are skipped with it.
_MNN_ISNAN = "MNN 3.6.1's converter: 'These Op Not Support: ONNX::IsNaN' (the exporter's attention masking)"
_PNNX_LEFT = "pnnx 20261020 leaves ops ncnn has no layer for: "
_ONNX2TF = "onnx2tf 1.28.8 fails on this graph: "
_ONNX2TF_NO_LAYOUT = ("onnx2tf 1.28.8 writes last_hidden_state channels-last, and the spec declares no layout for "
                      "it to be transposed back")
_UNSUPPORTED = {
    "hf_resnet": {"torch->tflite": _ONNX2TF_NO_LAYOUT},
    "hf_mobilenet_v2": {"torch->tflite": _ONNX2TF_NO_LAYOUT},
    "hf_efficientnet": {"torch->tflite": _ONNX2TF + "TypeError: unsupported operand type(s) for +: 'NoneType' "
                                                    "and 'int'"},
    "hf_convnext": {"torch->tflite": _ONNX2TF + "a reshape of a 32-element constant to an unknown shape"},
    "hf_vit": {"torch->mnn": _MNN_ISNAN, "torch->tflite": _ONNX2TF + "a TF-Keras symbolic tensor passed to a TF API"},
    "hf_levit": {"torch->ncnn": _PNNX_LEFT + "Tensor.slice"},
    "hf_bert": {"torch->mnn": _MNN_ISNAN, "torch->ncnn": _PNNX_LEFT + "Tensor.expand, pnnx.Expression, torch.gather",
                "torch->tflite": _ONNX2TF + "a boolean mask of unknown rank"},
    "hf_bert_masked": {"torch->mnn": _MNN_ISNAN, "torch->ncnn": _PNNX_LEFT + "torch.gather, torch.arange and others",
                       "torch->tflite": _ONNX2TF + "Cannot take the length of shape with unknown rank"},
    "hf_gpt2": {"torch->mnn": _MNN_ISNAN, "torch->ncnn": _PNNX_LEFT + "aten::diff, torch.arange and others",
                "torch->tflite": _ONNX2TF + "Cannot take the length of shape with unknown rank"},
}


def _vision(name: str, description: str, inputs=(_PIXELS,), outputs=_FEATURES) -> None:
    register_model(name, inputs=list(inputs), outputs=list(outputs), description=description,
                   torch=f"{_BUILDERS}:build_{name}", tier="real", requires=("transformers",),
                   unsupported=_UNSUPPORTED.get(name, {}))


_vision("hf_resnet", "transformers ResNetModel, basic blocks [2,2,2,2], widths 16..128; last_hidden_state "
                     "[N,128,H/32,W/32] and pooler_output [N,128,1,1]; BatchNorms calibrated.")
_vision("hf_mobilenet_v2", "transformers MobileNetV2Model at depth multiplier 0.35: inverted residuals, depthwise "
                           "convs, ReLU6; last_hidden_state [N,1280,2,3], pooler_output [N,1280]; BatchNorms "
                           "calibrated. Fixed 64x80: its TensorFlow-style padding is computed from the input size in "
                           "Python, so torch.export specializes H and W (the harness refuses such an export for a "
                           "spec with symbolic H and W).", inputs=(_fixed_pixels(64, 80),))
_vision("hf_efficientnet", "transformers EfficientNetModel (width 0.25, depth 0.5): MBConv with squeeze-excitation "
                           "and swish; last_hidden_state [N,320,H/32,W/32], pooler_output [N,320]; BatchNorms "
                           "calibrated.")
_vision("hf_convnext", "transformers ConvNextModel, widths 16..128, depths [1,1,3,1]: 7x7 depthwise convs, "
                       "channels-first LayerNorm, GELU, layer scale; last_hidden_state [N,128,H/32,W/32], "
                       "pooler_output [N,128].")
_vision("hf_vit", "transformers ViTModel: 8x8 patches of 64x96 images, 4 layers, 4 heads; last_hidden_state "
                  "[N,97,64] and the tanh pooler_output [N,64].", inputs=(_fixed_pixels(64, 96),))
_vision("hf_levit", "transformers LevitModel: convolutional stem, attention blocks with hard-swish, subsampling "
                    "attention, BatchNorm after every linear; last_hidden_state [N,1,64] (4x4 tokens subsampled "
                    "twice), pooler_output [N,64]; "
                    "BatchNorms calibrated. Square 64x64: its attention biases fix the input to image_size.",
          inputs=(_fixed_pixels(64, 64),))

register_model("hf_bert", inputs=[_tokens()], outputs=list(_FEATURES),
               description="transformers BertModel (2 layers, 4 heads, vocab 1000) on token ids alone; "
                           "last_hidden_state [N,T,64], pooler_output [N,64].",
               torch=f"{_BUILDERS}:build_hf_bert", tier="real", requires=("transformers",),
               unsupported=_UNSUPPORTED["hf_bert"])
register_model("hf_bert_masked", inputs=[_tokens(), _MASK], outputs=list(_FEATURES),
               description="The same BERT encoder with an attention mask (right padding, every sequence at "
                           "least one token).",
               torch=f"{_BUILDERS}:build_hf_bert_masked", tier="real", requires=("transformers",),
               unsupported=_UNSUPPORTED["hf_bert_masked"])
register_model("hf_gpt2", inputs=[_tokens()], outputs=[OutputSpec("logits", class_axis=-1)],
               description="transformers GPT2LMHeadModel (2 layers, 4 heads, vocab 1000): causal attention, tied "
                           "embeddings; logits [N,T,1000]. Token ids alone: with an attention mask that leaves a "
                           "position nothing to attend to (left padding), the exported graph's logits at that "
                           "position differ from eager torch's by ~0.2 (values that mean nothing either way; "
                           "tests/test_zoo_real.py keeps the case as a check the harness fails).",
               torch=f"{_BUILDERS}:build_hf_gpt2", tier="real", requires=("transformers",),
               unsupported=_UNSUPPORTED["hf_gpt2"])

# torchvision: cases skip, naming the import error, where no build matching torch is installed.
_IMAGE = InputSpec("image", ("N", 3, "H", "W"), dims={"N": (1, 3), "H": (64, 96), "W": (72, 112)}, layout="NCHW",
                   domain=(-2.5, 2.5))
for _name, _what in (("tv_resnet18", "torchvision resnet18: basic blocks, BatchNorm, ReLU"),
                     ("tv_mobilenet_v3_small", "torchvision mobilenet_v3_small: hard-swish, squeeze-excitation"),
                     ("tv_efficientnet_b0", "torchvision efficientnet_b0: MBConv, SiLU, squeeze-excitation")):
    register_model(_name, inputs=[_IMAGE], outputs=[OutputSpec("logits", class_axis=-1)],
                   description=f"{_what}; weights=None, 10 classes, BatchNorms calibrated; logits [N,10].",
                   torch=f"model_zoo.torchvision_models:build_{_name}", tier="real", requires=("torchvision",))
