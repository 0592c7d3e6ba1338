"""MXNet (1.9, Gluon) as a source: build or load the original model, run it as the reference.

mxnet is imported inside the functions only, and only through `import_mxnet()`,
which first applies two shims that mxnet 1.9.1 needs on today's numpy and onnx:

- numpy removed the alias `np.bool` in 1.24; mxnet 1.9.1 uses it at import
  (mxnet/numpy/utils.py: `bool = onp.bool`). Where numpy lacks it, the shim
  sets `np.bool = bool` (what the alias was).
- onnx removed the module `onnx.mapping` in 1.19; `mx.onnx.export_model`
  imports it (mxnet/onnx/mx2onnx/_export_model.py, `from onnx import helper,
  mapping, shape_inference`, and its op translations use
  `onnx.mapping.NP_TYPE_TO_TENSOR_TYPE`), and on ImportError mxnet says,
  wrongly, that onnx and protobuf are not installed. Where `import
  onnx.mapping` fails, the shim registers a small module `onnx.mapping` with
  `NP_TYPE_TO_TENSOR_TYPE` and `TENSOR_TYPE_TO_NP_TYPE`, built from
  `onnx.helper.np_dtype_to_tensor_dtype` / `tensor_dtype_to_np_dtype` over the
  ONNX tensor types that numpy can hold (no bfloat16 / float8 / 4-bit types).

Both are idempotent; `SHIMS_APPLIED` says which were applied (provenance).

Files (`load_file`):
- a symbol/params pair from `HybridBlock.export`: `PREFIX-symbol.json` (the
  params are the `PREFIX-NNNN.params` with the highest epoch next to it) or a
  `PREFIX-NNNN.params` whose `PREFIX-symbol.json` is next to it. Loaded with
  `gluon.SymbolBlock.imports`; before that the harness checks that the params
  fill the symbol exactly (no parameter missing, none extra, every shape fits
  the shape the symbol records), so a mismatch is a load error naming the
  parameter, not a failure deep in the first forward.
- `architecture` (a builder returning a Gluon HybridBlock) + a `.params` file
  (`save_parameters`) with no symbol next to it: `load_parameters`, strict.
`.params` files are MXNet's own NDArray format (a header and raw arrays, read
by `mx.nd.load`), not pickle: loading one runs no code, so no trust is needed;
`trust_model_code` is accepted for the common signature and not used.

float64: `float64_copy` rebuilds the model as a SymbolBlock from its graph with
copies of its parameters and casts it to float64; `run(..., float64=True)`
feeds float64 inputs and refuses narrower float outputs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import sys
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harness.errors import CaseError, summarize_exception
from harness.model_file import glob_escape, require_file
from harness.sources.model_io import float64_status  # noqa: F401  (the twin's account, which the engine asks for)
from harness.sources.model_io import check_twin_outputs, prepare_inputs, refuse_twin, select_outputs

NAME = "mxnet"
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("mxnet",)
# The names its model files end with (matrix.py finds a file's source by them, after every source's claims_file).
FILE_SUFFIXES = ("-symbol.json", ".params")

INSTALL_HINT = "pip install mxnet==1.9.1 (it needs numpy<2)"

# Which shims import_mxnet() applied, for versions() and the provenance:
# {"numpy_bool_alias": bool, "onnx_mapping_module": bool}; empty until import_mxnet() ran.
SHIMS_APPLIED: dict[str, bool] = {}

_EPOCH_PARAMS = re.compile(r"^(?P<prefix>.*)-(?P<epoch>\d+)\.params$")
# Names MXNet gives to parameters and auxiliary states (Gluon layers, the old symbol API).
_PARAM_SUFFIXES = ("weight", "bias", "gamma", "beta", "running_mean", "running_var", "moving_mean",
                   "moving_var", "alpha", "i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")
_PARAM_ATTRS = ("__shape__", "__lr_mult__", "__wd_mult__", "__init__")


# ---------------------------------------------------------------- import and shims

def _shim_numpy_bool() -> bool:
    # `"bool" in vars(np)`, not hasattr: numpy 1.24-1.26 warns (FutureWarning) on np.bool lookups.
    if "bool" in vars(np):
        return False
    np.bool = bool  # type: ignore[attr-defined]  # the alias numpy 1.24 removed
    return True


class _DtypeKeyed(dict):
    """A dict keyed by np.dtype that also finds its values by scalar type or
    name (np.float32, "float32"), as onnx.mapping's dicts were used."""

    def __missing__(self, key: Any) -> Any:
        if key is None or isinstance(key, np.dtype):  # np.dtype(None) is float64: not a match
            raise KeyError(key)
        try:
            dtype = np.dtype(key)
        except TypeError:
            raise KeyError(key) from None
        return self[dtype]

    def __contains__(self, key: Any) -> bool:
        try:
            self[key]
            return True
        except KeyError:
            return False


