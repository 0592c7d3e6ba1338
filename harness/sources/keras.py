"""Keras (3, on the TensorFlow backend) as a source: build or load a
`keras.Model`, run it as the reference.

tensorflow and keras are imported inside the functions, never at module level.

Files (`load_file`):
- `.keras` archives and legacy `.h5` models load with
  `keras.models.load_model(path, safe_mode=not trust_model_code, compile=False)`.
  Before that the model's config is read from the file (the archive's
  config.json, the h5's `model_config` attribute) and a Lambda layer is
  refused unless `trust_model_code`: its Python (bytecode or a function
  reference) would run. Keras 3's safe_mode refuses lambdas in both formats;
  the harness's own check also covers Lambda layers that name a function and
  says which layer it is. A class Keras cannot find (an unregistered custom
  layer) is named with the layer that uses it.
- weights without an architecture: a TF checkpoint (a prefix with
  `.index`/`.data-*` files, a folder with a `checkpoint` file, a `.ckpt`
  prefix), a `.weights.h5`, or a legacy `.h5` holding weights only. These need
  `architecture` (--model ARCH=PATH); the weights must fill it exactly, and a
  file with values that the architecture has no place for is refused too
  (Keras and tf.train.Checkpoint would silently load the part that fits).
  After a checkpoint is read, every layer refreshes what it derives from its
  variables (`finalize_states`: an adapted Normalization's mean and variance).

float64: `float64_copy` rebuilds the model from its config with every float32
dtype policy set to float64 and the weights cast (then refreshes what layers
derive from their variables: `finalize_states`); a model whose config cannot
be rebuilt (subclassed, unregistered custom layers) gets None. `run(...,
float64=True)` refuses to return float32 outputs, so a layer that casts to
float32 inside cannot pass for a float64 reference.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from harness.errors import CaseError, summarize_exception
from harness.model_file import CONFIG_MEMBER_BUDGET, check_zip, read_member, require_file
from harness.sources.model_io import float64_status  # noqa: F401  (the twin's account, which the engine asks for)
from harness.sources.model_io import check_twin_outputs, prepare_inputs, refuse_twin, select_outputs

NAME = "keras"
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("keras",)
# The names its model files end with (matrix.py finds a file's source by them, after every source's claims_file).
FILE_SUFFIXES = (".keras", ".h5", ".hdf5", ".ckpt")


def claims_file(path: Path) -> bool:
    """A TF checkpoint prefix, whatever its name (restored into a Keras architecture); no framework imported."""
    return Path(f"{path}.index").is_file()


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_DATA_SHARD = re.compile(r"\.data-\d+-of-\d+$")

PACKAGES = ("tensorflow", "keras")   # what missing() imports: found, a CPU case imports them as it starts (backends.installed)


def missing(device: str) -> str | None:
    """Why this source cannot run on `device` here, or None when it can."""
    try:
        import tensorflow as tf
    except ImportError as error:
        return f"tensorflow is not installed ({error}); install the 'tensorflow' extra"
    try:
        import keras
    except ImportError as error:
        return f"keras is not installed ({error}); install the 'tensorflow' extra"
    backend = keras.backend.backend()
    if backend != "tensorflow":
        return (f"keras {keras.__version__} runs on the {backend!r} backend; the keras source needs "
                "KERAS_BACKEND=tensorflow")
    if device not in ("cpu", "cuda"):
        return f"keras source does not know device {device!r}"
    if device == "cuda":
        from harness.sources.tensorflow import cuda_missing

        return cuda_missing(tf)
    return None


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def configure_device(device: str, strict_cuda: bool) -> dict[str, Any]:
    """TF32 as TensorFlow sets it (on by default on Ampere+), off in strict mode."""
    import tensorflow as tf

    from harness.sources.tensorflow import configure_tf

    return configure_tf(tf, device, strict_cuda)


def build(builder: Callable[[], Any]) -> Any:
    """Call a model spec's keras builder; it must return a keras.Model."""
    import keras

    model = builder()
    if not isinstance(model, keras.Model):
        raise CaseError("load", f"the keras builder returned {type(model).__name__}, not a keras.Model")
    return model


# ---------------------------------------------------------------- files

