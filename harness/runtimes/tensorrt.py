"""TensorRT as a target: an ONNX file parsed by TensorRT's ONNX parser, built
into an engine for one range of input shapes, and run through Polygraphy's
TrtRunner, on a CUDA device only.

Typing and precision, in TensorRT 10 and 11:

- precision fp32 means "the artifact as its own types say": an fp32 file, but
  also an fp16 file or an int8 Q/DQ file that an earlier hop wrote. It builds a
  *strongly typed* network, which follows the ONNX types (Q/DQ included) and
  takes no precision builder flag. TensorRT 10 asks for it with the network
  creation flag STRONGLY_TYPED; TensorRT 11 builds nothing else (the flag is
  deprecated there and ignored), so it is not set there.
- precisions fp16 and bf16 lower an fp32 file by the builder's own settings: a
  *weakly typed* network with BuilderFlag FP16 or BF16. TensorRT 10.12
  deprecated weak typing and TensorRT 11 removed it with those flags; there
  `missing_precision` gives the skip reason (make an fp16 ONNX first and run it
  as fp32 semantics say: strongly typed). Implicit int8 (a calibrator and the
  INT8 flag) is not offered at all: deprecated since TensorRT 10.1, removed in
  11; int8 comes from a Q/DQ ONNX file.
- TF32: TensorRT's builder enables it by default (BuilderFlag TF32); strict CUDA
  mode (`--strict-cuda`) clears it, otherwise it is set, as every CUDA target
  of the harness computes.

The engine and the tactic timing cache live under the cache folder
(`--parity-cache-dir`/tensorrt), an engine keyed by everything that makes it:
the ONNX file's sha256, the TensorRT and Polygraphy versions, the GPU's name
and compute capability, the network's typing and builder flags, the profile
and this runtime's options (`engine_key`). Build time and whether the engine
came from the cache are in the provenance.

The pure decisions (builder settings, the key, the profile checks, the
messages) are plain functions below; the code that calls TensorRT is kept thin.
None of it has run against a real TensorRT here: see the module's tests.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from harness.backends import Repro
from harness.errors import CaseError, summarize_exception
from harness.runtimes.binding import match_names

NAME = "tensorrt"
FORMATS = ("onnx",)
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("tensorrt",)
# What this runtime computes in: fp32 is the artifact's own types (strongly typed);
# fp16 and bf16 lower an fp32 artifact by builder flags (weakly typed, TensorRT 10).
PRECISIONS = ("fp32", "fp16", "bf16")
SHAPE_PROFILE = True      # Session(..., profile={input: (min, opt, max)}): harness/shape_profile.py
NEEDS_ISOLATION = True    # a native library with its own CUDA context: cases run in a worker process
REVISION = 1              # bumped when the engines built here change, so that cached ones are rebuilt
LOWEST_MAJOR = 10         # the oldest TensorRT coded against (its parser errors name node and op)
LAST_WEAK_MAJOR = 10      # TensorRT 11 removed weakly typed networks and their precision flags
LOWERING_FLAGS = {"fp16": "FP16", "bf16": "BF16"}   # precision -> the BuilderFlag that lowers to it
# How a reproduction script (localize/repro.py) runs a file here, by device.
REPRO = {"cuda": Repro("tensorrt polygraphy", '''\
def run(model, inputs, names):
    """The outputs `names` of the model on `inputs`, by a TensorRT engine built
    for exactly these input shapes through Polygraphy's loaders."""
    trt = need("tensorrt", "tensorrt")
    need("polygraphy", "polygraphy")
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, Profile, TrtRunner

    print(f"tensorrt {trt.__version__}")
    profile = Profile()
    for name, array in inputs.items():
        profile.add(name, min=array.shape, opt=array.shape, max=array.shape)
    # Strongly typed: the network computes in the file's own types. TensorRT 11 builds nothing
    # else and deprecated the flag; TF32 on, as TensorRT's builder has it by default (Polygraphy's is off).
    network = NetworkFromOnnxPath(model, strongly_typed=int(trt.__version__.split(".")[0]) <= 10)
    engine = EngineFromNetwork(network, config=CreateConfig(tf32=True, profiles=[profile]))
    with TrtRunner(engine) as runner:
        outputs = runner.infer(feed_dict=inputs)
        return {name: np.array(outputs[name]) for name in names}   # copied: the runner reuses its buffers
