"""Which model is served: the default is an explicit, stored choice; user models live in an untracked folder;
a public deployment lets no visitor change the model (or spend CPU on latency) for everyone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.app_server import CHECKPOINT_NAME, PROJECT_ROOT, save_tiny_checkpoint, start_app_server
from PIL import Image
from test_bad_inputs import call_raw, sse_data
from test_compare import make_run

from audience.errors import AudienceError
from audience.inputs import name_skeleton
from audience.model.catalog import find_default_checkpoint, list_checkpoints, read_default_choice
from audience.train.cross_validate import invoked_train_command, resume_command
from audience.train.job import server_change_refusal
from audience.ui import predict_view

gr = pytest.importorskip("gradio")


def tree(*folders: Path) -> dict[str, bytes]:
    """Every file under `folders` with its bytes: what 'nothing was written' compares."""
    return {str(path): path.read_bytes() for folder in folders for path in sorted(folder.rglob("*")) if path.is_file()}


# --- names -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("one", "other"), [
    ("model", "MODEL"), ("model", "Ｍｏｄｅｌ"), ("model", "mоdel"),  # full width; a Cyrillic о
    ("paypal", "pаypаl"), ("alpha", "αlpha"), ("tool", "t00l"), ("modern", "modem"), ("e2e-tiny", "е2е-tiny"),
])
def test_look_alike_names_share_a_skeleton(one, other):
    assert one != other and name_skeleton(one) == name_skeleton(other)


@pytest.mark.parametrize(("one", "other"),
                         [("model", "models"), ("modèle", "modele"), ("年齢", "年令"), ("a-b", "a_b")])
def test_different_names_keep_different_skeletons(one, other):
    assert name_skeleton(one) != name_skeleton(other)


def test_a_local_file_named_like_a_hub_value_is_served(tmp_path, monkeypatch):
    """A model whose file name starts with 'hub--' (copied in by hand; promote refuses such names) is listed and
    usable, while no Hub model is configured."""
    monkeypatch.setenv("AUDIENCE_CHECKPOINTS", str(tmp_path))
    monkeypatch.delenv("AUDIENCE_MODEL_REPO", raising=False)
    path = save_tiny_checkpoint(tmp_path, "hub--x--y--model")
    try:
        assert "hub--x--y--model.json" in [value for _, value in predict_view.model_choices()]
        assert predict_view.resolve_checkpoint("hub--x--y--model.json") == path
        assert predict_view.model_banner("hub--x--y--model.json").startswith("**Warning: trained on synthetic")
        with pytest.raises(AudienceError, match="is not served here"):
            predict_view.resolve_checkpoint("hub--x--y--other.json")
    finally:
        predict_view.clear_predictor_cache()


# --- the default model -----------------------------------------------------------------------------------


def test_both_folders_are_served_and_the_shipped_copy_wins_a_clash(tmp_path, monkeypatch):
    shipped, models = tmp_path / "checkpoints", tmp_path / "models"
    monkeypatch.setenv("AUDIENCE_CHECKPOINTS", str(shipped))
    monkeypatch.setenv("AUDIENCE_MODELS", str(models))
    first = save_tiny_checkpoint(shipped, "first")
    mine = save_tiny_checkpoint(models, "mine")
    save_tiny_checkpoint(models, "first")
    assert sorted(list_checkpoints()) == sorted([first, mine])
    assert predict_view.resolve_checkpoint("mine.json") == mine
    assert find_default_checkpoint() is None  # only synthetic models and no choice: detection only
    assert predict_view.default_model() == predict_view.NO_MODEL


def test_make_default_stores_the_choice_and_is_refused_on_a_public_server(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from audience.ui.predict import make_default

    monkeypatch.setenv("AUDIENCE_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("AUDIENCE_MODELS", str(tmp_path / "models"))
    monkeypatch.delenv("AUDIENCE_ALLOW_TRAINING", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    save_tiny_checkpoint(tmp_path / "checkpoints", "demo-one")
    public = SimpleNamespace(server_name="0.0.0.0", share=False)
    _, message = make_default("demo-one.json", demo=public)
    assert message == ("**Not changed:** 'Make default' is turned off because this app is served on the network "
                       "address 0.0.0.0; start it with the environment variable AUDIENCE_ALLOW_TRAINING=1 to allow it.")
    assert read_default_choice() is None
    for bad, sentence in (("none", "Pick a model"), ("absent.json", "is not in the checkpoints or models folder"),
                          ("../x.json", "must be a file name")):
        _, message = make_default(bad, demo=SimpleNamespace(server_name="127.0.0.1", share=False))
        assert message.startswith("**Not changed:**") and sentence in message, message
    dropdown, banner = make_default("demo-one.json", demo=SimpleNamespace(server_name="127.0.0.1", share=False))
    assert dropdown.value == "demo-one.json" and read_default_choice() == "demo-one.json"
    assert "It is the default model because you chose it" in banner  # a synthetic default says so
    assert find_default_checkpoint() == tmp_path / "checkpoints" / "demo-one.json"
    monkeypatch.setenv("AUDIENCE_ALLOW_TRAINING", "1")
    assert make_default("demo-one.json", demo=public)[0].value == "demo-one.json"


@pytest.mark.parametrize(("env", "server_name", "share", "refused"), [
    ({}, "127.0.0.1", False, False), ({}, "0.0.0.0", False, True), ({}, "127.0.0.1", True, True),
    ({"SPACE_ID": "me/audience"}, "127.0.0.1", False, True),
    ({"SPACE_ID": "me/audience", "AUDIENCE_ALLOW_TRAINING": "1"}, "0.0.0.0", True, False),
])
def test_server_changes_are_refused_where_training_is(monkeypatch, env, server_name, share, refused):
    for name in ("SPACE_ID", "AUDIENCE_ALLOW_TRAINING", "GRADIO_SERVER_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sentence = server_change_refusal("'Use this model'", server_name, share)
    assert (sentence is not None) == refused
    if refused:
        assert sentence.startswith("'Use this model' is turned off because this app is served ")
        assert sentence.endswith("AUDIENCE_ALLOW_TRAINING=1 to allow it.") and sentence.count(". ") == 0


# --- files a user makes ----------------------------------------------------------------------------------


def test_user_models_are_not_tracked_by_git():
    for path in ("models/x.json", "models/x.onnx", "models/.default-model.json"):
        result = subprocess.run(["git", "check-ignore", "-q", path], cwd=PROJECT_ROOT)
        assert result.returncode == 0, f"{path} is not ignored by git"
    assert subprocess.run(["git", "check-ignore", "-q", "checkpoints/x.json"], cwd=PROJECT_ROOT).returncode == 1


@pytest.mark.parametrize(("argv", "expected"), [
    ([".venv/bin/python", "scripts/train.py", "--data", "demo"], ".venv/bin/python scripts/train.py --resume R"),
    (["python3", "-u", "-X", "dev", "/abs/scripts/train.py"], "python3 -u -X dev /abs/scripts/train.py --resume R"),
    (["python", "-m", "audience.cli.train", "--preset", "demo"], "python -m audience.cli.train --resume R"),
    (["python", "-m", "pytest", "tests"], "python -m audience.cli.train --resume R"),  # not the training command
    (["python", "-c", "import x"], "python -m audience.cli.train --resume R"),
    (["python", "my dir/train.py"], "python 'my dir/train.py' --resume R"),
])
def test_the_resume_hint_repeats_the_command_as_typed(monkeypatch, argv, expected):
    monkeypatch.setattr(sys, "orig_argv", argv)
    assert resume_command(Path("R")) == expected
    assert (invoked_train_command() is None) == (argv[1] in ("-c", "-m") and argv[2] != "audience.cli.train")


@pytest.mark.slow
def test_train_progress_bars_stay_off_a_file(tmp_path):
    """Logs written to a file hold lines, not tqdm's carriage-return redraws."""
    log = tmp_path / "train.out"
    env = {"HF_HUB_OFFLINE": "1", "AUDIENCE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(PROJECT_ROOT)}
    with open(log, "w") as out:
        code = subprocess.run([sys.executable, "scripts/train.py", "--preset", "demo", "--epochs", "1",
                               "--max-train-batches", "2", "--out", str(tmp_path / "runs")], cwd=PROJECT_ROOT,
                              env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, timeout=600).returncode
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert "\r" not in text and "epoch 1/1" in text, text[-2000:]


# --- a public deployment, over raw HTTP ------------------------------------------------------------------


@pytest.fixture(scope="module")
def public_server(tmp_path_factory, demo_root):
    server = start_app_server(tmp_path_factory.mktemp("public-server"), demo_root,
                              extra_env={"GRADIO_SERVER_NAME": "0.0.0.0"})
    yield server
    server.stop_soon()


@pytest.mark.slow
def test_a_public_server_refuses_promote_and_latency_and_keeps_its_model(public_server):
    server = public_server
    run = make_run(server.runs, "20200101-000000-tiny-folds-public", folds={0: (10, 12)})
    save_tiny_checkpoint(run / "fold0", "best")
    photo = server.outside.parent / "face.png"
    Image.new("RGB", (96, 96), (120, 100, 90)).save(photo)
    from test_api_inputs import upload

    payload = upload(server, Image.open(photo))
    before_model = sse_data(call_raw(server, "predict", [payload, None, True, False]))[3]["model"]
    assert before_model == f"{CHECKPOINT_NAME}.json"
    before = tree(server.models, server.checkpoints)
    refusal = ("{} is turned off because this app is served on the network address 0.0.0.0; start it with the "
               "environment variable AUDIENCE_ALLOW_TRAINING=1 to allow it.")
    for name in ("", "everyone-gets-this", "hub--x--y--model"):
        message = sse_data(call_raw(server, "promote", [run.name, "0", name]))[0]
        assert message == "**Not promoted:** " + refusal.format("'Use this model'"), message
    message = sse_data(call_raw(server, "measure_latency", [True]))[0]
    assert message == "**Not measured:** " + refusal.format("Measuring the CPU latency"), message
    message = sse_data(call_raw(server, "make_default", ["none"]))[1]
    assert message == "**Not changed:** " + refusal.format("'Make default'"), message
    assert tree(server.models, server.checkpoints) == before  # nothing written, no default chosen
    assert json.loads((server.models / ".default-model.json").read_text()) == {"model": f"{CHECKPOINT_NAME}.json"}
    after = sse_data(call_raw(server, "predict", [payload, None, True, False]))
    assert after[3]["model"] == before_model and after[3]["faces"][0]["age"] is not None
    assert server.alive()
