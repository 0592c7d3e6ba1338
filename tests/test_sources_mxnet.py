"""The mxnet source adapter: the import shims, every loader with a passing case
(outputs equal the Gluon block's own), every way a file can go wrong with its
message, fingerprint, float64 twin, and the lazy import.

Tiny models only (Conv2D + BatchNorm + Dense on NCHW images), built here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.errors import CaseError
from harness.sources import mxnet as mxs

NUMPY_HAD_BOOL = "bool" in vars(np)
try:
    mxs.import_mxnet()  # the shims first: a plain `import mxnet` fails on numpy >= 1.24
except ImportError:
    pass
mx = pytest.importorskip("mxnet")

REPO = Path(__file__).resolve().parents[1]
IMAGE = np.random.default_rng(1).standard_normal((2, 2, 5, 7)).astype(np.float32)  # NCHW, H != W


def conv_net(channels: int = 4, prefix: str = "net_", seed: int = 0):
    """Conv2D + BatchNorm + Dense, initialized, hybridized and run once (shapes known)."""
    net = mx.gluon.nn.HybridSequential(prefix=prefix)
    with net.name_scope():
        net.add(mx.gluon.nn.Conv2D(channels, 3, padding=1), mx.gluon.nn.BatchNorm(), mx.gluon.nn.Dense(3))
    net.initialize(mx.init.Normal(0.5))
    net.hybridize()
    net(mx.nd.array(IMAGE))
    rng = np.random.default_rng(seed)
    for parameter in net.collect_params().values():
        values = rng.standard_normal(parameter.shape).astype(np.float32) * 0.5
        if parameter.name.endswith("running_var"):
            values = np.abs(values) + 0.5
        parameter.set_data(mx.nd.array(values))
    return net


def own_outputs(net) -> np.ndarray:
    return net(mx.nd.array(IMAGE)).asnumpy()


@pytest.fixture
def exported(tmp_path):
    net = conv_net()
    symbol, params = mxs.export_pair(net, tmp_path / "model", [IMAGE])
    return net, symbol, params


def load_error(path, architecture=None, **kwargs) -> str:
    with pytest.raises(CaseError) as caught:
        mxs.load_file(path, architecture, False, **kwargs)
    assert caught.value.stage == "load"
    return caught.value.message


# ---------------------------------------------------------------- shims, import

def test_shims_make_mxnet_and_onnx_mapping_importable():
    import mxnet  # noqa: F401

    assert set(mxs.SHIMS_APPLIED) == {"numpy_bool_alias", "onnx_mapping_module"}
    if not NUMPY_HAD_BOOL:
        assert mxs.SHIMS_APPLIED["numpy_bool_alias"] is True
        assert np.bool is bool
    onnx = pytest.importorskip("onnx")
    import onnx.mapping as mapping

    assert mapping.NP_TYPE_TO_TENSOR_TYPE[np.dtype("float32")] == onnx.TensorProto.FLOAT
    assert mapping.NP_TYPE_TO_TENSOR_TYPE[np.float32] == onnx.TensorProto.FLOAT
    assert mapping.NP_TYPE_TO_TENSOR_TYPE[np.dtype("int64")] == onnx.TensorProto.INT64
    assert mapping.TENSOR_TYPE_TO_NP_TYPE[onnx.TensorProto.FLOAT] == np.dtype("float32")
    assert mapping.TENSOR_TYPE_TO_NP_TYPE[onnx.TensorProto.BOOL] == np.dtype("bool")
    assert onnx.TensorProto.BFLOAT16 not in mapping.TENSOR_TYPE_TO_NP_TYPE  # numpy cannot hold it
    if mxs.SHIMS_APPLIED["onnx_mapping_module"]:
        assert sys.modules["onnx.mapping"] is mapping is onnx.mapping
    assert mxs.import_mxnet() is mx  # idempotent
    assert mxs.versions()["mxnet"] == mx.__version__


def test_importing_the_adapter_does_not_import_mxnet():
    code = "import harness.sources.mxnet, sys; assert 'mxnet' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_missing_says_why():
    assert mxs.missing("cpu") is None
    reason = mxs.missing("cuda")
    if mx.context.num_gpus() == 0:
        assert "no GPU visible to MXNet" in reason and "CPU-only" in reason and "mxnet-cu" in reason
    else:
        assert reason is None
    assert "does not know device 'tpu'" in mxs.missing("tpu")
    assert mxs.configure_device("cpu", strict_cuda=True) == {}


def test_build_checks_the_type():
    net = conv_net()
    assert mxs.build(lambda: net) is net
    with pytest.raises(CaseError, match="not a mxnet.gluon.HybridBlock"):
        mxs.build(lambda: object())


# ---------------------------------------------------------------- loaders that work

def test_pair_round_trips_from_either_file(exported):
    net, symbol, params = exported
    assert symbol.name == "model-symbol.json" and params.name == "model-0000.params"
    expected = own_outputs(net)
    for path in (symbol, params):
        model = mxs.load_file(path, None, False)
        assert isinstance(model, mx.gluon.SymbolBlock)
        [got] = mxs.run(mxs.to_device(model, "cpu"), [IMAGE], "cpu")
        np.testing.assert_array_equal(got, expected)


def test_pair_takes_the_highest_epoch(exported, tmp_path):
    net, symbol, params = exported
    other = conv_net(seed=5)
    other.export(str(tmp_path / "model"), epoch=12)
    [got] = mxs.run(mxs.load_file(symbol, None, False), [IMAGE], "cpu")
    np.testing.assert_array_equal(got, own_outputs(other))


def test_given_input_names_are_checked(exported):
    _, symbol, _ = exported
    assert isinstance(mxs.load_file(symbol, None, False, input_names=["data"]), mx.gluon.SymbolBlock)
    message = load_error(symbol, input_names=["image"])
    assert "no input named 'image'" in message and "['data']" in message


def test_architecture_with_params(tmp_path):
    net = conv_net(seed=3)
    net.save_parameters(str(tmp_path / "weights.params"))
    [got] = mxs.run(mxs.load_file(tmp_path / "weights.params", lambda: conv_net(seed=9), False), [IMAGE], "cpu")
    np.testing.assert_array_equal(got, own_outputs(net))
    message = load_error(tmp_path / "weights.params", lambda: conv_net(channels=8))
    assert "do not fit the architecture" in message and "net_conv0_weight" in message and "(4, 2, 3, 3)" in message


# ---------------------------------------------------------------- loaders that refuse, with the reason

def test_missing_params_half(exported):
    _, symbol, params = exported
    params.unlink()
    message = load_error(symbol)
    assert "no params file" in message and "model-0000.params" in message


def test_missing_symbol_half(exported):
    _, symbol, params = exported
    symbol.unlink()
    message = load_error(params)
    assert "symbol file is missing" in message and "model-symbol.json" in message


def test_params_of_another_architecture(exported, tmp_path):
    _, symbol, params = exported
    conv_net(channels=8).export(str(tmp_path / "wide"), epoch=0)  # same names, other shapes
    (tmp_path / "wide-0000.params").replace(params)
    message = load_error(symbol)
    assert "does not fit symbol" in message and "'net_conv0_weight'" in message and "(8, 2, 3, 3)" in message


def test_params_with_a_missing_parameter(exported):
    _, symbol, params = exported
    arrays = mx.nd.load(str(params))
    del arrays["arg:net_dense0_bias"]
    mx.nd.save(str(params), arrays)
    message = load_error(symbol)
    assert "lacks parameter 'net_dense0_bias'" in message
    message = load_error(symbol, input_names=["data"])
    assert "lacks parameter 'net_dense0_bias'" in message


def test_params_with_an_extra_parameter(exported):
    _, symbol, params = exported
    arrays = mx.nd.load(str(params))
    arrays["arg:net_head_weight"] = mx.nd.zeros((2, 2))
    mx.nd.save(str(params), arrays)
    assert "'net_head_weight', which the symbol has no place for" in load_error(symbol)


def test_empty_and_broken_symbol(exported):
    _, symbol, _ = exported
    text = symbol.read_text()
    symbol.write_text("")
    assert "symbol file" in load_error(symbol) and "is empty" in load_error(symbol)
    symbol.write_text(text[: len(text) // 2])
    assert "is not valid JSON" in load_error(symbol)
    symbol.write_text('{"a": 1}')
    assert "not an MXNet symbol" in load_error(symbol)


def test_truncated_and_empty_params(exported):
    _, symbol, params = exported
    data = params.read_bytes()
    params.write_bytes(data[: len(data) // 2])
    message = load_error(symbol)
    assert "truncated or corrupt" in message and "model-0000.params" in message
    params.write_bytes(b"")
    assert "is empty (0 bytes)" in load_error(symbol)


def test_not_an_mxnet_file(tmp_path):
    assert "not an MXNet model file" in load_error(tmp_path / "model.onnx")


# ---------------------------------------------------------------- fingerprint, float64, run

def test_fingerprint_stable_across_loads_and_sensitive_to_weights(exported):
    net, symbol, params = exported
    first = mxs.fingerprint(mxs.load_file(symbol, None, False))
    assert mxs.fingerprint(mxs.load_file(params, None, False)) == first
    assert mxs.fingerprint(net) == mxs.fingerprint(net)
    changed = mxs.load_file(symbol, None, False)
    weight = changed.collect_params()["net_dense0_bias"]
    weight.set_data(weight.data() + 1e-3)
    assert mxs.fingerprint(changed) != first
    # two builds of one model (different Gluon name counters) hash the same
    first_build, second_build = conv_net(prefix=None), conv_net(prefix=None)
    assert first_build.prefix != second_build.prefix
    assert mxs.fingerprint(first_build) == mxs.fingerprint(second_build)


def test_float64_copy(exported):
    net, symbol, _ = exported
    for model in (net, mxs.load_file(symbol, None, False)):
        twin = mxs.float64_copy(model)
        assert twin is not None
        [exact] = mxs.run(twin, [IMAGE], "cpu", float64=True)
        [single] = mxs.run(model, [IMAGE], "cpu")
        assert exact.dtype == np.float64 and single.dtype == np.float32
        np.testing.assert_allclose(exact, single, rtol=1e-4, atol=1e-4)
        assert mxs.run(model, [IMAGE], "cpu")[0].dtype == np.float32  # the original is not cast


def test_run_flattens_outputs_and_keeps_integer_inputs():
    class TwoHeads(mx.gluon.HybridBlock):
        def hybrid_forward(self, F, x, ids):
            return x * 2, (F.cast(ids, "float32") + 1,)

    block = TwoHeads()
    block.hybridize()
    ids = np.array([[1, 2, 3]], dtype=np.int32)
    doubled, shifted = mxs.run(block, [IMAGE, ids], "cpu")
    np.testing.assert_array_equal(doubled, IMAGE * 2)
    np.testing.assert_array_equal(shifted, ids + 1)


def test_run_turns_mxnet_errors_into_case_errors(exported):
    _, symbol, _ = exported
    model = mxs.load_file(symbol, None, False)
    with pytest.raises(CaseError, match="MXNet failed to run the model") as caught:
        mxs.run(model, [np.zeros((2, 3, 5, 7), np.float32)], "cpu")  # 3 channels, the conv takes 2
    assert caught.value.stage == "run"


def test_onnx_export_runs_with_the_mapping_shim(exported, tmp_path):
    """Canary for shim 2: mx.onnx.export_model imports onnx.mapping (removed in onnx 1.19)."""
    onnx = pytest.importorskip("onnx")
    _, symbol, params = exported
    path = mx.onnx.export_model(str(symbol), str(params), [IMAGE.shape], [np.float32], str(tmp_path / "m.onnx"))
    onnx.checker.check_model(onnx.load(path))
