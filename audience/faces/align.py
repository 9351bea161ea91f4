"""Face alignment: turn each detected face so its eyes are level, with the eyes where the training crops have them.

UTKFace chips (and Adience's `aligned/` faces) are aligned by the eyes; a face cut from a photo is
not, and a slight head tilt then moves a model's answer. BlazeFace gives six keypoints per face,
the two eyes first (the person's right eye, then the left). A checkpoint whose training images
were aligned records it in its JSON (`alignment`, measured by `measure_alignment` on a fixed sample
of those images with the same detector): where the midpoint of the eyes sits in the training image
(`eye_x`, `eye_y`, fractions of its side) and how level the eyes are there; the trainer records
method "level" for level training images (`measure_framing`, with the crop geometry, in one pass).
`cut_face` then turns the face by its tilt (`head_roll`), in a square of the side the crop geometry gives
(audience.faces.crop_geometry): method "eyes" puts the eyes' midpoint where the training images
have it; method "level" only turns the face about the plain crop's centre, keeping the framing the
crop geometry measured. A face tilted less than MIN_TILT_DEGREES (what the training chips
themselves show) is not turned. A checkpoint without `alignment`, a face without keypoints (the Haar fallback) or
whole-image mode keeps the plain crop of `expand_box`, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from audience.errors import AudienceError
from audience.faces.crop_geometry import (
    CROP_SAMPLE,
    CropGeometry,
    crop_geometry_of_detections,
    detect_on_border,
    sample_paths,
)
from audience.faces.detector import DETECTOR_NAME, Face, FaceDetector, expand_box

# Training images whose median |head_roll| is under this count as aligned (level). Measured: UTKFace chips
# 1.45 degrees (200 sampled), Adience's coarse-tilt-aligned faces 2.64 (the 19 in ../shared), the demo set,
# whose faces are drawn turned by N(0, 6) degrees, 4.92 (200 sampled): not aligned.
LEVEL_DEGREES = 3.5
MAX_TILT_DEGREES = 60.0  # a steeper eye line is a mislabelled keypoint or a face lying down: not turned
# The head's tilt is measured from BlazeFace's keypoints (`head_roll`): the mean of the eye line's angle and
# the angle of the line from the eyes' midpoint down to the mouth (turned by 90 degrees). On the 4,198
# held-out UTKFace fold-0 chips whose face has keypoints (chips aligned by the eyes) its |angle| has
# median 1.35, 90th percentile 3.5 and 99th 6.5 degrees; the eye line alone 1.7 / 4.5 / 8.6.
# A face tilted less than MIN_TILT_DEGREES keeps the plain crop: the model was trained on chips tilted
# that much and answers them as they are, while turning them only adds the keypoints' noise. Measured on
# that fold through the Predict path (docs/measurements.md): turning from 5 degrees on cost 0.07 points of
# age accuracy, from 8 degrees 0.05, from 10 degrees none (+0.03 age, +0.07 gender).
MIN_TILT_DEGREES = 10.0
METHODS = ("eyes", "level")


@dataclass(frozen=True)
class Alignment:
    """How a face is turned before it is cut. method "eyes": eyes level, their midpoint at (eye_x, eye_y) of the
    crop (fractions of its side, from the left and the top); "level": eyes level, the crop centred where the
    crop geometry puts it (the training images are level, but their framing follows the detector's box)."""

    eye_x: float = 0.5
    eye_y: float = 0.4
    method: str = "eyes"


def alignment_of(recorded) -> Alignment | None:
    """The alignment of a checkpoint's `alignment` block (as recorded in its JSON), or None: then faces are cut
    unturned.

    Raises AudienceError for a recorded value that is not a fraction.
    """
    if recorded is None:
        return None
    if not isinstance(recorded, dict) or recorded.get("method") not in METHODS:
        raise AudienceError("checkpoint metadata 'alignment' must be an object with method \"eyes\" (and eye_x, "
                            "eye_y) or \"level\".")
    values = {"method": recorded["method"]}
    for key in ("eye_x", "eye_y"):
        value = recorded.get(key)
        if value is None and recorded["method"] == "level":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise AudienceError(f"checkpoint metadata alignment.{key} must be a fraction from 0 to 1; got {value!r}.")
        values[key] = float(value)
    return Alignment(**values)


def eyes_of(face: Face) -> tuple[np.ndarray, np.ndarray] | None:
    """(right eye, left eye) of a BlazeFace face as (x, y) arrays, or None for a face without keypoints."""
    if len(face.keypoints) < 2:
        return None
    return np.asarray(face.keypoints[0], np.float64), np.asarray(face.keypoints[1], np.float64)


def eye_angle(face: Face) -> float | None:
    """The eye line's angle in degrees (0: level; positive: the person's left eye, on the image's right, is lower)."""
    eyes = eyes_of(face)
    if eyes is None:
        return None
    (dx, dy) = eyes[1] - eyes[0]
    return math.degrees(math.atan2(dy, dx))


def head_roll(face: Face) -> float | None:
    """The head's in-plane tilt in degrees (sign as `eye_angle`): the mean of the eye line's angle and the
    angle of the eyes-to-mouth line turned by 90 degrees, less noisy than the eye line alone (see
    MIN_TILT_DEGREES); the eye line alone for a face with only two keypoints, None without them."""
    eyes_tilt = eye_angle(face)
    if eyes_tilt is None or len(face.keypoints) < 4:
        return eyes_tilt
    right, left = eyes_of(face)
    down = np.asarray(face.keypoints[3], np.float64) - (right + left) / 2.0
    return (eyes_tilt + math.degrees(math.atan2(-down[0], down[1]))) / 2.0


def aligned_transform(face: Face, side: int, alignment: Alignment, centre: tuple[float, float]) -> np.ndarray | None:
    """The 2x3 affine matrix (image -> side x side crop) that levels the eyes and puts their midpoint at
    `alignment`'s place ("eyes"), or turns the face about `centre`, the plain crop's centre, and keeps it
    there ("level"); None when the face has no usable eyes or is level within the keypoints' noise
    (MIN_TILT_DEGREES): then the plain crop is used."""
    angle = head_roll(face)
    if angle is None or not MIN_TILT_DEGREES <= abs(angle) <= MAX_TILT_DEGREES:
        return None
    right, left = eyes_of(face)
    if alignment.method == "level":
        pivot, target = np.asarray(centre, np.float64), (side / 2.0, side / 2.0)
    else:
        pivot, target = (right + left) / 2.0, (alignment.eye_x * side, alignment.eye_y * side)
    matrix = cv2.getRotationMatrix2D((float(pivot[0]), float(pivot[1])), angle, 1.0)
    matrix[:, 2] += (target[0] - pivot[0], target[1] - pivot[1])
    return matrix


def cut_face(image: np.ndarray, face: Face, geometry: CropGeometry, alignment: Alignment | None
             ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(the face crop a checkpoint classifies, its box in the image).

    Without `alignment` (or usable eyes, or with a tilt under MIN_TILT_DEGREES): `expand_box` with the
    geometry, the crop a view of `image`. Otherwise a square of the same side, turned so the eyes are
    level (see `aligned_transform`); beyond the image the edge pixels are repeated. The box is then the
    axis-aligned square of that side round the crop's centre, clipped to the image (for drawing).
    """
    box = expand_box(face.box, image.shape, geometry.margin, (geometry.shift_x, geometry.shift_y))
    x, y, w, h = face.box
    size = max(w, h)
    side = max(1, math.floor(size * (1.0 + 2.0 * geometry.margin) + 0.5))
    height, width = image.shape[:2]
    # the plain crop's centre, kept inside the image as expand_box keeps it
    centre = (min(max(x + w / 2.0 + geometry.shift_x * size, 0.0), float(width)),
              min(max(y + h / 2.0 + geometry.shift_y * size, 0.0), float(height)))
    matrix = None if alignment is None else aligned_transform(face, side, alignment, centre)
    if matrix is None:
        x, y, w, h = box
        return image[y:y + h, x:x + w], box
    crop = cv2.warpAffine(image, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    centre = cv2.invertAffineTransform(matrix) @ np.array([side / 2.0, side / 2.0, 1.0])
    x0 = int(np.clip(math.floor(centre[0] - side / 2.0 + 0.5), 0, width - 1))
    y0 = int(np.clip(math.floor(centre[1] - side / 2.0 + 0.5), 0, height - 1))
    x1, y1 = min(x0 + side, width), min(y0 + side, height)
    return crop, (x0, y0, max(x1 - x0, 1), max(y1 - y0, 1))


def measure_alignment(paths: Sequence[str], detector: FaceDetector | None = None,
                      count: int = CROP_SAMPLE) -> dict:
    """Where the eyes sit in training images, and whether those images are aligned (level eyes).

    The same fixed sample as the crop geometry; each image's largest face with eye keypoints gives
    one measurement (found on a grey border, so a tight chip's face is not clipped). Returns
    {"method": "eyes", "eye_x", "eye_y" (medians, fractions of the image's side), "angle_median",
    "angle_p90" (degrees, |head_roll|), "level" (median under LEVEL_DEGREES), "measured_on", "sampled",
    "detector"}; "level" False and no eye_x/eye_y when no face was found.
    """
    chosen = sample_paths([p for p in paths if p], count)
    return _alignment_of_detections(list(detect_on_border(chosen, detector)), len(chosen))


def measure_framing(paths: Sequence[str], detector: FaceDetector | None = None, count: int = CROP_SAMPLE) -> dict:
    """What a checkpoint records about its training images' framing, from one detection pass over the fixed
    sample: {"crop": `measure_crop_geometry`'s record or None, "alignment": `measure_alignment`'s record
    with method "level" when the images are level (then Predict turns tilted faces level), else None}.
    The trainer records this in its checkpoints (cross_validate)."""
    chosen = sample_paths([p for p in paths if p], count)
    detections = list(detect_on_border(chosen, detector))
    alignment = _alignment_of_detections(detections, len(chosen))
    return {"crop": crop_geometry_of_detections(detections, len(chosen)),
            "alignment": {**alignment, "method": "level"} if alignment["level"] else None}


def _alignment_of_detections(detections: list, sampled: int) -> dict:
    xs, ys, angles = [], [], []
    for (height, width), pad, faces in detections:
        eyes = eyes_of(faces[0]) if faces else None
        if eyes is None:
            continue
        middle = (eyes[0] + eyes[1]) / 2.0 - pad
        xs.append(middle[0] / width)
        ys.append(middle[1] / height)
        angles.append(abs(head_roll(faces[0])))
    record: dict = {"method": "eyes", "measured_on": len(xs), "sampled": sampled,
                    "detector": f"keypoints of {DETECTOR_NAME}"}
    if not xs:
        return {**record, "level": False}
    median_angle = float(np.median(angles))
    return {**record, "eye_x": round(float(np.median(xs)), 4), "eye_y": round(float(np.median(ys)), 4),
            "angle_median": round(median_angle, 2), "angle_p90": round(float(np.percentile(angles, 90)), 2),
            "level": median_angle < LEVEL_DEGREES}


def face_cropper(geometry: CropGeometry, alignment: Alignment | None,
                 detector: FaceDetector) -> Callable[[np.ndarray], np.ndarray]:
    """image -> the crop the Predict path would classify: its largest face cut with a checkpoint's geometry
    and alignment (`cut_face`; the checkpoint's crop_geometry and face_alignment); the whole image when no
    face is found."""

    def crop(image: np.ndarray) -> np.ndarray:
        faces = detector.detect(image)
        return cut_face(image, faces[0], geometry, alignment)[0] if faces else image

    return crop
