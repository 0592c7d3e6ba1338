"""The ONNX source's values for the tensors of an ONNX graph made from its
file (`layer_values`): a lowered or rewritten copy keeps most tensor names, so
the original file, every tensor of it marked as an output, runs in ONNX
Runtime's CPU provider as the reference does, and each tensor the converted
graph also computes is matched to it by name and shape.

onnx and onnxruntime are imported inside the functions.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.localize.graph import FLOAT_TYPES, load_graph, write_marked
from harness.localize.layers import LayerValues
from harness.runtimes.onnxruntime import cpu_session, run_session
from harness.sources.onnx import OnnxModel


def layer_values(model: OnnxModel, inputs: Sequence[np.ndarray], onnx_model: Any) -> LayerValues:
    """This file's values of the tensors a converted ONNX graph shares with it
    by name (a lowered or rewritten copy keeps most names), from ONNX Runtime's
    CPU provider as the reference runs; see the module docstring."""
    graph = load_graph(model.path)
    wanted = [t for t in graph.float_tensors() if t in {name for n in onnx_model.graph.node for name in n.output}]
    found = LayerValues(how="tensors of the same name in the original ONNX file", seen=len(graph.float_tensors()))
    declared = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
                for v in [*onnx_model.graph.value_info, *onnx_model.graph.output] if v.type.HasField("tensor_type")}
    with tempfile.TemporaryDirectory(prefix="parity-onnx-layers-") as folder:
        marked = write_marked(graph, wanted, Path(folder) / "marked.onnx")
        session = cpu_session(str(Path(folder) / "marked.onnx"))
        values = run_session(session, marked, dict(zip(model.feeds, (np.asarray(x, order="C") for x in inputs))))
    for name, value in zip(marked, values):
        value = np.asarray(value)
        if name not in wanted or graph.types.get(name) not in FLOAT_TYPES:
            continue
        shape = declared.get(name)
        if shape is not None and (len(shape) != value.ndim
                                  or any(d is not None and d != v for d, v in zip(shape, value.shape))):
            found.skip("shape differs")
            continue
        node = graph.node_of(name)
        found.add(name, value, f"{node.name or name} ({node.op_type})")
    for _ in range(len(graph.float_tensors()) - len(wanted)):
        found.skip("no tensor of that name in the converted file")
    return found
