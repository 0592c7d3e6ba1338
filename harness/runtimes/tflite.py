"""TFLite (LiteRT) as a target: `ai_edge_litert`'s interpreter on the CPU, with
its default delegates (XNNPACK for float32).

The spec's names are mapped onto the model's tensors through a signature whose
input and output names are the spec's (what `converters/tf_tflite` writes);
otherwise by the spec's name within the TFLite tensor names
("serving_default_image:0" holds "image"), else by position when the counts
agree. Inputs are resized to each example's shapes and the tensors
re-allocated only when the shapes change.

A file that takes or returns quantized integers where the spec's tensor is float
(a full-integer int8 file: `converters/tf_tflite` at precision int8, or a
user's) is run as it is: each such port's float input is quantized with the
file's own scale and zero point (`quantize`: round half to even, as the
interpreter's QUANTIZE kernel does, then clipped to the integer type's range),
and each such output is dequantized to float32 (`dequantize`: (q - zero_point)
* scale), so that the comparison sees floats on both sides. Per-tensor
parameters only: a port quantized per axis is refused. The ports and their
parameters are in the Session's provenance ("quantized_ports"). The file's own
types rule: the Session's `precision` stays fp32 for such files.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.errors import CaseError, summarize_exception

NAME = "tflite"
FORMATS = ("tflite",)
# The files it runs, by suffix -> format: how a user's --converted file is read (backends.artifact_suffixes).
SUFFIXES = {".tflite": "tflite"}
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("ai-edge-litert",)
# A malformed file has hung the interpreter in allocate_tensors: cases run in a
# worker process under --parity-isolate=auto (harness/worker.py).
NEEDS_ISOLATION = True
# Integer types whose tensors may carry affine quantization (a scale and a zero point).
QUANTIZED_DTYPES = ("int8", "uint8", "int16")


@dataclass(frozen=True)
class PortQuantization:
    """The per-tensor affine quantization of one input or output: real = (q - zero_point) * scale."""

    dtype: str
    scale: float
    zero_point: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """Real values -> `dtype` codes as TFLite's QUANTIZE does: x / scale in
    float32, rounded to the nearest integer with ties to even (the interpreter's
    optimized kernel, the one it runs by default; its reference kernel rounds
    ties away from zero), plus the zero point, clipped to the type's range
    (+-inf to its ends). NaN has no code and is refused (ValueError)."""
    x = np.asarray(x)
    if np.isnan(x).any():
        raise ValueError(f"cannot quantize NaN to {dtype}: {int(np.isnan(x).sum())} NaN value(s)")
    info = np.iinfo(dtype)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        steps = np.rint(x.astype(np.float32) / np.float32(scale)).astype(np.float64)
    return np.clip(steps + int(zero_point), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Codes -> float32 as TFLite's DEQUANTIZE does: (q - zero_point) * scale,
    computed in float64 and rounded once to float32."""
    return ((np.asarray(q).astype(np.int64) - int(zero_point)) * float(scale)).astype(np.float32)


def port_quantization(detail: dict[str, Any], where: str) -> PortQuantization | None:
    """The per-tensor quantization of a tensor (an interpreter's tensor details),
    or None where it has none (a float tensor, or integers that stand for
    themselves: no scale). A tensor quantized per axis is refused (CaseError):
    `where` names it, e.g. "input 'image' (serving_default_image:0)"."""
    dtype = np.dtype(detail["dtype"]).name
    if dtype not in QUANTIZED_DTYPES:
        return None
    parameters = detail.get("quantization_parameters") or {}
    scales = np.asarray(parameters.get("scales", ()), dtype=np.float64).reshape(-1)
    zero_points = np.asarray(parameters.get("zero_points", ()), dtype=np.int64).reshape(-1)
    if scales.size == 0:
        scale, zero_point = detail.get("quantization", (0.0, 0))
        if not scale:
            return None
        return PortQuantization(dtype, float(np.float32(scale)), int(zero_point))
    if scales.size > 1:
        raise CaseError("runtime", f"the TFLite model's {where} is {dtype} quantized per axis ({scales.size} scales "
                                   f"along axis {parameters.get('quantized_dimension')}): the harness quantizes and "
                                   "dequantizes a model's inputs and outputs per tensor only (one scale and zero "
                                   "point); convert with per-tensor input/output quantization (TFLiteConverter's "
                                   "inference_input_type/inference_output_type do) or keep float inputs and outputs")
    if not scales[0] > 0:
        return None
    return PortQuantization(dtype, float(np.float32(scales[0])),
                            int(zero_points[0]) if zero_points.size else 0)


