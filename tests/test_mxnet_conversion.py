"""MXNet (Gluon) zoo models and the mxnet -> ONNX converter: deterministic
builders, parity with MXNet in ONNX Runtime at shapes other than the export
example's (the symbolic dims stay dynamic), the edits the converter makes to
the exported file (all in the provenance), an op mx2onnx cannot translate, and
canaries for the exporter quirks that the converter works around."""

from __future__ import annotations

import importlib.util
import inspect

import numpy as np
import pytest

# Not pytest.importorskip("mxnet"): mxnet must be imported through
# harness.sources.mxnet.import_mxnet, which shims np.bool and onnx.mapping first.
if importlib.util.find_spec("mxnet") is None:
    pytest.skip("mxnet is not installed", allow_module_level=True)
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from harness.converters import mxnet_onnx  # noqa: E402
from harness.errors import CaseError  # noqa: E402
from harness.registry import zoo_models  # noqa: E402
from harness.sources import mxnet as mxnet_source  # noqa: E402
from harness.specs import InputSpec, ModelSpec  # noqa: E402

if mxnet_source.missing("cpu"):
    pytest.skip(mxnet_source.missing("cpu"), allow_module_level=True)
mx = mxnet_source.import_mxnet()

MODELS = sorted(name for name, spec in zoo_models().items() if "mxnet" in spec.builders)
MAX_ERRORS: dict[str, tuple[float, float]] = {}  # "model@shape" -> (max |got - ref|, max |ref|)


def _dims(spec: ModelSpec, which: str) -> dict[str, int]:
    """min / max of every symbolic dim, or the export example's values: pairwise
    distinct, strictly inside the bounds, so the parity shapes differ from it."""
    bounds = spec.dim_bounds
    if which == "min":
        return {d: low for d, (low, _) in bounds.items()}
    if which == "max":
        return {d: high for d, (_, high) in bounds.items()}
    values = {d: min(high - 1, low + 1 + i) for i, (d, (low, high)) in enumerate(bounds.items())}
    assert len(set(values.values())) == len(values), values
    return values


def _inputs(spec: ModelSpec, dims: dict[str, int], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(*i.domain, size=i.example_shape(dims)).astype(i.dtype) for i in spec.inputs]


def _params(block) -> dict[str, np.ndarray]:
    return {name: p.data().asnumpy() for name, p in block.collect_params().items()}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """model name -> (spec, block, ONNX session, provenance, file), each converted once."""
    done = {}

    def get(name: str):
        if name not in done:
            spec = zoo_models()[name]
            block = mxnet_source.build(spec.builders["mxnet"])
            out = tmp_path_factory.mktemp(f"mx-{name}")
            provenance = mxnet_onnx.convert(block, spec, _inputs(spec, _dims(spec, "example"), 0), out,
                                            layouts=spec.source_layouts("mxnet"))
            path = out / mxnet_onnx.FILENAME
            done[name] = spec, block, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), \
                provenance, path
        return done[name]

    return get


# ---------------------------------------------------------------- the zoo's builders


def test_every_mxnet_model_is_registered():
    assert set(MODELS) >= {"simple", "mlp", "cnn", "depthwise", "lstm"}


@pytest.mark.parametrize("name", MODELS)
def test_builder_is_deterministic_and_runs_within_bounds(name):
    spec = zoo_models()[name]
    state = np.random.get_state()
    first = mxnet_source.build(spec.builders["mxnet"])
    second = mxnet_source.build(spec.builders["mxnet"])
    assert np.random.get_state()[1].tolist() == state[1].tolist(), "building touched numpy's global RNG"
    a, b = _params(first), _params(second)
    assert list(a) == list(b), "parameter names depend on what was built before"
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # Nothing left at its initializer's value: every parameter drawn from the seed.
    for key, value in a.items():
        assert np.unique(value).size > min(1, value.size - 1), f"{key} looks undrawn"
    for which in ("min", "max"):
        x = _inputs(spec, _dims(spec, which), 1)
        out1 = mxnet_source.run(first, x, "cpu")
        out2 = mxnet_source.run(second, x, "cpu")
        assert len(out1) == len(spec.outputs)
        for o1, o2 in zip(out1, out2):
            assert np.isfinite(o1).all()
            np.testing.assert_array_equal(o1, o2)


