"""Crops belong to the checkpoint: measured from training images, stored, read back, used by Predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.checkpoints import save_tiny_checkpoint
from PIL import Image

from audience.errors import AudienceError
from audience.faces.crop_geometry import DEFAULT_GEOMETRY, crop_geometry_of, measure_crop_geometry
from audience.faces.detector import CROP_MARGIN, FaceDetector, expand_box
from audience.model.checkpoint import save_checkpoint
from audience.model.network import build_model
from audience.predict.predictor import Predictor

data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def face_box(astronaut):
    with FaceDetector() as detector:
        return detector.detect(astronaut)[0].box


def _training_images(folder, astronaut, box, margin: float, count: int = 6) -> list[str]:
    """Face crops cut at a known margin (slightly rescaled copies, as a dataset's images would be)."""
    x, y, w, h = expand_box(box, astronaut.shape, margin)
    crop = Image.fromarray(astronaut[y:y + h, x:x + w])
    paths = []
    for index in range(count):
        side = 120 + 20 * index
        path = folder / f"face{index}.jpg"
        crop.resize((side, side)).save(path, quality=95)
        paths.append(str(path))
    return paths


def test_the_measured_margin_is_the_one_the_images_were_cut_with(tmp_path, astronaut, face_box):
    measured = {}
    for margin in (0.05, 0.4):
        folder = tmp_path / str(margin)
        folder.mkdir()
        measured[margin] = measure_crop_geometry(_training_images(folder, astronaut, face_box, margin))
        assert measured[margin]["measured_on"] == measured[margin]["sampled"] == 6
        # BlazeFace draws a face that fills more of its input a little larger (about 8 %), hence the tolerance
        assert measured[margin]["margin"] == pytest.approx(margin, abs=0.1)
        assert abs(measured[margin]["shift_x"]) < 0.08 and abs(measured[margin]["shift_y"]) < 0.08
    assert measured[0.4]["margin"] - measured[0.05]["margin"] > 0.2


def test_no_face_measures_nothing(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8)).save(path)
    assert measure_crop_geometry([str(path), str(tmp_path / "missing.jpg")]) is None


def _checkpoint(folder, name: str, crop: dict | None):
    metadata = {"image_size": 32, "dataset": {"name": "demo", "synthetic": True}}
    if crop is not None:
        metadata["crop"] = crop
    return save_tiny_checkpoint(folder, name, metadata)


def test_round_trip_through_the_checkpoint_into_predict(tmp_path, astronaut, face_box):
    measured = measure_crop_geometry(_training_images(tmp_path, astronaut, face_box, 0.05))
    tight = _checkpoint(tmp_path, "tight", measured)
    old = _checkpoint(tmp_path, "old", None)
    with Predictor(tight) as predictor:
        assert predictor.metadata.crop_geometry.margin == pytest.approx(measured["margin"])
        face = predictor.predict(astronaut)[0]
    with Predictor(old) as predictor:
        assert predictor.geometry == DEFAULT_GEOMETRY
        legacy = predictor.predict(astronaut)[0]
    # an old checkpoint keeps today's crop bit for bit; the tight one cuts closer round the same face
    assert legacy.crop_box == expand_box(legacy.box, astronaut.shape, CROP_MARGIN)
    assert face.box == legacy.box and face.crop_box[2] < legacy.crop_box[2]
    with Predictor(tight, margin=0.4) as predictor:  # an explicit margin still wins
        assert predictor.geometry.margin == 0.4


@pytest.mark.parametrize("crop", [{"margin": "wide"}, {"margin": 9.0}, {"shift_x": float("nan")}, [0.2], 5])
def test_a_malformed_crop_record_is_one_sentence(tmp_path, crop):
    with pytest.raises(AudienceError, match="crop"):
        crop_geometry_of(crop)


def test_shift_moves_the_square_by_box_sizes():
    assert expand_box((100, 100, 50, 50), (400, 400, 3), 0.0, (0.2, -0.4)) == (110, 80, 50, 50)
    assert expand_box((100, 100, 50, 50), (400, 400, 3), 0.0) == (100, 100, 50, 50)


def test_face_cropper_cuts_what_predict_cuts(tmp_path, astronaut, face_box):
    from audience.faces.align import face_cropper

    tight = {"margin": 0.05, "shift_x": 0.0, "shift_y": 0.1}
    with FaceDetector() as detector:
        crop = face_cropper(crop_geometry_of(tight), None, detector)(astronaut)
        whole = face_cropper(DEFAULT_GEOMETRY, None, detector)(np.full((64, 64, 3), 128, dtype=np.uint8))  # no face
    x, y, w, h = expand_box(face_box, astronaut.shape, 0.05, (0.0, 0.1))
    assert np.array_equal(crop, astronaut[y:y + h, x:x + w]) and whole.shape == (64, 64, 3)


