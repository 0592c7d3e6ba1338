"""Apache TVM as a target: an ONNX file imported by TVM's Relax frontend
(`tvm.relax.frontend.onnx.from_onnx`), compiled for the CPU by LLVM and run on
Relax's virtual machine, as a user deploying a model with TVM runs it.

What is compiled, and recorded in every case's provenance: the weights folded
in as constants (`keep_params_in_input=False`), the Relax pipeline of the
--tvm-pipeline option ("zero" by default: LegalizeOps, FoldConstant, FuseOps,
FuseTIR, the fused kernels a deployment gets without a tuning log; "default":
what `tvm.compile` alone applies on a CPU target, every op its own kernel), the
target "llvm" (this machine's triple, no -mcpu: the code any x86-64 runs), and
PassContext's default opt_level. A free dim stays symbolic, so one compiled
module takes every example's shape; a free dim without a name is given one
first (`name_anonymous_dims`: TVM would make one variable of them all), and
the record lists them (`named_dims`).

CPU only: the apache-tvm wheel is built with LLVM and without CUDA. It
declares no precision of its own (no PRECISIONS): a lowered file (fp16, int8
QDQ) runs as its types say. Importing tvm takes about 3.5 s here, 2 of them
torch, which tvm_ffi imports where it is installed (for DLPack); tvm and onnx
are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.backends import Repro
from harness.errors import CaseError, RuntimeLimit, summarize_exception
from harness.runtimes.binding import bind_ports
from harness.specs import FLOAT_DTYPES, INT_DTYPES

NAME = "tvm"
FORMATS = ("onnx",)
TARGET = "llvm"   # TVM's CPU code generator; the wheel carries LLVM
# Why a run targets it only when named (backends.opt_in_reason): see the docs' section on TVM.
OPT_IN = ("TVM 0.27's ONNX frontend cannot import 9 core zoo cases (LSTM, GRU; Keras's strided auto_pad Conv "
          "and computed Reshape), which would be errors in every run")
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("apache-tvm", "apache-tvm-ffi")
# Each crosses as a tvm.runtime.Tensor of a numpy (or ml_dtypes bfloat16) array, and back by .numpy().
ELEMENT_TYPES = FLOAT_DTYPES + INT_DTYPES
# How a reproduction script (localize/repro.py) runs a file here, by device: as the Session does, the
# "zero" pipeline (--tvm-pipeline's default).
REPRO = {"cpu": Repro("apache-tvm onnx", '''\
def run(model, inputs, names):
    """The outputs `names` of the model on `inputs`, by TVM: the ONNX file imported by
    Relax's frontend, the "zero" pipeline (fused kernels), compiled by LLVM for the CPU."""
    onnx = need("onnx", PACKAGE)
    tvm = need("tvm", PACKAGE)
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx
    print(f"tvm {tvm.__version__}")
    proto = onnx.load(model)   # onnx.load reads external data beside it too
    # TVM 0.27 makes one symbolic variable of every free dim without a name (N == H == W): a name each
    for index, dim in enumerate(d for i in proto.graph.input for d in i.type.tensor_type.shape.dim):
        if dim.WhichOneof("value") != "dim_value" and not dim.dim_param:
            dim.dim_param = f"free_dim_{index}"
    module = relax.get_pipeline("zero")(from_onnx(proto, keep_params_in_input=False))
    machine = relax.VirtualMachine(tvm.compile(module, target="llvm"), tvm.cpu())
    weights = {t.name for t in proto.graph.initializer}
    fed = [tvm.runtime.tensor(inputs[i.name]) for i in proto.graph.input if i.name not in weights]
    result = machine["main"](*fed)
    outputs = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
    return {o.name: value.numpy() for o, value in zip(proto.graph.output, outputs) if o.name in names}
