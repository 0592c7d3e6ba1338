"""Metrics and the verdict for one output: no deep-learning framework is imported.

An element passes when |got - ref| <= atol + atol_by_max * max|ref| + rtol * |ref|;
NaN and Inf must sit at the same positions (with the same sign) on both sides.
A float output passes when its elements do and it meets every whole-output
threshold its tolerance sets (cosine, SNR, top-1 agreement, top-k overlap).
`error_ratio` is the largest of the elementwise ratio and one ratio per
threshold set, each <= 1 exactly when the threshold is met, so that
"error_ratio <= 1 passes" holds for all of them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from harness.specs import SpecError, Tolerance


@dataclass
class OutputComparison:
    """The numbers for one output of one example; None where a metric does not apply."""

    name: str
    passed: bool
    message: str
    tolerance: dict[str, float]
    ref_shape: tuple[int, ...]
    got_shape: tuple[int, ...]
    ref_dtype: str
    got_dtype: str
    elements: int = 0
    max_abs: float | None = None
    max_rel: float | None = None
    mean_abs: float | None = None
    rmse: float | None = None
    cosine: float | None = None
    snr_db: float | None = None             # 10*log10(sum ref^2 / sum (got-ref)^2): float outputs; inf: no error
    top1_agreement: float | None = None     # positions whose top class agrees: outputs with a class axis
    topk_overlap: float | None = None       # mean share of the top_k classes both sides have
    top_k: int | None = None                # the k of topk_overlap (the spec's, clipped to the class axis)
    max_ulp: float | None = None
    max_ref: float | None = None
    output_range: float | None = None       # the output's range atol_by_range scales with (None: max_ref)
    normalized_error: float | None = None   # max_abs / max|ref|: error against the output's scale
    error_ratio: float | None = None        # worst error over its tolerance: <= 1 passes
    mismatch_fraction: float | None = None
    nonfinite_mismatches: int = 0
    # NaN and Inf elements of the original's output: they must sit where the converted one has them.
    ref_nan: int = 0
    ref_inf: int = 0
    finite_elements: int | None = None      # finite on both sides: what the metrics measure
    worst_index: tuple[int, ...] | None = None
    worst_ref: float | None = None
    worst_got: float | None = None
    needed_atol: float | None = None        # smallest atol (rtol as set) that would have passed
    needed_rtol: float | None = None        # smallest rtol (atol as set) that would have passed
    # The whole-output thresholds not met ("min_cosine", ...): no noise multiple excuses these.
    failed_thresholds: list[str] = field(default_factory=list)
    # What passed it: "tolerance" (elementwise), "noise" (within its noise multiple of
    # the source's own float32 error: set by the engine, which holds the float64 twin),
    # "floor" (a miss a reduced precision's standard build shares: precision_floor.py),
    # "argmax" (a label flipped with scores that passed: accept_argmax_flips),
    # "saturation" (an int8 build's clip where the original is past its calibrated range: accept_saturation).
    accepted_by: str | None = None
    # At a reduced precision, this output's error beside a standard build's on the same example, and
    # that verdict (set by the engine, which runs the build: harness/precision_floor.py); None elsewhere.
    floor: dict[str, Any] | None = None
    # Counts of the per-element error over tolerance in log-decade bins (see
    # HISTOGRAM_EDGES); computed on every `sampled`-th element of a large output.
    error_histogram: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {k: json_number(v) for k, v in asdict(self).items()}


# Bins of the error-over-tolerance histogram: (lo, hi], except that the first bin
# holds 0 exactly; a ratio <= 1 passes, so every bin above 1 is out of tolerance.
HISTOGRAM_EDGES = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, float("inf"))
HISTOGRAM_MAX_ELEMENTS = 1_000_000


def error_histogram(ratio: np.ndarray) -> dict[str, Any]:
    """Counts of `ratio` in HISTOGRAM_EDGES' bins; larger arrays are subsampled
    with a fixed stride (`sampled`: the stride, 1 when every element counted)."""
    flat = ratio.reshape(-1)
    step = max(1, -(-flat.size // HISTOGRAM_MAX_ELEMENTS))
    sample = np.ascontiguousarray(flat[::step]) if step > 1 else flat
    # One counting pass per edge (cheaper than a sort or a search): above[k] is how
    # many exceed edge k, so a value equal to an edge falls in the bin it closes.
    # NaN exceeds nothing and lands in the first bin (an infinite tolerance makes it).
    above = [int(np.count_nonzero(sample > edge)) for edge in HISTOGRAM_EDGES[1:-1]]
    bounds = [sample.size, *above, 0]
    counts = [bounds[k] - bounds[k + 1] for k in range(len(HISTOGRAM_EDGES) - 1)]
    return {"edges": list(HISTOGRAM_EDGES), "counts": counts,
            "sampled": int(step), "total": int(sample.size)}


def json_number(value):
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [json_number(v) for v in value]
    if isinstance(value, dict):
        return {k: json_number(v) for k, v in value.items()}
    return value


def compare_outputs(name: str, ref: np.ndarray, got: np.ndarray, tolerance: Tolerance,
                    class_axis: int | None = None, top_k: int = 5,
                    output_range: float | None = None) -> OutputComparison:
    """Compare one output of the converted model (`got`) against the original's (`ref`).

    class_axis: the axis of class scores (OutputSpec.class_axis): where given,
    the top-1 agreement and the top-`top_k` overlap are measured, and the
    tolerance's min_top1 and min_topk_overlap apply; elsewhere they do not.
    output_range: the output's largest magnitude over the calibration feed,
    which atol_by_range scales (None: this example's max|ref|)."""
    ref, got = np.asarray(ref), np.asarray(got)
    result = OutputComparison(
        name=name, passed=False, message="", tolerance=asdict(tolerance),
        ref_shape=tuple(ref.shape), got_shape=tuple(got.shape),
        ref_dtype=str(ref.dtype), got_dtype=str(got.dtype),
    )
    mismatch = kind_mismatch(name, ref, got)
    if mismatch:
        result.message = mismatch
        return result
    result.elements = int(ref.size)
    if ref.size == 0:
        result.passed, result.message, result.accepted_by = True, f"{name}: empty output", "tolerance"
        return result
    is_float = ref.dtype.kind == "f" or ref.dtype.kind == "V"  # V: bfloat16 and friends
    if class_axis is not None and not -ref.ndim <= class_axis < ref.ndim:
        raise SpecError(f"output {name!r}: class_axis {class_axis} does not fit its shape {ref.shape}")
    result.output_range = output_range
    _fill_metrics(result, ref, got, tolerance, is_float, class_axis if is_float else None, top_k)
    return result


def _atol(tol: Tolerance, max_ref: float, output_range: float | None) -> float:
    """The absolute part of the elementwise bound: atol_by_range scales the output's range (None: max|ref|)."""
    scale = max_ref if output_range is None else output_range
    return tol.atol + tol.atol_by_max * max_ref + tol.atol_by_range * scale


def out_of_bound(ref: np.ndarray, got: np.ndarray, tolerance: Tolerance, output_range: float | None) -> np.ndarray:
    """Where `got` is past the elementwise bound around `ref` (a float output of one shape; NaN/Inf count as past)."""
    r, g = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
    finite = np.isfinite(r) & np.isfinite(g)
    magnitude = np.abs(np.where(finite, r, 0.0))
    bound = _atol(tolerance, float(magnitude.max(initial=0.0)), output_range) + tolerance.rtol * magnitude
    return ~finite | (np.abs(np.where(finite, g - r, 0.0)) > bound)


def accept_argmax_flips(label: OutputComparison, ref_label: np.ndarray, got_label: np.ndarray,
                        scores: OutputComparison, ref_scores: np.ndarray, got_scores: np.ndarray,
                        class_axis: int) -> bool:
    """Pass an integer output (`label`) that differs from the original's only where it is the argmax
    of a float output (`scores`, along `class_axis`) on both sides of this example, and those scores
    passed their own verdict: each flip is then a near-tie the scores' accepted error decides (a
    reduced precision's), not a fault of the label's path. Nothing declares a label to be an argmax,
    so the rule rests on both sides' arrays: a converted label that is not its own scores' argmax,
    or scores that failed, leave the verdict as it was. Returns whether it passed `label`."""
    if label.passed or label.max_abs is None or not scores.passed or ref_label.dtype.kind not in "iu" \
            or ref_scores.dtype.kind != "f" or not -ref_scores.ndim <= class_axis < ref_scores.ndim:
        return False
    keep = ref_label.ndim == ref_scores.ndim
    shape = np.argmax(ref_scores, axis=class_axis, keepdims=keep).shape
    if ref_label.shape != shape or got_label.shape != shape or got_scores.shape != ref_scores.shape:
        return False
    if not (np.array_equal(np.argmax(ref_scores, axis=class_axis, keepdims=keep), ref_label)
            and np.array_equal(np.argmax(got_scores, axis=class_axis, keepdims=keep), got_label)):
        return False
    flipped = ref_label != got_label
    if not flipped.any():
        return False
    expanded = (lambda a: a) if keep else (lambda a: np.expand_dims(a, class_axis))
    # the original's lead of its class over the class the converted model chose, at each flip
    margins = (np.take_along_axis(ref_scores, expanded(ref_label), class_axis)
               - np.take_along_axis(ref_scores, expanded(got_label), class_axis))[expanded(flipped)]
    label.passed, label.accepted_by = True, "argmax"
    label.extra["argmax_of"] = scores.name
    label.extra["flip_margins"] = [float(m) for m in margins]
    label.message = (f"{label.name}: {int(flipped.sum())} of {flipped.size} element(s) differ, each the argmax of "
                     f"{scores.name} on both sides, whose original led the converted model's class there by "
                     f"{float(margins.max()):.3g} at most (its largest error {scores.max_abs:.3g}), and {scores.name} "
                     f"passed ({scores.accepted_by}): a near-tie its accepted error decides")
    return True


def accept_saturation(comparison: OutputComparison, ref: np.ndarray, got: np.ndarray, tolerance: Tolerance,
                      bounds: tuple[float, float], class_axis: int | None = None, top_k: int = 5) -> bool:
    """Pass a float output that failed its fixed tolerance where the original lies past `bounds` (the
    (smallest, largest) value the output takes on the calibration feed) and, judged against the original
    clipped to them, it passes every check its tolerance sets: a static int8 build saturates such an
    element by design, at the clip range its recipe chose (symmetric or not, about `bounds`). Elements
    within the bounds are judged as before, so an error there still fails; so does an output whose
    error a standard build's multiple already failed (`comparison.floor`). Returns whether it passed."""
    ref = np.asarray(ref)
    if comparison.passed or comparison.max_abs is None or ref.dtype.kind != "f" \
            or (comparison.floor or {}).get("passed") is False:
        return False
    low, high = bounds
    past = (ref < low) | (ref > high)
    if not past.any():
        return False
    # in ref's own dtype, which compare_outputs requires of both sides
    clipped = compare_outputs(comparison.name, np.clip(ref, low, high).astype(ref.dtype, copy=False), got,
                              tolerance, class_axis, top_k, comparison.output_range)
    if not clipped.passed:
        return False
    comparison.passed, comparison.accepted_by = True, "saturation"
    comparison.extra["saturation"] = {"elements": int(past.sum()), "range": [low, high],
                                      "error_ratio": clipped.error_ratio}
    comparison.message = (f"{comparison.message}; {int(past.sum())} of {past.size} element(s) of the original lie "
                          f"past the range it takes on the calibration feed ({low:.6g} to {high:.6g}), which an "
                          f"int8 build saturates: against the original clipped to it, within tolerance "
                          f"({clipped.error_ratio:.3g}x)")
    return True


# The bounds of a comparison by distribution (an output of a random operator):
# the means and the variances may differ by DISTRIBUTION_SIGMAS standard errors
# of their difference (estimated from the samples, as if their elements were
# independent draws), and each side's smallest and largest value may lie
# outside the other's by RANGE_SLACK of the original's observed range. A
# correct conversion fails the mean test by chance about once in 10^8.
# Pooling every element cannot tell a draw from a fixed value (x + U(0, 1) and
# x + 0.5 pool alike), so each position's variance across the draws, averaged
# over the positions ("draw_variance"), is held to the same DISTRIBUTION_SIGMAS
# standard errors, estimated by the jackknife over the draws: the draws are
# independent runs, the positions of one draw need not be.
DISTRIBUTION_SIGMAS = 6.0
RANGE_SLACK = 0.25


def kind_mismatch(name: str, ref: np.ndarray, got: np.ndarray) -> str | None:
    """Why two arrays cannot be compared element by element (shape, dtype), or None."""
    if ref.shape != got.shape:
        return f"{name}: shape mismatch: original {ref.shape}, converted {got.shape}"
    if ref.dtype != got.dtype:
        return f"{name}: dtype mismatch: original {ref.dtype}, converted {got.dtype}"
    return None


def compare_distributions(name: str, ref_draws: list[np.ndarray], got_draws: list[np.ndarray]) -> OutputComparison:
    """Compare one output of a model that draws random numbers by its
    distribution over several runs on the same inputs: every draw's shape and
    dtype, then the mean, the variance and the range of all the finite values
    drawn, and how much each position varies across the draws (a converted
    model that lost its randomness), within the bounds above; never elementwise."""
    first_ref, first_got = np.asarray(ref_draws[0]), np.asarray(got_draws[0])
    result = OutputComparison(
        name=name, passed=False, message="", tolerance={"distribution_sigmas": DISTRIBUTION_SIGMAS,
                                                        "range_slack": RANGE_SLACK},
        ref_shape=tuple(first_ref.shape), got_shape=tuple(first_got.shape),
        ref_dtype=str(first_ref.dtype), got_dtype=str(first_got.dtype), elements=int(first_ref.size),
    )
    for ref, got in zip(ref_draws, got_draws):
        mismatch = kind_mismatch(name, ref, got)
        if mismatch:
            result.message = mismatch
            return result
    r = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1) for x in ref_draws])
    g = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1) for x in got_draws])
    result.ref_nan, result.ref_inf = int(np.isnan(r).sum()), int(np.isinf(r).sum())
    r, g = r[np.isfinite(r)], g[np.isfinite(g)]
    result.finite_elements = int(min(r.size, g.size))
    if r.size == 0 or g.size == 0:
        result.passed = r.size == g.size
        result.message = (f"{name}: no finite value drawn on {'either side' if result.passed else 'one side'} "
                          f"over {len(ref_draws)} draws")
        return result
    ref_stats, got_stats = _distribution(r), _distribution(g)
    ref_stats.update(_draw_variance(ref_draws))
    got_stats.update(_draw_variance(got_draws))
    scale = max(abs(ref_stats["min"]), abs(ref_stats["max"]), abs(got_stats["min"]), abs(got_stats["max"]))
    floor = 8 * float(np.finfo(np.float32).eps) * scale   # float32 rounding of equal distributions
    span = ref_stats["max"] - ref_stats["min"]
    bounds = {
        "mean": DISTRIBUTION_SIGMAS * math.sqrt(max(ref_stats["variance"] / r.size, ref_stats["draw_mean_se"] ** 2)
                                                + max(got_stats["variance"] / g.size, got_stats["draw_mean_se"] ** 2))
        + floor,
        "variance": DISTRIBUTION_SIGMAS * math.sqrt(ref_stats["variance_se"] ** 2 + got_stats["variance_se"] ** 2)
        + floor * scale,
        "min": RANGE_SLACK * span + floor,
        "max": RANGE_SLACK * span + floor,
        "draw_variance": DISTRIBUTION_SIGMAS * math.sqrt(ref_stats["draw_variance_se"] ** 2
                                                         + got_stats["draw_variance_se"] ** 2) + floor * scale,
    }
    ratios = {}
    for key, bound in bounds.items():
        gap = abs(got_stats[key] - ref_stats[key])
        ratios[key] = 0.0 if gap == 0 else (gap / bound if bound > 0 else np.inf)
    result.error_ratio = float(max(ratios.values()))
    result.passed = result.error_ratio <= 1.0
    result.max_ref = float(np.abs(r).max())
    result.extra["distribution"] = {"draws": len(ref_draws), "original": ref_stats, "converted": got_stats,
                                    "bounds": bounds, "ratios": ratios}
    described = ", ".join(f"{key} {ref_stats[key]:.4g} vs {got_stats[key]:.4g}" for key in bounds)
    if result.passed:
        result.accepted_by = "distribution"
        result.message = f"{name}: same distribution over {len(ref_draws)} draws (original vs converted: {described})"
        return result
    if ratios["draw_variance"] > 1.0 and got_stats["draw_variance"] <= floor * scale:
        result.message = (f"{name}: the converted model gives the same values on every draw where the original's "
                          f"vary (per-position spread over {len(ref_draws)} draws of the same inputs: original "
                          f"{math.sqrt(ref_stats['draw_variance']):.2g}, converted "
                          f"{math.sqrt(got_stats['draw_variance']):.2g}): it lost the randomness")
        return result
    off = ", ".join(f"{key} {ref_stats[key]:.4g} vs {got_stats[key]:.4g} (allowed difference {bounds[key]:.3g})"
                    for key, ratio in ratios.items() if ratio > 1.0)
    result.message = (f"{name}: the converted model draws from another distribution than the original over "
                      f"{len(ref_draws)} draws of the same inputs: {off}")
    return result


