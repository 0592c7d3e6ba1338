"""A torch module bound to a model spec's names: called with the spec's inputs
in order, it returns the spec's outputs in order.

Models from Hugging Face `transformers` (and many others) take their inputs
as keywords (`input_ids=`, `attention_mask=`, `pixel_values=`) whose order in
`forward` is not the spec's, and return a dict-like `ModelOutput` whose
entries include objects that are not tensors (a `DynamicCache`) and that
neither exporter accepts. Bound once here, the reference run, both ONNX
exporters and the float64 twin all see the same positional module.

Imported only by `harness.sources.torch` when a model is bound: importing it
imports torch.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from harness.sources.model_io import select_outputs


class SpecBound(torch.nn.Module):
    """`inner` called with the spec's inputs, by keyword where its forward names
    them (`by_keyword`), else by position; its outputs picked by the spec's
    names from a dict-like result, else flattened in order."""

    def __init__(self, inner: torch.nn.Module, input_names: Sequence[str], output_names: Sequence[str],
                 by_keyword: bool):
        super().__init__()
        self.inner = inner
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.by_keyword = by_keyword
        # A new module is in training mode; exporters restore the mode they found,
        # recursively, and would leave `inner`'s BatchNorms in training mode.
        self.train(inner.training)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.by_keyword:
            result = self.inner(**dict(zip(self.input_names, inputs)))
        else:
            result = self.inner(*inputs)
        return tuple(select_outputs(result, is_tensor, self.output_names))


def binds_by_keyword(model: torch.nn.Module, input_names: Sequence[str]) -> bool:
    """True when `model.forward` names every spec input as a parameter but its
    leading positional parameters are not the spec's inputs in order (keyword-only
    parameters, or another order): then only keywords bind them right."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    if not all(name in parameters for name in input_names):
        return False
    positional = [name for name, p in parameters.items()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return positional[:len(input_names)] != list(input_names)


def is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)
