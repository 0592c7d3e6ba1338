"""Every handler in harness/ that catches everything -- `except Exception`,
`except BaseException`, a bare `except:`, or a tuple holding one of them --
says why on its own line: a one-line comment giving what the library really
raises, or why any type is expected there (the user's code, a third party's
converter) and where the error is recorded. A handler that can name what it
expects names it instead. Modules are read with `ast` and `tokenize`, never
imported: the check needs no framework and takes well under a second.

Beside it, the checker itself on a small package written for the purpose: a
planted handler of each kind without a reason must be reported."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "harness"

CATCH_ALL = {"Exception", "BaseException"}
# A comment that is a tool's directive, not a reason.
DIRECTIVES = ("noqa", "type:", "pragma")


def _catches_all(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(c, ast.Name) and c.id in CATCH_ALL for c in caught)


def _reasons(source: str) -> dict[int, str]:
    """Line -> the comment on it, directives left out."""
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if text and not text.startswith(DIRECTIVES):
                comments[token.start[0]] = text
    return comments


def unexplained_handlers(root: Path) -> list[str]:
    """"file:line: the except clause" for each catch-all handler under `root`
    without a comment on its `except` line (or on the line its caught types end,
    for a tuple written over several lines)."""
    found = []
    for file in sorted(root.rglob("*.py")):
        source = file.read_text(encoding="utf-8")
        reasons = _reasons(source)
        for node in ast.walk(ast.parse(source, str(file))):
            if isinstance(node, ast.ExceptHandler) and _catches_all(node):
                end = node.type.end_lineno if node.type is not None else node.lineno
                if not any(line in reasons for line in range(node.lineno, end + 1)):
                    clause = source.splitlines()[node.lineno - 1].strip()
                    found.append(f"{file.relative_to(root.parent)}:{node.lineno}: {clause}")
    return found


def test_every_catch_all_handler_in_harness_says_why():
    unexplained = unexplained_handlers(HARNESS)
    assert not unexplained, ("narrow these to what the library raises, or say on the except line why any type is "
                             "expected and where the error goes:\n" + "\n".join(unexplained))


PLANTED = '''
import json


def bare(text):
    try:
        return json.loads(text)
    except:
        return None


def everything(text):
    try:
        return json.loads(text)
    except Exception:
        return None


def interrupted(path):
    try:
        return open(path).read()
    except BaseException:
        raise


def in_a_tuple(text):
    try:
        return json.loads(text)
    except (ValueError,
            Exception) as error:
        return str(error)


def directive_only(text):
    try:
        return json.loads(text)
    except Exception:  # noqa: BLE001
        return None


def narrowed(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


def explained(text):
    try:
        return json.loads(text)
    except Exception as error:   # a decoder plugged in by the user raises any type: said in the result
        return str(error)


def explained_over_lines(text):
    try:
        return json.loads(text)
    except (ValueError,
            Exception) as error:   # the same, the reason where the caught types end
        return str(error)


TEMPLATE = """
try:
    run()
except:
    pass
"""
'''


def test_the_checker_reports_each_catch_all_without_a_reason(tmp_path):
    package = tmp_path / "planted"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "module.py").write_text(PLANTED)
    lines = PLANTED.splitlines()
    assert unexplained_handlers(package) == [
        f"planted/module.py:{lines.index(clause) + 1}: {clause.strip()}"
        for clause in ("    except:", "    except Exception:", "    except BaseException:", "    except (ValueError,",
                       "    except Exception:  # noqa: BLE001")]
