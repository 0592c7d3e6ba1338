"""The HTML report: rendered from hand-made results, and opened in a real browser
(headless Chromium) when one is installed (`apt-get install -y chromium`)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from harness.compare import HISTOGRAM_EDGES
from harness.report.html import anchor, histogram_svg, render_html, write_html_report

TOL = {"atol": 1e-7, "rtol": 1e-5, "atol_by_max": 1e-5, "max_mismatch": 0.0}
HIST = {"edges": [0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, "inf"],
        "counts": [8165, 0, 1, 177, 5374, 40, 0, 40, 27, 0], "sampled": 1, "total": 13824}
LONG_SKIP = ("no CUDA device visible to torch 2.13.0+cpu (torch.cuda.is_available() is False; built for CUDA None) "
             + "and a long tail that a report must not cut " * 5 + "END-OF-SKIP")
ERROR_MSG = "conversion failed: <Op 'Foo' & 'Bar'> not supported\nTraceback line 2\nEND-OF-ERROR"


def _output(passed: bool, ratio: float) -> dict:
    return {"tolerance": TOL, "name": "features", "passed": passed, "message": "features: <message> & more",
            "ref_shape": [1, 16, 8, 10], "got_shape": [1, 16, 8, 10], "ref_dtype": "float32", "got_dtype": "float32",
            "elements": 1280, "max_abs": 2.8e-4, "max_rel": 3.3e-3, "mean_abs": 1.5e-6, "rmse": 1.6e-5,
            "cosine": 0.9999999, "max_ulp": 37610.0, "max_ref": 1.7, "normalized_error": 1.6e-4,
            "error_ratio": ratio, "mismatch_fraction": 0.01 if not passed else 0.0, "nonfinite_mismatches": 0,
            "worst_index": [0, 7, 7, 7], "worst_ref": 0.1458, "worst_got": 0.1460,
            "needed_atol": None if passed else 2.85e-4, "needed_rtol": None if passed else 2.5e-3,
            "error_histogram": HIST, "extra": {},
            "noise": {"noise_max_abs": 3.6e-8, "noise_normalized": 4.8e-7, "error_over_noise": 7777.5},
            "recipe": {"dims": {"N": 1}, "distributions": {"image": "normal"}, "special_fraction": 0.0, "seed": 0}}


def _case(case_id, model, source, target, device, status, variant=None, **extra) -> dict:
    return {"id": case_id, "model": model, "model_ref": model, "source": source, "target": target,
            "device": device, "variant": variant, "status": status, **extra}


def make_results() -> dict:
    cases = [
        _case("cnn-torch-onnxruntime-cpu", "cnn", "torch", "onnxruntime", "cpu", "passed",
              message="all outputs within tolerance", examples=3, worst_error_ratio=0.0209,
              worst_normalized_error=1e-6, outputs={"features": _output(True, 0.0209)},
              provenance={"converter": "torch->onnx", "tool": "torch.onnx.export", "opset": 18,
                          "versions": {"torch": "2.13.0", "onnx": "1.23.2"},
                          "edits": ["stamped opset 13", "renamed inputs {'data': 'image'}"],
                          "layout_variant": "nhwc", "options": {"exporter": "dynamo"}},
              versions={"torch": "2.13.0", "onnxruntime": "1.32.0"},
              timings={"build_s": 0.0031, "convert_s": 3.14, "load_s": 0.0093, "reference_s": 0.0007,
                       "target_s": 0.0017}, duration_s=3.2),
        _case("cnn-torch-onnxruntime-cpu-converted", "cnn", "torch", "onnxruntime", "cpu", "failed",
              variant="converted", message="features: 1% of 1280 elements out of tolerance <bad> & worse",
              examples=103, worst_error_ratio=17.38, worst_normalized_error=1.9e-4,
              outputs={"features": _output(False, 17.38)},
              failure={"recipe": {"dims": {"N": 1, "H": 16}, "seed": 0},
                       "npz": "reports/failures/cnn-torch-onnxruntime-cpu-converted.npz",
                       "replay": "python -m harness replay reports/failures/cnn-torch-onnxruntime-cpu-converted.npz",
                       "shapes": {"image": [1, 3, 16, 20]},
                       "input_stats": {"image": {"min": -3.25, "max": 2.5, "mean": 0.01, "std": 0.99, "nan": 0}},
                       "outputs": [{**_output(False, 15.3)}]},
              provenance={"converter": "user", "path": "/tmp/model.onnx"}, timings={"build_s": 0.004},
              duration_s=12.1),
        _case("cnn-keras-onnxruntime-cpu-nchw", "cnn", "keras", "onnxruntime", "cpu", "error", variant="nchw",
              stage="convert", message=ERROR_MSG, duration_s=0.5),
        _case("lstm-torch-onnxruntime-cuda", "lstm", "torch", "onnxruntime", "cuda", "skipped",
              message=LONG_SKIP, duration_s=0.0),
        _case("lstm-torch-onnxruntime-cpu", "lstm", "torch", "onnxruntime", "cpu", "skipped",
              message="known limitation of torch->onnxruntime for lstm: a skip in a column where a case ran",
              duration_s=0.0),
        _case("no_such_model", "no_such_model", "", "", "", "error", stage="options",
              message="unknown model 'no_such_model'; zoo models: cnn, lstm <x>"),
    ]
    return {"schema": 1, "started": "2026-01-01T00:00:00", "updated": "2026-01-01T00:01:00",
            "environment": {"python": "3.11.7", "platform": "Linux-6.1-x86_64", "machine": "x86_64",
                            "processor": "x86_64", "gpu": "NVIDIA H100 80GB",
                            "versions": {"torch": "2.13.0", "onnxruntime": "1.32.0", "tensorflow-cpu": "2.21.0"}},
            "run": {"options": {"examples": 3}}, "cases": {c["id"]: c for c in cases}}


@pytest.fixture(scope="module")
def html() -> str:
    return render_html(make_results())


def _matrix(html: str) -> str:
    return html[html.index('<table id="matrix">'):html.index("</table>", html.index('<table id="matrix">'))]


def test_matrix_has_a_row_per_model_and_a_column_per_path(html):
    matrix = _matrix(html)
    assert matrix.count("<tr>") == 1 + 2  # header, cnn, lstm (no row for the unplaced error)
    for column in ("torch → onnxruntime / cpu", "torch → onnxruntime / cpu / converted",
                   "keras → onnxruntime / cpu / nchw"):
        assert f">{column}</th>" in matrix
    assert "no_such_model" not in matrix


def test_columns_where_nothing_ran_fold_into_one_line_of_reasons(html):
    """torch → onnxruntime / cuda holds one case, skipped: out of the matrix, its reason under it."""
    assert ">torch → onnxruntime / cuda</th>" not in _matrix(html)
    folded = re.search(r'<p id="folded">(.*?)</p>', html).group(1)
    assert '<b title="torch → onnxruntime / cuda">1 column where nothing ran</b>' in folded
    assert f'<span class="reason">1 skipped: {LONG_SKIP}</span>' in folded


def test_a_column_where_a_case_ran_keeps_its_skipped_cells(html):
    """The benign twin: torch → onnxruntime / cpu ran cnn and skipped lstm; both cells stay."""
    assert ">torch → onnxruntime / cpu</th>" in _matrix(html)
    assert 'title="lstm-torch-onnxruntime-cpu: skipped"' in _matrix(html)


@pytest.mark.parametrize("case_id,status", [("cnn-torch-onnxruntime-cpu", "passed"),
                                            ("cnn-torch-onnxruntime-cpu-converted", "failed"),
                                            ("cnn-keras-onnxruntime-cpu-nchw", "error"),
                                            ("lstm-torch-onnxruntime-cpu", "skipped")])
def test_matrix_cells_carry_status_class_and_link_to_their_drill_down(html, case_id, status):
    cell = re.search(r'<td class="cell ([a-z]+)"[^>]*title="' + re.escape(case_id) + r': [a-z]+"><a href="#([^"]+)">',
                     _matrix(html))
    assert cell, case_id
    assert cell.group(1) == status
    assert cell.group(2) == anchor(case_id)
    assert f'<details class="case" id="{anchor(case_id)}"' in html


def test_matrix_cells_show_worst_ratio_and_passed_cells_are_coloured_by_it(html):
    matrix = _matrix(html)
    assert '<span class="ratio">0.0209</span>' in matrix and '<span class="ratio">17.4</span>' in matrix
    passed = re.search(r'<td class="cell passed" style="([^"]*)"', matrix).group(1)
    assert passed.startswith("background:hsl(")
    assert re.search(r'<td class="cell failed" style=""', matrix)


def test_failed_and_error_cases_are_open_passed_and_skipped_closed(html):
    for case_id, is_open in [("cnn-torch-onnxruntime-cpu-converted", True), ("cnn-keras-onnxruntime-cpu-nchw", True),
                             ("cnn-torch-onnxruntime-cpu", False), ("lstm-torch-onnxruntime-cuda", False)]:
        tag = re.search(r'<details class="case" id="' + re.escape(anchor(case_id)) + r'"([^>]*)>', html).group(1)
        assert ("open" in tag) == is_open, case_id


def test_histogram_svg_has_one_bar_per_bin_and_the_tolerance_line(html):
    svg = histogram_svg(HIST)
    assert svg.startswith("<svg") and svg.count('<rect class="bar') == len(HISTOGRAM_EDGES) - 1
    assert svg.count('class="bar over"') == 3  # (1, 10], (10, 100], (100, inf]
    assert '<line class="tol"' in svg and "tolerance (ratio 1)" in svg
    assert "every" not in svg
    assert "every 10th element" in histogram_svg({**HIST, "sampled": 10})
    assert histogram_svg(None) == "" and histogram_svg({}) == ""
    # in the report: the worst example of two outputs and the shrunk input of one
    assert html.count('<svg class="hist"') == 3


def test_histogram_from_the_comparator_renders():
    import numpy as np

    from harness.compare import compare_outputs
    from harness.specs import Tolerance

    ref = np.linspace(-1, 1, 1000, dtype=np.float32)
    got = ref + np.float32(1e-3) * (np.arange(1000) % 3 == 0)
    hist = compare_outputs("o", ref, got, Tolerance(atol=1e-4, rtol=0)).to_json()["error_histogram"]
    assert hist["edges"][-1] == "inf" and sum(hist["counts"]) == 1000 and hist["sampled"] == 1
    assert histogram_svg(hist).count('<rect class="bar') == 10


def test_reasons_are_in_full_and_escaped(html):
    assert LONG_SKIP in html
    assert "conversion failed: &lt;Op &#39;Foo&#39; &amp; &#39;Bar&#39;&gt; not supported\nTraceback line 2\nEND-OF-ERROR" in html
    assert "<Op" not in html and "<bad>" not in html and "<message>" not in html and "lstm <x>" not in html
    assert "out of tolerance &lt;bad&gt; &amp; worse" in html


def test_drill_down_shows_tolerances_noise_failure_provenance_timings(html):
    start = html.index(f'id="{anchor("cnn-torch-onnxruntime-cpu-converted")}"')
    failed = html[start:html.index("</details>", start)]
    for text in ("atol_by_max", "max_mismatch", "error over noise", "7.78e+03", "Shrunk failing input",
                 "python -m harness replay reports/failures/cnn-torch-onnxruntime-cpu-converted.npz",
                 "Input statistics", "-3.25", "Outputs at the shrunk input", "/tmp/model.onnx", "would pass with"):
        assert text in failed, text
    start = html.index(f'id="{anchor("cnn-torch-onnxruntime-cpu")}"')
    passed = html[start:html.index("</details>", start)]
    for text in ("Conversion provenance", "torch.onnx.export", "stamped opset 13", "layout_variant", "nhwc",
                 "dynamo", ">build<", ">convert<", ">load<", ">reference<", ">target<", "3.14 s", "3.1 ms"):
        assert text in passed, text


def test_environment_and_unplaced_errors(html):
    env = html[html.index('<h2 id="environment">'):]
    for text in ("3.11.7", "Linux-6.1-x86_64", "x86_64", "NVIDIA H100 80GB", "tensorflow-cpu", "2.21.0", "1.32.0"):
        assert text in env, text
    unplaced = html[html.index('<h2 id="unplaced">'):html.index('<h2 id="cases">')]
    assert "no_such_model" in unplaced and "stage options" in unplaced


def test_report_is_self_contained(html):
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", html)  # every link is to an anchor in the file
    assert "<link" not in html and "@import" not in html and "url(" not in html


def test_empty_results_render():
    out = render_html({"cases": {}})
    assert "No case in the matrix" in out and "<svg" not in out


def test_write_html_report(tmp_path):
    path = write_html_report(make_results(), tmp_path / "sub" / "parity.html")
    assert path.read_text().startswith("<!doctype html>")


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_in_headless_chromium(tmp_path):
    page = write_html_report(make_results(), tmp_path / "parity.html")
    dumped = _chromium(tmp_path, "--dump-dom", page.resolve().as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    assert '<table id="matrix">' in dom
    for status in ("passed", "failed", "error", "skipped"):
        assert f'<td class="cell {status}"' in dom, status
    assert dom.count('<rect class="bar') == 30

    shot = tmp_path / "shot.png"
    taken = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", page.resolve().as_uri())
    assert taken.returncode == 0, taken.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert struct.unpack(">II", data[16:24]) == (1280, 1600)


CORE_MODELS = ("cnn", "depthwise", "embedding", "gru", "lstm", "mlp", "mobilenet_v2", "simple", "transformer",
               "two_outputs")
CPU_TARGETS = ("mnn", "ncnn", "onnxruntime", "openvino", "tflite")
GPU_ONLY_TARGETS = ("tensorrt", "onnxruntime-tensorrt")


def core_zoo_on_a_cpu_machine() -> dict:
    """The records of `make parity` on a CPU machine, as wide as it is: the core zoo's models, each
    source and layout variant on every target and device; every CUDA and TensorRT case skipped, and
    keras -> tflite run by one model only (a column where one case ran)."""
    cases = []
    for model in CORE_MODELS:
        for source, variants in (("torch", (None,)), ("mxnet", (None,)), ("keras", (None, "nchw", "nhwc"))):
            for target in CPU_TARGETS + GPU_ONLY_TARGETS:
                for device in ("cpu", "cuda"):
                    for variant in variants if target != "tflite" else (None,):
                        case_id = "-".join(filter(None, (model, source, target, device, variant)))
                        if device == "cuda":
                            status, message = "skipped", f"no CUDA device visible to {source}"
                        elif target in GPU_ONLY_TARGETS:
                            status, message = "skipped", f"{target} runs on NVIDIA GPUs only"
                        elif (source, target) == ("keras", "tflite") and model != "cnn":
                            status, message = "skipped", f"known limitation of keras->tflite for {model}"
                        else:
                            status, message = "passed", "all outputs within tolerance"
                        cases.append(_case(case_id, model, source, target, device, status, variant=variant,
                                           message=message, worst_error_ratio=0.00763 if status == "passed" else None))
    return {"schema": 1, "cases": {c["id"]: c for c in cases}}


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_core_zoo_matrix_fits_a_laptop_screen(tmp_path):
    """Rendered at 1366 px, the matrix of a CPU machine's run (23 columns ran, 47 only skipped) fits
    without scrolling sideways; a column where one case ran is shown."""
    page = write_html_report(core_zoo_on_a_cpu_machine(), tmp_path / "parity.html")
    probe = ("<script>var m = document.getElementById('matrix');"
             "document.body.dataset.width = Math.ceil(m.getBoundingClientRect().width);"
             "document.body.dataset.overflow = m.parentElement.scrollWidth - m.parentElement.clientWidth;</script>")
    page.write_text(page.read_text().replace("</body>", probe + "</body>"))
    dumped = _chromium(tmp_path, "--window-size=1366,768", "--dump-dom", page.resolve().as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    width, overflow = re.search(r'data-width="(\d+)" data-overflow="(-?\d+)"', dumped.stdout).groups()
    assert int(width) <= 1366 and int(overflow) <= 0, (width, overflow)
    matrix = _matrix(dumped.stdout)
    assert ">keras → tflite / cpu</th>" in matrix and 'title="cnn-keras-tflite-cpu: passed"' in matrix
    assert matrix.count('<th class="col">') == 23 and "/ cuda<" not in matrix and "tensorrt /" not in matrix


def test_inconclusive_case_noise_verdict_and_shape_warnings_are_shown():
    from harness.report.html import render_html

    results = make_results()
    noisy = {**_output(True, 3.2), "accepted_by": "noise", "message": "features: 3.2x its tolerance, but ...",
             "sensitivity": {"ratio": 0.2, "inconclusive": True, "max_abs_change": 1e-9, "draws": 3}}
    results["cases"]["gru-torch-onnxruntime-cpu"] = _case(
        "gru-torch-onnxruntime-cpu", "gru", "torch", "onnxruntime", "cpu", "inconclusive",
        message="passed, but inconclusive: features does not depend on the input", examples=10, shrink_steps=0,
        worst_error_ratio=3.2, worst_normalized_error=1e-5, outputs={"features": noisy},
        warnings=[{"tensor": "x", "kind": "fixed_dim", "message": "converted file m.onnx declares input 'x' as [1, 4]"}],
        duration_s=1.0)
    page = render_html(results)
    assert 'class="cell inconclusive"' in page and "1 inconclusive" in page
    assert "within its noise multiple" in page and "does not depend on the input" in page
    assert "declares input &#39;x&#39; as [1, 4]" in page and "Declared shapes against the spec" in page
    assert "noise_multiple" in page and "input sensitivity" in page


def test_drill_down_shows_the_whole_output_metrics_and_the_thresholds_missed():
    results = make_results()
    quantized = {**_output(False, 10.0), "name": "logits", "ref_shape": [4, 10], "got_shape": [4, 10],
                 "snr_db": 17.25, "top1_agreement": 0.75, "topk_overlap": 0.9, "top_k": 5,
                 "failed_thresholds": ["min_snr_db", "min_top1"], "needed_atol": None, "needed_rtol": None,
                 "tolerance": {**TOL, "atol_by_max": 1.0, "min_snr_db": 20.0, "min_top1": 0.9, "min_cosine": 0.0},
                 "message": "logits: within its elementwise tolerance, but SNR 17.25 dB < min_snr_db 20 dB"}
    results["cases"]["mlp-torch-onnxruntime-cpu-int8"] = _case(
        "mlp-torch-onnxruntime-cpu-int8", "mlp", "torch", "onnxruntime", "cpu", "failed", precision="int8",
        message=quantized["message"], examples=4, worst_error_ratio=10.0, worst_normalized_error=0.1,
        outputs={"logits": quantized})
    page = render_html(results)
    start = page.index(f'id="{anchor("mlp-torch-onnxruntime-cpu-int8")}"')
    drill = page[start:page.index("</details>", start)]
    for text in ("below min_snr_db, min_top1", "<th>SNR</th><td class=\"num\">17.2 dB</td>",
                 "<th>top-1 agreement</th><td class=\"num\">0.75</td>", "<th>top-5 overlap</th><td class=\"num\">0.9</td>",
                 "<th>min_snr_db</th><td class=\"num\">20</td>", "<th>min_top1</th>"):
        assert text in drill, text
    assert "<th>min_cosine</th>" not in drill   # a threshold not set is not shown as one
    # A record from before these metrics (or without a class axis) shows none of their rows.
    start = page.index(f'id="{anchor("cnn-torch-onnxruntime-cpu")}"')
    old = page[start:page.index("</details>", start)]
    assert "<th>cosine</th>" in old and "<th>SNR</th>" not in old and "top-1 agreement" not in old
