"""Train / validation / test splits of the face table (pure functions of the table).

Two protocols:

- ``folds`` (the honest one, default): test fold k is the official Adience fold k; training uses
  the other four folds; the validation set for model selection and calibration is a group of
  whole albums (``user_id``) drawn from the training folds, so no person is in two of the three
  sets (the official folds are already subject-exclusive).
- ``random`` (the seed's step 2, kept to show the difference): a random ``val_fraction`` of the
  labelled images is validation and *also* the reported test set; the rest is training. The same
  people, and often the same photo, are on both sides, so its numbers are inflated and every
  result of it is marked ``leaky``. Its "fold" k only picks a different random draw.

Indices are positions into ``data.faces`` (0..len-1). Rows with no usable label for the task are
left out of all three sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from audience.data.adience import N_FOLDS, AdienceData
from audience.errors import AudienceError, quoted
from audience.labels import NO_CLASS, check_task

PROTOCOLS: tuple[str, ...] = ("folds", "random")


@dataclass(frozen=True)
class Split:
    """Index arrays into data.faces; `leaky` when train and test share people (protocol random)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    protocol: str
    test_fold: int
    leaky: bool

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _faces_of(data_or_faces: AdienceData | pd.DataFrame) -> pd.DataFrame:
    return data_or_faces.faces if isinstance(data_or_faces, AdienceData) else data_or_faces


def labelled_mask(faces: pd.DataFrame, task: str = "age+gender") -> np.ndarray:
    """Rows that carry at least one label the task trains on."""
    mask = np.zeros(len(faces), dtype=bool)
    for head in check_task(task):
        mask |= faces[f"{head}_class"].to_numpy() != NO_CLASS
    return mask


def _pick_groups(groups: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask over rows selecting whole groups, about `fraction` of the rows.

    Albums range from 1 to ~750 faces, so drawing a fraction of *groups* (GroupShuffleSplit)
    would give a validation set anywhere between 2 % and 25 % of the images; groups are instead
    taken in random order until the image count reaches the target.
    """
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if len(names) < 2:
        raise AudienceError(
            "The training folds hold a single album (user_id), so no subject-exclusive validation set can be drawn."
        )
    target = fraction * len(groups)
    chosen = np.zeros(len(names), dtype=bool)
    total = 0
    for group in rng.permutation(len(names)):
        if total >= target or chosen.sum() == len(names) - 1:
            break
        chosen[group] = True
        total += counts[group]
    return chosen[inverse]


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 0.5:
        raise AudienceError(f"val_fraction must be between 0 and 0.5 (exclusive), got {val_fraction}.")


def _check_fold(test_fold: int) -> None:
    if test_fold not in range(N_FOLDS):
        raise AudienceError(f"Fold {test_fold} does not exist: folds are numbered 0 to {N_FOLDS - 1}.")


def fold_rows(data_or_faces: AdienceData | pd.DataFrame, fold: int, task: str = "age+gender") -> np.ndarray:
    """Indices of the faces of official fold `fold` labelled for the task (its test set under `folds`)."""
    faces = _faces_of(data_or_faces)
    _check_fold(fold)
    in_fold = faces["fold"].to_numpy() == fold
    if not in_fold.any():
        raise AudienceError(f"Fold {fold} is empty: the data has no face of fold_{fold}_data.txt with an image.")
    rows = np.flatnonzero(in_fold & labelled_mask(faces, task))
    if not len(rows):
        raise AudienceError(f"Fold {fold} has no face labelled for task {task}, so it cannot be tested.")
    return rows


def make_split(
    data_or_faces: AdienceData | pd.DataFrame,
    protocol: str = "folds",
    test_fold: int = 0,
    val_fraction: float = 0.1,
    seed: int = 0,
    task: str = "age+gender",
) -> Split:
    """The split of one fold under `protocol` ("folds" or "random"); see the module docstring.

    Raises AudienceError (one sentence) for an unknown protocol or fold, an empty fold, or a fold
    without rows labelled for the task.
    """
    faces = _faces_of(data_or_faces)
    if protocol not in PROTOCOLS:
        raise AudienceError(f"Unknown protocol {quoted(protocol)}: use one of {', '.join(PROTOCOLS)}.")
    _check_fold(test_fold)
    _check_fraction(val_fraction)
    labelled = labelled_mask(faces, task)
    rng = np.random.default_rng([seed, test_fold, 1 if protocol == "random" else 0])

    if protocol == "random":
        rows = np.flatnonzero(labelled)
        if len(rows) < 2:
            raise AudienceError(f"The data has {len(rows)} face(s) labelled for task {task}; a split needs at least 2.")
        # Sampled without replacement (the seed drew with replacement and got duplicates).
        n_val = max(1, round(val_fraction * len(rows)))
        val = np.sort(rng.choice(rows, size=n_val, replace=False))
        train = np.setdiff1d(rows, val)
        return Split(train=train, val=val, test=val.copy(), protocol=protocol, test_fold=test_fold, leaky=True)

    test = fold_rows(faces, test_fold, task)
    in_fold = faces["fold"].to_numpy() == test_fold
    pool = np.flatnonzero(~in_fold & labelled)
    if not len(pool):
        raise AudienceError(f"The folds other than {test_fold} have no face labelled for task {task} to train on.")
    in_val = _pick_groups(faces["user_id"].to_numpy()[pool], val_fraction, rng)
    return Split(train=pool[~in_val], val=pool[in_val], test=test, protocol=protocol, test_fold=test_fold, leaky=False)
