"""Comparing training runs: run folders in, DataFrames out (the figures are in audience.compare.plots).

Pure apart from reading run folders through `runs.read_run`: a half-written run or a corrupt file
gives a row with what could be read and a `problems` cell naming the rest. Accuracies in run
files are fractions; the display tables show percent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audience.bench.model_latency import cached_latency
from audience.data.roots import is_demo_root
from audience.registry import (
    ACCURACY_KEYS,
    ECE_KEYS,
    GLANCE_KEYS,
    HEADLINE_KEYS,
    LEAKY_LABEL,
    column_of,
    format_metric,
    format_percent,
    format_seconds,
    protocol_label,
)
from audience.train import runs as runs_io
from audience.train.metrics import summarize_folds

FEATURED_ARCHS: tuple[str, ...] = ("resnet50", "mobilenetv3_large_100")
LEAKY_MARK = LEAKY_LABEL  # the protocol label of a random-split run (audience.registry.protocol_label)

# Published numbers for context, never comparable with a run of this app: the seed's random 90/10
# image split (same people in train and val) and the literature's subject-exclusive 5-fold protocol.
SEED_PROTOCOL = "original notebooks: random image split (leaky, not comparable)"
REFERENCE_ROWS: tuple[dict, ...] = (
    {"source": "the original notebooks, Step 2", "arch": "resnet50", "protocol": SEED_PROTOCOL,
     "age_exact": 0.5745, "age_one_off": None, "gender_acc": 0.9266, "note": "ReduceLROnPlateau, epoch 10"},
    {"source": "the original notebooks, Step 2", "arch": "resnet50 (one-cycle)", "protocol": SEED_PROTOCOL,
     "age_exact": 0.6827, "age_one_off": None, "gender_acc": 0.9512, "note": "epoch 9 (the run crashed in epoch 10)"},
    {"source": "the original notebooks, Step 2", "arch": "mobilenetv3", "protocol": SEED_PROTOCOL,
     "age_exact": 0.8228, "age_one_off": None, "gender_acc": 0.9668, "note": "epoch 10"},
    {"source": "Levi & Hassner 2015", "arch": "3-layer CNN", "protocol": "subject-exclusive 5 folds (literature)",
     "age_exact": 0.507, "age_exact_std": 0.051, "age_one_off": 0.847, "age_one_off_std": 0.022,
     "gender_acc": None, "gender_acc_fm": 0.868, "gender_acc_fm_std": 0.014, "note": "gender is f/m only"},
)


def read_runs(runs_dir) -> list[runs_io.RunInfo]:
    """Every run under `runs_dir` with its per-fold details, newest first (an absent folder: [])."""
    listed = runs_io.list_runs(runs_dir, details=False)
    detailed = []
    for run in listed:
        try:
            detailed.append(runs_io.read_run(run.path, details=True))
        except Exception as error:  # noqa: BLE001 - one unreadable run must not hide the others
            run.errors.append(f"cannot be read ({type(error).__name__}: {error})")
            detailed.append(run)
    return detailed


def _config(run) -> dict:
    return run.config or {}


def summary_of(run) -> dict:
    """The run's cv_summary, or one rebuilt from its test_metrics files when the summary is missing."""
    if run.summary and any(isinstance(run.summary.get(key), dict) for key in ACCURACY_KEYS):
        return run.summary
    scalars = {k: test_scalars(m) for k, m in run.test_metrics.items()}
    if scalars:
        return {**(run.summary or {}), **summarize_folds(scalars), "rebuilt": True}
    return run.summary or {}


def test_scalars(test_metrics: dict) -> dict:
    """The scalar metrics of one fold's test_metrics.json ('summary', else the full 'metrics')."""
    for key in ("summary", "metrics"):
        if isinstance(test_metrics.get(key), dict):
            return test_metrics[key]
    return {}


def test_detail(test_metrics: dict) -> dict:
    """The full metrics (confusion matrices, per-class recall) of one fold's test_metrics.json."""
    return test_metrics.get("metrics") if isinstance(test_metrics.get("metrics"), dict) else {}


def _stat(summary: dict, key: str, part: str) -> float | None:
    value = (summary.get(key) or {}).get(part) if isinstance(summary.get(key), dict) else None
    return float(value) if isinstance(value, int | float) else None


