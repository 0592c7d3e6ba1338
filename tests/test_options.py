"""options: parsing of command-line strings (input specs, per-output tolerances,
lists), RunOptions JSON round trip; specs: InputSpec / ModelSpec validation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest

from harness import backends
from harness.layouts import LayoutError
from harness.options import (
    DEFAULT_MAX_TENSOR_MB,
    OptionError,
    RunOptions,
    parse_choice,
    parse_input_spec,
    parse_input_specs,
    parse_layouts,
    parse_list,
    parse_max_tensor_mb,
    parse_per_output,
    parse_tolerance_overrides,
    split_list,
)
from harness.specs import TOLERANCE_FIELDS, InputSpec, ModelSpec, OutputSpec, SpecError, Tolerance

# --------------------------------------------------------------------------- parse_input_spec: good


def test_parse_image_spec():
    spec = parse_input_spec("image:float32[N=1..4,3,H=16..64,W=16..64]:NCHW:-3..3")
    assert spec == InputSpec("image", ("N", 3, "H", "W"), {"N": (1, 4), "H": (16, 64), "W": (16, 64)},
                             dtype="float32", layout="NCHW", domain=(-3.0, 3.0))


def test_parse_token_spec_without_layout():
    spec = parse_input_spec("token_ids:int64[N=1..2,T=4..32]::0..999")
    assert spec.name == "token_ids" and spec.dtype == "int64" and spec.layout is None
    assert spec.shape == ("N", "T") and spec.dims == {"N": (1, 2), "T": (4, 32)}
    assert spec.domain == (0.0, 999.0)


@pytest.mark.parametrize("text,expected", [
    ("x:float16[2,3]", dict(shape=(2, 3), dims={}, dtype="float16", layout=None, domain=(-4.0, 4.0))),
    ("x:float32[]", dict(shape=(), dims={})),
    ("axes:int64[0]", dict(shape=(0,), dims={})),
    ("x:bool[N=1..3]", dict(shape=("N",), dtype="bool")),
    (" x:float32[ N=1..2 , 5 ] ", dict(shape=("N", 5), dims={"N": (1, 2)})),
    ("seq:float32[N=1..2,T=3..9,8]:NTC", dict(layout="NTC", shape=("N", "T", 8))),
    ("x:float32[4]::0.5..1.5", dict(domain=(0.5, 1.5))),
    ("x:float32[4]::-1e-3..1e+2", dict(domain=(-1e-3, 100.0))),
    ("x:float64[4]::-2..-1", dict(domain=(-2.0, -1.0), dtype="float64")),
    ("x:float32[4]:", dict(layout=None)),
    ("my.input/0:uint8[3]::0..255", dict(domain=(0.0, 255.0), dtype="uint8")),
])
def test_parse_input_spec_good(text, expected):
    spec = parse_input_spec(text)
    for key, value in expected.items():
        assert getattr(spec, key) == value, key


# --------------------------------------------------------------------------- parse_input_spec: bad

BAD_SPECS = [
    ("image", "expected NAME:DTYPE[DIMS]"),
    ("image:float32", "expected NAME:DTYPE[DIMS]"),
    ("image:float32(1,3)", "expected NAME:DTYPE[DIMS]"),
    (":float32[3]", "expected NAME:DTYPE[DIMS]"),
    ("image:float33[3]", "unknown dtype 'float33'"),
    ("image:float32[N]", "dim 'N' needs bounds, e.g. N=1..8"),
    ("image:float32[N=1-4]", "dim 'N=1-4' is neither a size"),
    ("image:float32[-3]", "dim '-3' is neither a size"),
    ("image:float32[N=4..1]", "1 <= min <= max"),
    ("image:float32[N=0..2]", "1 <= min <= max"),
    ("image:float32[3]junk", "unexpected text 'junk' after the shape"),
    ("image:float32[3]:NCHW", "layout NCHW has 4 axes but the shape has 1"),
    ("image:float32[1,3,4,5]:CHWQ", "unknown layout 'CHWQ'"),
    ("image:float32[3]::a..b", "value range 'a..b' is not LOW..HIGH"),
    ("image:float32[3]::1-2", "value range '1-2' is not LOW..HIGH"),
    ("image:float32[3]::3..-3", "domain (3.0, -3.0) is empty"),
    ("image:float32[3]::0..1:x", "too many ':' parts"),
    # what a slip of the keyboard or a generated command line makes: each said by name
    ("image:[3]", "no dtype before the dims; expected NAME:DTYPE[DIMS]"),
    ("image[3]", "no dtype before the dims"),
    (":float32[3]", "no input name before the dtype"),
    ("image:float32[1,3", "the brackets do not pair up (1 '[', 0 ']'): the dims go in one [...]"),
    ("image:float32[[1,3]", "the brackets do not pair up (2 '[', 1 ']')"),
    ("image:float32[1,3]]", "the brackets do not pair up (1 '[', 2 ']')"),
    ("image:float32]3[", "the brackets do not pair up (1 '[', 1 ']')"),
    ("image\x00:float32[3]", "holds the unprintable character '\\x00'; type the spec without it"),
    ("image:float32[3]:NC\x1bHW", "holds the unprintable character '\\x1b'"),
    ("image:float32[" + ",".join(["1"] * 33) + "]", "33 dims; an input has at most 32 (numpy's limit"),
    # value ranges whose values, or whose width, are not finite where inputs are made
    ("image:float32[N=1..2,8]::-1e309..1e309", "domain (-inf, inf) is not finite in float32, whose finite values "
                                               "are -3.40282e+38..3.40282e+38"),
    ("image:float32[8]::-1e39..1e39", "domain (-1e+39, 1e+39) is not finite in float32"),
    ("image:float16[8]::0..70000", "domain (0, 70000) is not finite in float16, whose finite values are "
                                   "-65504..65504"),
    ("image:bfloat16[8]::-1e39..0", "is not finite in bfloat16, whose finite values are -3.38953e+38..3.38953e+38"),
    ("image:float32[8]::-3e38..3e38", "domain (-3e+38, 3e+38) spans 6e+38, more than float32 (in which float32 "
                                      "inputs are drawn) holds (3.40282e+38)"),
    ("image:bfloat16[8]::-3e38..3e38", "more than float32 (in which bfloat16 inputs are drawn) holds"),
    ("image:float64[8]::-1e308..1e308", "spans inf, more than float64"),
    ("image:int64[8]::-1e309..1e309", "does not fit int64"),
]


@pytest.mark.parametrize("text,fragment", BAD_SPECS)
def test_parse_input_spec_bad(text, fragment):
    with pytest.raises(OptionError) as info:
        parse_input_spec(text)
    message = str(info.value)
    assert f"--input-spec {text!r}" in message  # quotes the offending text
    assert fragment in message


@pytest.mark.parametrize("text", ["x:float32[3]::1e..2", "x:float32[3]::-..1"])
def test_parse_input_spec_malformed_number_in_range(text):
    with pytest.raises(OptionError, match=re.escape(repr(text))):
        parse_input_spec(text)


def test_parse_input_spec_at_the_rank_limit_and_past_it():
    assert len(parse_input_spec("x:float32[" + ",".join(["1"] * 32) + "]").shape) == 32
    text = "x:float32[" + ",".join(["1"] * 10_000) + "]"
    with pytest.raises(OptionError) as info:
        parse_input_spec(text)
    # one line that can be read: the spec's start, not its 20,000 characters
    assert str(info.value) == (f"--input-spec {text[:60]!r}... (20010 characters): 10000 dims; an input has at most "
                               "32 (numpy's limit: the harness makes every input with numpy)")


def test_an_input_given_twice_is_refused():
    first, second = "x:float32[N=1..4,3]", "x:float32[N=1..2,3]"
    with pytest.raises(OptionError) as info:
        parse_input_specs([first, "y:float32[3]", second])
    assert str(info.value) == (f"--input-spec {second!r}: input 'x' is given twice (also by {first!r}); give one "
                               "--input-spec per input")
    # the twin: one spec per input, in the order given
    assert [s.name for s in parse_input_specs([first, "y:float32[3]"])] == ["x", "y"]
    assert parse_input_specs([]) == ()


def test_parse_input_spec_same_dim_two_bounds():
    with pytest.raises(OptionError):
        parse_input_spec("x:float32[N=1..4,N=2..3]")


def test_parse_input_spec_same_dim_same_bounds_is_one_dim():
    spec = parse_input_spec("x:float32[N=2..3,N=2..3]")
    assert spec.shape == ("N", "N") and spec.dims == {"N": (2, 3)}


# --------------------------------------------------------------------------- per-output values

def test_parse_per_output_polygraphy_syntax():
    assert parse_per_output("--atol", ["1e-4"]) == {"": 1e-4}
    assert parse_per_output("--atol", ["logits:1e-3"]) == {"logits": 1e-3}
    assert parse_per_output("--atol", ["1e-4 logits:1e-3,probs:0.5"]) == {"": 1e-4, "logits": 1e-3, "probs": 0.5}
    assert parse_per_output("--atol", ["1e-4", "logits:1e-3"]) == {"": 1e-4, "logits": 1e-3}
    # the last number names the value; earlier colons belong to the output name
    assert parse_per_output("--atol", ["scope:out:2"]) == {"scope:out": 2.0}
    # later wins
    assert parse_per_output("--atol", ["1", "2", "a:1", "a:3"]) == {"": 2.0, "a": 3.0}
    assert parse_per_output("--atol", []) == {}   # not given
    assert parse_per_output("--atol", ["0"]) == {"": 0.0}


@pytest.mark.parametrize("text,item", [("abc", "abc"), ("logits:", "logits:"), ("logits:x", "logits:x"),
                                       ("-1e-4", "-1e-4"), ("a:-1", "a:-1"), ("nan", "nan"),
                                       ("1e-4 logits:oops", "logits:oops"), ("inf", "inf"),
                                       ("logits:inf", "logits:inf"), ("1e999", "1e999"), ("-inf", "-inf"),
                                       ("logits:nan", "logits:nan")])
def test_parse_per_output_bad(text, item):
    with pytest.raises(OptionError) as info:
        parse_per_output("--rtol", [text])
    assert str(info.value).startswith("--rtol: ")
    assert repr(item) in str(info.value)


TOLERANCE_FLAGS = ["--" + name.replace("_", "-") for name in TOLERANCE_FIELDS]


@pytest.mark.parametrize("flag", TOLERANCE_FLAGS)
def test_a_per_output_value_that_names_no_output_is_refused(flag):
    """':0.5' once read as the value for every output; every per-output flag refuses it."""
    with pytest.raises(OptionError) as info:
        parse_tolerance_overrides({flag[2:].replace("-", "_"): ["logits:0.5 :0.5"]})
    assert str(info.value) == (f"{flag}: ':0.5' names no output; give OUTPUT:NUMBER for one output or a bare NUMBER "
                               "for every output (e.g. logits:1e-3 or 1e-4)")
    # the twin, following the advice: a name, or none for every output
    assert parse_tolerance_overrides({flag[2:].replace("-", "_"): ["logits:0.5 0.5"]}) == {
        flag[2:].replace("-", "_"): {"logits": 0.5, "": 0.5}}


def test_a_layout_that_names_no_tensor_is_refused():
    with pytest.raises(OptionError, match=re.escape("--converted-layouts: ':NCHW' is not TENSOR:LAYOUT")):
        parse_layouts("--converted-layouts", ["image:NHWC,:NCHW"])
    assert parse_layouts("--converted-layouts", ["image:NHWC"]) == {"image": "NHWC"}


@pytest.mark.parametrize("text", ["inf", "nan", "logits:inf", "1e400"])
def test_non_finite_tolerance_says_why(text):
    with pytest.raises(OptionError, match=r"must be a finite number >= 0 \(an infinite or NaN tolerance passes"):
        parse_per_output("--atol", [text])


def test_parse_tolerance_overrides():
    got = parse_tolerance_overrides({"atol": ["1e-4", "logits:1e-3"], "rtol": None, "atol_by_max": [],
                                     "max_mismatch": ["probs:0.25"]})
    assert got == {"atol": {"": 1e-4, "logits": 1e-3}, "max_mismatch": {"probs": 0.25}}
    assert parse_tolerance_overrides({}) == {}


def test_parse_tolerance_overrides_bad():
    with pytest.raises(OptionError, match="unknown tolerance field 'btol'"):
        parse_tolerance_overrides({"btol": ["1"]})
    with pytest.raises(OptionError, match=r"--max-mismatch: a fraction in \[0, 1\]"):
        parse_tolerance_overrides({"max_mismatch": ["logits:1.5"]})
    assert parse_tolerance_overrides({"max_mismatch": ["1"]}) == {"max_mismatch": {"": 1.0}}
    with pytest.raises(OptionError, match=r"^--atol-by-max: 'x' is not NUMBER"):
        parse_tolerance_overrides({"atol_by_max": ["x"]})


def test_metric_thresholds_are_tolerance_flags():
    from harness.tolerances import resolve_tolerance

    got = parse_tolerance_overrides({"min_cosine": ["logits:0.999"], "min_snr_db": ["30", "logits:45"],
                                     "min_top1": ["0.99"], "min_topk_overlap": ["logits:1"]})
    assert got == {"min_cosine": {"logits": 0.999}, "min_snr_db": {"": 30.0, "logits": 45.0},
                   "min_top1": {"": 0.99}, "min_topk_overlap": {"logits": 1.0}}
    logits = resolve_tolerance(OutputSpec("logits", class_axis=-1), "float32", "onnxruntime", "cpu", overrides=got)
    assert (logits.min_cosine, logits.min_snr_db, logits.min_top1, logits.min_topk_overlap) == (0.999, 45.0, 0.99, 1.0)
    assert logits.atol > 0   # the elementwise default stays: the thresholds come on top of it
    features = resolve_tolerance(OutputSpec("features"), "float32", "onnxruntime", "cpu", overrides=got)
    assert (features.min_cosine, features.min_snr_db) == (0.0, 30.0)


@pytest.mark.parametrize("field", ["min_cosine", "min_top1", "min_topk_overlap"])
def test_metric_fractions_above_one_are_refused(field):
    flag = "--" + field.replace("_", "-")
    with pytest.raises(OptionError, match=rf"^{flag}: a fraction in \[0, 1\]"):
        parse_tolerance_overrides({field: ["logits:1.01"]})
    assert parse_tolerance_overrides({"min_snr_db": ["120"]}) == {"min_snr_db": {"": 120.0}}   # dB, no fraction


def test_metric_flags_reach_the_verdict_and_the_record(run_parity):
    """An SNR no float32 conversion reaches fails the case, named in its message;
    the noise multiple (16 by default) does not excuse it."""
    run = run_parity("--model=mlp", "--min-snr-db=logits:300", "--min-cosine=0.99")
    run.result.assert_outcomes(failed=1)
    logits = run.single["outputs"]["logits"]
    assert logits["failed_thresholds"] == ["min_snr_db"] and logits["accepted_by"] is None
    assert logits["tolerance"]["min_snr_db"] == 300.0 and logits["tolerance"]["min_cosine"] == 0.99
    assert 60 < logits["snr_db"] < 300 and logits["cosine"] > 0.99
    assert "logits: within its elementwise tolerance, but SNR" in run.single["message"]
    assert "< min_snr_db 300 dB" in run.output   # the terminal's failure says which metric and its threshold


ONNX_HOPS = ("torch->onnx", "tf->onnx", "mxnet->onnx")   # the hops that write ONNX: each takes --opset


def test_opset_accepts_what_onnx_knows_and_reaches_every_hop_that_writes_onnx():
    assert _command_line().hop_options == {}
    highest = onnx.defs.onnx_opset_version()
    for opset in (7, 11, 18, highest):
        assert _command_line(f"--opset={opset}").hop_options == {hop: {"opset": opset} for hop in ONNX_HOPS}


@pytest.mark.parametrize("opset", [999, -1, 0, 6])
def test_opset_rejects_an_impossible_opset_with_the_range(opset):
    highest = onnx.defs.onnx_opset_version()
    with pytest.raises(pytest.UsageError) as info:
        _command_line(f"--opset={opset}")
    assert str(info.value).startswith(f"--opset {opset}: no such ONNX opset here; choose from 7..{highest}")


def test_exporter_reaches_the_torch_export_and_an_unknown_one_is_a_usage_error():
    assert _command_line("--exporter=torchscript").hop_options == {"torch->onnx": {"exporter": "torchscript"}}
    with pytest.raises(pytest.UsageError) as info:
        _command_line("--exporter=onnx")
    assert str(info.value) == "--exporter 'onnx': give one of dynamo, torchscript (default dynamo)"


def test_parse_max_tensor_mb():
    assert parse_max_tensor_mb(0.5) == 0.5 and parse_max_tensor_mb(DEFAULT_MAX_TENSOR_MB) == 1024.0
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(OptionError, match=r"--parity-max-tensor-mb .*: a number of MiB > 0 and finite"):
            parse_max_tensor_mb(bad)


def test_split_list():
    assert split_list(None) == ()
    assert split_list("") == ()
    assert split_list("a,b") == ("a", "b")
    assert split_list(["a", "b,c"]) == ("a", "b", "c")
    assert split_list([" b , a ", "b", "c,,a"]) == ("b", "a", "c")  # order kept, duplicates dropped


@pytest.mark.parametrize("values", ["", ",", " , ", [""], ["a", ""]])
def test_a_list_option_given_no_item_is_refused(values):
    """`--target=` once ran every default target: an option given must say something."""
    empty = values if isinstance(values, str) else values[-1]
    with pytest.raises(OptionError) as info:
        parse_list("--target", values, "one or more of onnxruntime, tflite")
    assert str(info.value) == (f"--target {empty!r}: an empty list; give one or more of onnxruntime, tflite, or leave "
                               "--target out for its default")


def test_a_list_option_not_given_is_empty_and_a_trailing_comma_is_no_item():
    assert parse_list("--target", None, "x") == () and parse_list("--target", [], "x") == ()
    assert parse_list("--target", ["onnxruntime,", "tflite"], "x") == ("onnxruntime", "tflite")


def _command_line(*args: str) -> RunOptions:
    """The plugin's RunOptions for a pytest command line, parsed here (nothing runs)."""
    from harness.plugin import run_options

    return run_options(pytest.Config.fromdictargs({}, ["-p", "no:cacheprovider", *args]))


