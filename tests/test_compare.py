"""Compare: hand-made run folders (finished, half-written, corrupt) -> tables, figures, promotion, latency."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audience import figures
from audience.bench.model_latency import cached_latency, measure_cpu_latency
from audience.compare import plots
from audience.compare import tables as compare
from audience.errors import AudienceError
from audience.model.checkpoint import load_checkpoint, save_checkpoint
from audience.model.network import build_model
from audience.publish.promote import checkpoints_table, promote_checkpoint
from audience.train.metrics import compute_metrics


def _fold_metrics(age_correct: int, gender_correct: int, n: int = 16) -> dict:
    """compute_metrics output where `age_correct` of n age rows (2 per class) and `gender_correct` are right."""
    age_true = np.repeat(np.arange(8), n // 8)
    age_pred = np.where(np.arange(n) < age_correct, age_true, (age_true + 1) % 8)
    gender_true = np.arange(n) % 3
    gender_pred = np.where(np.arange(n) < gender_correct, gender_true, (gender_true + 1) % 3)
    return compute_metrics(age_true, np.eye(8)[age_pred], gender_true, np.eye(3)[gender_pred])


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not isinstance(v, list)}


def make_run(runs: Path, run_id: str, arch: str = "tiny", protocol: str = "folds", folds: dict | None = None,
             state: str = "finished", synthetic: bool = True, summary: bool = True, planned: str = "all") -> Path:
    """A run folder in the trainer's layout; `folds` maps fold -> (age_correct, gender_correct) of 16."""
    run = runs / run_id
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"data": "demo", "arch": arch, "task": "age+gender",
                                                 "protocol": protocol, "folds": planned, "image_size": 32}))
    # A live process (the test runner's parent) that is not this one: a "running" status naming this very
    # process without its lock reads "interrupted" (runs.RunInfo.state).
    (run / "status.json").write_text(json.dumps({"state": state, "host": socket.gethostname(), "pid": os.getppid()}))
    per_fold = {}
    for fold, (age, gender) in (folds or {}).items():
        folder = run / f"fold{fold}"
        folder.mkdir()
        pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.5], "val_loss": [2.1, 1.8], "val_age_exact": [0.2, 0.4],
                      "val_gender_acc": [0.5, 0.7]}).to_csv(folder / "metrics.csv", index=False)
        metrics = _fold_metrics(age, gender)
        per_fold[fold] = _scalars(metrics)
        (folder / "test_metrics.json").write_text(json.dumps({"fold": fold, "protocol": protocol, "metrics": metrics,
                                                              "summary": per_fold[fold]}))
    if summary and per_fold:
        from audience.train.metrics import summarize_folds

        (run / "cv_summary.json").write_text(json.dumps({
            **summarize_folds(per_fold), "protocol": protocol, "leaky": protocol == "random", "dataset": "demo",
            "synthetic": synthetic, "arch": arch, "params": 123_000, "flops": 4_500_000, "train_seconds": 75.0,
            "folds_done": sorted(per_fold)}))
    return run


def test_an_empty_runs_folder_gives_empty_views(tmp_path):
    runs = compare.read_runs(tmp_path / "absent")
    assert runs == []
    assert compare.runs_table(runs).empty
    assert compare.default_selection(runs) == []
    for figure in (plots.plot_fold_accuracy(runs), plots.plot_learning_curves(runs), plots.plot_per_class(runs),
                   plots.plot_confusion(None)):
        assert len(figure.data) == 0 and figure.layout.annotations  # says why it is empty
    leakage = compare.leakage_frame(runs)
    assert list(leakage["source"]).count("the original notebooks, Step 2") == 3 and len(leakage) == 4


