"""Input domains an ONNX file implies: indices within the dims they index,
Log's positive, Acos within [-1, 1], ... inferred from the graph, merged with
--input-spec and with stored inputs; each file runs through ONNX Runtime
in-process, beside a twin whose converted form is wrong and must still fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings

from harness import matrix, runner
from harness.cache import ArtifactCache
from harness.inputs import corner_recipes, input_recipes, make_inputs
from harness.option_effects import option_findings
from harness.options import RunOptions, parse_input_spec
from harness.sources import onnx as onnx_source
from harness.specs import ModelSpec
from onnx import TensorProto, helper, numpy_helper

INT64, FLOAT = TensorProto.INT64, TensorProto.FLOAT


def _save(path: Path, nodes, inputs, outputs, initializers=(), opset: int = 18) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def _value(name: str, shape, elem=FLOAT):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _const(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _domains(path: Path, *input_specs: str) -> dict[str, tuple[float, float]]:
    inputs, _ = onnx_source.spec_from_file(path, [parse_input_spec(s) for s in input_specs])
    return {i.name: i.domain for i in inputs}


def _gather(path: Path, axis: int, data_shape=(3, 5), indices=4) -> Path:
    data = np.arange(np.prod(data_shape), dtype=np.float32).reshape(data_shape)
    out = [indices, data_shape[1]] if axis == 0 else [data_shape[0], indices]
    return _save(path, [helper.make_node("Gather", ["data", "idx"], ["y"], axis=axis)],
                 [_value("idx", [indices], INT64)], [_value("y", out)], [_const("data", data)])


def _options(path: Path, tmp_path: Path, *input_specs: str, **more) -> RunOptions:
    return RunOptions(models=(str(path),), sources=("onnx",), devices=("cpu",),
                      input_specs=tuple(parse_input_spec(s) for s in input_specs), use_cache=False, examples=10,
                      reports_dir=tmp_path / "reports", **{"targets": ("onnxruntime",), **more})


def _run(options: RunOptions, tmp_path: Path) -> dict:
    [case] = matrix.build_cases(options)
    return runner.run_case(case, options, ArtifactCache(tmp_path / "cache")).to_json()


def _every_draw_runs(path: Path, spec: ModelSpec, draws: int = 8) -> list[dict[str, np.ndarray]]:
    """The corners and some drawn examples, each run on the reference: an
    out-of-domain draw raises there (an index) or yields NaN (acos of 2)."""
    model = onnx_source.bind(onnx_source.load_file(path), spec)
    recipes = [recipe for _, recipe in corner_recipes(spec)]

    @settings(max_examples=draws, database=None, derandomize=True)
    @given(input_recipes(spec))
    def collect(recipe):
        recipes.append(recipe)

    collect()
    feeds = [make_inputs(spec, recipe) for recipe in recipes]
    for feed in feeds:
        for output in onnx_source.run(model, [feed[i.name] for i in spec.inputs], "cpu"):
            assert not np.isnan(output).any(), feed
    return feeds


def _spec(path: Path) -> ModelSpec:
    inputs, outputs = onnx_source.spec_from_file(path)
    return ModelSpec(path.stem, inputs, outputs)


# ---------------------------------------------------------------- indices, end to end

@pytest.mark.parametrize("axis, dim", [(0, 3), (1, 5)])
def test_gather_indices_are_drawn_within_the_dim_they_index_and_the_case_passes(tmp_path, axis, dim):
    """Today's default range (-4..4) reaches past a dim of 3 (ONNX Runtime: "indices element out of data
    bounds") and never reaches -5 of a dim of 5."""
    path = _gather(tmp_path / "gather.onnx", axis)
    assert _domains(path) == {"idx": (-dim, dim - 1)}
    feeds = _every_draw_runs(path, _spec(path))
    drawn = np.concatenate([feed["idx"] for feed in feeds])
    assert drawn.min() == -dim and drawn.max() == dim - 1   # the corners reach both ends
    record = _run(_options(path, tmp_path), tmp_path)
    assert record["status"] == "passed", record["message"]


