"""Turns run options and the model zoo into the cases of a parity run.

A case the harness cannot run here becomes a skip whose reason names what is
missing; a case asked for wrongly (unknown name, missing file) becomes an
error case whose message says what to do, so the other cases still run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from harness import adapters
from harness.options import DEVICES, RunOptions
from harness.registry import get_model, load_model_file, zoo_models
from harness.specs import ModelSpec, SpecError

TORCH_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ts", ".pkl", ".ckpt")


@dataclass(frozen=True)
class Case:
    """One point of the matrix; `model_ref` is what the user typed for the model."""

    model: str
    source: str
    target: str
    device: str
    model_ref: str
    spec: ModelSpec | None = field(default=None, compare=False, repr=False)
    variant: str | None = None
    skip: str | None = None
    error: str | None = None

    @property
    def id(self) -> str:
        return "-".join(p for p in (self.model, self.source, self.target, self.device, self.variant) if p)


def _safe_name(text: str) -> str:
    """A name usable in a pytest id and with -k: letters, digits, '_' and '.'."""
    return re.sub(r"[^\w.]+", "_", text).strip("_") or "model"


def model_name(ref: str) -> str:
    """The name a model reference goes by in case ids: a zoo name as it is, a
    file by its stem, ARCH=PATH as ARCH.STEM."""
    arch, sep, path = ref.partition("=")
    if sep:
        return _safe_name(f"{arch}.{Path(path).stem}")
    return _safe_name(Path(ref).stem if Path(ref).suffix else ref)


def resolve_models(options: RunOptions) -> list[tuple[str, ModelSpec | None, str | None]]:
    """(model_ref, spec, error) for each model asked for; the whole zoo when none is."""
    refs = options.models or tuple(zoo_models())
    resolved: list[tuple[str, ModelSpec | None, str | None]] = []
    for ref in refs:
        try:
            resolved.extend((ref, spec, None) for spec in _resolve(ref, options))
        except (SpecError, OSError) as error:
            resolved.append((ref, None, str(error)))
        except Exception as error:  # a user's model file that raises while registering
            resolved.append((ref, None, f"{ref}: {type(error).__name__}: {error}"))
    return resolved


def _resolve(ref: str, options: RunOptions) -> list[ModelSpec]:
    from harness.sources import torch as torch_source

    if ref.endswith(".py"):
        if not Path(ref).is_file():
            raise SpecError(f"model file {ref} does not exist")
        return load_model_file(Path(ref))
    arch_name, sep, path = ref.partition("=")
    if sep:
        arch = get_model(arch_name)
        if not Path(path).is_file():
            raise SpecError(f"model file {path} (for architecture {arch_name!r}) does not exist")
        loader = partial(torch_source.load_file, Path(path), arch.builders.get("torch"), options.trust_model_code)
        return [replace(arch, name=model_name(ref), builders={"torch": loader}, origin=path)]
    if ref.endswith(TORCH_FILE_SUFFIXES) or Path(ref).is_file():
        if not Path(ref).is_file():
            raise SpecError(f"model file {ref} does not exist")
        if not options.input_specs:
            raise SpecError(f"model file {ref} carries no input shapes: give them with --input-spec "
                            "(e.g. --input-spec 'x:float32[N=1..4,3,H=16..64,W=20..64]:NCHW'), "
                            "or name a zoo architecture with --model ARCH=PATH")
        outputs = options.output_names or ("output",)
        loader = partial(torch_source.load_file, Path(ref), None, options.trust_model_code)
        return [ModelSpec(name=model_name(ref), inputs=options.input_specs, outputs=outputs,
                          builders={"torch": loader}, origin=ref)]
    return [get_model(ref)]


def build_cases(options: RunOptions) -> list[Case]:
    cases: list[Case] = []
    for kind, values, known in (("source", options.sources, adapters.SOURCES),
                                ("target", options.targets, adapters.TARGETS),
                                ("device", options.devices, DEVICES)):
        for value in values:
            if value not in known:
                cases.append(Case(f"unknown-{kind}", value, "", "", "", error=(
                    f"unknown {kind} {value!r}: choose from {', '.join(known)} (--{kind}=a,b)")))
    sources = [s for s in options.sources if s in adapters.SOURCES]
    targets = [t for t in options.targets if t in adapters.TARGETS]
    devices = [d for d in options.devices if d in DEVICES]

    converted_format = None
    if options.converted is not None:
        converted_format = adapters.ARTIFACT_SUFFIXES.get(options.converted.suffix.lower())
        problem = None
        if len(options.models) != 1:
            problem = "--converted pairs one original with one converted file: give exactly one --model"
        elif converted_format is None:
            problem = (f"--converted {options.converted}: unknown artifact type {options.converted.suffix!r}; "
                       f"known: {', '.join(adapters.ARTIFACT_SUFFIXES)}")
        if problem:
            return cases + [Case("converted", "", "", "", str(options.converted), error=problem)]

    for ref, spec, error in resolve_models(options):
        if error is not None:
            cases.append(Case(model_name(ref), "", "", "", ref, error=error))
            continue
        for source in sources:
            for target in targets:
                for device in devices:
                    cases.append(_case(spec, ref, source, target, device, converted_format))
    return cases


def _case(spec: ModelSpec, ref: str, source: str, target: str, device: str, converted_format: str | None) -> Case:
    variant = "converted" if converted_format else None
    case = Case(spec.name, source, target, device, ref, spec=spec, variant=variant)
    fmt = adapters.target_format(target)
    if source not in spec.builders:
        return replace(case, skip=f"model {spec.name!r} has no {source} builder")
    if converted_format and converted_format not in adapters.runtime(target).FORMATS:
        return replace(case, skip=f"target {target} cannot run {converted_format} files")
    if not converted_format and adapters.CONVERTERS.get((source, fmt)) is None:
        return replace(case, skip=f"no converter from {source} to {fmt} (the format {target} runs)")
    reason = adapters.source_missing(source, device) or adapters.runtime_missing(target, device)
    return replace(case, skip=reason) if reason else case
