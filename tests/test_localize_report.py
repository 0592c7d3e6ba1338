"""Where a failed case diverges, as the reports show it: the HTML section (the
first diverging node, the path table, the error chart), the terminal lines,
the JUnit properties and the baseline, all from hand-made records; the
report modules read the record only, never the engine that fills it."""

from __future__ import annotations

import copy
import math
import re

import pytest

from harness.report.baseline import compare_to_baseline, diff_runs, load_baseline, save_baseline
from harness.report.extras import junit_properties
from harness.report.html import anchor, divergence_svg, path_rows, render_html
from harness.report.summary import summary_lines
from tests.test_html_report import make_results

FAILED = "cnn-torch-onnxruntime-cpu-converted"  # the failed case of make_results
EVIL = "<script>alert(1)</script>"
REPRO = "python reports/failures/CASE.repro/repro.py"


def _entry(tensor, node, op_type, layer, error, diverged=False) -> dict:
    return {"tensor": tensor, "node": node, "op_type": op_type, "layer": layer, "normalized_error": error,
            "diverged": diverged}


def found() -> dict:
    return {
        "status": "found",
        "message": "the first diverging tensor is 'conv2' (Conv node 'node_Conv_3', torch module "
                   "'features.3 (Conv2d)'): 0.31 of its magnitude, allowed 1e-4; its inputs agree (at most 2.1e-7)",
        "mode": "converter", "compared_against": "torch: torch.export FX nodes by name", "output": "features",
        "artifact": "/cache/ab/ab12/model.onnx", "allowed": 1.2e-4,
        "first": {"tensor": "conv2", "node": "node_Conv_3", "op_type": "Conv", "layer": "features.3 (Conv2d)",
                  "normalized_error": 0.31, "max_abs": 1.7, "snr_db": 10.2,
                  "inputs": [{"tensor": "relu_1", "normalized_error": 2.1e-7, "layer": "features.2 (ReLU)"},
                             {"tensor": "features.3.weight", "normalized_error": None, "layer": None}]},
        "path": [_entry("x", None, "input", None, 0.0),
                 _entry("conv1", "node_Conv_0", "Conv", "features.0 (Conv2d)", 1.1e-7),
                 _entry("relu_1", "node_Relu_1", "Relu", None, None),
                 _entry("conv2", "node_Conv_3", "Conv", "features.3 (Conv2d)", 0.31, True),
                 _entry("logits", "node_Gemm_9", "Gemm", "fc (Linear)", 0.28, True)],
        "nodes": 12, "compared": 9, "mapped_nodes": 9, "unmapped": {"no source value": 3},
        "confirmed": {"how": "single node", "reproduced": True, "normalized_error": 0.31},
        "fusion_note": "marking intermediate tensors as outputs keeps the runtime from fusing across them",
        "seconds": 0.41, "case_seconds": 3.2,
        "repro": {"folder": "reports/failures/CASE.repro", "script": "reports/failures/CASE.repro/repro.py",
                  "command": REPRO},
        "more": []}


def long_path(length: int = 50, first: int = 32) -> list[dict]:
    """A deep network's path: the error grows a decade every few nodes, every
    seventh tensor not compared."""
    return [_entry(f"t{i}", f"n{i}", "Add", f"block.{i}", None if i % 7 == 3 else 10 ** (-7 + 0.15 * i), i >= first)
            for i in range(length)]


def page_with(localization: dict) -> str:
    results = make_results()
    results["cases"][FAILED]["localization"] = localization
    return render_html(results)


def section(page: str) -> str:
    """The 'Where it diverges' section of the failed case's drill-down."""
    start = page.index("<h3>Where it diverges</h3>")
    return page[start:page.index("\n<h3>Outputs", start)]


def circles(svg: str) -> list[dict]:
    return [dict(re.findall(r'(\w+)="([^"]*)"', m)) for m in re.findall(r"<circle ([^>]*)>", svg)]


# ---------------------------------------------------------------- the HTML section

def test_section_names_the_first_diverging_node_its_layer_and_inputs():
    part = section(page_with(found()))
    assert "the first diverging tensor is &#39;conv2&#39;" in part
    table = part[part.index('<table class="first-diverging">'):part.index('<div class="chart">')]
    for text in ("<td class=\"mono\">conv2</td>", "<th>ONNX node</th><td class=\"mono\">node_Conv_3</td>",
                 "<th>op type</th><td>Conv</td>", "<th>source layer</th><td>features.3 (Conv2d)</td>",
                 "<b>0.31</b> (allowed 0.00012)", "<th>max abs error</th><td class=\"num\">1.7</td>", "10.2 dB",
                 "relu_1", "features.2 (ReLU)", "2.1e-07", "features.3.weight", "not compared",
                 "single node: reproduced (0.31)"):
        assert text in table, text
    for text in ("compared against torch: torch.export FX nodes by name (converter mode)", "/cache/ab/ab12/model.onnx",
                 "compared 9 of 12 nodes, 9 with a reference value; 3 not compared: no source value",
                 "localized in 410.0 ms (the case: 3.20 s)", "keeps the runtime from fusing across them",
                 f'<pre class="replay">{REPRO}</pre>', "<code>reports/failures/CASE.repro</code>"):
        assert text in part, text


