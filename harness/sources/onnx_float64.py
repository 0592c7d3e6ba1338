"""The float64 twin of an ONNX model: the same graph computing in float64
wherever it computed in float32, for the noise floor (the model's own float32
error against float64 on the same inputs).

What widens: float32 initializers (sparse ones' values too), graph inputs,
outputs and value_info, tensor attributes (Constant's value, ConstantOfShape's
fill), Constant's value_float(s), and the float32 of `to`/`dtype` attributes
(Cast, RandomNormal, EyeLike, ...), in subgraphs and local functions alike.

Where an op's schema takes or gives float32 and not float64 in one place
(Resize's `scales`, DequantizeLinear's output before opset 19), the twin
keeps float32 there with a Cast on each side, and says so: that op's own
arithmetic is float32 in the twin too. Which tensors were float32 comes from
the model's declared and inferred types; a tensor whose type is unknown is
left as it is (a twin that does not type-check is refused by the runtime that
loads it, which then says why).
"""

from __future__ import annotations

from typing import Any, Iterator

_FLOAT, _DOUBLE = 1, 11  # onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE
_DTYPE_ATTRIBUTES = ("to", "dtype")


def widen(model: Any) -> tuple[Any | None, list[str]]:
    """(the float64 twin of ModelProto `model`, the places kept in float32),
    or (None, []) when the model holds no float32 tensor to widen. `model`
    must hold its external data (the twin is made in memory)."""
    import onnx

    original = _float32_names(model)
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    kept: list[str] = []
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in twin.opset_import}
    taken = _all_names(twin)
    widened = False
    for graph in _graphs(twin):
        widened |= _widen_graph(graph, original, opsets, taken, kept)
    for function in twin.functions:
        for node in function.node:
            widened |= _widen_attributes(node)
    return (twin if widened else None), kept


def _widen_graph(graph: Any, original: set[str], opsets: dict[str, int], taken: set[str], kept: list[str]) -> bool:
    """Widen one graph in place (its subgraphs are graphs of their own); whether anything was float32."""
    import onnx

    widened = False
    for tensor in graph.initializer:
        widened |= _widen_tensor(tensor)
    for sparse in graph.sparse_initializer:
        widened |= _widen_tensor(sparse.values)
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        widened |= _widen_type(value.type)
    nodes = []
    for node in graph.node:
        widened |= _widen_attributes(node)
        before, after = _float32_only_casts(node, original, opsets, taken, kept)
        kept_node = onnx.NodeProto()
        kept_node.CopyFrom(node)  # a copy: the originals go with the field that is cleared below
        nodes += before + [kept_node] + after
    del graph.node[:]
    graph.node.extend(nodes)
    return widened


def _widen_tensor(tensor: Any) -> bool:
    from onnx import numpy_helper

    if tensor.data_type != _FLOAT:
        return False
    wide = numpy_helper.from_array(numpy_helper.to_array(tensor).astype("float64"), tensor.name)
    tensor.CopyFrom(wide)
    return True


def _widen_type(type_proto: Any) -> bool:
    """float32 to float64 in a type, through sequences, optionals and maps."""
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type" or kind == "sparse_tensor_type":
        inner = getattr(type_proto, kind)
        if inner.elem_type == _FLOAT:
            inner.elem_type = _DOUBLE
            return True
        return False
    if kind in ("sequence_type", "optional_type"):
        return _widen_type(getattr(type_proto, kind).elem_type)
    if kind == "map_type":
        return _widen_type(type_proto.map_type.value_type)
    return False


def _widen_attributes(node: Any) -> bool:
    """A node's float32 attributes to float64; its subgraphs are widened as
    graphs of their own (`_graphs`)."""
    from onnx import AttributeProto, helper

    widened = False
    if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
        for attribute in list(node.attribute):
            if attribute.name in ("value_float", "value_floats"):
                values = [attribute.f] if attribute.name == "value_float" else list(attribute.floats)
                shape = [] if attribute.name == "value_float" else [len(values)]
                node.attribute.remove(attribute)
                node.attribute.append(helper.make_attribute(
                    "value", helper.make_tensor("value", _DOUBLE, shape, values)))
                widened = True
    for attribute in node.attribute:
        if attribute.type == AttributeProto.INT and attribute.name in _DTYPE_ATTRIBUTES and attribute.i == _FLOAT:
            attribute.i = _DOUBLE
            widened = True
        elif attribute.type == AttributeProto.TENSOR:
            widened |= _widen_tensor(attribute.t)
        elif attribute.type == AttributeProto.TENSORS:
            for tensor in attribute.tensors:
                widened |= _widen_tensor(tensor)
        elif attribute.type == AttributeProto.SPARSE_TENSOR:
            widened |= _widen_tensor(attribute.sparse_tensor.values)
    return widened


