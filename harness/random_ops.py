"""The random operators an ONNX graph holds, found before any example runs.

A model that draws random numbers (RandomUniform, Bernoulli, Dropout in
training mode ...) gives another output on every run: two sessions agree
elementwise only by drawing the same numbers (a seed both honour), and differ
otherwise by the whole spread of the distribution. Neither says anything of
the conversion, so such a case is compared by distribution (explore.py).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

# Operators whose every run draws new numbers.
RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli",
                        "Multinomial"})
DROPOUT_TRAINING = "Dropout(training_mode)"


def random_ops(path: Path) -> tuple[str, ...]:
    """The random operators of the ONNX file at `path` (in its subgraphs and
    local functions too), sorted; a Dropout counts where its training_mode is
    true, or fed by the caller (a drawn input may be true)."""
    stat = Path(path).stat()
    return _in_file(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=64)
def _in_file(path: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    """Read once per version of a file: every case of a model asks (one per target)."""
    import onnx

    proto = onnx.load(path, load_external_data=False)
    return tuple(sorted(set(_found(proto))))


def _found(proto: Any) -> Iterator[str]:
    from onnx import AttributeProto, numpy_helper

    constants = {t.name: t for t in proto.graph.initializer}

    def training(node: Any, constant_values: dict[str, Any]) -> bool:
        if len(node.input) < 3 or not node.input[2]:
            return False   # training_mode left out: false
        name = node.input[2]
        if name in constant_values:
            return bool(numpy_helper.to_array(constant_values[name]).any())
        return True   # fed by the caller or computed in the graph: it may be true

    def in_nodes(nodes: Any, constant_values: dict[str, Any]) -> Iterator[str]:
        for node in nodes:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].type == AttributeProto.TENSOR:
                constant_values = {**constant_values, node.output[0]: node.attribute[0].t}
            if node.op_type in RANDOM_OPS:
                yield node.op_type
            elif node.op_type == "Dropout" and training(node, constant_values):
                yield DROPOUT_TRAINING
            for attribute in node.attribute:
                if attribute.type == AttributeProto.GRAPH:
                    yield from in_nodes(attribute.g.node, constant_values)
                elif attribute.type == AttributeProto.GRAPHS:
                    for graph in attribute.graphs:
                        yield from in_nodes(graph.node, constant_values)

    yield from in_nodes(proto.graph.node, constants)
    for function in proto.functions:
        yield from in_nodes(function.node, {})
