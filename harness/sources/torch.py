"""PyTorch as a source: build or load the original model, run it as the reference.

torch is imported inside the functions, never at module level, so that a run
without torch installed can still learn why its torch cases were skipped.

Files (`load_file`). What a file is, is read from its bytes before torch
parses it: a zip archive is a TorchScript archive when it holds `code/` or
`constants.pkl`, a torch.save file when it holds `data.pkl`; a file that is no
zip is a legacy torch.save file when its first pickle is torch's magic number.
- A state dict loads with `torch.load(weights_only=True)`, which runs nothing.
- A TorchScript archive needs `trust_model_code`: its code runs at load (a
  module's `__setstate__`), and TorchScript reads and writes files
  (`torch.from_file(path, shared=True)` maps a file for writing, creating it).
- A whole pickled module needs `trust_model_code`: unpickling it runs code
  named by the file. It is told apart from a corrupt file by its pickle, which
  must parse to its end; a damaged file is reported as corrupt, and never
  sends the user to `--trust-model-code`.
A zip archive's CRCs are checked first (`model_file.check_zip`): torch's own
reader does not, and would load a damaged weight as it is.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import io
import pickle
import pickletools
import re
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from harness.errors import CaseError, summarize_exception
from harness.model_file import check_zip, read_member, require_file
from harness.sources.model_io import float64_status  # noqa: F401  (the twin's account, which the engine asks for)
from harness.sources.model_io import prepare_inputs, refuse_twin, select_outputs

NAME = "torch"
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("torch",)
# The names its model files end with (matrix.py finds a file's source by them, after every source's claims_file).
# (".ckpt" too is a torch name, but it is read as a TF checkpoint, Keras's, first.)
FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ts", ".pkl")
# A file that no source claims, by name or content, is read here: a pickled module or a state dict.
READS_ANY_FILE = True

PACKAGES = ("torch",)   # what missing() imports: found, a CPU case imports them as it starts (backends.installed)


def missing(device: str) -> str | None:
    """Why this source cannot run on `device` here, or None when it can."""
    try:
        import torch
    except ImportError as error:
        return f"torch is not installed ({error}); install the 'torch' extra"
    if device == "cuda" and not torch.cuda.is_available():
        return f"no CUDA device visible to torch {torch.__version__} (torch.cuda.is_available() is False; built for CUDA {torch.version.cuda})"
    if device not in ("cpu", "cuda"):
        return f"torch source does not know device {device!r}"
    return None


def versions() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__}


def configure_device(device: str, strict_cuda: bool) -> dict[str, Any]:
    """Set the arithmetic flags for `device` and return them for the provenance.

    On CUDA, TF32 for matmuls and convolutions alike unless strict: the
    arithmetic ONNX Runtime's CUDA provider (and TensorRT) use by default, so
    that the reference's own noise floor (float32 against its float64 twin)
    includes TF32's error, which the verdict's noise multiple then allows.
    (torch's own defaults differ: TF32 for cuDNN but not for matmuls; measured
    on an H100, the zoo MLP's conversion error was then 3.7e3x that noise floor
    for a correct conversion.) Strict mode turns TF32 off everywhere.
    """
    import torch

    if device != "cuda":
        return {}
    torch.backends.cuda.matmul.allow_tf32 = not strict_cuda
    torch.backends.cudnn.allow_tf32 = not strict_cuda
    return {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "gpu": torch.cuda.get_device_name(0),
    }


def build(builder: Callable[[], Any]) -> Any:
    """Call a model spec's torch builder; the module comes back in eval mode on the CPU."""
    import torch

    model = builder()
    if not isinstance(model, torch.nn.Module) and not isinstance(model, torch.jit.ScriptModule):
        raise CaseError("load", f"the torch builder returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval().cpu()


def load_file(path: Path, architecture: Callable[[], Any] | None, trust_model_code: bool) -> Any:
    """Load a user's model file (see the module docstring): a state dict into
    `architecture` (a builder whose module takes it); a TorchScript archive or
    a whole pickled module only with `trust_model_code`."""
    import torch

    path = Path(path)
    require_file(path)
    kind = _file_kind(path)
    if kind == "torchscript":
        if not trust_model_code:
            raise CaseError("load", f"model file {path} is a TorchScript archive; loading it runs the TorchScript code "
                                    "it carries (a module's __setstate__ runs at load, and TorchScript can read and "
                                    "write files). Pass --trust-model-code if you trust it, or give its weights as a "
                                    "state dict: --model ARCH=weights.pth")
        try:
            return torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as error:   # PyTorch's archive reader and TorchScript's interpreter (torch.jit.Error)
            raise CaseError("load", f"TorchScript archive {path} could not be loaded: "
                                    f"{summarize_exception(error, 3)}") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:   # a corrupt file raises any type (fuzzed: RuntimeError, EOFError, struct.error, ...)
        named = _pickled_globals(path, kind)
        if named is None:
            raise CaseError("load", f"model file {path} is a torch.save file whose pickle does not parse: it is "
                                    f"truncated or corrupt ({summarize_exception(error, 1)})") from None
        refused = [name for name in dict.fromkeys(named) if name not in _weights_only_globals()]
        if not refused:
            raise CaseError("load", f"model file {path}: torch's weights-only loader cannot read it "
                                    f"({summarize_exception(error, 2)})") from None
        if not trust_model_code:
            listed = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
            raise CaseError("load", f"model file {path} holds pickled Python objects (a whole model saved with "
                                    f"torch.save?), which name {listed}; loading it would run code from the file. "
                                    "Pass --trust-model-code if you trust it, or save a state dict "
                                    "instead.") from None
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error2:   # unpickling runs the file's own code (the user trusted it): any type
            raise CaseError("load", f"model file {path} could not be unpickled: {summarize_exception(error2, 3)}") from None
    if isinstance(loaded, torch.nn.Module):
        return loaded.eval()
    state_dict = _find_state_dict(loaded)
    if state_dict is None:
        raise CaseError("load", f"model file {path} holds a {type(loaded).__name__}, neither a module nor a state dict")
    if architecture is None:
        raise CaseError("load", f"model file {path} holds weights only (a state dict); name the architecture "
                                "they belong to: --model ARCH=PATH with ARCH a zoo model or one from your model file")
    model = build(architecture)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CaseError("load", f"weights in {path} do not fit the architecture: {summarize_exception(error, 4)}") from None
    return model.eval()


def _file_kind(path: Path) -> str:
    """"torchscript", "zip" (torch.save's format) or "legacy" (torch.save's
    format before torch 1.6), from the file's bytes and without running any of
    it; CaseError for a file that is none of them."""
    import torch

    if zipfile.is_zipfile(path):
        names = [member.filename for member in check_zip(path)]
        inside = {name.split("/", 1)[1] for name in names if "/" in name}  # torch puts all under one folder
        if "constants.pkl" in inside or any(name.startswith("code/") for name in inside):
            return "torchscript"
        if "data.pkl" in inside:
            return "zip"
        keras = "; it holds a config.json: is it a Keras .keras archive?" if "config.json" in names else ""
        raise CaseError("load", f"model file {path} is a zip archive, but neither a torch.save file nor a "
                                f"TorchScript archive (no data.pkl in it{keras})")
    with open(path, "rb") as handle:
        head = handle.read(64)  # the magic number's pickle takes 15 bytes
    try:
        magic = _DataOnlyUnpickler(io.BytesIO(head)).load()
    except Exception:   # pickle raises any type on other bytes (UnpicklingError, ValueError, ...): no magic, said next
        magic = None
    if magic != torch.serialization.MAGIC_NUMBER:
        raise CaseError("load", f"model file {path} is neither a TorchScript archive nor a torch.save file (not a "
                                "zip archive, nor torch's older pickle format): it is truncated or corrupt, or a "
                                "file of another kind")
    return "legacy"


class _DataOnlyUnpickler(pickle.Unpickler):
    """Reads pickled data that names no class or function (torch's magic number)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"the pickle names {module}.{name}")


def _pickled_globals(path: Path, kind: str) -> list[str] | None:
    """The classes and functions the file's pickle of the saved object names
    (what unpickling would import and call), or None when that pickle does
    not parse to its end: a file the weights-only loader refused holds code
    only if it is a pickle at all, and random bytes fail that loader too."""
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
                data = read_member(archive, path, name, archive.getinfo(name).file_size)
            ops = list(pickletools.genops(data))
        else:
            with open(path, "rb") as handle:
                for _ in range(3):  # torch's magic number, protocol version and system info come first
                    list(pickletools.genops(handle))
                ops = list(pickletools.genops(handle))
    except Exception:   # pickletools and zipfile raise any type on a damaged file: not a pickle, the caller says so
        return None
    if not ops or ops[-1][0].name != "STOP":
        return None
    named: list[str] = []
    pushed: list[str | None] = []  # what each opcode pushed: its string, or None (STACK_GLOBAL takes the last two)
    memo: dict[int, str | None] = {}
    for opcode, arg, _ in ops:
        if opcode.name == "GLOBAL":  # "module name"; protocol 2 spells builtins as Python 2 did
            named.append(re.sub(r"^__builtin__ ", "builtins ", arg).replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL":
            named.append(".".join(str(part) for part in pushed[-2:]))
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            pushed.append(arg)
        elif opcode.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            memo[len(memo) if opcode.name == "MEMOIZE" else arg] = pushed[-1] if pushed else None
        elif opcode.name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif opcode.stack_after:
            pushed.append(None)
    return named


def _weights_only_globals() -> set[str]:
    """What torch's weights-only loader allows: its own list (a private
    function of torch 2.x; empty if it moves) and the user's safe globals."""
    import torch

    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except (ImportError, AttributeError):
        allowed = set()
    return allowed | {f"{g.__module__}.{g.__qualname__}" for g in torch.serialization.get_safe_globals()
                      if hasattr(g, "__qualname__")}


