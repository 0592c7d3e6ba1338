"""The backend contract: every registered backend meets it, conversion paths
follow the graph of formats, and another package adds a runtime through the
`parity_backends` entry point group without touching the harness.

The third-party runtime here is real: ONNX's own reference evaluator
(`onnx.reference`), installed as a package with an entry point in a folder
on the path. Its planted twin scales every output by 1.001 and must fail.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from harness import backends, matrix, paths, results
from harness.localize.repro import run_repro, script_text, write_repro
from harness.runtimes.openvino import OPENVINO_BF16
from harness.tolerances import HALF, default_tolerance
from harness.options import DEVICES, PRECISIONS, RunOptions
from harness.specs import FLOAT_DTYPES, INT_DTYPES, InputSpec, Tolerance
from tests.conftest import install_package
from tests.test_localize_repro import X, softmax, softmax_model

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
        # the pip distributions its records carry the versions of (results.environment)
        distributions = getattr(backend, "DISTRIBUTIONS", ())
        assert isinstance(distributions, tuple) and all(isinstance(d, str) and d for d in distributions), name
        if not unavailable.get(name):
            versions = backend.versions()
            assert isinstance(versions, dict) and all(isinstance(v, str) for v in versions.values())
        if kind == "source":   # the model files it reads: by name, by content, any file; each through load_file
            suffixes = getattr(backend, "FILE_SUFFIXES", ())
            assert isinstance(suffixes, tuple) and all(isinstance(s, str) and s for s in suffixes), f"source {name}"
            assert callable(getattr(backend, "claims_file", callable)), f"source {name}"
            if suffixes or hasattr(backend, "claims_file") or hasattr(backend, "READS_ANY_FILE"):
                assert list(inspect.signature(backend.load_file).parameters)[:3] == [
                    "path", "architecture", "trust_model_code"], f"source {name}"
        if kind == "runtime":
            assert backend.FORMATS and all(isinstance(f, str) for f in backend.FORMATS)
            # every Session takes the precision (the engine opens every runtime alike), one of the known ones
            assert "precision" in inspect.signature(backend.Session).parameters, f"runtime {name}"
            assert set(backends.runtime_precisions(name)) <= set(PRECISIONS), f"runtime {name}"
            # what it computes a file of a reduced precision in, by (device, precision): a wider float type
            for (device, precision), computed in backends.runtime_computes(name).items():
                assert isinstance(device, str) and precision in PRECISIONS and computed in FLOAT_DTYPES, name
            # the files it runs, by suffix: a format it runs
            for suffix, artifact_format in getattr(backend, "SUFFIXES", {}).items():
                assert suffix.startswith(".") and suffix == suffix.lower(), f"runtime {name}: {suffix!r}"
                assert artifact_format in backend.FORMATS, f"runtime {name}: {suffix!r}"
                assert backends.artifact_suffixes()[suffix] == artifact_format, f"runtime {name}: {suffix!r}"
            # its own defaults at the reduced precisions it computes in
            for precision, tolerance in backends.runtime_tolerances(name).items():
                assert precision in set(backends.runtime_precisions(name)) - {"fp32"}, f"runtime {name}"
                assert isinstance(tolerance, Tolerance), f"runtime {name}"
            # how a reproduction script runs a file on it: a script that compiles, on a device the harness knows
            for device, repro in backends.runtime_repro(name).items():
                assert device in DEVICES and isinstance(repro, backends.Repro) and repro.package, f"runtime {name}"
                compile(script_text(name, device, 0.1, 0.0, "case"), f"{name}-{device}-repro.py", "exec")
            assert getattr(backend, "WALK_REFERENCE", "cpu") in DEVICES, f"runtime {name}"
            # why it runs only where --target names it, where it does: a reason in words
            assert backends.opt_in_reason(name) is None or backends.opt_in_reason(name).strip(), f"runtime {name}"
        if kind in ("hop", "runtime"):
            for option in backends.option_fields(name, kind):   # every flag says which values it takes, and is held to them
                where = f"{kind} {name}, option {option.name}"
                assert sum(key in option.metadata for key in ("choices", "range", "check")) == 1, where
                assert "range" not in option.metadata or backends.option_type(option) is int, where
                assert "check" not in option.metadata or "flag_help" in option.metadata, where   # it says its values
                assert backends.option_problem(name, option, option.default) is None, where
                if kind == "hop":   # convert takes each field, by its name
                    assert option.name in inspect.signature(backend.convert).parameters, where
                    assert option.name not in backend.OPTIONS, where   # a field is given once, from its flag
    print(f"{kind}s unavailable here: {unavailable or 'none'}")


def test_backends_that_share_a_flag_declare_it_alike():
    """--opset is every ONNX-writing hop's: one flag, one value, so one declaration (default, type, values)."""
    declared = {}
    for kind in ("hop", "runtime"):
        for name, option in backends.declared_options(kind):
            flag = backends.option_flag(name, option)
            declared.setdefault(flag, []).append((name, option.default, dict(option.metadata)))
    assert len(declared["--opset"]) == 3
    for flag, declarations in declared.items():
        assert all(d[1:] == declarations[0][1:] for d in declarations), flag


