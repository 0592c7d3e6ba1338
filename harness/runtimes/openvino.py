"""OpenVINO as a target: ONNX files read directly and OpenVINO IR (.xml + .bin),
compiled for the CPU.

Precision trap: on a CPU that lists BF16 (AVX512-BF16, AMX) OpenVINO's CPU
plugin computes in bf16 unless told otherwise, with errors near 5e-3 of the
output's scale where float32 holds 1e-6 (measured on the zoo's CNN, MLP and
transformer block, against ONNX Runtime). Every session therefore sets
`INFERENCE_PRECISION_HINT` itself (f32 for the fp32 precision) and refuses to
run when the compiled model reports another precision than the one asked for:
OpenVINO turns an f16 hint into bf16 on a CPU without FP16, without a word.

The model is compiled once with its own (dynamic) shapes; one infer request
takes each example's shapes.
"""

from __future__ import annotations

import re
from functools import lru_cache
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.backends import Repro
from harness.errors import CaseError, RuntimeLimit, summarize_exception
from harness.runtimes.binding import match_names
from harness.specs import Tolerance
from harness.tolerances import NOISE_MULTIPLE

NAME = "openvino"
FORMATS = ("onnx", "openvino-ir")
DEVICES = ("cpu",)
PRECISIONS = ("fp32", "bf16", "fp16")
# precision -> the INFERENCE_PRECISION_HINT that asks for it (as the compiled model reports it back)
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
# precision -> what the device must list in OPTIMIZATION_CAPABILITIES to compute in it
_CAPABILITIES = {"bf16": "BF16", "fp16": "FP16"}
# What an f16 file, run as its types say (the f32 hint), computes in (backends.runtime_computes): the compiled
# model's runtime model reports runtimePrecision f32 for its layers (an MVN of an f16 LayerNormalization).
COMPUTES = {("cpu", "fp16"): "float32"}
# The default tolerances of float outputs computed at a reduced precision (figures in tolerances.py's docstring).
OPENVINO_BF16 = Tolerance(atol=1e-6, rtol=1e-2, atol_by_max=2e-2, noise_multiple=NOISE_MULTIPLE)
OPENVINO_FP16 = Tolerance(atol=1e-6, rtol=1e-2, atol_by_max=2.5e-3, noise_multiple=NOISE_MULTIPLE)
TOLERANCES = {"bf16": OPENVINO_BF16, "fp16": OPENVINO_FP16}
# How a reproduction script (localize/repro.py) runs a file here, by device.
REPRO = {"cpu": Repro("openvino", '''\
def run(model, inputs, names):
    """The outputs `names` of the model on `inputs`, by OpenVINO's CPU plugin in
    float32 (on a CPU with bf16 it would compute in bf16 unless told)."""
    ov = need("openvino", PACKAGE)
    print(f"openvino {ov.__version__}")
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    # OpenVINO's reader drops some empty inputs (ReduceSum's axes of shape (0,)): fed, they are refused
    kept = {name for port in compiled.inputs for name in port.get_names()}
    results = compiled({name: value for name, value in inputs.items() if name in kept})
    return {name: results[compiled.output(name)] for name in names}
''')}
_OV_DEVICES = {"cpu": "CPU"}
IR_SUFFIX = ".xml"
# The files it runs, by suffix -> format: how a user's --converted file is read (backends.artifact_suffixes).
SUFFIXES = {IR_SUFFIX: "openvino-ir"}
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("openvino",)
# element type name -> numpy dtype name (bf16 is not numpy's float16, which openvino's to_dtype() gives)
_OV_TYPES = {"f32": "float32", "f64": "float64", "f16": "float16", "bf16": "bfloat16", "i64": "int64",
             "i32": "int32", "i16": "int16", "i8": "int8", "u8": "uint8", "boolean": "bool"}
# bfloat16 as ml_dtypes' arrays, carried across as their bits (`_tensor`, `_array`).
ELEMENT_TYPES = ("float16", "bfloat16", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                 "int64", "uint64", "bool")


@lru_cache(maxsize=None)
def _core():
    """One OpenVINO Core per process: it holds the plugins, loaded once."""
    import openvino as ov

    return ov.Core()

PACKAGES = ("openvino",)   # what missing() imports: found, a CPU case imports them as it starts (backends.installed)