def _shim_onnx_mapping() -> bool:
    try:
        import onnx
    except ImportError:
        return False  # no onnx: nothing to shim; mx.onnx says onnx is missing, which is then true
    try:
        import onnx.mapping  # noqa: F401
        return False
    except ImportError:
        pass
    from onnx import TensorProto, helper

    tensor_to_np: dict[int, np.dtype] = {}
    np_to_tensor: _DtypeKeyed = _DtypeKeyed()
    for tensor_type in TensorProto.DataType.values():
        if tensor_type == TensorProto.UNDEFINED:
            continue
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type))
        except KeyError:   # a type onnx maps to no numpy dtype
            continue
        # Only dtypes numpy itself holds: bfloat16/float8/int4 map to ml_dtypes or stand-ins.
        if dtype.type.__module__ != "numpy" or dtype.kind == "V":
            continue
        if tensor_type in (TensorProto.BFLOAT16,):
            continue
        tensor_to_np[int(tensor_type)] = dtype
        try:
            if helper.np_dtype_to_tensor_dtype(dtype) == tensor_type:
                np_to_tensor.setdefault(dtype, int(tensor_type))
        except KeyError:   # a numpy dtype onnx maps to no tensor type: the old mapping lacked it too
            pass
    mapping = types.ModuleType("onnx.mapping")
    mapping.__doc__ = ("Shim of the module onnx 1.19 removed, for mxnet 1.9.1's mx.onnx.export_model; "
                       "registered by harness.sources.mxnet.import_mxnet().")
    mapping.NP_TYPE_TO_TENSOR_TYPE = np_to_tensor
    mapping.TENSOR_TYPE_TO_NP_TYPE = tensor_to_np
    sys.modules["onnx.mapping"] = mapping
    onnx.mapping = mapping  # type: ignore[attr-defined]
    return True


def import_mxnet() -> Any:
    """Apply the shims (once) and import mxnet; raises ImportError when it cannot be imported."""
    if not SHIMS_APPLIED:
        SHIMS_APPLIED["numpy_bool_alias"] = _shim_numpy_bool()
        SHIMS_APPLIED["onnx_mapping_module"] = _shim_onnx_mapping()
    import mxnet

    return mxnet

PACKAGES = ("mxnet",)   # what missing() imports: found, a CPU case imports them as it starts (backends.installed)


def missing(device: str) -> str | None:
    """Why this source cannot run on `device` here, or None when it can."""
    try:
        mx = import_mxnet()
    except Exception as error:  # ImportError, or an AttributeError/OSError from a broken install
        return f"mxnet cannot be imported ({summarize_exception(error, 1)}); {INSTALL_HINT}"
    if device == "cuda":
        try:
            gpus = mx.context.num_gpus()
        except mx.base.MXNetError:   # a CUDA build without a driver: no GPU, said next
            gpus = 0
        if gpus == 0:
            return (f"no GPU visible to MXNet {mx.__version__} (mx.context.num_gpus() is 0; the PyPI mxnet "
                    "wheel is CPU-only; mxnet-cuXXX builds have GPU support)")
        return None
    if device != "cpu":
        return f"mxnet source does not know device {device!r}"
    return None


def versions() -> dict[str, str]:
    mx = import_mxnet()
    found = {"mxnet": mx.__version__}
    applied = [name for name, done in SHIMS_APPLIED.items() if done]
    if applied:
        found["mxnet_shims"] = ",".join(applied)
    return found


def configure_device(device: str, strict_cuda: bool) -> dict[str, Any]:
    """MXNet has no TF32 switch to set; on CUDA the provenance records the GPU count."""
    mx = import_mxnet()
    if device != "cuda":
        return {}
    return {"gpus": mx.context.num_gpus()}


def _context(device: str) -> Any:
    mx = import_mxnet()
    return mx.gpu(0) if device == "cuda" else mx.cpu()


# ---------------------------------------------------------------- build and load

def build(builder: Callable[[], Any]) -> Any:
    """Call a model spec's mxnet builder: an initialized, hybridized gluon.HybridBlock."""
    mx = import_mxnet()
    model = builder()
    if not isinstance(model, mx.gluon.HybridBlock):
        raise CaseError("load", f"the mxnet builder returned {type(model).__name__}, not a mxnet.gluon.HybridBlock "
                                "(initialized and hybridized)")
    return model


