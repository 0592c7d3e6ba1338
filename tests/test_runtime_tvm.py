"""Apache TVM as a target (harness/runtimes/tvm.py), with real TVM: the zoo's
ONNX exports compiled by TVM pass at the default float32 tolerances; a weight
planted in the ONNX file fails beside its correct twin; an op TVM's ONNX
frontend cannot import (LSTM) is its own case's error naming the op while the
other cases go on, and a node its converter refuses names its op; an ONNX
file as the source is held to its stored example; free dims without a name
stay free (TVM's frontend would make one of them, a canary says until when);
a damaged file is a clear error; the reproduction script runs a file on TVM;
--tvm-pipeline reaches the compiled module. Cases run in this process
(matrix.build_cases + runner.run_case)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm")

from harness import backends, results
from harness.cache import ArtifactCache
from harness.errors import CaseError, RuntimeLimit
from harness.matrix import build_cases
from harness.options import RunOptions
from harness.runner import run_case
from harness.runtimes import tvm as tvm_runtime
from tests import planted
from tests.test_golden import run_folder, write_model_folder
from tests.test_localize_repro import run_isolated, softmax_model, write


def run_tvm(tmp_path: Path, models: str, **options) -> dict[str, dict]:
    """The records, by case id, of `models` (comma-separated) from torch on TVM,
    in this process; `options`, more RunOptions fields."""
    run_options = RunOptions(models=tuple(models.split(",")), sources=("torch",), targets=("tvm",), devices=("cpu",),
                             examples=5, cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports",
                             localize="off", **options)
    cache = ArtifactCache(run_options.cache_dir)
    return {case.id: run_case(case, run_options, cache).to_json() for case in build_cases(run_options)}


def test_tvm_is_a_cpu_runtime_named_only_by_target():
    assert "tvm" in backends.names("runtime") and "tvm" not in RunOptions().targets
    assert "tvm" in RunOptions(targets=("tvm",)).targets
    assert tvm_runtime.missing("cpu") is None
    assert "--device=cpu" in tvm_runtime.missing("cuda") and "without CUDA" in tvm_runtime.missing("cuda")
    # its versions are in every record, by the distributions it declares
    versions = results.environment()["versions"]
    assert versions["apache-tvm"] == metadata.version("apache-tvm")
    assert versions["apache-tvm-ffi"] == metadata.version("apache-tvm-ffi")


def test_models_with_two_outputs_and_integer_inputs_pass_through_tvm(tmp_path):
    records = run_tvm(tmp_path, "two_outputs,embedding")
    assert {case: record["status"] for case, record in records.items()} == {
        "two_outputs-torch-tvm-cpu": "passed", "embedding-torch-tvm-cpu": "passed"}, records
    runtime = records["two_outputs-torch-tvm-cpu"]["provenance"]["runtime"]
    assert runtime["pipeline"] == "zero" and '"kind":"llvm"' in runtime["target"].replace(" ", "")
    assert runtime["opt_level"] == 2 and runtime["matched_by"] == "name"


def test_an_onnx_file_as_the_source_runs_its_stored_example_on_tvm_and_a_wrong_one_fails(tmp_path):
    good = run_folder(tmp_path / "good-run", write_model_folder(tmp_path / "good"), "tvm")
    assert good["status"] == "passed" and good["golden"]["passed"] == 1, good
    off = run_folder(tmp_path / "off-run", write_model_folder(tmp_path / "off", golden_error=1e-2), "tvm")
    assert off["status"] == "failed" and off["golden"]["passed"] == 0, off


# ~25 s: three networks compiled and explored; test_models_with_two_outputs_and_integer_inputs_pass_through_tvm
# keeps the zoo through TVM in make test.
@pytest.mark.slow
def test_the_core_zoo_s_networks_pass_through_tvm(tmp_path):
    records = run_tvm(tmp_path, "cnn,depthwise,transformer")
    assert {record["status"] for record in records.values()} == {"passed"}, records
    assert len(records) == 3


def test_a_planted_weight_fails_through_tvm_beside_its_correct_twin(tmp_path):
    good = planted.export_zoo("mlp", tmp_path / "good")
    bad = planted.perturbed_weight_onnx("mlp", tmp_path, 1e-3)
    (passed,) = run_tvm(tmp_path / "good-run", "mlp", converted=good).values()
    assert passed["status"] == "passed", passed
    (failed,) = run_tvm(tmp_path / "bad-run", "mlp", converted=bad).values()
    assert failed["status"] == "failed", failed
    assert failed["worst_error_ratio"] > 1


def test_an_op_tvm_cannot_import_is_its_case_s_error_naming_the_op_and_the_others_go_on(tmp_path):
    records = run_tvm(tmp_path, "lstm,mlp")
    lstm, mlp = records["lstm-torch-tvm-cpu"], records["mlp-torch-tvm-cpu"]
    assert lstm["status"] == "error", lstm
    assert re.match(r"TVM [\d.]+\w*'s ONNX frontend has no converter for LSTM \(", lstm["message"]), lstm["message"]
    assert "another target" in lstm["message"] and "\n" not in lstm["message"]
    assert mlp["status"] == "passed", mlp


def conv_model(path: Path, **padding) -> Path:
    """A 3x3 Conv over x (N, 3, H, W), padded and strided as `padding` says."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "Y", "X"])
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], **padding)], "conv", [x], [y], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_a_node_tvm_s_converter_refuses_is_a_limit_naming_its_op_and_its_explicit_twin_runs(tmp_path):
    # tf2onnx writes auto_pad for a Keras "same" convolution whose dims are free (the zoo's Keras depthwise CNN)
    with pytest.raises(RuntimeLimit, match=r"could not convert a Conv node of .*conv\.onnx: ValueError: Cannot use"):
        tvm_runtime.Session(conv_model(tmp_path / "conv.onnx", auto_pad="SAME_UPPER", strides=[2, 2]), "cpu",
                            RunOptions())
    session = tvm_runtime.Session(conv_model(tmp_path / "pads.onnx", pads=[1, 1, 1, 1]), "cpu", RunOptions())
    session.bind(["x"], ["float32"], ["y"])
    (y,) = session.run([X])
    window_sum = X[:, :, 1:4, 2:5].sum(axis=(1, 2, 3))   # output (2, 3) of a ones kernel: its 3x3 window's sum
    assert y.shape == (2, 4, 5, 7) and np.allclose(y[:, :, 2, 3], window_sum[:, None], atol=1e-5)


