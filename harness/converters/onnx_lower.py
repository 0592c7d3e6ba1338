"""ONNX -> ONNX in a lower precision: float16, int8 (static QDQ), int8-dynamic.

One lowered ONNX file is one artifact that every ONNX-consuming target runs
(ONNX Runtime, OpenVINO, TensorRT), so a quantization bug and a runtime bug can
be told apart: the same file passes on one target and fails on another, or
fails on all.

- fp16: onnxconverter-common's `convert_float_to_float16`, inputs and outputs
  kept float32. Its defaults hide two traps, both set here: it clips weights
  to [1e-7, 1e4] (float16 reaches 65504 and 6e-8), and it converts every op
  outside a block list of mostly ML ops, so a sum or an exp whose values pass
  float16's range turns into inf. So the float32 model first runs on the
  calibration feed with every intermediate tensor as an output, and each node
  that reads or writes a tensor reaching 1/16 of float16's largest value (16x
  headroom for inputs larger than the feed's) is kept in float32, so that no
  such tensor passes through float16 between two nodes; the nodes kept, by
  name and op, are in the provenance.
- int8: onnxruntime.quantization's `quantize_static` in the QDQ format,
  int8 weights per channel and int8 activations, both symmetric (zero point 0,
  what TensorRT's explicit quantization takes), calibrated by MinMax on the
  harness's own feed (harness/calibration.py): its settings are part of the
  cache key and the provenance.
- int8-dynamic: `quantize_dynamic`: int8 weights per channel, activations
  quantized by the model as it runs (ONNX Runtime's integer ops; a target that
  lacks them says so when it loads the file).

The model is prepared with `quant_pre_process` (shape inference, no graph
optimization: the float32 graph's nodes stay as exported) before quantizing.
onnx, onnxruntime and onnxconverter-common are imported inside the functions.
"""

from __future__ import annotations

import contextlib

import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.calibration import calibration_inputs, describe
from harness.calibration_settings import Calibration
from harness.converters.onnx_checks import check_file
from harness.errors import CaseError, summarize_exception
from harness.model_file import file_sha256
from harness.specs import ModelSpec

NAME = "onnx-lower"
READS = ("onnx",)
WRITES = "onnx"
PRECISIONS = ("fp16", "int8", "int8-dynamic")
REVISION = 1
FILENAME = "model.onnx"
OPTIONS = ("precision", "calibration")
CALIBRATES = ("fp16", "int8")   # the precisions it runs the feed for (fp16: its range analysis)
# Its file is the standard build of ONNX files at its precisions: the floor of any other ONNX file, and
# of a file in a format with no standard build of its own (harness/precision_floor.py), run there.
STANDARD_FLOOR = {"runtime": "onnxruntime", "device": "cpu", "recipe": "a standard {precision} build"}

FLOAT16_MAX = 65504.0
# A node whose output reaches this on the feed computes in float32 (see the docstring).
FLOAT16_HEADROOM = 16.0
FLOAT16_MIN_POSITIVE = 2.0 ** -24   # float16's smallest subnormal: smaller weights round to 0, not to 1e-7


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    found = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    try:
        import onnxconverter_common

        found["onnxconverter-common"] = onnxconverter_common.__version__
    except ImportError:
        pass
    return found


