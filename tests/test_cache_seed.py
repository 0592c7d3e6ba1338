"""A cache that travels (issue 22): a read-only seed consulted where the local cache
misses, every seed hit checked by its manifest; `python -m harness cache export` and
`cache prune`. The seed is made by a real conversion: the zoo's mlp, torch -> ONNX."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from harness.__main__ import main
from harness.cache import MANIFEST, ArtifactCache, cache_entries, cache_key, verify_entry
from harness.locks import FileLock
from harness.errors import OptionError
from harness.options import parse_cache_seed
from harness.runner import run_case
from tests.test_cache import CONTENT, PARTS, flip_sign_of_largest_weight, simple_case, write_artifact


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every path under `folder` with its bytes (files), mode and mtime: what "never written" compares."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        found[path.relative_to(folder).as_posix()] = (path.read_bytes() if path.is_file() else b"",
                                                       info.st_mode, info.st_mtime_ns)
    return found


def read_only(folder: Path) -> None:
    """chmod -R a-w (as root, which writes anyway, the snapshot is what proves the seed untouched)."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(stat.S_IMODE(path.lstat().st_mode) & ~0o222)


def writable(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(stat.S_IMODE(path.lstat().st_mode) | 0o200)


@pytest.fixture(scope="module")
def made_seed(tmp_path_factory) -> Path:
    """A cache holding the mlp's torch -> ONNX conversion, made by a real case."""
    case, options = simple_case(tmp_path_factory.mktemp("seeding"), "mlp")
    record = run_case(case, options, ArtifactCache(options.cache_dir)).to_json()
    assert record["status"] == "passed" and record["provenance"]["cache_hit"] is False, record["message"]
    return options.cache_dir


@pytest.fixture
def seed(made_seed, tmp_path) -> Path:
    """This test's read-only copy of the seed (entries only: what a CI restores)."""
    copy = tmp_path / "seed"
    for entry in cache_entries(made_seed):
        shutil.copytree(entry, copy / entry.parent.name / entry.name)
    read_only(copy)
    yield copy
    writable(copy)


def seeded_run(tmp_path: Path, seed: Path) -> tuple[dict, Path]:
    """The mlp case with an empty local cache and `seed`: its record and the local cache."""
    case, options = simple_case(tmp_path / "local", "mlp")
    options = replace(options, cache_seed=seed)
    return run_case(case, options, ArtifactCache(options.cache_dir, seed=options.cache_seed)).to_json(), options.cache_dir


def test_a_seed_hit_is_checked_copied_into_the_local_cache_and_the_seed_is_never_written(seed, tmp_path):
    before = snapshot(seed)
    record, local = seeded_run(tmp_path, seed)
    assert record["status"] == "passed", record["message"]
    provenance = record["provenance"]
    assert provenance["cache_hit"] is True and provenance["cache_seed"] == str(seed)
    (entry,) = cache_entries(local)
    assert verify_entry(entry) is None and (entry / "model.onnx").read_bytes() == \
        (seed / entry.parent.name / entry.name / "model.onnx").read_bytes()
    assert not (entry / "model.onnx").samefile(seed / entry.parent.name / entry.name / "model.onnx")  # a copy
    assert snapshot(seed) == before   # no lock, no private copy, no last use written there

    # The next run hits locally: the seed is not its source any more.
    again, _ = seeded_run(tmp_path, seed)
    assert again["provenance"]["cache_hit"] is True and "cache_seed" not in again["provenance"]


def test_a_corrupted_seed_entry_is_named_never_used_and_converted_again_locally(seed, tmp_path):
    (seeded,) = seed.glob("*/*/model.onnx")
    writable(seed)
    flip_sign_of_largest_weight(seeded)   # the planted bug: a run that used this file would fail
    read_only(seed)
    before = snapshot(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record, local = seeded_run(tmp_path, seed)
    assert record["status"] == "passed", record["message"]   # the flipped weight did not reach the run
    assert [str(w.message) for w in caught if "cache seed" in str(w.message)] == [
        f"cache seed entry {seeded.parent}: {record['provenance']['cache_seed_rejected'].partition(': ')[2]}: not "
        f"used, converted again into {local}"]
    provenance = record["provenance"]
    assert provenance["cache_hit"] is False and "cache_seed" not in provenance
    assert provenance["cache_seed_rejected"].startswith(f"{seeded.parent}: model.onnx changed on disk (sha256 ")
    (entry,) = cache_entries(local)
    assert verify_entry(entry) is None and (entry / "model.onnx").read_bytes() != seeded.read_bytes()
    assert snapshot(seed) == before

    # The twin: the seed's file used as it is fails the case, which the checksum kept from the run above.
    case, options = simple_case(tmp_path / "twin", "mlp")
    used = run_case(case, replace(options, converted=seeded), ArtifactCache(options.cache_dir)).to_json()
    assert used["status"] == "failed"


def test_export_packs_checked_entries_only_and_unpacked_it_is_a_seed(made_seed, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(made_seed, cache)
    damaged = ArtifactCache(cache)
    damaged.get_or_create(PARTS, write_artifact)
    bad = damaged.entry_folder(cache_key(PARTS))
    (bad / "model.bin").write_bytes(CONTENT[:100])   # truncated: left out, and named
    damaged.get_or_create({**PARTS, "index": 1}, write_artifact)
    unlisted = damaged.entry_folder(cache_key({**PARTS, "index": 1}))
    (unlisted / MANIFEST).unlink()                   # was an OSError out of export: -o "cannot be written"
    (cache / "tmp-0123456789abcdef").mkdir()         # a conversion's work folder: never an entry
    out = tmp_path / "seed.tar.gz"

    assert main(["cache", "export", str(cache), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"skipped {bad.parent.name}/{bad.name}: model.bin changed on disk" in printed
    assert f"skipped {unlisted.parent.name}/{unlisted.name}: {MANIFEST} is missing" in printed
    assert f"exported 1 entries (" in printed and "skipped 2 that failed their checksums" in printed
    with tarfile.open(out) as archive:
        names = archive.getnames()
        assert {name.split("/")[2] for name in names} == {"manifest.json", "provenance.json", "model.onnx"}
        assert not [name for name in names if "in-use" in name or name.endswith(".lock") or "tmp-" in name]
        seed = tmp_path / "unpacked"
        archive.extractall(seed, filter="data")   # what `tar -xzf FILE -C DIR` does
    read_only(seed)
    record, _ = seeded_run(tmp_path, seed)
    writable(seed)
    assert record["status"] == "passed" and record["provenance"]["cache_seed"] == str(seed), record["message"]


def aged_entries(root: Path, days: list[float]) -> list[str]:
    """Entries of 1 MiB each last used `days` ago: their 'ab/KEY' names in that order."""
    cache, names = ArtifactCache(root), []
    for index, age in enumerate(days):
        parts = {**PARTS, "index": index}
        cache.get_or_create(parts, write_artifact)
        entry = cache.entry_folder(cache_key(parts))
        moment = time.time() - age * 86400
        os.utime(entry, (moment, moment))
        names.append(f"{entry.parent.name}/{entry.name}")
    return names


def test_prune_removes_the_least_recently_used_first_and_keeps_a_locked_entry(tmp_path, capsys):
    root = tmp_path / "cache"
    oldest, old, older_used, recent = aged_entries(root, [40, 30, 20, 10])
    ArtifactCache(root).get_or_create({**PARTS, "index": 2}, write_artifact)   # a hit: its last use is now
    reader = FileLock(root / f"{oldest}.lock", shared=True).acquire()   # another process reading it
    try:
        assert main(["cache", "prune", str(root), "--older-than=15"]) == 0
    finally:
        reader.release()
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"removed {old}: 1.0 MB, last used ")
    assert printed[1] == f"kept {oldest}: in use by another process (its lock is held); prune again later"
    assert printed[2].startswith("freed 1.0 MB from 1 entries; 3 entries (3.1 MB) remain")
    assert [f"{e.parent.name}/{e.name}" for e in cache_entries(root)] == sorted([oldest, older_used, recent])

    # By size: the least recently used go first until the rest fit (each entry is 1.05 MB).
    assert main(["cache", "prune", str(root), "--max-size=1.5e-3"]) == 0
    removed = [line.split()[1].rstrip(":") for line in capsys.readouterr().out.splitlines() if line.startswith("removed")]
    assert removed == [oldest, recent]
    assert [f"{e.parent.name}/{e.name}" for e in cache_entries(root)] == [older_used]
    assert not list(root.glob("old-*")) and verify_entry(root / older_used) is None


def test_cache_commands_and_the_seed_option_refuse_what_they_cannot_use_in_one_line(tmp_path, capsys):
    with pytest.raises(OptionError, match=rf"--parity-cache-seed {tmp_path}/gone: does not exist; give the folder"):
        parse_cache_seed("--parity-cache-seed", tmp_path / "gone")
    assert parse_cache_seed("--parity-cache-seed", tmp_path) == tmp_path and parse_cache_seed("--x", None) is None
    assert main(["cache", "prune", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "python -m harness cache prune: give --older-than=DAYS, --max-size=GB or both\n"
    assert main(["cache", "export", str(tmp_path / "gone"), "-o", str(tmp_path / "x.tar.gz")]) == 2
    assert "gone does not exist: give the folder --parity-cache-dir names" in capsys.readouterr().err
    assert main(["localize", "--model=mlp", "--converted=x.onnx", f"--cache-seed={tmp_path / 'gone'}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("changed, warning", [
    (dict(use_cache=False), "--parity-cache-seed: --no-parity-cache converts every file again, so the seed is not read"),
    (dict(converted=Path("cnn.onnx")), "--parity-cache-seed: with --converted nothing is converted"),
    (dict(), None),   # the twin: a seed a converting run reads says nothing
])
def test_a_seed_that_cannot_be_read_is_a_warning(tmp_path, changed, warning):
    from harness.matrix import build_cases
    from harness.option_effects import option_findings
    from harness.options import RunOptions

    options = RunOptions(models=("cnn",), sources=("torch",), devices=("cpu",), cache_seed=tmp_path, **changed)
    found = option_findings(options, build_cases(options), ())
    about_seed = [w for w in found.warnings if "--parity-cache-seed" in w]
    assert found.errors == [] and len(about_seed) == (1 if warning else 0), found.warnings
    assert warning is None or about_seed[0].startswith(warning)
