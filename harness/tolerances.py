"""Default tolerances and the order in which overrides apply.

Defaults depend on the output's dtype and the device's arithmetic. The figures
behind them (2026-11, H100, error over max|ref| against a float64 reference on
the zoo's CNN, depthwise CNN, MLP, transformer block and LSTM):
- CPU float32, torch and ONNX Runtime: at most 1.3e-6.
- CUDA with TF32 on (torch's cuDNN default; ORT's CUDA provider default): 1.8e-4
  to 4.1e-4, and elementwise relative errors up to 9e-2 on small elements; so
  the CUDA default scales atol with the output's magnitude (`atol_by_max`).
- CUDA with TF32 off: at most 2.7e-6, so strict CUDA mode uses the CPU figures.
Each default leaves about 5x headroom over the worst figure seen.

Override order, later wins: default -> the model spec's output tolerance ->
the spec's per-target tolerance -> the command line (field by field).
"""

from __future__ import annotations

from typing import Mapping

from harness.specs import OutputSpec, Tolerance

# An output out of its elementwise tolerance still passes when its largest error
# is at most this multiple of the source model's own float32 error against its
# float64 twin on the same inputs (see NOISE_MULTIPLE's measurements below).
NOISE_MULTIPLE = 16.0

# A pass by the noise multiple says "as close as float32 gets". Where float32 itself
# is so far off that the multiple allows an error above this fraction of max|ref|,
# the check cannot tell a real conversion error from rounding: inconclusive.
# Measured, the original's own float32 error over max|ref|: at most 2.5e-5 for the
# zoo on CPU and 2e-2 with TF32 (LeViT, H200), i.e. allowances up to 0.32 at 16x;
# an ill-conditioned network (torchvision's EfficientNet-B0 with BatchNorm
# statistics calibrated on one kind of input) had 4.9e-2 on CPU and 0.22 with TF32,
# allowances of 0.79 and 3.5.
NOISE_ALLOWANCE_LIMIT = 0.5

CPU_FLOAT = Tolerance(atol=1e-7, rtol=1e-5, atol_by_max=1e-5, noise_multiple=NOISE_MULTIPLE)
CUDA_TF32_FLOAT = Tolerance(atol=1e-6, rtol=1e-3, atol_by_max=2e-3, noise_multiple=NOISE_MULTIPLE)
HALF = Tolerance(atol=1e-4, rtol=1e-2, atol_by_max=1e-2, noise_multiple=NOISE_MULTIPLE)
BFLOAT16 = Tolerance(atol=1e-3, rtol=5e-2, atol_by_max=5e-2, noise_multiple=NOISE_MULTIPLE)
EXACT = Tolerance()


def default_tolerance(dtype: str, device: str, strict_cuda: bool = False, noise_floor: bool = False) -> Tolerance:
    """The default for an output of `dtype` computed on `device`.

    noise_floor: the source has a float64 twin, so the verdict can also pass an
    output within its noise multiple of the original's own float32 error. On
    CUDA with TF32 (the reference computes with TF32 too, as ONNX Runtime's
    CUDA provider does) that error includes TF32's, so the tight CPU bound
    plus the noise multiple pass what TF32 explains and nothing more, where the
    TF32 bound alone (2e-3 of max|ref|) lets a weight changed by 1e-3 through
    (measured on an H100: the zoo CNN so perturbed passed at 0.08 of it)."""
    if dtype in ("float16",):
        return HALF
    if dtype in ("bfloat16",):
        return BFLOAT16
    if dtype in ("float32", "float64"):
        return CUDA_TF32_FLOAT if device == "cuda" and not strict_cuda and not noise_floor else CPU_FLOAT
    return EXACT


def resolve_tolerance(
    output: OutputSpec,
    dtype: str,
    target: str,
    device: str,
    strict_cuda: bool = False,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
    noise_floor: bool = False,
) -> Tolerance:
    """The tolerance one output is held to in one case.

    overrides: command-line values by field ("atol", "rtol", ...), each a mapping
    from output name to value, where the key "" applies to every output.
    noise_floor: the source has a float64 twin (see `default_tolerance`).
    """
    tolerance = output.tolerance or default_tolerance(dtype, device, strict_cuda, noise_floor)
    for key in (f"{target}:{device}", target):
        if key in output.target_tolerances:
            tolerance = output.target_tolerances[key]
            break
    if overrides:
        fields = {}
        for field_name, per_output in overrides.items():
            value = per_output.get(output.name, per_output.get(""))
            if value is not None:
                fields[field_name] = value
        tolerance = tolerance.merged(**fields)
    return tolerance
