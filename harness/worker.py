"""Runs cases in worker processes, so that a crash, a hang or a runaway
allocation in native code is that case's error and never the run's end.

A worker is a fresh interpreter (`python -m harness.worker`), not a fork: a
fork would inherit the parent's threads, CUDA context and TensorFlow state,
which is what we are isolating from. The parent sends it (options, case id);
the worker rebuilds the case from the options as `replay` does (the zoo and
model files register again there), runs it with `runner.run_case`, reports each
stage as it enters it, and sends the record back. Its stdout and stderr go to a
log file, whose last lines a failed case quotes.

A worker is reused for the next case, so each framework is imported once per
worker rather than once per case. It is replaced after a case that timed out,
died, or ran a hop that changes process-wide state. The case's time limit
counts from the moment the worker has the case, not its start-up.

Which cases run in a worker (`--parity-isolate`):
  never   none: everything in the pytest process (no timeout can be enforced);
  auto    every case of a run in which one case needs it: where untrusted
          bytes or fragile native code meet (a runtime that declares
          NEEDS_ISOLATION, as LiteRT does; a converter that declares
          CHANGES_PROCESS_STATE; a user's model file or converted file). The
          others join it because two processes that both import TensorFlow
          and build its models cost more than one: on 7 zoo cases, 3 examples
          each, splitting them took 22.1 s, all in one worker 15.0 s, none 13.4 s;
  always  every case.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from harness import backends
from harness.case import Case
from harness.case_record import CaseRecord
from harness.options import RunOptions

# How long a worker may take to start and import the frameworks its cases need.
STARTUP_TIMEOUT_S = 300.0
LOG_TAIL_LINES = 15


def isolation_plan(cases: list[Case], options: RunOptions) -> dict[str, str]:
    """Case id -> why it runs in a worker, for the cases of a run that do.
    Skipped cases, and cases refused by their options, are only recorded: in
    the parent."""
    runnable = [case for case in cases if not (case.skip or case.error)]
    if options.isolate == "never":
        return {}
    if options.isolate == "always":
        return {case.id: "--parity-isolate=always" for case in runnable}
    needs = {case.id: reason for case in runnable if (reason := isolation_need(case, options))}
    if not needs:
        return {}
    shared = f"shares the run's worker with the {len(needs)} case(s) that need one (cheaper than two processes)"
    return {case.id: needs.get(case.id, shared) for case in runnable}


def isolation_need(case: Case, options: RunOptions) -> str | None:
    """Why `case` itself needs a worker process, or None."""
    if getattr(backends.runtime(case.target), "NEEDS_ISOLATION", False):
        return f"the {case.target} runtime runs native code that can crash or hang on a malformed file"
    if _changes_process_state(case, options):
        return f"the {case.source} -> {case.target} conversion changes process-wide state"
    if options.converted is not None:
        return f"a user's converted file ({options.converted}) is parsed by native code"
    if _is_file_ref(case.model_ref):
        return f"a user's model file ({case.model_ref}) is parsed by native code"
    return None


def isolation_possible(options: RunOptions) -> bool:
    """Whether any case of a run with `options` may run in a worker: known
    before the cases are, so that a worker can start while they are collected."""
    if options.isolate != "auto":
        return options.isolate == "always"
    targets = [t for t in options.targets if t in backends.names("runtime")]
    return (options.converted is not None or any(map(_is_file_ref, options.models))
            or any(getattr(backends.runtime(t), "NEEDS_ISOLATION", False) for t in targets)
            or any(getattr(backends.hop(h), "CHANGES_PROCESS_STATE", False) for h in backends.names("hop")))


def _is_file_ref(ref: str) -> bool:
    """A model reference that names a file (PATH or ARCH=PATH), not a zoo name."""
    path = ref.partition("=")[2] or ref
    return os.sep in path or bool(Path(path).suffix) or Path(path).exists()


class WorkerFailure(Exception):
    """The worker did not return a record: it died, or ran past its limit."""

    def __init__(self, message: str, stage: str, limit: str | None = None):
        super().__init__(message)
        self.message, self.stage, self.limit = message, stage, limit


class _Worker:
    """One worker process and the two pipes to it."""

    def __init__(self, log_dir: Path, init: dict[str, Any]):
        self.log_path = Path(tempfile.mkstemp(prefix="parity-worker-", suffix=".log", dir=log_dir)[1])
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "harness.worker", str(to_child_r), str(from_child_w)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                pass_fds=(to_child_r, from_child_w), start_new_session=True)
        os.close(to_child_r)
        os.close(from_child_w)
        self.requests = Connection(to_child_w, readable=False)
        self.replies = Connection(from_child_r, writable=False)
        self.stage = "start"
        self.requests.send(("init", init))

    def log_tail(self) -> str:
        """The worker's last output lines; after a crash, the start of the
        Python stack faulthandler printed (the innermost frames come first)."""
        try:
            lines = self.log_path.read_bytes().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        lines = [line for line in lines if not line.startswith("Extension modules:")]
        crash = max((i for i, line in enumerate(lines) if line.startswith("Fatal Python error")), default=None)
        if crash is not None:
            return "\n".join(lines[crash:crash + LOG_TAIL_LINES])
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def wait_for(self, kind: str, limit_s: float, limit: str) -> Any:
        """The next reply of `kind`, following the stages reported before it;
        WorkerFailure if the worker dies or `limit_s` passes first (`limit`
        names what sets it)."""
        deadline = time.monotonic() + limit_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerFailure(f"ran past its {limit_s:g} s limit", self.stage, limit)
            try:
                ready = self.replies.poll(min(remaining, 1.0))
                message = self.replies.recv() if ready else None
            except (EOFError, OSError):
                raise WorkerFailure(self._death(), self.stage) from None
            if message is None:
                if self.process.poll() is not None and not self.replies.poll(0):
                    raise WorkerFailure(self._death(), self.stage)
                continue
            if message[0] == "stage":
                self.stage = message[1]
            elif message[0] == kind:
                return message[1]

    def _death(self) -> str:
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "closed its pipe but did not exit"
        if code < 0:
            name = signal.Signals(-code).name
            why = {"SIGSEGV": "a segmentation fault in native code", "SIGABRT": "an abort in native code",
                   "SIGBUS": "a bus error in native code", "SIGFPE": "an arithmetic fault in native code",
                   "SIGKILL": "killed from outside: on Linux most often the out-of-memory killer "
                              "(see `dmesg`, or run with less memory per case)"}.get(name, "a signal")
            return f"died from {name} ({why})"
        return f"exited with status {code} before returning its result"

    def close(self, grace_s: float = 5.0) -> None:
        if self.process.poll() is None:
            try:
                self.requests.send(None)
                self.process.wait(timeout=grace_s)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()
        for connection in (self.requests, self.replies):
            connection.close()
        self.log_path.unlink(missing_ok=True)

    def kill(self) -> None:
        if self.process.poll() is None:
            try:  # its whole session: a runtime may have started helper processes
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
            self.process.wait()


class CaseWorkers:
    """The worker processes of one run: one at a time, reused while healthy."""

    def __init__(self, options: RunOptions, startup_timeout_s: float = STARTUP_TIMEOUT_S):
        self.options = options
        self.startup_timeout_s = startup_timeout_s
        self._log_dir = Path(tempfile.mkdtemp(prefix="parity-workers-"))
        self._worker: _Worker | None = None
        self.started = 0   # workers started: 1 + the ones that replaced a failed worker

    def warm(self) -> None:
        """Start a worker now: it imports the frameworks while it rebuilds the
        run's cases, which then overlaps the parent's own work instead of
        delaying the first case."""
        if self._worker is None:
            self._worker = self._start()

    def run(self, case: Case, reason: str) -> CaseRecord:
        """The record of `case`, run in a worker; a worker that fails becomes the case's error."""
        from harness.runner import base_record

        started = time.perf_counter()
        worker = self._worker
        try:
            if worker is None:
                worker = self._worker = self._start()
            worker.wait_for("ready", self.startup_timeout_s, "the worker's start-up limit")
            worker.stage = "start"
            worker.requests.send(("case", case.id, _hypothesis_settings()))
            record = CaseRecord.from_json(worker.wait_for("record", self.options.timeout_s, "--parity-timeout"))
        except WorkerFailure as failure:
            record = base_record(case)
            record.set_status("error", self._failure_message(case, failure, worker), stage=failure.stage)
            record.duration_s = time.perf_counter() - started
            self._discard()
        except BaseException:   # re-raised: an interrupt must not leave a worker running the case
            self._discard()
            raise
        else:
            if _changes_process_state(case, self.options):
                self._discard()
        # The last stage the worker entered: before "run", the case ended in its preparation.
        record.isolation = {"reason": reason, "worker_pid": worker.process.pid if worker else None,
                            "stage_reached": worker.stage if worker else "start"}
        return record

    @staticmethod
    def _failure_message(case: Case, failure: WorkerFailure, worker: _Worker | None) -> str:
        limit = f" ({failure.limit})" if failure.limit else ""
        text = f"the worker process running {case.id} {failure.message}{limit} in stage '{failure.stage}'"
        if failure.limit:
            text += "; it was killed"
        tail = worker.log_tail() if worker else ""
        if tail:
            text += f"\nits last output lines:\n{tail}"
        return text + "\nThe run goes on in a fresh worker."

    def _start(self) -> _Worker:
        self.started += 1
        return _Worker(self._log_dir, {"sys_path": list(sys.path), "options": self.options.to_json()})

    def _discard(self) -> None:
        if self._worker is not None:
            self._worker.kill()
            self._worker.close()
            self._worker = None

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        try:
            os.rmdir(self._log_dir)
        except OSError:
            pass


