"""A reproduction folder is attached to issues and may come from anyone:
`python -m harness replay FOLDER` runs its script only where the folder holds
exactly what write_repro wrote (its manifest.json: names and sha256), holds no
link and is none, and runs it isolated (python -I, a working folder of its
own, no PYTHON* variable), so that a module dropped beside an unedited script
is never imported. --trust-model-code lets an edited repro.py run, and nothing
else through. Each refusal has its twin: the folder the harness wrote, or the
one the advice leads to, still replays."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from harness.__main__ import main
from tests.test_localize_repro import softmax_model, write

# Writes a mark where it is imported, then hands over the real module: the replay would look normal.
PLANTED = """\
import pathlib, sys
pathlib.Path({mark!r}).write_text("planted code ran")
here = pathlib.Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != here]
del sys.modules[__name__]
__import__(__name__)
"""


@pytest.fixture
def folder(tmp_path) -> Path:
    """A reproduction the harness wrote, of a Softmax on the wrong axis: replay exits 1."""
    written = tmp_path / "case.repro"
    write(written, softmax_model(tmp_path / "sub.onnx", axis=1), expected_axis=2)
    return written


def replay(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["replay", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(capsys, *args: str) -> str:
    """The one line replay refuses with, exit 2."""
    code, out, err = replay(capsys, *args)
    assert code == 2 and not out and len(err.strip().splitlines()) == 1, (code, out, err)
    assert err.startswith("python -m harness replay: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize("module", ["numpy", "onnxruntime"])
def test_a_module_planted_beside_the_script_is_refused_and_never_runs(folder, tmp_path, capsys, module):
    mark = tmp_path / "mark"
    planted = folder / f"{module}.py"
    planted.write_text(PLANTED.format(mark=str(mark)))
    err = refused(capsys, folder)
    assert f"{planted} is not a file the harness wrote (it is not in manifest.json)" in err
    assert err.rstrip().endswith("delete it and replay again")
    assert not mark.exists()
    # nor with --trust-model-code: it trusts the script, not what lies beside it
    refused(capsys, folder, "--trust-model-code")
    assert not mark.exists()
    planted.unlink()   # the advice
    code, out, _ = replay(capsys, folder)
    assert code == 1 and "REPRODUCED" in out


def test_a_manifest_rewritten_to_list_a_planted_module_is_refused(folder, tmp_path, capsys):
    """The manifest is not signed: anyone can add a name and its sha256."""
    mark = tmp_path / "mark"
    planted = folder / "numpy.py"
    planted.write_text(PLANTED.format(mark=str(mark)))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"]["numpy.py"] = hashlib.sha256(planted.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    err = refused(capsys, folder)
    assert f"{folder / 'manifest.json'} lists 'numpy.py', a file the harness never writes" in err
    assert not mark.exists()


def test_the_script_runs_isolated_even_when_trusted(folder, tmp_path, capsys, monkeypatch):
    """An edited script runs with --trust-model-code, and still with nothing
    of its folder, the working folder or PYTHON* variables on its path."""
    elsewhere = tmp_path / "on_pythonpath"
    elsewhere.mkdir()
    (elsewhere / "planted.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(elsewhere))
    monkeypatch.setenv("PYTHONSTARTUP", str(elsewhere / "planted.py"))
    monkeypatch.chdir(folder)
    script = folder / "repro.py"
    script.write_text("import importlib.util, json, os, sys\n"
                      "print(json.dumps({'path': sys.path, 'cwd': os.getcwd(), 'isolated': sys.flags.isolated,\n"
                      "                  'planted': importlib.util.find_spec('planted') is not None,\n"
                      "                  'python_vars': sorted(k for k in os.environ if k.startswith('PYTHON'))}))\n")
    code, out, err = replay(capsys, folder, "--trust-model-code")
    assert code == 0, err
    seen = json.loads(out)
    assert not {str(folder), str(folder.resolve()), "", str(elsewhere)} & set(seen["path"])
    assert Path(seen["cwd"]) not in (folder, folder.resolve()) and seen["isolated"] == 1
    assert not seen["planted"] and seen["python_vars"] == []


def test_a_constant_edited_to_another_literal_is_caught_by_the_manifest(folder, capsys):
    """The script the harness writes for ALLOWED = 1e9 is byte for byte its
    own: only the recorded sha256 says it is not the one written here."""
    script = folder / "repro.py"
    script.write_text(script.read_text().replace("ALLOWED = 0.0001", "ALLOWED = 1000000000.0")
                      .replace("MIN_SNR_DB = 20.0", "MIN_SNR_DB = 0.0"))
    err = refused(capsys, folder)
    assert f"{script} is not the file the harness wrote there" in err and "--trust-model-code" in err
    code, out, _ = replay(capsys, folder, "--trust-model-code")   # the advice
    assert code == 0 and "not reproduced" in out


def test_a_data_file_changed_since_it_was_written_is_refused(folder, tmp_path, capsys):
    other = tmp_path / "other.repro"
    write(other, softmax_model(tmp_path / "sub.onnx", axis=1), expected_axis=1)
    (folder / "expected.npz").write_bytes((other / "expected.npz").read_bytes())
    err = refused(capsys, folder)
    assert f"{folder / 'expected.npz'} is not the file the harness wrote there" in err
    assert "--trust-model-code" not in err   # trust is for the script only
    refused(capsys, folder, "--trust-model-code")
    code, out, _ = replay(capsys, other)   # the twin: as written, the same files replay
    assert code == 0 and "not reproduced" in out


def test_a_folder_without_its_manifest_is_refused_and_the_script_still_runs_by_hand(folder, capsys):
    (folder / "manifest.json").unlink()
    err = refused(capsys, folder)
    assert f"{folder} has no manifest.json" in err
    command = shlex.split(err.rsplit("run it yourself, isolated: ", 1)[1].strip())   # the advice, followed
    assert command[:2] == ["python", "-I"]   # this Python stands for it: the one with the runtime installed
    done = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "REPRODUCED" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"sha256": {"a": {"b": "c"}}}', "[]", "{"])
def test_a_manifest_past_its_budget_or_of_another_shape_is_one_line(folder, capsys, text):
    (folder / "manifest.json").write_text(text)
    err = refused(capsys, folder)
    assert str(folder / "manifest.json") in err


def test_a_link_in_the_folder_is_refused_naming_it(folder, tmp_path, capsys):
    copy = tmp_path / "elsewhere.onnx"
    copy.write_bytes((folder / "model.onnx").read_bytes())
    (folder / "model.onnx").unlink()
    (folder / "model.onnx").symlink_to(copy)
    err = refused(capsys, folder)
    assert f"{folder / 'model.onnx'} is a symbolic link (to {copy})" in err
    refused(capsys, folder, "--trust-model-code")
    (folder / "model.onnx").unlink()   # the advice: a copy of the file in its place
    (folder / "model.onnx").write_bytes(copy.read_bytes())
    code, out, _ = replay(capsys, folder)
    assert code == 1 and "REPRODUCED" in out
    (folder / "notes").symlink_to("/etc/hostname")   # a link under a name the harness never writes
    assert f"{folder / 'notes'} is a symbolic link" in refused(capsys, folder)


def test_a_folder_that_is_a_link_is_refused_and_the_folder_itself_replays(folder, tmp_path, capsys):
    link = tmp_path / "link.repro"
    link.symlink_to(folder)
    err = refused(capsys, link)
    assert f"{link} is a symbolic link (to {folder})" in err
    given = err.rsplit("give the folder itself: ", 1)[1].strip()   # the advice, followed
    code, out, _ = replay(capsys, given)
    assert code == 1 and "REPRODUCED" in out


def test_a_folder_inside_is_refused(folder, capsys):
    (folder / "__pycache__").mkdir()
    assert f"{folder / '__pycache__'} is not a file the harness wrote" in refused(capsys, folder)
    os.rmdir(folder / "__pycache__")
    (folder / "README.md").unlink()
    (folder / "README.md").mkdir()   # a listed name, but a folder
    assert f"{folder / 'README.md'} is a directory, not a file" in refused(capsys, folder)
