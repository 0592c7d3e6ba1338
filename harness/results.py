"""Result records and where they are written.

`reports/parity.json` is rewritten after every case, atomically (a temporary
file, then a rename), so a crash or a kill mid-run leaves every finished case
behind in a valid file. A failing case's shrunk input goes to
`reports/failures/<case id>.npz` with the command that replays it. Every file
is made with the mode open() gives (0o666 less the umask), as any other output.

A run holds its reports folder alone (`claim_reports_folder`): a second run on
the same folder is refused at its start, since both would rewrite parity.json
with their own cases only.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import numpy as np

from harness import backends
from harness.case_record import CaseRecord
from harness.errors import CaseError, disk_full
from harness.locks import FileLock, LockHeld
from harness.user_json import loads_user_json, read_user_json

SCHEMA = 1
# The harness's own distributions, whose versions every record reports; each backend declares its own
# (its DISTRIBUTIONS, backends.distributions).
HARNESS_DISTRIBUTIONS = ("numpy", "hypothesis")


def environment() -> dict[str, Any]:
    versions = {}
    for name in HARNESS_DISTRIBUTIONS + backends.distributions():
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "machine": platform.machine(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
            "gpu": _gpu_names() or "none found (no nvidia-smi on PATH, or it lists none)", "versions": versions}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_names() -> list[str]:
    """The GPUs nvidia-smi lists; none where it is absent. No framework is
    imported for this: environment() runs in every run, torch-only or not."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


class ReportsFolderError(Exception):
    """A reports folder that cannot be written to, or that another run is writing to;
    a report file that found its disk full."""


RUN_LOCK = ".parity-run.lock"  # held by the run that writes the folder


def check_writable(folder: Path, remedy: str) -> None:
    """Make `folder` if absent and create a file in it (and in its failures/, if there):
    ReportsFolderError, naming the folder, the reason and `remedy`, where that fails."""
    folder = place = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for place in (folder, folder / "failures"):
            if place.is_dir():
                fd, probe = _new_file(place, ".parity-write-check.")
                os.close(fd)
                probe.unlink()
    except OSError as error:
        where = f" (in {place})" if place != folder else ""
        raise ReportsFolderError(f"reports folder {folder} cannot be written to: {error.strerror or error}{where}; "
                                 f"{remedy}") from None


