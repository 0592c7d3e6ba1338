"""A reduced-precision file judged against its noise floor: the harness's own
standard build of the same model at that precision, run on the same examples
(harness/precision_floor.py). Planted bugs beside correct builds by another
recipe, on a CNN and on a classifier with 5 logits, at the dev profile's 10
examples, in process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks import precision_floor as floor_bench

DEV_EXAMPLES = 10   # the dev profile's budget


def classifier(path: Path, classes: int) -> Path:
    """x [2, 3, 12, 10] -> Conv -> Relu ("r1") -> Conv -> Relu -> GlobalAveragePool -> Gemm: `classes` logits y."""
    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((8, 3, 3, 3)) / np.sqrt(27), "b1": rng.standard_normal(8) * 0.1,
               "w2": rng.standard_normal((8, 8, 3, 3)) / np.sqrt(72), "b2": rng.standard_normal(8) * 0.1,
               "w3": rng.standard_normal((classes, 8)) / np.sqrt(8) * 2, "b3": rng.standard_normal(classes) * 0.1}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "classifier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 12, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, classes])],
                              initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def options(tmp_path: Path, original: Path, converted: Path | None, cache: Path, precision: str = "int8"):
    from harness.options import RunOptions

    return RunOptions(models=(str(original),), sources=("onnx",), targets=("onnxruntime",), devices=("cpu",),
                      examples=DEV_EXAMPLES, precisions=(precision,), converted=converted, cache_dir=cache,
                      reports_dir=tmp_path / "reports", localize="off")


def run(tmp_path: Path, original: Path, converted: Path | None, cache: Path) -> dict:
    """The one int8 case of `original` (with `converted`, that file) on ONNX Runtime's CPU provider, as a run records it."""
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.runner import run_case

    run_options = options(tmp_path, original, converted, cache)
    (case,) = build_cases(run_options)
    return run_case(case, run_options, ArtifactCache(cache)).to_json()


def feed(tmp_path: Path, original: Path) -> list[dict[str, np.ndarray]]:
    """The harness's own calibration feed of `original` (a user's ONNX file)."""
    from harness.calibration import calibration_inputs
    from harness.calibration_settings import Calibration
    from harness.matrix import build_cases

    (case,) = build_cases(options(tmp_path, original, None, tmp_path / "unused"))
    return calibration_inputs(case.spec, Calibration(), {i.name: i.layout for i in case.spec.inputs})


@pytest.fixture(scope="module")
def zoo_cnn_builds(tmp_path_factory) -> dict[str, Path]:
    """The zoo CNN (features [N, 16, H/2, W/2]) exported as the harness exports it, in int8 QDQ
    with per-tensor weights (a valid recipe other than the harness's per-channel one) and
    with one output channel of a per-channel weight's scale x2."""
    folder = tmp_path_factory.mktemp("zoo-cnn")
    exported = floor_bench.export_zoo_model("cnn", folder / "fp32")
    per_tensor = floor_bench.build_qdq(exported, floor_bench.calibration_feed("cnn"), folder / "per-tensor.onnx",
                                       per_channel=False)
    per_channel = floor_bench.build_qdq(exported, floor_bench.calibration_feed("cnn"), folder / "per-channel.onnx")
    return {"per-tensor": per_tensor,
            "weight channel x2": floor_bench.plant_weight_channel_scale(per_channel, 2.0, folder / "channel2.onnx")}


def run_zoo_cnn(tmp_path: Path, converted: Path, cache: Path) -> dict:
    """The zoo CNN from torch against `converted` at int8 on ONNX Runtime's CPU provider."""
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.runner import run_case

    run_options = RunOptions(models=("cnn",), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                             examples=DEV_EXAMPLES, precisions=("int8",), converted=converted, cache_dir=cache,
                             reports_dir=tmp_path / "reports", localize="off")
    (case,) = build_cases(run_options)
    return run_case(case, run_options, ArtifactCache(cache)).to_json()


def test_a_weight_channel_scale_x2_fails_against_the_floor_that_fixed_thresholds_pass(tmp_path, shared_cache,
                                                                                    zoo_cnn_builds):
    record = run_zoo_cnn(tmp_path, zoo_cnn_builds["weight channel x2"], shared_cache)
    assert record["status"] == "failed", record["message"]
    from harness.precision_floor import FLOOR_MULTIPLE
    from harness.tolerances import INT8_STATIC

    output = record["outputs"]["features"]
    # the fixed thresholds alone pass it: the floor is what fails it
    assert output["snr_db"] > INT8_STATIC.min_snr_db and output["cosine"] > INT8_STATIC.min_cosine
    assert (f"x the floor's (a standard int8 build of the same model), allowed {FLOOR_MULTIPLE:g}x"
            in record["message"])
    floor = output["floor"]
    assert not floor["passed"] and floor["rms_over_floor"] > FLOOR_MULTIPLE
    assert floor["floor_snr_db"] > floor["snr_db"] and output["error_ratio"] > 1


