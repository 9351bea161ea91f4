"""The Predictor: image -> detected faces -> calibrated age and gender probabilities per face.

Upload, webcam frames and audience.cli.predict all take this one path: read_image (validate,
decode) -> FaceDetector -> cut_face (the checkpoint's training crop geometry and eye alignment) -> one
batched forward for all faces of the image -> softmax(logits / T) per head. Without a checkpoint it still detects faces
(detection-only mode) so the app is useful before anything is trained.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from audience.data.images import read_image
from audience.errors import AudienceError
from audience.faces.align import cut_face
from audience.faces.crop_geometry import DEFAULT_GEOMETRY
from audience.faces.detector import DETECTOR_NAME, Face, FaceDetector, reading_order
from audience.labels import CLASSES_OF_HEAD, HEADS
from audience.model.age_years import expected_age
from audience.model.archs import YEARS_OUTPUT
from audience.model.checkpoint import load_checkpoint
from audience.model.metadata import CheckpointMetadata

__all__ = ["FacePrediction", "Predictor", "Timings", "with_probs"]


DETECTION_ONLY_NOTE = (
    "No trained model: faces are detected but not classified (train one in the Train tab or with audience.cli.train)."
)
SYNTHETIC_NOTE = "Trained on synthetic demo data: predictions on real photos are meaningless."
EARLIER_FRAMING_NOTE = ("Its face framing was measured with an earlier version of the face detector, so faces may be "
                        "cut a little differently from its training faces; `python -m audience.cli.benchmark "
                        "framing --checkpoint {name} --write` measures it again.")
NON_FINITE = ("Model {name} gave no usable probabilities (NaN or infinity) for this photo: its weights or "
              "normalisation are broken; pick another model.")
RUNTIMES = ("auto", "torch")
NO_FACE_NOTE = "No face found; if the image is already a face crop, classify the whole image instead."


MAX_FORWARD_PIXELS = 1024 * 1024  # input pixels per forward pass: one face at 1,024 px, 83 at 112 px (shipped)
# The largest input a server classifies at (the app's Predict tab; the command line takes any valid checkpoint):
# 20 faces with flip TTA at 512 px cost 40 forwards of 0.3 s (MobileNetV3) to 1.5 s (ResNet50) on 2 CPU cores.
MAX_SERVED_IMAGE_SIZE = 512


def check_served_input(predictor: Predictor, name: str) -> None:
    """AudienceError when `predictor`'s model takes larger inputs than MAX_SERVED_IMAGE_SIZE."""
    size = 0 if predictor.metadata is None else int(predictor.metadata.image_size or 0)
    if size > MAX_SERVED_IMAGE_SIZE:
        raise AudienceError(
            f"Model {name} classifies {size:,} px faces; this app serves models of at most {MAX_SERVED_IMAGE_SIZE} px "
            "(their memory and time per face grow with the square of the size): use the command line "
            "(python -m audience.cli.predict) for it."
        )


def capped_note(shown: int, found: int, remedy: str) -> str | None:
    """The sentence saying that only the largest `shown` of `found` faces are shown (None when all are).

    `remedy` says how to see the rest where the sentence is shown (a flag, a setting)."""
    if found <= shown:
        return None
    return f"{shown} of at least {found} faces shown (the largest); {remedy}."


SHOWN_DECIMALS = 2  # probabilities in labels and the uncertainty threshold are shown to two decimals


@dataclass
class FacePrediction:
    """One face: where it is and, when a model is loaded, its calibrated class probabilities.

    `box` is the detector's (x, y, w, h) in pixels, `crop_box` the expanded box the classifier saw (for a
    face turned level by the alignment: the upright square of the crop's side round its centre),
    `score` the detector's confidence (None when the whole image was taken as the face). A head the
    model lacks (or detection-only mode) leaves its label and probs None.
    """

    box: tuple[int, int, int, int]
    score: float | None
    crop_box: tuple[int, int, int, int]
    age_label: str | None = None
    age_probs: list[float] | None = None
    gender_label: str | None = None
    gender_probs: list[float] | None = None
    uncertain: bool = False
    age_years: float | None = None  # the age in years (a years age head's expected age), shown beside the group

    def probs_of(self, head: str) -> list[float] | None:
        return self.age_probs if head == "age" else self.gender_probs

    def label_of(self, head: str) -> str | None:
        return self.age_label if head == "age" else self.gender_label

    def shown_label(self, head: str) -> str | None:
        """The head's label as a person reads it: the age group, with the age in years beside it when the model
        has a years head ("22-32, about 27"); the group stays the answer."""
        label = self.label_of(head)
        if head == "age" and label is not None and self.age_years is not None:
            return f"{label}, about {self.age_years:.0f}"
        return label

    def to_dict(self) -> dict:
        """Plain JSON: box, score, age/gender {label, probs by class name} (None for a missing head), uncertain."""
        heads = {
            head: None
            if self.probs_of(head) is None
            else {"label": self.label_of(head),
                  "probs": {name: round(float(p), 4)
                            for name, p in zip(CLASSES_OF_HEAD[head], self.probs_of(head), strict=True)}}
            for head in HEADS
        }
        if heads["age"] is not None and self.age_years is not None:
            heads["age"]["years"] = round(float(self.age_years), 1)
        return {
            "box": [int(v) for v in self.box],
            "score": None if self.score is None else round(float(self.score), 4),
            **heads,
            "uncertain": bool(self.uncertain),
        }


