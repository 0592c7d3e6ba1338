"""The trust boundary. A model file whose loading or running acts on this
machine (TorchScript, a pickled module, a TensorFlow graph with file ops, a
Keras Lambda or custom class) is refused without --trust-model-code, and the
marker file it would write is not written; the same format without the
dangerous part loads. A failure file (.npz) is data: `replay` takes trust and
paths from the command line only. A file that is only damaged, or a bomb,
says so, and never sends the user to --trust-model-code.

Every input is crafted here, in tmp_path.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch

from harness.__main__ import main
from harness.errors import CaseError
from harness.matrix import build_cases
from harness.model_file import describe, folder_sha256
from harness.options import RunOptions, parse_input_spec
from harness.registry import zoo_models
from harness.sources import torch as torch_source
from model_zoo import torch_models


class WritesOnLoad(torch.nn.Module):
    """Passes its input through. Its TorchScript `__setstate__`, which
    torch.jit.load runs, creates `marker` and writes it: torch.from_file with
    shared=True maps a file for writing."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def forward(self, x):
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.marker = state[0]
        written = torch.from_file(self.marker, True, 8, dtype=torch.uint8).fill_(33)
        self.training = state[1] and written.numel() > 0  # used, so that TorchScript keeps the write


class Rigged(torch.nn.Module):
    """A model with a WritesOnLoad after it."""

    def __init__(self, model: torch.nn.Module, marker: Path):
        super().__init__()
        self.model = model
        self.hook = WritesOnLoad(str(marker))

    def forward(self, x):
        return self.hook(self.model(x))