def test_a_converted_gather_on_the_wrong_axis_still_fails(tmp_path):
    """The planted twin: the same file but for Gather's axis, as the converted model; square data, so only
    the values tell them apart."""
    original = _gather(tmp_path / "gather.onnx", 0, data_shape=(5, 5), indices=5)
    wrong = _gather(tmp_path / "converted" / "gather.onnx", 1, data_shape=(5, 5), indices=5)
    record = _run(_options(original, tmp_path, converted=wrong), tmp_path)
    assert record["status"] == "failed", record["message"]
    assert _run(_options(original, tmp_path / "ok", converted=original), tmp_path / "ok")["status"] == "passed"


# ---------------------------------------------------------------- values: Acos and the others

def test_acos_draws_within_its_domain_and_yields_no_nan(tmp_path):
    path = _save(tmp_path / "acos.onnx", [helper.make_node("Acos", ["x"], ["y"])], [_value("x", [2, 3])],
                 [_value("y", [2, 3])])
    assert _domains(path) == {"x": (-1.0, 1.0)}
    _every_draw_runs(path, _spec(path))
    record = _run(_options(path, tmp_path), tmp_path)
    assert record["status"] == "passed", record["message"]


def _unary(op: str, path: Path, through_cast: bool = False, **attributes) -> Path:
    nodes = [helper.make_node(op, ["x"], ["y"], **attributes)]
    if through_cast:   # a float64 input cast to float32 first: the domain follows the Cast
        nodes = [helper.make_node("Cast", ["x"], ["x32"], to=FLOAT),
                 helper.make_node(op, ["x32"], ["y"], **attributes)]
    return _save(path, nodes, [_value("x", [2, 3], TensorProto.DOUBLE if through_cast else FLOAT)],
                 [_value("y", [2, 3])])


@pytest.mark.parametrize("op, low, high", [
    ("Log", 1e-3, 4.0), ("Sqrt", 0.0, 4.0), ("Asin", -1.0, 1.0), ("Atanh", -0.999, 0.999), ("Acosh", 1.0, 4.0),
])
def test_each_ops_domain_is_drawn_and_its_draws_are_finite(tmp_path, op, low, high):
    path = _unary(op, tmp_path / f"{op}.onnx", through_cast=op == "Log")
    assert _domains(path) == {"x": pytest.approx((low, high))}
    _every_draw_runs(path, _spec(path))


def test_a_pow_base_is_positive_unless_the_exponent_is_a_whole_constant(tmp_path):
    def pow_file(name: str, exponent) -> Path:
        return _save(tmp_path / name, [helper.make_node("Pow", ["x", "e"], ["y"])], [_value("x", [2, 3])],
                     [_value("y", [2, 3])], [_const("e", np.float32(exponent))])

    fractional = pow_file("half.onnx", 0.5)
    assert _domains(fractional) == {"x": (1e-3, 4.0)}
    _every_draw_runs(fractional, _spec(fractional))
    assert _domains(pow_file("square.onnx", 2.0)) == {"x": (-4.0, 4.0)}   # a square takes any base


def test_a_dropout_ratio_input_is_drawn_within_0_and_1(tmp_path):
    path = _save(tmp_path / "dropout.onnx", [helper.make_node("Dropout", ["x", "ratio"], ["y"])],
                 [_value("x", [2, 3]), _value("ratio", [])], [_value("y", [2, 3])])
    assert _domains(path) == {"x": (-4.0, 4.0), "ratio": (0.0, 0.999)}


