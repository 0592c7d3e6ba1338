"""ONNX files as a source: a `.onnx` file of any name, or a folder in ONNX's
test-data layout (`model.onnx` beside `test_data_set_N/input_K.pb` and
`output_K.pb`, whose stored outputs are golden examples: model.onnx's only,
named or found in its folder, never a file of another name beside them).

onnx and onnxruntime are imported inside the functions, never at module level.

The spec comes from the file (`spec_from_file`): it declares its inputs' names,
element types and shapes. A symbolic or unknown dim takes its bounds from
`--input-spec`; without them it is bounded by default (DEFAULT_BOUNDS), and
every case warns of it with the --input-spec that widens it. Values are
drawn from the domain the graph implies for each input (`onnx_domains`:
indices within the dim they index, Log's positive, ...), else from its
stored inputs' range; an --input-spec's range overrides both.

The reference is ONNX Runtime's CPU provider with every graph optimization
disabled (ORT_DISABLE_ALL), one session per model: the kernels as the file
states them, without the fusions a target's session may make. It runs on the
CPU whatever the case's device (`configure_device` records it). Where ONNX
Runtime cannot load the file (no CPU kernel for an op at its opset and type:
`Elu` in float64, `PRelu(6)`), the reference is `onnx.reference`'s
ReferenceEvaluator, ONNX's own executable specification, and
`reference_status` says so with ORT's reason; where neither loads it, the
model has no reference (`run` raises), and only its golden examples can judge
a target.

The float64 twin (the noise floor) is the model widened to float64
(`onnx_float64.widen`), run in ONNX Runtime where it has a float64 kernel for
every op, else in `onnx.reference`; where neither can, there is none and
`float64_status` says why.

Trust. An ONNX file is a protobuf graph of declared ops: it carries no code
(its local functions are graphs too; ONNX Runtime runs foreign code only from
custom-op libraries, which the harness never registers), so it loads without
`--trust-model-code`. What a file can do is name other files: external data
(`location` of a tensor). Every location is checked before anything is read,
and one that is absolute or resolves outside the model's own folder (`..`, a
symbolic link) is refused, so that a model file cannot make the harness read
arbitrary files. Golden tensors must hold their data themselves.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from harness.errors import CaseError, OptionError, summarize_exception
from harness.model_file import not_a_file, require_file
from harness.runtimes.binding import bound_names
from harness.runtimes.onnxruntime import ELEMENT_TYPES as ORT_ELEMENT_TYPES, cpu_session, run_session
from harness.sources import onnx_domains
from harness.specs import FLOAT_DTYPES, INT_DTYPES, InputSpec, SpecError

NAME = "onnx"
FORMATS = ("onnx",)
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("onnx",)
# The names its model files end with (matrix.py finds a file's source by them, after every source's claims_file).
FILE_SUFFIXES = (".onnx",)
ELEMENT_TYPES = ORT_ELEMENT_TYPES          # the reference is ONNX Runtime's (REFERENCE)
MODEL_FILENAME = "model.onnx"              # the model of a folder in ONNX's test-data layout
GOLDEN_SET = re.compile(r"^test_data_set_(\d+)$")
GOLDEN_TENSOR = re.compile(r"^(input|output)_(\d+)\.pb$")
REFERENCE = {"device": "cpu", "providers": ["CPUExecutionProvider"], "graph_optimization_level": "disable"}
# InputSpec's own default range: an --input-spec that leaves it is one that gives no range.
DEFAULT_DOMAIN = InputSpec.__dataclass_fields__["domain"].default
# A symbolic dim no --input-spec bounds: small enough for any model's memory, and more than 1, so that a
# batch or a sequence of one cannot hide a bug along that axis. Each case warns of it (shape_check).
DEFAULT_BOUNDS = (1, 4)

_DTYPES = {1: "float32", 11: "float64", 10: "float16", 16: "bfloat16", 3: "int8", 2: "uint8",
           5: "int16", 4: "uint16", 6: "int32", 12: "uint32", 7: "int64", 13: "uint64",
           9: "bool"}  # onnx.TensorProto element types the harness makes
_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL


@dataclass
class OnnxModel:
    """An ONNX model as the harness runs it.

    path: the .onnx file; proto: its ModelProto, external data loaded.
    input_names / output_names: the graph's own (initializers listed as
        inputs left out), in the file's order.
    feeds / fetches: the names `run` feeds and fetches, in the spec's order
        (`bind` sets them; the file's order before).
    session: what runs it, ONNX Runtime's InferenceSession or, for a model
        (or a float64 twin) ORT cannot load, an onnx.reference.ReferenceEvaluator;
        runner names which ("onnxruntime", "onnx.reference"); None where
        neither loads it.
    reference_status: how the reference runs, for the record (see `reference_status`).
    widened: the inputs that take float64 where the file's take float32 (the twin's).
    float64_status: what `float64_copy` made of the model (see `float64_status`).
    input_types: the file's element type (onnx.TensorProto) of each input.
    """

    path: Path
    proto: Any
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    sha256: str
    session: Any
    runner: str
    feeds: tuple[str, ...] = ()
    fetches: tuple[str, ...] = ()
    widened: frozenset[str] = frozenset()
    float64_status: str = "float64 twin not made yet"
    reference_status: str = "onnxruntime"
    input_types: dict[str, int] = field(default_factory=dict)

    def __fspath__(self) -> str:
        """The file: a hop that reads the "onnx" format takes it as this source's model."""
        return str(self.path)