def convert(source: Path, spec: ModelSpec, example: Sequence[np.ndarray], out_dir: Path, *,
            layouts: tuple[dict[str, str | None], dict[str, str | None]], precision: str,
            calibration: dict[str, Any] | None) -> dict[str, Any]:
    """Write `source` lowered to `precision` as `out_dir/model.onnx`; return the provenance."""
    if precision not in PRECISIONS:
        raise CaseError("convert", f"{NAME} lowers ONNX to {', '.join(PRECISIONS)}, not {precision!r}")
    source = Path(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILENAME
    settings = None   # int8-dynamic calibrates nothing
    if precision in CALIBRATES:
        settings = Calibration(**calibration) if calibration else Calibration().for_spec(spec)
    start = time.perf_counter()
    feed = calibration_inputs(spec, settings, layouts[0]) if settings else []
    feed_s = time.perf_counter() - start
    start = time.perf_counter()
    if precision == "fp16":
        details = _to_float16(source, path, spec, feed)
    elif precision == "int8":
        details = _quantize_static(source, path, spec, feed, settings.distribution)
    else:
        details = _quantize_dynamic(source, path, spec)
    lower_s = time.perf_counter() - start
    check_file(path, spec.name)
    return {
        "converter": NAME,
        "precision": precision,
        "source_sha256": file_sha256(source),
        **details,
        # int8-dynamic calibrates nothing; fp16 runs the feed for its range analysis only
        "calibration": describe(spec, settings) if settings else None,
        "timings": {"calibration_feed_s": round(feed_s, 4), "lower_s": round(lower_s, 4)},
        "input_layouts": dict(layouts[0]),
        "output_layouts": dict(layouts[1]),
        "versions": versions(),
    }


def _feed_reader(feed: list[dict[str, np.ndarray]]):
    """The feed as onnxruntime.quantization's CalibrationDataReader."""
    from onnxruntime.quantization import CalibrationDataReader

    class FeedReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._next = iter(feed)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._next, None)

    return FeedReader()


