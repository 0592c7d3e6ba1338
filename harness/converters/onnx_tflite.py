"""ONNX file -> TFLite (LiteRT) with onnx2tf, a second path to LiteRT beside
tf->tflite (torch -> onnx -> tflite; a Keras model takes it only with --path).

onnx2tf rebuilds the graph op by op in TensorFlow and turns channel-first
tensors channel-last (an NCHW input becomes NHWC), then converts with
TFLiteConverter; it writes `<name>_float32.tflite` and `<name>_float16.tflite`
(float16 weights): only the float32 file is kept, as `model.tflite`.

It runs in a child interpreter with a time limit (`run_tool`): onnx2tf sets
Keras and TensorFlow modes process-wide when imported (tf_keras, seeds), and a
crash or a hang is this case's CaseError("convert") naming the model and quoting
the tool's last lines. No download, ever: onnx2tf fetches a sample image set
from GitHub for its output check on 4D image inputs with a fixed batch <= 20,
and for int8 calibration. The check (`check_onnx_tf_outputs_elementwise_close*`)
and quantized outputs stay off; the child replaces every socket connect with a
refusal (`CHILD`), so an attempt fails at once instead of waiting on a network,
and the download function with seeded local images of the download's shape
(`SAMPLE_IMAGES_SHAPE`): onnx2tf runs a static image model on them whatever its
options, and failed on every one of them while the download was refused.

Layouts are read back, never assumed. The written file's input shape
signatures are matched against the spec's shape in every order of the input
layout's axes (`shape_check.input_findings`); onnx2tf's own rule (the channel
axis moved last) is taken when it fits, and any other order that fits the
declared dims as well (open dims fit anything) is listed in the provenance
("layout_evidence"). Output layouts come from a probe: the example is run on
the source ONNX (onnxruntime) and on the written file (through the tflite
runtime's own binding, as the engine will run it), and each output's layout is
the order of its ONNX layout's axes that turns the ONNX result's shape into the
file's (equal sizes: the order whose values agree best, recorded as
ambiguous). The probe also refuses a file whose outputs do not bind in the
spec's order.

Other traps: `copy_onnx_input_output_names_to_tflite` needs flatc and, without
it, silently renames nothing, so it is not used: outputs are named "Identity",
... and bind by position (checked by the probe). onnxsim would be run as a
command (`not_use_onnxsim=True`: the harness converts the ONNX it exported).
onnx2tf converts with SELECT_TF_OPS allowed, so an op without a builtin kernel
becomes a Flex op that LiteRT here cannot run: the probe's load fails, as a
CaseError("convert") naming it. Erf (torch's exact GELU, where onnx2tf does not
spot the GELU pattern) is the zoo's case: `replace_to_pseudo_operators=["erf"]`
computes it with a polynomial (|error| <= 1.5e-7).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from itertools import permutations
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.converters.child_tool import run_child, status, tail
from harness.converters.onnx_checks import check_source
from harness.errors import CaseError, summarize_exception
from harness.layouts import relaid
from harness.model_file import file_sha256
from harness.shape_check import input_findings
from harness.specs import ModelSpec

NAME = "onnx2tf"
READS = ("onnx",)
WRITES = "tflite"
REVISION = 1
FILENAME = "model.tflite"
OPTIONS = ()
# onnx2tf imports tf_keras and sets TensorFlow/Keras state process-wide: cases run in a worker.
CHANGES_PROCESS_STATE = True
TIMEOUT_S = 600.0
TF_NOISE = ("I0000", "W0000", "WARNING: All log messages", "oneDNN custom operations")   # TF's start-up lines
WRITTEN = "model_float32.tflite"   # onnx2tf names its files after the ONNX file's stem
# onnx2tf.convert's keyword arguments besides the files (recorded in the provenance).
TOOL_OPTIONS: dict[str, Any] = {
    "non_verbose": True,
    "not_use_onnxsim": True,
    # these download sample images (or calibrate on them): kept off
    "check_onnx_tf_outputs_elementwise_close": False,
    "check_onnx_tf_outputs_elementwise_close_full": False,
    "output_integer_quantized_tflite": False,
    "output_dynamic_range_quantized_tflite": False,
    # needs flatc; without it renames nothing, silently
    "copy_onnx_input_output_names_to_tflite": False,
    # LiteRT has no builtin Erf (tf.math.erf becomes FlexErf, which this interpreter cannot run):
    # onnx2tf's pseudo Erf is Abramowitz-Stegun 7.1.26, |error| <= 1.5e-7 (lowercase: convert() does not lower)
    "replace_to_pseudo_operators": ["erf"],
}
NO_DOWNLOAD = "network access refused by the parity harness: onnx2tf must not download anything"
# onnx2tf runs every graph whose inputs are all 4-D, channels-last 3, with a fixed
# batch <= 20 on its downloaded sample images (resized to the inputs, whatever
# its options): the child hands it the same shape of images from a seeded
# generator instead, values in [0, 1) as the download's are.
SAMPLE_IMAGES_SHAPE = (20, 128, 128, 3)
SAMPLE_IMAGES_SEED = 0
# The child: sockets refused, onnx2tf's sample images made here, then onnx2tf.convert(**json).
CHILD = f"""
import json, socket, sys
def _refuse(*args, **kwargs):
    raise OSError({NO_DOWNLOAD!r})
