"""Zoos register through the `parity_models` entry point group: the registry
names no zoo (the harness's own is an entry point like any other package's),
another package's zoo runs through the plugin and its worker processes, and
a zoo that fails to import is an error case naming its package while the
other zoos' models still run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import registry
from tests.conftest import REPO, install_package

EXTRA_ZOO = textwrap.dedent('''
    """A zoo of another package: one torch model, its builder resolved on first use."""
    from harness import InputSpec, register_model

    register_model(
        "extra_double",
        inputs=[InputSpec("x", ("N", 4), dims={"N": (1, 3)}, layout="NC")],
        outputs=["y"],
        description="x * 2, from another package's zoo",
        torch="parity_extra_zoo:build_double",
    )


    def build_double():
        import torch

        class Double(torch.nn.Module):
            def forward(self, x):
                return x * 2

        return Double().eval()
''')


@pytest.fixture
def site(tmp_path) -> Path:
    """A folder for packages, on the PYTHONPATH of the subprocesses below."""
    folder = tmp_path / "site"
    folder.mkdir()
    return folder


def _pythonpath(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


def _python(code: str, site: Path | None = None) -> str:
    env = {**os.environ, **(_pythonpath(site) if site else {"PYTHONPATH": str(REPO)})}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_registry_names_and_imports_no_zoo():
    assert "model_zoo" not in Path(registry.__file__).read_text()
    _python("import sys, harness.registry, harness.matrix; assert 'model_zoo' not in sys.modules, 'imported'")


def test_the_harness_zoo_is_an_entry_point():
    out = _python("from harness.registry import broken_zoos, zoo_models; "
                  "print(sorted(zoo_models()), broken_zoos())")
    assert "'mlp'" in out and out.rstrip().endswith("{}")


def test_a_zoo_from_another_package_runs_in_the_plugin_and_its_workers(site, run_parity):
    install_package(site, "parity_extra_zoo", EXTRA_ZOO, registry.ZOO_ENTRY_POINT_GROUP,
                    "extra = parity_extra_zoo")
    out = _python("from harness.registry import zoo_models; zoo = zoo_models(); "
                  "print(zoo['extra_double'].origin, 'mlp' in zoo)", site)
    assert out.split() == ["zoo", "True"]
    # A worker process rebuilds the case from the options: it must find the zoo too.
    run = run_parity("--model=extra_double", "--target=onnxruntime", "--parity-isolate=always",
                     env=_pythonpath(site))
    record = run.single
    assert record["id"] == "extra_double-torch-onnxruntime-cpu" and record["status"] == "passed", run.output
    assert record["isolation"]["worker_pid"], record


def test_a_zoo_that_fails_to_import_is_an_error_naming_its_package(site):
    install_package(site, "parity_broken_zoo", "raise ImportError('needs libfoo.so')\n",
                    registry.ZOO_ENTRY_POINT_GROUP, "broken = parity_broken_zoo")
    code = textwrap.dedent('''
        from harness.matrix import build_cases
        from harness.options import RunOptions
        from harness.registry import get_model
        from harness.specs import SpecError

        cases = build_cases(RunOptions(sources=("torch",), targets=("onnxruntime",), devices=("cpu",)))
        for case in cases:
            print("CASE", case.id, "|", case.error)
        try:
            get_model("no_such_model")
        except SpecError as error:
            print("UNKNOWN", error)
    ''')
    lines = _python(code, site).splitlines()
    errors = [line for line in lines if line.startswith("CASE") and not line.endswith("| None")]
    assert len(errors) == 1, errors
    assert "parity_broken_zoo" in errors[0] and "needs libfoo.so" in errors[0]
    assert "CASE mlp-torch-onnxruntime-cpu | None" in lines  # the harness's own zoo still runs
    (unknown,) = [line for line in lines if line.startswith("UNKNOWN")]
    assert "parity_broken_zoo" in unknown and "needs libfoo.so" in unknown
