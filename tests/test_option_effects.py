"""Options that mean what they say: a value that changes nothing in a run is
an error or a warning (option_effects, with the cases the matrix builds), an
opset the exporter does not honour is the case's error, an impossible or
non-finite value is refused when parsed, and an input that would not fit the
tensor budget is refused before it is made. The last tests run pytest with the
plugin, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from harness.converters.onnx_checks import check_opset, main_opset
from harness.errors import CaseError
from harness.matrix import build_cases
from harness.option_effects import changed_flags, option_findings, options_without_parity
from harness.options import RunOptions, parse_input_spec

TORCH_CPU = dict(sources=("torch",), devices=("cpu",))
# What --opset N gives: the value for every hop that writes ONNX.
def opset(value: int) -> dict[str, dict[str, int]]:
    return {hop: {"opset": value} for hop in ("torch->onnx", "tf->onnx", "mxnet->onnx")}


def findings(gate_flags=(), **options):
    run = RunOptions(**{**TORCH_CPU, **options})
    return option_findings(run, build_cases(run), gate_flags)


# --------------------------------------------------------------------------- values that change nothing

def test_defaults_and_options_that_apply_say_nothing():
    found = findings(models=("cnn", "mlp"), hop_options={**opset(16), "torch->onnx": {"exporter": "torchscript", "opset": 16}},
                     runtime_options={"onnxruntime": {"opt_level": "basic"}},
                     tolerance_overrides={"atol": {"": 1e-4, "logits": 1e-3}, "rtol": {"features": 1e-3}})
    assert found.errors == [] and found.warnings == []


def test_a_tolerance_for_an_unknown_output_is_an_error_listing_the_outputs():
    found = findings(models=("cnn", "mlp"), tolerance_overrides={"atol": {"featurez": 1e-7, "logits": 1e-3}})
    assert found.errors == ["--atol featurez:1e-07: no model of this run has an output named 'featurez'; the "
                            "outputs are cnn: features; mlp: logits"]


def test_a_tolerance_for_an_output_of_some_models_holds_for_those():
    # 'logits' is mlp's, not cnn's: cnn keeps its default, nobody is wrong.
    assert findings(models=("cnn", "mlp"), tolerance_overrides={"rtol": {"logits": 1e-3}}).errors == []


def test_a_tolerance_for_an_unknown_output_is_a_warning_while_a_model_could_not_load():
    found = findings(models=("cnn", "no_such_model"), tolerance_overrides={"atol": {"featurez": 1e-7}})
    assert found.errors == []
    assert found.warnings == ["--atol featurez:1e-07: no model of this run has an output named 'featurez'; the "
                              "outputs are cnn: features (a model of this run could not be loaded: it may be the "
                              "one meant)"]


def test_a_top_k_threshold_needs_an_output_with_a_class_axis():
    import dataclasses

    from harness.specs import OutputSpec

    options = dict(models=("cnn", "mlp"), tolerance_overrides={"min_top1": {"logits": 0.99},
                                                               "min_topk_overlap": {"": 0.9},
                                                               "min_snr_db": {"logits": 30.0}})
    run = RunOptions(**{**TORCH_CPU, **options})
    cases = build_cases(run)
    # mlp's logits are a classifier's (the zoo declares class_axis=-1): both thresholds have something to measure
    assert option_findings(run, cases).errors == []
    # the planted twin: the same logits with no class axis declared (cnn's features are no classes either)
    plain = [c if c.model != "mlp" else dataclasses.replace(
        c, spec=dataclasses.replace(c.spec, outputs=(OutputSpec("logits"),))) for c in cases]
    assert option_findings(run, plain).errors == [
        "--min-top1 logits:0.99: output 'logits' declares no class axis, so there is nothing to measure it on; "
        "declare one in the model's registration (OutputSpec(name, class_axis=-1) for logits [N, classes])",
        "--min-topk-overlap 0.9: no output of this run declares a class axis, so there is nothing to measure it "
        "on; declare one in the model's registration (OutputSpec(name, class_axis=-1) for logits [N, classes])"]
    assert changed_flags(run)[-3:] == ["--min-snr-db", "--min-top1", "--min-topk-overlap"]


def test_options_for_model_files_are_errors_without_one(tmp_path):
    spec = parse_input_spec("x:float32[N=1..4,3]")
    found = findings(models=("cnn",), input_specs=(spec,), output_names=("y",))
    assert [e.split(":")[0] for e in found.errors] == ["--input-spec", "--output-names"]
    assert "no model of this run is one (the specs of cnn are used as they are)" in found.errors[0]
    model_file = tmp_path / "traced.pt"
    model_file.write_bytes(b"not loaded while the cases are built")
    assert findings(models=("cnn", str(model_file)), input_specs=(spec,), output_names=("y",)).errors == []


def test_converted_layouts_without_a_converted_file_is_an_error():
    found = findings(models=("cnn",), converted_layouts={"image": "NHWC"})
    assert found.errors == ["--converted-layouts image:NHWC: declares the layouts of a --converted file, but none "
                            "is given; add --converted PATH, or drop --converted-layouts (the harness's own "
                            "conversions record their layouts)"]


@pytest.mark.parametrize("options,gate_flags,warning", [
    # mobilenet_v2 is a Keras model only; every target is reached from torch (tflite through onnx2tf)
    (dict(models=("mobilenet_v2",), targets=("tflite",)), (),
     "--source torch --target tflite --device cpu: no model selected (mobilenet_v2) has a builder for these sources "
     "with a conversion path to these targets: the run has no case"),
    # no path reaches LiteRT in bf16; OpenVINO's hint does
    (dict(models=("cnn",), targets=("tflite", "openvino"), precisions=("bf16",)), (),
     "--target tflite: no case of this run has it"),
    (dict(models=("transformer",), sources=("torch", "mxnet")), (), "--source mxnet: no case of this run has it"),
    (dict(sources=("mxnet",), tiers=("real",)), (),
     "--source mxnet --device cpu: no model selected (the zoo's real tier) has a builder"),
    (dict(models=("cnn",), tiers=("real",)), (), "--tier real: --model names the models, so the tier selects nothing"),
    # Keras to LiteRT takes the TFLite converter: nothing is exported to ONNX
    (dict(models=("cnn",), sources=("keras",), targets=("tflite",), hop_options={"torch->onnx": {"exporter": "torchscript"}}), (),
     "--exporter torchscript: no case of this run exports torch to ONNX"),
    (dict(models=("cnn",), sources=("keras",), targets=("tflite",), hop_options=opset(11)), (),
     "--opset 11: no case of this run converts to ONNX"),
    (dict(models=("cnn",), converted=Path("cnn.onnx"), hop_options=opset(11)), (),
     "--opset 11: no case of this run converts to ONNX (with --converted the harness converts nothing)"),
    (dict(models=("cnn",), targets=("tflite",), runtime_options={"onnxruntime": {"opt_level": "basic"}}), (),
     "--ort-opt-level basic: no case of this run runs on onnxruntime"),
    (dict(models=("cnn",), strict_cuda=True), (), "--strict-cuda: no case of this run runs on CUDA"),
    (dict(models=("cnn",), trust_model_code=True), (),
     "--trust-model-code: every model of this run is built by the zoo's code; no model file is loaded"),
    (dict(models=("cnn",), converted=Path("cnn.onnx"), use_cache=False, cache_dir=Path("elsewhere")), (),
     "--no-parity-cache, --parity-cache-dir: with --converted nothing is converted"),
    (dict(models=("cnn",), isolate="never", timeout_s=5.0), (),
     "--parity-timeout 5: limits cases in worker processes, and --parity-isolate=never runs none there"),
    (dict(models=("cnn",)), ("--parity-save-baseline-force",),
     "--parity-save-baseline-force: lets --parity-save-baseline overwrite, but no --parity-save-baseline is given"),
    (dict(models=("cnn",)), ("--parity-compare-fail",),
     "--parity-compare-fail: sets how the regression gate judges, but no --parity-baseline is given"),
    (dict(models=("cnn",)), ("--parity-allow-lost-coverage",),
     "--parity-allow-lost-coverage: sets how the regression gate judges, but no --parity-baseline is given"),
])
def test_a_value_that_changes_nothing_is_a_warning(options, gate_flags, warning):
    found = findings(gate_flags, **options)
    assert found.errors == []
    assert any(w.startswith(warning) for w in found.warnings), found.warnings


def test_strict_cuda_says_why_cuda_cases_do_not_run():
    run = RunOptions(models=("cnn",), sources=("torch",), devices=("cpu", "cuda"), strict_cuda=True)
    cases = build_cases(run)
    if not any(c.device == "cuda" and c.skip for c in cases):
        pytest.skip("CUDA is present here: the cuda case runs")
    (warning,) = option_findings(run, cases).warnings
    assert warning.startswith("--strict-cuda: no case of this run runs on CUDA (the CUDA cases skip: ")


def test_changed_flags_and_options_without_parity():
    assert changed_flags(RunOptions()) == []
    options = RunOptions(hop_options=opset(11), tolerance_overrides={"atol": {"": 1.0}, "rtol": {}}, max_tensor_mb=10.0)
    assert changed_flags(options) == ["--opset", "--atol", "--parity-max-tensor-mb"]
    assert options_without_parity(RunOptions()) == []
    (message,) = options_without_parity(options, ["--parity-baseline"])
    assert message.startswith("--opset, --atol, --parity-max-tensor-mb, --parity-baseline given, but no parity case "
                              "is collected")


# --------------------------------------------------------------------------- the opset a file is stamped with

def _model_at(opset: int) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid("com.microsoft", 1)])


def test_check_opset_names_the_opset_written():
    with pytest.raises(CaseError) as info:
        check_opset(_model_at(18), 11, "some exporter", "m", "Ask for another --opset.")
    assert info.value.stage == "convert"
    assert info.value.message == ("some exporter wrote opset 18 for model 'm', not the opset 11 asked for "
                                  "(--opset). Ask for another --opset.")
    check_opset(_model_at(11), 11, "some exporter", "m", "")
    check_opset(_model_at(18), None, "some exporter", "m", "")   # the converter's own default: recorded only


# --------------------------------------------------------------------------- end to end

def _errors(run) -> str:
    return "\n".join(run.result.errlines)


def test_opset_the_dynamo_exporter_cannot_write_is_the_cases_error(run_parity):
    run = run_parity("--model=simple", "--opset=11")
    run.result.assert_outcomes(errors=1)
    record = run.single
    assert record["stage"] == "convert"
    assert record["message"].startswith("torch.onnx.export (dynamo exporter) wrote opset 18 for model 'simple', "
                                        "not the opset 11 asked for (--opset).")


def test_opset_the_torchscript_exporter_honours_is_the_files(run_parity, shared_cache):
    run = run_parity("--model=simple", "--exporter=torchscript", "--opset=11")
    run.result.assert_outcomes(passed=1)
    key = run.single["provenance"]["cache_key"]
    written = onnx.load(str(shared_cache / key[:2] / key / "model.onnx"))
    assert main_opset(written) == 11


@pytest.mark.parametrize("opset", ["999", "-1"])
def test_impossible_opset_is_a_usage_error(run_parity, opset):
    run = run_parity("--model=simple", f"--opset={opset}")
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--opset {opset}: no such ONNX opset here; choose from 7..{onnx.defs.onnx_opset_version()}" in _errors(run)


def test_misspelled_output_of_a_tolerance_stops_the_run_before_any_case(run_parity):
    run = run_parity("--model=mlp,cnn", "--atol=featurez:1e-7")
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert ("--atol featurez:1e-07: no model of this run has an output named 'featurez'; the outputs are "
            "cnn: features; mlp: logits") in _errors(run)
    assert run.json == {}   # no case ran


@pytest.mark.slow  # two whole runs (12 s); tests/test_planted_bugs.py's test_tolerance_override_on_command_line_is_applied and test_options' metric flags keep it in make test
def test_a_tolerance_for_a_real_output_changes_the_verdict(run_parity):
    by_default = run_parity("--model=mlp")
    by_default.result.assert_outcomes(passed=1)
    exact = run_parity("--model=mlp", "--atol=logits:0", "--rtol=logits:0", "--atol-by-max=logits:0",
                       "--noise-multiple=logits:0")
    exact.result.assert_outcomes(failed=1)
    assert exact.single["outputs"]["logits"]["tolerance"] == {"atol": 0.0, "rtol": 0.0, "atol_by_max": 0.0,
                                                              "atol_by_range": 0.0,
                                                              "max_mismatch": 0.0, "noise_multiple": 0.0,
                                                              "min_cosine": 0.0, "min_snr_db": 0.0, "min_top1": 0.0,
                                                              "min_topk_overlap": 0.0}


@pytest.mark.parametrize("value", ["inf", "nan", "logits:inf"])
def test_non_finite_tolerance_is_a_usage_error(run_parity, value):
    run = run_parity("--model=mlp", f"--atol={value}")
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert "must be a finite number >= 0" in _errors(run)


def test_domain_without_finite_values_is_a_usage_error(run_parity):
    run = run_parity("--model=traced.pt", "--input-spec=x:float32[N=1..2,8]::-1e309..1e309")
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert "input 'x': domain (-inf, inf) is not finite in float32" in _errors(run)


def test_dims_past_the_tensor_budget_are_the_cases_error_before_anything_loads(parity_dir, run_parity):
    (parity_dir / "traced.pt").write_bytes(b"never loaded: the spec is refused first")
    run = run_parity("--model=traced.pt", "--input-spec=x:float32[N=1..1000000000000,8]")
    record = run.single
    assert record["status"] == "error" and record["stage"] == "inputs"
    assert record["message"].startswith("input 'x' at the largest shape its bounds allow, float32[1000000000000, 8] "
                                        "(N=1..1000000000000), is 29.1 TiB (32000000000000 bytes): over the tensor "
                                        "budget of 1024 MiB (--parity-max-tensor-mb).")
    smaller = run_parity("--model=traced.pt", "--input-spec=x:float32[N=1..1000,8]", "--parity-max-tensor-mb=0.01")
    assert "is 31.2 KiB (32000 bytes): over the tensor budget of 0.01 MiB" in smaller.single["message"]


def test_a_value_that_changes_nothing_is_a_parity_warning(run_parity):
    run = run_parity("--model=simple", "--strict-cuda", "--parity-compare-fail=error:5x")
    run.result.assert_outcomes(passed=1)
    assert "ParityWarning: --strict-cuda: no case of this run runs on CUDA" in run.output
    assert "ParityWarning: --parity-compare-fail: sets how the regression gate judges" in run.output


def test_parity_options_without_parity_cases_are_a_warning(parity_dir):
    (parity_dir / "test_unrelated.py").write_text("def test_unrelated():\n    pass\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_unrelated.py",
                           "--opset=11", "--atol=1e-3"], cwd=parity_dir, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"})
    assert done.returncode == 0
    assert "ParityWarning: --opset, --atol given, but no parity case is collected" in done.stdout
