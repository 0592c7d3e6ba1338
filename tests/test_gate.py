"""The regression gate through pytest: --parity-save-baseline, --parity-baseline,
--parity-compare-fail. It must fail on planted regressions and pass on an
unchanged rerun."""

from __future__ import annotations

import json
import shutil

import pytest


def _shrink_errors(baseline: dict, factor: float) -> dict:
    for record in baseline["cases"].values():
        for key in ("worst_error_ratio", "worst_normalized_error"):
            if isinstance(record.get(key), float):
                record[key] *= factor
        for output in (record.get("outputs") or {}).values():
            for key in ("error_ratio", "normalized_error", "max_abs"):
                if isinstance(output.get(key), float):
                    output[key] *= factor
    return baseline


@pytest.mark.slow  # two whole runs and the gate; tests/test_baseline.py holds the gate's rules in make test
def test_unchanged_rerun_passes_and_planted_growth_fails(run_parity, tmp_path):
    baseline = tmp_path / "baseline.json"
    # Derandomized, so that the rerun draws the same examples: this test is about the gate, not about luck
    # (reruns with other examples are covered in test_baseline.py).
    first = run_parity("--model=simple,mlp", "--hypothesis-profile=ci", f"--parity-save-baseline={baseline}")
    first.result.assert_outcomes(passed=2)
    assert "baseline saved" in first.output and json.loads(baseline.read_text())["cases"]

    again = run_parity("--model=simple,mlp", "--hypothesis-profile=ci", f"--parity-baseline={baseline}")
    assert again.result.ret == pytest.ExitCode.OK, again.output
    assert "parity baseline" in again.output

    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps(_shrink_errors(json.loads(baseline.read_text()), 0.01)))
    grown = run_parity("--model=simple,mlp", f"--parity-baseline={planted}")
    grown.result.assert_outcomes(passed=2)  # every case is still within tolerance...
    assert grown.result.ret == pytest.ExitCode.TESTS_FAILED  # ...but its error grew 100x: the gate fails
    assert "regression" in grown.output.lower() and "mlp-torch-onnxruntime-cpu" in grown.output

    looser = run_parity("--model=simple,mlp", f"--parity-baseline={planted}", "--parity-compare-fail=error:1000x")
    assert looser.result.ret == pytest.ExitCode.OK


@pytest.mark.slow  # two whole runs and the gate
def test_case_that_passed_and_now_fails_is_a_regression(run_parity, tmp_path_factory):
    from tests.planted import export_zoo, perturbed_weight_onnx

    tmp = tmp_path_factory.mktemp("gate")
    good, bad = export_zoo("simple", tmp / "good"), perturbed_weight_onnx("simple", tmp)
    baseline = tmp / "baseline.json"
    run_parity("--model=simple", f"--converted={good}", f"--parity-save-baseline={baseline}").result.assert_outcomes(passed=1)
    now = run_parity("--model=simple", f"--converted={bad}", f"--parity-baseline={baseline}")
    now.result.assert_outcomes(failed=1)
    assert "simple-torch-onnxruntime-cpu-converted" in now.output.split("parity baseline")[-1]


@pytest.mark.slow  # two whole runs and the gate
def test_an_snr_drop_of_more_than_20_db_fails_the_gate(run_parity, tmp_path_factory):
    """The gate reads the scores of real records: a baseline whose SNR was 25 dB
    higher than this run's (the same converted file) is a regression."""
    from tests.planted import perturbed_weight_onnx

    tmp = tmp_path_factory.mktemp("snr")
    bad = perturbed_weight_onnx("simple", tmp)
    baseline, louder = tmp / "baseline.json", tmp / "louder.json"
    first = run_parity("--model=simple", f"--converted={bad}", "--hypothesis-profile=ci",
                       f"--parity-save-baseline={baseline}")
    first.result.assert_outcomes(failed=1)
    saved = json.loads(baseline.read_text())
    (record,) = saved["cases"].values()
    snr = record["outputs"]["output"]["snr_db"]
    assert 20 < snr < 90, snr   # within what the gate tells apart (below SCORE_FLOOR's 120 dB)
    record["outputs"]["output"]["snr_db"] = snr + 25
    louder.write_text(json.dumps(saved))
    # Without the failure hypothesis saved, the derandomized search draws the same examples again.
    shutil.rmtree(first.path / "reports" / "hypothesis-examples")
    again = run_parity("--model=simple", f"--converted={bad}", "--hypothesis-profile=ci",
                       f"--parity-baseline={louder}")
    gate = again.output.split("parity baseline")[-1]
    assert "FAILED: 1 regressions" in gate and "output: snr_db fell" in gate and "(limit 20 dB)" in gate


