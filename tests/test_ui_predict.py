"""The Predict tab: its handlers directly, and `/predict` through gradio_client on a launched Blocks."""

from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from audience.errors import AudienceError
from audience.model.checkpoint import save_checkpoint
from audience.model.network import build_model
from audience.ui import predict_view
from audience.ui.predict import predict_image, stream_frame
from audience.ui.uploads import MAX_IMAGE_BYTES, REFUSED

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
data = pytest.importorskip("skimage.data")


@pytest.fixture()
def checkpoints(tmp_path, monkeypatch) -> Path:
    """AUDIENCE_CHECKPOINTS pointed at a folder holding one tiny synthetic-data checkpoint."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.manual_seed(0)
    save_checkpoint(folder / "tiny", build_model("tiny"), {"dataset": {"name": "demo", "synthetic": True}})
    monkeypatch.setenv("AUDIENCE_CHECKPOINTS", str(folder))
    yield folder
    predict_view.clear_predictor_cache()


@pytest.fixture(scope="module")
def astronaut_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(path, quality=92)
    return path


def test_model_choices_describe_checkpoints_and_refuse_paths(checkpoints):
    choices = predict_view.model_choices()
    assert choices[0][1] == "tiny.json" and "tiny, age+gender, demo (synthetic data)" in choices[0][0]
    assert choices[-1][1] == predict_view.NO_MODEL
    assert "synthetic demo data" in predict_view.model_banner("tiny.json")
    assert "Detection only" in predict_view.model_banner(predict_view.NO_MODEL)
    assert predict_view.resolve_checkpoint("tiny") == checkpoints / "tiny.json"
    for bad in ("../tiny.json", "/etc/passwd", "missing.json"):
        with pytest.raises(AudienceError):
            predict_view.resolve_checkpoint(bad)


def test_predictor_cache_keeps_two(checkpoints):
    first = predict_view.get_predictor(checkpoints / "tiny.json")
    assert predict_view.get_predictor(checkpoints / "tiny.json") is first
    torch.manual_seed(1)
    save_checkpoint(checkpoints / "other", build_model("tiny"), {})
    predict_view.get_predictor(checkpoints / "other.json")
    predict_view.get_predictor(None)
    assert predict_view.get_predictor(checkpoints / "tiny.json") is not first  # evicted (least recently used)


def test_predict_image_handler(checkpoints, astronaut_file, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(astronaut_file.parent))  # the file counts as uploaded
    annotated, table, chart, result, status = predict_image({"path": str(astronaut_file)}, "tiny.json", False, True)
    assert annotated.shape == (512, 512, 3)
    assert len(table) == 1 and table.iloc[0]["age"]
    assert len(chart.data) == 2 and len(chart.data[0].y) == 8
    assert result["model"] == "tiny.json" and len(result["faces"]) == 1
    assert "1 face found" in status and "synthetic demo data" in status
    _, table, chart, result, status = predict_image(np.full((200, 300, 3), 90, np.uint8), "tiny.json")
    assert table.empty and chart is None and "already a face crop" in status
    *_, status = predict_image(b"definitely not an image", "tiny.json")
    assert status.startswith("**Error:**") and "Traceback" not in status
    *_, status = predict_image({"path": str(astronaut_file)}, "../../etc/passwd")
    assert status.startswith("**Error:**")
    assert predict_image(None, "tiny.json")[-1].startswith("Upload")


def test_predict_opens_only_regular_files_gradio_received(checkpoints, astronaut_file, tmp_path, monkeypatch):
    """A path a request names must resolve to a regular file inside gradio's upload folder; every other path
    (outside, missing, a folder, a FIFO, a symlink out of the folder, a NUL byte) gets one and the same sentence."""
    uploads = tmp_path / "gradio-uploads"
    uploads.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    fifo = uploads / "fifo.jpg"
    os.mkfifo(fifo)
    (uploads / "link-out.jpg").symlink_to(astronaut_file)
    (uploads / "folder.jpg").mkdir()
    refused = [str(astronaut_file), "/etc/passwd", str(uploads / "missing.jpg"), str(uploads / "folder.jpg"),
               str(fifo), str(uploads / "link-out.jpg"), str(uploads / ".." / astronaut_file.parent.name / "x.jpg"),
               "/etc/pass\x00wd", str(uploads)]
    answers = set()
    for path in refused:
        for payload in ({"path": path}, path):
            *_, status = predict_image(payload, "tiny.json")
            answers.add(status)
    assert answers == {f"**Error:** {REFUSED}"}
    (uploads / "face.jpg").write_bytes(astronaut_file.read_bytes())
    assert "1 face found" in predict_image({"path": str(uploads / "face.jpg")}, "tiny.json")[-1]


def test_inline_images_are_bounded_before_decoding(checkpoints):
    """A data: URL (what a JSON body can carry instead of an upload) over the upload limit is refused before it
    is decoded; one that is not base64 gets a sentence."""
    huge = {"url": "data:image/png;base64," + "A" * (MAX_IMAGE_BYTES * 4 // 3 + 8)}
    assert predict_image(huge, "tiny.json")[-1] == "**Error:** The image is larger than the limit of 20 MB."
    assert predict_image({"url": "data:image/png;base64,@@@"}, "tiny.json")[-1] == (
        "**Error:** The image's data: URL is not valid base64.")


def test_stream_smooths_per_session(checkpoints):
    frame = data.astronaut()
    session = None
    for _ in range(3):
        annotated, session, status = stream_frame(frame, "tiny.json", session)
    assert annotated.shape == frame.shape and "1 face" in status and "ms per frame" in status
    assert session["tracker"].tracks[0].frames == 3
    # the smoothed classes in words, numbered as in the picture: "1 face, 12 ms per frame: #1 22-32 · m."
    from audience.labels import AGE_CLASSES, GENDER_CLASSES

    label = re.search(r"ms per frame: #1 (\S+) · (\S+)\.", status)
    assert label and label.group(1) in AGE_CLASSES and label.group(2) in GENDER_CLASSES, status
    _, session, _ = stream_frame(frame, predict_view.NO_MODEL, session)  # another model: a fresh tracker
    assert session["model"] == predict_view.NO_MODEL and session["tracker"].tracks[0].frames == 1


def test_stream_frames_open_no_server_file(checkpoints, astronaut_file, tmp_path, monkeypatch):
    """The webcam stream decodes its frames itself (preprocess=False: gradio's image preprocessing opens any
    path a payload without "meta" names), with /predict's checks: a server path gets the one refusal."""
    from audience.ui.predict import build_predict_tab

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    for payload in ({"path": str(astronaut_file)}, {"path": "/etc/passwd"}, str(astronaut_file)):
        annotated, _, status = stream_frame(payload, "tiny.json", None)
        assert annotated is None and status == f"**Error:** {REFUSED}"
    jpeg = io.BytesIO()
    Image.open(astronaut_file).save(jpeg, "JPEG")
    frame = "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode()  # what the browser streams
    for payload in (frame, {"url": frame}):
        annotated, _, status = stream_frame(payload, "tiny.json", None)
        assert annotated.shape == (512, 512, 3) and "1 face" in status, status
    with gr.Blocks() as demo:
        build_predict_tab(demo)
    streams = [fn for fn in demo.fns.values() if fn.fn is stream_frame]
    assert len(streams) == 1 and streams[0].preprocess is False


