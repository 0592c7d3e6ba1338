"""The noise floor of a reduced precision: a standard build of the same model.

fp32 is judged against the model's own float32 noise (its float64 twin); a
file at fp16, int8 or int8-dynamic is judged, beside its fixed thresholds
(tolerances.py), against the error a standard build of the same fp32 model at
that precision makes on the same example: the standard build of the artifact's
file format, which a hop declares itself (its STANDARD_FLOOR: the runtime and
device its file runs on as a floor, and what to call it), where the source has a
path to it: TFLite's own quantizer (`tf->tflite`, run in LiteRT) for a TFLite
file from Keras or TensorFlow; else the harness's own `onnx-lower` hop
(onnxruntime.quantization with the same calibration feed; onnxconverter-common
for fp16), run in ONNX Runtime's CPU provider. Either is made through the
artifact cache like any hop. An output whose RMS error over the output's range exceeds
FLOOR_MULTIPLE x the floor's (plus FLOOR_EPSILON, so that a floor of ~0 does
not fail a correct file) fails, whatever its cosine: a QDQ file whose zero
point is off by 10 passes the fixed thresholds. Every output size is judged
alike. Bugs too small for any output-level multiple (one activation's scale
x4, a wrong per-channel axis) are the file's own Q/DQ pairs' to show
(harness/qdq_check.py).

The floor is built where the artifact is not the harness's own standard build:
a user's --converted file at its precision, a TFLite file by another path
(onnx2tf), a runtime's own lowering (OpenVINO). The engine builds and runs
it; this module decides where it applies and judges one output. No framework is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import backends, paths
from harness.case import Case
from harness.compare import OutputComparison
from harness.specs import Tolerance

# The floor of a file in a format with no standard build of its own (an OpenVINO IR, ...), and at an
# emulated precision: the ONNX one, the format every source reaches.
FALLBACK_FORMAT = "onnx"
FLOOR_PRECISIONS = ("fp16", "int8", "int8-dynamic")   # what the standard lowering writes
# What no standard tool writes a file for ONNX Runtime's CPU provider to run: the floor is the case's fp32
# build with its arithmetic rounded as that precision's runtimes round it (harness/converters/bf16_emulation.py).
EMULATED_PRECISIONS = ("bf16",)

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
# TFLite files against TFLite's own build (tests/test_tflite_floor.py, docs/how-to/precision.md): correct
# files by other converter settings 1.02x to 1.26x, calibration bugs on the cnn 5.1x to 106x.
FLOOR_MULTIPLE = 3.0

# Added to the allowed error (over the output's range): an eighth of one step of the
# precision, so that an output the floor gets exactly (a floor of ~0: a constant, a
# path left in float32) does not fail a correct file by its rounding.
FLOOR_EPSILON = {"fp16": 2.0 ** -10 / 8, "int8": 1 / 127 / 8, "int8-dynamic": 1 / 127 / 8, "bf16": 2.0 ** -8 / 8}

# The recipe of an emulated precision's floor; a standard build's is its hop's (StandardBuild.recipe).
RECIPES = {"bf16": "a bf16 emulation of the fp32 build (bf16 storage, float32 arithmetic)"}


@dataclass(frozen=True)
class StandardBuild:
    """The standard build of one file format at a reduced precision: the hop that
    declares itself so (its STANDARD_FLOOR) and where its file runs as a floor."""

    hop: str       # the hop's registry name, as Case.lowered_by names it
    format: str    # the format it writes
    runtime: str
    device: str
    recipe: str    # how the record and the message call its build, "{precision}" filled in


def standard_build(fmt: str) -> StandardBuild | None:
    """The standard build of format `fmt`'s files: the hop writing `fmt` that declares
    STANDARD_FLOOR (its runtime, device and recipe); None where no hop does."""
    for name in backends.names("hop"):
        hop = backends.hop(name)
        declared = getattr(hop, "STANDARD_FLOOR", None)
        if declared is not None and hop.WRITES == fmt:
            return StandardBuild(name, fmt, **declared)
    return None


def artifact_format(case: Case, converted: Path | None = None) -> str:
    """The format of the file `case` runs: a user's --converted file's by its suffix, else
    the last hop's, else the source's own file's (an ONNX model on ONNX Runtime)."""
    if converted is not None:
        return backends.artifact_suffixes().get(converted.suffix.lower(), FALLBACK_FORMAT)
    return paths.written(case.path)[-1] if case.path else case.source