def missing(device: str) -> str | None:
    try:
        import openvino  # noqa: F401
    except ImportError as error:
        return f"openvino is not installed ({error}); pip install openvino"
    listed = _core().available_devices
    if device == "cuda":
        return ("OpenVINO does not run on CUDA devices (it runs on CPUs and Intel GPUs): run the openvino target "
                "with --device=cpu")
    if device not in _OV_DEVICES:
        gpu = (f"OpenVINO lists {', '.join(d for d in listed if d.startswith('GPU'))} here, but an Intel GPU"
               if any(d.startswith("GPU") for d in listed) else "an Intel GPU")
        return (f"the openvino target does not know device {device!r}: it runs on the CPU ({gpu} is not a "
                "harness device yet)")
    if _OV_DEVICES[device] not in listed:
        return f"OpenVINO lists no {_OV_DEVICES[device]} device here (it lists {listed or 'none'})"
    return None


def missing_precision(device: str, precision: str) -> str | None:
    """Why `device` cannot compute in `precision` (a skip reason), or None."""
    if precision not in PRECISIONS:
        return f"the openvino target has no precision {precision!r} (it has {', '.join(PRECISIONS)})"
    if precision not in _CAPABILITIES:
        return None
    if device not in _OV_DEVICES:
        return missing(device)
    core, ov_device = _core(), _OV_DEVICES[device]
    capabilities = list(core.get_property(ov_device, "OPTIMIZATION_CAPABILITIES"))
    if _CAPABILITIES[precision] in capabilities:
        return None
    return (f"this {ov_device} ({core.get_property(ov_device, 'FULL_DEVICE_NAME')}) does not list "
            f"{_CAPABILITIES[precision]} in OpenVINO's OPTIMIZATION_CAPABILITIES ({', '.join(capabilities)}): "
            f"it cannot compute in {precision}, and OpenVINO would run another precision under that name")


def versions() -> dict[str, str]:
    import openvino as ov

    return {"openvino": ov.__version__}


@dataclass
class Options:
    """OpenVINO's own settings (flags made from these fields)."""

    threads: int = field(default=0, metadata={
        "range": (0, None),
        "help": "INFERENCE_NUM_THREADS of the compiled model; 0 lets OpenVINO choose (all cores), which "
                "oversubscribes the CPU where several processes run cases"})


