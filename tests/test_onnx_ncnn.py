"""The ONNX -> ncnn hop through pnnx's ONNX import, with real pnnx and real
ncnn: keras and mxnet reach ncnn through it (keras -> onnx -> ncnn, mxnet ->
onnx -> ncnn), torch too with --path all; the core zoo once through every such
path, reported per model and source; bad ONNX files and pnnx's failures are
the case's clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ncnn")
pytest.importorskip("pnnx")

from harness import backends, paths
from harness.converters import onnx_ncnn, pnnx_exec
from harness.errors import CaseError
from harness.registry import get_model, zoo_models
from tests import planted

REPO = Path(__file__).resolve().parents[1]


def _convert(source: Path, model: str, out: Path) -> tuple[Path, dict]:
    spec = get_model(model)
    provenance = onnx_ncnn.convert(source, spec, [], out, layouts=spec.source_layouts("torch"))
    return out / onnx_ncnn.FILENAME, provenance


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory) -> Path:
    return planted.export_zoo("mlp", tmp_path_factory.mktemp("onnx-ncnn") / "mlp")


# --- the graph -----------------------------------------------------------------------

def test_registered_and_the_paths_it_opens():
    hop = backends.hop("onnx->ncnn")
    assert (hop.NAME, hop.READS, hop.WRITES, hop.FILENAME, hop.REVISION, hop.OPTIONS) == (
        "pnnx (onnx)", ("onnx",), "ncnn", "model.ncnn.param", 1, ())
    assert paths.paths("keras", "ncnn")[0] == ("tf->onnx", "onnx->ncnn")
    assert paths.paths("mxnet", "ncnn")[0] == ("mxnet->onnx", "onnx->ncnn")
    torch_paths = paths.paths("torch", "ncnn")
    assert torch_paths[0] == ("torch->ncnn",) and ("torch->onnx", "onnx->ncnn") in torch_paths


# --- through the plugin ------------------------------------------------------------------

@pytest.mark.slow  # four conversions through ONNX to ncnn; the torch ones run in make test
def test_keras_and_mxnet_cnn_mlp_through_onnx_to_ncnn(run_parity):
    """keras cnn (both layout variants), keras mlp and mxnet cnn pass at the
    default tolerances. mxnet mlp does not: a canary for a pnnx bug (pnnx
    20261020) — its ONNX has Flatten(axis=1) nodes on [N, 16] tensors, which
    pnnx writes as an ncnn Reshape to 2-D (w=16, h=1), keeping the batch of one
    as an axis, so the output gains one: (1, 1, 10) for (1, 10). When this
    starts passing, pnnx was fixed: move it to the passing cases."""
    run = run_parity("--model=cnn,mlp", "--source=keras,mxnet", "--target=ncnn")
    status = {case: record["status"] for case, record in run.cases.items()}
    assert status == {"cnn-keras-ncnn-cpu-nhwc": "passed", "cnn-keras-ncnn-cpu-nchw": "passed",
                      "mlp-keras-ncnn-cpu": "passed", "cnn-mxnet-ncnn-cpu": "passed",
                      "mlp-mxnet-ncnn-cpu": "skipped"}, run.output   # declared: see the canary below
    record = run.cases["cnn-keras-ncnn-cpu-nhwc"]
    assert record["isolation"], "ncnn declares NEEDS_ISOLATION: its cases run in a worker"
    hop = record["provenance"]
    assert [h["converter"] for h in hop["hops"]][-1] == "pnnx (onnx)" and len(hop["hops"]) == 2
    assert hop["fp16"] is False and "fp16=0" in hop["pnnx_arguments"]
    assert hop["blobs"]["inputs"] == {"image": "in0"} and hop["blobs"]["outputs"] == {"features": "out0"}
    assert hop["input_layouts"] == {"image": "NHWC"}       # keras's ONNX keeps NHWC; so does the ncnn model
    assert hop["input_shapes"]["image"][0] == 1 and hop["input_shapes"]["image"][3] == 3
    assert hop["second_shapes"] is not None                 # H, W kept open through inputshape2
    assert run.cases["cnn-keras-ncnn-cpu-nchw"]["provenance"]["input_layouts"] == {"image": "NCHW"}


# The core zoo, once through every path that ends in this hop, reported by model and source.
@pytest.mark.slow
def test_core_zoo_through_onnx_ncnn_report(run_parity, capsys):
    core = sorted(name for name, spec in zoo_models().items() if spec.tier == "core")
    run = run_parity("--model=" + ",".join(core), "--source=keras,mxnet,torch", "--target=ncnn", "--path=all")
    assert "==== parity ====" in run.output, run.output
    rows = []
    for case, record in sorted(run.cases.items()):
        converter = record.get("provenance", {}).get("converter")
        if record["source"] == "torch" and not case.endswith("-via-onnx-ncnn"):
            continue   # torch's own torch->ncnn path: tests/test_ncnn.py
        converted = record["status"] in ("passed", "failed") or (
            record["status"] == "error" and record.get("stage") not in ("convert", "build"))
        rows.append((record["model"], record["source"], record.get("variant") or "", converted,
                     record["status"], record.get("worst_error_ratio"), record.get("stage"),
                     (record.get("message") or "").splitlines()[:1], converter, record.get("timings", {})))
    with capsys.disabled():
        print("\nmodel        source variant converted status  err/tol   convert_s  first line of the error")
        for model, source, variant, converted, status, ratio, stage, message, _, timings in rows:
            ratio_text = f"{ratio:.3g}" if isinstance(ratio, (int, float)) else "-"
            print(f"{model:12} {source:6} {variant:7} {'yes' if converted else 'no':9} {status:7} {ratio_text:9} "
                  f"{timings.get('convert_s', 0):8.2f}  {(stage or '') + ': ' if stage else ''}"
                  f"{message[0] if message else ''}")
    by = {(r[0], r[1], r[2]): r[4] for r in rows}
    # what must hold: every keras and mxnet core model has a case, and the ones the issue names pass
    for name in core:
        for source in ("keras", "mxnet"):
            if source in zoo_models()[name].builders:
                assert any(key[:2] == (name, source) for key in by), (name, source, run.output)
    assert by[("cnn", "keras", "nhwc")] == by[("cnn", "mxnet", "")] == by[("mlp", "keras", "")] == "passed"
    assert by[("cnn", "torch", "")] == "passed"   # torch -> onnx -> ncnn
    assert {key[:2] for key in by} >= {(name, "torch") for name in core if "torch" in zoo_models()[name].builders}


# --- bad files and pnnx's failures ---------------------------------------------------------

@pytest.mark.parametrize("content", [b"\x08\x07not an onnx model" * 10, b""], ids=["garbage", "empty"])
def test_malformed_onnx_is_a_clear_convert_error(tmp_path, content):
    source = tmp_path / "broken.onnx"
    source.write_bytes(content)
    with pytest.raises(CaseError) as raised:
        _convert(source, "mlp", tmp_path / "out")
    assert raised.value.stage == "convert"
    assert str(source) in raised.value.message and "'mlp'" in raised.value.message
    assert "does not parse" in raised.value.message or "holds no graph" in raised.value.message
    assert "Traceback" not in raised.value.message
    assert not (tmp_path / "out" / onnx_ncnn.FILENAME).exists()


def test_missing_onnx_is_a_case_error(tmp_path):
    with pytest.raises(CaseError, match="does not exist"):
        _convert(tmp_path / "absent.onnx", "mlp", tmp_path / "out")


def test_pnnx_timeout_is_a_convert_error(mlp_onnx, tmp_path, monkeypatch):
    monkeypatch.setattr(pnnx_exec, "PNNX_TIMEOUT_S", 0.001)
    with pytest.raises(CaseError, match=r"pnnx did not finish converting the ONNX file .* of model 'mlp'") as raised:
        _convert(mlp_onnx, "mlp", tmp_path)
    assert raised.value.stage == "convert"


def test_inputs_that_do_not_fit_are_refused_by_name(mlp_onnx, tmp_path):
    """cnn's spec against mlp's file: one input each, but the file's x is [N, 16], not an image."""
    spec = get_model("cnn")
    with pytest.raises(CaseError, match="declares input 'x'") as raised:
        onnx_ncnn.convert(mlp_onnx, spec, [], tmp_path, layouts=spec.source_layouts("torch"))
    assert raised.value.stage == "convert"


