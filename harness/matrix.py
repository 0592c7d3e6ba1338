"""Turns run options and the model zoo into the cases of a parity run.

A case the harness cannot run here becomes a skip whose reason names what is
missing; a case asked for wrongly (unknown name, missing file) becomes an
error case whose message says what to do, so the other cases still run.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from dataclasses import replace
from functools import lru_cache, partial
from pathlib import Path
from typing import Iterable

from harness import backends, paths
from harness.case import CONVERTED, Case
from harness.errors import CaseError, OptionError
from harness.model_file import not_a_file
from harness.options import DEVICES, PRECISIONS, RunOptions
from harness.random_ops import random_ops
from harness.registry import broken_zoos, get_model, load_model_file, zoo_models
from harness.sources import onnx as onnx_source
from harness.specs import FLOAT_DTYPES, INT_DTYPES, ModelSpec, SpecError


def _safe_name(text: str) -> str:
    """A name usable in a pytest id and with -k: letters, digits, '_' and '.'."""
    return re.sub(r"[^\w.]+", "_", text).strip("_") or "model"


def model_name(ref: str) -> str:
    """The name a model reference goes by in case ids: a zoo name as it is, a
    file by its stem, a folder by its own name (never the path to either),
    ARCH=PATH as ARCH.NAME."""
    arch, sep, path = ref.partition("=")
    if sep:
        return _safe_name(f"{arch}.{_own_name(path)}")
    return _safe_name(_own_name(ref))


def _own_name(path: str) -> str:
    """A file's stem; a folder's whole name, since a dot in it marks no format
    (`resnet.v1/` and `resnet.v2/` are two SavedModels); "." by the folder it is."""
    absolute = Path(os.path.abspath(path))
    return absolute.name if absolute.is_dir() else absolute.stem


def resolve_models(options: RunOptions) -> list[tuple[str, ModelSpec | None, str | None]]:
    """(model_ref, spec, error) for each model asked for; the zoo's models of
    the selected tiers when none is (and an error for each zoo that failed to import)."""
    refs = options.models or tuple(name for name, spec in zoo_models().items() if spec.tier in options.tiers)
    resolved: list[tuple[str, ModelSpec | None, str | None]] = []
    if not options.models:  # a zoo that fails to import is an error case of its own; the other zoos' models run
        resolved += [(f"zoo:{name}", None, why) for name, why in broken_zoos().items()]
    for ref in refs:
        try:
            resolved.extend((ref, spec, None) for spec in _resolve(ref, options))
        except OptionError:
            raise   # an --input-spec for no input of a model file: the run's usage error, not one model's
        except (SpecError, OSError) as error:
            resolved.append((ref, None, str(error)))
        except Exception as error:  # a user's model file that raises while registering
            resolved.append((ref, None, f"{ref}: {type(error).__name__}: {error}"))
    return resolved


def _model_file_suffixes() -> tuple[str, ...]:
    """The names model files end with: every source's FILE_SUFFIXES."""
    return tuple(suffix for _, suffixes in backends.declared("source", "FILE_SUFFIXES") for suffix in suffixes)


def _file_source(path: Path) -> str | None:
    """Which source reads a model file or folder: the first, in registry order, whose
    `claims_file` claims it (by its content or its kind: a folder), else the first whose
    FILE_SUFFIXES end its name, else, for a file, the first that READS_ANY_FILE."""
    for name, claims_file in backends.declared("source", "claims_file"):
        if claims_file(path):
            return name
    for name, suffixes in backends.declared("source", "FILE_SUFFIXES"):
        if path.name.endswith(tuple(suffixes)):
            return name
    return next((name for name, _ in backends.declared("source", "READS_ANY_FILE")), None) if path.is_file() else None


def _exists(path: Path) -> bool:
    return path.exists() or Path(f"{path}.index").is_file()


def _loader(source: str, path: Path, spec_inputs, spec_outputs, architecture, options: RunOptions):
    """A zero-argument builder that loads `path` with the source's `load_file`, given the
    spec's input and output names where it takes them (a graph file that names its tensors otherwise)."""
    load_file = backends.source(source).load_file
    names = {"input_names": [i.name for i in spec_inputs], "output_names": list(spec_outputs)}
    taken = inspect.signature(load_file).parameters
    return partial(load_file, path, architecture, options.trust_model_code,
                   **{name: value for name, value in names.items() if name in taken})


