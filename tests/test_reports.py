"""What a run leaves behind for people and CI: one report from several xdist
workers, valid JSON after a kill, JUnit properties, pytest-html rows, the
hypothesis example database beside the reports; files as readable as any other
output; a folder that cannot be written to, or that another run holds, refused
before any case runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tests.conftest import REPO


def test_xdist_workers_merge_into_one_report(run_parity):
    run = run_parity("--model=simple,mlp,cnn,no_such_model", "-n", "2")
    run.result.assert_outcomes(passed=3, errors=1)
    assert run.json["workers"] == 2
    assert set(run.cases) == {"simple-torch-onnxruntime-cpu", "mlp-torch-onnxruntime-cpu", "cnn-torch-onnxruntime-cpu",
                              "no_such_model"}
    html = (run.path / "reports" / "parity.html").read_text()
    assert all(case_id in html for case_id in run.cases)
    assert "no_such_model" in run.output  # the controller's summary lists the workers' cases


def test_killed_run_leaves_valid_json_and_the_report_can_be_rebuilt(tmp_path, shared_cache):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "pytest", "--model=simple,mlp,cnn,depthwise,lstm,gru,transformer",
               "--source=torch", "--device=cpu", "--parity-examples=40", f"--parity-cache-dir={shared_cache}",
               "-p", "no:cacheprovider"]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = tmp_path / "reports" / "parity.json"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if report.is_file() and json.loads(report.read_text())["cases"]:
                break
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    data = json.loads(report.read_text())  # valid JSON, not a torn write
    assert 1 <= len(data["cases"]) < 7
    assert not list((tmp_path / "reports").glob(".parity.json.*"))  # no temporary file left behind
    rebuilt = subprocess.run([sys.executable, "-m", "harness", "report", str(report)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert next(iter(data["cases"])) in (tmp_path / "reports" / "parity.html").read_text()


def test_junit_xml_carries_the_metrics(run_parity):
    run = run_parity("--model=mlp", "--junitxml=reports/junit.xml")
    run.result.assert_outcomes(passed=1)
    (case,) = ET.parse(run.path / "reports" / "junit.xml").getroot().iter("testcase")
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    record = run.cases["mlp-torch-onnxruntime-cpu"]
    assert properties["parity_status"] == "passed"
    assert float(properties["worst_error_ratio"]) == record["worst_error_ratio"]
    assert float(properties["logits.max_abs"]) == record["outputs"]["logits"]["max_abs"]
    assert float(properties["logits.snr_db"]) == record["outputs"]["logits"]["snr_db"] > 60
    # mlp's logits declare a class axis: the agreements are measured (both sides agree on every row here)
    assert float(properties["logits.top1_agreement"]) == record["outputs"]["logits"]["top1_agreement"] == 1.0


def test_junit_properties_and_pytest_html_rows_carry_the_metric_thresholds():
    from harness.report.extras import junit_properties, outputs_table_html

    logits = {"passed": False, "error_ratio": 10.0, "cosine": 0.98, "snr_db": 0.0, "top1_agreement": 0.75,
              "topk_overlap": 0.9, "top_k": 5, "failed_thresholds": ["min_snr_db", "min_top1"],
              "tolerance": {"atol": 0.0, "rtol": 0.0, "atol_by_max": 1.0, "min_snr_db": 20.0, "min_top1": 1.0}}
    clean = {**logits, "passed": True, "error_ratio": 0.1, "snr_db": "inf", "top1_agreement": 1.0,
             "failed_thresholds": []}
    properties = dict(junit_properties({"status": "failed", "outputs": {"logits": logits, "probs": clean}}))
    assert (properties["logits.snr_db"], properties["logits.top1_agreement"], properties["logits.topk_overlap"]) == (
        0.0, 0.75, 0.9)
    assert properties["logits.failed_thresholds"] == "min_snr_db,min_top1"
    assert properties["probs.snr_db"] == "inf" and "probs.failed_thresholds" not in properties
    table = outputs_table_html({"status": "failed", "outputs": {"logits": logits, "probs": clean}})
    assert "<th>snr_db</th><th>top1_agreement</th><th>topk_overlap</th>" in table
    assert "<td>fail (min_snr_db, min_top1)</td>" in table and "<td>0.75</td>" in table


def test_pytest_html_row_has_the_outputs_table(run_parity):
    run = run_parity("--model=mlp", "--html=reports/pytest.html", "--self-contained-html")
    run.result.assert_outcomes(passed=1)
    page = (run.path / "reports" / "pytest.html").read_text()
    assert "parity-outputs" in page and "logits" in page


def test_failing_example_is_kept_for_the_next_run(run_parity, tmp_path_factory):
    from tests.planted import perturbed_weight_onnx

    bad = perturbed_weight_onnx("simple", tmp_path_factory.mktemp("planted"))
    run = run_parity("--model=simple", f"--converted={bad}")
    run.result.assert_outcomes(failed=1)
    database = run.path / "reports" / "hypothesis-examples"
    assert database.is_dir() and any(path.is_file() for path in database.rglob("*"))


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_report_files_have_the_mode_open_would_give(tmp_path, umask):
    from harness.report.baseline import diff_runs, save_baseline, write_diff_html
    from harness.report.html import write_html_report
    from harness.results import ResultsWriter, save_failure

    previous = os.umask(umask)
    try:
        writer = ResultsWriter(tmp_path / "reports" / "parity.json")
        write_html_report(writer.data, tmp_path / "reports" / "parity.html")
        npz, _ = save_failure(tmp_path / "reports", "simple-torch-onnxruntime-cpu", {"x": np.zeros(3)}, {})
        save_baseline(writer.data, tmp_path / "baseline.json")
        write_diff_html(diff_runs(writer.data, writer.data), tmp_path / "reports" / "parity.diff.html")
    finally:
        os.umask(previous)
    written = [writer.path, tmp_path / "reports" / "parity.html", npz, tmp_path / "baseline.json",
               tmp_path / "reports" / "parity.diff.html"]
    assert {path.name: oct(path.stat().st_mode & 0o777) for path in written} == {
        path.name: oct(0o666 & ~umask) for path in written}


def chmod_stops_writes() -> bool:
    """False for root (os.geteuid() == 0) unless it runs without CAP_DAC_OVERRIDE: then
    a folder's mode does not stop it writing, and these tests cannot make a read-only folder."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o500)
        try:
            open(os.path.join(folder, "probe"), "w").close()
        except PermissionError:
            return True
        finally:
            os.chmod(folder, 0o700)
    return False


