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
from harness.inputs import example_recipe
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
    """Export zoo model `name` (bound to its spec's names, as the harness runs
    it), or the model wrapped in a module that plants a bug (`wrap`, for zoo
    models whose forward takes the spec's inputs in order)."""
    from harness.sources import torch as torch_source

    spec = get_model(name)
    model = spec.builders["torch"]()
    return export(wrap(model) if wrap else torch_source.bind(model, spec), spec, out_dir, exporter)


def perturbed_weight_onnx(name: str, tmp: Path, relative: float = 1e-3, which: str = "last") -> Path:
    """The correct export of zoo model `name` with one weight perturbed (see `perturb_weight`)."""
    return perturb_weight(export_zoo(name, tmp / f"{name}-perturbed"), relative, which)


def perturb_weight(path: Path, relative: float = 1e-3, which: str = "last") -> Path:
    """Scale one weight of an ONNX file by (1 + relative), in place: the
    largest-magnitude element of the last weight matrix or kernel, or of the
    middle one (`which="middle"`: one layer deep inside a network)."""
    model = onnx.load(str(path))
    weights = [t for t in model.graph.initializer if len(t.dims) >= 2 and t.data_type == onnx.TensorProto.FLOAT]
    target = weights[-1] if which == "last" else weights[len(weights) // 2]
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


# --- bugs that show only at a corner of the input space ---------------------------------
# Each original is a torch module registered by a model file; its "converted"
# twin is exported from a module with the bug. They are what the corner
# examples are for: random draws find each only by luck.

class ScaledReLU(torch.nn.Module):
    """relu(1.55 x) on inputs in [-4, 4]: above 6 only where x > 3.87."""

    def forward(self, x):
        return torch.relu(1.55 * x)


class ScaledReLU6(torch.nn.Module):
    """The same, clipped at 6 (a ReLU converted as ReLU6): wrong only at large magnitudes."""

    def forward(self, x):
        return torch.clamp(1.55 * x, 0.0, 6.0)


class PerSampleScale(torch.nn.Module):
    """Each sample scaled by its own mean magnitude."""

    def forward(self, x):
        return x * x.abs().mean(dim=1, keepdim=True)


class FirstSampleScale(torch.nn.Module):
    """Every sample scaled by the first sample's mean magnitude (a batch dim
    folded wrongly): right only when the batch holds one sample."""

    def forward(self, x):
        return x * x[:1].abs().mean(dim=1, keepdim=True)


MAX_T = 32


class PositionOffset(torch.nn.Module):
    """Adds a learned-looking offset per time step, from a table of MAX_T."""

    def __init__(self, table_length: int = MAX_T):
        super().__init__()
        table = torch.linspace(-1.0, 1.0, MAX_T)
        table[table_length:] = 0.0  # a truncated table: the last steps get no offset
        self.register_buffer("table", table)

    def forward(self, x):
        return x + self.table[: x.shape[1]].unsqueeze(0).unsqueeze(-1)


CORNER_MODEL_FILE = f'''
from harness import InputSpec, register_model
from tests.planted import PerSampleScale, PositionOffset, ScaledReLU

register_model("scaled_relu", inputs=[InputSpec("x", ("N", 8), dims={{"N": (1, 4)}}, layout="NC", domain=(-4.0, 4.0))],
               outputs=["y"], torch=ScaledReLU)
register_model("per_sample", inputs=[InputSpec("x", ("N", 6), dims={{"N": (1, 4)}}, layout="NC")],
               outputs=["y"], torch=PerSampleScale)
register_model("positions", inputs=[InputSpec("x", ("N", "T", 3), dims={{"N": (1, 2), "T": (4, {MAX_T})}},
                                              layout="NTC")],
               outputs=["y"], torch=PositionOffset)
'''
# model name -> the module whose export carries the bug
CORNER_BUGS = {
    "scaled_relu": ("large magnitudes", ScaledReLU6),
    "per_sample": ("a batch above 1", FirstSampleScale),
    "positions": ("the largest shape", lambda: PositionOffset(MAX_T - 1)),
}


# --- reduced precision -------------------------------------------------------------------

class LargeSum(torch.nn.Module):
    """A sum of squares scaled up past float16's range (65504) on every input
    of its spec, then scaled back down: right in float16 only where the sum is
    kept in float32."""

    def forward(self, x):
        total = (x * x).sum(dim=1, keepdim=True) * 1000.0
        return total * 1e-3 + x.mean(dim=1, keepdim=True)


LARGE_SUM_MODEL_FILE = '''
from harness import InputSpec, register_model
from tests.planted import LargeSum

register_model("large_sum", inputs=[InputSpec("x", ("N", 64), dims={"N": (1, 4)}, layout="NC", domain=(-4.0, 4.0))],
               outputs=["y"], torch=LargeSum)
'''


def float16_without_range_analysis(source: Path, out: Path) -> Path:
    """`source` in float16 by onnxconverter-common with float32 inputs and
    outputs but no node kept in float32 for its range: the overflow slip."""
    from onnxconverter_common import float16

    lowered = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True, max_finite_val=65504.0)
    onnx.save(lowered, str(out))
    return out


def double_activation_scale(source: Path, out: Path) -> Path:
    """A QDQ model with the scale of one activation's DequantizeLinear doubled
    (its QuantizeLinear keeps the right one), in the middle of the graph."""
    model = onnx.load(str(source))
    produced_by = {o: n for n in model.graph.node for o in n.output}
    activations = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                   and n.input[0] in produced_by and produced_by[n.input[0]].op_type == "QuantizeLinear"]
    node = activations[len(activations) // 2]
    scales = {t.name: t for t in model.graph.initializer}
    doubled = numpy_helper.to_array(scales[node.input[1]]) * np.float32(2)
    model.graph.initializer.append(numpy_helper.from_array(doubled, node.input[1] + "_doubled"))
    node.input[1] = node.input[1] + "_doubled"
    onnx.save(model, str(out))
    return out


def keras_batchnorm_epsilon(path: Path, model, layer: str, epsilon: float, out: Path) -> Path:
    """A tf2onnx file of Keras `model` with BatchNormalization `layer`'s epsilon
    changed. tf2onnx emits no BatchNormalization node for Keras 3's: its
    inference arithmetic is x * scale + shift, with scale = gamma / sqrt(var +
    eps) and shift = beta - mean * scale folded into the constants of the
    layer's Mul ("<scope>/batchnorm/mul_1") and Add ("<scope>/batchnorm/add_1");
    both are recomputed with `epsilon`. Returns `out`."""
    proto = onnx.load(str(path))
    gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in model.get_layer(layer).get_weights())
    nodes = {n.name.rsplit("/batchnorm/", 1)[-1]: n for n in proto.graph.node
             if f"/{layer}_1/batchnorm/" in n.name or f"/{layer}/batchnorm/" in n.name}
    weights = {t.name: t for t in proto.graph.initializer}
    scale, shift = weights[nodes["mul_1"].input[1]], weights[nodes["add_1"].input[1]]
    planted = gamma / np.sqrt(variance + epsilon)
    for tensor, value in ((scale, planted), (shift, beta - mean * planted)):
        tensor.CopyFrom(numpy_helper.from_array(value.reshape(tuple(tensor.dims)).astype(np.float32), tensor.name))
    onnx.save(proto, str(out))
    return out
