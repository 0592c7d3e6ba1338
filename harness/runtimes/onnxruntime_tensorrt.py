"""ONNX Runtime's TensorRT execution provider as a target: the engine family of
`--target=tensorrt`, reached through ONNX Runtime, which gives TensorRT the
subgraphs it takes and runs the rest on its CUDA provider (then the CPU's).
The session is onnxruntime.py's, with other providers asked for (its
`_providers` hook).

Precision, as ONNX Runtime's source decides it (tensorrt_execution_provider.cc:
the network is created STRONGLY_TYPED unless trt_fp16_enable or
trt_int8_enable is set, TensorRT 9 and later):

- fp32 ("the artifact as its own types say") sets neither flag, so an fp16 ONNX
  file computes in fp16 and a Q/DQ int8 file in int8, strongly typed. Where the
  installed TensorRT is 10 or older, a Q/DQ file also gets trt_int8_enable, as
  ONNX Runtime's TensorRT EP documentation has Q/DQ models run (a weakly typed
  network needs the INT8 flag for its Q/DQ layers: "Int8 precision has been set
  for a layer or layer output, but int8 is not configured in the builder",
  onnxruntime issue #13381); TensorRT 11 has no INT8 flag and builds every
  network strongly typed.
- fp16 lowers an fp32 file by trt_fp16_enable (a weakly typed network with
  BuilderFlag FP16): TensorRT 10 and older only, read from the tensorrt Python
  package; without it the case is a skip, since a flag TensorRT 11 no longer
  has would leave a case named fp16 computing in fp32.
- TF32: the EP has no option for it (onnxruntime issue #21457) and TensorRT
  enables it by default. Strict CUDA mode is refused unless the run's
  environment has NVIDIA_TF32_OVERRIDE=0, which NVIDIA's libraries (TensorRT
  among them, per its developer guide) honour; the CUDA provider's part gets
  use_tf32=0 as on the onnxruntime target.

Engines and the timing cache go to `--parity-cache-dir`/onnxruntime-tensorrt,
one folder per file, versions, GPU, flags and profile (ONNX Runtime checks its
own .profile files besides). None of this has run against a real TensorRT
here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from harness.backends import Repro
from harness.errors import CaseError, summarize_exception
from harness.runtimes import onnxruntime as ort_runtime
from harness.runtimes import tensorrt as trt_runtime
from harness.runtimes.tensorrt import Gpu, ShapeRange, profile_in_onnx_names, profile_violation

NAME = "onnxruntime-tensorrt"
FORMATS = ("onnx",)
PRECISIONS = ("fp32", "fp16")
SHAPE_PROFILE = True      # Session(..., profile=...): trt_profile_min/opt/max_shapes
NEEDS_ISOLATION = True    # TensorRT and CUDA in the process: cases run in a worker
REVISION = 1              # bumped when the provider options change, so cached engines are not reused
PROVIDER = "TensorrtExecutionProvider"
# How a reproduction script (localize/repro.py) runs a file here, by device.
REPRO = {"cuda": Repro("onnxruntime-gpu",
                       ort_runtime.repro_run([PROVIDER, "CUDAExecutionProvider", "CPUExecutionProvider"]),
                       unverified="ONNX Runtime's TensorrtExecutionProvider")}
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass
class Options:
    """The TensorRT provider's settings (flags --onnxruntime-tensorrt-FIELD)."""

    workspace_mb: int = field(default=0, metadata={
        "range": (0, None),
        "help": "trt_max_workspace_size in MiB; 0 leaves ONNX Runtime's default (the device's memory)"})
    builder_optimization_level: int = field(default=-1, metadata={
        "choices": (-1, 0, 1, 2, 3, 4, 5),
        "help": "trt_builder_optimization_level, 0 (fast builds) to 5; -1 leaves ONNX Runtime's default (3)"})
    timing_cache: str = field(default="on", metadata={
        "choices": ("on", "off"), "help": "trt_timing_cache_enable, the cache kept under the cache folder"})


# ---------------------------------------------------------------- pure decisions

def device_problem(device: str) -> str | None:
    if device == "cpu":
        return ("ONNX Runtime's TensorRT provider runs on NVIDIA GPUs only: run the onnxruntime-tensorrt target "
                "with --device=cuda")
    if device != "cuda":
        return f"the onnxruntime-tensorrt target does not know device {device!r}: it runs on CUDA devices"
    return None


def provider_problem(version: str, providers: Sequence[str]) -> str | None:
    """Why this onnxruntime cannot give TensorRT's provider, or None."""
    if PROVIDER in providers:
        return None
    return (f"onnxruntime {version} has no {PROVIDER} (available: {', '.join(providers)}): install onnxruntime-gpu, "
            f"and TensorRT's libraries of the version it was built for: {trt_runtime.INSTALL}")


