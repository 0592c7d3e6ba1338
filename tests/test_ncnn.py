"""ncnn as a target and the torch -> ncnn hop through pnnx, with real pnnx and
real ncnn: the zoo through the plugin, the precision traps (pnnx's default
fp16 weights, ncnn's default fp16 storage), planted edits of a .param beside
their unedited twins, bad files, binding and the batch split."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ncnn")
pytest.importorskip("pnnx")

from harness import backends
from harness.converters import pnnx_exec, torch_ncnn
from harness.errors import CaseError
from harness.inputs import example_recipe, make_inputs
from harness.registry import get_model
from harness.runtimes import ncnn as ncnn_runtime

REPO = Path(__file__).resolve().parents[1]


def _convert(model: str, out: Path, fp16: bool = False) -> tuple[Path, dict]:
    """(model.ncnn.param, the hop's provenance) of zoo model `model`, bound as
    the harness binds it; fp16=True: pnnx's default fp16 weights (planted)."""
    from harness.sources import torch as torch_source

    spec = get_model(model)
    bound = torch_source.bind(spec.builders["torch"]().eval(), spec)
    example = [make_inputs(spec, example_recipe(spec))[i.name] for i in spec.inputs]
    saved = pnnx_exec.FP16
    pnnx_exec.FP16 = fp16
    try:
        provenance = torch_ncnn.convert(bound, spec, example, out, layouts=spec.source_layouts("torch"))
    finally:
        pnnx_exec.FP16 = saved
    return out / torch_ncnn.FILENAME, provenance


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    tmp = tmp_path_factory.mktemp("ncnn")
    return {"cnn": _convert("cnn", tmp / "cnn"), "mlp": _convert("mlp", tmp / "mlp"),
            "mlp-fp16-weights": _convert("mlp", tmp / "mlp-fp16", fp16=True)}


def _copy(param: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(param, folder / param.name)
    shutil.copy(param.with_suffix(".bin"), folder / param.with_suffix(".bin").name)
    return folder / param.name


def _open(path: Path, model: str, precision: str = "fp32") -> ncnn_runtime.Session:
    spec = get_model(model)
    session = ncnn_runtime.Session(path, "cpu", None, precision)
    session.bind([i.name for i in spec.inputs], [i.dtype for i in spec.inputs], [o.name for o in spec.outputs])
    return session


# --- through the plugin --------------------------------------------------------------

def test_zoo_through_ncnn_passes(run_parity):
    run = run_parity("--model=cnn,mlp", "--target=ncnn")
    assert run.result.ret == 0, run.output
    assert {r["status"] for r in run.cases.values()} == {"passed"}, run.output
    record = run.cases["cnn-torch-ncnn-cpu"]
    assert record["isolation"], "ncnn declares NEEDS_ISOLATION: its cases run in a worker"
    hop, runtime = record["provenance"], record["provenance"]["runtime"]
    assert hop["converter"] == "pnnx" and hop["fp16"] is False and "fp16=0" in hop["pnnx_arguments"]
    assert hop["blobs"]["inputs"] == {"image": "in0"} and hop["blobs"]["outputs"] == {"features": "out0"}
    assert hop["second_shapes"] == {"image": [1, 3, 40, 48]}   # H, W kept open through inputshape2
    assert hop["input_layouts"] == {"image": "NCHW"}
    assert runtime["options"]["use_fp16_storage"] is False and runtime["options"]["use_bf16_storage"] is False
    assert runtime["blobs"]["inputs"] == {"image": "in0"}


def test_fp16_precision_passes_at_fp16_tolerances(run_parity):
    run = run_parity("--model=mlp", "--target=ncnn", "--precision=fp16")
    assert run.result.ret == 0, run.output
    record = run.single
    assert record["status"] == "passed" and record["precision"] == "fp16", run.output
    assert record["provenance"]["runtime"]["options"]["use_fp16_storage"] is True


def test_pnnx_default_fp16_weights_fail_fp32_beside_their_twin(run_parity, parity_dir, files):
    """Planted: pnnx's default (fp16=True) stores fp16 weights; held to fp32
    tolerances that fails, while the fp32 export passes and the fp16 file
    passes as an fp16 case (fp16 tolerances)."""
    twin = _copy(files["mlp"][0], parity_dir / "twin")
    halved = _copy(files["mlp-fp16-weights"][0], parity_dir / "halved")
    assert halved.with_suffix(".bin").stat().st_size < twin.with_suffix(".bin").stat().st_size
    passed = run_parity("--model=mlp", f"--converted={twin}", "--target=ncnn")
    assert passed.single["status"] == "passed", passed.output
    failed = run_parity("--model=mlp", f"--converted={halved}", "--target=ncnn")
    assert failed.single["status"] == "failed", failed.output
    assert failed.result.ret != 0
    at_fp16 = run_parity("--model=mlp", f"--converted={halved}", "--target=ncnn", "--precision=fp16")
    assert at_fp16.single["status"] == "passed", at_fp16.output


def test_fp16_is_a_real_lowering_on_this_cpu(files):
    """Why ncnn declares fp16: its fp16 storage changes an InnerProduct's result
    here (x86 too), by far more than fp32 rounding."""
    spec = get_model("mlp")
    x = make_inputs(spec, example_recipe(spec))["x"]
    fp32 = _open(files["mlp"][0], "mlp").run([x])[0]
    fp16 = _open(files["mlp"][0], "mlp", "fp16").run([x])[0]
    assert np.abs(fp32 - fp16).max() > 1e-5 * np.abs(fp32).max()


def _edit_param(param: Path, folder: Path, kind: str, old: str, new: str) -> Path:
    """A copy of the model with the first `kind` layer's parameter `old` (k=v) made `new`."""
    edited = _copy(param, folder)
    lines = edited.read_text().splitlines()
    index = next(k for k, line in enumerate(lines) if line.split()[0] == kind)
    fields = lines[index].split()
    assert old in fields, lines[index]
    lines[index] = " ".join(new if f == old else f for f in fields)
    edited.write_text("\n".join(lines) + "\n")
    return edited


@pytest.mark.slow  # edits ncnn's param file and reruns the cases twice; test_pnnx_default_fp16_weights_fail_fp32_beside_their_twin plants a bug in make test
@pytest.mark.parametrize("kind, old, new", [("Convolution", "5=1", "5=0"),   # bias_term off, weight size kept
                                            ("Pooling", "1=2", "1=3")])      # pooling kernel 2 -> 3
def test_edited_param_fails_beside_its_twin(run_parity, parity_dir, files, kind, old, new):
    twin = _copy(files["cnn"][0], parity_dir / "twin")
    edited = _edit_param(files["cnn"][0], parity_dir / "edited", kind, old, new)
    passed = run_parity("--model=cnn", f"--converted={twin}", "--target=ncnn")
    assert passed.single["status"] == "passed", passed.output
    failed = run_parity("--model=cnn", f"--converted={edited}", "--target=ncnn")
    assert failed.single["status"] == "failed", failed.output


# --- bad files -----------------------------------------------------------------------

def _truncated(param: Path, folder: Path) -> Path:
    bad = _copy(param, folder)
    weights = bad.with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:100])
    return bad


