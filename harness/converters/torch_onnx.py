"""torch -> ONNX with `torch.onnx.export`: the dynamo exporter by default, the
TorchScript-based one on request. Symbolic dims of the spec become dynamic axes
(with the spec's bounds, for the dynamo exporter); the file must pass
`onnx.checker`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.errors import CaseError, summarize_exception
from harness.specs import ModelSpec

NAME = "torch->onnx"
DEFAULT_OPSET = {"dynamo": 18, "torchscript": 17}
FILENAME = "model.onnx"


def versions() -> dict[str, str]:
    import onnx
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__}


def convert(model: Any, spec: ModelSpec, example: Sequence[np.ndarray], out_dir: Path,
            exporter: str = "dynamo", opset: int | None = None) -> dict[str, Any]:
    """Export `model` (on the CPU) to `out_dir/model.onnx`; return the provenance.

    example: inputs in the spec's order whose symbolic dims are >= 2 and
    pairwise distinct, so that the exporter does not specialize them.
    """
    import onnx
    import torch

    opset = opset or DEFAULT_OPSET[exporter]
    path = Path(out_dir) / FILENAME
    args = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in example)
    input_names = [i.name for i in spec.inputs]
    output_names = [o.name for o in spec.outputs]
    dynamic_axes = {i.name: {axis: d for axis, d in enumerate(i.shape) if isinstance(d, str)} for i in spec.inputs}
    kwargs: dict[str, Any] = dict(input_names=input_names, output_names=output_names, opset_version=opset)
    if exporter == "dynamo":
        dims = {name: torch.export.Dim(name, min=low, max=high) for name, (low, high) in spec.dim_bounds.items()}
        kwargs["dynamic_shapes"] = tuple({axis: dims[d] for axis, d in axes.items()} or None
                                         for axes in dynamic_axes.values())
    else:
        kwargs["dynamic_axes"] = {name: axes for name, axes in dynamic_axes.items() if axes}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, args, str(path), dynamo=(exporter == "dynamo"), **kwargs)
    except Exception as error:
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        raise CaseError("convert", f"torch.onnx.export ({exporter} exporter, opset {opset}) failed for model "
                                   f"{spec.name!r}: {summarize_exception(error, 8)}\n"
                                   f"Try --exporter={other}, another --opset, or simplify the model's forward().") from None
    try:
        onnx.checker.check_model(str(path))
    except Exception as error:
        raise CaseError("convert", f"the ONNX file exported for {spec.name!r} fails onnx.checker: "
                                   f"{summarize_exception(error, 4)}") from None
    written = onnx.load(str(path), load_external_data=False)
    return {
        "converter": NAME,
        "tool": "torch.onnx.export",
        "exporter": exporter,
        "opset_requested": opset,
        "opset": max((o.version for o in written.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "ir_version": written.ir_version,
        "dynamic_axes": {k: {str(a): d for a, d in v.items()} for k, v in dynamic_axes.items()},
        "versions": versions(),
    }