# ---------------------------------------------------------------- the contract
PACKAGES = ("onnx", "onnxruntime")   # what missing() imports: found, a CPU case imports them as it starts (backends.installed)


def missing(device: str) -> str | None:
    """Why this source cannot run on `device` here, or None when it can. The
    reference runs on the CPU for every device (see the module docstring)."""
    try:
        versions()
    except ImportError as error:
        return f"the onnx source needs onnx and onnxruntime ({error}); pip install onnx onnxruntime"
    if device not in ("cpu", "cuda"):
        return f"onnx source does not know device {device!r}"
    return None


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def configure_device(device: str, strict_cuda: bool) -> dict[str, Any]:
    """The reference's arithmetic, for the provenance: ONNX Runtime's CPU
    provider whatever `device` is (the target alone runs on `device`); the
    "device" key says so where the case's device is another."""
    flags: dict[str, Any] = dict(REFERENCE)
    if device != "cpu":
        flags["note"] = (f"an ONNX model's reference runs on ONNX Runtime's CPU provider; only the target runs "
                         f"on {device}")
    return flags


def build(builder: Callable[[], Any]) -> OnnxModel:
    """Call a model spec's onnx builder (`load_file` bound to a path)."""
    model = builder()
    if not isinstance(model, OnnxModel):
        raise CaseError("load", f"the onnx builder returned {type(model).__name__}, not a "
                                "harness.sources.onnx.OnnxModel (load_file makes one)")
    return model


