"""The heads, the tasks and their classes, and Adience label parsing: the one place they are defined.

Pure functions, no I/O. The eight age classes are named by the inclusive ranges of ages that the
`bins` policy assigns to them (`AGE_RANGES`); an age in a gap between two ranges (7, 14, 21, 33,
44, 54; none occurs in the real files) gets no class rather than a guessed one.
"""

from __future__ import annotations

import re

from audience.errors import AudienceError, quoted
from audience.registry import format_percent, format_seconds  # noqa: F401 - re-exported for older imports

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
