"""Drives the examples of one prepared case: corners first, then hypothesis.

Every case first runs a fixed set of corner recipes (`inputs.corner_recipes`:
smallest and largest shapes, large magnitudes with the domain's ends, tiny
values), then hypothesis draws the rest of the budget. Each example goes
through `engine.run_example`. The worst example per output is kept for the
record. On a mismatch hypothesis shrinks toward the smallest failing recipe,
and the last failure seen is that shrunk one (hypothesis replays it last); a
failure only a corner shows is reported as that corner. A model that takes no
inputs (an ONNX graph of constants) is one run of each side, compared.

Counts: `examples` is the examples drawn (corners and hypothesis' search);
the calls hypothesis makes while shrinking are counted apart, in
`shrink_steps`; `first_failure_at` is the number of the first failing example.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, reject, settings
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.internal.conjecture import engine as conjecture_engine
from hypothesis.reporting import current_reporter, with_reporter

from harness.compare import OutputComparison, compare_outputs
from harness.engine import (ExampleOutcome, PreparedCase, distribution_outcome, measure_noise, reference_outputs,
                            run_example)
from harness.inputs import InputRecipe, corner_recipes, input_recipes, make_inputs, pick_dims
from harness.tolerances import NOISE_ALLOWANCE_LIMIT

# Draws of the reference for the input-sensitivity check, beside the first: an output that
# agrees, within its tolerance, across all of them does not depend on the input.
SENSITIVITY_DRAWS = 2

# A drawn example whose original gives NaN or Inf in more than this share of an
# output's elements is outside the domain the model means (acos of 2): it is
# redrawn, unless it fails (a mismatch is a mismatch). An output most of whose
# draws are redrawn is inconclusive; after REDRAW_LIMIT x the budget's redraws,
# the search's remaining draws run no model.
NONFINITE_SHARE = 0.1
REDRAW_LIMIT = 1

# Runs of one input through both sides of a case holding random operators,
# compared by distribution (the budget, when larger).
RANDOM_DRAWS = 20

# Shrinking a failure stops after this many seconds; the failure kept is the smallest one found
# by then, a real failing example either way (the record says `shrink_cut_s`). Each shrink step
# runs both models and, where the verdict needs it, the float64 twin: a weight changed deep inside
# EfficientNet took 102 steps and 122 s of a 144 s case, and a depthwise CNN's transposed
# input 102 steps and 24 s. Hypothesis' own limit, 300 s, is meant for one test, not a matrix
# of them (conjecture.engine.MAX_SHRINKING_SECONDS, which it documents as the one to monkeypatch).
SHRINK_SECONDS = 10.0


class ParityMismatch(AssertionError):
    """The converted model disagrees with the original on one example."""


@dataclass
class Exploration:
    examples: int = 0                 # drawn (corners and hypothesis' search), not counting shrink steps
    shrink_steps: int = 0             # calls hypothesis made while shrinking its first failure
    shrink_cut_s: float | None = None  # SHRINK_SECONDS, where shrinking stopped at it
    drawn_failure_clock: float = 0.0   # time.perf_counter() when the last failing example drawn was recorded
    corners: int = 0                  # of `examples`, the corner recipes
    first_failure_at: int | None = None   # the number of the first failing example drawn
    worst: dict[str, dict[str, Any]] = field(default_factory=dict)     # per output: comparison + noise + recipe
    failure: ExampleOutcome | None = None
    failure_recipe: InputRecipe | None = None
    failure_inputs: dict[str, np.ndarray] | None = None
    failure_corner: str | None = None  # the corner's name when only a corner failed
    errors: Counter = field(default_factory=Counter)   # the converted model's error kinds, with their counts
    sensitivity: dict[str, dict[str, Any]] = field(default_factory=dict)  # per output: see `input_sensitivity`
    # per output passed by its noise multiple: the largest error that multiple allowed, over max|ref|
    noise_allowance: dict[str, float] = field(default_factory=dict)
    # per output with NaN/Inf in the original: examples that had any, and the most NaN and Inf in one
    nonfinite: dict[str, dict[str, int]] = field(default_factory=dict)
    finite_compared: set[str] = field(default_factory=set)   # outputs with a finite value compared at least once
    compared: set[str] = field(default_factory=set)          # outputs compared at least once
    redrawn: Counter = field(default_factory=Counter)        # per output, draws redrawn for its NaN/Inf share

    @property
    def passed(self) -> bool:
        return self.failure is None

    @property
    def inconclusive(self) -> list[str]:
        """Outputs whose check could not have failed: they do not depend on the
        input, or they passed by a noise multiple that allowed almost any error."""
        loose = [name for name, allowed in self.noise_allowance.items() if allowed > NOISE_ALLOWANCE_LIMIT]
        found = [name for name, s in self.sensitivity.items() if s.get("inconclusive") or name in loose]
        return found + [name for name in self.nonfinite_reasons if name not in found]

    @property
    def nonfinite_reasons(self) -> dict[str, str]:
        """Outputs inconclusive for their NaN/Inf, with why: nothing finite was
        ever compared, or most draws were redrawn for it."""
        reasons = {}
        drawn = self.examples - self.corners
        for name in sorted(self.compared - self.finite_compared):
            reasons[name] = (f"{name} was NaN/Inf in every element on both sides in all {self.examples} examples: "
                             "no finite value was compared")
        for name, count in self.redrawn.items():
            if name not in reasons and count > drawn:
                reasons[name] = (f"{name}: {count} of {count + drawn} drawn examples were redrawn because the original "
                                 f"gave NaN/Inf in more than {NONFINITE_SHARE:.0%} of its elements; narrow the "
                                 "input's domain to the one the model means")
        return reasons

    def record(self, recipe: InputRecipe, tensors: dict[str, np.ndarray], outcome: ExampleOutcome,
               shrinking: bool = False) -> None:
        if shrinking:
            self.shrink_steps += 1
        else:
            self.examples += 1
        if outcome.error_kind:
            self.errors[outcome.error_kind] += 1
        for comparison in outcome.comparisons:
            self._count_nonfinite(comparison)
            noise = outcome.noise.get(comparison.name)
            if comparison.accepted_by == "noise" and comparison.max_ref:
                allowed = comparison.tolerance["noise_multiple"] * noise["noise_max_abs"] / comparison.max_ref
                self.noise_allowance[comparison.name] = max(allowed, self.noise_allowance.get(comparison.name, 0.0))
            ratio = _ratio(comparison)
            held = self.worst.get(comparison.name)
            if held is None or ratio > held["ratio"]:
                self.worst[comparison.name] = {"ratio": ratio, "comparison": comparison,
                                               "noise": outcome.noise.get(comparison.name), "recipe": recipe}
        if not outcome.passed:
            self.failure, self.failure_recipe, self.failure_inputs = outcome, recipe, tensors
            if not shrinking:
                self.drawn_failure_clock = time.perf_counter()
            if self.first_failure_at is None:
                self.first_failure_at = self.examples

    def _count_nonfinite(self, comparison: OutputComparison) -> None:
        if comparison.finite_elements is None:
            return   # shapes or dtypes differ: nothing was compared
        self.compared.add(comparison.name)
        if comparison.finite_elements:
            self.finite_compared.add(comparison.name)
        if comparison.ref_nan or comparison.ref_inf:
            held = self.nonfinite.setdefault(comparison.name, {"examples": 0, "most_nan": 0, "most_inf": 0})
            held["examples"] += 1
            held["most_nan"] = max(held["most_nan"], comparison.ref_nan)
            held["most_inf"] = max(held["most_inf"], comparison.ref_inf)


def mostly_nonfinite(outcome: ExampleOutcome) -> list[str]:
    """The outputs whose original is NaN/Inf in more than NONFINITE_SHARE of its elements."""
    return [c.name for c in outcome.comparisons
            if c.elements and (c.ref_nan + c.ref_inf) > NONFINITE_SHARE * c.elements]


def _ratio(comparison: OutputComparison) -> float:
    return comparison.error_ratio if comparison.error_ratio is not None else np.inf


def explore_case(prepared: PreparedCase, max_examples: int | None = None, database_key: str | None = None,
                 database_path: Path | None = None, corners: bool = True) -> Exploration:
    """Run the corner examples, then hypothesis-drawn ones, until one fails (then
    shrink it) or the budget is spent. The budget (`max_examples`, else the
    active hypothesis profile's) counts the corners too.

    database_path: where hypothesis keeps the failing examples it found; kept
    beside the reports, so that a failure found one night is tried first the next."""
    exploration = Exploration()
    budget = max_examples or settings.default.max_examples

    start = time.perf_counter()
    if prepared.case.random_ops:
        _compare_by_distribution(prepared, exploration, max(budget, RANDOM_DRAWS))
        prepared.timings["explore_s"] = time.perf_counter() - start
        return exploration
    if not prepared.spec.inputs:
        # Outputs fixed by the file alone: one run of each side is the whole check (nothing to draw, no
        # corner, nothing to shrink). Not inconclusive for ignoring an input it does not have: a target
        # that folds a constant wrongly fails the comparison.
        exploration.record(InputRecipe({}, {}, 0.0, 0), {}, run_example(prepared, {}))
        _worst_noise(prepared, exploration)
        prepared.timings["explore_s"] = time.perf_counter() - start
        return exploration
    known = _run_corners(prepared, exploration, budget) if corners else None
    corner_failure = exploration.failure
    if budget > exploration.corners:
        _search(prepared, exploration, budget - exploration.corners, database_key or prepared.case.id,
                database_path)
    if corner_failure is not None and exploration.failure is not corner_failure:
        exploration.failure_corner = None  # hypothesis found (and shrank) a failure of its own
    _worst_noise(prepared, exploration)
    exploration.sensitivity = input_sensitivity(prepared, known)
    prepared.timings["explore_s"] = time.perf_counter() - start
    return exploration


def _run_corners(prepared: PreparedCase, exploration: Exploration, budget: int
                 ) -> tuple[dict[str, int], list[list[np.ndarray]]] | None:
    """Run the corner examples (within the budget) until one fails; return the
    dims shared by most of them and the original's outputs at those dims, for
    the input-sensitivity check, or None where fewer than two share dims."""
    by_dims: dict[tuple, list[list[np.ndarray]]] = {}
    for name, recipe in corner_recipes(prepared.spec, prepared.distributions)[:budget]:
        tensors = _timed_inputs(prepared, recipe)
        outcome = run_example(prepared, tensors)
        exploration.record(recipe, tensors, outcome)
        exploration.corners += 1
        if outcome.reference is not None:
            by_dims.setdefault(tuple(sorted(recipe.dims.items())), []).append(outcome.reference)
        if not outcome.passed:
            exploration.failure_corner = name
            break
    dims, outputs = max(by_dims.items(), key=lambda item: len(item[1]), default=((), []))
    return (dict(dims), outputs) if len(outputs) >= 2 else None


def _compare_by_distribution(prepared: PreparedCase, exploration: Exploration, draws: int) -> None:
    """A case holding random operators: one input of small shapes run `draws`
    times through both sides (engine.distribution_outcome), never elementwise."""
    spec = prepared.spec
    recipe = InputRecipe(pick_dims(spec, "small"), {i.name: "normal" for i in spec.inputs}, 0.0, 0)
    tensors = _timed_inputs(prepared, recipe)
    outcome, drawn = distribution_outcome(prepared, tensors, draws)
    exploration.record(recipe, tensors, outcome)
    exploration.examples = drawn   # one input, run `drawn` times: each run is an example


def _worst_noise(prepared: PreparedCase, exploration: Exploration) -> None:
    """The noise floor of each output's worst example, where the verdict did not
    need it then: one run of the twin per distinct worst example."""
    names = [o.name for o in prepared.spec.outputs]
    if prepared.model64 is None or set(names) - set(exploration.worst):
        return
    for recipe in {id(w["recipe"]): w["recipe"] for w in exploration.worst.values() if w["noise"] is None}.values():
        comparisons = [exploration.worst[name]["comparison"] for name in names]
        noise = measure_noise(prepared, make_inputs(prepared.spec, recipe), comparisons)
        for name in names:
            held = exploration.worst[name]
            if held["recipe"] is recipe and held["noise"] is None:
                held["noise"] = noise.get(name)


def _timed_inputs(prepared: PreparedCase, recipe: InputRecipe) -> dict[str, np.ndarray]:
    start = time.perf_counter()
    tensors = make_inputs(prepared.spec, recipe)
    prepared.timings["inputs_s"] = prepared.timings.get("inputs_s", 0.0) + time.perf_counter() - start
    return tensors


def _search(prepared: PreparedCase, exploration: Exploration, max_examples: int, key: str,
            database_path: Path | None) -> None:
    spec = prepared.spec
    found = {"failure": False}  # hypothesis found one: every later call is a shrink step
    redraws = {"draws": 0}       # examples redrawn for the original's NaN/Inf share

    # check()'s source seeds the derandomized (ci) draws, hypothesis hashing it: an edit inside it
    # changes every case's examples, so what it must know goes through `exploration`.
    @settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        report_multiple_bugs=False,
        database=DirectoryBasedExampleDatabase(str(database_path)) if database_path else settings.default.database,
    )
    @given(input_recipes(spec, prepared.distributions))
    def check(recipe: InputRecipe) -> None:
        if redraws["draws"] >= REDRAW_LIMIT * max_examples:
            return   # redrawn enough: the rest of the budget runs no model (the case is inconclusive)
        tensors = _timed_inputs(prepared, recipe)
        outcome = run_example(prepared, tensors)
        heavy = mostly_nonfinite(outcome) if outcome.passed and not found["failure"] else []
        if heavy:
            redraws["draws"] += 1
            exploration.redrawn.update(heavy)
            reject()
        exploration.record(recipe, tensors, outcome, shrinking=found["failure"])
        if not outcome.passed:
            found["failure"] = True
            raise ParityMismatch(outcome.message)

    # Distinct database entries per case: otherwise every case shares one key
    # (same function source) and replays the others' failures.
    check.hypothesis.inner_test._hypothesis_internal_add_digest = key.encode()
    outer = current_reporter()
    limit = conjecture_engine.MAX_SHRINKING_SECONDS
    conjecture_engine.MAX_SHRINKING_SECONDS = SHRINK_SECONDS
    try:
        with with_reporter(lambda text: _report_unless_shrink_stop(text, outer)):
            check()
    except ParityMismatch:
        pass  # the failure and its shrunk inputs are in `exploration`
    finally:
        conjecture_engine.MAX_SHRINKING_SECONDS = limit
    # hypothesis shrinks from its first failure, the last failing example drawn (not a shrink step)
    if exploration.shrink_steps and time.perf_counter() - exploration.drawn_failure_clock >= SHRINK_SECONDS:
        exploration.shrink_cut_s = SHRINK_SECONDS


def _report_unless_shrink_stop(text: object, outer) -> None:
    """Hypothesis' reports, but for its two notes on a shrink it stopped (written for
    its own five minutes, asking for a bug report): the record's `shrink_cut_s` says it."""
    if isinstance(text, str) and ("stopped because it is making very slow progress" in text
                                  or "exited early because it took too long to shrink" in text):
        return
    outer(text)


