"""The pytest plugin: options, the parity cases as test items, skips, summary.

Thin on purpose: it turns pytest's world into calls of `matrix` and `runner`,
which know nothing of pytest. Parity cases are collected when any parity option
is given (`--target`, `--source`, `--device`, `--model`, `--converted` or
`--parity`); without paths on the command line only the parity cases run.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest

from harness.accuracy import check_accuracy_options
from harness.backends import opt_in_runtimes
from harness.calibration_settings import parse_calibration
from harness.case_record import CaseRecord
from harness.errors import OptionError
from harness.image_inputs import check_preprocess_option, parse_preprocess
from harness.labels import parse_labels
from harness.options import (BACKEND_OPTION_KINDS, DEFAULT_MAX_TENSOR_MB, DEFAULT_TIMEOUT_S, DEVICES, ISOLATION_MODES,
                             LOCALIZE_MODES, PRECISIONS, SOURCES, TARGETS, TOLERANCE_FIELDS,
                             RunOptions, backend_option_arguments, parse_backend_options, parse_input_specs,
                             parse_cache_seed, parse_layouts, parse_list, parse_max_tensor_mb,
                             parse_path, parse_precisions, parse_shard, parse_tiers,
                             parse_tolerance_overrides)

PARITY_OPTIONS = ("source", "target", "device", "model", "tier", "converted", "parity")
DEFAULT_COMPARE_FAIL = "error:10x"
# The regression gate's options (outside RunOptions), with their defaults.
GATE_OPTIONS = {"--parity-baseline": None, "--parity-save-baseline": None, "--parity-save-baseline-force": False,
                "--parity-compare-fail": DEFAULT_COMPARE_FAIL, "--parity-allow-lost-coverage": False}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("parity", "numerical parity of converted models")
    add = group.addoption
    add("--parity", action="store_true", help="run the parity matrix with its defaults (any option below implies it)")
    add("--source", action="append", metavar="NAMES",
        help=f"source frameworks, comma-separated (default: all): {','.join(SOURCES)}")
    add("--target", action="append", metavar="NAMES",
        help=f"target runtimes, comma-separated (default: {','.join(TARGETS)}; by name only: "
             f"{','.join(opt_in_runtimes())})")
    add("--device", action="append", metavar="NAMES",
        help=f"devices, comma-separated (default: {','.join(DEVICES)}): the target's, and the reference's unless "
             "--reference-device")
    add("--reference-device", choices=DEVICES, default=None,
        help="where the reference (the source model) runs, whatever the target's device (default: on the target's "
             "device); a case whose devices differ has -ref-DEVICE at the end of its id")
    add("--precision", action="append", metavar="NAMES",
        help=f"what the converted model computes in, comma-separated (default: fp32): {','.join(PRECISIONS)}; a "
             "case per precision its target reaches, by its own settings (openvino: bf16, fp16) or through a "
             "conversion that lowers the model (ONNX fp16/int8/int8-dynamic, TFLite fp16/int8/int8-dynamic), "
             "with -PRECISION at the end of its id but for fp32, and that precision's tolerances")
    add("--calibration", default="", metavar="DIST[:SAMPLES[:SEED]]|PATH",
        help="the feed int8 quantizers calibrate on, generated from the input spec: a distribution (normal, "
             "uniform, large, tiny; default: the model spec's, normal unless it says otherwise), the number of "
             "samples (default 32) and a seed (default 0); or a PATH to your own inputs, in any form "
             "--parity-inputs reads (an .npz of arrays named by input, a folder of them, or a folder of images read as --parity-preprocess says), in the spec's layouts")
    add("--parity-inputs", default="", metavar="PATH",
        help="your own examples, run through both sides before the drawn ones and reported apart: an .npz of "
             "arrays named by the model's inputs (a leading example axis where an array's rank is its input's + 1; "
             "output:NAME arrays are stored outputs the target is held to), a folder of such .npz files or of "
             "INPUT.npy files, or ONNX test_data_set_N folders, or a folder of images (see --parity-preprocess)")
    add("--parity-preprocess", default="", metavar="SPEC",
        help="how each image of a --parity-inputs or --calibration image folder becomes the model's input, "
             "comma-separated: "
             "resize=HxW, crop=HxW (centre), scale=A[/B], mean=M1/M2/M3, std=S1/S2/S3, rgb|bgr|gray, "
             "layout=nchw|nhwc, dtype=float32|float16|float64|uint8, e.g. "
             "resize=224x224,scale=1/255,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,layout=nchw")
    add("--parity-labels", default="", metavar="FILE[:OUTPUT]",
        help="integer class labels of the --parity-inputs examples (.npy, or .txt with one per line): each side's "
             "top-1 accuracy and the drop between them, for OUTPUT (default: the output with a class axis, else "
             "the only one)")
    add("--max-accuracy-drop", type=float, default=None, metavar="SHARE",
        help="fail a case whose top-1 accuracy on --parity-labels drops by more than this, e.g. 0.01")
    add("--model", action="append", metavar="MODELS",
        help="zoo names or files, comma-separated (default: the whole zoo): NAME, models.py, ARCH=weights.pth, "
             "model.pt, model.keras, model.h5, saved_model_dir, graph.pb, ARCH=checkpoint")
    add("--tier", action="append", metavar="TIERS",
        help="which of the zoo runs when no --model is named: core (default; the small models written for the "
             "harness), real (published architectures: transformers, keras.applications), or all")
    add("--converted", metavar="PATH",
        help="check your own converted file (.onnx, .tflite) against --model instead of converting")
    add("--converted-layouts", action="append", metavar="TENSOR:LAYOUT,...",
        help="layouts of the --converted file's tensors where they differ from the original's, e.g. image:NCHW")
    add("--input-spec", action="append", metavar="SPEC",
        help="input of a model file without shapes: NAME:DTYPE[DIMS][:LAYOUT][:LOW..HIGH], "
             "e.g. 'x:float32[N=1..4,3,H=16..64,W=20..64]:NCHW'; repeat per input")
    add("--output-names", metavar="NAMES",
        help="output names of a model file without a spec, comma-separated (frozen graphs: op names, e.g. Identity)")
    add("--path", default="shortest", metavar="PATHS",
        help="which conversion paths to a target run where there are several: shortest (default), all, or the "
             "formats a path writes, e.g. onnx,openvino-ir")
    for kind in BACKEND_OPTION_KINDS:   # each hop's and each runtime's own settings: the fields of its Options
        for flag, keywords in backend_option_arguments(kind):
            add(flag, **keywords)
    add("--strict-cuda", action="store_true", help="turn TF32 off on CUDA and hold it to CPU tolerances")
    for name, help_text in (("atol", "absolute tolerance"), ("rtol", "relative tolerance"),
                            ("atol-by-max", "absolute tolerance as a fraction of max|ref|"),
                            ("atol-by-range", "absolute tolerance as a fraction of the output's range: its "
                                              "max|ref| over the calibration feed"),
                            ("max-mismatch", "fraction of elements allowed out of tolerance"),
                            ("noise-multiple", "largest error allowed, as a multiple of the source model's own "
                                               "float32 error, for an output out of tolerance (0: off)"),
                            ("min-cosine", "least cosine similarity of the converted output to the original's "
                                           "(0: off)"),
                            ("min-snr-db", "least signal-to-noise ratio in dB, 10*log10(sum ref^2 / sum "
                                           "(got-ref)^2) (0: off)"),
                            ("min-top1", "least fraction of positions whose top class agrees, for outputs "
                                         "with a class axis (0: off)"),
                            ("min-topk-overlap", "least mean share of the top-k classes both sides have, for "
                                                 "outputs with a class axis (0: off)")):
        add(f"--{name}", action="append", metavar="[OUTPUT:]VALUE",
            help=f"{help_text}: VALUE for every output or OUTPUT:VALUE for one (Polygraphy syntax); repeatable")
    add("--parity-strict", action="store_true",
        help="fail an inconclusive case (one whose output does not depend on the input, so its check could not fail)")
    add("--trust-model-code", action="store_true",
        help="allow loading model files that run code when loaded (whole pickled torch modules)")
    add("--parity-examples", type=int, default=None, metavar="N", help="hypothesis examples per case (default: the profile's)")
    add("--no-parity-corners", action="store_true",
        help="skip the corner examples (smallest and largest shapes, large and tiny magnitudes) that every case "
             "runs before hypothesis' search: for measuring what the search alone finds")
    add("--parity-localize", choices=LOCALIZE_MODES, default="first",
        help="for a failed case, find the first tensor of the converted graph that leaves the reference and write "
             "a minimal reproduction beside the failing input: first (default: the first failing output), all "
             "(every failing output), off")
    add("--parity-isolate", choices=ISOLATION_MODES, default="auto",
        help="which cases run in a worker process, where a crash or a hang is the case's error and the run goes "
             "on: auto (default: native runtimes such as LiteRT, and users' model or converted files), always, never")
    add("--parity-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
        help=f"time limit of a case in a worker process, after which it is killed and errors "
             f"(default {DEFAULT_TIMEOUT_S:g}: eight times the slowest case measured)")
    add("--parity-max-tensor-mb", type=float, default=DEFAULT_MAX_TENSOR_MB, metavar="MIB",
        help=f"largest input tensor a case may make, in MiB (default {DEFAULT_MAX_TENSOR_MB:g}); a spec whose bounds "
             "allow a larger one is the case's error")
    add("--parity-reports", default="reports", metavar="DIR", help="where parity.json, parity.html and failures/ go")
    add("--parity-cache-dir", default=".parity-cache", metavar="DIR", help="converted-artifact cache")
    add("--parity-cache-seed", default=None, metavar="DIR",
        help="a read-only cache (another run's, restored or unpacked) consulted where --parity-cache-dir misses; "
             "its entries are checked and copied into --parity-cache-dir, it is never written")
    add("--no-parity-cache", action="store_true", help="convert again even where the cache holds the artifact")
    add("--parity-shard", default=None, metavar="K/N",
        help="run shard K of N (K counted from 1, as pytest-split counts its groups) of the parity cases, for a CI job "
             "matrix: every case falls in exactly one shard; other tests run in shard 1 only. The split is taken "
             "after -k, -m and the --device filter, so a GPU job (--device=cuda) and CPU shards (--device=cpu) "
             "never share a case")
    add("--parity-durations", default=None, metavar="FILE",
        help="balance --parity-shard by the case durations of an earlier run's parity.json (a case it lacks "
             "counts as the median; without it every case counts alike)")
    add("--parity-save-baseline", metavar="PATH", help="save this run's results as a baseline (never overwrites)")
    add("--parity-save-baseline-force", action="store_true", help="let --parity-save-baseline overwrite")
    add("--parity-baseline", metavar="PATH",
        help="hold this run against a baseline: fail on a case that passed and now fails, a conversion that "
             "worked and now errors, or an error metric that grew beyond --parity-compare-fail")
    add("--parity-compare-fail", default=DEFAULT_COMPARE_FAIL, metavar="EXPR",
        help="growth of an error metric that fails the baseline gate: error:10x (default), error:1000%%, "
             "normalized_error:5x,error_ratio:20x; error also limits the error that cosine and snr_db imply "
             "(10x: an SNR 20 dB lower), cosine:, snr_db: alone; a drop of top1_agreement, topk_overlap "
             "beyond 0.01 fails too (agreement:0.05, top1_agreement:2%%)")
    add("--parity-allow-lost-coverage", action="store_true",
        help="let the baseline gate pass when cases that ran in the baseline (passed, failed, inconclusive, error) "
             "are missing or skipped in this run: for a deliberate change of the matrix")


def option_definitions() -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every option pytest_addoption registers, as (flags, addoption's keywords), in its order: the
    documentation's options page is written from these (docs/hooks.py), so a new option is documented
    where it is declared. pytest_addoption calls only getgroup and addoption, which this records."""
    definitions: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    class Recorder:
        def getgroup(self, name: str, description: str = "") -> "Recorder":
            return self

        def addoption(self, *flags: str, **keywords: Any) -> None:
            definitions.append((flags, keywords))

    pytest_addoption(Recorder())
    return definitions