LIST_FLAGS = ["--source", "--target", "--device", "--model", "--precision", "--tier", "--output-names", "--path",
              "--converted-layouts", *TOLERANCE_FLAGS]


@pytest.mark.parametrize("flag", LIST_FLAGS)
def test_every_list_option_given_empty_is_a_usage_error(flag):
    for value in ("", ","):
        with pytest.raises(pytest.UsageError) as info:
            _command_line(f"{flag}={value}")
        message = str(info.value)
        assert message.startswith(f"{flag} {value!r}: an empty list; give "), message
        assert message.endswith(f", or leave {flag} out for its default") and "\n" not in message


def test_options_not_given_keep_their_defaults():
    """The twin, following the advice above: leaving an option out gives its default."""
    assert _command_line() == RunOptions()
    assert _command_line("--target=onnxruntime,", "--tier=real").targets == ("onnxruntime",)


RUNTIME_OPTIONS = [(name, option) for name in backends.names("runtime") for option in backends.option_fields(name)]


@pytest.mark.parametrize("flag,message", [
    ("--openvino-threads=-1", "--openvino-threads -1: give a whole number >= 0 (default 0)"),
    ("--tensorrt-workspace-mb=-1", "--tensorrt-workspace-mb -1: give a whole number >= 0 (default 0)"),
    ("--ncnn-threads=-2", "--ncnn-threads -2: give a whole number >= 0 (default 0)"),
    ("--tensorrt-builder-optimization-level=6",
     "--tensorrt-builder-optimization-level 6: give one of -1, 0, 1, 2, 3, 4, 5 (default -1)"),
])
def test_a_runtime_option_out_of_its_range_is_a_usage_error(flag, message):
    with pytest.raises(pytest.UsageError) as info:
        _command_line(flag)
    assert str(info.value) == message