def test_a_photo_sent_while_the_last_is_answered_is_answered_next_not_dropped(checkpoints):
    """gradio's default for an event that a click starts is "once": the page drops a new trigger while the
    last answer is pending, so a photo uploaded right after ticking "already a face crop" was never answered
    and the page kept the previous photo's answer. "always_last" answers it next, with the inputs of then."""
    from audience.ui.predict import build_predict_tab

    with gr.Blocks() as demo:
        build_predict_tab(demo)
    [predict] = [dep for dep in demo.config["dependencies"] if dep.get("api_name") == "predict"]
    assert predict["trigger_mode"] == "always_last"
    assert {target[1] for target in predict["targets"]} >= {"click", "change", "input"}


@pytest.mark.slow
def test_predict_api_through_gradio_client(checkpoints, astronaut_file, tmp_path, monkeypatch):
    from audience.ui.predict import build_predict_tab

    with gr.Blocks() as demo:
        with gr.Tab("Predict", id="predict"):
            build_predict_tab(demo)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        client = gradio_client.Client(url, verbose=False)
        api = client.view_api(return_format="dict", print_info=False)
        assert "/predict" in api["named_endpoints"]
        image, table, chart, result, status = client.predict(
            gradio_client.handle_file(str(astronaut_file)), "tiny.json", False, False, api_name="/predict"
        )
        assert Path(image).is_file() and Image.open(image).size == (512, 512)
        assert len(table["data"]) == 1 and result["faces"][0]["age"]["label"]
        assert chart is not None and "synthetic demo data" in status
        broken = tmp_path / "broken.jpg"
        broken.write_text("not an image")
        *_, status = client.predict(gradio_client.handle_file(str(broken)), "tiny.json", False, False,
                                    api_name="/predict")
        assert status.startswith("**Error:**") and "broken.jpg" in status
        monkeypatch.setenv("AUDIENCE_CHECKPOINTS", str(tmp_path / "empty"))  # no model at all
        image, table, chart, result, status = client.predict(
            gradio_client.handle_file(str(astronaut_file)), predict_view.NO_MODEL, False, False, api_name="/predict"
        )
        assert "No trained model" in status and result["faces"][0]["age"] is None and len(table["data"]) == 1
    finally:
        demo.close()