def _hypothesis_settings() -> dict[str, Any]:
    """What of the active hypothesis profile a case's exploration reads. Sent
    with each case: a worker may start before pytest loads --hypothesis-profile."""
    import hypothesis

    profile = hypothesis.settings.default
    return {"max_examples": profile.max_examples, "derandomize": profile.derandomize}


def _changes_process_state(case: Case, options: RunOptions) -> bool:
    """Whether a hop on the case's path changes process-wide state (its worker
    is not reused after it)."""
    return options.converted is None and any(getattr(backends.hop(h), "CHANGES_PROCESS_STATE", False)
                                             for h in case.path)


# --- the worker's side ---------------------------------------------------------------------------

def _serve(requests: Connection, replies: Connection) -> None:
    kind, init = requests.recv()
    sys.path[:] = init["sys_path"]
    from harness.cache import ArtifactCache
    from harness.matrix import build_cases
    from harness.profiles import register_profiles
    from harness.results import to_jsonable
    from harness.runner import run_case

    import hypothesis

    register_profiles()
    options = RunOptions.from_json(init["options"])
    cache = ArtifactCache(options.cache_dir, enabled=options.use_cache, seed=options.cache_seed)
    replies.send(("stage", "start"))
    cases = {case.id: case for case in build_cases(options)}   # each case imports its frameworks as it starts
    replies.send(("ready", os.getpid()))
    while True:
        request = requests.recv()
        if request is None:
            return
        _, case_id, settings = request
        hypothesis.settings.register_profile("parity-worker", deadline=None, **settings)
        hypothesis.settings.load_profile("parity-worker")
        case = cases.get(case_id)
        if case is None:
            record = CaseRecord(id=case_id)
            record.set_status("error", f"the worker could not rebuild case {case_id} from the run's options (a "
                                       "model registered while the run was running, not in the zoo or a model "
                                       "file?); run it with --parity-isolate=never", stage="internal")
            record.duration_s = 0.0
        else:
            record = run_case(case, options, cache, progress=lambda stage: replies.send(("stage", stage)))
        replies.send(("record", to_jsonable(record.to_json())))   # rebuilt by CaseRecord.from_json in the parent
        replies.send(("ready", os.getpid()))


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent dies: a worker stuck in a
    hung native call never reads the closed pipe that would tell it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the closed pipe is the only signal
        pass


def main(argv: list[str]) -> int:
    import faulthandler

    _die_with_parent()

    # A crash in native code prints the Python stack into the log, whose last
    # lines the case's error quotes; the signal still ends the worker.
    faulthandler.enable()
    requests = Connection(int(argv[0]), writable=False)
    replies = Connection(int(argv[1]), readable=False)
    try:
        _serve(requests, replies)
    except EOFError:  # the parent went away
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