def _unknown_layer(param: Path, folder: Path) -> Path:
    bad = _copy(param, folder)
    bad.write_text(bad.read_text().replace("InnerProduct ", "NoSuchLayer ", 1))
    return bad


@pytest.mark.parametrize("make, words", [(_truncated, ["could not load the weights", "model.ncnn.bin",
                                                       "truncated", "ModelBin read weight_data failed"]),
                                         (_unknown_layer, ["could not read the param file", "model.ncnn.param",
                                                           "NoSuchLayer not exists or registered"])])
def test_bad_file_is_an_error_of_its_case(run_parity, parity_dir, files, make, words):
    bad = make(files["mlp"][0], parity_dir / "bad")
    with pytest.raises(CaseError) as raised:
        ncnn_runtime.Session(bad, "cpu", None)
    assert raised.value.stage == "runtime"
    for word in words:
        assert word in raised.value.message
    run = run_parity("--model=mlp", f"--converted={bad}", "--target=ncnn")
    record = run.single
    assert record["status"] == "error" and record["stage"] == "runtime", run.output
    assert str(bad.parent) in record["message"] and words[0] in record["message"]
    assert "==== parity ====" in run.output   # the run went on to its summary


def test_missing_bin_is_an_error_naming_it(files, tmp_path):
    bad = _copy(files["mlp"][0], tmp_path)
    bad.with_suffix(".bin").unlink()
    with pytest.raises(CaseError, match="no weights file model.ncnn.bin"):
        ncnn_runtime.Session(bad, "cpu", None)


