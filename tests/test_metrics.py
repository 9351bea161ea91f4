"""Metrics on small tables of cases whose answers are worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.special import log_softmax

from audience.train.metrics import (
    MIN_CALIBRATION_ROWS,
    TEMPERATURE_RANGE,
    choose_temperature,
    compute_metrics,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    softmax_with_temperature,
    summarize_folds,
)


def one_hot(indices, n_classes: int, confidence: float = 0.9) -> np.ndarray:
    """Probabilities with `confidence` on each index and the rest spread evenly."""
    prob = np.full((len(indices), n_classes), (1 - confidence) / (n_classes - 1))
    prob[np.arange(len(indices)), indices] = confidence
    return prob


@pytest.mark.parametrize(
    ("true", "pred", "exact", "one_off"),
    [
        ([0, 1, 2, 3], [0, 1, 2, 3], 1.0, 1.0),
        ([0, 1, 2, 3], [1, 2, 3, 4], 0.0, 1.0),  # every prediction one class off
        ([0, 7, 4, 4], [2, 5, 4, 6], 0.25, 0.25),  # two classes off is not one-off
        ([7, 0], [6, 1], 0.0, 1.0),  # neighbours at both ends of the scale
    ],
)
def test_age_exact_and_one_off(true, pred, exact, one_off):
    metrics = compute_metrics(np.array(true), one_hot(pred, 8), None, None)
    assert metrics["age_exact"] == pytest.approx(exact)
    assert metrics["age_one_off"] == pytest.approx(one_off)
    assert metrics["age_n"] == len(true)


def test_unlabelled_rows_are_ignored_per_head():
    age_true = np.array([0, -1, 2, -1])
    gender_true = np.array([-1, 1, 1, 0])
    # The unlabelled age rows are predicted wrong on purpose: they must not count.
    age_prob = one_hot([0, 5, 2, 7], 8)
    gender_prob = one_hot([2, 1, 0, 0], 3)
    metrics = compute_metrics(age_true, age_prob, gender_true, gender_prob)
    assert metrics["age_n"] == 2 and metrics["age_exact"] == 1.0
    assert metrics["gender_n"] == 3 and metrics["gender_acc"] == pytest.approx(2 / 3)


def test_gender_fm_accuracy_uses_only_fm_rows_and_fm_columns():
    gender_true = np.array([0, 1, 2, 1])
    # Row 0: argmax is u, but f beats m, so right under f/m. Row 2 (true u) is left out of acc_fm.
    gender_prob = np.array([[0.3, 0.1, 0.6], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    metrics = compute_metrics(np.full(4, -1), None, gender_true, gender_prob)
    assert metrics["gender_acc"] == pytest.approx(2 / 4)
    assert metrics["gender_acc_fm"] == pytest.approx(2 / 3)
    assert metrics["gender_n_fm"] == 3
    assert metrics["gender_confusion"] == [[0, 0, 1], [1, 1, 0], [0, 0, 1]]
    assert metrics["gender_per_class"] == [0.0, 0.5, 1.0]


def test_confusion_rows_are_true_classes_and_recall_is_none_without_rows():
    metrics = compute_metrics(np.array([0, 0, 1]), one_hot([0, 1, 1], 8), None, None)
    confusion = np.array(metrics["age_confusion"])
    assert confusion.shape == (8, 8)
    assert confusion[0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert confusion[1, 1] == 1 and confusion.sum() == 3
    assert metrics["age_per_class"][:2] == [0.5, 1.0]
    assert metrics["age_per_class"][2:] == [None] * 6
    # Macro F1 over the classes present: class 0 has F1 2/3, class 1 has F1 2/3.
    assert metrics["age_f1"] == pytest.approx(2 / 3)


def test_logits_give_the_same_accuracies_as_probabilities():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 8)) * 3
    true = rng.integers(0, 8, size=50)
    from_logits = compute_metrics(true, logits, None, None)
    from_probs = compute_metrics(true, softmax_with_temperature(logits, 1.0), None, None)
    for key in ("age_exact", "age_one_off", "age_f1", "age_confusion"):
        assert from_logits[key] == from_probs[key]
    assert from_logits["age_ece"] == pytest.approx(from_probs["age_ece"])


def test_missing_head_gives_none_and_everything_is_json():
    metrics = compute_metrics(np.array([1, 2]), torch.tensor(one_hot([1, 2], 8)), np.array([0, 1]), None)
    assert metrics["gender_acc"] is None and metrics["gender_confusion"] is None
    assert metrics["age_exact"] == 1.0
    json.dumps(metrics, allow_nan=False)


def test_head_without_labelled_rows_has_no_accuracy():
    metrics = compute_metrics(np.array([-1, -1]), one_hot([1, 2], 8), None, None)
    assert metrics["age_n"] == 0 and metrics["age_exact"] is None and metrics["age_one_off"] is None
    json.dumps(metrics, allow_nan=False)


def test_ece_is_zero_when_calibrated_and_large_when_overconfident():
    # 10 rows at confidence 0.8, 8 of them right: calibrated.
    true = np.zeros(10, dtype=int)
    pred = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(one_hot(pred, 2, 0.8), true) == pytest.approx(0.0, abs=1e-12)
    # Same predictions at confidence 0.99: ECE = |0.8 - 0.99|.
    assert expected_calibration_error(one_hot(pred, 2, 0.99), true) == pytest.approx(0.19)


def test_ece_ignores_unlabelled_rows_and_is_none_without_any():
    prob = one_hot([0, 1], 2, 0.8)
    assert expected_calibration_error(prob, np.array([0, -1])) == pytest.approx(0.2)
    assert expected_calibration_error(prob, np.array([-1, -1])) is None


def nll(logits, true, temperature):
    return -log_softmax(logits / temperature, axis=1)[np.arange(len(true)), true].mean()


def calibrated_logits(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true class distribution (labels drawn from it), so the best T is 1."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 8)) * 2
    prob = softmax_with_temperature(logits, 1.0)
    true = np.array([rng.choice(8, p=row) for row in prob])
    return logits, true


def test_fit_temperature_recovers_the_scale_of_overconfident_logits():
    logits, true = calibrated_logits()
    assert fit_temperature(logits, true) == pytest.approx(1.0, abs=0.1)
    overconfident = logits * 2
    temperature = fit_temperature(overconfident, true)
    assert temperature == pytest.approx(2.0, rel=0.08)
    assert nll(overconfident, true, temperature) < nll(overconfident, true, 1.0)


def test_fit_temperature_ignores_unlabelled_rows_and_defaults_to_one():
    logits, true = calibrated_logits(n=2000, seed=1)
    with_unlabelled = np.concatenate([logits * 2, np.full((50, 8), 0.0)])
    true_unlabelled = np.concatenate([true, np.full(50, -1)])
    assert fit_temperature(with_unlabelled, true_unlabelled) == pytest.approx(fit_temperature(logits * 2, true))
    assert fit_temperature(logits[:3], np.full(3, -1)) == 1.0
    temperature = fit_temperature(torch.tensor(logits * 2), torch.tensor(true))
    assert 1.7 < temperature < 2.3


def test_fit_temperature_stays_within_the_allowed_range():
    logits, true = calibrated_logits(n=2000, seed=2)
    assert fit_temperature(logits * 20, true) == pytest.approx(TEMPERATURE_RANGE[1], rel=1e-3)  # unbounded: 20
    assert fit_temperature(logits / 10, true) == pytest.approx(TEMPERATURE_RANGE[0], rel=1e-3)  # unbounded: 0.1


def test_choose_temperature_skips_a_small_validation_set():
    # The bug: 40 validation rows of a barely trained model gave T = 0.11 and a worse test ECE.
    logits, true = calibrated_logits(n=4000, seed=3)
    small = choose_temperature(logits[:40] / 5, true[:40])
    assert small["temperature"] == 1.0 and small["applied"] is False and small["val_rows"] == 40
    assert small["reason"] == f"skipped: 40 labelled validation rows, fewer than {MIN_CALIBRATION_ROWS}"
    unlabelled = np.concatenate([true[:60], np.full(100, -1)])
    assert choose_temperature(logits[:160], unlabelled)["val_rows"] == 60  # only labelled rows count


def test_choose_temperature_fits_a_large_validation_set_and_never_raises_its_nll():
    logits, true = calibrated_logits(n=4000, seed=4)
    val, test = slice(0, 1000), slice(1000, None)
    choice = choose_temperature(logits[val] * 2, true[val])  # overconfident by 2
    assert choice["applied"] is True and choice["temperature"] == pytest.approx(2.0, rel=0.15)
    assert choice["val_nll_after"] < choice["val_nll_before"]
    assert choice["val_nll_before"] == pytest.approx(negative_log_likelihood(logits[val] * 2, true[val]))
    before = expected_calibration_error(softmax_with_temperature(logits[test] * 2, 1.0), true[test])
    after = expected_calibration_error(softmax_with_temperature(logits[test] * 2, choice["temperature"]), true[test])
    assert after < before  # it helps held-out rows too
    # Already calibrated: the fit cannot lower the NLL (enough), and T stays 1.
    flat = choose_temperature(np.zeros((200, 8)), np.arange(200) % 8)
    assert flat["temperature"] == 1.0 and flat["applied"] is False and "did not lower" in flat["reason"]


def test_softmax_with_temperature_keeps_the_type_and_flattens():
    logits = np.array([[2.0, 0.0, -2.0]])
    sharp, flat = softmax_with_temperature(logits, 1.0), softmax_with_temperature(logits, 4.0)
    assert isinstance(sharp, np.ndarray) and sharp.sum() == pytest.approx(1.0)
    assert flat.max() < sharp.max()
    as_tensor = softmax_with_temperature(torch.tensor(logits), 4.0)
    assert isinstance(as_tensor, torch.Tensor)
    assert np.allclose(as_tensor.numpy(), flat)
    with pytest.raises(ValueError):
        softmax_with_temperature(logits, 0.0)


def test_summarize_folds_uses_sample_std_and_skips_none():
    per_fold = {
        0: {"age_exact": 0.5, "age_one_off": 0.8, "gender_acc": None},
        1: {"age_exact": 0.7, "age_one_off": 0.9, "gender_acc": None},
        2: {"age_exact": 0.6, "age_one_off": None, "gender_acc": None},
    }
    summary = summarize_folds(per_fold)
    assert summary["n_folds"] == 3
    assert summary["age_exact"]["mean"] == pytest.approx(0.6)
    assert summary["age_exact"]["std"] == pytest.approx(0.1)  # sample std (ddof=1)
    assert summary["age_exact"]["per_fold"] == {"0": 0.5, "1": 0.7, "2": 0.6}
    assert summary["age_one_off"]["mean"] == pytest.approx(0.85)
    assert summary["age_one_off"]["per_fold"]["2"] is None
    assert summary["gender_acc"] == {"mean": None, "std": None, "per_fold": {"0": None, "1": None, "2": None}}
    json.dumps(summary, allow_nan=False)


def test_summarize_one_fold_has_zero_std():
    summary = summarize_folds({3: compute_metrics(np.array([0, 1]), one_hot([0, 0], 8), None, None)})
    assert summary["age_exact"] == {"mean": 0.5, "std": 0.0, "per_fold": {"3": 0.5}}
    assert summary["age_ece"]["mean"] is not None
