"""Golden examples: inputs and outputs stored beside a model (ONNX's test-data
layout, `test_data_set_N/input_K.pb`, `output_K.pb`), checked on the target
before any drawn example and reported apart from them.

They are the model author's own word on what the model computes, so the
converted model is held against them, not against the harness's reference;
a golden set that does not match fails the case even where every drawn
example passes. Needing no reference, they also judge a target alone where
the reference cannot load the model or rejects the drawn inputs (the
runner's `_golden_only`), and they settle a case whose drawn examples could
not judge an output (the runner's `_judged_by_stored_sets`).

Their tolerance is not the case's. The case's float32 tolerance is tight
because the drawn examples have a reference checked against its float64
twin; stored outputs have no such twin and an unknown precision (ONNX's node
tests write some by hand, to 4 digits). So a stored set is judged as ONNX's
backend test judges its test-data folders: numpy.testing.assert_allclose's
|got - stored| <= atol + rtol * |stored| at rtol 1e-3, atol 1e-7, for every
numeric dtype (integers too, as assert_allclose does; a bfloat16 output at
rtol 2**-6, two of its ulps, as that test does), NaN matching NaN position by
position, dtypes equal. Tolerance fields given on the command
line for an output (--atol, --rtol, ...) replace those fields of it, as they
replace the case's. A case at a reduced precision (a hop or the runtime
lowered the model) keeps its own tolerance: the stored outputs are the
model's in its own types, and lowering moves them by that precision's error,
far beyond rtol 1e-3. The record keeps each output's tolerance
(`golden.tolerance`).

A graph with random operators (Case.random_ops) draws anew on every run,
and each stored set is one draw: its outputs are held to their shape and
dtype, never elementwise, and the record says so (`golden.compared`).

The user's own examples (`--parity-inputs`, loaded by user_inputs.py) run here
too (`check_user_inputs`): through both sides as the drawn examples do, and
those with stored outputs held to them by the same check (`check_stored_sets`),
whatever the source.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harness.compare import OutputComparison, compare_outputs, kind_mismatch
from harness.engine import PreparedCase, distribution_outcome, run_example, stored_outputs
from harness.explore import RANDOM_DRAWS
from harness.layouts import relaid
from harness.errors import summarize_exception
from harness.options import RunOptions
from harness.specs import Tolerance
from harness.tolerances import command_line_fields
from harness.user_inputs import UserExample

# What ONNX's backend test holds a test-data folder's outputs to (onnx.backend.test.case's
# default rtol and atol, compared by numpy.testing.assert_allclose).
STORED_SET_TOLERANCE = Tolerance(atol=1e-7, rtol=1e-3)
# ...and a bfloat16 output to two of its ulps (Runner.assert_similar_outputs: rtol max(rtol, 2**-6)).
STORED_BFLOAT16_RTOL = 2.0 ** -6

RANDOM_STORED_SETS = ("stored sets of a graph with random operators are one draw each: compared by shape and dtype, "
                      "never elementwise")


def stored_set_tolerances(prepared: PreparedCase, stored: list[np.ndarray],
                          tolerance_overrides: Mapping[str, Mapping[str, float]]) -> dict[str, Tolerance]:
    """Each output's tolerance against its stored outputs (see the module docstring);
    stored: one set's outputs in the spec's order."""
    if prepared.case.precision != "fp32":
        return dict(prepared.tolerances)
    bfloat16 = {o.name for o, array in zip(prepared.spec.outputs, stored) if np.asarray(array).dtype.name == "bfloat16"}
    return {o.name: STORED_SET_TOLERANCE.merged(**{**({"rtol": STORED_BFLOAT16_RTOL} if o.name in bfloat16 else {}),
                                                   **command_line_fields(tolerance_overrides, o.name)})
            for o in prepared.spec.outputs}


def check_golden(prepared: PreparedCase,
                 tolerance_overrides: Mapping[str, Mapping[str, float]]) -> dict[str, Any] | None:
    """Each stored set through the target, compared with its stored outputs
    under `stored_set_tolerances`; None where the model carries none.
    tolerance_overrides: the command line's (RunOptions.tolerance_overrides)."""
    if not prepared.golden:
        return None
    spec = prepared.spec
    # The stored tensors are named as the model's own inputs and outputs; bind() put them in the spec's order.
    feeds = getattr(prepared.model, "feeds", None) or [i.name for i in spec.inputs]
    sets = [({i.name: inputs[feed] for i, feed in zip(spec.inputs, feeds)},
             stored_outputs(prepared.model, spec, outputs), name) for inputs, outputs, name in prepared.golden]
    return {"folder": str(Path(spec.origin)), **check_stored_sets(prepared, sets, tolerance_overrides)}


