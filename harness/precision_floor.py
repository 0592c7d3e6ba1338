"""The noise floor of a reduced precision: a standard build of the same model.

fp32 is judged against the model's own float32 noise (its float64 twin); a
file at fp16, int8 or int8-dynamic is judged, beside its fixed thresholds
(tolerances.py), against the error a standard build of the same fp32 model at
that precision makes on the same example: the harness's own `onnx-lower` hop
(onnxruntime.quantization with the same calibration feed; onnxconverter-common
for fp16), through the artifact cache like any hop, run in ONNX Runtime's CPU
provider. An output whose RMS error over the output's range exceeds
FLOOR_MULTIPLE x the floor's (plus FLOOR_EPSILON, so that a floor of ~0 does
not fail a correct file) fails, whatever its cosine: a QDQ file whose zero
point is off by 10 passes the fixed thresholds. Every output size is judged
alike. Bugs too small for any output-level multiple (one activation's scale
x4, a wrong per-channel axis) are the file's own Q/DQ pairs' to show
(harness/qdq_check.py).

The floor is built where the artifact is not the harness's own standard build:
a user's --converted file at its precision, a TFLite quantizer's file, a
runtime's own lowering (OpenVINO). The engine builds and runs it; this module
decides where it applies and judges one output. No framework is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from harness import paths
from harness.compare import OutputComparison
from harness.matrix import Case
from harness.specs import Tolerance

# Where the floor is made: the harness's standard lowering, run where it is run as a reference.
STANDARD_LOWERING = "onnx->onnx-lowered"
FLOOR_TARGET = "onnxruntime"
FLOOR_DEVICE = "cpu"
FLOOR_PRECISIONS = ("fp16", "int8", "int8-dynamic")   # what the standard lowering writes

# An artifact fails when its RMS error over the output's range exceeds this multiple of
# the floor's on the same example. Measured (2026-12, benchmarks/precision_floor.py's
# builds of the zoo's cnn, two_outputs and transformer, 50 drawn examples each, the
# multiple each needs to pass its worst example): correct recipes other than the floor's
# (per-tensor and per-channel; MinMax, Entropy, Percentile; symmetric and asymmetric)
# need 0.36x to 1.91x (a 5-logit classifier reached 2.3x on one of 10 examples); the
# planted bugs 2.68x to 96x (an activation scale x0.25, a weight channel x2, a zero point
# +10, calibration on another distribution), except an activation scale x4 on the
# transformer (0.93x) and on the cnn (2.87x) and a wrong per-channel axis (0.84x to
# 0.97x), which only the file's own Q/DQ pairs show (harness/qdq_check.py). 3x passes every
# correct build with 1.3x to spare. The largest error is recorded beside it, not judged:
# correct asymmetric recipes reach 6.35x the floor's on the transformer's worst element.
FLOOR_MULTIPLE = 3.0

# Added to the allowed error (over the output's range): an eighth of one step of the
# precision, so that an output the floor gets exactly (a floor of ~0: a constant, a
# path left in float32) does not fail a correct file by its rounding.
FLOOR_EPSILON = {"fp16": 2.0 ** -10 / 8, "int8": 1 / 127 / 8, "int8-dynamic": 1 / 127 / 8}

RECIPES = {"fp16": "a standard fp16 build", "int8": "a standard int8 build",
           "int8-dynamic": "a standard int8-dynamic build"}


def why_no_floor(case: Case) -> str | None:
    """Why a case at a reduced precision gets no floor (None: it gets one)."""
    if case.precision not in FLOOR_PRECISIONS:
        return (f"no standard {case.precision} build to compare with ({STANDARD_LOWERING} writes "
                f"{', '.join(FLOOR_PRECISIONS)}): held to the fixed thresholds alone")
    if case.lowered_by == STANDARD_LOWERING:
        return (f"the artifact is the harness's own standard {case.precision} build ({STANDARD_LOWERING}): "
                "it is the floor; held to the fixed thresholds")
    if case.random_ops:
        return "random operators: compared by distribution, which no floor's error measures"
    if floor_path(case) is None:
        return (f"no path from {case.source} through {STANDARD_LOWERING} to {FLOOR_TARGET}: "
                "held to the fixed thresholds alone")
    return None


def floor_path(case: Case) -> tuple[str, ...] | None:
    """The hops that make the floor from the case's source: its shortest path to
    ONNX Runtime that the standard lowering lowers; None where there is none."""
    return next((path for path, step in paths.precision_paths(case.source, FLOOR_TARGET, case.precision)
                 if step == STANDARD_LOWERING), None)


def floor_case(case: Case) -> Case | None:
    """The case whose artifact is `case`'s floor: the standard build, on its own
    path from the same source; None where `case` gets no floor (`why_no_floor`)."""
    if why_no_floor(case) is not None:
        return None
    return replace(case, path=floor_path(case), lowered_by=STANDARD_LOWERING, variant=None)


@dataclass
class FloorBuild:
    """The floor of one case: its loaded file and its layouts."""

    session: Any                                  # the floor's file in ONNX Runtime's CPU provider
    precision: str
    input_layouts: dict[str, str | None]
    output_layouts: dict[str, str | None]
    # Per output, the largest RMS error the floor allowed on an example, absolute: an output that moves
    # less than that between inputs would pass its check as a constant (explore.input_sensitivity).
    allowed_max_abs: dict[str, float] = field(default_factory=dict)
    # Per output, the floor's typical RMS error, absolute, over samples of the calibration feed (the
    # engine measures it as it measures the output's range): an example the floor happens to get almost
    # exactly (shrinking finds such inputs) is judged against that, not against the floor's luck.
    typical_rmse: dict[str, float] = field(default_factory=dict)

    def run(self, names: list[str], inputs: list, source_layouts: dict[str, str | None]) -> list:
        """The floor's outputs on `inputs` (the spec's inputs `names`, in the original's layouts), in its own layouts."""
        from harness.layouts import relaid

        return self.session.run([relaid(x, source_layouts[name], self.input_layouts[name])
                                 for name, x in zip(names, inputs)])

    def sensitivity_tolerance(self, name: str) -> Tolerance | None:
        """The tolerance the floor judged output `name` by, elementwise; None where it judged none."""
        allowed = self.allowed_max_abs.get(name)
        return None if allowed is None else Tolerance(atol=allowed)