needs_permissions = pytest.mark.skipif(not chmod_stops_writes(), reason="this user writes into read-only folders "
                                                                         "(root): a folder's mode cannot stop it")


@needs_permissions
def test_read_only_reports_folder_is_one_usage_error_before_any_case(run_parity, parity_dir):
    reports = parity_dir / "reports"
    reports.mkdir()
    reports.chmod(0o500)
    try:
        run = run_parity("--model=simple,mlp")
    finally:
        reports.chmod(0o700)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR, run.output
    errors = "\n".join(run.result.errlines)
    assert "reports folder reports cannot be written to: Permission denied" in errors
    assert "--parity-reports=DIR" in errors and "Traceback" not in errors + run.output
    assert "test_parity" not in run.output and not list(reports.iterdir())  # no case ran, nothing written


@needs_permissions
def test_read_only_failures_folder_is_named(run_parity, parity_dir):
    failures = parity_dir / "reports" / "failures"
    failures.mkdir(parents=True)
    failures.chmod(0o500)
    try:
        run = run_parity("--model=simple")
    finally:
        failures.chmod(0o700)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert "cannot be written to: Permission denied (in reports/failures)" in "\n".join(run.result.errlines)


@needs_permissions
def test_harness_commands_that_write_check_the_folder_first(tmp_path):
    from harness.results import ResultsWriter

    folder = tmp_path / "read-only"
    data = ResultsWriter(folder / "parity.json").data
    (tmp_path / "old.json").write_text(json.dumps(data))
    folder.chmod(0o500)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        commands = {"report": ["report", str(folder / "parity.json")],
                    "diff": ["diff", str(tmp_path / "old.json"), str(folder / "parity.json")]}
        for name, args in commands.items():
            done = subprocess.run([sys.executable, "-m", "harness", *args], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 2, (name, done.stdout, done.stderr)
            assert f"python -m harness {name}: reports folder {folder} cannot be written to" in done.stderr
            assert "Traceback" not in done.stderr
    finally:
        folder.chmod(0o700)


def test_second_run_on_a_busy_reports_folder_is_refused_and_the_first_loses_nothing(parity_dir, run_parity,
                                                                                    shared_cache):
    # The first run's model waits for a go, so the second surely starts while the first holds the folder.
    (parity_dir / "waiting.py").write_text(textwrap.dedent('''
        import time
        from pathlib import Path

        import torch
        from harness import InputSpec, register_model

        def build():
            deadline = time.monotonic() + 120
            while not Path(__file__).with_name("go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            return torch.nn.Linear(4, 2)

        register_model("waiting", inputs=[InputSpec("x", ("N", 4), dims={"N": (1, 3)})], outputs=["y"], torch=build)
    '''))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST") and k != "PYTEST_ADDOPTS"}
    env["PYTHONPATH"] = str(REPO)
    first = subprocess.Popen([sys.executable, "-m", "pytest", "--model=waiting.py,simple", "--source=torch",
                              "--target=onnxruntime", "--device=cpu", "--parity-examples=3", f"--parity-cache-dir={shared_cache}",
                              "-p", "no:cacheprovider"], cwd=parity_dir, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lock = parity_dir / "reports" / ".parity-run.lock"
        deadline = time.monotonic() + 120
        while not (lock.is_file() and f"pid {first.pid} " in lock.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        second = run_parity("--model=simple,mlp")
        assert first.poll() is None  # the first was still running when the second was refused
    finally:
        (parity_dir / "go").touch()
        output = first.communicate(timeout=300)[0]
    assert second.result.ret == pytest.ExitCode.USAGE_ERROR, second.output
    errors = "\n".join(second.result.errlines)
    assert f"reports folder reports is in use by another parity run (pid {first.pid} on " in errors
    assert "lose each other's cases" in errors and "--parity-reports=DIR" in errors
    assert first.returncode == 0, output[-3000:]
    cases = json.loads((parity_dir / "reports" / "parity.json").read_text())["cases"]
    assert {case_id: case["status"] for case_id, case in cases.items()} == {
        "waiting-torch-onnxruntime-cpu": "passed", "simple-torch-onnxruntime-cpu": "passed"}
    assert run_parity("--model=mlp").result.ret == pytest.ExitCode.OK  # the folder is free once the first ended


def test_the_results_file_put_together_from_each_records_encoding_is_the_whole_encoding(tmp_path):
    """The writer encodes each record once and joins the texts: the file must be what encoding the
    whole run at once writes, byte for byte, through a replaced record, non-finite floats, nested
    and empty values and a message with quotes and newlines."""
    from harness.case_record import CaseRecord
    from harness.results import ResultsWriter

    writer = ResultsWriter(tmp_path / "parity.json", {"options": {"models": ["cnn"]}})
    assert (tmp_path / "parity.json").read_text() == json.dumps(writer.data, indent=1)
    writer.add(CaseRecord.from_json({"id": "cnn-torch-onnxruntime-cpu", "status": "passed",
                                     "outputs": {"logits": {"worst": [1.0, float("nan"), np.float32(2)], "noise": {},
                                                            "top": []}}}))
    writer.add(CaseRecord.from_json({"id": "mlp-torch-onnxruntime-cpu", "status": "failed",
                                     "message": 'logits: "x"\nworst at [0, 1]'}))
    writer.add(CaseRecord.from_json({"id": "cnn-torch-onnxruntime-cpu", "status": "error", "message": "replaced"}))
    assert (tmp_path / "parity.json").read_text() == json.dumps(writer.data, indent=1)
    assert list(json.loads((tmp_path / "parity.json").read_text())["cases"]) == ["cnn-torch-onnxruntime-cpu",
                                                                               "mlp-torch-onnxruntime-cpu"]