def load_file(path: Path, architecture: Callable[[], Any] | None = None, trust_model_code: bool = False) -> OnnxModel:
    """Load an ONNX file, or the model.onnx of a test-data folder, with its
    reference session. `architecture` is not used (the file carries its
    graph) and `trust_model_code` is not needed (it carries no code: see the
    module docstring)."""
    import onnx

    file = model_file(Path(path))
    proto, data = _parse(file)
    external = _external_files(proto, file)
    _check(file)
    stored_outside = [t for t in _tensors(proto) if t.data_location == _EXTERNAL]
    digest = hashlib.sha256(data)
    for location, data_file in sorted(external.items()):
        digest.update(b"\0" + location.encode() + b"\0")
        digest.update(data_file.read_bytes())
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(file.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as error:   # short: ValueError; not a file: the last
        raise CaseError("load", f"ONNX file {file}: its external data could not be read "
                                f"({summarize_exception(error, 2)}); write the model and its data files "
                                "again") from None
    _check_external_sizes(stored_outside, file)
    session, runner, status = _reference_session(file, proto)
    names = feedable_inputs(proto)
    outputs = tuple(o.name for o in proto.graph.output)
    return OnnxModel(path=file, proto=proto, input_names=names, output_names=outputs, sha256=digest.hexdigest(),
                     session=session, runner=runner, reference_status=status, feeds=names, fetches=outputs,
                     input_types={v.name: v.type.tensor_type.elem_type for v in proto.graph.input if v.name in names})


def fingerprint(model: OnnxModel) -> str:
    """The sha256 of the file and of its external data files (each after its name)."""
    return model.sha256


def artifact(model: OnnxModel) -> tuple[Path, dict[str, Any]]:
    """The file itself, for a target that runs ONNX: no conversion."""
    from harness.converters.onnx_checks import main_opset

    return model.path, {"converter": "none", "tool": "the source's own ONNX file", "sha256": model.sha256,
                        "opset": main_opset(model.proto), "ir_version": model.proto.ir_version,
                        "versions": versions()}


def bind(model: OnnxModel, spec: Any) -> OnnxModel:
    """The model fed and fetched in the spec's order: by name, or by position
    where no name matches and the counts agree."""
    feeds = _match("input", [i.name for i in spec.inputs], model.input_names, model.path)
    fetches = _match("output", [o.name for o in spec.outputs], model.output_names, model.path)
    for wanted, name in zip(spec.inputs, feeds):
        declared = _DTYPES.get(model.input_types.get(name))
        if declared is not None and declared != wanted.dtype:
            raise CaseError("inputs", f"ONNX file {model.path} takes input {name!r} as {declared} but the spec says "
                                      f"{wanted.dtype} (input {wanted.name!r}): give --input-spec with {declared}")
    return replace(model, feeds=tuple(feeds), fetches=tuple(fetches))


def to_device(model: OnnxModel, device: str) -> OnnxModel:
    """The reference stays on the CPU (see `configure_device`)."""
    return model


def float64_copy(model: OnnxModel) -> OnnxModel | None:
    """The model's float64 twin (see the module docstring), or None; either
    way `model.float64_status` says what became of it."""
    from harness.sources import onnx_float64

    try:
        twin, kept = onnx_float64.widen(model.proto)
    except Exception as error:   # onnx's helpers raise any type on a graph the widening does not foresee; recorded
        model.float64_status = ("no noise floor: the model could not be widened to float64 "
                                f"({summarize_exception(error, 2)})")
        return None
    if twin is None:
        model.float64_status = "no noise floor: the model holds no float32 tensor to widen to float64"
        return None
    widened = frozenset(name for name in model.input_names if _DTYPES.get(model.input_types.get(name)) == "float32")
    where = f"; kept in float32 where the op has no float64: {', '.join(dict.fromkeys(kept))}" if kept else ""
    try:
        session, runner = cpu_session(twin.SerializeToString()), "onnxruntime"
        status = f"float64 twin run in onnxruntime (CPU, optimizations disabled){where}"
    except Exception as ort_error:  # ORT's refusal, or protobuf's for a twin over 2 GiB
        ort_reason = _ort_reason(ort_error)
        try:
            from onnx.reference import ReferenceEvaluator

            session, runner = ReferenceEvaluator(twin), "onnx.reference"
        except Exception as reference_error:   # onnx.reference's operators raise any type as they load; recorded
            reference_reason = _first_line(summarize_exception(reference_error, 1))
            model.float64_status = (f"no noise floor: onnxruntime cannot run the float64 twin ({ort_reason}) "
                                    f"and onnx.reference cannot either ({reference_reason})")
            return None
        status = (f"float64 twin run in onnx.reference: onnxruntime cannot run it ({ort_reason})"
                  f"{where}")
    model.float64_status = status
    return replace(model, proto=twin, session=session, runner=runner, widened=widened, float64_status=status)


def reference_status(model: OnnxModel) -> str:
    """How the reference runs, for the record: "onnxruntime", "onnx-reference
    (onnxruntime: <why ORT cannot load the file>)", or "none: ..." with both
    reasons."""
    return model.reference_status


def float64_status(model: OnnxModel) -> str:
    """What became of the float64 twin, for the record: how it runs, or
    "no noise floor: ..." with the reason."""
    return model.float64_status


def run(model: OnnxModel, inputs: Sequence[np.ndarray], device: str, float64: bool = False) -> list[np.ndarray]:
    """Run the model on numpy inputs (in `feeds` order) on the CPU; outputs in
    `fetches` order. float64: the twin's float64 inputs are given as float64."""
    if model.session is None:
        raise CaseError("load", f"ONNX file {model.path} has no reference: "
                                f"{model.reference_status.removeprefix('none: ')}")
    if len(inputs) != len(model.feeds):
        raise CaseError("inputs", f"ONNX file {model.path} takes {len(model.feeds)} input(s) "
                                  f"({list(model.feeds)}), got {len(inputs)}")
    feed = {}
    for name, array in zip(model.feeds, inputs):
        array = np.asarray(array, order="C")  # not ascontiguousarray, which makes a 0-d input 1-d
        if float64 and name in model.widened and array.dtype == np.float32:
            array = array.astype(np.float64)
        feed[name] = array
    outputs = (run_session(model.session, model.fetches, feed) if model.runner == "onnxruntime"
               else model.session.run(list(model.fetches), feed))
    return [np.asarray(output) for output in outputs]


# ---------------------------------------------------------------- files and specs

def sniff(path: Path) -> bool:
    """An ONNX file (by its suffix, whatever its name), or a folder holding
    .onnx files: one in ONNX's test-data layout, or one `model_file` refuses
    naming the files to choose from."""
    path = Path(path)
    if path.is_dir():
        return bool(_onnx_files(path))
    return path.suffix.lower() == ".onnx"


claims_file = sniff   # what matrix.py asks each source of a model file or folder


def model_file(path: Path) -> Path:
    """The .onnx file `path` names: a file is itself, whatever its name; a
    folder is read as ONNX's test-data layout, and its model is its model.onnx."""
    if path.is_dir():
        if not (path / MODEL_FILENAME).exists():
            layout = f"a folder is read as ONNX's test-data layout ({MODEL_FILENAME} beside test_data_set_N/)"
            held = _onnx_files(path)
            if not held:
                raise CaseError("load", f"folder {path} holds no {MODEL_FILENAME}: {layout}; name the .onnx file "
                                        "instead")
            listed = ", ".join(held[:_LISTED]) + (f" and {len(held) - _LISTED} more" if len(held) > _LISTED else "")
            raise CaseError("load", f"folder {path} holds {listed} but no {MODEL_FILENAME}: {layout}; name one of "
                                    f"them, e.g. --model={shlex.quote(str(path / held[0]))}")
        path = path / MODEL_FILENAME
    require_file(path, "ONNX file")
    return path


_LISTED = 10  # .onnx files a refused folder's error names


def _onnx_files(folder: Path) -> list[str]:
    """The names of the .onnx files directly in `folder`, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".onnx")


def spec_from_file(path: Path, input_specs: Sequence[InputSpec] = (),
                   output_names: Sequence[str] = ()) -> tuple[tuple[InputSpec, ...], tuple[str, ...]]:
    """(input specs, output names) from what the file declares. A dim the file
    fixes stays fixed (at 0 too: an empty input, made like any other); a symbolic or unknown one takes its bounds from
    `input_specs` (--input-spec: for the same input, by name, or by position
    when no name matches and there is one per input; a symbolic dim of another
    input that the file names alike takes the same bounds), else DEFAULT_BOUNDS,
    named in the input's `default_dims`. SpecError for an input that declares
    no shape at all. Each input's value
    domain is the one its --input-spec gives, else the one the graph implies
    (`onnx_domains`), else its stored inputs' range, else the default."""
    try:
        file = model_file(Path(path))
        proto, _ = _parse(file)
        _external_files(proto, file)
        _check(file)
    except CaseError as error:
        raise SpecError(error.message) from None
    declared = [v for v in proto.graph.input if v.name in set(feedable_inputs(proto))]
    given = _given_specs(file, declared, input_specs)
    implied, stored = onnx_domains.implied_domains(proto), _stored_ranges(Path(path))
    bounds = _bounds_by_file_name(declared, given)
    inputs, defaulted = [], set()
    for value in declared:
        if value.name in given:
            spec = given[value.name]
            if spec.domain == DEFAULT_DOMAIN:  # no range given: the one the file implies, if any
                spec = replace(spec, domain=onnx_domains.domain_for(spec.dtype, spec.domain, implied.get(value.name),
                                                                    stored.get(value.name)))
            inputs.append(spec)
            continue
        dtype, dims = _declared(file, value)
        if dims is None:
            raise SpecError(f"ONNX file {file}: input {value.name!r} declares no shape (not even its rank): give it "
                            f"whole with --input-spec, e.g. --input-spec '{value.name}:{dtype}[N=1..4,16]'")
        shape, dim_bounds = [], {}
        for axis, dim in enumerate(dims):
            if isinstance(dim, int):
                shape.append(dim)
                continue
            key = dim if dim is not None else f"{value.name}/{axis}"   # an unknown dim is its own, a named one shared
            if key not in bounds:
                spec_dim = _identifier(dim if dim is not None else f"{value.name}_dim{axis}",
                                       {d for d, _ in bounds.values()})
                bounds[key] = (spec_dim, DEFAULT_BOUNDS)
                defaulted.add(spec_dim)
            spec_dim, dim_range = bounds[key]
            shape.append(spec_dim)
            dim_bounds[spec_dim] = dim_range
        # unsigned inputs are drawn from 0 up; others from InputSpec's default range, unless the file implies one
        domain = onnx_domains.domain_for(dtype, (0.0, 4.0) if dtype.startswith("uint") else DEFAULT_DOMAIN,
                                         implied.get(value.name), stored.get(value.name))
        try:
            inputs.append(InputSpec(value.name, tuple(shape), dims=dim_bounds, dtype=dtype, domain=domain,
                                    default_dims=tuple(d for d in dict.fromkeys(shape) if d in defaulted)))
        except SpecError as error:
            raise SpecError(f"ONNX file {file}: {error}") from None
    outputs = tuple(o.name for o in proto.graph.output)
    unknown = [name for name in output_names if name not in outputs]
    if unknown:
        raise SpecError(f"ONNX file {file} has no output(s) {unknown}: its outputs are {list(outputs)} "
                        "(--output-names picks among them)")
    return tuple(inputs), tuple(output_names) or outputs


def _stored_ranges(path: Path) -> dict[str, tuple[float, float]]:
    """Each input's range over the stored input sets, where `path` has any."""
    try:
        examples = golden_examples(path)
    except CaseError:   # sets that cannot be read bound nothing here; the golden check reports them
        return {}
    return onnx_domains.stored_ranges(feed for feed, _, _ in examples)


def golden_examples(path: Path) -> list[tuple[dict[str, np.ndarray], list[np.ndarray], str]]:
    """(inputs by the model's input names, outputs in the model's output
    order, set name) for each `test_data_set_N` of a folder in ONNX's
    test-data layout (or of the folder of its model.onnx), in N's order.
    A file of another name has none: the stored sets of its folder are its
    model.onnx's, which it need not compute (a model_fp16.onnx beside it).
    A stored tensor is matched to a model input or output by its name, or by
    its position where the names do not match."""
    folder = Path(path)
    if folder.is_file():
        if folder.name != MODEL_FILENAME:
            return []
        folder = folder.parent
    file = model_file(folder)
    proto, _ = _parse(file)
    inputs = feedable_inputs(proto)
    outputs = [o.name for o in proto.graph.output]
    for value in list(proto.graph.input) + list(proto.graph.output):
        kind = value.type.WhichOneof("value")
        if (value.name in inputs or value.name in outputs) and kind != "tensor_type":
            raise CaseError("load", f"golden examples of {folder}: {value.name!r} is a {kind.replace('_type', '')}, "
                                    "not a tensor; the harness compares tensors only")
    return read_test_data_sets(folder, inputs, outputs)


def read_test_data_sets(folder: Path, inputs: Sequence[str], outputs: Sequence[str]
                   ) -> list[tuple[dict[str, np.ndarray], list[np.ndarray], str]]:
    """(inputs by `inputs`' names, outputs in `outputs`' order, set name) for
    each `test_data_set_N` of `folder`, in N's order, whatever model they
    belong to (--parity-inputs reads them for any source)."""
    from google.protobuf.message import DecodeError
    from onnx import TensorProto, numpy_helper

    sets = sorted((int(GOLDEN_SET.match(p.name)[1]), p) for p in folder.iterdir()
                  if GOLDEN_SET.match(p.name) and p.is_dir())
    examples = []
    for _, set_folder in sets:
        stored: dict[str, list[tuple[int, Any]]] = {"input": [], "output": []}
        for tensor_file in set_folder.iterdir():
            match = GOLDEN_TENSOR.match(tensor_file.name)
            if not match:
                continue
            _require_inside(tensor_file, folder, "golden tensor")
            tensor = TensorProto()
            try:
                tensor.ParseFromString(tensor_file.read_bytes())
            except DecodeError as error:
                raise CaseError("load", f"golden tensor {tensor_file} does not parse as an ONNX TensorProto: it is "
                                        f"truncated or corrupt ({summarize_exception(error, 1)}); write it "
                                        "again") from None
            if tensor.data_location == _EXTERNAL:
                raise CaseError("load", f"golden tensor {tensor_file} keeps its data in another file "
                                        f"({_location(tensor)!r}); golden tensors must hold their data themselves")
            stored[match[1]].append((int(match[2]), tensor))
        feed = _golden_tensors(set_folder, "input", stored["input"], inputs, numpy_helper)
        expected = _golden_tensors(set_folder, "output", stored["output"], outputs, numpy_helper)
        examples.append((dict(zip(inputs, feed)), expected, set_folder.name))
    return examples


def _golden_tensors(set_folder: Path, kind: str, stored: list[tuple[int, Any]], names: Sequence[str],
                    numpy_helper: Any) -> list[np.ndarray]:
    """The stored tensors of one kind in the model's order of `names`."""
    if len(stored) != len(names):
        raise CaseError("load", f"golden set {set_folder} holds {len(stored)} {kind} tensor(s) but the model has "
                                f"{len(names)} {kind}(s) ({list(names)})")
    ordered = [tensor for _, tensor in sorted(stored, key=lambda item: item[0])]
    by_name = {tensor.name: tensor for tensor in ordered}
    if set(by_name) == set(names):
        ordered = [by_name[name] for name in names]
    try:
        return [numpy_helper.to_array(tensor) for tensor in ordered]
    except (ValueError, TypeError, KeyError) as error:   # a short buffer, an UNDEFINED type, an unknown type
        raise CaseError("load", f"golden set {set_folder}: a stored {kind} cannot be read as an array "
                                f"({summarize_exception(error, 1)})") from None


# ---------------------------------------------------------------- reading a file

def _parse(file: Path) -> tuple[Any, bytes]:
    """(ModelProto without its external data, the file's bytes); CaseError
    for bytes that are no ONNX model."""
    import onnx
    from google.protobuf.message import DecodeError

    data = file.read_bytes()
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except DecodeError as error:
        raise CaseError("load", f"ONNX file {file} does not parse as an ONNX model: it is truncated or corrupt, or "
                                f"not an ONNX file ({summarize_exception(error, 1)}); export it again") from None
    if not proto.HasField("graph") or not proto.opset_import:
        missing_part = "graph" if not proto.HasField("graph") else "opset_import"
        raise CaseError("load", f"ONNX file {file} parses but has no {missing_part}: it is truncated, or not an "
                                "ONNX model; export it again")
    return proto, data


def _check(file: Path) -> None:
    """onnx.checker (full_check=False: the graph's structure and each node
    against its op's schema, without shape inference). Given the file's path
    (its external data locations checked before), so that it looks for
    external data beside the model, not in the working directory."""
    import onnx

    try:
        onnx.checker.check_model(str(file), full_check=False)
    except onnx.checker.ValidationError as error:   # by path, a file that does not parse raises it too
        raise CaseError("load", f"ONNX file {file} fails onnx.checker: {summarize_exception(error, 4)}\n"
                                "Fix the exporter's output (or export it again with a supported opset)") from None


def _external_files(proto: Any, file: Path) -> dict[str, Path]:
    """Location -> file of every tensor that keeps its data elsewhere, each
    checked to lie inside the model's own folder and to be a regular file,
    before any of them is opened; CaseError naming the tensor otherwise."""
    folder = file.parent
    found: dict[str, Path] = {}
    for tensor in _tensors(proto):
        if tensor.data_location != _EXTERNAL:
            continue
        location = _location(tensor)
        where = f"ONNX file {file}: tensor {tensor.name!r} keeps its data in {location!r}"
        if not location:
            raise CaseError("load", f"{where}, which names no file; write the model with its data again")
        if PurePosixPath(location).is_absolute() or PureWindowsPath(location).drive or PureWindowsPath(location).root:
            raise CaseError("load", f"{where}, an absolute path: refused, a model file may only name files in its "
                                    f"own folder ({folder}). Save the data beside the model with a relative location")
        target = folder / location
        _require_inside(target, folder, f"{where}, which", refuse=True)
        found[location] = target
    return found


def _require_inside(target: Path, folder: Path, what: str, refuse: bool = False) -> None:
    """CaseError unless `target` resolves (links followed) to a regular file
    inside `folder`; its mode is read, never its bytes."""
    real_folder, real_target = os.path.realpath(folder), os.path.realpath(target)
    if os.path.commonpath([real_folder, real_target]) != real_folder:
        raise CaseError("load", f"{what} resolves to {real_target}, outside the model's folder {real_folder}: "
                                "refused, a model file may only name files in its own folder. Move the data beside "
                                "the model")
    try:
        regular = stat.S_ISREG(os.stat(target).st_mode)
    except OSError:
        regular = False
    if not regular:
        subject = what if refuse else f"{what} {target}"
        raise CaseError("load", f"{subject} {not_a_file(target)}; write the model with its data again")


def _check_external_sizes(tensors: Sequence[Any], file: Path) -> None:
    """Each tensor read from external data holds the bytes its shape needs:
    a short data file loads as a short tensor, which onnx does not refuse."""
    import onnx

    for tensor in tensors:
        if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
            continue
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        elements = int(np.prod(tensor.dims, dtype=np.int64))
        # 4-bit types pack two elements per byte
        needed = (elements + 1) // 2 if tensor.data_type in _PACKED_4BIT else elements * itemsize
        if len(tensor.raw_data) != needed:
            raise CaseError("load", f"ONNX file {file}: tensor {tensor.name!r} {list(tensor.dims)} holds "
                                    f"{len(tensor.raw_data)} bytes where its shape needs {needed}: its data file is "
                                    "truncated or does not belong to this model; write the model with its data again")


_PACKED_4BIT = (21, 22, 23)  # onnx.TensorProto.UINT4, INT4, FLOAT4E2M1


def _location(tensor: Any) -> str:
    return next((entry.value for entry in tensor.external_data if entry.key == "location"), "")


def _tensors(proto: Any) -> Iterator[Any]:
    """Every tensor a model holds: initializers (sparse ones' values and
    indices too) and tensor attributes, in the graph, its subgraphs, its local
    functions and its training graphs."""
    from onnx import AttributeProto

    def in_nodes(nodes) -> Iterator[Any]:
        for node in nodes:
            for attribute in node.attribute:
                if attribute.type == AttributeProto.TENSOR:
                    yield attribute.t
                elif attribute.type == AttributeProto.TENSORS:
                    yield from attribute.tensors
                elif attribute.type == AttributeProto.SPARSE_TENSOR:
                    yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)
                elif attribute.type == AttributeProto.SPARSE_TENSORS:
                    for sparse in attribute.sparse_tensors:
                        yield from (sparse.values, sparse.indices)
                elif attribute.type == AttributeProto.GRAPH:
                    yield from in_graph(attribute.g)
                elif attribute.type == AttributeProto.GRAPHS:
                    for graph in attribute.graphs:
                        yield from in_graph(graph)

    def in_graph(graph) -> Iterator[Any]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        yield from in_nodes(graph.node)

    yield from in_graph(proto.graph)
    for function in proto.functions:
        yield from in_nodes(function.node)
    for training in proto.training_info:
        yield from in_graph(training.initialization)
        yield from in_graph(training.algorithm)


