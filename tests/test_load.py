"""A bounded load test on loopback: 20 concurrent /predict calls through gradio_client, each its own client.

Every call must be answered (an annotated image and "1 face found"), none may fail, and the server must
answer the next request afterwards. The latencies (p50/p95, seconds from submit to result) are printed
(pytest -s) and written to <artifacts>/load/predict_load.json, not asserted: on a shared 2-core CPU they
measure the machine's load as much as the server. The tests wait for each answer, however slow, up to
HANG_S, a bound for a server that hangs, not a speed target (a 5 s httpx read timeout, gradio_client's
default, failed 1 of 20 calls on a loaded machine, issue 21).
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fixtures.app_server import CHECKPOINT_NAME, artifacts_dir, shared_app_server
from fixtures.waiting import HANG_S, patient_client
from gradio_client import handle_file
from PIL import Image

pytestmark = pytest.mark.slow

CONCURRENT_CALLS = 20


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, demo_root):
    return shared_app_server(request, tmp_path_factory, demo_root)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """One distinct photo per call (the astronaut, cropped by a few pixels more each time)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("load")
    image = data.astronaut()
    paths = []
    for number in range(CONCURRENT_CALLS):
        paths.append(folder / f"astronaut-{number}.png")
        Image.fromarray(image[number:, number:]).save(paths[-1])
    return paths


def predict_once(url: str, photo: Path, start_gate: threading.Barrier) -> dict:
    client = patient_client(url)
    start_gate.wait(timeout=HANG_S)  # every client connected: the calls really overlap
    started = time.perf_counter()
    job = client.submit(handle_file(str(photo)), f"{CHECKPOINT_NAME}.json", False, False, api_name="/predict")
    annotated, _table, _chart, result, status = job.result(timeout=HANG_S)
    return {"seconds": time.perf_counter() - started, "annotated": annotated, "faces": len(result["faces"]),
            "status": status}


def test_twenty_concurrent_predictions_all_answer(server, photos):
    gate = threading.Barrier(CONCURRENT_CALLS)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONCURRENT_CALLS) as pool:
        futures = [pool.submit(predict_once, server.url, photo, gate) for photo in photos]
        answers = [future.result(timeout=HANG_S) for future in futures]
    wall = time.perf_counter() - started

    assert len(answers) == CONCURRENT_CALLS
    for answer in answers:
        assert answer["status"].startswith("1 face found"), answer["status"]
        assert answer["faces"] == 1 and Path(answer["annotated"]).is_file()
    seconds = np.array([answer["seconds"] for answer in answers])
    report = {
        "calls": CONCURRENT_CALLS, "failed": 0, "wall_s": round(wall, 3),
        "p50_s": round(float(np.percentile(seconds, 50)), 3), "p95_s": round(float(np.percentile(seconds, 95)), 3),
        "max_s": round(float(seconds.max()), 3), "min_s": round(float(seconds.min()), 3),
        "note": "loopback, one shared CPU machine, tiny untrained model; seconds from submit to result",
    }
    print(f"\n/predict x{CONCURRENT_CALLS} concurrent: p50 {report['p50_s']:.3f} s, p95 {report['p95_s']:.3f} s, "
          f"max {report['max_s']:.3f} s, wall {report['wall_s']:.1f} s")
    folder = artifacts_dir() / "load"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predict_load.json").write_text(json.dumps(report, indent=2) + "\n")

    client = patient_client(server.url)
    after = client.predict(handle_file(str(photos[0])), f"{CHECKPOINT_NAME}.json", False, False, api_name="/predict")
    assert after[4].startswith("1 face found")
    assert server.alive()


def test_identical_concurrent_outputs_are_served_whole(server, photos):
    """The same photo from 20 clients at once: the annotated outputs are byte-identical, and gradio 6.31
    caches them under one content-hash path that it rewrites in place (processing_utils.save_pil_to_cache,
    Path.write_bytes); a download that overlaps a rewrite breaks with a Content-Length mismatch unless the
    app makes that write atomic. Measured before the fix: 9 of 60 such calls failed."""
    gate = threading.Barrier(CONCURRENT_CALLS)
    with ThreadPoolExecutor(max_workers=CONCURRENT_CALLS) as pool:
        futures = [pool.submit(predict_once, server.url, photos[0], gate) for _ in range(CONCURRENT_CALLS)]
        failures = []
        for future in futures:
            try:
                answer = future.result(timeout=HANG_S)
                assert answer["status"].startswith("1 face found")
            except Exception as error:  # noqa: BLE001 - count every kind of failure, report them together
                failures.append(f"{type(error).__name__}: {str(error)[:160]}")
    assert not failures, f"{len(failures)} of {CONCURRENT_CALLS} identical calls failed:\n" + "\n".join(failures)
