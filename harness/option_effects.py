"""Option values that change nothing in a run: each is an error or a warning, never silence.

A value is looked at only where it differs from the option's default (a
default typed out changes nothing by definition, and says nothing wrong).
Errors are values that would leave the run testing something other than the
user meant (layouts declared for a converted file that is not given, input
shapes for models that take their own, a tolerance for an output no model
has); warnings are values whose absence of effect leaves the results true
(an exporter with no torch export to make). Knows nothing of pytest: the
plugin raises the errors as a usage error and emits the warnings as
ParityWarning.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from typing import Any, Collection, Sequence

from harness import backends
from harness.case import Case
from harness.matrix import reachable_precisions
from harness.options import DEVICES, TOLERANCE_FIELDS, RunOptions
from harness.precision_floor import floor_case
from harness.specs import InputSpec, ModelSpec

# RunOptions field -> the command-line option that sets it (tolerance
# overrides: one option per tolerance field, named by `_tolerance_flag`).
FLAGS = {
    "sources": "--source", "targets": "--target", "devices": "--device", "models": "--model", "tiers": "--tier",
    "reference_device": "--reference-device", "precisions": "--precision",
    "converted": "--converted", "converted_layouts": "--converted-layouts", "input_specs": "--input-spec",
    "output_names": "--output-names",
"strict_cuda": "--strict-cuda", "trust_model_code": "--trust-model-code",
    "use_cache": "--no-parity-cache", "cache_dir": "--parity-cache-dir", "cache_seed": "--parity-cache-seed",
    "reports_dir": "--parity-reports",
    "examples": "--parity-examples", "corners": "--no-parity-corners", "strict": "--parity-strict",
    "max_tensor_mb": "--parity-max-tensor-mb", "isolate": "--parity-isolate", "timeout_s": "--parity-timeout",
    "path": "--path", "precisions": "--precision", "reference_device": "--reference-device",
    "calibration": "--calibration",
    "parity_labels": "--parity-labels", "max_accuracy_drop": "--max-accuracy-drop",
    "shard": "--parity-shard", "durations": "--parity-durations",
}


@dataclass
class OptionFindings:
    errors: list[str] = field(default_factory=list)     # stop the run before any case
    warnings: list[str] = field(default_factory=list)   # the run goes on; each is said once


def changed_flags(options: RunOptions) -> list[str]:
    """The options given a value other than their default, by flag."""
    defaults = RunOptions()
    changed = []
    for option in fields(RunOptions):
        if getattr(options, option.name) == getattr(defaults, option.name):
            continue
        if option.name == "tolerance_overrides":
            changed += [_tolerance_flag(name) for name in TOLERANCE_FIELDS if options.tolerance_overrides.get(name)]
        elif option.name == "hop_options":
            changed += list(_changed_hop_options(options))
        elif option.name == "runtime_options":
            changed += [_runtime_flag(runtime, name) for runtime, given in options.runtime_options.items()
                        for name in given]
        else:
            changed.append(FLAGS.get(option.name, option.name))
    return changed


def options_without_parity(options: RunOptions, gate_flags: Collection[str] = ()) -> list[str]:
    """Where pytest collects no parity case at all, every parity option given changes nothing."""
    given = changed_flags(options) + list(gate_flags)
    if not given:
        return []
    return [f"{', '.join(given)} given, but no parity case is collected: they apply to the parity cases only, "
            "which run with --parity (the zoo's core tier) or any of --model, --source, --target, --device, "
            "--tier, --converted"]


def option_findings(options: RunOptions, cases: Sequence[Case], gate_flags: Collection[str] = ()) -> OptionFindings:
    """What the options of a run change nothing in, given the cases the matrix
    built. gate_flags: the regression gate's options given (they live outside
    RunOptions): --parity-baseline, --parity-save-baseline,
    --parity-save-baseline-force, --parity-compare-fail, --parity-allow-lost-coverage.

    A finding that depends on every model's spec is made only where every
    model asked for could be loaded: one that could not is an error case of
    its own already, and may be the one an option was meant for."""
    found = OptionFindings()
    defaults = RunOptions()
    loaded = [c for c in cases if c.spec is not None and not c.error]
    every_model_known = not any(c.error and c.spec is None and c.model_ref for c in cases)
    running = [c for c in loaded if not c.skip]

    if options.models and options.tiers != defaults.tiers:
        found.warnings.append(f"--tier {','.join(options.tiers)}: --model names the models, so the tier selects "
                              "nothing (it picks the zoo's models when no --model is given)")
    if options.converted_layouts and options.converted is None:
        found.errors.append(f"--converted-layouts {_layouts_text(options.converted_layouts)}: declares the layouts of "
                            "a --converted file, but none is given; add --converted PATH, or drop "
                            "--converted-layouts (the harness's own conversions record their layouts)")
    if every_model_known:
        found.warnings += _unused_matrix_values(options, loaded)
        found.errors += (_file_only_options(options, loaded) + _unknown_tolerance_outputs(options, loaded)
                         + _top_k_without_class_axis(options, loaded))
    else:
        found.warnings += [f"{message} (a model of this run could not be loaded: it may be the one meant)"
                           for message in _unknown_tolerance_outputs(options, loaded)
                           + _top_k_without_class_axis(options, loaded)]
    # with --converted, the harness converts only the floors of its reduced precisions (precision_floor.py)
    converting = loaded if options.converted is None else [
        f for f in (floor_case(case, options.converted) for case in loaded) if f is not None]
    for flag, (value, option, hops) in _changed_hop_options(options).items():
        if not any(hop in c.path for c in converting for hop in hops):
            unused = option.metadata.get("unused", f"converts with {' or '.join(hops)}")
            found.warnings.append(f"{flag} {value}: no case of this run {unused}{_converted_note(options)}")
    if options.precisions != defaults.precisions:
        found.warnings += _undeclared_precisions(options)
    if options.calibration.text and not any(_calibrates(c) for c in converting):
        found.warnings.append(f"--calibration {options.calibration.text}: no case of this run quantizes a model with a "
                              f"calibration feed (--precision int8 makes such cases){_converted_note(options)}")
    for runtime, given in options.runtime_options.items():
        if given and not any(c.target == runtime for c in loaded):
            flags = " ".join(f"{_runtime_flag(runtime, name)} {value}" for name, value in given.items())
            found.warnings.append(f"{flags}: no case of this run runs on {runtime}")
    if options.strict_cuda and not any(map(on_cuda, running)):
        skipped = next((c.skip for c in loaded if on_cuda(c) and c.skip), None)
        found.warnings.append("--strict-cuda: no case of this run runs on CUDA" +
                              (f" (the CUDA cases skip: {skipped})" if skipped else ""))
    if options.trust_model_code and every_model_known and loaded and all(c.spec.origin == "zoo" for c in loaded):
        found.warnings.append("--trust-model-code: every model of this run is built by the zoo's code; no model "
                              "file is loaded")
    if options.converted is not None and not converting:
        cache_flags = [flag for flag, changed in (("--no-parity-cache", not options.use_cache),
                                                  ("--parity-cache-dir", options.cache_dir != defaults.cache_dir),
                                                  ("--parity-cache-seed", options.cache_seed is not None))
                       if changed]
        if cache_flags:
            found.warnings.append(f"{', '.join(cache_flags)}: with --converted nothing is converted, so the cache "
                                  "of converted files is not used")
    if options.cache_seed is not None and not options.use_cache and converting:
        found.warnings.append("--parity-cache-seed: --no-parity-cache converts every file again, so the seed is "
                              "not read")
    if options.timeout_s != defaults.timeout_s and options.isolate == "never":
        found.warnings.append(f"--parity-timeout {options.timeout_s:g}: limits cases in worker processes, and "
                              "--parity-isolate=never runs none there")
    if options.durations is not None and options.shard is None:
        found.warnings.append(f"--parity-durations {options.durations}: balances the shards of --parity-shard, "
                              "but no --parity-shard is given: the run is not split")
    if "--parity-save-baseline-force" in gate_flags and "--parity-save-baseline" not in gate_flags:
        found.warnings.append("--parity-save-baseline-force: lets --parity-save-baseline overwrite, but no "
                              "--parity-save-baseline is given")
    for flag in ("--parity-compare-fail", "--parity-allow-lost-coverage"):
        if flag in gate_flags and "--parity-baseline" not in gate_flags:
            found.warnings.append(f"{flag}: sets how the regression gate judges, but no --parity-baseline is given "
                                  "to hold the run against")
    return found


def _unused_matrix_values(options: RunOptions, loaded: list[Case]) -> list[str]:
    """--source, --target, --device values that no case has; where none has
    any, one warning for them all (no model selected leads anywhere)."""
    defaults = RunOptions()
    # Cases at a point of the matrix (a model without a builder for the sources asked for is a skip without one).
    placed = [c for c in loaded if c.target]
    typed = [(kind, values) for kind, values, default in (("source", options.sources, defaults.sources),
                                                          ("target", options.targets, defaults.targets),
                                                          ("device", options.devices, defaults.devices))
             if values != default]
    if not placed:
        given = " ".join(f"--{kind} {','.join(values)}" for kind, values in typed) or "the default matrix"
        models = ", ".join(options.models) or f"the zoo's {','.join(options.tiers)} tier"
        return [f"{given}: no model selected ({models}) has a builder for these sources with a conversion path to "
                "these targets: the run has no case"]
    return [f"--{kind} {value}: no case of this run has it (no model asked for, or no conversion path from the "
            f"sources asked for, leads to it)"
            for kind, values in typed for value in values
            if _known(kind, value) and not any(getattr(c, kind) == value for c in placed)]


def _undeclared_precisions(options: RunOptions) -> list[str]:
    """--precision values that no path to a target of the run reaches: no case is made for them."""
    targets = [t for t in options.targets if _known("target", t)]
    sources = [s for s in options.sources or backends.names("source") if _known("source", s)]
    if options.converted is not None:   # a user's file holds its own precision: every one is reached
        return []
    reached = {target: reachable_precisions(sources, target) for target in targets}
    listed = "; ".join(f"{target}: {', '.join(precisions)}" for target, precisions in reached.items())
    return [f"--precision {precision}: no path to a target of this run reaches it, so no case is made for it "
            f"(the targets' precisions: {listed or 'no known target'})"
            for precision in options.precisions if not any(precision in p for p in reached.values())]


def _file_only_options(options: RunOptions, loaded: list[Case]) -> list[str]:
    """--input-spec and --output-names describe model files that carry no
    spec, and narrow what an ONNX file declares; a run without such a file
    would test the models' own specs instead."""
    models = sorted({c.spec.name for c in loaded})
    refusals = []
    for flag, given, used, onnx_use in (
            ("--input-spec", options.input_specs, any(_takes_input_specs(c.spec, options.input_specs) for c in loaded),
             "a dim or a value range, by input name"),
            ("--output-names", options.output_names,
             any(tuple(o.name for o in c.spec.outputs) == options.output_names for c in loaded),
             "which of their outputs to compare")):
        if given and not used:
            refusals.append(f"{flag}: applies to model files that carry no spec (model.pt, model.keras, graph.pb, a "
                            f"SavedModel folder, -symbol.json) and to .onnx files ({onnx_use}), and no model of "
                            f"this run is one (the specs of "
                            f"{', '.join(models) or 'none'} are used as they are). Drop {flag}, or give such a file "
                            "to --model")
    return refusals