def judge(comparison: OutputComparison, floor: OutputComparison, build: FloorBuild,
          output_range: float | None) -> None:
    """Hold the artifact's output (`comparison`) to FLOOR_MULTIPLE x the error of
    the floor's (`floor`) on the same example: the numbers side by side in
    `comparison.floor`, and a failure, with its message and error_ratio, where
    its RMS error over the output's range is beyond it (the largest error is
    recorded beside it, not judged: see FLOOR_MULTIPLE)."""
    if comparison.max_abs is None or floor.max_abs is None or comparison.nonfinite_mismatches \
            or floor.snr_db is None:   # not a float output both sides computed: the comparison's own verdict
        return
    scale = output_range or comparison.max_ref or 1.0
    epsilon = FLOOR_EPSILON[build.precision]
    typical = build.typical_rmse.get(comparison.name, 0.0)
    errors = {"rms": (comparison.rmse / scale, max(floor.rmse, typical) / scale),
              "max": (comparison.max_abs / scale, floor.max_abs / scale)}
    ratio = errors["rms"][0] / (FLOOR_MULTIPLE * errors["rms"][1] + epsilon)   # the RMS error is judged
    multiples = {kind: (got / base if base > 0 else (0.0 if got == 0 else float("inf")))
                 for kind, (got, base) in errors.items()}
    build.allowed_max_abs[comparison.name] = max(build.allowed_max_abs.get(comparison.name, 0.0),
                                                 (FLOOR_MULTIPLE * errors["rms"][1] + epsilon) * scale)
    comparison.floor = {
        "recipe": RECIPES[build.precision], "multiple": FLOOR_MULTIPLE, "epsilon": epsilon, "range": scale,
        "rmse": comparison.rmse, "floor_rmse": floor.rmse, "floor_typical_rmse": typical,
        "max_abs": comparison.max_abs,
        "floor_max_abs": floor.max_abs, "snr_db": comparison.snr_db, "floor_snr_db": floor.snr_db,
        "cosine": comparison.cosine, "floor_cosine": floor.cosine,
        "rms_over_floor": multiples["rms"], "max_over_floor": multiples["max"], "ratio": ratio,
        "passed": ratio <= 1.0}
    comparison.error_ratio = max(comparison.error_ratio or 0.0, ratio)
    if ratio <= 1.0:
        return
    verdict = (f"{comparison.name}: its RMS error is {multiples['rms']:.3g}x the floor's "
               f"({RECIPES[build.precision]} of the same model), allowed {FLOOR_MULTIPLE:g}x "
               f"(RMS error {errors['rms'][0]:.3g} of the output's range, the floor's {errors['rms'][1]:.3g}; "
               f"largest {errors['max'][0]:.3g}, the floor's {errors['max'][1]:.3g}; "
               f"SNR {comparison.snr_db:.3g} dB, the floor's {floor.snr_db:.3g} dB)")
    comparison.message = verdict if comparison.passed else f"{comparison.message}; {verdict}"
    comparison.passed = False
    comparison.accepted_by = None
