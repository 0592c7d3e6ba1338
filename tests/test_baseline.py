"""The baseline gate and the run diff (harness.report.baseline, `python -m harness diff`).

Results dicts are built by hand in the shape harness.results / harness.runner write."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.report.baseline import (BaselineError, compare_to_baseline, diff_runs, load_baseline,
                                     parse_compare_fail, render_comparison_text, render_diff_html,
                                     render_diff_text, save_baseline)

REPO = Path(__file__).resolve().parents[1]


def output(name: str, normalized: float, ratio: float) -> dict:
    return {"name": name, "passed": ratio <= 1.0, "max_abs": normalized * 2.0, "max_ref": 2.0,
            "normalized_error": normalized, "error_ratio": ratio,
            "recipe": {"dims": {"N": 1}, "seed": 0}}


def record(case_id: str, status: str = "passed", normalized: float = 3e-7, ratio: float = 0.02,
           examples: int = 3, seed: int = 0, versions: dict | None = None, outputs: tuple = ("output",)) -> dict:
    model, source, target, device = case_id.split("-")[:4]
    rec = {"id": case_id, "model": model, "source": source, "target": target, "device": device,
           "status": status, "message": f"{status} message", "examples": examples,
           "versions": dict(versions or {"torch": "2.13.0", "onnxruntime": "1.32.0"})}
    if status in ("passed", "failed"):
        rec["outputs"] = {n: output(n, normalized, ratio) for n in outputs}
        for o in rec["outputs"].values():
            o["recipe"]["seed"] = seed
        rec["worst_error_ratio"], rec["worst_normalized_error"] = ratio, normalized
    return rec


def results(*records: dict, versions: dict | None = None, examples: int = 3) -> dict:
    return {"schema": 1, "started": "2026-01-01T00:00:00+0000", "updated": "2026-01-01T00:01:00+0000",
            "environment": {"python": "3.11.7", "platform": "Linux", "machine": "x86_64",
                            "versions": dict(versions or {"torch": "2.13.0", "onnxruntime": "1.32.0"})},
            "run": {"options": {"examples": examples}},
            "cases": {r["id"]: r for r in records}}


@pytest.fixture
def run() -> dict:
    return results(record("simple-torch-onnxruntime-cpu"),
                   record("mlp-torch-onnxruntime-cpu", normalized=2e-7, ratio=0.015, outputs=("logits",)),
                   record("cnn-keras-tflite-cpu", normalized=5e-7, ratio=0.03, outputs=("features",)))


# ------------------------------------------------------------------ the gate

def test_unchanged_rerun_passes(run):
    comparison = compare_to_baseline(run, copy.deepcopy(run))
    assert not comparison.failed
    assert comparison.regressions == comparison.improvements == comparison.new == comparison.vanished == []
    assert sorted(comparison.unchanged) == sorted(run["cases"])
    assert "ok" in render_comparison_text(comparison)[0]


def test_rerun_with_other_seeds_and_examples_within_factor_passes(run):
    today = results(record("simple-torch-onnxruntime-cpu", normalized=9e-7, ratio=0.06, examples=50, seed=1234),
                    record("mlp-torch-onnxruntime-cpu", normalized=1e-7, ratio=0.008, examples=50, seed=99,
                           outputs=("logits",)),
                    record("cnn-keras-tflite-cpu", normalized=4e-6, ratio=0.25, examples=50, seed=7,
                           outputs=("features",)),
                    examples=50)
    # a different order of the cases changes nothing either
    today["cases"] = dict(reversed(list(today["cases"].items())))
    comparison = compare_to_baseline(today, run)
    assert not comparison.failed, render_comparison_text(comparison)
    assert len(comparison.unchanged) == 3


def test_error_grown_100x_while_passing_is_a_regression(run):
    baseline = copy.deepcopy(run)
    for rec in baseline["cases"].values():  # the baseline's errors 100x smaller than today's
        for o in rec["outputs"].values():
            o["normalized_error"] /= 100
            o["error_ratio"] /= 100
    comparison = compare_to_baseline(run, baseline)
    assert comparison.failed
    assert all(r["status"] == "passed" for r in run["cases"].values())
    growth = [r for r in comparison.regressions if r.kind == "growth"]
    assert {(r.case_id, r.metric) for r in growth} == {(c, m) for c in run["cases"]
                                                       for m in ("normalized_error", "error_ratio")}
    entry = next(r for r in growth if r.case_id == "simple-torch-onnxruntime-cpu" and r.metric == "normalized_error")
    assert entry.ratio == pytest.approx(100.0)
    assert entry.old == pytest.approx(3e-9) and entry.new == pytest.approx(3e-7)
    assert entry.output == "output"
    text = "\n".join(render_comparison_text(comparison))
    assert "FAILED" in text and "3 regressions" not in text and "6 regressions" in text
    assert "grew 100x" in text and "3e-09 -> 3e-07" in text


def test_growth_limit_is_configurable(run):
    baseline = copy.deepcopy(run)
    for o in baseline["cases"]["simple-torch-onnxruntime-cpu"]["outputs"].values():
        o["normalized_error"] /= 5
        o["error_ratio"] /= 5
    assert not compare_to_baseline(run, baseline).failed            # 5x < 10x
    assert compare_to_baseline(run, baseline, 4.0).failed             # 5x > 4x
    assert compare_to_baseline(run, baseline, parse_compare_fail("error:300%")).failed  # factor 4
    only_ratio = compare_to_baseline(run, baseline, parse_compare_fail("error_ratio:2x"))
    assert {r.metric for r in only_ratio.regressions} == {"error_ratio"}


def test_tiny_errors_are_floored(run):
    baseline, today = copy.deepcopy(run), copy.deepcopy(run)
    for o in baseline["cases"]["simple-torch-onnxruntime-cpu"]["outputs"].values():
        o["normalized_error"], o["error_ratio"] = 0.0, 0.0
    for o in today["cases"]["simple-torch-onnxruntime-cpu"]["outputs"].values():
        o["normalized_error"], o["error_ratio"] = 5e-9, 1e-12
    assert not compare_to_baseline(today, baseline).failed


def test_passed_now_failing_is_a_regression(run):
    today = copy.deepcopy(run)
    today["cases"]["mlp-torch-onnxruntime-cpu"] = record("mlp-torch-onnxruntime-cpu", "failed", normalized=4e-7,
                                                         ratio=1.5, outputs=("logits",))
    comparison = compare_to_baseline(today, run)
    assert comparison.failed
    status = [r for r in comparison.regressions if r.kind == "status"]
    assert [(r.case_id, r.old, r.new) for r in status] == [("mlp-torch-onnxruntime-cpu", "passed", "failed")]
    assert status[0].ratio == pytest.approx(100.0)
    assert "passed, now fails" in "\n".join(render_comparison_text(comparison))


def test_ran_now_erroring_is_a_regression(run):
    today = copy.deepcopy(run)
    today["cases"]["cnn-keras-tflite-cpu"] = record("cnn-keras-tflite-cpu", "error")
    baseline = copy.deepcopy(run)
    baseline["cases"]["simple-torch-onnxruntime-cpu"] = record("simple-torch-onnxruntime-cpu", "failed", ratio=3.0)
    today["cases"]["simple-torch-onnxruntime-cpu"] = record("simple-torch-onnxruntime-cpu", "error")
    comparison = compare_to_baseline(today, baseline)
    assert comparison.failed
    assert {(r.case_id, r.old, r.new) for r in comparison.regressions} == {
        ("cnn-keras-tflite-cpu", "passed", "error"), ("simple-torch-onnxruntime-cpu", "failed", "error")}


def test_improvements_and_new_are_listed_not_failing_vanished_fails_unless_allowed(run):
    baseline = copy.deepcopy(run)
    baseline["cases"]["simple-torch-onnxruntime-cpu"] = record("simple-torch-onnxruntime-cpu", "failed", ratio=2.0)
    baseline["cases"]["mlp-torch-onnxruntime-cpu"] = record("mlp-torch-onnxruntime-cpu", "error")
    for o in baseline["cases"]["cnn-keras-tflite-cpu"]["outputs"].values():
        o["normalized_error"] *= 1000
    baseline["cases"]["gone-torch-onnxruntime-cpu"] = record("gone-torch-onnxruntime-cpu")
    today = copy.deepcopy(run)
    today["cases"]["fresh-keras-onnxruntime-cpu"] = record("fresh-keras-onnxruntime-cpu")
    assert compare_to_baseline(today, baseline).failed  # a case that ran there vanished: this run covers less
    comparison = compare_to_baseline(today, baseline, allow_lost_coverage=True)
    assert not comparison.failed
    assert [c.case_id for c in comparison.lost_coverage] == ["gone-torch-onnxruntime-cpu"]
    assert {(i.case_id, i.kind) for i in comparison.improvements} == {
        ("simple-torch-onnxruntime-cpu", "status"), ("mlp-torch-onnxruntime-cpu", "status"),
        ("cnn-keras-tflite-cpu", "shrink")}
    assert [n.case_id for n in comparison.new] == ["fresh-keras-onnxruntime-cpu"]
    assert [v.case_id for v in comparison.vanished] == ["gone-torch-onnxruntime-cpu"]
    text = "\n".join(render_comparison_text(comparison))
    for heading in ("improvements:", "new cases:", "vanished cases:"):
        assert heading in text
    for case_id in ("fresh-keras-onnxruntime-cpu", "gone-torch-onnxruntime-cpu", "cnn-keras-tflite-cpu"):
        assert case_id in text


def test_skipped_now_is_lost_coverage_failing_unless_allowed(run):
    today = copy.deepcopy(run)
    today["cases"]["cnn-keras-tflite-cpu"] = record("cnn-keras-tflite-cpu", "skipped")
    today["cases"]["cnn-keras-tflite-cpu"]["message"] = "tensorflow is not installed"
    comparison = compare_to_baseline(today, run)
    assert comparison.failed and not comparison.regressions
    assert [s.case_id for s in comparison.vanished_coverage] == ["cnn-keras-tflite-cpu"]
    assert "cnn-keras-tflite-cpu" not in comparison.unchanged
    text = "\n".join(render_comparison_text(comparison))
    assert text.startswith("parity baseline: FAILED") and "1 lost coverage" in text
    assert "1 vanished coverage" in text and "tensorflow is not installed" in text
    assert "--parity-allow-lost-coverage" in text
    allowed = compare_to_baseline(today, run, allow_lost_coverage=True)
    assert not allowed.failed
    assert "ok" in render_comparison_text(allowed)[0] and "allowed by" in "\n".join(render_comparison_text(allowed))


def test_every_case_skipped_now_fails(run):
    today = copy.deepcopy(run)
    for case_id in today["cases"]:
        today["cases"][case_id] = record(case_id, "skipped")
    comparison = compare_to_baseline(today, run)
    assert comparison.failed and len(comparison.lost_coverage) == 3


def test_error_now_skipped_is_lost_coverage_but_a_skip_that_vanished_is_not(run):
    baseline = copy.deepcopy(run)
    baseline["cases"]["mlp-torch-onnxruntime-cpu"] = record("mlp-torch-onnxruntime-cpu", "error")
    baseline["cases"]["old-torch-onnxruntime-cuda"] = record("old-torch-onnxruntime-cuda", "skipped")
    today = copy.deepcopy(run)
    today["cases"]["mlp-torch-onnxruntime-cpu"] = record("mlp-torch-onnxruntime-cpu", "skipped")
    comparison = compare_to_baseline(today, baseline)
    assert [c.case_id for c in comparison.lost_coverage] == ["mlp-torch-onnxruntime-cpu"]
    assert [c.case_id for c in comparison.vanished] == ["old-torch-onnxruntime-cuda"]  # listed, never ran: not lost


def test_all_case_ids_changed_fails_and_says_so(run):
    today = results(*(record(case_id.replace("-cpu", "-cpu-nchw")) for case_id in run["cases"]))
    comparison = compare_to_baseline(today, run)
    assert comparison.failed and comparison.matched == 0
    assert len(comparison.lost_coverage) == 3 and len(comparison.new) == 3
    assert "no case id of the baseline is in this run" in "\n".join(render_comparison_text(comparison))
    assert not compare_to_baseline(today, run, allow_lost_coverage=True).failed


def nan_case(case_id: str, outputs: tuple = ("output",)) -> dict:
    """A failed case whose output went NaN, as the harness writes it (to_jsonable: "inf", "nan")."""
    rec = record(case_id, "failed", outputs=outputs)
    rec["worst_error_ratio"], rec["worst_normalized_error"] = "inf", "nan"
    for o in rec["outputs"].values():
        o["normalized_error"], o["error_ratio"] = "nan", "inf"
    return rec


def test_inf_and_nan_metrics_do_not_crash(run):
    today = copy.deepcopy(run)
    today["cases"]["simple-torch-onnxruntime-cpu"] = nan_case("simple-torch-onnxruntime-cpu")
    comparison = compare_to_baseline(today, run)
    assert comparison.failed
    render_comparison_text(comparison)
    render_diff_html(diff_runs(run, today))


def test_nan_baseline_case_fixed_now_is_an_improvement(run):
    """The baseline's NaN case used to crash the gate (1 / a drift of 0): now it is a summary."""
    baseline = copy.deepcopy(run)
    baseline["cases"]["simple-torch-onnxruntime-cpu"] = nan_case("simple-torch-onnxruntime-cpu")
    comparison = compare_to_baseline(run, baseline)
    assert not comparison.failed
    assert ("simple-torch-onnxruntime-cpu", "status") in {(i.case_id, i.kind) for i in comparison.improvements}
    text = render_diff_text(diff_runs(baseline, run))
    assert "parity diff: ok" in text and "nan -> 3e-07" in text


