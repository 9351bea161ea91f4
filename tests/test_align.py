"""Alignment: a tilted face is turned level before it is classified, and only when the checkpoint asks for it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fixtures.checkpoints import save_tiny_checkpoint

from audience.data.images import read_image
from audience.errors import AudienceError
from audience.faces.align import (
    MIN_TILT_DEGREES,
    Alignment,
    alignment_of,
    cut_face,
    eye_angle,
    face_cropper,
    head_roll,
    measure_alignment,
    measure_framing,
)
from audience.faces.crop_geometry import DEFAULT_GEOMETRY, CropGeometry, measure_crop_geometry
from audience.faces.detector import Face, FaceDetector, expand_box
from audience.model.metadata import check_checkpoint_metadata
from audience.predict.predictor import Predictor

LEVEL_FACE = "coarse_tilt_aligned_face.1.10571493783_a715bf1292_o.jpg"  # a real Adience face whose eyes are level


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as found:
        yield found


@pytest.fixture(scope="module")
def level_face(adience_sample) -> np.ndarray:
    paths = list((adience_sample / "faces").glob(f"*/{LEVEL_FACE}"))
    if not paths:
        pytest.skip(f"../shared/adience-sample lacks {LEVEL_FACE}")
    return read_image(paths[0])


def _rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    """The image turned counter-clockwise by `degrees` about its centre (edges repeated, same size)."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)


def test_a_face_turned_by_20_degrees_comes_back_level(detector, level_face):
    before = eye_angle(detector.detect(level_face)[0])
    tilted = _rotated(level_face, 20.0)
    face = detector.detect(tilted)[0]
    # turned counter-clockwise on screen: the person's left eye (image right) rises, the angle falls by ~20
    assert eye_angle(face) - before == pytest.approx(-20.0, abs=5.0)
    crop, box = cut_face(tilted, face, DEFAULT_GEOMETRY, Alignment())
    side = round(max(face.box[2:]) * (1 + 2 * DEFAULT_GEOMETRY.margin))
    assert crop.shape[:2] == (side, side) and box[2] <= side
    again = detector.detect(crop)[0]
    assert abs(eye_angle(again)) < 4.0
    # and the eyes' midpoint lands where the alignment puts it
    (rx, ry), (lx, ly) = again.keypoints[:2]
    assert ((rx + lx) / 2 / side, (ry + ly) / 2 / side) == pytest.approx((0.5, 0.4), abs=0.05)


def test_level_turns_the_face_about_the_plain_crops_centre(detector, level_face):
    tilted = _rotated(level_face, 20.0)
    face = detector.detect(tilted)[0]
    plain_box = expand_box(face.box, tilted.shape, DEFAULT_GEOMETRY.margin)
    crop, box = cut_face(tilted, face, DEFAULT_GEOMETRY, Alignment(method="level"))
    assert abs(eye_angle(detector.detect(crop)[0])) < 4.0
    assert box == plain_box  # the same square, turned: the face away from the edges keeps its framing
    assert alignment_of({"method": "level"}) == Alignment(method="level")


def test_without_alignment_the_crop_is_todays_bit_for_bit(detector, level_face):
    tilted = _rotated(level_face, 20.0)
    face = detector.detect(tilted)[0]
    geometry = CropGeometry(0.05, 0.01, -0.02)
    x, y, w, h = expand_box(face.box, tilted.shape, geometry.margin, (geometry.shift_x, geometry.shift_y))
    for alignment, kept in ((None, face), (Alignment(), Face(face.box, face.score, ()))):  # no keypoints: Haar
        crop, box = cut_face(tilted, kept, geometry, alignment)
        assert box == (x, y, w, h) and np.array_equal(crop, tilted[y:y + h, x:x + w])


def test_a_face_level_within_the_keypoints_noise_is_not_turned(detector, level_face):
    face = detector.detect(level_face)[0]
    assert abs(eye_angle(face)) < MIN_TILT_DEGREES
    x, y, w, h = expand_box(face.box, level_face.shape, DEFAULT_GEOMETRY.margin)
    for method in ("eyes", "level"):
        crop, box = cut_face(level_face, face, DEFAULT_GEOMETRY, Alignment(method=method))
        assert box == (x, y, w, h) and np.array_equal(crop, level_face[y:y + h, x:x + w])


def _checkpoint(folder, name: str, extra: dict):
    return save_tiny_checkpoint(folder, name, {"image_size": 32, "dataset": {"name": "demo", "synthetic": True},
                                               **extra})


def _crops_seen(predictor: Predictor, image: np.ndarray) -> list[np.ndarray]:
    seen = []
    classify = predictor.classify_crops

    def recording(crops, tta_flip=False):
        seen.extend(np.array(crop) for crop in crops)
        return classify(crops, tta_flip)

    predictor.classify_crops = recording
    predictor.predict(image)
    return seen