@pytest.mark.parametrize("name,option", RUNTIME_OPTIONS, ids=[backends.option_flag(*pair) for pair in RUNTIME_OPTIONS])
def test_every_runtime_option_is_held_to_what_its_field_declares(name, option):
    """One parser for every runtime's flags, reading each field's `range` or `choices`."""
    flag = backends.option_flag(name, option)
    if "range" in option.metadata:
        low, high = option.metadata["range"]
        outside = [low - 1] if high is None else [low - 1, high + 1]
        inside = [low, low + 7 if high is None else high]
    else:
        choices = option.metadata["choices"]
        outside = ["bogus"] if isinstance(option.default, str) else [max(choices) + 1, min(choices) - 1]
        inside = list(choices)
    for value in outside:
        with pytest.raises(pytest.UsageError) as info:
            _command_line(f"{flag}={value}")
        assert str(info.value) == f"{flag} {value!r}: give {backends.allowed_values(option)} (default {option.default})"
    for value in inside:
        assert _command_line(f"{flag}={value}").runtime_options == {name: {option.name: value}}


def test_parse_choice():
    assert parse_choice("--exporter", "dynamo", ("dynamo", "torchscript")) == "dynamo"
    with pytest.raises(OptionError, match=r"--exporter: unknown value 'onnx'; choose from dynamo, torchscript"):
        parse_choice("--exporter", "onnx", ("dynamo", "torchscript"))


