"""Advisory locks on files (fcntl.flock), for folders that several processes share:
the artifact cache's entries and a run's reports folder.

A flock lock belongs to an open file, so the kernel releases it when its process
ends, however it ends: a killed run never leaves a stale lock behind. Where flock
does not exist (Windows) or the filesystem refuses it, the lock holds nothing and
says so (`held` is False): single runs work as before, and only the protection
against concurrent ones is lost.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

# flock errors that mean "this filesystem cannot lock", not "someone holds it".
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class LockHeld(Exception):
    """Another process holds the lock (raised by a lock that does not wait)."""


class FileLock:
    """An flock lock on `path` (created if absent), shared or exclusive.

    `with FileLock(path):` waits for the lock; `acquire(wait=False)` raises
    LockHeld instead of waiting."""

    def __init__(self, path: Path, shared: bool = False):
        self.path = Path(path)
        self.shared = shared
        self.held = False
        self._fd: int | None = None

    def acquire(self, wait: bool = True) -> "FileLock":
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is None:
            return self
        flags = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(self._fd, flags)
        except BlockingIOError:
            self.release()
            raise LockHeld(str(self.path)) from None
        except OSError as error:
            if error.errno not in _UNSUPPORTED:
                self.release()
                raise
            return self
        self.held = True
        return self

    @property
    def fileno(self) -> int | None:
        """The open lock file (to write who holds it), or None when released."""
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases its flock
            self._fd = None
        self.held = False

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
