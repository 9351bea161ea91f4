"""Evaluation with calibration: the trainer's end-of-fold test (`calibrate_heads`) and a saved
checkpoint on one official fold (`evaluate_checkpoint`, the same pipeline the trainer's test used)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audience.data.adience import read_adience
from audience.data.cache import CachedFaces, build_image_cache, cache_size_for
from audience.data.roots import resolve_data_root
from audience.data.splits import fold_rows
from audience.errors import AudienceError
from audience.labels import HEADS_OF_TASK
from audience.model.checkpoint import load_checkpoint, read_checkpoint_metadata
from audience.train.loop import make_loader, predict_logits, resolve_device
from audience.train.metrics import (
    choose_temperature,
    compute_metrics,
    expected_calibration_error,
    negative_log_likelihood,
    softmax_with_temperature,
)


def calibrate_heads(val: dict, test: dict, heads: tuple[str, ...], calibrate: bool = True) -> tuple[dict, dict, dict]:
    """Temperatures chosen on the validation logits (metrics.choose_temperature), the calibrated test
    metrics, and per head what was done with the ECE before and after.

    `val` and `test` are loop.predict_logits results. Returns (temperature {head: T}, compute_metrics of
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
                              probabilities.get("gender"))
    return temperature, metrics, calibration


def calibration_line(calibration: dict) -> str:
    """'age T 1.00 (skipped: ..., test ECE 0.044 -> 0.044); gender T ...' for logs."""
    parts = []
    for head, c in calibration.items():
        ece = "" if c["test_ece_before"] is None else \
            f", test ECE {c['test_ece_before']:.3f} -> {c['test_ece_after']:.3f}"
        parts.append(f"{head} T {c['temperature']:.2f} ({c['reason']}{ece})")
    return "; ".join(parts)


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
    data = read_adience(resolve_data_root(data_root), policy=policy, images="auto" if images == "none" else images)
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