def folds_done(run) -> int:
    summary = run.summary or {}
    if isinstance(summary.get("folds_done"), list):
        return len(summary["folds_done"])
    if isinstance(summary.get("folds_done"), int):
        return summary["folds_done"]
    return len(run.test_metrics)


def planned_folds(run) -> int | None:
    folds = str(_config(run).get("folds", "")).strip().lower()
    if folds == "all":
        return 5
    parts = [p for p in folds.replace(" ", "").split(",") if p]
    return len(parts) or None


def dataset_of(run) -> str:
    summary, config = run.summary or {}, _config(run)
    synthetic = summary.get("synthetic")
    dataset = summary.get("dataset")
    name = dataset.get("name") if isinstance(dataset, dict) else dataset
    if synthetic is None and isinstance(dataset, dict):
        synthetic = dataset.get("synthetic")
    if synthetic is None and is_demo_root(config.get("data", "")):
        synthetic = True
    if synthetic:
        return "synthetic demo"
    if synthetic is None:
        return f"{name or 'unknown'} (?)"
    return f"real ({name or 'adience'})"


def image_size_of(run) -> int | None:
    size = _config(run).get("image_size")
    return int(size) if isinstance(size, int | float) else None


def latency_of(run) -> tuple[float | None, str]:
    """(CPU ms per face, where the number comes from): the run's own (a results file's, measured with its trained
    weights, says where), else the per-arch cache."""
    summary = run.summary or {}
    stored = summary.get("cpu_latency_ms")
    if isinstance(stored, int | float):
        source = summary.get("cpu_latency_source")
        return float(stored), source if isinstance(source, str) and source else "stored by the trainer"
    arch, size = _config(run).get("arch"), image_size_of(run)
    cached = cached_latency(arch, size) if arch and size else None
    if cached:
        fastest = f", fastest {cached['min_ms']:.1f} ms" if isinstance(cached.get("min_ms"), int | float) else ""
        return cached["ms"], (f"measured here {str(cached.get('measured', ''))[:16]}: random-init {arch} at {size}px, "
                              f"batch 1, {cached['threads']} threads, median{fastest}")
    return None, "not measured (press 'Measure CPU latency')"


def runs_frame(runs: list) -> pd.DataFrame:
    """One row per run with numeric columns (fractions, counts, seconds): the data behind the table."""
    rows = []
    for run in runs:
        config, summary = _config(run), summary_of(run)
        latency, latency_source = latency_of(run)
        row = {
            "run": run.run_id,
            "arch": config.get("arch") or summary.get("arch"),
            "task": config.get("task") or summary.get("task"),
            "protocol": config.get("protocol") or summary.get("protocol"),
            "leaky": run.leaky,
            "split_level": summary.get("split_level") or "subject",
            "dataset": dataset_of(run),
            "state": run.state,
            "folds_done": folds_done(run),
            "folds_planned": planned_folds(run),
            "image_size": image_size_of(run),
            "params": summary.get("params"),
            "flops": summary.get("flops"),
            "train_seconds": summary.get("train_seconds"),
            "cpu_ms": latency,
            "latency_source": latency_source,
            "note": summary.get("note") if isinstance(summary.get("note"), str) else "",
            "problems": "; ".join(run.errors),
            # audience.cli.benchmark stability --write: how often an answer survives a small change of the photo
            **{f"{head}_agreement": (summary.get("stability") or {}).get(f"{head}_agreement")
               for head in ("age", "gender")},
        }
        for key in ACCURACY_KEYS + ECE_KEYS:
            row[f"{key}_mean"], row[f"{key}_std"] = _stat(summary, key, "mean"), _stat(summary, key, "std")
        rows.append(row)
    return pd.DataFrame(rows)


def _plain(value, fmt: str) -> str:
    return "-" if value is None or pd.isna(value) else format(value, fmt)


def _short_source(source: str) -> str:
    """The latency source for a narrow table cell; the full sentence is in runs_frame (and the tab's note)."""
    if source.startswith("measured here "):
        return "measured " + source.removeprefix("measured here ")[:16].replace("T", " ")
    return {"stored by the trainer": "trainer"}.get(source, source.split(" (")[0])


