"""The Keras source's values for the tensors of an ONNX graph tf2onnx converted
from it (`layer_values`), so that a localization can name the first layer whose
output the converted graph no longer computes.

Every call of a layer (or of a bare keras.ops operation) in the model's graph
gives its outputs to a "probe": a `keras.Model` over the model's inputs whose
outputs are all of them, named as the model. It is traced in a `tf.function`
as `tf_onnx.spec_function` traces the model (the same name scopes, hence the
same TensorFlow op names, and the input signature the ONNX file declares),
which gives each output's op, and run once on the CPU with the reference's
arithmetic (`keras.arithmetic_as_written`), which gives its value. A nested
model is one layer: its own layers run inside its call, and the probe sees
only its outputs.

tf2onnx names each ONNX node it converts from a TensorFlow op, and the node's
output, after the op ("cnn_1/conv1_1/BiasAdd", "...:0"); the nodes it makes
itself have other names ("Conv__339", "..._1/BiasAdd__6"). An output is
matched, in this order:
1. to the ONNX tensor of its op's name;
2. else to the output of the last converted node of the layer's name scope
   ("cnn_1/features_1/") with the value's shape: tf2onnx renamed a graph
   output, or dropped the op;
3. else, where tf2onnx fused layers into a node of its own (a Conv with the
   BatchNormalization after it folded in), to that node's output where a
   converted node of a layer fed by this output reads it: it is that layer's
   input, the output of the last layer fused.
tf2onnx computes images NCHW inside the graph even where its inputs are NHWC,
so a rank 3 to 5 value matches a tensor of its own shape or of its
channels-first transpose, and is transposed to fit; where both shapes fit
(H == W == C, dims ONNX cannot infer) the layout cannot be told and the output
is left unmapped. Shapes are inferred with the inputs at their own sizes, so
that symbolic dims hide no mismatch.

Nothing here raises for an odd model: what cannot be mapped is counted in
`LayerValues.unmapped`; a model that cannot be probed says why in `how`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from harness.errors import summarize_exception
from harness.localize.graph import FLOAT_TYPES
from harness.localize.layers import LayerValues

HOW = ("Keras layer outputs (one keras.Model over every layer call, traced as tf2onnx's input was), matched to "
       "ONNX tensors by TensorFlow op name, else by the layer's name scope and shape, else as what a layer's node "
       "reads from a node tf2onnx fused")
NOT_FOUND = "no ONNX tensor of its op or name scope"


@dataclass
class _Output:
    """One output of one layer call, as the probe computed it."""

    layer: str                      # "bn1 (BatchNormalization)"
    label: str                      # the layer, and which output where it has several
    op: str                         # the TensorFlow op that computed it: "cnn_1/bn1_1/batchnorm/add_1"
    value: np.ndarray
    inputs: list[int]               # the call's input tensors: indices of other outputs, -1 - k for model input k


def layer_values(model: Any, inputs: Sequence[np.ndarray], onnx_model: Any) -> LayerValues:
    """The Keras model's layer outputs on `inputs` (spec order, the model's
    layouts), keyed by the tensors of `onnx_model` (tf2onnx's conversion of
    it) that hold them, laid out as those tensors; see the module docstring."""
    result = LayerValues(how=HOW)
    function = _functional(model)
    if function is None:
        result.how = f"{type(model).__name__} is not a functional or Sequential keras.Model: no layer graph to probe"
        result.skip("model without a layer graph (subclassed)")
        return result
    onnx_inputs = _onnx_inputs(onnx_model)
    try:
        outputs, ops = _probe(model, function, inputs, [dims for _, dims in onnx_inputs])
    except Exception as error:  # keras/tf raise any type on a model the probe cannot trace: go on without its values
        result.how = f"the Keras layers could not be probed: {summarize_exception(error, 2)}"
        result.skip("probe failed")
        return result
    result.seen = len({o.layer for o in outputs})
    try:
        _Matcher(onnx_model, onnx_inputs, inputs, outputs, ops, result).match()
    except Exception as error:  # a graph this does not foresee fails in any type: what was mapped still helps
        result.how += f"; matching stopped: {summarize_exception(error, 2)}"
        result.skip("matching failed")
    return result


# ---------------------------------------------------------------- the Keras side


def _functional(model: Any) -> Any | None:
    """The keras Function holding the model's graph of layer calls (a
    Sequential holds one once built), or None for a subclassed model."""
    from keras.src.ops.function import Function

    for candidate in (model, getattr(model, "_functional", None)):
        if isinstance(candidate, Function):
            return candidate
    return None


def _probe(model: Any, function: Any, inputs: Sequence[np.ndarray],
           onnx_dims: list[list[int | None] | None]) -> tuple[list[_Output], set[str]]:
    """Every layer call's outputs (their ops and values) and the names of every
    op of the trace."""
    import keras
    import tensorflow as tf

    from harness.sources.keras import arithmetic_as_written

    depths = sorted(function._nodes_by_depth, reverse=True)  # the deepest calls are the nearest the inputs
    calls = [node for depth in depths for node in function._nodes_by_depth[depth] if not node.is_input]
    tensors, layers, labels, owners = [], [], [], []
    for node in calls:
        layer = f"{node.operation.name} ({type(node.operation).__name__})"
        for k, tensor in enumerate(node.outputs):
            tensors.append(tensor)
            layers.append(layer)
            labels.append(layer if len(node.outputs) == 1 else f"{layer} output {k}")
            owners.append(node)
    position = {id(t): k for k, t in enumerate(tensors)}
    position.update({id(t): -1 - k for k, t in enumerate(function.inputs)})
    # Named as the model, the probe opens the model's name scope, and every layer its own inside it.
    probe = keras.Model(function.inputs, tensors, name=model.name)
    single = len(inputs) == 1
    names: list[str] = []

    def call(*args):
        results = tf.nest.flatten(probe(args[0] if single else list(args), training=False))
        names.extend(t.name for t in results)  # at trace time: the graph's tensor names
        return results

    signature = [tf.TensorSpec(_signature_dims(array, onnx_dims[k] if k < len(onnx_dims) else None),
                               tf.as_dtype(array.dtype)) for k, array in enumerate(inputs)]
    traced = tf.function(call, input_signature=signature, autograph=False)
    ops = {op.name for op in traced.get_concrete_function().graph.get_operations()}
    with tf.device("/CPU:0"), arithmetic_as_written():
        values = traced(*[tf.convert_to_tensor(a) for a in inputs])
    outputs = [_Output(layer, label, name.rsplit(":", 1)[0], np.asarray(value),
                       [position[id(t)] for t in node.input_tensors if id(t) in position])
               for layer, label, node, name, value in zip(layers, labels, owners, names, values)]
    return outputs, ops


def _signature_dims(array: np.ndarray, onnx_dims: list[int | None] | None) -> list[int | None]:
    """The converter's signature of one input: the dims the ONNX file fixes,
    None where it leaves them open (its channels-first input permuted back);
    all open where the file does not say."""
    if onnx_dims is not None:
        if _fits(array.shape, onnx_dims):
            return list(onnx_dims)
        perm = _channels_first(array.ndim)
        if perm is not None and _fits(_permuted(array.shape, perm), onnx_dims):
            return [onnx_dims[perm.index(axis)] for axis in range(array.ndim)]
    return [None] * array.ndim


# ---------------------------------------------------------------- the ONNX side


def _onnx_inputs(onnx_model: Any) -> list[tuple[str, list[int | None] | None]]:
    """The graph's fed inputs in order, with their declared dims (None: open)."""
    weights = {t.name for t in onnx_model.graph.initializer}
    return [(v.name, _dims(v)) for v in onnx_model.graph.input if v.name not in weights]


