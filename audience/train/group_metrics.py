"""Per-group accuracy: who the model fails. Each age group (exact and 1-off), women and men (the f/m
protocol), each race where the data has one (UTKFace), the balanced means and the gap between races,
from hard predictions (class indices), from a confusion matrix, or pooled over folds; and the one
per-group table that evaluate, the Compare tab, the model card and the accuracy benchmark show.

Pure functions of arrays and metrics dicts; results are JSON-serialisable. Class index -1 (NO_CLASS)
means "no label" and is left out.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from audience.labels import AGE_CLASSES, GENDER_CLASSES, NO_CLASS

# The classes of the f/m-only gender accuracy, the benchmark's binary protocol.
FM_CLASSES = (GENDER_CLASSES.index("f"), GENDER_CLASSES.index("m"))


def is_tensor(values) -> bool:
    """A torch tensor: one exists only once torch was imported, so this never imports it (the app starts without)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(values, torch.Tensor)


def as_numpy(values) -> np.ndarray:
    """`values` (a tensor, array or list) as a numpy array."""
    if is_tensor(values):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _mean_of(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def age_group_scores(true, pred) -> dict:
    """Per age group (labels.AGE_CLASSES order) of hard predictions (class indices; rows with true -1 are
    left out): age_per_class (exact accuracy, the recall), age_per_class_one_off, age_per_class_n, and
    their means over the groups that have faces, balanced_age_exact and balanced_age_one_off. A group
    without a face has n 0 and None accuracies; all accuracies None when no row is labelled.
    """
    true = as_numpy(true).astype(np.int64).reshape(-1)
    pred = as_numpy(pred).astype(np.int64).reshape(-1)
    keep = true != NO_CLASS
    true, pred = true[keep], pred[keep]
    n = [int((true == group).sum()) for group in range(len(AGE_CLASSES))]
    exact = [float(np.mean(pred[true == g] == g)) if n[g] else None for g in range(len(AGE_CLASSES))]
    one_off = [float(np.mean(np.abs(pred[true == g] - g) <= 1)) if n[g] else None for g in range(len(AGE_CLASSES))]
    return {"age_per_class": exact, "age_per_class_one_off": one_off, "age_per_class_n": n,
            "balanced_age_exact": _mean_of(exact), "balanced_age_one_off": _mean_of(one_off)}


def gender_group_scores(true, pred) -> dict:
    """Gender accuracy of women and of men (rows labelled f, resp. m; other rows left out) from hard f/m
    predictions: gender_acc_female, gender_acc_male (None without such a face), gender_n_female, gender_n_male.
    """
    true = as_numpy(true).astype(np.int64).reshape(-1)
    pred = as_numpy(pred).astype(np.int64).reshape(-1)
    scores = {}
    for name, code in (("female", GENDER_CLASSES.index("f")), ("male", GENDER_CLASSES.index("m"))):
        rows = true == code
        scores[f"gender_acc_{name}"] = float(np.mean(pred[rows] == code)) if rows.any() else None
        scores[f"gender_n_{name}"] = int(rows.sum())
    return scores


# The accuracies of each race that race_gap compares (best minus worst race).
RACE_GAP_KEYS: tuple[str, ...] = ("age_exact", "age_one_off", "gender_acc_fm")


def _race_row(age_true, age_pred, gender_true, gender_pred) -> dict:
    row: dict = {"n": int(len(age_true) if age_true is not None else len(gender_true))}
    if age_pred is not None:
        keep = age_true != NO_CLASS
        diff = np.abs(age_pred[keep] - age_true[keep])
        row.update(n_age=int(keep.sum()), age_exact=float(np.mean(diff == 0)) if keep.any() else None,
                   age_one_off=float(np.mean(diff <= 1)) if keep.any() else None)
    if gender_pred is not None:
        fm = np.isin(gender_true, FM_CLASSES)
        row.update(n_gender=int(fm.sum()),
                   gender_acc_fm=float(np.mean(gender_pred[fm] == gender_true[fm])) if fm.any() else None,
                   **gender_group_scores(gender_true[fm], gender_pred[fm]))
    return row


def _race_names(race) -> np.ndarray:
    """One race name per row as strings, "" where the row has none (None, "" or NaN)."""
    return np.array(["" if r is None or (isinstance(r, float) and math.isnan(r)) else str(r)
                     for r in as_numpy(race).reshape(-1).tolist()], dtype=object)


def race_scores(race, age_true, age_pred, gender_true, gender_pred) -> dict:
    """Accuracy per race from hard predictions (age class indices; gender f/m indices, the f/m protocol),
    either head's predictions None when the task has no such head.

    Returns {"per_race": {race: {n, n_age, age_exact, age_one_off, n_gender, gender_acc_fm,
    gender_acc_female, gender_acc_male, gender_n_female, gender_n_male}} sorted by race name, "race_gap":
    {key: best minus worst race, for each RACE_GAP_KEYS accuracy that two or more races have}}; rows
    without a race (None, "" or NaN) are left out; both None when no row has one.
    """
    names = _race_names(race)
    age_true = as_numpy(age_true).astype(np.int64).reshape(-1)
    gender_true = as_numpy(gender_true).astype(np.int64).reshape(-1)
    age_pred = None if age_pred is None else as_numpy(age_pred).astype(np.int64).reshape(-1)
    gender_pred = None if gender_pred is None else as_numpy(gender_pred).astype(np.int64).reshape(-1)
    races = sorted({name for name in names if name})
    if not races:
        return {"per_race": None, "race_gap": None}
    per_race = {}
    for name in races:
        rows = names == name
        per_race[name] = _race_row(age_true[rows], None if age_pred is None else age_pred[rows],
                                   gender_true[rows], None if gender_pred is None else gender_pred[rows])
    return {"per_race": per_race, "race_gap": _race_gap(per_race)}


def _race_gap(per_race: dict) -> dict | None:
    """Best minus worst race of each RACE_GAP_KEYS accuracy that two or more races have; None when none has."""
    gap = {}
    for key in RACE_GAP_KEYS:
        values = [row[key] for row in per_race.values() if row.get(key) is not None]
        if len(values) > 1:
            gap[key] = float(max(values) - min(values))
    return gap or None


def race_gap_at_age_mix(race, age_true, age_pred) -> float | None:
    """Best minus worst race in age exact accuracy with the age mix held the same for every race: each race's
    accuracy within each age group, weighted by that group's share of all the labelled faces (the groups a race
    has no face of are left out and the other weights scaled up). The plain race gap also measures how each
    race's faces are spread over easy and hard age groups (UTKFace's Asian faces are 19 % babies, its Black
    faces 1 %); this one asks whether the same age is read as well on every race. None with fewer than two
    races."""
    names = _race_names(race)
    age_true = as_numpy(age_true).astype(np.int64).reshape(-1)
    age_pred = as_numpy(age_pred).astype(np.int64).reshape(-1)
    labelled = (age_true != NO_CLASS) & (names != "")
    if not labelled.any():
        return None
    weights = np.bincount(age_true[labelled], minlength=len(AGE_CLASSES)) / labelled.sum()
    accuracies = []
    for name in sorted(set(names[labelled])):
        rows = labelled & (names == name)
        per_group = age_group_scores(age_true[rows], age_pred[rows])["age_per_class"]
        present = np.array([value is not None for value in per_group])
        exact = np.array([value or 0.0 for value in per_group])
        accuracies.append(float(np.sum(weights[present] * exact[present]) / weights[present].sum()))
    return float(max(accuracies) - min(accuracies)) if len(accuracies) > 1 else None


def score_predictions(age_true, age_pred, gender_true, gender_pred, race=None) -> dict:
    """The accuracies of hard predictions (a system that answers a class, not scores: the benchmark's
    peer), under the same definitions as compute_metrics: age_exact, age_one_off, n_age, gender_acc_fm
    (gender predictions are f or m), n_gender, the per-group keys of age_group_scores and
    gender_group_scores, and per_race / race_gap (race_scores) only when `race` is given.
    """
    age_true = as_numpy(age_true).astype(np.int64).reshape(-1)
    age_pred = as_numpy(age_pred).astype(np.int64).reshape(-1)
    gender_true = as_numpy(gender_true).astype(np.int64).reshape(-1)
    gender_pred = as_numpy(gender_pred).astype(np.int64).reshape(-1)
    ages = age_true != NO_CLASS
    diff = np.abs(age_pred[ages] - age_true[ages])
    fm = np.isin(gender_true, FM_CLASSES)
    scores = {
        "age_exact": float(np.mean(diff == 0)) if ages.any() else None,
        "age_one_off": float(np.mean(diff <= 1)) if ages.any() else None,
        "n_age": int(ages.sum()),
        "gender_acc_fm": float(np.mean(gender_pred[fm] == gender_true[fm])) if fm.any() else None,
        "n_gender": int(fm.sum()),
        **age_group_scores(age_true, age_pred),
        **gender_group_scores(gender_true[fm], gender_pred[fm]),
    }
    if race is not None:
        scores.update(race_scores(race, age_true, age_pred, gender_true, gender_pred))
    return scores


def age_groups_from_confusion(confusion) -> dict | None:
    """age_group_scores' keys from an age confusion matrix (rows: true group, columns: predicted), the way
    to read runs and checkpoints that stored only the matrix; None when it is not an 8 x 8 matrix."""
    try:
        matrix = np.asarray(confusion, dtype=np.int64)
    except (TypeError, ValueError):
        return None
    groups = len(AGE_CLASSES)
    if matrix.shape != (groups, groups):
        return None
    n = [int(v) for v in matrix.sum(axis=1)]
    exact = [float(matrix[g, g] / n[g]) if n[g] else None for g in range(groups)]
    one_off = [float(matrix[g, max(0, g - 1):g + 2].sum() / n[g]) if n[g] else None for g in range(groups)]
    return {"age_per_class": exact, "age_per_class_one_off": one_off, "age_per_class_n": n,
            "balanced_age_exact": _mean_of(exact), "balanced_age_one_off": _mean_of(one_off)}


def _pooled(parts: list[tuple[float | None, int | None]]) -> tuple[float | None, int]:
    """The accuracy over the union of evaluations from (accuracy, count) pairs, and the count."""
    known = [(acc, n) for acc, n in parts if isinstance(acc, int | float) and isinstance(n, int) and n > 0]
    total = sum(n for _, n in known)
    return (float(sum(acc * n for acc, n in known) / total) if total else None), total


def pool_group_metrics(evaluations: list[dict]) -> dict:
    """One metrics dict with the per-group keys of several evaluations of disjoint faces (the test folds of
    a run): age groups from the summed confusion matrices, every other accuracy weighted by its count.
    Keys an evaluation lacks (an older run) are left out of the pool, so they come back None or absent."""
    evaluations = [e for e in evaluations if isinstance(e, dict)]
    pooled: dict = {}
    matrices = [np.asarray(e["age_confusion"]) for e in evaluations if e.get("age_confusion") is not None]
    if matrices and len({m.shape for m in matrices}) == 1:
        summed = np.sum(matrices, axis=0)
        groups = age_groups_from_confusion(summed)
        if groups:
            total = int(summed.sum())
            within_one = sum(summed[g, max(0, g - 1):g + 2].sum() for g in range(len(summed)))
            pooled.update(groups, age_n=total, age_exact=float(np.trace(summed) / total) if total else None,
                          age_one_off=float(within_one / total) if total else None)
    for key, count in (("gender_acc_fm", "gender_n_fm"), ("gender_acc_female", "gender_n_female"),
                       ("gender_acc_male", "gender_n_male")):
        if any(key in e for e in evaluations):
            pooled[key], pooled[count] = _pooled([(e.get(key), e.get(count)) for e in evaluations])
    races = [e["per_race"] for e in evaluations if isinstance(e.get("per_race"), dict)]
    if races:
        per_race = {}
        for name in sorted({name for table in races for name in table}):
            rows = [table[name] for table in races if isinstance(table.get(name), dict)]
            row = {"n": int(sum(r.get("n") or 0 for r in rows))}
            for key, count in (("age_exact", "n_age"), ("age_one_off", "n_age"), ("gender_acc_fm", "n_gender")):
                row[key], row[count] = _pooled([(r.get(key), r.get(count)) for r in rows])
            for key, count in (("gender_acc_female", "gender_n_female"), ("gender_acc_male", "gender_n_male")):
                row[key], row[count] = _pooled([(r.get(key), r.get(count)) for r in rows])
            per_race[name] = row
        pooled["per_race"], pooled["race_gap"] = per_race, _race_gap(per_race)
    return pooled


# What the per-group table says where a figure was not recorded (older runs and checkpoints).
NOT_RECORDED = "{what}: not recorded (scored before per-group accuracy)"
NO_GROUP_DATA = ("no per-group figures: this {what} was scored before per-group accuracy was recorded "
                 "(re-evaluate it with python -m audience.cli.evaluate ... --json)")


# The columns of the per-group table: its accuracies (fractions) and their headers.
GROUP_COLUMNS: tuple[tuple[str, str], ...] = (("age_exact", "age exact"), ("age_one_off", "age 1-off"),
                                              ("gender_acc_fm", "gender f/m"))


def has_group_data(metrics: dict | None) -> bool:
    """Whether `metrics` hold any per-group figure (the age groups' counts or matrix, women/men, races)."""
    if not isinstance(metrics, dict):
        return False
    return (isinstance(metrics.get("age_per_class_n"), list) or age_groups_from_confusion(
        metrics.get("age_confusion")) is not None or metrics.get("gender_acc_female") is not None
        or isinstance(metrics.get("per_race"), dict))


def group_table(metrics: dict | None) -> list[dict]:
    """The per-group table of one evaluation (or pool): one row per age group, the balanced mean of the
    groups, women, men, each race and the race gap where known, then all faces.

    Each row is {"group", "n", "age_exact", "age_one_off", "gender_acc_fm"} (fractions; None where that
    row has no such figure). The age groups come from age_per_class_n/age_per_class/age_per_class_one_off,
    else from the age confusion matrix (older runs). [] when `metrics` hold no per-group figure.
    """
    if not has_group_data(metrics):
        return []
    groups = metrics if isinstance(metrics.get("age_per_class_n"), list) else (
        age_groups_from_confusion(metrics.get("age_confusion")) or {})
    rows = []

    def row(group, n=None, age_exact=None, age_one_off=None, gender_acc_fm=None):
        rows.append({"group": group, "n": n, "age_exact": age_exact, "age_one_off": age_one_off,
                     "gender_acc_fm": gender_acc_fm})

    if isinstance(groups.get("age_per_class_n"), list):
        one_off = groups.get("age_per_class_one_off") or [None] * len(AGE_CLASSES)
        exact = groups.get("age_per_class") or [None] * len(AGE_CLASSES)
        for index, name in enumerate(AGE_CLASSES):
            row(f"age {name}", groups["age_per_class_n"][index], exact[index], one_off[index])
        with_faces = sum(1 for n in groups["age_per_class_n"] if n)
        row(f"age, mean of the {with_faces} groups with faces (balanced)", None, groups.get("balanced_age_exact"),
            groups.get("balanced_age_one_off"))
    if metrics.get("gender_acc_female") is not None or metrics.get("gender_acc_male") is not None:
        row("women", metrics.get("gender_n_female"), gender_acc_fm=metrics.get("gender_acc_female"))
        row("men", metrics.get("gender_n_male"), gender_acc_fm=metrics.get("gender_acc_male"))
    elif metrics.get("gender_acc_fm") is not None:
        row(NOT_RECORDED.format(what="women, men"))
    if isinstance(metrics.get("per_race"), dict):
        for name, scores in metrics["per_race"].items():
            row(f"race {name}", scores.get("n"), scores.get("age_exact"), scores.get("age_one_off"),
                scores.get("gender_acc_fm"))
        gap = metrics.get("race_gap") or {}
        row("race gap (best - worst)", None, *(gap.get(key) for key, _ in GROUP_COLUMNS))
    row("all faces", metrics.get("age_n", metrics.get("n_age")), metrics.get("age_exact"),
        metrics.get("age_one_off"), metrics.get("gender_acc_fm"))
    return rows


def format_group_table(rows: list[dict], columns=None) -> list[list[str]]:
    """group_table rows as text cells: group, n, then each accuracy as a percentage ('-' where none).
    `columns` (default GROUP_COLUMNS) chooses the accuracies, as (key, header) pairs."""
    from audience.registry import format_percent

    columns = columns or GROUP_COLUMNS
    return [[r["group"], "-" if r["n"] is None else str(r["n"]), *(format_percent(r[key]) for key, _ in columns)]
            for r in rows]
