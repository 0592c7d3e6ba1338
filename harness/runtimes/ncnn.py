"""ncnn (Tencent's inference library for phones and embedded devices) as a
target: an ncnn model (.param + .bin beside it, as pnnx writes it) run on the
CPU through ncnn's Python binding.

Precision trap: ncnn turns fp16 on by default (`use_fp16_packed`,
`use_fp16_storage`, `use_fp16_arithmetic`) and bf16 storage where the CPU
has it. Every session sets all four itself: off for fp32, fp16 packed/storage/
arithmetic on for the fp16 precision (which ncnn computes on x86 too: its
fp16 storage is a real lowering there, measured in tests/test_ncnn.py), and
records them.

An ncnn Mat has no batch axis: each sample of a batch is run through its own
extractor (the batch axis dropped, the array contiguous float32) and the
outputs are stacked back along a new first axis. Integer inputs (token ids)
travel as int32 in a 4-byte Mat (their bits viewed as float32): ncnn's Embed
reads its input as ints; passing float32 values gave errors of 1.6x the
output's scale on the zoo's embedding model. ncnn's params carry no
shapes for most models: declared_inputs gives None (nothing declared). ncnn writes
its errors to stderr from native code; a load is run with stderr captured so
that a CaseError quotes them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from harness.errors import CaseError
from harness.runtimes.binding import bind_ports

NAME = "ncnn"
FORMATS = ("ncnn",)
# The files it runs, by suffix -> format: how a user's --converted file is read (backends.artifact_suffixes).
SUFFIXES = {".param": "ncnn"}
# The pip distributions whose versions every record carries, where installed (backends.distributions).
DISTRIBUTIONS = ("ncnn",)
PRECISIONS = ("fp32", "fp16")
NEEDS_ISOLATION = True   # native code parses the .param/.bin: a malformed file can crash the process
# precision -> ncnn option -> value
SETTINGS = {
    "fp32": {"use_fp16_packed": False, "use_fp16_storage": False, "use_fp16_arithmetic": False,
             "use_bf16_storage": False},
    "fp16": {"use_fp16_packed": True, "use_fp16_storage": True, "use_fp16_arithmetic": True,
             "use_bf16_storage": False},
}
PARAM_SUFFIX = ".param"

PACKAGES = ("ncnn",)   # what missing() imports: found, a CPU case imports them as it starts (backends.installed)


def missing(device: str) -> str | None:
    if device != "cpu":
        return (f"the ncnn target runs on the CPU here, not on {device!r}: ncnn's GPU path is Vulkan "
                "(use_vulkan_compute), which is not a harness device")
    try:
        import ncnn  # noqa: F401
    except ImportError as error:
        return f"ncnn is not installed ({error}); pip install ncnn"
    return None


def versions() -> dict[str, str]:
    import ncnn

    return {"ncnn": ncnn.__version__}


@dataclass
class Options:
    """ncnn's own settings (flags made from these fields)."""

    threads: int = field(default=0, metadata={
        "range": (0, None), "help": "opt.num_threads of the ncnn net; 0 lets ncnn choose (its physical big cores)"})


def weights_path(param: Path) -> Path:
    """The .bin of an ncnn .param: model.ncnn.param -> model.ncnn.bin."""
    return Path(param).with_suffix(".bin")