''', unverified="TensorRT 10 and Polygraphy (0.49 or newer)")}
BF16_CAPABILITY = (8, 0)  # compute capability BF16 needs (Ampere)
ENGINE_FILE = "model.engine"
INSTALL = ("pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu12 (tensorrt-cu13 for CUDA 13; "
           "`pip install tensorrt` picks one)")
# ONNX TensorProto element type name -> numpy dtype name (as the spec names dtypes)
_ONNX_TYPES = {"FLOAT": "float32", "DOUBLE": "float64", "FLOAT16": "float16", "BFLOAT16": "bfloat16",
               "INT64": "int64", "INT32": "int32", "INT16": "int16", "INT8": "int8", "UINT8": "uint8",
               "BOOL": "bool"}
# What TensorRT's log says when a build lacks memory (TensorRT 8-10 wordings).
_OUT_OF_MEMORY = re.compile(r"insufficient (workspace|memory)|out ?of ?memory|could not be allocated|"
                            r"cudaErrorMemoryAllocation|requested amount of gpu memory", re.IGNORECASE)

Shape = tuple[int, ...]
ShapeRange = tuple[Shape, Shape, Shape]   # (min, opt, max)


class Gpu(NamedTuple):
    name: str
    compute_capability: tuple[int, int]

    @property
    def label(self) -> str:
        return f"{self.name} (compute capability {self.compute_capability[0]}.{self.compute_capability[1]})"


@dataclass
class Options:
    """TensorRT's own settings (flags --tensorrt-FIELD made from these fields)."""

    workspace_mb: int = field(default=0, metadata={
        "range": (0, None),
        "help": "the builder's workspace memory pool in MiB (MemoryPoolType.WORKSPACE); 0 leaves TensorRT's "
                "default, the device's whole memory"})
    builder_optimization_level: int = field(default=-1, metadata={
        "choices": (-1, 0, 1, 2, 3, 4, 5),
        "help": "the builder's optimization level, 0 (fast builds) to 5; -1 leaves TensorRT's default (3)"})
    timing_cache: str = field(default="on", metadata={
        "choices": ("on", "off"),
        "help": "keep TensorRT's tactic timing cache under the cache folder, so that later builds on this GPU "
                "time fewer tactics"})


# ---------------------------------------------------------------- pure decisions

def trt_major(version: str) -> int:
    """The major version of a TensorRT version string ("10.13.0.35" -> 10)."""
    match = re.match(r"\s*(\d+)", version)
    if match is None:
        raise ValueError(f"not a TensorRT version: {version!r}")
    return int(match.group(1))


def weak_typing(version: str) -> bool:
    """Whether TensorRT `version` still builds weakly typed networks (and has the
    FP16/BF16 builder flags that lower one)."""
    return trt_major(version) <= LAST_WEAK_MAJOR


@dataclass(frozen=True)
class BuildPlan:
    """How the network is made and what the builder may do with it."""

    strongly_typed: bool      # the network follows the ONNX file's types (Q/DQ included)
    creation_flag: bool       # ask for it with NetworkDefinitionCreationFlag.STRONGLY_TYPED (TensorRT 10)
    tf32: bool
    fp16: bool = False
    bf16: bool = False

    @property
    def typing(self) -> str:
        return "strong" if self.strongly_typed else "weak"

    @property
    def flags(self) -> tuple[str, ...]:
        """The BuilderFlag names set."""
        return tuple(name for name, on in (("TF32", self.tf32), ("FP16", self.fp16), ("BF16", self.bf16)) if on)


def build_plan(precision: str, strict_cuda: bool, trt_version: str) -> BuildPlan:
    """The network's typing and the builder flags for `precision` (fp32: the
    artifact's own types; fp16/bf16: lowered by a flag), TF32 off in strict CUDA
    mode. A lowering this TensorRT cannot do is refused by `precision_problem`
    first; here it is a ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"the tensorrt target has no precision {precision!r} (it has {', '.join(PRECISIONS)})")
    tf32 = not strict_cuda
    if precision == "fp32":
        return BuildPlan(strongly_typed=True, creation_flag=trt_major(trt_version) <= LAST_WEAK_MAJOR, tf32=tf32)
    if not weak_typing(trt_version):
        raise ValueError(precision_problem(precision, trt_version))
    return BuildPlan(strongly_typed=False, creation_flag=False, tf32=tf32,
                     fp16=precision == "fp16", bf16=precision == "bf16")


def precision_problem(precision: str, trt_version: str, gpu: Gpu | None = None,
                      flag_present: bool = True) -> str | None:
    """Why TensorRT `trt_version` on `gpu` cannot compute in `precision` (a skip
    reason), or None. flag_present: whether the installed bindings have the
    precision's BuilderFlag (a build of 10.x may lack it too)."""
    if precision not in PRECISIONS:
        return f"the tensorrt target has no precision {precision!r} (it has {', '.join(PRECISIONS)})"
    if precision == "fp32":
        return None
    if not weak_typing(trt_version) or not flag_present:
        return (f"TensorRT {trt_version} builds strongly typed networks only (TensorRT 11 removed weak typing and "
                f"BuilderFlag.{LOWERING_FLAGS[precision]}), so it does not lower an fp32 model to {precision} by "
                f"itself: make a {precision} ONNX model first (a conversion path that writes one, or ModelOpt "
                f"AutoCast) and run that file, which TensorRT builds in the types it holds")
    if precision == "bf16" and gpu is not None and gpu.compute_capability < BF16_CAPABILITY:
        return (f"{gpu.label} cannot compute in bf16: TensorRT's BF16 needs compute capability "
                f"{BF16_CAPABILITY[0]}.{BF16_CAPABILITY[1]} (Ampere) or newer")
    return None


def device_problem(device: str) -> str | None:
    """Why the tensorrt target cannot run on `device` at all, or None (cuda)."""
    if device == "cpu":
        return "TensorRT runs on NVIDIA GPUs only: run the tensorrt target with --device=cuda"
    if device != "cuda":
        return f"the tensorrt target does not know device {device!r}: it runs on CUDA devices (--device=cuda)"
    return None


def install_problem(package: str, error: BaseException | str | None = None, version: str | None = None) -> str:
    """The skip reason for a package the tensorrt target needs that is missing
    (`error`) or too old (`version`), with how to install it."""
    if package == "tensorrt" and version is not None:
        return (f"TensorRT {version} is installed, but the tensorrt target needs TensorRT {LOWEST_MAJOR} or "
                f"newer: {INSTALL}")
    how = {"tensorrt": INSTALL, "polygraphy": "pip install polygraphy (or the 'tensorrt' extra of this package)",
           "onnx": "pip install onnx"}[package]
    found = f" ({error})" if error else ""
    return f"the tensorrt target needs the {package} Python package, which does not import here{found}: {how}"


def profile_in_onnx_names(profile: Mapping[str, ShapeRange], spec_names: Sequence[str],
                          onnx_names: Sequence[str]) -> dict[str, ShapeRange]:
    """The spec's profile keyed by the ONNX file's input names (bound as every
    runtime binds names: `binding.match_names`)."""
    missing = [name for name in spec_names if name not in profile]
    if missing:
        raise CaseError("runtime", f"the shape profile has no range for the spec's inputs {missing}")
    bound = match_names("input", list(spec_names), list(onnx_names))
    return {onnx: tuple(tuple(int(d) for d in shape) for shape in profile[spec])   # type: ignore[misc]
            for spec, onnx in zip(spec_names, bound)}


def profile_mismatch(profile: Mapping[str, ShapeRange], declared: Mapping[str, Sequence[int | None]]) -> str | None:
    """Why the ONNX file's declared input shapes (None: a dim it lets vary)
    cannot take the profile's shapes, or None: another rank, or a fixed dim
    the profile lets range or sets otherwise. Checked before a build, whose own
    message would name TensorRT's internals."""
    problems = []
    for name, (low, _, high) in profile.items():
        dims = declared.get(name)
        if dims is None:
            continue
        if len(dims) != len(low):
            problems.append(f"input {name!r} has rank {len(dims)} in the file but {len(low)} in the spec "
                            f"(profile {list(low)}..{list(high)})")
            continue
        for axis, (dim, lo, hi) in enumerate(zip(dims, low, high)):
            if dim is not None and (lo != dim or hi != dim):
                wanted = f"{lo}..{hi}" if lo != hi else str(lo)
                problems.append(f"input {name!r} has a fixed size {dim} on axis {axis} in the file, where the spec "
                                f"asks for {wanted}")
    if not problems:
        return None
    return ("the converted model cannot take the spec's shapes: " + "; ".join(problems) +
            ". Export it with those axes dynamic, or narrow the spec's bounds to the file's sizes.")


def profile_violation(profile: Mapping[str, ShapeRange], shapes: Mapping[str, Sequence[int]]) -> str | None:
    """Why an example's input shapes fall outside the engine's profile (the
    engine cannot run them), or None. Keys: the engine's input names."""
    for name, shape in shapes.items():
        if name not in profile:
            continue
        low, _, high = profile[name]
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(low) or any(not lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
            return (f"input {name!r} of shape {list(shape)} is outside the engine's optimization profile, which "
                    f"takes {list(low)} to {list(high)} (the spec's bounds, in the file's layout): the example "
                    "does not fit the spec's bounds, or its layout is not the one the profile was made for")
    return None


def engine_key(onnx_sha256: str, versions: Mapping[str, str], gpu: Gpu, plan: BuildPlan,
               profile: Mapping[str, ShapeRange], options: Options) -> dict[str, Any]:
    """What an engine is built from, as the cache key's parts (`cache.cache_key`
    hashes them): any change builds another engine."""
    return {
        "runtime": f"{NAME}@{REVISION}",
        "onnx_sha256": onnx_sha256,
        "versions": dict(versions),
        "gpu": gpu.name,
        "compute_capability": f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
        "typing": plan.typing,
        "builder_flags": list(plan.flags),
        "profile": {name: [list(shape) for shape in shapes] for name, shapes in profile.items()},
        "workspace_mb": options.workspace_mb,
        "builder_optimization_level": options.builder_optimization_level,
    }


def timing_cache_name(trt_version: str, gpu: Gpu) -> str:
    """The timing cache's file name: tactic timings hold for one TensorRT on one GPU."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{gpu.name}-sm{gpu.compute_capability[0]}{gpu.compute_capability[1]}")
    return f"timing-{trt_version}-{slug.strip('-')}.cache"


def _call(obj: Any, method: str, default: Any = None) -> Any:
    """`obj.method()`, or `default` where this TensorRT's object lacks it."""
    function = getattr(obj, method, None)
    if function is None:
        return default
    try:
        return function()
    except Exception:  # a binding that fails to describe itself must not hide the error it describes
        return default


def parser_error_message(errors: Iterable[Any], path: Path, parsed: bool = False) -> str:
    """The CaseError message for TensorRT's ONNX parser failing on `path`, from
    its IParserError objects (code(), desc(), node(), node_name(), node_operator():
    TensorRT 10's API): each names the node and its op."""
    lines = []
    unsupported = False
    for error in errors:
        code = str(_call(error, "code", "") or "").split(".")[-1]
        desc = str(_call(error, "desc", "") or "").strip()
        index = _call(error, "node", -1)
        node, op = _call(error, "node_name", "") or "", _call(error, "node_operator", "") or ""
        unsupported |= "UNSUPPORTED" in code.upper()
        if isinstance(index, int) and index >= 0 or node or op:
            where = f"node {index}" if isinstance(index, int) and index >= 0 else "node"
            where += f" {node!r}" if node else ""
            where += f" (op {op})" if op else ""
        else:
            where = "the model"
        lines.append(f"- {where}: {code + ': ' if code else ''}{desc or 'no description'}")
    if not lines:
        return (f"TensorRT's ONNX parser could not read {path}"
                f"{' (it reported no error, yet the network is incomplete)' if parsed else ''}: check that the file "
                "is a complete ONNX model, with any external data beside it")
    advice = ("TensorRT cannot import the op named above: run the model on another target, replace the op, or "
              "give TensorRT a plugin for it" if unsupported else
              "the node named above does not import into TensorRT as exported: check its inputs' types and "
              "shapes, or run the model on another target")
    return f"TensorRT's ONNX parser could not import {path}:\n" + "\n".join(lines) + f"\n{advice}."


def build_failure_message(path: Path, log: Sequence[str], workspace_mb: int, error: BaseException | None = None) -> str:
    """The CaseError message for an engine build that failed, from TensorRT's
    error and warning lines (`log`): a lack of memory says so and names the flag
    that raises the workspace."""
    text = "\n".join(log[-8:]) or (summarize_exception(error, 4) if error is not None else "no message")
    if any(_OUT_OF_MEMORY.search(line) for line in log):
        limit = f"{workspace_mb} MiB" if workspace_mb else "TensorRT's default, the device's memory"
        return (f"TensorRT could not build an engine for {path}: it ran out of workspace memory (limit: {limit}). "
                "Raise it with --tensorrt-workspace-mb=MIB, free the GPU memory other processes hold, or narrow "
                f"the spec's largest shapes (the profile's maximum sets what a layer needs).\n{text}")
    return (f"TensorRT could not build an engine for {path}: no implementation of a layer fits its types and shapes "
            f"on this GPU (TensorRT's messages below name it).\n{text}")


# ---------------------------------------------------------------- what this machine has

@lru_cache(maxsize=None)
def gpu_info() -> tuple[Gpu | None, str | None]:
    """(the first CUDA device's name and compute capability, None), or (None,
    why not), read through the CUDA driver API (libcuda), which every NVIDIA
    driver ships: no CUDA toolkit or framework needed."""
    import ctypes

    for library in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(library)
            break
        except OSError:
            continue
    else:
        return None, "no NVIDIA driver here (its CUDA library libcuda.so.1 does not load)"
    status = cuda.cuInit(0)
    if status != 0:
        return None, f"the NVIDIA driver does not start CUDA here (cuInit returned error {status})"
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None, "the NVIDIA driver lists no CUDA device here"
    device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGet(ctypes.byref(device), 0)
    cuda.cuDeviceGetName(name, len(name), device)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)   # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)   # ..._MINOR
    return Gpu(name.value.decode(errors="replace"), (major.value, minor.value)), None


def _import_tensorrt() -> tuple[Any, str | None]:
    """(the tensorrt module, None) or (None, why it cannot be used)."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as error:   # OSError: a wheel whose libnvinfer does not load
        return None, install_problem("tensorrt", error)
    if trt_major(trt.__version__) < LOWEST_MAJOR:
        return None, install_problem("tensorrt", version=trt.__version__)
    return trt, None


def missing(device: str) -> str | None:
    problem = device_problem(device)
    if problem:
        return problem
    _, problem = _import_tensorrt()
    if problem:
        return problem
    for package in ("polygraphy", "onnx"):
        try:
            __import__(package)
        except ImportError as error:
            return install_problem(package, error)
    gpu, problem = gpu_info()
    return f"the tensorrt target needs a CUDA device: {problem}" if gpu is None else None


def missing_precision(device: str, precision: str) -> str | None:
    """Why TensorRT cannot compute in `precision` here (a skip reason), or None."""
    if precision not in LOWERING_FLAGS:   # fp32 (the artifact's own types), or no precision of this runtime
        return precision_problem(precision, str(LOWEST_MAJOR))
    problem = missing(device)
    if problem:
        return problem
    trt, _ = _import_tensorrt()
    flag_present = hasattr(trt.BuilderFlag, LOWERING_FLAGS[precision])
    return precision_problem(precision, trt.__version__, gpu_info()[0], flag_present)


def versions() -> dict[str, str]:
    import polygraphy
    import tensorrt as trt

    return {"tensorrt": trt.__version__, "polygraphy": polygraphy.__version__}


def onnx_io(path: Path) -> tuple[list[tuple[str, str | None, list[int | None]]], list[str]]:
    """The ONNX file's graph inputs (name, numpy dtype name or None, dims with
    None where a dim may vary), initializers left out, and its output names;
    read without its weights."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError) as error:
        raise CaseError("runtime", f"{path} does not read as an ONNX model: {summarize_exception(error, 3)}") from None
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dtype = _ONNX_TYPES.get(onnx.TensorProto.DataType.Name(tensor.elem_type)) if tensor.elem_type else None
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
        inputs.append((value.name, dtype, dims))
    return inputs, [o.name for o in graph.output]


# ---------------------------------------------------------------- the session

def _logger(trt):
    """A TensorRT logger that keeps the errors and warnings of one build, for
    its message (TensorRT's Python API: subclass trt.ILogger, override log)."""
    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.lines: list[str] = []

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                self.lines.append(f"[{getattr(severity, 'name', severity)}] {msg}")

    return CollectingLogger()


class Session:
    """An ONNX file built into a TensorRT engine for the spec's range of shapes
    (built in `bind`, where the spec's names meet the file's), run by
    Polygraphy's TrtRunner."""

    def __init__(self, path: Path, device: str, options: Any, precision: str = "fp32",
                 profile: Mapping[str, ShapeRange] | None = None):
        """options: the run's RunOptions (this runtime's own, strict_cuda,
        cache_dir, use_cache); profile: {spec input: (min, opt, max)} in the
        file's layout (`shape_profile.shape_profile`)."""
        from harness.backends import own_options

        self.path = Path(path)
        problem = device_problem(device)
        if problem:
            raise CaseError("runtime", problem)
        trt, problem = _import_tensorrt()
        if problem:
            raise CaseError("runtime", problem)
        gpu, problem = gpu_info()
        if gpu is None:
            raise CaseError("runtime", f"the tensorrt target needs a CUDA device: {problem}")
        flag = LOWERING_FLAGS.get(precision)
        problem = precision_problem(precision, trt.__version__, gpu,
                                    flag_present=flag is None or hasattr(trt.BuilderFlag, flag))
        if problem:
            raise CaseError("runtime", problem)
        self.own = own_options(NAME, options)
        self.trt, self.gpu = trt, gpu
        self.plan = build_plan(precision, options.strict_cuda, trt.__version__)
        self.profile = dict(profile) if profile is not None else None
        self.cache_root = Path(options.cache_dir) / NAME
        self.use_cache = getattr(options, "use_cache", True)
        self.inputs, self.output_names = onnx_io(self.path)
        self._input_names: list[str] = []
        self._output_names: list[str] = []
        self.engine = self.runner = None
        self.provenance: dict[str, Any] = {
            "device": device, "gpu": gpu.name,
            "compute_capability": f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
            "precision": precision, "typing": self.plan.typing, "builder_flags": list(self.plan.flags),
            "tf32": self.plan.tf32, "workspace_mb": self.own.workspace_mb,
            "builder_optimization_level": self.own.builder_optimization_level,
        }

    def bind(self, input_names: Sequence[str], input_dtypes: Sequence[str], output_names: Sequence[str]) -> dict[str, Any]:
        """Match the spec's inputs and outputs to the file's (by name, or by
        position), then build (or load from the cache) the engine for the
        profile; return what was matched."""
        onnx_names = [name for name, _, _ in self.inputs]
        self._input_names = match_names("input", input_names, onnx_names)
        self._output_names = match_names("output", output_names, self.output_names)
        types = {name: dtype for name, dtype, _ in self.inputs}
        for spec_name, name, dtype in zip(input_names, self._input_names, input_dtypes):
            if types[name] is not None and types[name] != dtype:
                raise CaseError("runtime", f"the converted model's input {name!r} takes {types[name]} but the spec's "
                                           f"input {spec_name!r} is {dtype}: fix the input spec or the conversion")
        declared = {name: dims for name, _, dims in self.inputs}
        if self.profile is None:
            if any(None in declared[name] for name in self._input_names):
                raise CaseError("runtime", f"{self.path} has dynamic input dims and no shape profile was given: "
                                           "the tensorrt target builds an engine for the spec's range of shapes, "
                                           "which the harness's engine passes as profile=")
            self.engine_profile = {name: (tuple(declared[name]),) * 3 for name in self._input_names}
        else:
            self.engine_profile = profile_in_onnx_names(self.profile, list(input_names), onnx_names)
        problem = profile_mismatch(self.engine_profile, declared)
        if problem:
            raise CaseError("runtime", problem)
        self._load()
        by_name = list(self._input_names) == list(input_names) and list(self._output_names) == list(output_names)
        matched_by = "name" if by_name else "position"
        self.provenance["matched_by"] = matched_by
        return {"matched_by": matched_by, "inputs": dict(zip(input_names, self._input_names)),
                "outputs": dict(zip(output_names, self._output_names))}

    def declared_inputs(self) -> list[list[int | None]]:
        """The bound inputs' declared shapes, in the spec's order (None: a dim
        the file lets vary)."""
        declared = {name: dims for name, _, dims in self.inputs}
        return [list(declared[name]) for name in self._input_names]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        shapes = {name: array.shape for name, array in zip(self._input_names, inputs)}
        problem = profile_violation(self.engine_profile, shapes)
        if problem:
            raise CaseError("runtime", problem)
        from polygraphy.logger import G_LOGGER

        feed = {name: np.asarray(array, order="C") for name, array in zip(self._input_names, inputs)}
        try:
            with G_LOGGER.verbosity(G_LOGGER.ERROR):
                outputs = self.runner.infer(feed)
        except Exception as error:   # PolygraphyException, TensorRT's and CUDA's own types (none documented per call)
            raise CaseError("runtime", f"TensorRT failed to run {self.path.name} on inputs "
                                       f"{ {k: list(v) for k, v in shapes.items()} }: "
                                       f"{summarize_exception(error, 4)}") from None
        # Copied out: the runner reuses its host buffers on the next example.
        return [np.array(outputs[name], copy=True) for name in self._output_names]

    def close(self) -> None:
        if self.runner is not None:
            self.runner.deactivate()
        self.runner = self.engine = None

    # -- the TensorRT-calling part, kept thin

    def _load(self) -> None:
        """The engine for `engine_profile`: from the cache folder, or built into it."""
        import polygraphy
        from polygraphy.backend.trt import TrtRunner, engine_from_bytes
        from polygraphy.logger import G_LOGGER

        from harness.cache import ArtifactCache, cache_key
        from harness.model_file import file_sha256

        versions = {"tensorrt": self.trt.__version__, "polygraphy": polygraphy.__version__}
        key = engine_key(file_sha256(self.path), versions, self.gpu, self.plan, self.engine_profile, self.own)
        timing = (self.cache_root / "timing" / timing_cache_name(self.trt.__version__, self.gpu)
                  if self.own.timing_cache == "on" else None)
        engines = ArtifactCache(self.cache_root / "engines", enabled=self.use_cache)
        folder, built, hit = engines.get_or_create(key, lambda out: self._build(out, timing))
        try:
            with G_LOGGER.verbosity(G_LOGGER.ERROR):
                self.engine = engine_from_bytes((folder / ENGINE_FILE).read_bytes())
                self.runner = TrtRunner(self.engine)
                self.runner.activate()
        except Exception as error:   # PolygraphyException, TensorRT's and CUDA's own types (none documented per call)
            raise CaseError("runtime", f"TensorRT could not load the engine built for {self.path} "
                                       f"({folder / ENGINE_FILE}): {summarize_exception(error, 4)}") from None
        self.provenance.update({
            "engine_cache_hit": hit, "build_s": built.get("build_s"),
            # the shared entry, which stays: `folder` is this case's private copy of it
            "engine": str(engines.entry_folder(cache_key(key)) / ENGINE_FILE),
            "timing_cache": str(timing) if timing is not None else None,
            "profile": {name: [list(s) for s in shapes] for name, shapes in self.engine_profile.items()},
            "versions": versions,
        })

    def _build(self, out: Path, timing: Path | None) -> dict[str, Any]:
        """Parse the file, build its engine into `out`; the entry's provenance."""
        from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, Profile
        from polygraphy.logger import G_LOGGER

        trt, plan = self.trt, self.plan
        logger = _logger(trt)
        builder = trt.Builder(logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.creation_flag else 0
        network = builder.create_network(flags)
        trt.init_libnvinfer_plugins(logger, "")
        parser = trt.OnnxParser(network, logger)
        parsed = parser.parse_from_file(str(self.path))
        errors = [parser.get_error(index) for index in range(parser.num_errors)]
        if errors or not parsed:
            raise CaseError("runtime", parser_error_message(errors, self.path, parsed))
        profile = Profile()
        for name, (low, opt, high) in self.engine_profile.items():
            profile.add(name, min=low, opt=opt, max=high)
        config = CreateConfig(
            tf32=plan.tf32, fp16=plan.fp16, bf16=plan.bf16, profiles=[profile],
            memory_pool_limits={trt.MemoryPoolType.WORKSPACE: self.own.workspace_mb << 20}
            if self.own.workspace_mb else None,
            builder_optimization_level=None if self.own.builder_optimization_level < 0
            else self.own.builder_optimization_level,
            load_timing_cache=str(timing) if timing is not None else None)
        if timing is not None:
            timing.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            with G_LOGGER.verbosity(G_LOGGER.ERROR):
                serialized = EngineBytesFromNetwork((builder, network, parser), config=config,
                                                    save_timing_cache=str(timing) if timing is not None else None)()
        except Exception as error:   # the builder raises PolygraphyException, TensorRT's own types, MemoryError: said
            raise CaseError("runtime", build_failure_message(self.path, logger.lines, self.own.workspace_mb,
                                                             error)) from None
        build_s = time.perf_counter() - start
        with open(out / ENGINE_FILE, "wb") as handle:
            handle.write(serialized)
        return {"converter": f"tensorrt {trt.__version__}", "build_s": build_s, "typing": plan.typing,
                "builder_flags": list(plan.flags), "warnings": logger.lines[-20:]}