def _standard_path(case: Case, build: StandardBuild) -> tuple[str, ...] | None:
    """The hops that make `build` from the case's source: its shortest path to the build's
    runtime that the build's hop lowers (at an emulated precision, its shortest fp32
    path); None where there is none."""
    precision, lowering = ("fp32", "") if case.precision in EMULATED_PRECISIONS else (case.precision, build.hop)
    return next((path for path, step in paths.precision_paths(case.source, build.runtime, precision)
                 if step == lowering), None)


def _candidates(case: Case, converted: Path | None) -> list[StandardBuild]:
    """The standard builds that may be `case`'s floor, the first with a path from its source
    chosen: its artifact's format's own (TFLite's for a TFLite file), then the ONNX one."""
    fallback = standard_build(FALLBACK_FORMAT)
    own = None if case.precision in EMULATED_PRECISIONS else standard_build(artifact_format(case, converted))
    return [build for build in dict.fromkeys((own, fallback)) if build is not None]


def floor_build(case: Case, converted: Path | None = None) -> StandardBuild | None:
    """The standard build that is `case`'s floor (`_candidates`); None where its source has a path to none."""
    return next((build for build in _candidates(case, converted) if _standard_path(case, build) is not None), None)


def floor_recipe(case: Case, converted: Path | None = None) -> str:
    """How the record and the message call `case`'s floor: "TFLite's own int8 build"."""
    if case.precision in EMULATED_PRECISIONS:
        return RECIPES[case.precision]
    return floor_build(case, converted).recipe.format(precision=case.precision)


def why_no_floor(case: Case, converted: Path | None = None) -> str | None:
    """Why a case at a reduced precision gets no floor (None: it gets one); `converted`:
    the run's --converted file, whose format chooses the standard build."""
    if case.precision not in FLOOR_PRECISIONS + EMULATED_PRECISIONS:
        return (f"no standard {case.precision} build to compare with (the standard builds write "
                f"{', '.join(FLOOR_PRECISIONS)}): held to the fixed thresholds alone")
    build = floor_build(case, converted)
    if build is not None and case.lowered_by == build.hop:
        return (f"the artifact is the harness's own standard {case.precision} build ({build.hop}): "
                "it is the floor; held to the fixed thresholds")
    if case.random_ops:
        return "random operators: compared by distribution, which no floor's error measures"
    if build is None:
        tried = " or ".join(f"{'' if case.precision in EMULATED_PRECISIONS else f'through {b.hop} '}to {b.runtime}"
                            for b in _candidates(case, converted))
        return f"no path from {case.source} {tried}: held to the fixed thresholds alone"
    return None


def floor_case(case: Case, converted: Path | None = None) -> Case | None:
    """The case whose artifact is `case`'s floor: the standard build, on its own
    path from the same source to the runtime and device it runs on as a floor
    (at an emulated precision, the fp32 build the engine then rounds); None where
    `case` gets no floor (`why_no_floor`)."""
    if why_no_floor(case, converted) is not None:
        return None
    build = floor_build(case, converted)
    standard = replace(case, target=build.runtime, device=build.device, path=_standard_path(case, build),
                       lowered_by=build.hop, variant=None)
    return replace(standard, precision="fp32", lowered_by="") if case.precision in EMULATED_PRECISIONS else standard