def _dims(value: Any) -> list[int | None] | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]


def _concrete_shapes(onnx_model: Any, onnx_inputs: list[tuple[str, list[int | None] | None]],
                     arrays: Sequence[np.ndarray], result: LayerValues) -> dict[str, list[int | None] | None]:
    """Every tensor's shape, inferred with each fed input at its array's size
    (laid out as the file declares it); the declared shapes where that fails,
    said in `result.how`."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(onnx_model)
    del copy.graph.value_info[:]
    fed = {value.name: value for value in copy.graph.input}
    for (name, dims), array in zip(onnx_inputs, arrays):
        shape = array.shape
        perm = _channels_first(array.ndim)
        if dims is not None and not _fits(shape, dims) and perm is not None and _fits(_permuted(shape, perm), dims):
            shape = _permuted(shape, perm)
        declared = fed[name].type.tensor_type.shape
        del declared.dim[:]
        for size in shape:
            declared.dim.add().dim_value = int(size)
    try:
        copy = onnx.shape_inference.infer_shapes(copy, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError) as error:   # ValueError: a graph over protobuf's 2 GiB
        result.how += f"; shapes as the graph declares them (inference stopped: {summarize_exception(error, 1)})"
        copy = onnx_model
    return {v.name: _dims(v) for v in [*copy.graph.value_info, *copy.graph.output]}


def _channels_first(rank: int) -> tuple[int, ...] | None:
    """The permutation from channels-last to channels-first (NHWC -> NCHW), for 1 to 3 spatial dims."""
    return (0, rank - 1, *range(1, rank - 1)) if 3 <= rank <= 5 else None


def _permuted(shape: Sequence[int], perm: Sequence[int]) -> tuple[int, ...]:
    return tuple(shape[axis] for axis in perm)


def _fits(shape: Sequence[int], dims: Sequence[int | None]) -> bool:
    return len(shape) == len(dims) and all(d is None or d == s for s, d in zip(shape, dims))


def onnx_layout(shape: Sequence[int], dims: list[int | None] | None) -> tuple[tuple[int, ...] | None, str | None]:
    """The permutation that lays a value of `shape` out as the ONNX tensor of
    `dims` holds it (as it is, or channels-first), or None and why not."""
    if dims is None:
        return None, "ONNX tensor of unknown shape"
    perm = _channels_first(len(shape))
    as_is = _fits(shape, dims)
    first = perm is not None and _fits(_permuted(shape, perm), dims)
    # A transpose that moves at most one axis longer than 1 moves no value.
    if as_is and first and sum(size > 1 for size in shape[1:]) > 1:
        return None, "channels-last or channels-first: the shape cannot tell"
    if as_is:
        return tuple(range(len(shape))), None
    if first:
        return perm, None
    return None, "shape differs from its ONNX tensor's"


def _scope(op: str) -> str:
    """'cnn_1/bn1_1/batchnorm/add_1' -> 'cnn_1/bn1_1/', the model's scope and
    the layer's; '' for an op outside any layer."""
    parts = op.split("/")
    return "/".join(parts[:2]) + "/" if len(parts) > 2 else ""