def parity_requested(config: pytest.Config) -> bool:
    return any(config.getoption(name.replace("-", "_")) for name in PARITY_OPTIONS)


def gate_flags(config: pytest.Config) -> list[str]:
    """The regression gate's options given a value other than their default."""
    return [flag for flag, default in GATE_OPTIONS.items() if config.getoption(flag[2:].replace("-", "_")) != default]


def run_options(config: pytest.Config) -> RunOptions:
    """The command line as RunOptions; a malformed value stops the run with its message."""
    get = config.getoption
    if get("parity_examples") is not None and get("parity_examples") < 1:
        raise pytest.UsageError(f"--parity-examples: at least 1, got {get('parity_examples')}")
    if not 0 < get("parity_timeout") < float("inf"):
        raise pytest.UsageError(f"--parity-timeout: a number of seconds > 0, got {get('parity_timeout')}")
    try:
        preprocess = parse_preprocess(get("parity_preprocess"))   # these three parsed once here, for every case
        calibration = parse_calibration(get("calibration"), preprocess)
        labels = parse_labels(get("parity_labels"))
        check_accuracy_options(labels, get("parity_inputs"), get("max_accuracy_drop"))
        check_preprocess_option(preprocess, get("parity_inputs"), get("calibration"))   # now, not at the first case
        defaults = RunOptions()
        return RunOptions(
            sources=parse_list("--source", get("source"), f"one or more of {', '.join(SOURCES)}") or defaults.sources,
            targets=parse_list("--target", get("target"),
                               f"one or more of {', '.join(TARGETS + opt_in_runtimes())}") or defaults.targets,
            devices=parse_list("--device", get("device"), f"one or more of {', '.join(DEVICES)}") or defaults.devices,
            reference_device=get("reference_device"),
            precisions=parse_precisions(get("precision")),
            calibration=calibration,
            parity_inputs=get("parity_inputs"),
            parity_preprocess=preprocess,
            parity_labels=labels,
            max_accuracy_drop=get("max_accuracy_drop"),
            models=parse_list("--model", get("model"), "zoo names or model files (e.g. simple,mlp or model.onnx)"),
            tiers=parse_tiers(get("tier")),
            converted=Path(get("converted")) if get("converted") else None,
            converted_layouts=parse_layouts("--converted-layouts", get("converted_layouts")),
            input_specs=parse_input_specs(get("input_spec") or ()),
            output_names=parse_list("--output-names", get("output_names"),
                                    "the model's output names (e.g. logits,probs)"),
            hop_options=parse_backend_options("hop", get),
            runtime_options=parse_backend_options("runtime", get),
            strict_cuda=get("strict_cuda"),
            tolerance_overrides=parse_tolerance_overrides({f: get(f) for f in TOLERANCE_FIELDS}),
            trust_model_code=get("trust_model_code"),
            use_cache=not get("no_parity_cache"),
            cache_dir=Path(get("parity_cache_dir")),
            cache_seed=parse_cache_seed("--parity-cache-seed", get("parity_cache_seed")),
            reports_dir=Path(get("parity_reports")),
            examples=get("parity_examples"),
            corners=not get("no_parity_corners"),
            strict=get("parity_strict"),
            path=parse_path(get("path")),
            isolate=get("parity_isolate"),
            localize=get("parity_localize"),
            timeout_s=get("parity_timeout"),
            max_tensor_mb=parse_max_tensor_mb(get("parity_max_tensor_mb")),
            shard=parse_shard(get("parity_shard")),
            durations=Path(get("parity_durations")) if get("parity_durations") else None,
        )
    except OptionError as error:
        raise pytest.UsageError(str(error)) from None


