"""An error never suggests an option the harness refuses (issue 20).

Two halves: a static check that every `--flag` in a string of harness/ is one the harness's commands
accept (the pytest plugin's and pytest's own, `python -m harness`'s subcommands'), or another tool's
flag listed with its reason; and, for each kind of message that advises an option's value, the advice
taken out of the message verbatim and given back, which the harness must accept.

Advice already followed elsewhere (not repeated here):
  --model=FOLDER/FILE (a folder of ONNX files)       test_source_onnx.py::test_a_folder_of_onnx_files_without_...
  --input-spec 'NAME:DTYPE[DIM=1..4,...]' (bounds)   test_source_onnx.py::test_a_symbolic_dim_without_bounds_...
  --input-spec 'input0:...' (a name it cannot write) test_source_onnx.py::test_an_input_name_input_spec_cannot_...
  --input-spec's value range (a domain error)        test_onnx_domains.py::test_the_domain_error_s_advice_is_taken_...
  --precision int8 (a --calibration nothing uses)    test_onnx_lower.py::test_calibration_that_nothing_uses_warns
  a tolerance's OUTPUT: name                         test_options.py (the twin, following the advice)
  python -m harness replay PATH --model REF          test_trust.py::test_replay_takes_no_model_file_and_no_trust_...
  python -m harness report PATH (a full disk)        test_full_disk.py
  --trust-model-code / the folder itself (repro)     test_repro_trust.py
"""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from onnx import helper

from harness.__main__ import build_parser, main
from harness.labels import parse_labels
from harness.calibration_settings import parse_calibration
from harness.matrix import build_cases, resolve_models
from harness.option_effects import option_findings
from harness.errors import OptionError
from harness.options import RunOptions, parse_input_specs, parse_layouts, parse_path
from harness.report.baseline import parse_compare_fail
from tests.conftest import REPO

FLAG = re.compile(r"(?<![\w-])--[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*")
# `--tensorrt-FIELD`: a family of flags named by its prefix, the upper-case words standing for the rest.
PLACEHOLDER = re.compile(r"(?:-[A-Z]+)+$")

# Flags of other tools that the harness names or runs, and why each is there.
OTHER_TOOLS = {
    "--no-deps": "pip, in onnx2tf's install hint (converters/onnx_tflite.py)",
    "--extra-index-url": "pip, in TensorRT's install hint (runtimes/tensorrt.py)",
    "--query-gpu": "nvidia-smi, run to record the GPU in a run's environment (results.py)",
    "--format": "nvidia-smi, as --query-gpu",
    "--benchmark-compare-fail": "pytest-benchmark's, the idiom --parity-compare-fail follows (report/baseline.py)",
    **{flag: "MNN's converter, run by converters/onnx_mnn.py or named in its notes"
       for flag in ("--bizCode", "--useGeluApproximation", "--useOriginRNNImpl", "--keepInputFormat", "--fp16",
                    "--modelFile", "--MNNModel", "--JsonFile")},
}


def harness_lines() -> list[tuple[str, int, str]]:
    """(file, line, text) of every line of harness/: each string constant and f-string part is on one,
    comments too. Lines, not an ast walk: as thorough for flags, at a tenth of the time."""
    return [(str(path.relative_to(REPO)), number, line)
            for path in sorted((REPO / "harness").rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1)]


def subcommand_flags() -> dict[str, set[str]]:
    """`python -m harness`'s subcommands -> the option strings each accepts (a nested one's, as
    `cache export`'s, under "cache export")."""
    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    flags = {}
    for name, parser in commands.choices.items():
        flags[name] = set(parser._option_string_actions)
        for nested in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
            flags.update({f"{name} {sub}": set(subparser._option_string_actions)
                          for sub, subparser in nested.choices.items()})
    return flags


