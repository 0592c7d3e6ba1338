"""The value domains an ONNX graph implies for its inputs.

A file declares its inputs' types and shapes but not which values its ops
accept: an index past the dim it indexes is an error in every runtime, the
log of a negative is NaN. Drawn from the default range, such inputs end a
case in an error (or in NaN on both sides) that says nothing about the
conversion. So each graph input is followed to the ops that read it, through
ops that pass its values on unchanged (Identity, Cast, Reshape, ...), and
each constrained operand it reaches bounds its domain:

- indices (Gather, GatherElements, GatherND, Scatter, ScatterElements,
  ScatterND, OneHot's indices) within the static dim they index, negative
  ones included where the op's opset allows them;
- OneHot's depth and TopK's k at least 1 (k at most the dim it picks from),
  Slice's starts and ends within the dims they slice, a Reduce op's axes
  within the rank of the data it reduces;
- Log, Pow's base (unless its exponent is a constant of whole numbers >= 0)
  positive; Sqrt non-negative; Acos, Asin within [-1, 1], Atanh within
  (-1, 1), Acosh at least 1; Dropout's ratio in [0, 1); Loop's trip count at
  least 0; the scales of QuantizeLinear, DequantizeLinear, QLinearMatMul and
  QLinearConv positive.

An integer input that becomes a Gather's indices only through elementwise
ops on itself and constants which hand the ids 0..rows-1 on unchanged (run
on them in onnx.reference: tf2onnx's Keras Embedding wraps negative ids by
Less, Not, Cast, Mul and Add, or Where, before its Gather; an offset added
is no such op) is bounded by the rows of the table, from 0: the ids an
embedding takes. An integer input named
as an attention mask (attention_mask, mask, *_mask) that nothing else bounds
is drawn from {0, 1}, as tokenizers make masks.

An operand whose bound needs a dim the file leaves symbolic, or a constant it
does not hold, implies nothing. Only the main graph is read: a subgraph's
inputs are not the file's. Where a file's stored inputs (golden sets) exist,
an input that nothing bounds takes their range. onnx is imported lazily.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable, Mapping

import numpy as np

# How near an open end a domain goes: atanh(+-0.999) is finite, a Dropout ratio of 0.999 is below 1.
OPEN_END = 1 - 1e-3
# The low end of a domain that must be positive: log(1e-3) is finite, and so is a power of it.
POSITIVE_FLOOR = 1e-3
# Ops that hand their first operand's values on unchanged (in another type or shape).
VALUE_PRESERVING = ("Identity", "Cast", "CastLike", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose",
                    "Expand")
# The opset from which the index operands of these ops may count from the end (-dim..dim-1).
NEGATIVE_INDICES_SINCE = 11
# Elementwise ops through which an integer input's values still decide a Gather's indices (see the docstring).
INDEX_ARITHMETIC = ("Add", "Sub", "Mul", "Neg", "Abs", "Mod", "Where", "Less", "LessOrEqual", "Greater",
                    "GreaterOrEqual", "Equal", "Not", "And", "Or", "Max", "Min", "Clip")
# An input named so holds an attention mask: 1 for a token to attend to, 0 for one to leave out.
MASK_NAME = re.compile(r"^(.*_)?mask$", re.IGNORECASE)


@dataclass(frozen=True)
class ImpliedDomain:
    """The bounds the graph sets on one input (None: no bound on that side)."""

    low: float | None
    high: float | None

    def narrowed(self, other: "ImpliedDomain") -> "ImpliedDomain":
        low = max((v for v in (self.low, other.low) if v is not None), default=None)
        high = min((v for v in (self.high, other.high) if v is not None), default=None)
        return ImpliedDomain(low, high)

    @property
    def empty(self) -> bool:
        return self.low is not None and self.high is not None and self.low > self.high


def implied_domains(proto: Any) -> dict[str, ImpliedDomain]:
    """Graph input name -> the domain its consumers imply, for the inputs some op bounds."""
    graph = _Graph(proto)
    found: dict[str, ImpliedDomain] = {}
    for value in proto.graph.input:
        domain = None
        for node, operand in graph.reached_operands(value.name):
            bound = graph.bound(node, operand)
            if bound is not None:
                domain = bound if domain is None else domain.narrowed(bound)
        if domain is None and value.type.tensor_type.elem_type in _INTEGER_TYPES:
            domain = graph.embedding_ids(value.name)
            if domain is None and MASK_NAME.match(value.name):
                domain = ImpliedDomain(0, 1)
        if domain is not None and not domain.empty:   # ops that disagree: the file's own conflict, not ours to pick
            found[value.name] = domain
    return found


def stored_ranges(feeds: Iterable[Mapping[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """Input name -> (lowest, highest) finite value over stored input sets, for
    numeric inputs whose stored values are not all one value (a single value
    is no range to draw from)."""
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    for feed in feeds:
        for name, array in feed.items():
            array = np.asarray(array)
            if array.dtype.kind not in "iuf" or array.size == 0:
                continue
            finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
            if finite.size:
                lows[name] = min(lows.get(name, math.inf), float(finite.min()))
                highs[name] = max(highs.get(name, -math.inf), float(finite.max()))
    return {name: (lows[name], highs[name]) for name in lows if lows[name] < highs[name]}


def domain_for(dtype: str, default: tuple[float, float], implied: ImpliedDomain | None,
               stored: tuple[float, float] | None) -> tuple[float, float]:
    """The domain to draw an input from: the graph's bounds, with a side they
    leave open taken from `default`; else the stored inputs' range; else
    `default`. Integer inputs take the whole numbers within it, clipped to
    their dtype; bool inputs keep `default`."""
    if dtype == "bool":
        return default
    if implied is not None:
        low = implied.low if implied.low is not None else min(default[0], implied.high)
        high = implied.high if implied.high is not None else max(default[1], implied.low)
    elif stored is not None:
        low, high = stored
    else:
        return default
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        low, high = max(math.ceil(low), int(info.min)), min(math.floor(high), int(info.max))
        if low > high:
            return default
    return float(low), float(high)


class _Graph:
    """The main graph's consumers, static dims and constants, for `implied_domains`."""

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.consumers: dict[str, list[tuple[Any, int]]] = {}
        # Constants as tensors, read into arrays only when a bound needs one: the weights stay unread.
        self.tensors = {t.name: t for t in proto.graph.initializer if not t.external_data}
        for node in proto.graph.node:
            if node.domain not in ("", "ai.onnx"):
                continue
            for operand, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, operand))
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if node.op_type == "Constant" and value is not None:
                self.tensors[node.output[0]] = value

    @cached_property
    def dims(self) -> dict[str, list[int | None]]:
        """Shape inference runs only for a graph with an op whose bound needs a dim."""
        return _static_dims(self.proto)

    def constant(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        tensor = self.tensors.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def reached_operands(self, name: str) -> list[tuple[Any, int]]:
        """The (node, operand index) pairs that read `name`'s values, directly
        or through ops that pass them on unchanged."""
        reached, pending, seen = [], [name], {name}
        while pending:
            for node, operand in self.consumers.get(pending.pop(), ()):
                if node.op_type in VALUE_PRESERVING and operand == 0:
                    for out in node.output[:1]:
                        if out not in seen:
                            seen.add(out)
                            pending.append(out)
                else:
                    reached.append((node, operand))
        return reached

    def embedding_ids(self, name: str) -> ImpliedDomain | None:
        """0..rows-1 of the smallest table whose Gather indices integer input
        `name` decides through INDEX_ARITHMETIC on itself and constants, where
        those ops, run on the ids 0..rows-1, hand them on unchanged (a wrap of
        negative ids; an offset added is no wrap). None otherwise."""
        derived, chain = {name}, []
        for node in self.proto.graph.node:   # in the graph's (topological) order
            values = node.input[:1] if node.op_type in VALUE_PRESERVING else node.input
            if (node.op_type in VALUE_PRESERVING + INDEX_ARITHMETIC and any(i in derived for i in values)
                    and all(i in derived or i in self.tensors or not i for i in values)):
                derived.update(node.output)
                chain.append(node)
        gathers = [node for node in self.proto.graph.node
                   if node.op_type == "Gather" and node.input[1] in derived and node.input[1] != name]
        rows = [self._dim(node.input[0], _attribute(node, "axis", 0)) for node in gathers]
        if not rows or None in rows:
            return None
        ids = np.arange(min(rows))
        indices = self._run_chain(chain, name, ids, [node.input[1] for node in gathers])
        if indices is None or not all(np.array_equal(np.ravel(i), ids) for i in indices):
            return None
        return ImpliedDomain(0, len(ids) - 1)

    def _run_chain(self, chain: list[Any], name: str, ids: np.ndarray,
                   outputs: list[str]) -> list[np.ndarray] | None:
        """`outputs` of the ops in `chain` fed `ids` as input `name` (laid along
        its last axis), in onnx.reference; None where they cannot run so."""
        from onnx import helper, numpy_helper
        from onnx.reference import ReferenceEvaluator

        tensor_type = next(v for v in self.proto.graph.input if v.name == name).type.tensor_type
        rank = len(tensor_type.shape.dim)
        if not rank:
            return None
        fed = ids.reshape([1] * (rank - 1) + [-1]).astype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        constants = sorted({i for node in chain for i in node.input if i in self.tensors})
        wanted = list(dict.fromkeys(outputs))
        graph = helper.make_graph(chain, "ids", [helper.make_tensor_value_info(name, tensor_type.elem_type, None)],
                                  [helper.make_empty_tensor_value_info(o) for o in wanted],
                                  [numpy_helper.from_array(self.constant(i), i) for i in constants])
        try:
            evaluator = ReferenceEvaluator(helper.make_model(graph, opset_imports=self.proto.opset_import))
            found = dict(zip(wanted, evaluator.run(None, {name: fed})))
        except Exception:   # ops onnx.reference cannot run on these ids (a Reshape to a fixed shape): no bound
            return None
        return [found[o] for o in outputs]

    def bound(self, node: Any, operand: int) -> ImpliedDomain | None:
        op = node.op_type
        if op in ("Gather", "GatherElements", "Scatter", "ScatterElements") and operand == 1:
            return self._index(node, [self._dim(node.input[0], _attribute(node, "axis", 0))])
        if op in ("GatherND", "ScatterND") and operand == 1:
            depth = self._dim(node.input[1], -1)
            batch = _attribute(node, "batch_dims", 0)
            dims = [self._dim(node.input[0], batch + k) for k in range(depth)] if depth else [None]
            return self._index(node, dims)
        if op == "OneHot" and operand == 1:
            return ImpliedDomain(1, None)   # a count of classes
        if op == "OneHot" and operand == 0:
            depth = self.constant(node.input[1])
            return self._index(node, [int(depth.reshape(-1)[0]) if depth is not None else None])
        if op == "TopK" and operand == 1:
            return ImpliedDomain(1, self._dim(node.input[0], _attribute(node, "axis", -1)))
        if op == "Slice" and operand in (1, 2):
            return self._slice(node, operand)
        if op.startswith("Reduce") and operand == 1:   # axes, an input from ReduceSum(13) and the others' 18
            rank = len(self.dims.get(node.input[0]) or ())
            return ImpliedDomain(-rank, rank - 1) if rank else None
        return _VALUE_BOUNDS.get((op, operand)) if op != "Pow" else self._pow_base(node, operand)

    def _index(self, node: Any, dims: list[int | None]) -> ImpliedDomain | None:
        """Indices into `dims` (the smallest bounds them all), negative ones where the opset allows."""
        if not dims or None in dims:
            return None
        size = min(dims)
        low = -size if self.opset >= NEGATIVE_INDICES_SINCE or node.op_type == "OneHot" else 0
        return ImpliedDomain(low, size - 1)

    def _slice(self, node: Any, operand: int) -> ImpliedDomain | None:
        rank = len(self.dims.get(node.input[0]) or ())
        axes_given = node.input[3] if len(node.input) > 3 else ""
        axes = self.constant(axes_given) if axes_given else np.arange(rank)
        if axes is None or not rank:
            return None
        dims = [self._dim(node.input[0], int(axis)) for axis in axes.reshape(-1)]
        if not dims or None in dims:
            return None
        size = min(dims)
        return ImpliedDomain(-size, size if operand == 2 else size - 1)   # an end may be one past the last

    def _pow_base(self, node: Any, operand: int) -> ImpliedDomain | None:
        """A power of a negative base is NaN unless the exponent is whole; of 0, inf if it is negative."""
        if operand != 0:
            return None
        exponent = self.constant(node.input[1])
        if exponent is not None and np.all(exponent >= 0) and np.all(np.mod(exponent, 1) == 0):
            return None
        return ImpliedDomain(POSITIVE_FLOOR, None)

    def _dim(self, name: str, axis: int) -> int | None:
        dims = self.dims.get(name)
        if not dims or not -len(dims) <= axis < len(dims):
            return None
        return dims[axis]


_VALUE_BOUNDS = {
    ("Log", 0): ImpliedDomain(POSITIVE_FLOOR, None),
    ("Sqrt", 0): ImpliedDomain(0, None),
    ("Acos", 0): ImpliedDomain(-1, 1),
    ("Asin", 0): ImpliedDomain(-1, 1),
    ("Atanh", 0): ImpliedDomain(-OPEN_END, OPEN_END),
    ("Acosh", 0): ImpliedDomain(1, None),
    ("Dropout", 1): ImpliedDomain(0, OPEN_END),
    # A trip count below 0 is no count: ONNX Runtime runs no iteration, OpenVINO loops until the condition ends.
    ("Loop", 0): ImpliedDomain(0, None),
    # A quantization scale is a step size: 0 divides by zero, a negative one mirrors the whole integer range
    # (OpenVINO then saturates at the other end from ONNX Runtime).
    **{(op, operand): ImpliedDomain(POSITIVE_FLOOR, None)
       for op, operands in (("QuantizeLinear", (1,)), ("DequantizeLinear", (1,)), ("QLinearMatMul", (1, 4, 6)),
                            ("QLinearConv", (1, 4, 6)))
       for operand in operands},
}


# onnx.TensorProto's integer element types (bool is not one: its domain is {0, 1} already).
_INTEGER_TYPES = (2, 3, 4, 5, 6, 7, 12, 13)


def _attribute(node: Any, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _static_dims(proto: Any) -> dict[str, list[int | None]]:
    """Tensor name -> its dims (None where not a fixed size), from the file's
    declarations and ONNX's shape inference where it runs on the file."""
    from onnx import shape_inference

    values = list(proto.graph.input) + list(proto.graph.value_info) + list(proto.graph.output)
    try:
        values += list(shape_inference.infer_shapes(proto).graph.value_info)
    except Exception:   # a file shape inference cannot read (an unknown op, > 2 GB) keeps its declared shapes
        pass
    dims: dict[str, list[int | None]] = {}
    for value in values:
        tensor_type = value.type.tensor_type
        if value.type.WhichOneof("value") == "tensor_type" and tensor_type.HasField("shape"):
            dims.setdefault(value.name, [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                                         for d in tensor_type.shape.dim])
    for tensor in proto.graph.initializer:
        dims[tensor.name] = [int(d) for d in tensor.dims]
    return dims
