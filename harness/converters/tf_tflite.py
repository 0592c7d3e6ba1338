"""TensorFlow / Keras -> TFLite with `tf.lite.TFLiteConverter.from_saved_model`,
in float32 or at a lowered precision.

The model is traced as `tf_onnx.spec_function` does (the spec's input names,
the source's layouts, None for symbolic dims), its variables are frozen into
constants, and the frozen graph is wrapped once more in a function that returns
{spec output name: tensor}. That function is saved as the "serving_default"
signature of a SavedModel in a temporary folder and converted from there, so
that the TFLite signature maps the spec's names onto tensor indices. TFLite
keeps the source's layouts.

Exporter bugs and limits worked around or guarded here (tests/test_tf_conversion.py
keeps canaries):
- `from_concrete_functions([f], trackable)` on a function that reads a Keras 3
  model's variables writes a model that keeps them as resource variables
  (VAR_HANDLE / READ_VARIABLE) that nothing initializes: the interpreter then
  returns garbage (1e30) without an error. Freezing first avoids it, and a
  converted file with variable ops is refused.
- `from_keras_model` names the signature's outputs "output_0", ... (not the
  spec's names) and the order of the interpreter's output details follows
  neither: hence the named wrapper.
- `from_concrete_functions` saves the function as a SavedModel internally
  and, when that save fails, silently falls back to a path that writes no
  signature. The save fails on any custom gradient (`tf.custom_gradient`:
  TensorFlow's swish/silu, so Keras' "swish" and EfficientNet; Keras 3.15's
  hard-swish has none) with "Found invalid capture Tensor ... when saving
  custom gradients". The
  harness saves the SavedModel itself with
  `SaveOptions(experimental_custom_gradients=False)`: the gradient functions,
  which inference never runs, are left out; the forward graph is unchanged.
  The provenance counts the custom gradients that were not saved.
- A symbolic batch dim with a Keras LSTM/GRU (a while loop over TensorLists)
  cannot be lowered to builtin ops ("TensorListReserve ... element_shape to be
  static"); with a fixed batch (and a symbolic time dim) it converts. The error
  says so; the SELECT_TF_OPS (Flex) fallback is not used, since LiteRT's
  interpreter here has no Flex delegate.
- The artifact must accept every shape within the spec's bounds: the input
  tensors' `shape_signature` must keep -1 for each symbolic dim.

Precisions (`PRECISIONS`; the engine passes `precision` and, below fp32, the
`calibration` settings, both in the cache key):
- fp32: no optimization; the output is what it was before precisions existed.
- fp16: `Optimize.DEFAULT` with `supported_types = [tf.float16]`: the weights
  are stored as float16 and DEQUANTIZE ops widen them at load; inputs, outputs
  and the arithmetic stay float32.
- int8-dynamic: dynamic-range quantization (`Optimize.DEFAULT`, no
  representative dataset): int8 weights, float32 inputs and outputs; the
  kernels quantize activations on the fly.
- int8: full integer. The representative dataset is the harness's calibration
  feed (`harness.calibration`: drawn from the input spec, in the converted
  model's input layouts, keyed by the signature's input names); only
  `TFLITE_BUILTINS_INT8` ops; float inputs and outputs become int8 with the
  file's own per-tensor scale and zero point (`runtimes/tflite` quantizes and
  dequantizes them). Integer inputs (token ids) and outputs (an argmax) are
  left as they are by the converter (inference_input_type applies to float
  ports only) and stay integers. TF 2.21's quantizer does not refuse an op
  it cannot give an int8 kernel, despite `TFLITE_BUILTINS_INT8`: the op
  stays float32 between DEQUANTIZE and QUANTIZE (SIN, FLOOR, CUMSUM; NEG in
  the zoo's transformer, TOPK_V2 in two_outputs); the provenance lists them
  ("ops_in_float"). An op with no TFLite kernel at all (tf.Erf) fails at
  every precision, as a CaseError naming it.
The provenance records, read back from the written file, each input's and
output's dtype and quantization, the count of the file's tensors by dtype, the
calibration feed's description and its wall time.

tensorflow is imported inside the functions, never at module level.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.calibration import calibration_inputs, describe
from harness.calibration_settings import Calibration
from harness.converters.tf_onnx import quiet, spec_function
from harness.errors import CaseError, summarize_exception
from harness.runtimes.tflite import port_quantization
from harness.specs import ModelSpec

NAME = "tf->tflite"
READS = ("keras", "tensorflow")
WRITES = "tflite"
REVISION = 4
# TFLite has no opset: a run's --opset is for the ONNX edges and is not passed here.
OPTIONS = ("layout_variant", "precision", "calibration")
CALIBRATES = ("int8",)   # the precision it runs the feed for: full-integer quantization
PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")
# Its file is the standard build of TFLite files below fp32 (TFLite's own quantizer): the floor of any
# other TFLite file of a Keras or TensorFlow model (harness/precision_floor.py), run in LiteRT.
STANDARD_FLOOR = {"runtime": "tflite", "device": "cpu", "recipe": "TFLite's own {precision} build"}
FILENAME = "model.tflite"
SIGNATURE_KEY = "serving_default"
VARIABLE_OPS = ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE")


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def convert(model: Any, spec: ModelSpec, example: Sequence[np.ndarray], out_dir: Path, *,
            layouts: tuple[dict[str, str | None], dict[str, str | None]],
            layout_variant: str | None = None, opset: int | None = None, precision: str = "fp32",
            calibration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Convert `model` (a keras.Model or a TFFunctionModel) to `out_dir/model.tflite`
    at `precision` (one of PRECISIONS); return the provenance. `calibration`:
    `Calibration(...).to_json()`, the settings of the int8 calibration feed (the
    default settings where None). TFLite keeps the source's layouts and has no
    opset: any other layout variant than "nhwc", or an opset, is refused."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    if layout_variant not in (None, "nhwc"):
        raise CaseError("convert", f"tf->tflite keeps the source's layouts: layout variant {layout_variant!r} does "
                                   "not apply (use nhwc, or the tf->onnx converter for an NCHW variant)")
    if opset is not None:
        raise CaseError("convert", f"tf->tflite has no opset (got --opset={opset}): drop the option for TFLite targets")
    if precision not in PRECISIONS:
        raise CaseError("convert", f"tf->tflite writes {', '.join(PRECISIONS)}, not {precision!r}")
    input_layouts, output_layouts = dict(layouts[0]), dict(layouts[1])
    function, signature, kind = spec_function(model, spec, input_layouts, example)
    names = [o.name for o in spec.outputs]
    settings = _settings(precision)
    feed, calibrated, distribution = None, None, None
    if precision == "int8":
        try:
            chosen = Calibration(**(calibration or {}))
        except TypeError as error:
            raise CaseError("convert", f"tf->tflite: calibration settings {calibration!r} are not those of "
                                       f"harness.calibration_settings.Calibration: {error}") from None
        start = time.perf_counter()
        feed = calibration_inputs(spec, chosen, input_layouts)
        _check_feed(feed, spec, signature, input_layouts)
        calibrated = {**describe(spec, chosen), "feed_layouts": input_layouts,
                      "feed_s": round(time.perf_counter() - start, 4)}
        distribution = chosen.for_spec(spec).distribution
    timing: dict[str, float] = {}
    custom_gradients = None
    try:
        with quiet(), tempfile.TemporaryDirectory(prefix="parity-tflite-") as saved_model:
            concrete = function.get_concrete_function()
            frozen = convert_variables_to_constants_v2(concrete)

            @tf.function(input_signature=signature, autograph=False)
            def named(*args):
                # The frozen function returns the traced dict flattened (in sorted-key
                # order): pack it back into the dict before picking outputs by name.
                outputs = tf.nest.pack_sequence_as(concrete.structured_outputs, tf.nest.flatten(frozen(*args)))
                return {name: outputs[name] for name in names}

            serving = named.get_concrete_function()
            custom_gradients = custom_gradient_count(serving.graph.as_graph_def())
            tf.saved_model.save(tf.Module(), saved_model, signatures={SIGNATURE_KEY: serving},
                                options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
            converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[SIGNATURE_KEY])
            converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, op) for op in settings["supported_ops"]]
            converter.optimizations = [getattr(tf.lite.Optimize, o) for o in settings["optimizations"]]
            if "supported_types" in settings:
                converter.target_spec.supported_types = [getattr(tf, t) for t in settings["supported_types"]]
            if feed is not None:
                converter.representative_dataset = _timed_feed(feed, timing)
                converter.inference_input_type = converter.inference_output_type = tf.int8
            start = time.perf_counter()
            data = converter.convert()
            timing["convert_s"] = round(time.perf_counter() - start, 4)
    except CaseError:
        raise
    except Exception as error:   # the TFLite converter raises ConverterError, tf's errors, a feed's: any type
        raise _conversion_error(error, spec, kind, precision) from None
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(out_dir) / FILENAME
    path.write_bytes(data)
    mapping = _inspect(data, spec, signature)
    if calibrated is not None:
        # calibration_s: from the first sample the quantizer asked for to the last (it runs the float
        # model on each as it gets it); converter_s (below) includes it
        calibrated = {**calibrated, "calibration_s": timing.get("calibration_s"), "samples_used": timing.get("samples")}
    written = _precision_record(data, spec, precision)
    return {
        "converter": NAME,
        "tool": "tf.lite.TFLiteConverter.from_saved_model",
        "tool_version": tf.__version__,
        "source_kind": kind,
        "frozen": True,
        # The frozen function went through a SavedModel that the harness wrote,
        # without the gradient functions of these custom gradients.
        "saved_model": {"signature": SIGNATURE_KEY, "experimental_custom_gradients": False,
                        "custom_gradients_not_saved": custom_gradients},
        "precision": precision,
        **settings,
        # what the written file takes and returns: dtype and quantization of each port
        "io_quantization": written["io_quantization"],
        "tensor_dtypes": written["tensor_dtypes"],
        **({"ops_in_float": written["ops_in_float"]} if precision == "int8" else {}),
        # int8: the feed the quantizer chose its scales on (else None: no calibration)
        "calibration": calibrated,
        # examples are drawn from this distribution only (engine.PreparedCase.distributions)
        **({"calibrated_on": distribution} if distribution else {}),
        "converter_s": timing.get("convert_s"),   # TFLiteConverter.convert() alone, calibration included
        "layout_variant": "nhwc",
        "signature_key": SIGNATURE_KEY,
        # How the spec's names map onto TFLite tensors: through the signature,
        # whose keys the converter takes from the named wrapper's inputs and outputs.
        "tensor_names": mapping["tensor_names"],
        "tensor_names_mapped_by": "signature",
        "shape_signatures": mapping["shape_signatures"],
        "input_signature": {s.name: [None if d is None else int(d) for d in s.shape] for s in signature},
        # TFLite keeps the source's layouts.
        "input_layouts": input_layouts,
        "output_layouts": output_layouts,
        "versions": versions(),
    }


def _settings(precision: str) -> dict[str, Any]:
    """The converter's settings for `precision`, as the provenance records them."""
    if precision == "fp32":
        return {"optimizations": [], "supported_ops": ["TFLITE_BUILTINS"]}
    if precision == "fp16":
        return {"optimizations": ["DEFAULT"], "supported_types": ["float16"], "supported_ops": ["TFLITE_BUILTINS"]}
    if precision == "int8-dynamic":
        return {"optimizations": ["DEFAULT"], "supported_ops": ["TFLITE_BUILTINS"], "representative_dataset": None}
    return {"optimizations": ["DEFAULT"], "supported_ops": ["TFLITE_BUILTINS_INT8"],
            "representative_dataset": "harness.calibration", "inference_input_type": "int8 (float inputs)",
            "inference_output_type": "int8 (float outputs)"}


