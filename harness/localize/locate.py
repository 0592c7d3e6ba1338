"""Where a failed example first diverges, and a minimal reproduction of it.

Run once on the failing input, after the verdict. It walks the last ONNX file
on the case's path, with every typed tensor marked as an output, in one of two
modes:

- runtime: the target runs that ONNX file and, on the failing input, disagrees
  with ONNX Runtime's CPU provider (graph optimizations off: the file's kernels
  as written) on the same file. Both run the marked copy and are compared tensor
  by tensor. Marks keep a runtime from fusing across them, so the node found is
  confirmed on the subgraph cut out up to it, unmarked; where the marked run
  shows nothing (a divergence that needs the fusions), unmarked prefix
  subgraphs are bisected instead.
- converter: the ONNX file on ONNX Runtime disagrees with the source framework.
  The source's layer probe (`harness.localize.<source>_layers`, found by the
  source's name: `layer_probe`; a source without one is walked within the file)
  maps its own layers, modules or graph nodes to the file's tensors
  (`layer_values`); the tensors it cannot map are skipped and counted.

The first tensor, in topological order, that the failing output is computed
from and whose error over its own magnitude passes the output's tolerance is
named, with its node, the error of its inputs and the error along the path to
the output. The reproduction is the smallest graph that still shows the
mismatch (the one node fed the reference's values of its inputs, else the
graph up to it), with its inputs, expected values and a script
(`harness.localize.repro`).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from harness import backends
from harness.errors import CaseError, summarize_exception
from harness.layouts import relaid
from harness.localize.graph import FLOAT_TYPES, Graph, extract, load_graph, write_marked
from harness.localize.layers import LayerValues
from harness.localize.walk import (Bound, TensorError, describe_node, first_divergence, path_rows, tensor_error,
                                   tensor_errors)
from harness.runtimes.binding import bound_names

FUSION_NOTE = ("marking intermediate tensors as outputs keeps a runtime from fusing the nodes on either side of "
               "them, so the marked run may differ from the case's; the node named was confirmed on the subgraph "
               "cut out up to it, run without marks")
# Candidates confirmed on their own subgraph before the first one is named unconfirmed.
MAX_CONFIRMATIONS = 3


@dataclass
class Walkable:
    """What a localization needs of a case, whether from the matrix or a user's pair."""

    case_id: str
    target: str                           # the runtime that ran the converted model
    device: str
    precision: str                        # what the target's session is opened with
    options: Any                          # RunOptions
    onnx_file: Path                       # the last ONNX file on the path
    target_runs_it: bool                  # the target runs that file itself (runtime mode possible)
    feed: dict[str, np.ndarray]           # the failing input, by the file's input names, in its layouts
    output_names: dict[str, str]          # spec output -> the file's output name
    output_layouts: dict[str, tuple[str | None, str | None]]   # spec output -> (file's layout, source's layout)
    reference_outputs: dict[str, np.ndarray]   # spec output -> the source's value, in the source's layout
    layer_values: Callable[[Any], LayerValues] | None   # the source's layers on the failing input, given the proto
    source_name: str
    versions: dict[str, str] = field(default_factory=dict)
    after: str = ""                       # what comes after the ONNX file, for a message ("onnx->mnn, then mnn")
    # the case's own session on that file (feed -> outputs by the file's names), where the target runs
    # it: the unmarked run needs no second compile (an OpenVINO model, a TensorRT engine)
    case_session: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None = None


