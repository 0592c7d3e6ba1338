"""TensorFlow / Keras -> ONNX with tf2onnx.

Both sources go through one traced `tf.function` (`spec_function`): its input
signature names the inputs as the spec does and lays them out as the source
holds them (None for symbolic dims), and it returns a dict keyed by the spec's
output names, so that tf2onnx names the ONNX inputs and outputs after the spec.
Its variables and captured values are frozen into constants and tf2onnx
converts the frozen GraphDef (`_frozen_graph`). Graph outputs whose names
still differ (tf2onnx uniquifies a name that a layer already took,
"logits__1") are renamed back, and the renames are recorded; the file must
pass `onnx.checker`. The graph must take exactly the spec's inputs: the traced
function takes nothing else, so an input more is the converter's doing and is
refused, by name.

Layout variants: "nhwc" (the default) converts as it is; "nchw" asks tf2onnx to
transpose every NHWC input (`inputs_as_nchw`) and output (`outputs_as_nchw`) to
NCHW inside the graph, and the provenance says NCHW for exactly those tensors.

Exporter bugs worked around here (tests/test_tf_conversion.py keeps canaries):
- `tf2onnx.convert.from_keras` (1.17) with Keras 3 fails on Sequential models
  (KeyError on a `keras_tensor_N` output name) and names outputs after the
  output layers. On TF >= 2.16 it falls back to tracing `model(*args,
  training=False)` in a `tf.function` anyway, so this module traces that
  function itself (and converts it frozen, see below).
- tf2onnx 1.17 has no handler for Erfc (Keras' exact GELU): one is registered
  here (`_register_missing_handlers`), Erfc = 1 - Erf.
- tf2onnx ignores, silently, an `outputs_as_nchw` name that is not a graph
  output and a tensor that is not of rank 4: the declared shapes of the
  transposed tensors are checked against the traced ones after conversion.
- tf2onnx 1.17's `from_function` makes every non-resource input of the
  concrete function a graph input, captured values included: the mean and
  variance that a `keras.layers.Normalization` given them (ConvNeXt's
  PreStem) holds as constants become two extra inputs that the user would
  have to feed (tests/test_tf_conversion.py keeps a canary). The harness
  freezes the function itself, as `from_function` does inside
  (`convert_variables_to_constants_v2`, control flow not lowered, functions
  inlined), which turns every capture into a Const, and converts the frozen
  GraphDef with `from_graph_def`, naming its inputs and outputs after the
  spec through `tensors_to_rename` (what `from_function` does with the
  traced signature).
- Keras' TensorFlow backend computes a grouped convolution (ConvNeXt's
  depthwise `Conv2D(groups=C)`) on a CPU in a nested
  `tf.function(jit_compile=True)`: its call and function are marked for XLA,
  grappler does not inline such a call, and tf2onnx leaves it as a
  StatefulPartitionedCall op that it cannot convert. The marks are removed
  from the frozen graph (`_unmark_xla_functions`); the functions are then
  inlined and converted, and the provenance counts them.

tensorflow and tf2onnx are imported inside the functions, never at module level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harness.converters.onnx_names import rename_values
from harness.converters.onnx_checks import check_file, check_opset, main_opset, opset_option
from harness.errors import CaseError, summarize_exception
from harness.layouts import permutation
from harness.specs import ModelSpec

NAME = "tf->onnx"
READS = ("keras", "tensorflow")
WRITES = "onnx"
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("tf2onnx",)
REVISION = 3
OPTIONS = ("layout_variant",)
DEFAULT_OPSET = 17
FILENAME = "model.onnx"
VARIANTS = ("nhwc", "nchw")
NHWC_TO_NCHW = (0, 3, 1, 2)


@dataclasses.dataclass
class Options:
    """tf2onnx's settings: the --opset every hop that writes ONNX shares."""

    opset: int | None = opset_option()


def versions() -> dict[str, str]:
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    return {"tensorflow": tf.__version__, "keras": keras.__version__, "tf2onnx": tf2onnx.__version__,
            "onnx": onnx.__version__}


