"""The backend contract: every registered backend meets it, conversion paths
follow the graph of formats, and another package adds a runtime through the
`parity_backends` entry point group without touching the harness.

The third-party runtime here is real: ONNX's own reference evaluator
(`onnx.reference`), installed as a package with an entry point in a folder
on the path. Its planted twin scales every output by 1.001 and must fail.
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pytest

from harness import backends, paths
from harness.options import PRECISIONS
from harness.specs import FLOAT_DTYPES, INT_DTYPES
from tests.conftest import install_package

REQUIRED = {
    "source": ("NAME", "missing", "versions", "build", "bind", "configure_device", "to_device", "run",
               "float64_copy", "fingerprint"),
    "hop": ("NAME", "READS", "WRITES", "REVISION", "FILENAME", "OPTIONS", "versions", "convert"),
    "runtime": ("NAME", "FORMATS", "missing", "versions", "Session"),
}


@pytest.mark.parametrize("kind", backends.KINDS)
def test_every_registered_backend_meets_the_contract(kind):
    unavailable = {}
    for name in backends.names(kind):
        backend = backends.get(kind, name)
        absent = [attribute for attribute in REQUIRED[kind] if not hasattr(backend, attribute)]
        assert not absent, f"{kind} {name} lacks {absent}"
        versions = {}
        if kind == "hop":
            assert isinstance(backend.WRITES, str) and backend.READS
            written = paths.hop_precisions(name)
            assert written and set(written) <= set(PRECISIONS), f"hop {name}"
            # only a hop that cannot write fp32 (it lowers a model) may write the format it reads
            assert backend.WRITES not in backend.READS or paths.lowers_only(name), f"hop {name}"
            if written != ("fp32",):   # a hop that lowers is told the precision and the calibration
                assert {"precision", "calibration"} <= set(backend.OPTIONS), f"hop {name}"
            assert set(getattr(backend, "CALIBRATES", ())) <= set(written) - {"fp32"}, f"hop {name}"
            # the first argument is the source's model or the previous hop's file
            assert list(inspect.signature(backend.convert).parameters)[1:4] == ["spec", "example", "out_dir"]
        else:
            # the element types it takes, where it declares them, are dtypes the harness makes and compares
            assert set(backends.element_types(kind, name) or ()) <= set(FLOAT_DTYPES + INT_DTYPES), f"{kind} {name}"
            reason = backend.missing("cpu")
            assert reason is None or isinstance(reason, str)
            if reason:
                unavailable[name] = reason
        if not unavailable.get(name):
            versions = backend.versions()
            assert isinstance(versions, dict) and all(isinstance(v, str) for v in versions.values())
        if kind == "runtime":
            assert backend.FORMATS and all(isinstance(f, str) for f in backend.FORMATS)
            # every Session takes the precision (the engine opens every runtime alike), one of the known ones
            assert "precision" in inspect.signature(backend.Session).parameters, f"runtime {name}"
            assert set(backends.runtime_precisions(name)) <= set(PRECISIONS), f"runtime {name}"
            # what it computes a file of a reduced precision in, by (device, precision): a wider float type
            for (device, precision), computed in backends.runtime_computes(name).items():
                assert isinstance(device, str) and precision in PRECISIONS and computed in FLOAT_DTYPES, name
            for option in backends.option_fields(name):   # every flag says which values it takes, and is held to them
                where = f"runtime {name}, option {option.name}"
                assert ("choices" in option.metadata) != ("range" in option.metadata), where
                assert "range" not in option.metadata or type(option.default) is int, where
                assert backends.option_problem(name, option, option.default) is None, where
    print(f"{kind}s unavailable here: {unavailable or 'none'}")


def test_paths_follow_the_graph_of_formats():
    # every chain, the one that lowers the ONNX file (ONNX -> ONNX fp16/int8) included
    assert paths.paths("torch", "onnxruntime") == (("torch->onnx",), ("torch->onnx", "onnx->onnx-lowered"))
    assert paths.precision_paths("torch", "onnxruntime", "fp32") == ((("torch->onnx",), ""),)
    # Keras: the TFLite converter first, onnx2tf's ONNX -> TFLite second (--path all)
    assert paths.precision_paths("keras", "tflite", "fp32") == ((("tf->tflite",), ""),
                                                               (("tf->onnx", "onnx->tflite"), ""))
    # MXNet reaches LiteRT only through ONNX and onnx2tf
    assert paths.precision_paths("mxnet", "tflite", "fp32") == ((("mxnet->onnx", "onnx->tflite"), ""),)
    assert paths.choose(paths.paths("torch", "onnxruntime"), "shortest") == [("torch->onnx",)]
    assert paths.choose(paths.paths("torch", "onnxruntime"), "onnx") == [("torch->onnx",)]
    assert paths.choose(paths.paths("torch", "onnxruntime"), "tflite") == []


PACKAGE = "parity_reference_runtime"
RUNTIME = textwrap.dedent('''
    """ONNX's reference evaluator as a parity target, shipped by another package."""
    import numpy as np

    KIND = "runtime"
    NAME = "onnx_reference"
    FORMATS = ("onnx",)
    SCALE = {scale}   # 1.0: correct; anything else is a planted bug


    def missing(device):
        return None if device == "cpu" else "the reference evaluator runs on the CPU"


    def versions():
        import onnx
        return {{"onnx": onnx.__version__}}


    class Session:
        def __init__(self, path, device, options, precision):
            from onnx.reference import ReferenceEvaluator
            self.evaluator = ReferenceEvaluator(str(path))
            self.provenance = {{"runtime": NAME}}

        def bind(self, input_names, input_dtypes, output_names):
            self.inputs, self.outputs = list(input_names), list(output_names)
            return {{"inputs": self.inputs, "outputs": self.outputs}}

        def declared_inputs(self):
            return [[None] * len(i.type.tensor_type.shape.dim) for i in self.evaluator.proto_.graph.input]

        def run(self, inputs):
            results = self.evaluator.run(self.outputs, dict(zip(self.inputs, inputs)))
            return [np.asarray(r) * np.asarray(SCALE, dtype=np.asarray(r).dtype) for r in results]
