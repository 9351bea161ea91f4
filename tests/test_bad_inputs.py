"""Broken inputs through the command lines and the running app: each gives one clear sentence, nothing
crashes, no run or checkpoint is lost or overwritten, and no path reaches outside the allowed folders.

The corpus (tests/fixtures/bad_inputs.py) is made in tmp: a truncated JPEG, a zero-byte file, a text
file named .jpg, a PNG header claiming 10^10 pixels, a fold file without its age column, a root whose
images are unreadable, and checkpoints whose JSON does not match their weights.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest
from fixtures.app_server import PROJECT_ROOT, save_tiny_checkpoint, settle_job, shared_app_server
from fixtures.bad_inputs import (
    random_bytes_file,
    tree_digest,
    write_broken_checkpoints,
    write_broken_images,
    write_root_missing_column,
    write_root_unreadable_images,
)
from fixtures.command_runner import CommandRunner
from fixtures.waiting import HANG_S, patient_client, wait_until
from gradio_client import Client, handle_file
from PIL import Image
from skimage import data

from audience.ui.request_limit import TOO_LARGE
from audience.ui.uploads import REFUSED as UPLOAD_REFUSED

BROKEN_IMAGES = {
    "truncated.jpg": "truncated.jpg: the image data is truncated or corrupt",
    "empty.jpg": "empty.jpg: the file is empty (0 bytes)",
    "text.jpg": "text.jpg: not an image file",
    "huge.png": "huge.png: the image has too many pixels to decode safely",
}
WRONG_HEADER = "fold_2_data.txt line 1: wrong header"
OUTSIDE = "is not under a folder the app may open"
UPLOAD_LIMIT_BYTES = 20 * 1024 * 1024  # app.py's UPLOAD_LIMIT = "20mb"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, demo_root) -> dict:
    base = tmp_path_factory.mktemp("bad-inputs")
    return {
        "images": write_broken_images(base / "images"),
        "root_missing": write_root_missing_column(base / "root-missing-column", demo_root),
        "root_unreadable": write_root_unreadable_images(base / "root-unreadable", demo_root),
        "checkpoints": write_broken_checkpoints(base / "broken-checkpoints"),
        "good": save_tiny_checkpoint(base / "good"),
    }


# --- command lines ----------------------------------------------------------------------------------


def cli(script: str, *args) -> list:
    return [sys.executable, PROJECT_ROOT / "scripts" / script, *args]


@pytest.mark.slow
def test_command_lines_give_one_sentence_and_keep_every_file(corpus, demo_root, tmp_path):
    runs, checkpoints = tmp_path / "runs", tmp_path / "checkpoints"
    save_tiny_checkpoint(checkpoints, "kept")
    (runs / "20260101-000000-tiny-folds").mkdir(parents=True)
    (runs / "20260101-000000-tiny-folds" / "config.json").write_text('{"arch": "tiny"}\n')
    before = tree_digest(runs, checkpoints)
    env = {**os.environ, "AUDIENCE_HOME": str(tmp_path / "home"), "AUDIENCE_RUNS": str(runs),
           "AUDIENCE_CHECKPOINTS": str(checkpoints), "HF_HUB_OFFLINE": "1"}
    images, broken = corpus["images"], corpus["checkpoints"]
    cases = {
        "predict images": (cli("predict.py", *images.values(), "--checkpoint", corpus["good"]), 1),
        "eda": (cli("eda.py", "--data", corpus["root_missing"], "--json"), 2),
        "evaluate": (cli("evaluate.py", broken["mismatched"], "--data", demo_root, "--fold", "0"), 2),
        "train columns": (cli("train.py", "--data", corpus["root_missing"], "--arch", "tiny", "--folds", "0",
                              "--epochs", "1", "--quiet"), 2),
        "train images": (cli("train.py", "--data", corpus["root_unreadable"], "--arch", "tiny", "--folds", "0",
                             "--epochs", "1", "--quiet", "--out", tmp_path / "failed-runs"), 2),
    }
    results = {}
    # One process runs the lines in turn, each as `python scripts/X.py ...` (tests/fixtures/command_runner.py):
    # five fresh interpreters each paid the import of torch.
    with CommandRunner(env, tmp_path / "cli-outputs", PROJECT_ROOT) as runner:
        for name, (argv, expected_code) in cases.items():
            done = runner.run(argv)
            out, err = done.stdout, done.stderr
            results[name] = (done.returncode, out, err)
            assert "Traceback" not in out + err, f"{name}:\n{err}"
            assert done.returncode == expected_code, f"{name}: exit {done.returncode}\n{err}"

    _, out, err = results["predict images"]
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert len(errors) == len(BROKEN_IMAGES)  # every file reported, none stopped the others
    for name, sentence in BROKEN_IMAGES.items():
        assert any(line.startswith(f"{images[name]}: error: {sentence}") for line in errors), name

    def one_error_line(name: str) -> str:
        lines = results[name][2].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {lines}"
        return lines[0]

    assert WRONG_HEADER in one_error_line("eda")
    assert "do not fit a mobilenetv3_large_100 model" in one_error_line("evaluate")
    assert WRONG_HEADER in one_error_line("train columns")
    assert "0 readable train image(s)" in one_error_line("train images")
    assert tree_digest(runs, checkpoints) == before  # nothing added, lost or overwritten


@pytest.mark.parametrize("case", ["invalid_json", "truncated_weights", "mismatched"])
def test_predict_export_and_push_refuse_broken_checkpoints(corpus, tmp_path, capsys, case):
    import importlib

    checkpoint = str(corpus["checkpoints"][case])
    for script, argv in (
        ("predict", [str(corpus["images"]["text.jpg"]), "--checkpoint", checkpoint]),
        ("export_onnx", [checkpoint, "--out", str(tmp_path / "m.onnx"), "--exporter", "legacy"]),
        ("push_to_hub", [checkpoint, "--repo", "me/ages", "--dry-run", str(tmp_path / "out")]),
    ):
        module = importlib.import_module(f"audience.cli.{script}")
        assert module.main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: Checkpoint "), (script, lines)
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "out" / "model.safetensors").exists()


# --- the running app --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, demo_root):
    return shared_app_server(request, tmp_path_factory, demo_root)


@pytest.fixture(scope="module")
def client(server) -> Client:
    return patient_client(server.url)


@pytest.fixture
def unchanged_folders(server):
    """Fails the test when the served checkpoints or the runs change (beyond what the test itself removes)."""
    before = tree_digest(server.runs, server.checkpoints)
    yield
    assert tree_digest(server.runs, server.checkpoints) == before


def predict_status(client: Client, image, model: str = "e2e-tiny.json") -> tuple:
    annotated, _table, _chart, _json, status = client.predict(image, model, False, False, api_name="/predict")
    return annotated, status


@pytest.mark.slow
def test_app_answers_broken_images_and_models_with_a_sentence(server, client, corpus, unchanged_folders):
    for name, sentence in BROKEN_IMAGES.items():
        annotated, status = predict_status(client, handle_file(str(corpus["images"][name])))
        assert annotated is None and status.startswith(f"**Error:** {sentence}"), status
    photo = corpus["good"].parent / "face.png"
    Image.fromarray(data.astronaut()).save(photo)
    for model, sentence in (("../../etc/passwd", "must be a file name in"), ("absent.json", "is not in")):
        _, status = predict_status(client, handle_file(str(photo)), model)
        assert status.startswith("**Error:** Model ") and sentence in status, status
    # A served checkpoint whose JSON names another architecture than its weights: loading it fails clearly.
    served = [server.checkpoints / f"bad-arch{suffix}" for suffix in (".json", ".safetensors")]
    bad_json = corpus["checkpoints"]["mismatched"]
    served[0].write_bytes(bad_json.read_bytes())
    served[1].write_bytes(bad_json.with_suffix(".safetensors").read_bytes())
    try:
        _, status = predict_status(client, handle_file(str(photo)), "bad-arch.json")
        assert status.startswith("**Error:** Checkpoint weights ") and "do not fit a mobilenetv3_large_100" in status
        _, status = predict_status(client, handle_file(str(photo)))  # the good model still serves
        assert status.startswith("1 face found")
    finally:
        for path in served:
            path.unlink()
    assert server.alive()


def test_upload_over_the_limit_is_refused(server, tmp_path):
    big = random_bytes_file(tmp_path / "big.jpg", UPLOAD_LIMIT_BYTES + 1024)
    with open(big, "rb") as file:
        refused = httpx.post(server.url + "gradio_api/upload", files={"files": ("big.jpg", file, "image/jpeg")},
                             timeout=HANG_S)
    assert refused.status_code == 413 and "maximum allowed size" in refused.text
    accepted = httpx.post(server.url + "gradio_api/upload", files={"files": ("small.jpg", b"x" * 1024, "image/jpeg")},
                          timeout=HANG_S)
    assert accepted.status_code == 200


def test_paths_typed_into_a_local_run_open_and_run_ids_stay_inside(server, client, demo_root, unchanged_folders):
    allowed = server.data_dirs
    # A valid Adience root (labels only) outside, reachable only through a symlink placed in an allowed folder.
    outside_root = server.outside / "adience"
    outside_root.mkdir(exist_ok=True)
    for fold_file in demo_root.glob("fold_*_data.txt"):
        (outside_root / fold_file.name).write_bytes(fold_file.read_bytes())
    links = {"link-out": outside_root, "link-etc": Path("/etc")}
    for name, target in links.items():
        if not (allowed / name).is_symlink():
            (allowed / name).symlink_to(target, target_is_directory=True)
    # This server runs on loopback: a local run opens the folder its user types, through a link too (issue 21
    # item 1). tests/test_public_paths.py checks that a public deployment refuses each of these.
    summary = client.predict(str(allowed / "link-out"), "bins", "none", api_name="/eda")[0]
    assert "rows (faces)" in summary and OUTSIDE not in summary
    summary = client.predict(str(allowed / "link-etc"), "bins", "none", api_name="/eda")[0]
    assert summary.startswith("**Could not load the data:**") and "neither an Adience root" in summary
    for run_id in ("../../etc", "/etc", ".."):
        assert client.predict(run_id, "0", "", api_name="/promote")[0].startswith("**Not promoted:**")
        assert client.predict(run_id, api_name="/train_resume")[0].startswith("**Not started:**")
    for path in ("/etc/passwd", str(server.checkpoints / "e2e-tiny.json")):
        assert httpx.get(server.url + f"gradio_api/file={path}", timeout=HANG_S).status_code == 403

    # A broken root inside the allowed folder: its own sentence, in EDA and in the training job.
    inside = allowed / "root-missing-column"
    if not inside.exists():
        write_root_missing_column(inside, demo_root)
    summary = client.predict(str(inside), "bins", "none", api_name="/eda")[0]
    assert summary.startswith("**Could not load the data:**") and WRONG_HEADER in summary.replace("\\", "")
    settle_job(server)  # another test's job still running would refuse this start
    started = client.predict(data=str(inside), arch="tiny", folds="0", epochs=1, api_name="/train_start")[0]
    assert started.startswith("Started")
    progress = wait_until(lambda: (lambda text: None if text.startswith("**running") else text)(
        client.predict(api_name="/train_status")[0]), "the job on a broken root has ended", every_s=0.5)
    assert progress.startswith("**failed**") and WRONG_HEADER in progress
    assert server.alive()


def call_raw(server, api_name: str, data: list) -> str:
    """An API call over plain HTTP (gradio_client would upload a local file named in a payload itself)."""
    started = httpx.post(server.url + f"gradio_api/call/{api_name}", json={"data": data}, timeout=HANG_S)
    started.raise_for_status()
    return httpx.get(server.url + f"gradio_api/call/{api_name}/{started.json()['event_id']}", timeout=HANG_S).text


def test_predict_refuses_server_paths_outside_the_upload_folder(server):
    """/predict runs with preprocess=False; gradio still checks that a file payload was uploaded, so a payload
    naming a server path is refused, and alike whether the file exists or not (no oracle of the server's files).
    Each shape gets the app's sentence (it was a bare `null`): gradio's refusal of a `{path, meta}` payload as
    an error event carrying it (audience/ui/payloads.py), a plain string as the status."""
    secret = server.outside / "secret-face.png"
    Image.fromarray(data.astronaut()).save(secret)
    answers = {}
    for payload in ({"path": str(secret), "meta": {"_type": "gradio.FileData"}},
                    {"path": str(server.outside / "no-such-file.png"), "meta": {"_type": "gradio.FileData"}},
                    {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}):
        stream = call_raw(server, "predict", [payload, "e2e-tiny.json", False, False])
        assert stream.startswith("event: error") and "face found" not in stream, f"{payload} was read: {stream}"
        assert json.loads(stream.split("data:", 1)[1])["error"] == UPLOAD_REFUSED, stream
        answers[str(payload)] = stream
    assert len(set(answers.values())) == 1, f"the answers differ by payload: {answers}"
    for payload in (str(secret), "/etc/passwd", str(server.outside / "no-such-file.png")):
        assert sse_data(call_raw(server, "predict", [payload, "e2e-tiny.json", False, False]))[-1] == \
            f"**Error:** {UPLOAD_REFUSED}", payload
    assert predict_status(patient_client(server.url), handle_file(str(secret)))[1].startswith("1 face found")


def test_a_call_with_too_few_values_gets_a_sentence_not_null(server):
    """gradio refuses a data list shorter than the endpoint's inputs with a ValueError, which a public server
    shows as `null`; the app answers it with how many values came and which ones the endpoint takes."""
    for values in ([], [{"path": None}]):
        stream = call_raw(server, "predict", values)
        assert stream.startswith("event: error"), stream
        error = json.loads(stream.split("data:", 1)[1])["error"]
        assert error.startswith(f"The request's data list has {len(values)} value") and "/predict takes 4" in error
    stream = call_raw(server, "eda", ["x"])
    assert "/eda takes 3" in json.loads(stream.split("data:", 1)[1])["error"], stream
    assert server.alive()


def sse_data(stream: str) -> list:
    """The `data:` line of a finished raw call, parsed."""
    lines = [line for line in stream.splitlines() if line.startswith("data:")]
    assert stream.startswith("event: complete") and lines, stream
    return json.loads(lines[-1][len("data:"):])


def test_predict_without_meta_opens_no_server_file(server, tmp_path):
    """A payload without gradio's "meta" field skips gradio's upload check: the app itself refuses every path
    outside gradio's upload folder, with one sentence whatever the path is, and never opens a FIFO."""
    secret = server.outside / "secret-face.png"
    Image.fromarray(data.astronaut()).save(secret)
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    answers = {}
    # Opening the FIFO would block until a writer comes, which never happens: that every call is answered, with
    # the refusal, is the proof (a wall-clock bound here failed under load; a hang fails at HANG_S).
    for path in ("/etc/passwd", str(secret), str(fifo), str(tmp_path / "no-such-file.jpg"), str(tmp_path)):
        answers[path] = sse_data(call_raw(server, "predict", [{"path": path}, "e2e-tiny.json", False, False]))[-1]
    assert set(answers.values()) == {f"**Error:** {UPLOAD_REFUSED}"}, answers
    assert server.alive()


def test_requests_and_decoded_pixels_are_bounded(server, tmp_path):
    """Every request's bytes are bounded (an inline data: URL bypassed the upload limit), and a small file that
    declares 7000 x 7000 16-bit pixels is refused from its header, before decoding."""
    payload = {"path": None, "url": "data:image/png;base64," + "A" * (100 * 1024 * 1024)}
    refused = httpx.post(server.url + "gradio_api/call/predict",
                         json={"data": [payload, "e2e-tiny.json", False, False]}, timeout=HANG_S)
    assert refused.status_code == 413 and refused.json() == {"error": TOO_LARGE.format(limit=25)}, refused.text
    chunks = (b"x" * (1024 * 1024) for _ in range(30))  # no Content-Length: the limit counts what arrives
    refused = httpx.post(server.url + "gradio_api/call/predict", content=chunks,
                         headers={"content-type": "application/json"}, timeout=HANG_S)
    assert refused.status_code == 413, refused.text
    bomb = tmp_path / "bomb.png"
    Image.new("I;16", (7000, 7000)).save(bomb)
    assert bomb.stat().st_size < 1024 * 1024
    _, status = predict_status(patient_client(server.url), handle_file(str(bomb)))
    assert status == "**Error:** bomb.png: the image is 7000 x 7000 pixels, more than the limit of 40,000,000 pixels"
    assert server.alive()


def test_clear_cache_over_raw_http_is_refused_while_a_job_trains_then_frees_the_cache(server, demo_root):
    """/clear_cache (the Train tab's button) deletes the decoded-image caches and says what it freed; while
    the server's job trains it refuses with a sentence and deletes nothing."""
    from audience.data.adience import read_adience
    from audience.data.cache import build_image_cache, describe_bytes

    cache = server.home / "image-cache"  # the app's AUDIENCE_HOME/image-cache
    build_image_cache(read_adience(demo_root).faces["path"].astype(str).tolist()[:6], 16, cache_dir=cache)
    settle_job(server)
    client = patient_client(server.url)
    try:
        started = client.predict(data="demo", arch="tiny", folds="0", epochs=50, api_name="/train_start")[0]
        assert started.startswith("Started"), started
        cached = sorted(cache.glob("*.npy"))  # the job's own cache may be among them by now
        message = sse_data(call_raw(server, "clear_cache", []))[0]
        assert message.startswith("**Not cleared:** The image cache is in use by the training run in progress")
        assert set(cached) <= set(cache.glob("*.npy"))
    finally:
        settle_job(server)
    expected = sum(path.stat().st_size for path in cache.glob("*.npy"))
    message = sse_data(call_raw(server, "clear_cache", []))[0]
    assert message == (f"Cleared the image cache: freed {describe_bytes(expected)}. "
                       "The next run decodes its images again.")
    assert not list(cache.glob("*.npy")) and not list(cache.glob("*px.json"))
    assert sse_data(call_raw(server, "clear_cache", []))[0] == "The image cache was already empty."
    assert server.alive()