def with_probs(prediction: FacePrediction, probs: dict[str, np.ndarray], uncertain_below: float) -> FacePrediction:
    """A copy of `prediction` carrying `probs` (head -> class probabilities), with labels and uncertainty from them."""
    updates: dict = {}
    tops = []
    if YEARS_OUTPUT in probs:
        updates["age_years"] = float(probs[YEARS_OUTPUT])
    for head, values in probs.items():
        if head == YEARS_OUTPUT:
            continue
        values = np.asarray(values, dtype=np.float64)
        index = int(np.argmax(values))
        updates[f"{head}_label"] = CLASSES_OF_HEAD[head][index]
        updates[f"{head}_probs"] = [float(v) for v in values]
        tops.append(float(values[index]))
    # compared as shown (two decimals): a face labelled 0.50 is never "uncertain (below 0.50)"
    updates["uncertain"] = bool(tops) and min(round(top, SHOWN_DECIMALS) for top in tops) < uncertain_below
    return FacePrediction(**{**prediction.__dict__, **updates})


def classes_seen(metadata: CheckpointMetadata | None, head: str) -> tuple[str, ...]:
    """The classes of `head` a checkpoint's model learned from: all of them, except gender "u" when its
    training data had none (UTKFace labels only f and m; a test fold without a "u" face says the same).
    The Predict tab shows bars for these only: a "u" bar of a model that never saw "u" means nothing."""
    classes = CLASSES_OF_HEAD[head]
    if head != "gender" or "u" not in classes or metadata is None:
        return classes
    per_class = metadata.metrics and metadata.metrics.gender_per_class
    no_u = (metadata.dataset is not None and metadata.dataset.format == "utkface") or (
        isinstance(per_class, list) and len(per_class) == len(classes) and per_class[classes.index("u")] is None)
    return tuple(name for name in classes if name != "u") if no_u else classes


@dataclass
class Timings:
    """Milliseconds spent per stage of one predict call (for the UI status and the benchmark)."""

    decode_ms: float = 0.0
    detect_ms: float = 0.0
    classify_ms: float = 0.0
    faces: int = 0
    faces_found: int = 0  # before the max_faces cut: more than `faces` when the cap was hit

    @property
    def total_ms(self) -> float:
        return self.decode_ms + self.detect_ms + self.classify_ms


