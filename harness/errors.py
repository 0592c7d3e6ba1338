"""The errors a case can end in, each with a message meant for the user."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


class CaseError(Exception):
    """A case that cannot be run as asked: a bad file, a failed export, a spec
    that does not fit the model. `stage` says where (load, convert, runtime,
    inputs); the message says what to do. Other cases go on."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage
        self.message = message

    def __str__(self) -> str:
        return f"[{self.stage}] {self.message}"


class OptionError(ValueError):
    """An option value the harness cannot use; the message says what would do. Here, below every
    module that parses an option's value, so that RunOptions can hold the parsed value."""


class RuntimeLimit(CaseError):
    """A runtime that cannot run a file by its own limits: no kernel for an op
    and type (ONNX Runtime's NOT_IMPLEMENTED), an op it cannot convert
    (OpenVINO). Where the file is the user's own ONNX model, run as it is, the
    case is skipped naming the limit (runner.start_case): the question "does
    this runtime compute what the file says" has no answer there. Where the
    harness converted the file, it stays an error of the conversion path."""

    def __init__(self, message: str):
        super().__init__("runtime", message)


def summarize_exception(error: BaseException, max_lines: int = 6) -> str:
    """The type and the first lines of an exception's message, without the
    framework's traceback, for a one-paragraph error."""
    text = str(error).strip() or repr(error)
    lines = [line for line in text.splitlines() if line.strip()]
    short = "\n".join(lines[:max_lines])
    if len(lines) > max_lines:
        short += f"\n... ({len(lines) - max_lines} more lines)"
    return f"{type(error).__name__}: {short}"


# What a write fails with when the disk is full, or the user's share of it is.
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))   # Windows has no EDQUOT


def disk_full(error: BaseException, path: Path) -> str | None:
    """Where `error`, or an error it was raised from or while handling (a
    converter's own error around the write that failed), is a full disk or an
    exceeded quota: the reason, and the filesystem holding `path` to free space
    on with the space free there now; None for any other error."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
            break
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    else:
        return None
    mount = Path(os.path.abspath(path))
    while not mount.exists() or not os.path.ismount(mount):
        mount = mount.parent
    try:
        free = f"{shutil.disk_usage(mount).free / 2**20:.1f} MiB free there now"
    except OSError:
        free = "its free space unknown"
    return (f"{os.strerror(cause.errno).lower()} ({errno.errorcode[cause.errno]}): free space on {mount} "
            f"({free})")
