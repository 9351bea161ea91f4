"""Served checkpoints as Compare rows: a fresh clone's shipped model stands next to the user's runs.

Each checkpoint in the checkpoints folder becomes a `RunInfo` built from its own JSON (no run folder
is needed): its recorded test metrics as one fold, its training config, data and protocol, and the
state "shipped" (a model that came with the repository, `shipped` in its JSON) or "served" (one a
user promoted). An unreadable checkpoint is a row that names the problem.
"""

from __future__ import annotations

from pathlib import Path

from audience.errors import AudienceError
from audience.model.catalog import list_checkpoints
from audience.model.checkpoint import read_checkpoint_metadata
from audience.model.metadata import CheckpointMetadata, DatasetInfo
from audience.registry import SUMMARY_KEYS
from audience.train.runs import RunInfo

SHIPPED_PREFIX = "checkpoint:"


def _summary(metadata: CheckpointMetadata) -> dict:
    fold = metadata.fold
    fold_key = str(fold if isinstance(fold, int) else 0)
    dataset = metadata.dataset or DatasetInfo()
    recorded = {key: float(metadata.metric(key)) for key in SUMMARY_KEYS if metadata.metric(key) is not None}
    summary = {key: {"mean": value, "std": None, "per_fold": {fold_key: value}} for key, value in recorded.items()}
    summary.update({
        "protocol": metadata.protocol, "leaky": bool(metadata.leaky),
        "dataset": dataset.name, "synthetic": dataset.synthetic,
        "split_level": metadata.split_level or dataset.split_level or "subject",
        "arch": metadata.arch, "task": metadata.task, "image_size": metadata.image_size,
        "params": metadata.params, "flops": metadata.flops,
        "train_seconds": metadata.training and metadata.training.train_seconds,
        "folds_done": [int(fold_key)] if summary else [], "metrics_on": metadata.metrics_on,
        "stability": None if metadata.stability is None else metadata.stability.model_dump(exclude_unset=True),
    })
    return summary


def checkpoint_run(path: Path) -> RunInfo:
    """One served checkpoint as a Compare row."""
    run_id = f"{SHIPPED_PREFIX}{path.stem}"
    try:
        metadata = read_checkpoint_metadata(path)
    except AudienceError as error:
        return RunInfo(path=path.parent, run_id=run_id, status={"state": "served"}, errors=[str(error)])
    train = {} if metadata.train_config is None else metadata.train_config.as_dict()
    train.setdefault("arch", metadata.arch)
    train.setdefault("task", metadata.task)
    train["image_size"] = metadata.image_size
    train["folds"] = str(metadata.fold if "fold" in metadata.model_fields_set else 0)
    summary = _summary(metadata)
    fold = summary["folds_done"][0] if summary["folds_done"] else None
    tests = {} if fold is None or metadata.metrics_on != "test" else {
        fold: {"summary": {k: summary[k]["mean"] for k in SUMMARY_KEYS if k in summary},
               "metrics": {} if metadata.metrics is None else metadata.metrics.as_dict()}}
    state = "shipped" if metadata.shipped else "served"
    return RunInfo(path=path.parent, run_id=run_id, config=train, status={"state": state}, summary=summary,
                   test_metrics=tests)


def checkpoint_runs(folder: str | Path | None = None) -> list[RunInfo]:
    """Every served checkpoint (the checkpoints folder) as a Compare row, newest first."""
    return [checkpoint_run(path) for path in list_checkpoints(folder)]