socket.socket.connect = socket.socket.connect_ex = _refuse
socket.create_connection = socket.getaddrinfo = _refuse
import numpy
import onnx2tf
from onnx2tf import onnx2tf as _core
from onnx2tf.utils import common_functions as _common
def _local_images():
    return numpy.random.default_rng({SAMPLE_IMAGES_SEED}).random({SAMPLE_IMAGES_SHAPE}, dtype=numpy.float32)
_core.download_test_image_data = _common.download_test_image_data = _local_images
onnx2tf.convert(**json.loads(sys.argv[1]))
"""


def versions() -> dict[str, str]:
    from importlib.metadata import version

    # by metadata: importing onnx2tf here would change this process's TensorFlow state
    return {name: version(dist) for name, dist in (("onnx2tf", "onnx2tf"), ("tf_keras", "tf_keras"),
                                                    ("tensorflow", "tensorflow-cpu"), ("onnx", "onnx"))}


def missing() -> str | None:
    absent = [m for m in ("onnx2tf", "tf_keras", "onnx_graphsurgeon", "sng4onnx", "onnxruntime", "ai_edge_litert")
              if importlib.util.find_spec(m) is None]
    if absent:
        return (f"onnx2tf or its dependencies are not installed ({', '.join(absent)}): pip install -e '.[onnx2tf]' "
                "and pip install --no-deps tf_keras (see the Makefile)")
    return None


def child_command(source: Path, folder: Path) -> tuple[list[str], dict[str, str]]:
    """The child's command line and environment: onnx2tf on `source`, writing into `folder`."""
    arguments = {"input_onnx_file_path": str(source), "output_folder_path": str(folder), **TOOL_OPTIONS}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           # belt and braces beside the refused sockets: a proxy that nothing listens on
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    return [sys.executable, "-c", CHILD, json.dumps(arguments)], env


def run_tool(source: Path, folder: Path, timeout: float = TIMEOUT_S) -> tuple[int, str]:
    """onnx2tf in a child interpreter, in `folder` (its working directory too):
    (exit status, output); a negative status is the signal that killed it,
    -9999 a timeout."""
    command, env = child_command(source, folder)
    return run_child(command, timeout, env=env, cwd=folder)


def onnx2tf_layout(layout: str | None) -> str | None:
    """onnx2tf's rule: a channel-first tensor of rank 3 to 5 gets its channel axis last."""
    if layout and 3 <= len(layout) <= 5 and layout[1] == "C":
        return layout[0] + layout[2:] + "C"
    return layout


