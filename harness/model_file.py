"""A user's model file as bytes, before any framework reads it: what a path
really is, whether a zip archive is intact and within a size budget, and the
hash that goes on the case record.

No framework is imported here: the checks run before one is asked to parse
anything, so that a corrupt file is reported as corrupt (never as a file that
needs `--trust-model-code`) and a zip bomb is refused before it is expanded.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import zipfile
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import CaseError

# A zip member's declared size is checked before it is read. An archive may
# expand to EXPANSION_RATIO times its own size, and to MIN_EXPANSION_BUDGET
# whatever its size: model weights barely compress (float32 weights deflate by
# 1.1x; torch and Keras store them uncompressed), so only a crafted archive
# comes near 100x (deflate reaches 1032x on repeated bytes).
EXPANSION_RATIO = 100
MIN_EXPANSION_BUDGET = 1 << 30
# A JSON config member: the largest Keras config of the zoo (EfficientNetB0's)
# takes 227 KiB, ResNet50's 172 KiB; 64 MiB is some 280 times that.
CONFIG_MEMBER_BUDGET = 64 << 20

_CHUNK = 1 << 20


def not_a_file(path: Path) -> str:
    """What `path` is when it is not a regular file, as the end of a sentence
    that starts with the path: "does not exist", "is a directory, not a file",
    "is a symbolic link that loops back on itself", ..."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a symbolic link that loops back on itself (or a chain of links too long to follow)"
        if path.is_symlink():
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
        if error.errno == errno.ENOTDIR:
            return "does not exist (a part of its path is a file, not a folder)"
        if error.errno == errno.EACCES:
            return "cannot be read: permission denied on its folder"
        return "does not exist"
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISREG(mode):
        return "is a regular file"
    kind = ("a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
    return f"is {kind}, not a regular file"


def require_file(path: Path, what: str = "model file", *, named: str | None = None, stage: str = "load") -> None:
    """CaseError(`stage`) unless `path` is a regular file with something in it.
    Messages name it "{what} {path}", or `named` where the file is a part of a
    model ("SavedModel DIR: saved_model.pb")."""
    path = Path(path)
    named = named or f"{what} {path}"
    if not path.is_file():
        raise CaseError(stage, f"{named} {not_a_file(path)}")
    if path.stat().st_size == 0:
        raise CaseError(stage, f"{named} is empty (0 bytes): was it written completely?")


# ---------------------------------------------------------------- zip archives

def check_zip(path: Path, what: str = "model file") -> list[zipfile.ZipInfo]:
    """The members of the zip archive at `path`, after checking that it
    expands within its budget and that every member reads back with the
    CRC-32 the archive records for it.

    torch's own zip reader and Keras do not check CRCs: a flipped bit in a
    weight would load as a different weight. Every member is read once here,
    in chunks; zipfile stops each member at its declared size, so the reading
    is bounded by the budget checked first."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            check_zip_budget(path, members, what)
            for member in members:
                with archive.open(member) as handle:
                    while handle.read(_CHUNK):
                        pass
    except CaseError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as error:
        raise CaseError("load", f"{what} {path} is not a readable zip archive: it is truncated or corrupt "
                                f"({_zip_problem(error)}); get the file again, or write it again") from None
    return members


def check_zip_budget(path: Path, members: list[zipfile.ZipInfo], what: str = "model file") -> None:
    """CaseError('load') naming the sizes when the members' declared sizes
    exceed the archive's expansion budget (see EXPANSION_RATIO)."""
    size = Path(path).stat().st_size
    budget = max(MIN_EXPANSION_BUDGET, EXPANSION_RATIO * size)
    declared = sum(m.file_size for m in members)
    if declared > budget:
        largest = max(members, key=lambda m: m.file_size)
        raise CaseError("load", f"{what} {path} would expand from {format_bytes(size)} to {format_bytes(declared)} "
                                f"({largest.filename}: {format_bytes(largest.file_size)}), more than the budget of "
                                f"{format_bytes(budget)} ({EXPANSION_RATIO}x its size, at least "
                                f"{format_bytes(MIN_EXPANSION_BUDGET)}): a zip bomb or a corrupt archive; not read")


def read_member(archive: zipfile.ZipFile, path: Path, name: str, limit: int, what: str = "model file") -> bytes:
    """Member `name` of an open archive, refused when its declared size is over
    `limit`; read with that bound too, whatever the archive declares."""
    size = archive.getinfo(name).file_size
    if size > limit:
        raise CaseError("load", f"{what} {path}: its {name} declares {format_bytes(size)}, more than the "
                                f"{format_bytes(limit)} such a member may take; not read (a zip bomb or a corrupt "
                                "archive)")
    chunks, total = [], 0
    with archive.open(name) as handle:
        while chunk := handle.read(_CHUNK):  # in chunks: zipfile inflates as much as it is asked for at once
            total += len(chunk)
            if total > limit:
                raise CaseError("load", f"{what} {path}: its {name} expands past {format_bytes(limit)}; not read "
                                        "(a zip bomb or a corrupt archive)")
            chunks.append(chunk)
    return b"".join(chunks)


def _zip_problem(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    match = re.match(r"Bad CRC-32 for file '(.+)'", text)
    return f"member {match.group(1)} fails its CRC-32 check" if match else text


def format_bytes(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


# ---------------------------------------------------------------- the record's hash

def describe(origin: str) -> dict[str, Any] | None:
    """The model file a case came from, for its record: {"path", "sha256",
    "bytes"} (and "files" for a folder or several files), or None where
    `origin` names no file.

    One file: the sha256 of its bytes, as `sha256sum` prints it. A folder (a
    SavedModel), a TF checkpoint prefix (its .index and .data-* files) or an
    MXNet symbol with its PREFIX-*.params: the sha256 over each file's path
    relative to the folder, a NUL byte and its bytes, in sorted order."""
    path = Path(origin)
    files = _files_of(path)
    if not files:
        return None
    several = path.is_dir() or len(files) > 1
    try:
        sha256, total = _digest(str(path if path.is_dir() else path.parent), _signature(files), several)
    except OSError as error:  # unreadable: the case's own loading says so; the record says why there is no hash
        return {"path": str(origin), "sha256": None, "error": f"{error.strerror or error} ({error.filename})"}
    described: dict[str, Any] = {"path": str(origin), "sha256": sha256, "bytes": total}
    if several:
        described["files"] = len(files)
    return described


def file_sha256(path: Path, copy_to: Path | None = None) -> str:
    """The sha256 of one file, read in chunks; with `copy_to`, the chunks are
    written there as they are hashed, so that the copy holds exactly the bytes
    the digest is of, whatever happens to `path` meanwhile."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle, (open(copy_to, "wb") if copy_to is not None else nullcontext()) as copy:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
            if copy is not None:
                copy.write(block)
    return digest.hexdigest()


def folder_sha256(folder: Path) -> str:
    """sha256 over every file of a folder (relative path, NUL, bytes), in sorted order."""
    return _digest(str(folder), _signature(_files_of(Path(folder))), True)[0]


def _files_of(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.is_file():
        if path.name.endswith("-symbol.json"):
            prefix = path.name[: -len("-symbol.json")]
            return [path] + sorted(p for p in path.parent.glob(f"{glob_escape(prefix)}-*.params") if p.is_file())
        return [path]
    return sorted(p for p in path.parent.glob(f"{glob_escape(path.name)}.*")
                  if p.is_file() and (p.name.endswith(".index") or ".data-" in p.name))


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _signature(files: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of each file: the cache key of `_digest`."""
    stats = [(f, f.stat()) for f in files]
    return tuple((str(f), s.st_size, s.st_mtime_ns) for f, s in stats)


@lru_cache(maxsize=64)
def _digest(base: str, signature: tuple[tuple[str, int, int], ...], with_names: bool) -> tuple[str, int]:
    """(sha256, bytes) of the files in `signature`; cached, so that a file is
    hashed once per run rather than once per case, and again when it changes."""
    digest, total = hashlib.sha256(), 0
    for name, _, _ in signature:
        if with_names:
            digest.update(str(Path(name).relative_to(base)).encode() + b"\0")
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(block)
                total += len(block)
    return digest.hexdigest(), total
