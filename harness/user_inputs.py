"""The user's own examples (`--parity-inputs=PATH`), for any source: checked
against the model's spec as they load, run through both sides before the drawn
examples (`golden.check_user_inputs`), and recorded apart (`record["user_inputs"]`).

What PATH may be:

- a `.npz` whose arrays are named by the model's inputs, in the spec's layouts.
  An array of its input's rank is one example; of that rank + 1, a stack of
  examples on a leading axis (so [3, 1, 3] is three examples of a [N, 3] input
  at N=1, and [3, 3] one example at N=3: the rank decides, never the sizes).
  Arrays named `output:NAME` are the outputs the model should give, as the
  original returns them: the target is then held to them as to a golden set
  (golden.py), whatever the source.
- a folder of such `.npz` files (read in name order), and/or of `.npy` files
  named INPUT.npy (one per input, read together as one more `.npz` would be);
- a folder of ONNX `test_data_set_N` folders (`input_K.pb`, `output_K.pb`,
  matched to the spec's inputs and outputs by name or by position), in the
  original's layouts, their outputs a golden set;
- a folder of images (.png, .jpg, .jpeg, .bmp), for a model with one image input,
  read in name order with the preprocessing `--parity-preprocess` declares
  (harness/image_inputs.py; without it the folder is refused, the message
  showing a whole example): each image one example, or B of them where the
  spec's batch dim is B (its lower bound where symbolic; a last group of fewer
  is dropped, and the record says which files). A file that cannot be decoded
  stops the case, named: a run on part of the user's data would say less than
  it seems to. An image whose pixels in float64 pass the tensor budget is
  refused from its header, before it is decoded.

The reader takes the option it reads for (`option`: --parity-inputs, or
--calibration in calibration.py), so each message names the option given.

Every array is read with `allow_pickle=False`; a file holding more than the
tensor budget (`--parity-max-tensor-mb`, each file or member) is refused
before it is read, an `.npz` whose members expand past model_file's zip budget
too. Each example must name every input, in the spec's dtype, with a shape
within its dims' bounds (one value per symbolic dim across inputs); a feed in
another layout than the spec's (NHWC for NCHW) is refused with the transpose
that fixes it. Nothing is cast or transposed silently.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import CaseError
from harness.image_inputs import EXAMPLE as PREPROCESS_EXAMPLE
from harness.image_inputs import OPTION as PREPROCESS_OPTION
from harness.image_inputs import ImageTooLarge, Preprocess, is_image, read_image
from harness.layouts import permutation, relaid
from harness.model_file import check_zip_budget, format_bytes, not_a_file
from harness.shape_check import dims_fit, other_layout, show_dims, spec_shape
from harness.specs import ModelSpec

# What numpy.load raises on a file it cannot read without unpickling: a pickled or malformed array
# (ValueError), a damaged archive member (BadZipFile, EOFError), an unreadable file (OSError)
ARRAY_FILE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)
OUTPUT_PREFIX = "output:"   # an .npz array of this prefix holds a stored output, named by the spec's output
OPTION = "--parity-inputs"


@dataclass(frozen=True)
class UserExample:
    name: str                             # where it came from: "inputs.npz[2]", "test_data_set_0"
    inputs: dict[str, np.ndarray]         # by the spec's input names, in the spec's layouts
    outputs: list[np.ndarray] | None      # stored outputs in the spec's order, as the original returns them


@dataclass(frozen=True)
class UserInputs:
    path: str
    examples: list[UserExample]
    preprocess: Preprocess | None = None   # an image folder's, as declared
    note: str | None = None                # what was left out of PATH, and why


def load_user_inputs(path: str, spec: ModelSpec, source_layouts: dict[str, str | None], max_tensor_mb: float,
                     preprocess: Preprocess | None = None, option: str = OPTION) -> UserInputs:
    """The examples at `path`, each checked against `spec`; CaseError("inputs"), one line naming the file,
    `option` (the one PATH was given to) and what to do, for anything else. source_layouts: the original's
    input layouts (a test-data set's); preprocess: --parity-preprocess, for an image folder (None: none
    given)."""
    root = Path(path)
    budget = int(max_tensor_mb * 2**20)
    if root.is_dir() and any(is_image(file) for file in root.iterdir()):
        return _read_images(root, spec, preprocess, budget, option)
    if preprocess is not None:
        raise CaseError("inputs", f"{PREPROCESS_OPTION} {preprocess.text}: {option} {root} holds no image, and "
                                  f"{PREPROCESS_OPTION} applies to images only; drop it")
    if root.is_file():
        sets = _read_npz(root, budget, option)
    elif root.is_dir():
        sets = _read_folder(root, spec, source_layouts, budget, option)
    else:
        raise CaseError("inputs", f"{option} {root} {not_a_file(root)}: give an .npz, or a folder of .npz/.npy "
                                  "files, of test_data_set_N folders or of images")
    if not sets:
        raise CaseError("inputs", f"{option} {root} holds no example: give an .npz of arrays named by input "
                                  f"({', '.join(i.name for i in spec.inputs)}), or a folder of them")
    examples = [example for where, arrays in sets for example in _examples(where, arrays, spec, option)]
    return UserInputs(path=str(root), examples=examples)


def _read_images(root: Path, spec: ModelSpec, preprocess: Preprocess | None, budget: int,
                 option: str) -> UserInputs:
    """An image folder's examples, each file preprocessed as declared; B files to an example where the
    spec's batch dim is B (module docstring)."""
    if preprocess is None:
        raise CaseError("inputs", f"{option} {root} is a folder of images: declare how each becomes the model's "
                                  f"input, e.g. {PREPROCESS_OPTION}={PREPROCESS_EXAMPLE}")
    arrays = sorted(file.name for file in root.iterdir()
                    if file.suffix in (".npz", ".npy") or file.name.startswith("test_data_set_"))
    if arrays:
        raise CaseError("inputs", f"{option} {root} holds images and arrays ({', '.join(arrays[:3])}): give "
                                  "the images in a folder of their own")
    if len(spec.inputs) != 1:
        raise CaseError("inputs", f"{option} {root} is a folder of images, for a model with one input, but model "
                                  f"{spec.name!r} takes {[i.name for i in spec.inputs]}: give an .npz of arrays "
                                  "named by input")
    (inp,) = spec.inputs
    files = sorted(file for file in root.iterdir() if is_image(file) and file.is_file())
    # an image has no batch axis: the spec's rank 4 stacks `batch` images, its lower bound where symbolic
    batch = (inp.dims[inp.shape[0]][0] if isinstance(inp.shape[0], str) else inp.shape[0]) if len(inp.shape) == 4 \
        else None
    group = batch or 1
    if len(files) < group:
        raise CaseError("inputs", f"{option} {root} holds {len(files)} images, but model {spec.name!r} takes "
                                  f"{group} in one example (input {inp.name!r}'s batch): give at least {group}")
    remedy = {"dtype": f"declare dtype={{dtype}} in {PREPROCESS_OPTION}",
              "layout": f"declare layout={{layout}} in {PREPROCESS_OPTION}",
              "shape": f"declare resize=HxW or crop=HxW (and rgb, bgr or gray) in {PREPROCESS_OPTION} to fit"}
    examples = []
    for start in range(0, len(files) - group + 1, group):
        names = [file.name for file in files[start:start + group]]
        where = f"{root}/{'+'.join(names)}"
        images = [_read_image(file, preprocess, budget, option) for file in files[start:start + group]]
        tensors = {inp.name: np.stack(images) if batch else images[0]}
        check_example(where, tensors, spec, option=option, remedy=remedy)
        examples.append(UserExample(where, tensors, None))
    dropped = [file.name for file in files[len(examples) * group:]]
    note = (f"{', '.join(dropped)} left out: fewer than the {group} images one example takes (input "
            f"{inp.name!r}'s batch)") if dropped else None
    return UserInputs(path=str(root), examples=examples, preprocess=preprocess, note=note)


