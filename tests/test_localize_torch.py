"""The torch source's side of a localization (`harness.localize.torch_layers`):
on correct exports of zoo models (dynamo and TorchScript exporters), every
torch value mapped to an ONNX tensor equals ONNX Runtime's value of that
tensor, and enough are mapped; on an export with one Conv's weight planted
wrong, the first mapped tensor that differs is that Conv's, labelled with its
module path; an attention's Softmax is mapped; files that lost the exporter's
metadata, an export that cannot be made again, in-place ops and odd models
give what they can without raising."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

ort = pytest.importorskip("onnxruntime")

from harness.inputs import InputRecipe, example_recipe, make_inputs  # noqa: E402
from harness.localize import torch_layers  # noqa: E402
from harness.localize.graph import load_graph, write_marked  # noqa: E402
from harness.localize.layers import LayerValues  # noqa: E402
from harness.registry import get_model  # noqa: E402
from harness.sources import torch as torch_source  # noqa: E402
from harness.specs import InputSpec, ModelSpec, OutputSpec  # noqa: E402
from tests import planted  # noqa: E402
from tests.layer_checks import errors, node_share  # noqa: E402

AGREE = 1e-4      # max|torch - ort| / max|ort| of a correct export's tensors (measured <= 4e-7)
DIFFERS = 1e-2    # ... of the planted Conv's


class Exported:
    """A zoo model exported as the harness exports it, with its bound model and inputs."""

    def __init__(self, spec: ModelSpec, path, model=None):
        self.spec, self.path = spec, path
        self.model = model if model is not None else torch_source.bind(
            torch_source.build(spec.builders["torch"]), spec)
        tensors = make_inputs(spec, example_recipe(spec))
        self.inputs = [tensors[i.name] for i in spec.inputs]

    def layer_values(self, path=None, inputs=None) -> tuple[LayerValues, dict[str, np.ndarray], object, float]:
        """The torch values mapped onto the file at `path` (this export's by
        default), ORT's values of every tensor, the file's graph, and the
        seconds `layer_values` took."""
        graph = load_graph(path or self.path)
        inputs = self.inputs if inputs is None else inputs
        start = time.perf_counter()
        values = torch_layers.layer_values(self.model, inputs, graph.model)
        seconds = time.perf_counter() - start
        marked = graph.path.with_name("marked.onnx")
        names = write_marked(graph, graph.order, marked)
        session = ort.InferenceSession(str(marked), providers=["CPUExecutionProvider"])
        return values, dict(zip(names, session.run(names, dict(zip(graph.inputs, inputs))))), graph, seconds


def zoo(name: str, exporter: str, tmp_path_factory) -> Exported:
    spec = get_model(name)
    return Exported(spec, planted.export_zoo(name, tmp_path_factory.mktemp(f"{name}-{exporter}"), exporter=exporter))


@pytest.fixture(scope="module")
def cnn_dynamo(tmp_path_factory) -> Exported:
    return zoo("cnn", "dynamo", tmp_path_factory)


@pytest.fixture(scope="module")
def cnn_torchscript(tmp_path_factory) -> Exported:
    return zoo("cnn", "torchscript", tmp_path_factory)


@pytest.fixture(scope="module")
def transformer_dynamo(tmp_path_factory) -> Exported:
    return zoo("transformer", "dynamo", tmp_path_factory)


# ---------------------------------------------------------------- correct exports agree

# model, exporter, tensors mapped at least (measured: 5 of 5, 29 of 33 float tensors, 5 of 5)
CORRECT = [("cnn", "dynamo", 5), ("transformer", "dynamo", 27), ("cnn", "torchscript", 5)]


@pytest.mark.parametrize("name, exporter, floor", CORRECT, ids=[f"{n}-{e}" for n, e, _ in CORRECT])
def test_a_correct_export_agrees_with_onnx_runtime_on_every_mapped_tensor(name, exporter, floor, request):
    exported = request.getfixturevalue(f"{name}_{exporter}")
    values, ort_values, graph, seconds = exported.layer_values()
    found = errors(values, ort_values)
    print(f"{name} ({exporter}): {len(found)} tensors mapped, {node_share(values, graph):.0%} of "
          f"{graph.nodes} nodes, {seconds:.2f} s; {values.how}")
    assert len(found) >= floor, values.unmapped
    assert max(found.values()) < AGREE, {t: e for t, e in found.items() if e >= AGREE}
    assert all(values.layers[t] for t in found)


def test_inputs_of_other_sizes_than_the_exports_still_map(transformer_dynamo):
    """A failure is localized on its own input (N=1, the smallest T), not on the
    export's example: the program is still made with the export's sizes."""
    spec = transformer_dynamo.spec
    recipe = InputRecipe({d: low for d, (low, _) in spec.dim_bounds.items()}, example_recipe(spec).distributions,
                         0.0, 7)
    inputs = [make_inputs(spec, recipe)[i.name] for i in spec.inputs]
    values, ort_values, _, _ = transformer_dynamo.layer_values(inputs=inputs)
    found = errors(values, ort_values)
    assert len(found) >= 27 and max(found.values()) < AGREE


def test_the_softmax_of_an_attention_is_mapped(transformer_dynamo):
    """The ONNX Softmax (whose axis an export could get wrong) gets torch's value,
    labelled with the FX node."""
    values, ort_values, graph, _ = transformer_dynamo.layer_values()
    softmax = [t for t in graph.order if graph.producer[t].op_type == "Softmax"]
    assert softmax and all(t in values.values for t in softmax)
    assert all("softmax" in values.layers[t] for t in softmax)
    assert max(errors(values, ort_values)[t] for t in softmax) < AGREE


def test_an_inner_value_torch_cannot_compute_again_is_a_reason_on_the_record(transformer_dynamo, monkeypatch):
    """Once dropped in silence: a linear's MatMul left unmapped with no word of why."""
    def planted_error(args, kwargs, value):
        raise RuntimeError("planted: an odd call of the op")

    clean = transformer_dynamo.layer_values()[0]
    monkeypatch.setitem(torch_layers.INSIDE, torch.ops.aten.linear.default, (("MatMul", planted_error),))
    values = transformer_dynamo.layer_values()[0]
    reasons = [r for r in values.unmapped if "planted: an odd call of the op" in r]
    assert reasons and all(r.startswith("MatMul inside ") and " not computed again: RuntimeError: " in r
                           for r in reasons)
    assert not any("not computed again" in r for r in clean.unmapped)
    assert len(values.values) < len(clean.values)   # the MatMuls' values, given by the clean run alone


