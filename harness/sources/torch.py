"""PyTorch as a source: build or load the original model, run it as the reference.

torch is imported inside the functions, never at module level, so that a run
without torch installed can still learn why its torch cases were skipped.
Untrusted files load with `torch.load(weights_only=True)`; a whole pickled
module needs `trust_model_code`, since unpickling it runs code from the file.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from harness.errors import CaseError, summarize_exception

NAME = "torch"


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
    """Load a user's model file.

    - TorchScript archive: loaded as it is (TorchScript cannot run arbitrary Python).
    - state dict (.pth/.bin/...): needs `architecture`, a builder whose module takes it.
    - a whole pickled module (torch.save(model)): only with `trust_model_code`.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CaseError("load", f"model file {path} does not exist")
    if path.stat().st_size == 0:
        raise CaseError("load", f"model file {path} is empty (0 bytes): was it written completely?")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception:
        pass  # not TorchScript: try the torch.save formats below
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if "weights_only" not in str(error) and "Weights only load failed" not in str(error):
            raise CaseError("load", f"model file {path} is neither a TorchScript archive nor a torch.save file, "
                                    f"or it is truncated or corrupt ({summarize_exception(error, 2)})") from None
        if not trust_model_code:
            raise CaseError("load", f"model file {path} holds pickled Python objects (a whole model saved with "
                                    "torch.save); loading it would run code from the file. Pass --trust-model-code "
                                    "if you trust it, or save a state dict or a TorchScript archive instead.") from None
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error2:
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
        digest.update(cls.__module__.encode() + cls.__qualname__.encode())
        try:
            digest.update(inspect.getsource(cls).encode())
        except (OSError, TypeError):
            pass  # classes without source (builtins, TorchScript) are covered by name and weights
    digest.update(repr(model).encode())
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{array.dtype}:{tuple(array.shape)}".encode())
        digest.update(array.reshape(-1).view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    return digest.hexdigest()


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
    except Exception:
        return None


def run(model: Any, inputs: Sequence[np.ndarray], device: str, float64: bool = False) -> list[np.ndarray]:
    """Run the model on numpy inputs (in the spec's order); outputs as numpy, in order."""
    import torch

    tensors = []
    for array in inputs:
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
        if float64 and tensor.is_floating_point():
            tensor = tensor.double()
        tensors.append(tensor)
    from harness.sources.torch_bound import flatten_tensors

    with torch.inference_mode():
        outputs = model(*tensors)
    return [t.detach().cpu().numpy() for t in flatten_tensors(outputs)]
