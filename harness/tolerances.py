"""Default tolerances and the order in which overrides apply.

Defaults depend on the output's dtype, the device's arithmetic, and the
precision the target computes in (its runtime's PRECISIONS). The figures
behind them (2026-11, H100, error over max|ref| against a float64 reference on
the zoo's CNN, depthwise CNN, MLP, transformer block and LSTM):
- CPU float32, torch and ONNX Runtime: at most 1.3e-6.
- CUDA with TF32 on (torch's cuDNN default; ORT's CUDA provider default): 1.8e-4
  to 4.1e-4, and elementwise relative errors up to 9e-2 on small elements; so
  the CUDA default scales atol with the output's magnitude (`atol_by_max`).
- CUDA with TF32 off: at most 2.7e-6, so strict CUDA mode uses the CPU figures.
Each default leaves about 5x headroom over the worst figure seen.

A target that computes in less than float32 declares defaults of its own, by
precision (its runtime module's TOLERANCES, backends.runtime_tolerances).
OpenVINO's INFERENCE_PRECISION_HINT (2026-11, OpenVINO 2026.4, the zoo's cnn,
mlp and transformer, 52 examples each, against ONNX Runtime's CPU provider
with graph optimizations off; error over max|ref|):
- bf16 (this team's AMD EPYC, which lists BF16): 4.78e-3 to 5.71e-3, 356x to 415x
  the float32 tolerance. atol_by_max 2e-2 is 3.5x the worst, and rtol adds up
  to 1e-2 more where the worst element is large.
- f16 (a lent Intel Xeon with AVX512-FP16; CPUs without FP16 skip it):
  7.55e-4 to 1.41e-3. atol_by_max 2.5e-3 is 1.8x the worst on its own, up to
  8.9x with rtol on an element as large as max|ref|.
A target with no figures of its own for a precision gets that precision's
default (HALF, BFLOAT16, INT8_STATIC, INT8_DYNAMIC).

An output an ONNX file declares bfloat16 is held to BFLOAT16 at any precision
(rtol and atol_by_max 5e-2: 6.4 steps of bfloat16's 2^-7, as HALF's 1e-2 is
10 of float16's 2^-10). Figures (2026-12, OpenVINO 2026.4 against
onnx.reference, which rounds every intermediate to bfloat16; ONNX's 10
bf16 Attention node tests, 10 drawn examples each): at most 1.28e-2 of
max|ref| (1.6 steps), 0.14 of BFLOAT16. A bound of a step or two would fail
those correct runtimes; one step off always passes.

fp16, int8 and int8-dynamic (2026-11, the core zoo from torch, Keras and MXNet,
`make parity`'s ci profile, 25 examples a case, 266 cases on ONNX Runtime 1.32
CPU, OpenVINO 2026.4, LiteRT 2.3 and ONNX's reference evaluator; the worst
example of each case; mobilenet_v2, whose random weights make its low
precisions unjudgeable, apart: see model_zoo/vision.py):
- fp16 (onnxconverter-common with float32 IO; TFLite float16 weights): at most
  9.1e-3 of max|ref| (the zoo's one-number `simple` in the reference
  evaluator's true float16 arithmetic; ONNX Runtime's CPU provider computes
  float16 ops in float32: at most 1.2e-3 there). HALF: atol_by_max 1e-2 plus
  rtol 1e-2, 2.2x the worst on its largest element.
- int8, static (symmetric QDQ, per-channel weights, MinMax on the generated
  feed; TFLite full integer), checked on the calibration distribution: error
  over the output's range (its max|ref| over the calibration feed) at most
  0.26, cosine >= 0.9984 and SNR >= 22.1 dB (outputs of 16 elements or more).
  INT8_STATIC: atol_by_range 0.5 (2x), min_cosine 0.98 (3.5x in error
  amplitude, sqrt(2(1 - cos))), min_snr_db 12 (10 dB below: 3.2x).
- int8-dynamic: error over range at most 0.038, cosine >= 0.99977, SNR >= 27.4
  dB. INT8_DYNAMIC: atol_by_range 0.1 (2.6x), min_cosine 0.998 (2.9x),
  min_snr_db 18 (9.4 dB below: 3x).
Left out of those figures, and failing the defaults, as the findings they are:
OpenVINO on the Keras MLP's QDQ file (0.66 of the range, where ONNX Runtime
and the reference evaluator give 0.03 on the same file), and the reference
evaluator on the MXNet CNN's int8-dynamic file (0.18 of the range, ONNX
Runtime 0.02), besides float16 arithmetic on MXNet's CNN and depthwise CNN
(0.108 and 0.038 of max|ref| in the reference evaluator, 2e-3 in ONNX
Runtime). The LSTM and GRU keep float32 under ONNX Runtime's static quantizer
(no QDQ for their ops): their int8 cases compute as float32 does, and say so in
the provenance (`quantization_ops`).

Override order, later wins: default -> the model spec's output tolerance ->
the spec's per-target tolerance -> the command line (field by field). A model
spec's tolerances are chosen for float32: at another precision only its
per-target keys that name the precision apply ("openvino:bf16",
"openvino:cpu:bf16", or the precision alone for every target: "int8").
"""