def convert(source: Path, spec: ModelSpec, example: Sequence[np.ndarray], out_dir: Path, *,
            layouts: tuple[dict[str, str | None], dict[str, str | None]]) -> dict[str, Any]:
    """Convert the ONNX file `source` to `out_dir/model.tflite` with onnx2tf;
    return the provenance. `example` (in the ONNX's layouts, `layouts`) is the
    probe that finds the written file's output layouts."""
    source = Path(source)
    check_source(source, f"(model {spec.name!r}) does not parse or fails onnx.checker, so onnx2tf is not run on it")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILENAME
    path.unlink(missing_ok=True)
    work = out_dir / "onnx2tf"
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir()
    # onnx2tf rewrites its input file in place (its shape estimation saves the graph
    # over it where the graph holds an Einsum or a OneHot): it is given a copy, never
    # the upstream hop's cached file, whose manifest would no longer match.
    import onnx

    given = work / "input" / source.name
    given.parent.mkdir()
    onnx.save(onnx.load(str(source)), str(given))
    start = time.perf_counter()
    code, output = run_tool(given.resolve(), work.resolve())
    convert_s = round(time.perf_counter() - start, 3)
    written = work / f"{source.stem}_float32.tflite"
    if code != 0 or not written.is_file() or written.stat().st_size == 0:
        raise CaseError("convert", f"onnx2tf could not convert {source} for model {spec.name!r}: it {status(code)}"
                                   f"{' without writing ' + written.name if code == 0 else ''}. Its last lines:\n"
                                   f"{tail(output, TF_NOISE)}\nAn op onnx2tf cannot convert is named above: run the ONNX file "
                                   "on another target, or take the tf->tflite path from a Keras model")
    written.replace(path)
    import shutil

    shutil.rmtree(work, ignore_errors=True)   # the SavedModel and the float16 file: not kept
    input_layouts, evidence = _input_layouts(path, spec, dict(layouts[0]))
    start = time.perf_counter()
    output_layouts, probe = _probe(source, path, spec, example, dict(layouts[0]), input_layouts, dict(layouts[1]))
    probe["probe_s"] = round(time.perf_counter() - start, 3)
    evidence["outputs"] = probe.pop("evidence")
    return {
        "converter": NAME,
        "tool": "onnx2tf.convert (in a child process)",
        "tool_version": versions()["onnx2tf"],
        "tool_options": dict(TOOL_OPTIONS),
        "downloads": "refused (sockets refused in the child; onnx2tf's sample images made there, seeded)",
        "source_sha256": file_sha256(source),
        "kept": f"{source.stem}_float32.tflite (the float16 file and the SavedModel are dropped)",
        "convert_s": convert_s,
        # what the written file takes and the layouts read from it and the probe
        "input_layouts": input_layouts,
        "output_layouts": output_layouts,
        "layout_evidence": evidence,
        **probe,
        "versions": versions(),
    }


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path))


def _input_layouts(path: Path, spec: ModelSpec, onnx_layouts: dict[str, str | None]
                   ) -> tuple[dict[str, str | None], dict[str, Any]]:
    """Each input's layout in the written file, from its shape signature: the
    orders of the ONNX layout's axes in which the spec's shape fits the declared
    dims; onnx2tf's rule where it is one of them."""
    try:
        details = _interpreter(path).get_input_details()
    except ValueError as error:   # LiteRT's binding raises it for a file it cannot open or parse
        raise CaseError("convert", f"onnx2tf wrote {path} for model {spec.name!r}, but LiteRT cannot load it: "
                                   f"{summarize_exception(error, 4)}") from None
    by_name = {d["name"]: d for d in details}
    chosen: dict[str, str | None] = {}
    evidence: dict[str, Any] = {"inputs": {}}
    for position, inp in enumerate(spec.inputs):
        detail = by_name.get(inp.name) or (details[position] if len(details) == len(spec.inputs) else None)
        if detail is None:
            raise CaseError("convert", f"the TFLite file onnx2tf wrote for {spec.name!r} has inputs "
                                       f"{sorted(by_name)}, none named {inp.name!r}, and not one per spec input")
        dims = [None if d < 0 else int(d) for d in detail["shape_signature"]]
        layout = onnx_layouts.get(inp.name) or inp.layout
        where = f"the TFLite file onnx2tf wrote ({path.name})"
        if not layout:
            if len(dims) != len(inp.shape):
                raise CaseError("convert", f"{where} declares input {inp.name!r} as {dims}, rank {len(dims)}, "
                                           f"not the spec's rank {len(inp.shape)}")
            chosen[inp.name] = onnx_layouts.get(inp.name)
            evidence["inputs"][inp.name] = {"declared": dims, "layout": None}
            continue
        fitting = []
        for order in dict.fromkeys("".join(p) for p in permutations(layout)):
            problems = [f for f in input_findings([inp], {inp.name: dims}, {inp.name: order}, where)
                        if f.kind in ("rank", "size", "layout")]
            if not problems:
                fitting.append(order)
        rule = onnx2tf_layout(layout)
        if rule in fitting:
            pick, how = rule, "onnx2tf's rule (channel axis last), which the declared dims fit"
        elif len(fitting) == 1:
            pick, how = fitting[0], "the one order of its axes the declared dims fit"
        else:
            raise CaseError("convert", f"{where} declares input {inp.name!r} as {dims}: the spec's {inp.shape} "
                                       f"({layout}) fits it in {fitting or 'no order'} of its axes, not in "
                                       f"{rule} (onnx2tf's rule): the harness cannot tell how to feed it")
        chosen[inp.name] = pick
        evidence["inputs"][inp.name] = {"declared": dims, "layout": pick, "chosen_by": how,
                                        # other orders the declared dims fit too (open dims fit any size)
                                        "also_fits": [o for o in fitting if o != pick]}
    return chosen, evidence


