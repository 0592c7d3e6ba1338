"""A conversion tool run in a child process (MNN's converter, onnx2tf): a
native crash or a hang there is the case's error, never the run's end. The
exit status says how it ended (a negative one: the signal that killed it,
TIMED_OUT: the time limit), and its last lines go into the error."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

TIMED_OUT = -9999
TAIL_LINES = 12


def run_child(command: Sequence[str], timeout: float, *, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> tuple[int, str]:
    """(exit status, stdout and stderr) of `command`, killed after `timeout` seconds."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:
        out = error.stdout or b""
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        return TIMED_OUT, text + f"\n(timed out after {timeout:.0f} s and was killed)"
    return done.returncode, (done.stdout or "") + (done.stderr or "")


def tail(text: str, noise: Sequence[str] = (), lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of `text` that say something (none of `noise` in them)."""
    kept = [line for line in text.splitlines() if line.strip() and not any(n in line for n in noise)]
    return "\n".join(kept[-lines:]) or "(no output)"


def status(code: int) -> str:
    """How a child ended, as the end of "it ..."."""
    if code == TIMED_OUT:
        return "timed out"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
