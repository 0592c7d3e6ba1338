"""The artifact cache (harness.cache): every hit verified against its manifest, a
damaged entry evicted and converted again, and concurrent writers that neither
raise nor hand out a folder being replaced."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from harness import locks
from harness.cache import IN_USE, MANIFEST, PROVENANCE, ArtifactCache, cache_key, verify_entry

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


def entry_of(cache: ArtifactCache, parts: dict = PARTS) -> Path:
    """The shared entry of `parts` (get_or_create hands out a private copy of it)."""
    return cache.entry_folder(cache_key(parts))


def test_hit_is_verified_and_a_corrupted_file_is_evicted_and_converted_again(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    entry = entry_of(cache)
    folder, provenance, hit = cache.get_or_create(PARTS, write_artifact)
    assert not hit and "cache_evicted" not in provenance
    assert set(json.loads((entry / MANIFEST).read_text())["sha256"]) == {"model.bin", PROVENANCE}
    assert cache.get_or_create(PARTS, write_artifact)[2] is True

    corrupted = bytearray(CONTENT)
    corrupted[1000] ^= 0xFF  # one flipped byte
    (entry / "model.bin").write_bytes(bytes(corrupted))
    again, provenance, hit = cache.get_or_create(PARTS, write_artifact)
    assert again == folder and not hit
    assert provenance["cache_evicted"].startswith("model.bin changed on disk (sha256 ")
    # The twin without a checksum would have handed out the corrupted bytes: these are gone.
    assert (entry / "model.bin").read_bytes() == (again / "model.bin").read_bytes() == CONTENT
    # The eviction is this call's news, not the entry's: the next hit does not repeat it.
    assert "cache_evicted" not in json.loads((entry / PROVENANCE).read_text())
    _, provenance, hit = cache.get_or_create(PARTS, write_artifact)
    assert hit and "cache_evicted" not in provenance


@pytest.mark.parametrize("damage, reason", [
    (lambda folder: (folder / "model.bin").unlink(), "model.bin missing from the entry"),
    (lambda folder: (folder / "stray.txt").write_text("x"), "stray.txt in the entry but not in its manifest"),
    (lambda folder: (folder / MANIFEST).unlink(), f"{MANIFEST} is missing"),
    (lambda folder: (folder / MANIFEST).write_text("{"), f"{MANIFEST} cannot be read"),
    # a seed cache made elsewhere: was a RecursionError out of get_or_create
    (lambda folder: (folder / MANIFEST).write_text("[" * 100_000 + "]" * 100_000), f"{MANIFEST} cannot be read"),
    (lambda folder: (folder / "model.bin").write_bytes(CONTENT[:100]), "model.bin changed on disk"),
])
def test_every_kind_of_damage_is_evicted_with_its_reason(tmp_path, damage, reason):
    cache = ArtifactCache(tmp_path / "cache")
    cache.get_or_create(PARTS, write_artifact)
    damage(entry_of(cache))
    assert verify_entry(entry_of(cache)).startswith(reason)
    again, provenance, hit = cache.get_or_create(PARTS, write_artifact)
    assert not hit and provenance["cache_evicted"].startswith(reason)
    assert verify_entry(entry_of(cache)) is None and (again / "model.bin").read_bytes() == CONTENT


def test_failed_conversion_leaves_no_entry_and_no_temporary_folder(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")

    def broken(folder: Path) -> dict:
        (folder / "model.bin").write_bytes(b"half")
        raise RuntimeError("exporter crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_create(PARTS, broken)
    private = cache.root / IN_USE
    assert not [p for p in cache.root.rglob("*") if p.is_dir() and len(p.name) > 2 and private not in (p, p.parent)]
    assert not list(private.glob("*/*"))   # nor a private copy


def test_entries_are_made_with_the_umask_not_private(tmp_path):
    previous = os.umask(0o027)
    cache = ArtifactCache(tmp_path / "cache")
    try:
        folder = cache.get_or_create(PARTS, write_artifact)[0]
    finally:
        os.umask(previous)
    for made in (entry_of(cache), folder):
        assert made.stat().st_mode & 0o777 == 0o750  # tempfile.mkdtemp would give 0o700


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
        results.put((folder.name, (folder / "model.bin").read_bytes() == CONTENT, hit, None))
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
        results.put((folder.name, True, None, None))
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
    assert {key for key, *_ in outcomes} == {cache_key(PARTS)}
    assert all(complete for _, complete, _, _ in outcomes)
    assert sorted(hit for _, _, hit, _ in outcomes) == [False, True, True, True]
    assert len((tmp_path / "conversions.log").read_text().split()) == 1  # the others waited for it
    assert verify_entry(entry_of(ArtifactCache(tmp_path / "cache"))) is None
    assert not list((tmp_path / "cache").glob("tmp-*")) and not list((tmp_path / "cache").glob("old-*"))
    assert not list((tmp_path / "cache" / IN_USE).iterdir())  # each process's private copies went with it


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


@pytest.mark.slow  # three whole runs (24 s); test_hit_is_verified_and_a_corrupted_file_is_evicted_and_converted_again evicts a corrupted entry in make test
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


# ------------------------------------------------------------------ an entry changed after its check

def simple_case(tmp_path: Path, model: str = "simple"):
    """A zoo model (`simple`), torch -> ONNX -> ONNX Runtime on the CPU, with a cache and
    reports folder of its own."""
    from harness.matrix import build_cases
    from harness.options import RunOptions

    options = RunOptions(models=(model,), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                         examples=3, cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports",
                         localize="off")
    (case,) = build_cases(options)
    return case, options


def rewrite_before_load(monkeypatch, cached: Path) -> list[Path]:
    """Make the cache entry's model.onnx change at the point between the cache's check and
    the runtime's load (as a run with the cache bypassed, or a user, rewriting it would);
    the runtime is ONNX Runtime itself. The paths the runtime was handed."""
    from harness.runtimes import onnxruntime

    loaded, real = [], onnxruntime.Session

    def rewritten_then_loaded(path: Path, *args, **kwargs):
        flip_sign_of_largest_weight(cached)
        loaded.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "Session", rewritten_then_loaded)
    return loaded


def test_an_entry_rewritten_between_its_check_and_the_load_changes_nothing_for_the_case(tmp_path, monkeypatch):
    """Runtimes open paths: the case is handed a copy made as the entry was checked, so the
    rewrite (which failed this correct conversion, with nothing about the cache) is harmless."""
    from harness.runner import run_case

    case, options = simple_case(tmp_path)
    assert run_case(case, options, ArtifactCache(options.cache_dir)).status == "passed"
    (cached,) = options.cache_dir.glob("*/*/model.onnx")
    loaded = rewrite_before_load(monkeypatch, cached)

    record = run_case(case, options, ArtifactCache(options.cache_dir)).to_json()
    assert record["status"] == "passed", record["message"]
    assert record["provenance"]["cache_hit"] is True
    assert loaded[0].parent.parent.parent.name == "in-use" and loaded[0].read_bytes() != cached.read_bytes()

    # The entry is damaged now: the next case to use it finds so, evicts it and converts again.
    monkeypatch.undo()
    again = run_case(case, options, ArtifactCache(options.cache_dir)).to_json()
    assert again["status"] == "passed" and again["provenance"]["cache_evicted"].startswith("model.onnx changed on disk")


def test_an_untouched_hit_is_loaded_as_before_and_its_copy_goes_with_the_next_case(tmp_path, monkeypatch):
    from harness.runner import run_case
    from harness.runtimes import onnxruntime

    case, options = simple_case(tmp_path)
    first = run_case(case, options, ArtifactCache(options.cache_dir)).to_json()
    loaded, real = [], onnxruntime.Session
    monkeypatch.setattr(onnxruntime, "Session", lambda path, *a, **k: loaded.append(Path(path)) or real(path, *a, **k))
    record = run_case(case, options, ArtifactCache(options.cache_dir)).to_json()
    assert record["status"] == first["status"] == "passed" and record["provenance"]["cache_hit"] is True
    assert record["provenance"]["cache_key"] == first["provenance"]["cache_key"] == loaded[0].parent.name
    (cached,) = options.cache_dir.glob("*/*/model.onnx")
    assert loaded[0].read_bytes() == cached.read_bytes() and "cache_evicted" not in record["provenance"]

    # The next case, of another model, starts by releasing the copies of the case before.
    run_case(*simple_case(tmp_path, "mlp"), ArtifactCache(options.cache_dir))
    assert not loaded[0].exists() and loaded[1].exists() and len(loaded) == 2


def external_data_model(folder: Path) -> dict:
    """y = x @ W, its weights in a second file (ONNX external data): an artifact of two files
    whose first names the second by a relative path, as OpenVINO's .xml its .bin."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096, "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, folder / "model.onnx", save_as_external_data=True, location="model.onnx.data",
              size_threshold=0)
    return {"converter": "test"}


