"""The precision a target really computed a lowered file in (harness/file_precision.py).

ONNX Runtime's CPU provider computes an fp16 file's LayerNormalization with a
float32 accumulator: a file whose sum of squares overflows float16 passes
there, and fails on a GPU. Each case below is an fp32 ONNX original against
its fp16 file (float32 inputs and outputs, float16 inside, as
onnxconverter-common writes it with keep_io_types) on --target=onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness import backends
from harness.cache import ArtifactCache
from harness.matrix import build_cases
from harness.options import RunOptions
from harness.report.summary import summary_lines
from harness.runner import run_case

WIDTH = 64


def layer_norm_file(path: Path, scale: float, float16: bool) -> Path:
    """x * scale, then a LayerNormalization over its WIDTH features; in float16
    inside where `float16` (Casts at the float32 input and output). At scale
    100 the sum of squares of a row passes 65504."""
    inner = TensorProto.FLOAT16 if float16 else TensorProto.FLOAT
    dtype = np.float16 if float16 else np.float32
    weights = [numpy_helper.from_array(np.array(scale, dtype), "scale"),
               numpy_helper.from_array(np.ones(WIDTH, dtype), "gamma"),
               numpy_helper.from_array(np.zeros(WIDTH, dtype), "beta")]
    nodes = [helper.make_node("Cast", ["x"], ["x_inner"], to=inner),
             helper.make_node("Mul", ["x_inner", "scale"], ["scaled"]),
             helper.make_node("LayerNormalization", ["scaled", "gamma", "beta"], ["normed"], axis=-1, epsilon=1e-5,
                              name="layer_norm"),
             helper.make_node("Cast", ["normed"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "layer_norm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", WIDTH])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def branch_then_mul_file(branch: bool) -> onnx.ModelProto:
    """float16 x (an If choosing x or -x first, where `branch`) times 60000: past float16's 65504 at |x| >= 2.
    A branch reads x from the outer graph, so the If cannot run alone."""
    half = TensorProto.FLOAT16
    then_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["then_out"])], "then", [],
                                    [helper.make_tensor_value_info("then_out", half, [2])])
    else_branch = helper.make_graph([helper.make_node("Neg", ["x"], ["else_out"])], "else", [],
                                    [helper.make_tensor_value_info("else_out", half, [2])])
    nodes = [helper.make_node("If", ["cond"], ["chosen"], name="branch", then_branch=then_branch,
                              else_branch=else_branch)] if branch else [helper.make_node("Identity", ["x"], ["chosen"])]
    nodes.append(helper.make_node("Mul", ["chosen", "big"], ["y"], name="mul"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", half, [2]),
                                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", half, [2])],
                              [numpy_helper.from_array(np.array(60000, np.float16), "big")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("branch", [False, True])
def test_a_node_that_cannot_run_alone_is_named_by_the_overflow_search(branch):
    """Once passed over in silence: a miss with no overflow found then said nothing of the nodes not searched."""
    from harness.file_precision import first_overflow

    model = branch_then_mul_file(branch)
    why = "If 'branch': RuntimeError: Unable to find input 'x'"   # onnx 1.23: "... in known results [...]"
    small = {"x": np.array([1e-3, -1e-3], np.float16), "cond": np.array(True)}
    overflow, alone = first_overflow(model, small)
    assert overflow is None and [a[:len(why)] for a in alone] == ([why] if branch else [])
    overflow, alone = first_overflow(model, {**small, "x": np.array([2.0, -2.0], np.float16)})
    assert overflow == "Mul 'mul': overflow encountered in multiply" and len(alone) == int(branch)


def run_fp16(tmp_path: Path, scale: float) -> dict:
    """The fp16 file of the model at `scale` against its fp32 original, on ONNX Runtime's CPU provider."""
    original = layer_norm_file(tmp_path / "original.onnx", scale, float16=False)
    lowered = layer_norm_file(tmp_path / "fp16.onnx", scale, float16=True)
    options = RunOptions(models=(str(original),), sources=("onnx",), targets=("onnxruntime",), devices=("cpu",),
                         precisions=("fp16",), examples=4, converted=lowered, cache_dir=tmp_path / "cache",
                         reports_dir=tmp_path / "reports", localize="off")
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()