def _check_feed(feed: list[dict[str, np.ndarray]], spec: ModelSpec, signature: list,
                layouts: dict[str, str | None]) -> None:
    """Refuse a calibration feed that does not fit the traced signature (a
    missing input, another dtype or rank, a fixed dim of another size) before
    the quantizer sees it, naming the sample, the input and both shapes."""
    for index, sample in enumerate(feed):
        for tensor_spec, inp in zip(signature, spec.inputs):
            wanted = [None if d is None else int(d) for d in tensor_spec.shape]
            wanted_text = f"{tensor_spec.dtype.name}{wanted} (None: any size)"
            problem = None
            if inp.name not in sample:
                problem = f"has no tensor for input {inp.name!r} (it has {sorted(sample)})"
            else:
                array = np.asarray(sample[inp.name])
                fits = (array.ndim == len(wanted)
                        and all(w is None or w == d for w, d in zip(wanted, array.shape)))
                if array.dtype.name != tensor_spec.dtype.name or not fits:
                    problem = f"gives input {inp.name!r} as {array.dtype.name}{list(array.shape)}"
            if problem:
                raise CaseError("convert", f"the int8 calibration feed of model {spec.name!r} does not fit the model: "
                                           f"sample {index} {problem}, but the model takes {wanted_text} "
                                           f"(layout {layouts.get(inp.name)}). The feed is made from the input spec "
                                           "(harness/calibration.py), laid out as the converted model takes it: "
                                           "check the input spec's shape, dtype and layouts.")


