"""MkDocs hook: the options page's table, written from the plugin's own option definitions, and the
results page's table of the case record, written from its dataclass.

A page holding OPTIONS_TABLE gets, in its place, one row per option that harness/plugin.py's
pytest_addoption registers (its flag, its value, its default, its help), so an option added to the
plugin is on the site without an edit here. A page holding RECORD_TABLE gets one row per field of
harness/case_record.py's CaseRecord that parity.json holds (its key, its type, what it holds), likewise.
"""

from __future__ import annotations

import html
import re
from typing import Any

OPTIONS_TABLE = "<!-- options-table -->"
RECORD_TABLE = "<!-- record-table -->"
# A code span holding an escaped pipe, in a table row.
CODE_WITH_PIPE = re.compile(r"`([^`]*\\\|[^`]*)`")


def _cell(text: str) -> str:
    # argparse doubles % in help strings; a | would end the table's cell.
    return text.replace("%%", "%").replace("|", "\\|").replace("\n", " ")


def _row(flags: tuple[str, ...], keywords: dict[str, Any]) -> str:
    if keywords.get("action") == "store_true":
        value = ""
    elif keywords.get("choices"):
        value = "|".join(str(choice) for choice in keywords["choices"])
    else:
        value = keywords.get("metavar") or "VALUE"
    default = keywords.get("default")
    shown_default = "" if default in (None, "", False) or keywords.get("action") == "store_true" else f"`{default}`"
    option = " ".join(f"`{flag}{' ' + value if value else ''}`" for flag in flags)
    return f"| {_cell(option)} | {shown_default} | {_cell(keywords.get('help', ''))} |"


def options_table() -> str:
    """The table of every option the pytest plugin registers, in its order."""
    from harness.plugin import option_definitions

    rows = [_row(flags, keywords) for flags, keywords in option_definitions()]
    return "\n".join(["| option | default | meaning |", "| --- | --- | --- |", *rows])


def record_table() -> str:
    """The table of the case record's fields as parity.json writes them, in the dataclass's order."""
    from dataclasses import fields

    from harness.case_record import CaseRecord

    rows = [f"| `{field.name}` | {_cell(f'`{field.type}`')} | {_cell(field.metadata['doc'])} |"
            for field in fields(CaseRecord) if field.metadata["written"]]
    return "\n".join(["| key | type | what it holds |", "| --- | --- | --- |", *rows])


def _pipes_in_table_code(markdown: str) -> str:
    """GitHub reads `a\\|b` in a table's code span as a|b; Python-Markdown would keep the backslash, so
    such a span becomes <code> with the pipe as an entity, which no table splits on."""
    def code(match: re.Match) -> str:
        return "<code>" + html.escape(match.group(1)).replace("\\|", "&#124;") + "</code>"

    return "\n".join(CODE_WITH_PIPE.sub(code, line) if line.startswith("|") else line
                     for line in markdown.split("\n"))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    for marker, table in ((OPTIONS_TABLE, options_table), (RECORD_TABLE, record_table)):
        if marker in markdown:
            markdown = markdown.replace(marker, table())
    return _pipes_in_table_code(markdown)
