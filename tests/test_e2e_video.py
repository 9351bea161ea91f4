"""The Predict tab's Video view in a real browser (headless Chromium through Playwright, against `python app.py`):
a clip made at test time from real UTKFace faces (../shared; skipped without it) is uploaded and analysed, and
the annotated video the page shows PLAYS in Chromium (a VP8 WebM: readyState, duration, no media error), beside
the per-track table. Screenshot: <artifacts>/screenshots/predict-video.png.
"""

from __future__ import annotations

import re

import pytest
from fixtures.app_server import artifacts_dir, shared_app_server
from fixtures.video_clips import two_faces, two_people, write_video
from fixtures.waiting import HANG_S
from playwright.sync_api import expect
from test_e2e_browser import app_page, chromium, open_tab, screenshot  # noqa: F401 - the fixture is used

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, demo_root):
    return shared_app_server(request, tmp_path_factory, demo_root)


def test_the_annotated_video_plays_in_chromium(chromium, server, shared_dir, tmp_path):  # noqa: F811
    folder = shared_dir / "utkface" / "UTKFace"
    if not folder.is_dir():
        pytest.skip("../shared/utkface/UTKFace is not present")
    clip = write_video(tmp_path / "two-people.mp4", two_people(two_faces(folder)))
    with app_page(chromium, server.url) as page:
        open_tab(page, "Predict")
        page.get_by_role("tab", name="Video", exact=True).click()
        page.locator("#predict-video-file input[type=file]").set_input_files(str(clip))
        page.get_by_role("button", name="Analyse video").click()
        status = page.get_by_text(re.compile(r"^\d+ tracks? in \d+ frames analysed"))
        status.wait_for(timeout=HANG_S * 1000)
        assert status.inner_text().startswith("2 tracks in 15 frames analysed (5 frames/s) of 'two-people.mp4'")
        video = page.locator("#predict-video-out video")
        expect(video).to_have_count(1)
        page.wait_for_function("""() => { const v = document.querySelector('#predict-video-out video');
            return v && (v.error || (v.readyState >= 2 && v.duration > 0)); }""", timeout=HANG_S * 1000)
        state = video.evaluate("v => ({ready: v.readyState, duration: v.duration, error: v.error && v.error.code,"
                               " width: v.videoWidth, height: v.videoHeight, src: v.currentSrc})")
        assert state["error"] is None and state["ready"] >= 2 and state["duration"] > 0, state
        assert (state["width"], state["height"]) == (640, 360) and state["src"].endswith(".webm"), state
        video.evaluate("v => { v.muted = true; return v.play(); }")  # it plays: time advances
        page.wait_for_function("() => document.querySelector('#predict-video-out video').currentTime > 0.3",
                               timeout=HANG_S * 1000)
        expect(page.get_by_text("Tracks (age and gender", exact=False)).to_be_visible()
        screenshot(page, artifacts_dir() / "screenshots" / "predict-video.png")
        page.console_errors.check()
