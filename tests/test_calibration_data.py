"""`--calibration=PATH`: the user's own inputs as the int8 calibration feed. A
file changes the int8 build (its scales, its cache key, its provenance), a
changed file builds again, and a feed that does not fit the spec (another
layout, dtype, names) is refused with one line that says how to fix it."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from harness.cache import ArtifactCache
from harness.calibration import calibration_inputs
from harness.calibration_settings import Calibration, parse_calibration
from harness.converters import onnx_lower
from harness.errors import CaseError, OptionError
from harness.matrix import build_cases
from harness.options import RunOptions
from harness.registry import get_model
from harness.runner import run_case
from tests import planted
from tests.test_cache import KeyRecordingCache


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory):
    return planted.export_zoo("cnn", tmp_path_factory.mktemp("cnn"))


def _images(seed: int, examples: int = 6) -> np.ndarray:
    """Images in 0..1 (what a user's data loader gives), not the spec's default normal draws."""
    return np.random.default_rng(seed).uniform(0, 1, (examples, 2, 3, 24, 30)).astype(np.float32)


def _activation_scales(path) -> dict[str, float]:
    model = onnx.load(str(path))
    return {t.name: float(numpy_helper.to_array(t)) for t in model.graph.initializer
            if t.name.endswith("_scale") and not t.dims}


def _lower(source, out, calibration: Calibration) -> dict:
    spec = get_model("cnn")
    layouts = spec.source_layouts("torch")
    return onnx_lower.convert(source, spec, [], out, layouts=layouts, precision="int8",
                              calibration=calibration.for_spec(spec).to_json())


def test_a_feed_file_calibrates_the_int8_build(cnn_onnx, tmp_path):
    np.savez(tmp_path / "feed.npz", image=_images(0))
    from_file = parse_calibration(str(tmp_path / "feed.npz"))
    assert len(from_file.sha256) == 64
    provenance = _lower(cnn_onnx, tmp_path / "file", from_file)
    _lower(cnn_onnx, tmp_path / "generated", Calibration())
    assert provenance["calibration"]["sha256"] == from_file.sha256 and provenance["calibration"]["samples"] == 6
    assert provenance["calibration"]["source"] == f"the file {tmp_path / 'feed.npz'}"
    file_scales = _activation_scales(tmp_path / "file" / "model.onnx")
    generated_scales = _activation_scales(tmp_path / "generated" / "model.onnx")
    assert file_scales.keys() == generated_scales.keys()
    # the input's own scale: 0..1 images against the spec's normal draws
    assert file_scales["image_scale"] != pytest.approx(generated_scales["image_scale"], rel=0.1)


def test_a_folder_of_examples_is_a_feed_too(tmp_path):
    images = _images(1, examples=3)
    (tmp_path / "feed").mkdir()
    for index, image in enumerate(images):
        np.savez(tmp_path / "feed" / f"{index:03d}.npz", image=image)
    feed = calibration_inputs(get_model("cnn"), parse_calibration(str(tmp_path / "feed")), {"image": "NHWC"})
    assert len(feed) == 3
    assert np.array_equal(feed[2]["image"], images[2].transpose(0, 2, 3, 1))   # relaid for the file quantized


def _int8_case(tmp_path, feed) -> dict:
    options = RunOptions(models=("cnn",), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                         precisions=("int8",), calibration=parse_calibration(str(feed)), examples=2,
                         cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports", localize="off")
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()


def _spec_drawn_images(seed: int) -> np.ndarray:
    """The spec's own draws, so that the case passes and ends after its examples."""
    drawn = calibration_inputs(get_model("cnn"), Calibration(samples=4, seed=seed), {"image": "NCHW"})
    return np.stack([example["image"] for example in drawn])


def test_a_changed_feed_file_builds_again(tmp_path):
    feed = tmp_path / "feed.npz"
    np.savez(feed, image=_spec_drawn_images(0))
    first = _int8_case(tmp_path, feed)["provenance"]["hops"][-1]
    again = _int8_case(tmp_path, feed)["provenance"]["hops"][-1]
    np.savez(feed, image=_spec_drawn_images(1))
    changed = _int8_case(tmp_path, feed)["provenance"]["hops"][-1]
    assert (first["cache_hit"], again["cache_hit"], changed["cache_hit"]) == (False, True, False)
    assert changed["calibration"]["sha256"] != first["calibration"]["sha256"] == again["calibration"]["sha256"]


def test_a_feed_in_another_layout_is_refused_with_its_transpose(cnn_onnx, tmp_path):
    nhwc = _images(0).transpose(0, 1, 3, 4, 2)
    np.savez(tmp_path / "nhwc.npz", image=nhwc)
    with pytest.raises(CaseError) as error:
        _lower(cnn_onnx, tmp_path / "nhwc", parse_calibration(str(tmp_path / "nhwc.npz")))
    assert error.value.message == (
        f"--calibration {tmp_path / 'nhwc.npz'}[0]: input 'image' is [2, 24, 30, 3], but model 'cnn' takes "
        "NCHW[N=1..4, 3, H=16..40, W=20..48]; it is laid out NHWC, the model takes NCHW: save "
        "numpy.transpose(image, (0, 1, 4, 2, 3)) instead")
    # the advice, followed
    np.savez(tmp_path / "fixed.npz", image=np.transpose(nhwc, (0, 1, 4, 2, 3)))
    assert _lower(cnn_onnx, tmp_path / "fixed", parse_calibration(str(tmp_path / "fixed.npz")))["calibration"]


@pytest.mark.parametrize("arrays, says", [
    ({"pixels": _images(0)}, "feed.npz holds ['pixels'], but model 'cnn' takes the inputs ['image']"),
    ({"image": _images(0).astype(np.float64)}, "feed.npz[0]: input 'image' is float64, but model 'cnn' takes "
                                               "float32: save it with .astype('float32')"),
    ({"image": _images(0)[:, :, :, :8]}, "feed.npz[0]: input 'image' is [2, 3, 8, 30], but model 'cnn' takes "
                                         "NCHW[N=1..4, 3, H=16..40, W=20..48]; give it the spec's shape behind "
                                         "the leading example axis"),
])
def test_a_feed_that_does_not_fit_the_spec_is_refused(tmp_path, arrays, says):
    np.savez(tmp_path / "feed.npz", **arrays)
    with pytest.raises(CaseError) as error:
        calibration_inputs(get_model("cnn"), parse_calibration(str(tmp_path / "feed.npz")), {"image": "NCHW"})
    assert error.value.message.startswith(f"--calibration {tmp_path / says}")
    assert "\n" not in error.value.message


def test_a_path_that_is_no_feed_is_refused_at_once(tmp_path):
    with pytest.raises(OptionError) as error:
        parse_calibration(str(tmp_path / "missing.npz"))
    assert str(error.value) == (f"--calibration {tmp_path / 'missing.npz'} does not exist: give an .npz of arrays "
                                "named by input, or a folder of them (what --parity-inputs reads)")
    assert parse_calibration("uniform:64:7") == Calibration("uniform", 64, 7)   # a distribution, as before


@pytest.mark.parametrize("typed", ["", "uniform:64:7", ":8", "feed.npz"])
def test_the_run_header_keeps_calibration_as_typed_and_reads_it_back_parsed(tmp_path, monkeypatch, typed):
    """RunOptions holds the parsed settings; parity.json's run header (and a worker's, a shard's) the flag's
    text, exactly as before; from_json parses it again, where the options are built."""
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "feed.npz", image=_spec_drawn_images(0))
    options = RunOptions(calibration=parse_calibration(typed))
    header = json.loads(json.dumps(options.to_json()))
    assert header["calibration"] == typed
    back = RunOptions.from_json(header)
    assert isinstance(back.calibration, Calibration) and back == options and back.calibration.text == typed


