"""Run options, parsed from command-line strings into plain values.

Knows nothing of pytest: the plugin and `python -m harness` both build a
`RunOptions` from the strings users typed, and every bad value raises an
`OptionError` whose message names the option and what would be accepted.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from harness.backends import (BUILTIN, declared_options, opt_in_runtimes, option_flag, option_help, option_problem,
                              option_type)
from harness.calibration_settings import Calibration, saved_calibration
from harness.errors import OptionError
from harness.image_inputs import Preprocess, parse_preprocess
from harness.labels import Labels, parse_labels
from harness.specs import FLOAT_DTYPES, FRACTION_FIELDS, INT_DTYPES, TIERS, TOLERANCE_FIELDS, InputSpec, SpecError

SOURCES = tuple(BUILTIN["source"])
# the default targets: the built-in ones but the opt-in ones (others by name)
TARGETS = tuple(name for name in BUILTIN["runtime"] if name not in opt_in_runtimes())
DEVICES = ("cpu", "cuda")
# What a case's converted model computes in: a runtime lowers an fp32 artifact
# by its own settings (its PRECISIONS), or a conversion hop writes a lowered one
# (its PRECISIONS; "int8" is static quantization calibrated on a generated feed,
# "int8-dynamic" quantizes weights ahead and activations as it runs). A case's
# id names any but fp32, so that fp32 ids stay those of runs before the axis.
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "int8-dynamic")
# The largest input tensor a case may make, in MiB. Fixed rather than a share of
# this machine's memory, so that a spec accepted on a workstation is not refused
# in CI. 1 GiB is some 2700 times the zoo's largest input at its bounds (378 KiB),
# and about what a 16 GiB CI runner can afford: each example holds a tensor
# several times (made in float32 or int64, laid out for each side, a float64
# copy for the twin), besides the models' activations.
DEFAULT_MAX_TENSOR_MB = 1024.0
ISOLATION_MODES = ("auto", "always", "never")   # which cases run in a worker process: harness/worker.py
# What a failed case localizes (harness/localize): nothing, its first failing
# output (the default: one run of each side on the failing input), every failing output.
LOCALIZE_MODES = ("off", "first", "all")
# Ten minutes: eight times the slowest case measured on the 2-core CPU machine
# (convnext_tiny, keras -> onnxruntime, 200 examples of the nightly profile,
# conversion included: 73 s), so that a slow but healthy case on a loaded CI
# machine is not cut off, while a hang costs a nightly run minutes, not hours.
DEFAULT_TIMEOUT_S = 600.0


@dataclass
class RunOptions:
    """Everything that shapes a parity run, besides the cases themselves."""

    sources: tuple[str, ...] = ()        # empty: every source a model has a builder for
    targets: tuple[str, ...] = TARGETS
    devices: tuple[str, ...] = DEVICES    # the targets' devices, and the reference's unless reference_device
    reference_device: str | None = None   # where the source runs; None: on each case's target device
    precisions: tuple[str, ...] = ("fp32",)   # a case per precision its target or a path to it reaches
    calibration: Calibration = Calibration()   # --calibration DIST[:SAMPLES[:SEED]] or PATH (int8), parsed
    parity_inputs: str = ""               # --parity-inputs PATH: the user's own examples (user_inputs.py); "": none
    parity_preprocess: Preprocess | None = None   # --parity-preprocess SPEC parsed: an image folder's (image_inputs)
    parity_labels: Labels | None = None   # --parity-labels FILE[:OUTPUT] parsed: their class labels (accuracy.py)
    max_accuracy_drop: float | None = None   # --max-accuracy-drop: the top-1 drop that fails a case; None: no bound
    models: tuple[str, ...] = ()          # empty: the zoo's models of `tiers`
    tiers: tuple[str, ...] = ("core",)    # which tiers of the zoo run when no model is named
    converted: Path | None = None         # a user's own converted artifact
    converted_layouts: dict[str, str] = field(default_factory=dict)   # its tensors' layouts, where not the original's
    input_specs: tuple[InputSpec, ...] = ()
    output_names: tuple[str, ...] = ()
    hop_options: dict[str, dict[str, Any]] = field(default_factory=dict)       # hop -> its Options given
    runtime_options: dict[str, dict[str, Any]] = field(default_factory=dict)   # runtime -> its Options given
    strict_cuda: bool = False
    tolerance_overrides: dict[str, dict[str, float]] = field(default_factory=dict)
    trust_model_code: bool = False
    use_cache: bool = True
    cache_dir: Path = Path(".parity-cache")
    cache_seed: Path | None = None        # --parity-cache-seed: a read-only cache consulted where cache_dir misses
    reports_dir: Path = Path("reports")
    examples: int | None = None           # None: the hypothesis profile decides
    corners: bool = True                  # run the corner examples before hypothesis' search
    strict: bool = False                  # an inconclusive case fails
    max_tensor_mb: float = DEFAULT_MAX_TENSOR_MB   # the largest input tensor a case may make (MiB)
    path: str = "shortest"                # which conversion paths: shortest, all, or formats (onnx,openvino-ir)
    isolate: str = "auto"                 # which cases run in a worker process (ISOLATION_MODES)
    timeout_s: float = DEFAULT_TIMEOUT_S  # a case in a worker that runs longer is killed
    localize: str = "first"               # LOCALIZE_MODES: where a failed case's outputs first diverge
    shard: tuple[int, int] | None = None  # --parity-shard K/N (K 1-based): this job's share of the cases (shards.py)
    durations: Path | None = None         # --parity-durations: an earlier parity.json, whose durations balance it

    def conversion_options(self, layout_variant: str | None = None) -> dict:
        """The case's settings a converter may take besides its own Options; each converter
        uses those it names in its OPTIONS (and only those enter its cache key and provenance)."""
        return {"layout_variant": layout_variant}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_specs"] = [asdict(i) for i in self.input_specs]
        data["calibration"] = self.calibration.text   # the flags as typed: a replay parses them again
        data["parity_preprocess"] = self.parity_preprocess.text if self.parity_preprocess else ""
        data["parity_labels"] = self.parity_labels.text if self.parity_labels else ""
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RunOptions":
        values = dict(data)
        defaults = cls()
        for name in ("sources", "targets", "devices", "precisions", "models", "tiers", "output_names"):
            values[name] = tuple(values.get(name, getattr(defaults, name)))
        # parsed again here, where the options are built (a PATH no longer on this machine: saved_calibration)
        values["parity_preprocess"] = parse_preprocess(values.get("parity_preprocess") or "")
        values["parity_labels"] = parse_labels(values.get("parity_labels") or "")
        values["calibration"] = saved_calibration(values.get("calibration") or "", values["parity_preprocess"])
        values["input_specs"] = tuple(InputSpec(**{**i, "shape": tuple(i["shape"]),
                                                   "dims": {k: tuple(v) for k, v in i["dims"].items()},
                                                   "domain": tuple(i["domain"])})
                                      for i in values.get("input_specs", ()))
        for name in ("cache_dir", "cache_seed", "reports_dir", "converted", "durations"):
            if values.get(name) is not None:
                values[name] = Path(values[name])
        if values.get("shard") is not None:
            values["shard"] = tuple(values["shard"])
        known = {f.name for f in fields(cls)}
        if "hop_options" not in values:   # written before hops declared Options: their flags' values at the top
            values["hop_options"] = _hop_options_at_top({k: v for k, v in values.items() if k not in known})
        return cls(**{k: v for k, v in values.items() if k in known})


def _hop_options_at_top(older: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """hop -> {field: value} from the options of a parity.json, a shard header or a worker's
    options written before hop_options, which held each hop option's value under its flag's
    name (`"exporter": "torchscript"`, `"opset": 17`), its default whether given or not."""
    given: dict[str, dict[str, Any]] = {}
    for name, option in declared_options("hop") if older else ():
        key = _option_dest(option_flag(name, option))
        if key in older and older[key] != option.default:
            given.setdefault(name, {})[option.name] = older[key]
    return given


BACKEND_OPTION_KINDS = ("hop", "runtime")   # the kinds of backend that declare Options: their fields are flags


def backend_option_arguments(kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(flag, keywords) for each option the registered backends of `kind` ("hop" or
    "runtime") declare in their Options, as pytest's addoption and argparse's
    add_argument both take them; backends that declare one flag alike share it (--opset)."""
    arguments: dict[str, dict[str, Any]] = {}
    for name, option in declared_options(kind):
        flag = option_flag(name, option)
        arguments.setdefault(flag, dict(dest=_option_dest(flag), default=None, type=option_type(option),
                                        metavar=option.metadata.get("metavar", "VALUE"), help=option_help(name, option)))
    return list(arguments.items())


