"""The Train and Compare tabs through gradio_client: a real tiny training run, refused second start,
stop and resume, then the run in /compare and promoted with /promote."""

from __future__ import annotations

import time

import pytest
from fixtures.waiting import HANG_S, patient_client

from audience.train import job as jobs


@pytest.fixture
def client(monkeypatch, tmp_path, demo_root):
    import gradio as gr

    from audience.ui.compare import build_compare_tab
    from audience.ui.train import build_train_tab

    monkeypatch.setenv("AUDIENCE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("AUDIENCE_CHECKPOINTS", str(tmp_path / "checkpoints"))
    # AUDIENCE_HOME/demo-data is the session's demo root, so 'demo' reuses it; the image cache goes there too.
    monkeypatch.setenv("AUDIENCE_HOME", str(demo_root.parent))
    for name in ("SPACE_ID", "AUDIENCE_ALLOW_TRAINING", "GRADIO_SERVER_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(jobs, "_job", None)
    with gr.Blocks() as demo:
        with gr.Tab("Train", id="train"):
            events = build_train_tab(demo)
        with gr.Tab("Compare", id="compare"):
            build_compare_tab(demo, events)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield patient_client(url)
    finally:
        jobs.stop_job()
        jobs.wait_job(timeout=HANG_S)
        demo.close()


def _status(client) -> dict:
    return client.predict(api_name="/train_status")[3]


def _poll_until(client, done, what: str) -> dict:
    give_up = time.monotonic() + HANG_S  # a hang: the machine's load decides how long the run takes
    while time.monotonic() < give_up:
        status = _status(client)
        if done(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last status {status}")


@pytest.mark.slow
def test_train_stop_resume_and_compare(client, monkeypatch):
    # On a public deployment (here: a Hugging Face Space) the start button refuses and says how to allow it.
    monkeypatch.setenv("SPACE_ID", "someone/audience")
    message, _ = client.predict(arch="tiny", api_name="/train_start")
    assert message.startswith("**Not started:** Training is turned off") and "AUDIENCE_ALLOW_TRAINING=1" in message
    assert _status(client)["state"] == "idle"
    monkeypatch.delenv("SPACE_ID")

    message, table, *_ = client.predict(api_name="/compare")
    assert "No training runs yet" in message and table["data"] == []

    # The form's API parameters are TrainConfig's fields; unnamed ones keep the demo preset.
    form = {"data": "demo", "arch": "tiny", "folds": "0", "epochs": 2, "batch_size": 16, "image_size": 32,
            "max_train_batches": 5, "workers": 0}
    message, _ = client.predict(**form, api_name="/train_start")
    assert message.startswith("Started a training run (tiny, folds 0, 2 epochs)")
    refused, _ = client.predict(**form, api_name="/train_start")
    assert "already in progress" in refused and "stop it or wait" in refused

    # Stopped while it is still preparing (reading data, building the model), so the stop is never too late.
    assert client.predict(api_name="/train_stop").startswith("Stopping after the current batch")
    stopped = _poll_until(client, lambda s: not s["active"], "the stop")
    assert stopped["state"] == "stopped" and stopped["epoch"] < 2, stopped
    run_id = stopped["run_id"]
    assert run_id and stopped["device_line"].startswith("Device: cpu")

    message, _ = client.predict(run_id, api_name="/train_resume")
    assert message == f"Resuming run {run_id}."
    finished = _poll_until(client, lambda s: not s["active"], "the resumed run")
    assert finished["state"] == "finished", finished
    assert finished["run_id"] == run_id and finished["epoch"] == 2
    progress, log, curves, *_ = client.predict(api_name="/train_status")
    assert "finished" in progress and f"run {run_id}" in progress
    assert "fold 0 test" in log and curves is not None

    message, table, chosen, detail, *figures = client.predict(api_name="/compare")
    assert "1 run(s)" in message
    row = dict(zip(table["headers"], table["data"][0], strict=True))
    from audience.ui.compare import DEFAULT_RUN_COLUMNS

    assert table["headers"] == list(DEFAULT_RUN_COLUMNS)  # the few columns shown by default
    assert (row["run"], row["arch"], row["state"], row["folds"], row["dataset"]) == (
        run_id, "tiny", "finished", "1/1", "synthetic demo")
    assert row["age exact %"] != "-"
    assert chosen["value"] == [run_id] and detail["value"] == run_id  # dropdown updates: choices and value
    assert run_id in chosen["choices"][0]

    message, served = client.predict(run_id, "0", "", api_name="/promote")
    assert "is served as" in message and served["data"][0][0].startswith("tiny-age-gender-folds-fold0-")


def test_every_number_field_that_may_start_empty_is_an_optional_api_argument():
    import inspect
    import typing

    from audience.train.config import TrainConfig
    from audience.ui.train import NULLABLE, form_fields, start_training

    hints = typing.get_type_hints(TrainConfig)
    empty_numbers = {f.name for f in form_fields()
                     if f.name in NULLABLE and {int, float} & set(typing.get_args(hints[f.name]))}
    parameters = inspect.signature(start_training).parameters
    assert empty_numbers and all(parameters[name].default is None for name in empty_numbers)


def test_the_train_form_opens_on_the_configured_dataset_and_names_the_real_allowed_folders(monkeypatch, tmp_path):
    from audience.train.config import DEMO_RECIPE
    from audience.ui.train import data_root_hint, initial_preset, preset_values

    monkeypatch.setenv("AUDIENCE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AUDIENCE_DATA", raising=False)
    monkeypatch.delenv("AUDIENCE_DATA_DIRS", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "127.0.0.1")
    assert preset_values(initial_preset())["data"] == "demo"
    assert "any Adience root or UTKFace folder on this machine" in data_root_hint()  # a local run opens any
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # a public deployment names its allow-list
    alone = data_root_hint()
    assert "demo-data" not in alone and "AUDIENCE_DATA" in alone  # the demo folder is no place for a root
    adience, extra = tmp_path / "adience", tmp_path / "more"
    adience.mkdir()
    extra.mkdir()
    monkeypatch.setenv("AUDIENCE_DATA", str(adience))
    monkeypatch.setenv("AUDIENCE_DATA_DIRS", str(extra))
    values = preset_values(initial_preset())
    assert values["data"] == str(adience.resolve()) and values["arch"] != DEMO_RECIPE["arch"]
    hint = data_root_hint()
    assert str(adience.resolve()) in hint and str(extra.resolve()) in hint and "demo-data" not in hint


def test_clear_cache_handler_frees_the_cache_and_waits_for_a_running_job(monkeypatch, tmp_path, demo_root):
    from types import SimpleNamespace

    from audience.data.adience import read_adience
    from audience.data.cache import build_image_cache
    from audience.settings import cache_dir
    from audience.train.job_status import JobStatus
    from audience.ui.train import clear_cache

    monkeypatch.setenv("AUDIENCE_HOME", str(tmp_path / "home"))
    for name in ("SPACE_ID", "AUDIENCE_ALLOW_TRAINING"):
        monkeypatch.delenv(name, raising=False)
    paths = read_adience(demo_root).faces["path"].astype(str).tolist()[:6]
    for size in (16, 24):
        build_image_cache(paths, size, cache_dir=cache_dir())
    cached = sorted(cache_dir().glob("*.npy"))
    expected = sum(path.stat().st_size for path in cached)
    local, public = SimpleNamespace(server_name="127.0.0.1"), SimpleNamespace(server_name="0.0.0.0")

    running = SimpleNamespace(status=JobStatus(state="running", run_id="r1", epoch=2, epochs=5))
    monkeypatch.setattr(jobs, "_job", running)
    message = clear_cache(local)
    assert message.startswith("**Not cleared:** The image cache is in use by the training run in progress (run r1")
    assert sorted(cache_dir().glob("*.npy")) == cached  # nothing deleted under a running job

    monkeypatch.setattr(jobs, "_job", None)
    assert clear_cache(public).startswith("**Not cleared:**") and len(list(cache_dir().glob("*.npy"))) == 2
    from audience.data.cache import describe_bytes

    assert clear_cache(local) == (f"Cleared the image cache: freed {describe_bytes(expected)}. "
                                  "The next run decodes its images again.")
    assert not list(cache_dir().iterdir())
    assert clear_cache(local) == "The image cache was already empty."


@pytest.mark.parametrize(("count", "text"), [(0, "0 bytes"), (999, "999 bytes"), (3_400, "3.4 kB"),
                                             (12_000_000, "12.0 MB"), (1_250_000_000, "1.25 GB")])
def test_describe_bytes(count, text):
    from audience.data.cache import describe_bytes

    assert describe_bytes(count) == text


def test_the_runs_table_shows_few_columns_until_all_are_asked_for(monkeypatch, tmp_path):
    """19 columns squeezed headers mid-word ("age 1-" / "off %") and scrolled the run id away: by default the
    table shows the run and its accuracy; 'show all columns' adds the rest, each with its width."""
    import gradio as gr

    from audience.ui.compare import DEFAULT_RUN_COLUMNS, RUN_COLUMN_WIDTHS, compare_runs, show_columns

    monkeypatch.setenv("AUDIENCE_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("AUDIENCE_CHECKPOINTS", raising=False)  # the shipped model: one row
    few, every = show_columns(False), show_columns(True)
    assert isinstance(few, gr.Dataframe) and list(few.value["headers"]) == list(DEFAULT_RUN_COLUMNS)
    assert list(every.value["headers"]) == list(RUN_COLUMN_WIDTHS)
    assert len(few.value["data"]) == len(every.value["data"]) >= 1
    for table in (few, every):
        assert [int(str(w).removesuffix("px")) for w in table.column_widths] == [
            RUN_COLUMN_WIDTHS[name] for name in table.value["headers"]]
    # a header breaks only between words: its longest word (about 8 px a character, 24 px padding) fits
    assert all(8 * max(map(len, name.split())) + 24 <= RUN_COLUMN_WIDTHS[name] for name in DEFAULT_RUN_COLUMNS)
    assert sum(RUN_COLUMN_WIDTHS[name] for name in DEFAULT_RUN_COLUMNS) <= 1200  # no sideways scrolling
    table = compare_runs(None, None, None, True)[1]  # the API's table: a plain table, all columns asked for
    assert list(table.columns) == list(RUN_COLUMN_WIDTHS)
    assert list(compare_runs()[1].columns) == list(DEFAULT_RUN_COLUMNS)


def test_the_stop_button_is_red_only_while_a_run_trains_and_a_finished_run_points_on(monkeypatch):
    from audience.train.job_status import JobStatus
    from audience.ui import train as train_tab

    for state, variant in (("idle", "secondary"), ("running", "stop"), ("stopping", "stop"),
                           ("finished", "secondary"), ("stopped", "secondary"), ("failed", "secondary")):
        status = JobStatus(state=state, run_id=None if state == "idle" else "20260101-000000-tiny-folds")
        monkeypatch.setattr(jobs, "job_status", lambda *_, status=status: status)
        text, *_, stop = train_tab.poll(0, None)
        assert stop.variant == variant, state
        pointer = "**Compare** tab" in text and "**Use this model**" in text and "20260101-000000-tiny-folds" in text
        assert pointer is (state == "finished"), (state, text)
