"""A disk that fills while the harness writes: the report (parity.json), a failing
input's .npz, a reproduction folder and a cache entry. Each write that fails is an
error naming the disk (ENOSPC, the path, the filesystem to free space on); what was
written before stays whole, and nothing half written is left under a final name.

The disk fills two ways: `FullDisk` makes writes under a folder fail as a full
disk's do (works anywhere), and `small_disk` mounts a real size-limited tmpfs
(root on Linux only; skipped elsewhere, with the reason).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from harness.cache import IN_USE, MANIFEST, ArtifactCache, cache_key, verify_entry
from harness.case_record import CaseRecord
from harness.errors import CaseError
from harness.results import ReportsFolderError, ResultsWriter, save_failure
from tests.conftest import REPO

FULL = "no space left on device (ENOSPC): free space on "


class FullDisk:
    """Writes into files under `folder` fail as on a full disk once `room` more bytes are
    written: the write that crosses it writes what fits, then raises OSError(ENOSPC). Files
    opened with open(), io.open (Path.write_*, zipfile), and os.open + os.fdopen are
    followed; a `with FullDisk(folder):` block is the time the disk is full."""

    def __init__(self, folder: Path, room: int = 0):
        self.folder, self.room = Path(os.path.abspath(folder)), room
        self._paths: dict[int, Path] = {}   # descriptor -> path, of files os.open opened for writing

    def _under(self, path: Path) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(self.folder)

    def _spend(self, size: int) -> int:
        """How much of a write of `size` bytes fits."""
        fits = min(size, self.room)
        self.room -= fits
        return fits

    def __enter__(self) -> "FullDisk":
        self._saved = builtins.open, io.open, os.open
        real_open, _, real_os_open = self._saved
        disk = self

        def os_open(path, flags, *args, **kwargs):
            fd = real_os_open(path, flags, *args, **kwargs)
            if flags & (os.O_WRONLY | os.O_RDWR) and disk._under(Path(path)):
                disk._paths[fd] = Path(path)
            return fd

        def opened(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            path = disk._paths.pop(file, None) if isinstance(file, int) else Path(os.fspath(file))
            writes = any(flag in mode for flag in "wax+")
            return _Filling(handle, disk) if writes and path is not None and disk._under(path) else handle

        builtins.open = io.open = opened
        os.open = os_open
        return self

    def __exit__(self, *exc_info) -> None:
        builtins.open, io.open, os.open = self._saved


class _Filling:
    """A file on a FullDisk."""

    def __init__(self, handle, disk: FullDisk):
        self._handle, self._disk = handle, disk

    def write(self, data):
        fits = self._disk._spend(len(data))
        if fits < len(data):
            self._handle.write(data[:fits])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __iter__(self):
        return iter(self._handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs mounted at tmp_path/disk, unmounted after the test; skipped where it
    cannot be mounted. `fill(path)` writes a file there until the disk is full."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (root on Linux needed): "
                    f"{(done.stderr or done.stdout).strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(path: Path) -> None:
    """Write `path` until its disk has no room left."""
    with open(path, "wb", buffering=0) as handle:   # unbuffered: nothing left over to fail again at close
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC


def record(name: str) -> CaseRecord:
    return CaseRecord.from_json({"id": name, "status": "passed", "message": "all outputs within tolerance"})


def leftovers(folder: Path) -> list[str]:
    """Temporary files and folders of atomic writes (`.NAME.RANDOM`) under `folder`."""
    return sorted(p.name for p in folder.rglob(".*"))


# ------------------------------------------------------------------ the report

@pytest.mark.parametrize("disk", ["injected", "tmpfs"])
def test_a_full_disk_keeps_the_report_written_before_and_the_next_write_adds_the_case(tmp_path, request, disk):
    folder = request.getfixturevalue("small_disk") if disk == "tmpfs" else tmp_path / "reports"
    writer = ResultsWriter(folder / "parity.json")
    writer.add(record("first"))
    before = (folder / "parity.json").read_bytes()

    if disk == "tmpfs":
        fill(folder / "filler")
        with pytest.raises(ReportsFolderError) as raised:
            writer.add(record("second"))
    else:
        with FullDisk(folder, room=100), pytest.raises(ReportsFolderError) as raised:
            writer.add(record("second"))
    message = str(raised.value)
    assert message.startswith(f"{folder / 'parity.json'} could not be written: {FULL}")
    assert "the file there before, if any, is kept whole" in message and "\n" not in message
    assert (folder / "parity.json").read_bytes() == before and leftovers(folder) == []

    (folder / "filler").unlink(missing_ok=True)   # space freed: the next case's write holds both
    writer.add(record("third"))
    assert list(json.loads((folder / "parity.json").read_text())["cases"]) == ["first", "second", "third"]


def test_the_report_on_a_disk_with_room_is_written_after_every_case(tmp_path):
    writer = ResultsWriter(tmp_path / "parity.json")
    for name in ("first", "second"):
        writer.add(record(name))
        assert name in json.loads((tmp_path / "parity.json").read_text())["cases"]


CONFTEST = textwrap.dedent("""
    # The disk is full while the record of one case (mlp) is written to parity.json.
    from harness import plugin
    from tests.test_full_disk import FullDisk

    written = plugin.ParityRun.add


    def add(self, record):
        if not record.id.startswith("mlp"):
            return written(self, record)
        with FullDisk(self.options.reports_dir):
            return written(self, record)


    plugin.ParityRun.add = add
