"""Crop geometry: where the face sits in a model's training images, so Predict cuts faces the same way.

Datasets crop faces differently: UTKFace chips are tight, Adience's aligned faces loose. A model
learns the framing it was trained on, so the Predict path must cut a detected face with the same
framing. `measure_crop_geometry` runs the face detector on a fixed sample of training images and
records, as medians over the faces found, how large the image is relative to the detector's box
(`margin`: each side of the box pushed out by margin x its size, as `expand_box` does) and where the
box centre sits relative to the image centre (`shift_x`, `shift_y`, in box sizes). The trainer stores
it in the checkpoint JSON (`crop`); `crop_geometry_of(metadata's crop)` reads it back, and an older
checkpoint without it keeps the Adience margin (`CROP_MARGIN`, no shift). audience.faces.align
cuts the faces (`cut_face`, `face_cropper`) with it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from audience.data.images import read_image
from audience.errors import AudienceError, quoted
from audience.faces.detector import CROP_MARGIN, DETECTOR_NAME, FaceDetector

CROP_SAMPLE = 200  # images measured: the medians are stable to about 0.01 from here on
MAX_MARGIN = 2.0  # a larger measured margin means the detector found something other than the face
MIN_MARGIN = -0.45  # negative: the training images are tighter than the detector's box (UTKFace chips)


@dataclass(frozen=True)
class CropGeometry:
    """How a face crop is cut around a detected box (see the module docstring)."""

    margin: float = CROP_MARGIN
    shift_x: float = 0.0
    shift_y: float = 0.0

    def as_metadata(self, measured_on: int, sampled: int) -> dict:
        return {**{k: round(v, 4) for k, v in asdict(self).items()}, "measured_on": measured_on, "sampled": sampled,
                "detector": DETECTOR_NAME}


DEFAULT_GEOMETRY = CropGeometry()


def crop_geometry_of(recorded) -> CropGeometry:
    """The crop geometry of a checkpoint's `crop` block (as recorded in its JSON); the Adience default when
    there is none.

    Raises AudienceError for a recorded value that is not a finite number in range.
    """
    if recorded is None:
        return DEFAULT_GEOMETRY
    if not isinstance(recorded, dict):
        raise AudienceError(f"checkpoint metadata 'crop' must be an object with margin, shift_x, shift_y; "
                            f"got {type(recorded).__name__}.")
    values = {}
    for key, default in asdict(DEFAULT_GEOMETRY).items():
        value = recorded.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise AudienceError(f"checkpoint metadata crop.{key} must be a number; got {quoted(value)}.")
        values[key] = float(value)
    if not MIN_MARGIN <= values["margin"] <= MAX_MARGIN or abs(values["shift_x"]) > 1 or abs(values["shift_y"]) > 1:
        raise AudienceError(f"checkpoint metadata crop {values} is out of range "
                            f"(margin {MIN_MARGIN} to {MAX_MARGIN}, shifts -1 to 1).")
    return CropGeometry(**values)


def sample_paths(paths: Sequence[str], count: int = CROP_SAMPLE) -> list[str]:
    """A fixed sample of `count` paths: the same for the same files on every machine (crc32 order)."""
    return sorted(paths, key=lambda path: (zlib.crc32(str(path).encode("utf-8")), str(path)))[:count]


def detect_on_border(paths: Sequence[str], detector: FaceDetector | None = None):
    """For each readable image of `paths`: ((height, width), pad, faces), the faces found with the image on
    a grey border `pad` pixels wide, so the detector's box is never clipped by the image edge (tight chips
    such as UTKFace's are smaller than the box BlazeFace draws round their face); the face nearest the
    image's centre first, the training image's subject (a neighbour cut off by the edge can be as large).
    Unreadable images are skipped. A detector made here is closed at the end."""
    own = detector is None
    detector = detector or FaceDetector(model="auto")
    try:
        for path in paths:
            try:
                image = read_image(path)
            except AudienceError:
                continue
            height, width = image.shape[:2]
            pad = max(height, width) // 2
            faces = detector.detect(
                cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128)))
            centre = (pad + width / 2.0, pad + height / 2.0)
            yield (height, width), pad, sorted(faces, key=lambda face: math.dist(_centre_of(face.box), centre))
    finally:
        if own:
            detector.close()


def _centre_of(box: tuple[int, int, int, int]) -> tuple[float, float]:
    x, y, w, h = box
    return x + w / 2.0, y + h / 2.0


def measure_crop_geometry(paths: Sequence[str], detector: FaceDetector | None = None,
                          count: int = CROP_SAMPLE) -> dict | None:
    """The crop geometry of training images (`CropGeometry.as_metadata`), or None if no face was found.

    Each image's largest face gives one measurement; images that cannot be read or show no face are
    skipped (and counted in `sampled` - `measured_on`).
    """
    chosen = sample_paths([p for p in paths if p], count)
    return crop_geometry_of_detections(list(detect_on_border(chosen, detector)), len(chosen))


def crop_geometry_of_detections(detections: list, sampled: int) -> dict | None:
    """`measure_crop_geometry` on the output of `detect_on_border` for a sample of `sampled` paths."""
    margins, shifts_x, shifts_y = [], [], []
    for (height, width), pad, faces in detections:
        if not faces:
            continue
        x, y, w, h = faces[0].box
        side = max(w, h)
        margin = (max(height, width) / max(side, 1) - 1.0) / 2.0
        if side < 1 or not MIN_MARGIN <= margin <= MAX_MARGIN:
            continue
        margins.append(margin)
        shifts_x.append((pad + width / 2.0 - (x + w / 2.0)) / side)
        shifts_y.append((pad + height / 2.0 - (y + h / 2.0)) / side)
    if not margins:
        return None
    geometry = CropGeometry(float(np.median(margins)), float(np.median(shifts_x)), float(np.median(shifts_y)))
    return geometry.as_metadata(measured_on=len(margins), sampled=sampled)
