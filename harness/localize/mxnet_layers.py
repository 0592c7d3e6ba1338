"""The MXNet source's values for the tensors of an ONNX graph mx2onnx converted
from it (`layer_values`), so that a localization can name the first MXNet op
whose output the converted graph no longer computes.

mx2onnx translates the symbol node by node and keeps its names: the ONNX
tensor of a node's output is named by the exporter's rule
(`mxnet_onnx.onnx_output_name`: "cnn_conv0_fwd_output" -> "cnn_conv0_fwd"),
and a node translated into several ONNX nodes ends with one named after it.
Every op output of the model's symbol (`get_internals()`; the graph the
converter exported: the cached graph of the hybridized block, or the block
traced on symbols) is computed at once by a SymbolBlock over the model's own
parameters, and matched to the ONNX tensor of its name, else (a graph output
the converter renamed to the spec's) to the output of the ONNX node of its
node's name with its shape. MXNet keeps its layouts through the export, so
shapes must be equal.

Nothing here raises for an odd model: what cannot be mapped is counted in
`LayerValues.unmapped`; a model that cannot be evaluated says why in `how`.
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Sequence

import numpy as np

from harness.errors import summarize_exception
from harness.localize.graph import FLOAT_TYPES
from harness.localize.layers import LayerValues

HOW = ("MXNet symbol internals (every op output of the exported graph, one SymbolBlock run), matched to ONNX "
       "tensors by mx2onnx's names")


def layer_values(model: Any, inputs: Sequence[np.ndarray], onnx_model: Any) -> LayerValues:
    """The MXNet model's op outputs on `inputs` (spec order), keyed by the
    tensors of `onnx_model` (mx2onnx's conversion of it) that hold them; see
    the module docstring."""
    from harness.converters.mxnet_onnx import onnx_output_name

    result = LayerValues(how=HOW)
    try:
        outputs = _internals(model, inputs)
    except Exception as error:  # a block that cannot be traced or run: the localizer goes on without it
        result.how = f"the MXNet symbol's internals could not be evaluated: {summarize_exception(error, 2)}"
        result.skip("internals failed")
        return result
    result.seen = len({node for node, _, _, _ in outputs})
    types = {v.name: v.type.tensor_type.elem_type for v in [*onnx_model.graph.value_info, *onnx_model.graph.output]}
    shapes = {v.name: _dims(v) for v in [*onnx_model.graph.value_info, *onnx_model.graph.output]}
    of_node = {node.name: [t for t in node.output if t] for node in onnx_model.graph.node if node.name}
    produced = {t for node in onnx_model.graph.node for t in node.output}
    for node, output, label, value in outputs:
        if not np.issubdtype(value.dtype, np.floating):
            result.skip("not a float tensor")
            continue
        named = onnx_output_name(output)
        candidates = [named] if named in produced else of_node.get(node, [])[::-1]
        fitting = [t for t in candidates if t not in result.values and types.get(t) in FLOAT_TYPES
                   and _fits(value.shape, shapes.get(t))]
        if fitting:
            result.add(fitting[0], value, label)
        else:
            result.skip("shape or type differs from its ONNX tensor's" if candidates
                        else "no ONNX tensor or node of its name")
    return result


def _internals(model: Any, inputs: Sequence[np.ndarray]) -> list[tuple[str, str, str, np.ndarray]]:
    """(node name, output name, label, value) of every op output of the
    model's symbol, in the symbol's order."""
    from harness.sources.mxnet import import_mxnet, model_context, symbol_graph

    mx = import_mxnet()
    symbols, output = symbol_graph(model)
    internals = output.get_internals()
    variables = set(output.list_arguments()) | set(output.list_auxiliary_states())
    ops = {node["name"]: node["op"] for node in json.loads(output.tojson())["nodes"]}
    picked = [(k, name) for k, name in enumerate(internals.list_outputs()) if name not in variables]
    group = mx.sym.Group([internals[k] for k, _ in picked])
    with warnings.catch_warnings():  # SymbolBlock warns about inputs of unknown type: they are typed when called
        warnings.simplefilter("ignore")
        block = mx.gluon.SymbolBlock(group, symbols, params=model.collect_params())
    context = model_context(model)
    values = block(*[mx.nd.array(np.asarray(x, order="C"), ctx=context, dtype=x.dtype) for x in inputs])
    values = values if isinstance(values, (list, tuple)) else [values]
    found = []
    for (k, name), value in zip(picked, values):
        node = internals[k].name
        label = f"{node} ({ops.get(node, '?')})"
        found.append((node, name, label if name == f"{node}_output" else f"{label} {name}", value.asnumpy()))
    return found


def _dims(value: Any) -> list[int | None] | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]


def _fits(shape: Sequence[int], dims: list[int | None] | None) -> bool:
    return dims is not None and len(shape) == len(dims) and all(d is None or d == s for s, d in zip(shape, dims))