def claim_reports_folder(folder: Path, remedy: str) -> FileLock:
    """Check that `folder` can be written to and hold it for this run alone, until the
    returned lock is released or the process ends. ReportsFolderError where another run
    holds it: both would rewrite parity.json with their own cases, and one run's would be lost."""
    check_writable(folder, remedy)
    lock_path = Path(folder) / RUN_LOCK
    lock = FileLock(lock_path)
    try:
        lock.acquire(wait=False)
    except LockHeld:
        holder = lock_path.read_text(errors="replace").strip() or "a process that has not yet said which"
        raise ReportsFolderError(
            f"reports folder {folder} is in use by another parity run ({holder}): two runs writing there would "
            f"lose each other's cases; wait for it to end, or {remedy}") from None
    os.ftruncate(lock.fileno, 0)
    os.write(lock.fileno, (f"pid {os.getpid()} on {socket.gethostname()}, since "
                           f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}: {' '.join(sys.argv)}\n").encode())
    return lock


def _new_file(folder: Path, prefix: str, suffix: str = "") -> tuple[int, Path]:
    """A new file with a unique name in `folder`, open for writing, made with the mode
    open() gives (tempfile.mkstemp makes 0o600: unreadable to the user's group)."""
    while True:
        path = folder / f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_file(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:   # an interrupt too leaves no temporary file; all but a full disk re-raised
        tmp.unlink(missing_ok=True)
        full = disk_full(error, path)
        if full:
            raise ReportsFolderError(f"{path} could not be written: {full}; the file there before, if any, "
                                     f"is kept whole") from None
        raise


def to_jsonable(value: Any) -> Any:
    """Plain JSON values; non-finite floats become the strings 'inf', 'nan'."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if np.isfinite(value) else str(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


class ResultsWriter:
    """Holds the run's records and rewrites the JSON file after each one. Each
    record is encoded once, as it is added, and the file is put together from
    those texts: encoding every record again at every case made a run's writing
    grow with the square of its cases (13 s of a 207 s warm core matrix)."""

    def __init__(self, path: Path, run_info: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.data: dict[str, Any] = {"schema": SCHEMA, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                     "environment": environment(), "run": dict(run_info or {}), "cases": {}}
        self._encoded: dict[str, str] = {}   # case id -> its "id": record entry, laid out as the file nests it
        self.flush()

    def add(self, record: CaseRecord) -> None:
        case_id = record.id
        self.data["cases"][case_id] = to_jsonable(record.to_json())
        # json.dumps(self.data, indent=1)'s text of this entry, two levels in
        self._encoded[case_id] = (f"  {json.dumps(str(case_id))}: "
                                  + json.dumps(self.data["cases"][case_id], indent=1).replace("\n", "\n  "))
        self.flush()

    def flush(self) -> None:
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_text(self.path, self.text())

    def text(self) -> str:
        """The file's text: json.dumps(self.data, indent=1), each record's part from its encoding at `add`."""
        held = self.data["cases"]
        if set(held) != set(self._encoded):   # a record put in self.data by another hand
            return json.dumps(self.data, indent=1)
        cases = ("{\n" + ",\n".join(self._encoded[case_id] for case_id in held) + "\n }") if held else "{}"
        placeholder = "\u0000cases\u0000"
        text = json.dumps({**self.data, "cases": placeholder}, indent=1)
        return text.replace(json.dumps(placeholder), cases, 1)


def load_results(path: Path) -> dict[str, Any]:
    """A results file, read under the budget of JSON from a user (`python -m
    harness report` takes any file); UserJSONError, one line naming it."""
    return read_user_json(Path(path))


def merge_results(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One run's results from its pytest-xdist workers' files: every case once,
    the earliest start and the latest update."""
    if not parts:
        raise ValueError("no results to merge")
    merged: dict[str, Any] = {**parts[0], "cases": {}, "workers": len(parts)}
    for part in parts:
        merged["cases"].update(part.get("cases", {}))
    merged["started"] = min(p.get("started", "") for p in parts)
    merged["updated"] = max(p.get("updated", "") for p in parts)
    return merged


def save_failure(reports_dir: Path, case_id: str, inputs: Mapping[str, np.ndarray], replay_info: Mapping[str, Any]) -> tuple[Path, str]:
    """Write the shrunk failing input and what is needed to replay it; return the
    file and the one-line command that replays it. A disk that fills is a
    CaseError naming it, and leaves no file but a whole one at `path`."""
    folder = Path(reports_dir) / "failures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case_id}.npz"
    fd, tmp = _new_file(folder, f".{path.stem}.", ".npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            write_npz(handle, {"__replay__": np.array(json.dumps(to_jsonable(replay_info))),
                               **{f"input:{name}": array for name, array in inputs.items()}})
        os.replace(tmp, path)
    except BaseException as error:   # an interrupt too leaves no temporary file; all but a full disk re-raised
        tmp.unlink(missing_ok=True)
        full = disk_full(error, path)
        if full:
            raise CaseError("report", f"the failing input could not be saved to {path}: {full}, or give "
                                      f"--parity-reports a folder on another disk") from None
        raise
    return path, f"python -m harness replay {path}"


def write_npz(file: Path | BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """An .npz that np.load reads back by name, written member by member as
    np.savez does, but within one `with`. np.savez takes the names as keyword
    arguments (a tensor named "file" or "allow_pickle" would be taken for its
    parameter), and a write it cannot finish (a full disk) leaves its ZipFile
    unclosed: the garbage collector's close then raises wherever it runs (seen
    inside torch's exporter, as an ast.parse that ended in SystemError)."""
    import zipfile

    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)


def load_failure(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The replay information and the inputs of a saved failure. ValueError,
    one line naming the file, for anything else: not a zip, an archive past
    its size budget, no __replay__ entry, bad JSON or JSON past its budget
    (harness/user_json.py), missing keys or keys of the wrong type. Nothing
    in the file is unpickled."""
    import zipfile

    from harness.errors import CaseError
    from harness.model_file import check_zip_budget, not_a_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} {not_a_file(path)}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a saved failure: not an .npz (zip) archive")
    try:
        with zipfile.ZipFile(path) as archive:
            check_zip_budget(path, archive.infolist(), "failure file")
        with np.load(path, allow_pickle=False) as data:
            text = str(data["__replay__"]) if "__replay__" in data.files else None
            inputs = {key.split(":", 1)[1]: data[key] for key in data.files if key.startswith("input:")}
    except CaseError as error:
        raise ValueError(error.message) from None
    except Exception as error:  # a member that is no .npy array, a pickled one, a bad CRC, a truncated archive
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{path} cannot be read as a saved failure ({type(error).__name__}: {first})") from None
    if text is None:
        raise ValueError(f"{path} is not a saved failure: it has no __replay__ entry")
    info = loads_user_json(text, f"{path}: its __replay__ entry")   # UserJSONError is a ValueError
    if not isinstance(info, dict):
        raise ValueError(f"{path}: its __replay__ entry holds a {type(info).__name__}, not an object")
    wrong = [f"{key} ({kind.__name__})" for key, kind in (("case_id", str), ("model_ref", str), ("source", str),
                                                          ("target", str), ("device", str), ("options", dict))
             if not isinstance(info.get(key), kind)]
    if wrong:
        raise ValueError(f"{path}: its __replay__ entry lacks, or has of another type, {', '.join(wrong)}")
    recipe = info.get("recipe")
    # A model that takes no inputs (an ONNX graph of constants) fails with none: its recipe names none either.
    if not inputs and not (isinstance(recipe, dict) and recipe.get("distributions") == {}):
        raise ValueError(f"{path} holds no inputs (input:NAME entries)")
    return info, inputs
