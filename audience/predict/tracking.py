"""Face tracks through a video: one id per person, kept while they move, found again when they come back.

The rule, per analysed frame (frames in time order):
1. IoU: each face continues the track whose last box it overlaps most (greedy by IoU, one to one, at least
   `iou_threshold`), among the tracks seen in the last `max_missed` analysed frames (the webcam's rule,
   audience.predict.smoothing.FaceTracker).
2. Re-link: a face left over is compared with every track not seen in this frame by the cosine similarity
   of their face features (the model's own penultimate features, a mean over the track's first frames);
   the most similar pair at or above `relink_threshold` continues that track (greedy, one to one). A track
   found again after more than `max_missed` frames unseen counts a return.
3. Otherwise the face starts a new track.

Each track's probabilities are smoothed with the webcam's exponential moving average (smoothing.ema_update);
the raw per-frame probabilities are kept too, for the per-track average the summary shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from audience.predict.predictor import FacePrediction, with_probs
from audience.predict.smoothing import box_iou, ema_update, probs_of_prediction

FEATURE_FRAMES = 5  # a track's features: the mean over its first this many frames (a steady reference)
RELINK_THRESHOLD = 0.85  # cosine similarity of two faces' features to be one person (docs/measurements.md)


@dataclass
class VideoTrack:
    """One person through the video: `id` from 1 in order of appearance."""

    id: int
    box: tuple[int, int, int, int]
    first_frame: int
    last_frame: int
    frames: int = 1
    missed: int = 0
    returns: int = 0
    smoothed: dict[str, np.ndarray] = field(default_factory=dict)
    feature_sum: np.ndarray | None = None
    feature_count: int = 0

    @property
    def feature(self) -> np.ndarray | None:
        if self.feature_sum is None:
            return None
        norm = float(np.linalg.norm(self.feature_sum))
        return self.feature_sum / norm if norm > 0 else None

    def add_feature(self, feature: np.ndarray | None) -> None:
        if feature is None or self.feature_count >= FEATURE_FRAMES:
            return
        self.feature_sum = feature.copy() if self.feature_sum is None else self.feature_sum + feature
        self.feature_count += 1


def cosine(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Cosine similarity of two vectors (-1 when either is missing or zero)."""
    if a is None or b is None:
        return -1.0
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na > 0 and nb > 0 else -1.0


def greedy_pairs(scores: list[tuple[float, int, int]], threshold: float) -> dict[int, int]:
    """i -> j for (score, i, j) taken best first, one to one, while the score is at least `threshold`."""
    matched: dict[int, int] = {}
    used: set[int] = set()
    for score, i, j in sorted(scores, key=lambda s: (-s[0], s[1], s[2])):
        if score < threshold:
            break
        if i not in matched and j not in used:
            matched[i] = j
            used.add(j)
    return matched


Features = Callable[[Sequence[int]], list[np.ndarray | None]]


class VideoTracker:
    """Track ids and smoothed labels for the faces of successive analysed frames (see the module's rule).

    alpha, iou_threshold, max_missed: as the webcam's FaceTracker. relink_threshold: the least cosine
    similarity of face features to re-link a face to an earlier track (None: never re-link).
    """

    def __init__(self, alpha: float = 0.35, iou_threshold: float = 0.3, max_missed: int = 5,
                 relink_threshold: float | None = RELINK_THRESHOLD, uncertain_below: float = 0.5):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha, self.iou_threshold, self.max_missed = alpha, iou_threshold, max_missed
        self.relink_threshold, self.uncertain_below = relink_threshold, uncertain_below
        self.tracks: list[VideoTrack] = []

    def update(self, frame: int, predictions: list[FacePrediction],
               features: Features | None = None) -> list[tuple[int, FacePrediction]]:
        """(track id, smoothed prediction) for each of this frame's predictions, in their order.

        `features(indices)` gives the face features of those predictions (None where there are none); it is
        called only for faces that need them: new tracks' first frames and faces IoU could not place."""
        active = [t for t in self.tracks if t.missed <= self.max_missed]
        by_iou = greedy_pairs([(box_iou(p.box, t.box), i, j) for i, p in enumerate(predictions)
                               for j, t in enumerate(active)], self.iou_threshold)
        assigned: dict[int, VideoTrack] = {i: active[j] for i, j in by_iou.items()}
        wanted = [i for i in range(len(predictions))
                  if i not in assigned or assigned[i].feature_count < FEATURE_FRAMES]
        found = dict(zip(wanted, features(wanted), strict=True)) if features is not None and wanted else {}
        left = [i for i in range(len(predictions)) if i not in assigned]
        if left and self.relink_threshold is not None:
            taken = {id(t) for t in assigned.values()}
            others = [t for t in self.tracks if id(t) not in taken and t.last_frame < frame]
            by_feature = greedy_pairs([(cosine(found.get(i), t.feature), i, j) for i in left
                                       for j, t in enumerate(others)], self.relink_threshold)
            for i, j in by_feature.items():
                track = others[j]
                if track.missed > self.max_missed:
                    track.returns += 1
                assigned[i] = track
        results = []
        for i, prediction in enumerate(predictions):
            track = assigned.get(i)
            current = probs_of_prediction(prediction)
            if track is None:
                track = VideoTrack(id=len(self.tracks) + 1, box=prediction.box, first_frame=frame,
                                   last_frame=frame, smoothed=dict(current))
                self.tracks.append(track)
            else:
                track.smoothed = ema_update(track.smoothed, current, self.alpha)
                track.box, track.last_frame, track.frames = prediction.box, frame, track.frames + 1
            track.missed = -1  # seen now: 0 after the step below
            track.add_feature(found.get(i))
            smoothed = with_probs(prediction, track.smoothed, self.uncertain_below) if track.smoothed else prediction
            results.append((track.id, smoothed))
        for track in self.tracks:
            track.missed += 1
        return results
