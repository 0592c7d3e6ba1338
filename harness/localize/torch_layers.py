"""The torch source's values for the tensors of an ONNX graph exported from it
(`layer_values`), so that a localization can name the first torch module or
operation whose output the converted graph no longer computes. Everything runs
on the CPU, as the converter exported (a model elsewhere is copied there).

Two mappings; the second fills what the first left:
1. FX nodes (dynamo exporter). The exporter names each ONNX tensor it
   translates from a node of the decomposed exported program after that node
   ("linear", "softmax", "getitem_3"; graph outputs take the spec's names and
   record the node's). The program is made again as the converter made it:
   `torch.onnx.export` (public API, no optimization: its `exported_program` is
   the decomposed one it translated) with the file's dynamic dims, their
   ranges (graph metadata `range_constraints`: the spec's bounds), example
   sizes picked as the converter's, the file's opset. It runs node by node (a
   `torch.fx.Interpreter`, as torch's own `_VerificationInterpreter` compares
   intermediates), and a node's value goes to the ONNX tensor of its name where
   it is a float tensor of that tensor's shape. Names count per operation over
   the whole graph, so other dim ranges (other shape asserts) shift them: where
   the ONNX node records its FX node (`pkg.torch.onnx.fx_node`), that node must
   print the same in the graph made again; where a tool rewrote the file
   without its metadata, torch picks the ranges and the tensors an ONNX node
   reads must be those its FX node reads. Two values inside one node's
   translation are computed too (`INSIDE`): an attention's Softmax and a
   linear's MatMul. The label names the innermost module (`nn_module_stack`)
   of every FX node the tensor covers (nodes the ONNX optimizer fused into it,
   a Conv with its BatchNorm; identities aside) and the node.
2. Module outputs (either exporter; the only one for the TorchScript exporter,
   whose names are not FX nodes'). Forward hooks take each module call's
   outputs as it returns them (a later in-place `x += residual` changes the
   tensor); each goes to the last ONNX tensor that leaves the module's scope
   (a graph output, or read outside it) with its shape. The scope is the
   dynamo exporter's `pkg.torch.onnx.name_scopes`, or the TorchScript
   exporter's node names ("/encoder/layer.0/attention/self/query/MatMul").
   That exporter folds a BatchNorm into the Conv before it (no node of its
   own): the Conv's tensor then holds the BatchNorm's output. A module called
   more than once is not matched (its calls share one scope).
A TorchScript module (`torch.jit.ScriptModule`) can be neither exported by
torch.export nor hooked per submodule: nothing is mapped, and `how` says why.

Nothing here raises for an odd model: what is not mapped is counted in
`LayerValues.unmapped`; a mapping that could not run says why there and in `how`.
"""

from __future__ import annotations

import ast
import copy
import operator
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from harness.errors import summarize_exception
from harness.inputs import free_values
from harness.localize.graph import FLOAT_TYPES
from harness.localize.layers import LayerValues

FX_NODE = "pkg.torch.onnx.fx_node"
NAME_SCOPES = "pkg.torch.onnx.name_scopes"
RANGES = "pkg.torch.export.ExportedProgram.range_constraints"
ORIGINAL_NAME = "pkg.torch.onnx.original_node_name"
# ONNX ops the TorchScript exporter folds a following BatchNorm into
FOLDS_BATCHNORM = {"Conv", "ConvTranspose"}
# a label names at most this many modules of the FX nodes a tensor covers
LABEL_MODULES = 4