def test_finite_metric_turned_non_finite_is_a_regression_and_nan_twice_is_unchanged(run):
    baseline, today = copy.deepcopy(run), copy.deepcopy(run)
    baseline["cases"]["simple-torch-onnxruntime-cpu"]["outputs"]["output"]["error_ratio"] = 0.5
    today["cases"]["simple-torch-onnxruntime-cpu"]["outputs"]["output"]["error_ratio"] = "inf"  # passed, as written
    comparison = compare_to_baseline(today, baseline)
    (growth,) = comparison.regressions
    assert (growth.case_id, growth.metric, growth.new) == ("simple-torch-onnxruntime-cpu", "error_ratio", "inf")
    assert "became inf" in growth.what
    baseline["cases"]["mlp-torch-onnxruntime-cpu"] = nan_case("mlp-torch-onnxruntime-cpu", ("logits",))
    today["cases"]["mlp-torch-onnxruntime-cpu"] = nan_case("mlp-torch-onnxruntime-cpu", ("logits",))
    assert "mlp-torch-onnxruntime-cpu" in compare_to_baseline(today, baseline).unchanged
    today["cases"]["mlp-torch-onnxruntime-cpu"] = record("mlp-torch-onnxruntime-cpu", "failed", ratio=3.0,
                                                         outputs=("logits",))
    finite_again = compare_to_baseline(today, baseline).improvements
    assert {c.what for c in finite_again if c.case_id == "mlp-torch-onnxruntime-cpu"} == {
        "logits: normalized_error finite again (was nan)", "logits: error_ratio finite again (was inf)"}