def load_file(path: Path, architecture: Callable[[], Any] | None, trust_model_code: bool) -> Any:
    """Load a user's Keras model file, or weights into `architecture` (see the module docstring)."""
    path = Path(path)
    prefix = _checkpoint_prefix(path)
    if prefix is not None:
        return _load_checkpoint(path, prefix, architecture)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            raise CaseError("load", f"{path} is a SavedModel folder: load it with the tensorflow source")
        indexes = sorted(p.name for p in path.glob("*.index"))
        if len(indexes) > 1:
            raise CaseError("load", f"folder {path} holds several TF checkpoints ({indexes}) and no 'checkpoint' "
                                    "file naming the latest: give the prefix of one (e.g. PATH/model.ckpt)")
        raise CaseError("load", f"folder {path} is neither a TF checkpoint (no 'checkpoint' or .index file) "
                                "nor a SavedModel")
    require_file(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if path.name.endswith(".weights.h5"):
        return _load_weights_file(path, architecture, keras3=True)
    if head == _HDF5_MAGIC or path.suffix in (".h5", ".hdf5"):
        config = _h5_model_config(path)
        if config is None:  # a legacy weights-only file (save_weights in Keras 2)
            return _load_weights_file(path, architecture, keras3=False)
        return _load_model(path, config, trust_model_code)
    if head.startswith(b"PK") or path.suffix == ".keras":
        return _load_model(path, _keras_archive_config(path), trust_model_code)
    raise CaseError("load", f"model file {path} is not a Keras file (.keras archive, .h5 model or weights) "
                            "nor a TF checkpoint")


def _checkpoint_prefix(path: Path) -> str | None:
    """The TF checkpoint prefix `path` names, or None when it is not one."""
    import tensorflow as tf

    text = str(path)
    if path.is_dir():
        if (path / "checkpoint").is_file():
            return tf.train.latest_checkpoint(text) or text
        indexes = sorted(path.glob("*.index"))
        return str(indexes[0])[: -len(".index")] if len(indexes) == 1 else None
    if text.endswith(".index") and path.is_file():
        return text[: -len(".index")]
    if _DATA_SHARD.search(text) and path.is_file():
        return _DATA_SHARD.sub("", text)
    if Path(text + ".index").is_file():
        return text
    if path.suffix == ".ckpt" and not path.is_file():
        return text  # a prefix whose .index is missing: reported by _load_checkpoint
    return None


def _load_checkpoint(path: Path, prefix: str, architecture: Callable[[], Any] | None) -> Any:
    import tensorflow as tf

    if not Path(prefix + ".index").is_file():
        raise CaseError("load", f"TF checkpoint {path} does not exist (no {Path(prefix).name}.index beside it)")
    require_file(Path(prefix + ".index"), named=f"TF checkpoint {path}: {Path(prefix).name}.index")
    try:
        keys = [name for name, _ in tf.train.list_variables(prefix)]
    except tf.errors.OpError as error:   # DataLossError, NotFoundError, or OpError's "not an sstable"
        raise CaseError("load", f"TF checkpoint {path} cannot be read; it may be truncated or corrupt "
                                f"({summarize_exception(error, 1)})") from None
    if architecture is None:
        raise CaseError("load", f"TF checkpoint {path} holds weights only; name the architecture they belong "
                                "to: --model ARCH=PATH with ARCH a zoo model or one from your model file")
    model = build(architecture)
    roots = sorted({k.split("/", 1)[0] for k in keys if "/" in k and not k.startswith("_")} - {"save_counter"})
    root = "model" if "model" in roots else (roots[0] if len(roots) == 1 else None)
    if root is None:
        raise CaseError("load", f"TF checkpoint {path} holds no 'model' object (top-level names: {roots}); write "
                                "it with tf.train.Checkpoint(model=model)")
    values = [k for k in keys if k.startswith(root + "/") and k.endswith("/.ATTRIBUTES/VARIABLE_VALUE")
              and "/.OPTIMIZER_SLOT/" not in k]
    places = max(len(model.weights), len(model.variables))
    if len(values) > places:
        raise CaseError("load", f"weights in {path} do not fit the architecture: the checkpoint holds {len(values)} "
                                f"values under '{root}' but the model has {places} variables")
    try:
        status = tf.train.Checkpoint(**{root: model}).read(prefix)
    except (ValueError, AssertionError) as error:  # a shape that differs, an object that is not there
        raise CaseError("load", f"weights in {path} do not fit the architecture: {_short(error)}") from None
    except Exception as error:  # the data files: short reads, bad checksums
        raise CaseError("load", f"TF checkpoint {path} cannot be read; its data files may be truncated or "
                                f"corrupt ({_short(error)})") from None
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        raise CaseError("load", f"weights in {path} do not fit the architecture: {_short(error)}") from None
    finalize_states(model)
    return model


def finalize_states(model: Any) -> None:
    """Let every layer recompute what it derives from its variables.

    An adapted `keras.layers.Normalization` normalizes with tensors made from
    its mean and variance variables when it is adapted or loaded by Keras
    (`finalize_state`); a write to the variables from elsewhere (a
    tf.train.Checkpoint read, `set_weights`) leaves them stale, and the layer
    would go on normalizing with the old values (for a model built without
    weights: mean 0, variance 1). Keras' lookup and discretization layers work
    the same way."""
    for layer in model._flatten_layers(include_self=False):
        finalize = getattr(layer, "finalize_state", None)
        if callable(finalize):
            finalize()


def _load_weights_file(path: Path, architecture: Callable[[], Any] | None, keras3: bool) -> Any:
    kind = "weights file" if keras3 else "legacy .h5 file with weights only (no model config)"
    _h5_open_check(path)
    if architecture is None:
        raise CaseError("load", f"{path} is a {kind}; name the architecture they belong to: --model ARCH=PATH "
                                "with ARCH a zoo model or one from your model file")
    model = build(architecture)
    if keras3:
        stored = _h5_dataset_count(path)
        places = max(len(model.weights), len(model.variables))
        if stored > places:
            raise CaseError("load", f"weights in {path} do not fit the architecture: the file holds {stored} "
                                    f"arrays but the model has {places} variables")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(path))
        except Exception as error:   # Keras raises ValueError, KeyError, TypeError, h5py's: any says they do not fit
            raise CaseError("load", f"weights in {path} do not fit the architecture: {_short(error)}") from None
    for warning in caught:
        text = str(warning.message)
        if "freshly-initialized" in text or "could not be loaded" in text:
            # Keras loads what fits and warns about the rest: a partial load is no load.
            raise CaseError("load", f"weights in {path} do not fit the architecture: {text.splitlines()[0][:400]}")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return model


