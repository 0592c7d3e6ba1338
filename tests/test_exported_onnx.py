"""ONNX files as users export them, handed to the harness as files: a torch CNN
and a tiny BertModel (torch.onnx.export, dynamo), a Keras CNN and a Keras
transformer block (tf2onnx.convert.from_keras), each with dynamic batch (and
sequence) axes. With the --input-spec that the harness's own error advises,
each passes on ONNX Runtime and OpenVINO; the same file with one weight scaled
by 1.05, handed over as the converted file, fails. Built once per module
(benchmarks/exported_onnx.py), run in process as `pytest --model=FILE
--target=onnxruntime,openvino --device=cpu` runs them."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from benchmarks import exported_onnx

KERAS_MODELS = ("keras_cnn", "keras_transformer")


def _keras_missing() -> str | None:
    for module in ("tensorflow", "tf2onnx"):
        try:
            importlib.import_module(module)
        except ImportError as error:
            return f"{module} cannot be imported ({error}): the Keras exports need tensorflow and tf2onnx"
    return None


@pytest.fixture(scope="module", params=list(exported_onnx.BUILDERS))
def exported(request, tmp_path_factory) -> tuple[Path, list[str]]:
    """(the exported file, the --input-spec values that the harness's error for its symbolic dims advises)."""
    name = request.param
    missing = _keras_missing() if name in KERAS_MODELS else None
    if missing:
        pytest.skip(missing)
    out = tmp_path_factory.mktemp(name)
    path = exported_onnx.BUILDERS[name](out)
    [refused] = exported_onnx.run_file(path, out / "default")
    assert refused["status"] == "error" and "lets these input dims vary" in refused["message"], refused["message"]
    advised = exported_onnx.advised_input_specs(refused["message"])
    assert advised, refused["message"]
    return path, advised


def test_an_exported_file_passes_on_both_targets_with_the_advised_input_spec(exported, tmp_path):
    path, advised = exported
    records = exported_onnx.run_file(path, tmp_path, advised)
    assert {r["target"]: r["status"] for r in records} == {"onnxruntime": "passed", "openvino": "passed"}, \
        [r["message"] for r in records]


@pytest.fixture
def verdict_only():
    """The loaded hypothesis profile without its shrink phase, for this test's
    cases only: their verdict is the point, not the smallest failing input,
    whose hundred shrink steps would cost most of the file's time."""
    from hypothesis import Phase, settings

    loaded = settings.get_current_profile_name()
    settings.register_profile("exported-onnx-verdict-only", settings.get_profile(loaded),
                              phases=tuple(p for p in Phase if p is not Phase.shrink))
    settings.load_profile("exported-onnx-verdict-only")
    yield
    settings.load_profile(loaded)


def test_the_file_with_one_weight_scaled_by_1_05_fails_as_the_converted_file(exported, verdict_only, tmp_path):
    path, advised = exported
    twin = exported_onnx.scaled_weight_twin(path, tmp_path / "twin.onnx")
    [record] = exported_onnx.run_file(path, tmp_path, advised, converted=twin, targets=("onnxruntime",))
    assert (record["id"].endswith("-converted"), record["status"]) == (True, "failed"), record["message"]
    assert "out of tolerance" in record["message"]
