"""The ONNX graph a localization walks: its float tensors in topological order,
who produces and who reads each, a copy with intermediate tensors marked as
outputs, the paths between two tensors, and subgraphs cut out of it
(`onnx.utils.extract_model`). onnx is imported inside the functions."""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import summarize_exception

# onnx.TensorProto element types whose values are compared: FLOAT, FLOAT16, DOUBLE, BFLOAT16
FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}
# Above this a marked copy keeps its weights in a sidecar file (protobuf's limit is 2 GiB).
EXTERNAL_DATA_ABOVE_BYTES = 1 << 30


@dataclass
class Graph:
    """An ONNX model with its shapes inferred, indexed for walking."""

    model: Any                                   # onnx.ModelProto, shapes inferred where ONNX could
    path: Path                                   # the file it was read from
    producer: dict[str, Any] = field(default_factory=dict)          # tensor -> the node writing it
    consumers: dict[str, list[Any]] = field(default_factory=dict)   # tensor -> nodes reading it
    types: dict[str, int] = field(default_factory=dict)             # tensor -> element type, where known
    inputs: list[str] = field(default_factory=list)                 # fed inputs (not initializers)
    outputs: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)   # every node output, in the nodes' topological order

    @property
    def nodes(self) -> int:
        return len(self.model.graph.node)

    def float_tensors(self) -> list[str]:
        """Node outputs of a float type, in topological order: what can be compared."""
        return [t for t in self.order if self.types.get(t) in FLOAT_TYPES]

    def node_of(self, tensor: str) -> Any | None:
        return self.producer.get(tensor)

    def ancestors(self, tensor: str) -> set[str]:
        """Every tensor `tensor` is computed from, itself included."""
        seen, queue = {tensor}, deque([tensor])
        while queue:
            node = self.producer.get(queue.popleft())
            for name in node.input if node is not None else ():
                if name and name not in seen:
                    seen.add(name)
                    queue.append(name)
        return seen

    def chain(self, start: str, end: str, floats_only: bool = False) -> list[str]:
        """The shortest chain of node outputs from `start` to `end` (both
        included), following the nodes that read each (`floats_only`: through
        float tensors only, the ones compared, not through shape arithmetic);
        [] where `end` is not computed from `start`."""
        before = {start: None}
        queue = deque([start])
        while queue:
            tensor = queue.popleft()
            if tensor == end:
                chain = []
                while tensor is not None:
                    chain.append(tensor)
                    tensor = before[tensor]
                return chain[::-1]
            for node in self.consumers.get(tensor, ()):
                for out in node.output:
                    if out and out not in before and (not floats_only or self.types.get(out) in FLOAT_TYPES):
                        before[out] = tensor
                        queue.append(out)
        return []

    def chain_from_inputs(self, tensor: str) -> list[str]:
        """The shortest chain from a fed input to `tensor`, through float
        tensors where there is one."""
        chains = [self.chain(name, tensor, floats_only=True) for name in self.inputs]
        found = [chain for chain in chains if chain] or [c for c in (self.chain(n, tensor) for n in self.inputs) if c]
        return min(found, key=len) if found else [tensor]


def load_graph(path: Path) -> Graph:
    """Read an ONNX file (its external data too) and infer its shapes and types."""
    import onnx

    model = onnx.load(str(path))
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError) as error:   # ValueError: a graph over protobuf's 2 GiB
        warnings.warn(f"{path}: ONNX shape inference stopped ({summarize_exception(error, 1)}); the localization "
                      "walks only the tensors whose types the graph declares", stacklevel=2)
    graph = Graph(model=model, path=Path(path))
    initializers = {t.name for t in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            graph.types[value.name] = value.type.tensor_type.elem_type
    for tensor in model.graph.initializer:
        graph.types.setdefault(tensor.name, tensor.data_type)
    graph.inputs = [v.name for v in model.graph.input if v.name not in initializers]
    graph.outputs = [v.name for v in model.graph.output]
    for node in model.graph.node:
        for name in node.input:
            if name:
                graph.consumers.setdefault(name, []).append(node)
        for name in node.output:
            if name:
                graph.producer[name] = node
                graph.order.append(name)
    return graph


def write_marked(graph: Graph, tensors: list[str], path: Path) -> list[str]:
    """A copy of the graph at `path` whose outputs are its own followed by
    `tensors` (those of a known type that are not outputs already); returns the
    outputs of the copy, in order. Marking an intermediate tensor as an output
    keeps a runtime from fusing the nodes on either side of it."""
    import onnx
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    present = set(graph.outputs)
    for name in tensors:
        if name in present or name not in graph.types:
            continue
        model.graph.output.append(helper.make_tensor_value_info(name, graph.types[name], None))
        present.add(name)
    _save(model, path)
    return [v.name for v in model.graph.output]


def extract(graph: Graph, inputs: list[str], outputs: list[str], path: Path) -> Path:
    """The part of the graph that computes `outputs` from `inputs` (fed
    tensors, or any intermediate tensors cut loose as inputs), as its own file."""
    import onnx
    from onnx.utils import Extractor

    extractor = Extractor(graph.model)
    model = extractor.extract_model(inputs, outputs)
    model.ir_version = graph.model.ir_version
    _save(model, path)
    onnx.checker.check_model(str(path))
    return path


def _save(model: Any, path: Path) -> None:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() > EXTERNAL_DATA_ABOVE_BYTES:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save(model, str(path))
