"""Runs one case: the reference, the conversion path, the target, the comparison.

`prepare_case` does the once-per-case work (build or load the original, convert
through the cache, load the artifact, resolve tolerances); `run_example` feeds
one example's tensors through both sides and compares them. Neither knows pytest.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness import backends
from harness.cache import ArtifactCache, release_private_copies
from harness.calibration import calibration_inputs
from harness.calibration_settings import Calibration
from harness.case import CONVERTED, Case
from harness.compare import (OutputComparison, accept_argmax_flips, accept_saturation, compare_distributions,
                             compare_outputs, out_of_bound)
from harness.converters import bf16_emulation
from harness.errors import CaseError, summarize_exception
from harness.file_arithmetic import computed_in
from harness.inputs import check_tensor_budget, example_recipe, make_inputs
from harness.layouts import relaid
from harness.paths import RUNTIME
from harness.precision_floor import FLOOR_MULTIPLE, FloorBuild, floor_case, floor_recipe, judge, why_no_floor
from harness.random_ops import random_ops
from harness.model_file import require_file
from harness.options import RunOptions
from harness.shape_check import ShapeFinding, input_findings
from harness.shape_profile import shape_profile
from harness.specs import DISTRIBUTIONS, ModelSpec, Tolerance
from harness.tolerances import resolve_tolerance
from harness.user_inputs import UserInputs, load_user_inputs


@dataclass
class PreparedCase:
    case: Case
    spec: ModelSpec
    source: Any                      # the source adapter module
    model: Any                       # the original, on the case's reference device
    model64: Any | None              # its float64 twin, for the noise floor
    session: Any                     # the target runtime's loaded artifact
    tolerances: dict[str, Tolerance]
    provenance: dict[str, Any]
    versions: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    # (inputs, outputs) layouts of the original as its source holds it, and of the artifact
    source_layouts: tuple[dict[str, str | None], dict[str, str | None]] = ({}, {})
    artifact_layouts: tuple[dict[str, str | None], dict[str, str | None]] = ({}, {})
    # What the artifact's declared input shapes get wrong against the spec (the run goes on).
    warnings: list[ShapeFinding] = field(default_factory=list)
    # The input distributions examples are drawn from: all of them, but for a model
    # quantized statically, which is checked on the kind of input it was calibrated on
    # (outside its calibrated ranges it saturates by design: that tests the feed, not
    # the conversion).
    distributions: tuple[str, ...] = DISTRIBUTIONS
    # Each float output's largest magnitude over the calibration feed, where a tolerance
    # scales with it (atol_by_range): a quantized model's error is a share of its ranges.
    output_ranges: dict[str, float] = field(default_factory=dict)
    # Each float output's (smallest, largest) value over the same samples: where a static int8 build
    # saturates it (its clip range is its recipe's own, about these), compare.accept_saturation.
    output_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Every file on the case's path, in order, with its (input, output) layouts:
    # what a localization walks (the last ONNX among them).
    files: list[tuple[Path, dict[str, str | None], dict[str, str | None]]] = field(default_factory=list)
    # The stored sets beside the model, (inputs by the file's names, outputs in the file's order, set name):
    # they need no reference, so they judge the target first, and alone where the reference cannot run.
    golden: list[tuple[dict[str, np.ndarray], list[np.ndarray], str]] = field(default_factory=list)
    # Why the reference cannot run the spec's inputs (it cannot load the model, or rejects them): set only
    # where golden sets exist to judge the target without it; otherwise that is the case's error.
    reference_error: CaseError | None = None
    # The user's own examples (--parity-inputs), checked against the spec as they loaded: run before the drawn ones.
    user_inputs: UserInputs | None = None
    # At a reduced precision, a standard build of the same model that the artifact's error is held
    # against (harness/precision_floor.py); None where none is built (provenance["floor"] says why).
    floor: FloorBuild | None = None


@dataclass
class ExampleOutcome:
    """One example through both sides."""

    comparisons: list[OutputComparison]
    noise: dict[str, dict[str, float | None]]
    error: str | None = None         # the converted model raised on these inputs
    error_kind: str | None = None    # the error's first line, the same for every example it recurs on
    reference: list[np.ndarray] | None = None   # the original's outputs, in the spec's order
    converted: list[np.ndarray] | None = None   # the converted model's, in the original's layouts

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.comparisons)

    @property
    def message(self) -> str:
        if self.error:
            return self.error
        return "\n".join(c.message for c in self.comparisons if not c.passed)


Progress = Callable[[str], None]   # told each stage's name as the stage starts


def no_progress(stage: str) -> None:
    """The progress callback of a case nobody watches."""


def prepare_case(case: Case, options: RunOptions, cache: ArtifactCache,
                 progress: Progress = no_progress) -> PreparedCase:
    """Everything a case needs before its examples run; raises CaseError.
    `progress(stage)` is called as each stage starts (a worker reports it, so
    that a hang can be placed). The converted files (`files`) are the cache's
    private copies, there until the next case is prepared in this process."""
    spec = case.spec
    # The cache's private copies of the case before, whose runtime loaded them (cases run one at a time).
    release_private_copies()
    check_tensor_budget(spec, options.max_tensor_mb)   # before any model is built or tensor made
    if case.precision == "int8":   # its feed: a saved run's --calibration=PATH, refused where it is not here
        options.calibration.check_file()
    # the user's examples are refused, if they do not fit the spec, before any model is built too
    user_inputs = (load_user_inputs(options.parity_inputs, spec, spec.source_layouts(case.source)[0],
                                    options.max_tensor_mb, options.parity_preprocess)
                   if options.parity_inputs else None)
    source = backends.source(case.source)
    runtime = backends.runtime(case.target)
    timings: dict[str, float] = {}

    progress("load")
    start = time.perf_counter()
    try:
        model = source.bind(source.build(spec.builders[case.source]), spec)
    except CaseError:
        raise
    except Exception as error:   # a model's builder is the user's code: whatever it raises is the case's load error
        raise CaseError("load", f"building model {spec.name!r} ({spec.origin}) failed: {summarize_exception(error)}") from None
    timings["build_s"] = time.perf_counter() - start

    source_in, source_out = spec.source_layouts(case.source)
    example = [relaid(make_inputs(spec, example_recipe(spec))[i.name], i.layout, source_in[i.name]) for i in spec.inputs]
    golden = golden_sets(source, spec)
    reference_error = None
    try:
        reference = _checked_reference(source, model, spec, example)
    except CaseError as error:
        if not golden:
            raise
        reference_error, reference = error, stored_outputs(model, spec, golden[0][1])
    output_dtypes = {o.name: str(r.dtype) for o, r in zip(spec.outputs, reference)}

    progress("convert")
    start = time.perf_counter()
    artifact_path, provenance, cache_hit, files = _artifact(case, options, cache, source, model, spec, example)
    timings["convert_s"] = time.perf_counter() - start
    provenance["cache_hit"] = cache_hit
    start = time.perf_counter()
    floor, floor_provenance = _precision_floor(case, options, cache, source, model, spec, example)
    if floor_provenance is not None:   # its build (a cache hit after the first) and its load
        timings["floor_build_s"] = time.perf_counter() - start
    found = _random_ops_found(case, source, model, example, reference if reference_error is None else None,
                              provenance, files)
    if found:   # compared by distribution, never elementwise (explore.py), as an ONNX original holding them is
        case = replace(case, random_ops=tuple(sorted({*case.random_ops, *(op for f in found for op in f["ops"])})))
        provenance["random_ops_found"] = found

    device_flags = source.configure_device(case.reference_device, options.strict_cuda)
    model = source.to_device(model, case.reference_device)
    model64 = source.float64_copy(model)

    progress("runtime")
    start = time.perf_counter()
    artifact_layouts = ({i.name: provenance.get("input_layouts", {}).get(i.name, source_in[i.name]) for i in spec.inputs},
                        {o.name: provenance.get("output_layouts", {}).get(o.name, source_out[o.name])
                         for o in spec.outputs})
    session_options: dict[str, Any] = {}
    if getattr(runtime, "SHAPE_PROFILE", False):   # an engine built for a range of shapes (TensorRT)
        session_options["profile"] = shape_profile(spec, artifact_layouts[0])
    # A runtime lowers only where the case says it does; otherwise it runs the
    # artifact as its own types say (an fp16 or int8 file computes in those).
    session = runtime.Session(artifact_path, case.device, options,
                              precision=case.precision if case.lowered_by == RUNTIME else "fp32", **session_options)
    binding = session.bind([i.name for i in spec.inputs], [i.dtype for i in spec.inputs], [o.name for o in spec.outputs])
    timings["load_s"] = time.perf_counter() - start

    provenance = {**provenance, "precision": {"precision": case.precision, "lowered_by": case.lowered_by or None},
                  "runtime": session.provenance, "binding": binding,
                  "reference": {"device": case.reference_device, "input_layouts": source_in,
                                "output_layouts": source_out,
                                **device_flags, "float64_twin": _twin_status(source, model, model64)}}
    if hasattr(source, "reference_status"):   # what runs the original, where a source may fall back
        provenance["reference"]["runs_in"] = source.reference_status(model)
    if reference_error is not None:
        provenance["reference"]["unavailable"] = reference_error.message
    if computed_in(case):   # the target computes the file wider than its types (file_arithmetic.py)
        provenance["precision"]["computed_in"] = computed_in(case)
    if floor_provenance is not None:
        provenance["floor"] = floor_provenance
    versions = {**source.versions(), **runtime.versions()}
    if "versions" in provenance:
        versions.update(provenance["versions"])
    tolerances = {
        o.name: resolve_tolerance(o, output_dtypes[o.name], case.target, case.device, options.strict_cuda,
                                  options.tolerance_overrides, noise_floor=model64 is not None,
                                  precision=case.precision, reference_device=case.reference_device)
        for o in spec.outputs
    }
    where = f"converted file {artifact_path.name}" if options.converted is not None else "the converted file"
    warnings = input_findings(spec.inputs, dict(zip([i.name for i in spec.inputs], session.declared_inputs())),
                              artifact_layouts[0], where, user_file=options.converted is not None)
    calibrated_on = next((hop.get("calibrated_on") for hop in provenance.get("hops", [provenance])
                          if hop.get("calibrated_on")), None)
    calibration = options.calibration
    if case.precision == "int8" and case.lowered_by == CONVERTED:
        # a user's int8 file: checked on what it is deployed for, as the spec or --calibration says
        calibrated_on = calibration.for_spec(spec).distribution
    output_ranges, output_bounds = {}, {}
    if reference_error is None and (floor is not None or any(t.atol_by_range for t in tolerances.values())):
        output_ranges, output_bounds = _output_ranges(source, model, spec, calibration, source_in,
                                                      case.reference_device, floor)
        provenance["output_ranges"] = {**output_ranges, "samples": RANGE_SAMPLES}
        provenance["output_bounds"] = {name: list(bounds) for name, bounds in output_bounds.items()}
    return PreparedCase(
        case=case, spec=spec, source=source, model=model, model64=model64, session=session,
        tolerances=tolerances, provenance=provenance, versions=versions, timings=timings,
        source_layouts=(source_in, source_out), artifact_layouts=artifact_layouts, warnings=warnings,
        distributions=(calibrated_on,) if calibrated_on else DISTRIBUTIONS, output_ranges=output_ranges,
        output_bounds=output_bounds,
        files=files, golden=golden, reference_error=reference_error, user_inputs=user_inputs, floor=floor,
    )


def golden_sets(source, spec: ModelSpec) -> list[tuple[dict[str, np.ndarray], list[np.ndarray], str]]:
    """The stored (inputs, outputs, set name) beside the model's file, where
    its source reads such sets (`golden_examples`); none otherwise."""
    load = getattr(source, "golden_examples", None)
    origin = Path(spec.origin)
    if load is None or spec.origin == "zoo" or not origin.exists():
        return []
    return load(origin)


def stored_outputs(model: Any, spec: ModelSpec, outputs: list[np.ndarray]) -> list[np.ndarray]:
    """A golden set's outputs, stored in the model file's order, in the spec's
    (the names bind() fetches, which may be fewer)."""
    file_outputs = getattr(model, "output_names", None) or [o.name for o in spec.outputs]
    fetches = getattr(model, "fetches", None) or [o.name for o in spec.outputs]
    stored = dict(zip(file_outputs, outputs))
    return [stored[fetch] for fetch in fetches]


RANGE_SAMPLES = 8   # calibration samples an output's range is measured on (the first of the feed)


def _output_ranges(source, model, spec: ModelSpec, calibration: Calibration,
                   source_in: dict[str, str | None], device: str, floor: FloorBuild | None = None
                   ) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Each float output's largest magnitude, and its (smallest, largest) value,
    over the first RANGE_SAMPLES samples of the calibration feed, run through the
    original; with a `floor`, its typical error there too (FloorBuild.typical_rmse:
    the RMS over the samples of each one's RMS error against the original)."""
    feed = calibration_inputs(spec, replace(calibration, samples=RANGE_SAMPLES), source_in)
    ranges: dict[str, float] = {}
    bounds: dict[str, tuple[float, float]] = {}
    squares: dict[str, list[float]] = {}
    for sample in feed:
        outputs = source.run(model, [sample[i.name] for i in spec.inputs], device)
        names = [i.name for i in spec.inputs]
        floors = floor.run(names, [sample[name] for name in names], source_in) if floor is not None else None
        for index, (out, value) in enumerate(zip(spec.outputs, outputs)):
            value = np.asarray(value)
            if value.dtype.kind == "f" and value.size:
                ranges[out.name] = max(ranges.get(out.name, 0.0), float(np.max(np.abs(value))))
                low, high = bounds.get(out.name, (np.inf, -np.inf))
                bounds[out.name] = (min(low, float(np.min(value))), max(high, float(np.max(value))))
                if floors is not None:
                    error = np.asarray(floors[index], dtype=np.float64) - value
                    squares.setdefault(out.name, []).append(float(np.mean(error ** 2)))
    if floor is not None:
        floor.typical_rmse = {name: float(np.sqrt(np.mean(values))) for name, values in squares.items()}
    return ranges, bounds


