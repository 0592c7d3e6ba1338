"""What a run leaves behind for people and CI: one report from several xdist
workers, valid JSON after a kill, JUnit properties, pytest-html rows, and the
hypothesis example database beside the reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

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
