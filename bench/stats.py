"""Summaries of samples: median and percentiles, the way every section reports them."""

from __future__ import annotations

import math
import statistics
from typing import Any


def percentile(samples: list[float], pct: float) -> float:
    """Return the pct-th percentile by the nearest-rank method (a value that was measured)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(samples: list[float]) -> dict[str, Any]:
    """Return n, median, p95, p99, min, max and the samples themselves."""
    if not samples:
        return {"n": 0, "median": math.nan, "p95": math.nan, "p99": math.nan, "min": math.nan, "max": math.nan,
                "samples": []}
    return {"n": len(samples), "median": statistics.median(samples), "p95": percentile(samples, 95),
            "p99": percentile(samples, 99), "min": min(samples), "max": max(samples),
            "samples": [round(s, 6) for s in samples]}


def ratio(num: float, den: float) -> float:
    """Return num / den, or NaN when either side is missing."""
    if den == 0 or math.isnan(num) or math.isnan(den):
        return math.nan
    return num / den


def paired(labcloud: list[float], baseline: list[float]) -> dict[str, Any]:
    """Summarise a labcloud/baseline pair: both sides, ratio of medians and of p95s, ms added at the median."""
    lc, bl = summary(labcloud), summary(baseline)
    per_run = [a / b for a, b in zip(labcloud, baseline, strict=False) if b > 0]
    return {"labcloud": lc, "baseline": bl, "ratio": ratio(lc["median"], bl["median"]),
            "ratio_p95": ratio(lc["p95"], bl["p95"]),
            "ratio_per_run_median": statistics.median(per_run) if per_run else math.nan,
            "added_s": lc["median"] - bl["median"] if lc["n"] and bl["n"] else math.nan}
