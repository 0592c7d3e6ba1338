"""A localized failure's minimal reproduction, the folder a user attaches to
an issue on the converter's or runtime's tracker: the subgraph cut out around
the diverging node (model.onnx), its inputs, the reference's outputs, the
versions of the tools on the path, a README, and repro.py, a script that shows
the mismatch with nothing installed but numpy and the runtime. The script is
written from a template here, its constants as Python literals (repr), so that
no name or id can change its code. `python -m harness replay FOLDER` runs it
(`run_repro`), and only where the folder holds what write_repro wrote: its
manifest.json lists each file with its sha256 (`replay_refusal`), and the
script runs isolated from the folder (`python -I`, another working folder)."""

from __future__ import annotations

import ast
import json
import math
import os
import secrets
import string
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

# The cache's folder helpers: a folder made with the umask's mode, swapped in whole, removed.
from harness import backends
from harness.cache import exchange_paths, new_folder, remove_path
from harness.converters.child_tool import TIMED_OUT, run_child, status
from harness.errors import CaseError, disk_full
from harness.model_file import file_sha256, not_a_file
from harness.results import write_npz
from harness.user_json import UserJSONError, read_user_json

SCRIPT = "repro.py"
MODEL = "model.onnx"
MANIFEST = "manifest.json"   # {"sha256": {name: hex digest}} of every other file write_repro wrote
# Every name write_repro may write besides its manifest: a manifest (unsigned: anyone can write one) listing
# another is refused, so that no file the harness did not write lies beside the script.
WRITTEN = frozenset({MODEL, MODEL + ".data", "inputs.npz", "expected.npz", "versions.json", "README.md", SCRIPT})
# A manifest holds those few names and digests, under a kilobyte: far below a report's budget.
MANIFEST_MAX_BYTES = 64 << 10
MANIFEST_MAX_DEPTH = 2
TIMED_OUT_CODE = 124   # what `timeout` exits with: run_repro's code for a script that hung
# Above this the model keeps its weights in model.onnx.data (protobuf's limit is 2 GiB); as localize/graph.py.
EXTERNAL_DATA_ABOVE_BYTES = 1 << 30

# Prefixed to the run function of a runtime that no test here can run (its Repro's `unverified`).
_UNVERIFIED = ("# UNVERIFIED: written against the documented APIs of {what}; the harness's own tests\n"
               "# have no GPU and no TensorRT, so this function has not run there.\n")