class MkdirOnUnpickle:
    """Pickles as a call of os.mkdir(marker): unpickling it makes the folder."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def load_error(path: Path, architecture=torch_models.build_cnn, trust: bool = False) -> str:
    with pytest.raises(CaseError) as info:
        torch_source.load_file(path, architecture, trust)
    assert info.value.stage == "load" and "Traceback" not in info.value.message
    return info.value.message


def options(*models: str, **kwargs) -> RunOptions:
    return RunOptions(models=models, targets=("onnxruntime",), devices=("cpu",), **kwargs)


# ---------------------------------------------------------------- torch

def test_torchscript_runs_code_at_load_so_it_needs_trust(run_parity, tmp_path):
    markers = tmp_path / "cnn-marker", tmp_path / "simple-marker"
    torch.jit.script(Rigged(torch_models.build_cnn(), markers[0])).save(str(tmp_path / "rigged.pth"))
    torch.jit.script(Rigged(torch_models.build_simple(), markers[1])).save(str(tmp_path / "rigged.pt"))
    torch.save(torch_models.build_cnn().state_dict(), tmp_path / "weights.pth")  # the twin: weights only
    models = f"--model=cnn={tmp_path / 'rigged.pth'},{tmp_path / 'rigged.pt'},cnn={tmp_path / 'weights.pth'}"
    spec = ("--input-spec=input:float32[N=1..4,3]", "--output-names=output")

    refused = run_parity(models, *spec)
    for case in ("cnn.rigged-torch-onnxruntime-cpu", "rigged-torch-onnxruntime-cpu"):
        record = refused.cases[case]
        assert record["status"] == "error" and record["stage"] == "load"
        assert "TorchScript archive" in record["message"] and "--trust-model-code" in record["message"]
        assert len(record["model_file"]["sha256"]) == 64  # what was refused is on the record too
    assert not any(marker.exists() for marker in markers)
    assert refused.cases["cnn.weights-torch-onnxruntime-cpu"]["status"] == "passed"

    trusted = run_parity(models, *spec, "--trust-model-code")
    assert {r["status"] for r in trusted.cases.values()} == {"passed"}
    assert all(marker.read_bytes() == b"!" * 8 for marker in markers)  # what the flag allowed, it did
    record = trusted.cases["cnn.rigged-torch-onnxruntime-cpu"]
    data = (tmp_path / "rigged.pth").read_bytes()
    assert record["model_file"] == {"path": str(tmp_path / "rigged.pth"), "sha256": hashlib.sha256(data).hexdigest(),
                                    "bytes": len(data)}


def test_pickled_module_needs_trust_and_names_what_it_would_import(tmp_path):
    marker = tmp_path / "made-by-unpickling"
    state = torch_models.build_cnn().state_dict()
    torch.save({"state_dict": state, "hook": MkdirOnUnpickle(marker)}, tmp_path / "checkpoint.pth")
    message = load_error(tmp_path / "checkpoint.pth")
    assert "pickled Python objects" in message and "posix.mkdir" in message and "--trust-model-code" in message
    assert not marker.exists()
    loaded = torch_source.load_file(tmp_path / "checkpoint.pth", torch_models.build_cnn, True)
    assert marker.is_dir() and all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    torch.save({"state_dict": state}, tmp_path / "plain-checkpoint.pth")  # the twin: no object, no flag needed
    torch_source.load_file(tmp_path / "plain-checkpoint.pth", torch_models.build_cnn, False)


def test_damaged_torch_files_say_so_and_never_ask_for_trust(tmp_path):
    state = torch_models.build_cnn().state_dict()
    torch.save(state, tmp_path / "cnn.pth")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    message = load_error(tmp_path / "random.pt")
    assert "truncated or corrupt" in message and "trust" not in message

    data = bytearray((tmp_path / "cnn.pth").read_bytes())
    with zipfile.ZipFile(tmp_path / "cnn.pth") as archive:
        weights = archive.getinfo(next(n for n in archive.namelist() if n.endswith("/data/0")))
    name_length, extra_length = struct.unpack("<HH", data[weights.header_offset + 26: weights.header_offset + 30])
    data[weights.header_offset + 30 + name_length + extra_length + 4] ^= 0x40  # one bit of one weight
    (tmp_path / "crc.pth").write_bytes(bytes(data))
    message = load_error(tmp_path / "crc.pth")
    assert "truncated or corrupt" in message and "data/0 fails its CRC-32 check" in message and "trust" not in message

    loaded = torch_source.load_file(tmp_path / "cnn.pth", torch_models.build_cnn, False)  # the intact twin
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_paths_that_are_not_files_say_what_they_are(tmp_path):
    (tmp_path / "folder.pth").mkdir()
    (tmp_path / "loop.pt").symlink_to(tmp_path / "loop.pt")
    (tmp_path / "dangling.pt").symlink_to(tmp_path / "nothing-there.pt")
    spec = (parse_input_spec("input:float32[N=1..4,3]"),)
    cases = {c.model_ref: c for c in build_cases(options(
        f"cnn={tmp_path / 'folder.pth'}", str(tmp_path / "folder.pth"), str(tmp_path / "loop.pt"),
        f"cnn={tmp_path / 'loop.pt'}", str(tmp_path / "dangling.pt"), sources=("torch",), input_specs=spec))}
    assert "loops back on itself" in cases[str(tmp_path / "loop.pt")].error
    assert "loops back on itself" in cases[f"cnn={tmp_path / 'loop.pt'}"].error
    assert "nothing-there.pt, which does not exist" in cases[str(tmp_path / "dangling.pt")].error
    for ref in (f"cnn={tmp_path / 'folder.pth'}", str(tmp_path / "folder.pth")):
        with pytest.raises(CaseError, match="is a directory, not a file"):
            cases[ref].spec.builders["torch"]()


# ---------------------------------------------------------------- TensorFlow graphs

@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def saved_model(tf, folder: Path, marker: Path | None) -> Path:
    """A SavedModel whose serving function writes `marker` when called (None: the twin, which does not)."""

    class Scaled(tf.Module):
        def __init__(self):
            self.scale = tf.Variable(2.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            if marker is not None:
                tf.io.write_file(str(marker), "written by the model")
            return {"y": x * self.scale}

    module = Scaled()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return folder


def frozen_graph(tf, path: Path, marker: Path | None, secret: Path) -> Path:
    """A GraphDef whose output waits on reading `secret` into `marker` (None: the twin without them)."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        after = []
        if marker is not None:
            contents = tf.raw_ops.ReadFile(filename=str(secret), name="read_secret")
            after = [tf.raw_ops.WriteFile(filename=str(marker), contents=contents, name="write_marker")]
        with tf.control_dependencies(after):
            tf.identity(x * 2.0, name="y")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