def runs_table(runs: list) -> pd.DataFrame:
    """The Compare table for display: one row per run, metrics as 'mean ± std' percent.

    Short headers and cells, in the order people read them (accuracy, then cost, then calibration),
    because 19 columns do not fit a 1,400 px page: the tail scrolls beside the pinned run column.
    """
    frame = runs_frame(runs)
    if frame.empty:
        return pd.DataFrame(columns=["run", "message"])
    table = pd.DataFrame({
        "run": frame["run"],
        "arch": frame["arch"].fillna("?"),
        "task": frame["task"].fillna("?"),
        "protocol": [protocol_label(p, leaky, level)
                     for p, leaky, level in zip(frame["protocol"], frame["leaky"], frame["split_level"], strict=True)],
        "dataset": frame["dataset"],
        "state": frame["state"],
        "folds": [f"{d}/{p}" if p else str(d) for d, p in zip(frame["folds_done"], frame["folds_planned"],
                                                              strict=True)],
    })
    several = frame["folds_done"] > 1  # the std of one fold is no spread, so it is not shown
    for key in ACCURACY_KEYS:
        table[column_of(key)] = [format_percent(m, s if many else None)
                        for m, s, many in zip(frame[f"{key}_mean"], frame[f"{key}_std"], several, strict=True)]
    for head in ("age", "gender"):
        table[f"{head} stable %"] = [format_percent(v) for v in frame[f"{head}_agreement"]]
    table["params (M)"] = [_plain(p / 1e6 if p else None, ".2f") for p in frame["params"]]
    table["GFLOPs"] = [_plain(f / 1e9 if f else None, ".3f") for f in frame["flops"]]
    table["CPU ms"] = [_plain(m, ".1f") for m in frame["cpu_ms"]]
    table["train time"] = [format_seconds(s) for s in frame["train_seconds"]]
    for key in ECE_KEYS:
        table[column_of(key)] = [format_metric(key, m) for m in frame[f"{key}_mean"]]
    table["latency source"] = [_short_source(source) for source in frame["latency_source"]]
    table["note"] = frame["note"]
    table["problems"] = frame["problems"]
    return table


def default_selection(runs: list) -> list[str]:
    """ResNet50 beside MobileNetV3 (the newest run of each with results, the MobileNetV3 at the ResNet50's image
    size and on its data when there is one, so that the two are comparable); else the two newest runs."""
    with_results = [r for r in runs if folds_done(r) > 0]
    chosen = []
    for arch in FEATURED_ARCHS:
        candidates = [r for r in with_results if _config(r).get("arch") == arch]
        if chosen:
            first = _run_of(with_results, chosen[0])
            alike = [r for r in candidates if (image_size_of(r), dataset_of(r)) == (image_size_of(first),
                                                                                   dataset_of(first))]
            candidates = alike or candidates
        newest = candidates[0].run_id if candidates else None
        if newest:
            chosen.append(newest)
    if not chosen:
        chosen = [r.run_id for r in (with_results or runs)[:2]]
    return chosen


def _run_of(runs: list, run_id: str):
    return next(run for run in runs if run.run_id == run_id)


def fold_metric_frame(runs: list, keys=GLANCE_KEYS) -> pd.DataFrame:
    """Long table run, fold, metric, value (fraction) from each run's per-fold results."""
    rows = []
    for run in runs:
        summary = summary_of(run)
        for key in keys:
            per_fold = (summary.get(key) or {}).get("per_fold", {}) if isinstance(summary.get(key), dict) else {}
            for fold, value in per_fold.items():
                if isinstance(value, int | float):
                    rows.append({"run": run.run_id, "fold": int(fold), "metric": key, "value": float(value)})
    return pd.DataFrame(rows, columns=["run", "fold", "metric", "value"])


def summed_confusion(run, head: str, fold: int | None = None) -> np.ndarray | None:
    """The run's test confusion matrix of `head` ('age' or 'gender'): one fold's, or the sum over folds."""
    folds = [fold] if fold is not None else sorted(run.test_metrics)
    matrices = []
    for k in folds:
        matrix = test_detail(run.test_metrics.get(k) or {}).get(f"{head}_confusion")
        if matrix is not None:
            try:
                matrices.append(np.asarray(matrix, dtype=np.int64))
            except (TypeError, ValueError):
                continue
    shapes = {m.shape for m in matrices}
    if not matrices or len(shapes) != 1 or matrices[0].ndim != 2:
        return None
    return np.sum(matrices, axis=0)