class Session:
    """An ncnn net loaded for the CPU at one precision, with the blobs the
    spec's inputs and outputs map onto."""

    def __init__(self, path: Path, device: str, options: Any, precision: str = "fp32"):
        """path: an ncnn .param with its .bin beside it (same name, .bin)."""
        import ncnn

        from harness.backends import own_options

        path = Path(path)
        if device != "cpu":
            raise CaseError("runtime", f"the ncnn target runs on the CPU here, not on {device!r}")
        if precision not in SETTINGS:
            raise CaseError("runtime", f"the ncnn target has no precision {precision!r} "
                                       f"(it has {', '.join(PRECISIONS)})")
        weights = weights_path(path)
        if not path.is_file():
            raise CaseError("runtime", f"{path} does not exist or is not a file: give the path of an ncnn .param")
        if not weights.is_file():
            raise CaseError("runtime", f"the ncnn model {path} has no weights file {weights.name} beside it: an "
                                       "ncnn model is a .param and a .bin of the same name in one folder")
        self.net = ncnn.Net()
        settings = SETTINGS[precision]
        for name, value in settings.items():
            setattr(self.net.opt, name, value)
        self.net.opt.use_vulkan_compute = False
        threads = own_options(NAME, options).threads if options is not None else 0
        if threads > 0:
            self.net.opt.num_threads = threads
        with _captured_stderr() as said:
            status = self.net.load_param(str(path))
        if status != 0:
            text = said()
            advice = ("it names a layer type ncnn does not have (an op the converter could not lower, or a "
                      "custom layer): run it on another target" if "not exists or registered" in text else
                      "it does not parse as an ncnn .param: check that the file is complete and is what its "
                      "suffix says")
            raise CaseError("runtime", f"ncnn could not read the param file {path} (load_param returned {status}): "
                                       f"{advice}.\nncnn said: {_last(text)}")
        with _captured_stderr() as said:
            status = self.net.load_model(str(weights))
        if status != 0:
            raise CaseError("runtime", f"ncnn could not load the weights {weights} of {path} (load_model returned "
                                       f"{status}): the .bin does not hold the weights the .param asks for; it is "
                                       "truncated or belongs to another conversion; copy it again, or convert the "
                                       f"model again.\nncnn said: {_last(said())}")
        self.path = path
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._integer: list[bool] = []
        self.provenance = {
            "format": "ncnn",
            "device": device,
            "precision": precision,
            "options": {**settings, "use_vulkan_compute": False, "num_threads": int(self.net.opt.num_threads)},
            "batch": "ncnn has no batch axis: each sample runs through its own extractor, outputs stacked",
            "integer_inputs": "passed as int32 bits in a 4-byte Mat (ncnn's Embed reads ints)",
        }

    def bind(self, input_names: Sequence[str], input_dtypes: Sequence[str], output_names: Sequence[str]) -> dict[str, Any]:
        """Match the spec's inputs and outputs to the net's blobs, by name or
        (pnnx's in0.../out0...) by position; return what was done."""
        present_in = list(self.net.input_names())
        present_out = list(self.net.output_names())
        self._inputs, self._outputs, record = bind_ports(
            input_names, input_dtypes, output_names, {name: None for name in present_in}, present_out)
        self._integer = [np.issubdtype(np.dtype(d), np.integer) for d in input_dtypes]
        self.provenance["matched_by"] = record["matched_by"]
        self.provenance["blobs"] = {"inputs": record["inputs"], "outputs": record["outputs"]}
        return record

    def declared_inputs(self) -> list[list[int | None] | None]:
        """None per input: an ncnn .param declares no input shapes (not even
        the rank), so there is nothing to check against the spec."""
        return [None for _ in self._inputs]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        import ncnn

        batch = {len(a) for a in inputs}
        if len(batch) != 1:
            raise CaseError("runtime", f"the ncnn target splits the batch: its inputs must share the first "
                                       f"axis, not {[a.shape for a in inputs]}")
        per_output: list[list[np.ndarray]] = [[] for _ in self._outputs]
        for sample in range(batch.pop()):
            extractor = self.net.create_extractor()
            mats = [ncnn.Mat(np.ascontiguousarray(array[sample], dtype=np.int32).view(np.float32) if integer
                             else np.ascontiguousarray(array[sample], dtype=np.float32))
                    for array, integer in zip(inputs, self._integer)]
            for name, mat in zip(self._inputs, mats):
                extractor.input(name, mat)
            for index, name in enumerate(self._outputs):
                status, mat = extractor.extract(name)
                if status != 0:
                    raise CaseError("runtime", f"ncnn could not compute output blob {name!r} of {self.path} "
                                               f"(extract returned {status})")
                per_output[index].append(np.array(mat, dtype=np.float32, copy=True))
            del extractor, mats
        return [np.stack(samples) for samples in per_output]

    def close(self) -> None:
        if getattr(self, "net", None) is not None:
            self.net.clear()
        self.net = None


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Any]:
    """What native code writes to fd 2 inside the block, readable after it."""
    import sys

    with tempfile.TemporaryFile(mode="w+b") as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        text: list[str] = []
        try:
            yield lambda: "".join(text)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text.append(capture.read().decode(errors="replace"))


def _last(text: str, lines: int = 4) -> str:
    kept = [line for line in text.splitlines() if line.strip() and "libvulkan" not in line and "vulkan driver" not in line]
    return "\n".join(kept[-lines:]) or "(nothing)"
