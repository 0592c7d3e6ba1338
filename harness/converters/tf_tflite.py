"""TensorFlow / Keras -> TFLite (float32, no quantization) with
`tf.lite.TFLiteConverter.from_saved_model`.

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

tensorflow is imported inside the functions, never at module level.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.converters.tf_onnx import quiet, spec_function
from harness.errors import CaseError, summarize_exception
from harness.specs import ModelSpec

NAME = "tf->tflite"
READS = ("keras", "tensorflow")
WRITES = "tflite"
REVISION = 4
# TFLite has no opset: a run's --opset is for the ONNX edges and is not passed here.
OPTIONS = ("layout_variant",)
FILENAME = "model.tflite"
SIGNATURE_KEY = "serving_default"
VARIABLE_OPS = ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE")


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def convert(model: Any, spec: ModelSpec, example: Sequence[np.ndarray], out_dir: Path, *,
            layouts: tuple[dict[str, str | None], dict[str, str | None]],
            layout_variant: str | None = None, opset: int | None = None) -> dict[str, Any]:
    """Convert `model` (a keras.Model or a TFFunctionModel) to `out_dir/model.tflite`;
    return the provenance. TFLite keeps the source's layouts and has no opset:
    any other layout variant than "nhwc", or an opset, is refused."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    if layout_variant not in (None, "nhwc"):
        raise CaseError("convert", f"tf->tflite keeps the source's layouts: layout variant {layout_variant!r} does "
                                   "not apply (use nhwc, or the tf->onnx converter for an NCHW variant)")
    if opset is not None:
        raise CaseError("convert", f"tf->tflite has no opset (got --opset={opset}): drop the option for TFLite targets")
    input_layouts, output_layouts = dict(layouts[0]), dict(layouts[1])
    function, signature, kind = spec_function(model, spec, input_layouts, example)
    names = [o.name for o in spec.outputs]
    supported_ops = ["TFLITE_BUILTINS"]
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
            converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, op) for op in supported_ops]
            converter.optimizations = []
            data = converter.convert()
    except CaseError:
        raise
    except Exception as error:
        text = str(error)
        hint = "Simplify the model, or convert it to ONNX (tf->onnx) instead."
        if "TensorList" in text:
            hint = ("A recurrent layer's loop could not be lowered to TFLite builtin ops with a symbolic batch dim: "
                    "give the batch dim a fixed size in the input spec (the time dim may stay symbolic).")
        raise CaseError("convert", f"tf.lite.TFLiteConverter failed for model {spec.name!r} ({kind}): "
                                   f"{summarize_exception(error, 6)}\n{hint}") from None
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(out_dir) / FILENAME
    path.write_bytes(data)
    mapping = _inspect(data, spec, signature)
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
        "precision": "fp32",
        "optimizations": [],
        "supported_ops": supported_ops,
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