def test_each_artifact_suffix_and_the_walk_reference_is_declared_once():
    declared = [suffix for name in backends.names("runtime")
                for suffix in getattr(backends.runtime(name), "SUFFIXES", {})]
    assert len(declared) == len(set(declared)) and set(declared) == set(backends.artifact_suffixes())
    assert [name for name in backends.names("runtime")
            if hasattr(backends.runtime(name), "WALK_REFERENCE")] == [backends.walk_reference()[0]]


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


# What the same runtime declares to do all that built-in ones do: its own files, defaults, script and versions.
DECLARED = textwrap.dedent('''
    from harness.backends import Repro
    from harness.specs import Tolerance

    PRECISIONS = ("fp32", "fp16")
    SUFFIXES = {".onnxref": "onnx"}
    DISTRIBUTIONS = ("parity_reference_runtime",)
    TOLERANCES = {"fp16": Tolerance(atol_by_max=3e-3)}
    REPRO = {"cpu": Repro("onnx", """\\
    def run(model, inputs, names):
        reference = need("onnx.reference", PACKAGE)
        return dict(zip(names, reference.ReferenceEvaluator(model).run(names, inputs)))
    """)}
''')


# A source of another package that reads its own files: all matrix.py needs to send it a user's model file.
NPZ_SOURCE = textwrap.dedent('''
    KIND = "source"
    FILE_SUFFIXES = (".npzmodel",)


    def load_file(path, architecture, trust_model_code, *, input_names=None):
        return ("loaded", str(path), tuple(input_names))
''')


@pytest.fixture
def install_in_process(tmp_path, monkeypatch):
    """Installs a package with a parity_backends entry point in this process (the registry read afresh)."""
    site, installed = tmp_path / "site", []
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    cached = (backends._entry_points, backends.artifact_suffixes, backends.distributions, backends.walk_reference,
              paths._edges, paths.paths)   # the graph of formats: a hop installed is an edge of it

    def install(package: str, module: str, name: str) -> str:
        install_package(site, package, module, backends.ENTRY_POINT_GROUP, f"{name} = {package}")
        installed.append(package)
        for function in cached:
            function.cache_clear()
        return name

    yield install
    for package in installed:
        sys.modules.pop(package, None)
    for function in cached:
        function.cache_clear()


@pytest.fixture
def declared_runtime(install_in_process):
    """The third-party runtime, with DECLARED."""
    return install_in_process(PACKAGE, RUNTIME.format(scale=1.0) + DECLARED, "onnx_reference")


def test_a_source_from_another_package_reads_the_model_files_it_declares(install_in_process, tmp_path):
    source = install_in_process("parity_npz_source", NPZ_SOURCE, "npzmodel")
    path = tmp_path / "weights.npzmodel"
    path.write_bytes(b"")
    assert matrix._file_source(path) == source
    loader = matrix._loader(source, path, [InputSpec("x", (1, 3))], ["y"], None, RunOptions())
    assert loader() == ("loaded", str(path), ("x",))


def test_built_in_sources_keep_reading_their_files(tmp_path):
    # the benign twin of the test above: a file's source by its name, its content, or none at all
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "saved" / "beside.onnx").write_bytes(b"")
    (tmp_path / "model.ckpt.index").write_bytes(b"")
    for name in ("m.pt", "m.onnx", "m-symbol.json", "m.params", "m.pb", "m.h5", "m.ckpt", "pickled"):
        (tmp_path / name).write_bytes(b"")
    names = ("saved", "m.pt", "m.onnx", "m-symbol.json", "m.params", "m.pb", "m.h5", "m.ckpt", "model.ckpt", "pickled")
    found = {name: matrix._file_source(tmp_path / name) for name in names}
    assert found == {"saved": "tensorflow", "m.pt": "torch", "m.onnx": "onnx", "m-symbol.json": "mxnet",
                     "m.params": "mxnet", "m.pb": "tensorflow", "m.h5": "keras", "m.ckpt": "keras",
                     "model.ckpt": "keras", "pickled": "torch"}


