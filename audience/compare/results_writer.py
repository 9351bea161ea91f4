"""Make a results file (audience.compare.results_file) from a finished training run.

For each chosen fold the run's best checkpoint is loaded (its checksum checked): the test metrics are the
ones the run recorded (test_metrics.json), or, for a run scored before per-group accuracy was recorded,
those of a new evaluation of that checkpoint on the same test fold (audience.train.evaluation); parameters
and FLOPs are counted on the loaded model (audience.model.network), its CPU latency per face is measured
with its trained weights at one thread (audience.bench.model_latency.time_model) on this machine, whose CPU
and load are recorded. The file is written atomically.
"""

from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from audience.errors import AudienceError, quoted, shorten
from audience.files import check_replaceable, write_json_atomic
from audience.inputs import check_path, check_text, name_slug
from audience.model.metadata import first_problem
from audience.registry import SUMMARY_KEYS, protocol_label
from audience.train import runs as runs_io
from audience.train.group_metrics import has_group_data

LOCAL_PATH_SETTINGS = ("data", "out", "cache_dir", "weights_file")  # config fields that hold this machine's paths
COMMAND_LIMIT = 64 * 1024


def _recipe(config: dict) -> dict:
    """The run's config, its local paths reduced to their last part (no folder of the training machine)."""
    recipe = {}
    for key, value in config.items():
        if key in LOCAL_PATH_SETTINGS and isinstance(value, str) and ("/" in value or "\\" in value):
            value = PurePosixPath(value.replace("\\", "/")).name
        if value is None or isinstance(value, str | int | float | bool):
            recipe[str(key)] = value
    return recipe


def _commands(run_dir: Path) -> list[str]:
    try:
        with open(run_dir / runs_io.COMMAND_FILE, encoding="utf-8") as file:
            lines = file.read(COMMAND_LIMIT).splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [line[:2000] for line in lines if line.strip()][:20]


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _curves(run: runs_io.RunInfo, fold: int) -> list[dict]:
    frame = run.epochs.get(fold)
    if frame is None:
        return []
    columns = [column for column in runs_io.METRICS_COLUMNS if column in frame.columns]
    rows = []
    for row in frame[columns].to_dict("records"):
        values = {column: _finite(float(row[column])) if row[column] is not None else None for column in columns}
        if values.get("epoch") is not None:
            values["epoch"] = int(values["epoch"])  # a whole number, as metrics.csv has it
        rows.append(values)
    return rows


def _folds_of(run: runs_io.RunInfo, fold: int | None) -> list[int]:
    finished = sorted(run.test_metrics)
    if fold is None:
        if not finished:
            raise AudienceError(f"Run {run.run_id} has no finished fold yet (no fold<k>/test_metrics.json).")
        return finished
    if fold not in finished:
        done = ", ".join(map(str, finished)) or "none"
        raise AudienceError(f"Run {run.run_id} has no test results for fold {fold} (finished folds: {done}).")
    return [fold]


def _fold_metrics(run: runs_io.RunInfo, fold: int, checkpoint: Path, data: str | None, say) -> tuple[dict, str]:
    """(metrics, where they come from): the run's recorded test metrics, or a new evaluation when they lack the
    per-group fields."""
    recorded = run.test_metrics[fold].get("metrics")
    if isinstance(recorded, dict) and isinstance(recorded.get("age_per_class_n"), list) and has_group_data(recorded):
        return recorded, "recorded by the trainer"
    from audience.train.evaluation import evaluate_checkpoint

    root = data or (run.config or {}).get("data")
    if not root:
        raise AudienceError(f"Run {run.run_id} fold {fold} has no per-group test metrics and no data root to "
                            "evaluate it again; give --data.")
    say(f"fold {fold}: the run recorded no per-group test metrics; evaluating its best checkpoint on the same "
        f"test fold of {shorten(root)}")
    return evaluate_checkpoint(checkpoint, root, fold)["metrics"], "evaluated again (test fold, whole images)"