def fp16_problem(trt_version: str | None) -> str | None:
    """Why trt_fp16_enable cannot lower an fp32 model here (a skip reason), or None."""
    if trt_version is None:
        return ("fp16 on the onnxruntime-tensorrt target needs TensorRT's version, read from the tensorrt Python "
                "package, which does not import here: trt_fp16_enable lowers only where TensorRT still builds "
                f"weakly typed networks (10 and older). Install it: {trt_runtime.INSTALL}")
    if not trt_runtime.weak_typing(trt_version):
        return (f"TensorRT {trt_version} builds strongly typed networks only (TensorRT 11 removed the FP16 builder "
                "flag that trt_fp16_enable sets), so ONNX Runtime's TensorRT provider does not lower an fp32 model "
                "to fp16: make an fp16 ONNX model first and run that file, which computes in the types it holds")
    return None


def tf32_problem(strict_cuda: bool, override: str | None) -> str | None:
    """Why strict CUDA mode cannot be kept on this target (`override`: the
    environment's NVIDIA_TF32_OVERRIDE), or None."""
    if not strict_cuda or override == "0":
        return None
    return ("strict CUDA mode (--strict-cuda) turns TF32 off, but ONNX Runtime's TensorRT provider has no option "
            "for TF32, which TensorRT's builder enables by default: set NVIDIA_TF32_OVERRIDE=0 in the environment of "
            "the run (NVIDIA's libraries, TensorRT among them, then compute float32 without TF32), or use "
            "--target=tensorrt, which clears the TF32 builder flag itself")


def has_qdq(op_types: Iterable[str]) -> bool:
    """Whether a graph with these op types is explicitly quantized (Q/DQ)."""
    return bool(QDQ_OPS & set(op_types))


def int8_enable(qdq: bool, trt_version: str | None) -> bool:
    """trt_int8_enable for a file computing in its own types: a Q/DQ file on a
    TensorRT that still has the INT8 flag (10 and older), as ONNX Runtime's
    documentation runs Q/DQ models; never elsewhere (TensorRT 11 has no such
    flag, and its strongly typed networks take int8 from the Q/DQ nodes)."""
    return qdq and trt_version is not None and trt_runtime.weak_typing(trt_version)