def refused_flags(lines: list[tuple[str, int, str]], accepted: set[str]) -> list[str]:
    """'file:line: --flag' for each flag in `lines` that is neither accepted nor another tool's."""
    refused = []
    for file, line, text in lines:
        for flag in FLAG.findall(text):
            if flag in accepted or flag in OTHER_TOOLS:
                continue
            family = PLACEHOLDER.search(flag)
            if family and any(a.startswith(flag[:family.start()] + "-") for a in accepted):
                continue
            refused.append(f"{file}:{line}: {flag}")
    return refused


@pytest.fixture(scope="module")
def pytest_flags(pytestconfig) -> set[str]:
    """The option strings this pytest takes: its own, the parity plugin's, and its other plugins'
    (hypothesis' among them)."""
    flags = set(pytestconfig._parser.optparser._option_string_actions)
    assert {"--parity-compare-fail", "--input-spec", "--collect-only", "--hypothesis-profile"} <= flags
    return flags


@pytest.fixture(scope="module")
def accepted(pytest_flags) -> set[str]:
    """Every option string the harness's commands take: pytest's and each `python -m harness` subcommand's."""
    return pytest_flags.union(*subcommand_flags().values())


def test_every_flag_a_harness_string_names_is_one_the_harness_accepts(accepted):
    assert refused_flags(harness_lines(), accepted) == []


def test_a_renamed_flag_is_reported_and_a_family_placeholder_is_not(accepted):
    """The check itself: the typo it found in sources/onnx.py (--input-specs), a flag of no command, and
    the benign twins: a family placeholder whose prefix some flag has, another tool's listed flag."""
    strings = [("a.py", 1, "The --input-specs by name"), ("a.py", 2, "give --parity-cache another folder"),
               ("b.py", 3, "flags --tensorrt-FIELD made from these fields"), ("b.py", 4, "pip install --no-deps x"),
               ("b.py", 5, "run it with --device=cpu")]
    assert refused_flags(strings, accepted) == ["a.py:1: --input-specs", "a.py:2: --parity-cache"]


def _advised(message: str, pattern: str) -> str:
    """The option value `message` advises: `pattern`'s first group, or the test fails naming the message."""
    match = re.search(pattern, message)
    assert match, f"no advice matching {pattern!r} in: {message}"
    return match[1]


# ---------------------------------------------------------------- the gate's growth limit, in either command

def test_a_bad_parity_compare_fail_names_pytest_s_option_and_its_example_is_accepted(run_parity, pytest_flags):
    """pytest takes --parity-compare-fail, never diff's --compare-fail: the message names the option given."""
    run = run_parity("--model=simple", "--parity-compare-fail=error:soon", "--collect-only")
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    [message] = [line for line in run.result.errlines if "error:soon" in line]
    assert "bad --parity-compare-fail term 'error:soon'" in message, message
    assert set(FLAG.findall(message)) <= pytest_flags
    assert parse_compare_fail(_advised(message, r"e\.g\. (\S+);"), "--parity-compare-fail")


def test_a_bad_diff_compare_fail_names_diff_s_option_and_its_example_is_accepted(tmp_path, capsys):
    old = tmp_path / "old.json"
    assert main(["diff", str(old), str(old), "--compare-fail", "error:soon"]) == 2
    message = capsys.readouterr().err
    assert "bad --compare-fail term 'error:soon'" in message
    assert set(FLAG.findall(message)) <= subcommand_flags()["diff"]
    assert parse_compare_fail(_advised(message, r"e\.g\. (\S+);"))


# ---------------------------------------------------------------- advice with a value, given back as written

def test_a_model_file_without_input_shapes_shows_an_input_spec_the_harness_accepts(tmp_path):
    """A TorchScript file says no shapes; the example's image spec, given back, makes the case."""
    import torch

    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.ReLU()).save(str(path))
    options = RunOptions(models=(str(path),), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                         trust_model_code=True)
    [(_, spec, error)] = resolve_models(options)
    assert spec is None and "carries no input shapes" in error, error
    advised = parse_input_specs([_advised(error, r"e\.g\. --input-spec '([^']+)'")])
    [case] = build_cases(replace(options, input_specs=advised))
    assert (case.skip, case.error) == (None, None)