X = np.arange(6, dtype=np.float32).reshape(2, 3)


def test_saved_model_with_write_file_needs_trust(tf, tmp_path):
    from harness.sources import tensorflow as tfs

    marker = tmp_path / "written-by-saved-model"
    saved_model(tf, tmp_path / "writes", marker)
    case_options = dict(sources=("tensorflow",), input_specs=(parse_input_spec("x:float32[N=1..4,3]"),),
                        output_names=("y",))
    (case,) = build_cases(options(str(tmp_path / "writes"), **case_options))
    with pytest.raises(CaseError) as refused:
        case.spec.builders["tensorflow"]()
    message = refused.value.message
    assert "WriteFile (node 'WriteFile' in function '__inference_serve_" in message
    assert "--trust-model-code" in message and str(tmp_path / "writes") in message
    assert not marker.exists()

    twin = tfs.load_file(saved_model(tf, tmp_path / "plain", None), None, False)  # saver ops and all
    np.testing.assert_array_equal(tfs.run(twin, [X], "cpu")[0], X * 2)

    (trusted_case,) = build_cases(options(str(tmp_path / "writes"), trust_model_code=True, **case_options))
    trusted = trusted_case.spec.builders["tensorflow"]()
    np.testing.assert_array_equal(tfs.run(trusted, [X], "cpu")[0], X * 2)
    assert marker.read_text() == "written by the model"  # what the flag allowed, it did


def test_frozen_graph_with_file_ops_needs_trust(tf, tmp_path):
    from harness.sources import tensorflow as tfs

    marker, secret = tmp_path / "written-by-graph", tmp_path / "secret.txt"
    secret.write_text("not for the model")
    frozen_graph(tf, tmp_path / "rigged.pb", marker, secret)
    with pytest.raises(CaseError) as refused:
        tfs.load_frozen_graph(tmp_path / "rigged.pb", ["x"], ["y"])
    message = refused.value.message
    assert "ReadFile (node 'read_secret')" in message and "WriteFile (node 'write_marker')" in message
    assert "--trust-model-code" in message and not marker.exists()

    twin = tfs.load_frozen_graph(frozen_graph(tf, tmp_path / "plain.pb", None, secret), ["x"], ["y"])
    np.testing.assert_array_equal(tfs.run(twin, [X], "cpu")[0], X * 2)

    trusted = tfs.load_frozen_graph(tmp_path / "rigged.pb", ["x"], ["y"], trust_model_code=True)
    tfs.run(trusted, [X], "cpu")
    assert marker.read_text() == "not for the model"


def test_denylist_names_ops_this_tensorflow_has(tf):
    from tensorflow.python.framework import op_def_registry

    from harness.sources.tf_graph_scan import DENYLIST

    assert not sorted(op for op in DENYLIST if op_def_registry.get(op) is None)


# ---------------------------------------------------------------- Keras

def deflated_zip(path: Path, members: list[tuple[str, bytes, int, int]]) -> Path:
    """A zip archive written by hand from (name, raw deflate stream, declared
    size, CRC-32) members: what a zip bomb's author writes."""
    local, central = b"", b""
    for name, stream, size, crc in members:
        header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(stream), size, len(name), 0)
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(stream), size,
                               len(name), 0, 0, 0, 0, 0, len(local)) + name.encode()
        local += header + name.encode() + stream
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(local), 0)
    path.write_bytes(local + central + end)
    return path