# --------------------------------------------------------------------------- RunOptions JSON

def test_run_options_json_round_trip():
    opts = RunOptions(
        devices=("cpu",), models=("mlp", "cnn"), converted=Path("/tmp/model.onnx"),
        input_specs=(parse_input_spec("image:float32[N=1..4,3,H=16..64,W=16..64]:NCHW:-3..3"),
                     parse_input_spec("ids:int64[N=1..4,T=2..8]::0..99")),
        output_names=("logits",), hop_options={"torch->onnx": {"exporter": "torchscript", "opset": 17}},
        runtime_options={"onnxruntime": {"opt_level": "basic"}}, strict_cuda=True,
        tolerance_overrides={"atol": {"": 1e-4, "logits": 1e-3}}, trust_model_code=True, use_cache=False,
        cache_dir=Path("some/cache"), reports_dir=Path("out/reports"), examples=7,
    )
    data = opts.to_json()
    text = json.dumps(data, allow_nan=False)
    assert data["converted"] == "/tmp/model.onnx" and data["cache_dir"] == "some/cache"
    assert data["input_specs"][0]["shape"] == ("N", 3, "H", "W")
    back = RunOptions.from_json(json.loads(text))
    assert back == opts
    assert isinstance(back.cache_dir, Path) and isinstance(back.converted, Path)
    assert isinstance(back.input_specs[0], InputSpec) and back.input_specs[0].dims["H"] == (16, 64)
    # not vacuous: a changed field breaks equality
    changed = json.loads(text)
    changed["input_specs"][1]["dims"]["T"] = [2, 9]
    assert RunOptions.from_json(changed) != opts