def shapes_option(profile: Mapping[str, ShapeRange], which: int) -> str:
    """One of trt_profile_min/opt/max_shapes: "input:1x3x8x8,other:1x5"."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in shapes[which])}" for name, shapes in profile.items())


def provider_options(precision: str, profile: Mapping[str, ShapeRange] | None, cache_folder: Path,
                     options: Options, int8: bool, engine_cache: bool = True) -> dict[str, Any]:
    """The TensorRT provider's options for a case (the keys of ONNX Runtime's
    TensorRT EP documentation); engine_cache: keep built engines in
    `cache_folder` (off with the run's cache)."""
    trt_options: dict[str, Any] = {
        "device_id": 0,
        "trt_fp16_enable": precision == "fp16",
        "trt_int8_enable": int8,
        "trt_engine_cache_enable": engine_cache,
        "trt_engine_cache_path": str(cache_folder),
        "trt_timing_cache_enable": options.timing_cache == "on",
        "trt_timing_cache_path": str(cache_folder),
    }
    if options.workspace_mb:
        trt_options["trt_max_workspace_size"] = options.workspace_mb << 20
    if options.builder_optimization_level >= 0:
        trt_options["trt_builder_optimization_level"] = options.builder_optimization_level
    if profile:
        for which, key in enumerate(("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")):
            trt_options[key] = shapes_option(profile, which)
    return trt_options


def cache_parts(onnx_sha256: str, versions: Mapping[str, str | None], gpu: Gpu, trt_options: Mapping[str, Any]) -> dict:
    """What the provider's engines in one cache folder are built from (the
    folder is named by their hash: `cache.cache_key`)."""
    paths = ("trt_engine_cache_path", "trt_timing_cache_path")
    return {"runtime": f"{NAME}@{REVISION}", "onnx_sha256": onnx_sha256, "versions": dict(versions),
            "gpu": gpu.name, "compute_capability": list(gpu.compute_capability),
            "options": {k: v for k, v in trt_options.items() if k not in paths}}


# ---------------------------------------------------------------- what this machine has

def _tensorrt_version() -> str | None:
    """The version of the tensorrt Python package, which names the TensorRT the provider loads, or None."""
    try:
        import tensorrt
    except (ImportError, OSError):
        return None
    return tensorrt.__version__


def missing(device: str) -> str | None:
    problem = device_problem(device)
    if problem:
        return problem
    try:
        import onnxruntime as ort
    except ImportError as error:
        return f"onnxruntime is not installed ({error}); pip install onnxruntime-gpu, with TensorRT's libraries"
    problem = provider_problem(ort.__version__, ort.get_available_providers())
    if problem:
        return problem
    try:
        import onnx  # noqa: F401  (the file's input names and ops, before ONNX Runtime opens it)
    except ImportError as error:
        return f"the onnxruntime-tensorrt target needs the onnx Python package ({error}): pip install onnx"
    gpu, problem = trt_runtime.gpu_info()
    return f"the onnxruntime-tensorrt target needs a CUDA device: {problem}" if gpu is None else None


def missing_precision(device: str, precision: str) -> str | None:
    if precision not in PRECISIONS:
        return f"the onnxruntime-tensorrt target has no precision {precision!r} (it has {', '.join(PRECISIONS)})"
    if precision == "fp32":
        return None
    return missing(device) or fp16_problem(_tensorrt_version())


def versions() -> dict[str, str]:
    import onnxruntime as ort

    found = {"onnxruntime": ort.__version__}
    trt_version = _tensorrt_version()
    if trt_version is not None:
        found["tensorrt"] = trt_version
    return found


def _onnx_summary(path: Path) -> tuple[list[str], set[str]]:
    """The file's graph input names (initializers left out) and the op types
    of its main graph, read without its weights."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError) as error:
        raise CaseError("runtime", f"{path} does not read as an ONNX model: {summarize_exception(error, 3)}") from None
    initializers = {i.name for i in model.graph.initializer}
    return ([i.name for i in model.graph.input if i.name not in initializers],
            {node.op_type for node in model.graph.node})


# ---------------------------------------------------------------- the session

class Session(ort_runtime.Session):
    """onnxruntime.py's session, with TensorRT's provider first."""

    PROVIDER_ADVICE = ("ONNX Runtime's TensorRT provider could not load: TensorRT's libraries (libnvinfer) of the "
                       "version this onnxruntime-gpu was built for must be where the loader finds them")

    def __init__(self, path: Path, device: str, options: Any, precision: str = "fp32",
                 profile: Mapping[str, ShapeRange] | None = None):
        """profile: {spec input: (min, opt, max)} in the file's layout."""
        self._profile = profile
        self._engine_profile: dict[str, ShapeRange] | None = None
        super().__init__(path, device, options, precision)
        self.provenance.update(self._trt_provenance)

    def _providers(self, path: Path, device: str, options: Any, precision: str) -> list[Any]:
        from harness.backends import own_options
        from harness.cache import cache_key
        from harness.model_file import file_sha256

        trt_version = _tensorrt_version()
        gpu, gpu_problem = trt_runtime.gpu_info()
        own = own_options(NAME, options)
        problem = (device_problem(device)
                   or (missing_precision(device, precision) if precision not in PRECISIONS else None)
                   or (fp16_problem(trt_version) if precision == "fp16" else None)
                   or tf32_problem(options.strict_cuda, os.environ.get("NVIDIA_TF32_OVERRIDE"))
                   or (f"the onnxruntime-tensorrt target needs a CUDA device: {gpu_problem}" if gpu is None else None))
        if problem:
            raise CaseError("runtime", problem)
        input_names, ops = _onnx_summary(path)
        if self._profile is not None:
            self._engine_profile = profile_in_onnx_names(self._profile, list(self._profile), input_names)
        int8 = int8_enable(has_qdq(ops), trt_version) if precision == "fp32" else False
        import onnxruntime as ort

        root = Path(options.cache_dir) / NAME
        engine_cache = getattr(options, "use_cache", True)
        trt_options = provider_options(precision, self._engine_profile, root, own, int8, engine_cache)
        parts = cache_parts(file_sha256(path), {"onnxruntime": ort.__version__, "tensorrt": trt_version}, gpu,
                            trt_options)
        folder = root / cache_key(parts)[:16]
        folder.mkdir(parents=True, exist_ok=True)
        trt_options = provider_options(precision, self._engine_profile, folder, own, int8, engine_cache)
        typing = ("weak, FP16 flag" if precision == "fp16" else
                  "weak, INT8 flag (Q/DQ)" if int8 else "strong (the file's own types)")
        self._trt_provenance = {"tensorrt_options": trt_options, "typing": typing, "tensorrt": trt_version,
                                "gpu": gpu.name, "tf32": "off (NVIDIA_TF32_OVERRIDE=0)" if options.strict_cuda
                                else "on (TensorRT's default; the provider has no option)"}
        return [(PROVIDER, trt_options),
                ("CUDAExecutionProvider", {"device_id": 0, "use_tf32": "0" if options.strict_cuda else "1"}),
                "CPUExecutionProvider"]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._engine_profile is not None:
            problem = profile_violation(self._engine_profile,
                                        {name: x.shape for name, x in zip(self._input_names, inputs)})
            if problem:
                raise CaseError("runtime", problem)
        return super().run(inputs)