def layer_values(model: Any, inputs: Sequence[np.ndarray], onnx_model: Any) -> LayerValues:
    """The torch model's values for the tensors of `onnx_model`, its export
    (see the module docstring); `inputs` in the spec's order."""
    found = LayerValues()
    if isinstance(model, torch.jit.ScriptModule):
        found.how = ("nothing mapped: a TorchScript module can be neither exported by torch.export nor hooked "
                     "per submodule")
        found.skip("a TorchScript module")
        return found
    hows = []
    try:
        index = _OnnxIndex(onnx_model, inputs)
        # The converter exports on the CPU, and a copy leaves the reference's model where it is.
        on_cpu = model if _device(model) == "cpu" else copy.deepcopy(model).cpu()
        tensors = [torch.from_numpy(np.asarray(x, order="C")) for x in inputs]
    except Exception as error:   # onnx, a model's deepcopy and torch raise any type: said in the layer values
        reason = f"the ONNX graph, the model or the inputs could not be read: {_why(error)}"
        found.how = f"nothing mapped: {reason}"
        found.skip(reason)
        return found
    if not index.torchscript_names:
        before = len(found.values)
        try:
            how = _from_fx_nodes(on_cpu, tensors, index, found)
            hows.append(f"{how}: {len(found.values) - before} tensors.")
        except Exception as error:   # torch.export raises any type on a model it cannot trace: said in the values
            reason = f"the dynamo export could not be made again: {_why(error)}"
            found.skip(reason)
            hows.append(f"FX nodes: none ({reason}).")
    before = len(found.values)
    try:
        how = _from_module_outputs(on_cpu, tensors, index, found)
        hows.append(f"{how}: {len(found.values) - before} more tensors.")
    except Exception as error:   # the user's forward raises any type under hooks: said in the layer values
        reason = f"the model's forward with hooks failed: {_why(error)}"
        found.skip(reason)
        hows.append(f"Module outputs: none ({reason}).")
    found.how = " ".join(hows)
    return found


def _why(error: BaseException) -> str:
    """An error in one line, with its cause (torch.onnx's errors say the step, their causes what
    failed), without terminal colours: a key of `LayerValues.unmapped`."""
    text = summarize_exception(error, 1)
    if error.__cause__ is not None:
        text += f" (from {summarize_exception(error.__cause__, 1)})"
    return re.sub(r"\x1b\[[0-9;]*m", "", text.replace("\n", " "))


# ------------------------------------------------------------------------ the ONNX side

