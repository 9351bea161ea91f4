"""The metric registry and the protocol labels: the one place that says which metrics exist and how
every table, chart, card, log line and summary names and writes them, and how a protocol is labelled.

Pure, no I/O. A metric's `key` is its key in metrics dicts, test_metrics.json "summary" and
cv_summary.json; nothing else spells a metric's name or picks its format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric of a fold or a run."""

    key: str  # the key in metrics dicts, test_metrics.json "summary" and cv_summary.json
    label: str  # short, for table columns, chart legends and log lines
    title: str  # long, for the model card
    percent: bool  # an accuracy (fraction 0-1, shown as a percentage), else a plain number (ECE, F1)
    in_summary: bool  # averaged over folds into cv_summary.json
    head: str  # the head it measures ("age" or "gender")
    per_group: bool = False  # a list with one value per class (a group of faces), not one scalar

    @property
    def column(self) -> str:
        """The table column of the metric: 'age exact %' for an accuracy, 'age ECE' otherwise."""
        return f"{self.label} %" if self.percent else self.label


METRICS: tuple[Metric, ...] = (
    Metric("age_exact", "age exact", "age exact accuracy", True, True, "age"),
    Metric("age_one_off", "age 1-off", "age 1-off accuracy", True, True, "age"),
    Metric("age_f1", "age F1", "age macro F1", False, True, "age"),
    Metric("age_ece", "age ECE", "age ECE (calibrated)", False, True, "age"),
    Metric("gender_acc", "gender f/m/u", "gender accuracy (f/m/u)", True, True, "gender"),
    Metric("gender_acc_fm", "gender f/m", "gender accuracy (f/m only)", True, True, "gender"),
    Metric("gender_f1", "gender F1", "gender macro F1", False, True, "gender"),
    Metric("gender_ece", "gender ECE", "gender ECE (calibrated)", False, True, "gender"),
    Metric("age_ece_uncalibrated", "age ECE before calibration", "age ECE (uncalibrated)", False, False, "age"),
    Metric("gender_ece_uncalibrated", "gender ECE before calibration", "gender ECE (uncalibrated)", False, False,
           "gender"),
    # Per group: the recall of each class (test_metrics.json "metrics"; the Compare tab's per-class chart).
    Metric("age_per_class", "age per class", "age accuracy per age group", True, False, "age", per_group=True),
    Metric("gender_per_class", "gender per class", "gender accuracy per gender", True, False, "gender",
           per_group=True),
    # Who the model fails (issue 18): the mean of the per-group age accuracies over the groups that have
    # faces, and gender on women and on men (the f/m protocol, like gender_acc_fm).
    Metric("balanced_age_exact", "age balanced", "age exact accuracy, mean of the age groups", True, True, "age"),
    Metric("balanced_age_one_off", "age 1-off balanced", "age 1-off accuracy, mean of the age groups", True, True,
           "age"),
    Metric("gender_acc_female", "gender women", "gender accuracy of women (f/m)", True, True, "gender"),
    Metric("gender_acc_male", "gender men", "gender accuracy of men (f/m)", True, True, "gender"),
    Metric("age_per_class_one_off", "age 1-off per class", "age 1-off accuracy per age group", True, False, "age",
           per_group=True),
)
METRIC_OF: dict[str, Metric] = {metric.key: metric for metric in METRICS}
SCALAR_METRICS: tuple[Metric, ...] = tuple(metric for metric in METRICS if not metric.per_group)
# What cv_summary.json averages over folds (train.metrics.summarize_folds), in this order.
SUMMARY_KEYS: tuple[str, ...] = tuple(metric.key for metric in SCALAR_METRICS if metric.in_summary)
# The accuracies (fractions): the metrics.csv validation columns and the runs table's percent columns.
ACCURACY_KEYS: tuple[str, ...] = tuple(metric.key for metric in SCALAR_METRICS if metric.percent)
# The calibration errors averaged over folds (the runs table's last columns).
ECE_KEYS: tuple[str, ...] = tuple(m.key for m in SCALAR_METRICS if m.in_summary and m.key.endswith("_ece"))
# The headline of a run: its end-of-run log line, and the leakage table's columns beside published numbers.
HEADLINE_KEYS: tuple[str, ...] = ("age_exact", "age_one_off", "gender_acc", "gender_acc_fm")
# The leakage chart's bars: gender f/m first (the literature's protocol), f/m/u for rows that report only that.
LEAKAGE_CHART_KEYS: tuple[str, ...] = ("age_exact", "gender_acc_fm", "gender_acc")
# What audience.cli.evaluate prints first (with the counts of labelled faces).
EVALUATE_KEYS: tuple[str, ...] = ("age_exact", "age_one_off", "gender_acc")
# The accuracy that chooses a fold's best epoch, one per head (the validation score).
SELECTION_KEYS: dict[str, str] = {"age": "age_exact", "gender": "gender_acc"}
# The two accuracies a view shows at a glance, gender on f/m faces as the literature reports it: Compare's
# per-fold chart, its default runs columns and the served checkpoints' table.
GLANCE_KEYS: tuple[str, ...] = ("age_exact", "gender_acc_fm")
# The two accuracies of the GPU report's JSON line.
REPORT_KEYS: tuple[str, ...] = ("age_exact", "gender_acc")
# The keys one evaluation returns per head besides the registered metrics: counts and the confusion matrix.
HEAD_DETAIL_KEYS: dict[str, tuple[str, ...]] = {
    "age": ("age_confusion", "age_n", "age_per_class_n"),
    "gender": ("gender_confusion", "gender_n", "gender_n_fm", "gender_n_female", "gender_n_male"),
}