def test_predict_aligns_only_for_a_checkpoint_that_records_it(tmp_path, detector, level_face):
    tilted = _rotated(level_face, 20.0)
    crop = {"margin": 0.1, "shift_x": 0.0, "shift_y": 0.0}
    plain = _checkpoint(tmp_path, "plain", {"crop": crop})
    aligned = _checkpoint(tmp_path, "aligned", {"crop": crop, "alignment": {"method": "eyes", "eye_x": 0.5,
                                                                            "eye_y": 0.4}})
    face = detector.detect(tilted)[0]
    with Predictor(plain, detector=detector) as predictor:
        assert predictor.alignment is None
        [seen] = _crops_seen(predictor, tilted)
        x, y, w, h = expand_box(face.box, tilted.shape, 0.1)
        assert np.array_equal(seen, tilted[y:y + h, x:x + w])  # today's crop, bit for bit
        cropper = face_cropper(predictor.metadata.crop_geometry, predictor.metadata.face_alignment, detector)
        assert np.array_equal(cropper(tilted), seen)  # evaluation cuts the same
    with Predictor(aligned, detector=detector) as predictor:
        assert predictor.alignment == Alignment(0.5, 0.4)
        [seen] = _crops_seen(predictor, tilted)
        assert abs(eye_angle(detector.detect(seen)[0])) < 4.0
        cropper = face_cropper(predictor.metadata.crop_geometry, predictor.metadata.face_alignment, detector)
        assert np.array_equal(cropper(tilted), seen)
        whole = predictor.predict(tilted, whole_image=True)[0]  # "already a face crop": untouched
        assert whole.crop_box == (0, 0, tilted.shape[1], tilted.shape[0])


def test_the_eyes_of_level_chips_are_measured_where_they_are(tmp_path, detector, level_face):
    paths = []
    for index, degrees in enumerate((0.0, 0.0, 20.0)):
        path = tmp_path / f"chip{index}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(_rotated(level_face, degrees), cv2.COLOR_RGB2BGR))
        paths.append(str(path))
    measured = measure_alignment(paths, detector)
    assert measured["measured_on"] == 3 and measured["level"]  # the median chip is level
    assert measured["angle_p90"] > 10  # the tilted one shows in the spread
    eyes = detector.detect(level_face)[0].keypoints[:2]
    height, width = level_face.shape[:2]
    assert measured["eye_x"] == pytest.approx((eyes[0][0] + eyes[1][0]) / 2 / width, abs=0.03)
    assert measured["eye_y"] == pytest.approx((eyes[0][1] + eyes[1][1]) / 2 / height, abs=0.03)
    check_checkpoint_metadata({**_minimal(), "alignment": measured}, "x.json")


def test_the_trainer_records_level_alignment_only_for_level_training_faces(tmp_path, detector, level_face):
    def chips(name: str, angles: tuple[float, ...]) -> list[str]:
        paths = []
        for index, degrees in enumerate(angles):
            path = tmp_path / f"{name}{index}.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(_rotated(level_face, degrees), cv2.COLOR_RGB2BGR))
            paths.append(str(path))
        return paths

    level = chips("level", (0.0, 0.0, 20.0))
    framing = measure_framing(level, detector)  # one detection pass gives both records
    assert framing["crop"] == measure_crop_geometry(level, detector)
    assert framing["alignment"] == {**measure_alignment(level, detector), "method": "level"}
    check_checkpoint_metadata({**_minimal(), **framing}, "x.json")
    tilted = measure_framing(chips("tilted", (25.0, -30.0, 20.0)), detector)
    assert tilted["alignment"] is None and tilted["crop"]["measured_on"] == 3  # unlevel faces: never turned


def test_the_demo_sets_drawn_faces_are_turned_too_much_to_count_as_aligned(demo_root, detector):
    from audience.data.formats import read_dataset

    paths = read_dataset(demo_root).faces["path"].dropna().astype(str).tolist()
    framing = measure_framing(paths, detector)  # faces drawn turned by N(0, 6) degrees: a demo model cuts them unturned
    assert framing["alignment"] is None and framing["crop"]["measured_on"] > 150


def test_the_tilt_comes_from_eyes_and_mouth(level_face, detector):
    face = detector.detect(level_face)[0]
    right, left, nose, mouth = (np.asarray(point) for point in face.keypoints[:4])
    turned = Face(face.box, face.score, tuple(face.keypoints[:3]) + (tuple(mouth + (20.0, 0.0)),))
    assert head_roll(turned) < head_roll(face) - 3  # the mouth moved to the image's right: the head turned that way
    assert head_roll(Face(face.box, face.score, face.keypoints[:2])) == eye_angle(face)  # eyes only: their line


def _minimal() -> dict:
    return {"format_version": 1, "arch": "tiny", "task": "age+gender", "image_size": 32,
            "mean": [0.5] * 3, "std": [0.5] * 3}


@pytest.mark.parametrize("record", [{"method": "eyes", "eye_x": 2.0, "eye_y": 0.4}, {"method": "nose"},
                                    {"method": "eyes", "eye_x": "mid", "eye_y": 0.4}, [0.5, 0.4]])
def test_a_malformed_alignment_record_is_one_sentence(record):
    with pytest.raises(AudienceError, match="alignment"):
        alignment_of(record)
    with pytest.raises(AudienceError, match="alignment"):
        check_checkpoint_metadata({**_minimal(), "alignment": record}, "x.json")


def test_eyes_without_their_place_is_refused():
    with pytest.raises(AudienceError, match="alignment.eye_x"):
        alignment_of({"method": "eyes", "eye_y": 0.4})


def test_the_schema_checks_the_stability_block():
    good = {"age_agreement": 0.9, "gender_agreement": 0.97, "images": 200, "versions": 8}
    check_checkpoint_metadata({**_minimal(), "stability": good}, "x.json")
    with pytest.raises(AudienceError, match="stability.age_agreement"):
        check_checkpoint_metadata({**_minimal(), "stability": {**good, "age_agreement": 1.5}}, "x.json")