def _read_image(file: Path, preprocess: Preprocess, budget: int, option: str) -> np.ndarray:
    """One image file, preprocessed; CaseError naming it where Pillow cannot decode it."""
    _check_size(file, file.stat().st_size, budget, option)
    try:
        return read_image(file, preprocess, budget)
    except ImageTooLarge as error:
        raise CaseError("inputs", f"{option} {file} decodes to {format_bytes(error.size)}, more than the tensor "
                                  f"budget of {format_bytes(budget)} (--parity-max-tensor-mb): store it smaller, or "
                                  "raise --parity-max-tensor-mb") from None
    except Exception as error:   # Pillow's plugins raise many types: UnidentifiedImageError, OSError, a bomb's error
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise CaseError("inputs", f"{option} {file} cannot be read as an image ({type(error).__name__}: {first}); "
                                  "replace it, or move it out of the folder") from None


def _read_folder(root: Path, spec: ModelSpec, source_layouts: dict[str, str | None],
                 budget: int, option: str) -> list[tuple[str, dict[str, np.ndarray]]]:
    from harness.sources.onnx import GOLDEN_SET, read_test_data_sets

    if any(GOLDEN_SET.match(p.name) and p.is_dir() for p in root.iterdir()):
        for tensor_file in root.glob("test_data_set_*/*.pb"):
            _check_size(tensor_file, tensor_file.stat().st_size, budget, option)
        sets = read_test_data_sets(root, [i.name for i in spec.inputs], [o.name for o in spec.outputs])
        # stored in the original's layouts (ONNX's test data is the model's own); examples hold the spec's,
        # writable (onnx's arrays are views of the file's bytes, which torch.from_numpy warns of)
        return [(f"{root / name}", {**{i.name: np.array(relaid(inputs[i.name], source_layouts[i.name], i.layout))
                                       for i in spec.inputs},
                                    **{OUTPUT_PREFIX + o.name: value for o, value in zip(spec.outputs, outputs)}})
                for inputs, outputs, name in sets]
    sets = [set_ for file in sorted(root.glob("*.npz")) for set_ in _read_npz(file, budget, option)]
    arrays = {}
    for file in sorted(root.glob("*.npy")):
        _check_size(file, file.stat().st_size, budget, option)
        arrays[file.stem] = _load(file, lambda path: np.load(path, allow_pickle=False), option)
    return sets + ([(f"{root}/*.npy", arrays)] if arrays else [])


