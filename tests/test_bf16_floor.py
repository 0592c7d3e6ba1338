"""The bf16 floor (harness/converters/bf16_emulation.py, harness/precision_floor.py):
the fp32 ONNX file with bf16 storage and float32 arithmetic, run in ONNX Runtime's
CPU provider. Its rounding on a tiny graph; a bf16 case on OpenVINO (this CPU's
BF16) judged against it and passing; a planted bug (the CNN's first convolution
x1.02, as a BatchNorm folded with a running variance 4% low leaves it) that
bf16's fixed tolerance passes and the floor fails, beside the correct file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.cache import ArtifactCache
from harness.converters.bf16_emulation import rounded_model, to_bfloat16
from harness.engine import prepare_case, run_example
from harness.errors import CaseError
from harness.inputs import example_recipe, make_inputs
from harness.matrix import build_cases
from harness.options import RunOptions
from harness.precision_floor import FLOOR_MULTIPLE
from harness.registry import get_model
from harness.runner import run_case
from harness.runtimes import openvino as ov_runtime


def _bf16_here() -> None:
    reason = ov_runtime.missing_precision("cpu", "bf16")
    if reason is not None:
        pytest.skip(reason)


def _representable(array: np.ndarray) -> bool:
    return np.array_equal(array, array.astype(ml_dtypes.bfloat16).astype(np.float32))


def _tiny_graph() -> onnx.ModelProto:
    """x[2,8] @ w1 + b1 -> Relu -> @ w2 -> y: initializers and an input that bf16 does not represent."""
    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((8, 16)), "b1": rng.standard_normal(16), "w2": rng.standard_normal((16, 4))}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_floor_file_stores_every_tensor_in_bf16_and_computes_in_float32():
    model, counts = rounded_model(_tiny_graph())
    assert counts == {"initializers": 3, "inputs": 1, "node_outputs": 3, "untyped_outputs": 0}
    assert all(_representable(numpy_helper.to_array(t)) for t in model.graph.initializer)
    # every intermediate as an output too, in ONNX Runtime's CPU provider with all its optimizations
    model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                              for name in ("x__bf16_input", "h", "a", "r"))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    y, x_rounded, h, a, r = session.run(None, {"x": x})
    assert not _representable(x) and np.array_equal(x_rounded, to_bfloat16(x))
    assert all(_representable(t) for t in (h, a, r))
    # float32 arithmetic on bf16 operands: the product of the rounded operands, rounded once
    w1 = to_bfloat16(numpy_helper.to_array(_tiny_graph().graph.initializer[0]))
    np.testing.assert_allclose(h, to_bfloat16(x_rounded.astype(np.float64) @ w1), rtol=2.0 ** -8)
    # the output is left as its node computed it, in float32
    assert not _representable(y)


def test_a_file_below_the_opset_of_a_bfloat16_cast_is_refused_with_the_fix():
    model = _tiny_graph()
    model.opset_import[0].version = 12
    with pytest.raises(CaseError, match="opset is 12; a Cast to BFLOAT16 needs opset 13 or later: export the model "
                                        "at opset 13 or later"):
        rounded_model(model)


# --------------------------------------------------------------------------- on OpenVINO's bf16

def _options(tmp_path: Path, **options) -> RunOptions:
    return RunOptions(**{"targets": ("openvino",), "input_specs": tuple(get_model("cnn").inputs), "devices": ("cpu",), "precisions": ("bf16",), "examples": 10,
                         "cache_dir": tmp_path / "cache", "reports_dir": tmp_path / "reports", "localize": "off",
                         **options})


def _run(options: RunOptions) -> dict:
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()


def test_a_bf16_case_on_openvino_is_judged_against_the_bf16_floor_and_passes(tmp_path, shared_cache):
    _bf16_here()
    record = _run(_options(tmp_path, models=("cnn",), sources=("torch",), examples=5, cache_dir=shared_cache))
    assert record["status"] == "passed", record["message"]
    floor = record["provenance"]["floor"]
    assert floor["built"] and floor["converter"] == "bf16-emulation" and floor["path"] == ["torch->onnx"]
    judged = record["outputs"]["features"]["floor"]
    assert judged["recipe"].startswith("a bf16 emulation") and judged["rms_over_floor"] < FLOOR_MULTIPLE


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory, shared_cache) -> tuple[Path, Path]:
    """The zoo CNN's fp32 ONNX file, and a copy whose first convolution (its BatchNorm folded in) is x1.02."""
    _bf16_here()   # before the export: every test using these runs on OpenVINO's bf16
    folder = tmp_path_factory.mktemp("cnn")
    options = RunOptions(models=("cnn",), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                         cache_dir=shared_cache, reports_dir=folder / "reports")
    (case,) = build_cases(options)
    original = folder / "cnn.onnx"
    original.write_bytes(Path(prepare_case(case, options, ArtifactCache(options.cache_dir)).files[0][0]).read_bytes())
    model = onnx.load(str(original))
    weight = next(t for t in model.graph.initializer if len(t.dims) == 4)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.02), weight.name))
    planted = folder / "cnn_conv_x1.02.onnx"
    onnx.save(model, str(planted))
    return original, planted


def test_a_converted_file_as_good_as_the_floor_passes(tmp_path, cnn_onnx):
    _bf16_here()
    original, _ = cnn_onnx
    record = _run(_options(tmp_path, models=(str(original),), sources=("onnx",), converted=original))
    assert record["status"] == "passed", record["message"]
    assert record["provenance"]["floor"]["built"]


def test_a_convolution_x1_02_passes_bf16s_fixed_tolerance_and_fails_the_floor(tmp_path, cnn_onnx):
    _bf16_here()
    original, planted = cnn_onnx
    options = _options(tmp_path, models=(str(original),), sources=("onnx",), converted=planted)
    (case,) = build_cases(options)
    prepared = prepare_case(case, options, ArtifactCache(options.cache_dir))
    base = example_recipe(case.spec)
    for seed in range(3):   # seeded examples across the image's domain, without a search: each fails by the floor alone
        recipe = replace(base, seed=seed, distributions={"image": "uniform"})
        (comparison,) = run_example(prepared, make_inputs(case.spec, recipe)).comparisons
        assert not comparison.passed and comparison.floor["rms_over_floor"] > FLOOR_MULTIPLE
        # bf16's fixed tolerance passed the example: the floor's verdict is the whole message
        assert comparison.message.startswith("features: its RMS error is") and "allowed 3x" in comparison.message, \
            comparison.message
