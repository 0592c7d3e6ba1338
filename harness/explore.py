"""Drives hypothesis over one prepared case.

Hypothesis draws input recipes; each example goes through `engine.run_example`.
The worst example per output is kept for the record; on a mismatch hypothesis
shrinks toward the smallest failing recipe, and the last failure seen is that
shrunk one (hypothesis replays it last).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from harness.engine import ExampleOutcome, PreparedCase, run_example
from harness.inputs import InputRecipe, input_recipes, make_inputs


class ParityMismatch(AssertionError):
    """The converted model disagrees with the original on one example."""


@dataclass
class Exploration:
    examples: int = 0
    worst: dict[str, dict[str, Any]] = field(default_factory=dict)     # per output: comparison + noise + recipe
    failure: ExampleOutcome | None = None
    failure_recipe: InputRecipe | None = None
    failure_inputs: dict[str, np.ndarray] | None = None

    @property
    def passed(self) -> bool:
        return self.failure is None

    def record(self, recipe: InputRecipe, tensors: dict[str, np.ndarray], outcome: ExampleOutcome) -> None:
        self.examples += 1
        for comparison in outcome.comparisons:
            ratio = comparison.error_ratio if comparison.error_ratio is not None else np.inf
            held = self.worst.get(comparison.name)
            if held is None or ratio > held["ratio"]:
                self.worst[comparison.name] = {"ratio": ratio, "comparison": comparison,
                                               "noise": outcome.noise.get(comparison.name), "recipe": recipe}
        if not outcome.passed:
            self.failure, self.failure_recipe, self.failure_inputs = outcome, recipe, tensors


def explore_case(prepared: PreparedCase, max_examples: int | None = None, database_key: str | None = None,
                 database_path: Path | None = None) -> Exploration:
    """Run hypothesis-drawn examples through the case until one fails (then shrink
    it) or the budget is spent. Settings come from the active hypothesis profile.

    database_path: where hypothesis keeps the failing examples it found; kept
    beside the reports, so that a failure found one night is tried first the next."""
    exploration = Exploration()
    spec = prepared.spec

    @settings(
        max_examples=max_examples or settings.default.max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        report_multiple_bugs=False,
        database=DirectoryBasedExampleDatabase(str(database_path)) if database_path else settings.default.database,
    )
    @given(input_recipes(spec))
    def check(recipe: InputRecipe) -> None:
        tensors = make_inputs(spec, recipe)
        outcome = run_example(prepared, tensors)
        exploration.record(recipe, tensors, outcome)
        if not outcome.passed:
            raise ParityMismatch(outcome.message)

    # Distinct database entries per case: otherwise every case shares one key
    # (same function source) and replays the others' failures.
    check.hypothesis.inner_test._hypothesis_internal_add_digest = (database_key or prepared.case.id).encode()
    try:
        check()
    except ParityMismatch:
        pass  # the failure and its shrunk inputs are in `exploration`
    return exploration