def _find_state_dict(loaded: Any) -> Mapping | None:
    """A state dict, or one under the keys that training checkpoints commonly use."""
    import torch

    if isinstance(loaded, Mapping):
        if loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
            return loaded
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(loaded.get(key), Mapping):
                return _find_state_dict(loaded[key])
    return None


def fingerprint(model: Any) -> str:
    """A content hash of the model: its classes' source, its structure and every
    parameter and buffer, so that a changed weight or forward() changes it."""
    import torch

    digest = hashlib.sha256()
    if isinstance(model, torch.jit.ScriptModule):
        digest.update(str(model.code).encode())
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: c.__qualname__):
        digest.update(cls.__module__.encode() + cls.__qualname__.encode() + _class_source(cls))
    digest.update(repr(model).encode())
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{array.dtype}:{tuple(array.shape)}".encode())
        digest.update(array.reshape(-1).view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    return digest.hexdigest()


@lru_cache(maxsize=None)
def _class_source(cls: type) -> bytes:
    """The source of a model's class, read once per process: inspect parses the
    class's whole file on each call (torch.nn's conv.py for a Conv2d), which was
    most of a cached case's fingerprint."""
    try:
        return inspect.getsource(cls).encode()
    except (OSError, TypeError):
        return b""  # classes without source (builtins, TorchScript) are covered by name and weights


def bind(model: Any, spec: Any) -> Any:
    """The model bound to the spec's names (`torch_bound.SpecBound`): its inputs
    by keyword where forward names them (transformers models), its outputs by
    name from a dict-like result. A TorchScript module is called positionally
    and left as it is (torch.export cannot trace through one)."""
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        return model
    from harness.sources.torch_bound import SpecBound, binds_by_keyword

    names = [i.name for i in spec.inputs]
    return SpecBound(model, names, [o.name for o in spec.outputs], binds_by_keyword(model, names))


def to_device(model: Any, device: str) -> Any:
    return model.to(device)


def float64_copy(model: Any) -> Any | None:
    """A float64 twin of the model for the noise floor, or None if it cannot be made."""
    try:
        return copy.deepcopy(model).double()
    except Exception as error:   # deepcopy reaches the user's attributes (a lock, a generator): any type; recorded
        refuse_twin(model, f"the model could not be copied to float64 ({summarize_exception(error, 1)})")
        return None


def run(model: Any, inputs: Sequence[np.ndarray], device: str, float64: bool = False) -> list[np.ndarray]:
    """Run the model on numpy inputs (in the spec's order); outputs as numpy, in order."""
    import torch

    from harness.sources.torch_bound import is_tensor

    tensors = [torch.from_numpy(array).to(device) for array in prepare_inputs(inputs, float64)]
    with torch.inference_mode():
        outputs = model(*tensors)
    return [t.detach().cpu().numpy() for t in select_outputs(outputs, is_tensor)]