@pytest.hookimpl(tryfirst=True)  # before hypothesis' own plugin loads --hypothesis-profile
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "parity: a numerical-parity case of the model matrix")
    from harness.profiles import PROFILES

    # Importing hypothesis costs most of a second: only when it will be used.
    # The default profile is loaded here, before hypothesis' own plugin applies
    # --hypothesis-profile (this hook runs first), so the option still wins.
    if parity_requested(config) or config.getoption("hypothesis_profile", None) in PROFILES:
        from harness.profiles import load_default_profile

        load_default_profile()
    if parity_requested(config):
        config.pluginmanager.register(ParityRun(config, run_options(config)), "parity-run")
    else:
        from harness.option_effects import options_without_parity

        for message in options_without_parity(run_options(config), gate_flags(config)):
            config.issue_config_time_warning(ParityWarning(message), stacklevel=2)


class ParityWarning(UserWarning):
    """Something a parity case found that does not fail it: an inconclusive
    check, a converted file whose declared shapes disagree with the spec."""


class ParityGroup(pytest.Collector):
    """The parent of the parity items, so their ids read parity::test_parity[...]."""

    def collect(self):
        return []


class ParityItem(pytest.Item):
    def __init__(self, *, case, run: "ParityRun", **kwargs: Any):
        super().__init__(**kwargs)
        self.case = case
        self.run = run
        self.record: CaseRecord | None = None
        self._prepared = None
        self.add_marker("parity")
        for part in (case.model, case.source, case.target, case.device, case.variant):
            if part:
                self.keywords[part] = True

    def setup(self) -> None:
        from harness.runner import start_case

        reason = self.run.isolation(self.case)
        if reason:
            # The whole case runs in a worker, now: an error before its examples
            # started shows as a pytest ERROR, as it does in process.
            self.record = self.run.workers.run(self.case, reason)
            # a skip (what collection only looked up, found unusable as the case starts) reports as one too
            if self.record.status not in ("error", "skipped") or self.record.isolation["stage_reached"] == "run":
                return
        else:
            self.record, self._prepared = start_case(self.case, self.run.options, self.run.cache)
        if self._prepared is None:
            self.run.add(self.record)
            self._publish()
            if self.record.status == "skipped":
                pytest.skip(self.record.message)
            pytest.fail(f"{self.case.id}: [{self.record.stage}] {self.record.message}", pytrace=False)

    def runtest(self) -> None:
        from harness.runner import finish_case

        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            self.record = finish_case(self.record, prepared, self.run.options)
        self.run.add(self.record)
        self._publish()
        if self.record.status == "error":
            pytest.fail(f"{self.case.id}: [{self.record.stage}] {self.record.message}", pytrace=False)
        if self.record.status == "failed":
            pytest.fail(f"{self.case.id}: {self.record.message}", pytrace=False)
        for finding in self.record.warnings or ():
            warnings.warn(ParityWarning(f"{self.case.id}: {finding['message']}"))
        if self.record.status == "inconclusive":
            if self.run.options.strict:
                pytest.fail(f"{self.case.id}: {self.record.message} (--parity-strict)", pytrace=False)
            warnings.warn(ParityWarning(f"{self.case.id}: {self.record.message}"))

    def _publish(self) -> None:
        """The record's numbers as properties, for --junitxml and the like."""
        from harness.report.extras import junit_properties

        self.user_properties.extend(junit_properties(self.record.to_json()))

    def reportinfo(self):
        return self.path, None, f"parity {self.case.id}"


