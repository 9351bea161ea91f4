"""What the detector finds is pinned: the faces of every real image and grid the tests use, none in noise
or in blurred coloured circles (issue 19's speed work must not change what is found; issue 20's false faces)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.faces_found import GOLDEN, blurred_circles, noise_images, pinned_images, snapshot

from audience.faces.detector import FaceDetector

SHARED = Path(__file__).resolve().parents[2] / "shared"
BOX_TOLERANCE_PX = 1
SCORE_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as det:
        yield det


@pytest.mark.slow
def test_faces_found_on_real_images_and_grids_are_unchanged(detector: FaceDetector) -> None:
    golden = json.loads(GOLDEN.read_text())
    checked = 0
    for name, image in pinned_images(SHARED):
        want, got = golden[name], snapshot(detector, image)
        assert len(got) == len(want), f"{name}: {len(got)} faces found, {len(want)} pinned"
        for have, pinned in zip(got, want, strict=True):
            assert max(abs(a - b) for a, b in zip(have["box"], pinned["box"], strict=True)) <= BOX_TOLERANCE_PX, name
            assert abs(have["score"] - pinned["score"]) <= SCORE_TOLERANCE, name
            assert have["keypoints"] == pinned["keypoints"] == 6, name
        checked += 1
    assert checked >= 4  # the astronaut and its composites at least; ../shared adds 19 + 3 + 8 + 20


@pytest.mark.slow
def test_the_noise_set_has_no_face(detector: FaceDetector) -> None:
    # 128 images: uniform and Gaussian noise, four shapes up to 1080x1920, seeds 0-15 (docs/measurements.md)
    found = {name: len(detector.detect_all(image)) for name, image in noise_images()}
    assert len(found) == 128
    assert {name: n for name, n in found.items() if n} == {}


def test_blurred_coloured_circles_are_not_faces(detector: FaceDetector) -> None:
    # Issue 20: 2 of 150 such images were faces at 0.67-0.69; close up they reach 0.757 (the highest of 900), real
    # faces 0.77 and more.
    found = {name: [round(f.score, 3) for f in detector.detect_all(image)] for name, image in blurred_circles(150)}
    assert len(found) == 150
    assert {name: scores for name, scores in found.items() if scores} == {}
    with FaceDetector(min_score=0.65) as old:  # the old default: the threshold is what decides (9 of 900 pass it)
        assert sum(bool(old.detect_all(image)) for _, image in blurred_circles(150)) >= 1