def test_baseline_is_never_overwritten_unless_forced(run_parity, tmp_path):
    baseline = tmp_path / "baseline.json"
    baseline.write_text("{}")
    refused = run_parity("--model=simple", f"--parity-save-baseline={baseline}")
    assert refused.result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--parity-save-baseline-force" in "\n".join(refused.result.errlines)
    assert baseline.read_text() == "{}"
    forced = run_parity("--model=simple", f"--parity-save-baseline={baseline}", "--parity-save-baseline-force")
    forced.result.assert_outcomes(passed=1)
    assert "simple-torch-onnxruntime-cpu" in json.loads(baseline.read_text())["cases"]


def test_bad_compare_fail_is_a_usage_error(run_parity):
    run = run_parity("--model=simple", "--parity-compare-fail=error:soon")
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR


def nan_baseline() -> dict:
    """simple's case went NaN in the baseline (as to_jsonable writes it: "inf", "nan"); mlp passed there."""
    outputs = {"output": {"normalized_error": "nan", "error_ratio": "inf", "passed": False}}
    return {"schema": 1, "environment": {"versions": {}}, "cases": {
        "simple-torch-onnxruntime-cpu": {"status": "failed", "message": "output: 3 non-finite values",
                                         "worst_error_ratio": "inf", "worst_normalized_error": "nan",
                                         "outputs": outputs},
        "mlp-torch-onnxruntime-cpu": {"status": "passed", "message": "all outputs within tolerance",
                                      "outputs": {"logits": {"normalized_error": 1e-7, "error_ratio": 0.01}}}}}


def test_nan_baseline_and_lost_coverage_give_a_summary_and_the_right_exit(run_parity, tmp_path):
    baseline = tmp_path / "nan.json"
    baseline.write_text(json.dumps(nan_baseline()))
    fewer = run_parity("--model=simple", f"--parity-baseline={baseline}", examples=3)
    fewer.result.assert_outcomes(passed=1)
    assert fewer.result.ret == pytest.ExitCode.TESTS_FAILED, fewer.output  # mlp ran in the baseline, not now
    assert "parity baseline: FAILED: 0 regressions, 1 lost coverage" in fewer.output
    assert "Traceback" not in fewer.output
    assert "failed, now passes" in fewer.output and "--parity-allow-lost-coverage" in fewer.output

    allowed = run_parity("--model=simple", f"--parity-baseline={baseline}", "--parity-allow-lost-coverage", examples=3)
    assert allowed.result.ret == pytest.ExitCode.OK, allowed.output
    assert "parity baseline: ok: 0 regressions, 1 lost coverage" in allowed.output


def test_baseline_of_another_schema_is_a_usage_error(run_parity, tmp_path):
    baseline = tmp_path / "other.json"
    baseline.write_text(json.dumps({**nan_baseline(), "schema": 2}))
    run = run_parity("--model=simple", f"--parity-baseline={baseline}")
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    errors = "\n".join(run.result.errlines)
    assert f"{baseline}: not a parity results file of schema 1: it is of schema 2" in errors
    assert "Traceback" not in errors + run.output


def test_baseline_nested_past_the_budget_is_a_usage_error_and_one_within_it_gates(run_parity, tmp_path):
    """Python's json recurses per level: a baseline nested 100,000 deep was an INTERNALERROR."""
    deep = tmp_path / "deep.json"
    deep.write_text('{"schema": 1, "cases": {}, "note": ' + "[" * 100_000 + "]" * 100_000 + "}")
    run = run_parity("--model=simple", f"--parity-baseline={deep}")
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR, run.output
    errors = "\n".join(run.result.errlines)
    assert f"{deep}: JSON nested 100001 deep, more than the 64 allowed" in errors
    assert "Traceback" not in errors + run.output and "INTERNALERROR" not in errors + run.output
    # the twin: nested deeper than the harness writes, within the budget, it gates as any baseline
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({**nan_baseline(), "note": json.loads("[" * 50 + "]" * 50)}))
    gated = run_parity("--model=simple", f"--parity-baseline={nested}", "--parity-allow-lost-coverage", examples=3)
    assert gated.result.ret == pytest.ExitCode.OK, gated.output
    assert "parity baseline: ok: 0 regressions, 1 lost coverage" in gated.output