def test_a_finished_run_is_one_row_with_mean_and_std(tmp_path):
    make_run(tmp_path, "20260101-000000-tiny-folds", folds={0: (8, 12), 1: (12, 12)})
    [run] = compare.read_runs(tmp_path)
    row = compare.runs_table([run]).iloc[0]
    assert row["run"] == "20260101-000000-tiny-folds" and row["state"] == "finished"
    assert row["protocol"] == "folds (subject-exclusive)" and row["dataset"] == "synthetic demo"
    assert row["folds"] == "2/5"
    assert row["age exact %"] == "62.5 ± 17.7"  # 8/16 and 12/16
    assert row["gender f/m/u %"] == "75.0 ± 0.0"
    assert row["params (M)"] == "0.12" and row["train time"] == "1m15s" and row["problems"] == ""
    frame = compare.runs_frame([run]).iloc[0]
    assert frame["age_exact_mean"] == pytest.approx(0.625)


def test_a_random_protocol_run_is_marked_leaky(tmp_path):
    make_run(tmp_path, "20260101-000000-resnet50-random", arch="resnet50", protocol="random", folds={0: (14, 15)})
    make_run(tmp_path, "20260102-000000-resnet50-folds", arch="resnet50", protocol="folds", folds={0: (6, 12)})
    runs = compare.read_runs(tmp_path)
    table = compare.runs_table(runs).set_index("run")
    assert table.loc["20260101-000000-resnet50-random", "protocol"] == compare.LEAKY_MARK
    assert table.loc["20260102-000000-resnet50-folds", "protocol"] == "folds (subject-exclusive)"
    leakage = compare.leakage_frame(runs)
    ours = leakage[leakage["source"].str.startswith("this app")]
    assert sorted(ours["protocol"]) == ["folds (subject-exclusive)", compare.LEAKY_MARK]
    assert set(ours["arch"]) == {"resnet50"}
    seed = leakage[leakage["source"] == "the original notebooks, Step 2"].set_index("arch")
    assert seed.loc["resnet50", "gender_acc"] == 0.9266 and seed.loc["resnet50", "age_exact"] == 0.5745
    assert seed.loc["resnet50 (one-cycle)", "age_exact"] == 0.6827 and seed.loc["mobilenetv3", "gender_acc"] == 0.9668
    assert (seed["protocol"] == compare.SEED_PROTOCOL).all() and "not comparable" in compare.SEED_PROTOCOL
    levi = compare.leakage_table(runs).set_index("source").loc["Levi & Hassner 2015"]
    assert (levi["age exact %"], levi["age 1-off %"], levi["gender f/m %"], levi["gender f/m/u %"]) == (
        "50.7 ± 5.1", "84.7 ± 2.2", "86.8 ± 1.4", "-")
    assert len(plots.plot_leakage(leakage).data) == 3


def test_a_half_written_run_shows_what_it_has(tmp_path):
    run_dir = make_run(tmp_path, "20260101-000000-tiny-folds", folds={}, state="running")
    (run_dir / "fold0").mkdir()
    pd.DataFrame({"epoch": [1], "train_loss": [2.0], "val_loss": [2.2], "val_age_exact": [0.3],
                  "val_gender_acc": [0.6]}).to_csv(run_dir / "fold0" / "metrics.csv", index=False)
    [run] = compare.read_runs(tmp_path)
    row = compare.runs_table([run]).iloc[0]
    assert (row["state"], row["folds"], row["age exact %"], row["problems"]) == ("running", "0/5", "-", "")
    assert len(plots.plot_learning_curves([run]).data) == 4  # its one epoch is already on the curves
    assert compare.default_selection([run]) == [run.run_id]  # nothing better to show