def _takes_input_specs(spec: ModelSpec, given: Sequence[InputSpec]) -> bool:
    """Every --input-spec is one of `spec`'s inputs: a file that carries no
    spec takes them whole; an ONNX file merges them into what it declares, and
    fills a value range one leaves out with the range the graph implies."""
    def key(i: InputSpec) -> tuple:
        return i.name, i.shape, tuple(sorted(i.dims.items())), i.dtype, i.layout, i.kind

    held = {key(i) for i in spec.inputs}
    return all(key(g) in held for g in given)


def _unknown_tolerance_outputs(options: RunOptions, loaded: list[Case]) -> list[str]:
    """Tolerance overrides naming an output that no model of the run has; a
    name that fits some models holds for those (the others have no such output)."""
    outputs = {c.spec.name: [o.name for o in c.spec.outputs] for c in loaded}
    known = {name for names in outputs.values() for name in names}
    messages = []
    for field_name, per_output in options.tolerance_overrides.items():
        unknown = [name for name in per_output if name and name not in known]
        if unknown:
            listed = "; ".join(f"{model}: {', '.join(names)}" for model, names in sorted(outputs.items()))
            messages.append(f"{_tolerance_flag(field_name)} {', '.join(f'{n}:{per_output[n]:g}' for n in unknown)}: "
                            f"no model of this run has an output named {', '.join(map(repr, unknown))}; the outputs "
                            f"are {listed or 'none'}")
    return messages


