"""Run folders: unique names, atomic JSON, tolerant listing and reading."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from audience.errors import AudienceError
from audience.files import write_json_atomic
from audience.train.config import TrainConfig
from audience.train.runs import METRICS_COLUMNS, RunEmitter, create_run_dir, list_runs, read_run


def _config(**changes) -> TrainConfig:
    return TrainConfig(data="demo", arch="tiny", **changes)


def _fake_run(folder, state="finished", pid=None):
    folder.mkdir(parents=True)
    write_json_atomic(folder / "config.json", _config().to_dict())
    status = {"state": state, "host": os.uname().nodename, "pid": pid if pid is not None else os.getpid()}
    write_json_atomic(folder / "status.json", status)
    write_json_atomic(folder / "cv_summary.json", {"age_exact": {"mean": 0.5, "std": 0.0, "per_fold": {"0": 0.5}},
                                                   "leaky": False})
    (folder / "fold0").mkdir()
    row = dict.fromkeys(METRICS_COLUMNS, 0.5) | {"epoch": 1}
    pd.DataFrame([row]).to_csv(folder / "fold0" / "metrics.csv", index=False)
    write_json_atomic(folder / "fold0" / "test_metrics.json", {"fold": 0, "summary": {"age_exact": 0.5}})
    return folder


def test_run_folders_are_unique_and_named_after_the_run(tmp_path):
    first = create_run_dir(tmp_path, _config(run_name="my try/1"))
    second = create_run_dir(tmp_path, _config(run_name="my try/1"))
    assert first != second and first.is_dir() and second.is_dir()
    assert first.name.endswith("-tiny-folds-my-try-1")
    assert second.name.startswith(first.name[:15])


def test_json_is_written_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "x.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(ValueError):
        write_json_atomic(target, {"a": float("nan")})  # not valid JSON: the old file stays
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_read_run_returns_everything(tmp_path):
    run = read_run(_fake_run(tmp_path / "20260101-000000-tiny-folds"))
    assert not run.errors and run.state == "finished" and run.folds == [0]
    assert run.config["arch"] == "tiny" and run.summary["age_exact"]["mean"] == 0.5 and not run.leaky
    assert list(run.epochs[0].columns) == list(METRICS_COLUMNS)
    assert run.test_metrics[0]["summary"]["age_exact"] == 0.5


def test_listing_tolerates_damaged_runs(tmp_path):
    _fake_run(tmp_path / "20260101-000000-a")
    broken = _fake_run(tmp_path / "20260102-000000-b")
    (broken / "status.json").write_text("{half a fi")
    (broken / "fold0" / "metrics.csv").write_bytes(b"\x00\x01\x02,\n\"unclosed")
    (broken / "config.json").unlink()
    (tmp_path / "20260103-000000-empty").mkdir()
    (tmp_path / "a-file.txt").write_text("not a run")
    runs = list_runs(tmp_path)
    assert [r.run_id for r in runs] == ["20260103-000000-empty", "20260102-000000-b", "20260101-000000-a"]
    empty, damaged, fine = runs
    assert empty.errors == ["config.json: missing"] and empty.state == "unknown"
    assert any(e.startswith("status.json") for e in damaged.errors) and "config.json: missing" in damaged.errors
    assert not fine.errors
    detailed = read_run(broken)
    assert "fold0/metrics.csv: cannot be read (ParserError)" in detailed.errors and 0 not in detailed.epochs
    assert detailed.test_metrics[0]["fold"] == 0  # what could be read is still there
    assert list_runs(tmp_path / "nowhere") == []
    with pytest.raises(AudienceError, match="run folder not found"):
        read_run(tmp_path / "nowhere")


def test_a_running_run_whose_process_is_gone_reads_as_interrupted(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    assert read_run(_fake_run(tmp_path / "gone", state="running", pid=dead_pid)).state == "interrupted"
    assert read_run(_fake_run(tmp_path / "alive", state="running", pid=os.getppid())).state == "running"


def test_a_running_status_naming_this_process_is_running_only_while_it_holds_the_run(tmp_path):
    """After a container restart the server often has the PID that wrote a run's status before: that run is
    interrupted (and resumable), not running, unless this process really trains it."""
    from audience.train.runs import claim_run, release_run

    run = _fake_run(tmp_path / "own-pid", state="running")  # status: this host, this PID
    assert read_run(run).state == "interrupted"
    claim_run(run)
    try:
        assert read_run(run).state == "running"
    finally:
        release_run(run)


def test_the_emitter_keeps_early_messages_until_the_run_folder_exists(tmp_path):
    seen = []
    emit = RunEmitter(seen.append, folds=[0], device="cpu")
    emit({"type": "log", "message": "caching images: 10/10"})
    assert seen[0]["message"] == "caching images: 10/10" and "time" in seen[0]  # forwarded at once
    run_dir = tmp_path / "20260101-000000-tiny-folds"
    run_dir.mkdir()
    assert not any(run_dir.iterdir())  # nothing is written before the folder is attached
    emit.attach(run_dir)
    emit({"type": "run_start", "message": "starting run"})
    emit({"type": "batch", "fold": 0, "step": 1})  # batches have no line
    assert (run_dir / "train.log").read_text().splitlines() == ["caching images: 10/10", "starting run"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "running" and status["run_id"] == run_dir.name