class Session:
    """A model compiled for one device at one precision, with the ports that
    the spec's inputs and outputs map onto."""

    def __init__(self, path: Path, device: str, options: Any, precision: str = "fp32"):
        """path: an .onnx file, or an IR's .xml with its .bin beside it.
        options: the run's options, of which this runtime's own (`Options`)."""
        from harness.backends import own_options

        path = Path(path)
        if device not in _OV_DEVICES:
            raise CaseError("runtime", f"the openvino target runs on the CPU here, not on {device!r}")
        if precision not in HINTS:
            raise CaseError("runtime", f"the openvino target has no precision {precision!r} "
                                       f"(it has {', '.join(PRECISIONS)})")
        self.path = path
        self.format = "openvino-ir" if path.suffix == IR_SUFFIX else "onnx"
        self.model = _read(path, self.format)
        hint = HINTS[precision]
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint}
        threads = own_options(NAME, options).threads
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = _core().compile_model(self.model, _OV_DEVICES[device], config)
        except RuntimeError as error:   # OpenVINO's Core raises RuntimeError for every C++ failure (measured)
            # A file OpenVINO read but its plugin cannot compile (an op with a dynamic rank, a type it has no
            # kernel for) is OpenVINO's limit, as an op it cannot convert is.
            raise RuntimeLimit(f"OpenVINO could not compile {path} for the {_OV_DEVICES[device]}: "
                               f"{_openvino_reason(error)}. Its {_OV_DEVICES[device]} plugin does not support an op "
                               "or a shape of this model: simplify the model, or run it on another target") from None
        reported = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if reported != hint:
            raise CaseError("runtime", f"OpenVINO compiled {path} to compute in {reported}, not the {hint} that "
                                       f"precision {precision} asked for (INFERENCE_PRECISION_HINT): the "
                                       f"{_OV_DEVICES[device]} cannot compute in {hint}; run this precision "
                                       "on a device that lists it in OPTIMIZATION_CAPABILITIES")
        self.request = self.compiled.create_infer_request()
        self._inputs: list[int] = []
        self._outputs: list[int] = []
        self.provenance = {
            "format": self.format,
            "device": device,
            "precision": precision,
            "inference_precision_hint": hint,
            # what the compiled model computes in, read back, not assumed from the hint
            "inference_precision": reported,
            "execution_devices": list(self.compiled.get_property("EXECUTION_DEVICES")),
            "num_streams": int(self.compiled.get_property("NUM_STREAMS")),
            "inference_num_threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
            "performance_hint": str(self.compiled.get_property("PERFORMANCE_HINT")),
        }

    def bind(self, input_names: Sequence[str], input_dtypes: Sequence[str], output_names: Sequence[str]) -> dict[str, Any]:
        """Match the spec's inputs and outputs to the model's ports, by name (any
        of a port's tensor names), or by position when no name matches and the
        counts agree; a spec input OpenVINO dropped from an ONNX file is bound to
        no port and not fed (`_dropped_inputs`, named in the provenance); return
        what was done."""
        inputs, outputs = self.model.inputs, self.model.outputs
        named = {name for port in inputs for name in port.get_names()}
        file_inputs = _onnx_inputs(self.path) if self.format == "onnx" and not set(input_names) <= named else {}
        in_present = _port_names(inputs, input_names, list(file_inputs) or None)
        out_present = _port_names(outputs, output_names)
        dropped = _dropped_inputs(input_names, in_present, file_inputs)
        kept = [name for name in input_names if name not in dropped]
        in_names = match_names("input", kept, in_present)
        out_names = match_names("output", output_names, out_present)
        ports = {spec_name: in_present.index(name) for spec_name, name in zip(kept, in_names)}
        self._inputs = [ports.get(name) for name in input_names]   # None: a dropped input, fed to nothing
        self._outputs = [out_present.index(name) for name in out_names]
        dtypes = dict(zip(input_names, input_dtypes))
        for spec_name, name in zip(kept, in_names):
            expected = _OV_TYPES.get(inputs[ports[spec_name]].get_element_type().get_type_name())
            if expected is not None and expected != dtypes[spec_name]:
                raise CaseError("runtime", f"the converted model's input {name!r} takes {expected} but the spec's "
                                           f"input {spec_name!r} is {dtypes[spec_name]}: fix the input spec or the "
                                           "conversion")
        if dropped:
            self.provenance["dropped_inputs"] = dropped
        by_name = list(in_names) == kept and list(out_names) == list(output_names)
        matched_by = "name" if by_name else "position"
        self.provenance["matched_by"] = matched_by
        return {"matched_by": matched_by,
                "inputs": dict(zip(kept, in_names)),
                "outputs": dict(zip(output_names, out_names))}

    def declared_inputs(self) -> list[list[int | None] | None]:
        """The bound inputs' declared shapes, in the spec's order (None: a dim the
        model lets vary; [] where even the rank may vary; None for an input
        OpenVINO dropped, which declares nothing)."""
        return [None if index is None else _declared(self.model.inputs[index].get_partial_shape())
                for index in self._inputs]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        for index, array in zip(self._inputs, inputs):
            if index is None:   # an input OpenVINO dropped: no port takes it
                continue
            # no cast: a wrong dtype is refused in bind; not ascontiguousarray, which makes a 0-d input 1-d
            self.request.set_input_tensor(index, tensor_of(np.asarray(array, order="C")))
        self.request.infer()
        # Copied out: the request reuses its output buffers on the next example.
        return [array_of(self.request.get_output_tensor(index)) for index in self._outputs]

    def close(self) -> None:
        self.request = self.compiled = self.model = None


def tensor_of(array: np.ndarray):
    """An ov.Tensor of `array`; a bfloat16 one filled with its bits, as ov.Tensor
    takes no ml_dtypes array ("Unsupported data type: bfloat16")."""
    import openvino as ov

    if array.dtype.name != "bfloat16":
        return ov.Tensor(array)
    tensor = ov.Tensor(ov.Type.bf16, ov.Shape(array.shape))
    tensor.data.view(np.uint16)[...] = array.view(np.uint16)   # .data shows bf16's bits as float16
    return tensor


def array_of(tensor) -> np.ndarray:
    """A copy of an output tensor's data (the request reuses its buffers on the
    next example); a bf16 one as ml_dtypes' bfloat16."""
    import ml_dtypes
    import openvino as ov

    if tensor.element_type == ov.Type.bf16:
        return tensor.data.view(ml_dtypes.bfloat16).copy()
    return tensor.data.copy()


