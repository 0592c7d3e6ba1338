"""The artifact cache (harness.cache): every hit verified against its manifest, a
damaged entry evicted and converted again, and concurrent writers that neither
raise nor hand out a folder being replaced."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from harness import locks
from harness.cache import MANIFEST, PROVENANCE, ArtifactCache, verify_entry

PARTS = {"model": "0" * 64, "converter": "test@1"}
CONTENT = bytes(range(256)) * 4096  # 1 MiB


def write_artifact(folder: Path, pause_s: float = 0.0, log: Path | None = None) -> dict:
    """A conversion that writes its file in two halves, `pause_s` apart: a reader of a
    half-written folder would see half of CONTENT."""
    if log is not None:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
    with open(folder / "model.bin", "wb") as handle:
        handle.write(CONTENT[: len(CONTENT) // 2])
        handle.flush()
        time.sleep(pause_s)
        handle.write(CONTENT[len(CONTENT) // 2:])
    return {"converter": "test", "writer": os.getpid()}


def entry_file(cache: ArtifactCache) -> Path:
    (path,) = cache.root.glob("*/*/model.bin")
    return path


def test_hit_is_verified_and_a_corrupted_file_is_evicted_and_converted_again(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    folder, provenance, hit = cache.get_or_create(PARTS, write_artifact)
    assert not hit and "cache_evicted" not in provenance
    assert set(json.loads((folder / MANIFEST).read_text())["sha256"]) == {"model.bin", PROVENANCE}
    assert cache.get_or_create(PARTS, write_artifact)[2] is True

    corrupted = bytearray(CONTENT)
    corrupted[1000] ^= 0xFF  # one flipped byte
    (folder / "model.bin").write_bytes(bytes(corrupted))
    again, provenance, hit = cache.get_or_create(PARTS, write_artifact)
    assert again == folder and not hit
    assert provenance["cache_evicted"].startswith("model.bin changed on disk (sha256 ")
    # The twin without a checksum would have handed out the corrupted bytes: these are gone.
    assert (folder / "model.bin").read_bytes() == CONTENT
    # The eviction is this call's news, not the entry's: the next hit does not repeat it.
    assert "cache_evicted" not in json.loads((folder / PROVENANCE).read_text())
    _, provenance, hit = cache.get_or_create(PARTS, write_artifact)
    assert hit and "cache_evicted" not in provenance


@pytest.mark.parametrize("damage, reason", [
    (lambda folder: (folder / "model.bin").unlink(), "model.bin missing from the entry"),
    (lambda folder: (folder / "stray.txt").write_text("x"), "stray.txt in the entry but not in its manifest"),
    (lambda folder: (folder / MANIFEST).unlink(), f"{MANIFEST} is missing"),
    (lambda folder: (folder / MANIFEST).write_text("{"), f"{MANIFEST} cannot be read"),
    (lambda folder: (folder / "model.bin").write_bytes(CONTENT[:100]), "model.bin changed on disk"),
])
def test_every_kind_of_damage_is_evicted_with_its_reason(tmp_path, damage, reason):
    cache = ArtifactCache(tmp_path / "cache")
    folder = cache.get_or_create(PARTS, write_artifact)[0]
    damage(folder)
    assert verify_entry(folder).startswith(reason)
    again, provenance, hit = cache.get_or_create(PARTS, write_artifact)
    assert not hit and provenance["cache_evicted"].startswith(reason)
    assert verify_entry(again) is None and (again / "model.bin").read_bytes() == CONTENT


def test_failed_conversion_leaves_no_entry_and_no_temporary_folder(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")

    def broken(folder: Path) -> dict:
        (folder / "model.bin").write_bytes(b"half")
        raise RuntimeError("exporter crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_create(PARTS, broken)
    assert not [p for p in cache.root.rglob("*") if p.is_dir() and len(p.name) > 2]


def test_entries_are_made_with_the_umask_not_private(tmp_path):
    previous = os.umask(0o027)
    try:
        folder = ArtifactCache(tmp_path / "cache").get_or_create(PARTS, write_artifact)[0]
    finally:
        os.umask(previous)
    assert folder.stat().st_mode & 0o777 == 0o750  # tempfile.mkdtemp would give 0o700


def test_without_flock_the_cache_still_works(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "fcntl", None)
    cache = ArtifactCache(tmp_path / "cache")
    assert cache.get_or_create(PARTS, write_artifact)[2] is False
    assert cache.get_or_create(PARTS, write_artifact)[2] is True


# ------------------------------------------------------------------ concurrent processes

def create_once(root: str, enabled: bool, log: str, start, results) -> None:
    """One process: wait for the others, then get the entry and read its file."""
    try:
        start.wait(timeout=60)
        folder, provenance, hit = ArtifactCache(Path(root), enabled).get_or_create(
            PARTS, lambda out: write_artifact(out, pause_s=0.3, log=Path(log)))
        results.put((str(folder), (folder / "model.bin").read_bytes() == CONTENT, hit, None))
    except BaseException as error:  # reported to the test, which fails on it
        results.put((None, False, None, repr(error)))


def read_repeatedly(root: str, enabled: bool, log: str, start, results, rounds: int = 15) -> None:
    """One process: get the entry `rounds` times, reading its file each time, while
    others (with the cache bypassed) replace it."""
    try:
        start.wait(timeout=60)
        cache = ArtifactCache(Path(root), enabled)
        for _ in range(rounds):
            folder, _, _ = cache.get_or_create(PARTS, lambda out: write_artifact(out, pause_s=0.05, log=Path(log)))
            if (folder / "model.bin").read_bytes() != CONTENT:
                raise AssertionError(f"{folder}/model.bin incomplete")
        results.put((str(folder), True, None, None))
    except BaseException as error:
        results.put((None, False, None, repr(error)))


def run_processes(tmp_path: Path, plan: list[tuple]) -> list[tuple]:
    """Start one spawned process per (function, cache enabled) at once; their results."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(len(plan)), context.Queue()
    log = tmp_path / "conversions.log"
    log.touch()
    processes = [context.Process(target=function, args=(str(tmp_path / "cache"), enabled, str(log), start, results))
                 for function, enabled in plan]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    return outcomes