def _load_model(path: Path, config: dict, trust_model_code: bool) -> Any:
    import keras

    lambdas, custom = _code_holders(config)
    if lambdas and not trust_model_code:
        raise CaseError("load", f"model file {path} has Lambda layer(s) {', '.join(lambdas)}, which hold Python "
                                "code; loading them would run code from the file. Pass --trust-model-code if you "
                                "trust it, or rebuild the model from Keras's own layers.")
    if custom and not trust_model_code:
        raise CaseError("load", f"model file {path} uses custom classes or functions, code from outside Keras that "
                                f"would run with arguments from the file, in layer(s) {', '.join(custom)}. Pass "
                                "--trust-model-code if you trust it; the custom objects must then be registered "
                                "(@keras.saving.register_keras_serializable) in a Python model file that is imported "
                                "before the run, or give a Python model file (--model your_models.py) that builds "
                                "the model.")
    try:
        return keras.models.load_model(str(path), safe_mode=not trust_model_code, compile=False)
    except Exception as error:   # loading runs the layers' own from_config, custom ones too: any type, said next
        unknown = _unknown_names(error)
        users = [layer for name in unknown for layer in _users_of(config, name)]
        if users:
            layers = ", ".join(f"{_name_of(layer)!r} (class {_class_of(layer)})" for layer in users)
            raise CaseError("load", f"model file {path} uses {', '.join(repr(n) for n in unknown)}, which Keras does "
                                    f"not know here, in layer(s) {layers}. Register the custom class or function "
                                    "(@keras.saving.register_keras_serializable) in a Python model file that is "
                                    "imported before the run, or give a Python model file (--model your_models.py) "
                                    "that builds the model.") from None
        if unknown:
            raise CaseError("load", f"model file {path} uses {', '.join(repr(n) for n in unknown)}, which Keras does "
                                    "not know here. Register the custom object (@keras.saving."
                                    "register_keras_serializable) or give a Python model file that builds the "
                                    "model.") from None
        if "Lambda" in str(error) and "safe_mode" in str(error):
            raise CaseError("load", f"model file {path} holds Python code (a Lambda): pass --trust-model-code "
                                    "if you trust it") from None
        raise CaseError("load", f"model file {path} could not be loaded by Keras; it may be truncated or corrupt "
                                f"({_short(error)})") from None