def _twin_status(source, model: Any, model64: Any | None) -> str:
    """What the noise floor rests on: the source's own account where it gives
    one (an ONNX file's twin may run in another engine, or not at all)."""
    if hasattr(source, "float64_status"):
        return source.float64_status(model)
    return "float64 twin" if model64 is not None else "no float64 twin: no noise floor for this source"


def _checked_reference(source, model, spec: ModelSpec, example: list[np.ndarray]) -> list[np.ndarray]:
    """Run the original on spec-built inputs, so a spec that does not fit the
    model fails here with a clear message rather than deep in a converter."""
    try:
        outputs = source.run(model, example, "cpu")
    except CaseError:
        raise
    except Exception as error:   # each framework raises its own types (torch: RuntimeError, tf: InvalidArgumentError)
        shapes = ", ".join(f"{i.name}: {x.dtype}{list(x.shape)}" for i, x in zip(spec.inputs, example))
        if _out_of_memory(error):
            raise _out_of_memory_error(spec, "cpu", shapes, error) from None
        raise CaseError("inputs", f"the original model {spec.name!r} rejects inputs built from its input spec "
                                  f"({shapes}): {summarize_exception(error, 3)}\nCheck the input spec "
                                  "(names, order, shape, dtype, value range): --input-spec or the model's "
                                  "registration.") from None
    if len(outputs) != len(spec.outputs):
        raise CaseError("inputs", f"the original model {spec.name!r} returns {len(outputs)} output(s) but its spec "
                                  f"names {len(spec.outputs)}: {[o.name for o in spec.outputs]}")
    return outputs


