"""Golden examples: an ONNX model in ONNX's test-data layout is checked on each
target against its stored outputs first, reported apart from the drawn
examples; a stored output off by 1e-3 (relative) fails the case although every
drawn example passes. They need no reference: where ONNX Runtime has no kernel
for the model the reference is onnx.reference, and where the reference rejects
every drawn input the stored sets judge the target alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def write_model_folder(folder: Path, golden_error: float = 0.0) -> Path:
    """y = tanh(x @ w + b), x fixed at [2, 8], with one stored test-data set."""
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
    y = y + golden_error * np.abs(y).max() * (np.arange(y.size).reshape(y.shape) == 0)
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


def run_folder(tmp_path: Path, folder: Path, target: str, converted: Path | None = None) -> dict:
    """The one case of `folder` on `target` (with `converted`, that file as the
    converted model), in process, as a run records it."""
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.runner import run_case

    options = RunOptions(models=(str(folder),), sources=("onnx",), targets=(target,), devices=("cpu",), examples=4,
                         cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports", localize="off",
                         converted=converted)
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(options.cache_dir))


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_golden_examples_are_checked_first_and_a_wrong_stored_output_fails(run_parity, parity_dir, target):
    good = write_model_folder(parity_dir / "good")
    run = run_parity(f"--model={good}", "--source=onnx", f"--target={target}")
    record = run.single
    assert record["status"] == "passed", run.output
    assert record["golden"]["sets"] == 1 and record["golden"]["passed"] == 1
    assert record["examples"] >= 1 and record["provenance"]["reference"]["float64_twin"].startswith("float64 twin")

    off = write_model_folder(parity_dir / "off", golden_error=1e-3)
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

    record = run_folder(tmp_path, write_elu_float64_folder(tmp_path / "elu-off", golden_error=1e-3), target)
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

    record = run_folder(tmp_path, write_contrib_gelu_float64_folder(tmp_path / "gelu-off", golden_error=1e-3),
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
