"""The README stays a short page pointing to the docs (issue 23), and the "test your own model" example,
on the docs' page and in the README, works as printed."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO

README_MAX_LINES = 250
OWN_MODEL_PAGE = REPO / "docs" / "how-to" / "own-model.md"


def own_model_example(page: Path) -> str:
    return re.search(r"```python\n(# my_models\.py\n.*?)```", page.read_text(), re.S).group(1)


def test_readme_own_model_example_runs(parity_dir, run_parity):
    block = own_model_example(OWN_MODEL_PAGE)
    code = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(code) < 10  # the docs' promise: under ten lines
    (parity_dir / "my_models.py").write_text(block)
    run = run_parity("--model=my_models.py")
    run.result.assert_outcomes(passed=1)
    assert run.cases["net-torch-onnxruntime-cpu"]["outputs"]["features"]["passed"]


def test_the_readme_shows_the_docs_example_as_it_is():
    assert own_model_example(REPO / "README.md") == own_model_example(OWN_MODEL_PAGE)


def test_the_readme_is_at_most_250_lines():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md: {lines} lines; move the detail to a page under docs/"


def test_every_docs_link_of_the_readme_names_a_page():
    links = re.findall(r"\]\((docs/[^)#]+)", (REPO / "README.md").read_text())
    assert links and [link for link in links if not (REPO / link).is_file()] == []