def localize(walkable: Walkable, failing: Sequence[Mapping[str, Any]], repro_folder: Path | None,
             mode: str = "first", pair_check: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The localization record of a failed example (`failing`: the failing
    outputs' comparisons, `OutputComparison.to_json()`, in the spec's order;
    `pair_check`: the case's Q/DQ pair check with its "pairs", where one ran).
    Never raises: what goes wrong is the record's "error" status."""
    start = time.perf_counter()
    walked = [c for c in failing if not floor_only(c)]
    try:
        if failing and not walked:
            records = [floor_localization(failing, pair_check)]
        else:
            with tempfile.TemporaryDirectory(prefix="parity-localize-") as scratch:
                records = _localize(walkable, walked, repro_folder, mode, Path(scratch))
    except CaseError as error:
        records = [{"status": "error", "message": f"localization failed: {error.message}"}]
    except Exception as error:  # a localization that breaks must not hide the verdict it explains
        records = [{"status": "error", "message": f"localization failed: {summarize_exception(error, 4)}"}]
    seconds = time.perf_counter() - start
    first = records[0]
    first["seconds"] = round(seconds, 4)
    if len(records) > 1:
        first["more"] = records[1:]
    return first


def floor_only(comparison: Mapping[str, Any]) -> bool:
    """Whether an output failed by its precision's floor alone (harness/precision_floor.py): within
    the fixed thresholds a walk holds each tensor to, so that the walk could only name no tensor, or
    a tensor as off as a correct build's."""
    floor = comparison.get("floor") or {}
    return floor.get("passed") is False and bool(floor.get("thresholds_passed"))


def floor_localization(failing: Sequence[Mapping[str, Any]], pair_check: Mapping[str, Any] | None) -> dict[str, Any]:
    """The record of an example whose outputs failed by the floor alone. No tensor is held to the
    floor's error on it: per tensor, correct recipes reach 71x the floor's where some bugs stay
    near 2x (benchmarks/floor_per_tensor.py), and a user's file need not name its tensors as the
    floor's build does. Where the file is a QDQ file, its Q/DQ pairs are held to limits measured
    per pair (harness/qdq_check.py): a pair past one is the node named."""
    outputs = "; ".join(f"{c['name']}: RMS error {_fmt(c['floor']['rms_over_floor'])}x the floor's, allowed "
                        f"{_fmt(c['floor']['multiple'])}x" for c in failing)
    message = (f"failed by the floor alone ({outputs}) and within the fixed thresholds, the only bound a walk "
               f"of the file's tensors could hold them to: not walked")
    pairs = [p for p in (pair_check or {}).get("pairs", []) if p.get("finding")]
    if pairs:
        named = [f"weight {p['tensor']!r} (DequantizeLinear {p['node']!r})" if p["kind"] == "weight" else
                 f"the Q/DQ pair of tensor {p['tensor']!r} (nodes {p['node']!r} / {p['dequantizer']!r})"
                 for p in pairs]
        more = f" and {len(named) - 1} more" if len(named) > 1 else ""
        return {"status": "qdq_pair", "mode": "qdq_pairs", "output": failing[0]["name"],
                "message": f"{message}; localized by the Q/DQ pair check to {named[0]}{more}",
                "first": {"tensor": pairs[0]["tensor"], "node": pairs[0]["node"],
                          "op_type": "DequantizeLinear" if pairs[0]["kind"] == "weight" else "QuantizeLinear"},
                "pairs": [{"tensor": p["tensor"], "node": p["node"], "finding": p["finding"]} for p in pairs]}
    if pair_check is None:
        why = "the file holds no Q/DQ pairs to check each by its own limits"
    elif not pair_check.get("checked"):
        why = f"its Q/DQ pairs went unchecked: {pair_check.get('reason')}"
    else:
        why = (f"every one of its Q/DQ pairs checked is within its limits ({pair_check.get('unchecked', 0)} "
               f"unchecked): the added error is spread over the file, not one pair's")
    return {"status": "not_found", "mode": "qdq_pairs", "output": failing[0]["name"], "message": f"{message}; {why}"}


def _localize(walkable: Walkable, failing: list[Mapping[str, Any]], repro_folder: Path | None, mode: str,
              scratch: Path) -> list[dict[str, Any]]:
    if not failing:
        return [{"status": "agree", "message": "the outputs agree within their tolerances on this input: no node "
                                               "is named"}]
    graph = load_graph(walkable.onnx_file)
    marked_path = scratch / "marked.onnx"
    marked = write_marked(graph, [t for t in graph.order if t in graph.types], marked_path)
    reference = _onnxruntime_values(marked_path, walkable.feed, marked)
    chosen = failing if mode == "all" else failing[:1]
    sides = _Sides(walkable, graph, marked_path, marked, reference)
    records = []
    for index, comparison in enumerate(chosen):
        folder = None
        if repro_folder is not None:
            folder = repro_folder if index == 0 else repro_folder.with_name(
                f"{repro_folder.stem}-{_safe(comparison['name'])}{repro_folder.suffix}")   # CASE-label.repro
        records.append(_localize_output(sides, comparison, folder, scratch / f"out{index}"))
    return records


class _Sides:
    """The two sides of a walk, computed once and shared by the failing outputs."""

    def __init__(self, walkable: Walkable, graph: Graph, marked_path: Path, marked: list[str],
                 reference: dict[str, np.ndarray]):
        self.walkable, self.graph, self.marked_path, self.marked = walkable, graph, marked_path, marked
        self.onnxruntime = reference            # ONNX Runtime's CPU provider on the file
        self._target: dict[str, np.ndarray] | None = None
        self._unmarked: dict[str, np.ndarray] | None = None
        self._source: LayerValues | None = None

    @property
    def runtime_mode_possible(self) -> bool:
        w = self.walkable
        return w.target_runs_it and not ((w.target, w.device) == backends.walk_reference() and w.precision == "fp32")

    def target_marked(self) -> dict[str, np.ndarray]:
        if self._target is None:
            self._target = _runtime_values(self.walkable, self.marked_path, self.walkable.feed, self.marked)
        return self._target

    def target_unmarked(self) -> dict[str, np.ndarray]:
        if self._unmarked is None:
            w = self.walkable
            self._unmarked = (w.case_session(w.feed) if w.case_session is not None
                              else _runtime_values(w, w.onnx_file, w.feed, self.graph.outputs))
        return self._unmarked

    def source(self) -> LayerValues:
        if self._source is None:
            w = self.walkable
            if w.layer_values is None:
                self._source = LayerValues(how=f"the {w.source_name} source maps no layers to ONNX tensors")
            else:
                self._source = w.layer_values(self.graph.model)
            # The source's own outputs are known whatever it maps: the failing outputs are always compared.
            for name, file_name in w.output_names.items():
                if file_name not in self._source.values and name in w.reference_outputs:
                    file_layout, source_layout = w.output_layouts[name]
                    self._source.add(file_name, relaid(w.reference_outputs[name], source_layout, file_layout),
                                     f"{w.source_name} output {name!r}")
        return self._source


@dataclass
class _Walk:
    """One walk's outcome: the record so far and, where a tensor was found, what it rests on."""

    record: dict[str, Any]
    errors: dict[str, TensorError] = field(default_factory=dict)
    layers: Mapping[str, str] = field(default_factory=dict)
    found: str | None = None
    confirmation: dict[str, Any] | None = None


def _localize_output(sides: _Sides, comparison: Mapping[str, Any], repro_folder: Path | None,
                     scratch: Path) -> dict[str, Any]:
    w, graph = sides.walkable, sides.graph
    output = w.output_names[comparison["name"]]
    bound = Bound.from_comparison(comparison)
    base = {"output": comparison["name"], "artifact": str(w.onnx_file), "allowed": bound.allowed,
            "bound": bound.to_json(), "nodes": graph.nodes}
    walk = None
    if sides.runtime_mode_possible and output in graph.types:
        unmarked = tensor_error(sides.onnxruntime[output], sides.target_unmarked()[output])
        if unmarked.diverges(bound):
            walk = _runtime_walk(sides, output, bound, scratch)
        else:
            base["runtime_check"] = (f"{w.target} agrees with ONNX Runtime's CPU provider on the same file at "
                                     f"{output!r} ({_fmt(unmarked.normalized_error)} of its magnitude): the "
                                     f"divergence is between the {w.source_name} model and the file")
    if walk is None:
        walk = _converter_walk(sides, output, bound)
    elif walk.found is not None and w.layer_values is not None:
        # ONNX Runtime is the runtime walk's reference, and it can be wrong too: where the file
        # already leaves the source before the tensor found (an overflow ONNX Runtime computes
        # the same way, hidden later by its float32 arithmetic, so that its output agrees with
        # the source's), that is where it starts.
        against_source = _converter_walk(sides, output, bound, output_must_diverge=False)
        if against_source.found is not None and graph.order.index(against_source.found) <= graph.order.index(walk.found):
            against_source.record["runtime_walk"] = (
                f"{w.target} first leaves ONNX Runtime's CPU provider at {walk.found!r}, but the file on ONNX "
                f"Runtime already leaves the {w.source_name} model at {against_source.found!r}: ONNX Runtime "
                f"carries the divergence no further (it computes some ops wider than the file's types), "
                f"{w.target} does")
            walk = against_source
        else:   # the runtime's walk stands; the source's names still label its tensors
            walk.layers = against_source.layers
    if walk.found is None:
        return {**base, **walk.record}
    return {**base, **_found(sides, walk, output, bound, repro_folder, scratch)}


def _runtime_walk(sides: _Sides, output: str, bound: Bound, scratch: Path) -> _Walk:
    w, graph = sides.walkable, sides.graph
    floats = {t: v for t, v in sides.onnxruntime.items() if graph.types.get(t) in FLOAT_TYPES or t == output}
    record: dict[str, Any] = {
        "mode": "runtime", "compared_against": "ONNX Runtime's CPU provider on the same file (optimizations off)",
        "fusion_note": FUSION_NOTE}
    try:
        errors = tensor_errors(floats, sides.target_marked())
    except Exception as error:   # a runtime that refuses some marked tensor as an output: bisect instead
        errors = {}
        record["marked_run"] = f"{w.target} could not run the marked copy: {summarize_exception(error, 1)}"
    record.update(compared=len(errors), mapped_nodes=_nodes_with(graph, errors),
                  unmapped=_not_compared(graph, errors))
    candidates = first_divergence(graph, errors, output, bound)
    found, confirmation = None, None
    for tensor in candidates[:MAX_CONFIRMATIONS]:
        tried, _ = _confirm(sides, tensor, bound, scratch)
        if tried["reproduced"]:
            found, confirmation = tensor, tried
            break
        if confirmation is None:
            confirmation = tried
    if found is None and candidates:
        found = candidates[0]   # named, but said unconfirmed
    if found is None:
        found, confirmation, error = _bisect(sides, output, bound, scratch)
        if found is not None:
            errors[found] = error
            record["fusion_note"] = ("with every intermediate tensor marked, the runtime agreed with the reference "
                                     "everywhere: the divergence needs fusions the marks prevent, so the node was "
                                     "found by bisecting unmarked subgraphs cut out up to each tensor")
    if found is None:
        record.update(status="not_found",
                      message=f"{w.target} disagrees with ONNX Runtime at the output, but no tensor before it passes "
                              f"the bound ({_fmt(bound.allowed)} of its magnitude), marked or in cut-out subgraphs")
    return _Walk(record, errors, {}, found, confirmation)


def _converter_walk(sides: _Sides, output: str, bound: Bound, output_must_diverge: bool = True) -> _Walk:
    w, graph = sides.walkable, sides.graph
    source = sides.source()
    # float tensors, and the failing output whatever its type (an argmax is compared exactly, as the case did)
    converted = {t: v for t, v in sides.onnxruntime.items() if graph.types.get(t) in FLOAT_TYPES or t == output}
    errors = tensor_errors(source.values, converted)
    record: dict[str, Any] = {
        "mode": "converter", "compared_against": f"{w.source_name}: {source.how}".rstrip(": "),
        "compared": len(errors), "mapped_nodes": _nodes_with(graph, errors), "source_layers": source.seen,
        "unmapped": {**_not_compared(graph, errors), **source.unmapped}}
    if output not in errors:
        record.update(status="unavailable",
                      message=f"the failing output {output!r} of {w.onnx_file.name} could not be compared with the "
                              f"{w.source_name} model's")
        return _Walk(record)
    if output_must_diverge and not errors[output].diverges(bound):
        after = (f" the divergence comes after it ({w.after}), whose intermediate tensors the harness cannot mark"
                 if not w.target_runs_it else " the divergence is in how the target runs it")
        record.update(status="not_found",
                      message=f"the ONNX file on the path ({w.onnx_file.name}) agrees with the {w.source_name} "
                              f"model at {output!r} on this input ({_fmt(errors[output].normalized_error)} of its "
                              f"magnitude, allowed {_fmt(bound.allowed)}):{after}")
        return _Walk(record, errors, source.layers)
    candidates = first_divergence(graph, errors, output, bound)
    if not candidates:
        record.update(status="not_found", message=f"no tensor of {w.onnx_file.name} leaves the {w.source_name} model")
        return _Walk(record, errors, source.layers)
    found = candidates[0]
    confirmation = {"how": "the file on ONNX Runtime against the source's values", "reproduced": True,
                    "normalized_error": errors[found].to_json()["normalized_error"]}
    return _Walk(record, errors, source.layers, found, confirmation)


def _found(sides: _Sides, walk: _Walk, output: str, bound: Bound, repro_folder: Path | None,
           scratch: Path) -> dict[str, Any]:
    record, errors, layers, found, confirmation = walk.record, walk.errors, walk.layers, walk.found, walk.confirmation
    w, graph = sides.walkable, sides.graph
    first = describe_node(graph, errors, layers, found)
    rows = path_rows(graph, errors, layers, found, output, bound)
    where = f"{first['op_type']} node {first['node']!r}" if first["node"] else "input"
    layer = f", {w.source_name} {first['layer']}" if first.get("layer") else ""
    before = [float(i["normalized_error"]) for i in first["inputs"] if i["normalized_error"] is not None]
    inputs = (f"; its inputs agree (at most {_fmt(max(before))})" if before and max(before) <= bound.allowed
              else f"; its inputs are off by up to {_fmt(max(before))}" if before else "")
    error = errors[found]
    amount = (f"{error.nonfinite} element(s) NaN/Inf on one side only" if error.nonfinite
              else f"{_fmt(error.normalized_error)} of its magnitude")
    message = f"the first diverging tensor is {found!r} ({where}{layer}): {amount}, allowed {_fmt(bound.allowed)}{inputs}"
    if len(first["region"]) > 1:   # the tensors between were not compared: the divergence starts in one of them
        nodes = ", ".join(f"{r['op_type']} {r['node']!r}" for r in first["region"][:6])
        more = f" and {len(first['region']) - 6} more" if len(first["region"]) > 6 else ""
        message += f"; the nodes since the last compared tensors: {nodes}{more}"
    if confirmation is not None and not confirmation.get("reproduced"):
        message += "; not confirmed on the subgraph cut out up to it (it shows only with the marks)"
    result = {**record, "status": "found", "message": message, "first": first, "path": rows,
              "confirmed": confirmation}
    if repro_folder is not None:
        result["repro"] = _write_repro(sides, record["mode"], found, errors, bound, message, repro_folder, scratch)
    return result


# ---------------------------------------------------------------- confirming and bisecting

def _confirm(sides: _Sides, tensor: str, bound: Bound, scratch: Path) -> tuple[dict[str, Any], TensorError]:
    """The graph up to `tensor`, unmarked, on the target against the reference's value."""
    path = extract(sides.graph, _fed_inputs(sides.graph, tensor), [tensor],
                   scratch / "confirm" / f"{_safe(tensor)}.onnx")
    got = _runtime_values(sides.walkable, path, sides.walkable.feed, [tensor])[tensor]
    error = tensor_error(sides.onnxruntime[tensor], got)
    return ({"how": "subgraph up to it, unmarked", "reproduced": error.diverges(bound),
             "normalized_error": error.to_json()["normalized_error"]}, error)


def _bisect(sides: _Sides, output: str, bound: Bound,
            scratch: Path) -> tuple[str | None, dict[str, Any] | None, TensorError | None]:
    """The first float tensor whose unmarked prefix subgraph diverges on the
    target, by bisection over the topological order (assumes that once a
    prefix diverges, the longer ones do too): log2(n) subgraphs, not n."""
    graph = sides.graph
    upstream = graph.ancestors(output)
    order = [t for t in graph.float_tensors() if t in upstream and t in sides.onnxruntime]
    low, high, found = 0, len(order) - 1, (None, None, None)
    while low <= high:
        middle = (low + high) // 2
        confirmation, error = _confirm(sides, order[middle], bound, scratch)
        if confirmation["reproduced"]:
            found = (order[middle], {**confirmation, "how": "bisection over unmarked subgraphs"}, error)
            high = middle - 1
        else:
            low = middle + 1
    return found


# ---------------------------------------------------------------- the reproduction

def _write_repro(sides: _Sides, mode: str, tensor: str, errors: dict[str, TensorError], bound: Bound,
                 message: str, folder: Path, scratch: Path) -> dict[str, Any]:
    """The smallest graph that shows the mismatch: the one node, fed the
    reference side's values of its inputs, when it reproduces there; else the
    graph up to it, fed the failing input."""
    from harness.localize.repro import write_repro

    w, graph = sides.walkable, sides.graph
    reference = sides.source().values if mode == "converter" else sides.onnxruntime
    runtime, device = (w.target, w.device) if mode == "runtime" else backends.walk_reference()
    node = graph.node_of(tensor)
    weights = {t.name for t in graph.model.graph.initializer}
    node_inputs = [name for name in node.input if name and name not in weights] if node is not None else []
    single = None
    # the reference side's values, in the file's types (a source computes an fp16 file's tensors in float32)
    values = {name: _as_typed(graph, name, reference.get(name, sides.onnxruntime.get(name))) for name in node_inputs}
    if node is not None and all(v is not None for v in values.values()):
        try:
            path = extract(graph, node_inputs, [tensor], scratch / "repro-node.onnx")
            got = _runner_values(runtime, device, w, path, values, [tensor])[tensor]
            if tensor_error(reference[tensor], got).diverges(bound):
                single = path
        except Exception:   # a node that cannot stand alone (a subgraph-holding op): the prefix does
            single = None
    if single is not None:
        subgraph, inputs, how = single, {k: np.asarray(v) for k, v in values.items()}, "the one node"
    else:
        subgraph = extract(graph, _fed_inputs(graph, tensor), [tensor], scratch / "repro-prefix.onnx")
        inputs, how = {k: v for k, v in w.feed.items() if k in _fed_inputs(graph, tensor)}, "the graph up to it"
    side = ("the " + w.source_name + " model's value" if mode == "converter"
            else "ONNX Runtime's CPU provider's value on the same file")
    summary = (f"{message}.\nThis folder holds {how} ({subgraph.stat().st_size} bytes); expected.npz is {side}. "
               f"Found by the parity harness on the failing input of case {w.case_id}.")
    written = write_repro(folder, subgraph, inputs, {tensor: np.asarray(reference[tensor])}, runtime=runtime,
                          device=device, allowed=bound.allowed, versions=w.versions, case_id=w.case_id,
                          summary=summary, min_snr_db=bound.min_snr_db)
    return {**written, "subgraph": how}


# ---------------------------------------------------------------- running the sides

def _onnxruntime_values(path: Path, feed: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """ONNX Runtime's CPU provider, optimizations off, on the fed inputs the file takes."""
    from harness.runtimes.onnxruntime import cpu_session, run_session

    try:
        session = cpu_session(str(path))
    except Exception as error:   # onnxruntime's errors (Fail, InvalidGraph, ...) derive from Exception alone
        raise CaseError("localize", f"ONNX Runtime's CPU provider cannot load {path.name}: "
                                    f"{summarize_exception(error, 2)}") from None
    names = [i.name for i in session.get_inputs()]
    values = run_session(session, outputs, {name: feed[name] for name in names})
    return dict(zip(outputs, (np.asarray(v) for v in values)))


def _runtime_values(walkable: Walkable, path: Path, feed: Mapping[str, np.ndarray],
                    outputs: Sequence[str]) -> dict[str, np.ndarray]:
    return _runner_values(walkable.target, walkable.device, walkable, path, feed, outputs)


def _runner_values(runtime_name: str, device: str, walkable: Walkable, path: Path, feed: Mapping[str, np.ndarray],
                   outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """The named runtime's values of `outputs` for `path`, through its Session
    (bound by the file's own names), opened as the case opened it."""
    if (runtime_name, device) == backends.walk_reference():
        return _onnxruntime_values(path, feed, outputs)
    import onnx

    runtime = backends.runtime(runtime_name)
    names = [v.name for v in onnx.load(str(path), load_external_data=False).graph.input
             if v.name in feed]
    session = runtime.Session(path, device, walkable.options, precision=walkable.precision)
    session.bind(names, [str(feed[n].dtype) for n in names], list(outputs))
    values = session.run([feed[n] for n in names])
    return dict(zip(outputs, (np.asarray(v) for v in values)))


def _as_typed(graph: Graph, tensor: str, value: np.ndarray | None) -> np.ndarray | None:
    dtype = FLOAT_TYPES.get(graph.types.get(tensor))
    if value is None or dtype is None or dtype == "bfloat16":   # numpy has no bfloat16: left as it is
        return value
    return np.asarray(value).astype(dtype, copy=False)


def _fed_inputs(graph: Graph, tensor: str) -> list[str]:
    upstream = graph.ancestors(tensor)
    return [name for name in graph.inputs if name in upstream]


def _nodes_with(graph: Graph, errors: Mapping[str, TensorError]) -> int:
    """Nodes at least one of whose outputs was compared."""
    return sum(1 for node in graph.model.graph.node if any(o in errors for o in node.output))


def _not_compared(graph: Graph, errors: Mapping[str, TensorError]) -> dict[str, int]:
    floats = [t for t in graph.float_tensors() if t not in errors]
    others = [t for t in graph.order if t in graph.types and graph.types[t] not in FLOAT_TYPES]
    untyped = [t for t in graph.order if t not in graph.types]
    found = {"float tensors without a reference value": len(floats), "not float (not compared)": len(others),
             "of a type ONNX could not infer": len(untyped)}
    return {k: v for k, v in found.items() if v}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "tensor"


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" if math.isfinite(value) else str(value)


# ---------------------------------------------------------------- from a prepared case

def walkable_case(prepared: Any, tensors: Mapping[str, np.ndarray], options: Any) -> Walkable | str:
    """What the localizer needs from a prepared case (engine.PreparedCase) and
    its failing input (by the spec's names, in the spec's layouts), or why
    this case cannot be localized."""
    from harness.paths import RUNTIME

    case, spec = prepared.case, prepared.spec
    onnx_files = [f for f in prepared.files if f[0].suffix == ".onnx"]
    if not onnx_files:
        formats = " -> ".join([case.source, *[p.suffix.lstrip(".") or p.name for p, _, _ in prepared.files]])
        return (f"no ONNX file on this path ({formats}): the harness marks intermediate tensors in ONNX files "
                f"only; convert through ONNX (--path) to localize")
    path, input_layouts, output_layouts = onnx_files[-1]
    target_runs_it = path == prepared.files[-1][0]
    graph_inputs, graph_outputs = _file_ports(path)
    source_in, source_out = prepared.source_layouts
    ordered = [relaid(tensors[i.name], i.layout, source_in[i.name]) for i in spec.inputs]
    names_in = bound_names([i.name for i in spec.inputs], graph_inputs)
    names_out = bound_names([o.name for o in spec.outputs], graph_outputs)
    if names_in is None or names_out is None:
        return f"the inputs and outputs of {path.name} do not match the spec's names or count"
    feed = {name: np.asarray(relaid(x, source_in[i.name], input_layouts.get(i.name)), order="C")
            for name, i, x in zip(names_in, spec.inputs, ordered)}
    reference = prepared.source.run(prepared.model, ordered, case.reference_device)
    probe = layer_probe(case.source)
    layer_values = partial(probe.layer_values, prepared.model, ordered) if probe is not None else None
    case_session = partial(_case_outputs, prepared.session, names_in, names_out) if target_runs_it else None
    # the hops after the walked file, then the target: where a divergence the file does not show comes from
    after = list(case.path or ())[[f[0] for f in prepared.files].index(path) + 1:]
    return Walkable(
        case_id=case.id, target=case.target, device=case.device,
        precision=case.precision if case.lowered_by == RUNTIME else "fp32", options=options, onnx_file=path,
        target_runs_it=target_runs_it, feed=feed, output_names=dict(zip([o.name for o in spec.outputs], names_out)),
        output_layouts={o.name: (output_layouts.get(o.name), source_out[o.name]) for o in spec.outputs},
        reference_outputs={o.name: np.asarray(r) for o, r in zip(spec.outputs, reference)},
        layer_values=layer_values, source_name=case.source, versions=dict(prepared.versions),
        after=", then ".join([*after, case.target]), case_session=case_session)


def _case_outputs(session: Any, inputs: list[str], outputs: list[str],
                  feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The case's session (bound to the spec's order) on a feed by the file's names."""
    return dict(zip(outputs, (np.asarray(v) for v in session.run([feed[name] for name in inputs]))))


def layer_probe(source_name: str) -> ModuleType | None:
    """The module that maps a source's layers to ONNX tensors (`layer_values(model, inputs, onnx_model)`),
    `harness/localize/<source>_layers.py`, or None where the source has none: it lives here, not in the
    source, so that a source never imports localization code."""
    name = f"harness.localize.{source_name}_layers"
    if not source_name.isidentifier() or importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


def _file_ports(path: Path) -> tuple[list[str], list[str]]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in proto.graph.initializer}
    return [v.name for v in proto.graph.input if v.name not in weights], [v.name for v in proto.graph.output]