def test_a_weights_file_rewritten_after_the_check_leaves_the_loaded_model_as_checked(tmp_path):
    """Every file of the entry is copied as it is checked, and the copy keeps their relative names:
    the runtime opens model.onnx, which opens model.onnx.data beside it."""
    import onnxruntime

    cache = ArtifactCache(tmp_path / "cache")
    parts = {**PARTS, "converter": "external-data@1"}
    cache.get_or_create(parts, external_data_model)
    folder, _, hit = cache.get_or_create(parts, external_data_model)
    (entry_of(cache, parts) / "model.onnx.data").write_bytes(bytes(64 * 64 * 4))   # every weight zero

    x = np.ones((1, 64), np.float32)
    (y,) = onnxruntime.InferenceSession(str(folder / "model.onnx")).run(None, {"x": x})
    assert hit and np.allclose(y, x @ (np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096))
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.onnx.data", PROVENANCE]
    # The twin: the entry's own files, as they now are, compute zeros.
    (zeros,) = onnxruntime.InferenceSession(str(entry_of(cache, parts) / "model.onnx")).run(None, {"x": x})
    assert not zeros.any()


def hold_a_copy(root: Path, then: str) -> subprocess.Popen:
    """A process that gets the entry of PARTS (a private copy), says so, then `then`: 'die'
    (SIGKILL itself) or 'wait' (until its stdin closes)."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from harness.cache import ArtifactCache
        from tests.test_cache import PARTS, write_artifact
        ArtifactCache(Path({str(root)!r})).get_or_create(PARTS, write_artifact)
        print("ready", flush=True)
        if {then!r} == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stdin.read()
    """)
    process = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1], text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout.readline() == "ready\n"
    return process