def _resolve(ref: str, options: RunOptions) -> list[ModelSpec]:
    if ref.endswith(".py"):
        if not Path(ref).is_file():
            raise SpecError(f"model file {ref} {not_a_file(Path(ref))}")
        return load_model_file(Path(ref))
    arch_name, sep, path_text = ref.partition("=")
    if sep:
        arch, path = get_model(arch_name), Path(path_text)
        if not _exists(path):
            raise SpecError(f"model file {path} (for architecture {arch_name!r}) {not_a_file(path)}")
        source = _file_source(path) or "torch"
        # A TensorFlow graph of a zoo architecture lays its tensors out as the Keras model does.
        builder_of = "keras" if source == "tensorflow" else source
        outputs = [o.name for o in arch.outputs]
        loader = _loader(source, path, arch.inputs, outputs, arch.builders.get(builder_of), options)
        layouts = {source: arch.layouts[builder_of]} if builder_of in arch.layouts else {}
        return [replace(arch, name=model_name(ref), builders={source: loader}, origin=str(path), layouts=layouts)]
    path = Path(ref)
    if ref.endswith(_model_file_suffixes()) \
            or _exists(path) \
            or path.is_symlink():
        if not _exists(path):
            raise SpecError(f"model file {ref} {not_a_file(path)}")
        source = _file_source(path)
        if source is None:
            raise SpecError(f"{ref}: not a model file or folder the harness knows (a torch .pt/.pth, a Keras "
                            ".keras/.h5, a SavedModel folder, a frozen .pb, an MXNet -symbol.json/.params pair, an .onnx "
                            "file or a folder in ONNX's test-data layout)")
        if source == "onnx":  # the file declares its inputs; --input-spec bounds the dims it lets vary
            inputs, outputs = onnx_source.spec_from_file(path, options.input_specs, options.output_names)
            return [ModelSpec(name=model_name(ref), inputs=inputs, outputs=outputs, origin=ref,
                              builders={source: _loader(source, path, inputs, outputs, None, options)},
                              declared_by_file=True)]
        if not options.input_specs:
            raise SpecError(f"model file {ref} carries no input shapes: give them with --input-spec "
                            "(e.g. --input-spec 'x:float32[N=1..4,3,H=16..64,W=20..64]:NCHW'), "
                            "or name a zoo architecture with --model ARCH=PATH")
        if source == "tensorflow" and path.suffix == ".pb" and not options.output_names:
            raise SpecError(f"frozen graph {ref}: give its output tensors with --output-names (op names, e.g. Identity)")
        if source == "tensorflow" and path.is_dir() and not options.output_names:
            outputs = _serving_outputs(path)
        else:
            outputs = options.output_names or ("output",)
        loader = _loader(source, path, options.input_specs, outputs, None, options)
        return [ModelSpec(name=model_name(ref), inputs=options.input_specs, outputs=outputs,
                          builders={source: loader}, origin=ref)]
    return [get_model(ref)]


def _serving_outputs(folder: Path) -> tuple[str, ...]:
    """A SavedModel's outputs where --output-names names none: its serving signature's own."""
    from harness.sources import tensorflow as tf_source

    try:
        return tf_source.signature_outputs(folder)
    except CaseError as error:
        raise SpecError(error.message) from None


