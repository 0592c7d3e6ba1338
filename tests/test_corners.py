"""Corners first: bugs that show only at large magnitudes, with a batch above 1,
or at the largest shape are caught within the first few examples, each
beside its correct conversion that passes; and the counts say how many
examples were drawn and how many were shrinking steps."""

from __future__ import annotations

import pytest

from harness.inputs import corner_recipes
from harness.registry import load_model_file
from tests import planted


@pytest.fixture(scope="module")
def corner_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corners")
    path = folder / "corner_models.py"
    path.write_text(planted.CORNER_MODEL_FILE)
    specs = {spec.name: spec for spec in load_model_file(path)}
    files = {}
    for name, (_, buggy) in planted.CORNER_BUGS.items():
        files[f"{name}-correct"] = planted.export(specs[name].builders["torch"](), specs[name], folder / f"{name}-ok")
        files[f"{name}-buggy"] = planted.export(buggy(), specs[name], folder / f"{name}-bug")
    return path, files


@pytest.mark.parametrize("name", sorted(planted.CORNER_BUGS))
def test_correct_conversion_passes(run_parity, corner_models, name):
    path, files = corner_models
    run = run_parity(f"--model={path}", f"--converted={files[name + '-correct']}", "-k", name, examples=10)
    (record,) = [r for r in run.cases.values() if r["model"] == name]
    assert record["status"] == "passed", record["message"]
    assert record["examples"] == 10 and record["shrink_steps"] == 0 and record["first_failure_at"] is None


@pytest.mark.parametrize("name", sorted(planted.CORNER_BUGS))
def test_bug_at_a_corner_is_caught_in_the_first_examples(run_parity, corner_models, name):
    """dev's budget (10 examples): the corners catch each bug within the first 4."""
    path, files = corner_models
    run = run_parity(f"--model={path}", f"--converted={files[name + '-buggy']}", "-k", name, examples=10)
    (record,) = [r for r in run.cases.values() if r["model"] == name]
    assert record["status"] == "failed", record["message"]
    assert 1 <= record["first_failure_at"] <= len(corner_recipes(load_model_file(path)[0]))
    assert record["first_failure_at"] <= 4


def test_examples_count_draws_and_shrinking_apart(run_parity, corner_models):
    """A failure hypothesis shrinks: `examples` stays within the budget; the
    calls made while shrinking are counted in `shrink_steps`."""
    path, files = corner_models
    run = run_parity(f"--model={path}", f"--converted={files['per_sample-buggy']}", "-k", "per_sample",
                     "--no-parity-corners", examples=10)
    (record,) = run.cases.values()
    assert record["status"] == "failed"
    assert record["corner_examples"] == 0
    assert record["examples"] <= 10 and record["shrink_steps"] >= 1
    assert record["failure"]["corner"] is None and "shrunk failing input" in record["message"]
    summary = run.output[run.output.index("== parity =="):]
    assert f"{record['examples']} +{record['shrink_steps']}" in summary


def test_corner_recipes_cover_the_bounds_and_come_first(corner_models):
    path, _ = corner_models
    spec = {s.name: s for s in load_model_file(path)}["positions"]
    corners = dict(corner_recipes(spec))
    assert corners["smallest shapes"].dims == {"N": 1, "T": 4}
    assert corners["largest shapes"].dims == {"N": 2, "T": planted.MAX_T}
    extremes = corners["large magnitudes and the domain's ends"]
    assert extremes.dims["N"] >= 2 and extremes.special_fraction > 0
    assert set(extremes.distributions.values()) == {"large"}
    assert set(corners["tiny magnitudes"].distributions.values()) == {"tiny"}
