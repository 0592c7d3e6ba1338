"""Published architectures from Hugging Face `transformers`, in tiny
configurations, randomly initialised: the torch half of the zoo's real tier.

Nothing is downloaded: every model is built from a config object, its weights
drawn by the library's own initialisation under the model's fixed seed. A
randomly initialised deep CNN has BatchNorm statistics of (0, 1) (and, in
some libraries, BatchNorm weights near 0), which make it (nearly) insensitive
to its input; `_seeded` gives every BatchNorm the statistics of real
activations, measured in training mode on inputs from the spec's domain, as
training would (`torch_models.build_seeded`).

Imported only when a builder runs (registrations in `model_zoo.real_torch`
name builders as "model_zoo.transformers_models:build_*" strings).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import transformers
from torch import nn

from model_zoo.torch_models import build_seeded, image_batches

# One fixed seed per model: adding or changing one model never changes another's weights.
SEEDS = {
    "hf_resnet": 11001,
    "hf_mobilenet_v2": 11002,
    "hf_efficientnet": 11003,
    "hf_convnext": 11004,
    "hf_vit": 11005,
    "hf_levit": 11006,
    "hf_bert": 12001,
    "hf_bert_masked": 12002,
    "hf_gpt2": 12003,
}

# Inputs of the vision models: normalised images (ImageNet statistics), so
# values within a few units of zero.
PIXEL_DOMAIN = (-2.5, 2.5)
VIT_SIZE = (64, 96)     # (H, W): fixed by the position embeddings; H != W
LEVIT_SIZE = (64, 64)   # square: LeViT's attention biases fix it to image_size
VOCAB = 1000


def _seeded(name: str, make: Callable[[], nn.Module], calibration: Callable[[np.random.Generator], dict] | None = None
            ) -> nn.Module:
    return build_seeded(SEEDS[name], make, calibration)


def _images(size: tuple[int, int]) -> Callable[[np.random.Generator], dict]:
    return image_batches(size, PIXEL_DOMAIN, "pixel_values")


# --- vision --------------------------------------------------------------------------


def build_hf_resnet() -> nn.Module:
    """ResNet with basic blocks (a narrow ResNet-18): 4 stages of 2 blocks."""
    config = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[2, 2, 2, 2],
                                       layer_type="basic")
    return _seeded("hf_resnet", lambda: transformers.ResNetModel(config), _images((64, 80)))


def build_hf_mobilenet_v2() -> nn.Module:
    """MobileNetV2 at depth multiplier 0.35: inverted residuals, depthwise convs, ReLU6."""
    config = transformers.MobileNetV2Config(depth_multiplier=0.35, image_size=96)
    return _seeded("hf_mobilenet_v2", lambda: transformers.MobileNetV2Model(config), _images((64, 80)))


def build_hf_efficientnet() -> nn.Module:
    """EfficientNet (B0's layout, width 0.25, depth 0.5): MBConv blocks with
    squeeze-excitation and swish."""
    from transformers.models.efficientnet.modeling_efficientnet import round_filters

    config = transformers.EfficientNetConfig(width_coefficient=0.25, depth_coefficient=0.5, image_size=64)
    config.hidden_dim = round_filters(config, 1280)  # the top conv's width, which the config does not derive
    return _seeded("hf_efficientnet", lambda: transformers.EfficientNetModel(config), _images((64, 80)))


def build_hf_convnext() -> nn.Module:
    """ConvNeXt: 7x7 depthwise convs, channels-first LayerNorm, GELU, layer scale."""
    config = transformers.ConvNextConfig(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 3, 1])
    return _seeded("hf_convnext", lambda: transformers.ConvNextModel(config))


def build_hf_vit() -> nn.Module:
    """ViT: 8x8 patches of a 64x96 image, 4 layers of 4-head attention, GELU MLPs."""
    config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                                    image_size=list(VIT_SIZE), patch_size=8)
    return _seeded("hf_vit", lambda: transformers.ViTModel(config, add_pooling_layer=True))


def build_hf_levit() -> nn.Module:
    """LeViT: convolutional stem, attention with hard-swish, BatchNorm everywhere.
    Its attention biases fix a square input of `image_size`."""
    key_dim, sizes = 8, [32, 48, 64]
    config = transformers.LevitConfig(image_size=LEVIT_SIZE[0], hidden_sizes=sizes, num_attention_heads=[2, 3, 4],
                                      depths=[1, 1, 1], key_dim=[key_dim] * 3,
                                      down_ops=[["Subsample", key_dim, sizes[0] // key_dim, 4, 2, 2],
                                                ["Subsample", key_dim, sizes[1] // key_dim, 4, 2, 2]])
    return _seeded("hf_levit", lambda: transformers.LevitModel(config), _images(LEVIT_SIZE))


# --- text ----------------------------------------------------------------------------


def _bert_config() -> transformers.BertConfig:
    return transformers.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=128, max_position_embeddings=64)


def build_hf_bert() -> nn.Module:
    """A BERT encoder (2 layers, 4 heads) called with token ids alone."""
    return _seeded("hf_bert", lambda: transformers.BertModel(_bert_config()))


def build_hf_bert_masked() -> nn.Module:
    """The same encoder called with token ids and an attention mask."""
    return _seeded("hf_bert_masked", lambda: transformers.BertModel(_bert_config()))


def build_hf_gpt2() -> nn.Module:
    """A GPT-2 decoder with its language-model head (causal attention, tied
    embeddings); no key/value cache is returned."""
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                     bos_token_id=0, eos_token_id=0, use_cache=False)
    return _seeded("hf_gpt2", lambda: transformers.GPT2LMHeadModel(config))
