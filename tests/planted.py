"""Converted models with planted bugs, made the way users make them: export a
(modified) torch model to ONNX, or edit the ONNX file after export."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from harness.converters import torch_onnx
from harness.engine import example_recipe
from harness.inputs import make_inputs
from harness.registry import get_model
from harness.specs import ModelSpec


def export(model: torch.nn.Module, spec: ModelSpec, out_dir: Path, exporter: str = "dynamo") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    example = [make_inputs(spec, example_recipe(spec))[i.name] for i in spec.inputs]
    torch_onnx.convert(model.eval(), spec, example, out_dir, layouts=spec.source_layouts("torch"), exporter=exporter)
    return out_dir / torch_onnx.FILENAME


def export_zoo(name: str, out_dir: Path, wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
               exporter: str = "dynamo") -> Path:
    """Export zoo model `name`, optionally wrapped in a module that plants a bug."""
    spec = get_model(name)
    model = spec.builders["torch"]()
    return export(wrap(model) if wrap else model, spec, out_dir, exporter)


def perturbed_weight_onnx(name: str, tmp: Path, relative: float = 1e-3) -> Path:
    """The correct export of zoo model `name` with one weight perturbed (see `perturb_weight`)."""
    return perturb_weight(export_zoo(name, tmp / f"{name}-perturbed"), relative)


def perturb_weight(path: Path, relative: float = 1e-3) -> Path:
    """Scale one weight of an ONNX file by (1 + relative), in place: the
    largest-magnitude element of the last weight matrix or kernel."""
    model = onnx.load(str(path))
    weights = [t for t in model.graph.initializer if len(t.dims) >= 2 and t.data_type == onnx.TensorProto.FLOAT]
    target = weights[-1]
    array = numpy_helper.to_array(target).copy()
    index = np.unravel_index(np.argmax(np.abs(array)), array.shape)
    array[index] *= np.float32(1 + relative)
    target.CopyFrom(numpy_helper.from_array(array, target.name))
    onnx.save(model, str(path))
    return path


class TransposeHW(torch.nn.Module):
    """Feeds the wrapped model its input with H and W swapped: the classic layout slip."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.transpose(2, 3))


class ExtraAxis(torch.nn.Module):
    """Returns the wrapped model's output with an extra axis: a wrong output shape."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).unsqueeze(1)


class SquareRoot(torch.nn.Module):
    """NaN for negative inputs, on purpose."""

    def forward(self, x):
        return torch.sqrt(x) * 2


class SquareRootOfMagnitude(torch.nn.Module):
    """The same model 'fixed' during conversion: no NaN where the original has them."""

    def forward(self, x):
        return torch.sqrt(torch.abs(x)) * 2


SQRT_MODEL_FILE = '''
from harness import InputSpec, register_model
from tests.planted import SquareRoot

register_model("sqrt_model", inputs=[InputSpec("x", ("N", 6), dims={"N": (1, 4)}, domain=(-1.0, 1.0))],
               outputs=["y"], torch=SquareRoot)
'''
