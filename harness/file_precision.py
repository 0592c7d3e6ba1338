"""The precision a target really computed a lowered file in, and the file
checked in its own reduced arithmetic as a second verdict.

Why: ONNX Runtime's CPU provider has few float16 kernels, so it computes most
of an fp16 file's ops in float32 (Casts inserted around them, the pairs between
consecutive float32 nodes removed), and its float16 LayerNormalization
accumulates in float32; OpenVINO, opened to run a file as its types say (an
f32 hint), computes an f16 file's layers in f32. An overflow the file carries
(a sum of squares past 65504) is then hidden on that target, and shows on a
GPU. Each runtime declares what it computes a file of each precision in, per
device (`COMPUTES`, `backends.runtime_computes`); where that is wider, the
last ONNX file on the case's path runs in onnx.reference, which computes
float16 in float16, on the case's worst examples, held to the reference under
the case's tolerances: a miss there fails the case as a failure of the file.

onnx is imported inside the functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.compare import compare_outputs
from harness.engine import PreparedCase, reference_outputs
from harness.errors import CaseError, summarize_exception
from harness.explore import Exploration
from harness.file_arithmetic import FILE_TYPES, computed_in
from harness.layouts import relaid

CHECKER = "onnx.reference"


def check_file(prepared: PreparedCase, examples: list[dict[str, np.ndarray]]) -> dict[str, Any] | None:
    """The record's "file_precision": what the target computed in, and the
    verdict of the last ONNX file on the path run in its own types on
    `examples` (tensors in the spec's layouts); None where the target computes
    the file as its types say."""
    case = prepared.case
    computed = computed_in(case)
    if computed is None:
        return None
    file_type = FILE_TYPES[case.precision]
    hidden = (f"computed in {computed} by {case.target} {case.device}: the file's {file_type} arithmetic unchecked "
              "there")
    onnx_files = [entry for entry in prepared.files if entry[0].suffix.lower() == ".onnx"]
    if case.random_ops:   # two runs of such a graph never agree element by element (explore.py)
        return {"computed_in": computed, "verdict": "unchecked",
                "message": f"{hidden}; random operators in the graph: not compared element by element"}
    if not onnx_files:
        return {"computed_in": computed, "verdict": "unchecked",
                "message": f"{hidden}; no ONNX file on the path for {CHECKER} to run in {file_type}"}
    from harness.runtimes.onnx_reference import Session

    path, file_in, file_out = onnx_files[-1]
    spec = prepared.spec
    try:
        session = Session(path, "cpu", None)
        binding = session.bind([i.name for i in spec.inputs], [i.dtype for i in spec.inputs],
                               [o.name for o in spec.outputs])
    except CaseError as error:
        return {"computed_in": computed, "verdict": "unchecked", "message": f"{hidden}; {error.message.splitlines()[0]}"}
    source_in, source_out = prepared.source_layouts
    for index, tensors in enumerate(examples, 1):
        ordered, reference = reference_outputs(prepared, tensors, timing="file_precision_s")
        laid_out = [relaid(x, source_in[i.name], file_in[i.name]) for i, x in zip(spec.inputs, ordered)]
        try:
            outputs = session.run(laid_out)
        except Exception as error:   # the evaluator's own limit: the target's verdict stands alone
            return {"computed_in": computed, "verdict": "unchecked",
                    "message": f"{hidden}; {CHECKER} raised on example {index}: {summarize_exception(error, 2)}"}
        got = [relaid(y, file_out[o.name], source_out[o.name]) for o, y in zip(spec.outputs, outputs)]
        comparisons = [compare_outputs(o.name, r, g, prepared.tolerances[o.name], o.class_axis, o.top_k,
                                       prepared.output_ranges.get(o.name))
                       for o, r, g in zip(spec.outputs, reference, got)]
        missed = [c for c in comparisons if not c.passed]
        if missed:
            feeds = {binding["inputs"][i.name]: x for i, x in zip(spec.inputs, laid_out)}
            try:
                overflow, alone = first_overflow(session.model, feeds)
                unsearched = (f" ({len(alone)} node(s) not searched, failing alone: {'; '.join(alone)})"
                              if alone else "")
            except Exception as error:   # onnx.reference's operators raise any type: the miss stands, its node unnamed
                overflow, unsearched = None, f" (its nodes not searched: {summarize_exception(error, 1)})"
            what = (f"overflows in {file_type} ({overflow})" if overflow
                    else f"misses its tolerance in {file_type}{unsearched}")
            return {"computed_in": computed, "verdict": "failed", "examples": index, "file": str(path),
                    "overflow": overflow, "outputs": {c.name: c.to_json() for c in comparisons},
                    "message": f"the {case.precision} file {path.name} {what} where {case.target} {case.device} "
                               f"computed it in {computed}, hiding it ({CHECKER}, example {index}): "
                               f"{'; '.join(c.message for c in missed)}"}
    return {"computed_in": computed, "verdict": "passed", "examples": len(examples), "file": str(path),
            "message": f"{hidden}; checked apart in {file_type} by {CHECKER} on {len(examples)} example(s): "
                       "within tolerance"}


def first_overflow(model: Any, feeds: dict[str, np.ndarray]) -> tuple[str | None, list[str]]:
    """The first node, in graph order, whose reduced-precision arithmetic
    overflows or turns invalid on these inputs, as "OpType 'name': what": each
    node run again alone on the values its inputs took, numpy's floating-point
    errors raised (inside a LayerNormalization the sum of squares overflows
    while its output stays finite); None where no node's does. With it, the
    nodes before it that could not run alone, each "OpType 'name': why". The
    evaluator's error is raised where it cannot run the graph for its
    intermediate values."""
    from onnx.reference import ReferenceEvaluator

    with np.errstate(all="ignore"):
        values = ReferenceEvaluator(model).run(None, feeds, intermediate=True)
    alone: list[str] = []
    for node in model.graph.node:
        given = {name: values[name] for name in node.input if name}
        made = [values[name] for name in node.output if name in values]
        # a Cast to float16 takes float32 and overflows as it writes: its outputs' types count too
        if not any(np.asarray(v).dtype.name in FILE_TYPES.values() for v in [*given.values(), *made]):
            continue   # a node kept in float32 computes as the target does
        try:
            with np.errstate(over="raise", invalid="raise"):
                ReferenceEvaluator(node).run(None, given)
        except FloatingPointError as error:
            return f"{node.op_type} {node.name!r}: {error}", alone
        except Exception as error:   # a node that cannot run alone (a subgraph's outer names; any type): the next may
            alone.append(f"{node.op_type} {node.name!r}: {summarize_exception(error, 1)}")
    return None, alone


def examples_to_check(prepared: PreparedCase, exploration: Exploration) -> list[dict[str, np.ndarray]]:
    """The inputs the file is checked on in its own types, in the spec's
    layouts: the failing one; or the corners the case ran (large magnitudes
    among them: the target's worst example may be tiny values, where nothing
    overflows) and each output's worst example, each distinct recipe once. The
    interpreter is slow, so not every drawn example."""
    from harness.inputs import corner_recipes, make_inputs

    if exploration.failure_inputs is not None:
        return [exploration.failure_inputs]
    ran = [recipe for _, recipe in corner_recipes(prepared.spec, prepared.distributions)[:exploration.corners]]
    recipes = {repr(recipe.to_json()): recipe for recipe in [*ran, *(held["recipe"] for held in
                                                                      exploration.worst.values())]}
    return [make_inputs(prepared.spec, recipe) for recipe in recipes.values()]
