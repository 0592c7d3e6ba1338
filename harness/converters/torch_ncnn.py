"""torch module -> ncnn (.param + .bin) through pnnx's TorchScript path, the
way ncnn's documentation leads PyTorch users ("use ncnn with pytorch or onnx").

The bound module is traced here (`torch.jit.trace`, as `pnnx.export` does) on
one sample of the example: an ncnn Mat has no batch axis, and pnnx's ncnn
writer drops a batch of one; the ncnn runtime runs a batch sample by sample.
Where the spec has symbolic dims besides the batch, a second shape set goes
to pnnx as `inputshape2`, so that pnnx keeps those dims open where it can.

The pnnx executable (native code) is run directly, not through `pnnx.export`
/ `pnnx.convert`: those wait on it without a time limit, ignore its exit status
and then import the Python file it writes. Here it runs in a subprocess with a
timeout, and a crash, a hang or a missing output is this case's error quoting
pnnx's last lines.

Precision trap: pnnx stores fp16 weights by default (`fp16=1`); this hop asks
for fp16=0 and records it. pnnx names the blobs in0, in1... and out0,
out1...; they map to the spec's inputs and outputs by position, and the
mapping is recorded. Layer types that ncnn does not know (an op pnnx could not
lower, which it writes under its own name) are refused here, naming them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.converters import pnnx_exec
from harness.converters.pnnx_exec import run_pnnx, second_shapes
from harness.errors import CaseError, summarize_exception
from harness.specs import ModelSpec

NAME = "pnnx"
READS = ("torch",)
WRITES = "ncnn"
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("pnnx",)
REVISION = 1
FILENAME = "model.ncnn.param"   # model.ncnn.bin beside it
OPTIONS = ()


def versions() -> dict[str, str]:
    import ncnn
    import pnnx
    import torch

    return {"pnnx": getattr(pnnx, "__version__", "unknown"), "ncnn": ncnn.__version__, "torch": torch.__version__}


def convert(model: Any, spec: ModelSpec, example: Sequence[np.ndarray], out_dir: Path, *,
            layouts: tuple[dict[str, str | None], dict[str, str | None]]) -> dict[str, Any]:
    """Trace the torch module (bound to the spec's inputs, in order) on one
    sample, convert it with pnnx to `out_dir/model.ncnn.param` (+ .bin);
    return the provenance."""
    import torch

    first = [np.ascontiguousarray(x[:1]) for x in example]
    second = second_shapes(spec, first)
    out_dir = Path(out_dir).resolve()   # pnnx runs in its work folder: every path it is given is absolute
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pnnx-", dir=out_dir) as work:
        work_dir = Path(work)
        traced = work_dir / "model.pt"
        try:
            with torch.inference_mode(False), torch.no_grad():
                module = torch.jit.trace(model.eval(), tuple(torch.from_numpy(x) for x in first), check_trace=False)
            module.save(str(traced))
        except Exception as error:   # tracing runs the user's forward(): any type
            raise CaseError("convert", f"torch.jit.trace (pnnx's input) could not trace torch model {spec.name!r}: "
                                       f"{summarize_exception(error, 6)}") from None
        arguments, layers, (in_blobs, out_blobs), seconds = run_pnnx(
            traced, work_dir, out_dir, FILENAME, spec, first, second, f"torch model {spec.name!r}")
    return {
        "converter": NAME,
        "tool": "torch.jit.trace + the pnnx executable (TorchScript -> ncnn)",
        "tool_version": versions()["pnnx"],
        "fp16": pnnx_exec.FP16,
        "weights": "model.ncnn.bin beside model.ncnn.param",
        "pnnx_arguments": arguments,
        "traced_shapes": {i.name: list(x.shape) for i, x in zip(spec.inputs, first)},
        "second_shapes": ({i.name: list(x.shape) for i, x in zip(spec.inputs, second)} if second is not None
                          else None),
        "blobs": {"inputs": dict(zip([i.name for i in spec.inputs], in_blobs)),
                  "outputs": dict(zip([o.name for o in spec.outputs], out_blobs)),
                  "matched_by": "position (pnnx names blobs in0.../out0...)"},
        "batch": "traced on one sample; ncnn has no batch axis, the runtime runs a batch sample by sample",
        "layer_count": len(layers),
        "pnnx_seconds": round(seconds, 3),
        # The spec's layouts: the runtime splits the batch, ncnn's per-sample CHW is the spec's NCHW without N.
        "input_layouts": dict(layouts[0]),
        "output_layouts": dict(layouts[1]),
        "versions": versions(),
    }