def load_file(path: Path, architecture: Callable[[], Any] | None, trust_model_code: bool, *,
              input_names: Sequence[str] | None = None) -> Any:
    """Load a symbol/params pair, or an architecture's `.params` (see the module docstring)."""
    if architecture is not None:   # a symbol names its own inputs ("data"): an architecture's spec, by position
        input_names = None
    import_mxnet()
    path = Path(path)
    if path.name.endswith("-symbol.json"):
        require_file(path, "symbol file")
        prefix = path.name[: -len("-symbol.json")]
        params = _latest_params(path.parent, prefix)
        if params is None:
            raise CaseError("load", f"symbol file {path} has no params file next to it: expected "
                                    f"{path.parent / (prefix + '-0000.params')} (PREFIX-EPOCH.params, as "
                                    "HybridBlock.export writes it)")
        return _load_pair(path, params, input_names)
    if path.name.endswith(".params"):
        require_file(path, "params file")
        match = _EPOCH_PARAMS.match(path.name)
        prefix = match.group("prefix") if match else path.name[: -len(".params")]
        symbol = path.parent / f"{prefix}-symbol.json"
        if symbol.is_file():
            return _load_pair(symbol, path, input_names)
        if architecture is not None:
            return _load_into_architecture(path, architecture)
        raise CaseError("load", f"params file {path} holds weights only and its symbol file is missing: expected "
                                f"{symbol} next to it (HybridBlock.export writes both), or name the architecture "
                                "the weights belong to: --model ARCH=PATH")
    raise CaseError("load", f"{path} is not an MXNet model file: give PREFIX-symbol.json or a .params file")


def _latest_params(folder: Path, prefix: str) -> Path | None:
    found = []
    for candidate in folder.glob(f"{glob_escape(prefix)}-*.params"):
        match = _EPOCH_PARAMS.match(candidate.name)
        if match and match.group("prefix") == prefix and candidate.is_file():
            found.append((int(match.group("epoch")), candidate))
    return max(found)[1] if found else None


def _read_params(path: Path) -> dict[str, Any]:
    mx = import_mxnet()
    require_file(path, "params file")
    try:
        loaded = mx.nd.load(str(path))
    except mx.base.MXNetError as error:
        raise CaseError("load", f"params file {path} is not a readable MXNet NDArray file: it is truncated or "
                                f"corrupt ({_short(error)})") from None
    if not isinstance(loaded, dict):
        raise CaseError("load", f"params file {path} holds an unnamed list of {len(loaded)} arrays, not named "
                                "parameters (save them with HybridBlock.export or save_parameters)")
    return loaded


def _read_symbol(path: Path) -> Any:
    mx = import_mxnet()
    require_file(path, "symbol file")
    text = path.read_text(errors="replace")
    try:
        graph = json.loads(text)
    except ValueError as error:
        raise CaseError("load", f"symbol file {path} is not valid JSON: it is truncated or corrupt ({error})") from None
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list) or "heads" not in graph:
        raise CaseError("load", f"symbol file {path} is JSON but not an MXNet symbol (no 'nodes' and 'heads')")
    try:
        return mx.sym.load_json(text)
    except mx.base.MXNetError as error:
        raise CaseError("load", f"symbol file {path} is not a graph MXNet can read ({_short(error)})") from None


