"""Result records and where they are written.

`reports/parity.json` is rewritten after every case, atomically (a temporary
file, then a rename), so a crash or a kill mid-run leaves every finished case
behind in a valid file. A failing case's shrunk input goes to
`reports/failures/<case id>.npz` with the command that replays it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import numpy as np

SCHEMA = 1
# Distributions whose versions every record reports when installed.
TRACKED_DISTRIBUTIONS = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "numpy",
                         "hypothesis", "tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "mxnet",
                         "openvino", "ai-edge-litert", "ncnn", "pnnx", "tensorrt")


def environment() -> dict[str, Any]:
    versions = {}
    for name in TRACKED_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "machine": platform.machine(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
            "gpu": _gpu_names() or "none found (no nvidia-smi on PATH, or it lists none)", "versions": versions}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_names() -> list[str]:
    """The GPUs nvidia-smi lists; none where it is absent. No framework is
    imported for this: environment() runs in every run, torch-only or not."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_jsonable(value: Any) -> Any:
    """Plain JSON values; non-finite floats become the strings 'inf', 'nan'."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if np.isfinite(value) else str(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


class ResultsWriter:
    """Holds the run's records and rewrites the JSON file after each one."""

    def __init__(self, path: Path, run_info: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.data: dict[str, Any] = {"schema": SCHEMA, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                     "environment": environment(), "run": dict(run_info or {}), "cases": {}}
        self.flush()

    def add(self, record: Mapping[str, Any]) -> None:
        self.data["cases"][record["id"]] = to_jsonable(record)
        self.flush()

    def flush(self) -> None:
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=False))


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def merge_results(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One run's results from its pytest-xdist workers' files: every case once,
    the earliest start and the latest update."""
    if not parts:
        raise ValueError("no results to merge")
    merged: dict[str, Any] = {**parts[0], "cases": {}, "workers": len(parts)}
    for part in parts:
        merged["cases"].update(part.get("cases", {}))
    merged["started"] = min(p.get("started", "") for p in parts)
    merged["updated"] = max(p.get("updated", "") for p in parts)
    return merged


def save_failure(reports_dir: Path, case_id: str, inputs: Mapping[str, np.ndarray], replay_info: Mapping[str, Any]) -> tuple[Path, str]:
    """Write the shrunk failing input and what is needed to replay it; return the
    file and the one-line command that replays it."""
    folder = Path(reports_dir) / "failures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case_id}.npz"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=folder)
    os.close(fd)
    try:
        np.savez(tmp, __replay__=np.array(json.dumps(to_jsonable(replay_info))),
                 **{f"input:{name}": array for name, array in inputs.items()})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, f"python -m harness replay {path}"


def load_failure(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        info = json.loads(str(data["__replay__"]))
        inputs = {key.split(":", 1)[1]: data[key] for key in data.files if key.startswith("input:")}
    return info, inputs