def test_onnxruntime_cpu_hides_a_float16_overflow_that_the_file_check_fails(tmp_path):
    record = run_fp16(tmp_path, scale=100.0)
    checked = record["file_precision"]
    assert record["status"] == "failed" and checked["verdict"] == "failed", record["message"]
    assert checked["computed_in"] == "float32"
    assert checked["overflow"].startswith("LayerNormalization 'layer_norm': overflow")
    first = record["message"].splitlines()[0]
    assert first.startswith("the fp16 file fp16.onnx overflows in float16 (LayerNormalization 'layer_norm': "
                            "overflow") and "where onnxruntime cpu computed it in float32" in first, first
    # the target itself computed the right answer: its own verdict, kept beside, passed
    assert "onnxruntime cpu's own verdict: all outputs within tolerance" in record["message"]
    assert record["outputs"]["y"]["passed"]


def test_small_inputs_pass_the_file_check_and_the_record_says_what_onnxruntime_computed_in(tmp_path):
    record = run_fp16(tmp_path, scale=1.0)
    assert record["status"] == "passed", record["message"]
    assert record["provenance"]["precision"]["computed_in"] == "float32"
    checked = record["file_precision"]
    assert checked["verdict"] == "passed" and checked["examples"] >= 1
    lines = summary_lines([record])
    assert any(line.strip().startswith("computed in float32 by onnxruntime cpu: the file's float16 arithmetic "
                                       "unchecked there; checked apart in float16 by onnx.reference") for line in lines)