def _is_float(dtype: str) -> bool:
    return dtype == "bfloat16" or np.dtype(dtype).kind == "f"

PACKAGES = ("ai_edge_litert",)   # what missing() imports: found, a CPU case imports them as it starts (backends.installed)


def missing(device: str) -> str | None:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError as error:
        return f"ai_edge_litert is not installed ({error}); pip install ai-edge-litert"
    if device != "cpu":
        return "the TFLite interpreter runs on the CPU here; GPU delegates are not set up"
    return None


def versions() -> dict[str, str]:
    import ai_edge_litert

    version = getattr(ai_edge_litert, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("ai-edge-litert")
    return {"ai_edge_litert": version}


class Session:
    """A loaded artifact, with the tensors that the spec's inputs and outputs map onto."""

    def __init__(self, path: Path, device: str, options: Any = None, precision: str = "fp32"):
        """precision: fp32, the one this runtime declares (no PRECISIONS)."""
        from ai_edge_litert.interpreter import Interpreter

        if device != "cpu":
            raise CaseError("runtime", f"the TFLite interpreter runs on the CPU here, not on {device!r}")
        if precision != "fp32":
            raise CaseError("runtime", f"the tflite target computes in fp32 only, not {precision}")
        try:
            self.interpreter = Interpreter(model_path=str(path))
            self.interpreter.allocate_tensors()  # a file that parses but cannot be prepared fails here, not mid-run
            signatures = self.interpreter.get_signature_list()
        except (ValueError, RuntimeError) as error:   # no flatbuffer: ValueError; an op failing to prepare: RuntimeError
            raise CaseError("runtime", f"the TFLite interpreter could not load {path}: "
                                       f"{summarize_exception(error, 4)}") from None
        # Signature runners are not kept: one that is alive holds a reference to
        # the interpreter's internals, and resizing then refuses to run.
        self.signatures = {key: _signature_details(self.interpreter, key) for key in signatures}
        self._shapes: tuple[tuple[int, ...], ...] | None = None
        self._inputs: list[dict[str, Any]] = []
        self._outputs: list[dict[str, Any]] = []
        # per bound input and output: its quantization where the harness (de)quantizes it, else None
        self._quantized_in: list[PortQuantization | None] = []
        self._quantized_out: list[PortQuantization | None] = []
        self.provenance = {"interpreter": "ai_edge_litert", "signatures": sorted(self.signatures)}

    def bind(self, input_names: Sequence[str], input_dtypes: Sequence[str], output_names: Sequence[str]) -> dict[str, Any]:
        """Match the spec's inputs and outputs to the model's tensors; return what was done."""
        primary = {d["index"] for d in self.interpreter.get_input_details()}
        signature = next((key for key, (inputs, outputs) in self.signatures.items()
                          if set(input_names) <= set(inputs) and set(output_names) <= set(outputs)
                          # the main subgraph's: the interpreter's resize and set_tensor address that one
                          and all(inputs[name]["index"] in primary for name in input_names)), None)
        if signature is not None:
            inputs, outputs = self.signatures[signature]
            self._inputs = [inputs[name] for name in input_names]
            self._outputs = [outputs[name] for name in output_names]
            matched_by = f"signature {signature}"
        else:
            inputs = self.interpreter.get_input_details()
            outputs = self.interpreter.get_output_details()
            self._inputs, by_in = _match("input", input_names, inputs)
            self._outputs, by_out = _match("output", output_names, outputs)
            matched_by = "position" if "position" in (by_in, by_out) else "name"
        self._quantized_in = []
        for spec_name, detail, dtype in zip(input_names, self._inputs, input_dtypes):
            expected = np.dtype(detail["dtype"]).name
            quantized = port_quantization(detail, f"input {spec_name!r} ({detail['name']})") \
                if expected != dtype and _is_float(dtype) else None
            if expected != dtype and quantized is None:
                raise CaseError("runtime", f"the TFLite model's input {detail['name']!r} takes {expected} but the "
                                           f"spec's input {spec_name!r} is {dtype}: fix the input spec or the conversion")
            self._quantized_in.append(quantized)
        self._quantized_out = [port_quantization(detail, f"output {name!r} ({detail['name']})")
                               for name, detail in zip(output_names, self._outputs)]
        ports = {"inputs": {name: q.to_json() for name, q in zip(input_names, self._quantized_in) if q},
                 "outputs": {name: q.to_json() for name, q in zip(output_names, self._quantized_out) if q}}
        self._shapes = None
        self.provenance["matched_by"] = matched_by
        self.provenance.pop("quantized_ports", None)
        if ports["inputs"] or ports["outputs"]:
            # inputs quantized by the harness (round half to even, clipped), outputs dequantized to float32
            self.provenance["quantized_ports"] = ports
        return {"matched_by": matched_by,
                "inputs": {name: d["name"] for name, d in zip(input_names, self._inputs)},
                "outputs": {name: d["name"] for name, d in zip(output_names, self._outputs)}}

    def declared_inputs(self) -> list[list[int | None]]:
        """The bound inputs' declared shapes, in the spec's order (None: -1 in
        the shape signature, a dim the file lets vary)."""
        return [[None if d < 0 else int(d) for d in detail.get("shape_signature", detail["shape"])]
                for detail in self._inputs]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        interpreter = self.interpreter
        # no cast: a wrong dtype fails in set_tensor; a quantized port takes the codes of its float input
        arrays = [np.asarray(x if q is None else _quantized(x, q, detail), order="C")   # 0-d stays 0-d
                  for x, q, detail in zip(inputs, self._quantized_in or [None] * len(inputs), self._inputs)]
        shapes = tuple(x.shape for x in arrays)
        if shapes != self._shapes:
            self._shapes = None  # a failed resize leaves the tensors in no known state
            for array, detail in zip(arrays, self._inputs):
                # strict: only the dims that are -1 in the shape signature may change
                interpreter.resize_tensor_input(detail["index"], list(array.shape), strict=True)
            interpreter.allocate_tensors()
            self._shapes = shapes
        for array, detail in zip(arrays, self._inputs):
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        outputs = [interpreter.get_tensor(d["index"]) for d in self._outputs]
        return [y if q is None else dequantize(y, q.scale, q.zero_point)
                for y, q in zip(outputs, self._quantized_out or [None] * len(outputs))]


def _quantized(x: np.ndarray, quantization: PortQuantization, detail: dict[str, Any]) -> np.ndarray:
    try:
        return quantize(x, quantization.scale, quantization.zero_point, quantization.dtype)
    except ValueError as error:
        raise CaseError("runtime", f"the TFLite model's input {detail['name']!r} takes {quantization.dtype} codes "
                                   f"(scale {quantization.scale:g}, zero point {quantization.zero_point}): "
                                   f"{error}") from None


def _signature_details(interpreter, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """{name: tensor details} of a signature's inputs and of its outputs."""
    runner = interpreter.get_signature_runner(key)
    return runner.get_input_details(), runner.get_output_details()


def _short(name: str) -> str:
    """"serving_default_image:0" -> "image"."""
    return re.sub(r":\d+$", "", re.sub(r"^serving_default_", "", name))


def _match(kind: str, wanted: Sequence[str], details: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The tensor details for `wanted`, by name (exact, then the spec's name
    within a TFLite name, where exactly one holds it), else by position when the
    counts agree; and how they were matched."""
    present = [d["name"] for d in details]
    chosen: list[dict[str, Any]] = []
    for name in wanted:
        hits = ([d for d in details if d["name"] == name] or [d for d in details if _short(d["name"]) == name]
                or [d for d in details if name in d["name"]])
        if len(hits) != 1 or any(hits[0] is c for c in chosen):
            break
        chosen.append(hits[0])
    else:
        return chosen, "name"
    if len(wanted) == len(details):
        return list(details), "position"
    raise CaseError("runtime", f"the TFLite model's {kind}s {present} do not match the spec's {list(wanted)}: "
                               f"name them alike (a signature with the spec's names), or give the same number "
                               f"of {kind}s in the same order")