@pytest.mark.parametrize("target, device", [("openvino", "cuda"), ("mnn", "cuda")])
def test_a_target_s_device_advice_makes_a_case_that_runs(target, device):
    """`run it with --device=cpu` for a CPU-only target asked for on CUDA: given back, the case is made."""
    options = RunOptions(models=("simple",), sources=("torch",), targets=(target,), devices=(device,),
                         reference_device="cpu")
    [case] = build_cases(options)
    advised = _advised(case.skip or case.error or "", r"--device=(\w+)")
    [case] = build_cases(replace(options, devices=(advised,)))
    assert (case.skip, case.error) == (None, None)


def _input_spec(value: str) -> object:
    return parse_input_specs([value])


def _converted_layouts(value: str) -> object:
    return parse_layouts("--converted-layouts", [value])


@pytest.mark.parametrize("parse, bad, given_back", [
    (parse_calibration, "normal:32:0:1", "{}"),
    (parse_calibration, "normal:many", "{}"),
    (_input_spec, "x", "{}"),
    (_input_spec, "x:float32[N]", "x:float32[{}]"),
    (_input_spec, "x:float32[2]::low..high", "x:float32[2]::{}"),
    (_input_spec, "x:float32[2,3]:NQ", "x:float32[2,3]:{}"),
    (_converted_layouts, "image", "{}"),
    (parse_path, ",", "{}"),
    (parse_labels, "labels.csv", "{}"),
])
def test_an_option_s_own_error_gives_an_example_the_option_accepts(parse, bad, given_back):
    """The example in a malformed value's error (`e.g. ...`), put where the message says, parses."""
    with pytest.raises(OptionError) as caught:
        parse(bad)
    parse(given_back.format(_advised(str(caught.value), r"e\.g\. (\S+?)[),;]*(?:\s|$)")))


def _taking_nhwc(exported: Path, out: Path) -> Path:
    """`exported` (an NCHW image model) taking its image as NHWC: a Transpose before its first node."""
    model = onnx.load(str(exported))
    [image] = model.graph.input
    n, c, h, w = (d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim)
    for node in model.graph.node:
        node.input[:] = ["nchw" if name == image.name else name for name in node.input]
    model.graph.node.insert(0, helper.make_node("Transpose", [image.name], ["nchw"], perm=[0, 3, 1, 2]))
    image.CopyFrom(helper.make_tensor_value_info(image.name, image.type.tensor_type.elem_type, [n, h, w, c]))
    onnx.save(model, str(out))
    return out


def test_a_converted_file_laid_out_otherwise_shows_converted_layouts_that_make_it_pass(tmp_path):
    """A user's NHWC file against the NCHW spec: the finding's --converted-layouts, given back, is taken
    (no finding) and the example passes."""
    from harness.cache import ArtifactCache
    from harness.engine import prepare_case, run_example
    from harness.inputs import example_recipe, make_inputs
    from tests import planted

    exported = planted.export_zoo("cnn", tmp_path / "nchw", exporter="torchscript")   # the quicker exporter
    converted = _taking_nhwc(exported, tmp_path / "nhwc.onnx")
    options = RunOptions(models=("cnn",), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                         converted=converted, cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports")
    cache = ArtifactCache(options.cache_dir)
    [case] = build_cases(options)
    [finding] = prepare_case(case, options, cache).warnings
    advised = _advised(finding.message, r"say so with --converted-layouts (\S+)$")
    options = replace(options, converted_layouts=parse_layouts("--converted-layouts", [advised]))
    [case] = build_cases(options)
    assert option_findings(options, [case]).errors == []
    prepared = prepare_case(case, options, cache)
    assert prepared.warnings == []
    outcome = run_example(prepared, make_inputs(prepared.spec, example_recipe(prepared.spec)))
    assert outcome.passed, [c.message for c in outcome.comparisons]
