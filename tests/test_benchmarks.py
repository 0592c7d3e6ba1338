"""The pure parts of the benchmarks: how a result lands in a table's column."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import onnx_conformance as conformance


@pytest.mark.parametrize("harness_status, independent, column", [
    ("passed", "pass", conformance.AGREE),
    ("failed", "fail", conformance.AGREE),
    ("passed", "fail", conformance.HARNESS_PASSES),
    ("failed", "pass", conformance.HARNESS_FAILS),
    ("passed", "cannot-run", conformance.UNJUDGED),
    ("failed", "cannot-run", conformance.UNJUDGED),
    ("inconclusive", "pass", conformance.INCONCLUSIVE),
    ("skipped", "pass", conformance.SKIPPED),
    ("skipped", "cannot-run", conformance.SKIPPED),
    ("error", "pass", conformance.ERROR),
    ("error", "fail", conformance.ERROR),
])
def test_conformance_column_of_each_pair(harness_status, independent, column):
    assert conformance.classify(harness_status, independent) == column


@pytest.mark.parametrize("harness_status, independent", [("xpassed", "pass"), ("passed", "passed")])
def test_conformance_refuses_an_unknown_status_or_verdict(harness_status, independent):
    with pytest.raises(ValueError, match="unknown"):
        conformance.classify(harness_status, independent)


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
