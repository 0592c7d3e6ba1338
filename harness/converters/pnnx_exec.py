"""Running the pnnx executable, and reading the ncnn .param it writes: what
the two hops to ncnn (torch_ncnn.py from a traced module, onnx_ncnn.py from an
ONNX file) share.

The executable (native code) runs in a subprocess with a time limit, in a work
folder, with every path absolute; a crash, a hang or a missing output is the
case's error quoting pnnx's last lines. pnnx stores fp16 weights by default:
it is asked for fp16=0 (FP16). Layer types ncnn does not know (an op pnnx
could not lower, written under its own name) are refused, naming them; pnnx
names the blobs in0.../out0..., which map to the spec's by position.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.converters.child_tool import TIMED_OUT, run_child, status, tail
from harness.errors import CaseError
from harness.specs import ModelSpec

FP16 = False                    # pnnx's default is fp16=True: fp16 weights in the .bin
PNNX_TIMEOUT_S = 300.0
# numpy dtype -> pnnx's type suffix in inputshape=
_PNNX_TYPES = {"float32": "f32", "float64": "f64", "float16": "f16", "int64": "i64", "int32": "i32",
               "int16": "i16", "int8": "i8", "uint8": "u8"}
Layer = tuple[str, str, list[str], list[str]]   # (type, name, bottom blobs, top blobs)


def run_pnnx(model_file: Path, work_dir: Path, out_dir: Path, param_name: str, spec: ModelSpec,
             first: Sequence[np.ndarray], second: Sequence[np.ndarray] | None,
             what: str) -> tuple[list[str], list[Layer], tuple[list[str], list[str]], float]:
    """Convert `model_file` (TorchScript or ONNX) with pnnx at the shapes of
    `first` (and `second`, for inputshape2), move the .param (`out_dir/param_name`)
    and its .bin into `out_dir`; return (pnnx's arguments, paths elided, the
    layers, (input blobs, output blobs), seconds). `what` names the model in
    errors ("torch model 'cnn'")."""
    import pnnx

    param, weights = work_dir / "model.ncnn.param", work_dir / "model.ncnn.bin"
    command = [pnnx.EXEC_PATH, str(model_file), "inputshape=" + _shape_arg(first), "device=cpu",
               f"fp16={int(FP16)}", f"ncnnparam={param}", f"ncnnbin={weights}"]
    if second is not None:
        command.append("inputshape2=" + _shape_arg(second))
    start = time.perf_counter()
    code, output = run_child(command, PNNX_TIMEOUT_S, cwd=work_dir,
                             env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if code == TIMED_OUT:
        raise CaseError("convert", f"pnnx did not finish converting {what} within {PNNX_TIMEOUT_S:.0f} s; its "
                                   f"last output:\n{tail(output)}")
    seconds = time.perf_counter() - start
    if code != 0 or not param.is_file() or not weights.is_file():
        raise CaseError("convert", f"pnnx could not convert {what} to ncnn (it {status(code)}"
                                   f"{'' if param.is_file() else ', writing no .param'}); its last output:\n"
                                   f"{tail(output)}")
    layers = read_param(param)
    unknown = sorted({kind for kind, _, _, _ in layers if not _known_layer(kind)})
    if unknown:
        raise CaseError("convert", f"pnnx wrote layer type(s) {', '.join(unknown)} that ncnn does not have, "
                                   f"converting {what}: ops pnnx could not lower to ncnn; ncnn cannot run this "
                                   "model (run it on another target)")
    in_blobs, out_blobs = io_blobs(layers)
    if len(in_blobs) != len(spec.inputs) or len(out_blobs) != len(spec.outputs):
        raise CaseError("convert", f"pnnx made {len(in_blobs)} input(s) {in_blobs} and {len(out_blobs)} "
                                   f"output(s) {out_blobs} of {what}, whose spec has {len(spec.inputs)} and "
                                   f"{len(spec.outputs)}")
    shutil.move(str(param), out_dir / param_name)
    shutil.move(str(weights), out_dir / "model.ncnn.bin")
    arguments = [a if not a.startswith(("ncnnparam=", "ncnnbin=")) else a.split("=")[0] + "=..." for a in command[2:]]
    return arguments, layers, (in_blobs, out_blobs), seconds


def second_shapes(spec: ModelSpec, first: Sequence[np.ndarray]) -> list[np.ndarray] | None:
    """A second input set (batch one) whose symbolic dims other than the batch
    take other values within their bounds, for pnnx's inputshape2; None where
    the spec has none. Values repeat the first set's, so they stay in domain."""
    bounds = spec.dim_bounds
    seen: dict[str, int] = {}
    for item, array in zip(spec.inputs, first):
        for axis, dim in enumerate(item.shape):
            if axis > 0 and isinstance(dim, str):
                seen.setdefault(dim, array.shape[axis])
    if not seen:
        return None
    other = {dim: (bounds[dim][1] if value != bounds[dim][1] else bounds[dim][0]) for dim, value in seen.items()}
    if all(other[dim] == seen[dim] for dim in seen):
        return None
    arrays = []
    for item, array in zip(spec.inputs, first):
        shape = [1] + [other.get(dim, size) if isinstance(dim, str) else size
                       for dim, size in zip(item.shape[1:], array.shape[1:])]
        arrays.append(np.resize(array, shape).astype(array.dtype))
    return arrays


def _shape_arg(arrays: Sequence[np.ndarray]) -> str:
    return ",".join(f"[{','.join(str(d) for d in a.shape)}]{_PNNX_TYPES.get(str(a.dtype), 'f32')}" for a in arrays)


def read_param(path: Path) -> list[tuple[str, str, list[str], list[str]]]:
    """The layers of an ncnn .param (text): (type, name, bottom blobs, top blobs)."""
    lines = [line.split() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    if not lines or lines[0] != ["7767517"] or len(lines) < 2:
        raise ValueError(f"{path} is not an ncnn text .param (its first line is not the magic 7767517)")
    layers = []
    for fields in lines[2:]:
        if len(fields) < 4:
            raise ValueError(f"{path} has a layer line too short to parse: {' '.join(fields)!r}")
        kind, name, bottoms, tops = fields[0], fields[1], int(fields[2]), int(fields[3])
        blobs = fields[4:4 + bottoms + tops]
        layers.append((kind, name, blobs[:bottoms], blobs[bottoms:]))
    return layers


def io_blobs(layers: list[tuple[str, str, list[str], list[str]]]) -> tuple[list[str], list[str]]:
    """(input blobs, output blobs) in pnnx's order: the Input layers' blobs, and
    pnnx's out0, out1... (else the blobs no layer consumes), sorted by their number."""
    inputs = [top for kind, _, _, tops in layers if kind == "Input" for top in tops]
    consumed = {b for _, _, bottoms, _ in layers for b in bottoms}
    produced = [top for _, _, _, tops in layers for top in tops]
    outputs = [b for b in produced if re.fullmatch(r"out\d+", b)]
    if not outputs:  # not pnnx's names: the blobs no layer consumes
        outputs = [b for b in produced if b not in consumed and b not in inputs]
    return _by_number(inputs), _by_number(outputs)


def _by_number(names: list[str]) -> list[str]:
    def key(name: str):
        digits = name.lstrip("abcdefghijklmnopqrstuvwxyz_")
        return (0, int(digits)) if digits.isdigit() else (1, names.index(name))
    return sorted(names, key=key)


def _known_layer(kind: str) -> bool:
    import ncnn

    return ncnn.layer_to_index(kind) >= 0