class _Matcher:
    """Keras outputs to ONNX tensors, in the three steps of the module docstring."""

    def __init__(self, onnx_model: Any, onnx_inputs: list[tuple[str, list[int | None] | None]],
                 arrays: Sequence[np.ndarray], outputs: list[_Output], ops: set[str], result: LayerValues):
        self.arrays, self.outputs, self.result = arrays, outputs, result
        self.fed = [name for name, _ in onnx_inputs]
        self.shapes = _concrete_shapes(onnx_model, onnx_inputs, arrays, result)
        self.types = {v.name: v.type.tensor_type.elem_type
                      for v in [*onnx_model.graph.value_info, *onnx_model.graph.output]}
        self.nodes = list(onnx_model.graph.node)
        self.producer = {name: node for node in self.nodes for name in node.output if name}
        self.converted = {node.name for node in self.nodes if node.name in ops}
        self.calls_of_scope: dict[str, list[int]] = {}
        for k, output in enumerate(outputs):
            self.calls_of_scope.setdefault(_scope(output.op), []).append(k)

    def match(self) -> None:
        why: dict[int, str] = {}
        ops: set[str] = set()
        for k, output in enumerate(self.outputs):
            if output.op in ops:  # an Identity or Dropout returns its input: the tensor is an earlier layer's
                why[k] = "output is an earlier layer's tensor"
                continue
            ops.add(output.op)
            if not np.issubdtype(output.value.dtype, np.floating):
                why[k] = "not a float tensor"
                continue
            reason = self._by_name(k)
            if reason is not None and _scope(output.op):
                reason = self._by_scope(k)
            if reason is not None:
                why[k] = reason
        fused = self._fused_inputs()
        for k, reason in why.items():
            if reason in (NOT_FOUND, "shape differs from its ONNX tensor's") and any(
                    self._take(k, tensor) is None for tensor in fused.get(k, ()) if tensor not in self.result.values):
                continue
            self.result.skip(reason)

    def _take(self, k: int, tensor: str) -> str | None:
        """Map output k to `tensor` where its type and shape allow; else why not."""
        if tensor in self.result.values:
            return "ONNX tensor holds an earlier layer's output"
        if self.types.get(tensor) not in FLOAT_TYPES:
            return "ONNX tensor not of a float type"
        value = self.outputs[k].value
        perm, reason = onnx_layout(value.shape, self.shapes.get(tensor))
        if perm is None:
            return reason
        self.result.add(tensor, np.ascontiguousarray(np.transpose(value, perm)), self.outputs[k].label)
        return None

    def _by_name(self, k: int) -> str | None:
        tensor = self.outputs[k].op + ":0"
        return self._take(k, tensor) if tensor in self.producer else NOT_FOUND

    def _by_scope(self, k: int) -> str | None:
        scope, reason = _scope(self.outputs[k].op), NOT_FOUND
        for node in reversed(self.nodes):  # the last node of the scope first
            if node.name in self.converted and node.name.startswith(scope):
                for tensor in node.output:
                    if tensor:
                        reason = self._take(k, tensor)
                        if reason is None:
                            return None
        return reason

    def _fused_inputs(self) -> dict[int, list[str]]:
        """Output index -> the tensors of tf2onnx's own nodes, not yet mapped,
        that a converted node of a layer call reads as that call's input."""
        live = set(self.fed)  # tensors computed from a fed input: weights that nodes compute are no layer's input
        fused: dict[int, list[str]] = {}
        for node in self.nodes:
            if any(name in live for name in node.input):
                live.update(name for name in node.output if name)
            if node.name not in self.converted:
                continue
            scope = _scope(node.name)
            outside = [name for name in node.input if name in live
                       and not (name in self.producer and self.producer[name].name.startswith(scope))]
            for tensor in outside:
                made = self.producer.get(tensor)
                if made is None or made.name in self.converted or tensor in self.result.values:
                    continue
                for k in self._fed(scope, outside, tensor) if scope else ():
                    fused.setdefault(k, []).append(tensor)
        return fused

    def _fed(self, scope: str, outside: list[str], tensor: str) -> list[int]:
        """The outputs that `tensor`, read from outside the scope by a node
        whose inputs from outside are `outside`, can be as the input of a call
        of the scope's layer: the only input of the call that fits its shape,
        else the one at its position where the call has as many inputs."""
        fed: list[int] = []
        for j in self.calls_of_scope.get(scope, []):
            sources = self.outputs[j].inputs
            fitting = {s for s in sources if onnx_layout(self._shape(s), self.shapes.get(tensor))[0] is not None}
            if len(fitting) == 1:
                fed += [s for s in fitting if s >= 0]
            elif len(outside) == len(sources) and sources[outside.index(tensor)] >= 0:
                fed.append(sources[outside.index(tensor)])
        return fed

    def _shape(self, source: int) -> tuple[int, ...]:
        return self.outputs[source].value.shape if source >= 0 else self.arrays[-1 - source].shape