def input_sensitivity(prepared: PreparedCase, known: tuple[dict[str, int], list[list[np.ndarray]]] | None = None
                      ) -> dict[str, dict[str, Any]]:
    """How each output responds to its input: the original's outputs for three
    inputs of one shape, each held against the first to the output's own
    tolerance. An output within tolerance of itself across them does not
    depend on the input (a randomly initialised classifier's softmax, a
    saturated activation): a converted model that returned a constant would pass
    its check too, so the check is inconclusive.

    known: (dims, the original's outputs) for inputs of those dims that already
    ran (the corners at middle shapes: large and tiny magnitudes), to which one
    more draw is added; without them, three draws of a small example (a batch
    of 2 or more) are run."""
    spec = prepared.spec
    dims, outputs = known if known else (pick_dims(spec, "small"), [])
    corners = len(corner_recipes(spec, prepared.distributions))
    seeds = range(corners, corners + SENSITIVITY_DRAWS + 1 - len(outputs))
    for seed in seeds:
        recipe = InputRecipe(dims, {i.name: "normal" for i in spec.inputs}, 0.0, seed)
        outputs = outputs + [reference_outputs(prepared, make_inputs(spec, recipe), timing="sensitivity_s")[1]]
    found: dict[str, dict[str, Any]] = {}
    for index, out in enumerate(spec.outputs):
        first = outputs[0][index]
        if first.size == 0 and all(other[index].shape == first.shape for other in outputs[1:]):
            # Empty on every draw: compared by shape and dtype alone, no value was ever checked.
            found[out.name] = {"ratio": 0.0, "inconclusive": True, "max_abs_change": 0.0, "draws": len(outputs),
                               "empty": True}
            continue
        # where a standard build's error judged the output, what it allowed (harness/precision_floor.py)
        tolerance = ((prepared.floor and prepared.floor.sensitivity_tolerance(out.name))
                     or prepared.tolerances[out.name].merged(noise_multiple=0.0))
        ratios = [compare_outputs(out.name, outputs[0][index], other[index], tolerance, out.class_axis,
                                  out.top_k).error_ratio
                  for other in outputs[1:]]
        if any(r is None for r in ratios):
            found[out.name] = {"ratio": None, "inconclusive": False}  # shapes differ: the input matters
            continue
        ratio = float(max(ratios))
        found[out.name] = {"ratio": ratio, "inconclusive": bool(ratio <= 1.0),
                           "max_abs_change": float(max(np.abs(outputs[0][index].astype(np.float64) - other[index])
                                                       .max() for other in outputs[1:])),
                           "draws": len(outputs)}
    return found