def test_provenance_and_nothing_written_beside_the_source(mlp_onnx, tmp_path):
    before = sorted(p.name for p in mlp_onnx.parent.iterdir())
    param, provenance = _convert(mlp_onnx, "mlp", tmp_path / "out")
    assert sorted(p.name for p in mlp_onnx.parent.iterdir()) == before   # pnnx's side files stay in its work folder
    assert sorted(p.name for p in param.parent.iterdir()) == ["model.ncnn.bin", "model.ncnn.param"]
    assert provenance["converter"] == "pnnx (onnx)" and provenance["fp16"] is False
    assert "fp16=0" in provenance["pnnx_arguments"] and provenance["pnnx_seconds"] > 0
    assert provenance["blobs"]["inputs"] == {"x": "in0"} and provenance["blobs"]["outputs"] == {"logits": "out0"}
    assert provenance["input_shapes"] == {"x": [1, 16]} and provenance["second_shapes"] is None
    assert provenance["source_sha256"] and provenance["versions"]["pnnx"]


def test_module_imports_without_ncnn_or_pnnx():
    code = ("import sys, harness.converters.onnx_ncnn; "
            "assert not {'ncnn', 'pnnx', 'onnx'} & set(sys.modules), 'imported at module level'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_mxnets_flatten_through_pnnx_keeps_an_axis_a_canary(tmp_path):
    """A canary for the zoo's `mxnet->ncnn` declarations on `mlp` and `simple`:
    pnnx 20261020 writes MXNet's Flatten(axis=1) as a 2-D Reshape that keeps a
    sample's batch of one as an axis. The day this fails, pnnx was fixed and the
    declarations must go (their cases would then run instead of skipping)."""
    from harness.converters import mxnet_onnx
    from harness.inputs import example_recipe, make_inputs
    from harness.registry import get_model
    from harness.runtimes import ncnn as ncnn_runtime
    from harness.sources import mxnet as mxnet_source   # its import shims before mxnet's own import

    if mxnet_source.missing("cpu"):
        pytest.skip(mxnet_source.missing("cpu"))

    spec = get_model("mlp")
    assert "mxnet->ncnn" in spec.unsupported
    model = mxnet_source.bind(mxnet_source.build(spec.builders["mxnet"]), spec)
    example = [make_inputs(spec, example_recipe(spec))[i.name] for i in spec.inputs]
    layouts = spec.source_layouts("mxnet")
    mxnet_onnx.convert(model, spec, example, tmp_path / "onnx", layouts=layouts)
    onnx_ncnn.convert(tmp_path / "onnx" / mxnet_onnx.FILENAME, spec, example, tmp_path / "ncnn", layouts=layouts)
    session = ncnn_runtime.Session(tmp_path / "ncnn" / onnx_ncnn.FILENAME, "cpu", None)
    session.bind(["x"], ["float32"], ["logits"])
    (logits,) = session.run([example[0][:1]])
    assert logits.shape == (1, 1, 10)   # (1, 10) the day pnnx keeps MXNet's Flatten flat
