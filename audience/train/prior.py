"""The age prior correction: how much to undo the pull toward the biggest age group, chosen on validation.

A classifier trained on skewed groups (UTKFace: 22-32 is a third of the faces) answers "22-32" for a
15-20 or 45-53 face more often than it should. Logit adjustment (Menon et al. 2021) subtracts
tau * log prior(group) from the age scores: tau 0 is the plain answer, tau 1 the answer a test set with
every group equally common would reward. The prior is the training set's group frequencies; tau is
chosen on the validation set (`choose_tau`: the best sum of exact and balanced exact accuracy, so that
neither the overall nor the per-group figure is traded away alone) and stored in the checkpoint
(`age_prior`, `prior_tau`, `prior_choice`), which the network applies (AgeGenderNet.set_age_adjustment).
"""

from __future__ import annotations

import numpy as np

from audience.labels import AGE_CLASSES, NO_CLASS
from audience.model.age_years import prior_adjustment

TAUS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_CHOICE_ROWS = 100  # fewer labelled validation faces than this choose noise: tau stays 0

__all__ = ["TAUS", "age_head_metadata", "choose_tau", "prior_adjustment", "prior_metadata", "training_prior",
           "tau_scores"]


def training_prior(age_classes) -> list[float]:
    """The frequency of each age group among the labelled training faces (a count of 1 added to each, so
    that a group absent from the training set gets a small prior, never log 0)."""
    labels = np.asarray(age_classes, dtype=np.int64).reshape(-1)
    counts = np.bincount(labels[labels != NO_CLASS], minlength=len(AGE_CLASSES))[: len(AGE_CLASSES)] + 1.0
    return (counts / counts.sum()).tolist()


def tau_scores(scores, true, prior, tau: float) -> dict:
    """Exact, 1-off, balanced exact and per-group exact age accuracy (None for a group without faces) of the scores
    (N, 8) after the correction with `tau`, over the rows with an age group."""
    scores, true = np.asarray(scores, dtype=np.float64), np.asarray(true, dtype=np.int64).reshape(-1)
    keep = true != NO_CLASS
    scores, true = scores[keep], true[keep]
    if not len(true):
        return {"tau": tau, "n": 0, "age_exact": None, "age_one_off": None, "balanced_age_exact": None,
                "per_group": [None] * len(AGE_CLASSES)}
    predicted = (scores - prior_adjustment(prior, tau)).argmax(axis=1)
    per_group = [float(np.mean(predicted[true == group] == group)) if (true == group).any() else None
                 for group in range(len(AGE_CLASSES))]
    return {"tau": tau, "n": int(len(true)), "age_exact": float(np.mean(predicted == true)),
            "age_one_off": float(np.mean(np.abs(predicted - true) <= 1)),
            "balanced_age_exact": float(np.mean([r for r in per_group if r is not None])), "per_group": per_group}


def choose_tau(scores, true, prior, taus: tuple[float, ...] = TAUS) -> dict:
    """The correction chosen on validation: {"prior", "tau", "chosen_on", "table" (tau_scores of each tau)}.

    The tau with the best age_exact + balanced_age_exact wins (ties: the smaller tau); with fewer than
    MIN_CHOICE_ROWS labelled faces tau is 0 (no correction)."""
    table = [tau_scores(scores, true, prior, tau) for tau in taus]
    n = table[0]["n"]
    if n < MIN_CHOICE_ROWS:
        return {"prior": list(prior), "tau": 0.0, "chosen_on": f"none: {n} labelled validation faces, fewer than "
                f"{MIN_CHOICE_ROWS}", "table": table}
    best = max(table, key=lambda row: (row["age_exact"] + row["balanced_age_exact"], -row["tau"]))
    return {"prior": list(prior), "tau": float(best["tau"]), "chosen_on": f"validation ({n} faces)", "table": table}


def prior_metadata(record: dict | None) -> dict:
    """The checkpoint keys of a correction record: age_prior, prior_tau and prior_choice (how it was chosen)."""
    if not record:
        return {}
    return {"age_prior": record["prior"], "prior_tau": record["tau"],
            "prior_choice": {"chosen_on": record["chosen_on"], "table": record["table"]}}


def age_head_metadata(model, config) -> dict:
    """The checkpoint keys that say how the age head was built and trained: age_head, and for a years head the
    gap rule and the target's spread in years."""
    if getattr(model, "age_head", "groups") != "years":
        return {"age_head": "groups"}
    return {"age_head": "years", "gap_rule": model.gap_rule, "age_sigma": float(config.age_sigma)}
