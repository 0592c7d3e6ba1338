"""JSON that comes from a user (a baseline, a report, a failure record, a
reproduction's manifest), read under a size and a depth budget.

Python's json parser recurses once per nesting level: a file nested 100,000
deep ends in RecursionError (a traceback, and in pytest an INTERNALERROR),
and a file of gigabytes is read whole before anything is said. Both are
refused here, before parsing, in one line naming the file: the nesting is
counted by a scan that skips strings, so a bracket inside a name counts for
nothing. No framework imports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

# Far above what the harness writes (a parity.json is nested 8 deep, a few MiB for a thousand cases).
MAX_JSON_BYTES = 256 << 20
MAX_JSON_DEPTH = 64

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_STEP = np.zeros(256, dtype=np.int8)   # byte -> the change of depth it makes
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


class UserJSONError(ValueError):
    """JSON from a user that cannot be read: missing, unreadable, past its
    budget or not JSON. The message is one line and names the file."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text`, brackets inside
    strings not counted; computed without recursion."""
    # Brackets are ASCII, never part of a multi-byte UTF-8 sequence: the bytes can be scanned as they are.
    steps = _STEP[np.frombuffer(_STRING.sub("", text).encode("utf-8", "surrogatepass"), dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


def loads_user_json(text: str | bytes, what: str, *, max_bytes: int = MAX_JSON_BYTES,
                    max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`text` parsed as JSON; UserJSONError naming `what` (a file, or a file's
    entry) when it is past `max_bytes` or nested deeper than `max_depth`, or
    is not JSON."""
    if len(text) > max_bytes:
        raise UserJSONError(f"{what}: {len(text):,} bytes of JSON, more than the {max_bytes:,} allowed; "
                            f"it is not a file this harness writes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UserJSONError(f"{what}: not UTF-8 text ({error})") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise UserJSONError(f"{what}: JSON nested {depth} deep, more than the {max_depth} allowed; "
                            f"it is not a file this harness writes")
    try:
        return json.loads(text)
    except RecursionError:   # the budget above a build's recursion limit: still one line, never a traceback
        raise UserJSONError(f"{what}: JSON nested too deep to parse") from None
    except ValueError as error:
        raise UserJSONError(f"{what}: not valid JSON ({error})") from None


def read_user_json(path: Path, what: str = "", *, max_bytes: int = MAX_JSON_BYTES,
                   max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON file at `path`, read under the budget (its size is checked
    before a byte is read); UserJSONError, one line naming the file (and
    `what` it was meant to be), for a missing, unreadable, oversized, too
    deeply nested or malformed file."""
    path = Path(path)
    label = f"{path} ({what})" if what else str(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise UserJSONError(f"{label}: a folder, not a JSON file")
        if size > max_bytes:
            raise UserJSONError(f"{label}: {size:,} bytes, more than the {max_bytes:,} allowed for JSON; "
                                f"it is not a file this harness writes")
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)   # a file that grew since stat is still held to the budget
    except FileNotFoundError:
        raise UserJSONError(f"{label}: no such file") from None
    except OSError as error:
        raise UserJSONError(f"{label}: cannot be read ({error.strerror or error})") from None
    return loads_user_json(data, label, max_bytes=max_bytes, max_depth=max_depth)
