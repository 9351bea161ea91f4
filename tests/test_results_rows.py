"""Results-only Compare rows (issue 18): a model whose weights are not shipped (a ResNet50 trained on real faces)
ships its results file in checkpoints/results/, and the Compare tab shows it as a row beside runs and served models.

The format round-trips; `benchmark.py results` on a finished run writes the run's own test metrics (per-group
fields included), parameters, FLOPs and a 1-thread latency; the Compare tab shows the row in every view (runs
table, per-group table, charts); a bad results file is a problems row, never a failed start; such a row cannot be
served and its latency is not measured again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.checkpoints import save_tiny_checkpoint

from audience.compare import tables as compare
from audience.compare.results_file import (
    RESULTS_MAX_BYTES,
    RESULTS_PREFIX,
    RESULTS_STATE,
    ResultsFile,
    list_results_files,
    read_results_file,
    results_run,
    results_runs,
)
from audience.compare.results_writer import build_results, write_results
from audience.errors import AudienceError
from audience.registry import SUMMARY_KEYS
from audience.train.metrics import compute_metrics, summarize_folds
from audience.train.runs import COMMAND_FILE, read_run, write_epochs

RUN_ID = "20261206-120000-tiny-folds-utk-32px"
DATASET = {"name": "UTKFace", "synthetic": False, "format": "utkface", "policy": "bins", "split_level": "image",
           "faces": 60}
RACES = np.array(["White", "Black", "Asian", "Indian", "Others"])


def _metrics(seed: int = 0, n: int = 60, race: bool = True) -> dict:
    """compute_metrics of random predictions on `n` faces (UTKFace-like: a race per face)."""
    rng = np.random.default_rng(seed)
    age_true, gender_true = np.arange(n) % 8, rng.integers(0, 2, n)
    age_prob, gender_prob = rng.random((n, 8)), rng.random((n, 3))
    return compute_metrics(age_true, age_prob, gender_true, gender_prob, race=RACES[np.arange(n) % 5] if race else None)


def finished_run(runs: Path, run_id: str = RUN_ID, data: str = "/data/somewhere/utkface", image_size: int = 32,
                 metrics: dict | None = None, folds: tuple[int, ...] = (0,)) -> Path:
    """A finished run of `folds` in the trainer's layout, each with a real (tiny) best checkpoint and recorded test
    metrics (fold k: random predictions of seed k, or `metrics`)."""
    run = runs / run_id
    config = {"data": data, "arch": "tiny", "task": "age+gender", "protocol": "folds",
              "folds": ",".join(map(str, folds)), "epochs": 3, "batch_size": 16, "lr": 0.002, "image_size": image_size,
              "pretrained": False, "out": str(runs), "cache_dir": None, "seed": 0}
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    (run / "status.json").write_text(json.dumps({"state": "finished"}))
    (run / COMMAND_FILE).write_text(f"python scripts/train.py --data {data} --arch tiny --epochs 3\n")
    summaries = {}
    for fold in folds:
        folder = run / f"fold{fold}"
        folder.mkdir()
        fold_metrics = metrics or _metrics(seed=fold)
        summaries[fold] = {key: fold_metrics.get(key) for key in SUMMARY_KEYS}
        (folder / "test_metrics.json").write_text(json.dumps({
            "fold": fold, "protocol": "folds", "leaky": False, "best_epoch": 2,
            "sizes": {"train": 400, "val": 40, "test": 60}, "metrics": fold_metrics,
            "summary": {**summaries[fold], "age_ece_uncalibrated": 0.1}}))
        write_epochs(folder / "metrics.csv", [
            {"epoch": epoch, "train_loss": 2.0 / epoch, "val_loss": 2.2 / epoch, "val_age_exact": 0.2 * epoch,
             "val_gender_acc": 0.5, "lr": 1e-3, "images_per_s": 50.0, "seconds": 10.0} for epoch in (1, 2, 3)])
        save_tiny_checkpoint(folder, "best", {
            "image_size": image_size, "protocol": "folds", "leaky": False, "fold": fold, "metrics": fold_metrics,
            "dataset": DATASET, "split_level": "image", "metrics_on": "test"}, seed=fold)
    (run / "cv_summary.json").write_text(json.dumps({
        **summarize_folds(summaries), "protocol": "folds", "leaky": False, "dataset": "UTKFace",
        "synthetic": False, "split_level": "image", "arch": "tiny", "params": 1, "flops": 1.0,
        "train_seconds": 30.0, "folds_done": list(folds)}))
    return run


@pytest.fixture
def run(tmp_path) -> Path:
    return finished_run(tmp_path / "runs")


@pytest.fixture
def results(run) -> dict:
    return build_results(run, "utk-tiny-32px", "someone/utk-tiny-32px", note="32 px, 3 epochs: a test", fold=0,
                         repeats=2, say=lambda line: None)


def _as(results: dict, **changes) -> dict:
    """A copy of `results` with top-level `changes` (a results file of another arch or size, made by hand)."""
    return json.loads(json.dumps({**results, **changes}))


# --- the format -------------------------------------------------------------------------------------------


def test_the_format_round_trips(tmp_path, results):
    path = write_results(tmp_path / "results" / "utk-tiny-32px.json", results)
    read = read_results_file(path)
    assert read.as_json() == results == json.loads(path.read_text())
    assert ResultsFile.model_validate(read.as_json()) == read
    assert oct(path.stat().st_mode & 0o777) == "0o644" and not list(path.parent.glob(".*"))  # atomic: no temp left


def test_the_command_writes_the_runs_own_metrics_size_and_a_one_thread_latency(run, results):
    recorded = json.loads((run / "fold0" / "test_metrics.json").read_text())
    fold = results["folds"][0]
    assert fold["fold"] == 0 and fold["best_epoch"] == 2 and fold["test_faces"] == 60
    assert fold["summary"] == {key: recorded["summary"][key] for key in SUMMARY_KEYS}
    assert fold["metrics"] == recorded["metrics"]  # every field, per_race and race_gap included
    assert fold["metrics"]["per_race"]["Asian"]["n"] == 12 and fold["metrics_source"] == "recorded by the trainer"
    assert [row["epoch"] for row in fold["curves"]] == [1, 2, 3] and isinstance(fold["curves"][0]["epoch"], int)
    assert fold["curves"][1]["val_loss"] == pytest.approx(1.1)
    from audience.model.checkpoint import load_checkpoint
    from audience.model.network import count_flops, count_params

    model, _, metadata = load_checkpoint(run / "fold0" / "best")
    assert (results["params"], results["flops"]) == (count_params(model), count_flops(model, 32))
    assert results["weights"] == {"published_at": "someone/utk-tiny-32px", "file": "best.safetensors",
                                  "bytes": metadata.weights.bytes, "sha256": metadata.weights.sha256}
    latency = results["latency"]
    assert latency["threads"] == 1 and latency["repeats"] == 2 and latency["ms"] > 0 and len(latency["load"]) == 3
    assert latency["machine"]["cores"] == os.cpu_count()
    assert (results["arch"], results["image_size"], results["epochs"]) == ("tiny", 32, 3)
    assert results["protocol_label"] == "folds (image-level)" and results["dataset"]["name"] == "UTKFace"
    assert results["recipe"]["lr"] == 0.002 and results["recipe"]["data"] == "utkface"  # the local path cut
    assert not any("/" in str(value) for value in results["recipe"].values())
    assert results["note"] == "32 px, 3 epochs: a test" and results["source_run"] == RUN_ID


@pytest.mark.usefixtures("unmeasured_framing")
def test_a_real_training_run_gives_a_file_with_its_exact_test_metrics(tmp_path, small_root):
    """A run of the trainer itself (tiny, 1 epoch of 2 batches): every key its test_metrics.json records is in the
    format, with the same value (no per_race on Adience-like data: absent, not null)."""
    from audience.train.config import TrainConfig
    from audience.train.cross_validate import cross_validate

    config = TrainConfig.from_dict({"data": str(small_root), "arch": "tiny", "folds": "0", "epochs": 1,
                                    "batch_size": 16, "image_size": 32, "workers": 0, "max_train_batches": 2,
                                    "out": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")})
    run = cross_validate(config)
    results = build_results(run, "real-tiny", "someone/real-tiny", repeats=1, say=lambda line: None)
    recorded = json.loads((run / "fold0" / "test_metrics.json").read_text())
    assert results["folds"][0]["metrics"] == recorded["metrics"] and "per_race" not in recorded["metrics"]
    assert results["folds"][0]["summary"] == {key: recorded["summary"][key] for key in SUMMARY_KEYS}
    assert results["params"] == json.loads((run / "cv_summary.json").read_text())["params"]
    assert results["flops"] == json.loads((run / "cv_summary.json").read_text())["flops"]
    assert [row["epoch"] for row in results["folds"][0]["curves"]] == [1]
    assert read_results_file(write_results(tmp_path / "real-tiny.json", results)).as_json() == results


def test_every_finished_fold_by_default_with_mean_and_std_and_each_folds_checksum(tmp_path):
    run = finished_run(tmp_path / "runs", folds=(0, 1))
    results = build_results(run, "two-folds", "someone/two-folds", repeats=1, say=lambda line: None)
    assert [fold["fold"] for fold in results["folds"]] == [0, 1]
    sums = [json.loads((run / f"fold{k}" / "best.json").read_text())["weights"]["sha256"] for k in (0, 1)]
    assert [fold["weights_sha256"] for fold in results["folds"]] == sums and sums[0] != sums[1]
    assert "sha256" not in results["weights"]  # two folds, two weights: each fold names its own
    row = compare.runs_table([results_run(write_results(tmp_path / "results" / "two-folds.json", results))]).iloc[0]
    exact = [json.loads((run / f"fold{k}" / "test_metrics.json").read_text())["summary"]["age_exact"] for k in (0, 1)]
    assert row["folds"] == "2/2"
    assert row["age exact %"] == f"{100 * np.mean(exact):.1f} ± {100 * np.std(exact, ddof=1):.1f}"


def test_the_command_line_writes_the_file_into_checkpoints_results(monkeypatch, tmp_path, run, capsys):
    from audience.cli import benchmark

    monkeypatch.setenv("AUDIENCE_CHECKPOINTS", str(tmp_path / "checkpoints"))
    code = benchmark.main(["results", "--run", str(run), "--name", "utk tiny", "--weights-at", "someone/utk-tiny",
                           "--note", "a note", "--repeats", "2"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0, out
    report = json.loads(out[-1])
    path = tmp_path / "checkpoints" / "results" / "utk-tiny.json"
    assert report["path"] == str(path) and report["threads"] == 1
    assert read_results_file(path).folds[0].summary["age_exact"] == report["folds"]["0"]["age_exact"]
    assert out[-2].startswith(f"wrote {path}: tiny at 32px")


@pytest.mark.parametrize(("arguments", "sentence"), [
    (["--weights-at", "not a repo id"], "is not a Hub repo id such as user/model-name."),
    (["--weights-at", "nobody"], "names no owner"),
    (["--fold", "3"], "has no test results for fold 3 (finished folds: 0)."),
    (["--out", "somewhere.txt"], "must name a .json file."),
    (["--name", "///"], "has no letter or digit to make a file name from."),
])
def test_the_command_line_refuses_bad_arguments_with_one_sentence(monkeypatch, tmp_path, run, capsys, arguments,
                                                                   sentence):
    from audience.cli import benchmark

    monkeypatch.setenv("AUDIENCE_CHECKPOINTS", str(tmp_path / "checkpoints"))
    given = dict(zip(arguments[::2], arguments[1::2], strict=True))
    base = {"--run": str(run), "--name": "x", "--weights-at": "someone/x", "--repeats": "1",
            "--out": str(tmp_path / "out.json")} | given
    code = benchmark.main(["results", *[part for pair in base.items() for part in pair]])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1 and sentence in captured.err, captured.err
    assert "Traceback" not in captured.err and not (tmp_path / "checkpoints").exists()


def test_an_unfinished_or_missing_run_gets_a_sentence(tmp_path, run):
    with pytest.raises(AudienceError, match="does not exist"):
        build_results(tmp_path / "absent", "x", "someone/x")
    recorded = json.loads((run / "fold0" / "test_metrics.json").read_text())
    recorded["metrics"]["age_per_class"][0] = 1.5  # an accuracy above 1: the file would not be readable
    (run / "fold0" / "test_metrics.json").write_text(json.dumps(recorded))
    with pytest.raises(AudienceError, match=r"does not fit the results format: folds.0.metrics.age_per_class.0: input "
                                            r"should be less than or equal to 1 \(found 1.5\)\.$"):
        build_results(run, "x", "someone/x", repeats=1)
    (run / "fold0" / "test_metrics.json").unlink()
    with pytest.raises(AudienceError, match=r"has no finished fold yet"):
        build_results(run, "x", "someone/x")


def test_a_run_without_per_group_metrics_is_evaluated_again(tmp_path, small_root, monkeypatch):
    monkeypatch.setenv("AUDIENCE_HOME", str(tmp_path / "home"))
    old = {key: value for key, value in _metrics(race=False).items()
           if not key.startswith(("age_per_class", "balanced_", "gender_acc_female", "gender_acc_male",
                                  "gender_n_female", "gender_n_male"))}
    old.pop("age_confusion")
    run = finished_run(tmp_path / "runs", data=str(small_root), metrics=old)
    results = build_results(run, "old", "someone/old", fold=0, repeats=1, say=lambda line: None)
    fold = results["folds"][0]
    metrics = fold["metrics"]
    assert fold["metrics_source"].startswith("evaluated again")
    assert sum(metrics["age_per_class_n"]) == metrics["age_n"] > 0
    exact = [value for value in metrics["age_per_class"] if value is not None]
    assert metrics["balanced_age_exact"] == pytest.approx(np.mean(exact))
    assert fold["summary"]["age_exact"] == metrics["age_exact"]  # the summary is the new evaluation's


# --- the Compare tab --------------------------------------------------------------------------------------


@pytest.fixture
def tab(monkeypatch, tmp_path, results):
    """An app with no runs, the shipped folder holding a tiny served model, and results files of a ResNet50 and a
    MobileNetV3 at 64 px (made by hand from the tiny run's) beside a served MobileNetV3 at 112 px."""
    checkpoints = tmp_path / "checkpoints"
    monkeypatch.setenv("AUDIENCE_RUNS", str(tmp_path / "empty-runs"))
    monkeypatch.setenv("AUDIENCE_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("AUDIENCE_HOME", str(tmp_path / "home"))
    save_tiny_checkpoint(checkpoints, "served-mnv3", {
        "image_size": 112, "protocol": "folds", "fold": 0, "metrics": results["folds"][0]["metrics"],
        "dataset": DATASET, "metrics_on": "test", "shipped": True})
    meta = json.loads((checkpoints / "served-mnv3.json").read_text())
    (checkpoints / "served-mnv3.json").write_text(json.dumps({**meta, "arch": "mobilenetv3_large_100"}))
    folder = checkpoints / "results"
    write_results(folder / "utkface-resnet50-64px.json", _as(
        results, name="utkface-resnet50-64px", arch="resnet50", image_size=64, params=23_000_000,
        note="64 px, 15 epochs: CPU budget; compare with the MobileNetV3 row at the same size",
        weights={"published_at": "someone/utkface-resnet50-64px"}))
    write_results(folder / "utkface-mobilenetv3-64px.json", _as(
        results, name="utkface-mobilenetv3-64px", arch="mobilenetv3_large_100", image_size=64,
        weights={"published_at": "someone/utkface-mobilenetv3-64px"}))
    return checkpoints


def test_results_files_are_not_taken_for_models(tab):
    from audience.model.catalog import find_default_checkpoint, list_checkpoints
    from audience.publish.promote import checkpoints_table

    assert [path.name for path in list_checkpoints()] == ["served-mnv3.json"]
    assert find_default_checkpoint() == tab / "served-mnv3.json"
    assert list(checkpoints_table()["checkpoint"]) == ["served-mnv3"]
    assert [path.name for path in list_results_files()] == ["utkface-mobilenetv3-64px.json",
                                                             "utkface-resnet50-64px.json"]


def test_the_compare_tab_shows_the_resnet50_row_beside_the_mobilenetv3_at_its_size(tab, run):
    from audience.ui.compare import compare_runs

    outputs = compare_runs(None, None, None, True)
    message, table, chosen, groups = outputs[0], outputs[1], outputs[2], outputs[12]
    resnet, mobilenet = f"{RESULTS_PREFIX}utkface-resnet50-64px", f"{RESULTS_PREFIX}utkface-mobilenetv3-64px"
    assert chosen.value == [resnet, mobilenet]  # not the served MobileNetV3 at 112 px
    row = table.set_index("run").loc[resnet]
    assert row["state"] == RESULTS_STATE and row["arch"] == "resnet50" and row["dataset"] == "real (UTKFace)"
    assert row["protocol"] == "folds (image-level)" and row["params (M)"] == "23.00"
    assert row["latency source"] == "results file" and row["note"].startswith("64 px, 15 epochs")
    assert not row["problems"]
    assert (f"**{resnet}**: resnet50 trained on UTKFace, folds (image-level), test fold 0, 64 px, 3 epochs; weights "
            "not shipped (they would be published at `someone/utkface-resnet50-64px`). 64 px, 15 epochs: CPU budget; "
            "compare with the MobileNetV3 row at the same size.") in message
    # the per-group table of a results row is the one of the run it was made from
    expected = compare.group_accuracy_table([read_run(run)]).drop(columns="run")
    for run_id in (resnet, mobilenet):
        shown = groups[groups["run"] == run_id].drop(columns="run").reset_index(drop=True)
        pd.testing.assert_frame_equal(shown, expected)
    assert any(text.startswith("race Asian") for text in expected["group"])
    # the charts: accuracy per fold, learning curves, per-class accuracy and the confusion matrices
    fold_accuracy, curves, per_class, age_confusion = outputs[5], outputs[6], outputs[7], outputs[8]
    assert {trace.name for trace in fold_accuracy.data} == {resnet, mobilenet}
    assert {trace.name for trace in per_class.data} == {resnet, mobilenet}
    assert any(resnet in str(trace.name) for trace in curves.data)
    assert resnet in age_confusion.layout.title.text and age_confusion.data[0].z is not None


def test_a_results_row_cannot_be_served_nor_timed_again(tab, monkeypatch):
    from audience.ui import compare as tab_module
    from audience.ui.compare import measure_latency, promote

    timed = []
    monkeypatch.setattr(tab_module, "measure_cpu_latency", lambda arch, size, refresh: timed.append((arch, size)) or {
        "ms": 5.0, "min_ms": 4.0, "threads": 2})

    row = f"{RESULTS_PREFIX}utkface-resnet50-64px"
    message, _ = promote(row, "0")
    assert message == (f"**Not promoted:** {row} is a results-only row: its weights are not shipped with the app, "
                       "so there is no model to serve.")
    assert not (Path(os.environ["AUDIENCE_MODELS"]) / ".default-model.json").exists()
    message, table = measure_latency(True)
    assert f"{row}: not measured here: its weights are not shipped" in message
    assert timed == [("mobilenetv3_large_100", 112)]  # the served model only: nothing for the results rows
    assert table.set_index("run").loc[row, "CPU ms"] != "-"


BAD_FILES = {
    "truncated.json": ("{", "not valid JSON"),
    "deep.json": ("[" * 100_000 + "]" * 100_000, "nested deeper than 64 levels"),
    "big.json": (json.dumps({"format": "audience-results", "pad": "x" * RESULTS_MAX_BYTES}), "larger than 1,048,576"),
    "list.json": ("[]", "is not a JSON object"),
    "other.json": (json.dumps({"format": "something else"}), "is not an Audience results file"),
}


def test_bad_results_files_are_problem_rows_and_the_app_still_starts(tab, results):
    folder = tab / "results"
    for name, (text, _) in BAD_FILES.items():
        (folder / name).write_text(text)
    typed = _as(results, params="many")
    write_results(folder / "typed.json", typed)
    negative = _as(results)
    negative["folds"][0]["metrics"]["age_per_class"][0] = -0.5
    write_results(folder / "negative.json", negative)
    short = _as(results)
    short["folds"][0]["metrics"]["per_race"]["Asian"]["n"] = "12"
    write_results(folder / "short.json", short)
    expected = {name: reason for name, (_, reason) in BAD_FILES.items()} | {
        "typed.json": "params: input should be a valid integer", "short.json": "per_race.Asian.n",
        "negative.json": "age_per_class.0: input should be greater than or equal to 0"}
    rows = {run.run_id: run for run in results_runs()}
    for name, reason in expected.items():
        run = rows[f"{RESULTS_PREFIX}{Path(name).stem}"]
        assert len(run.errors) == 1 and reason in run.errors[0] and name in run.errors[0], (name, run.errors)
    import app  # builds the Blocks at import: a bad results file does not stop it

    assert app.build_demo() is not None
    from audience.ui.compare import compare_runs

    outputs = compare_runs(None, None, None, True)
    problems = outputs[1].set_index("run")["problems"]
    assert all(reason in problems[f"{RESULTS_PREFIX}{Path(name).stem}"] for name, reason in expected.items())
    assert problems[f"{RESULTS_PREFIX}utkface-resnet50-64px"] == ""  # the good rows stay good
    assert "Some files could not be read" in outputs[0]


def test_a_results_row_with_a_wrong_file_reads_like_a_problem_row(tmp_path):
    (tmp_path / "results").mkdir()
    path = tmp_path / "results" / "gone.json"
    os.mkfifo(tmp_path / "results" / "fifo.json")
    row = results_run(path)
    assert row.errors == ["Results file gone.json does not exist."] and row.state == RESULTS_STATE
    fifo = results_run(tmp_path / "results" / "fifo.json")
    assert fifo.errors == ["Results file fifo.json cannot be read (not a regular file)."]  # refused, not blocked on


# --- over raw HTTP, against a public deployment that allows promotion (as a Space owner may) ----------------


@pytest.mark.slow
def test_over_http_a_results_row_is_shown_refused_for_serving_and_a_bad_file_is_a_problem(tmp_path, results,
                                                                                           demo_root):
    from fixtures.app_server import start_app_server
    from test_bad_inputs import call_raw, sse_data

    folder = tmp_path / "server" / "checkpoints" / "results"
    write_results(folder / "utkface-resnet50-64px.json", _as(results, name="utkface-resnet50-64px", arch="resnet50",
                                                             image_size=64))
    (folder / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    server = start_app_server(tmp_path / "server", demo_root, extra_env={"GRADIO_SERVER_NAME": "0.0.0.0",
                                                                        "AUDIENCE_ALLOW_TRAINING": "1"})
    try:
        outputs = sse_data(call_raw(server, "compare", [[], None, "all folds", True]))
        table, groups = outputs[1], outputs[12]
        rows = {row[0]: dict(zip(table["headers"], row, strict=True)) for row in table["data"]}
        row = rows[f"{RESULTS_PREFIX}utkface-resnet50-64px"]
        assert row["state"] == RESULTS_STATE and row["arch"] == "resnet50" and row["problems"] == ""
        assert "nested deeper than 64 levels" in rows[f"{RESULTS_PREFIX}deep"]["problems"]
        assert f"{RESULTS_PREFIX}utkface-resnet50-64px" in {line[0] for line in groups["data"]}
        message = sse_data(call_raw(server, "promote", [f"{RESULTS_PREFIX}utkface-resnet50-64px", "0", ""]))[0]
        assert message.startswith("**Not promoted:** results:utkface-resnet50-64px is a results-only row"), message
        assert not (server.models / "utkface-resnet50-64px.json").exists()
        message = sse_data(call_raw(server, "measure_latency", [True]))[0]
        assert "results:utkface-resnet50-64px: not measured here" in message, message
        assert server.alive()
    finally:
        server.stop_soon()
