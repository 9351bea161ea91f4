"""The face detection engines behind faces.FaceDetector, and the plumbing they need.

BlazeFace (mediapipe Tasks, IMAGE mode, on a vendored model) and OpenCV's Haar cascade (the
fallback) both take an RGB view and return `Face`s in that view's pixels; FaceDetector maps them
back to the image. Also here: the filter that keeps LiteRT's native log lines off stderr, and the
exit hook that closes detectors left open before mediapipe's worker threads are gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from audience.errors import AudienceError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
HAAR_MIN_NEIGHBORS = 5


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, w, h in pixels, inside the image
    score: float
    # (x, y) in pixels, not clipped (an ear may lie just outside the image). BlazeFace gives six:
    # right eye, left eye, nose tip, mouth centre, right ear, left ear (the person's right and left).
    keypoints: tuple[tuple[float, float], ...] = ()


class BlazeFace:
    """One mediapipe Tasks FaceDetector (IMAGE mode) on one vendored model; boxes in view pixels."""

    def __init__(self, model_path: Path, min_score: float, suppression_iou: float):
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        self._mp = mp
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=min_score,
            min_suppression_threshold=suppression_iou,
        )
        with native_stderr_filtered():
            self._task = vision.FaceDetector.create_from_options(options)
            # The first call logs a one-off LiteRT warning and pays one-off setup: do both now.
            self.detect(np.zeros((64, 64, 3), np.uint8))

    def detect(self, view: np.ndarray) -> list[Face]:
        view = np.ascontiguousarray(view)
        height, width = view.shape[:2]
        result = self._task.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=view))
        faces = []
        for detection in result.detections:
            b = detection.bounding_box
            keypoints = tuple((k.x * width, k.y * height) for k in detection.keypoints or ())
            faces.append(Face((b.origin_x, b.origin_y, b.width, b.height), detection.categories[0].score, keypoints))
        return faces

    def close(self) -> None:
        with native_stderr_filtered():  # LiteRT logs INFO lines as it frees the accelerators
            self._task.close()


class Haar:
    """OpenCV's frontal-face cascade. It has no confidence: `score` is the share of neighbour votes
    n / (n + HAAR_MIN_NEIGHBORS), 0.5 at the acceptance threshold, not a probability."""

    def __init__(self):
        # OpenCV 5 wheels no longer ship cv2/data/*.xml, so the cascade is vendored (from the
        # opencv-python 4.x wheel); an OpenCV that still ships it is used where ours is missing.
        candidates = [ASSETS / HAAR_CASCADE, Path(cv2.data.haarcascades) / HAAR_CASCADE]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise AudienceError(f"OpenCV's face cascade {HAAR_CASCADE} is missing (looked in {ASSETS})")
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise AudienceError(f"{path}: OpenCV could not load this Haar face cascade")

    def detect(self, view: np.ndarray) -> list[Face]:
        gray = cv2.cvtColor(view, cv2.COLOR_RGB2GRAY)  # no equalizeHist: a flat border skews it (measured)
        boxes, votes = self._cascade.detectMultiScale2(
            gray, scaleFactor=1.1, minNeighbors=HAAR_MIN_NEIGHBORS, minSize=(24, 24)
        )
        return [
            Face(tuple(int(v) for v in box), float(n) / (float(n) + HAAR_MIN_NEIGHBORS))
            for box, n in zip(boxes, np.asarray(votes).reshape(-1), strict=True)
        ]

    def close(self) -> None:
        self._cascade = None


def close_engines(engines: dict) -> None:
    for engine in engines.values():
        engine.close()
    engines.clear()


# LiteRT writes INFO lines (and, on the first call, a glog warning) straight to file descriptor 2
# while a model loads. Those known lines are held back; anything else is passed on to stderr.
_CHATTER = re.compile(
    r"^(INFO: |WARNING: Logging before InitGoogle|WARNING: \[model_load\.cc:\d+\] Sparsity tensors"
    r"|W\d{4} [\d:. ]+\d+ inference_runner_litert\.cc:\d+\] Input tensor memory is not aligned)"
)
_stderr_lock = threading.Lock()


@contextlib.contextmanager
def native_stderr_filtered():
    with _stderr_lock, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (e.g. a windowed app): nothing to filter
            yield
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines = sink.read().decode("utf-8", "replace").splitlines()
            kept = [line for line in lines if line.strip() and not _CHATTER.match(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


# mediapipe's task objects close themselves in __del__, which at interpreter teardown runs after
# their worker thread pool is shut down and prints "Exception ignored in ... TypeError" (it looks
# like a crash). So detectors still open are closed while threads still work: in a threading exit
# hook, registered after concurrent.futures' own (the hooks run last-registered first).
open_detectors: weakref.WeakSet = weakref.WeakSet()
_exit_hook_registered = False


def _close_open_detectors() -> None:
    for detector in list(open_detectors):
        detector.close()


def _forget_open_detectors() -> None:
    """In a forked child (a DataLoader worker): the detectors are the parent's, and their worker threads were not
    forked. A multiprocessing child runs the threading exit hooks when it ends, where closing them waited until
    its parent gave up and terminated it: 5 s per DataLoader worker per epoch while a detector was open."""
    open_detectors.clear()


def track_open_detector(detector) -> None:
    """Close `detector` at interpreter exit if it is still open then (see the note above)."""
    global _exit_hook_registered
    open_detectors.add(detector)
    if not _exit_hook_registered:
        _exit_hook_registered = True
        os.register_at_fork(after_in_child=_forget_open_detectors)
        import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours

        register = getattr(threading, "_register_atexit", None)
        if register is None:  # pragma: no cover - CPython 3.9+ has it
            import atexit

            atexit.register(_close_open_detectors)
        else:
            register(_close_open_detectors)
