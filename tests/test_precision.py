"""The precision axis and the reference's own device: a case per precision its
target declares (OpenVINO's bf16 and f16 hints), held to that precision's
tolerances, with the planted twin (bf16 held to float32's tolerances) failing;
a precision the device cannot compute in is a skip that names the capability;
a reference device apart from the target's, named in the id only where the two
differ. The end-to-end tests run pytest with the plugin."""

from __future__ import annotations

import pytest

from harness.matrix import availability_checked, build_cases
from harness.option_effects import changed_flags, option_findings
from harness.errors import OptionError
from harness.options import RunOptions, parse_precisions
from harness.runner import base_record
from harness.runtimes import openvino as ov_runtime
from harness.sources import torch as torch_source
from harness.runtimes.openvino import OPENVINO_BF16

MLP = dict(models=("mlp",), sources=("torch",), devices=("cpu",))


def _cases(**options) -> dict:
    return {case.id: case for case in build_cases(RunOptions(**{**MLP, **options}))}


def _bf16_here() -> None:
    reason = ov_runtime.missing_precision("cpu", "bf16")
    if reason is not None:
        pytest.skip(reason)


# --------------------------------------------------------------------------- the matrix

def test_a_case_per_precision_the_target_reaches_and_fp32_ids_unchanged():
    cases = _cases(targets=("openvino", "onnxruntime"), precisions=("fp32", "bf16", "fp16"))
    # onnxruntime lowers nothing itself: its fp16 comes from the ONNX -> ONNX fp16 hop, and no hop writes bf16
    assert list(cases) == ["mlp-torch-openvino-cpu", "mlp-torch-openvino-cpu-bf16", "mlp-torch-openvino-cpu-fp16",
                           "mlp-torch-onnxruntime-cpu", "mlp-torch-onnxruntime-cpu-fp16"]
    assert [c.precision for c in cases.values()] == ["fp32", "bf16", "fp16", "fp32", "fp16"]
    assert [c.lowered_by for c in cases.values()] == ["", "runtime", "runtime", "", "onnx->onnx-lowered"]
    assert list(_cases(targets=("openvino",))) == ["mlp-torch-openvino-cpu"]   # the default: fp32 alone


def test_a_precision_the_cpu_cannot_compute_in_is_a_skip_naming_the_capability():
    # the CPU's capabilities are read as the case starts (collection imports no OpenVINO)
    case = availability_checked(_cases(targets=("openvino",), precisions=("fp16",))["mlp-torch-openvino-cpu-fp16"])
    assert case.skip == ov_runtime.missing_precision("cpu", "fp16")
    if case.skip is not None:   # this machine's AMD EPYC lists BF16 but no FP16
        assert "does not list FP16 in OpenVINO's OPTIMIZATION_CAPABILITIES" in case.skip


def test_a_precision_no_target_declares_makes_no_case_and_warns():
    run = RunOptions(**MLP, targets=("onnxruntime",), precisions=("fp32", "bf16"))
    cases = build_cases(run)
    assert [c.id for c in cases] == ["mlp-torch-onnxruntime-cpu"]
    assert option_findings(run, cases).warnings == [
        "--precision bf16: no path to a target of this run reaches it, so no case is made for it (the targets' "
        "precisions: onnxruntime: fp32, fp16, int8, int8-dynamic)"]
    only_bf16 = RunOptions(**MLP, targets=("onnxruntime",), precisions=("bf16",))
    (case,) = build_cases(only_bf16)
    assert case.skip == ("no path from torch to a target asked for reaches bf16 (onnxruntime: fp32, fp16, int8, "
                         "int8-dynamic): no case of model 'mlp' is made")


def test_declared_precisions_say_nothing():
    run = RunOptions(**MLP, targets=("openvino", "onnxruntime"), precisions=("fp32", "bf16"))
    assert option_findings(run, build_cases(run)).warnings == []


def test_both_options_are_named_where_they_change_nothing():
    options = RunOptions(reference_device="cpu", precisions=("bf16",))
    assert changed_flags(options) == ["--reference-device", "--precision"]


def test_strict_cuda_applies_to_a_reference_on_cuda():
    run = RunOptions(**{**MLP, "targets": ("onnxruntime",), "reference_device": "cuda", "strict_cuda": True})
    cases = build_cases(run)
    warnings = option_findings(run, cases).warnings
    if cases[0].skip is None:   # a CUDA machine: the reference computes on CUDA, strictly
        assert warnings == []
    else:
        assert warnings == [f"--strict-cuda: no case of this run runs on CUDA (the CUDA cases skip: {cases[0].skip})"]


def test_precision_values_are_checked_when_parsed():
    assert parse_precisions(None) == ("fp32",)
    assert parse_precisions(["bf16,fp32", "bf16"]) == ("bf16", "fp32")
    assert parse_precisions("int8,int8-dynamic") == ("int8", "int8-dynamic")
    with pytest.raises(OptionError, match="--precision: unknown value 'int4'; choose from fp32, bf16, fp16, int8, "
                                          "int8-dynamic"):
        parse_precisions("fp32,int4")
    options = RunOptions(precisions=("fp32", "bf16"), reference_device="cpu")
    assert RunOptions.from_json(options.to_json()) == options