def check_stored_sets(prepared: PreparedCase, sets: list[tuple[dict[str, np.ndarray], list[np.ndarray], str]],
                      tolerance_overrides: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Stored sets (inputs by the spec's names in the original's layouts, outputs in the spec's order,
    set name) through the target, each compared with its stored outputs under `stored_set_tolerances`."""
    spec = prepared.spec
    tolerances = stored_set_tolerances(prepared, sets[0][1], tolerance_overrides)
    artifact_in, artifact_out = prepared.artifact_layouts
    source_in, source_out = prepared.source_layouts
    compare = _shape_and_dtype if prepared.case.random_ops else compare_outputs
    results = []
    for inputs, outputs, name in sets:
        try:
            laid = [relaid(inputs[i.name], source_in[i.name], artifact_in[i.name]) for i in spec.inputs]
            got = prepared.session.run(laid)
        except Exception as error:  # the target refused the stored inputs: that set's failure, not the run's
            results.append({"set": name, "passed": False, "error": summarize_exception(error, 3)})
            continue
        comparisons = [compare(o.name, stored, relaid(g, artifact_out[o.name], source_out[o.name]),
                               tolerances[o.name], o.class_axis, o.top_k)
                       for o, stored, g in zip(spec.outputs, outputs, got)]
        results.append({"set": name, "passed": all(c.passed for c in comparisons),
                        "outputs": [c.to_json() for c in comparisons],
                        "message": "; ".join(c.message for c in comparisons if not c.passed)})
    golden = {"sets": len(results), "passed": sum(r["passed"] for r in results), "results": results}
    if prepared.case.random_ops:   # no tolerance was applied
        golden.update(compared="shape and dtype", note=RANDOM_STORED_SETS)
    else:
        golden["tolerance"] = {name: asdict(tolerance) for name, tolerance in tolerances.items()}
    return golden


def _shape_and_dtype(name: str, stored: np.ndarray, got: np.ndarray, *_: Any) -> OutputComparison:
    """A stored output of a graph with random operators: one draw, so its shape and dtype alone. No finite
    element is counted as compared, so such a set never settles an output the drawn examples could not judge."""
    stored, got = np.asarray(stored), np.asarray(got)
    mismatch = kind_mismatch(name, stored, got)
    return OutputComparison(name=name, passed=mismatch is None,
                            message=mismatch or f"{name}: shape and dtype match (one draw: values not compared)",
                            tolerance={}, ref_shape=tuple(stored.shape), got_shape=tuple(got.shape),
                            ref_dtype=str(stored.dtype), got_dtype=str(got.dtype), elements=int(stored.size))


def check_user_inputs(prepared: PreparedCase, options: RunOptions) -> tuple[dict[str, Any], UserExample | None]:
    """Each user example through both sides (the drawn examples' comparison, noise floor included), and those
    with stored outputs through the target against them (`check_stored_sets`). Returns the record's
    `user_inputs` entry and the first failing example (None where all pass)."""
    user = prepared.user_inputs
    source_in = prepared.source_layouts[0]
    results: list[dict[str, Any]] = [{"example": example.name, "passed": True} for example in user.examples]
    worst: dict[str, dict[str, Any]] = {}
    if prepared.reference_error is None:   # a reference to run them against
        for example, result in zip(user.examples, results):
            if prepared.case.random_ops:   # compared by distribution, as the drawn examples are (explore.py)
                outcome = distribution_outcome(prepared, example.inputs, RANDOM_DRAWS)[0]
            else:
                outcome = run_example(prepared, example.inputs)
            result.update(passed=outcome.passed, outputs=[c.to_json() for c in outcome.comparisons])
            if not outcome.passed:
                result["message"] = outcome.message
            for comparison in outcome.comparisons:
                ratio = comparison.error_ratio
                if ratio is not None and ratio >= worst.get(comparison.name, {}).get("error_ratio", -1.0):
                    worst[comparison.name] = {"error_ratio": ratio, "max_abs": comparison.max_abs,
                                              "example": example.name}
    stored = [(i, example) for i, example in enumerate(user.examples) if example.outputs is not None]
    entry: dict[str, Any] = {"path": user.path, "examples": len(user.examples)}
    if user.preprocess:   # an image folder: what its files became
        entry["preprocess"] = user.preprocess.to_json()
    if user.note:
        entry["note"] = user.note
    if stored:
        golden = check_stored_sets(prepared, [({inp.name: relaid(example.inputs[inp.name], inp.layout,
                                                                 source_in[inp.name]) for inp in prepared.spec.inputs},
                                               example.outputs, example.name) for _, example in stored],
                                   options.tolerance_overrides)
        for (index, _), outcome in zip(stored, golden["results"]):
            if not outcome["passed"]:
                results[index]["passed"] = False
                why = outcome.get("error") or outcome["message"]
                results[index]["message"] = "; ".join(filter(None, [results[index].get("message"),
                                                                    f"against its stored outputs: {why}"]))
        entry["stored_outputs"] = golden
    entry.update(passed=sum(r["passed"] for r in results), worst=worst, results=results)
    failing = next((example for example, r in zip(user.examples, results) if not r["passed"]), None)
    return entry, failing


def golden_failure(golden: dict[str, Any] | None) -> str | None:
    """The message of the first stored set the target does not match, or None."""
    if not golden:
        return None
    for result in golden["results"]:
        if not result["passed"]:
            why = result.get("error") or result["message"]
            note = f"; {golden['note']}" if "note" in golden else ""
            return (f"golden example {result['set']} of {golden['folder']} ({golden['passed']} of {golden['sets']} "
                    f"stored sets match): {why}{note}")
    return None