@dataclass
class _OnnxIndex:
    """What the mapping reads of the ONNX graph: its float tensors and shapes
    (input dims bound to the inputs' sizes), producers, and the exporter's metadata."""

    model: Any
    arrays: Sequence[np.ndarray]
    producer: dict[str, Any] = field(default_factory=dict)
    consumers: dict[str, list[Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    types: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, list[int | None]] = field(default_factory=dict)   # None: a dim not known
    fed: list[Any] = field(default_factory=list)      # the graph inputs that are not initializers
    sizes: dict[str, int] = field(default_factory=dict)   # the fed inputs' dim names -> the inputs' sizes
    leaves: set[str] = field(default_factory=set)     # fed inputs and initializers

    def __post_init__(self) -> None:
        graph = self.model.graph
        initializers = {t.name for t in graph.initializer}
        self.fed = [v for v in graph.input if v.name not in initializers]
        self.leaves = initializers | {v.name for v in self.fed}
        for value, array in zip(self.fed, self.arrays):
            for dim, size in zip(value.type.tensor_type.shape.dim, np.shape(array)):
                if dim.dim_param:
                    self.sizes.setdefault(dim.dim_param, int(size))
        for value in [*graph.input, *graph.value_info, *graph.output]:
            tensor_type = value.type.tensor_type
            if value.type.HasField("tensor_type") and tensor_type.elem_type:
                self.types[value.name] = tensor_type.elem_type
                if tensor_type.HasField("shape"):
                    self.shapes[value.name] = [d.dim_value if d.HasField("dim_value")
                                               else self.sizes.get(d.dim_param) for d in tensor_type.shape.dim]
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            for name in node.output:
                if name:
                    self.producer[name] = node
                    self.order.append(name)

    @property
    def torchscript_names(self) -> bool:
        """Node names of the TorchScript exporter ("/q/MatMul") and no dynamo metadata."""
        nodes = self.model.graph.node
        return (any(n.name.startswith("/") for n in nodes)
                and not any(p.key == FX_NODE for n in nodes for p in n.metadata_props))

    def fits(self, tensor: str, value: Any) -> str | None:
        """Why `value` cannot be `tensor`'s, or None where it can."""
        if self.types.get(tensor) not in FLOAT_TYPES:
            return "not a float tensor in the ONNX graph"
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            return "not a float tensor in torch"
        shape = self.shapes.get(tensor)
        if shape is not None and (len(shape) != value.dim()
                                  or any(d is not None and d != s for d, s in zip(shape, value.shape))):
            return "shape differs from the ONNX tensor's"
        return None

    def metadata(self, tensor: str, key: str) -> str | None:
        node = self.producer.get(tensor)
        for prop in node.metadata_props if node is not None else ():
            if prop.key == key:
                return prop.value
        return None

    def graph_metadata(self, key: str) -> str | None:
        return next((p.value for p in self.model.graph.metadata_props if p.key == key), None)

    def dims(self) -> list[str]:
        """The fed inputs' dim names, in order of first appearance (the spec's dim order)."""
        names: dict[str, None] = {}
        for value in self.fed:
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param:
                    names.setdefault(dim.dim_param)
        return list(names)

    def ranges(self) -> list[tuple[int, int | None]] | None:
        """The exported program's ranges of its input dims, in the order of `dims` ("{s21: VR[1, 4], ...}";
        int_oo: no bound), or None where the file does not record them."""
        text = self.graph_metadata(RANGES)
        if text is None:
            return None
        found = re.findall(r"\b(s\d+): VR\[(-?\d+|-?int_oo), (-?\d+|-?int_oo)\]", text)
        ranges = [(max(int(low), 0) if "int_oo" not in low else 0, None if "int_oo" in high else int(high))
                  for _, low, high in found]
        # one symbol per input dim name, in their order; else they cannot be told apart
        return ranges if len(ranges) == len(self.dims()) else None

    def exits(self, nodes: list[Any]) -> list[str]:
        """The outputs of `nodes` (in order) that leave them: graph outputs, or
        read by a node not among them."""
        inside = {id(node) for node in nodes}
        outputs = {v.name for v in self.model.graph.output}
        return [t for node in nodes for t in node.output if t and (
            t in outputs or any(id(reader) not in inside for reader in self.consumers.get(t, ())))]

    def frontier(self, tensor: str, named: set[str]) -> set[str]:
        """The tensors of `named` (or leaves) the node of `tensor` is computed from
        through tensors of no name in `named` (the nodes one FX node became)."""
        seen, found, stack = {tensor}, set(), [tensor]
        while stack:
            node = self.producer.get(stack.pop())
            for name in node.input if node is not None else ():
                if name and name not in seen:
                    seen.add(name)
                    if name in named or name in self.leaves:
                        found.add(name)
                    else:
                        stack.append(name)
        return found


def _device(model: Any) -> str:
    tensor = next(iter(model.parameters()), None)
    tensor = next(iter(model.buffers()), None) if tensor is None else tensor
    return "cpu" if tensor is None else tensor.device.type


def _numpy(value: torch.Tensor) -> np.ndarray:
    value = value.detach().cpu()
    return (value.float() if value.dtype == torch.bfloat16 else value).numpy().copy()


# ------------------------------------------------------------------------ 1. FX nodes

def _from_fx_nodes(model: Any, tensors: list[torch.Tensor], index: _OnnxIndex, found: LayerValues) -> str:
    """Map the nodes of the exported program made again (module docstring, 1);
    returns how, for `found.how`."""
    ranges = index.ranges()
    program = _export_again(model, tensors, index, ranges)
    mapping = _FxMapping(program, index, ranges, _bound_prefix(model), found)
    _Recorder(program.module(), mapping.record).run(*tensors)
    checked = ("the FX node each ONNX node records" if mapping.recorded else
               "names (the program made with the file's own dim ranges)" if ranges is not None else
               "the tensors each ONNX node reads (the file records neither its FX nodes nor its dim ranges)")
    return f"FX nodes of the dynamo export made again (torch.onnx.export), by name, checked by {checked}"


def _export_again(model: Any, tensors: list[torch.Tensor], index: _OnnxIndex,
                  ranges: list[tuple[int, int | None]] | None) -> Any:
    """The decomposed program of the dynamo exporter on `model`, exported as the
    converter did: the file's dynamic dims with their ranges (the spec's bounds),
    example sizes picked as the converter's (`inputs.example_recipe`: >= 2 and
    distinct), at the file's opset. Without ranges, torch picks (Dim.AUTO) and
    the inputs' own sizes are the example's."""
    from harness.converters.onnx_checks import main_opset
    from harness.converters.torch_onnx import quiet_export_logs, rnn_export_guards, takes_varargs

    names = index.dims()
    if ranges is not None:
        dims = {name: torch.export.Dim(name, min=low, max=high) if high is not None else torch.export.Dim(name, min=low)
                for name, (low, high) in zip(names, ranges)}
        sizes: dict[str, int] = {}
        for name, (low, high) in zip(names, ranges):
            if high is None:  # no bound (not the harness's export): the input's own size
                sizes[name] = index.sizes.get(name, max(low, 2))
                continue
            candidates = free_values(max(low, 2), high, sizes.values())
            sizes[name] = candidates[candidates.count // 3] if candidates else low
    else:
        dims = {name: torch.export.Dim.AUTO for name in names}
        sizes = dict(index.sizes)
    example, shapes = [], []
    for value, tensor in zip(index.fed, tensors):
        axes = {axis: d.dim_param for axis, d in enumerate(value.type.tensor_type.shape.dim) if d.dim_param}
        shapes.append({axis: dims[name] for axis, name in axes.items()} or None)
        for axis, name in axes.items():
            if tensor.shape[axis] and sizes.get(name, tensor.shape[axis]) != tensor.shape[axis]:
                # the input's own values, repeated or cut along the axis: still within its domain
                tensor = tensor.index_select(axis, torch.arange(sizes[name]) % tensor.shape[axis])
        example.append(tensor.contiguous())
    opset = main_opset(index.model)
    with warnings.catch_warnings(), rnn_export_guards(), quiet_export_logs():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, tuple(example), dynamo=True, verbose=False, optimize=False,
                                    opset_version=opset,
                                    dynamic_shapes=(tuple(shapes),) if takes_varargs(model) else tuple(shapes))
    return program.exported_program


def _linear_matmul(args: tuple, kwargs: dict, value: torch.Tensor) -> torch.Tensor:
    """linear's product before its bias: the MatMul of its translation."""
    return torch.nn.functional.linear(args[0], args[1])


def _attention_weights(args: tuple, kwargs: dict, value: torch.Tensor) -> torch.Tensor | None:
    """scaled_dot_product_attention's softmax: the Softmax of its translation;
    from torch's reference implementation, trusted only where its output is
    the node's (where fused kernels differ, a fully masked row among them, none)."""
    output, weights = torch.ops.aten._scaled_dot_product_attention_math(*args, **kwargs)
    return weights if torch.allclose(output, value, rtol=1e-4, atol=1e-5) else None


# FX target -> (ONNX op, its value) for a node of its translation other than its
# last (each op there once): a Softmax inside an attention must be named, and
# a linear's MatMul tells its weight from its bias.
INSIDE = {
    torch.ops.aten.linear.default: (("MatMul", _linear_matmul),),
    torch.ops.aten.scaled_dot_product_attention.default: (("Softmax", _attention_weights),),
}


class _FxMapping:
    """Gives each FX node's value, as it is computed, to the ONNX tensor of its name."""

    def __init__(self, program: Any, index: _OnnxIndex, ranges: list | None, prefix: str, found: LayerValues):
        self.index, self.ranges, self.prefix, self.found = index, ranges, prefix, found
        self.exported = {n.name: n for n in program.graph.nodes}
        renamed = _renamed_outputs(index, program)   # the graph's outputs carry the spec's names
        self.onnx_name = {name: renamed.get(name, name) for name in self.exported}
        self.present = {name for name, tensor in self.onnx_name.items() if tensor in index.producer}
        self.covered = _covered(program.graph, self.present)
        self.identities: set[str] = set()   # nodes with no ONNX tensor whose value is their input's
        self.inside: dict[str, dict[str, list[str]]] = {}   # FX node -> ONNX op -> tensors of its translation
        for tensor in index.order:
            origin = _origin(index.metadata(tensor, FX_NODE))
            if origin and self.onnx_name.get(origin) != tensor and index.types.get(tensor) in FLOAT_TYPES:
                ops = self.inside.setdefault(origin, {})
                ops.setdefault(index.producer[tensor].op_type, []).append(tensor)
        self.recorded = any(index.metadata(t, FX_NODE) for t in index.order)

    def record(self, node: torch.fx.Node, value: Any, args: tuple, kwargs: dict) -> None:
        self.found.seen += 1
        tensor = self.onnx_name.get(node.name, node.name)
        if node.name not in self.present:
            self.found.skip("FX node with no ONNX tensor of its name (optimized away or fused)")
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if (isinstance(value, torch.Tensor) and first is not None and first.shape == value.shape
                    and first.dtype == value.dtype and torch.equal(first, value)):
                self.identities.add(node.name)
            return
        why = self.index.fits(tensor, value) or self.differs(node.name, tensor)
        if why is not None:
            self.found.skip(why)
            return
        node = self.exported[node.name]   # the interpreter runs the program's module: its nodes print otherwise
        label = self.label(node)
        self.found.add(tensor, _numpy(value), label)
        for op, compute in INSIDE.get(node.target, ()):
            inside = self.inside.get(node.name, {}).get(op, [])
            if len(inside) != 1 or self.index.metadata(inside[0], FX_NODE) != node.format_node():
                continue
            try:
                computed = compute(args, kwargs, value)
            except Exception as error:  # torch raises any type on an odd call of the op: that inner value is not given
                self.found.skip(f"{op} inside {label} not computed again: {_why(error)}")
                computed = None
            if computed is not None and self.index.fits(inside[0], computed) is None:
                self.found.add(inside[0], _numpy(computed), f"{label} > {op}")

    def differs(self, name: str, tensor: str) -> str | None:
        """Why the ONNX tensor of FX node `name` may have come from another FX
        node, or None where it came from this one (module docstring, 1)."""
        recorded = self.index.metadata(tensor, FX_NODE)
        if recorded is not None:
            origin = self.exported.get(_origin(recorded) or "")
            if origin is None or origin not in self.covered[name] or origin.format_node() != recorded:
                return "the ONNX node was exported from another FX node"
            return None
        if self.ranges is not None:
            return None  # the program was made with the file's own ranges: its names are the file's
        reads = {self.onnx_name[n.name] for c in self.covered[name] for n in c.all_input_nodes
                 if n.op == "call_function" and n.name in self.present}
        if not reads <= self.index.frontier(tensor, {self.onnx_name[n] for n in self.present}):
            return "the ONNX node reads other tensors than the FX node"
        return None

    def label(self, node: Any) -> str:
        """"features.4 (Conv2d) + features.5 (BatchNorm2d): _native_batch_norm_legit_no_training[0]": the
        innermost modules of the FX nodes the tensor covers (identities aside), and the node."""
        modules: dict[str, None] = {}
        for covered in self.covered[node.name]:
            stack = covered.meta.get("nn_module_stack") or {}
            if stack and (covered is node or covered.name not in self.identities):
                path, cls = list(stack.values())[-1]
                modules.setdefault(_module_label(path, cls, self.prefix))
        names = [m for m in modules if m]
        if len(names) > LABEL_MODULES:
            names = names[:LABEL_MODULES - 1] + [f"{len(names) - LABEL_MODULES + 1} more"]
        what = node.name
        if node.target is operator.getitem and isinstance(node.args[0], torch.fx.Node):
            what = f"{node.args[0].name}[{node.args[1]}]"
        return f"{' + '.join(names)}: {what}" if names else what


def _origin(recorded: str | None) -> str | None:
    """The FX node an ONNX node records it came from ("%linear : [num_users=1] = ...")."""
    found = re.match(r"%(\S+) :", recorded) if recorded else None
    return found.group(1) if found else None


def _renamed_outputs(index: _OnnxIndex, program: Any) -> dict[str, str]:
    """FX node name -> the graph output that carries it under the spec's name."""
    outputs = list(index.model.graph.output)
    recorded = {next((p.value for p in o.metadata_props if p.key == ORIGINAL_NAME), None): o.name for o in outputs}
    recorded.pop(None, None)
    if recorded:
        return recorded
    user = list(program.graph_signature.user_outputs)
    return {name: o.name for name, o in zip(user, outputs) if name is not None} if len(user) == len(outputs) else {}


def _covered(graph: Any, present: set[str]) -> dict[str, list[Any]]:
    """FX node name -> the FX nodes its ONNX tensor's value covers: itself and
    the nodes before it with no ONNX tensor of their own, back to those with one."""
    covered: dict[str, list[Any]] = {}
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        nodes = [node]
        for before in node.all_input_nodes:
            if before.op == "call_function" and before.name not in present:
                nodes[:0] = [n for n in covered.get(before.name, [before]) if n not in nodes]
        covered[node.name] = nodes
    return covered


class _Recorder(torch.fx.Interpreter):
    """Runs a graph module, giving each call_function node's value and arguments to `record`."""

    def __init__(self, module: Any, record: Any) -> None:
        super().__init__(module)
        self.record = record

    def run_node(self, node: torch.fx.Node) -> Any:
        result = super().run_node(node)
        if node.op == "call_function":
            args, kwargs = self.fetch_args_kwargs_from_env(node)
            self.record(node, result, args, kwargs)
        return result

    def run(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return super().run(*args, **kwargs)


# ------------------------------------------------------------------------ 2. module outputs

@dataclass
class _Call:
    """One call of one module, as the forward hooks saw it."""

    path: str                      # in the bound model: "inner.features.0"
    label: str                     # in the user's model: "features.0 (Conv2d)"
    stack: tuple[str, ...]         # the paths of the modules it was called in, itself last
    inputs: list[torch.Tensor]     # the tensor objects it was given (kept, so that their ids stay theirs)
    results: list[torch.Tensor]    # the tensor objects it returned
    outputs: list[torch.Tensor]    # their values when it returned: a later in-place op (x += residual) changes them
    identity: bool                 # it returned its inputs' values


def _from_module_outputs(model: Any, tensors: list[torch.Tensor], index: _OnnxIndex, found: LayerValues) -> str:
    """Map module outputs by scope (module docstring, 2) to tensors not mapped
    yet; returns how, for `found.how`."""
    if index.torchscript_names:
        members, scope, how = _torchscript_scopes(index), _torchscript_scope, "TorchScript exporter's node names"
    elif any(index.metadata(t, NAME_SCOPES) for t in index.order):
        members, scope, how = _dynamo_scopes(index), (lambda call: call.path), "dynamo exporter's name_scopes"
    else:
        found.skip("no module scopes in the ONNX file")
        return "Module outputs: none (no name_scopes metadata, no TorchScript node names in the file)"
    calls = list(_module_calls(model, tensors))
    called: dict[str, int] = {}
    for call in calls:
        called[call.path] = called.get(call.path, 0) + 1
    mapped_object: dict[int, str] = {}    # id of a module's output tensor -> the ONNX tensor it was mapped to
    hooked: set[str] = set()              # the tensors mapped here (not FX nodes')
    for call in calls:
        found.seen += 1
        if called[call.path] > 1:
            found.skip("module called more than once")
            continue
        nodes = members.get(scope(call), [])
        if not nodes:
            _folded(call, index, found, mapped_object, hooked)
            continue
        exits = index.exits(nodes)
        for result, output in zip(call.results, call.outputs):
            fitting = [t for t in exits if index.fits(t, output) is None]
            if not fitting or (len(call.outputs) > 1 and len(fitting) > 1):
                found.skip("no ONNX tensor leaving the module's scope fits its output" if not fitting else
                           "several outputs of the module, several ONNX tensors leaving its scope fit")
                continue
            tensor = fitting[-1]
            if tensor in found.values:
                mapped_object.setdefault(id(result), tensor)
                found.skip("its output's tensor was mapped already (an FX node, an inner module)")
            else:
                found.add(tensor, _numpy(output), call.label)
                mapped_object[id(result)] = tensor
                hooked.add(tensor)
    return (f"Module outputs (forward hooks) by the {how}: the last tensor leaving the module's scope with "
            "the output's shape")


def _folded(call: _Call, index: _OnnxIndex, found: LayerValues, mapped_object: dict[int, str],
            hooked: set[str]) -> None:
    """A module with no ONNX node of its own: an identity in eval mode, or
    folded into its neighbour; a BatchNorm folded into the Conv that feeds it
    takes that Conv's tensor, where a module output mapped it (an FX node's
    value is the fused node's already)."""
    if call.identity or not call.outputs:
        found.skip("no ONNX node of its own (an identity)")
        return
    tensor = mapped_object.get(id(call.inputs[0])) if call.inputs else None
    node = index.producer.get(tensor) if tensor else None
    if (node is not None and node.op_type in FOLDS_BATCHNORM and len(call.outputs) == 1
            and tensor in hooked and index.fits(tensor, call.outputs[0]) is None):
        found.add(tensor, _numpy(call.outputs[0]), f"{found.layers[tensor]} + {call.label}")
        mapped_object[id(call.results[0])] = tensor
        return
    found.skip("no ONNX node of its own (folded into a neighbour)")


def _module_calls(model: Any, tensors: list[torch.Tensor]) -> Iterator[_Call]:
    """Every module call of one forward, innermost first (in the order they return)."""
    prefix = _bound_prefix(model)
    stack: list[str] = []
    calls: list[_Call] = []
    handles = []

    def enter(path: str) -> Any:
        def hook(module: Any, args: Any) -> None:
            stack.append(path)
        return hook

    def leave(path: str) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            given = [a for a in _leaves(args) if isinstance(a, torch.Tensor)]
            results = [o for o in _leaves(output) if isinstance(o, torch.Tensor)]
            identity = len(given) == len(results) and all(
                a.shape == o.shape and a.dtype == o.dtype and torch.equal(a, o) for a, o in zip(given, results))
            calls.append(_Call(path, _module_label(path, type(module), prefix), tuple(stack), given, results,
                               [o.detach().clone() if o.is_floating_point() else o for o in results], identity))
            stack.pop()
        return hook

    try:
        for path, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(enter(path)))
            handles.append(module.register_forward_hook(leave(path)))
        with torch.no_grad():
            model(*tensors)
    finally:
        for handle in handles:
            handle.remove()
    yield from calls


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, (tuple, list)):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    else:
        yield value