def test_a_graph_of_over_100_nodes_maps_most_of_its_float_tensors_in_seconds(tmp_path_factory):
    """hf_bert (117 nodes): its scaled_dot_product_attention's Softmax (inside
    one FX node's translation) and its linears' MatMuls are mapped too."""
    pytest.importorskip("transformers")
    exported = zoo("hf_bert", "dynamo", tmp_path_factory)
    values, ort_values, graph, seconds = exported.layer_values()
    found = errors(values, ort_values)
    share = node_share(values, graph)
    print(f"hf_bert (dynamo): {len(found)} of {len(graph.float_tensors())} float tensors, {share:.0%} of "
          f"{graph.nodes} nodes mapped in {seconds:.2f} s")
    assert graph.nodes > 100
    assert share >= 0.5 and max(found.values()) < AGREE   # measured: 63 of 117 nodes (54%), 63 of 88 tensors
    softmax = [t for t in graph.order if graph.producer[t].op_type == "Softmax"]
    assert len(softmax) == 2 and all(t in values.values for t in softmax)
    assert seconds < 60


# ---------------------------------------------------------------- a planted Conv is named

@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_a_planted_conv_weight_is_the_first_mapped_tensor_that_differs(exporter, request, tmp_path):
    """The second Conv's weight (features.4: Conv2d(8, 16)) scaled by 1.5 in
    the file: every mapped tensor before its output agrees, its own differs,
    and its label names that module."""
    exported = request.getfixturevalue(f"cnn_{exporter}")
    model = onnx.load(str(exported.path))
    conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    weight = next(t for t in model.graph.initializer if t.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.5), weight.name))
    path = tmp_path / "planted.onnx"
    onnx.save(model, str(path))
    values, ort_values, graph, _ = exported.layer_values(path)
    found = errors(values, ort_values)
    planted_tensor = conv.output[0]
    before = [t for t in graph.order[:graph.order.index(planted_tensor)] if t in found]
    assert before and max(found[t] for t in before) < AGREE
    assert found[planted_tensor] > DIFFERS
    assert values.layers[planted_tensor].startswith("features.4 (Conv2d)"), values.layers[planted_tensor]