@pytest.mark.parametrize("value", ["abc", "1e-3", [0.1], {"max": 1}, True])
def test_metric_that_is_not_a_number_is_not_ok(run, value):
    baseline = copy.deepcopy(run)
    baseline["cases"]["mlp-torch-onnxruntime-cpu"]["outputs"]["logits"]["normalized_error"] = value
    comparison = compare_to_baseline(run, baseline)
    assert comparison.failed and not comparison.regressions
    (entry,) = comparison.uncomparable
    assert (entry.case_id, entry.output, entry.metric) == ("mlp-torch-onnxruntime-cpu", "logits", "normalized_error")
    text = "\n".join(render_comparison_text(comparison))
    assert text.startswith("parity baseline: FAILED") and "1 not comparable" in text and "not a number" in text


def test_metric_not_measured_on_one_side_is_listed_not_failing(run):
    baseline = copy.deepcopy(run)
    baseline["cases"]["mlp-torch-onnxruntime-cpu"]["outputs"]["logits"]["error_ratio"] = None  # an empty output
    comparison = compare_to_baseline(run, baseline)
    assert not comparison.failed
    assert [c.what for c in comparison.changed] == ["logits: error_ratio not measured in the baseline"]


# ------------------------------------------------------------------ whole-output scores and agreements

