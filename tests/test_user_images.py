"""--parity-inputs=FOLDER of images with --parity-preprocess=SPEC: each file
preprocessed as declared, checked against the spec like any feed, run through
both sides and recorded apart (the preprocessing, each example by its file).
The planted bug: a converted file that saturates its input at the spec's
domain passes every drawn example and fails on the raw pixels the model takes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.errors import CaseError, OptionError
from harness.image_inputs import EXAMPLE, Preprocess, parse_preprocess

IMAGENET = "mean=0.485/0.456/0.406,std=0.229/0.224/0.225"
# The test model's input: NCHW images of any size the example resizes to, batch 1..2, the default domain -4..4.
IMAGE_SPEC = "image:float32[N=1..2,3,H=16..224,W=16..224]:NCHW"


def write_images(folder: Path, count: int, size: tuple[int, int] = (20, 24), seed: int = 0,
                 suffix: str = ".png") -> Path:
    """`count` RGB images of `size` (height, width), seeded noise over a gradient, named img0.png, img1.png..."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    height, width = size
    for index in range(count):
        gradient = np.linspace(0, 200, width)[None, :, None] + np.linspace(0, 50, height)[:, None, None]
        pixels = np.clip(gradient + rng.integers(0, 56, (height, width, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"img{index}{suffix}")
    return folder


def write_normalising(path: Path, saturate_at: float | None = None, pixel_max: float = 255.0,
                      pooled: bool = True) -> Path:
    """A model that takes raw pixels (0..pixel_max) and normalises them itself (ImageNet's mean and std,
    folded in), then a 3x3 convolution and a global average: logits [N, 4]; where not `pooled`, the
    convolution's features [N, 4, H, W] (each pixel's, which move with the input where an average
    barely does). With `saturate_at`, the input is clipped to +-saturate_at first, as a converted file
    with an input range calibrated on the spec's draws does."""
    rng = np.random.default_rng(7)
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])
    output = (helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4]) if pooled else
              helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4, "H", "W"]))
    initializers = [
        numpy_helper.from_array((pixel_max * np.array([0.485, 0.456, 0.406], np.float32)).reshape(1, 3, 1, 1),
                                "mean"),
        numpy_helper.from_array((pixel_max * np.array([0.229, 0.224, 0.225], np.float32)).reshape(1, 3, 1, 1),
                                "std"),
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "weight"),
        numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "bias")]
    nodes = [helper.make_node("Sub", ["pixels", "mean"], ["centred"]),
             helper.make_node("Div", ["centred", "std"], ["normal"]),
             helper.make_node("Conv", ["normal", "weight", "bias"], ["features"], pads=[1, 1, 1, 1])]
    if pooled:
        nodes += [helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
                  helper.make_node("Flatten", ["pooled"], ["logits"])]
    if saturate_at is None:
        nodes.insert(0, helper.make_node("Identity", ["image"], ["pixels"]))
    else:
        initializers += [numpy_helper.from_array(np.array(-saturate_at, np.float32), "low"),
                         numpy_helper.from_array(np.array(saturate_at, np.float32), "high")]
        nodes.insert(0, helper.make_node("Clip", ["image", "low", "high"], ["pixels"]))
    model = helper.make_model(helper.make_graph(nodes, "normalising", [image], [output], initializer=initializers),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def run(tmp_path: Path, converted: Path, images: Path | None, preprocess: str = "") -> dict:
    """The normalising model against `converted` on ONNX Runtime's CPU provider, in process, as a run records it."""
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.options import RunOptions, parse_input_specs
    from harness.runner import run_case

    original = tmp_path / "normalising.onnx"
    if not original.exists():
        write_normalising(original)
    options = RunOptions(models=(str(original),), sources=("onnx",), targets=("onnxruntime",), devices=("cpu",),
                         examples=5, converted=converted, input_specs=parse_input_specs([IMAGE_SPEC]),
                         cache_dir=tmp_path / "cache", reports_dir=tmp_path / "reports", localize="off",
                         parity_inputs=str(images) if images else "", parity_preprocess=parse_preprocess(preprocess))
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()


# ---------------------------------------------------------------- through both sides

def test_an_image_folder_runs_as_declared_and_is_recorded_with_its_preprocessing(tmp_path):
    images = write_images(tmp_path / "images", 3)
    record = run(tmp_path, write_normalising(tmp_path / "converted.onnx"), images, "scale=1,layout=nchw")
    assert record["status"] == "passed", record["message"]
    user = record["user_inputs"]
    assert user["examples"] == 3 and user["passed"] == 3 and user["path"] == str(images)
    assert [r["example"] for r in user["results"]] == [f"{images}/img{i}.png" for i in range(3)]
    assert user["preprocess"] == {"resize": None, "crop": None, "scale": 1.0, "mean": [0.0], "std": [1.0],
                                  "channels": "rgb", "layout": "NCHW", "dtype": "float32"}


def test_a_file_saturating_its_input_passes_the_drawn_examples_and_fails_on_the_raw_pixels(tmp_path):
    saturating = write_normalising(tmp_path / "saturating.onnx", saturate_at=4.0)
    assert run(tmp_path, saturating, None)["status"] == "passed"   # the spec's domain, -4..4: never clipped
    images = write_images(tmp_path / "images", 3)
    record = run(tmp_path, saturating, images, "scale=1")
    assert record["status"] == "failed"
    assert record["message"].startswith(f"user example {images}/img0.png (0 of 3 of --parity-inputs {images} pass)")
    assert record["user_inputs"]["preprocess"]["scale"] == 1.0
    # images scaled to 0..1 stay within the clip: the same file passes them, as the check compares the two sides
    assert run(tmp_path, saturating, images, "scale=1/255")["status"] == "passed"


def test_an_image_folder_without_a_preprocessing_is_refused_and_the_example_given_works(tmp_path):
    images = write_images(tmp_path / "images", 2)
    converted = write_normalising(tmp_path / "converted.onnx")
    record = run(tmp_path, converted, images)
    assert record["status"] == "error" and record["stage"] == "inputs"
    assert record["message"] == (f"--parity-inputs {images} is a folder of images: declare how each becomes the "
                                 f"model's input, e.g. --parity-preprocess={EXAMPLE}")
    record = run(tmp_path, converted, images, record["message"].split("--parity-preprocess=")[1])
    assert record["status"] == "passed", record["message"]
    assert record["user_inputs"]["examples"] == 2


# ---------------------------------------------------------------- reading and checking, no model

def cnn_spec(batch: int | str = "N"):
    """The zoo cnn's spec (NCHW [N=1..4, 3, H=16..40, W=20..48]), its batch fixed where `batch` is a number."""
    from harness.registry import get_model

    spec = get_model("cnn")
    (image,) = spec.inputs
    return replace(spec, inputs=[replace(image, shape=(batch, *image.shape[1:]))])


def load(folder: Path, preprocess: str, spec=None, option: str = "--parity-inputs"):
    from harness.user_inputs import load_user_inputs

    spec = spec or cnn_spec()
    return load_user_inputs(str(folder), spec, {i.name: i.layout for i in spec.inputs}, 1024.0,
                            parse_preprocess(preprocess), option)


def test_each_step_of_the_preprocessing_gives_the_tensor_it_declares(tmp_path):
    from PIL import Image

    folder = write_images(tmp_path / "images", 1, size=(30, 40))
    pixels = np.asarray(Image.open(folder / "img0.png")).astype(np.float64)
    (example,) = load(folder, f"scale=1/255,{IMAGENET}").examples
    expected = (pixels / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(example.inputs["image"], expected.transpose(2, 0, 1)[None].astype(np.float32),
                               rtol=1e-6)
    (bgr,) = load(folder, "bgr").examples
    np.testing.assert_array_equal(bgr.inputs["image"], pixels[:, :, ::-1].transpose(2, 0, 1)[None])
    (cropped,) = load(folder, "resize=36x44,crop=20x24").examples
    resized = np.asarray(Image.open(folder / "img0.png").resize((44, 36), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(cropped.inputs["image"], resized[8:28, 10:34].transpose(2, 0, 1)[None])


def test_a_batch_of_b_takes_b_images_and_leaves_the_last_partial_group_out_with_a_note(tmp_path):
    folder = write_images(tmp_path / "images", 5)
    loaded = load(folder, "scale=1/255", cnn_spec(batch=2))
    assert [(e.name, e.inputs["image"].shape) for e in loaded.examples] == [
        (f"{folder}/img0.png+img1.png", (2, 3, 20, 24)), (f"{folder}/img2.png+img3.png", (2, 3, 20, 24))]
    assert loaded.note == "img4.png left out: fewer than the 2 images one example takes (input 'image''s batch)"
    # a symbolic batch takes its lower bound: one image each, none left out
    assert [e.inputs["image"].shape for e in load(folder, "scale=1/255").examples] == [(1, 3, 20, 24)] * 5


def test_an_nhwc_preprocessing_for_an_nchw_model_is_refused_naming_shapes_and_the_key_that_fixes_it(tmp_path):
    folder = write_images(tmp_path / "images", 2)
    with pytest.raises(CaseError) as raised:
        load(folder, "scale=1/255,layout=nhwc")
    assert raised.value.message == (
        f"--parity-inputs {folder}/img0.png: input 'image' is [1, 20, 24, 3], but model 'cnn' takes "
        "NCHW[N=1..4, 3, H=16..40, W=20..48]; it is laid out NHWC, the model takes NCHW: declare layout=nchw in "
        "--parity-preprocess")
    assert len(load(folder, "scale=1/255,layout=nchw").examples) == 2   # the advice, followed


@pytest.mark.parametrize("preprocess, says, fixed", [
    ("dtype=float16", "input 'image' is float16, but model 'cnn' takes float32: declare dtype=float32 in "
                      "--parity-preprocess", "dtype=float32"),
    ("resize=100x100", "input 'image' is [1, 3, 100, 100], but model 'cnn' takes NCHW[N=1..4, 3, H=16..40, "
                       "W=20..48]; declare resize=HxW or crop=HxW (and rgb, bgr or gray) in --parity-preprocess "
                       "to fit", "resize=32x40"),
])
def test_a_preprocessing_that_does_not_fit_the_spec_names_the_key(tmp_path, preprocess, says, fixed):
    folder = write_images(tmp_path / "images", 1)
    with pytest.raises(CaseError) as raised:
        load(folder, preprocess)
    assert raised.value.message == f"--parity-inputs {folder}/img0.png: {says}"
    assert len(load(folder, fixed).examples) == 1


def test_a_corrupt_image_stops_the_case_naming_the_file(tmp_path):
    folder = write_images(tmp_path / "images", 2)
    (folder / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image")
    with pytest.raises(CaseError) as raised:
        load(folder, "scale=1/255")
    assert raised.value.message.startswith(f"--parity-inputs {folder / 'img1.png'} cannot be read as an image "
                                           "(UnidentifiedImageError: ")
    assert raised.value.message.endswith("); replace it, or move it out of the folder")
    assert "\n" not in raised.value.message
    (folder / "img1.png").rename(tmp_path / "img1.png")   # the advice, followed
    assert len(load(folder, "scale=1/255").examples) == 1


def test_an_image_past_the_tensor_budget_is_refused_before_it_is_decoded(tmp_path):
    from harness.user_inputs import load_user_inputs

    folder = write_images(tmp_path / "images", 1)   # 20x24 RGB: 11520 bytes in float64, its PNG some 2 KiB
    spec = cnn_spec()
    with pytest.raises(CaseError) as raised:
        load_user_inputs(str(folder), spec, {"image": "NCHW"}, 0.01, parse_preprocess("scale=1/255"))
    assert raised.value.message == (f"--parity-inputs {folder / 'img0.png'} decodes to 11.2 KiB, more than the "
                                    "tensor budget of 10.2 KiB (--parity-max-tensor-mb): store it smaller, or raise "
                                    "--parity-max-tensor-mb")
    preprocess = parse_preprocess("scale=1/255")
    assert len(load_user_inputs(str(folder), spec, {"image": "NCHW"}, 0.02, preprocess).examples) == 1


@pytest.mark.parametrize("text, says", [
    ("scale=1/255,mean=0.5/0.5", "mean has 2 values for the 3 channels of rgb; give 3 (or one for all)"),
    ("gray,std=0.2/0.2/0.2", "std has 3 values for the 1 channels of gray; give 1 (or one for all)"),
    ("resize=224x224,normalize=imagenet", "unknown key 'normalize'; the keys are resize, crop, scale, mean, std, "
                                          f"layout, dtype, rgb, bgr, gray, e.g. --parity-preprocess={EXAMPLE}"),
    ("resize=224", "resize='224' is not HxW, e.g. 224x224"),
    ("scale=1/0", "scale='1/0' is not a number or A/B, e.g. 1/255"),
    ("layout=nhcw", "layout='nhcw' is not nchw or nhwc"),
    ("rgb,bgr", "channels is given twice; give it once"),
    ("dtype=uint8,scale=1/255", "dtype=uint8 takes the pixels as stored; drop scale, mean and std"),
    ("resize=20x24,crop=24x24", "crop=24x24 is larger than resize=20x24; crop at most the resized size"),
])
def test_a_malformed_preprocessing_is_refused_in_one_line_naming_the_key(text, says):
    with pytest.raises(OptionError) as raised:
        parse_preprocess(text)
    assert str(raised.value) == f"--parity-preprocess {text}: {says}"


def test_the_example_preprocessing_parses_to_what_it_says():
    assert parse_preprocess(EXAMPLE) == Preprocess(resize=(224, 224), scale=1 / 255, mean=(0.485, 0.456, 0.406),
                                                   std=(0.229, 0.224, 0.225), layout="NCHW", dtype="float32")
    assert parse_preprocess("") is None


def test_the_command_line_options_reach_the_case(run_parity, parity_dir):
    write_normalising(parity_dir / "normalising.onnx")
    write_normalising(parity_dir / "saturating.onnx", saturate_at=4.0)
    write_images(parity_dir / "images", 2)
    run = run_parity("--model=normalising.onnx", "--source=onnx", "--converted=saturating.onnx",
                     f"--input-spec={IMAGE_SPEC}", "--parity-inputs=images", "--parity-preprocess=scale=1")
    assert run.result.ret == 1 and run.single["status"] == "failed", run.output
    assert run.single["user_inputs"]["passed"] == 0 and run.single["user_inputs"]["preprocess"]["scale"] == 1.0
    run = run_parity("--model=normalising.onnx", "--source=onnx", "--parity-inputs=images",
                     "--parity-preprocess=scale=1,mean=0.5/0.5")
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR   # before any case
    assert ("--parity-preprocess scale=1,mean=0.5/0.5: mean has 2 values for the 3 channels of rgb; give 3 (or one "
            "for all)") in "\n".join(run.result.errlines)


def test_calibration_on_an_image_folder_asks_for_its_preprocessing_and_reads_it_as_parity_inputs_does(tmp_path):
    from harness.calibration import calibration_inputs
    from harness.calibration_settings import parse_calibration

    spec = cnn_spec()
    folder = write_images(tmp_path / "images", 2)
    with pytest.raises(OptionError) as raised:
        parse_calibration(str(folder))
    assert str(raised.value) == (f"--calibration {folder} is a folder of images: declare how each becomes the "
                                 f"model's input, e.g. --parity-preprocess={EXAMPLE}")
    settings = parse_calibration(str(folder), parse_preprocess("scale=1/255"))   # the advice, followed
    assert settings.preprocess == "scale=1/255"
    feed = calibration_inputs(spec, settings, {"image": "NHWC"})
    expected = [e.inputs["image"] for e in load(folder, "scale=1/255").examples]
    assert len(feed) == 2 and all(np.array_equal(f["image"], x.transpose(0, 2, 3, 1)) for f, x in zip(feed, expected))
    # a preprocessing is for images only: an .npz feed's settings carry none
    np.savez(tmp_path / "feed.npz", image=np.stack(expected))
    assert parse_calibration(str(tmp_path / "feed.npz"), parse_preprocess("scale=1/255")).preprocess is None


# The model takes images in 0..1 (ImageNet's normalisation folded in) and outputs its convolution's features.
UNIT_IMAGE_SPEC = "image:float32[N=1..2,3,H=16..64,W=16..64]:NCHW:0..1"


def run_int8_calibrated(tmp_path: Path, images: Path, preprocess: str) -> dict:
    """The unit-range model's own int8 build (onnx -> onnx-lowered) calibrated on `images` read as
    `preprocess` says, on ONNX Runtime's CPU provider."""
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.calibration_settings import parse_calibration
    from harness.options import RunOptions, parse_input_specs
    from harness.runner import run_case

    original = tmp_path / "unit.onnx"
    if not original.exists():
        write_normalising(original, pixel_max=1.0, pooled=False)
    options = RunOptions(models=(str(original),), sources=("onnx",), targets=("onnxruntime",), devices=("cpu",),
                         precisions=("int8",), examples=10, input_specs=parse_input_specs([UNIT_IMAGE_SPEC]),
                         calibration=parse_calibration(str(images), parse_preprocess(preprocess)),
                         parity_preprocess=parse_preprocess(preprocess), cache_dir=tmp_path / "cache",
                         reports_dir=tmp_path / "reports", localize="off")
    (case,) = build_cases(options)
    return run_case(case, options, ArtifactCache(options.cache_dir)).to_json()


def test_int8_calibrated_on_images_passes_and_a_changed_preprocessing_builds_again(tmp_path):
    images = write_images(tmp_path / "images", 8)
    first = run_int8_calibrated(tmp_path, images, "scale=1/255")
    assert first["status"] == "passed", first["message"]
    hop = first["provenance"]["hops"][-1] if "hops" in first["provenance"] else first["provenance"]
    assert hop["calibration"]["preprocess"] == "scale=1/255" and hop["calibration"]["samples"] == 8
    again = run_int8_calibrated(tmp_path, images, "scale=1/255")
    changed = run_int8_calibrated(tmp_path, images, "scale=1/255,mean=0.5")
    assert [r["provenance"]["cache_hit"] for r in (first, again, changed)] == [False, True, False]


def test_int8_calibrated_on_images_read_at_255x_their_range_fails_by_the_whole_output_thresholds(tmp_path):
    """scale=1 gives the pixels 0..255 to a model that takes 0..1: the input's int8 step is then ~2, and
    every drawn input quantizes to about 0. The Q/DQ pair check measures the pairs on that same feed,
    where they fit, and this case's build is the standard one (no floor apart from it): the int8
    thresholds on the drawn inputs, from the spec's 0..1, are what fail it."""
    images = write_images(tmp_path / "images", 8)
    record = run_int8_calibrated(tmp_path, images, "scale=1")
    assert record["status"] == "failed"
    assert record["message"].startswith("features: within its elementwise tolerance, but cosine "), record["message"]
    assert "< min_cosine 0.98" in record["message"].splitlines()[0]
    assert record["qdq_check"]["checked"] and record["qdq_check"]["findings"] == []


def test_a_preprocessing_with_nothing_to_apply_to_is_refused(tmp_path):
    from harness.image_inputs import check_preprocess_option

    preprocess = parse_preprocess("scale=1/255")
    with pytest.raises(OptionError) as raised:
        check_preprocess_option(preprocess, "", "")
    assert str(raised.value) == ("--parity-preprocess scale=1/255: it declares how the images of "
                                 "--parity-inputs=FOLDER or --calibration=FOLDER become the model's input; give "
                                 "either too")
    check_preprocess_option(preprocess, "images", "")   # the advice, followed
    check_preprocess_option(preprocess, "", "images")
    np.savez(tmp_path / "arrays.npz", image=np.zeros((1, 3, 20, 24), np.float32))
    with pytest.raises(CaseError) as refused:
        load(tmp_path / "arrays.npz", "scale=1/255")
    assert refused.value.message == (f"--parity-preprocess scale=1/255: --parity-inputs {tmp_path / 'arrays.npz'} "
                                     "holds no image, and --parity-preprocess applies to images only; drop it")
    assert len(load(tmp_path / "arrays.npz", "").examples) == 1


def test_the_run_header_keeps_the_preprocessing_as_typed_and_reads_it_back_parsed():
    """RunOptions holds the parsed Preprocess; parity.json's run header (a worker's, a shard's) the flag's text."""
    import json

    from harness.options import RunOptions

    typed = "resize=32x40,scale=1/255,bgr"
    options = RunOptions(parity_preprocess=parse_preprocess(typed))
    header = json.loads(json.dumps(options.to_json()))
    assert header["parity_preprocess"] == typed
    back = RunOptions.from_json(header)
    assert back == options and back.parity_preprocess == Preprocess(resize=(32, 40), scale=1 / 255, channels="bgr")
    assert back.parity_preprocess.text == typed and "text" not in back.parity_preprocess.to_json()
    assert RunOptions.from_json(RunOptions().to_json()).parity_preprocess is None   # the benign twin: none given