def test_run_options_defaults_round_trip_and_unknown_keys():
    opts = RunOptions()
    data = json.loads(json.dumps(opts.to_json()))
    assert data["converted"] is None and data["cache_dir"] == ".parity-cache"
    assert RunOptions.from_json(data) == opts
    assert RunOptions.from_json(data | {"from_the_future": 1}) == opts  # unknown keys are dropped
    assert RunOptions.from_json(data | {"devices": ["cpu"]}) == RunOptions(devices=("cpu",))
    assert opts.conversion_options() == {"layout_variant": None}
    assert opts.conversion_options("nchw")["layout_variant"] == "nchw"


def test_run_options_from_partial_json_keeps_defaults():
    assert RunOptions.from_json({"devices": ["cpu"]}) == RunOptions(devices=("cpu",))


# The options header of a parity.json, a shard's or a worker's, as the harness wrote it before hops
# declared Options: every hop option at the top level under its flag's name, at its default if not given.
OLDER_HEADER = {"sources": [], "targets": ["onnxruntime"], "devices": ["cpu"], "exporter": "dynamo", "opset": None,
                "runtime_options": {}, "cache_dir": ".parity-cache", "reports_dir": "reports"}


def test_options_written_before_hop_options_load_with_each_hop_s_value():
    older = OLDER_HEADER | {"exporter": "torchscript", "opset": 16}
    assert RunOptions.from_json(older).hop_options == {"torch->onnx": {"exporter": "torchscript", "opset": 16},
                                                       "tf->onnx": {"opset": 16}, "mxnet->onnx": {"opset": 16}}
    # the benign twin: the defaults it always wrote are no value given
    assert RunOptions.from_json(OLDER_HEADER) == RunOptions(targets=("onnxruntime",), devices=("cpu",))