def anonymous_dims_model(path: Path) -> Path:
    """y = Relu(x), x declared (?, 3, ?, ?) with no name for its free dims, as MXNet's exporter writes them."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, None, None])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


X = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(np.float32)


def test_free_dims_without_a_name_each_stay_free_on_tvm(tmp_path):
    session = tvm_runtime.Session(anonymous_dims_model(tmp_path / "relu.onnx"), "cpu", RunOptions())
    session.bind(["x"], ["float32"], ["y"])
    assert session.provenance["named_dims"] == {"x": [0, 2, 3]} and session.declared_inputs() == [[None, 3, None, None]]
    (y,) = session.run([X])
    assert np.array_equal(y, np.maximum(X, 0))


def test_canary_tvm_still_makes_one_variable_of_every_free_dim_without_a_name(tmp_path):
    """Fails the day TVM's ONNX frontend keeps such dims apart itself: tvm.name_anonymous_dims can go then."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    module = from_onnx(onnx.load(anonymous_dims_model(tmp_path / "relu.onnx")), keep_params_in_input=False)
    machine = relax.VirtualMachine(tvm.compile(relax.get_pipeline("zero")(module), target="llvm"), tvm.cpu())
    with pytest.raises(RuntimeError, match=r"Check failed: input_shape\[i\] == heap_data\[reg\] \(5 vs. 2\)"):
        machine["main"](tvm.runtime.tensor(X))


def test_a_damaged_onnx_file_is_a_clear_error(tmp_path):
    whole = planted.export_zoo("mlp", tmp_path / "onnx")
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (record,) = run_tvm(tmp_path, "mlp", converted=damaged).values()
    assert record["status"] == "error", record
    assert f"onnx could not read {damaged}" in record["message"] and "export or convert" in record["message"]


def test_the_tvm_pipeline_option_reaches_the_compiled_module(tmp_path):
    (record,) = run_tvm(tmp_path, "mlp", runtime_options={"tvm": {"pipeline": "default"}}).values()
    assert record["status"] == "passed", record
    assert record["provenance"]["runtime"]["pipeline"] == "default"
    with pytest.raises(CaseError, match=r"--tvm-pipeline 'fast': give one of zero, default \(default zero\)"):
        backends.own_options("tvm", RunOptions(runtime_options={"tvm": {"pipeline": "fast"}}))


def test_the_reproduction_script_runs_the_file_on_tvm(tmp_path):
    folder = tmp_path / "case.repro"
    write(folder, softmax_model(tmp_path / "sub.onnx", axis=1), expected_axis=2, runtime="tvm")
    code, output = run_isolated(folder)
    assert code == 1, output
    assert "REPRODUCED: 'y'" in output and "tvm 0." in output, output
    write(folder, softmax_model(tmp_path / "sub.onnx", axis=2), expected_axis=2, runtime="tvm")
    code, output = run_isolated(folder)
    assert code == 0 and "not reproduced" in output, output