def test_a_saved_run_whose_feed_file_is_gone_replays_fp32_and_refuses_int8_naming_it(tmp_path):
    feed = tmp_path / "feed.npz"
    header = RunOptions(models=("cnn",), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                        examples=2, cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports",
                        localize="off").to_json() | {"calibration": str(feed)}   # saved where the feed was
    options = RunOptions.from_json(header)   # on a machine without it: not refused
    (fp32,) = build_cases(options)
    assert run_case(fp32, options, ArtifactCache(options.cache_dir)).status == "passed"
    at_int8 = replace(options, precisions=("int8",))
    (int8,) = build_cases(at_int8)
    record = run_case(int8, at_int8, ArtifactCache(options.cache_dir)).to_json()
    assert (record["status"], record["message"]) == ("error", (
        f"--calibration {feed} does not exist on this machine, and this int8 case calibrates on it: put the feed "
        "there again, or give --calibration a feed that is here"))
    np.savez(feed, image=_spec_drawn_images(0))   # the advice, followed
    options = RunOptions.from_json(header | {"precisions": ["int8"]})
    record = run_case(int8, options, ArtifactCache(options.cache_dir)).to_json()
    assert record["status"] == "passed", record["message"]
    assert record["provenance"]["hops"][-1]["calibration"]["sha256"] == parse_calibration(str(feed)).sha256


def test_an_int8_case_keys_its_feed_settings_as_before(tmp_path):
    """The settings moved into RunOptions parsed: the quantizing hop's cache key still holds the
    settings alone (not the flag's text), so an existing cache still hits."""
    options = RunOptions(models=("cnn",), sources=("torch",), targets=("onnxruntime",), devices=("cpu",),
                         precisions=("int8",), calibration=parse_calibration("uniform:8:3"), examples=2,
                         cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports", localize="off")
    (case,) = build_cases(options)
    cache = KeyRecordingCache(options.cache_dir)
    assert run_case(case, options, cache).status == "passed"
    (quantized,) = [parts for parts in cache.parts if parts["options"].get("calibration")]
    assert quantized["options"]["calibration"] == {"distribution": "uniform", "samples": 8, "seed": 3, "file": None,
                                                   "sha256": None, "preprocess": None}