def _channels_last(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """`shape` with its second axis moved last, as onnx2tf lays out a channel-first tensor
    of rank 3 to 5; None for another rank."""
    return (shape[0], *shape[2:], shape[1]) if 3 <= len(shape) <= 5 else None


def _probe(source: Path, path: Path, spec: ModelSpec, example: Sequence[np.ndarray], onnx_in: dict[str, str | None],
           tflite_in: dict[str, str | None], onnx_out: dict[str, str | None]) -> tuple[dict[str, str | None], dict]:
    """Run the example on the ONNX file and on the written file; each output's
    layout in the file is the order of its ONNX layout's axes that gives the
    file's shape (the best-agreeing one where several do)."""
    import onnxruntime as ort

    from harness.runtimes import tflite

    names = [o.name for o in spec.outputs]
    feeds = {inp.name: np.asarray(x) for inp, x in zip(spec.inputs, example)}
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    expected = session.run(names, feeds)
    try:
        runner = tflite.Session(path, "cpu")
        binding = runner.bind([i.name for i in spec.inputs], [i.dtype for i in spec.inputs], names)
        got = runner.run([relaid(feeds[i.name], onnx_in.get(i.name), tflite_in.get(i.name)) for i in spec.inputs])
    except CaseError as error:
        raise CaseError("convert", f"the TFLite file onnx2tf wrote for {spec.name!r} does not run on the example "
                                   f"(inputs laid out {tflite_in}): {error}") from None
    except Exception as error:   # LiteRT raises ValueError or RuntimeError from C++, numpy its own: the file's error
        raise CaseError("convert", f"the TFLite file onnx2tf wrote for {spec.name!r} does not run on the example "
                                   f"(inputs laid out {tflite_in}): {summarize_exception(error, 4)}") from None
    layouts: dict[str, str | None] = {}
    evidence: dict[str, Any] = {}
    for name, want, have in zip(names, expected, got):
        layout = onnx_out.get(name)
        orders = list(dict.fromkeys("".join(p) for p in permutations(layout))) if layout else [None]
        fitting = [o for o in orders if relaid(want, layout, o).shape == have.shape]
        if not fitting and layout is None and _channels_last(want.shape) == have.shape:
            # onnx2tf moved the axes of an output whose layout the spec does not declare: the harness
            # cannot tell which axis is which to lay it back, but the spec's author can.
            named = "NC" + "DHW"[5 - want.ndim:]
            raise CaseError("convert", f"the TFLite file onnx2tf wrote for {spec.name!r} returns output {name!r} "
                                       f"channels last, {list(have.shape)} where the ONNX output is "
                                       f"{list(want.shape)}, and the spec declares no layout for {name!r}: declare "
                                       f"it, e.g. outputs=[OutputSpec({name!r}, layout={named!r})], and the harness "
                                       "lays the file's output back to it")
        if not fitting:
            raise CaseError("convert", f"the TFLite file onnx2tf wrote for {spec.name!r} returns output {name!r} "
                                       f"(bound as {binding['outputs'][name]!r}) with shape {list(have.shape)}, which "
                                       f"is no order of the ONNX output's {list(want.shape)} ({layout}): its outputs "
                                       "are not in the spec's order, or the conversion changed the shape")
        errors = {o: float(np.max(np.abs(relaid(want, layout, o).astype(np.float64) - have.astype(np.float64)),
                                  initial=0.0)) for o in fitting}
        rule = onnx2tf_layout(layout)
        pick = min(fitting, key=lambda o: (errors[o], o != rule))
        layouts[name] = pick
        evidence[name] = {"onnx_shape": list(want.shape), "tflite_shape": list(have.shape), "layout": pick,
                          "chosen_by": "the one order that gives the file's shape" if len(fitting) == 1 else
                          "ambiguous by shape (equal sizes): the order whose values agree best",
                          "also_fits": [o for o in fitting if o != pick],
                          "probe_max_abs_err": errors[pick]}
    return layouts, {"binding": binding, "evidence": evidence}