@pytest.mark.parametrize("build, expected", [
    ("gather_elements", (-5, 4)), ("gather_nd", (-3, 2)), ("scatter_elements", (-3, 2)), ("scatter_nd", (-3, 2)),
    ("one_hot", (-6, 5)), ("top_k", (1, 5)), ("slice_starts", (-5, 4)), ("slice_ends", (-5, 5)),
    ("gather_opset_9", (0, 2)),
])
def test_index_operands_are_bounded_by_the_dim_they_index(tmp_path, build, expected):
    data = _const("data", np.arange(15, dtype=np.float32).reshape(3, 5))
    path = tmp_path / f"{build}.onnx"
    if build == "gather_elements":
        _save(path, [helper.make_node("GatherElements", ["data", "idx"], ["y"], axis=1)],
              [_value("idx", [3, 2], INT64)], [_value("y", [3, 2])], [data])
    elif build == "gather_nd":   # one index per row: into dim 0 (3)
        _save(path, [helper.make_node("GatherND", ["data", "idx"], ["y"])], [_value("idx", [2, 1], INT64)],
              [_value("y", [2, 5])], [data])
    elif build == "scatter_elements":
        _save(path, [helper.make_node("ScatterElements", ["data", "idx", "upd"], ["y"], axis=0)],
              [_value("idx", [1, 5], INT64)], [_value("y", [3, 5])], [data, _const("upd", np.ones((1, 5), np.float32))])
    elif build == "scatter_nd":
        _save(path, [helper.make_node("ScatterND", ["data", "idx", "upd"], ["y"])], [_value("idx", [1, 1], INT64)],
              [_value("y", [3, 5])], [data, _const("upd", np.ones((1, 5), np.float32))])
    elif build == "one_hot":
        _save(path, [helper.make_node("OneHot", ["idx", "depth", "values"], ["y"])], [_value("idx", [4], INT64)],
              [_value("y", [4, 6])], [_const("depth", np.int64(6)), _const("values", np.array([0, 1], np.float32))])
    elif build == "top_k":
        _save(path, [helper.make_node("TopK", ["data", "idx"], ["values", "indices"])], [_value("idx", [1], INT64)],
              [_value("values", [3, None]), _value("indices", [3, None], INT64)], [data])
    elif build.startswith("slice"):
        given = "starts" if build == "slice_starts" else "ends"
        operands = {"starts": _const("starts", np.array([0], np.int64)), "ends": _const("ends", np.array([5], np.int64))}
        operands.pop(given)
        _save(path, [helper.make_node("Slice", ["data", "starts", "ends", "axes"], ["y"])],
              [_value(given, [1], INT64)], [_value("y", [3, None])],
              [data, _const("axes", np.array([1], np.int64)), *operands.values()])
    else:   # before opset 11, Gather's indices do not count from the end
        _save(path, [helper.make_node("Gather", ["data", "idx"], ["y"])], [_value("idx", [2], INT64)],
              [_value("y", [2, 5])], [data], opset=9)
    domains = _domains(path)
    [name] = [n for n in domains if n != "x"]
    assert domains[name] == expected
    _every_draw_runs(path, _spec(path), draws=4)


def _qlinear_matmul(path: Path, y_scale_factor: float = 1.0) -> Path:
    """ONNX's test_qlinearmatmul_2D_int8_float32: every scale and zero point an input; `y_scale_factor`
    multiplies the output's scale inside the graph (a planted wrong conversion)."""
    int8 = TensorProto.INT8
    names = ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale", "y_zero_point"]
    shapes = {"a": [2, 4], "b": [4, 3]}
    inputs = [_value(n, shapes.get(n, [1]), FLOAT if "scale" in n else int8) for n in names]
    nodes = [helper.make_node("QLinearMatMul", names, ["y"])]
    if y_scale_factor != 1.0:
        nodes = [helper.make_node("Mul", ["y_scale", "factor"], ["y_scale_used"]),
                 helper.make_node("QLinearMatMul", names[:6] + ["y_scale_used", "y_zero_point"], ["y"])]
    return _save(path, nodes, inputs, [_value("y", [2, 3], int8)],
                 [_const("factor", np.array([y_scale_factor], np.float32))] if y_scale_factor != 1.0 else [], opset=21)