def _float32_only_casts(node: Any, original: set[str], opsets: dict[str, int], taken: set[str],
                        kept: list[str]) -> tuple[list[Any], list[Any]]:
    """Casts that keep float32 where the node's schema has no float64: to
    float32 before such an input, back to float64 after such an output (the
    node's output is renamed, the Cast gives the old name)."""
    from onnx import helper

    schema = _schema(node, opsets)
    if schema is None:
        return [], []
    before, after = [], []
    for index, name in enumerate(node.input):
        formal = _formal(schema.inputs, index)
        if name and name in original and formal is not None and _float32_only(schema, formal):
            narrow = _fresh(f"{name}__float32", taken)
            before.append(helper.make_node("Cast", [name], [narrow], to=_FLOAT))
            node.input[index] = narrow
            kept.append(f"{node.op_type} input {formal.name!r}")
    for index, name in enumerate(node.output):
        formal = _formal(schema.outputs, index)
        if name and name in original and formal is not None and _float32_only(schema, formal):
            narrow = _fresh(f"{name}__float32", taken)
            node.output[index] = narrow
            after.append(helper.make_node("Cast", [narrow], [name], to=_DOUBLE))
            kept.append(f"{node.op_type} output {formal.name!r}")
    return before, after


def _schema(node: Any, opsets: dict[str, int]) -> Any | None:
    from onnx import defs

    domain = "" if node.domain == "ai.onnx" else node.domain
    if domain not in opsets:
        return None
    try:
        return defs.get_schema(node.op_type, opsets[domain], domain)
    except defs.SchemaError:
        return None  # a custom op: its types are its own


def _formal(parameters: Any, index: int) -> Any | None:
    """The formal parameter that actual input or output `index` binds to."""
    from onnx.defs import OpSchema

    if index < len(parameters):
        return parameters[index]
    if parameters and parameters[-1].option == OpSchema.FormalParameterOption.Variadic:
        return parameters[-1]
    return None


def _float32_only(schema: Any, formal: Any) -> bool:
    allowed = {formal.type_str}
    for constraint in schema.type_constraints:
        if constraint.type_param_str == formal.type_str:
            allowed = set(constraint.allowed_type_strs)
    return "tensor(float)" in allowed and "tensor(double)" not in allowed


def _float32_names(model: Any) -> set[str]:
    """The names of the model's float32 tensors, as declared and as shape
    inference finds them (the original model, before widening)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError):   # ValueError: a model over protobuf's 2 GiB
        inferred = model  # inference is a help here, not a requirement: declared types still count
    names = set()
    for graph in _graphs(inferred):
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            if value.type.WhichOneof("value") == "tensor_type" and value.type.tensor_type.elem_type == _FLOAT:
                names.add(value.name)
        names.update(t.name for t in graph.initializer if t.data_type == _FLOAT)
    return names


def _graphs(model: Any) -> Iterator[Any]:
    """The main graph and every subgraph in it (If, Loop, Scan bodies), and those in local functions."""
    pending = [model.graph] + [g for f in model.functions for n in f.node for g in _subgraphs(n)]
    while pending:
        graph = pending.pop()
        yield graph
        for node in graph.node:
            pending.extend(_subgraphs(node))


def _subgraphs(node: Any) -> list[Any]:
    from onnx import AttributeProto

    found = []
    for attribute in node.attribute:
        if attribute.type == AttributeProto.GRAPH:
            found.append(attribute.g)
        elif attribute.type == AttributeProto.GRAPHS:
            found.extend(attribute.graphs)
    return found


def _all_names(model: Any) -> set[str]:
    names = set()
    for graph in _graphs(model):
        names.update(v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info))
        names.update(t.name for t in graph.initializer)
        for node in graph.node:
            names.update(node.input)
            names.update(node.output)
    return names


def _fresh(name: str, taken: set[str]) -> str:
    candidate, count = name, 1
    while candidate in taken:
        count += 1
        candidate = f"{name}_{count}"
    taken.add(candidate)
    return candidate
