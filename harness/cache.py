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

What a case is handed is not the entry but a private copy of it, made as it is
checked (each file hashed as it is copied): runtimes open paths, not bytes, and
an entry rewritten between its check and a runtime's load (by a run with the
cache bypassed, or by hand) would load bytes nobody checked, and fail a correct
conversion with nothing to say the cache changed. The copies of one process
lie in `ROOT/in-use/TOKEN/`, marked in use by a lock on `ROOT/in-use/TOKEN.lock`;
they go when its next case starts (`release_private_copies`) and when it ends,
and a folder whose process was killed is removed by the next process to use
the cache. A copy costs the write of the entry's bytes, read for the check
anyway: a hit on a 48 MiB model.onnx took 88 ms with the copy, 68 ms without
(medians of 17, ext4, in the page cache; a whole process 0.227 s against 0.198 s).

An entry is written into a temporary folder and renamed into place, so a crash
never leaves a half-written one. Processes share the cache through one lock file
per key (`ROOT/ab/KEY.lock`): a reader holds it shared while it verifies, a
writer exclusive while it converts and publishes. Two runs that need the same
artifact convert it once, and neither returns a folder the other is replacing.

A seed (`--parity-cache-seed`) is another cache's root, read-only (restored
from a CI cache or an object store): where the local cache misses, the seed's
entry of the key is copied into the local cache, checked against its manifest
as it is copied, then handed out as a local hit is. A seed entry that fails its
check is named in a warning and the provenance (`cache_seed_rejected`), and
the artifact is converted locally. The seed is never written: no lock, no
private copy, no last use is kept there. Entries are copied, not hard-linked: a
link would share its inode with the seed, and a hand edit of the local entry
would then change the seed too.

A hit sets the entry folder's mtime (its last use), which `prune` orders entries by.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import hashlib
import json
import os
import secrets
import shutil
import tarfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from harness.errors import CaseError, disk_full
from harness.locks import FileLock, LockHeld
from harness.model_file import file_sha256
from harness.user_json import UserJSONError, read_user_json

PROVENANCE = "provenance.json"
MANIFEST = "manifest.json"
IN_USE = "in-use"   # ROOT/in-use/TOKEN/KEY/: one process's private copies of the entries its cases use


