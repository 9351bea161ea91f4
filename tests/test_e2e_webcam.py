"""The Predict tab's live webcam in a real browser: Chromium plays a Y4M video made here as its camera.

`--use-file-for-fake-video-capture` makes Chromium's fake camera play a file; the videos are made at
test time from real Adience faces (../shared; the test skips without it): one face moving across the
frame, and two faces side by side. The page streams camera frames to the server and shows the
annotated frames it answers with; the live status names each face's smoothed classes, which must stay
the same from frame to frame; Stop must stop the server's answers. The frames per second served end to
end are printed and saved to <artifacts>/webcam/fps.json (docs/measurements.md has the figure).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.app_server import artifacts_dir, shared_app_server
from fixtures.waiting import HANG_S
from PIL import Image
from playwright.sync_api import sync_playwright
from test_e2e_browser import CHROMIUM_FLAGS, ConsoleErrors, chromium  # noqa: F401 - the fixture is used

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FRAME_W, FRAME_H, FACE_SIDE, FPS = 320, 240, 120, 10
STREAM_S = 8.0  # seconds of streaming watched per video, and longer until MIN_FRAMES were seen (a loaded machine)
MIN_FRAMES = 12
STATUS = re.compile(r"^(\d+) faces?, \d+ ms per frame(?:: (.*?))?\.")


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    """A YUV4MPEG2 file (4:2:0, what Chromium's file camera reads) of RGB uint8 frames."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def faces(adience_sample) -> list[np.ndarray]:
    paths = sorted((adience_sample / "faces").glob("*/*.jpg"))[:2]
    assert len(paths) == 2, f"{adience_sample}: fewer than two face images"
    return [cv2.resize(np.asarray(Image.open(p).convert("RGB")), (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_AREA)
            for p in paths]


def moving_face(face: np.ndarray, count: int = 40) -> list[np.ndarray]:
    """One face crossing the frame left to right and back (the file loops)."""
    span = FRAME_W - FACE_SIDE
    frames = []
    for i in range(count):
        x = round(span * (i / (count / 2) if i < count / 2 else 2 - i / (count / 2)))
        frame = np.full((FRAME_H, FRAME_W, 3), 128, np.uint8)
        frame[60:60 + FACE_SIDE, x:x + FACE_SIDE] = face
        frames.append(frame)
    return frames


def two_faces(first: np.ndarray, second: np.ndarray, count: int = 20) -> list[np.ndarray]:
    """Two faces side by side, swaying together (identical frames give identical answers, one image URL)."""
    frames = []
    for i in range(count):
        x = 10 + 2 * (i if i < count / 2 else count - i)
        frame = np.full((FRAME_H, FRAME_W, 3), 128, np.uint8)
        frame[60:60 + FACE_SIDE, x:x + FACE_SIDE] = first
        frame[60:60 + FACE_SIDE, x + FACE_SIDE + 20:x + 2 * FACE_SIDE + 20] = second
        frames.append(frame)
    return frames


def watch_stream(video: Path, chromium_path: Path, url: str) -> dict:
    """Start the live webcam on `video`, watch STREAM_S seconds (more until MIN_FRAMES came), stop; what was seen."""
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(chromium_path), headless=True, viewport={"width": 1280, "height": 900},
            args=[*CHROMIUM_FLAGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-video-capture={video}"])
        context.set_default_timeout(HANG_S * 1000)  # every wait is for a condition; this bound is for a hang
        try:
            page = context.new_page()
            errors = ConsoleErrors(page)
            page.goto(url)
            page.get_by_role("tab", name="Predict", exact=True).click()
            page.get_by_role("tab", name="Live webcam", exact=True).click()
            camera = page.locator(".block", has=page.get_by_text("Webcam", exact=True)).last
            camera.get_by_text("Click to Access Webcam").click()
            record = camera.get_by_role("button", name="capture photo")
            record.wait_for()
            live = page.locator(".block", has=page.get_by_text("Live faces", exact=True)).last.locator("img")
            status = page.get_by_text(STATUS)
            record.click()
            live.first.wait_for(timeout=HANG_S * 1000)  # the first answer (the model loads)
            frames, statuses = [], []
            started = time.monotonic()
            while (time.monotonic() - started < STREAM_S or len(frames) < MIN_FRAMES) \
                    and time.monotonic() - started < HANG_S:
                src = live.first.get_attribute("src")
                if src and (not frames or frames[-1] != src):
                    frames.append(src)
                    if status.count():
                        statuses.append(status.first.inner_text())
                page.wait_for_timeout(25)
            elapsed = time.monotonic() - started
            assert "Stop" in record.inner_text()
            record.click()  # stop
            page.wait_for_timeout(1000)  # an answer already in flight may still land
            last, after = live.first.get_attribute("src"), 0
            quiet = time.monotonic()
            while time.monotonic() - quiet < 3:
                src = live.first.get_attribute("src")
                if src != last:
                    after, last = after + 1, src
                page.wait_for_timeout(50)
            errors.check()
        finally:
            context.close()
    return {"frames": len(frames), "seconds": round(elapsed, 2), "fps": round(len(frames) / elapsed, 2),
            "statuses": statuses, "frames_after_stop": after}


def parse(statuses: list[str]) -> list[tuple[int, list[str]]]:
    parsed = []
    for text in statuses:
        match = STATUS.match(text)
        assert match, f"not a live status: {text!r}"
        parsed.append((int(match.group(1)), match.group(2).split("; ") if match.group(2) else []))
    return parsed


def test_live_webcam_streams_steady_labels_and_stops(chromium, request, tmp_path_factory, demo_root,  # noqa: F811
                                                     faces, tmp_path):
    server = shared_app_server(request, tmp_path_factory, demo_root)
    results = {}
    for name, frames, expected in (("one face moving", moving_face(faces[0]), 1),
                                   ("two faces", two_faces(*faces), 2)):
        seen = watch_stream(write_y4m(tmp_path / f"{expected}.y4m", frames), chromium, server.url)
        parsed = parse(seen["statuses"])
        assert seen["frames"] >= 5, f"{name}: only {seen['frames']} annotated frames in {seen['seconds']} s"
        counts = Counter(count for count, _ in parsed)
        assert counts[expected] >= 0.8 * len(parsed), f"{name}: faces per frame {dict(counts)}"
        # the smoothing keeps each face's classes: past the first frames, one label per face number
        steady = [labels for count, labels in parsed[3:] if count == expected]
        for face in range(expected):
            labels = Counter(labels[face] for labels in steady)
            top = labels.most_common(1)[0][1] if labels else 0
            assert top >= 0.9 * len(steady), f"{name}: face {face + 1}'s labels changed: {dict(labels)}"
        assert seen["frames_after_stop"] == 0, f"{name}: {seen['frames_after_stop']} frames came after Stop"
        results[name] = {k: v for k, v in seen.items() if k != "statuses"}
    folder = artifacts_dir() / "webcam"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fps.json").write_text(json.dumps(results, indent=2))
    print(f"webcam frames per second served end to end: {json.dumps(results)}")