_TEMPLATE = '''\
"""Reproduces a numerical mismatch found by a parity test: runs model.onnx on
inputs.npz and compares each output with expected.npz, the reference's values.
Needs only numpy and the runtime (pip install $package). Run: python -I repro.py
(-I: nothing that lies beside this script is imported in place of numpy or the runtime)

Exit status: 1 reproduced (an output is off by more than allowed), 0 not
reproduced, 2 the runtime cannot run here.
"""

import importlib
import sys
import traceback
from pathlib import Path

import numpy as np

CASE = $case
RUNTIME = $runtime
DEVICE = $device
PACKAGE = $package_literal
ALLOWED = $allowed   # the largest error an output may have, over its largest |expected|
MIN_SNR_DB = $min_snr_db   # the lowest SNR (dB) an output of 16 elements or more may have; 0: no such limit
HERE = Path(__file__).resolve().parent


def cannot_run(message):
    print(f"cannot run: {message}", file=sys.stderr)
    sys.exit(2)


def need(module, package):
    """The runtime's module, or exit 2 naming the pip package that gives it."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as error:   # OSError: a wheel whose native library does not load
        cannot_run(f"{module} does not import here ({error}): pip install {package}")


$run

def errors(want, got):
    """Max abs error, that over max|expected|, and SNR in dB; a NaN or inf
    where expected has none (or another) is an infinite error."""
    want, got = want.astype(np.float64), np.asarray(got).astype(np.float64)
    with np.errstate(all="ignore"):
        diff = np.abs(got - want)
        diff[(want == got) | (np.isnan(want) & np.isnan(got))] = 0.0
        diff[np.isnan(diff)] = np.inf
        finite = want[np.isfinite(want)]
        max_abs, scale = diff.max(initial=0.0), np.abs(finite).max(initial=0.0)
        normalized = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf)
        noise = np.sum(diff ** 2)
        snr = np.inf if noise == 0 else 10 * np.log10(np.sum(finite ** 2) / noise)
    return max_abs, normalized, snr


def main():
    inputs = dict(np.load(HERE / "inputs.npz"))
    expected = dict(np.load(HERE / "expected.npz"))
    print(f"case {CASE!r}: model.onnx on {RUNTIME} ({DEVICE})")
    try:
        outputs = run(str(HERE / "model.onnx"), inputs, list(expected))
    except Exception:   # each runtime raises its own types: printed whole, and the exit status says it could not run
        traceback.print_exc()
        cannot_run(f"{RUNTIME} failed to run model.onnx (the error above)")
    exceeded = []
    for name, want in expected.items():
        got = np.asarray(outputs[name])
        if got.shape != want.shape:
            print(f"  {name!r}: shape {list(got.shape)}, expected {list(want.shape)}")
            exceeded.append(name)
            continue
        max_abs, normalized, snr = errors(want, got)
        over = normalized > ALLOWED or (MIN_SNR_DB > 0 and want.size >= 16 and snr < MIN_SNR_DB)
        limits = f"allowed {ALLOWED:.3g}" + (f", min SNR {MIN_SNR_DB:.3g} dB" if MIN_SNR_DB > 0 else "")
        print(f"  {name!r}: max abs {max_abs:.3g}, normalized {normalized:.3g}, SNR {snr:.3g} dB ({limits})"
              f"{': EXCEEDS' if over else ''}")
        if over:
            exceeded.append(name)
    if exceeded:
        print(f"REPRODUCED: {', '.join(map(repr, exceeded))} off by more than allowed on {RUNTIME} ({DEVICE})")
        return 1
    print(f"not reproduced: every output within the allowed error on {RUNTIME} ({DEVICE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def write_repro(folder: Path, subgraph: Path, inputs: dict[str, np.ndarray], expected: dict[str, np.ndarray], *,
                runtime: str, device: str, allowed: float, versions: dict[str, str], case_id: str,
                summary: str, min_snr_db: float = 0.0) -> dict[str, Any]:
    """Write the reproduction of `subgraph` on `runtime` into `folder`,
    replacing any folder there whole: it is written beside it and swapped in
    (as cache entries are), so that a folder half written is never what a
    reader finds. `expected`: what the converted model should compute (the
    source framework's values, or ONNX Runtime's CPU provider's); `allowed`:
    the error over max|expected| an output may have. Returns the folder, its
    script, the command that runs it and its files. A disk that fills is a
    CaseError naming it, and the folder there before stays whole."""
    script = script_text(runtime, device, allowed, min_snr_db, case_id)
    folder = Path(folder)
    work = new_folder(folder.parent, f".{folder.name}.tmp-")
    try:
        files = _copy_model(Path(subgraph), work / MODEL)
        write_npz(work / "inputs.npz", inputs)
        write_npz(work / "expected.npz", expected)
        (work / "versions.json").write_text(json.dumps(versions, indent=2, sort_keys=True) + "\n",
                                           encoding="utf-8")
        (work / "README.md").write_text(_readme(runtime, device, allowed, min_snr_db, versions, case_id, summary),
                                        encoding="utf-8")
        (work / SCRIPT).write_text(script, encoding="utf-8")
        files += ["inputs.npz", "expected.npz", "versions.json", "README.md", SCRIPT]
        manifest = {"sha256": {name: file_sha256(work / name) for name in files}}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        files.append(MANIFEST)
        if not os.path.lexists(folder):
            os.rename(work, folder)
            work = None
        elif not exchange_paths(work, folder):   # where the system cannot swap them in one step: a moment with none
            old = work.with_name(f".{folder.name}.old-{secrets.token_hex(8)}")
            os.rename(folder, old)
            os.rename(work, folder)
            work = old
        # else: swapped, and `work` now holds the old folder
    except BaseException as error:   # an interrupt too leaves no half-written folder; all but a full disk re-raised
        if work is not None:
            remove_path(work)
        full = disk_full(error, folder)
        if full:
            raise CaseError("localize", f"the reproduction could not be written to {folder}: {full}, or give "
                                        f"--parity-reports (python -m harness localize: --out) a folder on "
                                        f"another disk") from None
        raise
    if work is not None:
        remove_path(work)
    return {"folder": str(folder), "script": str(folder / SCRIPT), "command": f"python -I {folder / SCRIPT}",
            "files": files}


def edited_script(folder: Path) -> str | None:
    """Why the folder's repro.py is not the script write_repro writes for the
    constants it states, or None when it is. A reproduction folder comes from
    anyone (it is attached to issues): replay runs only the harness's own
    script, byte for byte, unless trusted."""
    text = (Path(folder) / SCRIPT).read_text(encoding="utf-8", errors="replace")
    constants: dict[str, Any] = {}
    for name in ("CASE", "RUNTIME", "DEVICE", "ALLOWED", "MIN_SNR_DB"):
        line = next((line for line in text.splitlines() if line.startswith(f"{name} = ")), None)
        if line is None:
            return f"it states no {name}"
        value = line[len(name) + 3:]
        if name in ("ALLOWED", "MIN_SNR_DB"):
            value = value.split("#", 1)[0]
        try:
            constants[name] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            return f"its {name} is not a literal"
    try:
        written = script_text(constants["RUNTIME"], constants["DEVICE"], float(constants["ALLOWED"]),
                              float(constants["MIN_SNR_DB"]), constants["CASE"])
    except (ValueError, TypeError) as error:
        return str(error)
    return None if written == text else "it differs from the script the harness writes for its constants"


def replay_refusal(folder: Path, trust_script: bool = False) -> str | None:
    """Why replay must not run the reproduction in `folder` (one line naming
    the file), or None. A reproduction folder is attached to issues and may
    come from anyone: it must be no link and hold no link, hold exactly the
    files its manifest lists, each one write_repro writes and each with the
    sha256 recorded, and its repro.py must be the script write_repro writes
    for the constants it states. `trust_script` (--trust-model-code) lets an
    edited repro.py run and nothing else through: a file beside it is still
    refused, and the script still runs isolated (run_repro)."""
    folder = Path(folder)
    script = folder / SCRIPT
    rewrite = "write it again with python -m harness localize"
    yourself = f"or, if you trust the folder, read {script} and run it yourself, isolated: python -I {script}"
    if folder.is_symlink():
        return (f"{folder} is a symbolic link (to {os.readlink(folder)}): replay follows no link out of a "
                f"reproduction folder; give the folder itself: {folder.resolve()}")
    entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    for entry in entries:
        if entry.is_symlink():
            return (f"{entry.path} is a symbolic link (to {os.readlink(entry.path)}): replay reads a reproduction "
                    f"folder's own files only, never one a link points to; if you trust it, put a copy of that "
                    f"file in its place (its sha256 is then checked against {MANIFEST})")
    try:
        manifest = read_user_json(folder / MANIFEST, "a reproduction's manifest", max_bytes=MANIFEST_MAX_BYTES,
                                  max_depth=MANIFEST_MAX_DEPTH)
    except UserJSONError as error:
        if not os.path.lexists(folder / MANIFEST):
            return (f"{folder} has no {MANIFEST} (the sha256 of each file the harness wrote there): replay runs "
                    f"only a folder the harness wrote; {rewrite}, {yourself}")
        return f"{error}; {rewrite}, {yourself}"
    recorded = manifest.get("sha256") if isinstance(manifest, dict) else None
    if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
        return (f"{folder / MANIFEST}: not a reproduction's manifest (it maps no file name to a sha256 under "
                f"'sha256'); {rewrite}, {yourself}")
    foreign = sorted(set(recorded) - WRITTEN)
    if foreign:
        return (f"{folder / MANIFEST} lists {foreign[0]!r}, a file the harness never writes into a reproduction "
                f"folder: that manifest was not written by the harness; {rewrite}, {yourself}")
    for entry in entries:
        if entry.name != MANIFEST and entry.name not in recorded:
            return (f"{entry.path} is not a file the harness wrote (it is not in {MANIFEST}): replay refuses a "
                    f"reproduction folder holding anything else, since Python imports a module that lies "
                    f"beside the script it runs (python repro.py would too); delete it and replay again")
        if not entry.is_file(follow_symlinks=False):
            return f"{entry.path} {not_a_file(Path(entry.path))}; {rewrite}"
    missing = sorted(set(recorded) - {entry.name for entry in entries})
    if missing:
        return f"{folder / missing[0]} is missing (its {MANIFEST} lists it); {rewrite}"
    if not trust_script:
        edited = edited_script(folder)
        if edited:
            return (f"{script} is not the script the harness writes ({edited}): replay runs only its own "
                    f"script, since a reproduction folder may come from anyone. Read it, and if you trust it, "
                    f"pass --trust-model-code, or run it yourself, isolated: python -I {script}")
    for name in sorted(recorded):
        if name == SCRIPT and trust_script:
            continue
        digest = file_sha256(folder / name)
        if digest != recorded[name]:
            trust = ", or pass --trust-model-code to run it as it is" if name == SCRIPT else ""
            return (f"{folder / name} is not the file the harness wrote there (sha256 {digest[:16]}..., its "
                    f"{MANIFEST} records {recorded[name][:16]}...): it was changed since; {rewrite}{trust}")
    return None


def run_repro(folder: Path, timeout_s: float = 300, *, trust_script: bool = False) -> tuple[int, str]:
    """(exit status, output) of a reproduction folder's script, run in a child
    process with this Python: 1 reproduced, 0 not, 2 the runtime cannot run;
    124 when it ran past `timeout_s` and was killed. ValueError, one line, for
    a folder replay_refusal refuses. The script runs isolated: `python -I`
    puts neither its folder nor the user's site on sys.path and reads no
    PYTHON* variable, the environment it passes on holds none either, and its
    working folder is an empty one of its own (the script finds its files by
    its __file__), so nothing in or beside the folder is imported by name."""
    folder = Path(os.path.abspath(folder))
    if not os.path.lexists(folder / SCRIPT):
        raise ValueError(f"{folder} is not a reproduction folder: it has no {SCRIPT} (write_repro writes one)")
    refusal = replay_refusal(folder, trust_script)
    if refusal:
        raise ValueError(refusal)
    # -I ignores PYTHON* already; a process the script starts (a runtime's helper) would not
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTHON")}
    with tempfile.TemporaryDirectory(prefix="repro-run-") as cwd:
        code, output = run_child([sys.executable, "-I", str(folder / SCRIPT)], timeout_s, env=env, cwd=Path(cwd))
    if code == TIMED_OUT:
        return TIMED_OUT_CODE, output
    if code < 0:
        output += f"\n({SCRIPT} {status(code)})"
    return code, output


def script_text(runtime: str, device: str, allowed: float, min_snr_db: float, case_id: str) -> str:
    """repro.py's text; ValueError for a runtime, device or limit it cannot be written for."""
    repro = _repro(runtime, device)
    for label, value in (("allowed", allowed), ("min_snr_db", min_snr_db)):
        if not math.isfinite(value) or value < 0:   # repr of inf or nan is no Python literal
            raise ValueError(f"{label} must be a finite number >= 0, not {value!r}")
    note = _UNVERIFIED.format(what=repro.unverified) if repro.unverified else ""
    run = repro.run.replace("def run(", note + "def run(", 1)   # the note heads the function it is about
    return string.Template(_TEMPLATE).substitute(
        package=repro.package, run=run, case=repr(str(case_id)), runtime=repr(runtime), device=repr(device),
        package_literal=repr(repro.package), allowed=repr(float(allowed)), min_snr_db=repr(float(min_snr_db)))


def repro_runtimes() -> tuple[str, ...]:
    """The runtimes a reproduction script can be written for: those that declare a REPRO."""
    return tuple(name for name in backends.names("runtime") if _declared_repro(name))


def _declared_repro(name: str) -> dict[str, backends.Repro]:
    try:
        return backends.runtime_repro(name)
    except (backends.BackendError, ImportError):   # a broken backend's cases say why; it has no script here
        return {}


def _repro(runtime: str, device: str) -> backends.Repro:
    """How the script runs a file on `runtime` and `device`; ValueError where that runtime declares no way."""
    declared = _declared_repro(runtime)
    if not declared:
        raise ValueError(f"no reproduction script for runtime {runtime!r}: the supported runtimes are "
                         f"{', '.join(repro_runtimes())}")
    if device not in declared:
        raise ValueError(f"runtime {runtime!r} runs on {' or '.join(declared)}, not on device {device!r}")
    return declared[device]


def _readme(runtime: str, device: str, allowed: float, min_snr_db: float, versions: Mapping[str, str],
            case_id: str, summary: str) -> str:
    package = _repro(runtime, device).package
    snr = f", or an SNR under {min_snr_db:g} dB (outputs of 16 elements or more)" if min_snr_db > 0 else ""
    rows = "\n".join(f"| {tool} | {version} |" for tool, version in sorted(versions.items()))
    return (f"# Reproduction of {' '.join(str(case_id).splitlines())}\n\n{summary.strip()}\n\n"
            f"With nothing but numpy and {package} installed (`pip install numpy {package}`), run:\n\n"
            f"    python -I repro.py\n\n"
            f"(`-I` runs it isolated: no module lying beside it is imported in place of numpy or the runtime.)\n\n"
            f"It runs `model.onnx` (the subgraph around the diverging node) on `inputs.npz` with {runtime} "
            f"({device}) and compares each output with `expected.npz`, the reference's values: it prints "
            f"REPRODUCED and exits 1 where an output's largest error over its largest |expected| is above "
            f"{allowed:g}{snr}, prints \"not reproduced\" and exits 0 otherwise, and exits 2 where the runtime "
            f"cannot run. `versions.json` holds the versions below; `{MANIFEST}` the sha256 of each file, "
            f"which `python -m harness replay` checks before it runs the script.\n\n"
            f"## Versions of the tools on the path\n\n| tool | version |\n| --- | --- |\n{rows}\n")


def _copy_model(source: Path, dest: Path) -> list[str]:
    """The subgraph at `dest`, whole: weights it keeps in external data files
    beside `source` are read from there and written inside it (or, above
    EXTERNAL_DATA_ABOVE_BYTES, into one file beside `dest`). Returns the files written."""
    import onnx

    model = onnx.load(str(source))
    if model.ByteSize() > EXTERNAL_DATA_ABOVE_BYTES:
        data = dest.name + ".data"
        onnx.save(model, str(dest), save_as_external_data=True, all_tensors_to_one_file=True, location=data)
        return [dest.name, data]
    onnx.save(model, str(dest))
    return [dest.name]

