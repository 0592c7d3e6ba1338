"""Golden examples: inputs and outputs stored beside a model (ONNX's test-data
layout, `test_data_set_N/input_K.pb`, `output_K.pb`), checked on the target
before any drawn example and reported apart from them.

They are the model author's own word on what the model computes, so the
converted model is held against them, not against the harness's reference;
a golden set that does not match fails the case even where every drawn
example passes. Needing no reference, they also judge a target alone where
the reference cannot load the model or rejects the drawn inputs (the
runner's `_golden_only`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.compare import compare_outputs
from harness.engine import PreparedCase, stored_outputs
from harness.layouts import relaid
from harness.errors import summarize_exception


def check_golden(prepared: PreparedCase) -> dict[str, Any] | None:
    """Each stored set through the target, compared with its stored outputs
    under the outputs' tolerances; None where the model carries none."""
    if not prepared.golden:
        return None
    spec = prepared.spec
    artifact_in, artifact_out = prepared.artifact_layouts
    source_in, source_out = prepared.source_layouts
    # The stored tensors are named as the model's own inputs and outputs; bind() put them in the spec's order.
    feeds = getattr(prepared.model, "feeds", None) or [i.name for i in spec.inputs]
    results = []
    for inputs, outputs, name in prepared.golden:
        try:
            laid = [relaid(inputs[feed], source_in[i.name], artifact_in[i.name]) for i, feed in zip(spec.inputs, feeds)]
            got = prepared.session.run(laid)
        except Exception as error:  # the target refused the stored inputs: that set's failure, not the run's
            results.append({"set": name, "passed": False, "error": summarize_exception(error, 3)})
            continue
        comparisons = [compare_outputs(o.name, stored, relaid(g, artifact_out[o.name], source_out[o.name]),
                                       prepared.tolerances[o.name], o.class_axis, o.top_k)
                       for o, stored, g in zip(spec.outputs, stored_outputs(prepared.model, spec, outputs), got)]
        results.append({"set": name, "passed": all(c.passed for c in comparisons),
                        "outputs": [c.to_json() for c in comparisons],
                        "message": "; ".join(c.message for c in comparisons if not c.passed)})
    return {"folder": str(Path(spec.origin)), "sets": len(results), "passed": sum(r["passed"] for r in results),
            "results": results}


def golden_failure(golden: dict[str, Any] | None) -> str | None:
    """The message of the first stored set the target does not match, or None."""
    if not golden:
        return None
    for result in golden["results"]:
        if not result["passed"]:
            why = result.get("error") or result["message"]
            return (f"golden example {result['set']} of {golden['folder']} ({golden['passed']} of {golden['sets']} "
                    f"stored sets match): {why}")
    return None