def scored(run: dict, **metrics) -> dict:
    """A copy of `run` whose every output carries `metrics` (cosine=..., snr_db=..., top1_agreement=...)."""
    scored_run = copy.deepcopy(run)
    for rec in scored_run["cases"].values():
        for o in rec["outputs"].values():
            o.update(metrics)
    return scored_run


def test_an_snr_drop_beyond_20_db_fails_the_gate_and_a_smaller_one_passes(run):
    baseline = scored(run, snr_db=45.0)
    assert not compare_to_baseline(scored(run, snr_db=45.0), baseline).failed
    assert not compare_to_baseline(scored(run, snr_db=26.0), baseline).failed     # 19 dB: the error grew 8.9x
    comparison = compare_to_baseline(scored(run, snr_db=24.0), baseline)          # 21 dB: 11.2x
    assert comparison.failed
    assert {(r.metric, r.kind) for r in comparison.regressions} == {("snr_db", "drop")}
    assert len(comparison.regressions) == 3 and not comparison.improvements
    text = "\n".join(render_comparison_text(comparison))
    assert "output: snr_db fell 45 -> 24 dB, by 21 dB (limit 20 dB) while still passing" in text
    assert "snr_db 10x (20 dB)" in text
    assert not compare_to_baseline(scored(run, snr_db=24.0), baseline, parse_compare_fail("snr_db:100x")).failed
    assert compare_to_baseline(scored(run, snr_db=40.0), baseline, parse_compare_fail("error:1.5x")).failed  # 5 dB
    risen = compare_to_baseline(baseline, scored(run, snr_db=24.0))
    assert not risen.failed and {i.kind for i in risen.improvements} == {"rise"}