Files = list[tuple[Path, dict[str, str | None], dict[str, str | None]]]


def _artifact(case: Case, options: RunOptions, cache: ArtifactCache, source, model, spec: ModelSpec,
              example: list[np.ndarray]) -> tuple[Path, dict, bool, Files]:
    """The artifact at the end of the case's path, each hop through the cache on
    its own: its key holds the hop and what it was given (the model's content
    hash for the first, the key of the hop before it for the others), so one
    export feeds every path that starts with it. The provenance is the last
    hop's, with every hop's listed under "hops" when there are several."""
    layouts = spec.source_layouts(case.source)
    if options.converted is not None:
        path, provenance, hit = _user_artifact(options.converted, layouts, options.converted_layouts)
        provenance = _with_random_ops(path, provenance)
        return path, provenance, hit, [(path, provenance["input_layouts"], provenance["output_layouts"])]
    if not case.path:  # the target runs the source's own file (an ONNX model on ONNX Runtime)
        path, provenance = source.artifact(model)
        return path, _with_random_ops(path, provenance), False, [(path, *layouts)]
    offered = options.conversion_options(case.variant)
    calibration = options.calibration.for_spec(spec).to_json()
    given: Any = model
    upstream = {"model": source.fingerprint(model)}
    hops, hits, path, files = [], [], None, []
    for name in case.path:
        hop = backends.hop(name)
        precision = case.precision if name == case.lowered_by else "fp32"
        # the feed only where the hop calibrates at this precision, so that --calibration
        # re-converts only the files it changes
        offered.update(precision=precision,
                       calibration=calibration if precision in getattr(hop, "CALIBRATES", ()) else None)
        conversion = {**backends.hop_option_values(name, options), **{option: offered[option] for option in hop.OPTIONS}}
        key = {
            **upstream,
            "spec": {"inputs": [repr(i) for i in spec.inputs], "outputs": [o.name for o in spec.outputs],
                     "layouts": layouts},
            "converter": f"{hop.NAME}@{hop.REVISION}",
            "options": conversion,
            "versions": hop.versions(),
        }
        folder, provenance, hit = cache.get_or_create(
            key, lambda out, hop=hop, given=given, layouts=layouts, conversion=conversion:
            _with_random_ops(out / hop.FILENAME, hop.convert(given, spec, example, out, layouts=layouts, **conversion)))
        provenance = _with_random_ops(folder / hop.FILENAME, provenance)   # an entry made before its scan was kept
        hops.append({**provenance, "cache_hit": hit})
        hits.append(hit)
        given = path = folder / hop.FILENAME
        upstream = {"upstream": folder.name}   # the hop's cache key
        layouts = (provenance.get("input_layouts", layouts[0]), provenance.get("output_layouts", layouts[1]))
        files.append((path, *layouts))
    provenance = {k: v for k, v in hops[-1].items() if k != "cache_hit"}
    if len(hops) > 1:
        provenance["hops"] = hops
    return path, provenance, all(hits), files


