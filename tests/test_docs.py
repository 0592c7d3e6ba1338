"""The documentation site (docs/, mkdocs.yml) builds with --strict, and its options page is written
from the plugin's own option definitions (docs/hooks.py), so a new option needs no edit of the docs."""

from __future__ import annotations

import importlib.util
import subprocess
import shutil
import sys
from pathlib import Path

import pytest
from _pytest.config.argparsing import Parser

from harness import plugin
from tests.conftest import REPO


def build_site(root: Path, site_dir: Path) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs and mkdocs-material are not installed (the 'test' extra: pip install -e '.[test]')")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
                          cwd=root, capture_output=True, text=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site_dir = tmp_path_factory.mktemp("site")
    build = build_site(REPO, site_dir)
    assert build.returncode == 0, build.stdout + build.stderr
    return site_dir


def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def registered_flags() -> list[str]:
    """The flags pytest itself registers from the plugin (its own Parser, not the docs' recorder)."""
    parser = Parser(_ispytest=True)
    plugin.pytest_addoption(parser)
    return [flag for option in parser.getgroup("parity").options for flag in option.names()]


def test_the_site_builds_strict(site):
    assert (site / "index.html").is_file()
    assert "What it does" in (site / "index.html").read_text()   # the README's first half, included


def test_a_link_to_a_page_that_is_not_there_fails_the_build(tmp_path):
    # The build's strictness, shown on a copy of the docs with one broken link.
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    page = tmp_path / "docs" / "how-to" / "cache.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    build = build_site(tmp_path, tmp_path / "site")
    assert build.returncode != 0 and "no-such-page.md" in build.stderr


def test_every_option_the_plugin_registers_is_on_the_options_page(site):
    page = (site / "reference" / "options" / "index.html").read_text()
    # The generated table alone, not the hand-written one below it.
    generated = page[page.index('id="every-option"'):page.index('id="in-more-detail"')]
    flags = registered_flags()
    assert {"--parity", "--model", "--target", "--parity-shard", "--ort-opt-level"} <= set(flags)
    assert [flag for flag in flags if f"<code>{flag}" not in generated] == []


def test_an_option_added_to_the_plugin_is_on_the_page_without_editing_the_docs(monkeypatch):
    declared = plugin.pytest_addoption

    def with_a_new_option(parser) -> None:
        declared(parser)
        parser.getgroup("parity").addoption("--parity-new-thing", metavar="N", help="a flag only this test declares")

    monkeypatch.setattr(plugin, "pytest_addoption", with_a_new_option)
    table = hooks().options_table()
    assert "| `--parity-new-thing N` |  | a flag only this test declares |" in table.splitlines()


def test_every_field_of_the_case_record_is_on_the_results_page(site):
    from harness.case_record import WRITTEN_FIELDS

    page = (site / "reference" / "results" / "index.html").read_text()
    generated = page[page.index('id="the-record-of-a-case"'):]
    assert {"status", "message", "outputs", "qdq_check", "isolation"} <= WRITTEN_FIELDS
    assert sorted(name for name in WRITTEN_FIELDS if f"<code>{name}</code></td>" not in generated) == []
    assert "<code>started_at</code>" not in generated   # the case's timer, never written


def test_a_field_added_to_the_case_record_is_on_the_page_without_editing_the_docs(monkeypatch):
    from dataclasses import dataclass, field

    from harness import case_record

    @dataclass(init=False)
    class WithNewField(case_record.CaseRecord):
        new_thing: dict[str, int] | None = field(default=None, metadata={"doc": "a field only this test declares",
                                                                         "written": True})

    monkeypatch.setattr(case_record, "CaseRecord", WithNewField)
    page = hooks().on_page_markdown("<!-- record-table -->", page=None, config=None, files=None)
    assert "| `new_thing` | <code>dict[str, int] &#124; None</code> | a field only this test declares |" in \
        page.splitlines()


def test_a_pipe_in_a_table_s_code_is_rendered_as_a_pipe():
    # `--tier core\|real\|all` in a table: GitHub shows core|real|all; the site must not show the backslash.
    page = hooks().on_page_markdown("| `--tier core\\|real\\|all` | text a\\|b |\n`x\\|y` outside a table\n",
                                    page=None, config=None, files=None)
    assert page == "| <code>--tier core&#124;real&#124;all</code> | text a\\|b |\n`x\\|y` outside a table\n"