def _top_k_without_class_axis(options: RunOptions, loaded: list[Case]) -> list[str]:
    """Top-k thresholds (--min-top1, --min-topk-overlap) where no output they
    name declares a class axis: they would be measured on nothing. Outputs
    no model has are _unknown_tolerance_outputs' to report."""
    axes: dict[str, set[int | None]] = {}
    for case in loaded:
        for out in case.spec.outputs:
            axes.setdefault(out.name, set()).add(out.class_axis)
    messages = []
    for field_name in ("min_top1", "min_topk_overlap"):
        per_output = options.tolerance_overrides.get(field_name) or {}
        for name, value in per_output.items():
            classified = [o for o, found in axes.items() if (o == name or not name) and found - {None}]
            if (name in axes or not name) and not classified:
                which = f"output {name!r} declares no" if name else "no output of this run declares a"
                messages.append(f"{_tolerance_flag(field_name)} {f'{name}:' if name else ''}{value:g}: {which} "
                                "class axis, so there is nothing to measure it on; declare one in the model's "
                                "registration (OutputSpec(name, class_axis=-1) for logits [N, classes])")
    return messages


def on_cuda(case: Case) -> bool:
    """Whether either side of the case computes on CUDA (--strict-cuda sets both sides' arithmetic)."""
    return "cuda" in (case.device, case.reference_device)


