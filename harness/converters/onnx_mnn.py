"""ONNX file -> MNN model (model.mnn) with MNN's converter (MNNConvert, as the
MNN wheel's `mnnconvert` ships it), run in a child process.

Why a child process, and not the console script: the converter is native code
that can crash on an input it does not expect (on the zoo's LSTM, its default
While-loop lowering of LSTM dies of SIGBUS), so it runs in its own interpreter
with a time limit, and a crash or a hang is this case's CaseError("convert")
quoting its last lines. The child calls the wheel's `_tools.mnnconvert`
directly: the `mnnconvert` script and `MNN.tools` import MNN's usage logger,
which runs `pip install aliyun-log-python-sdk` (into whatever `pip` is on PATH)
and sends the conversion's arguments to a remote log service. The converter's
return value says nothing (True even for a missing input file), so success is
the file written and "Converted Success!" in its output.

Precision traps, and the flags that avoid them (on the provenance):
- `--fp16` stores Convolution weights as float16: not passed, and the written
  file is read back (dumped to JSON by the converter itself) to check that no
  op holds half-float or quantized weights (`quanParameter`).
- `--useGeluApproximation` defaults to 1: a fused GELU is computed with the
  tanh approximation (up to ~1e-3 off erf-GELU). Passed as 0.
- `--useOriginRNNImpl`: LSTM and GRU as MNN's own RNN ops, not as While
  loops; the While form crashes the converter on the zoo's LSTM (SIGBUS).

MNN keeps ONNX's layouts (NCHW) for an ONNX source (`--keepInputFormat`
defaults to true; the file's inputs are checked to say NCHW). It writes a
free batch dim as 1, and keeps other free dims as -1; the runtime resizes
every input per example, so any batch runs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.converters.child_tool import run_child, status, tail
from harness.errors import CaseError
from harness.model_file import file_sha256
from harness.specs import ModelSpec

NAME = "MNN.mnnconvert"
READS = ("onnx",)
WRITES = "mnn"
REVISION = 1
FILENAME = "model.mnn"
OPTIONS = ()
BIZ_CODE = "parity"
# The converter's own flags besides the files: no --fp16, exact GELU, MNN's RNN ops.
FLAGS = ("--bizCode", BIZ_CODE, "--useGeluApproximation", "0", "--useOriginRNNImpl")
TIMEOUT_S = 600.0
MNN_NOISE = ("device supports",)   # MNN prints its CPU features on every start
# The child: MNN's converter without MNN.tools (whose import installs packages and phones home).
_CHILD = "import sys, _tools; _tools.mnnconvert(sys.argv)"


def versions() -> dict[str, str]:
    import MNN
    import onnx

    return {"MNN": MNN.version(), "onnx": onnx.__version__}


def missing() -> str | None:
    try:
        import MNN  # noqa: F401
        import _tools  # noqa: F401
    except ImportError as error:
        return f"MNN (with its converter) is not installed ({error}); pip install MNN"
    return None


def run_converter(args: Sequence[str], timeout: float = TIMEOUT_S) -> tuple[int, str]:
    """MNN's converter with `args`, in a child interpreter: (exit status, output).
    A negative status is the signal that killed it."""
    return run_child([sys.executable, "-c", _CHILD, *args], timeout)


def convert(source: Path, spec: ModelSpec, example: Sequence[np.ndarray], out_dir: Path, *,
            layouts: tuple[dict[str, str | None], dict[str, str | None]]) -> dict[str, Any]:
    """Convert the ONNX file `source` to `out_dir/model.mnn`; return the
    provenance. `example` is not used: the file keeps the ONNX's free dims
    (a free batch written as 1) and the runtime resizes per example."""
    import MNN

    source = Path(source)
    if not source.is_file():
        raise CaseError("convert", f"the ONNX file {source} does not exist or is not a file: export the model "
                                   "to ONNX first, or give the path of an .onnx file")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILENAME
    path.unlink(missing_ok=True)
    args = ["-f", "ONNX", "--modelFile", str(source), "--MNNModel", str(path), *FLAGS]
    start = time.perf_counter()
    code, output = run_converter(args)
    seconds = time.perf_counter() - start
    if code != 0 or "Converted Success" not in output or not path.is_file() or path.stat().st_size == 0:
        path.unlink(missing_ok=True)
        raise CaseError("convert", f"MNN's converter could not convert {source} for model {spec.name!r}: it "
                                   f"{status(code)}{' without writing ' + path.name if code == 0 else ''}. "
                                   f"Its last lines:\n{tail(output, MNN_NOISE)}\nAn op MNN cannot convert, or a file it "
                                   "cannot read, is named above: run the ONNX file on another target")
    dumped = describe(path)
    if dumped["half_or_quantized_weights"]:
        raise CaseError("convert", f"the MNN file {path} holds half-float or quantized weights in ops "
                                   f"{dumped['half_or_quantized_weights']} though --fp16 and weight quantization "
                                   "were not asked for. This is a harness bug: report it")
    not_nchw = {name: fmt for name, fmt in dumped["input_formats"].items() if fmt != "NCHW"}
    if not_nchw:
        raise CaseError("convert", f"the MNN file {path} takes inputs {not_nchw} in another layout than the "
                                   "ONNX's NCHW: the harness expects MNN to keep ONNX's layouts")
    return {
        "converter": NAME,
        "tool": "MNNConvert (the MNN wheel's _tools.mnnconvert, in a child process)",
        "tool_version": MNN.version(),
        "flags": ["-f", "ONNX", *FLAGS],
        # --fp16 (half-float Convolution weights) is not passed; checked in the file below
        "fp16_weights": False,
        "weight_storage": dumped["weight_storage"],
        "input_dims": dumped["input_dims"],
        "convert_seconds": round(seconds, 3),
        "source_sha256": file_sha256(source),
        # MNN keeps ONNX's NCHW (--keepInputFormat defaults to true); checked on the file's inputs.
        "input_layouts": dict(layouts[0]),
        "output_layouts": dict(layouts[1]),
        "versions": versions(),
    }


def describe(path: Path) -> dict[str, Any]:
    """What an .mnn file holds, as MNN's converter dumps it to JSON: its
    inputs' dims and formats, and how its weighted ops store their weights."""
    json_path = path.with_suffix(".json")
    try:
        code, output = run_converter(["-f", "MNN", "--modelFile", str(path), "--JsonFile", str(json_path)])
        if not json_path.is_file():
            raise CaseError("convert", f"MNN's converter could not read back {path} (it {status(code)}):\n"
                                       f"{tail(output, MNN_NOISE)}")
        model = json.loads(json_path.read_text())
    finally:
        json_path.unlink(missing_ok=True)
    storage = {"float32": 0, "half_or_quantized": 0}
    half: list[str] = []
    inputs: dict[str, list[int]] = {}
    formats: dict[str, str] = {}
    for op in model.get("oplists", []):
        main = op.get("main") if isinstance(op.get("main"), dict) else {}
        if op.get("type") == "Input":
            name = (model.get("tensorName") or [])[op["outputIndexes"][0]]
            inputs[name] = list(main.get("dims", []))
            formats[name] = main.get("dformat", "NCHW")
        if main.get("quanParameter"):
            storage["half_or_quantized"] += 1
            half.append(op.get("name", "?"))
        elif "weight" in main:
            storage["float32"] += 1
    return {"weight_storage": storage, "half_or_quantized_weights": half, "input_dims": inputs,
            "input_formats": formats}
