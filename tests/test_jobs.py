"""The background job registry: permission, data-root checks, one job at a time, stop, failure, events.

The registry is tested with a stand-in for cross_validate that emits the documented events and
then waits for the stop Event or a release, so each state is reached deterministically and fast;
the UI test (test_ui_train_compare.py) runs the real trainer through the same code.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from audience.errors import AudienceError
from audience.train import job as jobs
from audience.train.config import TrainConfig

# in-process training here keeps the default framing (conftest.unmeasured_framing)
pytestmark = pytest.mark.usefixtures("unmeasured_framing")


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch, tmp_path):
    for name in ("SPACE_ID", "AUDIENCE_ALLOW_TRAINING", "GRADIO_SERVER_NAME", "AUDIENCE_DATA", "AUDIENCE_DATA_DIRS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUDIENCE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("AUDIENCE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(jobs, "_job", None)
    yield
    jobs.stop_job()
    jobs.wait_job(timeout=10)


class FakeTrainer:
    """Emits run_start, fold_start, a batch and an epoch, then waits; outcome set by the test."""

    def __init__(self, run_dir, fail: Exception | None = None):
        self.run_dir, self.fail = run_dir, fail
        self.release = threading.Event()
        self.waiting = threading.Event()
        self.saw_stop = False

    def __call__(self, config, on_event=None, stop=None, resume=None):
        self.resume = resume
        on_event({"type": "run_start", "run_dir": str(self.run_dir), "folds": [2, 3], "epochs": 4,
                  "device": "cpu (2 cores, 2 threads)", "message": "starting run"})
        on_event({"type": "fold_start", "fold": 3, "epoch": 0, "epochs": 4, "steps": 10, "message": "fold 3 starts"})
        on_event({"type": "batch", "fold": 3, "epoch": 1, "epochs": 4, "step": 5, "steps": 10, "loss": 2.0,
                  "eta_s": 75.0, "images_per_s": 123.0})
        on_event({"type": "epoch", "fold": 3, "epoch": 1, "epochs": 4, "loss": 1.9, "eta_s": 70.0,
                  "metrics": {"epoch": 1, "train_loss": 1.9, "val_loss": 2.1, "val_age_exact": 0.25,
                              "val_gender_acc": 0.6}, "message": "fold 3 epoch 1/4: loss 1.9"})
        self.waiting.set()
        while not self.release.is_set():
            if stop is not None and stop.is_set():
                self.saw_stop = True
                break
            time.sleep(0.01)
        if self.fail is not None:
            raise self.fail
        return self.run_dir


def _config(**changes) -> TrainConfig:
    return TrainConfig(data="demo", arch="tiny", folds="2,3", epochs=4, **changes)


def _start_fake(monkeypatch, tmp_path, **fake_options) -> FakeTrainer:
    import audience.train.cross_validate

    fake = FakeTrainer(tmp_path / "runs" / "20260101-000000-tiny-folds", **fake_options)
    monkeypatch.setattr(audience.train.cross_validate, "cross_validate", fake)
    jobs.start_job(_config())
    assert fake.waiting.wait(10)
    return fake


@pytest.mark.parametrize(("env", "server_name", "share", "allowed"), [
    ({}, None, False, True),
    ({}, "127.0.0.1", False, True),
    ({}, "localhost", False, True),
    ({}, "::1", False, True),
    ({}, "0.0.0.0", False, False),
    ({}, "192.168.1.5", False, False),
    ({}, "127.0.0.1", True, False),
    ({"GRADIO_SERVER_NAME": "0.0.0.0"}, None, False, False),
    ({"SPACE_ID": "someone/audience"}, "127.0.0.1", False, False),
    ({"SPACE_ID": "someone/audience", "AUDIENCE_ALLOW_TRAINING": "1"}, "0.0.0.0", True, True),
])
def test_training_allowed(monkeypatch, env, server_name, share, allowed):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ok, reason = jobs.training_allowed(server_name, share)
    assert ok is allowed
    if not allowed:
        assert "AUDIENCE_ALLOW_TRAINING=1" in reason


def test_start_refused_where_training_is_off(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/audience")
    with pytest.raises(AudienceError, match="AUDIENCE_ALLOW_TRAINING"):
        jobs.start_job(_config())
    assert jobs.job_status().state == "idle"


def test_data_root_must_be_under_an_allowed_folder_on_a_public_server(monkeypatch, tmp_path, demo_root):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(AudienceError, match="not under a folder the app may open"):
        jobs.training_data_root(str(outside), "0.0.0.0")
    with pytest.raises(AudienceError, match="not under a folder"):
        jobs.training_data_root("/etc", share=True)
    # a local run (loopback, no share link, not a Space) opens the folder its user types
    assert jobs.training_data_root(str(outside), "127.0.0.1") == outside
    assert jobs.training_data_root(str(outside)) == outside
    monkeypatch.setenv("AUDIENCE_DATA_DIRS", str(demo_root.parent))
    assert jobs.training_data_root(str(demo_root), "0.0.0.0") == demo_root.resolve()
    with pytest.raises(AudienceError, match="does not exist"):
        jobs.training_data_root(str(demo_root.parent / "missing"), "0.0.0.0")
    # 'demo' means the built-in set under AUDIENCE_HOME (the session's demo root is reused, not rebuilt).
    monkeypatch.setenv("AUDIENCE_HOME", str(demo_root.parent))
    assert jobs.training_data_root("demo") == demo_root.resolve()
    assert jobs.training_data_root("") == demo_root.resolve()


def test_start_refuses_a_data_root_outside_the_allowed_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIENCE_ALLOW_TRAINING", "1")
    with pytest.raises(AudienceError, match="not under a folder"):
        jobs.start_job(_config().replace(data=str(tmp_path)), server_name="0.0.0.0")
    assert jobs.job_status().state == "idle"


def test_job_reports_progress_and_refuses_a_second_start(monkeypatch, tmp_path):
    fake = _start_fake(monkeypatch, tmp_path)
    status = jobs.job_status()
    assert status.state == "running" and status.active
    assert (status.run_id, status.n_folds, status.fold_index, status.fold) == ("20260101-000000-tiny-folds", 2, 2, 3)
    assert (status.epoch, status.epochs, status.eta_s) == (1, 4, 70.0)
    assert "fold 2/2" in status.progress_line() and "epoch 1/4" in status.progress_line()
    assert "ETA 1:10" in status.progress_line()
    # the run is on the tiny arch: no advice to pick it (issue 21 item 8)
    assert status.device_line().startswith("Device: cpu") and "use the tiny arch" not in status.device_line()
    assert status.curves == [{"fold": 3, "epoch": 1, "loss": 1.9, "train_loss": 1.9, "val_loss": 2.1,
                              "val_age_exact": 0.25, "val_gender_acc": 0.6}]
    assert any("fold 3 epoch 1/4" in line for line in status.log)
    assert not any("step" in line for line in status.log)  # batch events move the progress line only

    with pytest.raises(AudienceError, match=r"already in progress \(run 20260101-000000-tiny-folds, fold 2/2, "
                                            r"epoch 1/4\); stop it or wait"):
        jobs.start_job(_config())
    assert jobs.job_status().run_id == "20260101-000000-tiny-folds"  # the running job is untouched

    fake.release.set()
    final = jobs.wait_job(timeout=10)
    assert final.state == "finished" and not final.active and final.eta_s is None
    assert json.dumps(final.to_dict())  # plain data for the API


def test_stop_ends_the_job_as_stopped(monkeypatch, tmp_path):
    fake = _start_fake(monkeypatch, tmp_path)
    assert jobs.stop_job().state == "stopping"
    final = jobs.wait_job(timeout=10)
    assert fake.saw_stop
    assert final.state == "stopped"
    assert jobs.stop_job().state == "stopped"  # stopping again changes nothing


@pytest.mark.parametrize(("error", "expected"), [
    (AudienceError("Fold 3 has 0 readable train image(s), too few to train and test."), "Fold 3 has 0 readable"),
    (RuntimeError("CUDA out of memory"), "Training failed with RuntimeError: CUDA out of memory"),
])
def test_a_failing_run_is_failed_with_its_sentence(monkeypatch, tmp_path, error, expected):
    fake = _start_fake(monkeypatch, tmp_path, fail=error)
    fake.release.set()
    final = jobs.wait_job(timeout=10)
    assert final.state == "failed"
    assert final.error.startswith(expected)
    assert any(expected in line for line in final.log)
    assert jobs.start_job(_config()).state == "running"  # a failed job does not block the next one


def test_resume_checks_the_run_folder(monkeypatch, tmp_path):
    with pytest.raises(AudienceError, match="not a folder under the runs folder"):
        jobs.resume_job(tmp_path / "elsewhere")
    with pytest.raises(AudienceError, match="not a folder under the runs folder"):
        jobs.resume_job("../../etc")
    run = tmp_path / "runs" / "20260101-000000-tiny-folds"
    run.mkdir(parents=True)
    with pytest.raises(AudienceError, match="has no config.json"):
        jobs.resume_job(run.name)
    (run / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(AudienceError, match="config.json cannot be read"):
        jobs.resume_job(run.name)


def test_resume_runs_the_saved_config(monkeypatch, tmp_path):
    import audience.train.cross_validate

    run = tmp_path / "runs" / "20260101-000000-tiny-folds"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(_config().to_dict()), encoding="utf-8")
    (run / "status.json").write_text(json.dumps({"state": "stopped", "fold": 3, "epoch": 1}), encoding="utf-8")
    assert jobs.resumable_runs() == [(f"{run.name} (stopped, fold 3, epoch 1)", run.name)]
    fake = FakeTrainer(run)
    monkeypatch.setattr(audience.train.cross_validate, "cross_validate", fake)
    status = jobs.resume_job(run.name)
    assert status.run_id == run.name
    assert fake.waiting.wait(10)
    assert fake.resume == run.resolve()
    assert jobs.resumable_runs() == []  # the run being resumed is not offered twice
    fake.release.set()
    assert jobs.wait_job(timeout=10).state == "finished"


def test_a_finished_run_puts_its_test_accuracy_in_the_status_line():
    from audience.train.job_status import JobStatus, apply_event

    status = JobStatus(state="running", epochs=2, epoch=2)
    summary = {"age_exact": {"mean": 0.612, "std": 0.01, "per_fold": {"0": 0.602, "1": 0.622}},
               "gender_acc_fm": {"mean": 0.92, "std": 0.0, "per_fold": {"0": 0.92, "1": 0.92}}}
    apply_event(status, {"type": "run_end", "run_dir": "/runs/r1", "summary": summary, "message": "run r1 finished"})
    assert "test: age exact" not in status.progress_line()  # still running: no result yet
    status.state = "finished"
    line = status.progress_line()
    assert line.startswith("finished") and "test: age exact 61.2 ± 1.0 %, gender f/m 92.0 ± 0.0 %" in line


def test_the_no_gpu_advice_names_the_tiny_arch_only_when_another_is_chosen():
    from audience.train.job_status import JobStatus

    assert "use the tiny arch" in JobStatus(device="cpu (2 cores)", arch="resnet50").device_line()
    line = JobStatus(device="cpu (2 cores)", arch="tiny").device_line()
    assert line.startswith("Device: cpu (2 cores) (no GPU") and "use the tiny arch" not in line
    assert JobStatus(device="cuda:0 (H100)", arch="tiny").device_line() == "Device: cuda:0 (H100)"
