"""The import layers of harness/ (ARCHITECTURE.md's map): no circle between its
modules, and no module importing one of a higher layer. Every import counts,
at any depth of a module: a lazy import inside a function, or one made for
type checking only, is a dependency all the same. Modules are read with `ast`,
never imported, so the check needs no framework and takes well under a second.

Beside it, the checker itself on small packages written for the purpose: a
planted circle and a planted upward import must each be reported."""

from __future__ import annotations

import ast
from fnmatch import fnmatchcase
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "harness"

# Lowest first: a module may import its own layer and those before it, never one after it.
# A module belongs to the first layer with a pattern that matches its name.
LAYERS: list[tuple[str, list[str]]] = [
    ("base", ["harness.errors", "harness.layouts", "harness.specs", "harness.user_json", "harness.locks",
              "harness.model_file", "harness.profiles", "harness.registry", "harness.backends",
              "harness.paths", "harness.calibration_settings", "harness.labels", "harness.options",
              "harness.image_inputs", "harness.inputs", "harness.compare",
              "harness.tolerances", "harness.shape_check", "harness.shape_profile", "harness.random_ops",
              "harness.case_record", "harness.results", "harness.cache", "harness.case",
              # no conversion edge: onnx.checker and the opset an ONNX file is stamped with, which the
              # ONNX source reads too
              "harness.converters.onnx_checks"]),
    ("frameworks", ["harness.sources", "harness.sources.*", "harness.runtimes", "harness.runtimes.*"]),
    # the user's examples and the calibration feed, read from files: the int8 converters take the feed
    ("feeds", ["harness.user_inputs", "harness.calibration"]),
    ("converters", ["harness.converters", "harness.converters.*"]),
    ("localize", ["harness.localize", "harness.localize.*"]),
    ("floor", ["harness.precision_floor", "harness.file_arithmetic"]),
    ("engine", ["harness.engine"]),
    ("explore", ["harness.explore", "harness.golden", "harness.file_precision", "harness.qdq_check",
                 "harness.accuracy"]),
    # the case builder, above what runs a case: the engine takes a Case (harness.case), never the matrix
    ("matrix", ["harness.matrix", "harness.option_effects"]),
    ("runner", ["harness.runner", "harness.worker", "harness.shards"]),
    ("report", ["harness.report", "harness.report.*", "harness.merge"]),
    # the entry points, and the package's public API (`import harness`)
    ("entry", ["harness.plugin", "harness.__main__", "harness"]),
]


def module_graph(root: Path) -> dict[str, set[str]]:
    """Each module of the package at `root` (its name with the package's, as
    imported) -> the package's modules it imports, at any depth."""
    package = root.name
    files = {}
    for file in sorted(root.rglob("*.py")):
        parts = [package, *file.relative_to(root).with_suffix("").parts]
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    graph: dict[str, set[str]] = {}
    for module, file in files.items():
        home = module if file.name == "__init__.py" else module.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:   # relative: from the module's own package, up level - 1
                    above = home.split(".")[:len(home.split(".")) - node.level + 1]
                    base = ".".join([*above, base] if base else above)
                # `from package import name`: the submodule where `name` is one, else the package
                names = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for name in names:
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name:
                    imported.add(name)
        # `from harness.x import y` names the package too, which Python runs first: not a dependency of
        # the module's own making
        graph[module] = imported - {module, package}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: each strongly connected set of two modules or more, sorted (Tarjan's algorithm,
    without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                elif target in on_stack:
                    low[module] = min(low[module], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == module:
                        break
                if len(members) > 1:
                    found.append(sorted(members))
    return sorted(found)


def layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int | None:
    """The index of the first layer with a pattern matching `module`, or None."""
    return next((i for i, (_, patterns) in enumerate(layers)
                 if any(fnmatchcase(module, pattern) for pattern in patterns)), None)


def layer_problems(graph: dict[str, set[str]], layers: list[tuple[str, list[str]]]) -> list[str]:
    """A line for each module in no layer and each import of a higher layer's module."""
    where = {module: layer_of(module, layers) for module in graph}
    problems = [f"{module} is in no layer: add it to LAYERS in tests/test_import_layers.py where "
                "ARCHITECTURE.md places it" for module, layer in sorted(where.items()) if layer is None]
    for module in sorted(graph):
        for target in sorted(graph[module]):
            if where[module] is not None and where[target] is not None and where[target] > where[module]:
                problems.append(f"{module} (layer {layers[where[module]][0]}) imports {target} "
                                f"(layer {layers[where[target]][0]}, higher): move what it takes to a "
                                "lower module, or pass it in from above")
    return problems


def test_harness_has_no_import_circle():
    found = circles(module_graph(HARNESS))
    assert not found, ("import circles in harness/, each a set of modules that reach one another through "
                       "their imports: " + "; ".join(f"[{', '.join(c)}]" for c in found))


def test_harness_imports_only_its_own_layer_and_those_below():
    problems = layer_problems(module_graph(HARNESS), LAYERS)
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def _package(root: Path, modules: dict[str, str]) -> Path:
    """A package `planted` under `root`: module path (slashes, no .py) -> source."""
    package = root / "planted"
    for name, source in {"__init__": "", **modules}.items():
        file = package / f"{name}.py"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(source)
    return package


def test_a_planted_circle_through_a_lazy_and_a_relative_import_is_named(tmp_path):
    package = _package(tmp_path, {
        "low": "from planted.mid import helper\n",
        "mid": "def helper():\n    from .sub.high import run   # lazy, relative: still an import\n",
        "sub/__init__": "",
        "sub/high": "import planted.low\n",
        "apart": "from planted import low\n",
    })
    graph = module_graph(package)
    assert graph["planted.apart"] == {"planted.low"}
    assert circles(graph) == [["planted.low", "planted.mid", "planted.sub.high"]]


def test_a_planted_upward_import_and_a_module_in_no_layer_are_reported(tmp_path):
    package = _package(tmp_path, {
        "base": "def helper():\n    from planted.engine import run\n",
        "engine": "def run():\n    pass\n",
        "stray": "",
    })
    layers = [("base", ["planted", "planted.base"]), ("engine", ["planted.engine"])]
    graph = module_graph(package)
    assert circles(graph) == []
    assert layer_problems(graph, layers) == [
        "planted.stray is in no layer: add it to LAYERS in tests/test_import_layers.py where ARCHITECTURE.md "
        "places it",
        "planted.base (layer base) imports planted.engine (layer engine, higher): move what it takes to a "
        "lower module, or pass it in from above"]


def test_a_package_in_layers_that_import_downward_only_passes(tmp_path):
    package = _package(tmp_path, {
        "base": "import os\nimport numpy\n",
        "engine": "from planted.base import helper\n\ndef run():\n    from . import base\n",
        "runner": "from planted import engine\nfrom planted.engine import run\n",
    })
    layers = [("base", ["planted", "planted.base"]), ("engine", ["planted.engine"]), ("runner", ["planted.runner"])]
    graph = module_graph(package)
    assert graph == {"planted": set(), "planted.base": set(), "planted.engine": {"planted.base"},
                     "planted.runner": {"planted.engine"}}
    assert circles(graph) == [] and layer_problems(graph, layers) == []
