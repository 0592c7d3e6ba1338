"""Benchmarks of the harness's hot paths, run on demand (`make bench`), not a test.

1. inputs:  `harness.inputs.make_inputs` for one 1x3x224x224 float32 input, per
            example, against numpy's generator alone and against hypothesis'
            own array strategy; plus the number of distinct values per tensor.
2. compare: `harness.compare.compare_outputs` (all metrics) on a 10-million-
            element float32 output, against one `numpy.testing.assert_allclose`.
3. zoo:     the parity plugin over the zoo in a subprocess, cold (empty
            artifact cache) and cached (same cache again), whole-run wall time
            and the conversion-only sum from reports/parity.json.
4. reference: the keras source's `run` (the reference of every Keras case) on
            zoo models, against the fastest of Keras/TensorFlow's own inference
            calls (eager, tf.function, tf.function with XLA, predict_on_batch).
5. isolation: the CPU zoo as `make parity` runs it (ci profile, cached
            artifacts), every case in worker processes (--parity-isolate=always,
            and auto, which is the same run when a LiteRT case is in it) against
            every case in the pytest process (never); runs alternate.

Each figure is the median and the min over several repeats (time.perf_counter,
after a warm-up). Ratios are median over median. Prints a markdown table and
writes everything, with machine info, to benchmarks/results.json.

    .venv/bin/python benchmarks/run.py [--quick] [--only inputs,compare,zoo,reference,isolation]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
SHAPE = (1, 3, 224, 224)
COMPARE_ELEMENTS = 10_000_000


# ---------------------------------------------------------------- helpers

def summarize(times: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times), "all_s": times}


def time_per_call(fn: Callable[[int], Any], repeats: int, number: int, warmup: int = 3) -> dict[str, Any]:
    """Per-call seconds: each repeat calls fn(i) `number` times (i varies, so that
    seeds differ) and records total / number; warm-up calls come first."""
    for i in range(warmup):
        fn(10_000 + i)
    times = []
    counter = 0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn(counter)
            counter += 1
        times.append((time.perf_counter() - start) / number)
    return summarize(times)


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def row(benchmark: str, case: str, ours: dict, baseline_name: str | None, baseline: dict | None,
        goal: str, goal_ratio: float | None, note: str = "") -> dict[str, Any]:
    ratio = ours["median_s"] / baseline["median_s"] if baseline else None
    met = None if (ratio is None or goal_ratio is None) else ratio <= goal_ratio
    return {"benchmark": benchmark, "case": case, "median_s": ours["median_s"], "min_s": ours["min_s"],
            "repeats": ours["repeats"], "baseline": baseline_name,
            "baseline_median_s": baseline["median_s"] if baseline else None,
            "baseline_min_s": baseline["min_s"] if baseline else None,
            "ratio": ratio, "goal": goal, "goal_ratio": goal_ratio, "met": met, "note": note,
            "raw": {"ours": ours, "baseline": baseline}}


def machine_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("numpy", "torch", "onnxruntime", "onnx", "onnxscript", "hypothesis", "pytest"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_model": model, "cores": os.cpu_count(), "cores_usable": usable, "load_avg_start": os.getloadavg(),
            "python": sys.version.split()[0], "platform": platform.platform(), "versions": versions,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# ---------------------------------------------------------------- 1. inputs

def bench_inputs(quick: bool) -> tuple[list[dict], dict]:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    from harness.inputs import DISTRIBUTIONS, InputRecipe, make_inputs
    from harness.specs import InputSpec, ModelSpec

    spec = ModelSpec(
        name="bench_image",
        inputs=(InputSpec("image", ("N", 3, "H", "W"), dims={"N": (1, 1), "H": (224, 224), "W": (224, 224)},
                          layout="NCHW"),),
        outputs=("y",),
        builders={"torch": lambda: None},
        origin="benchmark",
    )
    dims = {"N": 1, "H": 224, "W": 224}
    repeats, number = (5, 10) if quick else (9, 30)

    def numpy_gen(seed: int) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal(SHAPE, dtype=np.float32)

    numpy_t = time_per_call(numpy_gen, repeats, number)
    distinct = {"numpy standard_normal": [int(np.unique(numpy_gen(s)).size) for s in range(5)]}

    rows = []
    cases = [(d, 0.01) for d in DISTRIBUTIONS] + [("normal", 0.0)]
    for distribution, fraction in cases:
        def ours(seed: int, distribution=distribution, fraction=fraction) -> np.ndarray:
            recipe = InputRecipe(dims, {"image": distribution}, fraction, seed)
            return make_inputs(spec, recipe)["image"]

        sample = ours(0)
        assert sample.shape == SHAPE and sample.dtype == np.float32, (sample.shape, sample.dtype)
        t = time_per_call(ours, repeats, number)
        label = f"make_inputs {distribution}, special_fraction {fraction}"
        distinct[label] = [int(np.unique(ours(s)).size) for s in range(5)]
        headline = distribution == "normal" and fraction == 0.01
        note = "headline" if headline else ("extra: no special values" if fraction == 0.0 else "")
        rows.append(row("1 inputs", label, t, "numpy default_rng.standard_normal", numpy_t, "<= 2x", 2.0, note))

    # hypothesis' own array strategy, drawn per example inside a @given test.
    # The body does nothing while timed; distinct values come from a separate run.
    examples = 15 if quick else 40
    h_repeats = 3 if quick else 5
    hyp_settings = settings(max_examples=examples, database=None, deadline=None,
                            suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    strategy = arrays(np.float32, SHAPE, elements=st.floats(-4, 4, width=32))
    calls = [0]

    @hyp_settings
    @given(strategy)
    def timed(x):
        calls[0] += 1

    hyp_distinct: list[int] = []

    @hyp_settings
    @given(strategy)
    def counted(x):
        hyp_distinct.append(int(np.unique(x).size))

    timed()  # warm-up
    times = []
    for _ in range(h_repeats):
        calls[0] = 0
        start = time.perf_counter()
        timed()
        times.append((time.perf_counter() - start) / max(calls[0], 1))
    hyp_t = summarize(times)
    hyp_t["examples_per_repeat"] = examples
    counted()
    distinct[f"hypothesis arrays (elements floats(-4, 4, width=32)), {len(hyp_distinct)} examples"] = hyp_distinct

    headline_row = next(r for r in rows if r["note"] == "headline")
    rows.append(row("1 inputs", "hypothesis.extra.numpy.arrays per example", hyp_t,
                    None, None, "comparison only", None,
                    f"{examples} examples per repeat via @given (Phase.generate only); "
                    f"make_inputs normal is {headline_row['median_s'] / hyp_t['median_s']:.3g}x its median"))
    details = {"distinct_values_per_tensor": distinct, "tensor_elements": int(np.prod(SHAPE)),
               "numpy_baseline": numpy_t, "hypothesis_examples_per_repeat": examples}
    return rows, details


# ---------------------------------------------------------------- 2. compare

def bench_compare(quick: bool) -> tuple[list[dict], dict]:
    from harness.compare import compare_outputs
    from harness.specs import Tolerance

    rng = np.random.default_rng(0)
    shape = (10, 1000, 1000)
    assert np.prod(shape) == COMPARE_ELEMENTS
    ref = rng.standard_normal(shape, dtype=np.float32)
    got = ref + rng.standard_normal(shape, dtype=np.float32) * np.float32(1e-6)
    tol = Tolerance(atol=1e-5, rtol=1e-5, atol_by_max=1e-5)
    repeats = 3 if quick else 7

    result = compare_outputs("out", ref, got, tol)
    assert result.passed, result.message
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)

    ours = time_per_call(lambda _: compare_outputs("out", ref, got, tol), repeats, 1, warmup=1)
    base = time_per_call(lambda _: np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5), repeats, 1, warmup=1)
    rows = [row("2 compare", "compare_outputs, 10M float32, passing", ours,
                "numpy.testing.assert_allclose", base, "<= 3x", 3.0, "headline")]

    # Extra, for information: a failing output (1% of elements off by 1e-2), where
    # compare_outputs also works out needed_atol/needed_rtol and assert_allclose
    # builds its own message. No goal.
    bad = got.copy()
    flat = bad.reshape(-1)
    flat[rng.integers(0, flat.size, flat.size // 100)] += np.float32(1e-2)
    failing = compare_outputs("out", ref, bad, tol)
    assert not failing.passed

    def assert_failing(_):
        try:
            np.testing.assert_allclose(bad, ref, rtol=1e-5, atol=1e-5)
        except AssertionError:
            pass

    ours_f = time_per_call(lambda _: compare_outputs("out", ref, bad, tol), max(repeats // 2, 2), 1, warmup=1)
    base_f = time_per_call(assert_failing, max(repeats // 2, 2), 1, warmup=1)
    rows.append(row("2 compare", "compare_outputs, 10M float32, failing (1% off)", ours_f,
                    "numpy.testing.assert_allclose (raising)", base_f, "info only", None, "extra"))
    details = {"elements": COMPARE_ELEMENTS, "shape": list(shape), "tolerance": tol.__dict__,
               "passing_message": result.message, "failing_message": failing.message[:300]}
    return rows, details


# ---------------------------------------------------------------- 3. zoo

def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "HYPOTHESIS_PROFILE", "PYTEST_XDIST_WORKER"):
        env.pop(name, None)
    return env


def _run(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True)
    return time.perf_counter() - start, proc


def _parity_run(workdir: Path, cache: Path, reports: Path, args: tuple[str, ...] = ("--parity-examples=3",)
                ) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "--parity", "--device=cpu", *args,
           f"--parity-cache-dir={cache}", f"--parity-reports={reports}", "-q", "-p", "no:cacheprovider"]
    wall, proc = _run(cmd, workdir)
    info: dict[str, Any] = {"wall_s": wall, "returncode": proc.returncode}
    results = reports / "parity.json"
    if proc.returncode not in (0, 1) or not results.is_file():
        info["error"] = (proc.stdout + proc.stderr)[-3000:]
        return info
    cases = json.loads(results.read_text())["cases"]
    convert = [c["timings"]["convert_s"] for c in cases.values() if "convert_s" in (c.get("timings") or {})]
    hits = [bool((c.get("provenance") or {}).get("cache_hit")) for c in cases.values()
            if "convert_s" in (c.get("timings") or {})]
    info.update(
        cases=len(cases),
        statuses={s: sum(c["status"] == s for c in cases.values()) for s in sorted({c["status"] for c in cases.values()})},
        converted_cases=len(convert), convert_sum_s=sum(convert), cache_hits=sum(hits),
        errors={k: c.get("message", "")[:200] for k, c in cases.items() if c["status"] == "error"},
        per_case_convert_s={k: c["timings"]["convert_s"] for k, c in cases.items() if "convert_s" in (c.get("timings") or {})},
        per_case_duration_s={k: c.get("duration_s") for k, c in cases.items()},
        per_case_timings={k: c.get("timings") for k, c in cases.items()},
        cases_sum_s=sum(c.get("duration_s") or 0.0 for c in cases.values()),
    )
    return info


def bench_zoo(quick: bool, repeats: int | None) -> tuple[list[dict], dict]:
    repeats = repeats or (1 if quick else 3)
    root = Path(tempfile.mkdtemp(prefix="parity-bench-"))
    try:
        # Fixed cost: starting python and importing the frameworks (first call warms the page cache).
        imp = [sys.executable, "-c", "import torch, onnxruntime"]
        _run(imp, root)
        import_t = summarize([_run(imp, root)[0] for _ in range(5)])
        plain = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--co"]
        _run(plain, root)
        pytest_t = summarize([_run(plain, root)[0] for _ in range(3)])

        cold_runs, cached_runs = [], []
        for i in range(repeats):
            work = root / f"run{i}"
            work.mkdir()
            cache = work / "cache"
            cold = _parity_run(work, cache, work / "reports-cold")
            cached = _parity_run(work, cache, work / "reports-cached")
            for info in (cold, cached):
                if "error" in info:
                    raise RuntimeError(f"parity run failed (rc {info['returncode']}):\n{info['error']}")
            cold_runs.append(cold)
            cached_runs.append(cached)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    cold_wall = summarize([r["wall_s"] for r in cold_runs])
    cached_wall = summarize([r["wall_s"] for r in cached_runs])
    cold_conv = summarize([r["convert_sum_s"] for r in cold_runs])
    cached_conv = summarize([r["convert_sum_s"] for r in cached_runs])
    last_cold, last_cached = cold_runs[-1], cached_runs[-1]
    errors = last_cold["errors"]
    err_note = f"; {len(errors)} case(s) errored before conversion: {', '.join(sorted(errors))}" if errors else ""
    rows = [
        row("3 zoo", "cached rerun, whole-run wall time", cached_wall, "cold run, whole-run wall time", cold_wall,
            "<= 0.2x", 0.2, f"{last_cold['cases']} cases{err_note}"),
        row("3 zoo", "cached rerun, sum of convert_s", cached_conv, "cold run, sum of convert_s", cold_conv,
            "<= 0.2x", 0.2, f"cache hits {last_cached['cache_hits']}/{last_cached['converted_cases']} "
                            f"(cold {last_cold['cache_hits']}/{last_cold['converted_cases']})"),
        row("3 zoo", "cached rerun, sum of case duration_s (prepare + examples)",
            summarize([r["cases_sum_s"] for r in cached_runs]), "cold run, sum of case duration_s",
            summarize([r["cases_sum_s"] for r in cold_runs]), "info only", None,
            "the rest of the wall time is process start, imports, collection, report writing"),
        row("3 zoo", "fixed cost: python -c 'import torch, onnxruntime'", import_t, None, None, "info only", None,
            f"{import_t['median_s'] / cached_wall['median_s']:.0%} of the cached run's wall time"),
        row("3 zoo", "fixed cost: pytest startup with plugin, no parity (--co)", pytest_t, None, None, "info only", None,
            ""),
    ]
    details = {"repeats": repeats, "cold": cold_runs, "cached": cached_runs,
               "import_torch_onnxruntime": import_t, "pytest_startup": pytest_t}
    return rows, details


# ---------------------------------------------------------------- 5. isolation

def bench_isolation(quick: bool) -> tuple[list[dict], dict]:
    repeats = 1 if quick else 3
    modes = ("never", "always", "auto")
    root = Path(tempfile.mkdtemp(prefix="parity-bench-isolation-"))
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    try:
        cache = root / "cache"
        _parity_run(root, cache, root / "warm-up", ("--hypothesis-profile=ci", "--parity-isolate=never"))
        for i in range(repeats):
            for mode in modes:
                info = _parity_run(root, cache, root / f"{mode}-{i}", ("--hypothesis-profile=ci",
                                                                        f"--parity-isolate={mode}"))
                if "error" in info:
                    raise RuntimeError(f"parity run failed (rc {info['returncode']}):\n{info['error']}")
                runs[mode].append(info)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    never = summarize([r["wall_s"] for r in runs["never"]])
    rows = [row("5 isolation", f"CPU zoo, ci profile, cached, --parity-isolate={mode}",
                summarize([r["wall_s"] for r in runs[mode]]), "--parity-isolate=never", never, "<= 1.15x", 1.15,
                f"{runs[mode][-1]['cases']} cases, {runs[mode][-1]['statuses']}")
            for mode in ("always", "auto")]
    return rows, {"repeats": repeats, "runs": runs}


# ---------------------------------------------------------------- 4. reference

# (zoo model, input shape as the Keras model takes it); the same inputs for every call.
REFERENCE_MODELS = (("mobilenet_v2", (2, 96, 128, 3)), ("efficientnet_b0", (2, 96, 128, 3)),
                    ("transformer", (4, 16, 32)))


def bench_reference(quick: bool) -> tuple[list[dict], dict]:
    import keras
    import tensorflow as tf

    import model_zoo  # noqa: F401  (registrations)
    from harness.registry import get_model
    from harness.sources import keras as keras_source

    repeats = 3 if quick else 7
    rows: list[dict] = []
    details: dict[str, Any] = {}
    for name, shape in REFERENCE_MODELS:
        spec = get_model(name)
        model = spec.builders["keras"]()
        low, high = spec.inputs[0].domain
        x = np.random.default_rng(0).uniform(low, high, shape).astype(np.float32)
        tensor = tf.constant(x)
        signature = [tf.TensorSpec([None, *shape[1:]], tf.float32)]
        graph = tf.function(lambda t: model(t, training=False), input_signature=signature)
        xla = tf.function(lambda t: model(t, training=False), input_signature=signature, jit_compile=True)
        # Each call turns its outputs into numpy, as `run` does.
        framework = {
            "eager model(x)": lambda _: np.asarray(model(tensor, training=False)),
            "tf.function": lambda _: np.asarray(graph(tensor)),
            "tf.function(jit_compile=True)": lambda _: np.asarray(xla(tensor)),
            "model.predict_on_batch": lambda _: np.asarray(model.predict_on_batch(x)),
        }
        timings = {}
        for label, call in framework.items():
            number = 2 if label.startswith("eager") else 10
            timings[label] = time_per_call(call, repeats, number, warmup=2)
        ours = time_per_call(lambda _: keras_source.run(model, [x], "cpu"), repeats, 10, warmup=2)
        fastest = min(timings, key=lambda label: timings[label]["median_s"])
        # How far each call's outputs are from the eager call's (0: bit-identical).
        eager = np.asarray(model(tensor, training=False))
        apart = {label: float(np.abs(np.asarray(call(0), np.float64) - eager).max() / np.abs(eager).max())
                 for label, call in framework.items()}
        apart["ours"] = float(np.abs(keras_source.run(model, [x], "cpu")[0].astype(np.float64) - eager).max()
                              / np.abs(eager).max())
        # XLA compiles once per input shape: the first call at a batch size not seen yet.
        other = tf.constant(np.concatenate([x, x[:1]]))
        start = time.perf_counter()
        np.asarray(xla(other))
        xla_new_shape_s = time.perf_counter() - start
        rows.append(row("4 reference", f"keras source run, {name} {'x'.join(map(str, shape))}", ours, fastest,
                        timings[fastest], "<= 1.5x", 1.5,
                        "headline; " + ("bit-identical to the eager call" if apart["ours"] == 0
                                        else f"{apart['ours']:.2g} of max|out| from the eager call")))
        for label, timing in timings.items():
            note = f"{timing['median_s'] / ours['median_s']:.3g}x ours" + (" (fastest)" if label == fastest else "")
            note += "; bit-identical to eager" if apart[label] == 0 else f"; {apart[label]:.2g} of max|out| from eager"
            if label.startswith("tf.function(jit"):
                note += f"; first call at a new batch size {fmt_time(xla_new_shape_s)} (compiles)"
            rows.append(row("4 reference", f"{label}, {name}", timing, None, None, "comparison only", None, note))
        details[name] = {"shape": list(shape), "ours": ours, "framework": timings, "fastest": fastest,
                         "apart_from_eager_over_max": apart, "xla_first_call_new_shape_s": xla_new_shape_s,
                         "keras": keras.__version__, "tensorflow": tf.__version__}
    return rows, details


# ---------------------------------------------------------------- output

def markdown(rows: list[dict]) -> str:
    head = ["benchmark", "case", "median", "min", "comparison", "cmp median", "cmp min", "ratio", "goal", "met", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3g}x"
        lines.append("| " + " | ".join([
            r["benchmark"], r["case"], fmt_time(r["median_s"]), fmt_time(r["min_s"]), r["baseline"] or "-",
            fmt_time(r["baseline_median_s"]), fmt_time(r["baseline_min_s"]), ratio, r["goal"], met, r["note"],
        ]) + " |")
    return "\n".join(lines)


def distinct_table(distinct: dict[str, list[int]], elements: int) -> str:
    lines = [f"| generator (tensor of {elements} elements) | distinct values per tensor (median) | min | max |",
             "|---|---|---|---|"]
    for name, values in distinct.items():
        lines.append(f"| {name} | {statistics.median(values):g} | {min(values)} | {max(values)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, not for reporting)")
    parser.add_argument("--only", default="inputs,compare,zoo,reference,isolation",
                        help="comma-separated subset of inputs,compare,zoo,reference,isolation")
    parser.add_argument("--zoo-repeats", type=int, default=None, help="cold+cached pairs for the zoo (default 3)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write the results (default {RESULTS})")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]

    info = machine_info()
    rows: list[dict] = []
    details: dict[str, Any] = {}
    started = time.perf_counter()
    for name in chosen:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        if name == "inputs":
            r, d = bench_inputs(args.quick)
        elif name == "compare":
            r, d = bench_compare(args.quick)
        elif name == "zoo":
            r, d = bench_zoo(args.quick, args.zoo_repeats)
        elif name == "reference":
            r, d = bench_reference(args.quick)
        elif name == "isolation":
            r, d = bench_isolation(args.quick)
        else:
            parser.error(f"unknown benchmark {name!r}")
        rows += r
        details[name] = d
    total = time.perf_counter() - started
    info["load_avg_end"] = os.getloadavg()

    v = info["versions"]
    print(f"\nMachine: {info['cpu_model']}, {info['cores']} cores ({info['cores_usable']} usable); python {info['python']}, "
          f"numpy {v['numpy']}, torch {v['torch']}, onnxruntime {v['onnxruntime']}, hypothesis {v['hypothesis']}; "
          f"{info['date']}{' (quick)' if args.quick else ''}")
    cores = info["cores"] or 1
    busy = info["load_avg_start"][0] > 0.5 * cores or info["load_avg_end"][0] > cores + 0.5  # end counts our own work
    print(f"Load average (1 min) at start {info['load_avg_start'][0]:.2f}, at end {info['load_avg_end'][0]:.2f}"
          + (f": WARNING, other work was running on the {cores} cores; medians are inflated, mins are the "
             "better guide" if busy else "") + "\n")
    print(markdown(rows))
    if "inputs" in details:
        print()
        print(distinct_table(details["inputs"]["distinct_values_per_tensor"], details["inputs"]["tensor_elements"]))
    if "zoo" in details:
        z = details["zoo"]
        print(f"\nzoo: {z['repeats']} cold+cached pair(s); last cold run statuses {z['cold'][-1]['statuses']}, "
              f"cached {z['cached'][-1]['statuses']}")
        for case, message in z["cold"][-1]["errors"].items():
            print(f"  error in {case}: {message.splitlines()[0] if message else ''}")
    print(f"\n(benchmarks took {total:.0f} s; results in {args.json})")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": info, "quick": args.quick, "elapsed_s": total,
                                     "results": rows, "details": details}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
