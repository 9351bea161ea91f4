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


@pytest.mark.parametrize(("args", "kwargs", "expected"), [
    ((0.625,), {}, "62.5"),
    ((0.625, 0.177), {}, "62.5 ± 17.7"),
    ((0.625, float("nan")), {}, "62.5"),
    ((0.5,), {"unit": "%"}, "50.0%"),
    ((None,), {"unit": "%"}, "-"),
    ((float("nan"), 0.1), {}, "-"),
    (("0.5",), {}, "-"),
])
def test_format_percent(args, kwargs, expected):
    from audience.registry import format_percent

    assert format_percent(*args, **kwargs) == expected


@pytest.mark.parametrize(("seconds", "clock", "expected"), [
    (75, False, "1m15s"), (3725, False, "1h02m"), (70, True, "1:10"), (3725, True, "1:02:05"),
    (None, False, "-"), (float("nan"), True, "-"), (-3, True, "0:00"),
])
def test_format_seconds(seconds, clock, expected):
    from audience.registry import format_seconds

    assert format_seconds(seconds, clock=clock) == expected


def test_one_metric_table_feeds_the_summary_the_epoch_row_and_the_compare_columns():
    from audience.registry import ACCURACY_KEYS, ECE_KEYS, METRICS, SUMMARY_KEYS, column_of
    from audience.train.metrics import compute_metrics, summarize_folds
    from audience.train.runs import METRICS_COLUMNS

    assert len({metric.key for metric in METRICS}) == len(METRICS)
    assert set(SUMMARY_KEYS) == {"age_exact", "age_one_off", "gender_acc", "gender_acc_fm", "age_ece", "gender_ece",
                                 "age_f1", "gender_f1", "balanced_age_exact", "balanced_age_one_off",
                                 "gender_acc_female", "gender_acc_male"}
    assert {f"val_{key}" for key in ACCURACY_KEYS} <= set(METRICS_COLUMNS)
    assert [column_of(key) for key in ACCURACY_KEYS] == ["age exact %", "age 1-off %", "gender f/m/u %",
                                                         "gender f/m %", "age balanced %", "age 1-off balanced %",
                                                         "gender women %", "gender men %"]
    assert [column_of(key) for key in ECE_KEYS] == ["age ECE", "gender ECE"]
    # What one evaluation returns and what the summary averages are the registry's keys, with or without a head.
    scored = compute_metrics([0, 1], [[0.9, 0.1] + [0] * 6, [0.1, 0.9] + [0] * 6], [0, 1], [[0.8, 0.2, 0],
                                                                                           [0.3, 0.7, 0]])
    assert set(SUMMARY_KEYS) <= set(scored) and set(scored) == set(compute_metrics([0], None, [0], None))
    assert {key for key in summarize_folds({0: scored}) if key != "n_folds"} == set(SUMMARY_KEYS)
    per_group = [metric.key for metric in METRICS if metric.per_group]
    assert per_group and all(isinstance(scored[key], list) for key in per_group)
