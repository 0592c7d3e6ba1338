"""An image folder's declared preprocessing (`--parity-preprocess=SPEC`): how
each image file of --parity-inputs or --calibration becomes a model's input
tensor, parsed once into `Preprocess`,
and applied to one file by Pillow (imported only where an image is read).

SPEC is comma-separated: `resize=HxW` (bilinear, height x width), `crop=HxW`
(the centre, after the resize), `scale=A` or `A/B` (multiplies the pixel values
0..255), `mean=M1/M2/M3` and `std=S1/S2/S3` (per channel, after the scale: (x -
mean) / std; one value serves every channel), `rgb`, `bgr` or `gray` (the
channels and their order; rgb by default), `layout=nchw` or `nhwc` (nchw by
default), `dtype=float32` (float16, float64; uint8 takes the pixels as
stored). The steps run in that order: channels, resize, crop, scale, mean/std,
dtype, layout. Nothing else is done to an image: what the model receives is
what SPEC says.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import OptionError

OPTION = "--parity-preprocess"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
EXAMPLE = "resize=224x224,scale=1/255,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,rgb,layout=nchw,dtype=float32"
CHANNELS = {"rgb": 3, "bgr": 3, "gray": 1}
LAYOUTS = ("nchw", "nhwc")
DTYPES = ("float32", "float16", "float64", "uint8")
KEYS = ("resize", "crop", "scale", "mean", "std", "layout", "dtype", *CHANNELS)


@dataclass(frozen=True)
class Preprocess:
    """One image file to one input tensor (see the module docstring); sizes are (height, width)."""

    resize: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channels: str = "rgb"
    layout: str = "NCHW"
    dtype: str = "float32"
    text: str = field(default="", compare=False)   # --parity-preprocess as typed, for the run header; no step

    def to_json(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()
                if key != "text"}


def parse_preprocess(text: str) -> Preprocess | None:
    """`--parity-preprocess` as a Preprocess; None for ''. OptionError, one line naming the bad key."""
    if not text:
        return None
    values: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        key, _, value = item.partition("=")
        key = key.strip().lower()
        if key not in KEYS:
            raise OptionError(f"{OPTION} {text}: unknown key {key!r}; the keys are {', '.join(KEYS)}, e.g. "
                              f"{OPTION}={EXAMPLE}")
        if key in CHANNELS:
            key, value = "channels", key
        if key in values:
            raise OptionError(f"{OPTION} {text}: {key} is given twice; give it once")
        values[key] = _value(text, key, value.strip())
    preprocess = Preprocess(**values, text=text)
    channels = CHANNELS[preprocess.channels]
    for key in ("mean", "std"):
        if len(getattr(preprocess, key)) not in (1, channels):
            raise OptionError(f"{OPTION} {text}: {key} has {len(getattr(preprocess, key))} values for the "
                              f"{channels} channels of {preprocess.channels}; give {channels} (or one for all)")
    if 0.0 in preprocess.std:
        raise OptionError(f"{OPTION} {text}: std holds a 0, by which no value can be divided")
    if preprocess.dtype == "uint8" and (preprocess.scale, preprocess.mean, preprocess.std) != (1.0, (0.0,), (1.0,)):
        raise OptionError(f"{OPTION} {text}: dtype=uint8 takes the pixels as stored; drop scale, mean and std")
    if preprocess.crop and preprocess.resize and any(c > r for c, r in zip(preprocess.crop, preprocess.resize)):
        raise OptionError(f"{OPTION} {text}: crop={_size(preprocess.crop)} is larger than "
                          f"resize={_size(preprocess.resize)}; crop at most the resized size")
    return preprocess


def check_preprocess_option(preprocess: Preprocess | None, parity_inputs: str, calibration: str) -> None:
    """Refuse, before any case, a preprocessing with neither --parity-inputs nor --calibration to apply to."""
    if preprocess is not None and not (parity_inputs or calibration):
        raise OptionError(f"{OPTION} {preprocess.text}: it declares how the images of --parity-inputs=FOLDER or "
                          "--calibration=FOLDER become the model's input; give either too")


def _value(text: str, key: str, value: str) -> Any:
    """One key's value, typed; OptionError naming the key and its form."""
    forms = {"resize": "HxW, e.g. 224x224", "crop": "HxW, e.g. 224x224", "scale": "a number or A/B, e.g. 1/255",
             "mean": "numbers split by /, e.g. 0.485/0.456/0.406", "std": "numbers split by /, e.g. 0.229/0.224/0.225",
             "layout": " or ".join(LAYOUTS), "dtype": ", ".join(DTYPES)}
    try:
        if key == "channels":
            return value
        if key in ("resize", "crop"):
            height, width = (int(part) for part in value.lower().split("x"))
            if height < 1 or width < 1:
                raise ValueError
            return height, width
        if key == "scale":
            scale = float(Fraction(value))
            if scale <= 0:
                raise ValueError
            return scale
        if key in ("mean", "std"):
            return tuple(float(part) for part in value.split("/"))
        if key == "layout" and value.lower() in LAYOUTS:
            return value.upper()
        if key == "dtype" and value in DTYPES:
            return value
    except (ValueError, ZeroDivisionError):
        pass
    raise OptionError(f"{OPTION} {text}: {key}={value!r} is not {forms[key]}")


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


class ImageTooLarge(ValueError):
    """An image whose decoded pixels, in the float64 the preprocessing computes in, pass a budget."""

    def __init__(self, size: int):
        super().__init__(f"{size} bytes decoded")
        self.size = size


def read_image(file: Path, preprocess: Preprocess, max_bytes: int) -> np.ndarray:
    """`file` as one image tensor, [C, H, W] or [H, W, C] as preprocess.layout says (no batch axis).
    ImageTooLarge where its pixels as stored take more than `max_bytes` in float64 (read from its header,
    before any is decoded); else what Pillow raises for a file it cannot decode (the caller names the file)."""
    from PIL import Image

    with Image.open(file) as image:   # reads the header only
        size = image.width * image.height * CHANNELS[preprocess.channels] * 8
        if size > max_bytes:
            raise ImageTooLarge(size)
        image = image.convert("L" if preprocess.channels == "gray" else "RGB")
    if preprocess.resize:
        height, width = preprocess.resize
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    if preprocess.crop:
        height, width = preprocess.crop
        left, top = (image.width - width) // 2, (image.height - height) // 2
        image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image)
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels[:, :, ::-1] if preprocess.channels == "bgr" else pixels
    if preprocess.dtype != "uint8":   # computed in float64, rounded once to the declared dtype
        pixels = (pixels * preprocess.scale - np.array(preprocess.mean)) / np.array(preprocess.std)
    tensor = pixels.astype(preprocess.dtype)
    return np.ascontiguousarray(tensor.transpose(2, 0, 1) if preprocess.layout == "NCHW" else tensor)