def test_a_runtime_from_another_package_declares_its_files_tolerances_repro_and_versions(declared_runtime, tmp_path):
    assert backends.artifact_suffixes()[".onnxref"] == "onnx"
    assert results.environment()["versions"][PACKAGE] == "1.0"
    assert default_tolerance("float32", "cpu", target=declared_runtime, precision="fp16") == Tolerance(atol_by_max=3e-3)
    folder = tmp_path / "case.repro"
    write_repro(folder, softmax_model(tmp_path / "sub.onnx", axis=1), {"x": X}, {"y": softmax(X, 2)},
                runtime=declared_runtime, device="cpu", allowed=1e-4, versions={}, case_id="softmax", summary="")
    code, output = run_repro(folder)
    assert code == 1 and "REPRODUCED: 'y'" in output, output


def _recorded_version(runtime: str, distribution: str) -> None:
    if backends.runtime_missing(runtime, "cpu"):
        pytest.skip(backends.runtime_missing(runtime, "cpu"))
    assert results.environment()["versions"][distribution] == metadata.version(distribution)


def test_built_in_runtimes_keep_their_tolerances_and_versions_in_records():
    # the benign twin of the test above: the built-ins' own declarations
    assert default_tolerance("float32", "cpu", target="openvino", precision="bf16") == OPENVINO_BF16
    assert default_tolerance("float32", "cpu", target="onnxruntime", precision="fp16") == HALF
    _recorded_version("onnxruntime", "onnxruntime")


def test_mnn_s_version_is_in_every_record():
    _recorded_version("mnn", "MNN")


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


def test_a_hop_option_read_back_from_a_file_is_held_to_what_it_declares():
    from harness.errors import CaseError
    from harness.options import RunOptions

    def stored(value):
        return RunOptions.from_json({"hop_options": {"torch->onnx": {"exporter": value}}})

    with pytest.raises(CaseError) as info:
        backends.hop_option_values("torch->onnx", stored("onnx"))
    assert info.value.stage == "convert"
    assert info.value.message == "--exporter 'onnx': give one of dynamo, torchscript (default dynamo)"
    assert backends.hop_option_values("torch->onnx", stored("torchscript")) == {"exporter": "torchscript", "opset": None}


# A hop of another package with a setting of its own: torch -> ONNX through the TorchScript exporter,
# at the opset its Options field says (a real export; the harness's torch->onnx writes the file).
SCRIPTED_HOP = textwrap.dedent('''
    import dataclasses

    from harness.converters import torch_onnx

    KIND = "hop"
    NAME = "torch->onnx-scripted"
    READS = ("torch",)
    WRITES = "onnx"
    REVISION = 1
    FILENAME = "model.onnx"
    OPTIONS = ()


    @dataclasses.dataclass
    class Options:
        opset: int = dataclasses.field(default=17, metadata={"range": (14, 18), "help": "the opset it exports at"})


    def versions():
        return torch_onnx.versions()


    def convert(model, spec, example, out_dir, *, layouts, opset=17):
        return torch_onnx.convert(model, spec, example, out_dir, layouts=layouts, exporter="torchscript", opset=opset)
''')


def test_a_hop_from_another_package_declares_options_whose_flag_reaches_its_convert(install_in_process, tmp_path):
    from harness.cache import ArtifactCache
    from harness.plugin import option_definitions
    from harness.runner import run_case
    from tests.test_options import _command_line

    hop = install_in_process("parity_scripted_hop", SCRIPTED_HOP, "torch->onnx-scripted")
    assert any(flags == ("--torch-onnx-scripted-opset",) and keywords["help"] ==
               "the opset it exports at (torch->onnx-scripted: a whole number from 14 to 18; default 17)"
               for flags, keywords in option_definitions())   # on `pytest --help` and the docs' options page
    with pytest.raises(pytest.UsageError, match=r"^--torch-onnx-scripted-opset 13: give a whole number from 14 to 18 "
                                                r"\(default 17\)$"):
        _command_line("--torch-onnx-scripted-opset=13")
    given = _command_line("--torch-onnx-scripted-opset=15", "--model=mlp", "--source=torch", "--device=cpu",
                          "--target=onnxruntime", "--path=all")
    assert given.hop_options == {hop: {"opset": 15}}
    options = dataclasses.replace(given, examples=2, cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports",
                                  localize="off")
    (case,) = [c for c in matrix.build_cases(options) if c.path == (hop,)]
    record = run_case(case, options, ArtifactCache(options.cache_dir)).to_json()
    assert record["status"] == "passed", record["message"]
    assert record["provenance"]["opset_requested"] == record["provenance"]["opset"] == 15
    # the benign twin: the built-in hops keep their own flags, and a run without the hop's flag its default
    assert backends.hop_option_values(hop, RunOptions()) == {"opset": 17}


def test_runtime_option_flags_are_made_from_each_runtime_s_options_dataclass():
    flags = {backends.option_flag(name, option) for name in backends.names("runtime")
             for option in backends.option_fields(name)}
    assert {"--ort-opt-level", "--openvino-threads"} <= flags
