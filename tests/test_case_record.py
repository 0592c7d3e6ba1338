"""harness/case_record.py: the typed record of one case. Its to_json() is the
parity.json entry the plain dict before it made, key order included
(tests/data/case_records.json holds what that dict wrote for each outcome, its
run-dependent values masked), and its one status method keeps the rules the
record's nine writers had: a failure wins over a pass or an inconclusive one,
its message leads, an earlier failure's kept below it."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from harness.case_record import CaseRecord

FIXTURE = Path(__file__).parent / "data" / "case_records.json"
# Values that change from run to run or machine to machine: masked whole, their keys kept in order.
RUN_DEPENDENT = {"duration_s", "finished", "timings", "cost", "versions", "seconds", "case_seconds", "shrink_cut_s"}


def outcome_records(tmp_path: Path, with_worker: bool = True) -> dict[str, Any]:
    """One record (what run_case returns) per outcome a case can have: passed, failed and localized, an
    option's error, a file's error, skipped, inconclusive, int8 with its Q/DQ pairs checked, golden sets
    that pass, fail and judge an inconclusive output, a user example that fails, and one run in a worker.
    ONNX models built here, run on ONNX Runtime's CPU provider."""
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.runner import run_case
    from harness.worker import CaseWorkers
    from tests.test_golden import shape_model, write_model_folder, write_test_data
    from tests.test_user_inputs import write_doubling

    cache = ArtifactCache(tmp_path / "cache")

    def options(model: Path, **fields: Any) -> RunOptions:
        return RunOptions(**{"models": (str(model),), "sources": ("onnx",), "targets": ("onnxruntime",),
                             "devices": ("cpu",), "examples": 4, "cache_dir": tmp_path / "cache",
                             "reports_dir": tmp_path / "reports", **fields})

    def run(model: Path, change_case: dict[str, str] | None = None, **fields: Any) -> Any:
        run_options = options(model, **fields)
        (case,) = build_cases(run_options)
        return run_case(replace(case, **(change_case or {})), run_options, cache)

    doubling = write_doubling(tmp_path / "doubling.onnx")
    wrong_above_half = write_doubling(tmp_path / "wrong.onnx", wrong_above=0.5)
    wrong_above_ten = write_doubling(tmp_path / "wrong-large.onnx", wrong_above=10.0)
    np.savez(tmp_path / "large.npz", x=np.random.default_rng(2).uniform(11, 20, (3, 2, 3)).astype(np.float32))
    not_onnx = tmp_path / "not-onnx.onnx"
    not_onnx.write_bytes(b"not an ONNX file")
    shape = tmp_path / "shape.onnx"
    onnx.save(shape_model(), str(shape))
    x = np.random.default_rng(5).standard_normal((2, 3, 5)).astype(np.float32)
    records = {
        "passed": run(doubling, converted=doubling),
        "failed_localized": run(doubling, converted=wrong_above_half),
        "error_options": run(doubling, {"error": "--atol y:x: not a number; give --atol y:1e-4"}),
        "error_file": run(doubling, converted=not_onnx),
        "skipped": run(doubling, {"skip": "no such runtime here"}),
        "inconclusive": run(shape),
        "int8_qdq": run(doubling, precisions=("int8",), localize="off"),
        "golden_passed": run(write_model_folder(tmp_path / "good")),
        "golden_failed": run(write_model_folder(tmp_path / "off", golden_error=1e-2)),
        "golden_judges_inconclusive": run(write_test_data(tmp_path / "shape", shape_model(), {"x": x},
                                                          {"y": np.array([2, 3, 5], np.int64)})),
        "user_inputs_failed": run(doubling, converted=wrong_above_ten, parity_inputs=str(tmp_path / "large.npz"),
                                  localize="off"),
    }
    if with_worker:
        run_options = options(doubling, converted=doubling, isolate="always")
        workers = CaseWorkers(run_options)
        try:
            records["isolated"] = workers.run(build_cases(run_options)[0], "--parity-isolate=always")
        finally:
            workers.close()
    return records