def build_cases(options: RunOptions) -> list[Case]:
    cases: list[Case] = []
    known_sources, known_targets = backends.names("source"), backends.names("runtime")
    for kind, values, known in (("source", options.sources, known_sources),
                                ("target", options.targets, known_targets),
                                ("device", options.devices, DEVICES)):
        for value in values:
            if value not in known:
                why = backends.broken(value) or f"unknown {kind} {value!r}: choose from {', '.join(known)} (--{kind}=a,b)"
                cases.append(Case(f"unknown-{kind}", value, "", "", "", error=why))
    sources = [s for s in options.sources or known_sources if s in known_sources]
    targets = [t for t in options.targets if t in known_targets]
    devices = [d for d in options.devices if d in DEVICES]

    converted_format = None
    if options.converted is not None:
        converted_format = backends.artifact_suffixes().get(options.converted.suffix.lower())
        problem = None
        if len(options.models) != 1:
            problem = "--converted pairs one original with one converted file: give exactly one --model"
        elif converted_format is None:
            problem = (f"--converted {options.converted}: unknown artifact type {options.converted.suffix!r}; "
                       f"known: {', '.join(backends.artifact_suffixes())}")
        if problem:
            return cases + [Case("converted", "", "", "", str(options.converted), error=problem)]

    path_problem = _unknown_path(options.path, sources, targets, options.precisions)
    if path_problem:
        return cases + [Case("path", "", "", "", "", error=path_problem)]

    resolved = resolve_models(options)
    for (ref, spec, error), name in zip(resolved, _model_names(resolved)):
        if error is not None:
            cases += _type_skips(name, ref, sources, targets, devices) or [Case(name, "", "", "", ref, error=error)]
            continue
        if name != spec.name:
            spec = replace(spec, name=name)
        if options.converted is not None and not options.sources and len(spec.builders) > 1:
            cases.append(Case(spec.name, "", "", "", ref, error=(
                f"model {spec.name!r} exists in {', '.join(spec.builders)}: say which one {options.converted} "
                "was converted from with --source")))
            continue
        model_cases = []
        for source in sources:
            if source not in spec.builders:
                continue  # the model does not exist in that framework: no case, not a skip
            for target in targets:
                for precision in options.precisions:
                    for variant, path, label, lowered_by in _variants(spec, source, target, converted_format,
                                                                      options.path, precision):
                        model_cases += [replace(_case(spec, ref, source, target, device, variant, converted_format,
                                                      precision, options.reference_device or device, lowered_by),
                                                path=path, path_label=label)
                                        for device in devices]
        if not model_cases and not options.models:
            continue  # a zoo model of the tier that is not in the sources asked for: not a case
        if not model_cases:
            reason = _no_case_reason(spec, sources, targets, options.precisions)
            model_cases = [Case(spec.name, source, "", "", ref, spec=spec, skip=reason) for source in sources[:1]]
        cases += model_cases
    return cases


def reachable_precisions(sources: Iterable[str], target: str) -> tuple[str, ...]:
    """The precisions of options.PRECISIONS that some path from `sources` to `target` reaches."""
    return tuple(p for p in PRECISIONS if any(paths.precision_paths(s, target, p) for s in sources))


def _no_case_reason(spec: ModelSpec, sources: list[str], targets: list[str], precisions: tuple[str, ...]) -> str:
    """Why a model asked for by name has no case."""
    reached = {target: reachable_precisions([s for s in sources if s in spec.builders], target) for target in targets}
    if targets and not any(set(precisions) & set(p) for p in reached.values()):
        listed = "; ".join(f"{target}: {', '.join(p) or 'none'}" for target, p in reached.items())
        return (f"no path from {', '.join(sources)} to a target asked for reaches {', '.join(precisions)} "
                f"({listed}): no case of model {spec.name!r} is made")
    return (f"model {spec.name!r} has no builder for {', '.join(sources)} (it has: {', '.join(spec.builders)}), "
            f"or no path from it to {', '.join(targets)}")


def _unknown_path(wanted: str, sources: list[str], targets: list[str], precisions: tuple[str, ...]) -> str | None:
    """Why `--path` names no path this run could take, listing those it could; or None."""
    if wanted in ("shortest", "all"):
        return None
    available = tuple(p for s in sources for t in targets for precision in precisions
                      for p, _ in paths.precision_paths(s, t, precision))
    if paths.choose(available, wanted):   # the one reading of the formats --path names
        return None
    offered = {paths.written(p) for p in available}
    listed = "; ".join(",".join(c) or "(none: the target runs the source's own file)" for c in sorted(offered))
    return (f"--path {wanted}: no conversion path from {', '.join(sources)} to {', '.join(targets)} writes "
            f"{wanted}; the paths there are: {listed or 'none'} (or shortest, all)")