class Predictor:
    """Loads a checkpoint once and predicts every face in an image.

    checkpoint: a checkpoint (.json, .safetensors or stem) or None for detection-only mode.
    detector: a FaceDetector to use (default: a MediaPipe one made here, closed by close()).
    margin: the crop margin around a detected box (default: the checkpoint's measured `crop`, else CROP_MARGIN).
    tta_flip: also classify the mirrored crops and average the probabilities.
    uncertain_below: a face is `uncertain` when either head's top probability is below this.
    max_faces: at most this many faces per image (the largest), returned in reading order; the
    detector's own max_faces is not used (predict_timed's Timings tells how many there were).
    runtime: "auto" runs the classifier in ONNX Runtime when its logits match PyTorch's
    (audience.model.runtime; several times faster on a CPU), else in PyTorch; "torch" always in
    PyTorch. `self.runtime` says which one runs ("onnxruntime" or "torch"): PyTorch until the model is
    exported in a background thread (seconds, once per model; `wait_for_runtime` waits for it).

    Thread safety: concurrent predict() calls are allowed. Decoding runs in parallel; detection,
    cropping and the forward pass run under one lock. A forward in eval mode would be safe to
    overlap, but it already uses every core, and overlapping two only oversubscribes the CPU
    (torch's OpenMP threads then wait on each other, several times slower than in turn).
    """

    def __init__(
        self,
        checkpoint: str | Path | None,
        detector: FaceDetector | None = None,
        margin: float | None = None,
        tta_flip: bool = False,
        uncertain_below: float = 0.5,
        max_faces: int = 20,
        runtime: str = "auto",
    ):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.tta_flip = tta_flip
        self.uncertain_below = uncertain_below
        self.max_faces = max_faces
        self.model, self.transform, self.metadata = (None, None, None)
        if self.checkpoint is not None:
            import torch  # here, with the model: the app builds its pages without torch (issue 19's cold start)

            self.model, self.transform, self.metadata = load_checkpoint(self.checkpoint)
            # channels_last suits the CPU convolution kernels (oneDNN) better than NCHW.
            self.model = self.model.to(memory_format=torch.channels_last)
        # ONNX Runtime takes over once the model is exported (seconds, once per model: cached) and its
        # logits are checked against PyTorch's; until then, and if that fails, PyTorch answers.
        self._forward = None
        self.runtime = "torch"
        self._runtime_settled = threading.Event()
        if self.model is not None and runtime == "auto":
            # Not a daemon: the interpreter waits for an export under way at exit (killed inside torch.onnx or
            # onnxruntime, the process aborts: "terminate called without an active exception").
            threading.Thread(target=self._start_onnx_runtime, args=(torch.get_num_threads(),),
                             name="audience-onnx-runtime", daemon=False).start()
        else:
            self._runtime_settled.set()
        # The framing the model was trained on (checkpoint "crop"); an explicit margin overrides its margin.
        geometry = DEFAULT_GEOMETRY if self.metadata is None else self.metadata.crop_geometry
        self.geometry = geometry if margin is None else replace(geometry, margin=float(margin))
        # Eyes levelled and placed as in the training images (checkpoint "alignment"); None: plain crops.
        self.alignment = None if self.metadata is None else self.metadata.face_alignment
        self.temperature: dict[str, float] = {} if self.metadata is None else self.metadata.temperatures
        self.heads: tuple[str, ...] = tuple(self.temperature)
        self._owns_detector = detector is None
        self.detector = detector if detector is not None else FaceDetector(max_faces=max_faces)
        self._lock = threading.Lock()

    def _start_onnx_runtime(self, threads: int) -> None:
        from audience.model.runtime import onnx_forward

        try:
            forward = onnx_forward(self.model, self.metadata.heads, int(self.metadata.image_size), threads=threads)
            if forward is not None:
                self._forward, self.runtime = forward, "onnxruntime"
        finally:
            self._runtime_settled.set()

    def wait_for_runtime(self, timeout: float | None = None) -> str:
        """The runtime that classifies ("onnxruntime" or "torch") once the ONNX export has succeeded or
        failed (at most `timeout` seconds' wait)."""
        self._runtime_settled.wait(timeout)
        return self.runtime

    @property
    def detection_only(self) -> bool:
        return self.model is None

    @property
    def synthetic(self) -> bool:
        return self.metadata is not None and self.metadata.synthetic

    @property
    def note(self) -> str | None:
        """What a user must know before trusting the output (no model, a synthetic-data model, or a framing
        measured by this project's detector before its boxes moved: see audience.bench.framing)."""
        if self.detection_only:
            return DETECTION_ONLY_NOTE
        if self.synthetic:
            return SYNTHETIC_NOTE
        crop = self.metadata.crop if self.metadata is not None else None
        measured_by = crop.detector if crop is not None else None
        if measured_by and measured_by.startswith("mediapipe BlazeFace") and measured_by != DETECTOR_NAME:
            return EARLIER_FRAMING_NOTE.format(name=self.checkpoint.name)
        return None

    def close(self) -> None:
        if self._owns_detector:
            self.detector.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def predict(self, source, whole_image: bool = False, tta_flip: bool | None = None) -> list[FacePrediction]:
        """Faces in `source` (path, bytes, RGB array or PIL image), the largest max_faces, in reading order.

        Reading order (`reading_order`): rows top to bottom, left to right within a row, the order
        of the numbers drawn on the boxes, the UI table, the JSON and the CLI.

        whole_image=True skips detection and classifies the whole image as one face crop.
        tta_flip overrides the constructor's setting for this call. No face found: [].
        """
        return self.predict_timed(source, whole_image, tta_flip)[0]

    def predict_timed(
        self, source, whole_image: bool = False, tta_flip: bool | None = None
    ) -> tuple[list[FacePrediction], Timings]:
        """predict() plus the time each stage took."""
        timings = Timings()
        start = time.perf_counter()
        image = read_image(source)
        timings.decode_ms = (time.perf_counter() - start) * 1000
        height, width = image.shape[:2]
        with self._lock:
            start = time.perf_counter()
            if whole_image:
                faces = [Face(box=(0, 0, width, height), score=None, keypoints=())]
            else:
                faces = self.detector.detect_all(image)
            timings.faces_found = len(faces)
            faces = sorted(faces, key=lambda face: face.box[2] * face.box[3], reverse=True)[: self.max_faces]
            faces = [faces[i] for i in reading_order([face.box for face in faces])]
            timings.detect_ms = (time.perf_counter() - start) * 1000
            predictions, crops = [], []
            for face in faces:
                if whole_image:
                    crop, crop_box = image, face.box
                else:
                    crop, crop_box = cut_face(image, face, self.geometry, self.alignment)
                crop_box = tuple(int(v) for v in crop_box)
                crops.append(crop)
                score = None if face.score is None else float(face.score)
                predictions.append(FacePrediction(tuple(int(v) for v in face.box), score, crop_box))
            start = time.perf_counter()
            if self.model is not None and crops:
                probs = self.classify_crops(crops, self.tta_flip if tta_flip is None else tta_flip)
                predictions = [
                    with_probs(p, {head: probs[head][i] for head in probs}, self.uncertain_below)
                    for i, p in enumerate(predictions)
                ]
            timings.classify_ms = (time.perf_counter() - start) * 1000
        timings.faces = len(predictions)
        return predictions, timings

    def face_features(self, crops: list[np.ndarray]) -> np.ndarray:
        """The model's own features of N face crops (its backbone's pooled output, the heads' input), L2-normalised
        rows [N, width]: two crops of one person lie close (the video tracker re-links a returning face with them).
        Always PyTorch (the ONNX model gives the heads' outputs only); one forward, under the predict lock."""
        if self.model is None:
            raise RuntimeError("face_features needs a checkpoint; this Predictor is detection-only")
        import torch

        batch = torch.stack([self.transform(np.ascontiguousarray(crop)) for crop in crops])
        with self._lock, torch.inference_mode():
            features = self.model.backbone(batch.contiguous(memory_format=torch.channels_last)).float().numpy()
        features = features.reshape(len(crops), -1).astype(np.float64)
        return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)

    def classify_crops(self, crops: list[np.ndarray], tta_flip: bool = False) -> dict[str, np.ndarray]:
        """Calibrated probabilities (head -> array [N, classes]) of N face crops, and for a years age head each
        face's age in years ("age_years" -> array [N]), in forward passes of at most
        MAX_FORWARD_PIXELS input pixels (one pass for the shipped model's 20 faces).

        With tta_flip the mirrored crops join the same batch and each face's probabilities are the
        mean of its two views (averaging probabilities, not logits, keeps the calibration of each view). A model
        that averages the mirror image itself (the checkpoint's `flip_average`) ignores tta_flip.
        """
        if self.model is None:
            raise RuntimeError("classify_crops needs a checkpoint; this Predictor is detection-only")
        mirrored_inside = bool(self.metadata.flip_average)
        tta_flip = tta_flip and not mirrored_inside
        views = list(crops)
        if tta_flip:
            views += [np.ascontiguousarray(crop[:, ::-1]) for crop in crops]
        # In chunks of at most MAX_FORWARD_PIXELS input pixels: 40 views of a 1024 px model in one batch took
        # a request to 8 GB; a chunk's memory no longer grows with the number of faces.
        size = int(self.metadata.image_size or 224)
        chunk = max(1, MAX_FORWARD_PIXELS // (size * size * (2 if mirrored_inside else 1)))
        forward = self._forward
        import torch

        parts = []
        for start in range(0, len(views), chunk):
            batch = torch.stack([self.transform(np.ascontiguousarray(view)) for view in views[start:start + chunk]])
            if forward is not None:
                parts.append(forward(batch.numpy()))
                continue
            batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                parts.append({head: values.float().numpy() for head, values in self.model(batch).items()})
        logits = {head: np.concatenate([part[head] for part in parts]) for head in parts[0]}
        probs = {}
        for head, temperature in self.temperature.items():
            # in numpy: torch's threads cost more than a softmax over a few rows (measured under load)
            scaled = logits[head].astype(np.float64) / temperature
            scaled = np.exp(scaled - scaled.max(axis=1, keepdims=True))
            head_probs = (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)
            if tta_flip:
                head_probs = (head_probs[: len(crops)] + head_probs[len(crops) :]) / 2
            if not np.isfinite(head_probs).all():  # weights holding NaN or infinity pass every file check
                raise AudienceError(NON_FINITE.format(name=self.checkpoint.name if self.checkpoint else "The model"))
            probs[head] = head_probs
        if YEARS_OUTPUT in logits:  # a years age head: the expected age of its distribution over the years
            scaled = logits[YEARS_OUTPUT].astype(np.float64)
            scaled = np.exp(scaled - scaled.max(axis=1, keepdims=True))
            years = scaled / scaled.sum(axis=1, keepdims=True)
            if tta_flip:
                years = (years[: len(crops)] + years[len(crops):]) / 2
            probs[YEARS_OUTPUT] = expected_age(torch.from_numpy(years)).numpy()
        return probs
