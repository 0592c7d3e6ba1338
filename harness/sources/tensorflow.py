"""TensorFlow as a source: SavedModel directories (through their serving
signature) and frozen GraphDef `.pb` files, each loaded as a `TFFunctionModel`.

tensorflow is imported inside the functions, never at module level.

Names. A SavedModel's serving signature takes keyword inputs and returns a
dict; the harness calls it positionally in the spec's input order and reads
the dict in the spec's output order (`load_saved_model`). A frozen graph is
addressed by op/tensor names as given on the command line ("x" or "x:0").

Trust. Neither format holds Python code: a SavedModel is loaded as graphs
(`tf.saved_model.load` does not unpickle), a GraphDef is imported as data. But
a graph's ops may read and write files (`ReadFile`, `WriteFile`), call Python
(`PyFunc`) or the network, at load (a SavedModel's initializers) or when run.
Before either format is loaded its graph is scanned (`tf_graph_scan`), and
one with such ops loads only with `trust_model_code`; the error names each op,
its node and its function.

float64. A TensorFlow graph has its dtypes baked in, so there is no float64
twin for the noise floor: `float64_copy` returns None.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harness.errors import CaseError, summarize_exception
from harness.model_file import folder_sha256, not_a_file, require_file
from harness.runtimes.binding import bound_names
from harness.sources import tf_graph_scan

NAME = "tensorflow"
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu")
# The names its model files end with (matrix.py finds a file's source by them, after every source's claims_file).
FILE_SUFFIXES = (".pb",)


def claims_file(path: Path) -> bool:
    """A SavedModel folder (before ONNX's claim: it may hold an .onnx exported beside it)."""
    return path.is_dir() and (path / "saved_model.pb").is_file()


SERVING_KEY = "serving_default"
# signature_def entries TensorFlow writes for itself: a loaded SavedModel's `signatures` lists neither
_RESERVED_SIGNATURES = ("__saved_model_init_op", "__saved_model_train_op")
_VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp", "VarIsInitializedOp"}


@dataclass
class TFFunctionModel:
    """A TensorFlow graph as the harness runs and converts it.

    function: a callable taking one tf.Tensor per input, in the spec's input
        order, and returning a list of tf.Tensors in the spec's output order.
    input_signature: one tf.TensorSpec per input, in the spec's order, named as
        the spec's inputs (None for symbolic dims).
    concrete: the tf ConcreteFunction behind `function` (what tf2onnx and the
        TFLite converter take), with its own input/output names in
        `concrete_inputs` / `concrete_outputs` (same order as the spec's).
    origin: the file or folder it came from; kind: "saved_model" or "frozen_graph".
    """

    function: Any
    input_signature: list
    concrete: Any
    concrete_inputs: list[str]
    concrete_outputs: list[str]
    origin: str
    kind: str
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- the contract
PACKAGES = ("tensorflow",)   # what missing() imports: found, a CPU case imports them as it starts (backends.installed)


def missing(device: str) -> str | None:
    """Why this source cannot run on `device` here, or None when it can."""
    try:
        import tensorflow as tf
    except ImportError as error:
        return f"tensorflow is not installed ({error}); install the 'tensorflow' extra"
    if device not in ("cpu", "cuda"):
        return f"tensorflow source does not know device {device!r}"
    if device == "cuda":
        return cuda_missing(tf)
    return None


def cuda_missing(tf) -> str | None:
    """Shared with the keras source: why TensorFlow sees no GPU, or None."""
    if tf.config.list_physical_devices("GPU"):
        return None
    if not tf.test.is_built_with_cuda():
        return (f"no GPU visible to TensorFlow {tf.__version__}: tf.config.list_physical_devices('GPU') == [] "
                "and this build has no CUDA support (the tensorflow-cpu wheel has none; install "
                "tensorflow[and-cuda] on a machine with a GPU)")
    built = tf.sysconfig.get_build_info()
    return (f"no GPU visible to TensorFlow {tf.__version__}: tf.config.list_physical_devices('GPU') == [] "
            f"(built for CUDA {built.get('cuda_version', '?')}, cuDNN {built.get('cudnn_version', '?')}: "
            "check the driver and CUDA_VISIBLE_DEVICES)")


def versions() -> dict[str, str]:
    import tensorflow as tf

    return {"tensorflow": tf.__version__}


def configure_device(device: str, strict_cuda: bool) -> dict[str, Any]:
    """Set the arithmetic flags for `device` and return them for the provenance.

    TensorFlow's default on Ampere and later GPUs runs float32 matmuls and
    convolutions in TF32; strict mode turns that off (a process-wide switch).
    """
    import tensorflow as tf

    return configure_tf(tf, device, strict_cuda)


def configure_tf(tf, device: str, strict_cuda: bool) -> dict[str, Any]:
    if device != "cuda":
        return {}
    tf.config.experimental.enable_tensor_float_32_execution(not strict_cuda)
    flags: dict[str, Any] = {"tensor_float_32_execution": tf.config.experimental.tensor_float_32_execution_enabled()}
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            flags["gpu"] = tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
        except Exception:   # the details are a nicety (untestable on this CPU machine): the device's own name stands in
            flags["gpu"] = gpus[0].name
    return flags


def build(builder: Callable[[], Any]) -> TFFunctionModel:
    """Call a model spec's tensorflow builder; it must return a TFFunctionModel."""
    model = builder()
    if not isinstance(model, TFFunctionModel):
        raise CaseError("load", f"the tensorflow builder returned {type(model).__name__}, not a "
                                "harness.sources.tensorflow.TFFunctionModel (load_saved_model / load_frozen_graph make one)")
    return model


def load_file(path: Path, architecture: Callable[[], Any] | None, trust_model_code: bool, *,
              input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None) -> TFFunctionModel:
    """Load a SavedModel folder or a frozen GraphDef `.pb`.

    `architecture` is not used: both formats carry their graph. A graph with
    ops that touch files, Python or the network loads only with
    `trust_model_code` (see the module docstring). A frozen graph needs the
    names of its input and output tensors (`input_names` / `output_names`).
    """
    path = Path(path)
    if not path.exists():
        raise CaseError("load", f"model file {path} {not_a_file(path)}")
    if path.is_file() and path.name == "saved_model.pb" and (path.parent / "variables").is_dir():
        path = path.parent  # the .pb inside a SavedModel folder: the folder is the model
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise CaseError("load", f"folder {path} is not a SavedModel (it has no saved_model.pb)")
        return load_saved_model(path, _names(input_names), _names(output_names), trust_model_code=trust_model_code)
    require_file(path)
    if not input_names or not output_names:
        raise CaseError("load", f"frozen graph {path} does not say which tensors are its inputs and outputs: give "
                                "them with --input-spec (named as the graph's Placeholder ops) and --output-names "
                                "(op names, e.g. Identity)")
    return load_frozen_graph(path, list(input_names), list(output_names), trust_model_code=trust_model_code)


def fingerprint(model: TFFunctionModel) -> str:
    """A content hash: the files it was loaded from (SavedModel: graph +
    variables; frozen graph: the GraphDef) with the names and signature the
    harness uses; for a model made in memory, its graph and variable values.

    A loaded model hashes the same on every load of the same files. Two
    exports of the same model do not: TensorFlow writes the traced functions'
    unique ids into saved_model.pb (a cache miss, never a wrong hit)."""
    digest = hashlib.sha256()
    digest.update(f"{model.kind}|{model.concrete_inputs}|{model.concrete_outputs}".encode())
    for spec in model.input_signature:
        digest.update(f"|{spec.name}:{spec.dtype.name}:{spec.shape}".encode())
    content = model.extra.get("content_sha256")
    if content:
        digest.update(content.encode())
        return digest.hexdigest()
    digest.update(_graph_digest(model.concrete).encode())
    for index, variable in enumerate(getattr(model.concrete, "variables", ()) or ()):
        array = np.ascontiguousarray(variable.numpy())
        digest.update(f"{index}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def to_device(model: TFFunctionModel, device: str) -> TFFunctionModel:
    """TensorFlow places ops when they run: `run` does it under tf.device."""
    model.extra["device"] = device
    return model


def float64_copy(model: TFFunctionModel) -> None:
    """No float64 twin: a graph's dtypes are fixed in it (see the module docstring)."""
    return None


def run(model: TFFunctionModel, inputs: Sequence[np.ndarray], device: str, float64: bool = False) -> list[np.ndarray]:
    """Run the graph on numpy inputs (spec order); outputs as numpy, in spec order."""
    import tensorflow as tf

    if float64:
        raise CaseError("run", "a TensorFlow graph cannot run in float64: its dtypes are fixed in the graph")
    if len(inputs) != len(model.input_signature):
        raise CaseError("run", f"the graph takes {len(model.input_signature)} input(s) "
                               f"({[s.name for s in model.input_signature]}), got {len(inputs)}")
    with tf.device(_tf_device(device)):
        tensors = [tf.convert_to_tensor(np.asarray(a, order="C")) for a in inputs]
        outputs = model.function(*tensors)
    return [np.asarray(t.numpy()) if hasattr(t, "numpy") else np.asarray(t) for t in outputs]


def _tf_device(device: str) -> str:
    return "/GPU:0" if device == "cuda" else "/CPU:0"


# ---------------------------------------------------------------- SavedModel

def load_saved_model(path: Path, input_names: list[str] | None, output_names: list[str] | None, *,
                     trust_model_code: bool = False) -> TFFunctionModel:
    """A SavedModel folder through its `serving_default` signature, after its
    graph is scanned (refused with ops that touch files, Python or the network
    unless `trust_model_code`).

    Inputs are the signature's keyword inputs, in the order of `input_names`
    when given (each must be one of them, and all of them must be named),
    else sorted by name. Outputs are the keys of the dict the signature
    returns, in the order of `output_names` when given, else sorted. A Keras
    `model.export()` names its outputs by position (`output_0`, `output_1`,
    ...): when `output_names` match none of the keys but their number does,
    they are taken as those positions, in order (the mapping is kept in
    `extra["output_keys"]`).
    """
    import tensorflow as tf

    path = Path(path)
    if not path.is_dir():
        raise CaseError("load", f"SavedModel folder {path} {not_a_file(path)}" if not path.exists()
                        else f"{path} is a file, not a SavedModel folder")
    if not (path / "saved_model.pb").is_file():
        raise CaseError("load", f"folder {path} is not a SavedModel (it has no saved_model.pb)")
    require_file(path / "saved_model.pb", named=f"SavedModel {path}: saved_model.pb")
    if not trust_model_code:
        _refuse_unsafe_ops(f"SavedModel {path}", tf_graph_scan.scan_saved_model(_saved_model_proto(path)))
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:   # TF's loader raises any type on a damaged folder (OpError, ValueError, KeyError, ...)
        raise CaseError("load", f"SavedModel {path} could not be loaded; it may be truncated or corrupt "
                                f"({summarize_exception(error, 2)})") from None
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if SERVING_KEY not in signatures:
        raise _no_serving_signature(path, signatures)
    function = signatures[SERVING_KEY]
    args, kwargs = function.structured_input_signature
    if args:
        raise CaseError("load", f"SavedModel {path}: its '{SERVING_KEY}' signature takes positional inputs, "
                                "which a serving signature should not; re-export it with named inputs")
    available = dict(kwargs)
    keys_in = _ordered_inputs(path, list(available), input_names)
    outputs = function.structured_outputs
    if not isinstance(outputs, dict):
        outputs = {"output_0": outputs}
    keys_out, out_names = _ordered_outputs(path, list(outputs), output_names)

    in_names = list(input_names) if input_names else keys_in
    signature = [tf.TensorSpec(available[k].shape, available[k].dtype, name=_plain(n)) for k, n in zip(keys_in, in_names)]
    placeholders = _signature_placeholders(function, available)

    def call(*tensors):
        result = function(**dict(zip(keys_in, tensors)))
        return [result[k] for k in keys_out]

    return TFFunctionModel(
        function=call,
        input_signature=signature,
        concrete=function,
        concrete_inputs=[placeholders.get(k, f"{k}:0") for k in keys_in],
        concrete_outputs=[_tensor_name(outputs[k], k) for k in keys_out],
        origin=str(path),
        kind="saved_model",
        extra={"signature": SERVING_KEY, "input_keys": keys_in, "output_keys": keys_out, "output_names": out_names,
               "content_sha256": folder_sha256(path),
               # The loaded object owns the variables the signature reads: without
               # this reference they are freed and tracing the signature fails.
               "saved_model": loaded},
    )


def signature_outputs(path: Path) -> tuple[str, ...]:
    """The outputs of a SavedModel folder's serving signature, in the order
    `load_saved_model` returns them when not given `output_names` (sorted),
    read from saved_model.pb: nothing is loaded or run."""
    path = Path(path)
    require_file(path / "saved_model.pb", named=f"SavedModel {path}: saved_model.pb")
    try:
        proto = _saved_model_proto(path)
    except ImportError as error:
        raise CaseError("load", f"SavedModel {path}: its outputs are read from its '{SERVING_KEY}' signature, which "
                                f"needs tensorflow ({error}); install the 'tensorflow' extra, or name them with "
                                "--output-names") from None
    signatures = {name: signature for meta_graph in proto.meta_graphs
                  for name, signature in meta_graph.signature_def.items() if name not in _RESERVED_SIGNATURES}
    if SERVING_KEY not in signatures:
        raise _no_serving_signature(path, signatures)
    return tuple(sorted(signatures[SERVING_KEY].outputs))


def _no_serving_signature(path: Path, signatures: dict[str, Any]) -> CaseError:
    having = f"it has the signatures {sorted(signatures)}" if signatures else "it has no signatures at all"
    return CaseError("load", f"SavedModel {path} has no '{SERVING_KEY}' serving signature ({having}). Export one: "
                             "`model.export(path)` for a Keras model, or `tf.saved_model.save(module, path, "
                             "signatures={'serving_default': module.f.get_concrete_function(tf.TensorSpec(...))})`")


def _ordered_inputs(path: Path, keys: list[str], wanted: list[str] | None) -> list[str]:
    if not wanted:
        return sorted(keys)
    chosen = []
    for name in wanted:
        key = name if name in keys else _plain(name)
        if key not in keys:
            raise CaseError("load", f"SavedModel {path}: its '{SERVING_KEY}' signature has no input {name!r}; "
                                    f"its inputs are {sorted(keys)}{_did_you_mean(name, keys)}")
        chosen.append(key)
    left = sorted(set(keys) - set(chosen))
    if left:
        raise CaseError("load", f"SavedModel {path}: its '{SERVING_KEY}' signature also needs the input(s) {left}; "
                                f"name all of {sorted(keys)} in the input spec")
    return chosen


def _ordered_outputs(path: Path, keys: list[str], wanted: list[str] | None) -> tuple[list[str], list[str]]:
    if not wanted:
        ordered = sorted(keys)
        return ordered, ordered
    wanted = list(wanted)
    # A Keras export names its outputs by position (output_0, output_1, ...):
    # only then do the keys have an order to bind by.
    positional = [f"output_{i}" for i in range(len(keys))]
    by_position = sorted(keys) == sorted(positional)
    bound = bound_names(wanted, positional if by_position else keys, by_position)
    if bound is not None:
        return bound, wanted
    bad = [w for w in wanted if w not in keys]
    raise CaseError("load", f"SavedModel {path}: its '{SERVING_KEY}' signature has no output {bad[0]!r}; "
                            f"its outputs are {sorted(keys)}{_did_you_mean(bad[0], keys)} (--output-names)")


def _signature_placeholders(function, available: dict) -> dict[str, str]:
    """Signature input key -> the placeholder tensor name in its graph. The
    graph's first inputs are the flattened keyword inputs (sorted by key)."""
    try:
        flat = function.inputs[:len(available)]
        return {k: t.name for k, t in zip(sorted(available), flat)}
    except AttributeError:   # a function with no graph inputs: the keys' own names stand in
        return {}


def _tensor_name(tensor: Any, fallback: str) -> str:
    try:
        return tensor.name
    except AttributeError:   # an eager tensor has no name
        return fallback


def _saved_model_proto(path: Path) -> Any:
    """The SavedModel protobuf of a folder, parsed without loading anything."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
    except DecodeError as error:
        raise CaseError("load", f"SavedModel {path}: saved_model.pb is not a SavedModel protobuf; it is truncated "
                                f"or corrupt ({summarize_exception(error, 1)})") from None
    return proto


def _refuse_unsafe_ops(what: str, findings: list[tf_graph_scan.Finding]) -> None:
    if findings:
        raise CaseError("load", f"{what} holds ops that read or write files, call Python or use the network: "
                                f"{tf_graph_scan.describe(findings)}; running it could act on this machine beyond "
                                "computing its outputs. Pass --trust-model-code if you trust it, or export the "
                                "model without those ops.")


# ---------------------------------------------------------------- frozen graph

def load_frozen_graph(path: Path, input_names: list[str], output_names: list[str], *,
                      trust_model_code: bool = False) -> TFFunctionModel:
    """A frozen GraphDef `.pb`, cut down to the given inputs and outputs, after
    its graph is scanned (refused with ops that touch files, Python or the
    network unless `trust_model_code`).

    Names are op names ("x", meaning "x:0") or tensor names ("x:0", "split:1").
    The graph must be frozen (its variables turned into constants, as
    `convert_variables_to_constants_v2` does).
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    path = Path(path)
    require_file(path, "frozen graph")
    data = path.read_bytes()
    if not input_names or not output_names:
        raise CaseError("load", f"frozen graph {path}: give its input and output tensor names "
                                "(--input-spec names its Placeholder ops, --output-names its output ops)")
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except DecodeError as error:
        raise CaseError("load", f"{path} is not a TensorFlow GraphDef, or it is truncated or corrupt "
                                f"({summarize_exception(error, 1)})") from None
    if not graph_def.node:
        raise CaseError("load", f"{path} holds no graph nodes: it is not a frozen GraphDef (is it a SavedModel's "
                                "saved_model.pb? then give its folder)")
    if not trust_model_code:
        _refuse_unsafe_ops(f"frozen graph {path}", tf_graph_scan.scan_graph_def(graph_def))
    variables = sorted({n.op for n in graph_def.node} & _VARIABLE_OPS)
    if variables:
        raise CaseError("load", f"graph {path} is not frozen: it holds variables ({', '.join(variables)} ops); freeze "
                                "it with tf.python.framework.convert_to_constants.convert_variables_to_constants_v2")

    def _import():
        tf.compat.v1.import_graph_def(graph_def, name="")

    try:
        wrapped = tf.compat.v1.wrap_function(_import, [])
    except (ValueError, tf.errors.OpError) as error:   # an unknown input: ValueError; an unknown op: NotFoundError
        raise CaseError("load", f"graph {path} could not be imported; it may be truncated or corrupt, or use ops "
                                f"this TensorFlow lacks ({summarize_exception(error, 2)})") from None
    graph = wrapped.graph
    feeds = [_graph_tensor(graph, path, name, "input") for name in input_names]
    fetches = [_graph_tensor(graph, path, name, "output") for name in output_names]
    try:
        pruned = wrapped.prune(feeds=feeds, fetches=fetches)
    except Exception as error:   # TF's pruning raises ValueError, KeyError, its own errors on a cut it cannot make
        raise CaseError("load", f"graph {path}: the outputs {list(output_names)} cannot be computed from the "
                                f"inputs {list(input_names)} ({summarize_exception(error, 2)})") from None

    def call(*tensors):
        return list(pruned(*tensors))

    signature = [tf.TensorSpec(_shape(t), t.dtype, name=_plain(n)) for t, n in zip(feeds, input_names)]
    return TFFunctionModel(
        function=call,
        input_signature=signature,
        concrete=pruned,
        concrete_inputs=[t.name for t in feeds],
        concrete_outputs=[t.name for t in fetches],
        origin=str(path),
        kind="frozen_graph",
        extra={"graph_def": graph_def, "content_sha256": hashlib.sha256(data).hexdigest()},
    )


def _graph_tensor(graph, path: Path, name: str, role: str):
    tensor_name = name if re.search(r":\d+$", name) else f"{name}:0"
    try:
        return graph.get_tensor_by_name(tensor_name)
    except (KeyError, ValueError):
        pass
    ops = graph.get_operations()
    if role == "input":
        candidates = [op.name for op in ops if op.type == "Placeholder"]
        listing = f"its Placeholder ops are {candidates}" if candidates else "it has no Placeholder ops"
        option = "--input-spec"
    else:
        consumed = {t.op.name for op in ops for t in op.inputs}
        sinks = [op.name for op in ops if op.name not in consumed and op.type not in ("Const", "NoOp", "Placeholder")]
        candidates = sinks or [op.name for op in ops if op.type not in ("Const", "NoOp")][-10:]
        listing = f"ops that no other op reads (likely outputs): {candidates[:10]}"
        option = "--output-names"
    raise CaseError("load", f"frozen graph {path} has no {role} tensor {name!r}; {listing}"
                            f"{_did_you_mean(name, [op.name for op in ops])} ({option})")


def _shape(tensor) -> Any:
    shape = tensor.shape
    return None if shape.rank is None else [d for d in shape.as_list()]


# ---------------------------------------------------------------- helpers

def _names(names: Sequence[str] | None) -> list[str] | None:
    return list(names) if names else None


def _plain(name: str) -> str:
    """A name without a tensor index ("x:0" -> "x")."""
    return re.sub(r":\d+$", "", name)


def _did_you_mean(name: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(_plain(name), list(options), n=3)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _graph_digest(concrete: Any) -> str:
    """The concrete function's graph, serialized deterministically, with the
    unique-id suffixes TensorFlow gives traced functions renumbered in order
    of appearance, so that two traces of the same function hash the same."""
    try:
        data = concrete.graph.as_graph_def().SerializeToString(deterministic=True)
    except ValueError:   # a graph over protobuf's 2 GiB: its repr stands in (no cache hit across runs)
        return repr(concrete)
    names: dict[bytes, bytes] = {}

    def renumber(match: re.Match) -> bytes:
        return names.setdefault(match.group(0), b"__fn_%d" % len(names))

    return hashlib.sha256(re.sub(rb"__inference_[A-Za-z0-9_.]*?_\d+\b", renumber, data)).hexdigest()


def bind(model: Any, spec: Any) -> Any:
    """The model called with the spec's inputs in order, returning its outputs
    in order: `run` already does so for this source."""
    return model