def _load_pair(symbol_file: Path, params_file: Path, input_names: Sequence[str] | None) -> Any:
    mx = import_mxnet()
    symbol = _read_symbol(symbol_file)
    params = {name.split(":", 1)[1] if name.startswith(("arg:", "aux:")) else name: value
              for name, value in _read_params(params_file).items()}
    arguments = symbol.list_arguments()
    auxiliary = symbol.list_auxiliary_states()
    attrs = symbol.attr_dict()
    if input_names:
        input_names = list(input_names)
        unknown = [n for n in input_names if n not in arguments]
        if unknown:
            free = [a for a in arguments if a not in params]
            raise CaseError("load", f"symbol {symbol_file} has no input named {', '.join(map(repr, unknown))}; "
                                    f"its inputs (arguments without a value in {params_file.name}) are {free}")
    else:
        input_names = [a for a in arguments if a not in params]
        # A free argument that looks like a parameter is a parameter the file lacks, not an input.
        lacking = [a for a in input_names if _looks_like_parameter(a, attrs.get(a, {}))]
        if lacking:
            raise CaseError("load", f"params file {params_file} does not fit symbol {symbol_file.name}: it lacks "
                                    f"parameter {lacking[0]!r}" + (f" (and {len(lacking) - 1} more)" if len(lacking) > 1 else ""))
        if not input_names:
            raise CaseError("load", f"symbol {symbol_file} has no inputs: every argument has a value in {params_file}")
    wanted = [a for a in arguments if a not in input_names] + list(auxiliary)
    lacking = [n for n in wanted if n not in params]
    if lacking:
        raise CaseError("load", f"params file {params_file} does not fit symbol {symbol_file.name}: it lacks "
                                f"parameter {lacking[0]!r}" + (f" (and {len(lacking) - 1} more)" if len(lacking) > 1 else ""))
    extra = sorted(set(params) - set(wanted))
    if extra:
        raise CaseError("load", f"params file {params_file} does not fit symbol {symbol_file.name}: it holds "
                                f"{extra[0]!r}, which the symbol has no place for"
                                + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    for name in wanted:
        recorded = _recorded_shape(attrs.get(name, {}))
        shape = tuple(params[name].shape)
        if recorded is not None and (len(recorded) != len(shape)
                                     or any(r and r != s for r, s in zip(recorded, shape))):
            raise CaseError("load", f"params file {params_file} does not fit symbol {symbol_file.name}: parameter "
                                    f"{name!r} has shape {shape}, the symbol expects {recorded} (0: any)")
    try:
        # Shape inference from the parameters alone: catches what the graph can tell without the inputs.
        symbol.infer_shape_partial(**{n: params[n].shape for n in wanted})
    except mx.base.MXNetError as error:
        raise CaseError("load", f"params file {params_file} does not fit symbol {symbol_file.name}: "
                                f"{_short(error)}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Cannot decide type for the following arguments" for the inputs
            return mx.gluon.SymbolBlock.imports(str(symbol_file), input_names, str(params_file), ctx=mx.cpu())
    except (AssertionError, mx.base.MXNetError) as error:   # Gluon asserts a parameter the file lacks
        raise CaseError("load", f"symbol {symbol_file} with params {params_file} could not be loaded: "
                                f"{_short(error)}") from None


def _looks_like_parameter(name: str, attrs: dict) -> bool:
    return any(key in attrs for key in _PARAM_ATTRS) or name in _PARAM_SUFFIXES \
        or any(name.endswith("_" + suffix) for suffix in _PARAM_SUFFIXES)


def _recorded_shape(attrs: dict) -> tuple[int, ...] | None:
    """The shape a Gluon export records on a parameter (`__shape__`, 0 for a dim not known then)."""
    text = attrs.get("__shape__")
    if not text:
        return None
    try:
        value = json.loads(text.replace("(", "[").replace(")", "]").replace(",]", "]"))
        return tuple(int(v) for v in value)
    except (ValueError, TypeError):
        return None


def _load_into_architecture(path: Path, architecture: Callable[[], Any]) -> Any:
    mx = import_mxnet()
    _read_params(path)  # empty / truncated files: a clear message first
    model = build(architecture)
    try:
        model.load_parameters(str(path), ctx=mx.cpu(), allow_missing=False, ignore_extra=False)
    except (AssertionError, mx.base.MXNetError) as error:   # Gluon asserts a shape or a name that differs
        raise CaseError("load", f"weights in {path} do not fit the architecture: {_short(error)}") from None
    return model


def _short(error: BaseException) -> str:
    """An MXNet error in one line, without its C++ stack trace."""
    text = str(error).strip() or repr(error)
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith(("Stack trace", "[bt]", "File \""))]
    short = " ".join(lines[:3])
    return f"{type(error).__name__}: {short[:400]}{'...' if len(short) > 400 else ''}"


# ---------------------------------------------------------------- graph, fingerprint, copies

def symbol_graph(model: Any) -> tuple[list, Any]:
    """The model's (input symbols, output symbol): the cached graph of a
    hybridized block that has run (and of every SymbolBlock), else traced by
    calling the block on symbol variables."""
    mx = import_mxnet()
    cached = getattr(model, "_cached_graph", None)
    if cached:
        inputs, outputs = cached
        return list(inputs), outputs
    count = _input_count(model)
    names = ["data"] if count == 1 else [f"data{i}" for i in range(count)]
    inputs = [mx.sym.var(n) for n in names]
    outputs = model(*inputs)
    if isinstance(outputs, (list, tuple)):
        outputs = mx.sym.Group(select_outputs(outputs, _is_array, tensors="symbols"))
    return inputs, outputs


def _input_count(model: Any) -> int:
    try:
        parameters = list(inspect.signature(model.hybrid_forward).parameters.values())[1:]  # after F
    except (TypeError, ValueError):
        return 1
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty]
    return max(1, len(positional))


