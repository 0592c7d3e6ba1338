"""Which module serves which source framework, conversion edge and target runtime.

Modules are named, not imported, so that looking one up costs nothing until a
case needs it; each module imports its framework lazily inside its functions.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from types import ModuleType

SOURCES = {"torch": "harness.sources.torch", "keras": "harness.sources.keras",
           "tensorflow": "harness.sources.tensorflow", "mxnet": "harness.sources.mxnet"}
TARGETS = {"onnxruntime": "harness.runtimes.onnxruntime", "tflite": "harness.runtimes.tflite"}
# target -> the artifact formats it runs (the first is what the harness converts to)
TARGET_FORMATS = {"onnxruntime": ("onnx",), "tflite": ("tflite",)}
# (source, artifact format) -> converter module
CONVERTERS = {
    ("torch", "onnx"): "harness.converters.torch_onnx",
    ("keras", "onnx"): "harness.converters.tf_onnx",
    ("tensorflow", "onnx"): "harness.converters.tf_onnx",
    ("keras", "tflite"): "harness.converters.tf_tflite",
    ("tensorflow", "tflite"): "harness.converters.tf_tflite",
    ("mxnet", "onnx"): "harness.converters.mxnet_onnx",
}
# file suffix -> artifact format, for users' own converted files
ARTIFACT_SUFFIXES = {".onnx": "onnx", ".tflite": "tflite"}


def source(name: str) -> ModuleType:
    return importlib.import_module(SOURCES[name])


def runtime(name: str) -> ModuleType:
    return importlib.import_module(TARGETS[name])


def converter(source_name: str, fmt: str) -> ModuleType | None:
    module = CONVERTERS.get((source_name, fmt))
    return importlib.import_module(module) if module else None


def target_format(target: str) -> str:
    """The artifact format the harness converts to for a target."""
    return TARGET_FORMATS[target][0]


@lru_cache(maxsize=None)
def source_missing(name: str, device: str) -> str | None:
    try:
        return source(name).missing(device)
    except ImportError as error:
        return f"the {name} source adapter cannot be imported here: {error}"


@lru_cache(maxsize=None)
def runtime_missing(name: str, device: str) -> str | None:
    try:
        return runtime(name).missing(device)
    except ImportError as error:
        return f"the {name} runtime adapter cannot be imported here: {error}"
