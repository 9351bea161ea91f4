"""What one request may cost the server (issue 20 items 3 and 4, and /predict's payload shapes of item 10).

Against the real app started as a public deployment (GRADIO_SERVER_NAME=0.0.0.0, training allowed with
AUDIENCE_ALLOW_TRAINING=1 so that /train_start's memory bound is reached), over raw HTTP only
(/gradio_api/upload, /gradio_api/call/<name>). Memory is the server process's RSS from /proc/<pid>/status:
before, at the peak (VmHWM, reset through /proc/<pid>/clear_refs) and after; the bounds are the decode
budget's (audience/data/images.py), with room for a loaded machine. CPU is compared with ratios measured
in the same run, never with a fixed deadline.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fixtures.app_server import CHECKPOINT_NAME, shared_app_server
from fixtures.heavy_images import jpeg2000, large_png, many_frames_gif, other_formats, rgba16_png
from PIL import Image

from audience.data import images
from audience.data.images import ACCEPTED_NAMES, DECODE_SLOTS, DECODE_WAIT_S, MAX_DECODE_BYTES, read_image
from audience.errors import AudienceError
from audience.ui.payloads import NO_FILE_NAME
from audience.ui.uploads import REFUSED

MB = 2**20
MODEL = f"{CHECKPOINT_NAME}.json"
# The costliest accepted decode (large.png: 6300 x 6300 8-bit RGBA) peaked at 0.47 GB in one process
# (docs/measurements.md); DECODE_SLOTS of them at once, plus the detection and JPEG answer of each.
PEAK_PER_LARGE_DECODE = 700 * MB
RETURNED_WITHIN = 300 * MB  # idle RSS after a burst, above idle RSS before it
SETTLE_S = 60  # how long the server may take to hand memory back (polled: it usually takes 2-3 s)


# --- the decoder, in this process ------------------------------------------------------------------


def own_memory() -> tuple[int, int]:
    """(RSS, peak RSS) of this process in bytes."""
    return _memory("self")


def _memory(pid) -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def reset_peak(pid="self") -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


@pytest.fixture(scope="module")
def heavy(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("heavy")
    return {"rgba16": rgba16_png(folder / "rgba16.png"), "jp2": jpeg2000(folder / "photo.jp2"),
            "large": large_png(folder / "large.png"), "gif": many_frames_gif(folder / "anim.gif"),
            **other_formats(folder / "other")}


def test_a_small_16_bit_rgba_png_is_refused_by_its_bytes_before_decoding(heavy):
    assert heavy["rgba16"].stat().st_size < 1 * MB  # 300 KB on disk, 6300 x 6300 x 8 bytes decoded
    reset_peak()
    before = own_memory()[0]
    with pytest.raises(AudienceError) as refused:
        read_image(heavy["rgba16"])
    assert str(refused.value) == ("rgba16.png: the image is 6300 x 6300 pixels of 8 bytes each (318 MB decoded), "
                                  f"more than the limit of {MAX_DECODE_BYTES // 10**6} MB")
    assert own_memory()[1] - before < 20 * MB  # nothing was decoded


@pytest.mark.parametrize(("key", "name"), [("jp2", "JPEG 2000"), ("TIFF", "TIFF"), ("ICO", "ICO"), ("PSD", "PSD"),
                                           ("TGA", "TGA")])
def test_formats_whose_cost_does_not_follow_their_size_are_refused_by_name(heavy, key, name):
    with pytest.raises(AudienceError) as refused:
        read_image(heavy[key])
    assert str(refused.value) == (f"{heavy[key].name}: {name} images are not accepted (their decoding cost does not "
                                  f"follow their size); send a {ACCEPTED_NAMES}")


def test_a_gif_of_many_frames_decodes_its_first_frame_only(heavy):
    started = time.perf_counter()
    first = read_image(heavy["gif"])
    one_frame = time.perf_counter() - started
    assert first.shape == (512, 512, 3) and (first == first[0, 0]).all()
    with Image.open(heavy["gif"]) as gif:  # all 300 frames: what the decoder does not do
        started = time.perf_counter()
        for index in range(gif.n_frames):
            gif.seek(index)
            gif.load()
        every_frame = time.perf_counter() - started
    assert one_frame < every_frame


def test_the_costliest_accepted_image_decodes_within_its_memory_bound(heavy):
    reset_peak()
    before = own_memory()[0]
    decoded = read_image(heavy["large"])
    peak = own_memory()[1] - before
    assert decoded.shape == (4096, 4096, 3)
    # the 6300 x 6300 RGBA pixels (159 MB), their 4096 px copy and the RGB result; 1.0 GB before the budget work
    assert peak < PEAK_PER_LARGE_DECODE, f"peak {peak / MB:.0f} MB"


def test_a_large_decode_that_finds_every_slot_busy_says_so_and_a_small_one_is_not_held(heavy, tmp_path):
    small = tmp_path / "small.png"
    Image.new("RGB", (640, 480), (10, 20, 30)).save(small)
    for _ in range(DECODE_SLOTS):
        assert images._decode_slots.acquire(timeout=5)
    try:
        with pytest.raises(AudienceError, match=r"^large\.png: the server is decoding 2 other large images; try "):
            read_image(heavy["large"])
        assert read_image(small).shape == (480, 640, 3)
    finally:
        for _ in range(DECODE_SLOTS):
            images._decode_slots.release()
    assert read_image(heavy["large"]).shape == (4096, 4096, 3)  # the slots are free again


def test_banded_conversions_equal_the_whole_image_formula(monkeypatch):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (37, 11, 4), dtype=np.uint8)
    sixteen = rng.integers(0, 65536, (37, 11), dtype=np.uint16)
    monkeypatch.setattr(images, "_ROW_BAND", 5)  # several bands and a short last one
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    expected = np.rint(rgba[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    assert np.array_equal(images._composite_on_white(rgba), expected)
    assert np.array_equal(images._from_16bit(sixteen), np.rint(sixteen.astype(np.float32) / 257.0).astype(np.uint8))


# --- the predictor and the trainer ------------------------------------------------------------------


def test_faces_are_classified_in_forward_passes_of_bounded_pixels(tmp_path, monkeypatch):
    """A model with 1,024 px inputs took one request with 20 faces to 8.2 GB: the forward now runs in chunks
    of MAX_FORWARD_PIXELS, whose answers equal one batch's."""
    import torch

    from audience.model.checkpoint import save_checkpoint
    from audience.model.network import build_model
    from audience.predict import predictor as predictor_module
    from audience.predict.predictor import MAX_FORWARD_PIXELS, Predictor

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "big-input", build_model("tiny", "age+gender"),
                    {"image_size": 512, "dataset": {"name": "audience-demo", "synthetic": True}})
    crops = [np.random.default_rng(i).integers(0, 256, (96, 80, 3), dtype=np.uint8) for i in range(12)]
    with Predictor(tmp_path / "big-input.json", runtime="torch") as predictor:  # the PyTorch forward, counted
        forwards = []
        model = predictor.model
        monkeypatch.setattr(predictor, "model", lambda batch: forwards.append(batch.shape[0]) or model(batch))
        reset_peak()
        before = own_memory()[0]
        chunked = predictor.classify_crops(crops, tta_flip=True)
        peak = own_memory()[1] - before
        assert forwards == [MAX_FORWARD_PIXELS // 512**2] * 6  # 24 views, 4 per forward at 512 px
        monkeypatch.setattr(predictor_module, "MAX_FORWARD_PIXELS", 10**9)
        whole = predictor.classify_crops(crops, tta_flip=True)
    assert forwards[-1] == 24
    for head in whole:
        assert np.allclose(chunked[head], whole[head], atol=1e-5)
    # 24 views of 512 px at once: the input alone is 75 MB, the tiny net's activations ~25 MB per view
    assert peak < 300 * MB, f"peak {peak / MB:.0f} MB"


def test_training_memory_estimate_refuses_what_cannot_fit():
    from audience.train.memory import check_training_memory, training_bytes

    room = (16 * 10**9, "available memory")
    assert check_training_memory("tiny", 16, 64, room) == training_bytes("tiny", 16, 64) < 10**8
    check_training_memory("mobilenetv3_large_100", 64, 224, room)  # the default recipe on a 16 GB machine
    for arch, batch, size in (("tiny", 4096, 64), ("tiny", 64, 512), ("resnet50", 256, 224)):
        with pytest.raises(AudienceError) as refused:
            check_training_memory(arch, batch, size, room)
        message = str(refused.value)
        assert message.startswith(f"Training {arch} at batch size {batch:,} and image size {size:,} needs about ")
        assert message.endswith("of available memory here; lower the batch size or the image size.")


# --- the public server, over raw HTTP ---------------------------------------------------------------


@pytest.fixture(scope="module")
def public(request, tmp_path_factory, demo_root):
    """The session's public deployment (0.0.0.0, training allowed), shared with test_public_paths.py."""
    return shared_app_server(request, tmp_path_factory, demo_root, public=True)


def server_memory(server) -> tuple[int, int]:
    return _memory(server.process.pid)


def upload(server, path: Path, name: str | None = None) -> str:
    with open(path, "rb") as file:
        answer = httpx.post(server.url + "gradio_api/upload", files={"files": (name or path.name, file)}, timeout=120)
    answer.raise_for_status()
    return answer.json()[0]


def call(server, api_name: str, data: list) -> tuple[str, object]:
    """('complete' or 'error', the last data: line parsed) of a raw call."""
    started = httpx.post(server.url + f"gradio_api/call/{api_name}", json={"data": data}, timeout=60)
    started.raise_for_status()
    stream = httpx.get(server.url + f"gradio_api/call/{api_name}/{started.json()['event_id']}", timeout=600).text
    event = stream.split("\n", 1)[0].removeprefix("event: ").strip()
    lines = [line for line in stream.splitlines() if line.startswith("data:")]
    return event, json.loads(lines[-1][len("data:"):]) if lines else None


def predict(server, payload) -> str:
    """The status sentence of /predict (or the error event's message)."""
    event, data = call(server, "predict", [payload, MODEL, False, False])
    return data["error"] if event == "error" else data[-1]


def file_payload(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def concurrently(function, arguments: list) -> list:
    results: list = [None] * len(arguments)

    def run(index):
        results[index] = (function(*arguments[index]), time.monotonic())

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(arguments))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    return results


def settled_memory(server, below: int) -> int:
    """The server's RSS once it is below `below` (or after SETTLE_S): memory handed back after a burst."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        rss = server_memory(server)[0]
        if rss < below or time.monotonic() > deadline:
            return rss
        time.sleep(1)


@pytest.mark.slow
def test_heavy_images_keep_the_server_memory_bounded_and_return_it(public, heavy):
    rgba16 = upload(public, heavy["rgba16"])
    large = upload(public, heavy["large"])
    predict(public, file_payload(upload(public, heavy["gif"])))  # warm the model: its first load is not a peak
    time.sleep(3)
    idle = server_memory(public)[0]

    # Four 16-bit RGBA PNGs at once (3.3 GB before): refused from the header, nothing decoded.
    reset_peak(public.process.pid)
    answers = concurrently(predict, [(public, file_payload(rgba16))] * 4)
    peak = server_memory(public)[1] - idle
    assert {answer for answer, _ in answers} == {
        f"**Error:** rgba16.png: the image is 6300 x 6300 pixels of 8 bytes each (318 MB decoded), more than the "
        f"limit of {MAX_DECODE_BYTES // 10**6} MB"}
    assert peak < 100 * MB, f"peak {peak / MB:.0f} MB above idle"

    # Two rounds of four of the costliest accepted image: at most DECODE_SLOTS decode at once, the others
    # are told the server is busy; the peak stays within the slots' budget and the memory comes back.
    peaks = []
    for _ in range(2):
        reset_peak(public.process.pid)
        answers = [answer for answer, _ in concurrently(predict, [(public, file_payload(large))] * 4)]
        peaks.append(server_memory(public)[1] - idle)
        decoded = [answer for answer in answers if answer.startswith("No face found")]
        busy = [answer for answer in answers if "the server is decoding 2 other large images" in answer]
        assert decoded and len(decoded) + len(busy) == 4, answers
    after = settled_memory(public, idle + RETURNED_WITHIN)
    print(f"RSS idle {idle / MB:.0f} MB, peaks above idle {[round(p / MB) for p in peaks]} MB, "
          f"after {after / MB:.0f} MB")
    assert max(peaks) < DECODE_SLOTS * PEAK_PER_LARGE_DECODE, peaks
    assert after < idle + RETURNED_WITHIN, f"idle RSS {idle / MB:.0f} MB before, {after / MB:.0f} MB after"
    assert public.alive()


@pytest.mark.slow
def test_expensive_images_do_not_stall_a_small_prediction(public, heavy, tmp_path):
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    small = file_payload(upload(public, photo))
    # A 3 KB JPEG 2000 (12.7 s and 600 MB to decode) and the other formats: refused by name, at once.
    for key, name in (("jp2", "JPEG 2000"), ("TIFF", "TIFF"), ("PSD", "PSD"), ("ICO", "ICO")):
        answer = predict(public, file_payload(upload(public, heavy[key])))
        assert answer.startswith(f"**Error:** {heavy[key].name}: {name} images are not accepted"), answer

    def timed_small():
        started = time.monotonic()
        answer = predict(public, small)
        assert answer.startswith("1 face found"), answer
        return time.monotonic() - started

    idle = statistics.median(timed_small() for _ in range(3))
    large = file_payload(upload(public, heavy["large"]))
    burst: list = []
    thread = threading.Thread(target=lambda: burst.extend(concurrently(predict, [(public, large)] * 8)))
    thread.start()
    time.sleep(0.5)  # the large ones are queued and decoding
    during = timed_small()
    small_done = time.monotonic()
    thread.join(timeout=900)
    print(f"small /predict: {idle:.2f} s idle, {during:.2f} s beside 8 large ones")
    # The measurement counts only if the burst was still running when the small one was answered.
    assert any(finished > small_done for _, finished in burst), "the burst ended before the small answer"
    # Before the decode slots and the extra workers: 27x (0.38 s -> 10.4 s); the issue measured 127x. Now it
    # waits at most for a worker (DECODE_WAIT_S) and shares the CPU with DECODE_SLOTS decodes: 1.2-11x here,
    # at load 12-16 on 2 cores (docs/measurements.md).
    assert during < 10 * idle + 2 * DECODE_WAIT_S + 1.0, f"{during:.2f} s beside the burst, {idle:.2f} s idle"
    assert public.alive()


def test_predict_answers_every_payload_shape_with_a_sentence(public, tmp_path):
    photo = tmp_path / "face.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(photo)
    uploaded = upload(public, photo)
    secret = public.outside / "secret.png"
    Image.new("RGB", (64, 64)).save(secret)
    # a plain string naming a file gradio received: taken as the path it names
    assert predict(public, uploaded).startswith("No face found")
    # any path gradio did not receive, however it is sent: the same sentence, never `null` (the status, or for a
    # `{path, meta}` payload, which gradio refuses before the app runs, the error event's message)
    for payload in (str(secret), "/etc/passwd", {"path": str(secret)}):
        assert predict(public, payload) == f"**Error:** {REFUSED}", payload
    for payload in (file_payload(str(secret)), file_payload("/etc/passwd"), file_payload(str(public.outside / "x"))):
        assert call(public, "predict", [payload, MODEL, False, False]) == ("error", {
            "error": REFUSED, "duration": 10, "visible": True, "title": "Error"}), payload
    # values that are no image payload at all
    for payload in (12, True, ["x"], {}, {"url": "http://example.com/x.png"}):
        assert predict(public, payload) == "**Error:** The uploaded image arrived without a file; upload it again.", \
            payload
    assert predict(public, None) == "Upload an image, paste one or take a webcam snapshot."


def test_an_upload_without_a_file_name_gets_a_sentence(public):
    answer = httpx.post(public.url + "gradio_api/upload", files={"files": ("", b"\x89PNG not really", "image/png")},
                        timeout=60)
    assert answer.status_code == 400 and answer.json() == {"error": NO_FILE_NAME}, answer.text
    assert httpx.post(public.url + "gradio_api/upload", files={"files": ("a.png", b"x")}, timeout=60).status_code == 200


def train_start_data(server, **values) -> list:
    """/train_start's inputs in order, its defaults but for `values` (from the server's API description)."""
    info = httpx.get(server.url + "gradio_api/info", timeout=30).json()
    parameters = info["named_endpoints"]["/train_start"]["parameters"]
    return [values.get(p["parameter_name"], p.get("parameter_default")) for p in parameters]


@pytest.mark.slow
def test_train_start_refuses_what_the_memory_cannot_hold(public):
    idle = server_memory(public)[0]
    reset_peak(public.process.pid)
    for batch, size in ((4096, 512), (4096, 256), (1024, 512)):  # 176-704 GB: more than any machine here has
        event, data = call(public, "train_start",
                           train_start_data(public, data="demo", arch="tiny", folds="0", epochs=1,
                                            batch_size=batch, image_size=size))
        assert event == "complete", data
        assert data[0].startswith(f"**Not started:** Training tiny at batch size {batch:,} and image size {size:,} "
                                  "needs about "), data[0]
        assert "lower the batch size or the image size." in data[0]
    assert server_memory(public)[1] - idle < 100 * MB  # nothing was allocated for them
    assert not (public.runs.exists() and any(public.runs.iterdir())), "a run folder was made"
    assert public.alive()


def test_a_served_model_with_larger_inputs_than_the_server_affords_gets_a_sentence(public, tmp_path):
    """A schema-valid copy of a model with image_size 1,024 (8.2 GB for one 25-face request before): the app
    refuses to serve it with a sentence; the model it serves stays usable."""
    from fixtures.app_server import save_tiny_checkpoint

    from audience.predict.predictor import MAX_SERVED_IMAGE_SIZE

    saved = save_tiny_checkpoint(tmp_path, "huge-input")
    metadata = json.loads(saved.read_text())
    metadata["image_size"] = 1024
    (public.checkpoints / "huge-input.json").write_text(json.dumps(metadata))
    (public.checkpoints / "huge-input.safetensors").write_bytes(saved.with_suffix(".safetensors").read_bytes())
    photo = tmp_path / "face.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(photo)
    payload = file_payload(upload(public, photo))
    try:
        event, data = call(public, "predict", [payload, "huge-input.json", False, False])
        assert event == "complete" and data[-1] == (
            f"**Error:** Model huge-input classifies 1,024 px faces; this app serves models of at most "
            f"{MAX_SERVED_IMAGE_SIZE} px (their memory and time per face grow with the square of the size): use "
            "the command line (python -m audience.cli.predict) for it."), data
        assert predict(public, payload).startswith("No face found")  # the tiny model still answers
    finally:
        for suffix in (".json", ".safetensors"):
            (public.checkpoints / f"huge-input{suffix}").unlink()