def test_quantization_scales_are_drawn_positive_and_openvino_agrees(tmp_path):
    """Drawn from -4..4, a scale of 0 or below mirrors the integer range: OpenVINO saturated at 127 where
    ONNX Runtime and onnx.reference give -128 (test_qlinearmatmul_*: "harness fails, independent passes")."""
    path = _qlinear_matmul(tmp_path / "qlinear_matmul.onnx")
    domains = _domains(path)
    assert {name: domains[name] for name in ("a_scale", "b_scale", "y_scale")} == {
        name: (1e-3, 4.0) for name in ("a_scale", "b_scale", "y_scale")}
    assert domains["a_zero_point"] == (-4.0, 4.0)   # a zero point may be any integer
    record = _run(_options(path, tmp_path, targets=("openvino",)), tmp_path)
    assert record["status"] == "passed", record["message"]


def test_a_converted_qlinear_matmul_with_a_doubled_output_scale_still_fails(tmp_path):
    original = _qlinear_matmul(tmp_path / "qlinear_matmul.onnx")
    wrong = _qlinear_matmul(tmp_path / "converted" / "qlinear_matmul.onnx", y_scale_factor=2.0)
    record = _run(_options(original, tmp_path, converted=wrong), tmp_path)
    assert record["status"] == "failed", record["message"]