def test_a_file_at_fp32_gets_no_file_check(tmp_path):
    original = layer_norm_file(tmp_path / "original.onnx", 1.0, float16=False)
    options = RunOptions(models=(str(original),), sources=("onnx",), targets=("onnxruntime",), devices=("cpu",),
                         examples=2, cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports", localize="off")
    (case,) = build_cases(options)
    record = run_case(case, options, ArtifactCache(options.cache_dir)).to_json()
    assert record["status"] == "passed" and "file_precision" not in record
    assert "computed_in" not in record["provenance"]["precision"]


def test_onnxruntime_cpu_declares_float32_for_fp16_as_its_optimized_graph_shows(tmp_path):
    """The declaration holds for the real runtime: the CPU provider wraps an
    fp16 op it has no kernel for in Casts to float32 (a canary: when it gains
    float16 kernels, this says the declaration must change)."""
    import onnxruntime as ort

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", WIDTH])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 1])
    graph = helper.make_graph([helper.make_node("ReduceSumSquare", ["x"], ["y"], axes=[1])], "sum", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "sum.onnx"))
    settings = ort.SessionOptions()
    settings.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    # the Casts are inserted as the graph is given to the provider, at any optimization level; at the
    # default (all) ORT warns that a saved optimized graph is machine-specific
    settings.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    ort.InferenceSession(str(tmp_path / "sum.onnx"), settings, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    assert [n.op_type for n in optimized.graph.node] == ["Cast", "ReduceSumSquare", "Cast"]
    assert backends.runtime_computes("onnxruntime") == {("cpu", "fp16"): "float32"}


def test_openvino_declares_float32_for_fp16_as_its_runtime_model_shows(tmp_path):
    """The declaration holds for the real runtime: compiled with the f32 hint
    (a file run as its types say), an f16 LayerNormalization's layer reports
    runtimePrecision f32."""
    import openvino

    layer_norm_file(tmp_path / "fp16.onnx", 1.0, float16=True)
    compiled = openvino.Core().compile_model(str(tmp_path / "fp16.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    layers = {op.get_rt_info()["layerType"].astype(str): op.get_rt_info()["runtimePrecision"].astype(str)
              for op in compiled.get_runtime_model().get_ordered_ops()}
    assert layers["MVN"] == "f32", layers
    assert backends.runtime_computes("openvino") == {("cpu", "fp16"): "float32"}


def run_large_sum(tmp_path: Path, model_file: Path, converted: Path | None = None) -> dict:
    options = RunOptions(models=(str(model_file),), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                         precisions=("fp16",), examples=4, converted=converted, cache_dir=tmp_path / "cache",
                         reports_dir=tmp_path / "reports", localize="off")
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()


def test_the_harness_own_fp16_build_passes_the_file_check_and_its_slip_fails_it(large_sum_file, tmp_path):
    """The harness's float16 lowering keeps the x1000 and the x1e-3 after it in
    float32 (test_onnx_lower.py): its file passes in float16 arithmetic too. The
    same export lowered without that range analysis overflows at the x1000,
    which ONNX Runtime's CPU provider computes in float32: the file fails."""
    from harness.registry import load_model_file
    from tests import planted

    correct = run_large_sum(tmp_path / "correct", large_sum_file)
    assert correct["status"] == "passed", correct["message"]
    assert correct["file_precision"]["verdict"] == "passed" and correct["file_precision"]["computed_in"] == "float32"
    (spec,) = load_model_file(large_sum_file)
    exported = planted.export(planted.LargeSum(), spec, tmp_path / "export")
    slip = planted.float16_without_range_analysis(exported, tmp_path / "slip.onnx")
    failed = run_large_sum(tmp_path / "slip", large_sum_file, converted=slip)
    assert failed["status"] == "failed" and failed["file_precision"]["verdict"] == "failed", failed["message"]
    assert failed["file_precision"]["overflow"].startswith("Mul "), failed["file_precision"]
    assert failed["outputs"]["y"]["passed"]   # ONNX Runtime's CPU provider got it right: it hid the overflow


def test_openvino_runs_a_lowered_fp16_file_in_float32_and_the_record_says_so(tmp_path):
    """OpenVINO opened to run the fp16 ONNX file of the harness's own lowering
    as its types say (the f32 hint) computes it in f32: the file is checked apart."""
    options = RunOptions(models=("mlp",), sources=("torch",), targets=("openvino",), devices=("cpu",),
                         precisions=("fp16",), path="all", examples=4, cache_dir=tmp_path / "cache",
                         reports_dir=tmp_path / "reports", localize="off")
    case = {c.id: c for c in build_cases(options)}["mlp-torch-openvino-cpu-via-onnx-onnx-fp16-fp16"]
    record = run_case(case, options, ArtifactCache(options.cache_dir)).to_json()
    assert record["status"] == "passed", record["message"]
    assert record["provenance"]["precision"]["computed_in"] == "float32"
    assert record["file_precision"]["message"].startswith("computed in float32 by openvino cpu: the file's float16 "
                                                          "arithmetic unchecked there; checked apart in float16")


@pytest.fixture(scope="module")
def large_transformer(tmp_path_factory):
    """The zoo's transformer fed tokens x1000 in fp32, and the harness's own fp16 build of it,
    which keeps the large-magnitude paths in float32 (benchmarks/precision_floor.py)."""
    from benchmarks import precision_floor as pf

    folder = tmp_path_factory.mktemp("large")
    model = pf.export_large_transformer(folder / "fp32")
    return model, pf.build_floor(model, "transformer", "fp16", folder / "floor")


def run_transformer_fp16(tmp_path: Path, model: Path, converted: Path) -> dict:
    options = RunOptions(models=(str(model),), sources=("onnx",), targets=("onnxruntime",), devices=("cpu",),
                         precisions=("fp16",), examples=4, converted=converted, cache_dir=tmp_path / "cache",
                         reports_dir=tmp_path / "reports", localize="off")
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()


def test_a_cast_to_float16_on_a_large_float32_path_is_named_as_the_overflow(large_transformer, tmp_path):
    """The Cast takes float32 and writes float16: its inputs alone do not say
    it computes in float16, its output does."""
    from benchmarks import precision_floor as pf

    model, floor = large_transformer
    planted = pf.plant_float16_cast(floor, "transformer", pf.calibration_feed("transformer"), tmp_path / "cast.onnx")
    (cast,) = [n.name for n in onnx.load(str(planted)).graph.node if n.name.endswith("_to_half")]
    record = run_transformer_fp16(tmp_path, model, planted)
    assert record["status"] == "failed" and record["file_precision"]["verdict"] == "failed", record["message"]
    assert record["file_precision"]["overflow"] == f"Cast {cast!r}: overflow encountered in cast"
    assert record["message"].startswith(f"the fp16 file cast.onnx overflows in float16 (Cast {cast!r}: "), \
        record["message"]


def test_the_fp16_build_that_keeps_the_large_paths_in_float32_passes_the_file_check(large_transformer, tmp_path):
    model, floor = large_transformer
    record = run_transformer_fp16(tmp_path, model, floor)
    assert record["status"] == "passed", record["message"]
    assert record["file_precision"]["verdict"] == "passed"