@dataclass
class FloorBuild:
    """The floor of one case: its loaded file and its layouts."""

    session: Any                                  # the floor's file in its runtime (StandardBuild.runtime)
    precision: str
    recipe: str                                   # floor_recipe: "TFLite's own int8 build"
    input_layouts: dict[str, str | None]
    output_layouts: dict[str, str | None]
    # Every file on the floor's path with its (input, output) layouts (engine.Files): its fp32 ONNX file is what
    # a --converted QDQ file's pairs are measured against where the case's own path holds none (qdq_check.py).
    files: list = field(default_factory=list)
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
          output_range: float | None, misses_of_its_own: bool) -> None:
    """Hold the artifact's output (`comparison`) to FLOOR_MULTIPLE x the error of
    the floor's (`floor`) on the same example: the numbers side by side in
    `comparison.floor`, and a failure, with its message and error_ratio, where
    its RMS error over the output's range is beyond it (the largest error is
    recorded beside it, not judged: see FLOOR_MULTIPLE). An output that missed its fixed
    thresholds passes where the floor missed them too on this example and `misses_of_its_own`
    is False (no element out of the elementwise bound where the floor's is within it)."""
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
        "recipe": build.recipe, "multiple": FLOOR_MULTIPLE, "epsilon": epsilon, "range": scale,
        "rmse": comparison.rmse, "floor_rmse": floor.rmse, "floor_typical_rmse": typical,
        "max_abs": comparison.max_abs,
        "floor_max_abs": floor.max_abs, "snr_db": comparison.snr_db, "floor_snr_db": floor.snr_db,
        "cosine": comparison.cosine, "floor_cosine": floor.cosine,
        "rms_over_floor": multiples["rms"], "max_over_floor": multiples["max"], "ratio": ratio,
        "passed": ratio <= 1.0,
        # the fixed thresholds' verdict before this one: a failure by the floor alone is one no walk
        # at those thresholds can localize (harness/localize/locate.py's floor_localization)
        "thresholds_passed": comparison.passed}
    comparison.error_ratio = max(comparison.error_ratio or 0.0, ratio)
    if ratio <= 1.0:
        # The floor failing the fixed thresholds on this example shows the precision cannot meet them
        # here (an input past the calibration range saturates every int8 build, by its own clip range:
        # a per-tensor asymmetric build misses cosine and SNR where the standard build misses only the
        # elementwise bound, benchmarks/precision_verdicts.py at nightly); the guard still refuses an
        # element out of bound where the floor's is within it.
        if not comparison.passed and not misses_of_its_own and _missed(floor):
            _accept_as_the_floor(comparison, floor, build, multiples["rms"])
        return
    verdict = (f"{comparison.name}: its RMS error is {multiples['rms']:.3g}x the floor's "
               f"({build.recipe} of the same model), allowed {FLOOR_MULTIPLE:g}x "
               f"(RMS error {errors['rms'][0]:.3g} of the output's range, the floor's {errors['rms'][1]:.3g}; "
               f"largest {errors['max'][0]:.3g}, the floor's {errors['max'][1]:.3g}; "
               f"SNR {comparison.snr_db:.3g} dB, the floor's {floor.snr_db:.3g} dB)")
    comparison.message = verdict if comparison.passed else f"{comparison.message}; {verdict}"
    comparison.passed = False
    comparison.accepted_by = None


def _missed(comparison: OutputComparison) -> set[str]:
    """The fixed checks `comparison` missed: its whole-output thresholds, and "elementwise" where
    more elements are out of its elementwise bound than its max_mismatch allows."""
    out_of_bound = round((comparison.mismatch_fraction or 0.0) * comparison.elements)
    elementwise = out_of_bound > int(comparison.tolerance.get("max_mismatch", 0.0) * comparison.elements)
    return set(comparison.failed_thresholds) | ({"elementwise"} if elementwise else set())


def _accept_as_the_floor(comparison: OutputComparison, floor: OutputComparison, build: FloorBuild,
                         rms_over_floor: float) -> None:
    """Pass an output that misses its fixed thresholds only where the standard build misses them too
    on the same example, its error within the multiple of the floor's: as fp32's noise view
    passes what float32 explains, this passes what the precision explains (an input past the
    calibration feed's range saturates every int8 build alike); a file worse than the floor already failed."""
    comparison.passed, comparison.accepted_by = True, "floor"
    comparison.floor["accepted"] = True
    comparison.message = (f"{comparison.message}; so does {build.recipe} of the same model on this example "
                          f"(largest error {floor.max_abs:.3g}; missed: {', '.join(sorted(_missed(floor)))}), "
                          f"and its RMS error is "
                          f"{rms_over_floor:.3g}x the floor's (allowed {FLOOR_MULTIPLE:g}x): "
                          f"as close as {build.precision} gets")