def feedable_inputs(proto: Any) -> tuple[str, ...]:
    """The graph's inputs a caller feeds: an initializer listed as an input
    (as files before IR version 4 list every weight) has its value already."""
    weights = {t.name for t in proto.graph.initializer}
    return tuple(v.name for v in proto.graph.input if v.name not in weights)


def _reference_session(file: Path, proto: Any) -> tuple[Any, str, str]:
    """(session, runner, reference_status): ONNX Runtime's CPU session, else
    onnx.reference's evaluator of `proto` (the file with its external data),
    else no session, the status giving both refusals. Not raising: a model
    without a reference can still be held to its golden examples."""
    try:
        return cpu_session(str(file)), "onnxruntime", "onnxruntime"
    except Exception as error:   # onnxruntime's errors (Fail, InvalidGraph, ...) derive from Exception alone; said
        ort_reason = _ort_reason(error)
    try:
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(proto), "onnx.reference", f"onnx-reference (onnxruntime: {ort_reason})"
    except Exception as error:   # onnx.reference's operators raise any type as they load; said in the status
        reference_reason = _first_line(summarize_exception(error, 1))
        return None, "none", (f"none: onnxruntime's CPU provider cannot load it ({ort_reason}) and onnx.reference "
                              f"cannot either ({reference_reason})")