def test_corrupt_files_are_named_and_the_rest_is_shown(tmp_path):
    run_dir = make_run(tmp_path, "20260101-000000-tiny-folds", folds={0: (8, 8), 1: (16, 16)})
    (run_dir / "cv_summary.json").write_text("{truncated", encoding="utf-8")
    (run_dir / "fold1" / "metrics.csv").write_bytes(b"\xff\xfe\x00garbage\x00")
    broken = make_run(tmp_path, "20260102-000000-tiny-folds", folds={0: (4, 4)})
    (broken / "config.json").unlink()
    (broken / "fold0" / "test_metrics.json").write_text("[1, 2", encoding="utf-8")
    runs = {run.run_id: run for run in compare.read_runs(tmp_path)}
    table = compare.runs_table(list(runs.values())).set_index("run")
    first = table.loc["20260101-000000-tiny-folds"]
    assert "cv_summary.json: cannot be read" in first["problems"]
    assert "fold1/metrics.csv: cannot be read" in first["problems"]
    assert first["age exact %"] == "75.0 ± 35.4"  # rebuilt from the two test_metrics.json files
    second = table.loc["20260102-000000-tiny-folds"]
    assert "config.json: missing" in second["problems"] and "test_metrics.json: cannot be read" in second["problems"]
    assert second["arch"] == "tiny"  # from cv_summary.json, which is intact
    assert len(plots.plot_learning_curves([runs["20260101-000000-tiny-folds"]]).data) == 4  # fold 0 only


def test_a_summary_with_wrong_types_is_named_and_the_rest_is_shown(tmp_path):
    """A cv_summary.json whose metrics are not numbers ("mean": "x") once made /compare fail for every run."""
    bad = make_run(tmp_path, "20260101-000000-tiny-folds", folds={0: (8, 8), 1: (16, 16)})
    summary = json.loads((bad / "cv_summary.json").read_text())
    summary["age_exact"]["mean"] = "x"
    (bad / "cv_summary.json").write_text(json.dumps(summary))
    make_run(tmp_path, "20260102-000000-tiny-folds", folds={0: (4, 4)})
    runs = compare.read_runs(tmp_path)
    table = compare.runs_table(runs).set_index("run")
    first = table.loc["20260101-000000-tiny-folds"]
    assert "cv_summary.json: age_exact.mean: input should be a valid number" in first["problems"]
    assert first["age exact %"] == "75.0 ± 35.4"  # rebuilt from the two test_metrics.json files
    assert table.loc["20260102-000000-tiny-folds"]["problems"] == ""
    assert len(plots.plot_fold_accuracy(runs).data) > 0


def test_default_view_puts_resnet50_beside_mobilenetv3(tmp_path):
    make_run(tmp_path, "20260101-000000-resnet50-folds", arch="resnet50", folds={0: (8, 8)})
    make_run(tmp_path, "20260102-000000-resnet50-folds", arch="resnet50", folds={0: (9, 8)})
    make_run(tmp_path, "20260103-000000-mobilenetv3_large_100-folds", arch="mobilenetv3_large_100", folds={0: (9, 8)})
    make_run(tmp_path, "20260104-000000-resnet50-folds", arch="resnet50", folds={}, state="running")
    make_run(tmp_path, "20260105-000000-tiny-folds", folds={0: (9, 8)})
    runs = compare.read_runs(tmp_path)
    assert compare.default_selection(runs) == ["20260102-000000-resnet50-folds",
                                               "20260103-000000-mobilenetv3_large_100-folds"]
    chosen = [r for r in runs if r.run_id in compare.default_selection(runs)]
    figure = plots.plot_fold_accuracy(chosen)
    assert {trace.name for trace in figure.data} == set(compare.default_selection(runs))


