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
(`golden.tolerance`). A set runs through the drawn examples' own runner
(engine.run_example, its stored outputs in the original's place), so it is
treated as they are: a tolerance that scales with the output's range takes the
range over the calibration feed, and a reduced precision's floor, saturation
and argmax verdicts apply; only the noise floor does not (the float64 twin
measures the original's error, not the stored outputs').

A graph with random operators (Case.random_ops) draws anew on every run,
and each stored set is one draw: its outputs are held to their shape and
dtype, never elementwise, and the record says so (`golden.compared`).

The user's own examples (`--parity-inputs`, loaded by user_inputs.py) run here
too (`check_user_inputs`): through both sides as the drawn examples do, and
those with stored outputs held to them by the same check (`check_stored_sets`),
whatever the source.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harness.compare import OutputComparison, kind_mismatch
from harness.engine import PreparedCase, distribution_outcome, run_example, stored_outputs
from harness.explore import RANDOM_DRAWS
from harness.layouts import relaid
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
    source_in = prepared.source_layouts[0]
    # The stored tensors are named as the model's own inputs and outputs, in its layouts; bind() put them in the
    # spec's order.
    feeds = getattr(prepared.model, "feeds", None) or [i.name for i in spec.inputs]
    sets = [({i.name: relaid(inputs[feed], source_in[i.name], i.layout) for i, feed in zip(spec.inputs, feeds)},
             stored_outputs(prepared.model, spec, outputs), name) for inputs, outputs, name in prepared.golden]
    return {"folder": str(Path(spec.origin)), **check_stored_sets(prepared, sets, tolerance_overrides)}


def check_stored_sets(prepared: PreparedCase, sets: list[tuple[dict[str, np.ndarray], list[np.ndarray], str]],
                      tolerance_overrides: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Stored sets (inputs by the spec's names in its layouts, outputs in the spec's order and the original's
    layouts, set name) through the target by the drawn examples' runner (engine.run_example: the output ranges,
    the precision's floor and its other verdicts apply alike), each compared with its stored outputs under
    `stored_set_tolerances`."""
    tolerances = stored_set_tolerances(prepared, sets[0][1], tolerance_overrides)
    # the same case held to the stored sets' tolerances (a copy: the drawn examples keep the case's own)
    held = replace(prepared, tolerances=tolerances)
    results = []
    for inputs, outputs, name in sets:
        outcome = run_example(held, inputs, expected=outputs, elementwise=not prepared.case.random_ops)
        if outcome.error:   # the target refused the stored inputs: that set's failure, not the run's
            results.append({"set": name, "passed": False, "error": outcome.error})
            continue
        comparisons = (outcome.comparisons if not prepared.case.random_ops else
                       [_shape_and_dtype(o.name, stored, got)
                        for o, stored, got in zip(prepared.spec.outputs, outputs, outcome.converted)])
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
        golden = check_stored_sets(prepared, [(example.inputs, example.outputs, example.name) for _, example in stored],
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