# --------------------------------------------------------------------------- specs validation

def test_input_spec_valid_and_example_shape():
    spec = InputSpec("x", ["N", 3, "H"], {"N": (1, 4), "H": (8, 8)})
    assert spec.shape == ("N", 3, "H") and spec.is_float
    assert spec.example_shape({"N": 2, "H": 8}) == (2, 3, 8)
    assert not InputSpec("i", (3,), dtype="int64").is_float


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(shape=("N", 3)), "symbolic dim 'N' has no bounds"),
    (dict(shape=(3,), dtype="float8"), "unknown dtype 'float8'"),
    (dict(shape=("N",), dims={"N": (4, 2)}), "1 <= min <= max, got 4..2"),
    (dict(shape=("N",), dims={"N": (0, 2)}), "1 <= min <= max, got 0..2"),
    (dict(shape=(3, -1)), "dim -1 is neither an int >= 0 nor a name"),
    (dict(shape=(3, 2.5)), "dim 2.5 is neither"),
    (dict(shape=(3,), domain=(1.0, -1.0)), "domain (1.0, -1.0) is empty"),
    (dict(shape=(3,), domain=(float("nan"), 1.0)), "is empty"),
    (dict(shape=(3,), domain=(-float("inf"), float("inf"))), "domain (-inf, inf) is not finite in float32"),
    (dict(shape=(3,), domain=(-1e39, 1e39)), "domain (-1e+39, 1e+39) is not finite in float32"),
    (dict(shape=(3,), dtype="float16", domain=(-65505.0, 0.0)), "not finite in float16, whose finite values are "
                                                                "-65504..65504"),
    (dict(shape=(3,), domain=(-2e38, 2e38)), "spans 4e+38, more than float32"),
])
def test_input_spec_errors(kwargs, fragment):
    with pytest.raises(SpecError) as info:
        InputSpec("x", **kwargs)
    assert "input 'x'" in str(info.value) and fragment in str(info.value)