def test_confusion_matrices_and_per_class_accuracy(tmp_path):
    make_run(tmp_path, "20260101-000000-tiny-folds", folds={0: (16, 16), 1: (8, 4)})
    [run] = compare.read_runs(tmp_path)
    age = compare.summed_confusion(run, "age")
    assert age.shape == (8, 8) and age.sum() == 32 and np.trace(age) == 24
    assert np.trace(compare.summed_confusion(run, "age", fold=1)) == 8
    assert compare.summed_confusion(run, "gender").shape == (3, 3)
    per_class = compare.per_class_frame([run]).set_index("class")
    # Fold 1 gets its first 8 rows right: classes 0-3 (2 rows each); fold 0 all 16.
    assert per_class.loc["0-2", "recall"] == 1.0 and per_class.loc["55-100", "recall"] == 0.5
    assert per_class.loc["55-100", "support"] == 4
    heatmap = plots.plot_confusion(run, "age").data[0]
    assert np.asarray(heatmap.z).shape == (8, 8) and np.asarray(heatmap.z)[0, 0] == 100
    assert np.asarray(plots.plot_confusion(run, "gender", fold=0).data[0].z).shape == (3, 3)
    assert len(plots.plot_per_class([run]).data) == 1


def test_job_curves_one_colour_per_fold():
    points = [{"fold": 0, "epoch": 1, "train_loss": 2.0, "val_loss": 2.2, "val_age_exact": 0.2, "val_gender_acc": 0.5},
              {"fold": 0, "epoch": 2, "train_loss": 1.8, "val_loss": 2.0, "val_age_exact": 0.3, "val_gender_acc": 0.6},
              {"fold": 1, "epoch": 1, "train_loss": 2.1, "val_loss": 2.3, "val_age_exact": 0.1, "val_gender_acc": 0.4}]
    figure = figures.plot_job_curves(points)
    assert len(figure.data) == 8
    assert list(figure.data[2].y) == pytest.approx([20.0, 30.0])  # validation accuracy in percent
    assert len(figures.plot_job_curves([]).data) == 0


def _run_with_checkpoint(runs: Path) -> Path:
    run = make_run(runs, "20260101-093128-tiny-folds", folds={0: (8, 8)})
    save_checkpoint(run / "fold0" / "best", build_model("tiny"), {
        "image_size": 32, "protocol": "folds", "fold": 0, "metrics": {"age_exact": 0.5},
        "dataset": {"name": "demo", "synthetic": True}})
    return run


def test_promote_copies_the_best_checkpoint_under_a_readable_name(tmp_path):
    run = _run_with_checkpoint(tmp_path / "runs")
    served = tmp_path / "checkpoints"
    path = promote_checkpoint(run, 0, checkpoints_dir=served)
    assert path.name == "tiny-age-gender-folds-fold0-20260101-093128-demo.json"
    model, _, meta = load_checkpoint(path)  # loads, checksum verified
    source_sha = json.loads((run / "fold0" / "best.json").read_text(encoding="utf-8"))["weights"]["sha256"]
    assert meta.promoted_from.as_dict() == {"run": run.name, "fold": 0, "sha256": source_sha}
    assert meta.weights.dtype == "float32" and "shipped" not in meta.as_json()
    assert meta.weights.file == path.stem + ".safetensors"
    assert promote_checkpoint(run, 0, checkpoints_dir=served) == path  # same weights: no second copy
    assert sorted(p.name for p in served.iterdir()) == [path.name, path.stem + ".safetensors"]
    table = checkpoints_table(served)
    assert table.iloc[0]["checkpoint"] == path.stem and table.iloc[0]["from run"] == run.name