''')}

PACKAGES = ("tvm",)   # what missing() imports: found, a CPU case imports them as it starts (backends.installed)


def missing(device: str) -> str | None:
    if device != "cpu":
        return (f"the tvm target runs on the CPU here, not on {device!r} (the apache-tvm wheel is built with LLVM "
                "and without CUDA): run it with --device=cpu")
    try:
        import tvm  # noqa: F401
    except ImportError as error:
        return f"tvm is not installed ({error}); pip install apache-tvm"
    return None


def versions() -> dict[str, str]:
    import tvm
    import tvm_ffi

    return {"apache-tvm": tvm.__version__, "apache-tvm-ffi": tvm_ffi.__version__}


@dataclass
class Options:
    """TVM's own settings (flags made from these fields)."""

    pipeline: str = field(default="zero", metadata={
        "choices": ("zero", "default"),
        "help": "the Relax pipeline applied before tvm.compile: zero fuses ops into kernels (LegalizeOps, "
                "FoldConstant, FuseOps, FuseTIR); default is tvm.compile's own on a CPU, one kernel per op"})


class Session:
    """An ONNX file compiled by TVM for the CPU, with the names that map the
    spec's inputs and outputs onto it."""

    def __init__(self, path: Path, device: str, options: Any, precision: str = "fp32"):
        """options: the run's RunOptions (this runtime's own, `Options`); precision:
        fp32, "as the file's types say" (this runtime declares no PRECISIONS)."""
        import onnx
        import tvm
        from google.protobuf.message import DecodeError
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx

        from harness.backends import own_options
        from harness.sources.onnx import feedable_inputs

        path = Path(path)
        if device != "cpu":
            raise CaseError("runtime", f"the tvm target runs on the CPU here, not on {device!r}")
        if precision != "fp32":
            raise CaseError("runtime", f"the tvm target runs a file in its own types; it lowers nothing to "
                                       f"{precision}")
        pipeline = own_options(NAME, options).pipeline
        try:
            proto = onnx.load(str(path))
        except (OSError, DecodeError) as error:   # absent, unreadable, or not a whole ONNX protobuf
            raise CaseError("runtime", f"onnx could not read {path}: {summarize_exception(error, 3)}\nIt is not a "
                                       "complete ONNX file: export or convert the model again") from None
        named_dims = name_anonymous_dims(proto)
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said):
                module = from_onnx(proto, keep_params_in_input=False)
        except tvm.error.OpNotImplemented as error:
            # its message ends with the op types it has no converter for: named first, as a summary line shows it
            ops = str(error).rpartition(": ")[2]
            raise RuntimeLimit(f"TVM {tvm.__version__}'s ONNX frontend has no converter for {ops} "
                               f"(\"{error}\"): run {path} on another target, or replace the op") from None
        except Exception as error:  # why: its op converters raise ValueError, TypeError, KeyError, TVM's errors
            # the op is named only in what the frontend prints as it re-raises ("Error converting operator Conv")
            failed = re.search(r"^Error converting operator (\S+?),", said.getvalue(), re.MULTILINE)
            node = f"a {failed.group(1)} node" if failed else "a node"
            raise RuntimeLimit(f"TVM {tvm.__version__}'s ONNX frontend could not convert {node} of {path}: "
                               f"{summarize_exception(error, 4)}\nIts converter for that op does not take this "
                               "node's attributes or inputs: run the file on another target") from None
        try:
            module = relax.get_pipeline(pipeline)(module)
            executable = tvm.compile(module, target=TARGET)
        except Exception as error:  # why: a lowering or LLVM code generation failure surfaces as any TVM FFI error
            raise RuntimeLimit(f"TVM {tvm.__version__} could not compile {path} for {TARGET} with the {pipeline!r} "
                               f"pipeline: {summarize_exception(error, 4)}\nRun the file on another target, or "
                               f"try --tvm-pipeline={'default' if pipeline == 'zero' else 'zero'}") from None
        self.machine = relax.VirtualMachine(executable, tvm.cpu())
        self.main = self.machine["main"]
        feedable = set(feedable_inputs(proto))
        self.inputs = [value for value in proto.graph.input if value.name in feedable]
        self.outputs = list(proto.graph.output)
        self.provenance = {"device": device, "frontend": "tvm.relax.frontend.onnx.from_onnx",
                           "params": "folded in as constants (keep_params_in_input=False)",
                           "pipeline": pipeline, "target": str(tvm.target.Target(TARGET)),
                           "opt_level": tvm.transform.PassContext.current().opt_level, "named_dims": named_dims,
                           "executor": "relax.VirtualMachine (bytecode)"}

    def bind(self, input_names: Sequence[str], input_dtypes: Sequence[str], output_names: Sequence[str]) -> dict[str, Any]:
        """Match the spec's inputs and outputs to the file's, by name or by position."""
        from onnx.helper import tensor_dtype_to_np_dtype

        declared = {value.name: (np.dtype(tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).name
                                 if value.type.tensor_type.elem_type else None) for value in self.inputs}
        self._input_names, self._output_names, record = bind_ports(
            input_names, input_dtypes, output_names, declared, [value.name for value in self.outputs])
        self.provenance["matched_by"] = record["matched_by"]
        return record

    def declared_inputs(self) -> list[list[int | None]]:
        """The bound inputs' declared shapes, in the spec's order (None: a dim the
        file names or leaves open, symbolic in the compiled module)."""
        shapes = {value.name: [d.dim_value if d.HasField("dim_value") else None
                               for d in value.type.tensor_type.shape.dim] for value in self.inputs}
        return [shapes[name] for name in self._input_names]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        import tvm

        by_name = dict(zip(self._input_names, inputs))
        # the compiled main takes the file's inputs in the file's order
        result = self.main(*[tvm.runtime.tensor(np.asarray(by_name[value.name], order="C")) for value in self.inputs])
        outputs = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
        produced = {value.name: tensor.numpy() for value, tensor in zip(self.outputs, outputs)}
        return [produced[name] for name in self._output_names]

    def close(self) -> None:
        self.main = self.machine = None


def name_anonymous_dims(proto: Any) -> dict[str, list[int]]:
    """Gives each dim of a graph input that has neither a size nor a name (as MXNet's exporter writes
    every free dim) a name of its own, in place; returns their axes, by input, for the provenance.
    Why: TVM 0.27's ONNX frontend makes one symbolic variable of every such dim (parse_shape_name of
    ""), so an input declared (?, 3, ?, ?) compiles to one that requires N == H == W and refuses every
    other shape. Named apart, each dim is free, as the file says (the canary in tests/test_runtime_tvm.py
    fails the day TVM keeps them apart itself)."""
    taken = {dim.dim_param for value in proto.graph.input for dim in value.type.tensor_type.shape.dim}
    fresh = (f"dim{index}" for index in itertools.count() if f"dim{index}" not in taken)
    named: dict[str, list[int]] = {}
    for value in proto.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.WhichOneof("value") != "dim_value" and not dim.dim_param:
                dim.dim_param = next(fresh)
                named.setdefault(value.name, []).append(axis)
    return named
