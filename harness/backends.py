"""The contract every backend meets, and the one registry of them.

Three kinds of backend, each a module (or any object with these attributes),
typed by the Protocols `Source`, `Hop` and `Runtime` below:

- a **source** holds the original model: `NAME` (also the format of the model
  it holds in memory), `missing(device)`, `versions()`, `build(builder)`,
  `bind(model, spec)`, `configure_device`, `to_device`, `run(model, inputs,
  device, float64=False)`, `float64_copy(model)` (its twin for the noise
  floor, or None), `fingerprint(model)`; optionally `PACKAGES` (as a
  runtime's, below) and the model files it reads: `FILE_SUFFIXES` (the ends
  of their names), `claims_file(path)` (a file or folder it reads whatever its
  name), `READS_ANY_FILE` (a file no source claims is its), each through
  `load_file(path, architecture, trust_model_code)`, which is given the spec's
  `input_names` and `output_names` where it takes them (matrix.py);
- a **hop** converts one format into another: `NAME`, `READS` (the formats it
  takes: a source's in-memory model, or a file format), `WRITES`, `REVISION`
  (bumped when its output changes, so cached artifacts are remade),
  `FILENAME`, `OPTIONS` (the case's settings it takes besides its own:
  layout_variant, precision, calibration; they enter its cache key),
  `versions()`, `convert(...)` -> provenance; optionally `Options` (its own
  settings, as a runtime's below: each field a flag `--HOP-FIELD`, the arrow
  read as a dash, whose value `convert` is given by the field's name and its
  cache key holds, `hop_option_values`), `VARIANTS` (layout
  variants), `CHANGES_PROCESS_STATE` and `PRECISIONS` (the precisions it can
  write, of `options.PRECISIONS`; ("fp32",) where absent: a hop without fp32
  only lowers, and may write the format it reads). A hop whose OPTIONS name
  "precision" and "calibration" is given the precision it writes in this case
  ("fp32" where another step lowers) and, at a precision of its `CALIBRATES`,
  the calibration feed's settings (`calibration.Calibration.to_json()`, None
  otherwise, so that the feed's settings key only the files made from it);
- any of the three may declare `DISTRIBUTIONS`: the pip distributions whose
  versions every record carries, where installed (`distributions`);
- a **runtime** runs artifacts: `NAME`, `FORMATS` (what it runs, the preferred
  first), `missing(device)`, `versions()`, `Session(path, device, options,
  precision)` with `bind`, `declared_inputs`, `run`, `provenance`; optionally
  `PACKAGES` (the top-level modules `missing` imports: found installed, a CPU
  case waits for its start to import them, `installed`), `NEEDS_ISOLATION`,
  `PRECISIONS` (what it can lower an fp32 artifact to by
  its own settings, of `options.PRECISIONS`; ("fp32",) where absent),
  `missing_precision(device, precision)` (a skip reason where the device
  cannot compute in a precision the runtime declares, or None),
  `COMPUTES` ({(device, precision): the type it computes a file of that
  precision in, where wider than the file's: ONNX Runtime's CPU provider runs
  an fp16 file's ops in float32}) and
  `SHAPE_PROFILE` (True: the Session is also given `profile=`, each input's
  (min, opt, max) shape from `shape_profile.shape_profile`, for an engine
  built for a range of shapes) and `ELEMENT_TYPES` (the tensor element types,
  by `specs`' dtype names, it takes and gives: an ONNX file declaring another
  for an input or output is a skip naming the type and the runtime; a source
  may declare them too, for its reference), `SUFFIXES` (the files it runs, by
  suffix -> format: how a user's --converted file is read, `artifact_suffixes`),
  `TOLERANCES` (its default tolerances of float outputs, by reduced precision),
  `REPRO` (by device, a `Repro`: how localize/repro.py's script runs a file on
  it), `WALK_REFERENCE` (the device whose values are the reference side of
  a localization walk: ONNX Runtime's CPU) and `OPT_IN` (why a built-in runtime
  runs only where --target names it; absent: a default target, `opt_in_runtimes`).
  Every Session takes `precision`, one of its PRECISIONS: "fp32" means "run the artifact as its own types say", which is
  what a runtime is given where a hop lowered the model (`paths.lowering`), so
  that the engine opens every runtime the same way. A runtime's own settings are an
  `Options` dataclass: each field (a default, and `metadata` with `help` and
  the values it takes: `choices`, or `range` (LOW, HIGH), inclusive, HIGH None
  for no upper bound, or `check`, a function of the value saying what is wrong
  with it, with its `type`) becomes a command-line flag `--RUNTIME-FIELD`, whose
  value is held to them (`option_problem`), and the Session reads them with
  `own_options(NAME, options)`. A flag older than the contract keeps its name,
  help and metavar by `flag`, `flag_help` and `metavar`, and says what a run
  that cannot use it lacks by `unused` ("exports torch to ONNX");
  `python -m harness localize` takes the same flags (`options.backend_option_arguments`).

Built-ins are listed here by module name and imported only when a case needs
them. Other packages add backends through the `parity_backends` entry point
group: the entry point's name is the backend's name and its value a module
(`my_runtime = "my_package.parity_runtime"`) whose `KIND` says which kind it is.
A backend whose entry point fails to import is not dropped silently: its cases
are errors naming the package.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

KINDS = ("source", "hop", "runtime")
ENTRY_POINT_GROUP = "parity_backends"

BUILTIN: dict[str, dict[str, str]] = {
    "source": {"torch": "harness.sources.torch", "keras": "harness.sources.keras",
               "tensorflow": "harness.sources.tensorflow", "mxnet": "harness.sources.mxnet",
               "onnx": "harness.sources.onnx"},
    "hop": {"torch->onnx": "harness.converters.torch_onnx", "tf->onnx": "harness.converters.tf_onnx",
            "tf->tflite": "harness.converters.tf_tflite", "mxnet->onnx": "harness.converters.mxnet_onnx",
            "onnx->openvino-ir": "harness.converters.onnx_openvino",
            "torch->openvino-ir": "harness.converters.torch_openvino",
            "onnx->onnx-lowered": "harness.converters.onnx_lower",
            "onnx->tflite": "harness.converters.onnx_tflite",
            "torch->ncnn": "harness.converters.torch_ncnn", "onnx->mnn": "harness.converters.onnx_mnn", "onnx->ncnn": "harness.converters.onnx_ncnn"},
    "runtime": {"onnxruntime": "harness.runtimes.onnxruntime", "tflite": "harness.runtimes.tflite",
                "openvino": "harness.runtimes.openvino",
                "tensorrt": "harness.runtimes.tensorrt",
                "onnxruntime-tensorrt": "harness.runtimes.onnxruntime_tensorrt",
                "onnx-reference": "harness.runtimes.onnx_reference",
                "ncnn": "harness.runtimes.ncnn", "mnn": "harness.runtimes.mnn", "tvm": "harness.runtimes.tvm"},
}


@dataclasses.dataclass(frozen=True)
class Repro:
    """How a reproduction script (localize/repro.py) runs a file on one runtime and device."""

    package: str          # the pip package(s) the script needs, as `pip install` takes them
    run: str              # the script's `def run(model, inputs, names)`, returning {name: array}, as Python source
    unverified: str = ""  # what `run` was written against, where no test here can run it (it says so in the script)


class Runtime(Protocol):
    """What the engine and the matrix use of a runtime (a module meets it)."""

    NAME: str
    FORMATS: tuple[str, ...]
    Session: Callable[..., Any]   # (path, device, options, precision) -> bind, declared_inputs, run, provenance

    def missing(self, device: str) -> str | None: ...
    def versions(self) -> dict[str, str]: ...


class Hop(Protocol):
    """One conversion, from a format it reads to the one it writes."""

    NAME: str
    READS: tuple[str, ...]
    WRITES: str
    REVISION: int
    FILENAME: str
    OPTIONS: tuple[str, ...]

    def versions(self) -> dict[str, str]: ...
    def convert(self, model: Any, spec: Any, example: Sequence[Any], out_dir: Path, *,
                layouts: tuple[dict, dict], **options: Any) -> dict[str, Any]: ...


class Source(Protocol):
    """A framework that holds the original model and runs it as the reference."""

    NAME: str

    def missing(self, device: str) -> str | None: ...
    def versions(self) -> dict[str, str]: ...
    def build(self, builder: Callable[[], Any]) -> Any: ...
    def bind(self, model: Any, spec: Any) -> Any: ...
    def configure_device(self, device: str, strict_cuda: bool) -> dict[str, Any]: ...
    def to_device(self, model: Any, device: str) -> Any: ...
    def run(self, model: Any, inputs: Sequence[Any], device: str, float64: bool = False) -> list[Any]: ...
    def float64_copy(self, model: Any) -> Any | None: ...
    def fingerprint(self, model: Any) -> str: ...


class BackendError(Exception):
    """A registered backend that cannot be used: its message names the package."""


@lru_cache(maxsize=None)
def _entry_points() -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], str]]:
    """(kind -> name -> module or object, (kind, name) -> why it failed) for the
    entry points of other packages. A failed import is kept under kind "?":
    its KIND is unknown until it imports."""
    from importlib.metadata import entry_points

    found: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
    broken: dict[tuple[str, str], str] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        package = point.dist.name if point.dist is not None else "an unknown package"
        try:
            backend = point.load()
        except Exception as error:  # any error of a third party's import must not end the run
            broken[("?", point.name)] = (f"the {ENTRY_POINT_GROUP} entry point {point.name!r} of {package} "
                                         f"({point.value}) failed to import: {type(error).__name__}: {error}")
            continue
        kind = getattr(backend, "KIND", None)
        if kind not in KINDS:
            broken[("?", point.name)] = (f"the {ENTRY_POINT_GROUP} entry point {point.name!r} of {package} declares "
                                         f"KIND {kind!r}; it must be one of {', '.join(KINDS)}")
            continue
        found[kind][point.name] = backend
    return found, broken


def names(kind: str) -> tuple[str, ...]:
    """Every backend of `kind`: the built-ins, then those of other packages."""
    return tuple(BUILTIN[kind]) + tuple(n for n in _entry_points()[0][kind] if n not in BUILTIN[kind])


def broken(name: str) -> str | None:
    """Why the entry point called `name` cannot be used, or None."""
    return _entry_points()[1].get(("?", name))


def get(kind: str, name: str) -> Any:
    """The backend `name` of `kind` (a built-in is imported now)."""
    if name in BUILTIN[kind]:
        return importlib.import_module(BUILTIN[kind][name])
    if name in _entry_points()[0][kind]:
        return _entry_points()[0][kind][name]
    raise BackendError(broken(name) or f"no {kind} backend {name!r}; known: {', '.join(names(kind))}")


def source(name: str) -> Source:
    return get("source", name)


def runtime(name: str) -> Runtime:
    return get("runtime", name)


def hop(name: str) -> Hop:
    return get("hop", name)


def runtime_formats(name: str) -> tuple[str, ...]:
    """The artifact formats runtime `name` runs, the one to convert to first."""
    return tuple(runtime(name).FORMATS)


def runtime_precisions(name: str) -> tuple[str, ...]:
    """The precisions runtime `name` computes in: its PRECISIONS, fp32 alone where it declares none."""
    return tuple(getattr(runtime(name), "PRECISIONS", ("fp32",)))


def runtime_computes(name: str) -> dict[tuple[str, str], str]:
    """What runtime `name` computes a file of a reduced precision in, where
    wider than the file's types, by (device, precision): its COMPUTES, none
    declared where absent (file_precision.py checks such files in their own types)."""
    return dict(getattr(runtime(name), "COMPUTES", {}))


def runtime_tolerances(name: str) -> dict[str, Any]:
    """Runtime `name`'s own default tolerances of float outputs, by precision
    (a `specs.Tolerance` each): its TOLERANCES, none where absent or where
    `name` is no runtime here (then tolerances.py's defaults for the precision apply)."""
    try:
        return dict(getattr(runtime(name), "TOLERANCES", {}))
    except (BackendError, ImportError):
        return {}


def runtime_repro(name: str) -> dict[str, Repro]:
    """How a reproduction script runs a file on runtime `name`, by device: its
    REPRO; none where it declares none (no reproduction is written for it)."""
    return dict(getattr(runtime(name), "REPRO", {}))


def opt_in_reason(name: str) -> str | None:
    """Why runtime `name` runs only where --target names it: its OPT_IN (slow, serving
    one purpose, or unable to run part of the zoo); None where it declares none (a default target)."""
    return getattr(runtime(name), "OPT_IN", None)


@lru_cache(maxsize=None)
def opt_in_runtimes() -> tuple[str, ...]:
    """The built-in runtimes a run targets only when named (--target): those that declare OPT_IN."""
    return tuple(name for name in BUILTIN["runtime"] if opt_in_reason(name))


@lru_cache(maxsize=None)
def walk_reference() -> tuple[str, str]:
    """(runtime, device) whose values on an ONNX file are the reference side of a localization
    walk: the first runtime that declares a WALK_REFERENCE device (ONNX Runtime's CPU provider)."""
    return next((name, device) for name, device in declared("runtime", "WALK_REFERENCE"))


def declared(kind: str, attribute: str) -> list[tuple[str, Any]]:
    """(name, value of `attribute`) of every backend of `kind` that imports and declares it."""
    found = []
    for name in names(kind):
        try:
            value = getattr(get(kind, name), attribute, None)
        except (BackendError, ImportError):   # a broken backend's cases say why; it declares nothing here
            continue
        if value is not None:
            found.append((name, value))
    return found


@lru_cache(maxsize=None)
def artifact_suffixes() -> dict[str, str]:
    """File suffix -> artifact format, for users' own converted files: the
    SUFFIXES every runtime declares for the files it runs (the first to declare a suffix keeps it)."""
    suffixes: dict[str, str] = {}
    for _, runtime_suffixes in declared("runtime", "SUFFIXES"):
        for suffix, artifact_format in runtime_suffixes.items():
            suffixes.setdefault(suffix, artifact_format)
    return suffixes


@lru_cache(maxsize=None)
def distributions() -> tuple[str, ...]:
    """The pip distributions whose versions a record carries, where installed:
    the DISTRIBUTIONS every source, hop and runtime declares, each once, in registry order."""
    return tuple(dict.fromkeys(distribution for kind in KINDS for _, listed in declared(kind, "DISTRIBUTIONS")
                               for distribution in listed))


def element_types(kind: str, name: str) -> tuple[str, ...] | None:
    """The tensor element types backend `name` of `kind` ("source" or
    "runtime") takes and gives: its ELEMENT_TYPES; None where it declares none
    (then only the harness's own dtypes bound what it is given)."""
    declared = getattr(get(kind, name), "ELEMENT_TYPES", None)
    return None if declared is None else tuple(declared)


def installed(kind: str, name: str, device: str) -> bool:
    """Whether backend `name` of `kind` ("source" or "runtime") is installed for
    `device` by a look-up that imports no framework: on the CPU, each of the
    PACKAGES it declares (the top-level modules its `missing` imports) is found
    on the path. Collection asks this (importing torch, TensorFlow, MXNet,
    OpenVINO takes seconds, for cases a filter or a shard may never run) and
    leaves `missing` to the case as it starts, where a broken install still
    gives its reason (matrix.availability_checked). False where only `missing`
    can say: another device (whether the framework sees a GPU is known only
    once it is imported), a backend that declares no PACKAGES, one whose
    module or a package of it is not found."""
    if device != "cpu":
        return False
    try:
        packages = getattr(get(kind, name), "PACKAGES", None)
    except ImportError:
        return False
    return packages is not None and all(importlib.util.find_spec(package) is not None for package in packages)


@lru_cache(maxsize=None)
def source_missing(name: str, device: str) -> str | None:
    try:
        return source(name).missing(device)
    except ImportError as error:
        return f"the {name} source adapter cannot be imported here: {error}"


@lru_cache(maxsize=None)
def runtime_missing(name: str, device: str) -> str | None:
    try:
        return runtime(name).missing(device)
    except ImportError as error:
        return f"the {name} runtime adapter cannot be imported here: {error}"


@lru_cache(maxsize=None)
def runtime_missing_precision(name: str, device: str, precision: str) -> str | None:
    """Why runtime `name` cannot compute in `precision` (one it declares) on `device`, or None."""
    check = getattr(runtime(name), "missing_precision", None)
    return check(device, precision) if check is not None else None


def option_fields(name: str, kind: str = "runtime") -> tuple[dataclasses.Field, ...]:
    """The fields of backend `name`'s own `Options` dataclass, a runtime's or a hop's (none without one)."""
    options = getattr(get(kind, name), "Options", None)
    return dataclasses.fields(options) if options is not None else ()


def declared_options(kind: str) -> list[tuple[str, dataclasses.Field]]:
    """(name, field) for each field of the `Options` of every backend of `kind` that imports
    and declares one: its flags (a backend that does not import has none; its cases say why)."""
    return [(name, option) for name, options in declared(kind, "Options") for option in dataclasses.fields(options)]


def option_flag(name: str, option: dataclasses.Field) -> str:
    """The command-line flag of a backend's option: `--NAME-FIELD` (the arrow of a hop's
    name read as a dash), or the flag its metadata names (for options older than
    the contract; hops that declare one flag alike share its value: --opset)."""
    return option.metadata.get("flag") or f"--{name.replace('->', '-')}-{option.name.replace('_', '-')}"


def option_type(option: dataclasses.Field) -> type:
    """The type its flag's value is read as: its default's, or its metadata's `type` (a default of None)."""
    return option.metadata.get("type", type(option.default))


def option_help(name: str, option: dataclasses.Field) -> str:
    """Its flag's help: its metadata's `help` with the values it takes and its default, or
    the whole `flag_help` an option older than the contract always showed."""
    return option.metadata.get("flag_help") or (f"{option.metadata.get('help', option.name)} "
                                                f"({name}: {allowed_values(option)}; default {option.default})")


def allowed_values(option: dataclasses.Field) -> str:
    """The values a backend's option takes, as its help and its errors say them."""
    if "choices" in option.metadata:
        return f"one of {', '.join(map(str, option.metadata['choices']))}"
    low, high = option.metadata["range"]
    return f"a whole number >= {low}" if high is None else f"a whole number from {low} to {high}"


def option_problem(name: str, option: dataclasses.Field, value: Any) -> str | None:
    """Why `value` is not one that backend `name`'s option declares (its
    metadata's `choices` or `range`, or what its `check` says: a function of
    the value returning the problem in one line naming the flag, or None, for
    values only a framework knows), or None."""
    if "check" in option.metadata:
        return option.metadata["check"](value)
    choices, bounds = option.metadata.get("choices"), option.metadata.get("range")
    if type(value) is option_type(option):   # a value read back from a file may be of any type
        if choices is not None and value in choices:
            return None
        if bounds is not None and bounds[0] <= value and (bounds[1] is None or value <= bounds[1]):
            return None
    return f"{option_flag(name, option)} {value!r}: give {allowed_values(option)} (default {option.default})"


def own_options(name: str, run_options: Any, kind: str = "runtime") -> Any:
    """Backend `name`'s `Options`, with the values the run gave its flags (a
    runtime's in `run_options.runtime_options`, a hop's in `hop_options`). The
    flags were held to what each option declares; the values of a run read
    back from a file (a replay, a worker) are held to it here."""
    from harness.errors import CaseError

    given = getattr(run_options, f"{kind}_options", {}).get(name, {})
    for option in option_fields(name, kind):
        problem = option_problem(name, option, given[option.name]) if option.name in given else None
        if problem:
            raise CaseError("runtime" if kind == "runtime" else "convert", problem)
    return get(kind, name).Options(**given)


def hop_option_values(name: str, run_options: Any) -> dict[str, Any]:
    """The keyword arguments hop `name`'s `convert` takes from its `Options` (each
    field: the run's value, else its default), which enter its cache key; none without one."""
    return dataclasses.asdict(own_options(name, run_options, "hop")) if option_fields(name, "hop") else {}