def cache_key(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class ArtifactCache:
    def __init__(self, root: Path, enabled: bool = True, seed: Path | None = None):
        self.root = Path(root)
        self.enabled = enabled
        self.seed = None if seed is None else Path(seed)   # a read-only cache, consulted where this one misses

    def entry_folder(self, key: str) -> Path:
        """The shared entry of `key` (`cache_key(parts)`), which get_or_create checks and copies."""
        return _entry_under(self.root, key)

    def get_or_create(self, parts: Mapping[str, Any], create: Callable[[Path], dict]) -> tuple[Path, dict, bool]:
        """A private copy of the folder holding the artifact for `parts` (named by its
        cache key, as the entry is), its provenance, and whether it came from the cache.
        `create(folder)` writes the artifact and returns its provenance. The copy holds
        the bytes checked against the entry's manifest, whatever happens to the entry
        afterwards; it stays until `release_private_copies()` or the process's end.

        A cached entry that fails its manifest is evicted and created again; the
        provenance returned then holds `cache_evicted`, the reason (not stored in the entry).
        Where the local cache misses, the seed's entry is taken (`cache_seed`: the seed's
        folder) or, failing its manifest, refused (`cache_seed_rejected`: which and why).
        A disk that fills is a CaseError naming it, and leaves no entry."""
        key = cache_key(parts)
        entry = self.entry_folder(key)
        lock = _lock_of(entry)
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            copy = _private_folder(self.root) / key
            if self.enabled:
                with FileLock(lock, shared=True):
                    if entry.is_dir() and _checked_copy(entry, copy) is None:
                        _mark_used(entry)
                        return copy, _read_provenance(copy), True
            with FileLock(lock):
                cached = self.enabled and os.path.lexists(entry)
                evicted = _checked_copy(entry, copy) if cached else None
                if cached and evicted is None:
                    return copy, _read_provenance(copy), True  # made by another process while this one waited
                if evicted is not None:
                    remove_path(entry)
                seeded = self._from_seed(key, entry, copy) if self.enabled and self.seed is not None else {}
                if "cache_seed" in seeded:
                    noted = {**seeded, "cache_evicted": evicted} if evicted is not None else seeded
                    return copy, {**_read_provenance(copy), **noted}, True
                provenance = {**self._create(key, entry, create, copy), **seeded}
        except Exception as error:   # a converter's disk-full error comes in its framework's type: the rest re-raised
            full = disk_full(error, self.root)
            if full is None:
                raise
            raise CaseError(getattr(error, "stage", "convert"),
                            f"the artifact cache {self.root} could not be written: {full}, or give "
                            f"--parity-cache-dir (python -m harness: --cache-dir) a folder on another disk; "
                            f"no entry was left half written") from None
        return copy, (provenance if evicted is None else {**provenance, "cache_evicted": evicted}), False

    def _from_seed(self, key: str, entry: Path, copy: Path) -> dict[str, str]:
        """Copy the seed's entry of `key` to `entry` (absent, its exclusive lock held), checked
        as it is copied, and its private copy to `copy` from there: {"cache_seed": the seed}
        when taken, {"cache_seed_rejected": which and why} when it fails its check, {} when
        the seed has none. The local entry is checked again as it is copied to `copy`, so a
        seed manifest rewritten while it was read never passes."""
        seeded = _entry_under(self.seed, key)
        if not seeded.is_dir():
            return {}
        work = new_folder(self.root, "tmp-")
        try:
            reason = verify_entry(seeded, copy_to=work)
            if reason is None:
                file_sha256(seeded / MANIFEST, work / MANIFEST)
                os.rename(work, entry)
                reason = _checked_copy(entry, copy)
                if reason is not None:
                    remove_path(entry)
        finally:
            remove_path(work)
        if reason is None:
            return {"cache_seed": str(self.seed)}
        rejected = f"{seeded}: {reason}"
        warnings.warn(f"cache seed entry {rejected}: not used, converted again into {self.root}", stacklevel=3)
        return {"cache_seed_rejected": rejected}

    def _create(self, key: str, entry: Path, create: Callable[[Path], dict], copy: Path) -> dict:
        """Convert into a fresh folder, write its provenance and manifest (hashing each
        file as it is copied to `copy`), and move it to `entry` (the key's exclusive lock held)."""
        work = new_folder(self.root, "tmp-")
        try:
            provenance = dict(create(work), cache_key=key)
            (work / PROVENANCE).write_text(json.dumps(provenance, indent=1, sort_keys=True, default=str))
            _fresh_folder(copy)
            manifest = {"sha256": {name: _hashed(work, name, copy) for name in _files(work)}}
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
        except BaseException:   # re-raised: an interrupt too leaves no half-made entry behind
            remove_path(work)
            remove_path(copy)
            raise
        remove_path(work)  # now the replaced entry
        return provenance


def _entry_under(root: Path, key: str) -> Path:
    return root / key[:2] / key


def _mark_used(entry: Path) -> None:
    """Set the entry's last use (its folder's mtime), by which prune_cache orders entries;
    a cache shared read-only with this user keeps its own."""
    try:
        os.utime(entry)
    except OSError:
        pass


def cache_entries(root: Path) -> list[Path]:
    """The entry folders of the cache at `root` (ROOT/ab/KEY): not its private copies,
    lock files, or temporary folders."""
    return sorted(path for path in Path(root).glob("??/*")
                  if len(path.name) == 64 and path.name.startswith(path.parent.name) and path.is_dir()
                  and not path.is_symlink() and all(c in "0123456789abcdef" for c in path.name))


def _lock_of(entry: Path) -> Path:
    return entry.with_name(f"{entry.name}.lock")


def _entry_bytes(entry: Path) -> int:
    return sum((entry / name).stat().st_size for name in [MANIFEST, *_files(entry)] if (entry / name).exists())


def _entry_name(entry: Path) -> str:
    return f"{entry.parent.name}/{entry.name}"


@dataclass
class ExportResult:
    entries: int = 0                 # entries written to the tarball
    size: int = 0                    # their bytes, before compression
    skipped: list[str] = field(default_factory=list)   # "ab/KEY: why", each left out


def export_cache(root: Path, out: Path) -> ExportResult:
    """Write the cache at `root`'s entries that pass their check to the gzipped tarball `out`,
    as `ab/KEY/...` (unpacked into a folder, a seed): each read under its shared lock, so
    that no writer replaces it meanwhile. A damaged entry is left out and named; private
    copies, locks and temporary folders are not entries. Written beside `out`, renamed
    into place: a crash leaves no half tarball under its name."""
    result = ExportResult()
    partial = out.with_name(f".{out.name}.{secrets.token_hex(4)}.partial")
    try:
        with tarfile.open(partial, "w:gz") as archive:
            for entry in cache_entries(root):
                with FileLock(_lock_of(entry), shared=True):
                    reason = verify_entry(entry)
                    if reason is None:
                        names = [MANIFEST, *_files(entry)]
                        infos = [archive.gettarinfo(entry / name, f"{_entry_name(entry)}/{name}") for name in names]
                        strange = [name for name, info in zip(names, infos) if not info.isfile()]
                        if strange:
                            reason = f"{', '.join(strange)} not a regular file"
                    if reason is not None:
                        result.skipped.append(f"{_entry_name(entry)}: {reason}")
                        continue
                    for name, info in zip(names, infos):
                        with open(entry / name, "rb") as handle:
                            archive.addfile(info, handle)
                    result.entries += 1
                    result.size += sum(info.size for info in infos)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return result


@dataclass
class PruneResult:
    removed: list[tuple[str, int, float]] = field(default_factory=list)   # (ab/KEY, bytes, last use), oldest first
    in_use: list[str] = field(default_factory=list)   # due for removal, but locked by another process: kept
    kept: int = 0                    # entries left
    kept_size: int = 0               # their bytes


def prune_cache(root: Path, older_than_s: float | None = None, max_size: int | None = None,
                now: float | None = None) -> PruneResult:
    """Remove the cache at `root`'s entries last used (a hit's mtime, _mark_used) more than
    `older_than_s` ago, then more, least recently used first, until the rest hold at most
    `max_size` bytes. Each is taken under its exclusive lock without waiting: one that
    another process is reading or writing is kept and named. It is renamed out of its
    place under the lock, then deleted: a reader finds the whole entry or none."""
    now = time.time() if now is None else now
    aged = sorted((entry.stat().st_mtime, _entry_bytes(entry), entry) for entry in cache_entries(root))
    total = sum(size for _, size, _ in aged)
    result = PruneResult()
    for used, size, entry in aged:
        due = (older_than_s is not None and used < now - older_than_s) or (max_size is not None and total > max_size)
        if due:
            lock = FileLock(_lock_of(entry))
            try:
                lock.acquire(wait=False)
            except LockHeld:
                result.in_use.append(_entry_name(entry))
                due = False
            else:
                doomed = new_folder(Path(root), "old-")
                try:
                    try:
                        os.rename(entry, doomed / entry.name)
                    finally:
                        lock.release()
                finally:
                    remove_path(doomed)
                total -= size
                result.removed.append((_entry_name(entry), size, used))
        if not due:
            result.kept += 1
            result.kept_size += size
    return result


def verify_entry(folder: Path, copy_to: Path | None = None) -> str | None:
    """Why the cache entry in `folder` cannot be trusted, or None when every file in
    it is listed in its manifest with the same sha256, and nothing else is there.
    With `copy_to`, each file is copied there as it is hashed."""
    if not os.path.lexists(folder / MANIFEST):
        return f"{MANIFEST} is missing (an entry from before checksums, or one damaged)"
    try:
        # read as a user's JSON: a cache may come from elsewhere (a seed), and a deep one would end in RecursionError
        recorded = read_user_json(folder / MANIFEST)["sha256"]
        if not isinstance(recorded, dict):
            raise TypeError(f"'sha256' is a {type(recorded).__name__}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{MANIFEST} cannot be read ({type(error).__name__}: {error})"
    found = set(_files(folder))
    missing, extra = sorted(set(recorded) - found), sorted(found - set(recorded))
    if missing:
        return f"{', '.join(missing)} missing from the entry"
    if extra:
        return f"{', '.join(extra)} in the entry but not in its manifest"
    for name in sorted(recorded):
        digest = _hashed(folder, name, copy_to)
        if digest != recorded[name]:
            return f"{name} changed on disk (sha256 {digest[:16]}, recorded {str(recorded[name])[:16]})"
    return None


def _hashed(folder: Path, name: str, copy_to: Path | None) -> str:
    """The sha256 of `folder`/`name`, copied to `copy_to`/`name` as it is read, where given."""
    if copy_to is None:
        return file_sha256(folder / name)
    (copy_to / name).parent.mkdir(parents=True, exist_ok=True)
    return file_sha256(folder / name, copy_to / name)


def _checked_copy(entry: Path, copy: Path) -> str | None:
    """verify_entry(entry) while copying it into `copy` afresh; the copy is removed
    where the entry fails its check."""
    _fresh_folder(copy)
    try:
        reason = verify_entry(entry, copy_to=copy)
    except BaseException:   # re-raised: an interrupt too leaves no half-made copy behind
        remove_path(copy)
        raise
    if reason is not None:
        remove_path(copy)
    return reason


def _fresh_folder(path: Path) -> None:
    """An empty folder at `path`, whatever was there (a copy handed out before: a runtime
    that holds its files open keeps them, since they are unlinked, not rewritten)."""
    remove_path(path)
    path.mkdir()


# (cache root, process id) -> the process's folder of private copies under that root, and its lock
_PRIVATE: dict[tuple[Path, int], tuple[Path, FileLock]] = {}


def _private_folder(root: Path) -> Path:
    """This process's folder of private copies under the cache `root`, made at its first
    use and removed at the process's end; first, folders left by processes that ended
    without removing theirs (killed) are removed."""
    place = (Path(os.path.abspath(root)), os.getpid())
    if place in _PRIVATE:
        return _PRIVATE[place][0]
    area = place[0] / IN_USE
    area.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(area)
    token = secrets.token_hex(8)
    # Locked under a name the sweep passes over, then renamed: no lock is ever found unheld by a live process.
    lock = FileLock(area / f".{token}.lock").acquire()
    os.rename(lock.path, area / f"{token}.lock")
    folder = area / token
    folder.mkdir()
    _PRIVATE[place] = (folder, lock)
    atexit.register(_remove_private, place)
    return folder


def _remove_abandoned(area: Path) -> None:
    """Remove the private copies in `area` whose process is gone: the flock on its lock
    file is released by the kernel however the process ended. Where flock does not work
    none is removed, since a folder in use cannot be told from one abandoned."""
    for lock_path in area.glob("*.lock"):
        if lock_path.name.startswith("."):
            continue
        lock = FileLock(lock_path)
        try:
            lock.acquire(wait=False)
        except (LockHeld, OSError):
            continue
        try:
            if lock.held:
                remove_path(lock_path.with_suffix(""))
                lock_path.unlink(missing_ok=True)
        finally:
            lock.release()


def release_private_copies() -> None:
    """Remove the private copies this process has been handed: call it when the case
    that loaded them is done (a runtime still holding a file open keeps it)."""
    for (_, pid), (folder, _) in _PRIVATE.items():
        if pid == os.getpid():
            for child in os.scandir(folder):
                remove_path(Path(child.path))


def _remove_private(place: tuple[Path, int]) -> None:
    folder, lock = _PRIVATE.pop(place)
    if place[1] == os.getpid():   # not a forked child's: the folder is its parent's
        remove_path(folder)
        Path(f"{folder}.lock").unlink(missing_ok=True)
    lock.release()


def _read_provenance(entry: Path) -> dict:
    try:
        provenance = read_user_json(entry / PROVENANCE)
    except UserJSONError as error:   # listed in the manifest, so as its author wrote it: a seed made elsewhere
        raise CaseError("convert", f"cache entry {entry.name}: {error}; delete the entry's folder under the cache, "
                                   f"or give another --parity-cache-dir") from None
    if not isinstance(provenance, dict):
        raise CaseError("convert", f"cache entry {entry.name}: {PROVENANCE} holds no object; delete the entry's "
                                   f"folder under the cache, or give another --parity-cache-dir")
    return provenance


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
