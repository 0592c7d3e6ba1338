"""MXNet end to end through the plugin: the zoo's Gluon models, users' symbol +
params pairs, and the bugs the harness must catch beside the conversions that pass."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from harness.sources import mxnet as mxnet_source

try:
    mx = mxnet_source.import_mxnet()  # with its shims: a plain importorskip("mxnet") fails on numpy >= 1.24
except ImportError as error:
    pytest.skip(f"mxnet is not installed: {error}", allow_module_level=True)

from harness.converters import mxnet_onnx  # noqa: E402
from harness.inputs import example_recipe  # noqa: E402
from harness.inputs import make_inputs  # noqa: E402
from harness.registry import get_model  # noqa: E402
from model_zoo import mxnet_models  # noqa: E402
from tests.planted import perturb_weight  # noqa: E402

MXNET = ("--source=mxnet",)



def test_zoo_models_pass_and_record_what_the_harness_changed(run_parity):
    run = run_parity("--model=cnn,lstm", *MXNET)
    run.result.assert_outcomes(passed=2)
    provenance = run.cases["cnn-mxnet-onnxruntime-cpu"]["provenance"]
    assert provenance["opset"] == 13
    edits = " ".join(provenance["edits"])
    assert "initializers from graph inputs" in edits and "renamed inputs" in edits
    assert run.cases["cnn-mxnet-onnxruntime-cpu"]["versions"]["mxnet"] == "1.9.1"


def _example(spec):
    return [make_inputs(spec, example_recipe(spec))[i.name] for i in spec.inputs]


def _rerandomized(net, seed):
    """The same architecture with other weights: a params file "from another model"."""
    rng = np.random.default_rng(seed)
    for param in net.collect_params().values():
        param.set_data(mx.nd.array(rng.standard_normal(param.shape).astype(np.float32) * 0.3))
    return net


@pytest.fixture(scope="module")
def mxnet_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mxnet-files")
    spec = get_model("cnn")
    cnn = mxnet_models.build_cnn()
    symbol, params = mxnet_source.export_pair(cnn, tmp / "cnn", _example(spec))
    other = _rerandomized(mxnet_models.build_cnn(), 7)
    (tmp / "other").mkdir()
    _, other_params = mxnet_source.export_pair(other, tmp / "other" / "cnn", _example(spec))
    layouts = spec.source_layouts("mxnet")
    mxnet_onnx.convert(cnn, spec, _example(spec), tmp / "good", layouts=layouts)
    mxnet_onnx.convert(cnn, spec, _example(spec), tmp / "perturbed", layouts=layouts)
    perturb_weight(tmp / "perturbed" / mxnet_onnx.FILENAME)
    mxnet_onnx.convert(other, spec, _example(spec), tmp / "other-params", layouts=layouts)
    mlp_symbol, mlp_params = mxnet_source.export_pair(mxnet_models.build_mlp(), tmp / "mlp", _example(get_model("mlp")))
    (tmp / "lonely").mkdir()
    (tmp / "lonely" / "cnn-symbol.json").write_text(symbol.read_text())
    (tmp / "mismatch").mkdir()
    (tmp / "mismatch" / "cnn-symbol.json").write_text(symbol.read_text())
    (tmp / "mismatch" / "cnn-0000.params").write_bytes(mlp_params.read_bytes())
    return {"symbol": symbol, "params": params, "other_params": other_params, "tmp": tmp}


def test_symbol_params_pair_passes(run_parity, mxnet_files):
    by_arch = run_parity(f"--model=cnn={mxnet_files['symbol']}", *MXNET)
    by_arch.result.assert_outcomes(passed=1)
    by_spec = run_parity(f"--model={mxnet_files['symbol']}", *MXNET, "--output-names=features",
                         "--input-spec=data:float32[N=1..4,3,H=16..40,W=20..48]:NCHW:-3..3")
    by_spec.result.assert_outcomes(passed=1)


def test_correct_conversion_passes_beside_planted_bugs(run_parity, mxnet_files):
    tmp = mxnet_files["tmp"]
    good = run_parity("--model=cnn", *MXNET, f"--converted={tmp / 'good' / 'model.onnx'}")
    good.result.assert_outcomes(passed=1)
    perturbed = run_parity("--model=cnn", *MXNET, f"--converted={tmp / 'perturbed' / 'model.onnx'}")
    perturbed.result.assert_outcomes(failed=1)
    assert "features:" in perturbed.single["message"]
    other = run_parity("--model=cnn", *MXNET, f"--converted={tmp / 'other-params' / 'model.onnx'}")
    other.result.assert_outcomes(failed=1)


def test_bad_pairs_are_clear_errors(run_parity, mxnet_files):
    tmp = mxnet_files["tmp"]
    run = run_parity(f"--model=cnn={tmp / 'lonely' / 'cnn-symbol.json'},cnn={tmp / 'mismatch' / 'cnn-symbol.json'},simple",
                     *MXNET)
    messages = {k: r["message"] for k, r in run.cases.items() if r["status"] == "error"}
    assert len(messages) == 2, messages
    assert any(".params" in m and "lonely" in m for m in messages.values()), messages
    assert any("mismatch" in m and ("shape" in m or "param" in m) for m in messages.values()), messages
    assert run.cases["simple-mxnet-onnxruntime-cpu"]["status"] == "passed"
    assert "Traceback" not in run.output


def test_op_the_exporter_does_not_support_is_a_clear_error(parity_dir, run_parity):
    (parity_dir / "erfy.py").write_text(textwrap.dedent('''
        from harness import InputSpec, register_model

        def build():
            from harness.sources.mxnet import import_mxnet

            mx = import_mxnet()

            class Erfy(mx.gluon.HybridBlock):
                def hybrid_forward(self, F, x):
                    return F.erf(x)

            net = Erfy(prefix="erfy_")
            net.initialize()
            net.hybridize()
            return net

        register_model("erfy", inputs=[InputSpec("x", ("N", 4), dims={"N": (1, 3)})], outputs=["y"], mxnet=build)
    '''))
    run = run_parity("--model=erfy.py", *MXNET)
    run.result.assert_outcomes(errors=1)
    message = run.single["message"]
    assert "erf" in message and "[convert]" not in message  # the stage is kept apart from the message
    assert run.single["stage"] == "convert"