def _keras_archive_config(path: Path) -> dict:
    """The config.json of a .keras archive, after the archive's CRCs and size
    budget are checked (`model_file.check_zip`: Keras checks neither)."""
    names = [member.filename for member in check_zip(path)]
    if "config.json" not in names:
        raise CaseError("load", f"{path} is a zip file but not a .keras archive (no config.json in it; "
                                "a torch.save file is a zip too: is it a PyTorch checkpoint?)")
    with zipfile.ZipFile(path) as archive:
        text = read_member(archive, path, "config.json", CONFIG_MEMBER_BUDGET)
    try:
        return json.loads(text)
    except ValueError as error:
        raise CaseError("load", f"model file {path}: its config.json is not valid JSON, the archive is "
                                f"corrupt ({error})") from None


def _h5_open_check(path: Path) -> None:
    import h5py

    try:
        with h5py.File(path, "r"):
            pass
    except OSError as error:   # h5py's "file signature not found", "truncated file"
        raise CaseError("load", f"model file {path} is not a readable HDF5 file: it is truncated or corrupt "
                                f"({summarize_exception(error, 1)})") from None


def _h5_model_config(path: Path) -> dict | None:
    """The legacy h5's model_config JSON, or None for a weights-only h5."""
    import h5py

    _h5_open_check(path)
    with h5py.File(path, "r") as handle:
        raw = handle.attrs.get("model_config")
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    try:
        return json.loads(raw)
    except ValueError as error:
        raise CaseError("load", f"model file {path}: its model_config is not valid JSON, the file is corrupt "
                                f"({error})") from None


def _h5_dataset_count(path: Path) -> int:
    import h5py

    count = 0

    def visit(name: str, item: Any) -> None:
        nonlocal count
        if isinstance(item, h5py.Dataset) and not name.startswith("optimizer"):
            count += 1

    with h5py.File(path, "r") as handle:
        handle.visititems(visit)
    return count