def convert(model: Any, spec: ModelSpec, example: Sequence[np.ndarray], out_dir: Path, *,
            layouts: tuple[dict[str, str | None], dict[str, str | None]],
            layout_variant: str | None = None, opset: int | None = None) -> dict[str, Any]:
    """Convert `model` (a keras.Model or a TFFunctionModel) to `out_dir/model.onnx`;
    return the provenance.

    layouts: (input layouts, output layouts) of the model as the source holds it
    (`ModelSpec.source_layouts`); example: inputs in the spec's order, laid out so.
    layout_variant: None or "nhwc" converts as it is; "nchw" transposes every
    NHWC input and output to NCHW in the graph.
    """
    import onnx
    import tf2onnx

    _register_missing_handlers()

    input_layouts, output_layouts = dict(layouts[0]), dict(layouts[1])
    variant = layout_variant or "nhwc"
    if variant not in VARIANTS:
        raise CaseError("convert", f"tf->onnx has no layout variant {layout_variant!r}; choose from {', '.join(VARIANTS)}")
    inputs_as_nchw: list[str] = []
    outputs_as_nchw: list[str] = []
    if variant == "nchw":
        inputs_as_nchw = [i.name for i in spec.inputs if input_layouts.get(i.name) == "NHWC"]
        outputs_as_nchw = [o.name for o in spec.outputs if output_layouts.get(o.name) == "NHWC"]
        if not inputs_as_nchw and not outputs_as_nchw:
            raise CaseError("convert", f"the nchw variant transposes NHWC tensors, but model {spec.name!r} has none "
                                       f"as the source holds it (inputs: {input_layouts}, outputs: {output_layouts}); "
                                       "use the nhwc variant, or declare the source's layouts (ModelSpec.layouts)")
    asked_opset, opset = opset, opset or DEFAULT_OPSET
    function, signature, kind = spec_function(model, spec, input_layouts, example)
    graph_def, input_names, output_names, spec_names = _frozen_graph(function, spec, kind)
    xla_calls = _unmark_xla_functions(graph_def)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(out_dir) / FILENAME
    try:
        with quiet():
            proto, _ = tf2onnx.convert.from_graph_def(graph_def, name=spec.name, input_names=input_names,
                                                      output_names=output_names, opset=opset,
                                                      inputs_as_nchw=inputs_as_nchw or None,
                                                      outputs_as_nchw=outputs_as_nchw or None,
                                                      tensors_to_rename=spec_names)
    except CaseError:
        raise
    except Exception as error:   # tf2onnx's handlers raise any type on an op or attribute they do not foresee
        raise CaseError("convert", f"tf2onnx.convert.from_graph_def (opset {opset}) failed for model {spec.name!r} "
                                   f"({kind}): {summarize_exception(error, 8)}\n"
                                   "Try another --opset; an op tf2onnx does not know needs a custom op handler.") from None
    check_opset(proto, asked_opset, f"tf2onnx {tf2onnx.__version__}", spec.name, "Ask for another --opset.")
    graph = proto.graph
    renamed = {
        "inputs": rename_values(graph, graph.input, [i.name for i in spec.inputs], "input", "tf2onnx"),
        "outputs": rename_values(graph, graph.output, [o.name for o in spec.outputs], "output", "tf2onnx"),
    }
    _check_ops(proto, spec)
    _check_transposed(proto, function, spec, inputs_as_nchw, outputs_as_nchw)
    _check_dynamic(proto, signature, spec, inputs_as_nchw)
    onnx.save(proto, str(path))
    check_file(path, spec.name)
    return {
        "converter": NAME,
        "tool": "tf2onnx.convert.from_graph_def",
        "tool_version": tf2onnx.__version__,
        "source_kind": kind,
        # Variables and captured values were frozen into constants before conversion.
        "frozen": True,
        # Calls of functions marked for XLA (Keras' grouped convolutions on a
        # CPU), unmarked so that tf2onnx inlines and converts them.
        "xla_calls_inlined": xla_calls,
        "opset_requested": opset,
        "opset": main_opset(proto),
        "ir_version": proto.ir_version,
        "layout_variant": variant,
        "inputs_as_nchw": inputs_as_nchw,
        "outputs_as_nchw": outputs_as_nchw,
        "renamed": {k: v for k, v in renamed.items() if v},
        "input_signature": {s.name: [None if d is None else int(d) for d in s.shape] for s in signature},
        # The layouts of the artifact: NCHW where tf2onnx transposed, the source's elsewhere.
        "input_layouts": {name: ("NCHW" if name in inputs_as_nchw else layout) for name, layout in input_layouts.items()},
        "output_layouts": {name: ("NCHW" if name in outputs_as_nchw else layout)
                           for name, layout in output_layouts.items()},
        "versions": versions(),
    }


