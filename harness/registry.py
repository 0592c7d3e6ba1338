"""The model registry: the public API through which zoos and users' own files
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

A zoo is a package whose import registers models, declared under the
`parity_models` entry point group (`my_zoo = "my_package.models"`); the
harness's own zoo is declared so in pyproject.toml, and this module names no
zoo: every installed zoo is imported on first use. A zoo that fails to import
is not dropped silently: `broken_zoos` says why, naming the package.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.specs import InputSpec, ModelSpec, OutputSpec, SpecError

ZOO_ENTRY_POINT_GROUP = "parity_models"

_MODELS: dict[str, ModelSpec] = {}
# model name -> who registered it (a zoo's package, a file), for the message of a clash
_REGISTERED_BY: dict[str, str] = {}
# (origin, registrant) of the zoo or file being imported now; a model registered
# outside any (its zoo imported by hand) is a zoo model
_registering: list[tuple[str, str]] = []
_ZOOS_LOADED = False
_BROKEN_ZOOS: dict[str, str] = {}   # entry point name -> why it failed to import
_ZOO_COUNT = 0                      # entry points found, for the message of an empty zoo


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
    origin, registrant = _registering[-1] if _registering else ("zoo", "zoo")
    existing = _REGISTERED_BY.get(name)
    if existing is not None and existing != registrant:
        raise SpecError(f"model {name!r} from {registrant} is already registered by {existing}")
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
    _REGISTERED_BY[name] = registrant
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


def _load_zoos() -> None:
    """Import every package's zoo (the entry points of ZOO_ENTRY_POINT_GROUP),
    once; one that fails is kept in _BROKEN_ZOOS and the others load."""
    global _ZOOS_LOADED, _ZOO_COUNT
    if _ZOOS_LOADED:
        return
    _ZOOS_LOADED = True
    from importlib.metadata import entry_points

    points = entry_points(group=ZOO_ENTRY_POINT_GROUP)
    _ZOO_COUNT = len(points)
    for point in points:
        package = point.dist.name if point.dist is not None else "an unknown package"
        _registering.append(("zoo", f"the zoo of {package}"))
        try:
            point.load()
        except Exception as error:  # a third party's zoo must not take the other zoos and files down with it
            _BROKEN_ZOOS[point.name] = (f"the {ZOO_ENTRY_POINT_GROUP} entry point {point.name!r} of {package} "
                                        f"({point.value}) failed to import: {type(error).__name__}: {error}")
        finally:
            _registering.pop()


def zoo_models() -> dict[str, ModelSpec]:
    """Every model registered by an installed zoo, by name."""
    _load_zoos()
    return {name: spec for name, spec in _MODELS.items() if spec.origin == "zoo"}


def broken_zoos() -> dict[str, str]:
    """Entry point name -> why that zoo failed to import (the message names its package)."""
    _load_zoos()
    return dict(_BROKEN_ZOOS)


def get_model(name: str) -> ModelSpec:
    _load_zoos()
    try:
        return _MODELS[name]
    except KeyError:
        pass
    known = ", ".join(sorted(zoo_models())) or "none"
    problems = "".join(f"; {why}" for why in _BROKEN_ZOOS.values())
    if not _ZOO_COUNT:
        problems += (f"; no installed package declares a {ZOO_ENTRY_POINT_GROUP} entry point (is the harness "
                     "installed? pip install -e .)")
    raise SpecError(f"unknown model {name!r}; zoo models: {known}{problems} (or give a path to a model file)")


def load_model_file(path: Path) -> list[ModelSpec]:
    """Run a user's Python file that calls `register_model`; return what it registered."""
    path = Path(path).resolve()
    _load_zoos()
    before = dict(_MODELS)
    module_name = f"_parity_user_models_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SpecError(f"{path}: not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    _registering.append((str(path), str(path)))
    try:
        spec.loader.exec_module(module)
    finally:
        _registering.pop()
    registered = [m for name, m in _MODELS.items() if m.origin == str(path) and before.get(name) is not m]
    if not registered:
        raise SpecError(f"{path}: the file registered no model; call harness.register_model(...) in it")
    return registered
