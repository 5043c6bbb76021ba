"""Paired t-tests between two runs on the same samples, and summaries for tables.

The paper compares models with paired t-tests on per-slice PSNR and per-volume Dice. Pairing is the
whole point, so samples given as dicts are paired by key (subject, slice, vertebra ...) and a key in one
run but not the other is an error, not a silent mismatch.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

Samples = Mapping[Hashable, float] | Sequence[float] | np.ndarray


@dataclass(frozen=True)
class TTestResult:
    """Paired t-test of a against b: statistic > 0 and mean_difference > 0 mean a is larger.

    n counts the pairs tested; n_dropped the pairs left out because a value was NaN or infinite.
    """

    statistic: float
    pvalue: float
    n: int
    mean_difference: float
    n_dropped: int = 0


def _paired_arrays(a: Samples, b: Samples) -> tuple[np.ndarray, np.ndarray]:
    """Two float arrays in matching order: dicts paired by key, sequences by position."""
    a_is_map, b_is_map = isinstance(a, Mapping), isinstance(b, Mapping)
    if a_is_map != b_is_map:
        raise ValueError("paired_ttest: give both samples as dicts keyed by sample id, or both as sequences")
    if a_is_map:
        only_a, only_b = set(a) - set(b), set(b) - set(a)
        if only_a or only_b:
            raise ValueError(
                f"paired_ttest: samples are not paired; {len(only_a)} ids only in a (e.g. "
                f"{sorted(map(repr, only_a))[:3]}), {len(only_b)} only in b (e.g. {sorted(map(repr, only_b))[:3]})"
            )
        keys = list(a)
        return np.array([a[k] for k in keys], dtype=np.float64), np.array([b[k] for k in keys], dtype=np.float64)
    a_values, b_values = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a_values.shape != b_values.shape:
        raise ValueError(f"paired_ttest: samples are not paired; lengths {a_values.size} and {b_values.size}")
    return a_values, b_values


def paired_ttest(a: Samples, b: Samples) -> TTestResult:
    """Two-sided paired t-test (scipy.stats.ttest_rel) on the complete pairs of a and b.

    When all differences are equal scipy returns NaN (0/0) or +-inf; here equal samples give t = 0, p = 1
    and a constant non-zero difference gives t = +-inf, p = 0, so no NaN reaches a table.
    """
    a_values, b_values = _paired_arrays(a, b)
    complete = np.isfinite(a_values) & np.isfinite(b_values)
    a_values, b_values = a_values[complete], b_values[complete]
    n_dropped = int((~complete).sum())
    if a_values.size < 2:
        raise ValueError(
            f"paired_ttest needs at least 2 complete pairs, got {a_values.size} ({n_dropped} dropped for NaN/Inf)"
        )
    differences = a_values - b_values
    mean_difference = float(differences.mean())
    if np.ptp(differences) == 0:
        statistic = 0.0 if mean_difference == 0 else float(np.sign(mean_difference) * np.inf)
        pvalue = 1.0 if mean_difference == 0 else 0.0
    else:
        result = stats.ttest_rel(a_values, b_values)
        statistic, pvalue = float(result.statistic), float(result.pvalue)
    return TTestResult(statistic, pvalue, int(a_values.size), mean_difference, n_dropped)


def summarize(values: Samples) -> dict[str, float]:
    """Mean, sample standard deviation (ddof 1; 0.0 for a single value), median and n of the finite values.

    Non-finite values are left out and counted in n_dropped.
    """
    array = np.asarray(list(values.values()) if isinstance(values, Mapping) else values, dtype=np.float64).ravel()
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        raise ValueError(f"summarize: no finite values among {array.size}")
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "median": float(np.median(finite)),
        "n": int(finite.size),
        "n_dropped": int(array.size - finite.size),
    }
