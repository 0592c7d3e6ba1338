"""ONNX Runtime as a target: the CPU provider, and the CUDA provider where
onnxruntime-gpu and a CUDA device are present.

bfloat16 tensors are ml_dtypes' arrays on the harness's side and cross into
and out of ORT as OrtValues of their bits (`run_session`), where ORT's numpy
bridge has no type for them.

On CUDA the provider uses TF32 by default; strict mode passes `use_tf32=0`.
ORT falls back to the CPU silently when the CUDA provider cannot load, so the
session's providers are checked after creation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.backends import Repro
from harness.errors import CaseError, RuntimeLimit, summarize_exception
from harness.runtimes.binding import bind_ports

NAME = "onnxruntime"
FORMATS = ("onnx",)
# The files it runs, by suffix -> format: how a user's --converted file is read (backends.artifact_suffixes).
SUFFIXES = {".onnx": "onnx"}
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
              "tensor(bfloat16)": "bfloat16", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(int16)": "int16", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
              "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64"}
# bfloat16 as ml_dtypes' arrays, across the boundary by `run_session` (the numpy bridge has no type for it).
ELEMENT_TYPES = ("float16", "bfloat16", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                 "int64", "uint64", "bool")


def repro_run(providers: list[str]) -> str:
    """A reproduction script's run function (backends.Repro.run) by ONNX Runtime's providers[0]."""
    return f'''PROVIDERS = {providers!r}   # the wanted one first


def run(model, inputs, names):
    """The outputs `names` of the model on `inputs`, by ONNX Runtime's PROVIDERS[0]."""
    ort = need("onnxruntime", PACKAGE)
    session = ort.InferenceSession(model, providers=PROVIDERS)
    print(f"onnxruntime {{ort.__version__}}, providers {{session.get_providers()}}")
    if session.get_providers()[0] != PROVIDERS[0]:   # ONNX Runtime falls back to the next with a mere warning
        cannot_run(f"onnxruntime did not start its {{PROVIDERS[0]}} (it has {{ort.get_available_providers()}}): "
                   f"pip install {{PACKAGE}}, with the libraries it was built for")
    return dict(zip(names, session.run(names, inputs)))