# ---------------------------------------------------------------- what the mapping copes with

def test_without_the_export_module_outputs_are_mapped_by_name_scopes(cnn_dynamo, monkeypatch):
    """Where the dynamo export cannot be made again, forward hooks map each
    module's output through the file's name_scopes (the fused Conv+BN node is
    in the BatchNorm's scope), and the reason is on the record."""
    def fails(*args, **kwargs):
        raise RuntimeError("no export here")

    monkeypatch.setattr(torch_layers, "_export_again", fails)
    values, ort_values, graph, _ = cnn_dynamo.layer_values()
    found = errors(values, ort_values)
    assert len(found) == graph.nodes and max(found.values()) < AGREE
    assert any("no export here" in reason for reason in values.unmapped) and "no export here" in values.how
    assert values.layers[graph.outputs[0]] == "features.6 (ReLU)"


def test_a_file_without_the_exporters_metadata_maps_by_names_checked_by_what_nodes_read(transformer_dynamo,
                                                                                        tmp_path):
    """A tool that rewrites the file drops every metadata_props (seen in the
    cache: onnx files re-saved with shapes inferred); names are then checked
    by the tensors each node reads."""
    model = onnx.load(str(transformer_dynamo.path))
    for proto in [*model.graph.node, *model.graph.input, *model.graph.output, model.graph]:
        del proto.metadata_props[:]
    path = tmp_path / "stripped.onnx"
    onnx.save(model, str(path))
    values, ort_values, _, _ = transformer_dynamo.layer_values(path)
    found = errors(values, ort_values)
    assert len(found) >= 20 and max(found.values()) < AGREE   # measured: 23 (no Softmax/MatMul inside nodes)
    assert "read" in values.how


class ResidualBlock(torch.nn.Module):
    """Conv-BN, an in-place residual add (as transformers' ResNet), ReLU; a ReLU module called twice."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)
        self.act = torch.nn.ReLU()
        with torch.no_grad():
            self.norm.running_mean.uniform_(-0.5, 0.5)
            self.norm.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        y = self.norm(self.conv(self.act(x)))
        y += x
        return self.act(y)


def test_a_value_changed_in_place_later_is_taken_as_it_was_returned(tmp_path):
    """The TorchScript exporter folds the BN into the Conv; the BN's output is
    then changed in place (y += x): the Conv's tensor must hold the BN's output
    as the BN returned it. The ReLU called twice is not mapped by its scope."""
    spec = ModelSpec("residual", (InputSpec("x", ("N", 4, "H", "W"), dims={"N": (1, 3), "H": (5, 9), "W": (6, 10)},
                                            layout="NCHW"),), (OutputSpec("y"),), {"torch": ResidualBlock})
    bound = torch_source.bind(torch_source.build(ResidualBlock), spec)
    exported = Exported(spec, planted.export(bound, spec, tmp_path, exporter="torchscript"), bound)
    values, ort_values, graph, _ = exported.layer_values()
    found = errors(values, ort_values)
    conv = next(t for t in graph.order if graph.producer[t].op_type == "Conv")
    assert values.layers[conv] == "conv (Conv2d) + norm (BatchNorm2d)"
    assert max(found.values()) < AGREE
    assert values.unmapped.get("module called more than once") == 2


def test_odd_models_and_files_give_what_they_can_without_raising(cnn_dynamo, transformer_dynamo):
    script = torch.jit.script(torch_source.build(cnn_dynamo.spec.builders["torch"]))
    graph = load_graph(cnn_dynamo.path)
    values = torch_layers.layer_values(script, cnn_dynamo.inputs, graph.model)
    assert not values.values and "TorchScript module" in values.how
    # another model's file: its export differs (or fails); nothing is mapped wrongly
    values, ort_values, _, _ = cnn_dynamo.layer_values(transformer_dynamo.path, transformer_dynamo.inputs)
    assert not values.values and values.unmapped
    values = torch_layers.layer_values(cnn_dynamo.model, [np.zeros(3, np.float32)], graph.model)
    assert not values.values and values.how