def _model_names(resolved: list[tuple[str, ModelSpec | None, str | None]]) -> list[str]:
    """The name each resolved model goes by in case ids: its spec's, or its
    file's (`model_name`). Where models of different references would share
    one, each named after a path takes as many of its parent folders' names
    as tell it apart from the others (`a.model` and `b.model` for a/model.onnx
    and b/model.onnx); zoo models and the names a model file registers stay as
    they are. What that cannot separate (one file by two paths) is `_unique_name`'s."""
    names = [spec.name if spec else model_name(ref) for ref, spec, _ in resolved]
    refs_by_name: dict[str, dict[str, list[str] | None]] = {}
    for (ref, spec, _), name in zip(resolved, names):
        named_by_path = spec is None or (spec.origin != "zoo" and not ref.endswith(".py"))
        refs_by_name.setdefault(name, {})[ref] = _parent_names(ref) if named_by_path else None
    for index, ((ref, _, _), name) in enumerate(zip(resolved, names)):
        rivals = refs_by_name[name]
        mine = rivals[ref]
        if len(rivals) < 2 or mine is None:
            continue
        others = [parents for other, parents in rivals.items() if other != ref and parents is not None]
        depth = next((k for k in range(1, len(mine) + 1) if all(p[:k] != mine[:k] for p in others)), None)
        if depth is not None:
            names[index] = _safe_name(".".join([*reversed(mine[:depth]), name]))
    taken: dict[str, str] = {}  # model name -> the reference it stands for
    return [_unique_name(name, ref, taken) for (ref, _, _), name in zip(resolved, names)]


def _parent_names(ref: str) -> list[str]:
    """The names of the folders above the file or folder `ref` names, nearest first."""
    path = ref.partition("=")[2] or ref
    return list(reversed(Path(os.path.abspath(path)).parent.parts[1:]))


def _unique_name(name: str, ref: str, taken: dict[str, str]) -> str:
    """`name`, or `name_2`, `name_3`, ... when another reference (one file by
    two paths) already goes by it: case ids must not collide."""
    candidate, count = name, 1
    while taken.setdefault(candidate, ref) != ref:
        count += 1
        candidate = f"{name}_{count}"
    return candidate


def _variants(spec: ModelSpec, source: str, target: str, converted_format: str | None, wanted_path: str,
              precision: str) -> list[tuple[str | None, tuple[str, ...], str | None, str]]:
    """(layout variant, path, path label, lowering step) of each case of a
    (model, source, target, precision): one per path the run takes (`--path`;
    a path other than the shortest that reaches the precision is named in the
    id), and per layout variant of a hop on it when the model as the source
    holds it has channels-last tensors; none when no path leads to the
    target's formats in that precision.

    A user's converted file computes in what it holds: a precision other than
    fp32 is the runtime's to lower to where it declares it, else the file's own."""
    if converted_format:
        if converted_format not in backends.runtime_formats(target):
            return []
        lowered_by = ("" if precision == "fp32" else
                      paths.RUNTIME if precision in backends.runtime_precisions(target) else CONVERTED)
        return [("converted", (), None, lowered_by)]
    available = paths.precision_paths(source, target, precision)
    steps = dict(available)
    inputs, outputs = spec.source_layouts(source)
    channels_last = any(layout in ("NHWC", "NDHWC") for layout in {**inputs, **outputs}.values())
    found = []
    for path in paths.choose(tuple(p for p, _ in available), wanted_path):
        label = None if path == available[0][0] else paths.path_label(path, steps[path], precision)
        layout_variants = [v for name in path for v in getattr(backends.hop(name), "VARIANTS", ())]
        for variant in (layout_variants if channels_last and layout_variants else [None]):
            found.append((variant, path, label, steps[path]))
    return found


def _case(spec: ModelSpec, ref: str, source: str, target: str, device: str, variant: str | None,
          converted_format: str | None, precision: str, reference_device: str, lowered_by: str) -> Case:
    case = Case(spec.name, source, target, device, ref, spec=spec, variant=variant, precision=precision,
                reference_device=reference_device, lowered_by=lowered_by,
                random_ops=_random_ops(spec) if source == "onnx" else ())
    known = spec.unsupported.get(f"{source}->{target}")
    if known and not converted_format:
        return replace(case, skip=f"known limitation of {source}->{target} for {spec.name}: {known}")
    if spec.unsupported.get(precision):
        return replace(case, skip=f"known limitation of {spec.name} at {precision}: {spec.unsupported[precision]}")
    reason = (_unavailable(case, look_up=True)
              or (_type_limit(spec.origin, source, target) if spec.origin != "zoo" else None))
    return replace(case, skip=reason) if reason else case