def _precision_floor(case: Case, options: RunOptions, cache: ArtifactCache, source, model, spec: ModelSpec,
                     example: list[np.ndarray]) -> tuple[FloorBuild | None, dict[str, Any] | None]:
    """The floor of a case at a reduced precision (harness/precision_floor.py): the
    standard build of the same model at that precision (TFLite's own for a TFLite
    file, else the ONNX one), converted through the cache like any hop and loaded
    in the runtime it runs on as a floor, with what the provenance says of it;
    (None, why) where none is built, (None, None) at fp32.
    A floor that cannot be built leaves the case to its fixed thresholds."""
    if case.precision == "fp32":
        return None, None
    standard = floor_case(case, options.converted)
    if standard is None:
        return None, {"built": False, "reason": why_no_floor(case, options.converted)}
    try:
        path, provenance, hit, files = _artifact(standard, replace(options, converted=None), cache, source, model,
                                                 spec, example)
        if standard.precision != case.precision:   # an emulated precision (bf16): its fp32 build, rounded
            path, provenance, rounded_hit = bf16_emulation.cached(path, provenance, cache)
            hit = hit and rounded_hit
        session = backends.runtime(standard.target).Session(path, standard.device, options, precision="fp32")
        session.bind([i.name for i in spec.inputs], [i.dtype for i in spec.inputs], [o.name for o in spec.outputs])
    except Exception as error:   # the floor judges beside the verdict: it never stops a case
        return None, {"built": False, "reason": f"its standard build ({' -> '.join(standard.path)}) failed: "
                                                f"{summarize_exception(error, 2)}; held to the fixed thresholds alone"}
    source_in, source_out = spec.source_layouts(case.source)
    recipe = floor_recipe(case, options.converted)
    build = FloorBuild(session, case.precision, recipe, provenance.get("input_layouts", source_in),
                       provenance.get("output_layouts", source_out), files)
    described = {key: provenance[key] for key in ("converter", "tool", "quantization", "float16", "calibration",
                                                  "quantization_ops", "io_quantization", "cache_key")
                 if key in provenance}
    return build, {"built": True, "recipe": recipe, "path": list(standard.path),
                   "runs_on": f"{standard.target} {standard.device}",
                   "multiple": FLOOR_MULTIPLE, "cache_hit": hit, **described}


