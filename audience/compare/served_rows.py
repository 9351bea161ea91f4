"""Served checkpoints as Compare rows: a fresh clone's shipped model stands next to the user's runs.

Each checkpoint in the checkpoints folder becomes a `RunInfo` built from its own JSON (no run folder
is needed): its recorded test metrics as one fold, its training config, data and protocol, and the
state "shipped" (a model that came with the repository, `shipped` in its JSON) or "served" (one a
user promoted). An unreadable checkpoint is a row that names the problem.
"""

from __future__ import annotations

from pathlib import Path

from audience.errors import AudienceError
from audience.model.checkpoint import read_checkpoint_metadata
from audience.predict.batch import list_checkpoints
from audience.registry import SUMMARY_KEYS
from audience.train.runs import RunInfo

SHIPPED_PREFIX = "checkpoint:"


def _summary(metadata: dict) -> dict:
    metrics = metadata.get("metrics") or {}
    fold = metadata.get("fold")
    fold_key = str(fold if isinstance(fold, int) else 0)
    dataset = metadata.get("dataset") or {}
    summary = {key: {"mean": float(metrics[key]), "std": None, "per_fold": {fold_key: float(metrics[key])}}
               for key in SUMMARY_KEYS if isinstance(metrics.get(key), int | float)}
    summary.update({
        "protocol": metadata.get("protocol"), "leaky": bool(metadata.get("leaky")),
        "dataset": dataset.get("name"), "synthetic": dataset.get("synthetic"),
        "split_level": metadata.get("split_level") or dataset.get("split_level") or "subject",
        "arch": metadata.get("arch"), "task": metadata.get("task"), "image_size": metadata.get("image_size"),
        "params": metadata.get("params"), "flops": metadata.get("flops"),
        "train_seconds": (metadata.get("training") or {}).get("train_seconds"),
        "folds_done": [int(fold_key)] if summary else [], "metrics_on": metadata.get("metrics_on"),
        "stability": metadata.get("stability"),
    })
    return summary


def checkpoint_run(path: Path) -> RunInfo:
    """One served checkpoint as a Compare row."""
    run_id = f"{SHIPPED_PREFIX}{path.stem}"
    try:
        metadata = read_checkpoint_metadata(path)
    except AudienceError as error:
        return RunInfo(path=path.parent, run_id=run_id, status={"state": "served"}, errors=[str(error)])
    train = dict(metadata.get("train_config") or {})
    train.setdefault("arch", metadata.get("arch"))
    train.setdefault("task", metadata.get("task"))
    train["image_size"] = metadata.get("image_size")
    train["folds"] = str(metadata.get("fold", 0))
    summary = _summary(metadata)
    fold = summary["folds_done"][0] if summary["folds_done"] else None
    tests = {} if fold is None or metadata.get("metrics_on") != "test" else {
        fold: {"summary": {k: summary[k]["mean"] for k in SUMMARY_KEYS if k in summary},
               "metrics": metadata.get("metrics") or {}}}
    state = "shipped" if metadata.get("shipped") else "served"
    return RunInfo(path=path.parent, run_id=run_id, config=train, status={"state": state}, summary=summary,
                   test_metrics=tests)


def checkpoint_runs(folder: str | Path | None = None) -> list[RunInfo]:
    """Every served checkpoint (the checkpoints folder) as a Compare row, newest first."""
    return [checkpoint_run(path) for path in list_checkpoints(folder)]