@pytest.mark.slow
def test_evaluate_cuts_faces_for_a_checkpoint_of_another_dataset(tmp_path, demo_root, capsys):
    import json

    from audience.cli import evaluate as module
    torch.manual_seed(0)
    metadata = {"image_size": 32, "dataset": {"name": "UTKFace", "format": "utkface", "synthetic": False},
                "crop": {"margin": 0.05, "shift_x": 0.0, "shift_y": 0.0}}
    save_checkpoint(tmp_path / "utk", build_model("tiny", pretrained=False), metadata)
    args = [str(tmp_path / "utk.json"), "--data", str(demo_root), "--fold", "0", "--json"]
    assert module.main(args) == 0
    assert json.loads(capsys.readouterr().out)["crop"].startswith("detected face")
    assert module.main([*args, "--crop", "whole"]) == 0
    assert json.loads(capsys.readouterr().out)["crop"] == "whole image"


def test_framing_is_measured_again_for_a_trained_checkpoint_and_written_only_when_asked(
        tmp_path, astronaut, face_box, capsys):
    """`benchmark.py framing`: a model's framing measured again with today's detector on the training images its
    train_config names (a checkpoint trained before the detector's boxes moved records the old one)."""
    import json

    from audience.cli import benchmark
    from audience.faces.detector import DETECTOR_NAME
    from audience.model.checkpoint import file_sha256, load_checkpoint

    folder = tmp_path / "UTKFace"
    folder.mkdir()
    for index, path in enumerate(_training_images(tmp_path, astronaut, face_box, 0.05)):  # UTKFace-style names
        Image.open(path).save(folder / f"{30 + index}_1_0_2017010{index}.jpg.chip.jpg", quality=95)
    old = {"margin": 0.4, "shift_x": 0.0, "shift_y": 0.0, "measured_on": 6, "sampled": 6,
           "detector": "mediapipe BlazeFace (audience.faces.detector.FaceDetector)"}
    level = {"method": "level", "measured_on": 6, "sampled": 6}
    path = save_tiny_checkpoint(tmp_path, "trained", {
        "image_size": 32, "dataset": {"name": "UTKFace", "format": "utkface", "synthetic": False}, "crop": old,
        "alignment": level, "train_config": {"data": str(folder), "arch": "tiny"}})
    weights = path.with_suffix(".safetensors")
    sha256, before = file_sha256(weights), path.read_text()

    assert benchmark.main(["framing", "--checkpoint", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("recorded: margin +0.4000") and lines[2].startswith("measured: margin +0.0")
    report = json.loads(lines[-1])
    assert report["recorded"] == {"crop": old, "alignment": level}
    measured = report["measured"]["crop"]
    assert measured["margin"] == pytest.approx(0.05, abs=0.1) and measured["measured_on"] == 6
    assert measured["detector"] == DETECTOR_NAME
    assert path.read_text() == before  # without --write nothing changes

    assert benchmark.main(["framing", "--checkpoint", str(path), "--write"]) == 0
    stored = json.loads(path.read_text())
    assert stored["crop"] == measured and stored["train_config"] == {"data": str(folder), "arch": "tiny"}
    assert file_sha256(weights) == sha256
    load_checkpoint(path)  # still a valid checkpoint

    untrained = _checkpoint(tmp_path, "untrained", old)
    assert benchmark.main(["framing", "--checkpoint", str(untrained), "--write"]) == 2
    assert "records no training settings" in capsys.readouterr().err


@pytest.mark.parametrize("detector, noted", [
    ("mediapipe BlazeFace (audience.faces.detector.FaceDetector)", True),  # the name before 2026-12-07
    (None, False), ("a detector of another project", False)])
def test_a_framing_measured_by_an_earlier_detector_is_noted(tmp_path, astronaut, detector, noted):
    from audience.faces.detector import DETECTOR_NAME

    crop = {"margin": 0.05, "shift_x": 0.0, "shift_y": 0.0, **({"detector": detector} if detector else {})}

    def trained(name: str, crop: dict):  # on real faces: a synthetic-data model's own note comes first
        return save_tiny_checkpoint(tmp_path, name, {"image_size": 32, "crop": crop,
                                                     "dataset": {"name": "UTKFace", "synthetic": False}})

    with Predictor(trained("old", crop)) as predictor:
        note = predictor.note
        assert ("measured with an earlier version of the face detector" in note and "framing" in note
                and "old.json" in note) if noted else note is None
        assert predictor.predict(astronaut)  # the framing is still used
    with Predictor(trained("new", {**crop, "detector": DETECTOR_NAME})) as predictor:
        assert predictor.note is None