def test_promote_in_float16_halves_the_file_and_predicts_the_same(tmp_path):
    import torch

    from audience.compare.served_rows import checkpoint_runs

    run = _run_with_checkpoint(tmp_path / "runs")
    (run / "command.txt").write_text("python scripts/train.py --data demo\n", encoding="utf-8")
    full = promote_checkpoint(run, 0, checkpoints_dir=tmp_path / "full", half=False)
    half = promote_checkpoint(run, 0, checkpoints_dir=tmp_path / "half", half=True, shipped=True)
    assert promote_checkpoint(run, 0, checkpoints_dir=tmp_path / "half", half=True) == half  # no second copy
    size = {p: (p.parent / (p.stem + ".safetensors")).stat().st_size for p in (full, half)}
    assert size[half] < 0.6 * size[full]
    model_full, transform, _ = load_checkpoint(full)
    model_half, _, meta = load_checkpoint(half)  # checksum of the float16 file verified, loaded as float32
    assert meta.weights.dtype == "float16" and next(model_half.parameters()).dtype == torch.float32
    assert meta.training.commands == ["python scripts/train.py --data demo"] and meta.shipped is True
    torch.manual_seed(0)
    batch = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        a, b = model_full(batch), model_half(batch)
    for head in ("age", "gender"):
        assert torch.allclose(torch.softmax(a[head], 1), torch.softmax(b[head], 1), atol=2e-3)
        assert torch.equal(a[head].argmax(1), b[head].argmax(1))
    (row,) = checkpoint_runs(tmp_path / "half")
    assert row.state == "shipped" and row.run_id == f"checkpoint:{half.stem}"
    table = compare.runs_table([row])
    assert table.iloc[0]["state"] == "shipped" and table.iloc[0]["age exact %"] == "50.0"


def test_promote_never_overwrites_a_different_checkpoint(tmp_path):
    run = _run_with_checkpoint(tmp_path / "runs")
    served = tmp_path / "checkpoints"
    served.mkdir()
    (served / "mine.safetensors").write_bytes(b"someone else's weights")
    (served / "mine.json").write_text("{}", encoding="utf-8")
    path = promote_checkpoint(run, 0, name="mine", checkpoints_dir=served)
    assert path.name == "mine-2.json"
    assert (served / "mine.safetensors").read_bytes() == b"someone else's weights"
    assert (served / "mine.json").read_text(encoding="utf-8") == "{}"
    assert not [p for p in served.iterdir() if p.name.startswith(".")]  # no temp files left


def test_promote_refuses_damaged_or_missing_checkpoints(tmp_path):
    run = _run_with_checkpoint(tmp_path / "runs")
    served = tmp_path / "checkpoints"
    with pytest.raises(AudienceError, match="no best checkpoint for fold 3"):
        promote_checkpoint(run, 3, checkpoints_dir=served)
    weights = run / "fold0" / "best.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"XXXXXXXX")
    with pytest.raises(AudienceError, match="does not match its recorded sha256"):
        promote_checkpoint(run, 0, checkpoints_dir=served)
    assert not served.exists() or not any(served.iterdir())


def test_cpu_latency_is_measured_once_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIENCE_HOME", str(tmp_path / "home"))
    run_dir = make_run(tmp_path / "runs", "20260101-000000-tiny-folds", folds={0: (8, 8)})
    [run] = compare.read_runs(tmp_path / "runs")
    assert compare.latency_of(run) == (None, "not measured (press 'Measure CPU latency')")
    assert compare.runs_table([run]).iloc[0]["latency source"] == "not measured"  # short: a narrow column
    entry = measure_cpu_latency("tiny", 32, repeats=3)
    assert entry["ms"] > 0 and entry["repeats"] == 3
    assert cached_latency("tiny", 32) == entry
    assert measure_cpu_latency("tiny", 32) == entry  # cached: not measured again
    ms, source = compare.latency_of(run)
    assert ms == entry["ms"] and source.startswith("measured here ") and "random-init tiny at 32px" in source
    when = entry["measured"][:16].replace("T", " ")
    assert compare.runs_table([run]).iloc[0][["CPU ms", "latency source"]].tolist() == [
        f"{entry['ms']:.1f}", f"measured {when}"]
    assert 0 < entry["min_ms"] <= entry["ms"]
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    (run_dir / "cv_summary.json").write_text(json.dumps({**summary, "cpu_latency_ms": 4.5}))
    [run] = compare.read_runs(tmp_path / "runs")
    assert compare.latency_of(run) == (4.5, "stored by the trainer")
    assert compare.runs_table([run]).iloc[0]["latency source"] == "trainer"


