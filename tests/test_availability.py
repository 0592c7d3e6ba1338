"""Collection looks frameworks up (importlib's find_spec) and leaves importing
them to the cases that run (matrix.availability_checked): what it finds
missing, and what a broken install says as its case starts, keep the words
they had when collection imported every framework.

Each check runs in a fresh process: a framework imported once stays in
sys.modules, and a planted package must be the first on the path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The frameworks of the 12-case set (torch on the CPU, four targets) and those of the other
# sources: none is imported to collect that set.
FRAMEWORKS = ("torch", "onnxruntime", "openvino", "MNN", "ncnn", "tensorflow", "keras", "mxnet")

SCRIPT = """
import json, sys
from pathlib import Path
for name in sys.argv[2].split(",") if sys.argv[2] else ():
    sys.modules[name] = None   # not installed: find_spec finds nothing, an import fails
from harness.cache import ArtifactCache
from harness.matrix import build_cases
from harness.options import RunOptions
from harness.runner import start_case
options = RunOptions(models=("mlp",), sources=("torch", "mxnet"), targets=("onnxruntime", "mnn", "ncnn"),
                     devices=("cpu",), cache_dir=Path(sys.argv[1]) / "cache", reports_dir=Path(sys.argv[1]))
cases = build_cases(options)
imported = {name for name in %r if sys.modules.get(name) is not None}
started = {case.id: start_case(case, options, ArtifactCache(options.cache_dir, enabled=False))[0]
           for case in cases if case.skip or case.id in sys.argv[3].split(",")}
print(json.dumps({"collection_skips": {case.id: case.skip for case in cases}, "imported": sorted(imported),
                  "started": {i: [r.status, r.message] for i, r in started.items()}}))
""" % (FRAMEWORKS,)


def _collect(tmp_path: Path, absent: str = "", planted: dict[str, str] | None = None, start: str = "") -> dict:
    """Build the cases of mlp (torch and mxnet, three targets, CPU) in a fresh process with the
    frameworks `absent` not installed and `planted` packages (name -> the ImportError their import
    raises) first on the path; start the skipped cases and those named in `start`."""
    plant = tmp_path / "planted"
    for name, message in (planted or {}).items():
        (plant / name).mkdir(parents=True)
        (plant / name / "__init__.py").write_text(f"raise ImportError({message!r})\n")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), absent, start], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": f"{plant}:{REPO}"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_collection_imports_no_framework(tmp_path):
    """The bug: collection imported every framework of the matrix (seconds each) to learn it was there."""
    found = _collect(tmp_path)
    assert found["imported"] == []
    assert found["collection_skips"]["mlp-torch-onnxruntime-cpu"] is None


def test_absent_framework_skips_at_collection_with_its_reason(tmp_path):
    found = _collect(tmp_path, absent="MNN")
    assert found["collection_skips"]["mlp-torch-mnn-cpu"] == (
        "MNN is not installed (import of MNN halted; None in sys.modules); pip install MNN")
    assert found["started"]["mlp-torch-mnn-cpu"] == [
        "skipped", "MNN is not installed (import of MNN halted; None in sys.modules); pip install MNN"]
    assert found["collection_skips"]["mlp-torch-onnxruntime-cpu"] is None


def test_broken_framework_skips_as_its_case_starts_with_its_reason(tmp_path):
    """An installed package that fails to import is found at collection; the case says why it cannot run."""
    found = _collect(tmp_path, planted={"mxnet": "planted: this mxnet is broken",
                                        "ncnn": "planted: this ncnn is broken"},
                     start="mlp-mxnet-onnxruntime-cpu,mlp-torch-ncnn-cpu")
    assert found["started"]["mlp-mxnet-onnxruntime-cpu"] == [
        "skipped", "mxnet cannot be imported (ImportError: planted: this mxnet is broken); "
                   "pip install mxnet==1.9.1 (it needs numpy<2)"]
    assert found["started"]["mlp-torch-ncnn-cpu"] == [
        "skipped", "ncnn is not installed (planted: this ncnn is broken); pip install ncnn"]


def test_broken_isolated_runtime_is_a_pytest_skip(run_parity, tmp_path):
    """ncnn's cases run in a worker process: its skip, found there as the case starts, is a skip, not a pass."""
    plant = tmp_path / "planted" / "ncnn"
    plant.mkdir(parents=True)
    (plant / "__init__.py").write_text('raise ImportError("planted: this ncnn is broken")\n')
    run = run_parity("--model=mlp", "--target=ncnn", "-rs", env={"PYTHONPATH": f"{plant.parent}:{REPO}"})
    assert run.single["status"] == "skipped"
    assert run.single["message"] == "ncnn is not installed (planted: this ncnn is broken); pip install ncnn"
    outcomes = run.result.parseoutcomes()
    assert (outcomes.get("skipped"), outcomes.get("passed")) == (1, None), run.output[-2000:]