def _loop(path: Path, step: float = 1.0) -> Path:
    """ONNX's test_loop11: `trip_count` iterations adding `step` to y, each iteration's y scanned out."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["y_in", "one"], ["y_out"]),
         helper.make_node("Identity", ["y_out"], ["scan_out"])], "body",
        [_value("i", [], INT64), _value("cond_in", [], TensorProto.BOOL), _value("y_in", [1])],
        [_value("cond_out", [], TensorProto.BOOL), _value("y_out", [1]), _value("scan_out", [1])],
        [_const("one", np.array([step], np.float32))])
    return _save(path, [helper.make_node("Loop", ["trip_count", "cond", "y"], ["y_last", "ys"], body=body)],
                 [_value("trip_count", [], INT64), _value("cond", [], TensorProto.BOOL), _value("y", [1])],
                 [_value("y_last", [1]), _value("ys", [None, 1])], opset=11)


def test_a_loop_trip_count_is_drawn_from_0(tmp_path):
    """A negative trip count is no count: ONNX Runtime runs no iteration, OpenVINO loops until the condition
    ends (for test_loop11, never: a hung case)."""
    path = _loop(tmp_path / "loop.onnx")
    # cond, a bool, keeps the default
    assert _domains(path) == {"trip_count": (0.0, 4.0), "cond": (-4.0, 4.0), "y": (-4.0, 4.0)}
    feeds = _every_draw_runs(path, _spec(path))
    assert min(int(feed["trip_count"]) for feed in feeds) == 0


def test_a_converted_loop_with_another_step_still_fails_and_the_loop_itself_passes(tmp_path):
    original = _loop(tmp_path / "loop.onnx")
    record = _run(_options(original, tmp_path, converted=_loop(tmp_path / "converted" / "loop.onnx", 2.0)), tmp_path)
    assert record["status"] == "failed", record["message"]
    assert _run(_options(original, tmp_path / "ok", converted=original), tmp_path / "ok")["status"] == "passed"


def test_one_hot_depth_given_as_an_input_is_at_least_1(tmp_path):
    path = _save(tmp_path / "one_hot.onnx", [helper.make_node("OneHot", ["idx", "depth", "values"], ["y"])],
                 [_value("idx", [4], INT64), _value("depth", [], INT64)], [_value("y", [4, None])],
                 [_const("values", np.array([0, 1], np.float32))])
    assert _domains(path) == {"idx": (-4.0, 4.0), "depth": (1.0, 4.0)}


# ---------------------------------------------------------------- merged with --input-spec and stored inputs

def _shifted_gather(path: Path, rows: int = 3) -> Path:
    """idx + 1 indexes a dim of `rows`: the Add hides the bound from the inference; a second input x."""
    data = np.arange(rows * 5, dtype=np.float32).reshape(rows, 5)
    return _save(path, [helper.make_node("Add", ["idx", "one"], ["shifted"]),
                        helper.make_node("Gather", ["data", "shifted"], ["g"], axis=0),
                        helper.make_node("Add", ["g", "x"], ["y"])],
                 [_value("idx", [4], INT64), _value("x", [4, 5])], [_value("y", [4, 5])],
                 [_const("data", data), _const("one", np.int64(1))])


@pytest.mark.parametrize("rows, says, advice", [
    (3, "rejects inputs built from its input spec", "value range): --input-spec"),   # before the first example
    (5, "fails on inputs within its spec", "value range: --input-spec"),             # at a corner
])
def test_the_domain_error_s_advice_is_taken_for_an_onnx_file(tmp_path, rows, says, advice):
    """The reference rejects drawn indices; the error names --input-spec and the value range, and an
    --input-spec for that one input (the file declares the other) is accepted and makes the case pass."""
    path = _shifted_gather(tmp_path / "shifted.onnx", rows)
    record = _run(_options(path, tmp_path), tmp_path)
    assert record["status"] == "error" and says in record["message"] and advice in record["message"]
    options = _options(path, tmp_path, f"idx:int64[4]::-4..{rows - 2}")
    cases = matrix.build_cases(options)
    assert option_findings(options, cases).errors == []
    assert [i.domain for i in cases[0].spec.inputs] == [(-4.0, rows - 2), (-4.0, 4.0)]
    record = _run(options, tmp_path)
    assert record["status"] == "passed", record["message"]


def test_an_input_spec_overrides_a_dim_and_keeps_the_implied_domain_unless_it_gives_a_range(tmp_path):
    path = _save(tmp_path / "gather.onnx", [helper.make_node("Gather", ["data", "idx"], ["y"], axis=1)],
                 [_value("idx", ["K"], INT64)], [_value("y", [3, "K"])],
                 [_const("data", np.zeros((3, 5), np.float32))])
    inputs, _ = onnx_source.spec_from_file(path, [parse_input_spec("idx:int64[K=2..6]")])
    assert (inputs[0].shape, inputs[0].dims, inputs[0].domain) == (("K",), {"K": (2, 6)}, (-5.0, 4.0))
    assert _domains(path, "idx:int64[K=2..6]::0..2") == {"idx": (0.0, 2.0)}


def _golden(folder: Path, model: Path, feeds: list[list[np.ndarray]]) -> Path:
    """A folder in ONNX's test-data layout: `model` beside one stored set per feed, its outputs computed by
    onnx's own reference."""
    from onnx.reference import ReferenceEvaluator

    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(model.read_bytes())
    evaluator = ReferenceEvaluator(str(model))
    names = [i.name for i in onnx.load(str(model)).graph.input]
    for index, feed in enumerate(feeds):
        data = folder / f"test_data_set_{index}"
        data.mkdir()
        stored = [("input", feed), ("output", evaluator.run(None, dict(zip(names, feed))))]
        for kind, arrays in stored:
            for position, array in enumerate(arrays):
                (data / f"{kind}_{position}.pb").write_bytes(numpy_helper.from_array(array).SerializeToString())
    return folder


def test_stored_inputs_give_their_range_where_the_graph_bounds_nothing(tmp_path):
    zeros = np.zeros((4, 5), np.float32)
    folder = _golden(tmp_path / "case", _shifted_gather(tmp_path / "shifted.onnx"),
                     [[np.array([-1, 0, 0, 1]), zeros], [np.array([0, 1, 1, 0]), zeros]])
    assert _domains(folder) == {"idx": (-1.0, 1.0), "x": (-4.0, 4.0)}   # x's stored zeros are no range
    record = _run(_options(folder, tmp_path), tmp_path)
    assert record["status"] == "passed", record["message"]
    # the graph's own bound wins over a stored range
    gather = _golden(tmp_path / "gather", _gather(tmp_path / "g.onnx", 1), [[np.array([0, 1, 1, 0])]])
    assert _domains(gather) == {"idx": (-5.0, 4.0)}