def test_reference_device_equal_to_the_targets_changes_nothing():
    default = _cases(targets=("onnxruntime", "openvino"), devices=("cpu", "cuda"))
    same = _cases(targets=("onnxruntime", "openvino"), devices=("cpu",), reference_device="cpu")
    assert list(same) == [i for i in default if i.endswith("-cpu")]
    assert [same[i] for i in same] == [default[i] for i in same]
    run = RunOptions(**{**MLP, "targets": ("onnxruntime",), "reference_device": "cpu"})
    assert option_findings(run, build_cases(run)).warnings == []


def test_reference_device_apart_is_named_in_the_id_and_the_record():
    cases = _cases(targets=("onnxruntime",), devices=("cpu", "cuda"), reference_device="cpu")
    assert list(cases) == ["mlp-torch-onnxruntime-cpu", "mlp-torch-onnxruntime-cuda-ref-cpu"]
    apart = cases["mlp-torch-onnxruntime-cuda-ref-cpu"]
    assert (apart.device, apart.reference_device) == ("cuda", "cpu")
    record = base_record(apart)
    assert (record.device, record.reference_device, record.precision) == ("cuda", "cpu", "fp32")
    if apart.skip is not None:   # no CUDA here: the target's reason, not the reference's
        assert "CUDAExecutionProvider" in apart.skip
    both = _cases(targets=("openvino",), precisions=("bf16",), reference_device="cuda")
    assert list(both) == ["mlp-torch-openvino-cpu-bf16-ref-cuda"]


def test_a_reference_device_the_source_lacks_is_a_skip_with_the_sources_reason():
    case = _cases(targets=("onnxruntime",), reference_device="cuda")["mlp-torch-onnxruntime-cpu-ref-cuda"]
    assert case.skip == torch_source.missing("cuda")
    if case.skip is not None:
        assert "no CUDA device visible to torch" in case.skip


# --------------------------------------------------------------------------- end to end

def test_bf16_passes_its_own_tolerances_and_fails_fp32s(run_parity):
    """The bf16 case beside the fp32 one, each within its own tolerance; its
    planted twin, bf16 held to float32's tolerances on the command line, fails."""
    _bf16_here()
    run = run_parity("--target=openvino", "--precision=fp32,bf16", "--model=mlp")
    assert list(run.cases) == ["mlp-torch-openvino-cpu", "mlp-torch-openvino-cpu-bf16"], run.output
    fp32, bf16 = run.cases.values()
    assert fp32["status"] == "passed" and bf16["status"] == "passed", run.output
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert bf16["reference_device"] == bf16["device"] == "cpu"
    assert bf16["provenance"]["runtime"]["inference_precision"] == "bf16"
    assert fp32["provenance"]["runtime"]["inference_precision"] == "f32"
    assert bf16["outputs"]["logits"]["tolerance"]["atol_by_max"] == OPENVINO_BF16.atol_by_max
    assert fp32["outputs"]["logits"]["tolerance"]["atol_by_max"] == 1e-5

    twin = run_parity("--target=openvino", "--precision=fp32,bf16", "--model=mlp",
                      "--atol-by-max=1e-5", "--rtol=1e-5")
    fp32, bf16 = twin.cases.values()
    assert fp32["status"] == "passed", twin.output
    assert bf16["status"] == "failed", twin.output
    assert bf16["outputs"]["logits"]["error_ratio"] > 10   # bf16's rounding, hundreds of times float32's bound


def test_fp16_on_a_cpu_without_fp16_is_a_skip_naming_the_capability(run_parity):
    if ov_runtime.missing_precision("cpu", "fp16") is None:
        pytest.skip("this CPU lists FP16: the f16 hint runs here")
    run = run_parity("--target=openvino", "--precision=fp16", "--model=mlp")
    record = run.single
    assert record["id"] == "mlp-torch-openvino-cpu-fp16" and record["status"] == "skipped", run.output
    assert "does not list FP16 in OpenVINO's OPTIMIZATION_CAPABILITIES" in record["message"]
    assert record["precision"] == "fp16"


def test_cuda_target_with_the_reference_on_the_cpu(run_parity):
    run = run_parity("--target=onnxruntime", "--model=mlp", "--device=cuda", "--reference-device=cpu")
    record = run.single
    assert record["id"] == "mlp-torch-onnxruntime-cuda-ref-cpu", run.output
    assert (record["device"], record["reference_device"]) == ("cuda", "cpu")
    if record["status"] == "skipped":   # no CUDA here: the target's reason
        assert "CUDAExecutionProvider" in record["message"], run.output
    else:
        assert record["status"] == "passed", run.output
        assert record["provenance"]["reference"]["device"] == "cpu"