def _floor_verdict(prepared: PreparedCase, ordered: list, reference: list[np.ndarray], converted: list[np.ndarray],
                   comparisons: list[OutputComparison]) -> None:
    """Each output's error held against the floor's on the same inputs (precision_floor.judge)."""
    floor, spec = prepared.floor, prepared.spec
    source_in, source_out = prepared.source_layouts
    start = time.perf_counter()
    try:
        outputs = floor.run([i.name for i in spec.inputs], ordered, source_in)
    except Exception as error:   # the artifact is then judged by its fixed thresholds on these inputs
        for comparison in comparisons:
            comparison.floor = {"unavailable": f"the floor's build raised on these inputs: "
                                               f"{summarize_exception(error, 2)}"}
        return
    for out, comparison, ref, got, floor_got in zip(spec.outputs, comparisons, reference, converted, outputs):
        output_range, tolerance = prepared.output_ranges.get(out.name), prepared.tolerances[out.name]
        floor_got = relaid(floor_got, floor.output_layouts[out.name], source_out[out.name])
        floor_comparison = compare_outputs(out.name, ref, floor_got, tolerance, out.class_axis, out.top_k, output_range)
        # elements the artifact misses where the floor does not: a fault of its own, never the precision's
        misses_of_its_own = (not comparison.passed and floor_comparison.max_abs is not None
                             and comparison.max_abs is not None and bool(np.any(
                                 out_of_bound(ref, got, tolerance, output_range)
                                 & ~out_of_bound(ref, floor_got, tolerance, output_range))))
        judge(comparison, floor_comparison, floor, output_range, misses_of_its_own)
    prepared.timings["floor_s"] = prepared.timings.get("floor_s", 0.0) + time.perf_counter() - start


def _saturation_verdict(prepared: PreparedCase, reference: list[np.ndarray], converted: list[np.ndarray],
                        comparisons: list[OutputComparison]) -> None:
    """Each float output that failed, held against the original clipped to the range it takes on the
    calibration feed (compare.accept_saturation): an input past that range saturates every static int8
    build, each at the clip range its recipe chose. After the floor's verdict, which it never lifts."""
    for out, comparison, ref, got in zip(prepared.spec.outputs, comparisons, reference, converted):
        bounds = prepared.output_bounds.get(out.name)
        if bounds is not None:
            accept_saturation(comparison, ref, got, prepared.tolerances[out.name], bounds, out.class_axis, out.top_k)


def _argmax_verdict(spec: ModelSpec, reference: list[np.ndarray], converted: list[np.ndarray],
                    comparisons: list[OutputComparison]) -> None:
    """At a reduced precision, each integer output that failed, held to compare.accept_argmax_flips against
    each float output (along its class_axis, else its last axis): a label flipped on a near-tie of logits
    that passed is the precision's, not a fault."""
    for label, ref_label, got_label in zip(comparisons, reference, converted):
        for out, scores, ref_scores, got_scores in zip(spec.outputs, comparisons, reference, converted):
            class_axis = -1 if out.class_axis is None else out.class_axis
            if scores is not label and accept_argmax_flips(label, ref_label, got_label, scores, ref_scores,
                                                           got_scores, class_axis):
                break


