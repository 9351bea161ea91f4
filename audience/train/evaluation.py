"""Evaluation with calibration: the trainer's end-of-fold test (`calibrate_heads`) and a saved
checkpoint on one fold or on every labelled image of a data root (`evaluate_checkpoint`, the same
pipeline the trainer's test used)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from audience.data.cache import CachedFaces, build_image_cache, cache_size_for
from audience.data.formats import read_dataset
from audience.data.images import read_image
from audience.data.roots import resolve_data_root
from audience.data.splits import fold_rows, labelled_mask
from audience.errors import AudienceError, quoted
from audience.labels import AGE_CLASSES
from audience.model.checkpoint import load_checkpoint_model, read_checkpoint_metadata
from audience.model.metadata import CheckpointMetadata, DatasetInfo
from audience.registry import EVALUATE_KEYS
from audience.train.loop import make_loader, predict_logits, resolve_device
from audience.train.metrics import (
    choose_temperature,
    compute_metrics,
    expected_calibration_error,
    negative_log_likelihood,
    softmax_with_temperature,
)


def calibrate_heads(val: dict, test: dict, heads: tuple[str, ...], calibrate: bool = True,
                    race=None) -> tuple[dict, dict, dict]:
    """Temperatures chosen on the validation logits (metrics.choose_temperature), the calibrated test
    metrics, and per head what was done with the ECE before and after.

    `val` and `test` are loop.predict_logits results; `race` (one name per test row, UTKFace) adds the
    accuracy per race to the metrics. Returns (temperature {head: T}, compute_metrics of
    the test set, calibration {head: choose_temperature's dict + test/val ECE before and after}).
    """
    temperature, calibration, probabilities = {}, {}, {}
    for head in heads:
        true_val, true_test = val[f"{head}_true"], test[f"{head}_true"]
        if calibrate:
            choice = choose_temperature(val[head], true_val)
        else:
            nll = negative_log_likelihood(val[head], true_val)
            choice = {"temperature": 1.0, "applied": False, "reason": "off (calibrate is false)",
                      "val_rows": int((np.asarray(true_val) >= 0).sum()), "val_nll_before": nll, "val_nll_after": nll}
        t = choice["temperature"]
        temperature[head] = t
        probabilities[head] = softmax_with_temperature(test[head], t)
        calibration[head] = {
            **choice,
            "test_ece_before": expected_calibration_error(softmax_with_temperature(test[head], 1.0), true_test),
            "test_ece_after": expected_calibration_error(probabilities[head], true_test),
            "val_ece_before": expected_calibration_error(softmax_with_temperature(val[head], 1.0), true_val),
            "val_ece_after": expected_calibration_error(softmax_with_temperature(val[head], t), true_val),
        }
    metrics = compute_metrics(test["age_true"], probabilities.get("age"), test["gender_true"],
                              probabilities.get("gender"), race=race)
    return temperature, metrics, calibration


def calibration_line(calibration: dict) -> str:
    """'age T 1.00 (skipped: ..., test ECE 0.044 -> 0.044); gender T ...' for logs."""
    parts = []
    for head, c in calibration.items():
        ece = "" if c["test_ece_before"] is None else \
            f", test ECE {c['test_ece_before']:.3f} -> {c['test_ece_after']:.3f}"
        parts.append(f"{head} T {c['temperature']:.2f} ({c['reason']}{ece})")
    return "; ".join(parts)


def _warnings(metadata: CheckpointMetadata, fold: int, data) -> list[str]:
    notes = []
    dataset = metadata.dataset or DatasetInfo()
    if metadata.protocol == "random" or metadata.leaky:
        notes.append("this checkpoint was trained with the leaky random split: every fold holds people it saw "
                     "in training, so these numbers are inflated")
    elif fold is None and (dataset.name == data.name or dataset.format == data.format):
        notes.append(f"split 'all' includes the images this checkpoint was trained on ({data.name}): "
                     "these numbers are not a held-out estimate")
    elif fold is not None and metadata.protocol == "folds" and metadata.fold is not None and metadata.fold != fold:
        notes.append(f"this checkpoint was tested on fold {metadata.fold} and trained on the other folds, "
                     f"so fold {fold} was training data and these numbers are not a held-out estimate")
    if dataset.synthetic is not None and dataset.synthetic != data.synthetic:
        trained_on = "synthetic demo" if dataset.synthetic else "real"
        notes.append(f"this checkpoint was trained on {trained_on} data ({dataset.name}), "
                     f"evaluated here on {data.name}")
    return notes


SPLITS: tuple[str, ...] = ("fold", "all")


def group_fields(metrics: dict) -> dict:
    """The per-group fields of an evaluation's result, from compute_metrics' metrics: age_per_class
    ({group: {"n", "exact", "one_off"}} in labels.AGE_CLASSES order; a group without a face has n 0 and None
    accuracies), balanced_age_exact and balanced_age_one_off (the means over the groups with faces),
    gender_acc_female and gender_acc_male (the f/m protocol) with their counts, and per_race / race_gap
    (None unless the data has a race field, as UTKFace has)."""
    counts = metrics.get("age_per_class_n")
    age_per_class = None
    if counts is not None:
        age_per_class = {name: {"n": counts[i], "exact": metrics["age_per_class"][i],
                                "one_off": metrics["age_per_class_one_off"][i]} for i, name in enumerate(AGE_CLASSES)}
    return {"age_per_class": age_per_class,
            **{key: metrics.get(key) for key in ("balanced_age_exact", "balanced_age_one_off", "gender_acc_female",
                                                 "gender_acc_male", "gender_n_female", "gender_n_male", "per_race",
                                                 "race_gap")}}


def evaluation_rows(data, split: str, fold: int | None, task: str) -> np.ndarray:
    """Indices of the faces to evaluate: fold `fold` (split "fold") or every labelled face (split "all")."""
    if split not in SPLITS:
        raise AudienceError(f"unknown split {quoted(split)}: use one of {', '.join(SPLITS)}.")
    if split == "all":
        rows = np.flatnonzero(labelled_mask(data.faces, task))
        if not len(rows):
            raise AudienceError(f"{data.root}: no face is labelled for task {task}.")
        return rows
    if fold is None:
        raise AudienceError("give --fold N, or --split all to evaluate on every labelled image.")
    return fold_rows(data, fold, task)


class CroppedFaces(Dataset):
    """Face crops made in memory (the detect-and-crop evaluation), transformed, with their classes."""

    def __init__(self, crops: list[np.ndarray], age: np.ndarray, gender: np.ndarray, transform):
        self.crops, self.age, self.gender, self.transform = crops, age, gender, transform

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(self.crops[index]), int(self.age[index]), int(self.gender[index])


def _face_crops(paths: list[str], face_crop: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray | None]:
    """The crop of each image (None: unreadable)."""
    crops = []
    for path in paths:
        try:
            crops.append(np.ascontiguousarray(face_crop(read_image(path))))
        except AudienceError:
            crops.append(None)
    return crops


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path,
    fold: int | None,
    policy: str | None = None,
    images: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    workers: int = 0,
    cache_dir: str | Path | None = None,
    split: str = "fold",
    face_crop: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Metrics of `checkpoint` on the labelled faces of fold `fold` of `data_root` ('demo' allowed), or on
    every labelled face with split="all" (an Adience root or a UTKFace folder: cross-dataset works).

    The label policy defaults to the checkpoint's; the image folder is `auto` (the data root decides)
    unless given. Its stored temperatures calibrate the probabilities. Returns {"checkpoint", "data",
    "fold", "split", "n", "policy", "images", "temperature", "metrics" (compute_metrics),
    "ece_uncalibrated", "warnings", the headline fractions age_exact, age_one_off, gender_acc with
    the counts they are over, n_age and n_gender, and the per-group fields of group_fields}.

    `face_crop` (image -> face crop; the predict stage's detector with the checkpoint's crop geometry)
    re-cuts each image the way the Predict path would, for data framed unlike the training images
    (a UTKFace model on Adience's looser faces); without it the images are classified whole.
    """
    metadata = read_checkpoint_metadata(checkpoint)
    policy = policy or (metadata.dataset and metadata.dataset.policy) or "bins"
    images = images or "auto"
    data = read_dataset(resolve_data_root(data_root), policy=policy, images="auto" if images == "none" else images)
    rows = evaluation_rows(data, split, fold, metadata.task)
    target = resolve_device(device)
    model, transform = load_checkpoint_model(checkpoint, metadata, device=target)
    paths = data.faces["path"].astype(str).tolist()
    if face_crop is None:
        cache = build_image_cache(paths, cache_size_for(metadata.image_size), cache_dir=cache_dir)
        cache_rows = cache.rows_of(paths)[rows]
    else:
        crops = _face_crops([paths[row] for row in rows], face_crop)
        cache_rows = np.array([row if crops[i] is not None else -1 for i, row in enumerate(rows)])
    readable = cache_rows >= 0
    if not readable.any():
        raise AudienceError(f"No image of {'fold ' + str(fold) if split == 'fold' else 'the data'} in "
                            f"{data.root} could be read.")
    rows, cache_rows = rows[readable], cache_rows[readable]
    heads = metadata.heads
    age = data.faces["age_class"].to_numpy()[rows] if "age" in heads else np.full(len(rows), -1)
    gender = data.faces["gender_class"].to_numpy()[rows] if "gender" in heads else np.full(len(rows), -1)
    if face_crop is None:
        faces = CachedFaces(cache, cache_rows, age, gender, transform)
    else:
        faces = CroppedFaces([crop for crop in crops if crop is not None], age, gender, transform)
    loader = make_loader(faces, batch_size, target, workers, train=False, persistent=False)
    predicted = predict_logits(model, loader, target)
    temperature = dict(metadata.temperatures)
    probabilities = {head: softmax_with_temperature(predicted[head], temperature[head]) for head in heads}
    race = data.faces["race"].to_numpy()[rows] if "race" in data.faces.columns else None
    metrics = compute_metrics(predicted["age_true"], probabilities.get("age"), predicted["gender_true"],
                              probabilities.get("gender"), race=race)
    uncalibrated = {head: expected_calibration_error(softmax_with_temperature(predicted[head], 1.0),
                                                     predicted[f"{head}_true"]) for head in heads}
    notes = _warnings(metadata, fold if split == "fold" else None, data)
    if (~readable).any():
        notes.append(f"{int((~readable).sum())} image(s) could not be read and were left out")
    labelled = {head: int((predicted[f"{head}_true"] >= 0).sum()) if head in heads else 0
                for head in ("age", "gender")}
    return {
        **{key: metrics[key] for key in EVALUATE_KEYS},
        "n_age": labelled["age"], "n_gender": labelled["gender"], **group_fields(metrics), "split": split,
        "crop": "whole image" if face_crop is None else "detected face, cut with the checkpoint's crop geometry",
        "checkpoint": str(checkpoint), "data": str(data.root), "dataset": data.name, "fold": fold,
        "n": int(len(rows)), "policy": policy, "images": data.images, "arch": metadata.arch,
        "task": metadata.task, "temperature": temperature, "metrics": metrics,
        "ece_uncalibrated": uncalibrated, "warnings": notes,
    }