class ParityRun:
    """The plugin's state for one pytest run with parity cases."""

    def __init__(self, config: pytest.Config, options: RunOptions):
        from harness.cache import ArtifactCache

        self.config = config
        self.options = options
        self.cache = ArtifactCache(options.cache_dir, enabled=options.use_cache, seed=options.cache_seed)
        self.records: list[dict[str, Any]] = []   # as parity.json holds them: under xdist, read from the workers' files
        self._writer = None
        self._reports_lock = self._claim_reports(options)
        self._workers = None
        self._isolation: dict[str, str] = {}   # case id -> why it runs in a worker
        self.shard = None   # this job's shards.Shard, under --parity-shard
        self._durations = self._shard_durations(options)
        self.expected_cases_path: Path | None = None   # written by --collect-only
        self._gate_setup(config)
        from harness.worker import isolation_possible

        # its start-up overlaps the collection of the cases; --collect-only runs none, and would wait for its imports
        if not self.is_xdist_controller and isolation_possible(options) and not config.option.collectonly:
            self.workers.warm()
        if self.is_xdist_controller:
            # Workers write parity.gwN.json; the files of an earlier run must not be merged into this one.
            for stale in options.reports_dir.glob("parity.gw*.json"):
                stale.unlink()

    @staticmethod
    def _shard_durations(options: RunOptions) -> dict[str, float]:
        """The case durations that balance --parity-shard, read now: a file that is not a
        parity.json stops the run before collection."""
        if options.shard is None or options.durations is None:
            return {}
        from harness.shards import read_durations

        try:
            return read_durations(options.durations)
        except OptionError as error:
            raise pytest.UsageError(str(error)) from None

    @staticmethod
    def _claim_reports(options: RunOptions):
        """Hold the reports folder for this run: one that cannot be written to, or that another
        run holds, stops the run here, before any case. An xdist worker is part of its controller's run."""
        from harness.results import ReportsFolderError, claim_reports_folder

        if os.environ.get("PYTEST_XDIST_WORKER"):
            return None
        try:
            return claim_reports_folder(options.reports_dir,
                                        remedy="give this run a writable folder of its own with --parity-reports=DIR")
        except ReportsFolderError as error:
            raise pytest.UsageError(str(error)) from None

    def _gate_setup(self, config: pytest.Config) -> None:
        """Parse the baseline options now, so that a mistake stops the run before it starts."""
        from harness.report.baseline import BaselineError, load_baseline, parse_compare_fail

        self.baseline_path = config.getoption("parity_baseline")
        self.save_baseline_path = config.getoption("parity_save_baseline")
        self.comparison = None
        self.saved_baseline = None
        self.gate_error = None
        self.report_error = None   # the end's parity.json or parity.html, refused by a full disk
        try:
            self.compare_limits = parse_compare_fail(config.getoption("parity_compare_fail"), "--parity-compare-fail")
            self.baseline = load_baseline(Path(self.baseline_path)) if self.baseline_path else None
        except BaselineError as error:
            raise pytest.UsageError(str(error)) from None
        if (self.save_baseline_path and Path(self.save_baseline_path).exists()
                and not config.getoption("parity_save_baseline_force")):
            raise pytest.UsageError(f"baseline {self.save_baseline_path} already exists; pass "
                                    "--parity-save-baseline-force to overwrite it")

    def _gate(self, session: pytest.Session, results: dict[str, Any]) -> None:
        """Save the baseline and/or hold the run against one; a regression fails the run."""
        from harness.report.baseline import BaselineError, compare_to_baseline, save_baseline
        from harness.results import ReportsFolderError

        if self.save_baseline_path:
            try:
                self.saved_baseline = save_baseline(results, Path(self.save_baseline_path),
                                                    force=self.config.getoption("parity_save_baseline_force"))
            except (BaselineError, ReportsFolderError) as error:   # one that exists, or a full disk
                self.gate_error = str(error)
                session.exitstatus = pytest.ExitCode.USAGE_ERROR
        if self.baseline is not None:
            self.comparison = compare_to_baseline(results, self.baseline, self.compare_limits,
                                                  self.config.getoption("parity_allow_lost_coverage"))
            if self.comparison.failed and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def isolation(self, case) -> str | None:
        """Why `case` runs in a worker process, or None where it runs here."""
        return self._isolation.get(case.id)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        from harness.worker import isolation_plan

        self._isolation = isolation_plan([item.case for item in session.items if isinstance(item, ParityItem)],
                                         self.options)
        if self.config.option.collectonly and not os.environ.get("PYTEST_XDIST_WORKER"):
            # The whole matrix's ids, which `python -m harness merge --expect` holds its shards' results to.
            from harness.merge import EXPECTED_CASES_FILE, write_expected_cases

            self.expected_cases_path = write_expected_cases(
                self.options.reports_dir / EXPECTED_CASES_FILE,
                [item.case.id for item in session.items if isinstance(item, ParityItem)])

    @property
    def workers(self):
        if self._workers is None:
            from harness.worker import CaseWorkers

            self._workers = CaseWorkers(self.options)
        return self._workers

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._reports_lock is not None:
            self._reports_lock.release()
        if self._workers is not None:
            self._workers.close()

    @property
    def is_xdist_controller(self) -> bool:
        return self.config.pluginmanager.hasplugin("dsession") and not os.environ.get("PYTEST_XDIST_WORKER")

    @property
    def results_path(self) -> Path:
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        name = f"parity.{worker}.json" if worker else "parity.json"
        return self.options.reports_dir / name

    def _open_writer(self) -> None:
        """Start this run's results file: its header, no case yet."""
        from harness.results import ResultsWriter

        shard = {"shard": self.shard.header()} if self.shard else {}
        self._writer = ResultsWriter(self.results_path, {"options": self.options.to_json(), **shard})

    def add(self, record: CaseRecord) -> None:
        from harness.results import ReportsFolderError

        self.records.append(record.to_json())
        try:
            if self._writer is None:
                self._open_writer()
            self._writer.add(record)
        except ReportsFolderError as error:   # a full disk: the writer keeps the record for its next write
            pytest.fail(f"{record.id}: [report] {error}", pytrace=False)

    def pytest_ignore_collect(self, collection_path: Path, config: pytest.Config) -> bool | None:
        # `pytest --target=onnxruntime` with no paths runs the parity matrix alone,
        # not every test file under the current folder.
        if config.args_source != pytest.Config.ArgsSource.ARGS:
            return True
        return None

    @pytest.hookimpl(tryfirst=True)  # before -k and -m deselect
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config, items: list) -> None:
        from harness.matrix import build_cases
        from harness.option_effects import option_findings

        try:
            built = build_cases(self.options)
        except OptionError as error:   # an option a model file contradicts, found as the file is read
            raise pytest.UsageError(str(error)) from None
        findings = option_findings(self.options, built, gate_flags(config))
        if findings.errors:
            raise pytest.UsageError("\n".join(findings.errors))
        for message in findings.warnings:
            warnings.warn(ParityWarning(message))
        group = ParityGroup.from_parent(session, name="parity", nodeid="parity")
        cases = [ParityItem.from_parent(group, name=f"test_parity[{case.id}]", case=case, run=self)
                 for case in built]
        items.extend(cases)
        # Tell the terminal (and other listeners) what was collected, as for files.
        config.hook.pytest_collectreport(report=pytest.CollectReport(group.nodeid, "passed", None, cases))

    # After -k, -m and --deselect (pytest's own hooks), so a shard splits what the run would run; a
    # second implementation of the hook by this plugin, under a name of its own (pytest's "pytest_" prefix).
    @pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")
    def pytest_collection_select_shard(self, config: pytest.Config, items: list) -> None:
        """Keep this job's shard of the parity cases, and the other tests in shard 1 only,
        so that the shards together run every test once."""
        if self.options.shard is None:
            return
        from harness.shards import select_shard

        index, count = self.options.shard
        self.shard = select_shard([item.case.id for item in items if isinstance(item, ParityItem)],
                                  self._durations, index, count)
        kept, deselected = [], []
        for item in items:
            ours = item.case.id in self.shard.case_ids if isinstance(item, ParityItem) else index == 1
            (kept if ours else deselected).append(item)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = kept
        if not config.option.collectonly:
            # The header now, before any case: a shard the split left empty, or one that dies before
            # its first record, is a file `python -m harness merge` sees, not a missing shard.
            from harness.results import ReportsFolderError

            try:
                self._open_writer()
            except ReportsFolderError as error:
                raise pytest.UsageError(str(error)) from None

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if os.environ.get("PYTEST_XDIST_WORKER"):
            return  # the controller merges the workers' files
        from harness.report.html import write_html_report
        from harness.results import ReportsFolderError, atomic_write_text, load_results, merge_results

        try:
            if self.is_xdist_controller:
                parts = [load_results(p) for p in sorted(self.options.reports_dir.glob("parity.gw*.json"))]
                if not parts:
                    return
                results = merge_results(parts)
                self.records = list(results["cases"].values())
                atomic_write_text(self.options.reports_dir / "parity.json", json.dumps(results, indent=1))
            elif self._writer is None:
                return
            else:
                results = self._writer.data
                self._writer.flush()   # again: a record a full disk refused is written where there is room now
            write_html_report(results, self.options.reports_dir / "parity.html")
        except ReportsFolderError as error:   # a full disk at the end: the gate still judges what the run holds
            json_path = self.options.reports_dir / "parity.json"
            self.report_error = (f"{error}; {self.options.reports_dir / 'parity.html'} was not written: with room "
                                 f"on the disk, run python -m harness report {json_path}")
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        shard = (results.get("run") or {}).get("shard")   # this process's, or (under xdist) its workers'
        if shard and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and not self.report_error:
            from harness.shards import nothing_to_run

            left_empty = nothing_to_run(shard)
            if left_empty:   # an empty share of a right split is no failed CI job
                session.exitstatus = pytest.ExitCode.OK
                terminal = self.config.pluginmanager.get_plugin("terminalreporter")   # None under -p no:terminal
                if terminal is not None:
                    terminal.write_line(left_empty)
        self._gate(session, results)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call):
        outcome = yield
        report = outcome.get_result()
        html_plugin = item.config.pluginmanager.getplugin("html")
        # One table per case, on the report of the phase that finished its record.
        if (html_plugin is None or not isinstance(item, ParityItem) or item.record is None
                or not item.record.has("status") or report.when == "teardown"
                or (report.when == "setup" and report.passed)):
            return
        from harness.report.extras import outputs_table_html

        report.extras = getattr(report, "extras", []) + [
            html_plugin.extras.html(outputs_table_html(item.record.to_json()))]

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int, config: pytest.Config) -> None:
        from harness.report.summary import summary_lines

        if self.expected_cases_path:
            terminalreporter.write_line(f"expected cases: {self.expected_cases_path} (python -m harness merge "
                                        f"SHARD.json... -o parity.json --expect={self.expected_cases_path})")
        if not self.records:
            return
        terminalreporter.section("parity")
        # skipped cases one line per reason, unless -rs (-ra, -rA) or -v asks for each, as pytest's own summary does
        every_skip = terminalreporter.hasopt("s") or terminalreporter.verbosity >= 1
        for line in summary_lines(self.records, every_skip=every_skip):
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"results: {self.results_path}  report: {self.options.reports_dir / 'parity.html'}")
        if self.saved_baseline:
            terminalreporter.write_line(f"baseline saved: {self.saved_baseline}")
        if self.report_error:
            terminalreporter.write_line(self.report_error, red=True)
        if self.gate_error:
            terminalreporter.write_line(self.gate_error, red=True)
        if self.comparison is not None:
            from harness.report.baseline import render_comparison_text

            terminalreporter.section("parity baseline", red=self.comparison.failed, green=not self.comparison.failed)
            lines = render_comparison_text(self.comparison)
            terminalreporter.write_line(lines[0], red=self.comparison.failed, green=not self.comparison.failed)
            for line in lines[1:]:
                terminalreporter.write_line(line)
            terminalreporter.write_line(f"baseline: {self.baseline_path}  (full drift table: python -m harness diff "
                                        f"{self.baseline_path} {self.options.reports_dir / 'parity.json'})")
