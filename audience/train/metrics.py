"""Evaluation metrics: exact and one-off age accuracy, gender accuracy (f/m/u and f/m only),
macro F1, confusion matrices, per-group accuracy (each age group, women and men, each race where the
data has one), calibration (ECE, temperature scaling) and the cross-validation summary.

Pure functions of arrays; every result is JSON-serialisable (plain floats, ints, lists, None).
Class index -1 (labels.NO_CLASS) means "no label" and is ignored by each head separately.
"""

from __future__ import annotations

import math

import numpy as np

from audience.labels import AGE_CLASSES, GENDER_CLASSES, NO_CLASS
from audience.registry import SUMMARY_KEYS, keys_of_head
from audience.train.group_metrics import (
    FM_CLASSES,
    age_group_scores,
    as_numpy,
    gender_group_scores,
    is_tensor,
    race_scores,
)

# A temperature outside this range fits noise or a broken model, not miscalibration (a 1-epoch demo run
# fitted 0.11 on 40 validation images and doubled the test ECE); fits beyond it are clamped to it.
TEMPERATURE_RANGE = (0.5, 5.0)
# One scalar fitted on fewer labelled validation rows than this overfits them (and the validation set
# also chose the epoch, which makes the model look more accurate there than it is): calibration is skipped.
MIN_CALIBRATION_ROWS = 100