def test_shapes_of_the_outputs():
    shapes = {}
    for name, dims in (("cnn", {"N": 3, "H": 17, "W": 21}), ("depthwise", {"N": 2, "H": 17, "W": 21}),
                       ("lstm", {"N": 3, "T": 5}), ("mlp", {"N": 3}), ("simple", {"N": 3})):
        spec = zoo_models()[name]
        block = mxnet_source.build(spec.builders["mxnet"])
        shapes[name] = mxnet_source.run(block, _inputs(spec, dims, 2), "cpu")[0].shape
    assert shapes == {"cnn": (3, 16, 8, 10), "depthwise": (2, 10), "lstm": (3, 5, 20), "mlp": (3, 10),
                      "simple": (3, 1)}


# ---------------------------------------------------------------- conversion


@pytest.mark.parametrize("name", MODELS)
def test_onnx_matches_mxnet_at_other_shapes(name, converted):
    spec, block, session, provenance, _ = converted(name)
    example = _dims(spec, "example")
    for seed, which in enumerate(("min", "max"), start=3):
        dims = _dims(spec, which)
        assert all(dims[d] != example[d] for d in dims), "the parity shape must differ from the export example"
        x = _inputs(spec, dims, seed)
        refs = mxnet_source.run(block, x, "cpu")
        gots = session.run([o.name for o in spec.outputs], {i.name: a for i, a in zip(spec.inputs, x)})
        for out, ref, got in zip(spec.outputs, refs, gots):
            assert got.shape == ref.shape, (out.name, got.shape, ref.shape)
            error, scale = float(np.abs(got - ref).max()), float(np.abs(ref).max())
            MAX_ERRORS[f"{name}@{x[0].shape}"] = (error, scale)
            assert error <= 1e-5 * scale + 1e-6, f"{name} {out.name} at {x[0].shape}: {error} (max|ref| {scale})"


@pytest.mark.parametrize("name", MODELS)
def test_provenance_lists_every_edit(name, converted):
    spec, block, session, provenance, path = converted(name)
    written = onnx.load(str(path))
    onnx.checker.check_model(written)
    assert provenance["converter"] == "mxnet->onnx"
    assert provenance["opset_requested"] == mxnet_onnx.DEFAULT_OPSET == provenance["opset"]
    assert [o.version for o in written.opset_import if o.domain in ("", "ai.onnx")] == [mxnet_onnx.DEFAULT_OPSET]
    assert provenance["ir_version"] == written.ir_version == onnx.helper.find_min_ir_version_for(
        list(written.opset_import))
    initializers = {t.name for t in written.graph.initializer}
    assert initializers and not initializers & {v.name for v in written.graph.input}
    edits = provenance["edits"]
    # mx2onnx lists every mxnet parameter as a graph input (not the constants its translations add).
    assert f"removed {len(list(block.collect_params().keys()))} initializers from graph inputs" in edits
    assert any(e.startswith("renamed inputs {'data': ") for e in edits), edits
    assert any(e.startswith("renamed outputs ") for e in edits), edits
    if "opset_version" not in inspect.signature(mx.onnx.export_model).parameters:
        assert any(e.startswith(f"stamped opset {mxnet_onnx.DEFAULT_OPSET}") for e in edits), edits
    assert [i.name for i in session.get_inputs()] == [i.name for i in spec.inputs]
    assert [o.name for o in session.get_outputs()] == [o.name for o in spec.outputs]
    assert (provenance["input_layouts"], provenance["output_layouts"]) == spec.source_layouts("mxnet")
    assert provenance["versions"]["mxnet"] == mx.__version__
    assert "onnx_mapping_module" in provenance["shims"]
    # Symbolic dims are free in the declared input shapes.
    for value, inp in zip(written.graph.input, spec.inputs):
        dims = value.type.tensor_type.shape.dim
        assert [None if isinstance(d, str) else d for d in inp.shape] == \
            [d.dim_value if d.HasField("dim_value") else None for d in dims]