def fingerprint(model: Any) -> str:
    """A content hash of the model: its graph (the symbol JSON) and every
    parameter's name, shape, dtype and bytes, sorted by name. The block's own
    name prefix (Gluon's process-wide counter: hybridsequential0_, ...) is
    replaced by a placeholder, so two builds of one model hash the same."""
    digest = hashlib.sha256()
    prefix = getattr(model, "prefix", "") or ""

    def canonical(text: str) -> str:
        return text.replace(prefix, "<prefix>") if prefix else text

    try:
        _, outputs = symbol_graph(model)
        digest.update(canonical(outputs.tojson()).encode())
    except Exception:   # tracing runs the user's hybrid_forward (any type): the class and its text stand in
        digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
        digest.update(repr(model).encode())
    for name, parameter in sorted(model.collect_params().items()):
        try:
            array = np.ascontiguousarray(parameter.data().asnumpy())
        except RuntimeError:  # deferred initialization (DeferredInitializationError): no values until the block runs
            digest.update(f"{canonical(name)}:{parameter.dtype}:{parameter.shape}:deferred".encode())
            continue
        digest.update(f"{canonical(name)}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _copy_as_symbol_block(model: Any) -> Any:
    """A SymbolBlock on the model's graph with copies of its parameters (on the CPU)."""
    mx = import_mxnet()
    inputs, outputs = symbol_graph(model)
    arrays = {}
    auxiliary = set(outputs.list_auxiliary_states())
    for name, parameter in model.collect_params().items():
        kind = "aux" if name in auxiliary else "arg"
        arrays[f"{kind}:{name}"] = parameter.data().copyto(mx.cpu())
    with tempfile.TemporaryDirectory() as folder:
        symbol_file = Path(folder) / "model-symbol.json"
        params_file = Path(folder) / "model-0000.params"
        outputs.save(str(symbol_file))
        mx.nd.save(str(params_file), arrays)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mx.gluon.SymbolBlock.imports(str(symbol_file), [i.name for i in inputs], str(params_file),
                                                ctx=mx.cpu())


def float64_copy(model: Any) -> Any | None:
    """A float64 twin of the model for the noise floor, or None if it cannot be made."""
    try:
        twin = _copy_as_symbol_block(model)
        twin.cast("float64")
        twin.hybridize()
        return twin
    except Exception as error:   # the copy runs the user's hybrid_forward (any type) and MXNet's export; recorded
        refuse_twin(model, f"the model could not be copied to float64 ({_short(error)})")
        return None


def export_pair(model: Any, prefix: str | Path, example: Sequence[np.ndarray]) -> tuple[Path, Path]:
    """Hybridize `model`, run it once on `example` (numpy arrays, spec order)
    and export it: returns (PREFIX-symbol.json, PREFIX-0000.params)."""
    mx = import_mxnet()
    context = model_context(model)
    model.hybridize()
    model(*[mx.nd.array(np.asarray(x, order="C"), ctx=context, dtype=x.dtype) for x in example])
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    model.export(str(prefix), epoch=0)
    return Path(f"{prefix}-symbol.json"), Path(f"{prefix}-0000.params")


def model_context(model: Any) -> Any:
    mx = import_mxnet()
    for parameter in model.collect_params().values():
        try:
            return parameter.list_ctx()[0]
        except RuntimeError:   # a parameter not initialized yet has no context: the next one may
            continue
    return mx.cpu()


# ---------------------------------------------------------------- device, run

def to_device(model: Any, device: str) -> Any:
    # Gluon 1.x blocks have no reset_ctx of their own: their parameters do.
    model.collect_params().reset_ctx(_context(device))
    return model


def run(model: Any, inputs: Sequence[np.ndarray], device: str, float64: bool = False) -> list[np.ndarray]:
    """Run the model on numpy inputs (spec order); outputs as numpy, in order."""
    mx = import_mxnet()
    context = _context(device)
    arrays = [mx.nd.array(array, ctx=context, dtype=array.dtype) for array in prepare_inputs(inputs, float64)]
    try:
        outputs = model(*arrays)
        # asnumpy waits: errors of the async engine land here
        result = [o.asnumpy() for o in select_outputs(outputs, _is_array, tensors="NDArrays")]
    except mx.base.MXNetError as error:
        raise CaseError("run", f"MXNet failed to run the model: {_short(error)}") from None
    return check_twin_outputs(result) if float64 else result


def _is_array(value: Any) -> bool:
    """An NDArray, or a symbol where the block is traced."""
    return hasattr(value, "asnumpy") or hasattr(value, "tojson")


def bind(model: Any, spec: Any) -> Any:
    """The model called with the spec's inputs in order, returning its outputs
    in order: `run` already does so for this source."""
    return model