def _as_probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows that already are probabilities stay; anything else is taken as logits and softmaxed."""
    scores = scores.astype(np.float64)
    is_prob = scores.size and scores.min() >= 0 and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    from scipy.special import softmax  # scipy and sklearn are imported where used: off the app's start

    return scores if is_prob else softmax(scores, axis=1)


def _labelled(true, scores) -> tuple[np.ndarray, np.ndarray]:
    true = as_numpy(true).astype(np.int64).reshape(-1)
    scores = as_numpy(scores)
    if scores.ndim != 2 or scores.shape[0] != true.shape[0]:
        raise ValueError(f"scores of shape {scores.shape} do not match {true.shape[0]} labels")
    keep = true != NO_CLASS
    return true[keep], scores[keep]


def _recalls(confusion: np.ndarray) -> list[float | None]:
    support = confusion.sum(axis=1)
    return [float(confusion[i, i] / support[i]) if support[i] else None for i in range(len(support))]


def _head_metrics(true, scores, n_classes: int) -> dict:
    from sklearn.metrics import confusion_matrix, f1_score

    true, scores = _labelled(true, scores)
    pred = scores.argmax(axis=1) if len(true) else np.zeros(0, dtype=np.int64)
    confusion = confusion_matrix(true, pred, labels=list(range(n_classes))) if len(true) else np.zeros(
        (n_classes, n_classes), dtype=np.int64
    )
    return {
        "true": true,
        "scores": scores,
        "pred": pred,
        "n": int(len(true)),
        "acc": float(np.mean(pred == true)) if len(true) else None,
        # Macro over the classes present in truth or prediction (sklearn's default), so a class absent
        # from a small fold does not count as F1 = 0.
        "f1": float(f1_score(true, pred, average="macro", zero_division=0)) if len(true) else None,
        "confusion": confusion.astype(int).tolist(),
        "per_class": _recalls(confusion),
        "ece": expected_calibration_error(_as_probabilities(scores), true) if len(true) else None,
    }


def _age_keys(age_true, age_prob) -> dict:
    if age_prob is None:
        return dict.fromkeys(keys_of_head("age"))
    head = _head_metrics(age_true, age_prob, len(AGE_CLASSES))
    one_off = float(np.mean(np.abs(head["pred"] - head["true"]) <= 1)) if head["n"] else None
    return {
        **age_group_scores(head["true"], head["pred"]),
        "age_exact": head["acc"],
        "age_one_off": one_off,
        "age_f1": head["f1"],
        "age_confusion": head["confusion"],
        "age_per_class": head["per_class"],
        "age_n": head["n"],
        "age_ece": head["ece"],
    }


def _gender_keys(gender_true, gender_prob) -> dict:
    if gender_prob is None:
        return dict.fromkeys(keys_of_head("gender"))
    head = _head_metrics(gender_true, gender_prob, len(GENDER_CLASSES))
    fm_rows = np.isin(head["true"], FM_CLASSES)
    fm_columns = list(FM_CLASSES)
    # Binary protocol: a 'u' prediction is not allowed to count, so argmax over the f and m columns only.
    fm_pred = np.asarray(fm_columns)[head["scores"][fm_rows][:, fm_columns].argmax(axis=1)] if fm_rows.any() else None
    return {
        "gender_acc": head["acc"],
        "gender_acc_fm": float(np.mean(fm_pred == head["true"][fm_rows])) if fm_pred is not None else None,
        "gender_f1": head["f1"],
        "gender_confusion": head["confusion"],
        "gender_per_class": head["per_class"],
        "gender_n": head["n"],
        "gender_n_fm": int(fm_rows.sum()),
        "gender_ece": head["ece"],
        **gender_group_scores(head["true"][fm_rows], fm_pred if fm_pred is not None else np.zeros(0, dtype=np.int64)),
    }


def compute_metrics(age_true, age_prob, gender_true, gender_prob, race=None) -> dict:
    """All metrics of one evaluation.

    *_true: class indices (-1 = no label, ignored for that head); *_prob: (N, classes) probabilities
    or logits (only the argmax matters for accuracies; logits are softmaxed for ECE), or None when the
    task has no such head (its keys are then None). Accuracies are fractions 0-1; confusion rows are
    the true class; per_class lists recall (None for a class without rows). age_one_off counts
    predictions at most one class index away. gender_acc_fm uses only rows labelled f or m and the
    argmax over the f and m scores.

    Per group (age_group_scores, gender_group_scores): age_per_class_n and age_per_class_one_off beside
    age_per_class, the balanced (mean over the age groups that have faces) exact and 1-off accuracies,
    and gender_acc_female / gender_acc_male on the f/m protocol. `race` (one name per row, None or ""
    where unknown: UTKFace's race field) adds the keys per_race and race_gap (race_scores; None when no row
    has a race); without it they are absent, so the evaluations of Adience runs keep their keys.
    """
    metrics = {**_age_keys(age_true, age_prob), **_gender_keys(gender_true, gender_prob)}
    if race is not None:
        age_pred = as_numpy(age_prob).argmax(axis=1) if age_prob is not None else None
        gender_pred = None
        if gender_prob is not None:
            columns = list(FM_CLASSES)
            gender_pred = np.asarray(columns)[as_numpy(gender_prob)[:, columns].argmax(axis=1)]
        metrics.update(race_scores(race, age_true, age_pred, gender_true, gender_pred))
    return metrics


def expected_calibration_error(prob, true, n_bins: int = 15) -> float | None:
    """ECE: the row-weighted mean over equal-width confidence bins of |accuracy - mean confidence|.

    `prob` is (N, C) probabilities; rows with true == -1 are ignored; None when no row is labelled.
    """
    true, prob = _labelled(true, prob)
    if not len(true):
        return None
    prob = prob.astype(np.float64)
    confidence = prob.max(axis=1)
    correct = (prob.argmax(axis=1) == true).astype(np.float64)
    # Right-closed bins (0, 1/n], ..., with confidence 0 put in the first.
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def _nll(logits: np.ndarray, true: np.ndarray, temperature: float) -> float:
    from scipy.special import log_softmax

    return float(-log_softmax(logits / temperature, axis=1)[np.arange(len(true)), true].mean())


def negative_log_likelihood(logits, true, temperature: float = 1.0) -> float | None:
    """Mean NLL of softmax(logits / T) over the labelled rows (true != -1); None when none is labelled."""
    true, logits = _labelled(true, logits)
    return _nll(logits.astype(np.float64), true, temperature) if len(true) else None


def fit_temperature(logits, true) -> float:
    """The temperature T that minimises the NLL of softmax(logits / T) on labelled rows.

    Searched on log T within TEMPERATURE_RANGE (so a fit is never sharper than 0.5 or flatter than 5);
    rows with true == -1 are ignored; 1.0 when none is labelled. See choose_temperature for when to use it.
    """
    true, logits = _labelled(true, logits)
    if not len(true):
        return 1.0
    from scipy.optimize import minimize_scalar

    logits = logits.astype(np.float64)
    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    result = minimize_scalar(lambda log_t: _nll(logits, true, math.exp(log_t)), bounds=(low, high), method="bounded",
                             options={"xatol": 1e-5})
    return float(min(max(math.exp(result.x), TEMPERATURE_RANGE[0]), TEMPERATURE_RANGE[1]))


def choose_temperature(logits, true, min_rows: int = MIN_CALIBRATION_ROWS) -> dict:
    """The temperature of one head from its validation logits, and why.

    T stays 1.0 (applied False) when fewer than `min_rows` rows are labelled, or when the fitted T
    does not lower the validation NLL; otherwise it is fit_temperature's T (within TEMPERATURE_RANGE).
    Returns {"temperature", "applied", "reason", "val_rows", "val_nll_before", "val_nll_after"}.
    """
    labelled, scores = _labelled(true, logits)
    rows = int(len(labelled))
    before = _nll(scores.astype(np.float64), labelled, 1.0) if rows else None
    result = {"temperature": 1.0, "applied": False, "val_rows": rows, "val_nll_before": before,
              "val_nll_after": before}
    if rows < min_rows:
        return {**result, "reason": f"skipped: {rows} labelled validation rows, fewer than {min_rows}"}
    temperature = fit_temperature(scores, labelled)
    after = _nll(scores.astype(np.float64), labelled, temperature)
    if not after < before - 1e-6:
        return {**result, "reason": "skipped: the fit did not lower the validation NLL"}
    low, high = TEMPERATURE_RANGE
    bound = " (at the bound of the allowed range)" if math.isclose(temperature, low, rel_tol=1e-3) or math.isclose(
        temperature, high, rel_tol=1e-3) else ""
    return {**result, "temperature": temperature, "applied": True, "val_nll_after": after,
            "reason": f"fitted on {rows} validation rows{bound}"}


def softmax_with_temperature(logits, temperature: float):
    """softmax(logits / T) over the last axis; a torch tensor in gives a tensor out, else a numpy array."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if is_tensor(logits):
        import torch

        return torch.softmax(logits / temperature, dim=-1)
    from scipy.special import softmax

    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)


def summarize_folds(per_fold: dict[int, dict]) -> dict:
    """Mean, standard deviation and per-fold values of each SUMMARY_KEYS metric (the registry's) over folds.

    std is the sample standard deviation (ddof=1) over the folds that have a value, 0.0 for one
    fold; None values are skipped (mean and std None when no fold has the metric). per_fold keys are
    the fold numbers as strings (JSON object keys), values as given (None kept).
    """
    summary: dict = {"n_folds": len(per_fold)}
    for key in SUMMARY_KEYS:
        by_fold = {str(fold): metrics.get(key) for fold, metrics in sorted(per_fold.items())}
        values = np.array([v for v in by_fold.values() if v is not None], dtype=np.float64)
        summary[key] = {
            "mean": float(values.mean()) if len(values) else None,
            "std": (float(values.std(ddof=1)) if len(values) > 1 else 0.0) if len(values) else None,
            "per_fold": {fold: (float(v) if v is not None else None) for fold, v in by_fold.items()},
        }
    return summary
