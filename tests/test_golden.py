"""Golden examples: an ONNX model in ONNX's test-data layout is checked on each
target against its stored outputs first, reported apart from the drawn
examples, as ONNX's backend test checks them (rtol 1e-3, atol 1e-7); a stored
output off by 1e-2 (relative) fails the case although every drawn example
passes. They need no reference: where ONNX Runtime has no kernel for the model
the reference is onnx.reference, and where the reference rejects every drawn
input the stored sets judge the target alone; where the drawn examples cannot
judge an output (it does not depend on the input's values) the stored sets do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def write_model_folder(folder: Path, golden_error: float = 0.0) -> Path:
    """y = tanh(x @ w + b), x fixed at [2, 8], with one stored test-data set, its output off by `golden_error`
    relative in every element."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])], "golden",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    y = np.tanh(x.astype(np.float64) @ w + b).astype(np.float32)
    y = y * (1 + golden_error)
    return write_test_data(folder, model, {"x": x}, {"y": y.astype(np.float32)})


def write_test_data(folder: Path, model, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> Path:
    """`folder` in ONNX's test-data layout: model.onnx beside test_data_set_0/ holding one stored set."""
    onnx.checker.check_model(model)
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    data = folder / "test_data_set_0"
    data.mkdir()
    for kind, tensors in (("input", inputs), ("output", outputs)):
        for index, (name, value) in enumerate(tensors.items()):
            (data / f"{kind}_{index}.pb").write_bytes(numpy_helper.from_array(value, name).SerializeToString())
    return folder


def write_elu_float64_folder(folder: Path, golden_error: float = 0.0) -> Path:
    """y = Elu(x) in float64 at opset 13: ONNX Runtime has an Elu kernel for float32 only, so it cannot load
    the file; onnx.reference and OpenVINO run it."""
    graph = helper.make_graph([helper.make_node("Elu", ["x"], ["y"])], "elu64",
                              [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [3, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [3, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    x = np.random.default_rng(1).standard_normal((3, 5))
    y = np.where(x > 0, x, np.expm1(x))
    y[0, 0] += golden_error * np.abs(y).max()
    return write_test_data(folder, model, {"x": x}, {"y": y})


def write_contrib_gelu_float64_folder(folder: Path, golden_error: float = 0.0) -> Path:
    """y = com.microsoft's Gelu(x) in float64: ONNX Runtime registers it for float32 only and onnx.reference
    knows no com.microsoft op, so the model has no reference; OpenVINO runs it."""
    from math import erf, sqrt

    graph = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")], "gelu64",
                              [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [3, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [3, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=8)
    x = np.random.default_rng(3).standard_normal((3, 5))
    y = 0.5 * x * (1 + np.vectorize(erf)(x / sqrt(2)))
    y[0, 0] += golden_error * np.abs(y).max()
    return write_test_data(folder, model, {"x": x}, {"y": y})


def write_reshape_folder(folder: Path, golden_error: float = 0.0) -> Path:
    """y = Reshape(x, shape) with the target shape a runtime input: the stored set holds a valid one, but
    drawn int64 values almost never multiply to x's 24 elements, so the reference rejects the drawn inputs."""
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "reshape",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 12]),
                               helper.make_tensor_value_info("shape", TensorProto.INT64, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c", "d"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.random.default_rng(2).standard_normal((2, 12)).astype(np.float32)
    y = x.reshape(2, 3, 2, 2).copy()
    y[0, 0, 0, 0] += np.float32(golden_error)
    return write_test_data(folder, model, {"x": x, "shape": np.array([2, 3, 2, 2], np.int64)}, {"y": y})


def write_relu_folder(folder: Path, near_zero_error: float) -> Path:
    """y = Relu(x), x of both signs: half of y is 0 exactly, and the stored set's zeros are off by
    `near_zero_error` (absolute) where its other elements are about 1."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    y = np.maximum(x, 0)
    y[y == 0] = np.float32(near_zero_error)
    return write_test_data(folder, model, {"x": x}, {"y": y})


def shape_model():
    """y = Shape(x): its value depends on x's shape only, never on the values drawn for one shape."""
    graph = helper.make_graph([helper.make_node("Shape", ["x"], ["y"])], "shape",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run_folder(tmp_path: Path, folder: Path, target: str, converted: Path | None = None, **options) -> dict:
    """The one case of `folder` on `target` (with `converted`, that file as the
    converted model; `options`, more RunOptions fields), in process, as a run records it."""
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.runner import run_case

    options = RunOptions(models=(str(folder),), sources=("onnx",), targets=(target,), devices=("cpu",), examples=4,
                         cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports", localize="off",
                         converted=converted, **options)
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_golden_examples_are_checked_first_and_a_wrong_stored_output_fails(run_parity, parity_dir, target):
    good = write_model_folder(parity_dir / "good")
    run = run_parity(f"--model={good}", "--source=onnx", f"--target={target}")
    record = run.single
    assert record["status"] == "passed", run.output
    assert record["golden"]["sets"] == 1 and record["golden"]["passed"] == 1
    assert record["examples"] >= 1 and record["provenance"]["reference"]["float64_twin"].startswith("float64 twin")

    off = write_model_folder(parity_dir / "off", golden_error=1e-2)
    run = run_parity(f"--model={off}", "--source=onnx", f"--target={target}")
    record = run.single
    assert record["status"] == "failed" and record["golden"]["passed"] == 0, run.output
    assert record["message"].startswith("golden example test_data_set_0")
    # the drawn examples, against the reference, passed: the stored outputs alone failed it
    assert all(o.get("passed", True) for o in record["outputs"].values())


def test_onnxruntime_really_has_no_kernel_for_the_float64_elu(tmp_path):
    """What the next test rests on, checked rather than assumed."""
    import onnxruntime as ort

    folder = write_elu_float64_folder(tmp_path / "elu")
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("target", ["openvino", "onnx-reference"])
def test_a_model_onnxruntime_cannot_load_is_referenced_by_onnx_reference_and_held_to_its_goldens(tmp_path, target):
    record = run_folder(tmp_path, write_elu_float64_folder(tmp_path / "elu"), target)
    assert record["status"] == "passed", record["message"]
    assert record["golden"]["sets"] == 1 and record["golden"]["passed"] == 1
    assert record["examples"] >= 1   # the drawn examples ran too, against onnx.reference
    runs_in = record["provenance"]["reference"]["runs_in"]
    assert runs_in.startswith("onnx-reference (onnxruntime: Could not find an implementation for Elu"), runs_in

    record = run_folder(tmp_path, write_elu_float64_folder(tmp_path / "elu-off", golden_error=1e-2), target)
    assert record["status"] == "failed" and record["golden"]["passed"] == 0, record["message"]
    assert record["message"].startswith("golden example test_data_set_0")


def test_a_users_file_onnxruntime_has_no_kernel_for_is_skipped_naming_the_limit(tmp_path):
    """The user's own file, run as it is: a runtime limit, skipped saying so (it was an error). The same
    file handed over as a converted model stays an error: there it is what a conversion produced."""
    folder = write_elu_float64_folder(tmp_path / "elu")
    record = run_folder(tmp_path, folder, "onnxruntime")
    assert record["status"] == "skipped", record
    assert record["message"].startswith(f"onnxruntime cannot run this file: onnxruntime could not load {folder}")
    assert "NOT_IMPLEMENTED" in record["message"] and "Elu" in record["message"]
    record = run_folder(tmp_path, folder, "onnxruntime", converted=folder / "model.onnx")
    assert record["status"] == "error" and "Elu" in record["message"], record


def test_goldens_judge_alone_where_the_reference_rejects_the_drawn_inputs(tmp_path):
    from harness.report.html import render_html
    from harness.report.summary import summary_lines

    record = run_folder(tmp_path, write_reshape_folder(tmp_path / "reshape"), "onnxruntime")
    assert record["status"] == "passed", record["message"]
    assert record["golden"]["passed"] == 1 and record["examples"] == 0
    assert record["message"].startswith("passed on its 1 stored example(s) only; the drawn examples could not run: "
                                        "the original model 'reshape' rejects inputs"), record["message"]
    assert record["drawn_error"]["stage"] == "inputs"
    assert f"    {record['message'][:120]}" in "\n".join(summary_lines([record]))   # the reason, in the summary
    assert "only; the drawn examples could not run: the original model" in render_html({"cases": {record["id"]: record}})

    record = run_folder(tmp_path, write_reshape_folder(tmp_path / "reshape-off", golden_error=0.5), "onnxruntime")
    assert record["status"] == "failed" and record["golden"]["passed"] == 0, record["message"]
    assert record["message"].startswith("golden example test_data_set_0")
    assert "the drawn examples could not run" in record["message"]


def test_a_model_without_any_reference_is_judged_by_its_goldens_alone(tmp_path):
    record = run_folder(tmp_path, write_contrib_gelu_float64_folder(tmp_path / "gelu"), "openvino")
    assert record["status"] == "passed" and record["golden"]["passed"] == 1, record["message"]
    assert record["message"].startswith("passed on its 1 stored example(s) only; the drawn examples could not run: "
                                        "ONNX file "), record["message"]
    runs_in = record["provenance"]["reference"]["runs_in"]
    assert runs_in.startswith("none: onnxruntime's CPU provider cannot load it (") and "onnx.reference" in runs_in

    record = run_folder(tmp_path, write_contrib_gelu_float64_folder(tmp_path / "gelu-off", golden_error=1e-2),
                        "openvino")
    assert record["status"] == "failed" and record["golden"]["passed"] == 0, record["message"]


def test_a_users_file_with_an_op_openvino_cannot_convert_is_skipped_naming_it(tmp_path):
    """Det has no OpenVINO conversion rule: the user's file on OpenVINO is a runtime limit, skipped; the
    same file on ONNX Runtime, which has Det, runs (the skip is the limit's, not the file's)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    record = run_folder(tmp_path, path, "openvino")
    assert record["status"] == "skipped", record
    assert record["message"].startswith(f"openvino cannot run this file: OpenVINO could not read {path}: it has an op "
                                        "OpenVINO cannot convert"), record["message"]
    assert "Det" in record["message"]
    record = run_folder(tmp_path, path, "onnxruntime")
    assert record["status"] == "passed", record["message"]


def test_a_users_file_with_an_op_of_a_domain_onnxruntime_does_not_know_is_skipped(tmp_path):
    """Adam of ai.onnx.preview.training: ONNX Runtime's CPU build registers no such op ("is not a registered
    function/op"), a limit like a missing kernel; it was an error. The reference (onnx.reference) runs it."""
    import onnx
    from onnx import TensorProto, helper

    def value(name, shape, kind=TensorProto.FLOAT):
        return helper.make_tensor_value_info(name, kind, shape)

    node = helper.make_node("Adam", ["r", "t", "x", "g", "v", "h"], ["x_new", "v_new", "h_new"],
                            domain="ai.onnx.preview.training", alpha=0.9, beta=0.999, epsilon=1e-7)
    inputs = [value("r", []), value("t", [], TensorProto.INT64)] + [value(name, [3]) for name in "xgvh"]
    graph = helper.make_graph([node], "adam", inputs, [value(n, [3]) for n in ("x_new", "v_new", "h_new")])
    path = tmp_path / "adam.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                      helper.make_opsetid("ai.onnx.preview.training", 1)]), str(path))
    record = run_folder(tmp_path, path, "onnxruntime")
    assert record["status"] == "skipped", record
    assert record["message"].startswith("onnxruntime cannot run this file: ") and "Adam" in record["message"]


BACKEND_TEST_TOLERANCE = {"atol": 1e-7, "rtol": 1e-3}   # onnx.backend.test's, by numpy.testing.assert_allclose


@pytest.mark.parametrize("relative_error, status", [(3e-4, "passed"), (1e-2, "failed")])
def test_a_stored_set_is_held_to_the_backend_tests_rtol_not_the_drawn_examples(tmp_path, relative_error, status):
    """Stored outputs have no float64 twin and an unknown precision (ONNX writes some to 4 digits): 3e-4 relative
    is within ONNX's own check (rtol 1e-3), though 30x the fp32 tolerance of the drawn examples; 1e-2 is not."""
    record = run_folder(tmp_path, write_model_folder(tmp_path / "m", golden_error=relative_error), "onnxruntime")
    assert record["status"] == status, record["message"]
    assert {k: record["golden"]["tolerance"]["y"][k] for k in BACKEND_TEST_TOLERANCE} == BACKEND_TEST_TOLERANCE
    assert record["outputs"]["y"]["tolerance"]["rtol"] == 1e-5   # the drawn examples keep theirs


@pytest.mark.parametrize("near_zero_error, status", [(5e-8, "passed"), (5e-7, "failed")])
def test_a_stored_set_off_near_zero_is_held_to_atol_1e_7(tmp_path, near_zero_error, status):
    """The drawn examples' atol grows with max|ref| (1e-5 of it): a stored 0 off by 5e-7 passed there."""
    record = run_folder(tmp_path, write_relu_folder(tmp_path / "relu", near_zero_error), "onnxruntime")
    assert record["status"] == status, record["message"]


def test_tolerances_given_on_the_command_line_apply_to_the_stored_sets(tmp_path):
    """The failure's advice, followed as the command line takes it, passes the stored set; the record says
    which tolerance judged it."""
    import re

    from harness.options import parse_tolerance_overrides

    folder = write_relu_folder(tmp_path / "relu", 5e-7)
    record = run_folder(tmp_path, folder, "onnxruntime")
    atol = re.search(r"would pass with atol (\S+) \(rtol 0\.001\)", record["message"]).group(1)
    record = run_folder(tmp_path, folder, "onnxruntime",
                        tolerance_overrides=parse_tolerance_overrides({"atol": [f"y:{atol}"]}))
    assert record["status"] == "passed", record["message"]
    assert record["golden"]["tolerance"]["y"]["atol"] == float(atol)
    assert record["golden"]["tolerance"]["y"]["rtol"] == 1e-3   # the fields not given stay the backend test's


def write_small_outputs_folder(folder: Path, stored_error: float) -> Path:
    """y = x @ w with two stored sets: one of small inputs (x ~ 1e-3, so |y| ~ 3e-3), its y[0, 0] off by
    `stored_error` (absolute), and one of x ~ N(0, 1), exact, which widens the inputs' domain (the stored
    inputs' range, onnx.spec_from_file) so that the calibration feed's outputs reach several units."""
    rng = np.random.default_rng(6)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "small",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = (1e-3 * rng.standard_normal((2, 8))).astype(np.float32)
    y = (x.astype(np.float64) @ w).astype(np.float32)
    y[0, 0] += np.float32(stored_error)
    write_test_data(folder, model, {"x": x}, {"y": y})
    wide = folder / "test_data_set_1"
    wide.mkdir()
    x = rng.standard_normal((2, 8)).astype(np.float32)
    (wide / "input_0.pb").write_bytes(numpy_helper.from_array(x, "x").SerializeToString())
    y = (x.astype(np.float64) @ w).astype(np.float32)
    (wide / "output_0.pb").write_bytes(numpy_helper.from_array(y, "y").SerializeToString())
    return folder


@pytest.mark.parametrize("stored_error, status", [(0.0, "passed"), (0.02, "passed"), (1.0, "failed")])
def test_atol_by_range_holds_a_stored_set_to_the_outputs_range_as_it_holds_a_drawn_example(tmp_path, stored_error,
                                                                                          status):
    """--atol-by-range 0.01 allows 1% of the output's range over the calibration feed (3.04 here): 0.02 off is
    within it, 1.0 is not. The stored set of small outputs was held to 1% of its own largest magnitude (2e-4),
    so it failed at 0.02 where a drawn example passes."""
    from harness.options import parse_tolerance_overrides

    record = run_folder(tmp_path, write_small_outputs_folder(tmp_path / "small", stored_error), "onnxruntime",
                        tolerance_overrides=parse_tolerance_overrides({"atol_by_range": ["0.01"]}))
    assert record["status"] == status, record["message"]


def test_at_a_reduced_precision_the_stored_sets_are_held_to_that_precisions_tolerance(tmp_path):
    """OpenVINO computing in bfloat16 is off by about 5e-3 relative: the stored float32 outputs cannot hold it to
    rtol 1e-3, so the case's bf16 tolerance judges them."""
    record = run_folder(tmp_path, write_model_folder(tmp_path / "m"), "openvino", precisions=("bf16",))
    if record["status"] == "skipped":
        pytest.skip(record["message"])
    assert record["status"] == "passed", record["message"]
    assert record["golden"]["tolerance"]["y"] == record["outputs"]["y"]["tolerance"]


def test_an_output_the_drawn_examples_cannot_judge_is_judged_by_the_stored_sets(tmp_path):
    """Shape's value does not move with the values drawn for one shape (inconclusive); its stored set is a real
    check: a wrong value or a wrong shape stored fails it."""
    from harness.report.summary import summary_lines

    x = np.random.default_rng(5).standard_normal((2, 3, 5)).astype(np.float32)
    record = run_folder(tmp_path, write_test_data(tmp_path / "shape", shape_model(), {"x": x},
                                                  {"y": np.array([2, 3, 5], np.int64)}), "onnxruntime")
    assert record["status"] == "passed", record["message"]
    assert record["message"].startswith("passed on its 1 stored example(s); the drawn examples could not judge y: "
                                        "it does not depend on the input (largest change 0, 0x its tolerance, over "), \
        record["message"]
    assert record["drawn_inconclusive"] == ["y"] and record["golden"]["passed"] == 1
    assert record["outputs"]["y"]["sensitivity"]["inconclusive"] and record["examples"] >= 1   # the drawn part kept
    assert f"    {record['message'][:120]}" in "\n".join(summary_lines([record]))   # why it passed, in the summary

    for name, wrong in (("value", np.array([2, 3, 4], np.int64)), ("shape", np.array([2, 3, 5, 1], np.int64))):
        record = run_folder(tmp_path, write_test_data(tmp_path / f"shape-{name}", shape_model(), {"x": x},
                                                      {"y": wrong}), "onnxruntime")
        assert record["status"] == "failed", (name, record["message"])
        assert record["message"].startswith("golden example test_data_set_0"), record["message"]


def test_without_stored_sets_an_output_the_drawn_examples_cannot_judge_stays_inconclusive(tmp_path):
    path = tmp_path / "shape.onnx"
    onnx.save(shape_model(), str(path))
    record = run_folder(tmp_path, path, "onnxruntime")
    assert record["status"] == "inconclusive", record["message"]
    assert "golden" not in record and "drawn_inconclusive" not in record


def test_stored_sets_judge_an_ill_conditioned_output_but_not_one_they_hold_no_finite_value_of():
    """The choice for an output passed only by a noise multiple that allowed most of its range: the stored sets,
    held to rtol 1e-3 with no noise multiple, do judge it. An output stored as NaN everywhere compared nothing:
    the case stays inconclusive."""
    from harness.compare import compare_outputs
    from harness.explore import Exploration
    from harness.case_record import CaseRecord
    from harness.golden import STORED_SET_TOLERANCE
    from harness.runner import _judged_by_stored_sets

    exploration = Exploration(examples=10, noise_allowance={"Y": 2.51},
                              sensitivity={"Y": {"inconclusive": False, "ratio": 40.0}})
    assert exploration.inconclusive == ["Y"]
    stored = np.linspace(-1, 1, 12, dtype=np.float32)

    def golden(values: np.ndarray) -> dict:
        comparison = compare_outputs("Y", values, values.copy(), STORED_SET_TOLERANCE)
        return {"sets": 1, "passed": 1, "results": [{"set": "test_data_set_0", "passed": comparison.passed,
                                                     "outputs": [comparison.to_json()]}]}

    def inconclusive() -> CaseRecord:
        record = CaseRecord(id="case")
        record.set_status("inconclusive", "passed, but inconclusive")
        return record

    judged = inconclusive()
    _judged_by_stored_sets(judged, golden(stored), exploration)
    assert judged.status == "passed" and judged.drawn_inconclusive == ["Y"]
    assert judged.message == ("passed on its 1 stored example(s); the drawn examples could not judge Y: "
                              "ill-conditioned, the noise multiple allowed an error of 2.51 of max|ref|")
    unjudged = inconclusive()
    _judged_by_stored_sets(unjudged, golden(np.full(12, np.nan, np.float32)), exploration)
    assert unjudged.to_json() == inconclusive().to_json()


@pytest.mark.parametrize("devices, strict_cuda, advised", [
    ({}, False, False),                                   # both sides on the CPU: the flag changes nothing there
    ({"device": "cuda"}, False, True),                    # the target on CUDA
    ({"reference_device": "cuda"}, False, True),          # the reference on CUDA
    ({"device": "cuda"}, True, False),                    # on CUDA, but the run already holds it to CPU arithmetic
])
def test_an_ill_conditioned_output_names_strict_cuda_only_where_it_would_change_the_arithmetic(
        tmp_path, devices, strict_cuda, advised):
    """Followed on a CPU case, "try --strict-cuda" only got "--strict-cuda: no case of this run runs on CUDA"
    (OpenVINO's test_mvn_expanded)."""
    from dataclasses import replace

    from harness.cache import ArtifactCache
    from harness.engine import prepare_case
    from harness.explore import Exploration
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.runner import _describe, base_record

    folder = write_relu_folder(tmp_path / "relu", 0.0)
    options = RunOptions(models=(str(folder),), sources=("onnx",), targets=("onnxruntime",), devices=("cpu",),
                         cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports", strict_cuda=strict_cuda)
    (case,) = build_cases(options)
    prepared = prepare_case(case, options, ArtifactCache(options.cache_dir))
    prepared = replace(prepared, case=replace(prepared.case, **devices))
    # What explore.py finds for an output passed only by a noise multiple that allowed 2.51 of its range.
    exploration = Exploration(examples=10, noise_allowance={"y": 2.51},
                              sensitivity={"y": {"inconclusive": False, "ratio": 40.0}})
    record = base_record(prepared.case)
    _describe(record, prepared, exploration, options)
    message = record.message
    assert message.startswith("passed, but inconclusive: y (the noise multiple allowed an error of 2.51 of max|ref|)")
    advice = "try --strict-cuda on CUDA, or a better-conditioned model" if advised else "try a better-conditioned model"
    assert f"ill-conditioned in this arithmetic ({advice}). --parity-strict fails such cases" in message


def write_training_dropout_folder(folder: Path, stored_shape: tuple[int, ...] = (3, 4, 5)) -> Path:
    """y = Dropout(x, ratio 0.5, training_mode true), as ONNX's test_training_dropout: its stored output is one
    draw of the mask (numpy's), of `stored_shape`."""
    graph = helper.make_graph([helper.make_node("Dropout", ["x", "ratio", "training"], ["y"])], "dropout",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4, 5])],
                              initializer=[helper.make_tensor("ratio", TensorProto.FLOAT, [], [0.5]),
                                           helper.make_tensor("training", TensorProto.BOOL, [], [True])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    y = np.resize(x * (rng.uniform(size=x.shape) >= 0.5) / np.float32(0.5), stored_shape).astype(np.float32)
    return write_test_data(folder, model, {"x": x}, {"y": y})


def test_a_stored_set_of_a_graph_with_random_operators_is_compared_by_shape_and_dtype(tmp_path):
    """Today: y is compared elementwise with another draw of the mask, and the case fails (as ONNX Runtime
    failed ONNX's own test_training_dropout)."""
    from harness.golden import RANDOM_STORED_SETS

    record = run_folder(tmp_path, write_training_dropout_folder(tmp_path / "dropout"), "onnxruntime")
    assert record["status"] == "passed", record["message"]
    assert record["random_ops"] == ["Dropout(training_mode)"] and record["golden"]["passed"] == 1
    assert record["golden"]["compared"] == "shape and dtype" and "tolerance" not in record["golden"]
    assert record["message"].endswith(f"never elementwise; every output's shape, dtype, mean, variance, range and "
                                      f"spread across draws within the bounds its record states\n{RANDOM_STORED_SETS}")


def test_a_stored_set_of_a_graph_with_random_operators_of_the_wrong_shape_still_fails(tmp_path):
    """The twin: a stored draw of another shape than the target's fails the case, as before."""
    record = run_folder(tmp_path, write_training_dropout_folder(tmp_path / "dropout", (3, 4, 6)), "onnxruntime")
    assert record["status"] == "failed", record["message"]
    assert record["message"].startswith(
        f"golden example test_data_set_0 of {tmp_path / 'dropout'} (0 of 1 stored sets match): y: shape mismatch: "
        "original (3, 4, 6), converted (3, 4, 5)"), record["message"]


def write_bfloat16_identity_folder(folder: Path, ulps_off: int) -> Path:
    """y = x in bfloat16 (Identity: ONNX Runtime has few bfloat16 kernels), the stored y `ulps_off` bfloat16
    steps above the true one, where y is about 1."""
    import ml_dtypes

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity16",
                              [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.linspace(1.0, 1.5, 8).reshape(2, 4).astype(ml_dtypes.bfloat16)
    y = (x.view(np.uint16) + np.uint16(ulps_off)).view(ml_dtypes.bfloat16)
    return write_test_data(folder, model, {"x": x}, {"y": y})


@pytest.mark.parametrize("ulps_off, status", [(1, "passed"), (4, "failed")])
def test_a_bfloat16_stored_output_is_held_to_two_of_its_ulps_as_onnxs_backend_test_holds_it(tmp_path, ulps_off,
                                                                                            status):
    """One bfloat16 step near 1 is 2**-7, past rtol 1e-3: ONNX's backend test allows a bfloat16 output
    rtol 2**-6 (two steps), and OpenVINO's bfloat16 attention is one step off ONNX's stored outputs."""
    record = run_folder(tmp_path, write_bfloat16_identity_folder(tmp_path / "identity16", ulps_off), "onnxruntime")
    assert record["status"] == status, record["message"]
    assert record["golden"]["tolerance"]["y"]["rtol"] == 2.0 ** -6