def _ort_reason(error: BaseException) -> str:
    """ORT's message without its "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED :" prefix, first line only."""
    text = _first_line(str(error).strip()) or type(error).__name__
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)


def _match(kind: str, wanted: Sequence[str], present: Sequence[str], file: Path) -> list[str]:
    """The runtimes' rule (`binding.bound_names`), with this file named in the error."""
    names = bound_names(wanted, present)
    if names is None:
        raise CaseError("inputs", f"ONNX file {file} has {kind}s {list(present)}, which do not match the spec's "
                                  f"{list(wanted)}: name them as the file does (--input-spec, --output-names), or "
                                  f"give as many {kind}s in the file's order")
    return names


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text


# ---------------------------------------------------------------- the spec from the file

def declared_types(path: Path) -> list[tuple[str, str | None, str]]:
    """(port, dtype, words) for each input the harness feeds and each output of
    an ONNX file (or a test-data folder's model.onnx), in the file's order:
    port "input 'x'" or "output 'y'"; dtype a tensor's element type by the
    harness's name (onnx's own, lowercased, where the harness has none:
    float8e4m3fn, int4, string), None for what is no tensor; words, the type
    said in a message ("float32 tensor", "sequence of float32 tensors")."""
    file = model_file(Path(path))
    proto, _ = _parse(file)
    feedable = set(feedable_inputs(proto))
    ports = [("input", v) for v in proto.graph.input if v.name in feedable] + [("output", v) for v in proto.graph.output]
    return [(f"{kind} {value.name!r}", *_type_words(value.type)) for kind, value in ports]