def test_path_table_has_a_row_per_tensor_and_marks_where_it_diverged():
    part = section(page_with(found()))
    table = part[part.index('<table class="grid path">'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r"<tr(?: class=\"(\w+)\")?><td class=\"num\">(\d+)</td><td class=\"mono\">(\w+)</td>", table)
    assert [(cls, int(pos), tensor) for cls, pos, tensor in rows] == [
        ("", 0, "x"), ("", 1, "conv1"), ("", 2, "relu_1"), ("first", 3, "conv2"), ("diverged", 4, "logits")]
    assert "first diverging</td>" in table and "not compared</td>" in table and "skipped" not in table


def test_long_path_keeps_its_ends_and_the_first_diverging_rows_between_ellipses():
    localization = {**found(), "path": long_path(), "first": {"tensor": "t32"}}
    rows = path_rows(localization)
    assert [r.get("position", r.get("skipped")) for r in rows] == [0, 1, 2, 28, 31, 32, 33, 13, 47, 48, 49]
    assert [r["position"] for r in rows if r.get("first")] == [32]
    assert [r["position"] for r in path_rows(localization, limit=6)[::2]] == [0, 31, 33, 49]
    part = section(page_with(localization))
    assert "&hellip; 28 more &hellip;" in part and "&hellip; 13 more &hellip;" in part
    assert part[part.index('<table class="grid path">'):].count('<td class="mono">t') == 9


def test_first_diverging_row_falls_back_to_the_first_marked_diverged():
    localization = {**found(), "first": None}
    assert [r["position"] for r in path_rows(localization) if r["first"]] == [3]
    assert path_rows({"path": []}) == []


# ---------------------------------------------------------------- the chart

def test_chart_has_a_point_per_compared_tensor_on_a_log_scale_and_the_allowed_line():
    svg = str(divergence_svg(found()))
    points = circles(svg)
    assert len(points) == 4  # relu_1 was not compared: a gap, not a point
    assert [p["class"] for p in points] == ["agrees", "agrees", "first", "diverged"]
    assert svg.count('<line class="gap"') == 1 and "relu_1 (Relu): not compared" in svg
    # the line breaks at the gap: input to conv1, conv2 to logits
    assert [len(p.split()) for p in re.findall(r'<polyline class="err" points="([^"]*)"', svg)] == [2, 2]
    # y falls linearly with log10 of the error: conv1, conv2, logits and the allowed line on one scale
    allowed_y = float(re.search(r'<line class="allowed" x1="[\d.]+" y1="([\d.]+)"', svg).group(1))
    marks = [(1.1e-7, float(points[1]["cy"])), (0.31, float(points[2]["cy"])), (0.28, float(points[3]["cy"])),
             (1.2e-4, allowed_y)]
    slopes = [(y - marks[0][1]) / (math.log10(v) - math.log10(marks[0][0])) for v, y in marks[1:]]
    assert all(s < 0 for s in slopes) and max(slopes) - min(slopes) < 0.5
    # the zero sits under the decades, on its own labelled line
    assert float(points[0]["cy"]) > max(float(p["cy"]) for p in points[1:]) and ">0</text>" in svg
    assert "allowed 0.00012" in svg and "first: conv2" in svg
    # the points are evenly spaced by position along the path
    xs = [float(p["cx"]) for p in points]
    assert xs[1] - xs[0] == pytest.approx((xs[2] - xs[1]) / 2) == pytest.approx(xs[3] - xs[2])


def test_chart_of_a_long_path_and_of_errors_off_the_scale():
    svg = str(divergence_svg({**found(), "path": long_path(), "first": {"tensor": "t32"}}))
    assert len(circles(svg)) == 50 - 7 and svg.count('<line class="gap"') == 7
    assert [p["class"] for p in circles(svg)].count("first") == 1
    odd = {"allowed": None, "path": [_entry("a", "n0", "Conv", None, 1e-30),
                                     _entry("b", "n1", "Conv", None, "inf", True),
                                     _entry("c", "n2", "Conv", None, "nan", True),
                                     _entry("d", "n3", "Conv", None, 1e-3)]}
    svg = str(divergence_svg(odd))
    ys = [float(p["cy"]) for p in circles(svg)]
    assert ys[1] == ys[2] < ys[3] < ys[0]  # the non-finite errors above the scale, 1e-30 clamped to its bottom
    assert "∞</text>" in svg and "class=\"allowed\"" not in svg and ">0</text>" not in svg
    assert [p["class"] for p in circles(svg)][1] == "first"  # no `first`: the first marked diverged
    assert divergence_svg({"path": []}) == "" and divergence_svg(None) == ""


# ---------------------------------------------------------------- other statuses, other outputs, escaping

@pytest.mark.parametrize("status", ["agree", "not_found", "unavailable", "error"])
def test_other_statuses_show_their_message_only(status):
    part = section(page_with({"status": status, "message": f"nothing named: {status} <because>"}))
    assert f'<pre class="reason localization">nothing named: {status} &lt;because&gt;</pre>' in part
    for absent in ("first-diverging", "<svg", 'class="grid path"', "compared ", "reproduction"):
        assert absent not in part, absent


def test_other_failing_outputs_are_shown_compactly():
    probs = {**found(), "output": "probs", "path": long_path(), "first": {"tensor": "t32"},
             "repro": {"folder": "f", "command": "python f/repro.py"}}
    part = section(page_with({**found(), "more": [probs, {"status": "unavailable", "output": "aux",
                                                           "message": "no intermediates for aux"}]}))
    more = part[part.index("<h4>Other failing outputs</h4>"):]
    assert "<h4>probs</h4>" in more and "<h4>aux</h4>" in more and "no intermediates for aux" in more
    assert more.count("<svg") == 1 and len(circles(more)) == 43
    assert more.count('<td class="mono">t') == 5  # the short table: the ends and the first diverging rows
    assert "python f/repro.py" in more and "first-diverging" not in more and "fusing" not in more


def test_every_name_is_escaped():
    localization = found()
    localization["message"] = f"the first diverging tensor is '{EVIL}'"
    localization["output"] = localization["compared_against"] = localization["fusion_note"] = EVIL
    localization["first"].update(tensor=EVIL, node=EVIL, op_type=EVIL, layer=EVIL)
    localization["first"]["inputs"][0].update(tensor=EVIL, layer=EVIL)
    localization["path"][3].update(tensor=EVIL, node=EVIL, op_type=EVIL, layer=EVIL)
    localization["unmapped"] = {EVIL: 3}
    localization["repro"] = {"folder": EVIL, "command": EVIL}
    localization["more"] = [{**copy.deepcopy(localization), "more": []}, {"status": "error", "message": EVIL}]
    page = page_with(localization)
    assert "<script>alert" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") > 20
    assert "first: &lt;script&gt;alert(1)&lt;/script&gt;" in section(page)  # the chart's label and titles too


# ---------------------------------------------------------------- records without a localization

def test_records_without_a_localization_render_as_before():
    before = render_html(make_results())
    after = page_with(found())
    assert after.replace(section(after), "") == before
    body = before[before.index("<body>"):]
    assert "Where it diverges" not in body and "path-chart" not in body
    start = after.index(f'id="{anchor(FAILED)}"')
    assert after.index("<h3>Where it diverges</h3>", start) < after.index("</details>", start)


# ---------------------------------------------------------------- terminal summary, JUnit, baseline

def _record(case_id: str, status: str, **extra) -> dict:
    return {"id": case_id, "status": status, "worst_error_ratio": 17.4, "worst_normalized_error": 1.9e-4,
            "examples": 10, "outputs": {}, **extra}


def test_terminal_summary_adds_at_most_two_lines_per_localized_case():
    layered = found()
    layered["first"]["layer"] = "features.3\n(Conv2d)"
    records = [_record("a-failed", "failed", localization=layered),
               _record("b-failed", "failed", localization={"status": "unavailable",
                                                           "message": "no ONNX on the path\nsecond line"}),
               _record("c-failed", "failed"),
               _record("d-passed", "passed", worst_error_ratio=0.1)]
    lines = summary_lines(records)
    at = [i for i, line in enumerate(lines) if line.startswith(("a-failed", "b-failed", "c-failed", "d-passed"))]
    assert at[1] - at[0] == 3 and at[2] - at[1] == 2 and at[3] - at[2] == 1
    assert lines[at[0] + 1:at[0] + 3] == [
        "    first diverging for features: Conv 'node_Conv_3' (features.3 (Conv2d)) 0.31 of its magnitude "
        "(allowed 0.00012)",
        f"    repro: {REPRO}"]
    assert lines[at[1] + 1] == "    localization: no ONNX on the path second line"
    without = [{k: v for k, v in r.items() if k != "localization"} for r in records]
    assert [line for line in lines if not line.startswith("    ")] == summary_lines(without)


def test_junit_properties_name_the_localized_node_and_the_repro():
    properties = dict(junit_properties(_record("a", "failed", localization=found())))
    assert {k: properties[k] for k in properties if k.startswith("localized_") or k == "repro"} == {
        "localized_node": "node_Conv_3", "localized_op": "Conv", "localized_layer": "features.3 (Conv2d)",
        "localized_error": 0.31, "repro": REPRO}
    for record in (_record("a", "failed"), _record("a", "failed", localization={"status": "agree", "message": "m"})):
        assert not [k for k, _ in junit_properties(record) if k.startswith("localized_") or k == "repro"]


def test_a_localized_record_goes_through_the_baseline_and_the_diff(tmp_path):
    results = make_results()
    results["cases"][FAILED]["localization"] = {**found(), "path": long_path()}
    saved = load_baseline(save_baseline(results, tmp_path / "baseline.json"))
    assert saved["cases"][FAILED]["localization"]["first"]["node"] == "node_Conv_3"
    comparison = compare_to_baseline(results, saved)
    assert not comparison.failed and FAILED in comparison.unchanged
    assert not diff_runs(saved, results).comparison.failed
