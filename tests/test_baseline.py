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


def test_improvements_new_and_vanished_are_listed_not_failing(run):
    baseline = copy.deepcopy(run)
    baseline["cases"]["simple-torch-onnxruntime-cpu"] = record("simple-torch-onnxruntime-cpu", "failed", ratio=2.0)
    baseline["cases"]["mlp-torch-onnxruntime-cpu"] = record("mlp-torch-onnxruntime-cpu", "error")
    for o in baseline["cases"]["cnn-keras-tflite-cpu"]["outputs"].values():
        o["normalized_error"] *= 1000
    baseline["cases"]["gone-torch-onnxruntime-cpu"] = record("gone-torch-onnxruntime-cpu")
    today = copy.deepcopy(run)
    today["cases"]["fresh-keras-onnxruntime-cpu"] = record("fresh-keras-onnxruntime-cpu")
    comparison = compare_to_baseline(today, baseline)
    assert not comparison.failed
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


def test_skipped_now_is_vanished_coverage_not_failure(run):
    today = copy.deepcopy(run)
    today["cases"]["cnn-keras-tflite-cpu"] = record("cnn-keras-tflite-cpu", "skipped")
    today["cases"]["cnn-keras-tflite-cpu"]["message"] = "tensorflow is not installed"
    comparison = compare_to_baseline(today, run)
    assert not comparison.failed
    assert [s.case_id for s in comparison.vanished_coverage] == ["cnn-keras-tflite-cpu"]
    assert "cnn-keras-tflite-cpu" not in comparison.unchanged
    text = "\n".join(render_comparison_text(comparison))
    assert "1 vanished coverage" in text and "tensorflow is not installed" in text


def test_inf_and_nan_metrics_do_not_crash(run):
    today = copy.deepcopy(run)
    today["cases"]["simple-torch-onnxruntime-cpu"] = record("simple-torch-onnxruntime-cpu", "failed")
    for o in today["cases"]["simple-torch-onnxruntime-cpu"]["outputs"].values():
        o["normalized_error"], o["error_ratio"] = "inf", "nan"
    comparison = compare_to_baseline(today, run)
    assert comparison.failed
    render_comparison_text(comparison)
    render_diff_html(diff_runs(run, today))


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


# ------------------------------------------------------------------ --compare-fail

@pytest.mark.parametrize("text, expected", [
    ("error:10x", {"error": 10.0}),
    ("error:10", {"error": 10.0}),
    ("error:2.5x", {"error": 2.5}),
    ("error:1000%", {"error": 11.0}),
    ("error:50%", {"error": 1.5}),
    (" error : 10x ", {"error": 10.0}),
    ("normalized_error:5x,error_ratio:20x", {"normalized_error": 5.0, "error_ratio": 20.0}),
])
def test_parse_compare_fail_good(text, expected):
    assert parse_compare_fail(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "error", "10x", "min:5%", "error:ten", "error:0.5x", "error:1x",
                                  "error:0%", "error:10y", "error:10x,", "error:-3x"])
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