""")


def test_a_case_whose_record_finds_the_disk_full_fails_naming_it_and_the_run_goes_on(run_parity, parity_dir):
    (parity_dir / "conftest.py").write_text(CONFTEST)
    run = run_parity("--model=simple", "--model=mlp", "--model=cnn", examples=2)
    run.result.assert_outcomes(passed=2, failed=1)
    report = Path("reports") / "parity.json"
    assert f"mlp-torch-onnxruntime-cpu: [report] {report} could not be written: {FULL}" in run.output
    # Nothing lost: the next case's write holds the record the full disk refused.
    assert set(run.cases) == {f"{m}-torch-onnxruntime-cpu" for m in ("simple", "mlp", "cnn")}


SESSION_END_CONFTEST = textwrap.dedent("""
    # The disk is full from the end of the last case on: parity.html (and the baseline) cannot be written.
    from harness import plugin
    from tests.test_full_disk import FullDisk

    finished = plugin.ParityRun.pytest_sessionfinish


    def finish_on_a_full_disk(self, session):
        with FullDisk(self.options.reports_dir):
            return finished(self, session)


    plugin.ParityRun.pytest_sessionfinish = finish_on_a_full_disk
""")


def test_a_full_disk_at_the_end_of_the_run_is_one_line_and_a_failed_run(run_parity, parity_dir):
    (parity_dir / "conftest.py").write_text(SESSION_END_CONFTEST)
    run = run_parity("--model=simple", "--parity-save-baseline=reports/base.json", examples=2)
    # Was an INTERNALERROR traceback from parity.html's write.
    assert "INTERNALERROR" not in run.output and "Traceback" not in run.output, run.output
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR   # the baseline asked for was not saved
    reports = parity_dir / "reports"
    said = f"{Path('reports') / 'parity.json'} could not be written: {FULL}"
    assert said in run.output and f"{Path('reports') / 'base.json'} could not be written: {FULL}" in run.output
    advice = run.output.split(said, 1)[1].split("\n", 1)[0].split("run python -m harness report ", 1)[1]
    assert set(run.cases) == {"simple-torch-onnxruntime-cpu"}   # parity.json, written after the case, is whole
    assert not (reports / "parity.html").exists()
    rebuilt = subprocess.run([sys.executable, "-m", "harness", "report", advice], cwd=parity_dir,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert rebuilt.returncode == 0 and (reports / "parity.html").is_file(), rebuilt.stderr   # the advice, followed
    (parity_dir / "conftest.py").unlink()   # the twin: room on the disk
    run = run_parity("--model=simple", examples=2)
    assert run.result.ret == 0 and "could not be written" not in run.output


# ------------------------------------------------------------------ a failing input, a reproduction

def test_a_failing_input_on_a_full_disk_leaves_the_one_saved_before_whole(tmp_path):
    reports = tmp_path / "reports"
    earlier, _ = save_failure(reports, "simple-torch-onnxruntime-cpu", {"x": np.arange(4.0)}, {"run": 1})
    before = earlier.read_bytes()
    with FullDisk(reports, room=300), pytest.raises(CaseError) as raised:
        save_failure(reports, "simple-torch-onnxruntime-cpu", {"x": np.zeros(10_000)}, {"run": 2})
    assert raised.value.stage == "report"
    assert raised.value.message.startswith(f"the failing input could not be saved to {earlier}: {FULL}")
    assert raised.value.message.endswith("or give --parity-reports a folder on another disk")
    assert earlier.read_bytes() == before and leftovers(reports) == []
    # The twin: with room, the new input replaces the old whole.
    saved, _ = save_failure(reports, "simple-torch-onnxruntime-cpu", {"x": np.zeros(10_000)}, {"run": 2})
    assert np.load(saved)["input:x"].shape == (10_000,)


@pytest.fixture(scope="module")
def failing_converted(tmp_path_factory) -> Path:
    """The zoo's `simple` exported, one weight changed: a case that fails, and is localized."""
    from tests.planted import perturbed_weight_onnx

    return perturbed_weight_onnx("simple", tmp_path_factory.mktemp("planted"))