def parse_backend_options(kind: str, value_of: Callable[[str], Any]) -> dict[str, dict[str, Any]]:
    """NAME -> {field: value} for the flags of `kind`'s backends that were given
    (`value_of(dest)` is not None), each held to what its field declares."""
    given: dict[str, dict[str, Any]] = {}
    for name, option in declared_options(kind):
        value = value_of(_option_dest(option_flag(name, option)))
        if value is not None:
            problem = option_problem(name, option, value)
            if problem:
                raise OptionError(problem)
            given.setdefault(name, {})[option.name] = value
    return given


def _option_dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def split_list(values: Iterable[str] | str | None) -> tuple[str, ...]:
    """'a,b' or ['a', 'b,c'] -> ('a', 'b', 'c'), order kept, duplicates dropped."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    items: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if item and item not in items:
                items.append(item)
    return tuple(items)


def parse_list(option: str, values: Iterable[str] | str | None, what: str) -> tuple[str, ...]:
    """split_list for a list option as typed: () where it was not given (its
    default applies); a value of it that holds no item (`--target=`,
    `--target=,`) is refused, since an empty list would read as the default."""
    for value in [values] if isinstance(values, str) else values or ():
        if not split_list(value):
            raise _empty_list(option, value, what)
    return split_list(values)


def _empty_list(option: str, value: str, what: str) -> OptionError:
    return OptionError(f"{option} {value!r}: an empty list; give {what}, or leave {option} out for its default")


def parse_tiers(values: Iterable[str] | str | None) -> tuple[str, ...]:
    """--tier core,real (or all) -> ('core', 'real'); the default is core alone."""
    tiers = parse_list("--tier", values, f"one or more of {', '.join(TIERS + ('all',))}")
    if not tiers:
        return ("core",)
    if "all" in tiers:
        return TIERS
    for tier in tiers:
        parse_choice("--tier", tier, TIERS + ("all",))
    return tiers


def parse_precisions(values: Iterable[str] | str | None) -> tuple[str, ...]:
    """--precision fp32,bf16 -> ('fp32', 'bf16'); the default is fp32 alone."""
    precisions = parse_list("--precision", values, f"one or more of {', '.join(PRECISIONS)}")
    for precision in precisions:
        parse_choice("--precision", precision, PRECISIONS)
    return precisions or ("fp32",)


def parse_path(value: str) -> str:
    """--path: shortest, all, or the formats a path writes (`paths.choose` reads them)."""
    parse_list("--path", value, "shortest, all, or the formats a path writes (e.g. onnx,openvino-ir)")
    return value


def parse_choice(option: str, value: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise OptionError(f"{option}: unknown value {value!r}; choose from {', '.join(choices)}")
    return value


PER_OUTPUT_SYNTAX = "OUTPUT:NUMBER for one output or a bare NUMBER for every output (e.g. logits:1e-3 or 1e-4)"


def parse_per_output(option: str, values: Iterable[str]) -> dict[str, float]:
    """Polygraphy's per-output syntax: '1e-4' for every output, 'logits:1e-3' for one.

    Several values may share one argument, separated by spaces or commas.
    The key "" holds the value for every output.
    """
    result: dict[str, float] = {}
    for value in values:
        items = [item for item in re.split(r"[\s,]+", value.strip()) if item]
        if not items:
            raise _empty_list(option, value, PER_OUTPUT_SYNTAX)
        for item in items:
            name, sep, number = item.rpartition(":")
            if sep and not name:   # ':1e-3' would read as the value for every output
                raise OptionError(f"{option}: {item!r} names no output; give {PER_OUTPUT_SYNTAX}")
            try:
                parsed = float(number)
            except ValueError:
                raise OptionError(f"{option}: {item!r} is not NUMBER or OUTPUT:NUMBER (e.g. 1e-4 or logits:1e-3)") from None
            if not (parsed >= 0 and math.isfinite(parsed)):
                raise OptionError(f"{option}: {item!r} must be a finite number >= 0 (an infinite or NaN tolerance "
                                  "passes every error)")
            result[name if sep else ""] = parsed
    return result


def parse_max_tensor_mb(value: float) -> float:
    """--parity-max-tensor-mb: a positive, finite number of MiB."""
    if not (value > 0 and math.isfinite(value)):
        raise OptionError(f"--parity-max-tensor-mb {value:g}: a number of MiB > 0 and finite "
                          f"(default {DEFAULT_MAX_TENSOR_MB:g})")
    return value


def parse_cache_seed(option: str, value: str | Path | None) -> Path | None:
    """--parity-cache-seed DIR: a folder that exists (a seed the CI failed to restore is said
    now, not found out as every conversion running cold)."""
    if not value:
        return None
    if not Path(value).is_dir():
        raise OptionError(f"{option} {value}: {'is not a folder' if Path(value).exists() else 'does not exist'}; "
                          f"give the folder a cache was restored or unpacked to (python -m harness cache export "
                          f"makes one), or leave {option} out")
    return Path(value)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """--parity-shard K/N: shard K (1-based, as pytest-split counts its groups) of N."""
    if not text:
        return None
    given = re.fullmatch(r"([0-9]+)/([0-9]+)", text.strip())
    if not (given and 1 <= int(given[1]) <= int(given[2])):
        raise OptionError(f"--parity-shard={text}: K/N, shard K (counted from 1) of N, with 1 <= K <= N; "
                          f"e.g. --parity-shard=1/3")
    return int(given[1]), int(given[2])


_DIM = re.compile(r"^(?:(\d+)|([A-Za-z_]\w*)=(\d+)\.\.(\d+)|([A-Za-z_]\w*))$")
_INPUT_SPEC = re.compile(r"^(?P<name>[^:\[\]]+):(?P<dtype>\w+)\[(?P<shape>[^\]]*)\](?P<rest>.*)$")
_RANGE = re.compile(r"^(-?[\d.eE+-]+?)\.\.(-?[\d.eE+-]+)$")
INPUT_SPEC_SYNTAX = "NAME:DTYPE[DIMS][:LAYOUT][:LOW..HIGH], e.g. image:float32[N=1..4,3,H=16..64,W=20..64]:NCHW"
# numpy 1.x's limit on an array's dims (2.x allows 64): every input is made with numpy.
MAX_INPUT_RANK = 32


def parse_input_spec(text: str) -> InputSpec:
    """'NAME:DTYPE[DIMS][:LAYOUT][:LOW..HIGH]', e.g.

        image:float32[N=1..4,3,H=16..64,W=16..64]:NCHW:-3..3
        token_ids:int64[N=1..2,T=4..32]::0..999

    A dim is a size (3) or a name with inclusive bounds (N=1..4); a name shared
    by several inputs is one dim and must carry the same bounds each time.
    """
    where = f"--input-spec {_quoted(text)}"
    match = _INPUT_SPEC.match(text.strip())
    problem = _input_spec_text_problem(text.strip(), match is not None)
    if problem:
        raise OptionError(f"{where}: {problem}")
    dtype = match["dtype"]
    if dtype not in FLOAT_DTYPES + INT_DTYPES:
        raise OptionError(f"{where}: unknown dtype {dtype!r}; choose from {', '.join(FLOAT_DTYPES + INT_DTYPES)}")
    shape: list[int | str] = []
    dims: dict[str, tuple[int, int]] = {}
    for item in filter(None, (s.strip() for s in match["shape"].split(","))):
        dim = _DIM.match(item)
        if not dim:
            raise OptionError(f"{where}: dim {item!r} is neither a size (3) nor NAME=MIN..MAX (N=1..4)")
        size, name, low, high, bare = dim.groups()
        if size:
            shape.append(int(size))
        elif name:
            shape.append(name)
            if dims.setdefault(name, (int(low), int(high))) != (int(low), int(high)):
                raise OptionError(f"{where}: dim {name!r} is given two different bounds")
        else:
            raise OptionError(f"{where}: dim {bare!r} needs bounds, e.g. {bare}=1..8")
    if len(shape) > MAX_INPUT_RANK:
        raise OptionError(f"{where}: {len(shape)} dims; an input has at most {MAX_INPUT_RANK} (numpy's limit: the "
                          "harness makes every input with numpy)")
    rest = match["rest"].split(":")[1:] if match["rest"] else []
    if match["rest"] and not match["rest"].startswith(":"):
        raise OptionError(f"{where}: unexpected text {match['rest']!r} after the shape")
    layout = rest[0] if rest and rest[0] else None
    kwargs = {}
    if len(rest) > 1 and rest[1]:
        bounds = _RANGE.match(rest[1])
        try:
            kwargs["domain"] = (float(bounds[1]), float(bounds[2]))
        except (TypeError, ValueError):
            raise OptionError(f"{where}: value range {rest[1]!r} is not LOW..HIGH (e.g. -1..1 or 0..999)") from None
    if len(rest) > 2:
        raise OptionError(f"{where}: too many ':' parts; expected NAME:DTYPE[DIMS][:LAYOUT][:LOW..HIGH]")
    try:
        return InputSpec(match["name"], tuple(shape), dims=dims, dtype=dtype, layout=layout, **kwargs)
    except (SpecError, ValueError) as error:
        raise OptionError(f"{where}: {error}") from None


def parse_input_specs(texts: Iterable[str]) -> tuple[InputSpec, ...]:
    """Every --input-spec, one per input: a name given twice is refused (which
    of the two would the model take?)."""
    specs: dict[str, tuple[str, InputSpec]] = {}
    for text in texts:
        spec = parse_input_spec(text)
        if spec.name in specs:
            raise OptionError(f"--input-spec {_quoted(text)}: input {spec.name!r} is given twice (also by "
                              f"{_quoted(specs[spec.name][0])}); give one --input-spec per input")
        specs[spec.name] = (text, spec)
    return tuple(spec for _, spec in specs.values())


def _input_spec_text_problem(text: str, matched: bool) -> str | None:
    """What keeps `text` from reading as an input spec, as plainly as can be said; None where nothing does."""
    unprintable = next((c for c in text if not c.isprintable()), None)
    if unprintable is not None:
        return f"holds the unprintable character {unprintable!r}; type the spec without it"
    opening, closing = text.count("["), text.count("]")
    if (opening or closing) and not (opening == closing == 1 and text.index("[") < text.index("]")):
        return (f"the brackets do not pair up ({opening} '[', {closing} ']'): the dims go in one [...], as in "
                f"{INPUT_SPEC_SYNTAX}")
    if matched:
        return None
    name, colon, dtype = text.partition("[")[0].rpartition(":")
    if opening and not (colon and dtype):
        return f"no dtype before the dims; expected {INPUT_SPEC_SYNTAX}"
    if opening and not name:
        return f"no input name before the dtype; expected {INPUT_SPEC_SYNTAX}"
    return f"expected {INPUT_SPEC_SYNTAX}"


def _quoted(text: str) -> str:
    """`text` as a message quotes it: whole, or its start where it is too long to read in one line."""
    return repr(text) if len(text) <= 200 else f"{text[:60]!r}... ({len(text)} characters)"


def parse_layouts(option: str, values: Iterable[str] | None) -> dict[str, str]:
    """'image:NCHW,features:NCHW' -> {'image': 'NCHW', 'features': 'NCHW'}."""
    from harness.layouts import layout_problem

    layouts: dict[str, str] = {}
    for item in parse_list(option, values, "TENSOR:LAYOUT pairs (e.g. image:NCHW)"):
        name, sep, layout = item.rpartition(":")
        if not sep or not name:
            raise OptionError(f"{option}: {item!r} is not TENSOR:LAYOUT (e.g. image:NCHW)")
        problem = layout_problem(layout)
        if problem:
            raise OptionError(f"{option}: {item!r}: {problem}")
        layouts[name] = layout
    return layouts


def parse_tolerance_overrides(values: Mapping[str, Iterable[str] | None]) -> dict[str, dict[str, float]]:
    """{'atol': ['1e-4', 'logits:1e-3'], ...} -> {'atol': {'': 1e-4, 'logits': 1e-3}}."""
    overrides = {}
    for field_name, raw in values.items():
        if field_name not in TOLERANCE_FIELDS:
            raise OptionError(f"unknown tolerance field {field_name!r}")
        if raw:
            parsed = parse_per_output(f"--{field_name.replace('_', '-')}", raw)
            if field_name in FRACTION_FIELDS and any(v > 1 for v in parsed.values()):
                raise OptionError(f"--{field_name.replace('_', '-')}: a fraction in [0, 1]")
            overrides[field_name] = parsed
    return overrides