from __future__ import annotations

from typing import Mapping

from harness import backends
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
# precision -> the default of a target without figures of its own for it
# Quantized models (figures in the module docstring): no noise multiple, since
# the float64 twin measures float32's rounding, a thousand times below int8's.
INT8_STATIC = Tolerance(atol_by_range=0.5, min_cosine=0.98, min_snr_db=12.0)
INT8_DYNAMIC = Tolerance(atol_by_range=0.1, min_cosine=0.998, min_snr_db=18.0)
# An integer output of a quantized model (an argmax label) flips where the float
# scores it comes from are near a tie; those scores carry the check.
QUANTIZED_INTEGER = Tolerance(max_mismatch=0.5)
PRECISION_DTYPE_DEFAULT = {"bf16": BFLOAT16, "fp16": HALF, "int8": INT8_STATIC, "int8-dynamic": INT8_DYNAMIC}
QUANTIZED = ("int8", "int8-dynamic")


def default_tolerance(dtype: str, device: str, strict_cuda: bool = False, noise_floor: bool = False,
                      target: str = "", precision: str = "fp32", reference_device: str | None = None) -> Tolerance:
    """The default for an output of `dtype` computed by `target` on `device` in `precision`.

    noise_floor: the source has a float64 twin, so the verdict can also pass an
    output within its noise multiple of the original's own float32 error. On
    CUDA with TF32 (the reference computes with TF32 too, as ONNX Runtime's
    CUDA provider does) that error includes TF32's, so the tight CPU bound
    plus the noise multiple pass what TF32 explains and nothing more, where the
    TF32 bound alone (2e-3 of max|ref|) lets a weight changed by 1e-3 through
    (measured on an H100: the zoo CNN so perturbed passed at 0.08 of it).
    reference_device: where the reference computes (None: on `device`); a
    reference on the CPU has no TF32 in its noise, so a CUDA target keeps the
    TF32 bound."""
    if dtype in ("float16",):
        return HALF
    if dtype in ("bfloat16",):
        return BFLOAT16
    if dtype in ("float32", "float64"):
        if precision != "fp32":
            return backends.runtime_tolerances(target).get(precision, PRECISION_DTYPE_DEFAULT[precision])
        tf32_in_noise = noise_floor and (reference_device or device) == device
        return CUDA_TF32_FLOAT if device == "cuda" and not strict_cuda and not tf32_in_noise else CPU_FLOAT
    return QUANTIZED_INTEGER if precision in QUANTIZED else EXACT


def resolve_tolerance(
    output: OutputSpec,
    dtype: str,
    target: str,
    device: str,
    strict_cuda: bool = False,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
    noise_floor: bool = False,
    precision: str = "fp32",
    reference_device: str | None = None,
) -> Tolerance:
    """The tolerance one output is held to in one case.

    overrides: command-line values by field ("atol", "rtol", ...), each a mapping
    from output name to value, where the key "" applies to every output.
    noise_floor, reference_device: the source has a float64 twin, computing on
    `reference_device` (see `default_tolerance`).
    precision: what the target computes in; the spec's tolerances apply to
    another than fp32 only where their key names it (see the module docstring).
    """
    default = default_tolerance(dtype, device, strict_cuda, noise_floor, target, precision, reference_device)
    if precision == "fp32":
        tolerance, keys = output.tolerance or default, (f"{target}:{device}", target)
    else:
        tolerance, keys = default, (f"{target}:{device}:{precision}", f"{target}:{precision}", precision)
    for key in keys:
        if key in output.target_tolerances:
            tolerance = output.target_tolerances[key]
            break
    if overrides:
        tolerance = tolerance.merged(**command_line_fields(overrides, output.name))
    return tolerance


def command_line_fields(overrides: Mapping[str, Mapping[str, float]], output_name: str) -> dict[str, float]:
    """The tolerance fields the command line sets for one output: its own
    value ("--atol logits:1e-3"), else the one for every output ("--atol 1e-4")."""
    fields = {}
    for field_name, per_output in overrides.items():
        value = per_output.get(output_name, per_output.get(""))
        if value is not None:
            fields[field_name] = value
    return fields