def test_concurrent_writers_of_one_key_convert_once_and_all_get_the_complete_folder(tmp_path):
    outcomes = run_processes(tmp_path, [(create_once, True)] * 4)
    assert [error for *_, error in outcomes] == [None] * 4
    assert len({folder for folder, *_ in outcomes}) == 1
    assert all(complete for _, complete, _, _ in outcomes)
    assert sorted(hit for _, _, hit, _ in outcomes) == [False, True, True, True]
    assert len((tmp_path / "conversions.log").read_text().split()) == 1  # the others waited for it
    assert verify_entry(Path(outcomes[0][0])) is None
    assert not list((tmp_path / "cache").glob("tmp-*")) and not list((tmp_path / "cache").glob("old-*"))


def test_readers_never_see_an_entry_being_replaced(tmp_path):
    """Runs with the cache bypassed replace the entry over and over while others read it."""
    outcomes = run_processes(tmp_path, [(read_repeatedly, False)] * 2 + [(read_repeatedly, True)] * 2)
    assert [error for *_, error in outcomes] == [None] * 4
    assert len((tmp_path / "conversions.log").read_text().split()) >= 30  # every bypassing call converted


# ------------------------------------------------------------------ through a run

def flip_sign_of_largest_weight(path: Path) -> None:
    """Flip one bit of the cached ONNX file in place: the sign of its largest weight."""
    import onnx

    data = bytearray(path.read_bytes())
    tensor = max((t for t in onnx.load(str(path)).graph.initializer if t.raw_data), key=lambda t: len(t.raw_data))
    offset = data.find(tensor.raw_data)
    index = int(np.argmax(np.abs(np.frombuffer(tensor.raw_data, np.float32))))
    data[offset + 4 * index + 3] ^= 0x80  # the sign bit of a little-endian float32
    path.write_bytes(bytes(data))


def test_corrupted_cached_onnx_is_evicted_and_the_rerun_passes(run_parity, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    run_parity("--model=simple", cache=cache, examples=3).result.assert_outcomes(passed=1)
    (cached,) = cache.glob("*/*/model.onnx")
    good = cached.read_bytes()
    flip_sign_of_largest_weight(cached)
    twin = tmp_path_factory.mktemp("twin") / "corrupted.onnx"
    shutil.copy(cached, twin)

    rerun = run_parity("--model=simple", cache=cache, examples=3)
    rerun.result.assert_outcomes(passed=1)
    provenance = rerun.single["provenance"]
    assert provenance["cache_hit"] is False
    assert provenance["cache_evicted"].startswith("model.onnx changed on disk")
    assert cached.read_bytes() != twin.read_bytes() and verify_entry(cached.parent) is None
    assert len(cached.read_bytes()) == len(good)

    # The twin: the corrupted file used as it was, which the checksum kept the rerun from.
    used = run_parity("--model=simple", f"--converted={twin}", cache=cache, examples=3)
    used.result.assert_outcomes(failed=1)
