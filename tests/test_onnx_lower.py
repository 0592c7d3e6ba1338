"""Precision reached through a conversion: the ONNX -> ONNX fp16, int8 (static
QDQ) and int8-dynamic hop, the calibration feed it quantizes on, the paths
that lower a model, and the planted bugs a lowered model carries (an
activation scale doubled, an overflow in float16) failing beside their correct
twins, which pass with the defaults. The end-to-end tests run pytest with the
plugin."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from harness import paths
from harness.calibration import calibration_inputs, describe
from harness.calibration_settings import Calibration, parse_calibration
from harness.converters import onnx_lower
from harness.errors import CaseError, OptionError
from harness.inputs import corner_recipes
from harness.matrix import build_cases
from harness.option_effects import option_findings
from harness.options import RunOptions
from harness.registry import get_model
from harness.tolerances import INT8_DYNAMIC, INT8_STATIC, QUANTIZED_INTEGER, resolve_tolerance
from tests import planted

LOWER = "onnx->onnx-lowered"


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory):
    return planted.export_zoo("cnn", tmp_path_factory.mktemp("cnn"))


def _lower(source, tmp_path, precision: str, calibration: Calibration | None = None, layouts=None):
    spec = get_model("cnn")
    io = spec.source_layouts("torch")
    return onnx_lower.convert(source, spec, [], tmp_path / precision,
                              layouts=(layouts or io[0], io[1]), precision=precision,
                              calibration=(calibration or Calibration()).for_spec(spec).to_json())


# --------------------------------------------------------------------------- calibration feed

def test_the_feed_is_seeded_laid_out_and_parsed():
    spec = get_model("cnn")
    first = calibration_inputs(spec, Calibration(samples=3), {"image": "NCHW"})
    again = calibration_inputs(spec, Calibration(samples=3), {"image": "NCHW"})
    assert len(first) == 3 and all(np.array_equal(a["image"], b["image"]) for a, b in zip(first, again))
    assert not np.array_equal(first[0]["image"], first[1]["image"])        # one stream per sample
    nhwc = calibration_inputs(spec, Calibration(samples=1), {"image": "NHWC"})[0]["image"]
    assert np.array_equal(nhwc, first[0]["image"].transpose(0, 2, 3, 1))   # the file's layout, not the spec's
    other_seed = calibration_inputs(spec, Calibration(samples=1, seed=1), {"image": "NCHW"})[0]["image"]
    assert not np.array_equal(other_seed, first[0]["image"])
    assert describe(spec, Calibration())["distribution"] == "normal"       # the spec's own, by default
    assert parse_calibration("uniform:64:7") == Calibration("uniform", 64, 7)
    assert parse_calibration(":8") == Calibration(None, 8, 0)
    for bad, says in (("gaussian", "unknown distribution 'gaussian'"), ("normal:0", "SAMPLES must be in 1..4096"),
                      ("normal:x", "SAMPLES and SEED are integers"), ("normal:1:2:3", "expected DIST")):
        with pytest.raises(OptionError, match=says):
            parse_calibration(bad)


def test_a_statically_quantized_case_is_checked_on_its_calibration_distribution():
    spec = get_model("cnn")
    corners = corner_recipes(spec, ("uniform",))
    assert {d for _, r in corners for d in r.distributions.values()} == {"uniform"}
    assert len(corners) == 4   # still the smallest, largest, and middle shapes with and without specials


# --------------------------------------------------------------------------- the hop

def test_fp16_keeps_io_in_float32_and_weights_in_float16(cnn_onnx, tmp_path):
    provenance = _lower(cnn_onnx, tmp_path, "fp16")
    model = onnx.load(str(tmp_path / "fp16" / "model.onnx"))
    types = {t.data_type for t in model.graph.initializer if len(t.dims) >= 2}
    assert types == {onnx.TensorProto.FLOAT16}
    assert {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]} == {onnx.TensorProto.FLOAT}
    assert provenance["float16"]["max_finite_val"] == 65504.0     # not the converter's 1e4 clip
    assert provenance["float16"]["kept_float32_for_range"] == []  # the zoo CNN stays well inside float16


def test_int8_is_symmetric_qdq_with_per_channel_weights(cnn_onnx, tmp_path):
    provenance = _lower(cnn_onnx, tmp_path, "int8", Calibration(samples=4))
    model = onnx.load(str(tmp_path / "int8" / "model.onnx"))
    zero_points = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if "zero_point" in t.name}
    assert zero_points and not any(z.any() for z in zero_points.values())   # symmetric: what TensorRT takes
    # int8 activations and weights; biases are int32, as QDQ writes them
    assert {z.dtype for n, z in zero_points.items() if "bias" not in n} == {np.dtype(np.int8)}
    per_channel = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                   and any(a.name == "axis" for a in n.attribute)]
    assert per_channel, "no weight is quantized per channel"
    assert provenance["quantization_ops"]["QuantizeLinear"] > 0
    assert provenance["calibrated_on"] == "normal"
    assert provenance["calibration"]["samples"] == 4 and provenance["calibration"]["shapes"]["image"][1] == 3


def test_int8_dynamic_quantizes_the_weights_ahead(cnn_onnx, tmp_path):
    provenance = _lower(cnn_onnx, tmp_path, "int8-dynamic")
    assert set(provenance["quantization_ops"]) & {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
    assert provenance["calibration"] is None and "calibrated_on" not in provenance


def test_a_feed_that_does_not_fit_the_model_is_a_clear_error(cnn_onnx, tmp_path):
    # NHWC data for the NCHW file: the shapes disagree, and the quantizer says so through the harness
    with pytest.raises(CaseError) as error:
        _lower(cnn_onnx, tmp_path, "int8", Calibration(samples=2), layouts={"image": "NHWC"})
    message = str(error.value)
    assert "could not quantize model 'cnn' to int8 on a calibration feed of 2 samples" in message
    assert "image: float32[3, 24, 30, 3]" in message and "fix the input spec" in message


# --------------------------------------------------------------------------- paths and cases

def test_each_precision_has_one_lowering_step():
    assert paths.lowering(("torch->onnx",), "onnxruntime", "fp32") == ""
    assert paths.lowering(("torch->onnx", LOWER), "onnxruntime", "fp32") is None
    assert paths.lowering(("torch->onnx", LOWER), "onnxruntime", "int8") == LOWER
    assert paths.lowering(("torch->onnx",), "onnxruntime", "int8") is None
    assert paths.lowering(("torch->onnx",), "openvino", "bf16") == paths.RUNTIME   # the runtime's hint
    assert paths.lowering(("torch->onnx", LOWER), "openvino", "bf16") is None      # the hop writes no bf16
    assert paths.lowering(("tf->tflite",), "tflite", "int8") == "tf->tflite"
    assert all(path.count(LOWER) <= 1 for path in paths.paths("torch", "openvino"))


def test_precision_cases_are_named_and_lowered_where_the_path_says():
    run = RunOptions(models=("cnn",), sources=("torch",), devices=("cpu",), targets=("onnxruntime", "openvino"),
                     precisions=("fp32", "fp16", "int8", "int8-dynamic"))
    cases = {c.id: c for c in build_cases(run)}
    assert cases["cnn-torch-onnxruntime-cpu-int8"].path == ("torch->onnx", LOWER)
    assert cases["cnn-torch-openvino-cpu-int8"].path == ("torch->onnx", LOWER)   # one QDQ file, two targets
    assert cases["cnn-torch-openvino-cpu-fp16"].lowered_by == paths.RUNTIME     # the shortest: the hint
    every = {c.id: c for c in build_cases(RunOptions(**{**run.__dict__, "path": "all", "precisions": ("fp16",)}))}
    assert every["cnn-torch-openvino-cpu-via-onnx-onnx-fp16-fp16"].lowered_by == LOWER


def test_calibration_that_nothing_uses_warns():
    run = RunOptions(models=("cnn",), sources=("torch",), devices=("cpu",), targets=("onnxruntime",),
                     calibration=parse_calibration("uniform"))
    assert option_findings(run, build_cases(run)).warnings == [
        "--calibration uniform: no case of this run quantizes a model with a calibration feed (--precision int8 "
        "makes such cases)"]
    used = RunOptions(**{**run.__dict__, "precisions": ("int8",)})
    assert option_findings(used, build_cases(used)).warnings == []


def test_quantized_precisions_have_their_own_defaults():
    output = get_model("two_outputs").outputs[0]
    assert resolve_tolerance(output, "float32", "onnxruntime", "cpu", precision="int8") == INT8_STATIC
    assert resolve_tolerance(output, "float32", "openvino", "cpu", precision="int8-dynamic") == INT8_DYNAMIC
    assert resolve_tolerance(output, "int64", "onnxruntime", "cpu", precision="int8") == QUANTIZED_INTEGER
    assert resolve_tolerance(output, "int64", "onnxruntime", "cpu").max_mismatch == 0   # fp32: exact


# --------------------------------------------------------------------------- end to end, planted twins

def _record(run, case_id: str) -> dict:
    return run.cases[case_id]


def test_correct_lowered_conversions_pass_with_the_defaults(run_parity):
    run = run_parity("--model=cnn,mlp,transformer", "--precision=fp16,int8,int8-dynamic", examples=None)
    run.result.assert_outcomes(passed=9)
    record = _record(run, "cnn-torch-onnxruntime-cpu-int8")
    assert record["precision"] == "int8"
    assert record["provenance"]["precision"] == {"precision": "int8", "lowered_by": LOWER}
    hops = record["provenance"]["hops"]
    assert [h["converter"] for h in hops][-1] == onnx_lower.NAME and hops[-1]["calibrated_on"] == "normal"
    outputs = record["outputs"]["features"]
    assert outputs["snr_db"] > INT8_STATIC.min_snr_db and outputs["cosine"] > INT8_STATIC.min_cosine


@pytest.mark.slow  # a whole int8 build and run; tests/test_qdq_check.py plants activation scales in make test
def test_a_qdq_model_with_one_activation_scale_doubled_fails(run_parity, cnn_onnx, tmp_path):
    _lower(cnn_onnx, tmp_path, "int8")
    good = tmp_path / "int8" / "model.onnx"
    bad = planted.double_activation_scale(good, tmp_path / "doubled.onnx")
    common = ("--model=cnn", "--precision=int8")
    run_parity(*common, f"--converted={good}", examples=None).result.assert_outcomes(passed=1)
    failed = run_parity(*common, f"--converted={bad}", examples=None)
    failed.result.assert_outcomes(failed=1)
    outputs = _record(failed, "cnn-torch-onnxruntime-cpu-converted-int8")["outputs"]["features"]
    assert outputs["snr_db"] < INT8_STATIC.min_snr_db or outputs["normalized_error"] > INT8_STATIC.atol_by_max


@pytest.mark.slow  # 19 s; tests/test_file_precision.py's test_the_harness_own_fp16_build_passes_the_file_check_and_its_slip_fails_it keeps the slip in make test
def test_an_op_that_overflows_in_float16_is_kept_in_float32_and_its_slip_fails(run_parity, large_sum_file,
                                                                                   tmp_path):
    from harness.registry import load_model_file

    # ONNX Runtime's CPU provider computes these float16 ops in float32 (it has no kernels for them), which
    # hides the overflow: the reference evaluator computes float16 in float16
    (spec,) = load_model_file(large_sum_file)
    target = "--target=onnx-reference"
    correct = run_parity(f"--model={large_sum_file}", "--precision=fp16", target, examples=None)
    correct.result.assert_outcomes(passed=1)
    lowering = _record(correct, "large_sum-torch-onnx-reference-cpu-fp16")["provenance"]["hops"][-1]["float16"]
    kept = lowering["kept_float32_for_range"]
    # the scale up past 65504 and the scale back down, which reads it
    assert [k["op"] for k in kept] == ["Mul", "Mul"] and all(k["peak"] > 65504 for k in kept)
    exported = planted.export(planted.LargeSum(), spec, tmp_path / "export")
    slip = planted.float16_without_range_analysis(exported, tmp_path / "slip.onnx")
    failed = run_parity(f"--model={large_sum_file}", f"--converted={slip}", "--precision=fp16", target,
                        examples=None)
    failed.result.assert_outcomes(failed=1)
    record = _record(failed, "large_sum-torch-onnx-reference-cpu-converted-fp16")
    assert record["outputs"]["y"]["nonfinite_mismatches"] > 0
    _the_overflowing_mul_is_localized(failed, record["localization"], slip)


def _the_overflowing_mul_is_localized(run, localization: dict, slip) -> None:
    """The evaluator computes float16 in float16: the x1000 overflows past
    65504 and the x1e-3 after it keeps the inf. ONNX Runtime's CPU provider,
    the runtime walk's reference, computes the pair in float32 and gets the
    output right, so the target first leaves it at the x1e-3; but the file on
    ONNX Runtime already leaves torch at the x1000 (inf where torch has 1e5):
    that Mul is named, with torch's FX node, and its reproduction shows it."""
    assert localization["status"] == "found" and localization["mode"] == "converter"
    first = localization["first"]
    model = onnx.load(str(slip))
    constants = {t.name: float(np.max(numpy_helper.to_array(t))) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.name == first["node"])
    assert node.op_type == "Mul" and 1000.0 in [constants.get(i) for i in node.input]
    assert first["nonfinite"] >= 1 and first["layer"].endswith("mul_4")   # torch's FX node of `* 1000.0`
    assert "first leaves ONNX Runtime's CPU provider at" in localization["runtime_walk"]
    assert localization["path"][0]["op_type"] == "input" and localization["path"][-1]["tensor"] == "y"
    folder = run.path / localization["repro"]["folder"]
    alone = subprocess.run([sys.executable, "-I", "repro.py"], cwd=folder, capture_output=True, text=True, timeout=120)
    assert alone.returncode == 1 and "REPRODUCED" in alone.stdout, alone.stdout + alone.stderr
    replay = subprocess.run([sys.executable, "-m", "harness", "replay", str(folder)], cwd=run.path,
                            capture_output=True, text=True, timeout=120)
    assert replay.returncode == 1, replay.stdout + replay.stderr