def _changed_hop_options(options: RunOptions) -> dict[str, tuple[Any, Field, list[str]]]:
    """flag -> (value, field, the hops that declare it) for each hop option given another
    value than its default (a flag several hops share, --opset, is one)."""
    changed: dict[str, tuple[Any, Field, list[str]]] = {}
    for name, option in backends.declared_options("hop"):
        value = options.hop_options.get(name, {}).get(option.name, option.default)
        if value != option.default:
            changed.setdefault(backends.option_flag(name, option), (value, option, []))[2].append(name)
    return changed


def _calibrates(case: Case) -> bool:
    """Whether the case's lowering hop calibrates on a feed: static int8 quantization."""
    return (case.precision == "int8" and case.lowered_by in case.path
            and "calibration" in backends.hop(case.lowered_by).OPTIONS)


def _runtime_flag(runtime: str, name: str) -> str:
    option = next(f for f in backends.option_fields(runtime) if f.name == name)
    return backends.option_flag(runtime, option)


def _known(kind: str, value: str) -> bool:
    """Unknown names are error cases of their own already."""
    return value in {"source": backends.names("source"), "target": backends.names("runtime"), "device": DEVICES}[kind]


def _converted_note(options: RunOptions) -> str:
    return " (with --converted the harness converts nothing)" if options.converted is not None else ""


def _layouts_text(layouts: dict[str, str]) -> str:
    return ",".join(f"{name}:{layout}" for name, layout in layouts.items())


def _tolerance_flag(field_name: str) -> str:
    return f"--{field_name.replace('_', '-')}"