def run_failing_case(tmp_path: Path, converted: Path, reports: Path) -> dict:
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.runner import run_case

    options = RunOptions(models=("simple",), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                         examples=3, converted=converted, cache_dir=tmp_path / "cache", reports_dir=reports)
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()


def test_a_failed_case_whose_input_finds_the_disk_full_is_an_error_naming_the_disk(tmp_path, failing_converted):
    reports = tmp_path / "reports"
    with FullDisk(reports / "failures"):
        record = run_failing_case(tmp_path, failing_converted, reports)
    assert record["status"] == "error" and record["stage"] == "report"
    assert record["message"].startswith(f"the failing input could not be saved to {reports / 'failures'}")
    assert FULL in record["message"] and list((reports / "failures").iterdir()) == []


def test_a_reproduction_on_a_full_disk_keeps_the_verdict_and_the_folder_written_before(tmp_path, failing_converted):
    reports = tmp_path / "reports"
    first = run_failing_case(tmp_path, failing_converted, reports)
    assert first["status"] == "failed" and first["localization"]["repro"], first["message"]
    folder = Path(first["localization"]["repro"]["folder"])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    npz = Path(first["failure"]["npz"])

    # Room for the .npz (rewritten whole), none for the reproduction beside it.
    with FullDisk(reports / "failures", room=npz.stat().st_size + 1024):
        record = run_failing_case(tmp_path, failing_converted, reports)
    assert record["status"] == "failed" and Path(record["failure"]["npz"]).is_file()
    localization = record["localization"]
    assert localization["status"] == "error"
    assert localization["message"].startswith(f"localization failed: the reproduction could not be written to "
                                              f"{folder}: {FULL}")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert leftovers(reports / "failures") == []


# ------------------------------------------------------------------ a cache entry

PARTS = {"model": "0" * 64, "converter": "test@1"}


def one_mib(folder: Path) -> dict:
    (folder / "model.bin").write_bytes(bytes(range(256)) * 4096)
    return {"converter": "test"}


def test_a_cache_entry_on_a_full_disk_is_an_error_naming_it_and_leaves_no_entry(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    other = {**PARTS, "model": "1" * 64}
    cache.get_or_create(other, one_mib)   # an entry written before
    with FullDisk(cache.root, room=1000), pytest.raises(CaseError) as raised:
        cache.get_or_create(PARTS, one_mib)
    assert raised.value.stage == "convert"
    assert raised.value.message.startswith(f"the artifact cache {cache.root} could not be written: {FULL}")
    assert "--parity-cache-dir (python -m harness: --cache-dir)" in raised.value.message
    assert not cache.entry_folder(cache_key(PARTS)).exists() and not list(cache.root.glob("tmp-*"))
    assert [p.name for p in (cache.root / IN_USE).glob("*/*")] == [cache_key(other)]   # no copy of it either
    assert verify_entry(cache.entry_folder(cache_key(other))) is None
    # The twin: with room, the same conversion is an entry, and the earlier one a hit.
    assert cache.get_or_create(PARTS, one_mib)[2] is False and cache.get_or_create(other, one_mib)[2] is True


def test_a_hit_on_a_full_disk_names_it_and_leaves_the_entry_whole(tmp_path):
    """The hit's private copy needs room too."""
    cache = ArtifactCache(tmp_path / "cache")
    cache.get_or_create(PARTS, one_mib)
    entry = cache.entry_folder(cache_key(PARTS))
    manifest = (entry / MANIFEST).read_bytes()
    with FullDisk(cache.root / IN_USE, room=1000), pytest.raises(CaseError) as raised:
        cache.get_or_create(PARTS, one_mib)
    assert FULL in raised.value.message
    assert verify_entry(entry) is None and (entry / MANIFEST).read_bytes() == manifest
    assert cache.get_or_create(PARTS, one_mib)[2] is True


def test_a_conversion_that_fills_a_real_disk_names_it(run_parity, small_disk, tmp_path):
    """torch.onnx.export itself finds the tmpfs full: its error, wrapped by the converter, names the disk."""
    fill(small_disk / "filler")
    run = run_parity("--model=simple", cache=small_disk / "cache", examples=2)
    run.result.assert_outcomes(errors=1)
    record = run.single
    assert record["stage"] == "convert", record["message"]
    assert record["message"].startswith(f"the artifact cache {small_disk / 'cache'} could not be written: "
                                        f"{FULL}{small_disk} (0.0 MiB free there now)")
    assert not list((small_disk / "cache").glob("*/*/model.onnx")) and not list((small_disk / "cache").glob("tmp-*"))
