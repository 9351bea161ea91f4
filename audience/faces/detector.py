"""Finding faces in an RGB image, and cutting them out the way the Adience training crops look.

Backends behind one `FaceDetector`: "mediapipe" (BlazeFace through the mediapipe Tasks API, with
the two models vendored in audience/assets) and "haar" (OpenCV's frontal-face cascade, the fallback
when mediapipe cannot start); the engines themselves are in audience.faces.backends.

BlazeFace sees the whole image at 128 px (short-range model) or 192 px (full-range), so a face
smaller than about 13 % (short) or 7 % (full) of the image's longest side is invisible to it.
model="auto" therefore also looks at square tiles (see `plan_views`) and merges what the views
found with non-maximum suppression.

A face's score is the one BlazeFace gives it in that close-up (see REFINE_SCALE), not the score of
the view that first saw it: noise, textures and parts of faces that pass as a face in a whole
image (uniform noise scored up to 0.63) are not seen again close up, and a real face that scored
low in a crowded view scores high there. See docs/measurements.md for the figures.
"""

from __future__ import annotations

import math
import threading
import warnings
import weakref
from pathlib import Path

import cv2
import numpy as np

from audience.data.images import rgb_from_array
from audience.errors import AudienceError, quoted
from audience.faces.backends import ASSETS, BlazeFace, Face, Haar, close_engines, track_open_detector
from audience.faces.backends import HAAR_CASCADE as HAAR_CASCADE  # re-exported with the other constants

MODEL_FILES: dict[str, Path] = {
    "short": ASSETS / "face_detection_short_range.tflite",
    "full": ASSETS / "face_detection_full_range_sparse.tflite",
}
BACKENDS = ("mediapipe", "haar")
MODELS = ("auto", "short", "full")

# Each side of a detected box is pushed out by this fraction of the box size before the crop is
# made square. Chosen on the 19 real Adience `faces/` crops: their side is a median 1.81x (range
# 1.66-2.03) the short-range BlazeFace box found in them, i.e. a margin of 0.41 per side.
CROP_MARGIN = 0.4

NMS_IOU = 0.3  # two boxes overlapping more than this are one face
CONTAINED = 0.6  # a box this much inside a bigger one is a part of that face seen from a tile
ELONGATED = 1.5  # images whose long/short side ratio exceeds this (wider than 3:2) get square tiles
MIN_TILE_SIDE = 128  # no smaller tiles: the short-range model's own input size
SMALL_TILE_MIN_SIDE = 1024  # images whose short side reaches this also get tiles of half that side
WORK_SHORT_SIDE = 768  # larger images are shrunk to at most this short side first: BlazeFace sees 192 px anyway
# BlazeFace's box for a face depends on where the face falls on the model's anchor grid and on the
# model (full-range boxes are ~10 % larger), so one face tiled four times got boxes of 93-106 px, and
# different crops and answers. Every face is therefore measured again by the short-range model (the
# one CROP_MARGIN was measured with) in a square window of REFINE_SCALE x its size, centred on it,
# until the box moves by less than REFINE_SETTLED box sizes (BlazeFace's own jitter from one window to
# the next: windows 3 px to 2.5 % apart on the pinned images' faces moved the box by a median 1.5 %, p90
# 2.8 %), returns to a box seen before, or after REFINE_STEPS times; window sides come from a ladder of
# four steps per octave, so a pixel's difference in the first box does not change the window. The first
# close-up settles a candidate within REFINE_FIRST_SETTLED of the view's box: a view's box comes from
# another scale (or model) and differs from a close-up's by more than the jitter even when it framed the
# face well, and a second close-up for those faces cost a third of the detection time (issue 19).
REFINE_SCALE = 2.0
REFINE_STEPS = 6
REFINE_SETTLED = 0.03
REFINE_FIRST_SETTLED = 0.05
# What the checkpoints' framing records (crop geometry, alignment) name as the detector that measured it. The
# close-ups changed on 2026-12-07 (the window goes to mediapipe at its own size, see `_detect_in_window`): a box
# sits about 1 % of its size elsewhere than before, so a framing measured before says so by its older name.
DETECTOR_NAME = "mediapipe BlazeFace, close-ups at the window's own size (audience.faces.detector.FaceDetector)"
# The full-range views look for faces smaller than the short-range model sees (under ~13 % of the
# longest side). They are skipped when the short-range views already found a face of at least this
# fraction of the longest side (a portrait, a selfie: the full-range model's call is the dearest of
# all); a face under ~13 % beside one that large is then not looked for (docs/measurements.md).
FULL_RANGE_SKIP = 0.25
# The default face threshold on that close-up score, and the looser one candidates are searched
# with: measured on real faces (19 Adience photos, the astronaut, grids of 25 UTKFace faces, single
# UTKFace chips), noise and blurred coloured circles (which reach 0.75 close up, where the lowest
# real face found scores 0.77); the figures are in docs/measurements.md. Haar's score is a vote share, 0.5 at its own
# acceptance threshold, so it keeps that.
MIN_SCORE = 0.76
SEARCH_SCORE = 0.5
HAAR_MIN_SCORE = 0.5
TIGHT_CROP_PAD = 0.5  # an image with no face found is retried with this much border (a face filling it)