''')


@pytest.fixture
def third_party(tmp_path, run_parity, parity_dir):
    site = tmp_path / "site"
    site.mkdir()

    def install(scale: float = 1.0, broken: bool = False):
        install_package(site, PACKAGE, RUNTIME.format(scale=scale), backends.ENTRY_POINT_GROUP,
                        f"onnx_reference = {PACKAGE}")
        if broken:
            install_package(site, "parity_broken_runtime", "raise ImportError('needs libfoo.so')\n",
                            backends.ENTRY_POINT_GROUP, "broken_runtime = parity_broken_runtime")
        return site

    return install


def _run_with(run_parity, site: Path, *args: str):
    import os

    pythonpath = os.pathsep.join(filter(None, [str(site), str(Path(__file__).resolve().parents[1])]))
    return run_parity(*args, env={"PYTHONPATH": pythonpath})


def test_a_runtime_from_another_package_runs_the_zoo_and_its_planted_twin_fails(third_party, run_parity):
    site = third_party()
    run = _run_with(run_parity, site, "--model=mlp", "--target=onnx_reference")
    record = run.single
    assert record["id"] == "mlp-torch-onnx_reference-cpu" and record["status"] == "passed", run.output
    assert record["versions"]["onnx"]

    (site / f"{PACKAGE}.py").write_text(RUNTIME.format(scale=1.001))
    run = _run_with(run_parity, site, "--model=mlp", "--target=onnx_reference")
    assert run.single["status"] == "failed", run.output


def test_a_backend_that_fails_to_import_is_an_error_naming_its_package(third_party, run_parity):
    site = third_party(broken=True)
    run = _run_with(run_parity, site, "--model=mlp", "--target=broken_runtime,onnx_reference")
    cases = run.cases
    broken = next(c for c in cases.values() if c["status"] == "error")
    assert "parity_broken_runtime" in broken["message"] and "needs libfoo.so" in broken["message"]
    assert cases["mlp-torch-onnx_reference-cpu"]["status"] == "passed"


# ---------------------------------------------------------------- paths to OpenVINO

def test_every_path_to_openvino_passes_and_the_export_runs_once(run_parity):
    run = run_parity("--model=mlp", "--target=openvino", "--path=all")
    cases = run.cases
    assert {k: c["status"] for k, c in cases.items()} == {
        "mlp-torch-openvino-cpu": "passed", "mlp-torch-openvino-cpu-via-openvino-ir": "passed",
        "mlp-torch-openvino-cpu-via-onnx-openvino-ir": "passed"}, run.output
    two_hops = cases["mlp-torch-openvino-cpu-via-onnx-openvino-ir"]["provenance"]["hops"]
    assert [h["converter"] for h in two_hops] == ["torch->onnx", "openvino.convert_model"]
    # the ONNX export the shortest path made (or an earlier run cached) is reused, not redone
    assert two_hops[0]["cache_hit"] or cases["mlp-torch-openvino-cpu"]["provenance"]["cache_hit"]


def test_a_path_that_no_case_can_take_is_an_error_listing_the_paths(run_parity):
    run = run_parity("--model=mlp", "--target=openvino", "--path=tflite")
    (record,) = run.cases.values()
    assert record["status"] == "error"
    assert "the paths there are: onnx; onnx,openvino-ir; openvino-ir" in record["message"]


def test_the_direct_torch_path_catches_a_weight_changed_by_1e_3(run_parity, parity_dir):
    import torch

    from harness.converters import torch_openvino
    from harness.inputs import example_recipe
    from harness.inputs import make_inputs
    from harness.registry import get_model
    from harness.sources import torch as torch_source

    spec = get_model("mlp")
    example = [make_inputs(spec, example_recipe(spec))[i.name] for i in spec.inputs]
    for name, scale in (("twin", 1.0), ("perturbed", 1.001)):
        model = torch_source.bind(spec.builders["torch"](), spec)
        with torch.no_grad():
            weight = next(p for p in model.parameters() if p.dim() == 2)
            weight[0, 0] *= scale
        torch_openvino.convert(model, spec, example, parity_dir / name, layouts=spec.source_layouts("torch"))
    twin = run_parity("--model=mlp", f"--converted={parity_dir / 'twin' / 'model.xml'}", "--target=openvino")
    assert twin.single["status"] == "passed", twin.output
    perturbed = run_parity("--model=mlp", f"--converted={parity_dir / 'perturbed' / 'model.xml'}", "--target=openvino")
    assert perturbed.single["status"] == "failed", perturbed.output


def test_a_runtime_s_own_options_become_flags_and_reach_its_session(run_parity):
    run = run_parity("--model=mlp", "--target=openvino", "--openvino-threads=1")
    assert run.single["status"] == "passed", run.output
    assert run.single["provenance"]["runtime"]["inference_num_threads"] == 1
    run = run_parity("--model=mlp", "--target=onnxruntime", "--openvino-threads=1")
    assert "--openvino-threads 1: no case of this run runs on openvino" in run.output


def test_a_runtime_option_read_back_from_a_file_is_held_to_what_it_declares():
    """A replay or a worker rebuilds the run's options from JSON, past the flag parser."""
    from harness.errors import CaseError
    from harness.options import RunOptions

    def stored(value):
        return RunOptions.from_json({"runtime_options": {"tensorrt": {"workspace_mb": value}}})

    for bad in (-1, "64"):
        with pytest.raises(CaseError) as info:
            backends.own_options("tensorrt", stored(bad))
        assert info.value.message == f"--tensorrt-workspace-mb {bad!r}: give a whole number >= 0 (default 0)"
    assert backends.own_options("tensorrt", stored(64)).workspace_mb == 64


def test_runtime_option_flags_are_made_from_each_runtime_s_options_dataclass():
    flags = {backends.option_flag(name, option) for name in backends.names("runtime")
             for option in backends.option_fields(name)}
    assert {"--ort-opt-level", "--openvino-threads"} <= flags