def _read_npz(file: Path, budget: int, option: str) -> list[tuple[str, dict[str, np.ndarray]]]:
    if not zipfile.is_zipfile(file):
        raise CaseError("inputs", f"{option} {file} is not an .npz (zip) archive: save the arrays with numpy.savez")
    with zipfile.ZipFile(file) as archive:
        members = archive.infolist()
    check_zip_budget(file, members, f"{option} file")
    for member in members:
        _check_size(Path(f"{file}:{member.filename}"), member.file_size, budget, option)

    def read(path: Path) -> dict[str, np.ndarray]:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    return [(str(file), _load(file, read, option))]


def _load(file: Path, read: Any, option: str) -> Any:
    try:
        return read(file)
    except ARRAY_FILE_ERRORS as error:
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise CaseError("inputs", f"{option} {file} cannot be read as plain arrays ({type(error).__name__}: "
                                  f"{first}); save them with numpy.savez, without object arrays") from None


def _check_size(where: Path, size: int, budget: int, option: str) -> None:
    if size > budget:
        raise CaseError("inputs", f"{option} {where} holds {format_bytes(size)}, more than the tensor budget of "
                                  f"{format_bytes(budget)} (--parity-max-tensor-mb): split it into a folder of "
                                  ".npz files, one example each, or raise --parity-max-tensor-mb")


