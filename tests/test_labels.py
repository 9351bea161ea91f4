"""Age and gender parsing, on every raw string that occurs in the real Adience fold files."""

import pytest

from audience.labels import (
    AGE_CLASSES,
    AGE_RANGES,
    CANONICAL_AGES,
    GENDER_CLASSES,
    NO_CLASS,
    age_label,
    parse_age,
    parse_gender,
)

# raw string -> (class name under `bins`, class name under `strict`); "dropped" = no class.
AGE_CASES = {
    "(0, 2)": ("0-2", "0-2"),
    "(4, 6)": ("3-6", "3-6"),
    "(8, 12)": ("8-13", "8-13"),
    "(15, 20)": ("15-20", "15-20"),
    "(25, 32)": ("22-32", "22-32"),
    "(38, 43)": ("34-43", "34-43"),
    "(48, 53)": ("45-53", "45-53"),
    "(60, 100)": ("55-100", "55-100"),
    "None": ("dropped", "dropped"),
    "": ("dropped", "dropped"),
    "2": ("0-2", "dropped"),
    "3": ("3-6", "dropped"),
    "13": ("8-13", "dropped"),
    "22": ("22-32", "dropped"),
    "23": ("22-32", "dropped"),
    "29": ("22-32", "dropped"),
    "32": ("22-32", "dropped"),
    "34": ("34-43", "dropped"),
    "35": ("34-43", "dropped"),
    "36": ("34-43", "dropped"),
    "42": ("34-43", "dropped"),
    "45": ("45-53", "dropped"),
    "46": ("45-53", "dropped"),
    "55": ("55-100", "dropped"),
    "56": ("55-100", "dropped"),
    "57": ("55-100", "dropped"),
    "58": ("55-100", "dropped"),
    "(27, 32)": ("22-32", "dropped"),
    "(25, 23)": ("22-32", "dropped"),  # endpoints in either order
    "(38, 42)": ("34-43", "dropped"),
    "(38, 48)": ("dropped", "dropped"),  # spans two classes
    "(8, 23)": ("dropped", "dropped"),
}


@pytest.mark.parametrize("raw", sorted(AGE_CASES))
@pytest.mark.parametrize("policy", ["bins", "strict"])
def test_parse_age_on_every_real_string(raw, policy):
    expected = AGE_CASES[raw][0 if policy == "bins" else 1]
    assert age_label(parse_age(raw, policy)) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(" (25, 32) ", "22-32"), ("(25,32)", "22-32"), ("7", "dropped"), ("101", "dropped"), ("abc", "dropped"),
     (None, "dropped"), ("(2, 0)", "0-2"), ("(60, 100)", "55-100")],
)
def test_parse_age_edge_cases(raw, expected):
    assert age_label(parse_age(raw)) == expected


def test_strict_is_exactly_the_canonical_strings():
    assert [parse_age(raw, "strict") for raw in CANONICAL_AGES] == list(range(8))
    assert parse_age("(25,32)", "strict") == NO_CLASS  # not the canonical spelling


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="policy"):
        parse_age("(0, 2)", "loose")


@pytest.mark.parametrize(("raw", "expected"), [("f", 0), ("m", 1), ("u", 2), ("", NO_CLASS), (None, NO_CLASS),
                                               (" M ", 1), ("x", NO_CLASS)])
def test_parse_gender(raw, expected):
    assert parse_gender(raw) == expected


def test_class_tables_agree():
    assert len(AGE_CLASSES) == len(AGE_RANGES) == len(CANONICAL_AGES) == 8
    assert GENDER_CLASSES == ("f", "m", "u")
    assert all(low <= high for low, high in AGE_RANGES)
    assert all(a[1] < b[0] for a, b in zip(AGE_RANGES[:-1], AGE_RANGES[1:], strict=True))  # ordered, non-overlapping