def masked(value: Any, tmp_path: Path) -> Any:
    """`value` with what differs between runs and machines masked: the run-dependent keys' values, numbers,
    the temporary folder, numbers and hashes in text; every key and its place kept."""
    if isinstance(value, dict):
        return {key: "<run>" if key in RUN_DEPENDENT else masked(item, tmp_path) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item, tmp_path) for item in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):   # a shrunk failure's counts and seeds vary
        return "<number>"
    if isinstance(value, str):
        text = value.replace(str(tmp_path), "<tmp>")
        return re.sub(r"\d+", "#", re.sub(r"[0-9a-f]{16,}", "<hash>", text))
    return value


def as_written(record: Any) -> dict[str, Any]:
    """A record as parity.json holds it."""
    from harness.results import to_jsonable

    return to_jsonable(record.to_json() if isinstance(record, CaseRecord) else record)


@pytest.mark.skipif(not FIXTURE.is_file(), reason="tests/data/case_records.json not written")
def test_every_outcome_is_written_as_the_plain_dict_record_wrote_it(tmp_path):
    records = outcome_records(tmp_path)
    expected = json.loads(FIXTURE.read_text())
    assert all(isinstance(record, CaseRecord) for record in records.values())
    for name, record in records.items():
        got = json.dumps(masked(as_written(record), tmp_path), indent=1)
        assert got == json.dumps(expected[name], indent=1), name   # the text: key order included


def identity(**verdict: Any) -> CaseRecord:
    return CaseRecord(id="m-onnx-onnxruntime-cpu", model="m", model_ref="m.onnx", source="onnx",
                      target="onnxruntime", device="cpu", reference_device="cpu", precision="fp32", variant=None,
                      **verdict)


def test_a_failure_replaces_a_pass_and_leads_an_earlier_failure():
    record = identity()
    record.set_status("passed", "all outputs within tolerance")
    record.set_status("failed", "golden example test_data_set_0: y off")
    assert (record.status, record.message) == ("failed", "golden example test_data_set_0: y off")
    record.set_status("failed", "user example a.npz[0]: y off")
    assert record.message == "user example a.npz[0]: y off\ngolden example test_data_set_0: y off"


def test_a_check_that_found_what_the_outputs_hid_keeps_their_verdict_labelled_whatever_it_was():
    for earlier in ("passed", "failed", "inconclusive"):
        record = identity()
        record.set_status(earlier, "the outputs' verdict")
        record.set_status("failed", "int8 file: pair of tensor 'relu' wastes 2 bits", earlier_as="outputs: ")
        assert record.message == "int8 file: pair of tensor 'relu' wastes 2 bits\noutputs: the outputs' verdict"


def test_a_pass_or_an_inconclusive_verdict_never_undoes_a_failure_or_an_error():
    for final in ("failed", "error"):
        record = identity()
        record.set_status(final, "what failed", stage="run" if final == "error" else None)
        record.set_status("inconclusive", "passed, but inconclusive")
        record.set_status("passed", "passed on its 1 stored example(s)")
        assert (record.status, record.message) == (final, "what failed")
    record = identity()   # the benign twin: an inconclusive case the stored sets judge passes
    record.set_status("inconclusive", "passed, but inconclusive")
    record.set_status("passed", "passed on its 1 stored example(s)")
    assert (record.status, record.message) == ("passed", "passed on its 1 stored example(s)")


def test_an_error_replaces_the_verdict_and_names_its_stage():
    record = identity()
    record.set_status("failed", "y off")
    record.set_status("error", "onnxruntime could not load it", stage="load")
    assert (record.status, record.stage, record.message) == ("error", "load", "onnxruntime could not load it")


def test_the_json_holds_the_fields_given_a_value_in_the_order_given_and_never_the_start_time():
    record = identity()
    record.started_at = 12.5
    record.set_status("error", "bad option", stage="options")
    record.duration_s = 0.25
    written = record.to_json()
    assert list(written) == ["id", "model", "model_ref", "source", "target", "device", "reference_device",
                             "precision", "variant", "status", "stage", "message", "duration_s"]
    assert written["variant"] is None and "started_at" not in written and "failure" not in written
    rebuilt = CaseRecord.from_json(written)   # a worker's record, across its pipe
    assert rebuilt.to_json() == written and list(rebuilt.to_json()) == list(written)


def test_a_misspelt_field_is_refused_not_written():
    record = identity()
    with pytest.raises(AttributeError, match="CaseRecord has no field 'mesage'"):
        record.mesage = "x"
    with pytest.raises(ValueError, match="fields CaseRecord has not: worst"):
        CaseRecord.from_json({"id": "x", "worst": 1.0})