_HANDLERS_REGISTERED = False


def _register_missing_handlers() -> None:
    """Teach tf2onnx 1.17 the TF ops it lacks that common models use.

    Erfc: Keras' exact GELU (keras.activations.gelu(approximate=False)) computes
    0.5 * x * erfc(-x / sqrt(2)); tf2onnx has no handler for Erfc. It becomes
    1 - Erf(x), exact up to float32 rounding of the difference (absolute error
    ~1e-7, which GELU multiplies by x)."""
    global _HANDLERS_REGISTERED
    if _HANDLERS_REGISTERED:
        return
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("Erfc")
    class ErfcAsOneMinusErf:  # noqa: F841  (registered by the decorator)
        @classmethod
        def version_9(cls, ctx, node, **kwargs):
            node.type = "Erf"
            dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.output[0]))
            one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
            sub = ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{node.name}_erfc"))
            ctx.replace_inputs(sub, [one.output[0], node.output[0]])

    _HANDLERS_REGISTERED = True


# ---------------------------------------------------------------- tracing, shared with tf_tflite


def tf_signature(spec: ModelSpec, input_layouts: dict[str, str | None]) -> list:
    """One tf.TensorSpec per spec input, named as the spec's input, shaped as the
    source holds it (the spec's shape permuted to the source's layout), None for
    symbolic dims."""
    import tensorflow as tf

    return [tf.TensorSpec([None if isinstance(d, str) else d for d in _source_dims(inp, input_layouts)],
                          tf.as_dtype(inp.dtype), name=inp.name) for inp in spec.inputs]


def _source_dims(inp, input_layouts: dict[str, str | None]) -> list[int | str]:
    """The spec input's dims (sizes and names) in the order the source holds them."""
    shape = list(inp.shape)
    source_layout = input_layouts.get(inp.name, inp.layout)
    if inp.layout and source_layout and source_layout != inp.layout:
        shape = [shape[axis] for axis in permutation(inp.layout, source_layout)]
    return shape


def _check_fixed_dims(model: Any, spec: ModelSpec, input_layouts: dict[str, str | None]) -> None:
    """Every dim the model fixes must be a size the spec allows there, laid out
    as the source holds it (the size itself, or a symbolic dim whose bounds
    include it). A spec that cannot fit, typically an image declared NCHW for a
    model that takes NHWC without `layouts=`, is refused here by name: traced
    anyway, Keras would take the wrong axis for the channels (and for a
    convolution fall back to a grouped, XLA-compiled kernel) instead of
    failing."""
    from harness.sources.tensorflow import TFFunctionModel

    if isinstance(model, TFFunctionModel):
        declared = [s.shape.as_list() if s.shape.rank is not None else None for s in model.input_signature]
    else:
        try:
            declared = [list(t.shape) for t in model.inputs or []]
        except (AttributeError, ValueError):  # a subclassed model that declares no inputs
            return
    if len(declared) != len(spec.inputs):
        return  # the trace reports a different number of inputs
    for inp, shape in zip(spec.inputs, declared):
        dims = _source_dims(inp, input_layouts)
        if shape is None:
            continue
        if len(shape) != len(dims):
            raise CaseError("convert", f"input {inp.name!r}: the model takes rank {len(shape)} {shape}, the spec "
                                       f"says rank {len(dims)} {dims}: check the input spec")
        for axis, (fixed, dim) in enumerate(zip(shape, dims)):
            low, high = (dim, dim) if isinstance(dim, int) else inp.dims[dim]
            if fixed is not None and not low <= fixed <= high:
                raise CaseError("convert", f"input {inp.name!r}: the model takes {shape} (None: any size) but the "
                                           f"spec, laid out as the source holds it, says {dims}: axis {axis} must be "
                                           f"{fixed}. Check the input's layout (ModelSpec.layouts: Keras images are "
                                           "NHWC) and shape.")


