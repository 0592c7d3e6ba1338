"""Shared fixtures for the harness's own tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def large_sum_file(tmp_path_factory) -> Path:
    """tests/planted.py's large-sum model file, one per session: a model name is registered once per
    process, by one file, so every test that loads it shares this one."""
    from tests import planted

    path = tmp_path_factory.mktemp("large-sum") / "large_sum_models.py"
    path.write_text(planted.LARGE_SUM_MODEL_FILE)
    return path


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One artifact cache for the integration tests that are not about caching,
    so that each zoo model is exported once per test session."""
    return tmp_path_factory.mktemp("parity-cache")


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """For the Keras zoo tests: any socket use or Keras download (`get_file`) fails the test; Keras's
    cache folder is an empty temporary one."""
    from keras.src.utils import file_utils

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access while building a model: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(file_utils, "get_file", refuse)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


def install_package(site: Path, name: str, module: str, group: str, entry_points: str) -> None:
    """A package `name` in the folder `site` (put it on PYTHONPATH), as pip
    would install it: `module` as {name}.py, and a dist-info declaring
    `entry_points` ("NAME = VALUE" lines) under the entry point `group`."""
    (site / f"{name}.py").write_text(module)
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{entry_points}\n")


class BuiltModels:
    """The zoo's models of one source, each built once per test process (the
    first build of a determinism test may seed it through `cache`)."""

    def __init__(self, source: str):
        self.source = source
        self.cache: dict[str, object] = {}

    def get(self, name: str):
        if name not in self.cache:
            from harness.registry import zoo_models

            self.cache[name] = zoo_models()[name].builders[self.source]()
        return self.cache[name]


def sizes_to_check(spec) -> list[dict[str, int]]:
    """All minima, all maxima, and all maxima minus one (odd H/W: flooring), without repeats."""
    bounds = spec.dim_bounds
    points = [{d: lo for d, (lo, hi) in bounds.items()}, {d: hi for d, (lo, hi) in bounds.items()},
              {d: max(lo, hi - 1) for d, (lo, hi) in bounds.items()}]
    return [p for k, p in enumerate(points) if p not in points[:k]]


def keras_inputs(spec, sizes: dict[str, int], seed: int) -> list:
    """Inputs drawn uniformly from the declared domains in the spec's layout, then
    laid out as the Keras model takes them."""
    import numpy as np

    from harness.layouts import convert_layout

    rng = np.random.default_rng(seed)
    layouts, _ = spec.source_layouts("keras")
    arrays = []
    for inp in spec.inputs:
        low, high = inp.domain
        shape = inp.example_shape(sizes)
        if inp.is_float:
            array = rng.uniform(low, high, size=shape).astype(inp.dtype)
        else:
            array = rng.integers(int(low), int(high), size=shape, endpoint=True).astype(inp.dtype)
        arrays.append(convert_layout(array, inp.layout, layouts[inp.name]))
    return arrays


class ParityRun:
    def __init__(self, result: pytest.RunResult, path: Path):
        self.result = result
        self.path = path
        self.output = "\n".join(result.outlines)
        # Read now: the next run in the same folder rewrites the file.
        report = path / "reports" / "parity.json"
        self.json = json.loads(report.read_text()) if report.is_file() else {}

    @property
    def cases(self) -> dict:
        return self.json["cases"]

    @property
    def single(self) -> dict:
        """The record of a run that has exactly one case."""
        (record,) = self.cases.values()
        return record


@pytest.fixture
def parity_dir(tmp_path) -> Path:
    """The folder a parity run works in, as a user's project folder."""
    return tmp_path


@pytest.fixture
def run_parity(parity_dir, shared_cache):
    """Run `pytest` with the plugin in a fresh process in `parity_dir`, with quick
    settings (cpu, torch, few examples) unless the args say otherwise. A subprocess, not pytester: pytester restores
    sys.modules after each test, and torch's C extensions break when re-imported."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST") and k != "PYTEST_ADDOPTS"}
    base_env["PYTHONPATH"] = str(REPO)  # user model files here import tests.planted

    def run(*args: str, examples: int | None = 4, cache: Path | None = None,
            env: dict[str, str] | None = None, every_source: bool = False) -> ParityRun:
        """examples=None: the hypothesis profile decides; env: variables to set besides;
        every_source: no --source (a run's default: every source a model has), not torch alone."""
        command = [sys.executable, "-m", "pytest", f"--parity-cache-dir={cache or shared_cache}",
                   "-p", "no:cacheprovider"]
        if examples is not None:
            command.append(f"--parity-examples={examples}")
        if not any(a.startswith("--device") for a in args):
            command.append("--device=cpu")
        if not every_source and not any(a.startswith("--source") for a in args):
            command.append("--source=torch")  # torch-only unless a test asks: TF cases cost seconds each
        converted_tflite = any(a.startswith("--converted") and a.endswith(".tflite") for a in args)
        if not any(a.startswith("--target") for a in args) and not converted_tflite:
            command.append("--target=onnxruntime")  # one target unless a test asks: each adds a case per model
        # A run that writes no results must not be read as the previous run's.
        (parity_dir / "reports" / "parity.json").unlink(missing_ok=True)
        start = time.perf_counter()
        done = subprocess.run([*command, *args], cwd=parity_dir, env={**base_env, **(env or {})},
                              capture_output=True, text=True, timeout=600)
        result = pytest.RunResult(done.returncode, done.stdout.splitlines(), done.stderr.splitlines(),
                                  time.perf_counter() - start)
        return ParityRun(result, parity_dir)

    return run


@pytest.fixture
def run_converted(tmp_path):
    """One case in this process, outside pytest's plugin: an ONNX original against
    a converted ONNX file on ONNX Runtime's CPU provider; returns its record."""
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.runner import run_case

    def run(original: Path, converted: Path, examples: int = 5) -> dict:
        options = RunOptions(models=(str(original),), sources=("onnx",), targets=("onnxruntime",),
                             devices=("cpu",), examples=examples, converted=converted,
                             cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports", localize="off")
        (case,) = build_cases(options)
        return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()

    return run