def _timed_feed(feed: list[dict[str, np.ndarray]], timing: dict[str, float]):
    """The representative dataset: the feed's samples, keyed by the signature's
    input names (the spec's); `timing` gets the wall time from the first
    sample asked for to the end, and the count handed over."""
    def samples():
        start = time.perf_counter()
        timing["samples"] = 0
        for sample in feed:
            yield dict(sample)
            timing["samples"] += 1
        timing["calibration_s"] = round(time.perf_counter() - start, 4)

    return samples


# How TF's MLIR converter and quantizer name an op in their messages
_OP_PATTERNS = (
    re.compile(r"'(tfl?\.[A-Za-z0-9_]+)' op"),
    re.compile(r"failed to legalize operation '([A-Za-z0-9_.]+)'"),
    re.compile(r"[Oo]p(?:eration)?s?(?: type)?:? '?([A-Z][A-Z0-9_]{2,})'?"),
    re.compile(r"\b(tf\.[A-Z][A-Za-z0-9]+)\b"),
)


def failing_ops(text: str) -> list[str]:
    """The op names a converter error names, in order, without repeats."""
    found: list[str] = []
    for pattern in _OP_PATTERNS:
        for name in pattern.findall(text):
            if name not in found:
                found.append(name)
    return found


def _conversion_error(error: BaseException, spec: ModelSpec, kind: str, precision: str) -> CaseError:
    """The converter's failure as a CaseError naming the op(s), the precision and what to do."""
    text = str(error)
    ops = failing_ops(text)
    hint = "Simplify the model, or convert it to ONNX (tf->onnx) instead."
    if "TensorList" in text:
        hint = ("A recurrent layer's loop could not be lowered to TFLite builtin ops with a symbolic batch dim: "
                "give the batch dim a fixed size in the input spec (the time dim may stay symbolic).")
    elif "neither a custom op nor a flex op" in text:
        hint = ("TFLite has no builtin kernel for this op at any precision (it would need the Flex delegate, which "
                "LiteRT here does not have): replace the op, or convert the model to ONNX (tf->onnx) instead.")
    elif precision == "int8":
        hint = ("Full-integer int8 allows only TFLITE_BUILTINS_INT8 ops: an op without an int8 kernel cannot be "
                "written. Run this model at int8-dynamic or fp16 (they keep such ops in float32), replace the op "
                "with one that has an int8 kernel, or leave int8 out of --precision for this model.")
    elif precision in ("fp16", "int8-dynamic"):
        hint = (f"The {precision} optimization failed on an op that converts in fp32: run this model at fp32 "
                "(leave it out of --precision) and report the converter's message upstream.")
    named = f" at op {', '.join(ops)}" if ops else ""
    return CaseError("convert", f"tf.lite.TFLiteConverter failed for model {spec.name!r} ({kind}) at precision "
                                f"{precision}{named}: {summarize_exception(error, 6)}\n{hint}")


