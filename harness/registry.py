"""The model registry: the public API through which the zoo and users' own files
declare models.

    from harness import register_model, InputSpec

    register_model(
        "tiny_mlp",
        inputs=[InputSpec("x", ("N", 8), dims={"N": (1, 4)})],
        outputs=["y"],
        torch="my_models:build_tiny_mlp",   # or a zero-argument callable
    )

A builder is a zero-argument callable or a "module:function" string resolved on
first use, so that registering a model never imports a framework.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.specs import InputSpec, ModelSpec, OutputSpec, SpecError

_MODELS: dict[str, ModelSpec] = {}
_ZOO_LOADED = False
_origin_stack: list[str] = []


def register_model(
    name: str,
    *,
    inputs: Iterable[InputSpec],
    outputs: Iterable[OutputSpec | str],
    description: str = "",
    layouts: dict[str, dict[str, str]] | None = None,
    unsupported: dict[str, str] | None = None,
    tier: str = "core",
    requires: Iterable[str] = (),
    **builders: Callable[[], Any] | str,
) -> ModelSpec:
    """Declare a model under `name`, with one builder per source framework
    given as keyword (`torch=...`, `keras=...`; later `mxnet=...`).

    layouts: per source, the tensors its model lays out differently from the
    input/output specs, e.g. {"keras": {"image": "NHWC", "features": "NHWC"}}.
    unsupported: known converter limitations, {"keras->tflite": "why"}: those
    cases are skipped with the reason.
    tier: "core" (the default) or "real", the zoo's tier of published
    architectures, run with `--tier=real` (or `all`).
    requires: packages the builders import beyond the source framework
    (e.g. ("transformers",)); where one does not import, the cases skip saying why.
    """
    if not builders:
        raise SpecError(f"model {name!r} has no builder: pass e.g. torch=build_fn")
    origin = _origin_stack[-1] if _origin_stack else "zoo"
    existing = _MODELS.get(name)
    if existing is not None and existing.origin != origin:
        raise SpecError(f"model {name!r} from {origin} is already registered by {existing.origin}")
    spec = ModelSpec(
        name=name,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        builders={source: _resolve_later(b) for source, b in builders.items()},
        description=description,
        origin=origin,
        layouts=dict(layouts or {}),
        unsupported=dict(unsupported or {}),
        tier=tier,
        requires=tuple(requires),
    )
    _MODELS[name] = spec
    return spec


def _resolve_later(builder: Callable[[], Any] | str) -> Callable[[], Any]:
    if callable(builder):
        return builder
    module_name, _, attr = builder.partition(":")
    if not module_name or not attr:
        raise SpecError(f"builder {builder!r} must be a callable or 'module:function'")

    def build() -> Any:
        return getattr(importlib.import_module(module_name), attr)()

    build.__qualname__ = builder
    return build


def _load_zoo() -> None:
    global _ZOO_LOADED
    if not _ZOO_LOADED:
        _ZOO_LOADED = True
        importlib.import_module("model_zoo")


def zoo_models() -> dict[str, ModelSpec]:
    """Every model registered by the built-in zoo, by name."""
    _load_zoo()
    return {name: spec for name, spec in _MODELS.items() if spec.origin == "zoo"}


def get_model(name: str) -> ModelSpec:
    _load_zoo()
    try:
        return _MODELS[name]
    except KeyError:
        known = ", ".join(sorted(zoo_models()))
        raise SpecError(f"unknown model {name!r}; zoo models: {known} (or give a path to a model file)") from None


def load_model_file(path: Path) -> list[ModelSpec]:
    """Run a user's Python file that calls `register_model`; return what it registered."""
    path = Path(path).resolve()
    _load_zoo()
    before = dict(_MODELS)
    module_name = f"_parity_user_models_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SpecError(f"{path}: not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    _origin_stack.append(str(path))
    try:
        spec.loader.exec_module(module)
    finally:
        _origin_stack.pop()
    registered = [m for name, m in _MODELS.items() if m.origin == str(path) and before.get(name) is not m]
    if not registered:
        raise SpecError(f"{path}: the file registered no model; call harness.register_model(...) in it")
    return registered
