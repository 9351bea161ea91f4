"""Video files: frames sampled at a chosen rate, every face detected, classified, tracked and smoothed per track.

Decoding is OpenCV's VideoCapture (the FFmpeg that the pinned opencv wheels bundle: MP4, WebM, MOV, MKV, AVI, GIF;
no system ffmpeg). A file is checked before its frames are decoded, with one sentence for each way it can be
wrong: unreadable or truncated (no index to open), audio only, no frame at all, a resolution, declared duration or
number of analysed frames over the bounds (VideoLimits: a public deployment's are smaller). The declared duration
and frame count are checked again while decoding, so a header that lies gains nothing.

The annotated video is written as VP8 WebM (libvpx is in the bundled FFmpeg; the 'mp4v' MPEG-4 Part 2 that
OpenCV writes by default does not play in Chromium, and its H.264 encoder is absent), at the analysed rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from audience.errors import AudienceError, quoted
from audience.predict.predictor import FacePrediction, Predictor
from audience.predict.tracking import VideoTracker

VIDEO_SUFFIXES = (".mp4", ".m4v", ".webm", ".mov", ".mkv", ".avi", ".gif")
ACCEPTED_VIDEOS = "MP4, WebM, MOV, MKV, AVI or GIF"
DEFAULT_RATE = 5.0  # frames analysed per second of video: the webcam's rate (what a CPU classifies in time)
# the annotated video's longest side: larger frames are scaled down, then drawn on (labels stay legible). VP8
# encoding is the analysis' costliest step: about 0.6 s a 720p frame of the benchmark's noisy clip, ~5x the rest.
OUTPUT_MAX_SIDE = 854
OUTPUT_FOURCC = "VP80"  # VP8 in WebM: plays in every browser; OpenCV's bundled FFmpeg has no H.264 encoder
TRUNCATED_SHARE = 0.9  # decoding ending before this share of the declared frames: the file says it is cut short
SNIFF_BYTES = 1 << 20  # the head and tail of a file searched for an audio-only container's marks


@dataclass(frozen=True)
class VideoLimits:
    """What one request may ask: seconds of video, pixels per frame and frames analysed."""

    max_seconds: float
    max_pixels: int
    max_frames: int

    def describe(self) -> str:
        return (f"at most {self.max_seconds:g} s, {self.max_pixels:,} pixels a frame and {self.max_frames:,} "
                "frames analysed")


LOCAL_LIMITS = VideoLimits(max_seconds=3 * 3600, max_pixels=3840 * 2160, max_frames=100_000)
# A public server: 60 s of video at 5 frames/s is 300 frames, about a minute of its 2 CPU cores (docs/measurements.md)
PUBLIC_LIMITS = VideoLimits(max_seconds=60, max_pixels=1920 * 1080, max_frames=300)


@dataclass(frozen=True)
class VideoInfo:
    name: str
    width: int
    height: int
    fps: float  # 0 when the file declares none
    frame_count: int  # 0 when the file declares none
    declared_s: float  # frame_count / fps, 0 when either is missing

    def analysed_frames(self, rate: float | None) -> int:
        """How many frames sampling at `rate` (None: every frame) takes from the declared video (0: unknown)."""
        if self.frame_count <= 0:
            return 0
        if rate is None or self.fps <= 0 or rate >= self.fps:
            return self.frame_count
        return math.ceil(self.declared_s * rate)


def _head_and_tail(path: Path) -> tuple[bytes, bytes]:
    try:
        with open(path, "rb") as file:
            head = file.read(SNIFF_BYTES)
            file.seek(0, 2)
            size = file.tell()
            file.seek(max(0, size - SNIFF_BYTES))
            return head, file.read(SNIFF_BYTES)
    except OSError:
        return b"", b""


MATROSKA = b"\x1a\x45\xdf\xa3"  # the EBML header of Matroska and WebM
MATROSKA_CLUSTER = b"\x1f\x43\xb6\x75"  # a Cluster: where Matroska keeps its frames


def _no_frames(head: bytes, tail: bytes) -> bool:
    """Whether a container OpenCV could not open is whole but holds no frame: an MP4/MOV with its index (moov)
    and a video track or no track at all, or a WebM/MKV with a video codec and no cluster of frames."""
    both = head + tail
    if head[4:8] == b"ftyp":
        return b"moov" in both and (b"vide" in both or b"trak" not in both)
    if head[:4] == MATROSKA:
        return b"V_" in head and MATROSKA_CLUSTER not in both
    return False


def _audio_only(head: bytes, tail: bytes) -> bool:
    """Whether the file is an audio container (WAV, MP3, FLAC, Ogg without video, an MP4/M4A whose only
    tracks are sound): OpenCV opens none of them, and the sentence should say why."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE" or head[:4] in (b"fLaC", b"ID3\x03", b"ID3\x04"):
        return True
    if head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):  # an MPEG audio frame's sync word (MP3 without ID3)
        return True
    if head[:4] == b"OggS":
        return b"theora" not in head
    if head[4:8] == b"ftyp":  # ISO media: the handler of each track says sound or video
        both = head + tail
        return b"hdlrsoun" in both.replace(b"\x00", b"") and b"vide" not in both
    return False


