"""The served classifier in ONNX Runtime: the same answers as PyTorch, exported into AUDIENCE_HOME (never into
checkpoints/), cached, and PyTorch whenever the export or its parity check fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

import audience.model.runtime as runtime
from audience.data.images import list_images, read_image
from audience.predict.predictor import Predictor
from audience.settings import checkpoints_dir

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "utkface-mobilenetv3.json"
ADIENCE = Path(__file__).resolve().parents[2] / "shared" / "adience-sample" / "faces"

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIENCE_HOME", str(tmp_path / "home"))


def _images() -> list[np.ndarray]:
    images = [data.astronaut()]
    if ADIENCE.is_dir():
        images += [read_image(path) for path in list_images(ADIENCE, recursive=True)]
    return images


@pytest.mark.slow
def test_the_shipped_model_gives_the_same_answers_in_onnx_runtime_and_pytorch(tmp_path):
    with Predictor(SHIPPED) as served, Predictor(SHIPPED, detector=served.detector, runtime="torch") as reference:
        assert served.wait_for_runtime(timeout=600) == "onnxruntime"
        assert reference.runtime == "torch"
        compared = 0
        for image in _images():
            got, want = served.predict(image), reference.predict(image)
            assert [p.box for p in got] == [p.box for p in want]
            for a, b in zip(got, want, strict=True):
                assert (a.age_label, a.gender_label, a.uncertain) == (b.age_label, b.gender_label, b.uncertain)
                assert np.abs(np.subtract(a.age_probs, b.age_probs)).max() < 1e-4
                assert np.abs(np.subtract(a.gender_probs, b.gender_probs)).max() < 1e-4
                compared += 1
        assert compared >= 1
        # tta_flip goes through the same batch
        flipped, flipped_ref = served.predict(data.astronaut(), tta_flip=True), reference.predict(
            data.astronaut(), tta_flip=True)
        assert np.abs(np.subtract(flipped[0].age_probs, flipped_ref[0].age_probs)).max() < 1e-4
    exported = list((tmp_path / "home" / "onnx").glob("*.onnx"))
    assert len(exported) == 1
    assert not list(checkpoints_dir().glob("*.onnx")) and not list(SHIPPED.parent.glob("*.onnx"))


def test_a_cached_export_is_reused_and_a_failed_one_leaves_pytorch(tmp_path, monkeypatch, tiny_checkpoint):
    with Predictor(tiny_checkpoint) as first:
        assert first.wait_for_runtime(timeout=300) == "onnxruntime"
    made = list((tmp_path / "home" / "onnx").glob("*.onnx"))
    assert len(made) == 1

    def no_export(*args, **kwargs):
        raise RuntimeError("export called again")

    monkeypatch.setattr(runtime, "export_logits", no_export)
    with Predictor(tiny_checkpoint) as second:  # the same weights: the cached file, no second export
        assert second.wait_for_runtime(timeout=300) == "onnxruntime"
    for path in made:
        path.unlink()
    with Predictor(tiny_checkpoint) as failed:  # the export fails: PyTorch answers
        assert failed.wait_for_runtime(timeout=300) == "torch"
        assert failed.predict(data.astronaut())[0].age_label is not None


def test_outputs_that_differ_from_pytorch_are_not_used(monkeypatch, tiny_checkpoint):
    monkeypatch.setattr(runtime, "parity", lambda *args, **kwargs: 0.5)
    with Predictor(tiny_checkpoint) as predictor:
        assert predictor.wait_for_runtime(timeout=300) == "torch"


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    import torch

    from audience.model.checkpoint import save_checkpoint
    from audience.model.network import build_model

    torch.manual_seed(0)
    stem = tmp_path / "ckpt" / "tiny"
    save_checkpoint(stem, build_model("tiny", "age+gender"), {"image_size": 64, "dataset": {"name": "t"}})
    return stem.with_suffix(".json")