def build_results(run_dir: str | Path, name: str, weights_at: str, note: str = "", fold: int | None = None,
                  data: str | None = None, repeats: int = 20, threads: int = 1, say=print) -> dict:
    """The results file (a JSON-ready dict, checked against ResultsFile) of `run_dir`'s fold `fold` (default:
    every finished fold)."""
    from audience.bench.model_latency import time_model
    from audience.bench.predict_latency import describe_machine
    from audience.compare.results_file import FORMAT, FORMAT_VERSION, ResultsFile, check_repo_id
    from audience.model.checkpoint import load_checkpoint
    from audience.model.network import count_flops, count_params

    name = name_slug(name, "--name")
    check_repo_id(check_text(weights_at, "--weights-at", 200))
    note = check_text(note, "--note", 500)
    run_dir = Path(check_path(run_dir, "--run"))
    if not run_dir.is_dir():
        raise AudienceError(f"Run folder {shorten(run_dir)} does not exist.")
    run = runs_io.read_run(run_dir, details=True)
    if run.config is None:
        raise AudienceError(f"Run {run.run_id} has no readable config.json ({'; '.join(run.errors) or 'missing'}).")
    folds, entries, model, metadata = _folds_of(run, fold), [], None, None
    for number in folds:
        stem = runs_io.fold_dir(run_dir, number) / "best"
        if not stem.with_suffix(".json").is_file():
            raise AudienceError(f"Run {run.run_id} has no best checkpoint for fold {number} (no best.json).")
        model, _, metadata = load_checkpoint(stem)
        metrics, source = _fold_metrics(run, number, stem.with_suffix(".json"), data, say)
        recorded = run.test_metrics[number].get("summary")
        summary = {key: (recorded if isinstance(recorded, dict) and source.startswith("recorded") else metrics
                         ).get(key) for key in SUMMARY_KEYS}
        entries.append({"fold": number, "best_epoch": run.test_metrics[number].get("best_epoch"),
                        "test_faces": (run.test_metrics[number].get("sizes") or {}).get("test"),
                        "summary": summary, "metrics": metrics, "curves": _curves(run, number),
                        "metrics_source": source, "weights_bytes": metadata.weights and metadata.weights.bytes,
                        "weights_sha256": metadata.weights and metadata.weights.sha256})
        say(f"fold {number}: age exact {summary.get('age_exact')}, gender f/m {summary.get('gender_acc_fm')} "
            f"({source})")
    image_size = metadata.image_size
    say(f"timing {metadata.arch} at {image_size}px with its trained weights, batch 1, {threads} thread(s), "
        f"{repeats} passes")
    load_before = os.getloadavg()
    latency = time_model(model, image_size, repeats=repeats, threads=threads)
    dataset = metadata.dataset
    split_level = metadata.split_level or (dataset and dataset.split_level) or "subject"
    summary = run.summary or {}
    weights = metadata.weights if len(folds) == 1 else None  # several folds: each fold's own checksum
    epochs = run.config.get("epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise AudienceError(f"Run {run.run_id}: config.json names no number of epochs (found {quoted(epochs)}).")
    results = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "arch": metadata.arch, "task": metadata.task,
        "dataset": {"name": (dataset and dataset.name) or str(summary.get("dataset") or "unknown"),
                    "synthetic": bool(metadata.synthetic), "format": dataset and dataset.format,
                    "policy": dataset and dataset.policy, "split_level": split_level,
                    "faces": dataset and dataset.faces},
        "protocol": metadata.protocol or run.config.get("protocol"), "leaky": bool(metadata.leaky),
        "protocol_label": protocol_label(metadata.protocol, bool(metadata.leaky), split_level),
        "image_size": image_size, "epochs": epochs,
        "recipe": _recipe(run.config), "commands": _commands(run_dir), "folds": entries,
        "params": count_params(model), "flops": count_flops(model, image_size),
        "latency": {**latency, "batch": 1, "load": [round(v, 2) for v in load_before],
                    "machine": describe_machine()},
        "train_seconds": summary.get("train_seconds") if isinstance(summary.get("train_seconds"), int | float)
        else None,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"), "source_run": run.run_id,
        "note": note,
        "weights": {"published_at": weights_at, **({"file": "best.safetensors", "bytes": weights.bytes,
                                                     "sha256": weights.sha256} if weights else {})},
    }
    try:
        return ResultsFile.model_validate(results).as_json()
    except ValidationError as error:
        raise AudienceError(f"Run {run.run_id} does not fit the results format: {first_problem(error)}.") from None


def check_out(out: str | Path) -> Path:
    """`out` as a Path when a results file may be written there (a .json name, a new or regular file)."""
    out = Path(check_path(out, "--out"))
    if out.suffix != ".json":
        raise AudienceError(f"--out {quoted(str(out))} must name a .json file.")
    return check_replaceable(out)


def write_results(out: str | Path, results: dict) -> Path:
    """Write `results` (build_results) to `out` atomically (its folder made when needed)."""
    out = check_out(out)
    try:
        return write_json_atomic(out, results)
    except OSError as error:
        raise AudienceError(f"Cannot write {shorten(out)} ({(error.strerror or str(error)).lower()}).") from None