def test_snr_without_error_is_floored_and_one_below_nothing_regresses(run):
    perfect = scored(run, snr_db="inf")   # as to_jsonable writes an output without error
    assert not compare_to_baseline(scored(run, snr_db=130.0), perfect).failed   # both beyond SCORE_FLOOR's 120 dB
    assert compare_to_baseline(scored(run, snr_db=90.0), perfect).failed
    worse_than_nothing = compare_to_baseline(scored(run, snr_db="-inf"), scored(run, snr_db=30.0))
    assert worse_than_nothing.failed and "snr_db became -inf" in worse_than_nothing.regressions[0].what


def test_cosine_is_held_as_the_error_it_implies(run):
    baseline = scored(run, cosine=1 - 1e-6)
    # 1 - cos grows as the square of the error: 100x is the error's 10x, at the limit
    assert not compare_to_baseline(scored(run, cosine=1 - 1e-4), baseline).failed
    grown = compare_to_baseline(scored(run, cosine=1 - 4e-4), baseline)   # the error's 20x
    assert grown.failed and {r.metric for r in grown.regressions} == {"cosine"}
    assert "cosine fell 0.999999 -> 0.9996: the error it implies grew 20x (limit 10x)" in grown.regressions[0].what
    assert not compare_to_baseline(scored(run, cosine=1 - 4e-4), baseline, parse_compare_fail("cosine:25x")).failed
    # float32 rounding of a clean conversion (1 - cos far below 5e-13) is no change at all
    assert not compare_to_baseline(scored(run, cosine=1 - 1e-13), scored(run, cosine=1.0)).failed
    assert compare_to_baseline(scored(run, cosine="nan"), baseline).failed


