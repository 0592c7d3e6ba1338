"""tolerances: the defaults by dtype and device, the override order, and the
Tolerance dataclass itself; each resolved tolerance is also held against a
planted error, so that the choice shows in a verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.compare import compare_outputs
from harness.specs import OutputSpec, SpecError, Tolerance
from harness.tolerances import (
    BFLOAT16,
    CPU_FLOAT,
    CUDA_TF32_FLOAT,
    EXACT,
    HALF,
    default_tolerance,
    resolve_tolerance,
)
from harness.runtimes.openvino import OPENVINO_BF16, OPENVINO_FP16

# --------------------------------------------------------------------------- Tolerance


def test_tolerance_defaults_are_exact():
    assert Tolerance() == Tolerance(0.0, 0.0, 0.0, 0.0) == EXACT


@pytest.mark.parametrize("field", ["atol", "rtol", "atol_by_max", "max_mismatch"])
@pytest.mark.parametrize("value", [-1e-9, math.nan])
def test_tolerance_rejects_negative_and_nan(field, value):
    with pytest.raises(SpecError, match=f"tolerance {field} must be >= 0"):
        Tolerance(**{field: value})


@pytest.mark.parametrize("field", ["atol", "rtol", "atol_by_max", "noise_multiple"])
def test_tolerance_rejects_infinity(field):
    # An infinite bound passes every finite error: a check that cannot fail.
    with pytest.raises(SpecError, match=f"tolerance {field} must be finite, got inf"):
        Tolerance(**{field: math.inf})


def test_tolerance_max_mismatch_is_a_fraction():
    assert Tolerance(max_mismatch=1.0).max_mismatch == 1.0
    with pytest.raises(SpecError, match=r"max_mismatch is a fraction in \[0, 1\], got 1.5"):
        Tolerance(max_mismatch=1.5)


def test_tolerance_merged_replaces_fields_and_ignores_none():
    t = Tolerance(atol=1, rtol=2, atol_by_max=3, max_mismatch=0.5)
    assert t.merged(rtol=0.0) == Tolerance(atol=1, rtol=0.0, atol_by_max=3, max_mismatch=0.5)
    assert t.merged(atol=None, rtol=None) == t
    assert t.merged() == t
    with pytest.raises(SpecError):
        t.merged(atol=-1)


# --------------------------------------------------------------------------- defaults

@pytest.mark.parametrize("dtype,device,strict,expected", [
    ("float32", "cpu", False, CPU_FLOAT),
    ("float64", "cpu", False, CPU_FLOAT),
    ("float32", "cuda", False, CUDA_TF32_FLOAT),
    ("float32", "cuda", True, CPU_FLOAT),
    ("float32", "cpu", True, CPU_FLOAT),
    ("float16", "cpu", False, HALF),
    ("float16", "cuda", False, HALF),
    ("float16", "cuda", True, HALF),
    ("bfloat16", "cuda", False, BFLOAT16),
    ("int64", "cpu", False, EXACT),
    ("int32", "cuda", False, EXACT),
    ("uint8", "cpu", False, EXACT),
    ("bool", "cuda", False, EXACT),
])
def test_default_tolerance(dtype, device, strict, expected):
    assert default_tolerance(dtype, device, strict) == expected


def test_default_figures_are_ordered():
    assert CPU_FLOAT.rtol < CUDA_TF32_FLOAT.rtol < HALF.rtol < BFLOAT16.rtol
    assert CPU_FLOAT.atol_by_max < CUDA_TF32_FLOAT.atol_by_max < HALF.atol_by_max < BFLOAT16.atol_by_max
    assert EXACT == Tolerance()


def _verdict(tol: Tolerance, rel_error: float, dtype=np.float32) -> bool:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(500).astype(dtype)
    got = (ref.astype(np.float64) * (1 + rel_error)).astype(dtype)
    return compare_outputs("y", ref, got, tol).passed


def test_defaults_show_in_verdicts():
    cpu = resolve_tolerance(OutputSpec("y"), "float32", "onnxruntime", "cpu")
    cuda = resolve_tolerance(OutputSpec("y"), "float32", "onnxruntime", "cuda")
    strict = resolve_tolerance(OutputSpec("y"), "float32", "onnxruntime", "cuda", strict_cuda=True)
    # a 1e-6 relative error: inside every float32 default
    assert _verdict(cpu, 1e-6) and _verdict(cuda, 1e-6) and _verdict(strict, 1e-6)
    # a 1e-4 relative error (TF32-like): CUDA default only
    assert not _verdict(cpu, 1e-4) and _verdict(cuda, 1e-4) and not _verdict(strict, 1e-4)
    # a 1e-1 relative error: nobody
    assert not _verdict(cuda, 1e-1)
    half = resolve_tolerance(OutputSpec("y"), "float16", "onnxruntime", "cuda")
    assert _verdict(half, 3e-3, np.float16) and not _verdict(half, 1e-1, np.float16)


def test_integer_default_is_exact_in_a_verdict():
    tol = resolve_tolerance(OutputSpec("ids"), "int64", "onnxruntime", "cuda")
    assert tol == EXACT
    ref = np.arange(100, dtype=np.int64)
    got = ref.copy()
    assert compare_outputs("ids", ref, got, tol).passed
    got[57] += 1
    r = compare_outputs("ids", ref, got, tol)
    assert not r.passed and r.worst_index == (57,)


# --------------------------------------------------------------------------- override order

SPEC_TOL = Tolerance(atol=1e-3, rtol=1e-3)
TARGET_TOL = Tolerance(atol=2e-2)
TARGET_DEVICE_TOL = Tolerance(atol=3e-1, max_mismatch=0.1)

OUT = OutputSpec("logits", tolerance=SPEC_TOL,
                 target_tolerances={"tensorrt": TARGET_TOL, "tensorrt:cuda": TARGET_DEVICE_TOL,
                                    "openvino": TARGET_TOL})


def test_default_when_nothing_overrides():
    assert resolve_tolerance(OutputSpec("y"), "float32", "onnxruntime", "cpu") == CPU_FLOAT
    assert resolve_tolerance(OutputSpec("y"), "float32", "onnxruntime", "cuda") == CUDA_TF32_FLOAT
    assert resolve_tolerance(OutputSpec("y"), "float32", "onnxruntime", "cuda", strict_cuda=True) == CPU_FLOAT


def test_output_spec_tolerance_replaces_the_default():
    assert resolve_tolerance(OUT, "float32", "onnxruntime", "cpu") == SPEC_TOL
    assert resolve_tolerance(OUT, "float32", "onnxruntime", "cuda") == SPEC_TOL
    # even an exact spec tolerance on a float output (a falsy-looking value still counts)
    assert resolve_tolerance(OutputSpec("y", tolerance=Tolerance()), "float32", "x", "cuda") == EXACT


def test_target_tolerance_beats_output_tolerance():
    assert resolve_tolerance(OUT, "float32", "tensorrt", "cpu") == TARGET_TOL
    assert resolve_tolerance(OUT, "float32", "openvino", "cuda") == TARGET_TOL
    # target:device beats target
    assert resolve_tolerance(OUT, "float32", "tensorrt", "cuda") == TARGET_DEVICE_TOL
    # a target tolerance applies without an output tolerance too
    only_target = OutputSpec("y", target_tolerances={"tensorrt": TARGET_TOL})
    assert resolve_tolerance(only_target, "float32", "tensorrt", "cuda") == TARGET_TOL
    assert resolve_tolerance(only_target, "float32", "onnxruntime", "cuda") == CUDA_TF32_FLOAT
    # a device key alone does not match a target
    assert resolve_tolerance(OutputSpec("y", target_tolerances={"cuda": TARGET_TOL}), "float32",
                             "onnxruntime", "cuda") == CUDA_TF32_FLOAT


def test_command_line_overrides_field_by_field():
    overrides = {"atol": {"": 5e-5}, "max_mismatch": {"logits": 0.01}}
    got = resolve_tolerance(OUT, "float32", "tensorrt", "cpu", overrides=overrides)
    assert got == Tolerance(atol=5e-5, rtol=0.0, atol_by_max=0.0, max_mismatch=0.01)  # rest of TARGET_TOL kept
    got = resolve_tolerance(OutputSpec("probs"), "float32", "onnxruntime", "cuda", overrides=overrides)
    assert got == CUDA_TF32_FLOAT.merged(atol=5e-5)  # max_mismatch was for logits only


def test_output_name_beats_all_outputs_key():
    overrides = {"rtol": {"": 1e-2, "logits": 1e-4}, "atol": {"probs": 0.5}}
    logits = resolve_tolerance(OutputSpec("logits"), "float32", "onnxruntime", "cpu", overrides=overrides)
    probs = resolve_tolerance(OutputSpec("probs"), "float32", "onnxruntime", "cpu", overrides=overrides)
    other = resolve_tolerance(OutputSpec("other"), "float32", "onnxruntime", "cpu", overrides=overrides)
    assert logits == CPU_FLOAT.merged(rtol=1e-4)
    assert probs == CPU_FLOAT.merged(rtol=1e-2, atol=0.5)
    assert other == CPU_FLOAT.merged(rtol=1e-2)


def test_zero_override_counts_and_empty_overrides_change_nothing():
    got = resolve_tolerance(OutputSpec("y"), "float32", "onnxruntime", "cuda",
                            overrides={"atol_by_max": {"": 0.0}})
    assert got == CUDA_TF32_FLOAT.merged(atol_by_max=0.0) and got.atol_by_max == 0.0
    assert resolve_tolerance(OUT, "float32", "tensorrt", "cuda", overrides={}) == TARGET_DEVICE_TOL
    assert resolve_tolerance(OUT, "float32", "tensorrt", "cuda", overrides={"atol": {"probs": 9.0}}) \
        == TARGET_DEVICE_TOL


def test_override_order_shows_in_verdicts():
    # an error of 0.01 on values of about 1
    ref = np.linspace(-1, 1, 101).astype(np.float32)
    got = ref + np.float32(0.01)

    def passes(target, device, overrides=None):
        tol = resolve_tolerance(OUT, "float32", target, device, overrides=overrides)
        return compare_outputs("logits", ref, got, tol).passed

    assert not passes("onnxruntime", "cpu")            # spec tolerance 1e-3 + 1e-3*|ref|
    assert passes("tensorrt", "cpu")                   # target: atol 2e-2
    assert passes("tensorrt", "cuda")                  # target:device: atol 0.3
    assert not passes("tensorrt", "cuda", {"atol": {"logits": 1e-3}})  # command line wins
    assert passes("onnxruntime", "cpu", {"atol": {"": 0.02}})
    assert not passes("onnxruntime", "cpu", {"atol": {"probs": 0.02}})  # for another output


def test_cuda_with_a_noise_floor_holds_to_the_cpu_bound_plus_the_noise_multiple():
    """With a float64 twin the TF32 error is allowed through the noise multiple
    (the reference computes with TF32 too), so the bound itself stays tight."""
    with_twin = resolve_tolerance(OutputSpec("y"), "float32", "onnxruntime", "cuda", noise_floor=True)
    assert with_twin == CPU_FLOAT and with_twin.noise_multiple > 0
    assert resolve_tolerance(OutputSpec("y"), "float32", "onnxruntime", "cuda") == CUDA_TF32_FLOAT
    assert not _verdict(with_twin, 1e-4)  # TF32-sized: only the noise multiple may pass it


def test_a_cpu_reference_keeps_the_tf32_bound_for_a_cuda_target():
    """A reference on the CPU has no TF32 in its noise floor, so the noise
    multiple cannot allow TF32's error: the CUDA target keeps the TF32 bound."""
    apart = resolve_tolerance(OutputSpec("y"), "float32", "onnxruntime", "cuda", noise_floor=True,
                              reference_device="cpu")
    assert apart == CUDA_TF32_FLOAT
    assert resolve_tolerance(OutputSpec("y"), "float32", "onnxruntime", "cuda", noise_floor=True,
                             reference_device="cuda") == CPU_FLOAT
    assert resolve_tolerance(OutputSpec("y"), "float32", "onnxruntime", "cuda", strict_cuda=True, noise_floor=True,
                             reference_device="cpu") == CPU_FLOAT


