"""End to end in a real browser: Debian's headless Chromium, driven by Playwright, against `python app.py`.

Each tab renders without console errors; EDA draws its charts; Predict annotates an uploaded photo;
Train runs one fold of the demo data (tiny arch, 1 epoch) to the end with its log moving; Compare
lists that run. Screenshots of the four tabs go to <artifacts>/screenshots/ (AUDIENCE_ARTIFACTS,
default ./artifacts). Chromium is never downloaded: scripts/ensure_chromium.sh installs Debian's.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures.app_server import PROJECT_ROOT, artifacts_dir, settle_job, shared_app_server
from PIL import Image
from playwright.sync_api import expect, sync_playwright

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
# Without the networking flags Chromium keeps dialling Google's services, which a closed network refuses.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Console errors that are not the app's fault, each with why. None is known with gradio 6.31 and
# Chromium 156: every console error and uncaught page exception fails the test.
BENIGN_CONSOLE_ERRORS: tuple[tuple[str, str], ...] = ()
TRAIN_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists() and hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run(["sh", str(PROJECT_ROOT / "scripts" / "ensure_chromium.sh")], timeout=900, check=False)
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing and cannot be installed here (not root): run "
                    "scripts/ensure_chromium.sh as root (CI does).")
    return CHROMIUM


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, demo_root):
    return shared_app_server(request, tmp_path_factory, demo_root)


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = artifacts_dir() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class ConsoleErrors:
    """Console errors and uncaught exceptions, tagged with the step during which they came."""

    def __init__(self, page):
        self.step = "load"
        self.errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.add(message.text))
        page.on("pageerror", lambda error: self.add(f"uncaught: {error}"))

    def add(self, text: str) -> None:
        if not any(re.search(pattern, text) for pattern, _ in BENIGN_CONSOLE_ERRORS):
            self.errors.append(f"[{self.step}] {text}")

    def check(self) -> None:
        assert not self.errors, "browser console errors:\n" + "\n".join(self.errors)


@pytest.fixture(scope="module")
def page(chromium, server):

    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(chromium), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900})
        context.set_default_timeout(30_000)
        try:
            page = context.new_page()
            page.console_errors = ConsoleErrors(page)
            page.goto(server.url)
            yield page
        finally:
            context.close()


def open_tab(page, name: str) -> None:
    page.console_errors.step = name
    page.get_by_role("tab", name=name, exact=True).click()


def screenshot(page, path: Path) -> None:
    """A full-page screenshot after scrolling through the page, so gradio's lazy images (loading="lazy",
    0 px tall until near the viewport) are loaded and drawn."""
    height = page.evaluate("document.body.scrollHeight")
    for y in range(0, height + 900, 900):
        page.evaluate(f"window.scrollTo(0, {y})")
        page.wait_for_timeout(100)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(300)
    page.screenshot(path=str(path), full_page=True)


def block(page, label: str):
    """The gradio block (component box) whose label is `label`."""
    return page.locator(".block", has=page.get_by_text(label, exact=True)).last


def test_eda_tab_draws_its_charts(page, screenshots):
    page.console_errors.step = "EDA"
    page.get_by_text("rows (faces)").wait_for(timeout=60_000)  # demo.load fills the tab on page load
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot svg.main-svg').length >= 6")
    bars = page.locator(".js-plotly-plot .bars path")
    assert bars.count() >= 8  # at least the 8 age classes are drawn
    montage = block(page, "Sample faces per age class")
    montage.scroll_into_view_if_needed()
    montage.locator("img").wait_for()
    assert montage.locator("img").evaluate("img => img.naturalWidth") > 100
    assert "Synthetic demo data." in page.inner_text("body")
    screenshot(page, screenshots / "eda.png")
    page.console_errors.check()


def test_predict_tab_annotates_an_uploaded_photo(page, screenshots, tmp_path):
    from skimage import data

    photo = tmp_path / "astronaut.png"
    original = data.astronaut()
    Image.fromarray(original).save(photo)
    open_tab(page, "Predict")
    expect(page.get_by_label("Model", exact=True)).to_have_value(re.compile(r"^e2e-tiny - tiny"))  # served, picked
    upload = page.locator(".block", has=page.get_by_text("Drop Image Here")).locator("input[type=file]").first
    upload.set_input_files(str(photo))  # the upload's change event runs /predict

    status = page.get_by_text(re.compile(r"^\d+ faces? found in \d+ ms"))
    status.wait_for(timeout=60_000)
    assert status.inner_text().startswith("1 face found")
    result = block(page, "Faces").locator("img").first
    response = page.request.get(result.get_attribute("src"))
    assert response.ok
    annotated = np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))
    assert annotated.shape == original.shape
    # The box and label are drawn around the astronaut's face (mediapipe, refined as a close-up: x 174, y 72, 101 px).
    changed = np.abs(annotated.astype(int) - original.astype(int)).max(axis=2) > 60
    assert changed[60:200, 160:290].mean() > 0.02 and changed[300:, :].mean() < 0.01
    table = block(page, "Faces (click a row to chart it)")
    expect(table.get_by_text("174, 72, 101, 101").filter(visible=True)).to_have_count(1)
    screenshot(page, screenshots / "predict.png")
    page.console_errors.check()


def _new_run_finished(log: str, earlier_runs: set[str]) -> bool:
    """Whether `log` says that a run other than `earlier_runs` finished."""
    return any(run_id not in earlier_runs for run_id in re.findall(r"run (\S+) finished", log))


def test_train_tab_runs_one_demo_fold_with_a_moving_log(page, screenshots, server):
    open_tab(page, "Train")
    page.get_by_role("button", name=re.compile(r"^Demo preset")).click()
    page.wait_for_timeout(500)
    assert page.get_by_role("textbox", name=re.compile(r"^data root")).input_value() == "demo"
    assert "Tiny" in page.get_by_label("arch", exact=True).input_value()
    assert page.get_by_label("folds", exact=True).input_value() == "0"
    epochs = page.get_by_label("epochs", exact=True)
    epochs.fill("1")
    epochs.press("Tab")
    settle_job(server)  # no other test's job running: this run starts, and its log is the one shown
    before = {p.name for p in server.runs.iterdir()}
    log = page.get_by_label("Log", exact=True)
    page.get_by_role("button", name=re.compile(r"^Train")).click()

    # A finished job's log stays on the page until the next job's replaces it (the page polls, so the
    # previous test's log may only show up now): only a log that starts with this run's line counts.
    ours = re.compile(r"^\S+ starting a training run: tiny, folds 0, 1 epoch, data the demo set\n")
    seen: list[str] = []
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.input_value()
        if ours.match(text + "\n") and (not seen or seen[-1] != text):
            seen.append(text)
        if seen and (_new_run_finished(seen[-1], before) or "error:" in seen[-1]):
            break
        page.wait_for_timeout(300)
    assert _new_run_finished(seen[-1] if seen else "", before), f"no finished run; log:\n{seen[-1:]}"
    assert len(seen) >= 2, "the log never changed while the run went on"
    page.get_by_text(re.compile(r"^finished · run ")).wait_for()
    (run_dir,) = [server.runs / name for name in {p.name for p in server.runs.iterdir()} - before]
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["arch"], config["epochs"], str(config["folds"])) == ("tiny", 1, "0")
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    screenshot(page, screenshots / "train.png")
    page.console_errors.check()
    test_train_tab_runs_one_demo_fold_with_a_moving_log.run_id = run_dir.name


def test_compare_tab_shows_the_run(page, screenshots):
    run_id = getattr(test_train_tab_runs_one_demo_fold_with_a_moving_log, "run_id", None)
    if run_id is None:
        pytest.fail("the Train test made no run to compare (see its failure)")
    open_tab(page, "Compare")
    row = page.get_by_role("grid", name="Runs (newest first)").get_by_role("row").filter(has_text=run_id)
    expect(row.filter(visible=True)).to_have_count(1, timeout=30_000)
    cells = row.filter(visible=True).inner_text()
    assert "finished" in cells and "tiny" in cells and "synthetic demo" in cells
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot svg.main-svg').length >= 10")
    screenshot(page, screenshots / "compare.png")
    page.console_errors.check()
