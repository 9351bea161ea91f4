"""Issue 20 items 5 and 7, against a server started as a public deployment (GRADIO_SERVER_NAME=0.0.0.0).

5. /gradio_api/upload stored 1.54 GB in 15 s from two clients, and uploads made before a restart were never
   deleted. Now gradio's upload folder holds at most AUDIENCE_UPLOAD_QUOTA_MB for all clients together (an
   upload past it: 413 and one sentence), and the cleaner sweeps the folder at start.
7. SIGTERM (a Space restarting) killed the server in 2 s with its run `running`, its lock held, the uploads
   on disk. Now the run stops at a safe point (status "stopped", resumable), its lock is released, this
   process's uploads are deleted, then the server exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from fixtures.app_server import start_app_server
from test_api_inputs import call_named

from audience.train.run_lock import OWNER_FILE, claim_run, release_run, run_owner
from audience.ui.request_limit import QUOTA_FULL
from audience.ui.uploads import folder_bytes, sweep_uploads

QUOTA_MB = 2
FILE_BYTES = 600_000  # three fit in the quota, a fourth does not
WAIT_S = 120


def post_upload(server, payload: bytes, name: str = "photo.png") -> httpx.Response:
    return httpx.post(server.url + "gradio_api/upload", files={"files": (name, payload, "image/png")}, timeout=60)


def public_server(base: Path, demo_root: Path, **env) -> object:
    temp = base / "gradio-temp"  # this server's own upload folder: others' files must not count against it
    temp.mkdir(parents=True, exist_ok=True)
    return start_app_server(base, demo_root, extra_env={"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_TEMP_DIR": str(temp),
                                                        **env})


# --- the cleaner and the quota, without a server ----------------------------------------------------------


def test_the_sweep_deletes_old_files_only_and_empty_folders(tmp_path):
    old, new, kept = tmp_path / "a" / "old.png", tmp_path / "b" / "new.png", tmp_path / "c" / "kept.png"
    for path in (old, new, kept):
        path.parent.mkdir()
        path.write_bytes(b"x" * 10)
    an_hour_ago = time.time() - 3600
    for path in (old, kept):
        os.utime(path, (an_hour_ago, an_hour_ago))
    assert folder_bytes(tmp_path) == 30
    assert sweep_uploads(600, keep=[str(kept)], folder=tmp_path) == 1
    assert not old.exists() and not old.parent.exists() and new.exists() and kept.exists()
    assert folder_bytes(tmp_path) == 20


# --- over raw HTTP ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quota_server(request, tmp_path_factory, demo_root):
    """A public server with a 2 MB upload quota, started over an upload folder that holds a file left two
    hours ago by an earlier process and one left a moment ago."""
    base = tmp_path_factory.mktemp("upload-quota")
    temp = base / "gradio-temp"
    left_old, left_new = temp / "0ld" / "left.png", temp / "n3w" / "recent.png"
    for path in (left_old, left_new):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"\0" * 1000)
    two_hours_ago = time.time() - 7200
    os.utime(left_old, (two_hours_ago, two_hours_ago))
    server = public_server(base, demo_root, AUDIENCE_UPLOAD_QUOTA_MB=str(QUOTA_MB))
    request.addfinalizer(server.stop)
    server.temp, server.left_old, server.left_new = temp, left_old, left_new
    return server


def test_the_start_sweeps_uploads_left_by_an_earlier_process(quota_server):
    assert not quota_server.left_old.exists() and not quota_server.left_old.parent.exists()
    assert quota_server.left_new.exists()  # not yet KEEP_FILES_S old: the periodic sweep takes it later


def test_uploads_past_the_quota_get_413_and_one_sentence(quota_server):
    quota_server.left_new.unlink(missing_ok=True)
    accepted, refused = [], []
    for number in range(5):
        answer = post_upload(quota_server, os.urandom(FILE_BYTES), f"photo{number}.png")
        (accepted if answer.status_code == 200 else refused).append(answer)
    assert len(accepted) == 3, [a.status_code for a in accepted + refused]
    assert {a.status_code for a in refused} == {413}
    sentence = QUOTA_FULL.format(quota=QUOTA_MB)
    assert all(a.json() == {"error": sentence} for a in refused), refused[0].text
    assert folder_bytes(quota_server.temp) <= QUOTA_MB * 2**20
    # The space comes back as the cleaner deletes old uploads (done here by hand: it waits KEEP_FILES_S).
    for answer in accepted:
        Path(answer.json()[0]).unlink()
    assert post_upload(quota_server, os.urandom(FILE_BYTES)).status_code == 200
    assert quota_server.alive()


def test_concurrent_clients_cannot_pass_the_quota_together(quota_server):
    for path in quota_server.temp.rglob("*"):
        if path.is_file():
            path.unlink()
    codes: list[int] = []

    def one() -> None:
        codes.append(post_upload(quota_server, os.urandom(FILE_BYTES)).status_code)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_S)
    assert sorted(set(codes)) == [200, 413] and codes.count(200) <= 3, codes
    assert folder_bytes(quota_server.temp) <= QUOTA_MB * 2**20


# --- SIGTERM ----------------------------------------------------------------------------------------------


def wait_for(condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def read_status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.slow  # a server and a training run: more than the fast tier's CPU budget
def test_sigterm_stops_the_run_at_a_safe_point_releases_it_and_deletes_uploads(tmp_path, demo_root):
    server = public_server(tmp_path, demo_root, AUDIENCE_ALLOW_TRAINING="1", AUDIENCE_SHUTDOWN_WAIT_S="60")
    try:
        upload = post_upload(server, os.urandom(50_000))
        assert upload.status_code == 200
        uploaded = Path(upload.json()[0])
        assert uploaded.is_file()
        message = call_named(server, "train_start", data="demo", arch="tiny", folds="0", epochs=200, batch_size=16,
                             image_size=32, workers=0)[0]
        assert message.startswith("Started a training run"), message
        run_dir = wait_for(lambda: next((d for d in server.runs.iterdir() if (d / "status.json").is_file()), None),
                           "the run folder")
        wait_for(lambda: read_status(run_dir).get("epoch", 0) >= 1, "the first epoch")
        assert run_owner(run_dir) is not None  # the server's training thread holds the run
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the server did not exit after SIGTERM:\n{server.log_tail()}") from None
        assert code == 0, server.log_tail()
        status = read_status(run_dir)
        assert status["state"] == "stopped" and status["ended"], status
        assert 1 <= status["epoch"] < 200
        assert not (run_dir / OWNER_FILE).exists() and run_owner(run_dir) is None
        claim_run(run_dir)  # resumable at once: nobody holds it
        release_run(run_dir)
        assert not uploaded.exists(), "the upload outlived the server"
        assert "stopping training run" in server.log_tail()
    finally:
        server.stop()