def spec_function(model: Any, spec: ModelSpec, input_layouts: dict[str, str | None],
                  example: Sequence[np.ndarray] | None = None) -> tuple[Any, list, str]:
    """(tf.function, input signature, source kind) for `model`: the function
    takes one tensor per spec input and returns {spec output name: tensor}."""
    import tensorflow as tf

    signature = tf_signature(spec, input_layouts)
    _check_fixed_dims(model, spec, input_layouts)
    if example is not None:
        for tensor_spec, array in zip(signature, example):
            if not tensor_spec.shape.is_compatible_with(np.shape(array)):
                raise CaseError("convert", f"example input {tensor_spec.name!r} has shape {list(np.shape(array))} but "
                                           f"the spec, laid out as the source holds it, says {tensor_spec.shape.as_list()}: "
                                           "check the input's layout (ModelSpec.layouts) and shape")
    call, kind = _caller(model, len(spec.inputs))
    names = [o.name for o in spec.outputs]

    @tf.function(input_signature=signature, autograph=False)
    def function(*args):
        results = call(*args)
        if len(results) != len(names):
            raise CaseError("convert", f"model {spec.name!r} returns {len(results)} output(s) but its spec names "
                                       f"{len(names)}: {names}")
        # tf.identity: two outputs that are one tensor, or an input passed through, stay distinct graph outputs.
        return {name: tf.identity(result) for name, result in zip(names, results)}

    try:
        function.get_concrete_function()
    except CaseError:
        raise
    except Exception as error:   # tracing runs the user's call(): TypeError, ValueError, tf's errors, anything
        shapes = ", ".join(f"{s.name}: {s.dtype.name}{s.shape.as_list()}" for s in signature)
        raise CaseError("convert", f"tracing model {spec.name!r} ({kind}) with the spec's input signature ({shapes}) "
                                   f"failed: {summarize_exception(error, 6)}\nCheck the input spec (order, shape, "
                                   "dtype, the source's layouts) against the model's inputs.") from None
    return function, signature, kind


def _frozen_graph(function, spec: ModelSpec, kind: str) -> tuple[Any, list[str], list[str], dict[str, str]]:
    """The traced function frozen, as tf2onnx's `from_function` freezes it
    (control flow kept, functions inlined), with every variable and captured
    value a constant: (GraphDef, input tensor names, output tensor names,
    {tensor name: spec name}). Its inputs are the function's placeholders that
    are not resources: the spec's inputs, unless freezing left a capture."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = function.get_concrete_function()
    try:
        with quiet():
            frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    except Exception as error:   # tf's freezing raises its own types (ValueError, InvalidArgumentError, ...)
        raise CaseError("convert", f"freezing the traced function of model {spec.name!r} ({kind}) into constants "
                                   f"failed: {summarize_exception(error, 6)}") from None
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.resource]
    traced_inputs = [s.name for s in tf.nest.flatten(concrete.structured_input_signature)]
    # Freezing keeps the tensor names of the traced graph: its outputs are the
    # traced dict's values, its first inputs the signature's placeholders.
    spec_names = dict(zip(inputs, traced_inputs))
    spec_names.update({tensor.name: name for name, tensor in concrete.structured_outputs.items()})
    return frozen.graph.as_graph_def(add_shapes=True), inputs, [t.name for t in frozen.outputs], spec_names


def _unmark_xla_functions(graph_def) -> int:
    """Remove the marks that keep grappler from inlining a function call (XLA
    compilation, `_noinline`) from the calls and functions of `graph_def`, so
    that tf2onnx's grappler pass inlines them; return how many calls were
    marked. XLA compilation means nothing to an ONNX graph."""
    calls = 0
    for node in _all_nodes(graph_def):
        if node.attr.pop("_XlaMustCompile", None) is not None and "f" in node.attr:  # a call, not an op inside
            calls += 1
    for function in graph_def.library.function:
        for attribute in ("_XlaMustCompile", "_noinline"):
            function.attr.pop(attribute, None)
    return calls


def _all_nodes(graph_def) -> list:
    return list(graph_def.node) + [node for function in graph_def.library.function for node in function.node_def]


def _caller(model: Any, n_inputs: int) -> tuple[Callable[..., list], str]:
    """A callable from one tensor per input to the list of the model's outputs, in order."""
    import tensorflow as tf

    from harness.sources.tensorflow import TFFunctionModel

    if isinstance(model, TFFunctionModel):
        def call(*args):
            results = model.function(*args)
            if isinstance(results, dict):
                missing = [k for k in model.concrete_outputs if k not in results]
                if missing:
                    raise CaseError("convert", f"the TF function returns {sorted(results)}, not its declared outputs "
                                               f"{model.concrete_outputs}")
                return [results[k] for k in model.concrete_outputs]
            return tf.nest.flatten(results)
        return call, f"TFFunctionModel ({model.kind})"

    def call_keras(*args):
        return tf.nest.flatten(model(args[0] if n_inputs == 1 else list(args), training=False))
    return call_keras, "keras.Model"


