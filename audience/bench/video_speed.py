"""The logic of `python -m audience.cli.benchmark video`: frames per second the video analysis takes on this CPU
for a 720p clip, per number of threads, and how often each track's labels change with and without smoothing.

The clip is made here: two faces (two UTKFace chips of different people from `faces_dir` when given, else the
head of the app's public-domain example photo twice) moving across a 1280 x 720 grey background with camera
noise, as the tests' clips (tests/fixtures/video_clips.py) but at 720p. Every figure is printed with the load average.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from audience.data.images import read_image

WIDTH, HEIGHT, FPS = 1280, 720, 25
SIDE = 240  # face side in the 720p frame
EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "examples" / "astronaut.jpg"
FACE_PREFIXES = ("6_1_0_", "62_0_0_")  # as the tests' clips: a girl and an older man


def clip_faces(faces_dir: str | Path | None) -> list[np.ndarray]:
    if faces_dir is not None:
        paths = [sorted(Path(faces_dir).glob(f"{prefix}*.jpg"))[0] for prefix in FACE_PREFIXES]
        images = [read_image(path) for path in paths]
    else:  # the astronaut's head (her face is at x 174, y 72, 101 px in the 512 px photo), twice
        images = [read_image(EXAMPLE)[20:240, 120:340]] * 2
    return [cv2.resize(image, (SIDE, SIDE), interpolation=cv2.INTER_AREA) for image in images]


def write_clip(path: Path, faces: list[np.ndarray], seconds: float = 8.0) -> Path:
    """A 720p MP4 of the two faces drifting right, each rescaled a little and with noise every frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    for i in range(round(seconds * FPS)):
        rng = np.random.default_rng(i)
        frame = np.full((HEIGHT, WIDTH, 3), 150, np.float32)
        for face, x, y in ((faces[0], 80 + 4 * i, 200), (faces[1], 640 + 2 * i, 260)):
            side = SIDE - int(rng.integers(0, 17))
            frame[y:y + side, x:x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        frame += rng.normal(0, 10, frame.shape).astype(np.float32)
        writer.write(cv2.cvtColor(np.clip(frame, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def video_benchmark(checkpoint: str | Path, faces_dir: str | Path | None = None, threads: tuple[int, ...] = (1, 2),
                    rate: float | None = 5.0, seconds: float = 8.0,
                    log: Callable[[str], None] = print) -> dict:
    import torch

    from audience.predict.predictor import Predictor
    from audience.predict.video import VideoResult, analyse_video
    from audience.predict.video_report import frame_rows, label_changes

    report: dict = {"clip": f"{WIDTH}x{HEIGHT}, {seconds:g} s at {FPS} frames/s, two faces",
                    "faces": "UTKFace" if faces_dir else "example photo", "rate": rate, "runs": []}
    before = torch.get_num_threads(), cv2.getNumThreads()
    with tempfile.TemporaryDirectory(prefix="audience-video-bench-") as folder:
        clip = write_clip(Path(folder) / "clip-720p.mp4", clip_faces(faces_dir), seconds)
        for count in threads:
            torch.set_num_threads(count)
            cv2.setNumThreads(count)
            with Predictor(checkpoint) as predictor:  # its ONNX Runtime session takes `count` threads
                runtime = predictor.wait_for_runtime(120)
                # with the annotated WebM (what the app does), without it, and the frames' own labels (no smoothing)
                for smooth, annotate in ((True, True), (True, False), (False, False)):
                    result = VideoResult(None, rate)
                    load = os.getloadavg()
                    started = time.perf_counter()
                    out = Path(folder) / "out.webm" if annotate else None
                    for _ in analyse_video(clip, predictor, rate, annotated=out, smooth=smooth, result=result):
                        pass
                    elapsed = time.perf_counter() - started
                    rows = frame_rows(result)
                    run = {"threads": count, "runtime": runtime, "smooth": smooth, "annotated": annotate,
                           "frames": len(result.frames),
                           "seconds": round(elapsed, 2), "frames_per_s": round(len(result.frames) / elapsed, 2),
                           "tracks": len({row["track"] for row in rows}),
                           "age_changes": sum(label_changes(rows, "age").values()),
                           "gender_changes": sum(label_changes(rows, "gender").values()),
                           "load_before": [round(v, 2) for v in load],
                           "load_after": [round(v, 2) for v in os.getloadavg()]}
                    report["runs"].append(run)
                    steps = "decode, detect, classify, track" + (", draw, encode WebM" if annotate else "")
                    log(f"{count} thread{'s' if count != 1 else ''} ({runtime}), smoothing "
                        f"{'on ' if smooth else 'off'}: {run['frames']} frames in {run['seconds']} s = "
                        f"{run['frames_per_s']} frames/s ({steps}); "
                        f"{run['tracks']} tracks; label changes age {run['age_changes']}, gender "
                        f"{run['gender_changes']}; load {run['load_before']} -> {run['load_after']}")
    torch.set_num_threads(before[0])  # the caller's settings back (a test process goes on)
    cv2.setNumThreads(before[1])
    return report