def availability_checked(case: Case) -> Case:
    """`case` as it starts: skipped where its source or runtime, which
    collection only looked up (backends.installed), cannot be used here (an
    install that fails to import, a device the framework does not list), with
    the reason collection would have given; the case itself otherwise. Each
    check runs once per process."""
    if case.skip or case.error:
        return case
    reason = _unavailable(case, look_up=False)
    return replace(case, skip=reason) if reason else case


def _unavailable(case: Case, look_up: bool) -> str | None:
    """Why `case` cannot run here: its source, its runtime (and the precision
    the runtime lowers to), a package its model requires; None where it can.
    `look_up` (collection): a backend found installed is not imported, its
    check left to `availability_checked`."""
    source_found = look_up and backends.installed("source", case.source, case.reference_device)
    target_found = look_up and backends.installed("runtime", case.target, case.device)
    lowers = case.lowered_by == paths.RUNTIME and not target_found
    return ((None if source_found else backends.source_missing(case.source, case.reference_device))
            or (None if target_found else backends.runtime_missing(case.target, case.device))
            or (backends.runtime_missing_precision(case.target, case.device, case.precision) if lowers else None)
            or next(filter(None, map(package_missing, case.spec.requires)), None))


def _type_limit(ref: str, source: str, target: str) -> str | None:
    """Why `target`, the source's reference or the harness cannot take a type an
    ONNX file declares for an input or an output, naming the type and which
    cannot (a runtime's or a source's ELEMENT_TYPES); None where all can, for
    a model of another source, and for a file that cannot be read (its case's
    load says why)."""
    if source != "onnx":
        return None
    try:
        ports = onnx_source.declared_types(Path(ref))
    except (CaseError, OSError, ValueError):   # unreadable (its case's load says why), or a type onnx has no name for
        return None
    handled = FLOAT_DTYPES + INT_DTYPES
    takers = ((target, backends.element_types("runtime", target)),
              (f"the {source} source's reference", backends.element_types("source", source)))
    for port, dtype, words in ports:
        if dtype is None:
            return (f"{port} ({words}) is not a tensor: the harness feeds and compares tensors only, so it does "
                    f"not run this file on {target}")
        for who, takes in takers:
            if takes is not None and dtype not in takes:
                return f"{port} ({words}): {who} does not take {dtype} (it takes {', '.join(takes)})"
        if dtype not in handled:
            return (f"{port} ({words}): the harness cannot make or compare {dtype} for {target} (it handles "
                    f"{', '.join(handled)})")
    return None


def _type_skips(name: str, ref: str, sources: list[str], targets: list[str], devices: list[str]) -> list[Case]:
    """For an ONNX file whose spec cannot be made because of a type it declares
    (a float8 or a sequence input), a skip per target and device saying which
    type and which runtime; [] for any other model or error."""
    if "onnx" not in sources or not onnx_source.sniff(Path(ref)):
        return []
    reasons = {target: _type_limit(ref, "onnx", target) for target in targets}
    if not all(reasons.values()):
        return []
    return [Case(name, "onnx", target, device, ref, skip=reasons[target]) for target in targets for device in devices]


def _random_ops(spec: ModelSpec) -> tuple[str, ...]:
    """The random operators of a user's ONNX file; () for the zoo's, and for a
    file that cannot be read (its case's load says why)."""
    if spec.origin == "zoo":
        return ()
    from google.protobuf.message import DecodeError

    try:
        return random_ops(onnx_source.model_file(Path(spec.origin)))
    except (CaseError, OSError, DecodeError):   # a file that cannot be read or parsed: its case's load says why
        return ()


@lru_cache(maxsize=None)
def package_missing(name: str) -> str | None:
    """Why a package a model's builders need cannot be used here, or None. It is
    imported, not only looked up: a torchvision built for another torch is
    installed but fails to import ("operator torchvision::nms does not exist")."""
    try:
        importlib.import_module(name)
    except Exception as error:  # ImportError, or the RuntimeError of a mismatched build
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return (f"{name} cannot be imported here ({type(error).__name__}: {first[:300]}); install the version that "
                f"constraints.txt pins beside this torch (the 'real' extra: pip install -c constraints.txt -e '.[real]')")
    return None