def _distribution(values: np.ndarray) -> dict[str, float]:
    """Mean, variance (with the standard error of the variance, from the
    fourth central moment), min and max of a non-empty sample."""
    mean = float(values.mean())
    centred = values - mean
    variance = float(np.mean(centred ** 2))
    fourth = float(np.mean(centred ** 4))
    variance_se = math.sqrt(max(fourth - variance ** 2, 0.0) / values.size)
    return {"mean": mean, "variance": variance, "variance_se": variance_se,
            "min": float(values.min()), "max": float(values.max()), "values": int(values.size)}


def _draw_variance(draws: list[np.ndarray]) -> dict[str, float]:
    """Each position's variance across the draws (unbiased), averaged over the
    positions finite in every draw, and its jackknife standard error over the
    draws (each left out in turn: the sum of squares loses k/(k-1) of its
    squared deviation). Needs three draws or more."""
    stacked = np.stack([np.asarray(x, dtype=np.float64).reshape(-1) for x in draws])
    stacked = stacked[:, np.isfinite(stacked).all(axis=0)]
    k = stacked.shape[0]
    if k < 3:
        raise ValueError(f"a comparison by distribution needs at least 3 draws, got {k}")
    if stacked.shape[1] == 0:
        return {"draw_variance": 0.0, "draw_variance_se": 0.0, "draw_mean_se": 0.0}
    deviations = stacked - stacked.mean(axis=0)
    squares = deviations ** 2
    left_out = ((squares.sum(axis=0) - k / (k - 1) * squares) / (k - 2)).mean(axis=1)
    return {"draw_variance": float((squares.sum(axis=0) / (k - 1)).mean()),
            "draw_variance_se": float(math.sqrt((k - 1) / k * np.sum((left_out - left_out.mean()) ** 2))),
            # the mean's standard error from the draws' own means: one random number shared by every
            # position of a draw moves them all together, which the per-element error cannot see
            "draw_mean_se": float(stacked.mean(axis=1).std(ddof=1) / math.sqrt(k))}


