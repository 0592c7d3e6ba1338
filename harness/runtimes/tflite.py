"""TFLite (LiteRT) as a target: `ai_edge_litert`'s interpreter on the CPU, with
its default delegates (XNNPACK for float32).

The spec's names are mapped onto the model's tensors through a signature whose
input and output names are the spec's (what `converters/tf_tflite` writes);
otherwise by the spec's name within the TFLite tensor names
("serving_default_image:0" holds "image"), else by position when the counts
agree. Inputs are resized to each example's shapes and the tensors
re-allocated only when the shapes change.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.errors import CaseError, summarize_exception

NAME = "tflite"
FORMATS = ("tflite",)
# A malformed file has hung the interpreter in allocate_tensors: cases run in a
# worker process under --parity-isolate=auto (harness/worker.py).
NEEDS_ISOLATION = True


def missing(device: str) -> str | None:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError as error:
        return f"ai_edge_litert is not installed ({error}); pip install ai-edge-litert"
    if device != "cpu":
        return "the TFLite interpreter runs on the CPU here; GPU delegates are not set up"
    return None


def versions() -> dict[str, str]:
    import ai_edge_litert

    version = getattr(ai_edge_litert, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("ai-edge-litert")
    return {"ai_edge_litert": version}


class Session:
    """A loaded artifact, with the tensors that the spec's inputs and outputs map onto."""

    def __init__(self, path: Path, device: str, options: Any = None, precision: str = "fp32"):
        """precision: fp32, the one this runtime declares (no PRECISIONS)."""
        from ai_edge_litert.interpreter import Interpreter

        if device != "cpu":
            raise CaseError("runtime", f"the TFLite interpreter runs on the CPU here, not on {device!r}")
        if precision != "fp32":
            raise CaseError("runtime", f"the tflite target computes in fp32 only, not {precision}")
        try:
            self.interpreter = Interpreter(model_path=str(path))
            self.interpreter.allocate_tensors()  # a file that parses but cannot be prepared fails here, not mid-run
            signatures = self.interpreter.get_signature_list()
        except Exception as error:
            raise CaseError("runtime", f"the TFLite interpreter could not load {path}: "
                                       f"{summarize_exception(error, 4)}") from None
        # Signature runners are not kept: one that is alive holds a reference to
        # the interpreter's internals, and resizing then refuses to run.
        self.signatures = {key: _signature_details(self.interpreter, key) for key in signatures}
        self._shapes: tuple[tuple[int, ...], ...] | None = None
        self._inputs: list[dict[str, Any]] = []
        self._outputs: list[dict[str, Any]] = []
        self.provenance = {"interpreter": "ai_edge_litert", "signatures": sorted(self.signatures)}

    def bind(self, input_names: Sequence[str], input_dtypes: Sequence[str], output_names: Sequence[str]) -> dict[str, Any]:
        """Match the spec's inputs and outputs to the model's tensors; return what was done."""
        primary = {d["index"] for d in self.interpreter.get_input_details()}
        signature = next((key for key, (inputs, outputs) in self.signatures.items()
                          if set(input_names) <= set(inputs) and set(output_names) <= set(outputs)
                          # the main subgraph's: the interpreter's resize and set_tensor address that one
                          and all(inputs[name]["index"] in primary for name in input_names)), None)
        if signature is not None:
            inputs, outputs = self.signatures[signature]
            self._inputs = [inputs[name] for name in input_names]
            self._outputs = [outputs[name] for name in output_names]
            matched_by = f"signature {signature}"
        else:
            inputs = self.interpreter.get_input_details()
            outputs = self.interpreter.get_output_details()
            self._inputs, by_in = _match("input", input_names, inputs)
            self._outputs, by_out = _match("output", output_names, outputs)
            matched_by = "position" if "position" in (by_in, by_out) else "name"
        for spec_name, detail, dtype in zip(input_names, self._inputs, input_dtypes):
            expected = np.dtype(detail["dtype"]).name
            if expected != dtype:
                raise CaseError("runtime", f"the TFLite model's input {detail['name']!r} takes {expected} but the "
                                           f"spec's input {spec_name!r} is {dtype}: fix the input spec or the conversion")
        self._shapes = None
        self.provenance["matched_by"] = matched_by
        return {"matched_by": matched_by,
                "inputs": {name: d["name"] for name, d in zip(input_names, self._inputs)},
                "outputs": {name: d["name"] for name, d in zip(output_names, self._outputs)}}

    def declared_inputs(self) -> list[list[int | None]]:
        """The bound inputs' declared shapes, in the spec's order (None: -1 in
        the shape signature, a dim the file lets vary)."""
        return [[None if d < 0 else int(d) for d in detail.get("shape_signature", detail["shape"])]
                for detail in self._inputs]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        interpreter = self.interpreter
        arrays = [np.ascontiguousarray(x) for x in inputs]  # no cast: a wrong dtype fails in set_tensor
        shapes = tuple(x.shape for x in arrays)
        if shapes != self._shapes:
            self._shapes = None  # a failed resize leaves the tensors in no known state
            for array, detail in zip(arrays, self._inputs):
                # strict: only the dims that are -1 in the shape signature may change
                interpreter.resize_tensor_input(detail["index"], list(array.shape), strict=True)
            interpreter.allocate_tensors()
            self._shapes = shapes
        for array, detail in zip(arrays, self._inputs):
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        return [interpreter.get_tensor(d["index"]) for d in self._outputs]


def _signature_details(interpreter, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """{name: tensor details} of a signature's inputs and of its outputs."""
    runner = interpreter.get_signature_runner(key)
    return runner.get_input_details(), runner.get_output_details()


def _short(name: str) -> str:
    """"serving_default_image:0" -> "image"."""
    return re.sub(r":\d+$", "", re.sub(r"^serving_default_", "", name))


def _match(kind: str, wanted: Sequence[str], details: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The tensor details for `wanted`, by name (exact, then the spec's name
    within a TFLite name, where exactly one holds it), else by position when the
    counts agree; and how they were matched."""
    present = [d["name"] for d in details]
    chosen: list[dict[str, Any]] = []
    for name in wanted:
        hits = ([d for d in details if d["name"] == name] or [d for d in details if _short(d["name"]) == name]
                or [d for d in details if name in d["name"]])
        if len(hits) != 1 or any(hits[0] is c for c in chosen):
            break
        chosen.append(hits[0])
    else:
        return chosen, "name"
    if len(wanted) == len(details):
        return list(details), "position"
    raise CaseError("runtime", f"the TFLite model's {kind}s {present} do not match the spec's {list(wanted)}: "
                               f"name them alike (a signature with the spec's names), or give the same number "
                               f"of {kind}s in the same order")