def test_the_reference_evaluator_is_opt_in_and_runs_a_qdq_file_restated_at_its_opset(cnn_onnx, tmp_path):
    from harness.options import TARGETS, RunOptions
    from harness.runtimes import onnx_reference, onnxruntime

    assert "onnx-reference" not in TARGETS and "onnx-reference" in RunOptions(targets=("onnx-reference",)).targets
    _lower(cnn_onnx, tmp_path, "int8", Calibration(samples=4))
    path = tmp_path / "int8" / "model.onnx"
    reference = onnx_reference.Session(path, "cpu", RunOptions())
    assert reference.provenance["opset_converted"] == {"from": 18, "to": onnx_reference.REFERENCE_OPSET}
    image = calibration_inputs(get_model("cnn"), Calibration(samples=1), {"image": "NCHW"})[0]["image"]
    runtime = onnxruntime.Session(path, "cpu", RunOptions())
    for session in (reference, runtime):
        session.bind(["image"], ["float32"], ["features"])
    # the same QDQ arithmetic in numpy and in ONNX Runtime
    np.testing.assert_allclose(reference.run([image])[0], runtime.run([image])[0], atol=1e-5)
    with pytest.raises(CaseError, match="takes float32 but the spec's input 'image' is float16"):
        reference.bind(["image"], ["float16"], ["features"])


def test_where_symbolic_shape_inference_stops_nothing_is_left_in_the_working_directory(tmp_path, monkeypatch):
    """ONNX Runtime's symbolic inference saves its partial model and uuid-named
    data files in the working directory where it stops; they once ended up
    committed to this repository."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]),
                               helper.make_node("Mystery", ["r"], ["y"], domain="custom.x")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.x", 1)])
    work = tmp_path / "work"
    work.mkdir()
    onnx.save(model, str(work / "m.onnx"))
    monkeypatch.chdir(work)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    prepared, inference = onnx_lower._prepared(onnx_lower.Path("m.onnx"), scratch)
    assert "symbolic inference stopped: Exception: Incomplete symbolic shape inference" in inference
    assert prepared.is_file()
    assert sorted(p.name for p in work.iterdir()) == ["m.onnx"]
