"""The terminal summary for people: the cases that ran or could not, failures and errors first,
then the skipped cases one line per reason (each case with -rs or -v, as pytest users expect)."""

from __future__ import annotations

from harness.report.summary import summary_lines

NO_CUDA = "no CUDA device visible to torch 2.13.0+cpu (torch.cuda.is_available() is False; built for CUDA None)"
GPU_ONLY = "TensorRT runs on NVIDIA GPUs only: run the tensorrt target with --device=cuda"
RNN_LIMIT = "onnx2tf 1.28.8 builds the RNN with a state that does not fit its cell"


def _record(case_id: str, status: str, message: str = "", model: str = "cnn") -> dict:
    return {"id": case_id, "model": model, "status": status, "message": message}


def many_skips() -> list[dict]:
    """A CPU machine's run: one case failed, one passed, and 24 skipped for three reasons, the third
    naming its case's model (two models, one limitation)."""
    records = [_record("cnn-torch-onnxruntime-cpu", "passed"),
               _record("mlp-torch-onnxruntime-cpu", "failed", "out: 3% of 96 elements out of tolerance", "mlp")]
    records += [_record(f"m{i}-torch-onnxruntime-cuda", "skipped", NO_CUDA) for i in range(12)]
    records += [_record(f"m{i}-torch-tensorrt-cpu", "skipped", GPU_ONLY) for i in range(8)]
    records += [_record(f"{model}-torch-tflite-{device}", "skipped",
                        f"known limitation of torch->tflite for {model}: {RNN_LIMIT}", model)
                for model in ("gru", "lstm") for device in ("cpu", "cuda")]
    return records


def _naming(lines: list[str], ids: list[str]) -> list[str]:
    return [line for line in lines if any(case_id in line for case_id in ids)]


def test_skipped_cases_are_one_line_per_reason_with_counts_after_the_failure():
    records = many_skips()
    lines = summary_lines(records)
    skipped = [r["id"] for r in records if r["status"] == "skipped"]
    assert lines[0] == "1 failed, 1 passed, 24 skipped"
    by_reason = _naming(lines, skipped)
    assert [line.rsplit(" (", 1)[0] for line in by_reason] == [
        f"12 skipped: {NO_CUDA}",
        f"8 skipped: {GPU_ONLY}",
        # the model's name taken out to group, the group's models put back
        f"4 skipped: known limitation of torch->tflite for gru, lstm: {RNN_LIMIT}"]
    assert by_reason[0].endswith("(m0-torch-onnxruntime-cuda, m1-torch-onnxruntime-cuda, m10-torch-onnxruntime-cuda "
                                 "and 9 more)")
    assert by_reason[2].endswith("(gru-torch-tflite-cpu, gru-torch-tflite-cuda, lstm-torch-tflite-cpu and 1 more)")
    failure = next(i for i, line in enumerate(lines) if line.startswith("mlp-torch-onnxruntime-cpu"))
    assert failure < lines.index(by_reason[0])
    assert "-rs or -v lists each case" in lines[-1]


def test_every_skip_lists_each_case_on_its_own_line():
    records = many_skips()
    lines = summary_lines(records, every_skip=True)
    skipped = [r["id"] for r in records if r["status"] == "skipped"]
    for case_id in skipped:
        assert len([line for line in lines if line.startswith(case_id + " ")]) == 1
    assert not any("skipped:" in line for line in lines)
    assert lines.index(next(line for line in lines if line.startswith("mlp-torch-onnxruntime-cpu"))) < min(
        i for i, line in enumerate(lines) if line.startswith(tuple(skipped)))


def test_a_run_with_no_skip_prints_its_table_as_before():
    """The benign twin: nothing skipped, nothing folded: a line per case, the failure first, an error's reason."""
    lines = summary_lines([_record("cnn-torch-onnxruntime-cpu", "passed"),
                           _record("cnn-torch-openvino-cpu", "error", "conversion failed: Foo\nTraceback"),
                           _record("mlp-torch-onnxruntime-cpu", "failed", "out: 3% out of tolerance", "mlp")])
    assert lines == [
        "1 failed, 1 error, 1 passed",
        "case                       status         err/tol  err/max|ref|   x noise  examples",
        "mlp-torch-onnxruntime-cpu  failed               -             -         -         -",
        "cnn-torch-openvino-cpu     error         conversion failed: Foo",
        "cnn-torch-onnxruntime-cpu  passed               -             -         -         -"]


def test_a_reason_shared_by_no_other_case_reads_as_it_was_given():
    """One skip: its reason whole, and no hint of a longer list."""
    lines = summary_lines([_record("cnn-torch-onnxruntime-cpu", "passed"),
                           _record("cnn-torch-tensorrt-cpu", "skipped", GPU_ONLY)])
    assert lines[-1] == f"1 skipped: {GPU_ONLY} (cnn-torch-tensorrt-cpu)"


def test_pytest_run_prints_one_line_per_skip_reason_and_each_case_with_rs(run_parity):
    """What a CPU machine's `make parity` prints, counted: the lines that name a skipped case."""
    args = ("--device=cpu,cuda", "--target=tensorrt", "--model=mlp,cnn")   # every case skipped: seconds
    run = run_parity(*args)
    skipped = [r["id"] for r in run.cases.values() if r["status"] == "skipped"]
    reasons = {r["message"] for r in run.cases.values() if r["status"] == "skipped"}
    assert len(skipped) == 4 and len(reasons) == 2, run.output
    assert len(_naming(run.result.outlines, skipped)) == 2, run.output
    listed = run_parity(*args, "-rs")
    assert all(any(line.startswith(case_id + " ") for line in listed.result.outlines) for case_id in skipped)