# --------------------------------------------------------------------------- precisions

def test_reduced_precision_defaults_by_target_and_precision():
    assert resolve_tolerance(OutputSpec("y"), "float32", "openvino", "cpu", precision="bf16") == OPENVINO_BF16
    assert resolve_tolerance(OutputSpec("y"), "float32", "openvino", "cpu", precision="fp16") == OPENVINO_FP16
    assert resolve_tolerance(OutputSpec("y"), "float32", "openvino", "cpu", precision="fp32") == CPU_FLOAT
    # a target without figures of its own: the precision's dtype default
    assert resolve_tolerance(OutputSpec("y"), "float32", "other", "cpu", precision="bf16") == BFLOAT16
    assert resolve_tolerance(OutputSpec("y"), "float32", "other", "cpu", precision="fp16") == HALF
    assert resolve_tolerance(OutputSpec("ids"), "int64", "openvino", "cpu", precision="bf16") == EXACT
    assert OPENVINO_BF16.noise_multiple == OPENVINO_FP16.noise_multiple == CPU_FLOAT.noise_multiple
    # the worst error measured, as a fraction of max|ref| on every element, passes; five times it does not
    assert _offset_verdict(OPENVINO_BF16, 5.71e-3) and not _offset_verdict(OPENVINO_BF16, 5 * 5.71e-3)
    assert _offset_verdict(OPENVINO_FP16, 1.41e-3) and not _offset_verdict(OPENVINO_FP16, 5 * 1.41e-3)


