"""ONNX's own reference evaluator (`onnx.reference.ReferenceEvaluator`) as a
target: every op computed in numpy, in the types the file says.

Why a slow interpreter is a target: ONNX Runtime's CPU provider has few
float16 kernels, so it computes an fp16 file's ops in float32, inserting casts
and removing the pairs between consecutive float32 nodes; an op that
overflows float16 (a sum past 65504) then gives the float32 answer on the CPU
and inf on a GPU. The reference evaluator computes float16 in float16, so an
fp16 conversion's overflow shows on a machine without a GPU. It is opt-in
(`--target onnx-reference`, not a default target): it is slow on large
models and implements each op from a given opset on (a QDQ file of opset 18
is refused, naming the op).

onnx is imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.backends import Repro
from harness.errors import CaseError, summarize_exception
from harness.runtimes.binding import bind_ports
from harness.specs import FLOAT_DTYPES, INT_DTYPES

NAME = "onnx-reference"
REFERENCE_OPSET = 21   # where the evaluator has every op the harness's converters write (QDQ's from 19)
FORMATS = ("onnx",)
OPT_IN = "slow on large models; it serves fp16 overflow on a machine without a GPU"   # backends.opt_in_reason
ELEMENT_TYPES = FLOAT_DTYPES + INT_DTYPES   # numpy's, and bfloat16 through ml_dtypes
# How a reproduction script (localize/repro.py) runs a file here, by device.
REPRO = {"cpu": Repro("onnx", '''\
def run(model, inputs, names):
    """The outputs `names` of the model on `inputs`, by ONNX's reference
    evaluator, which computes each op as the ONNX specification says."""
    onnx = need("onnx", PACKAGE)
    reference = need("onnx.reference", PACKAGE)
    print(f"onnx {onnx.__version__}")
    evaluator = reference.ReferenceEvaluator(onnx.load(model))   # onnx.load reads external data beside it too
    return dict(zip(names, evaluator.run(names, inputs)))
''')}

PACKAGES = ("onnx",)   # what missing() imports: found, a CPU case imports them as it starts (backends.installed)


def missing(device: str) -> str | None:
    if device != "cpu":
        return f"the onnx-reference target computes in numpy, on the CPU, not on {device!r}"
    try:
        import onnx.reference  # noqa: F401
    except ImportError as error:
        return f"onnx.reference cannot be imported ({error}); pip install onnx"
    return None


def versions() -> dict[str, str]:
    import onnx

    return {"onnx": onnx.__version__}


class Session:
    """An ONNX file, evaluated op by op in the types it declares."""

    def __init__(self, path: Path, device: str, options: Any, precision: str = "fp32"):
        import onnx
        import onnx.version_converter
        from onnx.reference import ReferenceEvaluator

        if precision != "fp32":
            raise CaseError("runtime", f"the onnx-reference target runs a file in its own types; it lowers "
                                       f"nothing to {precision}")
        path = Path(path)
        converted = None
        try:
            self.model = onnx.load(str(path))
            try:
                self.evaluator = ReferenceEvaluator(self.model)
            except RuntimeError as error:
                if "No implementation for operator" not in str(error):
                    raise
                # The evaluator implements some ops (DequantizeLinear) from a later opset only;
                # ONNX's version converter restates the file at one it has them in.
                converted = {"from": _opset(self.model), "to": REFERENCE_OPSET}
                self.model = onnx.version_converter.convert_version(self.model, REFERENCE_OPSET)
                self.evaluator = ReferenceEvaluator(self.model)
        except Exception as error:   # onnx.load, the evaluator's operators and the version converter raise any type
            raise CaseError("runtime", f"onnx's reference evaluator could not load {path}: "
                                       f"{summarize_exception(error, 3)}\nIt implements each op from a given opset "
                                       "on: an op it lacks is named above; run the file on another target") from None
        self.inputs = [i for i in self.model.graph.input
                       if i.name not in {t.name for t in self.model.graph.initializer}]
        self.outputs = list(self.model.graph.output)
        self.provenance = {"device": device, "evaluator": "onnx.reference.ReferenceEvaluator",
                           "computes_in": "the file's own types (numpy)", "opset_converted": converted}

    def bind(self, input_names: Sequence[str], input_dtypes: Sequence[str], output_names: Sequence[str]) -> dict[str, Any]:
        """Match the spec's inputs and outputs to the file's, by name or by position."""
        from onnx.helper import tensor_dtype_to_np_dtype

        declared = {i.name: (str(tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
                             if i.type.tensor_type.elem_type else None) for i in self.inputs}
        self._input_names, self._output_names, record = bind_ports(
            input_names, input_dtypes, output_names, declared, [o.name for o in self.outputs])
        return record

    def declared_inputs(self) -> list[list[int | None]]:
        """The bound inputs' declared shapes, in the spec's order (None: a dim left open)."""
        shapes = {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
                  for i in self.inputs}
        return [shapes[name] for name in self._input_names]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        # float16 overflow is what this target is for: numpy's warning about it says nothing more
        with np.errstate(over="ignore", invalid="ignore"):
            outputs = self.evaluator.run(list(self._output_names), dict(zip(self._input_names, inputs)))
        return [np.asarray(o) for o in outputs]

    def close(self) -> None:
        self.evaluator = self.model = None


def _opset(model) -> int | None:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