def _fill_metrics(result: OutputComparison, ref: np.ndarray, got: np.ndarray, tol: Tolerance, is_float: bool,
                  class_axis: int | None, top_k: int) -> None:
    # Work in float32 for float32 and narrower outputs (its rounding is far below any
    # tolerance worth setting) and in float64 otherwise; accumulate sums in float64.
    # The comparator runs on every example, so each full pass over the data counts.
    work = np.float32 if is_float and ref.dtype.itemsize <= 4 else np.float64
    r = ref.astype(work, copy=False).reshape(-1)
    g = got.astype(work, copy=False).reshape(-1)
    nonfinite = None
    result.finite_elements = int(ref.size)
    if is_float and not (np.isfinite(r).all() and np.isfinite(g).all()):
        finite = np.isfinite(r) & np.isfinite(g)
        same = (np.isnan(r) & np.isnan(g)) | (np.isinf(r) & (r == g))
        nonfinite = ~finite & ~same
        result.nonfinite_mismatches = int(nonfinite.sum())
        result.ref_nan, result.ref_inf = int(np.isnan(r).sum()), int(np.isinf(r).sum())
        result.finite_elements = int(finite.sum())
        r = np.where(finite, r, 0).astype(work, copy=False)
        g = np.where(finite, g, 0).astype(work, copy=False)

    with np.errstate(over="ignore"):
        diff = np.subtract(g, r)
    if work is np.float32 and not np.isfinite(diff).all():
        # Finite values near float32's limits overflow when subtracted: redo it wide.
        work, r, g = np.float64, r.astype(np.float64), g.astype(np.float64)
        diff = np.subtract(g, r)
    np.abs(diff, out=diff)
    if not is_float:
        # float64 cannot tell integers beyond 2**53 apart: an unequal pair is at least 1 apart.
        diff[(diff == 0) & (ref.reshape(-1) != got.reshape(-1))] = 1.0
    abs_r = np.abs(r)
    max_ref = float(abs_r.max())
    atol = _atol(tol, max_ref, result.output_range)
    bound = np.multiply(abs_r, work(tol.rtol))
    bound += work(atol)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.divide(diff, bound)
    if atol == 0:
        np.copyto(ratio, 0, where=diff == 0)  # 0/0: no error where nothing was allowed
    if nonfinite is not None:
        ratio[nonfinite] = np.inf

    result.error_histogram = error_histogram(ratio)
    n = diff.size
    allowed = int(np.floor(tol.max_mismatch * n))
    worst = int(np.argmax(ratio))
    elementwise = _kth_largest(ratio, allowed)
    result.mismatch_fraction = int(np.count_nonzero(ratio > 1)) / n
    result.max_abs = float(diff.max())
    result.mean_abs = float(np.sum(diff, dtype=np.float64)) / n
    dd = float(np.einsum("i,i->", diff, diff, dtype=np.float64))
    result.rmse = float(np.sqrt(dd / n))
    result.max_ref = max_ref
    result.normalized_error = result.max_abs / max_ref if max_ref > 0 else (0.0 if result.max_abs == 0 else np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.divide(diff, abs_r, out=np.zeros_like(diff), where=abs_r > 0)
    result.max_rel = float(rel.max())
    # cos = a.b / (|a||b|), with a.b from |a|^2 + |b|^2 - |a-b|^2 so that the three
    # sums reuse the error already computed.
    aa = float(np.einsum("i,i->", r, r, dtype=np.float64))
    gg = float(np.einsum("i,i->", g, g, dtype=np.float64))
    result.cosine = (aa + gg - dd) / (2 * np.sqrt(aa * gg)) if aa > 0 and gg > 0 else (1.0 if result.max_abs == 0 else 0.0)
    if is_float:
        # Over the finite elements, as every metric here; 0/0 (both all zero) is no error.
        result.snr_db = np.inf if dd == 0 else (10 * (math.log10(aa) - math.log10(dd)) if aa > 0 else -np.inf)
    if class_axis is not None:
        shape = ref.shape
        k = min(top_k, shape[class_axis])
        result.top_k = k
        result.top1_agreement = _top_agreement(r.reshape(shape), g.reshape(shape), class_axis, 1)
        result.topk_overlap = _top_agreement(r.reshape(shape), g.reshape(shape), class_axis, k)
    if is_float and ref.dtype.kind == "f":
        result.max_ulp = _max_ulp(ref.reshape(-1), got.reshape(-1), nonfinite is not None)
    result.worst_index = tuple(int(i) for i in np.unravel_index(worst, ref.shape))
    result.worst_ref = float(ref.flat[worst])
    result.worst_got = float(got.flat[worst])

    thresholds = _threshold_ratios(result, tol) if is_float else {}
    result.failed_thresholds = [name for name, value in thresholds.items() if value > 1.0]
    result.error_ratio = max([elementwise, *thresholds.values()])
    elementwise_passed = result.nonfinite_mismatches == 0 and elementwise <= 1.0
    result.passed = elementwise_passed and not result.failed_thresholds
    if result.passed and result.finite_elements == 0:
        # Nothing was measured: a converted model returning NaN everywhere would pass too.
        result.accepted_by = None
        result.message = (f"{result.name}: all {result.elements} elements NaN/Inf on both sides, at the same "
                          "positions: no finite value to compare")
        return
    if result.passed:
        result.accepted_by = "tolerance"
        result.message = f"{result.name}: within tolerance"
        return
    if elementwise_passed:
        result.message = f"{result.name}: within its elementwise tolerance, but {_describe_thresholds(result, tol)}"
        return
    if not result.nonfinite_mismatches:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # Rounded up by a few steps of the working precision, so that the value
            # really passes when the bound is computed again in that precision.
            margin = 1 + 8 * float(np.finfo(work).eps)
            result.needed_atol = max(_kth_largest(diff - work(tol.rtol) * abs_r, allowed), 0.0) * margin
            excess = np.maximum(diff - work(atol), 0).astype(np.float64) / abs_r
            excess[diff <= atol] = 0
            result.needed_rtol = _kth_largest(excess, allowed) * margin
    result.message = _describe(result, atol, tol)
    if result.failed_thresholds:
        result.message += f"; and {_describe_thresholds(result, tol)}"


def _top_agreement(ref: np.ndarray, got: np.ndarray, axis: int, k: int) -> float:
    """The mean over positions of |top-k(ref) & top-k(got)| / k along `axis`.
    A class tied with the k-th largest value counts as in the top k (a
    quantized output that ties the top two classes contradicts neither), and
    a position counts at most k shared classes."""
    shared = np.count_nonzero((ref >= _kth_along(ref, axis, k)) & (got >= _kth_along(got, axis, k)), axis=axis)
    return float(np.minimum(shared, k).mean() / k)


def _kth_along(values: np.ndarray, axis: int, k: int) -> np.ndarray:
    """The k-th largest value along `axis`, the axis kept (of length 1)."""
    if k == 1:
        return values.max(axis=axis, keepdims=True)   # one pass, where a partition takes several
    n = values.shape[axis]
    return np.partition(values, n - k, axis=axis).take([n - k], axis=axis)


# A whole-output statistic of fewer numbers says nothing an elementwise bound
# does not: one output of a regression (the zoo's `simple`, N=1) near 0 has an
# SNR of a few dB at a correct int8 conversion, whatever its range.
WHOLE_OUTPUT_MIN_ELEMENTS = 16


def _threshold_ratios(result: OutputComparison, tol: Tolerance) -> dict[str, float]:
    """A ratio per whole-output threshold set (and measurable here: cosine and
    SNR on an output of WHOLE_OUTPUT_MIN_ELEMENTS elements or more), <= 1 exactly when it is
    met; the SNR's is the error's amplitude over the largest the threshold
    allows. A metric that is NaN (sums of float64 values beyond its range)
    meets nothing."""
    ratios = {}
    whole = result.elements >= WHOLE_OUTPUT_MIN_ELEMENTS   # top-1 and top-k are per position: they always apply
    if tol.min_cosine and whole:
        ratios["min_cosine"] = _shortfall(result.cosine, tol.min_cosine)
    if tol.min_snr_db and whole:
        margin = (tol.min_snr_db - result.snr_db) / 20
        ratios["min_snr_db"] = 0.0 if margin == -np.inf else (10.0 ** margin if margin <= 300 else np.inf)
    if tol.min_top1 and result.top1_agreement is not None:
        ratios["min_top1"] = _shortfall(result.top1_agreement, tol.min_top1)
    if tol.min_topk_overlap and result.topk_overlap is not None:
        ratios["min_topk_overlap"] = _shortfall(result.topk_overlap, tol.min_topk_overlap)
    return ratios


def _shortfall(value: float, minimum: float) -> float:
    """(1 - value) / (1 - minimum): <= 1 exactly when value >= minimum; a
    minimum of 1 asks for 1 exactly (0 when met, inf when not)."""
    if math.isnan(value):
        return np.inf
    missing = max(1.0 - value, 0.0)   # a cosine may round to just above 1
    if minimum >= 1.0:
        return 0.0 if missing == 0 else np.inf
    return missing / (1.0 - minimum)


def _describe_thresholds(result: OutputComparison, tol: Tolerance) -> str:
    """The whole-output thresholds not met, each with its value."""
    labels = {"min_cosine": ("cosine", "cosine", ""), "min_snr_db": ("SNR", "snr_db", " dB"),
              "min_top1": ("top-1 agreement", "top1_agreement", ""),
              "min_topk_overlap": (f"top-{result.top_k} overlap", "topk_overlap", "")}
    parts = []
    for name in result.failed_thresholds:
        label, metric, unit = labels[name]
        # Enough digits that a value just below its threshold does not print as the threshold.
        parts.append(f"{label} {getattr(result, metric):.10g}{unit} < {name} {getattr(tol, name):g}{unit}")
    return "; ".join(parts)


def _kth_largest(values: np.ndarray, k: int) -> float:
    """The (k+1)-th largest value: what must pass when k elements may fail."""
    flat = values.ravel()
    if k == 0:
        return float(flat.max())
    if k >= flat.size:
        return 0.0  # every element may fail: nothing has to pass
    return float(np.partition(flat, flat.size - 1 - k)[flat.size - 1 - k])


def _max_ulp(ref: np.ndarray, got: np.ndarray, has_nonfinite: bool) -> float:
    """Largest distance in units in the last place, in the output's own dtype,
    over the elements finite on both sides (+0 and -0 are 0 apart)."""
    bits = {2: np.int16, 4: np.int32, 8: np.int64}[ref.dtype.itemsize]
    a, b = ref.view(bits), got.view(bits)
    if has_nonfinite:
        keep = np.isfinite(ref) & np.isfinite(got)
        a, b = a[keep], b[keep]
        if a.size == 0:
            return 0.0
    # Between floats of one sign the distance is the difference of their magnitude
    # bits; across zero it is the sum (which may overflow the width: take it wide).
    magnitude = np.iinfo(bits).max
    mag_a, mag_b = a & magnitude, b & magnitude
    opposite = np.flatnonzero((a ^ b) < 0)
    across = 0.0
    if opposite.size:
        across = float((mag_a[opposite].astype(np.float64) + mag_b[opposite]).max())
    mag_a -= mag_b
    np.abs(mag_a, out=mag_a)
    return max(float(mag_a.max()), across)


def _describe(result: OutputComparison, atol: float, tol: Tolerance) -> str:
    idx = list(result.worst_index) if result.worst_index is not None else []
    parts = [f"{result.name}: "]
    if result.nonfinite_mismatches:
        parts.append(f"{result.nonfinite_mismatches} element(s) NaN/Inf on one side only "
                     f"(first at {idx}: original {result.worst_ref}, converted {result.worst_got}); "
                     "no tolerance passes that")
        return "".join(parts)
    else:
        parts.append(
            f"{result.mismatch_fraction:.3%} of {result.elements} elements out of tolerance "
            f"(allowed {tol.max_mismatch:.3%}); worst at {idx}: original {result.worst_ref:.9g}, "
            f"converted {result.worst_got:.9g}, |diff| {abs(result.worst_got - result.worst_ref):.3g} "
            f"> {atol:.3g} + {tol.rtol:.3g}*|ref|; "
        )
    parts.append(
        f"max abs {result.max_abs:.3g}, normalized {result.normalized_error:.3g}; "
        f"would pass with atol {result.needed_atol:.3g} (rtol {tol.rtol:.3g}) "
        f"or rtol {result.needed_rtol:.3g} (atol {atol:.3g})"
    )
    return "".join(parts)