def test_an_agreement_drop_beyond_its_slack_fails(run):
    baseline = scored(run, top1_agreement=1.0, topk_overlap=0.96)
    assert not compare_to_baseline(scored(run, top1_agreement=1.0, topk_overlap=0.95), baseline).failed   # 0.01
    flipped = compare_to_baseline(scored(run, top1_agreement=0.75, topk_overlap=0.96), baseline)
    assert flipped.failed and {(r.metric, r.kind) for r in flipped.regressions} == {("top1_agreement", "drop")}
    assert "output: top1_agreement dropped 1 -> 0.75 (allowed 0.01) while still passing" in \
        "\n".join(render_comparison_text(flipped))
    assert not compare_to_baseline(scored(run, top1_agreement=0.75), baseline, parse_compare_fail("agreement:30%")).failed
    assert compare_to_baseline(scored(run, topk_overlap=0.9), baseline, parse_compare_fail("top1_agreement:0.5")).failed
    assert compare_to_baseline(scored(run, top1_agreement=1.5), baseline).uncomparable   # not a fraction


def test_a_baseline_from_before_the_scores_still_compares(run):
    """Old files have no snr_db or agreements: nothing to compare there, no change listed, no coverage lost."""
    today = scored(run, snr_db=12.0, cosine=0.5, top1_agreement=0.0, topk_overlap=0.0)
    old = copy.deepcopy(run)
    comparison = compare_to_baseline(today, old)
    assert not comparison.failed and not comparison.lost_coverage
    assert comparison.changed == [] and sorted(comparison.unchanged) == sorted(run["cases"])
    assert not compare_to_baseline(old, today).failed   # and the other way round
    # a metric measured on both sides but null on one (no class axis declared then) is listed, not failing
    both = compare_to_baseline(scored(run, top1_agreement=1.0), scored(run, top1_agreement=None))
    assert not both.failed and {c.what for c in both.changed} == {"output: top1_agreement not measured in the baseline",
                                                                  "logits: top1_agreement not measured in the baseline",
                                                                  "features: top1_agreement not measured in the baseline"}


# ------------------------------------------------------------------ saving

def test_save_baseline_writes_json_and_refuses_to_overwrite(run, tmp_path):
    path = tmp_path / "baselines" / "parity-baseline.json"
    assert save_baseline(run, path) == path
    saved = json.loads(path.read_text())
    assert saved["cases"] == run["cases"] and saved["environment"] == run["environment"]
    assert "baseline_saved" in saved
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    with pytest.raises(BaselineError) as info:
        save_baseline(results(), path)
    assert str(path) in str(info.value) and "--parity-save-baseline-force" in str(info.value)
    assert json.loads(path.read_text())["cases"] == run["cases"]  # untouched
    save_baseline(results(), path, force=True)
    assert load_baseline(path)["cases"] == {}


