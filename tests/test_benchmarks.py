"""The benchmarks' parts: how a result lands in a table's column and counts toward the
conformance goal, the third opinion (onnx.reference) on a failing input, the child process."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks import onnx_conformance as conformance


@pytest.mark.parametrize("harness_status, independent, third_opinion, column", [
    ("passed", "pass", None, conformance.AGREE),
    ("failed", "fail", None, conformance.AGREE),
    ("passed", "fail", None, conformance.HARNESS_PASSES),
    ("failed", "pass", None, conformance.HARNESS_FAILS),
    ("failed", "pass", "confirmed", conformance.CONFIRMED),
    ("failed", "pass", "unconfirmed", conformance.HARNESS_FAILS),
    ("failed", "pass", "cannot-run", conformance.HARNESS_FAILS),
    ("passed", "cannot-run", None, conformance.UNJUDGED),
    ("failed", "cannot-run", None, conformance.UNJUDGED),
    ("inconclusive", "pass", None, conformance.INCONCLUSIVE),
    ("skipped", "pass", None, conformance.SKIPPED),
    ("skipped", "cannot-run", None, conformance.SKIPPED),
    ("error", "pass", None, conformance.ERROR),
    ("error", "fail", None, conformance.ERROR),
])
def test_conformance_column_of_each_pair(harness_status, independent, third_opinion, column):
    assert conformance.classify(harness_status, independent, third_opinion) == column


@pytest.mark.parametrize("harness_status, independent, third_opinion", [
    ("xpassed", "pass", None), ("passed", "passed", None), ("failed", "pass", "agrees")])
def test_conformance_refuses_an_unknown_status_or_verdict(harness_status, independent, third_opinion):
    with pytest.raises(ValueError, match="unknown"):
        conformance.classify(harness_status, independent, third_opinion)


@pytest.mark.parametrize("message, limit", [
    ("input 'x' (bfloat16 tensor): openvino does not take bfloat16 (it takes float16, float32)", True),
    ("output 'y' (sequence of float32 tensors) is not a tensor: the harness feeds and compares tensors only", True),
    ("openvino cannot run this file: OpenVINO could not read /t/model.onnx: it has an op it cannot convert", True),
    ("the model holds a random op (Bernoulli) the harness cannot yet compare by distribution", False),
    ("no examples could be drawn for input 'x'", False),
])
def test_conformance_skip_counts_toward_the_goal_only_naming_a_type_or_runtime_limit(message, limit):
    assert conformance.names_a_limit(message) is limit


def test_conformance_goal_counts_agreement_confirmations_and_limit_skips_and_names_the_rest():
    tests = [Path(f"/t/node/test_{name}") for name in ("abs", "top_k", "range", "cast_bf16", "bernoulli", "loop")]
    records = {("test_abs", "openvino"): {"status": "passed"},
               ("test_top_k", "openvino"): {"status": "failed"},
               ("test_range", "openvino"): {"status": "failed"},
               ("test_cast_bf16", "openvino"): {"status": "skipped", "message":
                                                "input 'x' (bfloat16 tensor): openvino does not take bfloat16"},
               ("test_bernoulli", "openvino"): {"status": "skipped", "message": "a random op, not compared"},
               ("test_loop", "openvino"): {"status": "error", "stage": "internal", "message": "Traceback ..."}}
    verdicts = {(t.name, "openvino"): {"verdict": "pass", "reason": "", "seconds": 0.0} for t in tests}
    opinions = {("test_top_k", "openvino"): {"verdict": "confirmed", "reason": "onnx.reference agrees with onnxruntime"},
                ("test_range", "openvino"): {"verdict": "cannot-run", "reason": "onnx.reference: ValueError"}}
    table = conformance.tabulate(tests, ("openvino",), verdicts, records, opinions)["openvino"]
    assert table["goal"] == {"met": 3, "tests": 6, "percent": 50.0, "skips_naming_no_limit": ["test_bernoulli"]}
    assert table["tracebacks"] == 1
    assert table["tests"][conformance.CONFIRMED] == ["test_top_k"]
    assert table["tests"][conformance.HARNESS_FAILS] == ["test_range"]
    assert table["tests"][conformance.ERROR] == ["test_loop"]
    assert conformance.AGREE not in table["tests"] and conformance.SKIPPED not in table["tests"]
    text = conformance.render({"openvino": table}, len(tests), dict.fromkeys(
        ("total", "generate", "independent", "harness", "third_opinion"), 0.0))
    assert "openvino: 50.0% of 6 tests agree, are confirmed by onnx.reference or skipped naming a type or " \
           "runtime limit (3; the goal: 97%); 1 harness tracebacks." in text
    assert "onnx.reference: cannot-run, onnx.reference: ValueError" in text


def test_conformance_groups_by_first_words_without_the_test_name():
    skip = "the input 'x' of test_cast_FLOAT_to_BFLOAT16 is bfloat16, which openvino does not take: a type limit"
    assert conformance.group_key(conformance.SKIPPED, skip, Path("/t/node/test_cast_FLOAT_to_BFLOAT16")) == \
        "the input 'x' of <test> is bfloat16, which"
    error = "model test_abs: cannot load /t/node/test_abs/model.onnx\nsecond line"
    assert conformance.group_key(conformance.ERROR, error, Path("/t/node/test_abs")) == \
        "model <test>: cannot load <test>/model.onnx"
    assert conformance.group_key(conformance.ERROR, "", Path("/t/node/test_abs")) == "(no message)"


def test_conformance_sample_is_stable_and_sorted():
    names = [f"test_op{i}" for i in range(50)]
    first = conformance.select(names, None, 10, 3, None)
    assert first == conformance.select(list(reversed(names)), None, 10, 3, None) == sorted(first)
    assert len(set(first)) == 10 and first != conformance.select(names, None, 10, 4, None)
    assert conformance.select(names, r"op1\d$", None, 0, 2) == ["test_op10", "test_op11"]


def _top_k_with_ties(folder: Path) -> Path:
    """TopK over float rows, k an input: OpenVINO orders tied values otherwise than ONNX's
    spec (lower index first), which ONNX Runtime and onnx.reference follow: [[1, 1, 1]], k=2
    gives indices [[1, 0]] on OpenVINO 2025, [[0, 1]] on both of them (with k a constant it
    keeps the order). Rows of 64: the corner example at the domain's ends puts ties in them."""
    from onnx import TensorProto, helper, save

    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=-1)
    graph = helper.make_graph([node], "top_k_ties", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 64]),
                                                    helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("values", TensorProto.FLOAT, [3, "k"]),
                               helper.make_tensor_value_info("indices", TensorProto.INT64, [3, "k"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder.mkdir()
    save(model, str(folder / "model.onnx"))
    return folder


def test_conformance_third_opinion_confirms_a_harness_failure_on_tied_top_k(tmp_path):
    pytest.importorskip("openvino")
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.runner import run_case

    test = _top_k_with_ties(tmp_path / "test_top_k_ties")
    options = RunOptions(models=(str(test),), sources=("onnx",), targets=("openvino",), devices=("cpu",),
                         examples=5, cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports",
                         isolate="never", localize="off")
    [case] = build_cases(options)
    record = run_case(case, options, ArtifactCache(options.cache_dir)).to_json()
    assert record["status"] == "failed", record.get("message")
    npz = conformance.failing_input(record, {"verdict": "pass"})
    assert npz is not None and npz.is_file()
    opinion = conformance.third_opinion(test, "openvino", npz)
    assert opinion["verdict"] == "confirmed", opinion
    assert opinion["reason"].startswith("onnx.reference agrees with onnxruntime; openvino: ")
    assert conformance.classify(record["status"], "pass", opinion["verdict"]) == conformance.CONFIRMED


def test_conformance_third_opinion_leaves_a_failure_the_target_does_not_show_on_the_model(tmp_path):
    """The benign twin: an input without ties (as a failure of a planted converted file
    would leave), on which onnx.reference, ONNX Runtime and OpenVINO all agree: unconfirmed."""
    pytest.importorskip("openvino")
    import numpy as np

    from harness.results import save_failure

    test = _top_k_with_ties(tmp_path / "test_top_k_ties")
    distinct = np.random.default_rng(0).permutation(3 * 64).reshape(3, 64).astype(np.float32)
    case_id = "test_top_k_ties-onnx-openvino-cpu"
    npz, _ = save_failure(tmp_path / "reports", case_id, {"x": distinct, "k": np.array([5], np.int64)},
                          {"case_id": case_id, "model_ref": str(test), "source": "onnx", "target": "openvino",
                           "device": "cpu", "options": {}})
    opinion = conformance.third_opinion(test, "openvino", npz)
    assert opinion == {"verdict": "unconfirmed", "reason": "onnx.reference agrees with openvino and onnxruntime "
                                                           "within onnx's tolerance (rtol 1e-3, atol 1e-7)"}
    assert conformance.classify("failed", "pass", opinion["verdict"]) == conformance.HARNESS_FAILS
    # A failure a stored set showed is the independent check's to judge: no third opinion.
    stored = {"status": "failed", "failure": {"npz": str(npz)},
              "golden": {"folder": str(test), "sets": 1, "passed": 0,
                         "results": [{"set": "test_data_set_0", "passed": False, "message": "indices differ"}]}}
    assert conformance.failing_input(stored, {"verdict": "pass"}) is None
    assert conformance.failing_input({**stored, "golden": None}, {"verdict": "pass"}) == npz


def test_conformance_child_process_ends_a_hung_or_dead_call_and_answers_the_next_in_a_fresh_one():
    import os
    import time

    child = conformance.ChildProcess(timeout_s=1.0)
    try:
        with pytest.raises(conformance.ChildDied, match="no answer in 1 s"):
            child.call(time.sleep, 30)
        with pytest.raises(conformance.ChildDied, match=r"the process died \(exit code 3\)"):
            child.call(os._exit, 3)
        with pytest.raises(RuntimeError, match="ValueError: math domain error"):
            child.call(math.sqrt, -1.0)
        assert child.call(math.sqrt, 4.0) == 2.0   # the same process, after the exception
    finally:
        child.close()