def _examples(where: str, arrays: dict[str, np.ndarray], spec: ModelSpec, option: str) -> list[UserExample]:
    """One stored set's examples: one, or one per index of its leading example axis (see the module docstring)."""
    names = [i.name for i in spec.inputs]
    outputs = {name[len(OUTPUT_PREFIX):]: value for name, value in arrays.items() if name.startswith(OUTPUT_PREFIX)}
    inputs = {name: value for name, value in arrays.items() if not name.startswith(OUTPUT_PREFIX)}
    if sorted(inputs) != sorted(names) or not set(outputs) <= {o.name for o in spec.outputs}:
        stored = sorted(inputs) + [OUTPUT_PREFIX + name for name in sorted(outputs)]
        raise CaseError("inputs", f"{option} {where} holds {stored}, but model {spec.name!r} takes the inputs "
                                  f"{names} (and gives {[o.name for o in spec.outputs]}): name each array after its "
                                  f"input, each stored output {OUTPUT_PREFIX}NAME")
    if outputs and len(outputs) != len(spec.outputs):
        raise CaseError("inputs", f"{option} {where} stores the outputs {sorted(outputs)} but not "
                                  f"{sorted({o.name for o in spec.outputs} - set(outputs))}: store all or none")
    stacked = {i.name: inputs[i.name].ndim == len(i.shape) + 1 for i in spec.inputs}
    if len(set(stacked.values())) > 1:
        raise CaseError("inputs", f"{option} {where}: {[n for n, s in stacked.items() if s]} carry a leading example "
                                  f"axis and {[n for n, s in stacked.items() if not s]} do not: give every input one, "
                                  "or none")
    if not any(stacked.values()):
        examples = [(where, inputs, outputs)]
    else:
        counts = {len(value) for value in [*inputs.values(), *outputs.values()]}
        if len(counts) != 1:
            shapes = ", ".join(f"{name}: {list(value.shape)}" for name, value in arrays.items())
            raise CaseError("inputs", f"{option} {where}: the arrays' leading example axes differ ({shapes}): "
                                      "give each array one entry per example")
        examples = [(f"{where}[{index}]", {n: v[index] for n, v in inputs.items()},
                     {n: v[index] for n, v in outputs.items()}) for index in range(counts.pop())]
    for name, tensors, _ in examples:
        check_example(name, tensors, spec, stacked=any(stacked.values()), option=option)
    return [UserExample(name, tensors, [stored[o.name] for o in spec.outputs] if stored else None)
            for name, tensors, stored in examples]


def check_example(where: str, tensors: dict[str, np.ndarray], spec: ModelSpec, stacked: bool = False,
                  option: str = OPTION, remedy: dict[str, str] | None = None) -> None:
    """CaseError unless every input of `tensors` has the spec's dtype and a shape within its dims' bounds in
    the spec's layout, one value per symbolic dim; a tensor that fits another order of its axes is named with
    the transpose that fixes it (`stacked`: the file holds it behind an example axis, which the transpose keeps).
    remedy: where the tensors were made, not saved (an image folder), the advice for a wrong "dtype", "layout"
    or "shape" instead, formatted with the input's {dtype} and lower-case {layout}."""
    taken: dict[str, tuple[int, str]] = {}
    for inp in spec.inputs:
        array = tensors[inp.name]
        fix = {key: advice.format(dtype=inp.dtype, layout=(inp.layout or "").lower())
               for key, advice in (remedy or {}).items()}
        if array.dtype != np.dtype(inp.dtype):
            raise CaseError("inputs", f"{option} {where}: input {inp.name!r} is {array.dtype}, but model "
                                      f"{spec.name!r} takes {inp.dtype}: "
                                      + fix.get("dtype", f"save it with .astype('{inp.dtype}')"))
        expected = spec_shape(inp, None)
        if not dims_fit(array.shape, expected, inp.dims):
            wanted = show_dims([f"{d}={inp.dims[d][0]}..{inp.dims[d][1]}" if isinstance(d, str) else d for d in expected])
            other = other_layout(inp, array.shape, inp.layout)
            if other:
                axes = permutation(other, inp.layout)
                axes = (0, *(a + 1 for a in axes)) if stacked else axes
                advice = (f"it is laid out {other}, the model takes {inp.layout}: "
                          + fix.get("layout", f"save numpy.transpose({inp.name}, {axes}) instead"))
            else:
                advice = fix.get("shape", "give it the spec's shape"
                                 + (" behind the leading example axis" if stacked else ""))
            raise CaseError("inputs", f"{option} {where}: input {inp.name!r} is {show_dims(array.shape)}, but model "
                                      f"{spec.name!r} takes {inp.layout or ''}{wanted}; {advice}")
        for dim, size in zip(inp.shape, array.shape):
            if isinstance(dim, str) and taken.setdefault(dim, (size, inp.name))[0] != size:
                raise CaseError("inputs", f"{option} {where}: input {inp.name!r} has {dim}={size}, input "
                                          f"{taken[dim][1]!r} {dim}={taken[dim][0]}: one example gives each "
                                          "dim one size")


def user_inputs_failure(entry: dict[str, Any]) -> str | None:
    """The message of the first user example that fails, or None."""
    for result in entry["results"]:
        if not result["passed"]:
            return (f"user example {result['example']} ({entry['passed']} of {entry['examples']} of {OPTION} "
                    f"{entry['path']} pass): {result['message']}")
    return None
