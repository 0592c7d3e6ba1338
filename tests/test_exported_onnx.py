"""ONNX files as users export them, handed to the harness as files: a torch CNN
and a tiny BertModel (torch.onnx.export, dynamo), a Keras CNN and a Keras
transformer block (tf2onnx.convert.from_keras), each with dynamic batch (and
sequence) axes. With default options only, each passes on ONNX Runtime and
OpenVINO, every case warning of the symbolic dims it bounded by default; the
same file with one weight scaled by 1.05, handed over as the converted file,
fails, and so does the Keras transformer with embedding rows 5..45 scaled by
1.05 (rows that ids drawn from -4..4 never reached). Built once per module
(benchmarks/exported_onnx.py), run in process as `pytest --model=FILE
--target=onnxruntime,openvino --device=cpu` runs them."""

from __future__ import annotations

import importlib
import re
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


# The axes each export leaves symbolic, per input, as the default-bounds warnings name them (tf2onnx names
# its dims by a counter, unk__N, that a process's earlier conversions move on).
BOUNDED_BY_DEFAULT = {"torch_cnn": [["0"]], "torch_bert": [["0", "1"], ["0", "1"]], "keras_cnn": [["0"]],
                      "keras_transformer": [["0", "1"]]}


@pytest.fixture(scope="module", params=list(exported_onnx.BUILDERS))
def exported(request, tmp_path_factory) -> tuple[str, Path]:
    """(the model's name, its exported file)."""
    name = request.param
    missing = _keras_missing() if name in KERAS_MODELS else None
    if missing:
        pytest.skip(missing)
    return name, exported_onnx.BUILDERS[name](tmp_path_factory.mktemp(name))


def test_an_exported_file_passes_on_both_targets_with_default_options(exported, tmp_path):
    """Refused before for its symbolic dims until --input-spec bounded them; now bounded by default, and
    each case's record warns of the dims so bounded with the --input-spec that widens them."""
    name, path = exported
    records = exported_onnx.run_file(path, tmp_path)
    assert {r["target"]: r["status"] for r in records} == {"onnxruntime": "passed", "openvino": "passed"}, \
        [r["message"] for r in records]
    for record in records:
        warned = [w["message"] for w in record["warnings"] if w["kind"] == "default_bounds"]
        assert [re.findall(r"\(axis (\d+)\)", w) for w in warned] == BOUNDED_BY_DEFAULT[name], warned
        assert all("--input-spec '" in w and "1..4" in w for w in warned), warned


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
    _, path = exported
    twin = exported_onnx.scaled_weight_twin(path, tmp_path / "twin.onnx")
    [record] = exported_onnx.run_file(path, tmp_path, converted=twin, targets=("onnxruntime",))
    assert (record["id"].endswith("-converted"), record["status"]) == (True, "failed"), record["message"]
    assert "out of tolerance" in record["message"]
    # the dims bounded by default are in the record's warnings, not put before an error of values as its cause
    assert any(w["kind"] == "default_bounds" for w in record["warnings"])
    assert "no --input-spec bounds it" not in record["message"]


def test_the_keras_transformer_with_embedding_rows_5_to_45_scaled_fails(verdict_only, tmp_path):
    """Ids drawn from -4..4 read rows 0..4 and, wrapped by tf2onnx's negative-id pattern, 46..49: this twin
    passed. Ids drawn over the table's rows reach the scaled ones."""
    missing = _keras_missing()
    if missing:
        pytest.skip(missing)
    path = exported_onnx.keras_transformer(tmp_path)
    twin = exported_onnx.embedding_rows_twin(path, tmp_path / "rows-twin.onnx")
    [record] = exported_onnx.run_file(path, tmp_path, converted=twin, targets=("onnxruntime",))
    assert (record["id"].endswith("-converted"), record["status"]) == (True, "failed"), record["message"]
