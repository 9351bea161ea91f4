"""A malformed checkpoint JSON is refused with one sentence naming the file and field, wherever it is read:
the app still starts (the bad model is left out of the list), scripts/predict.py prints one line, and a
temperature that would invert the probabilities is never used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from audience.errors import AudienceError
from audience.model.checkpoint import load_checkpoint, read_checkpoint_metadata, save_checkpoint
from audience.model.network import build_model
from audience.ui import predict_view

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BAD_FIELDS = {  # field: (value, what the sentence says)
    "dataset": ("x", "dataset: input should be a valid dictionary (found 'x')"),
    "temperature": ("hot", "temperature: input should be a valid dictionary (found 'hot')"),
    "image_size": ("abc", "image_size: input should be a valid integer (found 'abc')"),
    "weights": (5, "weights: input should be a valid dictionary (found 5)"),
    "mean": ([0.5], "mean: list should have at least 3 items"),
}


def save_with(folder: Path, name: str, **changes) -> Path:
    torch.manual_seed(0)
    metadata = {"image_size": 64, "dataset": {"name": "demo", "synthetic": True}}
    save_checkpoint(folder / name, build_model("tiny"), metadata)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return path


@pytest.mark.parametrize("field", sorted(BAD_FIELDS))
def test_malformed_fields_are_refused_with_the_field_named(tmp_path, field):
    value, sentence = BAD_FIELDS[field]
    path = save_with(tmp_path, "bad", **{field: value})
    for read in (read_checkpoint_metadata, load_checkpoint):
        with pytest.raises(AudienceError) as refused:
            read(path)
        assert str(refused.value).startswith(f"Checkpoint metadata {path}: {sentence}"), str(refused.value)


@pytest.mark.parametrize("temperature", [-1.0, 0.0, 1e9, [1.0]])
def test_temperatures_that_break_the_probabilities_are_refused(tmp_path, temperature):
    path = save_with(tmp_path, "bad", temperature={"age": temperature, "gender": 1.0})
    with pytest.raises(AudienceError, match="temperature.age"):
        load_checkpoint(path)


def test_a_bad_served_checkpoint_is_left_out_and_the_rest_serves(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIENCE_CHECKPOINTS", str(tmp_path))
    save_with(tmp_path, "good")
    save_with(tmp_path, "bad", dataset="x")
    try:
        values = [value for _, value in predict_view.model_choices()]
        assert "good.json" in values and "bad.json" not in values
        assert predict_view.model_banner("bad.json").startswith("**Error:** Checkpoint metadata ")
    finally:
        predict_view.clear_predictor_cache()


@pytest.mark.slow
def test_app_starts_and_predict_cli_answers_with_a_malformed_checkpoint(tmp_path, demo_root):
    checkpoints = tmp_path / "checkpoints"
    save_with(checkpoints, "bad", dataset="x")
    hot = save_with(checkpoints, "hot", temperature="hot")
    env = {**os.environ, "AUDIENCE_CHECKPOINTS": str(checkpoints), "AUDIENCE_HOME": str(tmp_path / "home"),
           "AUDIENCE_DATA": str(demo_root), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    app = subprocess.Popen([sys.executable, "-c", "import app; print('app built')"], cwd=PROJECT_ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    photo = tmp_path / "face.png"
    Image.new("RGB", (64, 64), (128, 100, 90)).save(photo)
    cli = subprocess.run([sys.executable, "scripts/predict.py", str(photo), "--checkpoint", str(hot)],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    out, err = app.communicate(timeout=300)
    assert app.returncode == 0 and "app built" in out, err[-2000:]
    assert cli.returncode != 0 and "Traceback" not in cli.stderr
    assert f"Checkpoint metadata {hot}: temperature: input should be a valid dictionary" in cli.stderr, cli.stderr
