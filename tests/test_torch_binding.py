"""torch models bound to the spec's names: inputs by keyword where forward
names them (keyword-only, or in another order), outputs by name from a
dict-like result; the same binding for the reference and both exporters."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from harness.converters import torch_onnx
from harness.errors import CaseError
from harness.sources import torch as torch_source
from harness.sources.torch_bound import SpecBound, binds_by_keyword
from harness.specs import InputSpec, ModelSpec


class KeywordOnly(torch.nn.Module):
    """forward(*, scale, x): keyword-only, in the opposite order of the spec below."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, *, scale, x):
        hidden = self.linear(x) * scale
        return {"hidden": hidden, "total": hidden.sum(dim=-1), "cache": object()}  # not a tensor: never returned


SPEC = ModelSpec("kw", inputs=(InputSpec("x", ("N", 4), {"N": (1, 5)}, layout="NC"),
                               InputSpec("scale", ("N", 1), {"N": (1, 5)}, layout="NC")),
                 outputs=("total", "hidden"))


def _inputs(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, 4), dtype=np.float32), rng.uniform(0.5, 2, (n, 1)).astype(np.float32)]


def test_keyword_only_forward_binds_by_keyword():
    model = KeywordOnly().eval()
    assert binds_by_keyword(model, ["x", "scale"])
    bound = torch_source.bind(model, SPEC)
    assert isinstance(bound, SpecBound) and bound.by_keyword
    x, scale = _inputs(3, 0)
    total, hidden = torch_source.run(bound, [x, scale], "cpu")
    expected = model.linear(torch.from_numpy(x)).detach().numpy() * scale
    np.testing.assert_allclose(hidden, expected, rtol=1e-6)
    np.testing.assert_allclose(total, expected.sum(-1), rtol=1e-5)


def test_positional_forward_in_the_spec_order_stays_positional():
    class Positional(torch.nn.Module):
        def forward(self, x, scale):
            return x * scale

    assert not binds_by_keyword(Positional(), ["x", "scale"])
    assert binds_by_keyword(Positional(), ["scale", "x"])  # names, but another order: keywords bind them right
    assert not binds_by_keyword(Positional(), ["a", "b"])   # names it does not have: by position


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_both_exporters_take_the_bound_model_and_match(tmp_path, exporter):
    bound = torch_source.bind(KeywordOnly().eval(), SPEC)
    torch_onnx.convert(bound, SPEC, _inputs(2, 0), tmp_path, layouts=SPEC.source_layouts("torch"),
                       exporter=exporter)
    session = ort.InferenceSession(str(tmp_path / torch_onnx.FILENAME))
    assert [i.name for i in session.get_inputs()] == ["x", "scale"]
    assert [o.name for o in session.get_outputs()] == ["total", "hidden"]
    x, scale = _inputs(4, 1)  # another batch size: the batch dim stayed dynamic
    got = session.run(None, {"x": x, "scale": scale})
    for a, b in zip(got, torch_source.run(bound, [x, scale], "cpu")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not bound.training and not bound.inner.training  # the exporter's mode restore left eval mode


def test_an_output_that_is_not_a_tensor_says_to_pick_by_name():
    spec = ModelSpec("kw", inputs=SPEC.inputs, outputs=("y",))  # no output named as a result entry
    bound = torch_source.bind(KeywordOnly().eval(), spec)
    with pytest.raises(CaseError, match=r"holding object beside tensors: name the spec's outputs after the entries"):
        torch_source.run(bound, _inputs(2, 0), "cpu")


def test_transformers_output_with_a_cache_is_bound_by_name(tmp_path):
    """GPT-2 with its default use_cache=True returns a DynamicCache that neither
    exporter accepts; bound by the spec's output name, it never leaves the model."""
    transformers = pytest.importorskip("transformers")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2,
                                                                     n_positions=16, bos_token_id=0, eos_token_id=0))
    spec = ModelSpec("gpt2", inputs=(InputSpec("input_ids", ("N", "T"), {"N": (1, 2), "T": (2, 9)}, dtype="int64",
                                               layout="NT", domain=(0, 49)),), outputs=("logits",))
    bound = torch_source.bind(model.eval(), spec)
    ids = np.random.default_rng(0).integers(0, 50, (2, 7))
    torch_onnx.convert(bound, spec, [ids], tmp_path, layouts=spec.source_layouts("torch"))
    got = ort.InferenceSession(str(tmp_path / torch_onnx.FILENAME)).run(None, {"input_ids": ids[:1, :5]})[0]
    np.testing.assert_allclose(got, torch_source.run(bound, [ids[:1, :5]], "cpu")[0], rtol=1e-4, atol=1e-5)