def _type_words(type_proto: Any) -> tuple[str | None, str]:
    """(dtype, words) of one onnx TypeProto, as `declared_types` gives them."""
    from onnx import TensorProto

    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        elem = type_proto.tensor_type.elem_type
        dtype = _DTYPES.get(elem) or TensorProto.DataType.Name(elem).lower()
        return dtype, f"{dtype} tensor"
    if kind == "sequence_type":
        return None, f"sequence of {_type_words(type_proto.sequence_type.elem_type)[1]}s"
    if kind == "optional_type":
        return None, f"optional {_type_words(type_proto.optional_type.elem_type)[1]}"
    if kind == "map_type":
        key = TensorProto.DataType.Name(type_proto.map_type.key_type).lower()
        return None, f"map from {key} to {_type_words(type_proto.map_type.value_type)[1]}s"
    if kind == "sparse_tensor_type":
        return None, f"sparse {TensorProto.DataType.Name(type_proto.sparse_tensor_type.elem_type).lower()} tensor"
    return None, "value of no type"


def _declared(file: Path, value: Any) -> tuple[str, list[int | str | None] | None]:
    """(dtype, dims) of a graph input: a dim is a size, the file's name for
    it, or None (unknown); dims None where the file declares no shape, not
    even a rank. SpecError for what the harness cannot make."""
    from onnx import TensorProto

    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        what = (kind or "value of no type").replace("_type", "")
        raise SpecError(f"ONNX file {file}: input {value.name!r} is a {what}, not a tensor; the harness makes tensor "
                        "inputs only")
    elem = value.type.tensor_type.elem_type
    dtype = _DTYPES.get(elem)
    if dtype is None:
        raise SpecError(f"ONNX file {file}: input {value.name!r} is a tensor of "
                        f"{TensorProto.DataType.Name(elem).lower()}, which the harness cannot make (it makes "
                        f"{', '.join(FLOAT_DTYPES + INT_DTYPES)})")
    if not value.type.tensor_type.HasField("shape"):
        return dtype, None
    dims: list[int | str | None] = []
    for dim in value.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        else:
            dims.append(dim.dim_param or None)
    return dtype, dims