def _walk(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _is_layer(node: dict) -> bool:
    return "class_name" in node and isinstance(node.get("config"), dict) and "name" in node["config"] \
        and _class_of(node) not in ("DTypePolicy", "FloatDTypePolicy", "QuantizedDTypePolicy")


def _layer_dicts(config: Any) -> list[dict]:
    return [node for node in _walk(config) if _is_layer(node)]


def _class_of(node: dict) -> str:
    return str(node.get("class_name", "?")).split(">")[-1]


def _name_of(node: dict) -> str:
    return str(node.get("config", {}).get("name") or node.get("name") or "?")


# Packages whose classes Keras imports by itself when a config names them.
_KERAS_PACKAGES = ("keras", "keras_hub", "keras_cv", "keras_nlp")


def _code_holders(config: Any) -> tuple[list[str], list[str]]:
    """The layers of a model config that hold code, named for an error:
    Lambda layers and lambda functions (Python bytecode in the file), and
    custom classes or functions (registered by Python code in this process,
    run with arguments from the file). A Keras 3 config names each object's
    module; a legacy .h5 config names its layers' classes only."""
    import keras

    lambdas: list[str] = []
    custom: list[str] = []
    for node, layer in _with_layers(config, None):
        held = f"{_name_of(layer)!r} (class {_class_of(layer)})" if layer is not None else "the model"
        module = node.get("module")
        if node is layer and _class_of(node) == "Lambda":
            lambdas.append(held)
        elif node.get("class_name") == "__lambda__" and (layer is None or _class_of(layer) != "Lambda"):
            lambdas.append(f"{held}: a lambda function")  # e.g. a Dense layer's activation
        elif isinstance(module, str) and module.split(".")[0] not in _KERAS_PACKAGES + ("builtins",):
            named = node.get("config") if _class_of(node) == "function" else _class_of(node)  # a function: its name
            custom.append(f"{held} from module {module}" if node is layer else f"{held}: {module}.{named}")
        elif node is layer and module is None and not (hasattr(keras.layers, _class_of(node))
                                                       or hasattr(keras.models, _class_of(node))
                                                       or _class_of(node) == "Functional"):
            custom.append(held)
    return list(dict.fromkeys(lambdas)), list(dict.fromkeys(custom))


def _with_layers(node: Any, layer: dict | None) -> Iterator[tuple[dict, dict | None]]:
    """Every object (a dict with a class_name) of a config, with the innermost layer holding it."""
    if isinstance(node, dict):
        if _is_layer(node):
            layer = node
        if "class_name" in node:
            yield node, layer
        for value in node.values():
            yield from _with_layers(value, layer)
    elif isinstance(node, list):
        for value in node:
            yield from _with_layers(value, layer)


def _unknown_names(error: BaseException) -> list[str]:
    """The class or function names Keras says it could not find."""
    text = str(error)
    found = re.findall(r"Could not locate (?:class|function) '([^']+)'", text)
    found += re.findall(r"Unknown (?:layer|object|activation|initializer|regularizer|constraint|loss|metric)"
                        r"(?: class)?: '([^']+)'", text)
    return list(dict.fromkeys(found))


def _users_of(config: Any, name: str) -> list[dict]:
    """The innermost layers whose config refers to the object called `name`."""
    short = name.split(">")[-1]

    def refers(node: dict) -> bool:
        values = (node.get("class_name"), node.get("registered_name"),
                  node.get("config") if isinstance(node.get("config"), str) else None)
        return any(isinstance(v, str) and (v == name or v.split(">")[-1] == short) for v in values)

    users: list[dict] = []

    def visit(node: Any, layer: dict | None) -> None:
        if isinstance(node, dict):
            if _is_layer(node):
                layer = node
            if "class_name" in node and refers(node) and layer is not None and layer not in users:
                users.append(layer)
            for value in node.values():
                visit(value, layer)
        elif isinstance(node, list):
            for value in node:
                visit(value, layer)

    visit(config, None)
    # Keep the innermost: drop a container whose inner layer is already listed.
    return [u for u in users if not any(v is not u and any(v is w for w in _walk(u)) for v in users)]


def _short(error: BaseException) -> str:
    """An exception in one line, without the tensor values Keras and TF print."""
    text = str(error).strip() or repr(error)
    text = re.sub(r"value=\[.*", "value=...", text, flags=re.S)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    short = " ".join(lines[:3])
    return f"{type(error).__name__}: {short[:400]}{'...' if len(short) > 400 else ''}"


# ---------------------------------------------------------------- fingerprint, device, run

def fingerprint(model: Any) -> str:
    """A content hash of the model: the source of its non-Keras classes, its
    config (architecture, layer names and options) and every weight's bytes."""
    digest = hashlib.sha256()
    try:
        layers = [model] + list(model._flatten_layers(include_self=False))
    except AttributeError:   # a Keras without the private _flatten_layers
        layers = [model] + list(getattr(model, "layers", []))
    for cls in sorted({type(layer) for layer in layers}, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        digest.update(f"{cls.__module__}.{cls.__qualname__}".encode())
        if not cls.__module__.startswith("keras."):
            try:
                digest.update(inspect.getsource(cls).encode())
            except (OSError, TypeError):
                pass
    try:
        import keras

        config = keras.saving.serialize_keras_object(model)
        digest.update(json.dumps(_canonical_op_names(_without_ids(config)), sort_keys=True, default=str).encode())
    except Exception:   # a custom layer's get_config is the user's code (NotImplementedError, ...): names stand in
        digest.update(repr([(type(layer).__name__, layer.name) for layer in layers]).encode())
    for index, variable in enumerate(model.weights):
        array = np.ascontiguousarray(np.asarray(variable.numpy()))
        digest.update(f"{index}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _without_ids(node: Any) -> Any:
    """A config without `shared_object_id`s (object ids, different in every process)."""
    if isinstance(node, dict):
        return {k: _without_ids(v) for k, v in node.items() if k != "shared_object_id"}
    if isinstance(node, (list, tuple)):
        return [_without_ids(v) for v in node]
    return node


def _canonical_op_names(config: Any) -> Any:
    """A functional config with its bare operations (`keras.ops.argmax(x)` in a
    functional graph: module keras.src.ops.*) named by position instead of the
    process-wide counter Keras names them with ("argmax", "argmax_1", ...), so
    that two builds of one model hash the same. Layers and the model keep
    their names: a builder that leaves them to Keras' counters gets a new hash
    on each build (a cache miss, never a wrong hit)."""
    body = config.get("config") if isinstance(config, dict) else None
    if not isinstance(body, dict) or not isinstance(body.get("layers"), list):
        return config
    rename = {layer["name"]: f"<op {index}>" for index, layer in enumerate(body["layers"])
              if isinstance(layer, dict) and isinstance(layer.get("name"), str)
              and str(layer.get("module") or "").startswith("keras.src.ops")}
    if not rename:
        return config

    def history(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: history(v) for k, v in node.items()}
            past = out.get("keras_history")
            if isinstance(past, (list, tuple)) and past and past[0] in rename:
                out["keras_history"] = [rename[past[0]], *past[1:]]
            return out
        if isinstance(node, (list, tuple)):
            return [history(v) for v in node]
        return node

    layers = []
    for layer in body["layers"]:
        if isinstance(layer, dict):
            layer = {**layer, "inbound_nodes": history(layer.get("inbound_nodes"))}
            if layer.get("name") in rename:
                layer["name"] = rename[layer["name"]]
                if isinstance(layer.get("config"), dict):
                    layer["config"] = {**layer["config"], "name": layer["name"]}
        layers.append(layer)

    def ends(node: Any) -> Any:  # input_layers / output_layers: [name, node, tensor] or nests of them
        if isinstance(node, (list, tuple)) and len(node) == 3 and isinstance(node[0], str) and isinstance(node[1], int):
            return [rename.get(node[0], node[0]), *node[1:]]
        if isinstance(node, (list, tuple)):
            return [ends(v) for v in node]
        if isinstance(node, dict):
            return {k: ends(v) for k, v in node.items()}
        return node

    body = {**body, "layers": layers, "input_layers": ends(body.get("input_layers")),
            "output_layers": ends(body.get("output_layers"))}
    return {**config, "config": body}


def to_device(model: Any, device: str) -> Any:
    """TensorFlow places ops when they run: `run` does it under tf.device."""
    return model


def float64_copy(model: Any) -> Any | None:
    """A float64 twin rebuilt from the model's config, or None (see the module docstring)."""
    try:
        import keras
        from keras.src.saving import serialization_lib

        config = _as_float64(model.get_config())
        with serialization_lib.SafeModeScope(False):  # the model is already in memory: no new code is run
            twin = type(model).from_config(config)
        weights = model.get_weights()
        if len(twin.weights) != len(weights):
            refuse_twin(model, f"rebuilt in float64 from its config, the model holds {len(twin.weights)} weights, "
                               f"not its {len(weights)}")
            return None
        twin.set_weights([w.astype(np.float64) if np.issubdtype(w.dtype, np.floating) else w for w in weights])
        finalize_states(twin)
        if any(str(v.dtype) != "float64" for v in twin.weights if "float" in str(v.dtype)):
            refuse_twin(model, "rebuilt in float64 from its config, a layer keeps weights in another float type")
            return None
        if not isinstance(twin, keras.Model):
            refuse_twin(model, f"rebuilt from its config, the model is a {type(twin).__name__}, not a keras.Model")
            return None
        return twin
    except Exception as error:   # get_config/from_config run the model's own (custom) layers: any type; recorded
        refuse_twin(model, f"the model could not be rebuilt in float64 from its config ({_short(error)})")
        return None


def _as_float64(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _as_float64(v) for k, v in node.items()}
        if out.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(out.get("config"), dict) \
                and out["config"].get("name") == "float32":
            out["config"] = {**out["config"], "name": "float64"}
        if out.get("dtype") == "float32":
            out["dtype"] = "float64"
        return out
    if isinstance(node, list):
        return [_as_float64(v) for v in node]
    return node


def run(model: Any, inputs: Sequence[np.ndarray], device: str, float64: bool = False) -> list[np.ndarray]:
    """Run the model on numpy inputs (spec order, the model's own layout); outputs as numpy, in order.

    The model runs as `model(inputs, training=False)` inside a `tf.function`
    (`compiled_call`), as Keras' own `predict` runs it (eagerly, Keras
    dispatches every layer from Python: 7x to 20x slower on a MobileNetV2),
    with the same arithmetic as the eager call (`arithmetic_as_written`)."""
    import tensorflow as tf

    tf_device = "/GPU:0" if device == "cuda" else "/CPU:0"
    with tf.device(tf_device), arithmetic_as_written():
        tensors = [tf.convert_to_tensor(array) for array in prepare_inputs(inputs, float64)]
        outputs = compiled_call(model, tensors, tf_device)(*tensors)
    result = [np.asarray(t) for t in select_outputs(outputs, _is_tensor)]
    return check_twin_outputs(result) if float64 else result


# The attribute of a keras.Model that holds its compiled calls. Set with
# object.__setattr__, out of Keras' attribute tracking, and holding a dict (not
# a tf.function), so that saving the model never picks the functions up.
_COMPILED_CALLS = "_parity_compiled_calls"


def compiled_call(model: Any, tensors: Sequence[Any], tf_device: str) -> Callable[..., Any]:
    """`model(inputs, training=False)` as a `tf.function` taking one tensor per
    input, traced once per model, device and input signature, and kept on the
    model.

    The signature has None for every dim the model leaves open (its
    `model.inputs`; every dim when the model declares none, as a subclassed
    model may not) and for every dim a tensor does not match, so that inputs
    of other shapes within the spec's bounds reuse the trace. No XLA
    (`jit_compile`): Keras does not use it on the CPU either, and it may
    reorder arithmetic."""
    import tensorflow as tf

    declared = [None] * len(tensors)
    try:
        keras_inputs = list(model.inputs or [])
    except (AttributeError, ValueError):  # a subclassed model that was never called symbolically
        keras_inputs = []
    if len(keras_inputs) == len(tensors):
        declared = [tuple(t.shape) for t in keras_inputs]
    signature = []
    for index, (tensor, shape) in enumerate(zip(tensors, declared)):
        actual = tuple(tensor.shape)
        if shape is None or len(shape) != len(actual):
            shape = (None,) * len(actual)
        dims = [d if d is not None and d == a else None for d, a in zip(shape, actual)]
        name = getattr(keras_inputs[index], "name", None) if keras_inputs else None
        signature.append(tf.TensorSpec(dims, tensor.dtype, name=name))
    key = (tf_device, tuple((tuple(s.shape.as_list()), s.dtype.name) for s in signature))
    calls = model.__dict__.get(_COMPILED_CALLS)
    if calls is None:
        calls = {}
        object.__setattr__(model, _COMPILED_CALLS, calls)
    if key not in calls:
        single = len(tensors) == 1

        @tf.function(input_signature=signature)
        def call(*args):
            return model(args[0] if single else list(args), training=False)

        calls[key] = call
    return calls[key]


@contextlib.contextmanager
def arithmetic_as_written() -> Iterator[None]:
    """Grappler's arithmetic optimizer and remapper off for the functions this
    thread calls in the scope (TensorFlow's per-thread function call options).

    Those two passes change a graph's float arithmetic: the arithmetic
    optimizer folds and reassociates chains of multiplications and additions
    (BatchNorm, Normalization), the remapper fuses ops into kernels that round
    differently (MatMul + BiasAdd + Tanh). With them a traced Keras model no
    longer computes bit for bit what its eager call computes (MobileNetV2's
    logits 2.9e-6 of the largest apart, two_outputs' 2 ulps); without them it
    does, and is as fast (MobileNetV2 on 2 CPU cores: 9 ms either way).
    Nothing else is changed: the other Grappler passes, the process-wide
    TensorFlow config and other threads are left alone."""
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
    from tensorflow.python.eager import context

    eager = context.context()
    saved = eager.function_call_options
    config = config_pb2.ConfigProto()
    if saved.config_proto_serialized:
        config.ParseFromString(saved.config_proto_serialized)
    rewrites = config.graph_options.rewrite_options
    rewrites.arithmetic_optimization = rewriter_config_pb2.RewriterConfig.OFF
    rewrites.remapping = rewriter_config_pb2.RewriterConfig.OFF
    eager.function_call_options = context.FunctionCallOptions(executor_type=saved.executor_type, config_proto=config)
    try:
        yield
    finally:
        eager.function_call_options = saved


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "numpy") or isinstance(value, np.ndarray)


def bind(model: Any, spec: Any) -> Any:
    """The model called with the spec's inputs in order, returning its outputs
    in order: `run` already does so for this source."""
    return model