def keys_of_head(head: str) -> tuple[str, ...]:
    """Every key an evaluation of `head` returns: its registered metrics (but the before-calibration ECE,
    which the fold adds) and its counts; all None when the task has no such head."""
    registered = tuple(m.key for m in METRICS if m.head == head and not m.key.endswith("_uncalibrated"))
    return registered + HEAD_DETAIL_KEYS[head]


def column_of(key: str) -> str:
    """The table column of a registered metric ('gender f/m %')."""
    return METRIC_OF[key].column


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


def format_metric(key: str, value, std=None, unit: str = "") -> str:
    """A registered metric's value as tables show it: a percentage for an accuracy, 3 decimals otherwise."""
    if METRIC_OF[key].percent:
        return format_percent(value, std, unit)
    if _real(value) is None:
        return "-"
    return f"{value:.3f}" + (f" ± {std:.3f}" if _real(std) is not None else "")


def format_seconds(seconds, clock: bool = False) -> str:
    """A duration: '1h02m' or '3m05s' for tables; with clock=True '1:02:03' or '3:05' (an ETA); '-' for none."""
    if _real(seconds) is None:
        return "-"
    minutes, secs = divmod(max(0, int(round(seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    if clock:
        return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# ---------------------------------------------------------------- protocol labels

LEAKY_LABEL = "random (leaky)"
SUBJECT_FOLDS_LABEL = "folds (subject-exclusive)"
IMAGE_FOLDS_LABEL = "folds (image-level)"  # a dataset without identities (UTKFace): not subject-exclusive


def protocol_label(protocol: str | None, leaky: bool = False, split_level: str | None = "subject") -> str:
    """The one short label of a run's or checkpoint's protocol, for every table, chart and card.

    'random (leaky)' for the random split; for folds, whether they keep people apart
    ('folds (subject-exclusive)') or only images ('folds (image-level)'); '?' when unknown.
    """
    if leaky or protocol == "random":
        return LEAKY_LABEL
    if protocol == "folds":
        return IMAGE_FOLDS_LABEL if split_level == "image" else SUBJECT_FOLDS_LABEL
    return str(protocol) if protocol else "?"


def protocol_title(protocol: str | None, leaky: bool = False, split_level: str | None = "subject") -> str:
    """The long description of protocol_label's protocol, for the model card."""
    return _PROTOCOL_TITLES.get(protocol_label(protocol, leaky, split_level), "unknown")


_PROTOCOL_TITLES = {
    SUBJECT_FOLDS_LABEL: "official Adience 5-fold protocol: test on fold k, train on the other four, validate on "
                         "whole albums held out of them (no person in two sets)",
    IMAGE_FOLDS_LABEL: "image-level 5 folds by file name (the dataset lists no identities): test on fold k, train on "
                       "the other four, validate on images held out of them; one person may be on both sides, so "
                       "this is **not** subject-exclusive and not comparable with the Adience protocol",
    LEAKY_LABEL: "random image-level split (leaky: the same people are in training and validation/test)",
}