def test_requested_opset_is_the_one_translated_and_stamped(tmp_path):
    spec = zoo_models()["cnn"]
    block = mxnet_source.build(spec.builders["mxnet"])
    provenance = mxnet_onnx.convert(block, spec, _inputs(spec, _dims(spec, "example"), 0), tmp_path,
                                    layouts=spec.source_layouts("mxnet"), opset=12)
    assert provenance["opset_requested"] == provenance["opset"] == 12
    session = ort.InferenceSession(str(tmp_path / mxnet_onnx.FILENAME), providers=["CPUExecutionProvider"])
    x = _inputs(spec, _dims(spec, "max"), 4)
    ref = mxnet_source.run(block, x, "cpu")[0]
    got = session.run(None, {"image": x[0]})[0]
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max() + 1e-6


def test_canary_opset_12_fails_for_lstm(tmp_path):
    """mx2onnx checks every graph against onnx's newest opset
    (onnx.checker.check_graph, no opset given), so an opset-12 translation
    that opset 13 changed (the RNN translation's Squeeze with an `axes`
    attribute) fails: an LSTM exports at opset 13 only. A CaseError, not a
    crash; when this fails, opset 12 works for it."""
    spec = zoo_models()["lstm"]
    block = mxnet_source.build(spec.builders["mxnet"])
    with pytest.raises(CaseError, match="Squeeze"):
        mxnet_onnx.convert(block, spec, _inputs(spec, _dims(spec, "example"), 0), tmp_path,
                           layouts=spec.source_layouts("mxnet"), opset=12)


class _Erf(mx.gluon.HybridBlock):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.dense = mx.gluon.nn.Dense(4, in_units=3)

    def hybrid_forward(self, F, x):
        return F.erf(self.dense(x))


def test_an_op_without_translation_is_a_case_error(tmp_path):
    block = _Erf(prefix="erf_")
    block.initialize()
    block.hybridize()
    spec = ModelSpec("erf", inputs=[InputSpec("x", ("N", 3), dims={"N": (1, 4)}, layout="NC")], outputs=["y"])
    with pytest.raises(CaseError) as caught:
        mxnet_onnx.convert(block, spec, [np.ones((2, 3), np.float32)], tmp_path, layouts=spec.source_layouts("mxnet"))
    assert caught.value.stage == "convert"
    assert "['erf']" in caught.value.message and "get_operator_support" in caught.value.message


def test_a_layout_mismatch_of_the_example_is_a_case_error(tmp_path):
    spec = zoo_models()["cnn"]
    block = mxnet_source.build(spec.builders["mxnet"])
    with pytest.raises(CaseError, match="laid out as mxnet holds it"):
        mxnet_onnx.convert(block, spec, [np.zeros((2, 18, 23, 3), np.float32)], tmp_path,
                           layouts=spec.source_layouts("mxnet"))


# ---------------------------------------------------------------- canaries


def test_canary_export_model_takes_no_opset_and_lists_initializers_as_inputs(tmp_path):
    """When these fail, mx.onnx.export_model got better: the converter's
    workarounds (its own opset path, dropping initializers from the inputs)
    may go."""
    spec = zoo_models()["simple"]
    block = mxnet_source.build(spec.builders["mxnet"])
    symbol_file, params_file = mxnet_source.export_pair(block, tmp_path / "simple", [np.ones((2, 3), np.float32)])
    assert "opset_version" not in inspect.signature(mx.onnx.export_model).parameters
    path = mx.onnx.export_model(str(symbol_file), str(params_file), in_shapes=[(2, 3)], in_types=[np.float32],
                                onnx_file_path=str(tmp_path / "raw.onnx"), dynamic=True,
                                dynamic_input_shapes=[(None, 3)])
    raw = onnx.load(path)
    assert [o.version for o in raw.opset_import] == [onnx.defs.onnx_opset_version()]
    assert raw.ir_version == onnx.IR_VERSION
    initializers = {t.name for t in raw.graph.initializer}
    assert initializers and initializers <= {v.name for v in raw.graph.input}
    assert [v.name for v in raw.graph.input][0] == "data"