def plan_views(height: int, width: int, model: str = "auto") -> list[tuple[str, tuple[int, int, int, int]]]:
    """The (model, window x, y, w, h) pairs that `detect` runs for an image of this size.

    "auto": both models on the whole image (short-range finds close faces, full-range faces down to
    ~7 % of the long side); for elongated images the short-range model on square tiles of the short
    side (a row of people); for large images the full-range model on tiles of half the short side
    (small faces in a group photo). Tiles overlap by at least a quarter of their side.
    """
    whole = (0, 0, width, height)
    if model in ("short", "full"):
        return [(model, whole)]
    views = [("short", whole), ("full", whole)]
    short_side = min(height, width)
    if max(height, width) > ELONGATED * short_side and short_side >= MIN_TILE_SIDE:
        views += [("short", tile) for tile in _square_tiles(height, width, short_side)]
    if short_side >= SMALL_TILE_MIN_SIDE:
        views += [("full", tile) for tile in _square_tiles(height, width, short_side // 2)]
    return views


def _square_tiles(height: int, width: int, side: int) -> list[tuple[int, int, int, int]]:
    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        count = int(np.ceil((length - side) / (0.75 * side))) + 1
        return [round(i * (length - side) / (count - 1)) for i in range(count)]

    return [(x, y, min(side, width), min(side, height)) for y in starts(height) for x in starts(width)]


def merge_faces(faces: list[Face], iou: float = NMS_IOU, contained: float = CONTAINED) -> list[Face]:
    """Drop duplicates: non-maximum suppression by score, then boxes mostly inside a bigger kept box."""
    if not faces:
        return []
    keep = cv2.dnn.NMSBoxes([list(f.box) for f in faces], [float(f.score) for f in faces], 0.0, iou)
    kept = sorted((faces[int(i)] for i in np.asarray(keep).reshape(-1)), key=_area, reverse=True)
    result: list[Face] = []
    for face in kept:
        if all(_overlap(face.box, bigger.box) <= contained * max(_area(face), 1) for bigger in result):
            result.append(face)
    return result


def reading_order(boxes: list[tuple[int, int, int, int]]) -> list[int]:
    """Indices of `boxes` (x, y, w, h) in reading order: rows top to bottom, left to right in a row.

    Boxes are taken by their centres; a box whose centre lies less than half a face height below the
    first centre of the current row (the taller of the two faces) joins that row, so a row of people
    whose heads sit a little higher or lower stays one row.
    """
    centres = [(x + w / 2.0, y + h / 2.0, h) for x, y, w, h in boxes]
    rows: list[list[int]] = []
    for index in sorted(range(len(boxes)), key=lambda i: (centres[i][1], centres[i][0])):
        if rows:
            first = centres[rows[-1][0]]
            if centres[index][1] - first[1] < 0.5 * max(first[2], centres[index][2]):
                rows[-1].append(index)
                continue
        rows.append([index])
    return [index for row in rows for index in sorted(row, key=lambda i: centres[i][0])]


def expand_box(
    box: tuple[int, int, int, int], image_shape: tuple[int, ...], margin: float = CROP_MARGIN,
    shift: tuple[float, float] = (0.0, 0.0),
) -> tuple[int, int, int, int]:
    """Grow `box` by `margin` x its size on each side, make it square about its centre, clip to the image.

    `shift` moves the square's centre by (x, y) box sizes from the box centre (the training crops'
    framing, see audience.crop_geometry). Near an edge the square is cut, not shifted inwards, so the
    face stays where the training crops have it as far as the image allows. Always at least 1x1
    pixel inside the image.
    """
    x, y, w, h = box
    height, width = image_shape[:2]
    size = max(w, h)
    side = max(1, _round_half_up(size * (1.0 + 2.0 * margin)))
    # floor(v + 0.5), not round(): Python rounds halves to even, so a face moved by one pixel
    # would get its crop moved by zero or two.
    left = _round_half_up(min(max(x + w / 2.0 + shift[0] * size, 0.0), float(width)) - side / 2)
    top = _round_half_up(min(max(y + h / 2.0 + shift[1] * size, 0.0), float(height)) - side / 2)
    x0, y0 = min(max(left, 0), width - 1), min(max(top, 0), height - 1)
    x1, y1 = min(left + side, width), min(top + side, height)
    return (x0, y0, max(x1 - x0, 1), max(y1 - y0, 1))


def crop_faces(image: np.ndarray, faces: list[Face], margin: float = CROP_MARGIN) -> list[np.ndarray]:
    """One RGB crop per face (in order), the box grown by `expand_box`."""
    crops = []
    for face in faces:
        x, y, w, h = expand_box(face.box, image.shape, margin)
        crops.append(np.ascontiguousarray(image[y : y + h, x : x + w]))
    return crops


class FaceDetector:
    """Faces in RGB uint8 images, largest first. Close it (or use `with`); one left open is closed at exit.

    backend: "mediapipe" (falls back to "haar" with a warning if mediapipe cannot start) or "haar";
    `self.backend` says which one runs. model: "auto" (whole image plus tiles, see `plan_views`),
    "short" or "full" (one BlazeFace model on the whole image). min_score: the least score a face
    needs (default MIN_SCORE, for Haar HAAR_MIN_SCORE); with model="auto" it is the close-up
    score. Calls are serialised by a lock.
    """

    def __init__(
        self, backend: str = "mediapipe", min_score: float | None = None, model: str = "auto", max_faces: int = 20,
    ):
        if backend not in BACKENDS:
            raise AudienceError(
                f"unknown face detector backend {quoted(backend)} (choose one of {', '.join(BACKENDS)})")
        if model not in MODELS:
            raise AudienceError(f"unknown face detection model {quoted(model)} (choose one of {', '.join(MODELS)})")
        self.model, self.max_faces = model, int(max_faces)
        self.min_score = float(MIN_SCORE if min_score is None else min_score)
        self._lock = threading.Lock()
        self._engines: dict = {}
        if backend == "mediapipe":
            try:
                for name in ("short", "full") if model == "auto" else (model,):
                    # Candidates are searched for loosely; min_score is applied to the close-up score.
                    self._engines[name] = BlazeFace(MODEL_FILES[name], min(self.min_score, SEARCH_SCORE), NMS_IOU)
            except Exception as exc:  # noqa: BLE001 - whatever stops mediapipe, the fallback still works
                close_engines(self._engines)
                warnings.warn(
                    f"mediapipe face detector unavailable ({type(exc).__name__}: {exc}); using OpenCV's Haar cascade",
                    RuntimeWarning,
                    stacklevel=2,
                )
                backend = "haar"
        if backend == "haar":
            self._engines["haar"] = Haar()
            if min_score is None:
                self.min_score = HAAR_MIN_SCORE
        self.backend = backend
        self._finalizer = weakref.finalize(self, close_engines, self._engines)
        track_open_detector(self)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB image (uint8 HxWx3; other arrays are converted), largest first, at most max_faces."""
        return self.detect_all(image)[: self.max_faces]

    def detect_all(self, image: np.ndarray) -> list[Face]:
        """Every face `detect` would consider, largest first, not cut to max_faces (to tell how many there were)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            image = rgb_from_array(image)
        work, factor = _shrink_by_integer_factor(image)
        with self._lock:
            if not self._finalizer.alive:
                raise RuntimeError("this FaceDetector is closed")
            if self.backend == "haar":
                found = self._engines["haar"].detect(work)
                faces = [_to_image(f, (0, 0), factor, image.shape) for f in found]
            else:
                faces = self._detect_blazeface(image.shape, work, factor)
        return sorted((f for f in faces if f.score >= self.min_score), key=_area, reverse=True)

    def _detect_blazeface(self, image_shape, work: np.ndarray, factor: int) -> list[Face]:
        views = plan_views(*image_shape[:2], self.model)
        if self.model != "auto":
            return self._search(views, work, factor, image_shape)
        memo: dict = {}
        confirmed = self._confirm(work, self._search([v for v in views if v[0] == "short"], work, factor, image_shape),
                                  factor, image_shape, memo)
        if not self._has_large_face(confirmed, image_shape):
            # Faces smaller than the short-range model sees: the full-range views, for what is not found yet.
            found = self._search([v for v in views if v[0] == "full"], work, factor, image_shape)
            fresh = [face for face in found if not any(_same_face(face, known) for known in confirmed)]
            confirmed = merge_faces(confirmed + self._confirm(work, fresh, factor, image_shape, memo))
        if not confirmed:
            # A face filling the whole frame (an already-cropped face) is larger than BlazeFace's
            # anchors; with a border round it, it becomes an ordinary close-up.
            pad = round(TIGHT_CROP_PAD * max(work.shape[:2]))
            padded = cv2.copyMakeBorder(work, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128))
            found = self._engines["short"].detect(padded)
            faces = [f for f in (_to_image(f, (-pad, -pad), factor, image_shape) for f in found) if _area(f) > 0]
            confirmed = self._confirm(work, faces, factor, image_shape, memo)
        return confirmed

    def _search(self, views, work: np.ndarray, factor: int, image_shape) -> list[Face]:
        """The candidates the engines find in `views` (model, window), in image pixels."""
        faces = []
        for name, (x, y, w, h) in views:
            x0, y0, x1, y1 = x // factor, y // factor, -(-(x + w) // factor), -(-(y + h) // factor)
            found = self._engines[name].detect(work[y0:y1, x0:x1])
            faces += [_to_image(f, (x0, y0), factor, image_shape) for f in found]
        return faces

    def _has_large_face(self, faces: list[Face], image_shape) -> bool:
        """Whether a face at least FULL_RANGE_SKIP of the image's longest side was confirmed (see there)."""
        longest = max(image_shape[:2])
        return any(f.score >= self.min_score and max(f.box[2:]) >= FULL_RANGE_SKIP * longest for f in faces)

    def _confirm(self, work: np.ndarray, faces: list[Face], factor: int, image_shape, memo: dict) -> list[Face]:
        """The candidates merged, each measured again close up (`_refine`); those not seen there are dropped.

        The close-ups of one image share a memo of the windows already seen: a window is fixed by its
        integer corner and side, so the same window gives the same answer, and the step that confirms a
        fixed point (or a second candidate of the same face) costs no second detection."""
        refined = (self._refine(work, face, factor, image_shape, memo) for face in merge_faces(faces))
        return merge_faces([face for face in refined if face is not None])

    def _refine(self, work: np.ndarray, face: Face, factor: int, image_shape, memo: dict | None = None) -> Face | None:
        """The face measured again by the short-range model in a window framed on it (see REFINE_SCALE),
        with the score it gets there; None when the close-up finds no face (noise, a texture)."""
        x, y, w, h = (v / factor for v in face.box)
        box, seen, found_there = (x, y, w, h), [], []
        memo = {} if memo is None else memo
        for step in range(REFINE_STEPS):
            window = _window_of(box)
            if window not in memo:
                memo[window] = _detect_in_window(self._engines["short"], work, window)
            found, score, keypoints = memo[window]
            if found is None:
                break
            settled = _change(box, found) <= (REFINE_SETTLED if step else REFINE_FIRST_SETTLED)
            box = found
            key = tuple(_round_half_up(v) for v in box)
            if settled and key not in seen:  # moved less than BlazeFace's own jitter: this is the box
                if found_there:
                    # two close-ups agree on the face: its score is the higher of theirs (a close-up's score
                    # jitters by a few hundredths from one window to the next, as its box does by pixels)
                    score = max(score, found_there[-1][0])
                seen.append(key)
                found_there.append((score, keypoints))
                break
            if key in seen:  # a fixed point, or a cycle: take its smallest box, whichever copy of a face this is
                box = min(seen[seen.index(key):])
                score, keypoints = found_there[seen.index(box)]
                break
            seen.append(key)
            found_there.append((score, keypoints))
        if not seen:
            return None
        # box, score and keypoints all from the same close-up (a first-view candidate can sit off the face)
        refined = Face(tuple(_round_half_up(v) for v in box), score, keypoints)
        return _to_image(refined, (0, 0), factor, image_shape)

    def close(self) -> None:
        """Free the models (idempotent)."""
        with self._lock:
            self._finalizer()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _shrink_by_integer_factor(image: np.ndarray) -> tuple[np.ndarray, int]:
    """The image shrunk by the smallest whole factor that brings its short side to <= WORK_SHORT_SIDE.

    A whole factor keeps OpenCV's area resampling on its fast path (about half the time of an
    arbitrary one on a 12 MP photo); the few rows and columns beyond a multiple of it are dropped.
    """
    height, width = image.shape[:2]
    factor = max(1, -(-min(height, width) // WORK_SHORT_SIDE))
    if factor == 1:
        return image, 1
    h, w = height // factor, width // factor
    return cv2.resize(image[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_AREA), factor


def _to_image(face: Face, offset: tuple[int, int], factor: int, image_shape) -> Face:
    """A face in view pixels -> the same face in image pixels, clipped to the image."""
    height, width = image_shape[:2]
    ox, oy = offset
    x, y, w, h = face.box
    x0, x1 = (int(np.clip(round((v + ox) * factor), 0, width)) for v in (x, x + w))
    y0, y1 = (int(np.clip(round((v + oy) * factor), 0, height)) for v in (y, y + h))
    keypoints = tuple(((kx + ox) * factor, (ky + oy) * factor) for kx, ky in face.keypoints)
    return Face((x0, y0, x1 - x0, y1 - y0), face.score, keypoints)


def _change(before, after) -> float:
    """How far a box (x, y, w, h) moved: the largest change of its centre or size, in box sizes."""
    (x0, y0, w0, h0), (x1, y1, w1, h1) = before, after
    size = max(w0, h0, w1, h1, 1e-6)
    return max(abs(x1 + w1 / 2 - x0 - w0 / 2), abs(y1 + h1 / 2 - y0 - h0 / 2), abs(w1 - w0), abs(h1 - h0)) / size


def _same_face(face: Face, known: Face) -> bool:
    """Whether `face` is `known` seen again: merge_faces would drop one of them (overlap or containment)."""
    overlap = _overlap(face.box, known.box)
    union = _area(face) + _area(known) - overlap
    return overlap > NMS_IOU * max(union, 1) or overlap > CONTAINED * max(min(_area(face), _area(known)), 1)


def _area(face: Face) -> int:
    return face.box[2] * face.box[3]


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def _round_half_up(value: float) -> int:
    """The nearest integer, halves up: unlike round(), shifting `value` by n shifts the result by n."""
    return math.floor(value + 0.5)


def _window_of(box) -> tuple[int, int, int]:
    """(x0, y0, side) of the close-up window framed on `box` (x, y, w, h floats): a square of a ladder side
    near REFINE_SCALE x the box's size, centred on the box."""
    x, y, w, h = box
    side = max(8, _round_half_up(2.0 ** (_round_half_up(4 * math.log2(max(w, h, 1.0) * REFINE_SCALE)) / 4)))
    return _round_half_up(x + w / 2) - side // 2, _round_half_up(y + h / 2) - side // 2, side


def _detect_in_window(engine, work: np.ndarray, window: tuple[int, int, int]) -> tuple[tuple | None, float, tuple]:
    """The most confident face the engine finds in `window` (`_window_of`), its score and keypoints, or
    (None, 0.0, ()).

    The window is grey beyond the image; it goes to mediapipe at its own size (mediapipe scales it to the
    model's 128 px input itself, at no measurable cost, where OpenCV's area resampling here cost 0.6-1.0 ms a
    close-up, and mediapipe's box then comes in the window's pixels rather than in steps of side/128). The box
    comes back in `work` pixels.
    """
    x0, y0, side = window
    height, width = work.shape[:2]
    window = np.full((side, side, 3), 128, np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)
    if sx1 <= sx0 or sy1 <= sy0:
        return None, 0.0, ()
    window[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = work[sy0:sy1, sx0:sx1]
    found = engine.detect(window)
    if not found:
        return None, 0.0, ()
    best = max(found, key=lambda f: f.score)
    fx, fy, fw, fh = best.box
    keypoints = tuple((x0 + kx, y0 + ky) for kx, ky in best.keypoints)
    return (x0 + fx, y0 + fy, fw, fh), float(best.score), keypoints