def test_input_spec_layout_errors_are_layout_errors():
    with pytest.raises(LayoutError, match="input 'x': layout NCHW has 4 axes but the shape has 2"):
        InputSpec("x", (2, 3), layout="NCHW")
    with pytest.raises(LayoutError, match="unknown layout 'XY'"):
        InputSpec("x", (2, 3), layout="XY")


def test_model_spec_valid():
    m = ModelSpec("m", [InputSpec("a", ("N", "T"), {"N": (1, 2), "T": (3, 5)}),
                        InputSpec("b", ("N", 4), {"N": (1, 2)})], ["y", OutputSpec("z", Tolerance(atol=1))])
    assert m.outputs[0] == OutputSpec("y") and m.output("z").tolerance == Tolerance(atol=1)
    assert m.dim_bounds == {"N": (1, 2), "T": (3, 5)}
    with pytest.raises(KeyError):
        m.output("nope")


@pytest.mark.parametrize("inputs,outputs,fragment", [
    ((), ("y",), "declares no inputs"),
    ((InputSpec("a", (1,)),), (), "declares no outputs"),
    ((InputSpec("a", (1,)), InputSpec("a", (2,))), ("y",), "duplicate input names ['a', 'a']"),
    ((InputSpec("a", (1,)),), ("y", OutputSpec("y")), "duplicate output names ['y', 'y']"),
    ((InputSpec("a", ("N",), {"N": (1, 4)}), InputSpec("b", ("N",), {"N": (1, 8)})), ("y",),
     "dim 'N' has different bounds on different inputs"),
])
def test_model_spec_errors(inputs, outputs, fragment):
    with pytest.raises(SpecError) as info:
        ModelSpec("m", inputs, outputs)
    assert "model 'm'" in str(info.value) and fragment in str(info.value)


def test_model_spec_same_bounds_as_list_or_tuple_is_fine():
    m = ModelSpec("m", (InputSpec("a", ("N",), {"N": [1, 4]}), InputSpec("b", ("N",), {"N": (1, 4)})), ("y",))
    assert m.dim_bounds == {"N": (1, 4)}