def _with_random_ops(path: Path, provenance: dict[str, Any]) -> dict[str, Any]:
    """The provenance of the file at `path` with the random operators it holds
    (random_ops.py, [] for none) where it is an ONNX file; as a hop's, it is
    kept in the cache entry as the entry is made, so that a hit reads no graph."""
    if "random_ops" in provenance or backends.artifact_suffixes().get(path.suffix.lower()) != "onnx":
        return provenance
    from google.protobuf.message import DecodeError

    try:
        found = random_ops(path)
    except (OSError, DecodeError):   # a file onnx cannot read or parse: the target's load refuses it next, naming it
        return provenance
    return {**provenance, "random_ops": list(found)}


def _random_ops_found(case: Case, source, model: Any, example: list[np.ndarray], reference: list[np.ndarray] | None,
                      provenance: dict[str, Any], files: Files) -> list[dict[str, Any]]:
    """Where the case's model draws random numbers: an ONNX original and each
    ONNX file on its path whose graph holds random operators, with them; or,
    for another source where no file on its path holds one (none to read, or
    a converted file that lost them), the original itself where a second run
    of the spec's example gives other outputs than the first (`reference`;
    beyond float32 rounding, so that a reduction's order cannot pass for
    randomness). [] where none is found."""
    hops = provenance.get("hops", [provenance])
    found = [{"file": f"{path.name} written by {hop['converter']} (cache entry {hop['cache_key']})"
              if hop.get("cache_key") else str(path), "ops": hop["random_ops"]}
             for (path, _, _), hop in zip(files, hops) if hop.get("random_ops")]
    if case.source == "onnx":   # the original's own file, read by matrix._random_ops
        original = {"file": str(model.path), "ops": list(case.random_ops)}
        return [original, *(f for f in found if f != original)] if case.random_ops else found
    if found or reference is None:
        return found
    again = source.run(model, example, "cpu")
    if all(_same_run(first, second) for first, second in zip(reference, again)):
        return []
    return [{"file": f"the {case.source} original", "ops": [f"{case.source} original: two runs of one input differ"],
             "check": "the original run twice on the spec's example, its outputs compared"}]


def _same_run(first: Any, second: Any) -> bool:
    """Two runs' values of one output agree: equal, or floats within float32 rounding of their magnitude."""
    first, second = np.asarray(first), np.asarray(second)
    if first.shape != second.shape or first.dtype.kind != "f":
        return first.shape == second.shape and np.array_equal(first, second)
    scale = float(np.nanmax(np.abs(first), initial=0.0))
    return bool(np.allclose(first, second, rtol=1e-5, atol=1e-6 * scale, equal_nan=True))


def _user_artifact(path: Path, layouts: tuple[dict, dict], declared: dict[str, str]) -> tuple[Path, dict, bool]:
    require_file(path, "converted file", stage="convert")
    data = path.read_bytes()
    # A user's file keeps the original's layouts unless --converted-layouts says
    # otherwise: the harness never guesses a layout from a shape.
    inputs, outputs = layouts
    unknown = set(declared) - set(inputs) - set(outputs)
    if unknown:
        raise CaseError("convert", f"--converted-layouts names {sorted(unknown)}, which are not inputs or outputs "
                                   f"of the model (inputs {list(inputs)}, outputs {list(outputs)})")
    return path, {"converter": "user", "path": str(path), "sha256": hashlib.sha256(data).hexdigest(),
                  "input_layouts": {k: declared.get(k, v) for k, v in inputs.items()},
                  "output_layouts": {k: declared.get(k, v) for k, v in outputs.items()},
                  "layouts_declared": dict(declared)}, False


def reference_outputs(prepared: PreparedCase, tensors: dict[str, np.ndarray],
                      timing: str = "reference_s") -> tuple[list, list[np.ndarray]]:
    """(inputs as the source takes them, the original's outputs) for one
    example; the time it took is added to `prepared.timings[timing]`."""
    spec, case = prepared.spec, prepared.case
    ordered = _as_source_takes(prepared, tensors)
    start = time.perf_counter()
    try:
        reference = prepared.source.run(prepared.model, ordered, case.reference_device)
    except CaseError:
        raise
    except Exception as error:   # each framework raises its own types (torch: RuntimeError, tf: InvalidArgumentError)
        shapes = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in tensors.items())
        if _out_of_memory(error):
            raise _out_of_memory_error(spec, case.reference_device, shapes, error) from None
        raise CaseError("inputs", f"the original model {spec.name!r} fails on inputs within its spec ({shapes}): "
                                  f"{summarize_exception(error, 3)}\nNarrow the input spec's bounds or value range: "
                                  "--input-spec or the model's registration.") from None
    prepared.timings[timing] = prepared.timings.get(timing, 0.0) + time.perf_counter() - start
    return ordered, reference


