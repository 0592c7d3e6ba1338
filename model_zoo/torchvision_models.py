"""torchvision classification networks, built with weights=None (nothing is
downloaded), seeded, BatchNorms calibrated: the zoo's real tier for users who
have a torchvision build that matches their torch.

torchvision's wheels on PyPI are CUDA builds whose compiled ops do not load
beside a CPU-only torch ("operator torchvision::nms does not exist"): where
torchvision does not import, these models' cases skip with that error
(`requires=("torchvision",)` in their registrations).
"""

from __future__ import annotations

import torchvision
from torch import nn

from model_zoo.torch_models import build_seeded, image_batches

SEEDS = {"tv_resnet18": 13001, "tv_mobilenet_v3_small": 13002, "tv_efficientnet_b0": 13003}
PIXEL_DOMAIN = (-2.5, 2.5)
CLASSES = 10


def _build(name: str, make) -> nn.Module:
    return build_seeded(SEEDS[name], lambda: make(weights=None, num_classes=CLASSES),
                        image_batches((64, 80), PIXEL_DOMAIN, "x"))


def build_tv_resnet18() -> nn.Module:
    return _build("tv_resnet18", torchvision.models.resnet18)


def build_tv_mobilenet_v3_small() -> nn.Module:
    return _build("tv_mobilenet_v3_small", torchvision.models.mobilenet_v3_small)


def build_tv_efficientnet_b0() -> nn.Module:
    return _build("tv_efficientnet_b0", torchvision.models.efficientnet_b0)
