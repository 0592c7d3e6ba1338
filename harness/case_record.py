"""The record of one case: what parity.json holds for it, typed.

A field is in the record once it is given a value, and `to_json()` writes the
fields in the order they were first given one, as the plain dict that held the
record before kept its keys: parity.json stays the same text for the same run.
A field never given one is left out, as the dict left out a key it never had.
The status changes in one place, `set_status`, which keeps the rules of the
checks that judge a case one after the other (runner.finish_case).

The sub-records (outputs, failure, localization, golden, qdq_check, ...) stay
plain JSON dicts, built by the modules that measure them; the reference page of
the record (docs/reference/results.md) is generated from these fields."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

Status = Literal["passed", "failed", "inconclusive", "error", "skipped"]


def _doc(text: str, *, written: bool = True) -> Any:
    """A field absent until given a value; `text` says what it holds (the reference page's column)."""
    return field(default=None, metadata={"doc": text, "written": written})


@dataclass(init=False)
class CaseRecord:
    """One case's verdict and numbers (runner.base_record starts one for a case);
    rebuilt from its JSON (a worker's, sent across its pipe) by `from_json`."""

    id: str = _doc("the case's id: `model-source-target-device[-variant][-via-path][-precision][-ref-device]`")
    model: str = _doc("the model's name")
    model_ref: str = _doc("what names the model to `--model`: a zoo name, or the user's file")
    source: str = _doc("the source framework that holds the original")
    target: str = _doc("the runtime that runs the converted model")
    device: str = _doc("the target's device")
    reference_device: str = _doc("the device the original runs on")
    precision: str = _doc("fp32, or the reduced precision the case converts to")
    variant: str | None = _doc("the conversion's variant (nhwc, nchw, ...), null for none")
    random_ops: list[str] = _doc("the random operators of the graph: compared by distribution, never elementwise")
    model_file: dict[str, Any] = _doc("the user's model file and its sha256 (model_file.describe)")
    status: Status = _doc("passed, failed, inconclusive, error or skipped (set by `set_status` alone)")
    stage: str = _doc("where an error happened: options, load, convert, runtime, inputs, run, internal, ...")
    message: str = _doc("the verdict for people: the first line says what failed or why it passed")
    examples: int = _doc("examples run through both sides, corners included")
    corner_examples: int = _doc("of those, the corner examples run before hypothesis draws")
    shrink_steps: int = _doc("examples hypothesis ran to shrink a failure")
    first_failure_at: int | None = _doc("the example that first failed, null where none did")
    worst_error_ratio: float | None = _doc("the largest error over its tolerance (<= 1 passes) of any output")
    worst_normalized_error: float | None = _doc("the largest error over the output's magnitude")
    outputs: dict[str, dict[str, Any]] = _doc("per output: tolerance, metrics of the worst example, noise floor, "
                                              "recipe, input sensitivity")
    provenance: dict[str, Any] = _doc("what produced each side: the original, each hop and its options, the "
                                      "artifact, the cache")
    versions: dict[str, Any] = _doc("the versions of the frameworks and tools the case used")
    timings: dict[str, float] = _doc("seconds per stage (build, convert, load, explore, ...)")
    shrink_cut_s: float = _doc("where shrinking stopped at its time budget, in seconds")
    cost: dict[str, Any] = _doc("milliseconds per example of each side and of the harness's own work")
    warnings: list[dict[str, Any]] = _doc("findings before the first example (shapes, layouts, default bounds)")
    failure: dict[str, Any] = _doc("the failing input: its recipe, .npz, replay command, statistics and "
                                   "comparisons")
    drawn_error: dict[str, Any] = _doc("why the drawn examples could not run, where stored sets judged alone")
    file_precision: dict[str, Any] = _doc("a lowered file's own verdict in its types (file_precision.py)")
    qdq_pairs: list[dict[str, Any]] = _doc("each Quantize/Dequantize pair of an int8 QDQ file, measured")
    qdq_check: dict[str, Any] = _doc("the Q/DQ pairs' verdict and findings (qdq_check.py)")
    localization: dict[str, Any] = _doc("where a failed case first diverges, and its reproduction")
    golden: dict[str, Any] = _doc("the stored examples beside the model: sets, passed, results")
    drawn_inconclusive: list[str] = _doc("outputs the drawn examples could not judge, the stored sets did")
    user_inputs: dict[str, Any] = _doc("the user's examples (--parity-inputs): passed, results, failure")
    accuracy: dict[str, Any] = _doc("top-1 accuracy of each side on --parity-labels, and the drop")
    duration_s: float = _doc("the case's wall time, in seconds")
    finished: str = _doc("when the case finished, UTC to the millisecond")
    isolation: dict[str, Any] = _doc("why the case ran in a worker process, its pid and the stage it reached")
    started_at: float = _doc("time.perf_counter() as the case started, for duration_s", written=False)

    def __init__(self, **values: Any) -> None:
        for name, value in values.items():
            setattr(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in FIELD_NAMES:   # a misspelt field would otherwise be a key of its own in parity.json
            raise AttributeError(f"CaseRecord has no field {name!r}")
        super().__setattr__(name, value)

    def has(self, name: str) -> bool:
        """Whether field `name` was given a value (is in the record)."""
        return name in vars(self)

    def set_status(self, status: Status, message: str, *, stage: str | None = None,
                   earlier_as: str | None = None) -> None:
        """The one place the status changes, with its message, by the rules of
        the checks that judge a case in turn:
        - error and skipped end the case: they replace the status and the
          message; an error names its `stage`;
        - passed and inconclusive never replace a failure (nor an error);
        - failed wins over a pass or an inconclusive verdict: `message` leads,
          and below it the earlier message, labelled `earlier_as`, whatever its
          verdict was (a check that found what the outputs' verdict hid), or,
          without `earlier_as`, an earlier failure's message (a pass's is
          dropped: the failure is the verdict now)."""
        before = self.status
        if status in ("passed", "inconclusive") and before in ("failed", "error"):
            return
        if status == "failed" and earlier_as is not None:
            message = f"{message}\n{earlier_as}{self.message}"
        elif status == "failed" and before == "failed":
            message = f"{message}\n{self.message}"
        self.status = status
        if stage is not None:
            self.stage = stage
        self.message = message

    def to_json(self) -> dict[str, Any]:
        """The record as parity.json holds it (before results.to_jsonable): the
        fields given a value, in the order they were first given one."""
        return {name: value for name, value in vars(self).items() if name in WRITTEN_FIELDS}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaseRecord:
        """The record `to_json` wrote, rebuilt (a worker's, sent across its pipe)."""
        unknown = [name for name in data if name not in WRITTEN_FIELDS]
        if unknown:
            raise ValueError(f"a case record with fields CaseRecord has not: {', '.join(unknown)}")
        return cls(**data)


FIELD_NAMES = frozenset(f.name for f in fields(CaseRecord))
WRITTEN_FIELDS = frozenset(f.name for f in fields(CaseRecord) if f.metadata["written"])