def _as_source_takes(prepared: PreparedCase, tensors: dict[str, np.ndarray]) -> list[np.ndarray]:
    """An example's inputs (by the spec's names, in its layouts) in the spec's order, laid out as the source takes them."""
    source_in = prepared.source_layouts[0]
    return [relaid(tensors[i.name], i.layout, source_in[i.name]) for i in prepared.spec.inputs]


def run_example(prepared: PreparedCase, tensors: dict[str, np.ndarray],
                noise_wanted: Callable[[OutputComparison], bool] | None = None,
                elementwise: bool = True, expected: list[np.ndarray] | None = None) -> ExampleOutcome:
    """Feed the same tensors through the original and the converted model, and compare
    (elementwise False: only run both, for a comparison by distribution).

    The float64 twin runs only when its numbers are needed: for the verdict of
    an output out of tolerance that its noise multiple may still pass, or where
    `noise_wanted(comparison)` asks for them (a replay shows them all; a case's
    worst examples get theirs afterwards, from `measure_noise`).

    `expected`: outputs stored with the inputs (a golden set, a user's example with its outputs), in the
    spec's order and the original's layouts, that the converted model is held to in the original's place:
    the original does not run (a golden set judges a target its reference cannot run), and no noise floor is
    measured (the twin measures the original's own float32 error, which says nothing of stored outputs)."""
    spec = prepared.spec
    artifact_in, artifact_out = prepared.artifact_layouts
    source_in, source_out = prepared.source_layouts
    if expected is None:
        ordered, reference = reference_outputs(prepared, tensors)
    else:
        ordered, reference = _as_source_takes(prepared, tensors), list(expected)
    laid_out = [relaid(x, source_in[i.name], artifact_in[i.name]) for i, x in zip(spec.inputs, ordered)]
    start = time.perf_counter()
    try:
        converted = prepared.session.run(laid_out)
    except Exception as error:   # each runtime's binding raises its own types: this example's error, not the run's
        shapes = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in tensors.items())
        if _out_of_memory(error):
            return ExampleOutcome([], {}, error=f"the converted model ran out of memory at input shapes {shapes}: "
                                                f"{summarize_exception(error, 2)}", error_kind="out of memory")
        summary = summarize_exception(error, 4)
        return ExampleOutcome([], {}, error=f"the converted model raised on inputs within the spec ({shapes}): "
                                            f"{summary}", error_kind=summary.splitlines()[0])
    prepared.timings["target_s"] = prepared.timings.get("target_s", 0.0) + time.perf_counter() - start
    start = time.perf_counter()
    # Compared in the original's own layouts.
    converted = [relaid(y, artifact_out[o.name], source_out[o.name]) for o, y in zip(spec.outputs, converted)]
    if not elementwise:
        return ExampleOutcome([], {}, reference=reference, converted=converted)
    comparisons = [compare_outputs(o.name, r, g, prepared.tolerances[o.name], o.class_axis, o.top_k,
                                   prepared.output_ranges.get(o.name))
                   for o, r, g in zip(spec.outputs, reference, converted)]
    prepared.timings["compare_s"] = prepared.timings.get("compare_s", 0.0) + time.perf_counter() - start
    noise: dict[str, dict[str, float | None]] = {}
    if expected is None and prepared.model64 is not None and (
            any(_noise_may_pass(c) for c in comparisons)
            or (noise_wanted is not None and any(map(noise_wanted, comparisons)))):
        start = time.perf_counter()
        noise = _noise_floor(prepared, ordered, reference, comparisons)
        prepared.timings["noise_s"] = prepared.timings.get("noise_s", 0.0) + time.perf_counter() - start
        for comparison in comparisons:
            _noise_verdict(comparison, noise.get(comparison.name))
    if prepared.floor is not None:   # after the noise verdict: float32's noise never excuses an error past the floor
        _floor_verdict(prepared, ordered, reference, converted, comparisons)
    if prepared.case.precision == "int8":   # static quantization's alone: a clip range calibrated into the file
        _saturation_verdict(prepared, reference, converted, comparisons)
    if prepared.case.precision != "fp32":   # after every float output's verdict, which the rule rests on
        _argmax_verdict(prepared.spec, reference, converted, comparisons)
    return ExampleOutcome(comparisons, noise, reference=reference)


