"""A content-addressed store of converted artifacts, verified on every hit and
safe to share between processes.

The key hashes everything that can change a conversion's result: the model's
content hash, the spec's inputs and outputs, the converter, its options and the
versions of the tools involved.

An entry is the folder `ROOT/ab/KEY/`: the artifact, `provenance.json`, and
`manifest.json`, the sha256 of every other file in the folder. A hit is checked
against its manifest first: a file changed on disk (a flipped byte, a truncated
copy, a file added or removed by hand) would otherwise make every rerun fail and
blame the conversion. Such an entry is evicted and converted again, and the
provenance returned says why (`cache_evicted`).

An entry is written into a temporary folder and renamed into place, so a crash
never leaves a half-written one. Processes share the cache through one lock file
per key (`ROOT/ab/KEY.lock`): a reader holds it shared while it verifies, a
writer exclusive while it converts and publishes. Two runs that need the same
artifact convert it once, and neither returns a folder the other is replacing.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

from harness.locks import FileLock
from harness.model_file import file_sha256

PROVENANCE = "provenance.json"
MANIFEST = "manifest.json"


def cache_key(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class ArtifactCache:
    def __init__(self, root: Path, enabled: bool = True):
        self.root = Path(root)
        self.enabled = enabled

    def get_or_create(self, parts: Mapping[str, Any], create: Callable[[Path], dict]) -> tuple[Path, dict, bool]:
        """The folder holding the artifact for `parts`, its provenance, and whether it
        came from the cache. `create(folder)` writes the artifact and returns its provenance.

        A cached entry that fails its manifest is evicted and created again; the
        provenance returned then holds `cache_evicted`, the reason (not stored in the entry)."""
        key = cache_key(parts)
        entry = self.root / key[:2] / key
        lock = entry.with_name(f"{key}.lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        if self.enabled:
            with FileLock(lock, shared=True):
                if entry.is_dir() and verify_entry(entry) is None:
                    return entry, _read_provenance(entry), True
        with FileLock(lock):
            cached = self.enabled and os.path.lexists(entry)
            evicted = verify_entry(entry) if cached else None
            if cached and evicted is None:
                return entry, _read_provenance(entry), True  # made by another process while this one waited
            if evicted is not None:
                remove_path(entry)
            provenance = self._create(key, entry, create)
        return entry, (provenance if evicted is None else {**provenance, "cache_evicted": evicted}), False

    def _create(self, key: str, entry: Path, create: Callable[[Path], dict]) -> dict:
        """Convert into a fresh folder, write its provenance and manifest, and move it to `entry`
        (the key's exclusive lock held)."""
        work = new_folder(self.root, "tmp-")
        try:
            provenance = dict(create(work), cache_key=key)
            (work / PROVENANCE).write_text(json.dumps(provenance, indent=1, sort_keys=True, default=str))
            manifest = {"sha256": {name: file_sha256(work / name) for name in _files(work)}}
            (work / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            if not os.path.lexists(entry):
                os.rename(work, entry)
                return provenance
            # A valid entry replaced (the cache bypassed): swap in one step where the system can,
            # so that a reader that found the entry before opens the old files or the new, never none.
            if not exchange_paths(work, entry):
                old = work.with_name(f"old-{secrets.token_hex(8)}")
                os.rename(entry, old)
                os.rename(work, entry)
                work = old
        except BaseException:
            remove_path(work)
            raise
        remove_path(work)  # now the replaced entry
        return provenance


def verify_entry(folder: Path) -> str | None:
    """Why the cache entry in `folder` cannot be trusted, or None when every file in
    it is listed in its manifest with the same sha256, and nothing else is there."""
    try:
        recorded = json.loads((folder / MANIFEST).read_text())["sha256"]
        if not isinstance(recorded, dict):
            raise TypeError(f"'sha256' is a {type(recorded).__name__}")
    except FileNotFoundError:
        return f"{MANIFEST} is missing (an entry from before checksums, or one damaged)"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{MANIFEST} cannot be read ({type(error).__name__}: {error})"
    found = set(_files(folder))
    missing, extra = sorted(set(recorded) - found), sorted(found - set(recorded))
    if missing:
        return f"{', '.join(missing)} missing from the entry"
    if extra:
        return f"{', '.join(extra)} in the entry but not in its manifest"
    for name in sorted(recorded):
        digest = file_sha256(folder / name)
        if digest != recorded[name]:
            return f"{name} changed on disk (sha256 {digest[:16]}, recorded {str(recorded[name])[:16]})"
    return None


def _read_provenance(entry: Path) -> dict:
    return json.loads((entry / PROVENANCE).read_text())


def _files(folder: Path) -> list[str]:
    """Every file under `folder` but the manifest, as paths relative to it."""
    names = []
    for parent, _, files in os.walk(folder):
        for name in files:
            relative = (Path(parent) / name).relative_to(folder).as_posix()
            if relative != MANIFEST:
                names.append(relative)
    return sorted(names)


def new_folder(parent: Path, prefix: str) -> Path:
    """A new folder with a unique name, made as any folder (mode 0o777 less the umask;
    tempfile.mkdtemp would make it 0o700, unreadable to the user's group)."""
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = parent / f"{prefix}{secrets.token_hex(8)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        Path(path).unlink(missing_ok=True)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux's renameat2 with RENAME_EXCHANGE); False where
    the C library or the filesystem cannot."""
    try:
        renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except (OSError, TypeError):  # no C library to look in (Windows)
        return False
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))
