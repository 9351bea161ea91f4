"""Checkpoint round trip, metadata, atomic writes and every way a checkpoint can be broken."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import audience
from audience.errors import AudienceError
from audience.labels import AGE_CLASSES, GENDER_CLASSES
from audience.model.checkpoint import (
    FORMAT_VERSION,
    checkpoint_paths,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from audience.model.network import build_model

TRAINER_METADATA = {
    "image_size": 64,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "temperature": {"age": 1.7, "gender": 1.2},
    "dataset": {"name": "audience-demo", "synthetic": True, "policy": "bins", "images": "aligned"},
    "protocol": "subject-5fold",
    "fold": 2,
    "metrics": {"age_exact": np.float64(0.5), "age_ece": float("nan"), "age_confusion": np.eye(2, dtype=np.int64)},
    "epoch": 7,
}


def trained_like(task: str = "age+gender") -> torch.nn.Module:
    """A tiny model whose BatchNorm statistics are not the defaults (as after training)."""
    torch.manual_seed(0)
    model = build_model("tiny", task=task)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 64, 64))
    return model.eval()


@pytest.fixture(scope="module")
def model_and_files(tmp_path_factory):
    """One model saved once; each test gets its own copy of the files to break."""
    model = trained_like()
    weights = save_checkpoint(tmp_path_factory.mktemp("source") / "best", model, TRAINER_METADATA)
    return model, weights


@pytest.fixture
def saved(model_and_files, tmp_path):
    model, source = model_and_files
    for path in checkpoint_paths(source):
        shutil.copy2(path, tmp_path / path.name)
    return model, tmp_path / source.name


@pytest.mark.parametrize("form", ["stem", ".safetensors", ".json"])
def test_round_trip_gives_identical_outputs(saved, form):
    model, weights = saved
    path = {"stem": weights.with_suffix(""), ".safetensors": weights, ".json": weights.with_suffix(".json")}[form]
    loaded, transform, metadata = load_checkpoint(path)
    assert not loaded.training
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before, after = model(x), loaded(x)
    assert before.keys() == after.keys() == {"age", "gender"}
    assert all(torch.equal(before[key], after[key]) for key in before)
    image = np.full((80, 60, 3), 128, dtype=np.uint8)
    assert transform(image).shape == (3, 64, 64)
    # The transform uses the checkpoint's own normalisation: 128/255 -> (0.502 - 0.5) / 0.25.
    assert transform(image)[:, 40, 32] == pytest.approx(torch.full((3,), (128 / 255 - 0.5) / 0.25), abs=1e-5)


def test_single_head_round_trip(tmp_path):
    model = trained_like("gender")
    save_checkpoint(tmp_path / "gender", model, {})
    loaded, _, metadata = load_checkpoint(tmp_path / "gender")
    assert loaded.task == "gender" and loaded.age is None
    assert metadata.temperature == metadata.temperatures == {"gender": 1.0} and metadata.heads == ("gender",)
    assert metadata.age_classes is None and metadata.gender_classes == list(GENDER_CLASSES)


def test_metadata_holds_what_rebuilds_and_describes_the_model(saved):
    model, weights = saved
    metadata = json.loads(weights.with_suffix(".json").read_text())
    typed = read_checkpoint_metadata(weights)
    assert metadata == typed.as_json()  # every key, as written
    assert typed.arch == "tiny" and typed.heads == ("age", "gender")
    assert typed.temperatures == {"age": 1.7, "gender": 1.2}
    assert typed.synthetic and typed.fold == 2 and typed.weights.sha256 == metadata["weights"]["sha256"]
    assert metadata["arch"] == "tiny" and metadata["task"] == "age+gender"
    assert metadata["age_classes"] == list(AGE_CLASSES) and metadata["gender_classes"] == list(GENDER_CLASSES)
    assert metadata["image_size"] == 64 and metadata["mean"] == [0.5] * 3 and metadata["fold"] == 2
    assert metadata["temperature"] == {"age": 1.7, "gender": 1.2}
    assert metadata["dataset"]["synthetic"] is True and metadata["protocol"] == "subject-5fold"
    assert metadata["metrics"] == {"age_exact": 0.5, "age_ece": None, "age_confusion": [[1, 0], [0, 1]]}
    assert metadata["versions"] == {"torch": torch.__version__, "timm": metadata["versions"]["timm"],
                                    "audience": audience.__version__}
    assert metadata["format_version"] == FORMAT_VERSION and metadata["created"].endswith("+00:00")
    assert metadata["weights"]["bytes"] == weights.stat().st_size and len(metadata["weights"]["sha256"]) == 64
    assert metadata["params"] == sum(p.numel() for p in model.parameters())


def test_defaults_fill_absent_metadata(tmp_path):
    save_checkpoint(tmp_path / "bare", trained_like(), {})
    metadata = read_checkpoint_metadata(tmp_path / "bare.json")
    assert metadata.image_size == 64 and len(metadata.mean) == 3
    assert metadata.temperature == {"age": 1.0, "gender": 1.0}
    assert metadata.fold is None and metadata.metrics.as_dict() == {}


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path, monkeypatch):
    model = trained_like()
    save_checkpoint(tmp_path / "best", model, {"epoch": 1})
    save_checkpoint(tmp_path / "best", model, {"epoch": 2})  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]
    assert read_checkpoint_metadata(tmp_path / "best").epoch == 2

    # A failure while writing the JSON, or metadata that is not JSON, leaves the previous checkpoint
    # whole (weights included, so it still loads) and no temp file behind.
    other = build_model("tiny")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr("audience.model.checkpoint.Path.write_text", fail)
        with pytest.raises(OSError):
            save_checkpoint(tmp_path / "best", other, {"epoch": 3})
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "best", other, {"epoch": 4, "metrics": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]
    loaded, _, metadata = load_checkpoint(tmp_path / "best")
    assert metadata.epoch == 2
    assert torch.equal(loaded.age.weight, model.age.weight)


def test_checkpoint_paths_accept_each_form(tmp_path):
    pair = (tmp_path / "m.v1.safetensors", tmp_path / "m.v1.json")
    assert checkpoint_paths(tmp_path / "m.v1") == pair
    assert checkpoint_paths(str(tmp_path / "m.v1.json")) == pair
    assert checkpoint_paths(tmp_path / "m.v1.safetensors") == pair


def corrupt_truncated(weights, json_path):
    weights.write_bytes(weights.read_bytes()[:-100])


def corrupt_same_size(weights, json_path):
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


def corrupt_json(weights, json_path):
    json_path.write_text('{"arch": "tiny",')


def json_not_object(weights, json_path):
    json_path.write_text("[1, 2]")


def json_other_arch(weights, json_path):
    metadata = json.loads(json_path.read_text())
    metadata["arch"] = "mobilenetv3_large_100"
    json_path.write_text(json.dumps(metadata))


def json_other_task(weights, json_path):
    metadata = json.loads(json_path.read_text())
    metadata["task"] = "age"
    json_path.write_text(json.dumps(metadata))


def json_unknown_arch(weights, json_path):
    metadata = json.loads(json_path.read_text())
    metadata["arch"] = "vgg16"
    json_path.write_text(json.dumps(metadata))


def json_future_format(weights, json_path):
    metadata = json.loads(json_path.read_text())
    metadata["format_version"] = FORMAT_VERSION + 1
    json_path.write_text(json.dumps(metadata))


def json_without_checksum_and_garbage_weights(weights, json_path):
    metadata = json.loads(json_path.read_text())
    del metadata["weights"]
    json_path.write_text(json.dumps(metadata))
    weights.write_bytes(b"\x00" * 64)


def missing_weights(weights, json_path):
    weights.unlink()


def missing_json(weights, json_path):
    json_path.unlink()


@pytest.mark.parametrize(
    ("corrupt", "named", "problem"),
    [
        (corrupt_truncated, "safetensors", "truncated"),
        (corrupt_same_size, "safetensors", "sha256"),
        (corrupt_json, "json", "not valid JSON"),
        (json_not_object, "json", "not a JSON object"),
        (json_other_arch, "safetensors", "do not fit a mobilenetv3_large_100 model"),
        (json_other_task, "safetensors", "unexpected"),
        (json_unknown_arch, "json", "vgg16"),
        (json_future_format, "json", "format_version"),
        (json_without_checksum_and_garbage_weights, "safetensors", "not a readable safetensors"),
        (missing_weights, "safetensors", "do not exist"),
        (missing_json, "json", "does not exist"),
    ],
)
def test_broken_checkpoints_give_one_sentence_naming_the_file(saved, corrupt, named, problem):
    _, weights = saved
    json_path = weights.with_suffix(".json")
    corrupt(weights, json_path)
    with pytest.raises(AudienceError) as caught:
        load_checkpoint(weights)
    message = str(caught.value)
    assert str(weights.with_suffix("." + named)) in message and problem in message
    assert "\n" not in message
