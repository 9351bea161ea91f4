"""The polish of issue 21 in a real browser (headless Chromium through Playwright, against `python app.py`
on loopback): a local run opens any folder typed into EDA, a refused root clears the charts, UTKFace shows
its exact-age and race charts and says it lists no identities while an Adience-layout root hides them;
Predict offers an example photo whose answer numbers its face "#1" and whose JSON is shown open; the Stop
button is red only while a run trains. Screenshots go to <artifacts>/screenshots/polish-*.png.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from fixtures.app_server import artifacts_dir, settle_job, shared_app_server
from PIL import Image
from playwright.sync_api import expect
from test_e2e_browser import app_page, chromium, open_tab, screenshot  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PLOTS = ".js-plotly-plot"


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, demo_root):
    return shared_app_server(request, tmp_path_factory, demo_root)


@pytest.fixture(scope="module")
def page(chromium, server):  # noqa: F811 - the chromium fixture imported above
    with app_page(chromium, server.url) as page:
        yield page


@pytest.fixture(scope="module")
def utkface_outside(tmp_path_factory, server):
    """A small UTKFace folder in a place no allow-list names (a local run opens it all the same)."""
    folder = tmp_path_factory.mktemp("elsewhere") / "UTKFace"
    folder.mkdir()
    ages = [1, 2, 4, 5, 10, 17, 26, 30, 38, 48, 116, 33]  # to 116: the bands as narrow as on UTKFace
    for index in range(96):
        age, gender = ages[index % len(ages)], index % 2
        Image.fromarray(np.full((40, 40, 3), 40 + index, np.uint8)).save(
            folder / f"{age}_{gender}_{index % 5}_2017{index:09d}.jpg.chip.jpg", quality=90)
    assert not folder.is_relative_to(server.data_dirs)
    return folder


def load_root(page, root: str) -> str:
    box = page.locator("#eda-root textarea, #eda-root input").first
    box.fill(root)
    summary = page.locator("#eda-summary")
    before = summary.inner_text()
    page.get_by_role("button", name="Load", exact=True).click()
    # the answer: the summary changed, and names the root (loaded) or says why not
    page.wait_for_function("""([before, root]) => {
        const text = document.querySelector('#eda-summary').innerText;
        return text !== before && !/processing/.test(text) && (text.includes(root) || text.includes('Could not'));
    }""", arg=[before, root], timeout=60_000)
    return summary.inner_text()


def shown_plots(page) -> int:
    return page.evaluate(f"[...document.querySelectorAll('{PLOTS}')].filter(p => p.offsetParent !== null).length")


def test_eda_opens_a_local_folder_and_clears_the_charts_of_a_refused_one(page, utkface_outside):
    shots = artifacts_dir() / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.console_errors.step = "EDA"
    expect(page.locator("#eda-summary")).to_contain_text("rows (faces)", timeout=60_000)  # the demo set at load
    page.wait_for_function(f"document.querySelectorAll('{PLOTS}').length >= 6")
    # the demo set has the Adience layout: no exact ages, no race, so those two panels are not shown
    assert shown_plots(page) == 6
    expect(page.get_by_text("Exact ages (UTKFace)", exact=True)).to_be_hidden()

    summary = load_root(page, str(utkface_outside))
    assert "rows (faces)" in summary and "identities" in summary and "none listed" in summary
    assert "albums (user_id)" not in summary and "subjects (user_id" not in summary
    page.wait_for_function(f"[...document.querySelectorAll('{PLOTS}')].filter(p => p.offsetParent).length == 8")
    # the exact-age bands' names do not run into each other: each label's box is apart from its neighbours'
    labels = page.evaluate("""() => {
        const plot = [...document.querySelectorAll('.js-plotly-plot')].find(p => p.innerText.includes('Exact ages'));
        return [...plot.querySelectorAll('.annotation')].filter(a => /^\\d+-\\d+$/.test(a.textContent))
            .map(a => { const r = a.getBoundingClientRect(); return [a.textContent, r.x, r.y, r.right, r.bottom]; });
    }""")
    assert len(labels) == 8, labels
    for index, (name, x0, y0, x1, y1) in enumerate(labels):
        for other, ox0, oy0, ox1, oy1 in labels[index + 1:]:
            assert x1 <= ox0 or ox1 <= x0 or y1 <= oy0 or oy1 <= y0, f"{name} overlaps {other}"
    # the "no identities" note of the images-per-subject chart fits its chart
    note = page.evaluate("""() => {
        const plot = [...document.querySelectorAll('.js-plotly-plot')].find(p => p.innerText.includes('lists no'));
        const box = plot.getBoundingClientRect();
        return [...plot.querySelectorAll('.annotation')].map(a => a.getBoundingClientRect())
            .map(r => [r.x - box.x, box.right - r.right]);
    }""")
    assert note and all(left >= 0 and right >= 0 for left, right in note), note
    screenshot(page, shots / "polish-eda-utkface.png")

    summary = load_root(page, "/etc")  # opened (a local run), but it is no dataset
    assert summary.startswith("Could not load the data") and "neither an Adience root" in summary
    page.wait_for_function(f"![...document.querySelectorAll('{PLOTS}')].some(p => p.offsetParent && "
                           "p.querySelector('.bars path, .point'))")
    screenshot(page, shots / "polish-eda-refused.png")
    page.console_errors.check()


def test_predict_example_photo_numbers_its_face_and_shows_the_json_open(page):
    shots = artifacts_dir() / "screenshots"
    open_tab(page, "Predict")
    page.get_by_text("Example photo (public domain)").scroll_into_view_if_needed()
    page.locator(".gallery-item, button.gallery-item, [data-testid='examples'] button").first.click()
    status = page.get_by_text(re.compile(r"^\d+ faces? found in \d+ ms"))
    status.wait_for(timeout=60_000)
    assert status.inner_text().startswith("1 face found")
    expect(page.get_by_text("Face #1", exact=True)).to_be_visible()  # the chart's title
    json_text = page.locator(".block", has=page.get_by_text("JSON", exact=True)).last.inner_text()
    assert "Array(" not in json_text and "Object(" not in json_text and '"0-2"' in json_text.replace("'", '"') or (
        "0-2" in json_text), json_text
    screenshot(page, shots / "polish-predict.png")
    page.console_errors.check()


def _stop_variant(page) -> str:
    classes = f" {page.get_by_role('button', name='Stop', exact=True).get_attribute('class')} "
    return "stop" if " stop " in classes else "secondary" if " secondary " in classes else classes


def test_the_stop_button_is_red_only_while_a_run_trains(page, server):
    open_tab(page, "Train")
    page.get_by_role("button", name="Stop", exact=True).wait_for()
    settle_job(server)
    page.wait_for_function("() => { const b = [...document.querySelectorAll('button')].find(b => "
                           "b.innerText.trim() === 'Stop'); return b && b.classList.contains('secondary'); }",
                           timeout=15_000)
    assert _stop_variant(page) == "secondary"
    screenshot(page, artifacts_dir() / "screenshots" / "polish-train.png")
    page.get_by_role("button", name=re.compile(r"^Demo preset")).click()
    epochs = page.get_by_label("epochs", exact=True)
    epochs.fill("1")
    epochs.press("Tab")
    page.get_by_role("button", name=re.compile(r"^Train")).click()
    page.wait_for_function("() => { const b = [...document.querySelectorAll('button')].find(b => "
                           "b.innerText.trim() === 'Stop'); return b && b.classList.contains('stop'); }",
                           timeout=60_000)
    page.get_by_role("button", name="Stop", exact=True).click()
    page.wait_for_function("() => { const b = [...document.querySelectorAll('button')].find(b => "
                           "b.innerText.trim() === 'Stop'); return b && b.classList.contains('secondary'); }",
                           timeout=120_000)
    settle_job(server)
    page.console_errors.check()