def test_a_photo_with_more_faces_than_the_cap_says_so(checkpoints, group_photo):
    _, table, _, result, status = predict_image(group_photo, "tiny.json")
    assert len(table) == 20 and len(result["faces"]) == 20 and result["faces_found"] == 25
    assert "20 of at least 25 faces shown (the largest)" in status and "--max-faces" in status
    _, table, _, result, status = predict_image(group_photo[:600, :600], "tiny.json")  # 4 faces: no note
    assert len(table) == result["faces_found"] == 4 and "faces shown" not in status
    _, _, status = stream_frame(group_photo, "tiny.json", None)  # the webcam's status says it too
    assert status.startswith("20 faces") and "20 of at least 25 faces shown (the largest)" in status


def test_use_this_model_selects_it_in_predict_at_once(checkpoints, tmp_path, monkeypatch):
    """'Use this model' in Compare copies the run into the models folder, makes it the default and bumps a state
    the Predict tab listens to: its model list is rebuilt with the new model picked, without the Refresh button
    (the browser test presses 'Use this model' and reads the list); a new Predict tab (a restart) picks it too."""
    from fixtures.app_server import save_tiny_checkpoint
    from test_compare import make_run

    from audience.ui.compare import build_compare_tab, promote
    from audience.ui.predict import build_predict_tab, select_default_model

    monkeypatch.setenv("AUDIENCE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("AUDIENCE_MODELS", str(tmp_path / "models"))
    with gr.Blocks() as demo:
        events = build_compare_tab(demo)
        build_predict_tab(demo, events)
    by_fn = {}
    for dependency in demo.fns.values():
        by_fn.setdefault(getattr(dependency.fn, "func", dependency.fn), []).append(dependency)
    (press,) = by_fn[promote]
    follow_ups = [d for d in demo.fns.values() if d.trigger_after == press._id]
    assert [d.outputs[0]._id for d in follow_ups] == [events.promoted._id]
    assert follow_ups[0].fn(None) == 1 and follow_ups[0].fn(1) == 2  # a new value every press: .change fires
    selects = [d for d in by_fn[select_default_model] if d.targets == [(events.promoted._id, "change")]]
    assert len(selects) == 1
    model = selects[0].outputs[0]
    assert isinstance(model, gr.Dropdown) and model.label == "Model"
    run = make_run(tmp_path / "runs", "20200101-000000-tiny-folds", folds={0: (10, 12)})
    save_tiny_checkpoint(run / "fold0", "best")
    message, _ = press.fn(run.name, "0", "mine")
    assert "is served as **mine** (in the models folder) and is now the default model" in message, message
    assert "synthetic demo data" in message  # a demo model the user chose: it says so
    assert (tmp_path / "models" / "mine.json").is_file() and not (checkpoints / "mine.json").exists()
    dropdown, banner = select_default_model()
    assert dropdown.value == "mine.json" and "mine.json" in [value for _, value in dropdown.choices]
    assert dropdown.choices[0] == (dropdown.choices[0][0], "mine.json") and "(default)" in dropdown.choices[0][0]
    assert "It is the default model because you chose it" in banner
    torch.manual_seed(1)  # a newer model in the shipped folder does not displace the choice
    save_checkpoint(checkpoints / "newer", build_model("tiny"), {"dataset": {"name": "demo", "synthetic": False}})
    with gr.Blocks() as restarted:  # a restart: the tab opens on the stored choice
        build_predict_tab(restarted)
    (picker,) = [b for b in restarted.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Model"]
    assert picker.value == "mine.json"
    assert predict_view.resolve_checkpoint(None) == tmp_path / "models" / "mine.json"


def test_the_chart_has_no_u_bar_for_a_model_that_never_saw_u(checkpoints, astronaut_file, monkeypatch):
    """A model trained on UTKFace (f and m only) gets no "u" bar; the JSON still carries every probability,
    by class name, and says which classes the model learned."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(astronaut_file.parent))
    torch.manual_seed(0)
    save_checkpoint(checkpoints / "utk", build_model("tiny"),
                    {"dataset": {"name": "UTKFace", "synthetic": False, "format": "utkface"}})
    _, _, chart, result, _ = predict_image({"path": str(astronaut_file)}, "utk.json")
    assert list(chart.data[1].x) == ["f", "m"] and len(chart.data[0].x) == 8
    assert result["classes"]["gender"] == ["f", "m"] and list(result["faces"][0]["gender"]["probs"]) == ["f", "m", "u"]
    assert chart.layout.title.text == "Face #1"
    _, _, chart, result, _ = predict_image({"path": str(astronaut_file)}, "tiny.json")
    assert list(chart.data[1].x) == ["f", "m", "u"]  # a model whose data had "u" keeps its bar


def test_the_predict_tab_offers_a_public_domain_example_photo():
    from audience.ui.predict import EXAMPLE_PHOTOS, EXAMPLES_DIR

    notice = (EXAMPLES_DIR.parent / "NOTICE.md").read_text()
    for name in EXAMPLE_PHOTOS:
        assert (EXAMPLES_DIR / name).is_file() and f"examples/{name}" in notice and "public domain" in notice
        with Image.open(EXAMPLES_DIR / name) as photo:
            assert photo.size == (512, 512)
