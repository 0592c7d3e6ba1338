"""Cases in worker processes: a crash or a hang in native code is that case's
error, the run goes on in a fresh worker, and parity.json holds every case.

Each hostile file is made here: an ONNX Loop and a TFLite WHILE that never end
(each beside its twin that ends after two trips and passes), and a model whose
forward dereferences a null pointer.
"""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from harness.cache import IN_USE
from harness.case import Case
from harness.options import RunOptions
from harness.worker import isolation_plan

# Identity models over x[N, 8] -> y, registered from a user's model file.
MODELS = textwrap.dedent("""
    import ctypes

    import torch

    from harness import InputSpec, register_model


    class Identity(torch.nn.Module):
        def forward(self, x):
            return x * 1.0


    class Crash(torch.nn.Module):
        def forward(self, x):
            ctypes.string_at(0)  # a null-pointer read: SIGSEGV, as a broken native kernel would
            return x


    spec = dict(inputs=[InputSpec("x", ("N", 8), dims={"N": (1, 3)})], outputs=["y"])
    register_model("ident_a", torch=Identity, **spec)
    register_model("crash", torch=Crash, **spec)
    register_model("ident_b", torch=Identity, **spec)
""")

HANG_LIMIT_S = 5.0


def loop_onnx(path: Path, trips: int) -> Path:
    """y = x, through a Loop that runs `trips` times (2**62: never ends)."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["trips"], value=helper.make_tensor("t", TensorProto.INT64, [], [trips])),
         helper.make_node("Constant", [], ["go"], value=helper.make_tensor("g", TensorProto.BOOL, [], [True])),
         helper.make_node("Loop", ["trips", "go", "x"], ["y"], body=body)],
        "loop", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])])
    # IR version 8 (opset 17's): onnx 1.23 would write 14, which ONNX Runtime before 1.32 refuses.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def while_tflite(path: Path, trips: int) -> Path:
    """y = x, through a TFLite WHILE that runs `trips` times (2**62: never ends)."""
    tf = pytest.importorskip("tensorflow")

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="x")])
    def identity(x):
        limit = tf.constant(trips, tf.int64)
        _, y = tf.while_loop(lambda i, v: i < limit, lambda i, v: (i + 1, v * 1.0), [tf.constant(0, tf.int64), x])
        return {"y": y}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([identity.get_concrete_function()], identity)
    path.write_bytes(converter.convert())
    return path


@pytest.fixture
def models(parity_dir) -> Path:
    path = parity_dir / "iso_models.py"
    path.write_text(MODELS)
    return path


def test_a_segfault_is_its_case_error_and_the_run_goes_on_in_a_fresh_worker(run_parity, models):
    run = run_parity(f"--model={models}", "--target=onnxruntime")
    cases = run.cases
    assert set(cases) == {"ident_a-torch-onnxruntime-cpu", "crash-torch-onnxruntime-cpu",
                          "ident_b-torch-onnxruntime-cpu"}, run.output
    crashed = cases["crash-torch-onnxruntime-cpu"]
    assert crashed["status"] == "error"
    assert "died from SIGSEGV" in crashed["message"] and crashed["stage"] == "load"
    assert "string_at" in crashed["message"]  # the worker's last output lines: faulthandler's Python stack
    assert cases["ident_a-torch-onnxruntime-cpu"]["status"] == "passed"
    assert cases["ident_b-torch-onnxruntime-cpu"]["status"] == "passed"
    # Reused until it died; the case after the crash ran in a fresh one.
    pids = {name: case["isolation"]["worker_pid"] for name, case in cases.items()}
    assert pids["ident_a-torch-onnxruntime-cpu"] == pids["crash-torch-onnxruntime-cpu"]
    assert pids["ident_b-torch-onnxruntime-cpu"] != pids["crash-torch-onnxruntime-cpu"]
    assert "model file" in cases["ident_a-torch-onnxruntime-cpu"]["isolation"]["reason"]
    assert run.result.ret == 1


@pytest.mark.slow  # waits out each time limit; the segfault and kill tests isolate a case in make test
@pytest.mark.parametrize("make, suffix, target", [(loop_onnx, "onnx", "onnxruntime"),
                                                  (while_tflite, "tflite", "tflite")])
def test_a_converted_file_that_never_finishes_is_killed_at_its_time_limit(run_parity, parity_dir, models,
                                                                           make, suffix, target):
    healthy = make(parity_dir / f"twice.{suffix}", 2)
    run = run_parity(f"--model={models}", "-k", "ident_a", f"--converted={healthy}", f"--target={target}",
                     f"--parity-timeout={HANG_LIMIT_S}")
    assert run.single["status"] == "passed", run.output

    hang = make(parity_dir / f"forever.{suffix}", 2**62)
    run = run_parity(f"--model={models}", "-k", "ident_a", f"--converted={hang}", f"--target={target}",
                     f"--parity-timeout={HANG_LIMIT_S}")
    record = run.single
    assert record["status"] == "error" and record["stage"] == "run", run.output
    assert f"ran past its {HANG_LIMIT_S:g} s limit (--parity-timeout) in stage 'run'; it was killed" in record["message"]
    # Detected at the limit, not long after it (the margin covers the worker's start on a loaded machine).
    assert HANG_LIMIT_S <= record["duration_s"] < HANG_LIMIT_S + 30
    assert run.result.ret == 1


def test_the_time_limit_must_be_a_positive_number(run_parity):
    run = run_parity("--model=simple", "--parity-timeout=0")
    assert run.result.ret == 4 and "--parity-timeout: a number of seconds > 0" in "\n".join(run.result.errlines)


def _case(name: str, target: str = "onnxruntime", ref: str | None = None, skip: str | None = None) -> Case:
    return Case(name, "torch", target, "cpu", ref or name, skip=skip)


def test_auto_isolates_a_run_when_one_of_its_cases_needs_it():
    zoo = [_case("simple"), _case("cnn")]
    assert isolation_plan(zoo, RunOptions(isolate="auto")) == {}
    plan = isolation_plan([*zoo, _case("simple", "tflite"), _case("lstm", skip="no runtime")],
                          RunOptions(isolate="auto"))
    assert "native code" in plan["simple-torch-tflite-cpu"]
    assert "shares the run's worker" in plan["simple-torch-onnxruntime-cpu"]
    assert "lstm-torch-onnxruntime-cpu" not in plan  # a skip is only recorded
    assert "model file" in isolation_plan([_case("m", ref="models/m.py")], RunOptions())["m-torch-onnxruntime-cpu"]
    converted = RunOptions(converted=Path("m.onnx"))
    assert "converted file" in isolation_plan(zoo, converted)["simple-torch-onnxruntime-cpu"]
    assert set(isolation_plan(zoo, RunOptions(isolate="always"))) == {c.id for c in zoo}
    assert isolation_plan([*zoo, _case("simple", "tflite")], RunOptions(isolate="never")) == {}


def test_the_worker_returns_what_the_in_process_run_computes(run_parity):
    """The same case under the same profile (ci: 25 examples, derandomized): the
    same examples and numbers either way. The worker starts before pytest loads
    --hypothesis-profile, so the profile travels with each case."""
    records = {}
    for mode in ("never", "always"):
        run = run_parity("--model=mlp", "--target=onnxruntime", f"--parity-isolate={mode}",
                         "--hypothesis-profile=ci", examples=None)
        records[mode] = run.single
    assert "isolation" not in records["never"] and records["always"]["isolation"]["reason"]
    assert records["never"]["examples"] == records["always"]["examples"] == 25
    (never,), (always,) = records["never"]["outputs"].values(), records["always"]["outputs"].values()
    assert never["max_abs"] == always["max_abs"] and np.isfinite(never["max_abs"]) and never["max_abs"] > 0


# A model whose forward says which process runs it (the worker), then waits to be killed.
SLEEPER = textwrap.dedent("""
    import os
    import time
    from pathlib import Path

    import torch

    from harness import InputSpec, register_model


    class Identity(torch.nn.Module):
        def forward(self, x):
            return x * 1.0


    class Sleeper(torch.nn.Module):
        def forward(self, x):
            Path(os.environ["PARITY_TEST_PID_FILE"]).write_text(str(os.getpid()))
            time.sleep(float(os.environ["PARITY_TEST_SLEEP_S"]))
            return x * 1.0


    spec = dict(inputs=[InputSpec("x", ("N", 8), dims={"N": (1, 3)})], outputs=["y"])
    register_model("ident_a", torch=Identity, **spec)
    register_model("sleeper", torch=Sleeper, **spec)
    register_model("ident_b", torch=Identity, **spec)