def spaces_deflated(mebibytes: int) -> bytes:
    """A raw deflate stream of `mebibytes` MiB of spaces, made without holding them: after a full
    flush deflate starts afresh, so each MiB compresses to the same bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(b" " * (1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * mebibytes + compressor.flush()


def spaces_crc32(mebibytes: int) -> int:
    crc, block = 0, b" " * (1 << 20)
    for _ in range(mebibytes):
        crc = zlib.crc32(block, crc)
    return crc


def test_keras_zip_bomb_is_refused_naming_sizes(tf, tmp_path):  # tf imported before the clock starts
    from harness.sources import keras as ks

    assert len(zlib.decompress(spaces_deflated(3), -15)) == 3 << 20
    bombs = {  # name: (archive, what its refusal says)
        "bomb": (deflated_zip(tmp_path / "bomb.keras", [("config.json", spaces_deflated(3 << 10), 3 << 30, 0)]),
                 "would expand from 3.0 MiB to 3.0 GiB (config.json: 3.0 GiB), more than the budget of 1.0 GiB"),
        "config": (deflated_zip(tmp_path / "config.keras", [("config.json", spaces_deflated(80), 80 << 20,
                                                            spaces_crc32(80))]),
                   "its config.json declares 80.0 MiB, more than the 64.0 MiB such a member may take"),
        "liar": (deflated_zip(tmp_path / "liar.keras",  # declares 1 KiB, holds 1 GiB: read up to 1 KiB only
                              [("config.json", spaces_deflated(1 << 10), 1024, zlib.crc32(b" " * 1024))]),
                 "the archive is corrupt"),
    }
    assert bombs["bomb"][0].stat().st_size < 4 << 20
    for archive, expected in bombs.values():
        tracemalloc.start()
        start = time.perf_counter()
        with pytest.raises(CaseError) as refused:
            ks.load_file(archive, None, False)
        seconds, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert expected in refused.value.message and "trust" not in refused.value.message
        assert seconds < 5 and peak < 16 << 20


def test_keras_archive_with_a_bad_crc_is_corrupt_and_its_twin_loads(tmp_path):
    keras = pytest.importorskip("keras")
    from harness.sources import keras as ks

    x = keras.Input((4,), name="x")
    keras.Model(x, keras.layers.Dense(3, name="d")(x)).save(tmp_path / "dense.keras")
    data = bytearray((tmp_path / "dense.keras").read_bytes())
    with zipfile.ZipFile(tmp_path / "dense.keras") as archive:
        weights = archive.getinfo("model.weights.h5")
    data[weights.header_offset + 30 + len("model.weights.h5") + weights.file_size // 2] ^= 0x01
    (tmp_path / "flipped.keras").write_bytes(bytes(data))
    with pytest.raises(CaseError, match="model.weights.h5 fails its CRC-32 check"):
        ks.load_file(tmp_path / "flipped.keras", None, False)
    ks.load_file(tmp_path / "dense.keras", None, False)


def test_keras_custom_class_needs_trust(tmp_path):
    keras = pytest.importorskip("keras")
    from harness.sources import keras as ks

    @keras.saving.register_keras_serializable(package="trust_test")
    class Tripled(keras.layers.Layer):
        def call(self, x):
            return x * 3.0

    x = keras.Input((4,), name="x")
    keras.Model(x, Tripled(name="tripled")(keras.layers.Dense(3, name="d")(x))).save(tmp_path / "custom.keras")
    with pytest.raises(CaseError) as refused:
        ks.load_file(tmp_path / "custom.keras", None, False)
    assert f"'tripled' (class Tripled) from module {__name__}" in refused.value.message
    assert "--trust-model-code" in refused.value.message
    loaded = ks.load_file(tmp_path / "custom.keras", None, True)
    assert [type(layer).__name__ for layer in loaded.layers][-1] == "Tripled"


# ---------------------------------------------------------------- replay

def failure_file(path: Path, model_ref: str, case_id: str, stored: RunOptions) -> Path:
    """A failure file as `save_failure` writes it, with what a poisoner would put in it."""
    spec = zoo_models()["cnn"]
    sizes = {dim: low for dim, (low, high) in spec.dim_bounds.items()}
    inputs = {i.name: np.random.default_rng(0).standard_normal(i.example_shape(sizes)).astype(np.float32)
              for i in spec.inputs}
    info = {"case_id": case_id, "model_ref": model_ref, "source": "torch", "target": "onnxruntime",
            "device": "cpu", "options": stored.to_json()}
    np.savez(path, __replay__=np.array(json.dumps(info)), **{f"input:{k}": v for k, v in inputs.items()})
    return path


def replay(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["replay", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_replay_takes_no_model_file_and_no_trust_from_the_failure_file(tmp_path, capsys):
    marker = tmp_path / "ran-from-the-npz"
    evil = tmp_path / "evil.py"
    evil.write_text(f"from pathlib import Path\nPath({str(marker)!r}).mkdir()\n")
    poisoned = failure_file(tmp_path / "poisoned.npz", str(evil), "evil-torch-onnxruntime-cpu",
                            RunOptions(models=(str(evil),), trust_model_code=True))
    code, _, err = replay(capsys, str(poisoned))
    assert code == 2 and not marker.exists()
    assert f"If you trust them, run: python -m harness replay {poisoned} --model {evil}" in err
    assert "add it only if you trust" in err and len(err.strip().splitlines()) == 1
    code, _, err = replay(capsys, str(poisoned), "--model", str(evil))  # named on the command line: it runs
    assert marker.is_dir() and code == 2 and "registered no model" in err


def test_replay_of_a_pickle_needs_trust_on_the_command_line(tmp_path, capsys):
    marker = tmp_path / "made-by-unpickling"
    torch.save({"state_dict": torch_models.build_cnn().state_dict(), "hook": MkdirOnUnpickle(marker)},
               tmp_path / "whole.pt")
    ref = f"cnn={tmp_path / 'whole.pt'}"
    poisoned = failure_file(tmp_path / "cnn.npz", ref, "cnn.whole-torch-onnxruntime-cpu",
                            RunOptions(models=(ref,), trust_model_code=True))
    cache = ("--cache-dir", str(tmp_path / "cache"))
    code, _, err = replay(capsys, str(poisoned), *cache)
    assert code == 2 and f"--model {ref}" in err and not marker.exists()
    code, _, err = replay(capsys, str(poisoned), "--model", ref, *cache)
    assert code == 2 and "--trust-model-code" in err and not marker.exists()
    code, out, _ = replay(capsys, str(poisoned), "--model", ref, "--trust-model-code", *cache)
    assert marker.is_dir() and code == 0 and "cnn.whole-torch-onnxruntime-cpu on image[" in out


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _npy(value) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=True)
    return buffer.getvalue()


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


MALFORMED = {
    "random bytes": (lambda p: _written(p, np.random.default_rng(1).bytes(300)), "not an .npz (zip) archive"),
    "no replay entry": (lambda p: _zip(p, {"input:x.npy": _npy(np.zeros(3))}), "has no __replay__ entry"),
    "bad json": (lambda p: _zip(p, {"__replay__.npy": _npy(np.array("{not json")), "input:x.npy": _npy(np.zeros(3))}),
                 "its __replay__ entry: not valid JSON"),
    "missing keys": (lambda p: _zip(p, {"__replay__.npy": _npy(np.array('{"case_id": "x"}')),
                                        "input:x.npy": _npy(np.zeros(3))}), "model_ref (str)"),
    "wrong types": (lambda p: _zip(p, {"__replay__.npy": _npy(np.array(json.dumps(
        {"case_id": 1, "model_ref": "cnn", "source": "torch", "target": "onnxruntime", "device": "cpu",
         "options": []}))), "input:x.npy": _npy(np.zeros(3))}), "case_id (str), options (dict)"),
    "pickled input": (lambda p: _zip(p, {"__replay__.npy": _npy(np.array("{}")),
                                         "input:x.npy": _npy(np.array([object()], dtype=object))}),
                      "cannot be read as a saved failure"),
    "a folder": (_folder, "is a directory, not a file"),
}


@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_failure_file_is_one_clear_line(tmp_path, capsys, kind):
    make, expected = MALFORMED[kind]
    path = make(tmp_path / "failure.npz")
    code, out, err = replay(capsys, str(path))
    assert code == 2 and not out and len(err.strip().splitlines()) == 1
    assert str(path) in err and expected in err and "Traceback" not in err


# ---------------------------------------------------------------- the record's hash

def test_a_folder_is_hashed_by_its_files(tmp_path):
    (tmp_path / "saved" / "variables").mkdir(parents=True)
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"graph")
    (tmp_path / "saved" / "variables" / "variables.index").write_bytes(b"index")
    described = describe(str(tmp_path / "saved"))
    assert described["sha256"] == folder_sha256(tmp_path / "saved") and described["files"] == 2
    assert described["bytes"] == 10
    (tmp_path / "saved" / "variables" / "variables.index").write_bytes(b"indeX")
    assert describe(str(tmp_path / "saved"))["sha256"] != described["sha256"]
    assert describe("cnn") is None