def open_video(path: str | Path, limits: VideoLimits = LOCAL_LIMITS, name: str | None = None,
               rate: float | None = None):
    """(cv2.VideoCapture, VideoInfo) of a readable video within `limits` when sampled at `rate` frames/s (None:
    every frame), else AudienceError (one sentence)."""
    import cv2

    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise AudienceError(f"{quoted(name)}: no such video file.")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        head, tail = _head_and_tail(path)
        if _audio_only(head, tail):
            raise AudienceError(f"{quoted(name)} holds only sound, no video picture: give a video ({ACCEPTED_VIDEOS}).")
        if _no_frames(head, tail):
            raise AudienceError(f"{quoted(name)} holds no video frame to analyse: it is empty or cut short.")
        raise AudienceError(f"{quoted(name)} could not be read as a video: it is damaged or cut short (its index "
                            f"is missing), or not {ACCEPTED_VIDEOS}.")
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0)
    fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else 0.0
    count = float(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    count = int(count) if math.isfinite(count) and count > 0 else 0
    info = VideoInfo(name, width, height, fps, count, count / fps if fps and count else 0.0)
    try:
        check_info(info, limits, rate)
    except AudienceError:
        capture.release()
        raise
    return capture, info


def check_info(info: VideoInfo, limits: VideoLimits, rate: float | None = None) -> None:
    """AudienceError when the declared size or duration is over `limits` (or the analysed frames, given `rate`)."""
    if info.width <= 0 or info.height <= 0:
        raise AudienceError(f"{quoted(info.name)} holds no video picture (no frame size): give a video "
                            f"({ACCEPTED_VIDEOS}).")
    if info.width * info.height > limits.max_pixels:
        raise AudienceError(f"{quoted(info.name)} is {info.width:,} x {info.height:,} pixels, more than the "
                            f"{limits.max_pixels:,} pixels a frame this app analyses: scale it down.")
    if info.declared_s > limits.max_seconds:
        raise AudienceError(f"{quoted(info.name)} says it lasts {duration_text(info.declared_s)}, longer than the "
                            f"{duration_text(limits.max_seconds)} this app analyses per video: cut it shorter.")
    frames = info.analysed_frames(rate)
    if frames > limits.max_frames:
        raise AudienceError(frames_over(info.name, frames, limits, rate))


def frames_over(name: str, frames: int, limits: VideoLimits, rate: float | None) -> str:
    how = "every frame" if rate is None else f"{rate:g} frames/s"
    return (f"{quoted(name)} needs {frames:,} frames analysed at {how}, more than the {limits.max_frames:,} per "
            "video this app analyses: pick a lower rate or a shorter clip.")


def duration_text(seconds: float) -> str:
    """'9 h 59 min', '2 min 5 s', '4.2 s'."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{seconds:.1f} s"


def sample_frames(capture, info: VideoInfo, rate: float | None,
                  limits: VideoLimits) -> Iterator[tuple[int, float, np.ndarray]]:
    """(frame index, time in seconds, RGB frame) of the frames sampled at `rate` per second (None: every frame).

    A frame is taken when its time enters the next 1/rate slot. Raises AudienceError when the video runs past
    limits.max_seconds or the sampled frames past limits.max_frames (whatever its header declared)."""
    import cv2

    index, last_slot, taken = -1, -1, 0
    while capture.grab():
        index += 1
        seconds = index / info.fps if info.fps else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if seconds > limits.max_seconds:
            raise AudienceError(f"{quoted(info.name)} runs past {duration_text(limits.max_seconds)}, the longest "
                                "video this app analyses: cut it shorter.")
        slot = index if rate is None else math.floor(seconds * rate + 1e-6)
        if slot <= last_slot:
            continue
        ok, frame = capture.retrieve()
        if not ok or frame is None:
            break
        if frame.shape[0] * frame.shape[1] > limits.max_pixels:  # a stream whose frames outgrow its header
            raise AudienceError(f"{quoted(info.name)} has frames of {frame.shape[1]:,} x {frame.shape[0]:,} pixels, "
                                f"more than the {limits.max_pixels:,} this app analyses: scale it down.")
        taken += 1
        if taken > limits.max_frames:
            raise AudienceError(frames_over(info.name, taken, limits, rate))
        last_slot = slot
        yield index, seconds, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


@dataclass
class TrackedFace:
    track: int
    raw: FacePrediction  # this frame's own answer
    shown: FacePrediction  # smoothed over the track (what is drawn and listed)


@dataclass
class FrameResult:
    frame: int
    time_s: float
    faces: list[TrackedFace]


@dataclass
class VideoResult:
    """Everything one analysis found; `frames` in time order."""

    info: VideoInfo
    rate: float | None
    frames: list[FrameResult] = field(default_factory=list)
    returns: dict[int, int] = field(default_factory=dict)  # track id -> times it came back
    note: str | None = None  # e.g. the file ended before its declared length
    seconds: float = 0.0  # wall time of the analysis


def face_crops(frame: np.ndarray, predictions: list[FacePrediction], indices) -> list[np.ndarray]:
    """Copies of predictions[i]'s crop box (the square the classifier saw) for i in `indices`."""
    height, width = frame.shape[:2]
    crops = []
    for i in indices:
        x, y, w, h = predictions[i].crop_box
        x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
        crops.append(frame[y0:y1, x0:x1].copy() if x1 > x0 and y1 > y0 else frame.copy())
    return crops


class AnnotatedWriter:
    """The annotated frames as a VP8 WebM at `fps`, scaled to OUTPUT_MAX_SIDE at most (even sides)."""

    def __init__(self, path: Path, fps: float, width: int, height: int):
        import cv2

        scale = min(1.0, OUTPUT_MAX_SIDE / max(width, height))
        self.size = (max(2, round(width * scale) // 2 * 2), max(2, round(height * scale) // 2 * 2))
        self.path = Path(path)
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*OUTPUT_FOURCC), float(fps), self.size)
        if not self.writer.isOpened():
            raise AudienceError("The annotated video could not be written (OpenCV has no VP8 encoder here).")

    def write(self, rgb: np.ndarray, faces: list[TrackedFace]) -> None:
        """The frame scaled to the output size, each face's box and steady label drawn, numbered by its track."""
        import cv2

        from audience.predict.drawing import draw_predictions

        shown = [face.shown for face in faces]
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            sx, sy = self.size[0] / rgb.shape[1], self.size[1] / rgb.shape[0]
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
            shown = [replace(p, box=(round(p.box[0] * sx), round(p.box[1] * sy), max(1, round(p.box[2] * sx)),
                                     max(1, round(p.box[3] * sy)))) for p in shown]
        drawn = draw_predictions(rgb, shown, numbers=[face.track for face in faces])
        self.writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self.writer.release()


def analyse_video(path: str | Path, predictor: Predictor, rate: float | None = DEFAULT_RATE,
                  limits: VideoLimits = LOCAL_LIMITS, annotated: str | Path | None = None, smooth: bool = True,
                  name: str | None = None, result: VideoResult | None = None) -> Iterator[tuple[int, int]]:
    """Analyse a video file, yielding (frames analysed, frames expected: 0 when unknown) after each frame, so a
    caller shows progress and may stop early (close the generator). The outcome accumulates in `result` (a
    VideoResult made here when None: pass one to read it).

    rate: frames analysed per second of video (None: every frame). smooth=False keeps each frame's own labels
    (alpha 1: the comparison the measurements make). annotated: where to write the annotated WebM.
    """
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise AudienceError(f"The frame rate to analyse must be a positive number of frames per second, not {rate}.")
    capture, info = open_video(path, limits, name, rate)
    writer = None
    try:
        if result is None:
            result = VideoResult(info, rate)
        result.info, result.rate = info, rate
        expected = info.analysed_frames(rate)
        tracker = VideoTracker(alpha=0.35 if smooth else 1.0, uncertain_below=predictor.uncertain_below)
        # the model's own face features re-link a face that comes back (none without a model: a new track)
        embed = None if predictor.model is None else (lambda crops: list(predictor.face_features(crops)))
        started = time.perf_counter()
        for index, seconds, frame in sample_frames(capture, info, rate, limits):
            predictions = predictor.predict(frame)
            crops = lambda wanted, f=frame, p=predictions: face_crops(f, p, wanted)  # noqa: E731
            tracked = tracker.update(index, predictions, crops, embed)
            faces = [TrackedFace(track, raw, shown) for (track, shown), raw in zip(tracked, predictions, strict=True)]
            result.frames.append(FrameResult(index, seconds, faces))
            if annotated is not None:
                if writer is None:
                    out_fps = rate if rate is not None else (info.fps or DEFAULT_RATE)
                    writer = AnnotatedWriter(Path(annotated), out_fps, frame.shape[1], frame.shape[0])
                writer.write(frame, faces)
            result.returns = {track.id: track.returns for track in tracker.tracks}
            result.seconds = time.perf_counter() - started
            yield len(result.frames), max(expected, len(result.frames))
        if not result.frames:
            raise AudienceError(f"{quoted(info.name)} holds no video frame to analyse: it is empty or cut short.")
        last = result.frames[-1].frame + 1
        if info.frame_count and last < TRUNCATED_SHARE * info.frame_count:
            result.note = (f"The video ended after {duration_text(result.frames[-1].time_s)} of the "
                           f"{duration_text(info.declared_s)} it declares (the file may be cut short); the frames "
                           "before were analysed.")
    finally:
        capture.release()
        if writer is not None:
            writer.close()
