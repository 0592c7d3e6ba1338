"""Minimal reproductions (harness/localize/repro.py): the folder's repro.py,
run with nothing of the harness importable, exits 1 with REPRODUCED where the
model computes other than expected (a Softmax on another axis than the
reference's) and 0 where it agrees, on each runtime installed here; replay runs
it and returns its code; a folder written again replaces the old one whole;
quotes and newlines in names stay data."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.__main__ import main
from harness.localize.repro import repro_runtimes, run_repro, write_repro

SHAPE = (2, 3, 4)
VERSIONS = {"onnx": onnx.__version__, "torch": "2.5.0"}
INSTALLED = [pytest.param(runtime, marks=pytest.mark.skipif(importlib.util.find_spec(module) is None,
                                                            reason=f"{module} is not installed"))
             for runtime, module in (("onnxruntime", "onnxruntime"), ("openvino", "openvino"),
                                     ("onnx-reference", "onnx"))]
# Runs repro.py as a user would, where no harness is: python -I keeps the working folder, PYTHONPATH and
# the user's site off the path, and the editable install's harness is blocked (None in sys.modules).
ISOLATED = ("import runpy, sys; sys.modules['harness'] = None; sys.argv = ['repro.py']; "
            "runpy.run_path('repro.py', run_name='__main__')")


def softmax_model(path: Path, axis: int, x: str = "x", y: str = "y") -> Path:
    graph = helper.make_graph([helper.make_node("Softmax", [x], [y], axis=axis)], "softmax",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, list(SHAPE))],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, list(SHAPE))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


X = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)


def write(folder: Path, subgraph: Path, expected_axis: int, runtime: str = "onnxruntime", device: str = "cpu",
          x: str = "x", y: str = "y", case_id: str = "softmax-torch-onnxruntime-cpu") -> dict:
    return write_repro(folder, subgraph, {x: X}, {y: softmax(X, expected_axis)}, runtime=runtime, device=device,
                       allowed=1e-4, versions=VERSIONS, case_id=case_id, min_snr_db=20.0,
                       summary="Softmax node 'sm' leaves the reference: torch computed it on the last axis.")


def run_isolated(folder: Path, first_on_path: Path | None = None) -> tuple[int, str]:
    setup = f"import sys; sys.path.insert(0, {str(first_on_path)!r}); " if first_on_path else ""
    done = subprocess.run([sys.executable, "-I", "-c", setup + ISOLATED], cwd=folder, capture_output=True,
                          text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("runtime", INSTALLED)
def test_the_script_reproduces_a_softmax_on_the_wrong_axis_and_not_one_on_the_right(tmp_path, runtime):
    folder = tmp_path / "case.repro"
    wrong = write(folder, softmax_model(tmp_path / "sub.onnx", axis=1), expected_axis=2, runtime=runtime)
    assert wrong == {"folder": str(folder), "script": str(folder / "repro.py"),
                     "command": f"python -I {folder / 'repro.py'}",
                     "files": ["model.onnx", "inputs.npz", "expected.npz", "versions.json", "README.md", "repro.py",
                               "manifest.json"]}
    script = (folder / "repro.py").read_text()
    assert "import harness" not in script and "from harness" not in script
    code, output = run_isolated(folder)
    assert code == 1, output
    assert "REPRODUCED: 'y'" in output and "normalized" in output and "SNR" in output, output

    write(folder, softmax_model(tmp_path / "sub.onnx", axis=2), expected_axis=2, runtime=runtime)
    code, output = run_isolated(folder)
    assert code == 0, output
    assert "not reproduced" in output and "EXCEEDS" not in output, output


def test_replay_runs_a_reproduction_folder_and_returns_its_code(tmp_path, capsys):
    model = softmax_model(tmp_path / "sub.onnx", axis=1)
    write(tmp_path / "wrong.repro", model, expected_axis=2)
    write(tmp_path / "right.repro", model, expected_axis=1)
    assert main(["replay", str(tmp_path / "wrong.repro")]) == 1
    assert "REPRODUCED" in capsys.readouterr().out
    assert main(["replay", str(tmp_path / "right.repro")]) == 0
    assert "not reproduced" in capsys.readouterr().out


def test_replay_runs_only_the_script_the_harness_writes_unless_trusted(tmp_path, capsys):
    """A reproduction folder is attached to issues and may come from anyone:
    an edited repro.py is code the user has not read."""
    folder = tmp_path / "case.repro"
    write(folder, softmax_model(tmp_path / "sub.onnx", axis=1), expected_axis=2)
    script = folder / "repro.py"
    script.write_text("print('planted')\n" + script.read_text())
    assert main(["replay", str(folder)]) == 2
    assert "is not the script the harness writes" in capsys.readouterr().err
    assert main(["replay", str(folder), "--trust-model-code"]) == 1
    assert "planted" in capsys.readouterr().out
    # a constant edited is an edit too: the script is rewritten from the constants it states and compared
    script.write_text(script.read_text().replace("print('planted')\n", "").replace("ALLOWED = ", "ALLOWED = 1e9 + "))
    assert main(["replay", str(folder)]) == 2


@pytest.mark.parametrize("runtime", ["tensorrt", "onnxruntime-tensorrt"])
def test_a_runtime_that_cannot_run_here_exits_2_and_says_what_to_install(tmp_path, capsys, runtime):
    if runtime == "tensorrt" and importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    folder = tmp_path / "case.repro"
    write(folder, softmax_model(tmp_path / "sub.onnx", axis=1), expected_axis=2, runtime=runtime, device="cuda")
    code, output = run_isolated(folder)
    assert code == 2, output
    assert "cannot run:" in output and "pip install" in output and "REPRODUCED" not in output, output
    assert main(["replay", str(folder)]) == 2
    assert "UNVERIFIED" in (folder / "repro.py").read_text()


def test_the_tensorrt_script_calls_polygraphy_as_polygraphy_takes_it_up_to_tensorrt_itself(tmp_path):
    """The closest this machine comes to running the TensorRT script: with the
    real Polygraphy and a stand-in tensorrt module that has a version only, its
    loaders are made with the arguments the script gives and fail where
    Polygraphy first calls TensorRT (trt.Builder), not before."""
    pytest.importorskip("polygraphy")
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here: the stand-in would shadow it")
    stand_in = tmp_path / "stand_in"
    stand_in.mkdir()
    (stand_in / "tensorrt.py").write_text('__version__ = "10.9.0.34"\n')
    folder = tmp_path / "case.repro"
    write(folder, softmax_model(tmp_path / "sub.onnx", axis=1), expected_axis=2, runtime="tensorrt", device="cuda")
    code, output = run_isolated(folder, first_on_path=stand_in)
    assert code == 2 and "tensorrt 10.9.0.34" in output, output
    assert "has no attribute 'Builder'" in output and "TypeError" not in output, output


def test_a_folder_written_again_replaces_the_old_one_whole(tmp_path):
    folder = tmp_path / "case.repro"
    write(folder, softmax_model(tmp_path / "sub.onnx", axis=1), expected_axis=2)
    (folder / "stale.txt").write_text("from the earlier run")
    written = write(folder, softmax_model(tmp_path / "sub.onnx", axis=2), expected_axis=2)
    assert sorted(p.name for p in folder.iterdir()) == sorted(written["files"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.repro", "sub.onnx"]   # no temporary folder left
    # a write that fails leaves the folder it would have replaced as it was
    with pytest.raises(Exception):
        write(folder, tmp_path / "missing.onnx", expected_axis=2)
    assert sorted(p.name for p in folder.iterdir()) == sorted(written["files"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.repro", "sub.onnx"]
    assert run_repro(folder)[0] == 0


def test_quotes_and_newlines_in_names_stay_data(tmp_path):
    # "file" is np.savez's own parameter name: the inputs must not be written through it
    x, y = "file", 'y\'"""\n)\nimport os  # '
    case_id = "case 'one'\n\"\"\"two\\"
    folder = tmp_path / "case.repro"
    write(folder, softmax_model(tmp_path / "sub.onnx", axis=1, x=x, y=y), expected_axis=2, x=x, y=y,
          case_id=case_id)
    code, output = run_isolated(folder)
    assert code == 1, output
    assert f"REPRODUCED: {y!r}" in output and repr(case_id) in output, output
    assert set(np.load(folder / "inputs.npz")) == {x} and set(np.load(folder / "expected.npz")) == {y}