'''


# How a reproduction script (localize/repro.py) runs a file here, by device.
# The device whose session (cpu_session: the kernels as the file states them) is the reference side of a
# localization walk (localize/locate.py, backends.walk_reference): the target is walked against it.
WALK_REFERENCE = "cpu"
REPRO = {"cpu": Repro("onnxruntime", repro_run(["CPUExecutionProvider"])),
         "cuda": Repro("onnxruntime-gpu", repro_run(["CUDAExecutionProvider"]))}
_BFLOAT16 = 16   # onnx.TensorProto.BFLOAT16, as an OrtValue's element_type() gives it
# What the CPU provider computes an fp16 file in (backends.runtime_computes): it has float16 kernels for few
# ops, so it inserts Casts to run the others in float32 (its optimized graph shows them: Cast, ReduceSumSquare,
# Cast), and its float16 LayerNormalization accumulates in float32.
COMPUTES = {("cpu", "fp16"): "float32"}

PACKAGES = ("onnxruntime",)   # what missing() imports: found, a CPU case imports them as it starts (backends.installed)


def missing(device: str) -> str | None:
    try:
        import onnxruntime as ort
    except ImportError as error:
        return f"onnxruntime is not installed ({error}); pip install onnxruntime (or onnxruntime-gpu for CUDA)"
    if device == "cuda":
        providers = ort.get_available_providers()
        if "CUDAExecutionProvider" not in providers:
            return (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (available: {', '.join(providers)}); "
                    "install onnxruntime-gpu on a machine with a CUDA device")
    elif device != "cpu":
        return f"onnxruntime target does not know device {device!r}"
    return None


def versions() -> dict[str, str]:
    import onnxruntime as ort

    return {"onnxruntime": ort.__version__}


@dataclass
class Options:
    """ONNX Runtime's own settings (flags made from these fields)."""

    opt_level: str = field(default="all", metadata={
        "flag": "--ort-opt-level", "choices": tuple(OPT_LEVELS), "help": "ONNX Runtime graph optimization level"})


class Session:
    """A loaded artifact, with the names that map the spec's inputs and outputs onto it."""

    def __init__(self, path: Path, device: str, options: Any, precision: str = "fp32"):
        """options: the run's RunOptions (this runtime's own, and strict_cuda);
        precision: fp32, the one this runtime declares (no PRECISIONS)."""
        import onnxruntime as ort

        from harness.backends import own_options

        opt_level, strict_cuda = own_options(NAME, options).opt_level, options.strict_cuda
        providers = self._providers(Path(path), device, options, precision)
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[opt_level])
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:   # onnxruntime's errors (Fail, InvalidGraph, ...) derive from Exception alone
            message = f"onnxruntime could not load {path}: {summarize_exception(error, 4)}"
            # No kernel for an op at this opset and type, or an op of a domain it does not know
            # (ai.onnx.preview.training): its limit, not the file's fault.
            if "NOT_IMPLEMENTED" in str(error) or "is not a registered function/op" in str(error):
                raise RuntimeLimit(message) from None
            # Any other refusal of a file that onnx's full checker accepts (an RNN's layout=1, which ORT's
            # kernels assert against) is ORT's limit too; of a file the checker rejects, the file's fault.
            refusal = _full_check_refusal(Path(path))
            if refusal is None:
                raise RuntimeLimit(f"{message}\nonnx's full checker accepts the file: this is onnxruntime's own "
                                   "limit; run the file on another target") from None
            raise CaseError("runtime", f"{message}\nonnx's full checker rejects the file too: {refusal}\nFix what "
                                       "the checker names, or export the model again") from None
        active = self.session.get_providers()
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if device == "cuda" and active[0] != wanted:
            raise CaseError("runtime", f"onnxruntime fell back to {active[0]} instead of {wanted} for {path}: "
                                       f"{self.PROVIDER_ADVICE}")
        self.providers = active
        self.inputs = self.session.get_inputs()
        self.outputs = self.session.get_outputs()
        self.provenance = {"providers": active, "graph_optimization_level": opt_level}
        if device == "cuda":
            self.provenance["use_tf32"] = not strict_cuda

    # why the provider asked for first may not load (a subclass asks for another)
    PROVIDER_ADVICE = "the CUDA provider could not load (check the CUDA and cuDNN libraries)"

    def _providers(self, path: Path, device: str, options: Any, precision: str) -> list[Any]:
        """The execution providers to ask for, the one a CUDA session must get
        first; the hook by which onnxruntime_tensorrt asks for TensorRT's."""
        if precision != "fp32":
            raise CaseError("runtime", f"the onnxruntime target computes in fp32 only, not {precision}")
        if device == "cuda":
            return [("CUDAExecutionProvider", {"device_id": 0, "use_tf32": "0" if options.strict_cuda else "1"}),
                    "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def bind(self, input_names: Sequence[str], input_dtypes: Sequence[str], output_names: Sequence[str]) -> dict[str, Any]:
        """Match the spec's inputs and outputs to the artifact's, by name, or by
        position when no name matches and the counts agree; return what was done."""
        self._input_names, self._output_names, record = bind_ports(
            input_names, input_dtypes, output_names, {i.name: _ORT_TYPES.get(i.type) for i in self.inputs},
            [o.name for o in self.outputs])
        return record

    def declared_inputs(self) -> list[list[int | None]]:
        """The bound inputs' declared shapes, in the spec's order (None: a dim the
        file lets vary, named or unknown)."""
        shapes = {i.name: i.shape for i in self.inputs}
        return [[d if isinstance(d, int) and d >= 0 else None for d in (shapes[name] or [])]
                for name in self._input_names]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return run_session(self.session, self._output_names, dict(zip(self._input_names, inputs)))


def _full_check_refusal(path: Path) -> str | None:
    """What onnx.checker's full check (types and shapes inferred strictly) says
    against the file, by path so that a model over 2 GiB is checked too; None
    where it accepts the file."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:   # the check, the inference
        return summarize_exception(error, 4)
    return None


def cpu_session(model: str | bytes) -> Any:
    """An ONNX Runtime session on the CPU provider, graph optimizations disabled: the
    kernels as a file states them (the ONNX source's reference, localization's walk)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def run_session(session: Any, output_names: Sequence[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """`session.run`, where a bfloat16 input or output crosses as an OrtValue of
    its bits: ORT's numpy bridge refuses ml_dtypes' bfloat16 ("Numpy_type 256
    can't be converted to MLDataType") and an OrtValue of bfloat16 has no
    .numpy() ("No corresponding Numpy type"), so its bytes are read from its
    CPU buffer (ORT gives unbound outputs back on the CPU)."""
    import onnxruntime as ort

    declared = {o.name: o.type for o in session.get_outputs()}
    if not any(a.dtype.name == "bfloat16" for a in feed.values()) and \
            "tensor(bfloat16)" not in {declared.get(name) for name in output_names}:
        return session.run(list(output_names), feed)
    feed = {name: np.asarray(array, order="C") for name, array in feed.items()}   # an OrtValue wraps the buffer
    values = {name: (ort.OrtValue.ortvalue_from_numpy_with_onnx_type(array.view(np.uint16), _BFLOAT16)
                     if array.dtype.name == "bfloat16" else ort.OrtValue.ortvalue_from_numpy(array))
              for name, array in feed.items()}
    return [_bfloat16_array(value) if value.element_type() == _BFLOAT16 else value.numpy()
            for value in session.run_with_ort_values(list(output_names), values)]


def _bfloat16_array(value: Any) -> np.ndarray:
    """A bfloat16 OrtValue's tensor, copied out of its CPU buffer."""
    import ctypes

    import ml_dtypes

    size = value.tensor_size_in_bytes()
    bits = np.frombuffer(ctypes.string_at(value.data_ptr(), size) if size else b"", np.uint16)
    return bits.view(ml_dtypes.bfloat16).reshape(value.shape())