def _given_specs(file: Path, declared: Sequence[Any], input_specs: Sequence[InputSpec]) -> dict[str, InputSpec]:
    """The --input-spec options by the file's input name, each checked against what
    the file declares (dtype, rank, fixed dims)."""
    names = [v.name for v in declared]
    if not input_specs:
        return {}
    if not {s.name for s in input_specs} & set(names) and len(input_specs) == len(names):
        pairs = list(zip(names, input_specs))  # no name matches: by position, one spec per input
    else:
        unknown = [s.name for s in input_specs if s.name not in names]
        if unknown:   # the run's usage error, not this model's: a spec for no input is a typo on the command line
            raise OptionError(f"--input-spec names {unknown}, which ONNX file {file} does not take: its inputs are "
                              f"{names} (or give one --input-spec per input, in that order)")
        pairs = [(s.name, s) for s in input_specs]
    given = {}
    by_name = {v.name: v for v in declared}
    for name, spec in pairs:
        dtype, dims = _declared(file, by_name[name])
        where = f"--input-spec for {name!r}"
        if spec.dtype != dtype:
            raise SpecError(f"{where} says {spec.dtype} but ONNX file {file} declares {dtype}: write {dtype}")
        if dims is not None and len(spec.shape) != len(dims):
            raise SpecError(f"{where} gives {len(spec.shape)} dims but ONNX file {file} declares {len(dims)} "
                            f"({_written_dims(dims)})")
        for axis, (mine, theirs) in enumerate(zip(spec.shape, dims or ())):
            if isinstance(theirs, int) and mine != theirs:
                raise SpecError(f"{where}: dim {axis} is {mine!r} but ONNX file {file} fixes it at {theirs}: "
                                f"write {theirs} there ({_written_dims(dims)})")
        given[name] = spec
    return given


def _bounds_by_file_name(declared: Sequence[Any],
                         given: dict[str, InputSpec]) -> dict[str, tuple[str, tuple[int, int]]]:
    """The file's dim name -> (the spec's dim name, bounds), from the inputs
    --input-spec gave, position by position: a symbolic dim the file names
    alike on another input is the same dim."""
    found: dict[str, tuple[str, tuple[int, int]]] = {}
    for value in declared:
        spec = given.get(value.name)
        if spec is None or not value.type.tensor_type.HasField("shape"):
            continue
        for dim, mine in zip(value.type.tensor_type.shape.dim, spec.shape):
            if dim.dim_param and isinstance(mine, str):
                found.setdefault(dim.dim_param, (mine, tuple(spec.dims[mine])))
    return found


def _identifier(text: str, taken: set[str]) -> str:
    """A dim name --input-spec accepts ([A-Za-z_]\\w*), unlike any in `taken`."""
    name = re.sub(r"\W+", "_", text).strip("_") or "dim"
    if not re.match(r"[A-Za-z_]", name):
        name = f"d_{name}"
    candidate, count = name, 1
    while candidate in taken:
        count += 1
        candidate = f"{name}_{count}"
    return candidate


def _written_dims(dims: Sequence[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