def _precision_record(data: bytes, spec: ModelSpec, precision: str) -> dict[str, Any]:
    """Read back from the written file: each signature input's and output's
    dtype and quantization, its tensors counted by dtype, and (int8) the ops
    that still compute in float32."""
    interpreter = _interpreter(data)
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)

    def port(name: str, detail: dict[str, Any], kind: str) -> dict[str, Any]:
        quantization = port_quantization(detail, f"{kind} {name!r}")
        dtype = np.dtype(detail["dtype"]).name
        return quantization.to_json() if quantization else {"dtype": dtype, "scale": None, "zero_point": None}

    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    io = {"inputs": {i.name: port(i.name, inputs[i.name], "input") for i in spec.inputs},
          "outputs": {o.name: port(o.name, outputs[o.name], "output") for o in spec.outputs}}
    details = interpreter.get_tensor_details()
    dtypes: dict[str, int] = {}
    for detail in details:
        name = np.dtype(detail["dtype"]).name
        dtypes[name] = dtypes.get(name, 0) + 1
    float_ops: dict[str, int] = {}
    if precision == "int8":
        by_index = {d["index"]: np.dtype(d["dtype"]).name for d in details}
        for op in interpreter._get_ops_details():
            if op["op_name"] in ("DEQUANTIZE", "QUANTIZE"):
                continue
            if any(by_index.get(int(i)) == "float32" for i in op["outputs"]):
                float_ops[op["op_name"]] = float_ops.get(op["op_name"], 0) + 1
    return {"io_quantization": io, "tensor_dtypes": dict(sorted(dtypes.items())), "ops_in_float": float_ops}


