"""Which module serves which source framework, conversion edge and target runtime.

Modules are named, not imported, so that looking one up costs nothing until a
case needs it; each module imports its framework lazily inside its functions.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from types import ModuleType

SOURCES = {"torch": "harness.sources.torch"}
TARGETS = {"onnxruntime": "harness.runtimes.onnxruntime"}
# (source, artifact format) -> converter module
CONVERTERS = {("torch", "onnx"): "harness.converters.torch_onnx"}
# file suffix -> artifact format, for users' own converted files
ARTIFACT_SUFFIXES = {".onnx": "onnx"}


def source(name: str) -> ModuleType:
    return importlib.import_module(SOURCES[name])


def runtime(name: str) -> ModuleType:
    return importlib.import_module(TARGETS[name])


def converter(source_name: str, fmt: str) -> ModuleType | None:
    module = CONVERTERS.get((source_name, fmt))
    return importlib.import_module(module) if module else None


def target_format(target: str) -> str:
    """The artifact format a target runs (the first it lists)."""
    return runtime(target).FORMATS[0]


@lru_cache(maxsize=None)
def source_missing(name: str, device: str) -> str | None:
    return source(name).missing(device)


@lru_cache(maxsize=None)
def runtime_missing(name: str, device: str) -> str | None:
    return runtime(name).missing(device)