@contextlib.contextmanager
def quiet():
    """tf2onnx logs every rewriter pass at INFO level and TF warns about
    retracing; neither says anything a parity run needs."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------- ONNX graph edits and checks


def _check_ops(proto, spec: ModelSpec) -> None:
    """tf2onnx converts with `continue_on_error`: a TF op it cannot convert is
    logged and left in the graph as it was, for onnx.checker to reject with a
    less helpful message. Name those ops."""
    import collections

    import onnx

    def unknown(graph):
        for node in graph.node:
            if node.domain in ("", "ai.onnx"):
                try:
                    onnx.defs.get_schema(node.op_type, main_opset(proto), node.domain)
                except onnx.defs.SchemaError:   # no such op in the opset: the op this counts
                    yield node.op_type
            for attribute in node.attribute:
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    yield from unknown(sub)

    left = collections.Counter(unknown(proto.graph))
    if left:
        ops = ", ".join(f"{op} (x{n})" for op, n in left.most_common())
        raise CaseError("convert", f"tf2onnx could not convert these TensorFlow ops of model {spec.name!r}: {ops}.\n"
                                   "A StatefulPartitionedCall left over usually means a layer failed to trace with "
                                   "the spec's shapes (check the input spec and the source's layouts); otherwise try "
                                   "another --opset.")


def _declared_dims(value) -> list[int | None]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _fits(declared: list[int | None], expected: list[int | None]) -> bool:
    """False where a known dim of one contradicts the other's."""
    if len(declared) != len(expected):
        return False
    return all(a is None or b is None or a == b for a, b in zip(declared, expected))


def _shows(declared: list[int | None], expected: list[int | None]) -> bool:
    """`declared` fits `expected` and some dim known on both sides says so."""
    return _fits(declared, expected) and any(a is not None and b is not None for a, b in zip(declared, expected))


def _check_transposed(proto, function, spec: ModelSpec, inputs_as_nchw: list[str], outputs_as_nchw: list[str]) -> None:
    """tf2onnx skips an `inputs_as_nchw`/`outputs_as_nchw` entry it cannot apply
    without an error: check that each declared shape fits NCHW and, where the
    known dims tell them apart, not NHWC."""
    concrete = function.get_concrete_function()
    traced = {s.name: s.shape.as_list() for s in concrete.structured_input_signature[0]}
    traced.update({name: t.shape.as_list() for name, t in concrete.structured_outputs.items()})
    declared = {v.name: _declared_dims(v) for v in list(proto.graph.input) + list(proto.graph.output)}
    for name in list(inputs_as_nchw) + list(outputs_as_nchw):
        nhwc = traced.get(name)
        if name not in declared or nhwc is None or len(nhwc) != 4:
            raise CaseError("convert", f"tf2onnx was asked to transpose {name!r} to NCHW but the converted graph "
                                       f"has no such rank-4 tensor (graph inputs and outputs: {sorted(declared)})")
        nchw = [nhwc[axis] for axis in NHWC_TO_NCHW]
        if not _fits(declared[name], nchw) or (_shows(declared[name], nhwc) and not _shows(declared[name], nchw)):
            raise CaseError("convert", f"tf2onnx did not transpose {name!r} to NCHW: its declared shape "
                                       f"{declared[name]} fits the source's NHWC {nhwc}, not NCHW {nchw}")


def _check_dynamic(proto, signature: list, spec: ModelSpec, inputs_as_nchw: list[str]) -> None:
    """The artifact must take every shape within the spec's bounds: no symbolic
    dim of an input may come out fixed."""
    declared = {v.name: _declared_dims(v) for v in proto.graph.input}
    for tensor_spec in signature:
        expected = tensor_spec.shape.as_list()
        if tensor_spec.name in inputs_as_nchw:
            expected = [expected[axis] for axis in NHWC_TO_NCHW]
        got = declared.get(tensor_spec.name)
        if got is None or len(got) != len(expected) or any(
                (e is None and g is not None) or (e is not None and g is not None and e != g)
                for e, g in zip(expected, got)):
            raise CaseError("convert", f"the ONNX model converted for {spec.name!r} declares input "
                                       f"{tensor_spec.name!r} as {got} (None: dynamic), not {expected}: it would "
                                       "not take every shape within the spec's bounds")