def test_load_baseline_names_the_file(tmp_path):
    with pytest.raises(BaselineError, match="missing.json"):
        load_baseline(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BaselineError, match="bad.json.*not valid JSON"):
        load_baseline(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(BaselineError, match="list.json"):
        load_baseline(tmp_path / "list.json")


def other_shapes() -> list:
    good = results(record("simple-torch-onnxruntime-cpu"))
    shapes = {"not an object": (["cases"], "holds an array"),
              "no schema": ({k: v for k, v in good.items() if k != "schema"}, "no 'schema' field"),
              "another schema": ({**good, "schema": 2}, "of schema 2"),
              "cases a list": ({**good, "cases": []}, "'cases' is an array"),
              "environment a list": ({**good, "environment": ["torch"]}, "'environment'")}
    for name, case, expected in (
            ("case a string", "passed", "is a string"),
            ("case without status", {"outputs": {}}, "status None"),
            ("unknown status", {"status": "ok"}, "status 'ok'"),
            ("outputs a list", {"status": "passed", "outputs": [1]}, "'outputs' is an array"),
            ("output a number", {"status": "passed", "outputs": {"y": 1.0}}, "output 'y' is a number"),
            ("versions a string", {"status": "passed", "versions": "2.13"}, "'versions' is a string")):
        shapes[name] = ({**good, "cases": {"simple-torch-onnxruntime-cpu": case}}, expected)
    return [pytest.param(data, expected, id=name) for name, (data, expected) in shapes.items()]


@pytest.mark.parametrize("data, expected", other_shapes())
def test_baseline_of_another_shape_is_one_message(tmp_path, data, expected):
    path = tmp_path / "other.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BaselineError) as info:
        load_baseline(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a parity results file of schema 1") and expected in message
    assert "--parity-save-baseline" in message  # what to do


# ------------------------------------------------------------------ --compare-fail

@pytest.mark.parametrize("text, expected", [
    ("error:10x", {"error": 10.0}),
    ("error:10", {"error": 10.0}),
    ("error:2.5x", {"error": 2.5}),
    ("error:1000%", {"error": 11.0}),
    ("error:50%", {"error": 1.5}),
    (" error : 10x ", {"error": 10.0}),
    ("normalized_error:5x,error_ratio:20x", {"normalized_error": 5.0, "error_ratio": 20.0}),
    ("cosine:5x,snr_db:100", {"cosine": 5.0, "snr_db": 100.0}),
    ("top1_agreement:2%,topk_overlap:0.05", {"top1_agreement": 0.02, "topk_overlap": 0.05}),
    ("agreement:0", {"agreement": 0.0}),
])
def test_parse_compare_fail_good(text, expected):
    assert parse_compare_fail(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "error", "10x", "min:5%", "error:ten", "error:0.5x", "error:1x",
                                  "error:0%", "error:10y", "error:10x,", "error:-3x", "snr_db:1x",
                                  "top1_agreement:2x", "agreement:1", "agreement:100%"])
def test_parse_compare_fail_bad(text):
    with pytest.raises(BaselineError, match="error:10x"):
        parse_compare_fail(text)


# ------------------------------------------------------------------ diff

def drifted(run: dict) -> dict:
    today = copy.deepcopy(run)
    today["environment"]["versions"]["onnxruntime"] = "1.33.0"
    for rec in today["cases"].values():
        rec["versions"]["onnxruntime"] = "1.33.0"
    today["cases"]["mlp-torch-onnxruntime-cpu"]["versions"]["onnxscript"] = "0.8.0"
    for o in today["cases"]["mlp-torch-onnxruntime-cpu"]["outputs"].values():
        o["normalized_error"] *= 100
        o["error_ratio"] *= 30
    for o in today["cases"]["cnn-keras-tflite-cpu"]["outputs"].values():
        o["normalized_error"] *= 3
    return today


def test_diff_runs_versions_and_drift_order(run):
    diff = diff_runs(run, drifted(run))
    assert diff.failed
    env = [v for v in diff.versions if v.scope == "environment"]
    assert [(v.package, v.old, v.new) for v in env] == [("onnxruntime", "1.32.0", "1.33.0")]
    assert len(env[0].cases) == 3
    assert [(v.package, v.old, v.new, v.cases) for v in diff.versions if v.scope == "cases"] == [
        ("onnxscript", None, "0.8.0", ["mlp-torch-onnxruntime-cpu"])]
    assert [(d.case_id, d.regression) for d in diff.drifts] == [
        ("mlp-torch-onnxruntime-cpu", True), ("cnn-keras-tflite-cpu", False), ("simple-torch-onnxruntime-cpu", False)]
    assert diff.drifts[0].normalized_drift == pytest.approx(100) and diff.drifts[0].ratio_drift == pytest.approx(30)
    text = render_diff_text(diff)
    assert text.index("onnxruntime: 1.32.0 -> 1.33.0") < text.index("mlp-torch-onnxruntime-cpu")
    page = render_diff_html(diff)
    assert "<table" in page and "class='regression'" in page and "1.33.0" in page
    assert "http" not in page and "<script" not in page and "<link" not in page


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "harness", "diff", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_diff_on_planted_drift(run, tmp_path):
    (tmp_path / "old.json").write_text(json.dumps(run))
    (tmp_path / "new.json").write_text(json.dumps(drifted(run)))
    done = cli("old.json", "new.json", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert out.startswith("versions")
    assert out.index("onnxruntime: 1.32.0 -> 1.33.0") < out.index("regressions:")
    assert "mlp-torch-onnxruntime-cpu" in out and "REGRESSION" in out
    page = tmp_path / "new.diff.html"
    assert page.exists() and "class='regression'" in page.read_text()
    # the same drift, tolerated by a looser limit; the HTML where asked
    done = cli("old.json", "new.json", "--compare-fail", "error:200x", "--html", "out/d.html", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / "d.html").exists()


def test_cli_diff_identical_and_unreadable(run, tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(run))
    (tmp_path / "b.json").write_text(json.dumps(run))
    done = cli("a.json", "b.json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no version changed" in done.stdout
    done = cli("a.json", "missing.json", cwd=tmp_path)
    assert done.returncode == 2 and "missing.json" in done.stderr
    (tmp_path / "broken.json").write_text("{")
    done = cli("broken.json", "a.json", cwd=tmp_path)
    assert done.returncode == 2 and "broken.json" in done.stderr
    done = cli("a.json", "b.json", "--compare-fail", "min:5%", cwd=tmp_path)
    assert done.returncode == 2 and "error:10x" in done.stderr


def test_cli_diff_nan_baseline_prints_a_summary(run, tmp_path):
    baseline = copy.deepcopy(run)
    baseline["cases"]["simple-torch-onnxruntime-cpu"] = nan_case("simple-torch-onnxruntime-cpu")
    (tmp_path / "old.json").write_text(json.dumps(baseline))
    (tmp_path / "new.json").write_text(json.dumps(run))
    done = cli("old.json", "new.json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "parity diff: ok" in done.stdout and "Traceback" not in done.stderr
    done = cli("new.json", "old.json", cwd=tmp_path)  # the other way: passed, now NaN
    assert done.returncode == 1 and "parity diff: FAILED" in done.stdout and "now fails" in done.stdout


def test_cli_diff_exits_1_when_the_new_run_covers_less(run, tmp_path):
    skipped = copy.deepcopy(run)
    for case_id in skipped["cases"]:
        skipped["cases"][case_id] = record(case_id, "skipped")
    renamed = results(*(record(case_id + "-nchw") for case_id in run["cases"]))
    (tmp_path / "old.json").write_text(json.dumps(run))
    (tmp_path / "skipped.json").write_text(json.dumps(skipped))
    (tmp_path / "renamed.json").write_text(json.dumps(renamed))
    for new in ("skipped.json", "renamed.json"):
        done = cli("old.json", new, cwd=tmp_path)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "parity diff: FAILED: 0 regressions, 3 lost coverage" in done.stdout
        assert "--allow-lost-coverage" in done.stdout
        allowed = cli("old.json", new, "--allow-lost-coverage", cwd=tmp_path)
        assert allowed.returncode == 0, allowed.stdout + allowed.stderr
        assert "parity diff: ok" in allowed.stdout
    assert "no case id of the baseline is in this run" in cli("old.json", "renamed.json", cwd=tmp_path).stdout


def test_cli_diff_metric_not_a_number_exits_1(run, tmp_path):
    edited = copy.deepcopy(run)
    edited["cases"]["mlp-torch-onnxruntime-cpu"]["outputs"]["logits"]["error_ratio"] = "small"
    (tmp_path / "old.json").write_text(json.dumps(edited))
    (tmp_path / "new.json").write_text(json.dumps(run))
    done = cli("old.json", "new.json", cwd=tmp_path)
    assert done.returncode == 1 and "1 not comparable" in done.stdout and "'small'" in done.stdout


@pytest.mark.parametrize("data, expected", other_shapes())
def test_cli_diff_baseline_of_another_shape_exits_2_without_traceback(run, tmp_path, data, expected):
    (tmp_path / "other.json").write_text(json.dumps(data))
    (tmp_path / "new.json").write_text(json.dumps(run))
    done = cli("other.json", "new.json", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "other.json: not a parity results file" in done.stderr and expected in done.stderr
    assert "Traceback" not in done.stderr and not done.stdout