def test_ops_bounds_meet_and_a_file_whose_ops_disagree_keeps_the_default(tmp_path):
    both = _save(tmp_path / "both.onnx", [helper.make_node("Log", ["x"], ["a"]), helper.make_node("Acos", ["x"], ["b"])],
                 [_value("x", [2])], [_value("a", [2]), _value("b", [2])])
    assert _domains(both) == {"x": (1e-3, 1.0)}
    # a Dropout ratio (below 1) that is also Acosh's operand (at least 1): no value is both
    none = _save(tmp_path / "none.onnx", [helper.make_node("Dropout", ["x", "r"], ["a"]),
                                         helper.make_node("Acosh", ["r"], ["b"])],
                 [_value("x", [2]), _value("r", [])], [_value("a", [2]), _value("b", [])])
    assert _domains(none) == {"x": (-4.0, 4.0), "r": (-4.0, 4.0)}


# ---------------------------------------------------------------- advice names only options accepted where it is given

@pytest.mark.parametrize("declared", [[None, 16, 20, 3], [None, 3, 100, None]])   # laid out otherwise; a size off
def test_a_shape_finding_names_converted_layouts_only_for_a_converted_file(declared):
    """--converted-layouts without --converted stops the run: a file the harness converted itself is
    pointed at the layouts its conversion recorded instead."""
    from harness.shape_check import input_findings

    image = parse_input_spec("image:float32[N=1..4,3,H=16..40,W=20..48]:NCHW")
    [own] = input_findings([image], {"image": declared}, {"image": "NCHW"}, "the converted file")
    [users] = input_findings([image], {"image": declared}, {"image": "NCHW"}, "converted file m.onnx",
                             user_file=True)
    assert "--converted-layouts" not in own.message and "the layouts its conversion recorded" in own.message
    assert "--converted-layouts" in users.message


# ---------------------------------------------------------------- embeddings, masks, Reduce axes

def _wrapped_embedding(path: Path, table: np.ndarray) -> Path:
    """tf2onnx's Keras Embedding: ids < 0 wrapped by Less, Not, Cast, Mul and Add before the Gather."""
    int32 = TensorProto.INT32
    nodes = [helper.make_node("Add", ["ids", "rows"], ["wrapped"]),
             helper.make_node("Cast", ["ids"], ["ids64"], to=INT64),
             helper.make_node("Less", ["ids64", "zero"], ["negative"]),
             helper.make_node("Not", ["negative"], ["kept"]),
             helper.make_node("Cast", ["kept"], ["keep"], to=int32),
             helper.make_node("Mul", ["ids", "keep"], ["as_given"]),
             helper.make_node("Cast", ["negative"], ["wrap"], to=int32),
             helper.make_node("Mul", ["wrap", "wrapped"], ["as_wrapped"]),
             helper.make_node("Add", ["as_wrapped", "as_given"], ["index"]),
             helper.make_node("Gather", ["table", "index"], ["y"])]
    return _save(path, nodes, [_value("ids", ["batch", "sequence"], int32)], [_value("y", ["batch", "sequence", 4])],
                 [_const("rows", np.int32(len(table))), _const("zero", np.int64(0)), _const("table", table)])