def test_a_per_tensor_build_passes_with_the_floor_side_by_side(tmp_path, shared_cache, zoo_cnn_builds):
    record = run_zoo_cnn(tmp_path, zoo_cnn_builds["per-tensor"], shared_cache)
    assert record["status"] == "passed", record["message"]
    from harness.precision_floor import FLOOR_MULTIPLE

    assert record["message"] == (f"all outputs within tolerance; within {FLOOR_MULTIPLE:g}x the error of a standard "
                                 "int8 build of the same model (features)")
    floor = record["outputs"]["features"]["floor"]
    assert floor["passed"] and floor["rms_over_floor"] != 1   # another recipe: its own error, within the multiple
    assert {"rmse", "floor_rmse", "max_abs", "floor_max_abs", "snr_db", "floor_snr_db"} <= set(floor)
    built = record["provenance"]["floor"]
    assert built["built"] and built["path"] == ["torch->onnx", "onnx->onnx-lowered"]
    assert built["runs_on"] == "onnxruntime cpu" and built["quantization"]["per_channel"]
    assert built["calibration"]["samples"] == 32 and "floor_build_s" in record["timings"]


def test_a_correct_int8_classifier_of_5_logits_passes_and_is_conclusive(tmp_path, shared_cache):
    original = classifier(tmp_path / "five.onnx", classes=5)
    # asymmetric activations: a valid recipe other than the floor's symmetric one
    correct = floor_bench.build_qdq(original, feed(tmp_path, original), tmp_path / "five-int8.onnx", symmetric=False)
    record = run(tmp_path, original, correct, shared_cache)
    assert record["status"] == "passed", record["message"]
    output = record["outputs"]["y"]
    assert output["elements"] == 10 and output["floor"]["passed"] and not output["sensitivity"]["inconclusive"]

    bad = floor_bench.plant_activation_scale(correct, 0.25, tmp_path / "five-x0.25.onnx")   # its twin, clipping
    failed = run(tmp_path, original, bad, shared_cache)
    assert failed["status"] == "failed" and "x the floor's (a standard int8 build" in failed["message"], failed["message"]


def test_the_harness_own_lowering_builds_no_floor_and_says_why(tmp_path, shared_cache):
    original = classifier(tmp_path / "cnn.onnx", classes=16)
    record = run(tmp_path, original, None, shared_cache)
    assert record["status"] == "passed", record["message"]
    assert record["provenance"]["floor"] == {
        "built": False, "reason": "the artifact is the harness's own standard int8 build (onnx->onnx-lowered): "
                                  "it is the floor; held to the fixed thresholds"}
    assert record["outputs"]["y"]["floor"] is None

    # the same build is another file's floor, from the cache: one conversion for both
    other = floor_bench.build_qdq(original, feed(tmp_path, original), tmp_path / "asym.onnx", symmetric=False)
    floor = run(tmp_path, original, other, shared_cache)["provenance"]["floor"]
    assert floor["cache_key"] == record["provenance"]["cache_key"] and floor["cache_hit"]


def test_the_cache_and_the_calibration_build_a_converted_files_floor_so_neither_is_said_to_change_nothing(tmp_path):
    from dataclasses import replace

    from harness.calibration_settings import parse_calibration
    from harness.matrix import build_cases
    from harness.option_effects import option_findings

    original = classifier(tmp_path / "cnn.onnx", classes=16)
    at_int8 = replace(options(tmp_path, original, original, tmp_path / "elsewhere"), use_cache=False,
                      calibration=parse_calibration("uniform"))
    assert option_findings(at_int8, build_cases(at_int8)).warnings == []
    at_fp32 = replace(at_int8, precisions=("fp32",))   # no floor: nothing is converted
    assert [w.split(":")[0] for w in option_findings(at_fp32, build_cases(at_fp32)).warnings] == [
        "--calibration uniform", "--no-parity-cache, --parity-cache-dir"]


def _label_verdict(got_scores: np.ndarray, got_label: np.ndarray, scores_tolerance) -> dict:
    """The label's comparison after compare.accept_argmax_flips, on one row whose original scores nearly tie."""
    from harness.compare import accept_argmax_flips, compare_outputs
    from harness.specs import Tolerance

    ref_scores = np.array([[10.0, 9.9, -3.0]], dtype=np.float32)
    ref_label = np.argmax(ref_scores, axis=-1)
    scores = compare_outputs("logits", ref_scores, got_scores, scores_tolerance, class_axis=-1)
    label = compare_outputs("label", ref_label, got_label, Tolerance(max_mismatch=0.5))
    accept_argmax_flips(label, ref_label, got_label, scores, ref_scores, got_scores, -1)
    return {"passed": label.passed, "accepted_by": label.accepted_by, "margins": label.extra.get("flip_margins")}


def test_a_label_flipped_as_its_passing_scores_say_passes_and_no_other():
    from harness.specs import Tolerance

    near_tie = np.array([[9.9, 10.0, -3.0]], dtype=np.float32)   # the first two swapped: within atol 0.2
    flipped = np.array([1])
    assert _label_verdict(near_tie, flipped, Tolerance(atol=0.2)) == {"passed": True, "accepted_by": "argmax",
                                                                      "margins": [pytest.approx(0.1, abs=1e-5)]}
    # the same flip where the scores failed their tolerance, and a label that is not its scores' argmax: kept
    assert not _label_verdict(near_tie, flipped, Tolerance(atol=0.05))["passed"]
    assert not _label_verdict(np.array([[10.0, 9.9, -3.0]], dtype=np.float32), flipped, Tolerance(atol=0.2))["passed"]
