"""--parity-inputs: the user's own examples, for any source, run through both
sides before the drawn examples and recorded apart; checked against the spec as
they load (a feed in NHWC for an NCHW model is refused with its transpose);
with stored outputs (output:NAME arrays, ONNX test_data_set_N folders) a golden
set for any source. A converted file wrong only on the user's data fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.errors import CaseError


def run(tmp_path: Path, cache: Path, model: str, source: str, inputs: Path | None,
        converted: Path | None = None) -> dict:
    """The one case of `model` from `source` on ONNX Runtime's CPU provider, in process, as a run records it."""
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.options import RunOptions
    from harness.runner import run_case

    options = RunOptions(models=(model,), sources=(source,), targets=("onnxruntime",), devices=("cpu",), examples=3,
                         cache_dir=cache, reports_dir=tmp_path / "reports", localize="off", converted=converted,
                         parity_inputs=str(inputs) if inputs else "")
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()


def cnn_images(count: int, seed: int = 0) -> np.ndarray:
    """`count` examples of the zoo cnn's NCHW image at N=1, H=20, W=24, stacked on a leading axis."""
    return np.random.default_rng(seed).uniform(-3, 3, (count, 1, 3, 20, 24)).astype(np.float32)


# ---------------------------------------------------------------- a zoo model from torch

def test_three_user_examples_of_a_torch_model_pass_and_are_recorded_apart(tmp_path, shared_cache):
    np.savez(tmp_path / "mine.npz", image=cnn_images(3))
    record = run(tmp_path, shared_cache, "cnn", "torch", tmp_path / "mine.npz")
    assert record["status"] == "passed", record["message"]
    user = record["user_inputs"]
    assert user["examples"] == 3 and user["passed"] == 3 and user["path"] == str(tmp_path / "mine.npz")
    assert [r["example"] for r in user["results"]] == [f"{tmp_path / 'mine.npz'}[{i}]" for i in range(3)]
    assert 0 <= user["worst"]["features"]["error_ratio"] <= 1
    assert record["examples"] >= 3   # the drawn examples ran after them, as always


def test_a_feed_in_nhwc_for_an_nchw_model_is_refused_naming_shapes_and_the_transpose_that_works(
        tmp_path, shared_cache):
    nchw = cnn_images(3)
    np.savez(tmp_path / "nhwc.npz", image=np.transpose(nchw, (0, 1, 3, 4, 2)))
    record = run(tmp_path, shared_cache, "cnn", "torch", tmp_path / "nhwc.npz")
    assert record["status"] == "error" and record["stage"] == "inputs"
    message = record["message"]
    assert "\n" not in message
    assert message.startswith(f"--parity-inputs {tmp_path / 'nhwc.npz'}[0]: input 'image' is [1, 20, 24, 3]")
    assert "takes NCHW[N=1..4, 3, H=16..40, W=20..48]" in message
    assert message.endswith("it is laid out NHWC, the model takes NCHW: save "
                            "numpy.transpose(image, (0, 1, 4, 2, 3)) instead")

    image = np.transpose(np.load(tmp_path / "nhwc.npz")["image"], (0, 1, 4, 2, 3))   # the advice, followed
    np.savez(tmp_path / "nchw.npz", image=image)
    record = run(tmp_path, shared_cache, "cnn", "torch", tmp_path / "nchw.npz")
    assert record["status"] == "passed", record["message"]
    assert record["user_inputs"]["passed"] == 3


def write_cnn_test_data(folder: Path, error: float = 0.0) -> Path:
    """Two ONNX test_data_set_N folders of the zoo cnn, their outputs computed by the torch model (off by
    `error`, relative, in every element)."""
    import torch

    from model_zoo.torch_models import build_cnn

    model = build_cnn().eval()
    for index, image in enumerate(cnn_images(2, seed=1)):
        with torch.no_grad():
            features = model(torch.from_numpy(image)).numpy() * np.float32(1 + error)
        data = folder / f"test_data_set_{index}"
        data.mkdir(parents=True)
        (data / "input_0.pb").write_bytes(numpy_helper.from_array(image, "image").SerializeToString())
        (data / "output_0.pb").write_bytes(numpy_helper.from_array(features, "features").SerializeToString())
    return folder


