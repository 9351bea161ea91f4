"""The heads, the tasks and their classes, and Adience label parsing: the one place they are defined.

Pure functions, no I/O. The eight age classes are named by the inclusive ranges of ages that the
`bins` policy assigns to them (`AGE_RANGES`); an age in a gap between two ranges (7, 14, 21, 33,
44, 54; none occurs in the real files) gets no class rather than a guessed one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from audience.errors import AudienceError, quoted

AGE_CLASSES: tuple[str, ...] = ("0-2", "3-6", "8-13", "15-20", "22-32", "34-43", "45-53", "55-100")
GENDER_CLASSES: tuple[str, ...] = ("f", "m", "u")
POLICIES: tuple[str, ...] = ("bins", "strict")
NO_CLASS = -1  # the class index of a row without that label (also the loss ignore_index)

HEADS: tuple[str, ...] = ("age", "gender")
CLASSES_OF_HEAD: dict[str, tuple[str, ...]] = {"age": AGE_CLASSES, "gender": GENDER_CLASSES}
TASKS: tuple[str, ...] = ("age+gender", "age", "gender")
HEADS_OF_TASK: dict[str, tuple[str, ...]] = {"age+gender": ("age", "gender"), "age": ("age",), "gender": ("gender",)}

# Inclusive integer ranges of the eight classes under the `bins` policy, the same as their names.
AGE_RANGES: tuple[tuple[int, int], ...] = tuple(
    (int(low), int(high)) for low, high in (name.split("-") for name in AGE_CLASSES)
)

# The eight age strings of the official Adience groups (the literature's protocol).
CANONICAL_AGES: tuple[str, ...] = (
    "(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)",
)

_INTERVAL = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_SINGLE = re.compile(r"^\d+$")


# Inclusive ranges of the eight canonical strings: what `strict` accepts of an exact age (UTKFace).
CANONICAL_RANGES: tuple[tuple[int, int], ...] = tuple(
    (int(low), int(high)) for low, high in (text.strip("()").split(",") for text in CANONICAL_AGES)
)


def age_class_of(age: int, policy: str = "bins") -> int:
    """Class index of one exact integer age, or NO_CLASS when it lies in no range of the policy.

    `bins` uses AGE_RANGES (gaps: 7, 14, 21, 33, 44, 54, over 100); `strict` only the canonical
    Adience intervals (0-2, 4-6, 8-12, 15-20, 25-32, 38-43, 48-53, 60-100).
    """
    ranges = CANONICAL_RANGES if policy == "strict" else AGE_RANGES
    for index, (low, high) in enumerate(ranges):
        if low <= age <= high:
            return index
    return NO_CLASS


def parse_age(raw: str | None, policy: str = "bins") -> int:
    """Age class index of a raw Adience age string, or NO_CLASS.

    `bins`: a single age or an interval (endpoints in any order) gets the class that contains
    all of it; an interval spanning two classes, `None` or empty gets NO_CLASS.
    `strict`: only the eight canonical strings get a class.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown label policy {quoted(policy)}: use one of {', '.join(POLICIES)}")
    text = "" if raw is None else str(raw).strip()
    if policy == "strict":
        return CANONICAL_AGES.index(text) if text in CANONICAL_AGES else NO_CLASS
    if _SINGLE.match(text):
        return age_class_of(int(text))
    match = _INTERVAL.match(text)
    if not match:
        return NO_CLASS
    low, high = sorted((int(match.group(1)), int(match.group(2))))
    first, last = age_class_of(low), age_class_of(high)
    return first if first == last else NO_CLASS


def parse_gender(raw: str | None) -> int:
    """Gender class index of a raw Adience gender string (f, m, u), or NO_CLASS when empty/unknown."""
    text = "" if raw is None else str(raw).strip().lower()
    return GENDER_CLASSES.index(text) if text in GENDER_CLASSES else NO_CLASS


def age_label(index: int) -> str:
    """Display name of an age class index ("dropped" for NO_CLASS)."""
    return AGE_CLASSES[index] if 0 <= index < len(AGE_CLASSES) else "dropped"


def gender_label(index: int) -> str:
    """Display name of a gender class index ("dropped" for NO_CLASS)."""
    return GENDER_CLASSES[index] if 0 <= index < len(GENDER_CLASSES) else "dropped"


def check_task(task: str) -> tuple[str, ...]:
    """The heads of `task`, or AudienceError naming the allowed values."""
    if task not in HEADS_OF_TASK:
        raise AudienceError(f"Unknown task {quoted(task)}: use one of {', '.join(TASKS)}.")
    return HEADS_OF_TASK[task]


@dataclass(frozen=True)
class Metric:
    """One scalar metric of a fold or a run: how every table, log line and card names and writes it."""

    key: str  # the key in metrics dicts, test_metrics.json "summary" and cv_summary.json
    label: str  # short, for table columns and chart legends
    title: str  # long, for the model card
    percent: bool  # an accuracy (fraction 0-1, shown as a percentage), else a plain number (ECE, F1)
    in_summary: bool  # averaged over folds into cv_summary.json


METRICS: tuple[Metric, ...] = (
    Metric("age_exact", "age exact", "age exact accuracy", True, True),
    Metric("age_one_off", "age 1-off", "age 1-off accuracy", True, True),
    Metric("age_f1", "age F1", "age macro F1", False, True),
    Metric("age_ece", "age ECE", "age ECE (calibrated)", False, True),
    Metric("gender_acc", "gender f/m/u", "gender accuracy (f/m/u)", True, True),
    Metric("gender_acc_fm", "gender f/m", "gender accuracy (f/m only)", True, True),
    Metric("gender_f1", "gender F1", "gender macro F1", False, True),
    Metric("gender_ece", "gender ECE", "gender ECE (calibrated)", False, True),
    Metric("age_ece_uncalibrated", "age ECE before calibration", "age ECE (uncalibrated)", False, False),
    Metric("gender_ece_uncalibrated", "gender ECE before calibration", "gender ECE (uncalibrated)", False, False),
)
METRIC_OF: dict[str, Metric] = {metric.key: metric for metric in METRICS}
SUMMARY_KEYS: tuple[str, ...] = tuple(metric.key for metric in METRICS if metric.in_summary)
ACCURACY_KEYS: tuple[str, ...] = tuple(metric.key for metric in METRICS if metric.percent)


def _real(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def format_percent(value, std=None, unit: str = "") -> str:
    """A fraction as a percentage with one decimal ('62.5'), '± std' when given, then `unit`; '-' for none."""
    if _real(value) is None:
        return "-"
    text = f"{100 * value:.1f}"
    if _real(std) is not None:
        text += f" ± {100 * std:.1f}"
    return text + unit


def format_seconds(seconds, clock: bool = False) -> str:
    """A duration: '1h02m' or '3m05s' for tables; with clock=True '1:02:03' or '3:05' (an ETA); '-' for none."""
    if _real(seconds) is None:
        return "-"
    minutes, secs = divmod(max(0, int(round(seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    if clock:
        return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