def test_a_subgraph_with_external_data_keeps_working_once_its_folder_is_gone(tmp_path):
    weight = np.linspace(-1, 1, SHAPE[-1], dtype=np.float32)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "add",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(SHAPE))],
                              initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    source = tmp_path / "localize"
    source.mkdir()
    onnx.save(model, source / "sub.onnx", save_as_external_data=True, location="sub.onnx.data", size_threshold=0)
    folder = tmp_path / "case.repro"
    write_repro(folder, source / "sub.onnx", {"x": X}, {"y": X + weight}, runtime="onnxruntime", device="cpu",
                allowed=1e-6, versions=VERSIONS, case_id="add", summary="Add")
    for path in source.iterdir():
        path.unlink()
    source.rmdir()
    code, output = run_isolated(folder)
    assert code == 0, output


def test_an_unknown_runtime_or_device_is_refused_before_anything_is_written(tmp_path):
    model = softmax_model(tmp_path / "sub.onnx", axis=1)
    with pytest.raises(ValueError, match="supported runtimes are " + ", ".join(repro_runtimes())):
        write(tmp_path / "a.repro", model, expected_axis=2, runtime="tflite")
    with pytest.raises(ValueError, match="runs on cpu, not on device 'cuda'"):
        write(tmp_path / "b.repro", model, expected_axis=2, runtime="openvino", device="cuda")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.onnx"]


def test_run_repro_refuses_a_folder_without_a_script_and_stops_a_hang(tmp_path):
    with pytest.raises(ValueError, match="not a reproduction folder: it has no repro.py"):
        run_repro(tmp_path)
    folder = tmp_path / "case.repro"
    write(folder, softmax_model(tmp_path / "sub.onnx", axis=1), expected_axis=2)
    (folder / "repro.py").write_text("import time\ntime.sleep(60)\n")
    code, output = run_repro(folder, timeout_s=1, trust_script=True)
    assert code == 124 and "timed out after 1 s" in output