""")


def kill_when_written(pid_file: Path, limit_s: float, killed: list[int]) -> None:
    """SIGKILL the process whose id `pid_file` holds, once it is there (waiting `limit_s` at most)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        text = pid_file.read_text().strip() if pid_file.exists() else ""
        if text:
            os.kill(int(text), signal.SIGKILL)
            killed.append(int(text))
            return
        time.sleep(0.1)


@pytest.mark.parametrize("kill", [True, False])
def test_a_worker_killed_from_outside_is_its_case_error_naming_the_signal_and_the_run_goes_on(run_parity,
                                                                                              parity_dir, kill):
    """A SIGKILL sent to the worker while its case runs (the twin: no kill, the case passes).
    The sleeper sleeps well past the kill, far within the time limit: only the kill ends it early."""
    models = parity_dir / "sleepers.py"
    models.write_text(SLEEPER)
    pid_file = parity_dir / "worker.pid"
    killed: list[int] = []
    killer = threading.Thread(target=kill_when_written, args=(pid_file, 300 if kill else 0, killed), daemon=True)
    killer.start()
    cache = parity_dir / "cache"
    run = run_parity(f"--model={models}", "--parity-timeout=400", examples=2, cache=cache,
                     env={"PARITY_TEST_PID_FILE": str(pid_file), "PARITY_TEST_SLEEP_S": "120" if kill else "0"})
    killer.join(timeout=10)
    cases = run.cases
    sleeper = cases["sleeper-torch-onnxruntime-cpu"]
    assert cases["ident_a-torch-onnxruntime-cpu"]["status"] == "passed", run.output
    assert cases["ident_b-torch-onnxruntime-cpu"]["status"] == "passed", run.output
    # The cache's private copies: the killed worker's are removed by the next worker to use the cache.
    assert not list((cache / IN_USE).iterdir())
    if not kill:
        assert sleeper["status"] == "passed" and run.result.ret == 0
        return
    assert killed == [sleeper["isolation"]["worker_pid"]]
    assert sleeper["status"] == "error" and sleeper["stage"] == "load"
    assert sleeper["message"].startswith("the worker process running sleeper-torch-onnxruntime-cpu died from SIGKILL "
                                         "(killed from outside")
    assert sleeper["duration_s"] < 100   # ended by the kill, not by the sleep or the time limit
    assert cases["ident_b-torch-onnxruntime-cpu"]["isolation"]["worker_pid"] != killed[0]   # a fresh worker
    assert run.result.ret == 1
