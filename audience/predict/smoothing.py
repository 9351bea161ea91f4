"""Smoothing of per-frame predictions for the webcam stream, so labels do not flicker.

A face in this frame that overlaps (IoU) a face of the recent frames continues that face's
track: its probabilities become an exponential moving average. A face with no match starts a
fresh track; a track not seen for `max_missed` frames is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audience.labels import HEADS
from audience.model.archs import YEARS_OUTPUT
from audience.predict.predictor import FacePrediction, with_probs


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter_w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    inter_h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = inter_w * inter_h
    union = aw * ah + bw * bh - inter
    return float(inter / union) if union > 0 else 0.0


def probs_of_prediction(prediction: FacePrediction) -> dict[str, np.ndarray]:
    """A prediction's probabilities per head (and its age in years, smoothed like them), as float64 arrays."""
    current = {head: np.asarray(p, dtype=np.float64) for head in HEADS if (p := prediction.probs_of(head))}
    if prediction.age_years is not None:
        current[YEARS_OUTPUT] = np.asarray(prediction.age_years, dtype=np.float64)
    return current


def ema_update(previous: dict[str, np.ndarray], current: dict[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
    """The exponential moving average after one more frame: previous + alpha * (current - previous) per head
    (a head new in `current` starts at its value; a head missing from it keeps its average)."""
    updated = dict(previous)
    for head, values in current.items():
        old = previous.get(head)
        updated[head] = values if old is None else old + alpha * (values - old)
    return updated


@dataclass
class Track:
    box: tuple[int, int, int, int]
    probs: dict[str, np.ndarray]
    missed: int = 0
    frames: int = 1


class FaceTracker:
    """Exponential moving average of face probabilities across frames.

    alpha: weight of the newest frame (1.0 = no smoothing). iou_threshold: the least overlap with
    a track's last box for a face to continue it. max_missed: frames a track survives unseen.
    Plain data only, so gr.State can deep-copy one per browser session.
    """

    def __init__(self, alpha: float = 0.35, iou_threshold: float = 0.3, max_missed: int = 5,
                 uncertain_below: float = 0.5):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.uncertain_below = uncertain_below
        self.tracks: list[Track] = []

    def reset(self) -> None:
        self.tracks = []

    def _match(self, predictions: list[FacePrediction]) -> dict[int, int]:
        """prediction index -> track index, greedily by highest IoU, one to one."""
        pairs = sorted(
            ((box_iou(p.box, t.box), i, j) for i, p in enumerate(predictions) for j, t in enumerate(self.tracks)),
            reverse=True,
        )
        matched: dict[int, int] = {}
        used_tracks: set[int] = set()
        for iou, i, j in pairs:
            if iou < self.iou_threshold:
                break
            if i not in matched and j not in used_tracks:
                matched[i] = j
                used_tracks.add(j)
        return matched

    def update(self, predictions: list[FacePrediction]) -> list[FacePrediction]:
        """This frame's predictions with smoothed probabilities (labels and `uncertain` follow them)."""
        matched = self._match(predictions)
        smoothed: list[FacePrediction] = []
        seen: set[int] = set()
        new_tracks: list[Track] = []
        for i, prediction in enumerate(predictions):
            current = probs_of_prediction(prediction)
            if i in matched:
                track = self.tracks[matched[i]]
                seen.add(matched[i])
                track.probs = ema_update(track.probs, current, self.alpha)
                track.box, track.missed, track.frames = prediction.box, 0, track.frames + 1
            else:
                track = Track(box=prediction.box, probs=dict(current))
                new_tracks.append(track)
            smoothed.append(with_probs(prediction, track.probs, self.uncertain_below) if track.probs else prediction)
        for j, track in enumerate(self.tracks):
            if j not in seen:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed] + new_tracks
        return smoothed