def distribution_outcome(prepared: PreparedCase, tensors: dict[str, np.ndarray], draws: int
                         ) -> tuple[ExampleOutcome, int]:
    """A case holding random operators (Case.random_ops) on one input: run
    `draws` times through both sides, each output compared by its distribution
    (compare.compare_distributions), never elementwise. Returns the outcome and
    the runs made: where the converted model raised, that run's outcome."""
    references, converted = [], []
    for drawn in range(1, draws + 1):
        outcome = run_example(prepared, tensors, elementwise=False)
        if outcome.error:
            return outcome, drawn
        references.append(outcome.reference)
        converted.append(outcome.converted)
    comparisons = [compare_distributions(out.name, [r[index] for r in references], [c[index] for c in converted])
                   for index, out in enumerate(prepared.spec.outputs)]
    return ExampleOutcome(comparisons, {}, reference=references[-1], converted=converted[-1]), draws


def measure_noise(prepared: PreparedCase, tensors: dict[str, np.ndarray],
                  comparisons: list[OutputComparison]) -> dict[str, dict[str, float | None]]:
    """The noise floor of one example whose comparisons (one per output, in the
    spec's order) are already made: the original again, and its float64 twin."""
    if prepared.model64 is None:
        return {}
    start = time.perf_counter()
    ordered, reference = reference_outputs(prepared, tensors, timing="noise_s")
    noise = _noise_floor(prepared, ordered, reference, comparisons)
    prepared.timings["noise_s"] = prepared.timings.get("noise_s", 0.0) + time.perf_counter() - start
    return noise


def _noise_may_pass(comparison: OutputComparison) -> bool:
    """Out of tolerance, but of a kind the model's own noise may excuse: finite
    values of the right shape and dtype, with a noise multiple set, out of the
    elementwise bound only (float32 noise says nothing of a cosine, SNR or
    top-k threshold missed: those are set for errors far beyond it)."""
    return (not comparison.passed and comparison.max_abs is not None and comparison.nonfinite_mismatches == 0
            and not comparison.failed_thresholds and comparison.tolerance.get("noise_multiple", 0) > 0)


def _noise_verdict(comparison: OutputComparison, noise: dict[str, float | None] | None) -> None:
    """Pass an output out of tolerance whose error stays within its noise
    multiple of the model's own float32 error on the same inputs."""
    if not noise or not _noise_may_pass(comparison) or noise.get("error_over_noise") is None:
        return
    multiple = comparison.tolerance["noise_multiple"]
    if noise["error_over_noise"] <= multiple:
        comparison.passed = True
        comparison.accepted_by = "noise"
        comparison.message = (f"{comparison.name}: {comparison.error_ratio:.3g}x its tolerance, but its error is "
                              f"{noise['error_over_noise']:.3g}x the original's own float32 error against float64 "
                              f"(allowed {multiple:g}x): as close as float32 arithmetic gets")
    else:
        comparison.message += (f"; {noise['error_over_noise']:.3g}x the original's own float32 error "
                               f"(allowed {multiple:g}x)")


def _out_of_memory_error(spec: ModelSpec, device: str, shapes: str, error: BaseException) -> CaseError:
    return CaseError("inputs", f"the original model {spec.name!r} ran out of memory on {device} at input shapes "
                               f"{shapes}: narrow the input spec's bounds (the largest shapes are among the first "
                               f"examples) or run on a larger machine. ({summarize_exception(error, 1)})")


def _out_of_memory(error: BaseException) -> bool:
    text = f"{type(error).__name__} {error}".lower()
    return isinstance(error, MemoryError) or "out of memory" in text or "outofmemory" in text \
        or "failed to allocate" in text

def _noise_floor(prepared: PreparedCase, inputs, reference, comparisons) -> dict[str, dict[str, float | None]]:
    """The source's own float32 error against its float64 twin on the same inputs,
    and each output's conversion error as a multiple of it; where the twin
    raises, each output's {"unavailable": why} (no noise verdict then)."""
    if prepared.model64 is None:
        return {}
    try:
        exact = prepared.source.run(prepared.model64, inputs, prepared.case.reference_device, float64=True)
    except Exception as error:   # the twin's framework raises its own types: judged by the tolerance alone
        why = f"the original's float64 twin raised on these inputs: {summarize_exception(error, 2)}"
        return {comparison.name: {"unavailable": why} for comparison in comparisons}
    noise = {}
    for comparison, ref32, ref64 in zip(comparisons, reference, exact):
        if ref32.dtype.kind != "f" or ref32.shape != ref64.shape or comparison.max_abs is None:
            continue
        finite = np.isfinite(ref32) & np.isfinite(ref64)
        if not finite.any():
            continue
        err = float(np.abs(ref32[finite].astype(np.float64) - ref64[finite]).max())
        scale = float(np.abs(ref64[finite]).max())
        noise[comparison.name] = {
            "noise_max_abs": err,
            "noise_normalized": err / scale if scale > 0 else None,
            "error_over_noise": comparison.max_abs / err if err > 0 else (0.0 if comparison.max_abs == 0 else None),
        }
    return noise