def test_test_data_folders_are_a_golden_set_for_a_torch_model(tmp_path, shared_cache):
    record = run(tmp_path, shared_cache, "cnn", "torch", write_cnn_test_data(tmp_path / "good"))
    assert record["status"] == "passed", record["message"]
    stored = record["user_inputs"]["stored_outputs"]
    assert stored["sets"] == 2 and stored["passed"] == 2 and stored["tolerance"]["features"]["rtol"] == 1e-3

    record = run(tmp_path, shared_cache, "cnn", "torch", write_cnn_test_data(tmp_path / "off", error=1e-2))
    assert record["status"] == "failed"
    assert record["message"].startswith(f"user example {tmp_path / 'off' / 'test_data_set_0'} (0 of 2 of "
                                        f"--parity-inputs {tmp_path / 'off'} pass): against its stored outputs: ")
    assert record["user_inputs"]["worst"]["features"]["error_ratio"] <= 1   # the reference agreed: the stored did not


# ---------------------------------------------------------------- a bug only the user's data shows

def write_doubling(path: Path, wrong_above: float | None = None) -> Path:
    """y = 2x over x [N, 3]; with `wrong_above`, y = 2x + 1 where x > wrong_above (a converted file wrong only
    on large inputs)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    two = numpy_helper.from_array(np.array(2, np.float32), "two")
    nodes = [helper.make_node("Mul", ["x", "two"], ["y" if wrong_above is None else "doubled"])]
    initializers = [two]
    if wrong_above is not None:
        initializers += [numpy_helper.from_array(np.array(wrong_above, np.float32), "edge"),
                         numpy_helper.from_array(np.array(1, np.float32), "one")]
        nodes += [helper.make_node("Greater", ["x", "edge"], ["large"]),
                  helper.make_node("Add", ["doubled", "one"], ["off"]),
                  helper.make_node("Where", ["large", "off", "doubled"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "doubling", [x], [y], initializer=initializers),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_a_converted_file_wrong_only_on_the_users_data_fails_because_of_it(tmp_path):
    from harness.__main__ import replay

    original = write_doubling(tmp_path / "doubling.onnx")
    wrong = write_doubling(tmp_path / "wrong.onnx", wrong_above=10.0)
    large = np.random.default_rng(2).uniform(11, 20, (3, 2, 3)).astype(np.float32)
    np.savez(tmp_path / "large.npz", x=large)

    drawn_only = run(tmp_path, tmp_path / "cache", str(original), "onnx", None, converted=wrong)
    assert drawn_only["status"] == "passed"   # the drawn inputs, within -4..4, never reach the bug

    record = run(tmp_path, tmp_path / "cache", str(original), "onnx", tmp_path / "large.npz", converted=wrong)
    assert record["status"] == "failed"
    assert record["message"].startswith(f"user example {tmp_path / 'large.npz'}[0] (0 of 3 of --parity-inputs "
                                        f"{tmp_path / 'large.npz'} pass): y: ")
    assert all(o.get("passed", True) for o in record["outputs"].values())   # the drawn examples passed
    failure = record["user_inputs"]["failure"]
    assert f"failing user example: {failure['npz']}\nreplay: {failure['replay']}" in record["message"]
    saved = np.load(failure["npz"])
    np.testing.assert_array_equal(saved["input:x"], large[0])
    assert failure["replay"] == (f"python -m harness replay {failure['npz']} --model {original} "
                                 f"--converted {wrong} --cache-dir {tmp_path / 'cache'}")
    assert replay(Path(failure["npz"]), str(original), wrong, False, tmp_path / "cache") == 1

    twin = run(tmp_path, tmp_path / "cache", str(original), "onnx", tmp_path / "large.npz", converted=original)
    assert twin["status"] == "passed", twin["message"]
    assert twin["user_inputs"]["passed"] == 3


def test_stored_outputs_in_an_npz_hold_the_target_to_them(tmp_path):
    original = write_doubling(tmp_path / "doubling.onnx")
    x = np.random.default_rng(3).standard_normal((2, 4, 3)).astype(np.float32)
    np.savez(tmp_path / "right.npz", x=x, **{"output:y": 2 * x})
    np.savez(tmp_path / "off.npz", x=x, **{"output:y": 2 * x + 0.5})
    assert run(tmp_path, tmp_path / "cache", str(original), "onnx", tmp_path / "right.npz")["status"] == "passed"
    record = run(tmp_path, tmp_path / "cache", str(original), "onnx", tmp_path / "off.npz")
    assert record["status"] == "failed" and "against its stored outputs: y: " in record["message"]


# ---------------------------------------------------------------- reading and checking, no model

def simple_spec():
    from harness.registry import zoo_models

    return zoo_models()["simple"]


def load(path: Path):
    from harness.user_inputs import load_user_inputs

    spec = simple_spec()
    return load_user_inputs(str(path), spec, spec.source_layouts("torch")[0], 1024.0)


def test_the_rank_decides_whether_an_array_stacks_examples(tmp_path):
    np.savez(tmp_path / "one.npz", input=np.ones((3, 3), np.float32))
    np.savez(tmp_path / "three.npz", input=np.ones((3, 1, 3), np.float32))
    assert [e.inputs["input"].shape for e in load(tmp_path / "one.npz").examples] == [(3, 3)]
    assert [e.inputs["input"].shape for e in load(tmp_path / "three.npz").examples] == [(1, 3)] * 3
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "input.npy", np.ones((2, 2, 3), np.float32))
    np.savez(folder / "a.npz", input=np.ones((4, 3), np.float32))
    assert [(e.name, e.inputs["input"].shape) for e in load(folder).examples] == [
        (f"{folder / 'a.npz'}", (4, 3)), (f"{folder}/*.npy[0]", (2, 3)), (f"{folder}/*.npy[1]", (2, 3))]


@pytest.mark.parametrize("arrays, message", [
    ({"input": np.ones((1, 3))}, "input 'input' is float64, but model 'simple' takes float32: save it with "
                                 ".astype('float32')"),
    ({"inputs": np.ones((1, 3), np.float32)}, "holds ['inputs'], but model 'simple' takes the inputs ['input'] "
                                              "(and gives ['output']): name each array after its input"),
    ({"input": np.ones((5, 3), np.float32)}, "input 'input' is [5, 3], but model 'simple' takes NC[N=1..4, 3]; "
                                             "give it the spec's shape"),
])
def test_a_feed_that_does_not_fit_the_spec_is_refused_in_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CaseError) as raised:
        load(tmp_path / "bad.npz")
    assert message in raised.value.message and "\n" not in raised.value.message
    assert raised.value.message.startswith(f"--parity-inputs {tmp_path / 'bad.npz'}")


def test_a_pickled_array_is_refused_unread(tmp_path):
    np.savez(tmp_path / "pickled.npz", input=np.array([object()], dtype=object))
    with pytest.raises(CaseError, match=r"cannot be read as plain arrays \(ValueError: Object arrays cannot be "
                                        r"loaded when allow_pickle=False\)"):
        load(tmp_path / "pickled.npz")


def test_the_command_line_option_reaches_the_case(run_parity, parity_dir):
    original = write_doubling(parity_dir / "doubling.onnx")
    wrong = write_doubling(parity_dir / "wrong.onnx", wrong_above=10.0)
    np.savez(parity_dir / "large.npz", x=np.full((1, 3), 12.0, np.float32))
    run = run_parity(f"--model={original}", "--source=onnx", f"--converted={wrong}", "--parity-inputs=large.npz")
    assert run.result.ret == 1 and run.single["status"] == "failed", run.output
    assert run.single["user_inputs"]["examples"] == 1 and run.single["user_inputs"]["passed"] == 0
