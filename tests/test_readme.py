"""The README's "test your own model" example works as printed."""

from __future__ import annotations

import re

from tests.conftest import REPO


def test_readme_own_model_example_runs(parity_dir, run_parity):
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```python\n(# my_models\.py\n.*?)```", readme, re.S).group(1)
    code = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(code) < 10  # the README's promise: under ten lines
    (parity_dir / "my_models.py").write_text(block)
    run = run_parity("--model=my_models.py")
    run.result.assert_outcomes(passed=1)
    assert run.cases["net-torch-onnxruntime-cpu"]["outputs"]["features"]["passed"]