def test_leakage_chart_marks_synthetic_runs_and_compares_gender_on_f_m():
    import pandas as pd

    frame = pd.DataFrame([
        {"source": "this app: run r1", "arch": "tiny", "protocol": "folds (subject-exclusive)",
         "dataset": "synthetic demo", "age_exact": 0.6, "gender_acc": 0.8, "gender_acc_fm": 0.9},
        *[dict(row, dataset="Adience (published)") for row in compare.REFERENCE_ROWS],
    ])
    figure = plots.plot_leakage(frame)
    labels, gender = list(figure.data[1].y), figure.data[1]
    assert "SYNTHETIC" in labels[0] and not any("SYNTHETIC" in label for label in labels[1:])
    assert gender.name == "gender f/m %" and abs(gender.x[0] - 90.0) < 1e-9
    assert figure.data[2].name == "gender f/m/u %" and abs(figure.data[2].x[0] - 80.0) < 1e-9
    assert any(label.startswith("3-layer CNN") for label in labels)
    assert all("seed" not in label for label in labels) and any("original notebooks" in label for label in labels)


def test_learning_curve_ticks_are_whole_epochs_and_not_crammed():
    long = pd.DataFrame({"epoch": range(17), "train_loss": np.linspace(2, 1, 17)})
    figure = figures.plot_epoch_curves({"fold 0": long})
    assert figure.layout.xaxis.dtick == 2 and figure.layout.xaxis.tickformat == "d"  # 0, 2, ... 16: 9 ticks
    short = figures.plot_epoch_curves({"fold 0": long.head(5)})
    assert short.layout.xaxis.dtick == 1


def test_every_view_of_the_compare_tab_labels_protocol_and_gender_alike(tmp_path):
    """The shipped UTKFace model is 'folds (image-level)' in the runs table, the leakage table and chart, and the
    served checkpoints' table; the gender columns of the tables are the chart's legend names."""
    from audience.compare.served_rows import checkpoint_runs
    from audience.registry import IMAGE_FOLDS_LABEL, column_of
    from audience.ui.compare import DEFAULT_RUN_COLUMNS, RUN_COLUMN_WIDTHS

    shipped = Path(__file__).resolve().parent.parent / "checkpoints"
    make_run(tmp_path, "20260101-000000-resnet50-random", arch="resnet50", protocol="random", folds={0: (14, 15)})
    runs = checkpoint_runs(shipped) + compare.read_runs(tmp_path)
    [row] = [r for _, r in compare.runs_table(runs).iterrows() if r["run"].startswith("checkpoint:utkface")]
    leakage = compare.leakage_frame(runs)
    ours = leakage[leakage["source"].str.contains("utkface")]
    served = checkpoints_table(shipped)
    assert row["protocol"] == IMAGE_FOLDS_LABEL == ours["protocol"].iloc[0] == served["protocol"].iloc[0]
    labels = [label for label in (trace.y for trace in plots.plot_leakage(leakage).data)][0]
    assert any(IMAGE_FOLDS_LABEL in label for label in labels)
    random_row = compare.runs_table(runs).set_index("run").loc["20260101-000000-resnet50-random"]
    assert random_row["protocol"] == leakage[leakage["arch"] == "resnet50"]["protocol"].iloc[0] == compare.LEAKY_MARK
    legend = [trace.name for trace in plots.plot_leakage(leakage).data]
    table_columns = list(compare.leakage_table(runs).columns)
    assert legend and all(name in table_columns for name in legend)
    assert {column_of("gender_acc"), column_of("gender_acc_fm")} <= set(table_columns) & set(RUN_COLUMN_WIDTHS)
    assert column_of("gender_acc_fm") in DEFAULT_RUN_COLUMNS and "gender %" not in served.columns
    fold_chart = plots.plot_fold_accuracy(runs)
    assert all(annotation.text in RUN_COLUMN_WIDTHS for annotation in fold_chart.layout.annotations)
