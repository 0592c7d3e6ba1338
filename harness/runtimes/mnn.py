"""MNN as a target: .mnn files (from the ONNX -> MNN hop, or a user's own with
--converted), run by MNN's Module API (`MNN.nn.load_module_from_file`) on the CPU.

Precision: the session sets the runtime's precision to "high" (fp32) itself,
rather than leaving MNN's "normal", under which a backend may compute in
lower precision where the hardware has it (ARMv8.2 fp16); it is on the
provenance. fp16 is not declared: MNN's "low" mode lowers only on a CPU with
fp16 arithmetic, which it reports at import ("fp16:0" on the x86 CPU this was
written on), so it is not declared (the output of "low" there was not measured).

Shapes: the module is loaded shape-mutable, and each example's inputs are new
placeholders of its shape, so MNN resizes the graph per example (a free batch
the converter wrote as 1 included). Integer inputs (int64 in the spec) are
given as int32, which is what MNN's converter makes of ONNX's int64; values
outside int32 are refused.

Isolated (NEEDS_ISOLATION): MNN is native code that reads a flatbuffer with
little checking; a damaged file could crash the process, so cases run in a
worker. MNN is imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.errors import CaseError, summarize_exception
from harness.runtimes.binding import bind_ports

NAME = "mnn"
FORMATS = ("mnn",)
# The files it runs, by suffix -> format: how a user's --converted file is read (backends.artifact_suffixes).
SUFFIXES = {".mnn": "mnn"}
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("MNN",)
NEEDS_ISOLATION = True
PRECISION_MODE = "high"   # MNN's runtime config key "precision": high = fp32
THREADS = 1

PACKAGES = ("MNN",)   # what missing() imports: found, a CPU case imports them as it starts (backends.installed)


def missing(device: str) -> str | None:
    if device != "cpu":
        return (f"the mnn target runs on the CPU here, not on {device!r} (MNN's CUDA backend is not in the "
                "MNN wheel): run it with --device=cpu")
    try:
        import MNN  # noqa: F401
    except ImportError as error:
        return f"MNN is not installed ({error}); pip install MNN"
    return None


def versions() -> dict[str, str]:
    import MNN

    return {"MNN": MNN.version()}


def _dtype_name(var) -> str | None:
    import MNN.expr as F

    return {F.float: "float32", F.double: "float64", F.int: "int32", F.uint8: "uint8",
            F.int64: "int64"}.get(var.dtype)


class Session:
    """An .mnn file loaded as an MNN Module on the CPU at fp32."""

    def __init__(self, path: Path, device: str, options: Any, precision: str = "fp32"):
        import MNN
        import MNN.expr as F
        import MNN.nn as nn

        path = Path(path)
        if device != "cpu":
            raise CaseError("runtime", f"the mnn target runs on the CPU here, not on {device!r}")
        if precision != "fp32":
            raise CaseError("runtime", f"the mnn target has no precision {precision!r}: it runs a file at fp32 "
                                       "(its precision mode 'high')")
        if not path.is_file():
            raise CaseError("runtime", f"{path} does not exist or is not a file: give the path of an .mnn file")
        self.path = path
        try:
            # The graph, read once for what the file declares: its inputs' names, dims, types.
            graph = F.load_as_dict(str(path))
            inputs, outputs = F.get_inputs_and_outputs(graph)
        except Exception as error:   # MNN's C++ bindings raise any type where they fail (SystemError, measured)
            raise CaseError("runtime", f"MNN could not read {path}: it does not parse as an MNN model (truncated, "
                                       "or not an .mnn file); convert the model again.\n"
                                       f"{summarize_exception(error, 4)}") from None
        if not inputs or not outputs:
            raise CaseError("runtime", f"MNN could not read {path}: it holds no inputs or no outputs "
                                       f"({len(inputs)} and {len(outputs)}); a truncated or damaged .mnn file "
                                       "reads this way: convert the model again")
        self._declared = {name: (list(var.shape), _dtype_name(var)) for name, var in inputs.items()}
        self._outputs_present = list(outputs)
        self._graph = graph
        self.config = {"backend": "CPU", "precision": PRECISION_MODE, "numThread": THREADS}
        self.runtime_manager = nn.create_runtime_manager((self.config,))
        self.module = None
        self._input_names: list[str] = []
        self._output_names: list[str] = []
        self.provenance = {"device": device, "precision": precision, "api": "MNN.nn.load_module_from_file",
                           "backend": "CPU", "precision_mode": PRECISION_MODE, "threads": THREADS,
                           "shape_mutable": True, "resizes_per_example": True,
                           "declared_inputs": {k: v[0] for k, v in self._declared.items()}}

    def bind(self, input_names: Sequence[str], input_dtypes: Sequence[str], output_names: Sequence[str]) -> dict[str, Any]:
        """Match the spec's inputs and outputs to the file's, by name or by
        position; load the module for those."""
        import MNN.nn as nn

        # int64 in the spec is fed as int32: MNN's converter makes int32 of ONNX's int64
        declared = {name: (None if dtype in ("int32", "int64") else dtype)
                    for name, (_, dtype) in self._declared.items()}
        self._input_names, self._output_names, record = bind_ports(
            input_names, input_dtypes, output_names, declared, self._outputs_present)
        self._input_dtypes = [self._declared[name][1] for name in self._input_names]
        try:
            self.module = nn.load_module_from_file(str(self.path), list(self._input_names),
                                                   list(self._output_names), runtime_manager=self.runtime_manager,
                                                   shape_mutable=True)
        except Exception as error:   # MNN's C++ bindings raise any type (a garbage file: SystemError, measured)
            raise CaseError("runtime", f"MNN could not load {self.path} as a module: "
                                       f"{summarize_exception(error, 4)}\nThe file is damaged or uses an op this "
                                       "MNN cannot run; convert the model again") from None
        self._graph = None
        self.provenance["matched_by"] = record["matched_by"]
        return record

    def declared_inputs(self) -> list[list[int | None]]:
        """The bound inputs' dims as the file declares them (None: a dim it lets vary),
        the batch axis open: MNN's converter writes a free batch as 1, and the
        module (shape_mutable) resizes every input to each example, so the
        file's batch constrains nothing."""
        return [[None if d < 0 or axis == 0 else d for axis, d in enumerate(self._declared[name][0])]
                for name in self._input_names]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        import MNN.expr as F

        feeds = []
        for name, array, dtype in zip(self._input_names, inputs, self._input_dtypes):
            array = np.asarray(array, order="C")
            if dtype == "int32" and array.dtype != np.int32:
                if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
                    raise CaseError("inputs", f"input {name!r} holds values outside int32, which MNN takes "
                                              "integer inputs as")
                array = array.astype(np.int32)
            var = F.placeholder(list(array.shape), F.NCHW, F.int if dtype == "int32" else F.float)
            var.write(array.astype(np.float32) if dtype not in ("int32",) and array.dtype != np.float32 else array)
            feeds.append(var)
        outputs = self.module.forward(feeds)
        # Copied out: MNN's output buffers belong to the module.
        return [np.array(out.read(), copy=True) for out in outputs]

    def close(self) -> None:
        self.module = self.runtime_manager = self._graph = None
