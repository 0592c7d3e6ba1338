"""Localizing a failure by the precision floor alone (harness/localize/locate.py's floor_localization):
outputs within the fixed thresholds but past FLOOR_MULTIPLE x a standard build's error. A walk at the
fixed thresholds cannot see such a failure (it named none and blamed how the target runs the file), so
none is run: the Q/DQ pair check (harness/qdq_check.py) names the bad pair, or the record says why none is."""

from __future__ import annotations

import pytest

from benchmarks import precision_floor as pf
from harness.localize.locate import floor_localization, floor_only
from tests.test_qdq_check import cnn, run_int8  # noqa: F401 (cnn: the module-scoped fixture, shared)

pytest.importorskip("onnxruntime.quantization")


def test_a_weight_channel_x2_failing_by_the_floor_alone_is_localized_to_its_pair(cnn, tmp_path):
    model, floor = cnn
    record = run_int8(model, pf.plant_weight_channel_scale(floor, 2.0, tmp_path / "channel2.onnx"), tmp_path,
                      localize="first")
    assert record["status"] == "failed"
    localization = record["localization"]
    assert localization["status"] == "qdq_pair", localization["message"]
    assert localization["message"].startswith("failed by the floor alone (features: RMS error ")
    assert localization["message"].endswith(
        "localized by the Q/DQ pair check to weight 'inner.features.4.weight_quantized' "
        "(DequantizeLinear 'inner.features.4.weight_DequantizeLinear')")
    assert localization["first"]["node"] == "inner.features.4.weight_DequantizeLinear"
    assert "path" not in localization and "how the target runs it" not in record["message"]


def test_the_correct_build_passes_and_is_not_localized(cnn, tmp_path):
    model, floor = cnn
    record = run_int8(model, floor, tmp_path, localize="first")
    assert record["status"] == "passed", record["message"]
    assert "localization" not in record


def _failing(thresholds_passed: bool) -> dict:
    return {"name": "logits", "floor": {"passed": False, "thresholds_passed": thresholds_passed,
                                        "rms_over_floor": 5.0, "multiple": 3.0}}


def test_only_an_output_within_the_fixed_thresholds_is_a_floor_failure():
    assert floor_only(_failing(True))
    assert not floor_only(_failing(False))   # the walk's bound sees it: it is walked as before
    assert not floor_only({"name": "logits", "floor": None})   # fp32, or no floor built


def test_a_floor_failure_without_a_bad_pair_says_why_nothing_is_named():
    fp16 = floor_localization([_failing(True)], None)
    assert fp16["status"] == "not_found"
    assert fp16["message"] == ("failed by the floor alone (logits: RMS error 5x the floor's, allowed 3x) and within "
                               "the fixed thresholds, the only bound a walk of the file's tensors could hold them "
                               "to: not walked; the file holds no Q/DQ pairs to check each by its own limits")
    spread = floor_localization([_failing(True)], {"checked": True, "unchecked": 0, "pairs": [
        {"kind": "weight", "tensor": "w_quantized", "node": "w_DequantizeLinear", "finding": None}]})
    assert spread["message"].endswith("every one of its Q/DQ pairs checked is within its limits (0 unchecked): "
                                      "the added error is spread over the file, not one pair's")