def per_class_frame(runs: list, head: str = "age") -> pd.DataFrame:
    """Recall per class (fraction) of each run over all its test folds (from the summed confusion)."""
    from audience.labels import AGE_CLASSES, GENDER_CLASSES

    names = AGE_CLASSES if head == "age" else GENDER_CLASSES
    rows = []
    for run in runs:
        matrix = summed_confusion(run, head)
        if matrix is None or matrix.shape[0] != len(names):
            continue
        support = matrix.sum(axis=1)
        for index, name in enumerate(names):
            recall = float(matrix[index, index] / support[index]) if support[index] else None
            rows.append({"run": run.run_id, "class": name, "recall": recall, "support": int(support[index])})
    return pd.DataFrame(rows, columns=["run", "class", "recall", "support"])


def leakage_frame(runs: list) -> pd.DataFrame:
    """The newest finished-or-partial run of each (arch, protocol) that has results, beside the reference rows."""
    rows, seen = [], set()
    for run in runs:
        config = _config(run)
        key = (config.get("arch"), config.get("protocol"))
        if None in key or key in seen or folds_done(run) == 0:
            continue
        seen.add(key)
        summary = summary_of(run)
        rows.append({
            "source": f"this app: run {run.run_id}", "arch": key[0],
            "protocol": protocol_label(config.get("protocol"), run.leaky,
                                       summary.get("split_level") or "subject"),
            "dataset": dataset_of(run), "folds done": folds_done(run),
            **{k: _stat(summary, k, "mean") for k in HEADLINE_KEYS},
            **{f"{k}_std": _stat(summary, k, "std") if folds_done(run) > 1 else None for k in HEADLINE_KEYS},
            "note": "",
        })
    rows.sort(key=lambda r: (str(r["arch"]), r["protocol"]))
    rows += [dict(r, dataset="Adience (published)") for r in REFERENCE_ROWS]
    return pd.DataFrame(rows)


def leakage_table(runs: list) -> pd.DataFrame:
    """leakage_frame for display (percent, mean ± std)."""
    frame = leakage_frame(runs)
    table = frame[["source", "arch", "protocol", "dataset"]].copy()
    for key in HEADLINE_KEYS:
        values = frame[key] if key in frame else [None] * len(frame)
        stds = frame[f"{key}_std"] if f"{key}_std" in frame else [None] * len(frame)
        table[column_of(key)] = [format_percent(m, s) for m, s in zip(values, stds, strict=True)]
    table["note"] = frame["note"].fillna("")
    return table


# ---------------------------------------------------------------- per group (issue 18)

GROUP_TABLE_COLUMNS: tuple[str, ...] = ("run", "group", "n", "age exact %", "age 1-off %", "gender f/m %")


def run_group_metrics(run) -> dict:
    """The per-group metrics of a run pooled over its test folds (group_metrics.pool_group_metrics of each
    fold's test_metrics.json "metrics"); {} when no fold has any."""
    from audience.train.group_metrics import has_group_data, pool_group_metrics

    details = [test_detail(run.test_metrics[fold]) for fold in sorted(run.test_metrics)]
    details = [d for d in details if has_group_data(d)]
    if not details:
        return {}
    return details[0] if len(details) == 1 else pool_group_metrics(details)


def group_accuracy_table(runs: list) -> pd.DataFrame:
    """Per-group accuracy of each run beside its overall numbers (GROUP_TABLE_COLUMNS, percent): every age
    group (exact, 1-off), the balanced mean, women and men, each race where the data has one (UTKFace), all
    faces. Test folds are pooled. A run scored before per-group accuracy was recorded gets what its stored
    confusion matrix gives (the age groups) and a row that says what is missing, or one row saying it has none."""
    from audience.train.group_metrics import NO_GROUP_DATA, format_group_table, group_table

    rows = []
    for run in runs:
        metrics = run_group_metrics(run)
        cells = format_group_table(group_table(metrics))
        if not cells:
            why = NO_GROUP_DATA.format(what="run") if run.test_metrics else "no finished test fold yet"
            rows.append([run.run_id, why, "-", "-", "-", "-"])
            continue
        rows += [[run.run_id, *row] for row in cells]
    return pd.DataFrame(rows, columns=list(GROUP_TABLE_COLUMNS))