def test_ids_through_tf2onnx_s_negative_id_wrap_are_drawn_over_every_embedding_row(tmp_path):
    """Drawn from -4..4 before, the ids reached rows 0..4 and (wrapped) 46..49 only: a converted file with
    rows 5..45 scaled by 1.05 passed. Now the ids span the table and it fails; the file itself passes."""
    table = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    path = _wrapped_embedding(tmp_path / "embedding.onnx", table)
    assert _domains(path) == {"ids": (0.0, 49.0)}
    scaled = table.copy()
    scaled[5:46] *= np.float32(1.05)
    twin = _wrapped_embedding(tmp_path / "converted" / "embedding.onnx", scaled)
    assert _run(_options(path, tmp_path, converted=twin), tmp_path)["status"] == "failed"
    record = _run(_options(path, tmp_path / "ok", converted=path), tmp_path / "ok")
    assert record["status"] == "passed", record["message"]


def test_an_integer_input_reaching_a_gather_through_another_input_is_not_bounded_by_its_rows(tmp_path):
    """The benign twin: ids added to a second input before the Gather bound nothing (their sum does)."""
    nodes = [helper.make_node("Add", ["ids", "offset"], ["index"]),
             helper.make_node("Gather", ["table", "index"], ["y"])]
    path = _save(tmp_path / "m.onnx", nodes, [_value("ids", [3], INT64), _value("offset", [3], INT64)],
                 [_value("y", [3, 2])], [_const("table", np.zeros((50, 2), np.float32))])
    assert _domains(path) == {"ids": (-4.0, 4.0), "offset": (-4.0, 4.0)}


def _masked(path: Path, mask_name: str) -> Path:
    nodes = [helper.make_node("Cast", [mask_name], ["m"], to=FLOAT), helper.make_node("Mul", ["x", "m"], ["y"])]
    return _save(path, nodes, [_value("x", [2, 5]), _value(mask_name, [2, 5], INT64)], [_value("y", [2, 5])])


@pytest.mark.parametrize("name, domain", [("attention_mask", (0.0, 1.0)), ("padding_mask", (0.0, 1.0)),
                                          ("mask", (0.0, 1.0)), ("masks_count", (-4.0, 4.0)),
                                          ("token_type_ids", (-4.0, 4.0))])
def test_an_integer_input_named_as_a_mask_is_drawn_from_0_and_1(tmp_path, name, domain):
    """BERT's attention_mask was drawn from -4..4: no mask a tokenizer makes. Other names keep the default."""
    assert _domains(_masked(tmp_path / "m.onnx", name))[name] == domain


def test_a_mask_the_graph_bounds_keeps_the_graph_s_bound(tmp_path):
    path = _save(tmp_path / "m.onnx", [helper.make_node("Gather", ["table", "attention_mask"], ["y"])],
                 [_value("attention_mask", [3], INT64)], [_value("y", [3, 2])],
                 [_const("table", np.zeros((3, 2), np.float32))])
    assert _domains(path) == {"attention_mask": (-3.0, 2.0)}


def _reduce(path: Path, op: str) -> Path:
    return _save(path, [helper.make_node(op, ["data", "axes"], ["y"], keepdims=1)],
                 [_value("data", [3, 2, 2]), _value("axes", [1], INT64)], [_value("y", [None, None, None])])


def test_a_reduce_axes_input_is_drawn_within_the_rank_and_the_case_passes(tmp_path):
    """Drawn from -4..4 before, a rank-3 reduce's axes reached -4 and 3 ("axes out of range")."""
    path = _reduce(tmp_path / "reduce.onnx", "ReduceSum")
    assert _domains(path)["axes"] == (-3.0, 2.0)
    _every_draw_runs(path, _spec(path))
    record = _run(_options(path, tmp_path), tmp_path)
    assert record["status"] == "passed", record["message"]


def test_a_converted_reduce_of_another_kind_still_fails(tmp_path):
    path = _reduce(tmp_path / "reduce.onnx", "ReduceSum")
    wrong = _reduce(tmp_path / "converted" / "reduce.onnx", "ReduceMax")
    assert _run(_options(path, tmp_path, converted=wrong), tmp_path)["status"] == "failed"