def custom_gradient_count(graph_def) -> int:
    """How many ops of the graph (its function library included) carry a
    custom gradient (`tf.custom_gradient` marks them `_gradient_op_type`)."""
    nodes = list(graph_def.node) + [node for function in graph_def.library.function for node in function.node_def]
    return sum("_gradient_op_type" in node.attr for node in nodes)


def _interpreter(data: bytes):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the converter's own check can do with TF's (deprecated) copy
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_content=data)


def _inspect(data: bytes, spec: ModelSpec, signature: list) -> dict[str, Any]:
    """Check the written model (no variable ops; the spec's names in its
    signature; -1 for every symbolic dim) and return its tensor names and
    shape signatures in the spec's order."""
    interpreter = _interpreter(data)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    if ops & set(VARIABLE_OPS):
        raise CaseError("convert", f"the TFLite model converted for {spec.name!r} keeps resource variables "
                                   f"({sorted(ops & set(VARIABLE_OPS))}) that nothing initializes: its results would "
                                   "be garbage. The variables should have been frozen; report this as a harness bug.")
    signatures = interpreter.get_signature_list()
    if SIGNATURE_KEY not in signatures:
        raise CaseError("convert", f"the TFLite model converted for {spec.name!r} has no {SIGNATURE_KEY!r} signature "
                                   f"(it has {sorted(signatures)})")
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    wanted_in, wanted_out = [i.name for i in spec.inputs], [o.name for o in spec.outputs]
    if sorted(inputs) != sorted(wanted_in) or sorted(outputs) != sorted(wanted_out):
        raise CaseError("convert", f"the TFLite signature's inputs {sorted(inputs)} and outputs {sorted(outputs)} are "
                                   f"not the spec's {wanted_in} and {wanted_out}")
    shape_signatures = {}
    for tensor_spec, inp in zip(signature, spec.inputs):
        shape = [int(d) for d in inputs[inp.name]["shape_signature"]]
        expected = [-1 if d is None else int(d) for d in tensor_spec.shape]
        if shape != expected:
            raise CaseError("convert", f"the TFLite model converted for {spec.name!r} takes input {inp.name!r} with "
                                       f"shape signature {shape}, not {expected} (-1: symbolic): it would not accept "
                                       "every shape within the spec's bounds")
        shape_signatures[inp.name] = shape
    for name in wanted_out:
        shape_signatures[name] = [int(d) for d in outputs[name]["shape_signature"]]
    return {
        "tensor_names": {
            "inputs": {name: inputs[name]["name"] for name in wanted_in},
            "outputs": {name: outputs[name]["name"] for name in wanted_out},
        },
        "shape_signatures": shape_signatures,
    }