def _prepared(source: Path, folder: Path) -> tuple[Path, str]:
    """The model with shapes inferred for the quantizer, nodes unchanged, and
    which inference did it: ONNX Runtime's symbolic one, or, where that stops
    (tf2onnx's attention graphs: "Incomplete symbolic shape inference"), ONNX's own."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = folder / "prepared.onnx"
    try:
        # Where it stops, ONNX Runtime's symbolic inference saves what it has as
        # "sym_shape_infer_temp.onnx" plus uuid-named external data files in the
        # working directory: it runs inside the temporary folder, so that nothing
        # lands in the user's.
        where = (str(source.resolve()), str(prepared.resolve()))
        with contextlib.chdir(folder):
            quant_pre_process(*where, skip_optimization=True, skip_symbolic_shape=False)
        return prepared, "symbolic"
    except Exception as error:   # the symbolic inference stops in any type (an assertion, a KeyError): ONNX's then
        quant_pre_process(str(source), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
        return prepared, f"onnx (the symbolic inference stopped: {summarize_exception(error, 1)})"


def _quantize_static(source: Path, path: Path, spec: ModelSpec, feed: list[dict[str, np.ndarray]],
                     distribution: str) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    settings = {"quant_format": "QDQ", "weight_type": "QInt8", "activation_type": "QInt8", "per_channel": True,
                "calibrate_method": "MinMax",
                "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True}}
    with tempfile.TemporaryDirectory() as folder:
        try:
            prepared, inference = _prepared(source, Path(folder))
            quantize_static(str(prepared), str(path), _feed_reader(feed), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, extra_options=settings["extra_options"],
                            calibration_providers=["CPUExecutionProvider"])
        except CaseError:
            raise
        except Exception as error:   # the quantizer's Python and onnxruntime's errors (Fail: an Exception) alike
            raise _quantizer_error(spec, "int8", feed, error) from None
    return {"tool": "onnxruntime.quantization.quantize_static", "quantization": settings, "shape_inference": inference,
            **_qdq_counts(path),
            # examples are drawn from this distribution only (engine.PreparedCase.distributions)
            "calibrated_on": distribution}


def _quantize_dynamic(source: Path, path: Path, spec: ModelSpec) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings = {"weight_type": "QInt8", "per_channel": True}
    with tempfile.TemporaryDirectory() as folder:
        try:
            prepared, inference = _prepared(source, Path(folder))
            quantize_dynamic(str(prepared), str(path), per_channel=True, weight_type=QuantType.QInt8)
        except Exception as error:   # the quantizer's Python and onnxruntime's errors (Fail: an Exception) alike
            raise _quantizer_error(spec, "int8-dynamic", [], error) from None
    return {"tool": "onnxruntime.quantization.quantize_dynamic", "quantization": settings, "shape_inference": inference,
            **_qdq_counts(path)}


def _qdq_counts(path: Path) -> dict[str, Any]:
    """What the quantizer wrote: its quantization ops by type, and how many nodes it left in float."""
    import onnx

    ops: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    quantizing = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")
    return {"quantization_ops": {op: n for op, n in sorted(ops.items()) if op in quantizing}}


def _quantizer_error(spec: ModelSpec, precision: str, feed: list[dict[str, np.ndarray]], error: Exception) -> CaseError:
    shapes = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in (feed[0].items() if feed else ()))
    fed = f" on a calibration feed of {len(feed)} samples ({shapes})" if feed else ""
    return CaseError("convert", f"onnxruntime.quantization could not quantize model {spec.name!r} to {precision}"
                                f"{fed}: {summarize_exception(error, 4)}\nAn op or a shape it cannot quantize is "
                                "named above; if the feed does not fit the model, fix the input spec (the feed is "
                                "made from it) or --calibration")


def _to_float16(source: Path, path: Path, spec: ModelSpec, feed: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(source))
    peaks = _intermediate_peaks(model, feed, spec)
    limit = FLOAT16_MAX / FLOAT16_HEADROOM
    kept = [node for node in model.graph.node
            if any(peaks.get(name, 0.0) >= limit for name in [*node.input, *node.output])]
    block_list = list(float16.DEFAULT_OP_BLOCK_LIST)
    try:
        lowered = float16.convert_float_to_float16(
            model, min_positive_val=FLOAT16_MIN_POSITIVE, max_finite_val=FLOAT16_MAX, keep_io_types=True,
            op_block_list=block_list, node_block_list=[node.name for node in kept])
    except Exception as error:   # onnxconverter-common's Python raises any type on a graph it does not foresee
        raise CaseError("convert", f"onnxconverter-common could not convert model {spec.name!r} to float16: "
                                   f"{summarize_exception(error, 4)}") from None
    try:   # it can leave a node reading float32 from a float16 tensor, which every runtime refuses
        onnx.shape_inference.infer_shapes(lowered, check_type=True, strict_mode=True)
    except (onnx.shape_inference.InferenceError, ValueError) as error:   # ValueError: a graph over protobuf's 2 GiB
        raise CaseError("convert", f"onnxconverter-common's float16 model of {spec.name!r} does not type-check: "
                                   f"{summarize_exception(error, 3)}\nA limitation of its conversion for the op "
                                   "named above; that op's model has no fp16 case through ONNX") from None
    onnx.save(lowered, str(path))
    return {"tool": "onnxconverter_common.float16.convert_float_to_float16",
            "float16": {"keep_io_types": True, "min_positive_val": FLOAT16_MIN_POSITIVE,
                        "max_finite_val": FLOAT16_MAX, "op_block_list": block_list,
                        "kept_float32_for_range": [{"node": node.name, "op": node.op_type,
                                                    "peak": max(peaks.get(name, 0.0)
                                                                for name in [*node.input, *node.output])}
                                                   for node in kept],
                        "range_limit": limit}}


def _intermediate_peaks(model, feed: list[dict[str, np.ndarray]], spec: ModelSpec) -> dict[str, float]:
    """max|x| of every float tensor of `model` over the feed, by tensor name
    (run in ONNX Runtime's CPU provider with every node output made a graph output)."""
    import onnx
    import onnxruntime as ort

    inferred = onnx.shape_inference.infer_shapes(model)
    floats = {v.name for v in list(inferred.graph.value_info) + list(inferred.graph.output)
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    probe = onnx.ModelProto()
    probe.CopyFrom(inferred)
    listed = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name in floats and name not in listed:
                probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
                listed.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # the nodes as written
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        peaks = dict.fromkeys(names, 0.0)
        for sample in feed:
            for name, value in sample.items():
                if value.dtype.kind == "f":
                    peaks[name] = max(peaks.get(name, 0.0), float(np.max(np.abs(value))))
            for name, value in zip(names, session.run(names, sample)):
                if value.size and value.dtype.kind == "f":
                    peaks[name] = max(peaks[name], float(np.max(np.abs(value))))
    except Exception as error:   # onnxruntime's errors (Fail, InvalidArgument) derive from Exception alone
        raise CaseError("convert", f"the float32 model {spec.name!r} could not run on its calibration feed "
                                   f"(to find the nodes float16 would overflow): {summarize_exception(error, 4)}"
                                   "\nIf the feed does not fit the model, fix the input spec or --calibration") from None
    return peaks