# --- the hop ---------------------------------------------------------------------------

def test_op_ncnn_lacks_is_a_convert_error_naming_model_and_op(tmp_path):
    """two_outputs has an argmax, which pnnx writes as torch.argmax, a layer ncnn lacks."""
    with pytest.raises(CaseError) as raised:
        _convert("two_outputs", tmp_path)
    assert raised.value.stage == "convert"
    assert "two_outputs" in raised.value.message and "torch.argmax" in raised.value.message


def test_pnnx_timeout_is_a_convert_error(tmp_path, monkeypatch):
    monkeypatch.setattr(pnnx_exec, "PNNX_TIMEOUT_S", 0.001)
    with pytest.raises(CaseError, match=r"pnnx did not finish converting torch model 'mlp'") as raised:
        _convert("mlp", tmp_path)
    assert raised.value.stage == "convert"


def test_hop_provenance_and_blobs(files):
    param, provenance = files["mlp"]
    assert param.name == "model.ncnn.param" and param.with_suffix(".bin").is_file()
    assert provenance["fp16"] is False and provenance["versions"]["pnnx"]
    assert provenance["blobs"]["inputs"] == {"x": "in0"} and provenance["blobs"]["outputs"] == {"logits": "out0"}
    assert provenance["second_shapes"] is None   # mlp has no symbolic dim besides the batch
    assert provenance["traced_shapes"] == {"x": [1, 16]}
    assert files["mlp-fp16-weights"][1]["fp16"] is True
    layers = pnnx_exec.read_param(param)
    assert pnnx_exec.io_blobs(layers) == (["in0"], ["out0"])


# --- the runtime -------------------------------------------------------------------------

def test_batch_runs_sample_by_sample(files):
    from harness.sources import torch as torch_source

    spec = get_model("cnn")
    model = torch_source.bind(spec.builders["torch"]().eval(), spec)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 17, 23)).astype(np.float32)
    session = _open(files["cnn"][0], "cnn")
    got = session.run([x])[0]
    want = torch_source.run(model, [x], "cpu")[0]
    assert got.shape == want.shape and np.allclose(got, want, atol=1e-5)
    assert session.declared_inputs() == [None]
    assert session.provenance["matched_by"] == "position"
    session.close()


def test_bind_refuses_what_does_not_fit(files):
    session = ncnn_runtime.Session(files["mlp"][0], "cpu", None)
    with pytest.raises(CaseError, match="do not match"):
        session.bind(["x", "y"], ["float32", "float32"], ["logits"])


def test_devices_precisions_and_suffix():
    assert ncnn_runtime.missing("cpu") is None
    assert "Vulkan" in ncnn_runtime.missing("cuda")
    assert ncnn_runtime.PRECISIONS == ("fp32", "fp16") and ncnn_runtime.NEEDS_ISOLATION
    assert ncnn_runtime.versions()["ncnn"]
    assert backends.artifact_suffixes()[".param"] == "ncnn"
    assert backends.runtime_formats("ncnn") == ("ncnn",)
    assert backends.hop("torch->ncnn").WRITES == "ncnn"
    with pytest.raises(CaseError, match="no precision"):
        ncnn_runtime.Session(Path("x.param"), "cpu", None, "int8")


def test_modules_import_without_ncnn():
    code = ("import sys, harness.runtimes.ncnn, harness.converters.torch_ncnn; "
            "assert not {'ncnn', 'pnnx'} & set(sys.modules), 'ncnn or pnnx imported at module level'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
