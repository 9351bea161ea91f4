"""Evaluate a saved checkpoint on one official fold, with the same pipeline the trainer's test used."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audience.cache import CachedFaces, build_image_cache, cache_size_for
from audience.checkpoint import load_checkpoint, read_checkpoint_metadata
from audience.data import read_adience
from audience.errors import AudienceError
from audience.loop import make_loader, predict_logits, resolve_device
from audience.metrics import compute_metrics, expected_calibration_error, softmax_with_temperature
from audience.models import HEADS_OF_TASK
from audience.splits import fold_rows
from audience.train_config import DEMO_DATA


def _warnings(metadata: dict, fold: int, data) -> list[str]:
    notes = []
    dataset = metadata.get("dataset") or {}
    if metadata.get("protocol") == "random" or metadata.get("leaky"):
        notes.append("this checkpoint was trained with the leaky random split: every fold holds people it saw "
                     "in training, so these numbers are inflated")
    elif metadata.get("protocol") == "folds" and metadata.get("fold") is not None and metadata["fold"] != fold:
        notes.append(f"this checkpoint was tested on fold {metadata['fold']} and trained on the other folds, "
                     f"so fold {fold} was training data and these numbers are not a held-out estimate")
    if dataset.get("synthetic") is not None and bool(dataset["synthetic"]) != data.synthetic:
        trained_on = "synthetic demo" if dataset["synthetic"] else "real"
        notes.append(f"this checkpoint was trained on {trained_on} data ({dataset.get('name')}), "
                     f"evaluated here on {data.name}")
    return notes


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path,
    fold: int,
    policy: str | None = None,
    images: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    workers: int = 0,
    cache_dir: str | Path | None = None,
) -> dict:
    """Metrics of `checkpoint` on the labelled faces of fold `fold` of `data_root` ('demo' allowed).

    The label policy and image folder default to those the checkpoint was trained with; its stored
    temperatures calibrate the probabilities. Returns {"checkpoint", "data", "fold", "n", "policy",
    "images", "temperature", "metrics" (compute_metrics), "ece_uncalibrated", "warnings"}.
    """
    metadata = read_checkpoint_metadata(checkpoint)
    dataset = metadata.get("dataset") or {}
    policy = policy or dataset.get("policy") or "bins"
    images = images or dataset.get("images") or "auto"
    if str(data_root).strip().lower() == DEMO_DATA:
        from audience.demo import ensure_demo_dataset

        data_root = ensure_demo_dataset()
    data = read_adience(data_root, policy=policy, images="auto" if images == "none" else images)
    rows = fold_rows(data, fold, metadata["task"])
    target = resolve_device(device)
    model, transform, metadata = load_checkpoint(checkpoint, device=target)
    paths = data.faces["path"].astype(str).tolist()
    cache = build_image_cache(paths, cache_size_for(int(metadata["image_size"])), cache_dir=cache_dir)
    cache_rows = cache.rows_of(paths)[rows]
    readable = cache_rows >= 0
    if not readable.any():
        raise AudienceError(f"No image of fold {fold} in {data.root} could be read.")
    rows, cache_rows = rows[readable], cache_rows[readable]
    heads = HEADS_OF_TASK[metadata["task"]]
    age = data.faces["age_class"].to_numpy()[rows] if "age" in heads else np.full(len(rows), -1)
    gender = data.faces["gender_class"].to_numpy()[rows] if "gender" in heads else np.full(len(rows), -1)
    loader = make_loader(CachedFaces(cache, cache_rows, age, gender, transform), batch_size, target, workers,
                         train=False, persistent=False)
    predicted = predict_logits(model, loader, target)
    temperature = {head: float((metadata.get("temperature") or {}).get(head, 1.0)) for head in heads}
    probabilities = {head: softmax_with_temperature(predicted[head], temperature[head]) for head in heads}
    metrics = compute_metrics(predicted["age_true"], probabilities.get("age"), predicted["gender_true"],
                              probabilities.get("gender"))
    uncalibrated = {head: expected_calibration_error(softmax_with_temperature(predicted[head], 1.0),
                                                     predicted[f"{head}_true"]) for head in heads}
    notes = _warnings(metadata, fold, data)
    if (~readable).any():
        notes.append(f"{int((~readable).sum())} image(s) of fold {fold} could not be read and were left out")
    return {
        "checkpoint": str(checkpoint), "data": str(data.root), "dataset": data.name, "fold": fold,
        "n": int(len(rows)), "policy": policy, "images": data.images, "arch": metadata["arch"],
        "task": metadata["task"], "temperature": temperature, "metrics": metrics,
        "ece_uncalibrated": uncalibrated, "warnings": notes,
    }
