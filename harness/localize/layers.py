"""What a source framework tells the localizer: its own values for tensors of
an ONNX graph converted from it.

A source's layer probe, `harness/localize/<source>_layers.py` (found by the
source's name: `locate.layer_probe`), offers `layer_values(model, inputs,
onnx_model) -> LayerValues`: `inputs` in the spec's order
and the source's layouts, as `run` takes them; `onnx_model` the converted
`onnx.ModelProto`, whose tensors it maps its layers, modules or graph nodes
to. No framework is imported here."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LayerValues:
    """The source's values for some of an ONNX graph's tensors."""

    # ONNX tensor name -> the source's value, in that tensor's shape and layout
    values: dict[str, np.ndarray] = field(default_factory=dict)
    # ONNX tensor name -> the source layer, module path or graph node that computed it
    layers: dict[str, str] = field(default_factory=dict)
    # how the mapping was made, for the report ("torch.export FX nodes by name", ...)
    how: str = ""
    # source layers (or nodes) evaluated, mapped or not
    seen: int = 0
    # why some were not mapped: reason -> count ("no ONNX tensor of that name", "shape differs", ...)
    unmapped: dict[str, int] = field(default_factory=dict)

    def add(self, tensor: str, value: np.ndarray, layer: str) -> None:
        self.values[tensor] = value
        self.layers[tensor] = layer

    def skip(self, reason: str) -> None:
        self.unmapped[reason] = self.unmapped.get(reason, 0) + 1
