"""Argument types shared by the command lines: a number outside its range is refused by argparse with one
sentence ("argument --batch-size: must be from 1 to 1024, not 0"), never a traceback further in."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def whole_number(low: int, high: int, wording: str = "from {low} to {high}") -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high` (`wording` says the range in the sentence)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, not {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {wording.format(low=low, high=high)}, not {value}")
        return value

    return parse


def positive_finite(text: str) -> float:
    """An argparse type: a number above 0 and finite (NaN fails every comparison, inf passes every one)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text[:40]!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, not {text[:40]!r}")
    return value