def _read(path: Path, fmt: str):
    """The model in `path`, read; a CaseError naming the file when it cannot be."""
    if not path.is_file():
        raise CaseError("runtime", f"{path} does not exist or is not a file: give the path of an .onnx file or of "
                                   "an OpenVINO IR's .xml")
    if fmt == "openvino-ir":
        weights = path.with_suffix(".bin")
        if not weights.is_file():
            raise CaseError("runtime", f"the OpenVINO IR {path} has no weights file {weights.name} beside it: an IR is "
                                       "an .xml and a .bin of the same name in one folder; copy the .bin along, or "
                                       "convert the model again")
    try:
        return _core().read_model(str(path))
    except RuntimeError as error:
        # OpenVINO raises one RuntimeError for every way a file can be wrong: its
        # message is all there is to tell them apart.
        text = str(error)
        if fmt == "openvino-ir" and "weights" in text:
            advice = (f"its weights file {path.with_suffix('.bin').name} does not hold the weights the .xml points "
                      "to: it is truncated or belongs to another conversion; copy it again, or convert the model again")
        elif "conversion rule" in text or "OpConversionFailure" in text:
            advice = "it has an op OpenVINO cannot convert (named below): run it on another target, or replace the op"
        elif "outside the base directory" in text:
            advice = ("it points to external data outside its own folder, which the harness does not read: keep the "
                      "data files beside the model")
        else:
            advice = "it does not parse as a model: check that the file is complete and is what its suffix says"
        message = f"OpenVINO could not read {path}: {advice}.\n{summarize_exception(error, 6)}"
        if "conversion rule" in text or "OpConversionFailure" in text:   # an op it cannot convert: its limit
            raise RuntimeLimit(message) from None
        raise CaseError("runtime", message) from None


# The lines of an OpenVINO message that say where in its sources it was raised, not why, and the bare
# headings between them ("Details:", "Not Implemented:").
_SOURCE_LOCATION = re.compile(r"^(Exception from |Check '.*' failed at )\S+:\d+:$|^[A-Z][\w ]*:$")


def _openvino_reason(error: BaseException) -> str:
    """OpenVINO's own reason in its message, on one line: its messages open
    with the source locations they passed through ("Exception from
    src/inference/src/cpp/core.cpp:117:"), which say nothing of the model."""
    lines = [line.strip() for line in str(error).splitlines()]
    reason = [line for line in lines if line and not _SOURCE_LOCATION.match(line)]
    return "; ".join(reason) if reason else summarize_exception(error, 1)


def _onnx_inputs(path: Path) -> dict[str, Any]:
    """The ONNX file's own inputs (name -> ValueInfoProto), in the order of
    OpenVINO's parameters where it keeps them all: an input that reaches an
    output unchanged (an inference-mode Dropout folded away) takes the output's
    name in OpenVINO and keeps no other."""
    import onnx

    from harness.sources.onnx import feedable_inputs

    proto = onnx.load(str(path), load_external_data=False)
    feedable = set(feedable_inputs(proto))
    return {value.name: value for value in proto.graph.input if value.name in feedable}


def _dropped_inputs(wanted: Sequence[str], present: Sequence[str], file_inputs: dict[str, Any]) -> dict[str, str]:
    """The spec's inputs that OpenVINO's ONNX reader dropped (seen for empty
    inputs of some ops: ReduceSum's `axes` of shape (0,), CastLike's `like`,
    Split's `input`), each with the reason the record gives: a parameter the
    compiled model lacks cannot influence its outputs, so the others bind
    without it. Only where every port binds by a spec name and every name
    missing is one of the file's inputs: {} otherwise, so that a spec name the
    file lacks stays a binding error."""
    missing = [name for name in wanted if name not in present]
    if not missing or not set(present) <= set(wanted) or not set(missing) <= set(file_inputs):
        return {}
    reasons = {}
    for name in missing:
        dims = tuple(dim.dim_value if dim.WhichOneof("value") == "dim_value" else dim.dim_param or "?"
                     for dim in file_inputs[name].type.tensor_type.shape.dim)
        reasons[name] = (f"OpenVINO's ONNX reader removed it (the file declares shape {dims}): no output of the "
                         "compiled model reads it, so it is not fed")
    return reasons


def _declared(shape) -> list[int | None]:
    """An OpenVINO partial shape as dims (None: a dim that may vary; [] where even the rank may)."""
    return [] if shape.rank.is_dynamic else [d.get_length() if d.is_static else None for d in shape]


def _port_names(ports, wanted: Sequence[str], file_names: Sequence[str] | None = None) -> list[str]:
    """One name per port, in order: the wanted name it carries (a port may carry
    several tensor names, and the file's own name at its position where
    `file_names` gives one per port), else its first name, else its position."""
    def names(index: int, port) -> set[str]:
        own = {file_names[index]} if file_names is not None and len(file_names) == len(ports) else set()
        return port.get_names() | own

    return [next((name for name in wanted if name in names(index, port)), min(port.get_names(), default=f"#{index}"))
            for index, port in enumerate(ports)]