def test_the_copies_of_a_killed_process_are_removed_by_the_next_and_a_live_ones_kept(tmp_path):
    root = tmp_path / "cache"
    killed = hold_a_copy(root, "die")
    assert killed.wait(timeout=60) == -signal.SIGKILL
    (abandoned,) = [p for p in (root / IN_USE).iterdir() if p.is_dir()]   # left behind, with its copy
    assert list(abandoned.iterdir()) and abandoned.with_suffix(".lock").exists()

    live = hold_a_copy(root, "wait")   # its first use of the cache removes the abandoned folder
    assert not abandoned.exists() and not abandoned.with_suffix(".lock").exists()
    (in_use,) = [p for p in (root / IN_USE).iterdir() if p.is_dir()]
    ArtifactCache(root).get_or_create(PARTS, write_artifact)   # this process's first: the live one's stays
    assert list(in_use.iterdir())
    live.stdin.close()
    assert live.wait(timeout=60) == 0 and not in_use.exists()   # removed by its process as it ended


class KeyRecordingCache(ArtifactCache):
    """The cache as the engine uses it, keeping the parts each hop's key is hashed from."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.parts: list[dict] = []

    def get_or_create(self, parts, create):
        self.parts.append(dict(parts))
        return super().get_or_create(parts, create)


def test_a_hop_s_options_key_its_cache_entry_as_before_they_were_its_own(tmp_path):
    """--exporter and --opset moved onto torch->onnx's Options: the key still holds
    {"exporter": ..., "opset": ...} under "options", so an existing cache still hits."""
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.runner import run_case

    options = RunOptions(models=("mlp",), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                         hop_options={"torch->onnx": {"exporter": "torchscript", "opset": 17}}, examples=2,
                         cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports", localize="off")
    (case,) = build_cases(options)
    for run in ("cold", "warm"):
        cache = KeyRecordingCache(options.cache_dir)
        record = run_case(case, options, cache).to_json()
        assert record["status"] == "passed", record["message"]
        (parts,) = cache.parts
        assert parts["converter"] == "torch->onnx@5" and parts["options"] == {"exporter": "torchscript", "opset": 17}
        assert record["provenance"]["cache_key"] == cache_key(parts)
        assert record["provenance"]["cache_hit"] is (run == "warm")