def _dynamo_scopes(index: _OnnxIndex) -> dict[str, list[Any]]:
    """Module path -> the ONNX nodes (in order) in its scope (name_scopes:
    ['', 'inner', 'inner.features', 'inner.features.1', '<FX node>'])."""
    members: dict[str, list[Any]] = {}
    for node in index.model.graph.node:
        text = next((p.value for p in node.metadata_props if p.key == NAME_SCOPES), None)
        try:
            names = ast.literal_eval(text) if text else []
        except (ValueError, SyntaxError):
            names = []
        for path in dict.fromkeys(names[:-1]):
            members.setdefault(path, []).append(node)
    return members


def _torchscript_scopes(index: _OnnxIndex) -> dict[str, list[Any]]:
    """Scope -> the ONNX nodes (in order) in it or in a scope within it:
    "/inner/features/features.0/Conv" is in "/", "/inner/", "/inner/features/"
    and "/inner/features/features.0/"."""
    members: dict[str, list[Any]] = {}
    for node in index.model.graph.node:
        if node.name.startswith("/"):
            parts = node.name.split("/")[1:-1]
            for depth in range(len(parts) + 1):
                members.setdefault("/" + "".join(p + "/" for p in parts[:depth]), []).append(node)
    return members


def _torchscript_scope(call: _Call) -> str:
    """The TorchScript exporter's scope of a module call: each module it was
    called in (the root aside) by its path's last atoms that are not all digits,
    as torch.onnx's `_unqualified_variable_name` ("/inner/features/features.0/"
    for inner.features.0, called in inner and inner.features)."""
    parts = []
    for path in call.stack[1:]:
        atoms = path.split(".")
        last = max((i for i, atom in enumerate(atoms) if not atom.isdigit()), default=0)
        parts.append(".".join(atoms[last:]))
    return "/" + "".join(p + "/" for p in parts)


def _bound_prefix(model: Any) -> str:
    """The path prefix of the user's module inside the harness's binding ("inner.")."""
    from harness.sources.torch_bound import SpecBound

    return "inner" if isinstance(model, SpecBound) else ""


def _module_label(path: str, cls: Any, prefix: str) -> str:
    """"features.4 (Conv2d)" for a module of the user's model; its class alone
    for the user's model itself; "" for the harness's binding around it."""
    name = getattr(cls, "__name__", None) or str(cls).rsplit(".", 1)[-1].strip("'>")
    if prefix:
        if path == prefix:
            return name
        if not path.startswith(prefix + "."):
            return ""
        path = path[len(prefix) + 1:]
    return f"{path} ({name})" if path else name