def _offset_verdict(tol: Tolerance, normalized_error: float) -> bool:
    """Every element off by `normalized_error` times max|ref| (the measurements' metric)."""
    ref = np.random.default_rng(0).standard_normal(500).astype(np.float32)
    got = ref + np.float32(normalized_error * np.abs(ref).max())
    return compare_outputs("y", ref, got, tol).passed


def test_a_specs_tolerances_hold_at_another_precision_only_where_their_key_names_it():
    per_precision = Tolerance(atol_by_max=0.1)
    out = OutputSpec("logits", tolerance=SPEC_TOL,
                     target_tolerances={"openvino": TARGET_TOL, "openvino:bf16": per_precision,
                                        "openvino:cpu:fp16": TARGET_DEVICE_TOL})
    assert resolve_tolerance(out, "float32", "openvino", "cpu") == TARGET_TOL
    assert resolve_tolerance(out, "float32", "openvino", "cpu", precision="bf16") == per_precision
    assert resolve_tolerance(out, "float32", "openvino", "cpu", precision="fp16") == TARGET_DEVICE_TOL
    # the spec's fp32 tolerance and its target's are not bf16's
    assert resolve_tolerance(OUT, "float32", "openvino", "cpu", precision="bf16") == OPENVINO_BF16
    # the command line still wins, field by field (the planted twin of the bf16 case)
    held = resolve_tolerance(OUT, "float32", "openvino", "cpu", precision="bf16",
                             overrides={"atol_by_max": {"": 1e-5}, "rtol": {"": 1e-5}})
    assert held == OPENVINO_BF16.merged(atol_by_max=1e-5, rtol=1e-5)
