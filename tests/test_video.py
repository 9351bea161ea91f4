"""Video files (issue 23): faces tracked through a clip made at test time from real UTKFace faces (../shared;
skipped without it), one steady answer per person, a re-link for a person who leaves and comes back, table,
timeline and download that agree, an annotated WebM, one sentence per bad file, the public bounds, the CLI.

The tracker's rule itself is checked on made-up boxes and features (no model): IoU continues a track, the face
features re-link a return, the smoothing is the webcam's."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import wave
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
from fixtures.video_clips import leave_and_return, two_faces, two_people, write_video
from fixtures.waiting import HANG_S
from PIL import Image

from audience.errors import AudienceError
from audience.labels import AGE_CLASSES
from audience.predict.predictor import FacePrediction, Predictor
from audience.predict.smoothing import FaceTracker
from audience.predict.tracking import VideoTracker
from audience.predict.video import (
    LOCAL_LIMITS,
    PUBLIC_LIMITS,
    VideoInfo,
    VideoLimits,
    VideoResult,
    analyse_video,
    check_info,
    open_video,
    sample_frames,
)
from audience.predict.video_report import (
    ROW_COLUMNS,
    frame_rows,
    label_changes,
    summary_table,
    timeline_figure,
    track_summary,
    write_downloads,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = PROJECT_ROOT / "checkpoints" / "utkface-mobilenetv3.json"
RATE = 5.0

# --- the tracker's rule, on made-up faces ----------------------------------------------------------------


def face(box, age=0, gender=0) -> FacePrediction:
    age_probs = [0.02] * len(AGE_CLASSES)
    age_probs[age] = 1 - 0.02 * (len(AGE_CLASSES) - 1)
    gender_probs = [0.05, 0.05, 0.05]
    gender_probs[gender] = 0.9
    return FacePrediction(box, 0.9, box, AGE_CLASSES[age], age_probs, "fm u"[gender], gender_probs)


def features_of(vectors):
    """(crops, embed) for VideoTracker.update where each face's "crop" is its feature vector already."""
    return (lambda wanted: [np.asarray(vectors[i], dtype=np.float64) for i in wanted]), (lambda crops: crops)


def test_iou_continues_a_moving_face_and_a_new_place_starts_a_track():
    tracker = VideoTracker()
    assert [t for t, _ in tracker.update(0, [face((10, 10, 50, 50)), face((200, 10, 50, 50))])] == [1, 2]
    # both moved a little (the order of the list does not matter), and a third face appeared far away
    ids = [t for t, _ in tracker.update(1, [face((205, 12, 50, 50)), face((14, 11, 50, 50)), face((100, 150, 40, 40))])]
    assert ids == [2, 1, 3]


def test_a_face_back_after_leaving_is_relinked_by_its_features_and_counted_as_a_return():
    tracker = VideoTracker(max_missed=2)
    alice, bob = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    tracker.update(0, [face((10, 10, 50, 50)), face((200, 10, 50, 50))], *features_of([alice, bob]))
    for frame in range(1, 6):  # bob gone for 5 frames (more than max_missed)
        tracker.update(frame, [face((10 + frame, 10, 50, 50))], *features_of([alice]))
    # bob back at a place no box of his overlaps; a stranger arrives too
    stranger = [0.0, 0.0, 1.0]
    ids = [t for t, _ in tracker.update(6, [face((16, 10, 50, 50)), face((100, 200, 50, 50)),
                                            face((300, 200, 50, 50))],
                                        *features_of([alice, [0.1, 0.99, 0.0], stranger]))]
    assert ids == [1, 2, 3]
    assert [(t.id, t.returns, t.frames) for t in tracker.tracks] == [(1, 0, 7), (2, 1, 2), (3, 0, 1)]


def test_without_features_or_relinking_a_return_is_a_new_track():
    for tracker, features in ((VideoTracker(max_missed=1), (None, None)),
                              (VideoTracker(max_missed=1, relink_threshold=None), features_of([[1, 0]] * 2))):
        tracker.update(0, [face((10, 10, 50, 50))], *features)
        tracker.update(1, [], *features)
        tracker.update(2, [], *features)
        assert [t for t, _ in tracker.update(3, [face((200, 200, 50, 50))], *features)] == [2]


def test_each_track_is_smoothed_as_the_webcam_smooths():
    """One face whose answer flips every frame: the track's labels are those of the webcam's FaceTracker."""
    webcam, video = FaceTracker(), VideoTracker()
    for frame in range(8):
        prediction = face((10 + frame, 10, 50, 50), age=(3 if frame % 2 else 4), gender=frame % 2)
        expected = webcam.update([prediction])[0]
        (_, smoothed), = video.update(frame, [prediction])
        assert smoothed.age_probs == pytest.approx(expected.age_probs)
        assert (smoothed.age_label, smoothed.gender_label) == (expected.age_label, expected.gender_label)
    raw = VideoTracker(alpha=1.0)
    labels = [raw.update(f, [face((10, 10, 50, 50), age=3 + f % 2)])[0][1].age_label for f in range(4)]
    assert labels == [AGE_CLASSES[3], AGE_CLASSES[4]] * 2  # alpha 1: each frame's own answer


# --- clips made from real faces --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faces(shared_dir):
    folder = shared_dir / "utkface" / "UTKFace"
    if not folder.is_dir():
        pytest.skip("../shared/utkface/UTKFace is not present")
    return two_faces(folder)


@pytest.fixture(scope="module")
def clips(faces, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {"two": write_video(folder / "two-people.mp4", two_people(faces)),
            "return": write_video(folder / "leave-and-return.mp4", leave_and_return(faces))}


@pytest.fixture(scope="module")
def predictor():
    with Predictor(SHIPPED, runtime="torch") as loaded:
        yield loaded


def analyse(path, predictor, annotated=None, smooth=True, rate=RATE) -> VideoResult:
    result = VideoResult(None, rate)
    for _ in analyse_video(path, predictor, rate, annotated=annotated, smooth=smooth, result=result):
        pass
    return result


@pytest.fixture(scope="module")
def analysed(clips, predictor, tmp_path_factory):
    out = tmp_path_factory.mktemp("annotated")
    return {"two": analyse(clips["two"], predictor),
            "return": analyse(clips["return"], predictor, annotated=out / "return.webm"),
            "return-raw": analyse(clips["return"], predictor, smooth=False),
            "annotated": out / "return.webm"}


def test_two_people_in_view_throughout_are_two_tracks(analysed):
    result = analysed["two"]
    summary = track_summary(result)
    assert len(result.frames) == 15  # 3 s at 5 frames/s
    assert [(s["track"], s["frames"], s["returns"]) for s in summary] == [(1, 15, 0), (2, 15, 0)]
    assert all([f.track for f in frame.faces] == [1, 2] for frame in result.frames)
    # the girl (UTKFace: 6, f) and the man (62, m): the model tells them apart
    assert [s["gender"] for s in summary] == ["f", "m"]
    assert AGE_CLASSES.index(summary[0]["age"]) < AGE_CLASSES.index(summary[1]["age"])


def test_a_person_who_leaves_and_comes_back_keeps_their_first_track(analysed):
    result = analysed["return"]
    summary = track_summary(result)
    assert [(s["track"], s["returns"]) for s in summary] == [(1, 0), (2, 1)]
    times = [frame.time_s for frame in result.frames if any(f.track == 2 for f in frame.faces)]
    assert min(times) < 1.5 and max(times) > 3.5  # seen before leaving and after coming back
    assert not [t for t in times if 1.5 <= t < 3.5]  # and not while away
    assert summary[1]["gender"] == "m"


def test_smoothing_steadies_each_tracks_labels(analysed):
    """The same frames' own answers flicker; the smoothed labels change no more often, and the smoothed probabilities
    and age move less from frame to frame (figures: docs/measurements.md)."""
    smoothed, raw = frame_rows(analysed["return"]), frame_rows(analysed["return-raw"])
    assert [r["frame_age"] for r in smoothed] == [r["frame_age"] for r in raw]  # the frames' own answers
    def changes(rows, heads=("age", "gender")):
        return sum(sum(label_changes(rows, head).values()) for head in heads)

    changes = {"smoothed": changes(smoothed), "raw": changes(raw),
               "frames' own": changes(smoothed, ("frame_age", "frame_gender"))}
    assert changes["raw"] == changes["frames' own"], changes
    assert changes["smoothed"] <= changes["raw"], changes

    # and the answers move less from one frame to the next (a steady model may not flip a label on this clip at all)
    def mean_step(rows, column):
        values: dict[int, list[float]] = {}
        for row in rows:
            values.setdefault(row["track"], []).append(float(row[column]))
        return np.mean([abs(b - a) for track in values.values() for a, b in itertools.pairwise(track)])

    for column in ("p_age", "p_gender") + (("age_years",) if raw[0]["age_years"] is not None else ()):
        assert mean_step(smoothed, column) < mean_step(raw, column), column


def test_table_timeline_and_download_agree(analysed, tmp_path):
    result = analysed["return"]
    rows, summary = frame_rows(result), track_summary(result)
    table = summary_table(summary)
    figure = timeline_figure(rows)
    csv_path, json_path = write_downloads(rows, summary, result, tmp_path, "clip")
    csv = pd.read_csv(csv_path)
    document = json.loads(json_path.read_text(encoding="utf-8"))
    assert list(csv.columns) == ROW_COLUMNS and len(csv) == len(rows) == len(document["frames"])
    points = sorted((round(x, 3), int(y.lstrip("#"))) for trace in figure.data for x, y in zip(trace.x, trace.y,
                                                                                                 strict=True))
    assert points == sorted((r["time_s"], r["track"]) for r in rows) == sorted(zip(csv.time_s, csv.track, strict=True))
    # every timeline point has its row's age group colour: one trace per group, named by it
    assert {trace.name for trace in figure.data} == {r["age"] for r in rows}
    for _, row in table.iterrows():
        mine = csv[csv.track == row["track"]]
        assert row["frames"] == len(mine)
        assert (row["first seen (s)"], row["last seen (s)"]) == (mine.time_s.min(), mine.time_s.max())
    assert document["tracks"] == summary


def test_the_annotated_video_is_a_vp8_webm_of_the_analysed_frames(analysed):
    path = analysed["annotated"]
    capture = cv2.VideoCapture(str(path))
    try:
        assert capture.isOpened()
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
        frames = 0
        while capture.read()[0]:
            frames += 1
        size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        capture.release()
    assert fourcc == "VP80" and frames == len(analysed["return"].frames) and size == (640, 360)
    assert path.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # Matroska/WebM


# --- bad files, bounds ---------------------------------------------------------------------------------


def tiny_video(path: Path, frames: int, fps: float = 10, size=(64, 48), fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), (i * 7) % 255, np.uint8))
    writer.release()
    return path


def bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the start of its sentence)."""
    whole = tiny_video(folder / "whole.mp4", 20).read_bytes()
    (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    with wave.open(str(folder / "speech.wav"), "wb") as sound:
        sound.setnchannels(1), sound.setsampwidth(2), sound.setframerate(8000)
        sound.writeframes(np.zeros(8000, np.int16).tobytes())
    (folder / "notes.mp4").write_text("not a video at all\n", encoding="utf-8")
    return {
        "truncated": (folder / "truncated.mp4", "'truncated.mp4' could not be read as a video: it is damaged or cut "
                                                "short"),
        "zero frames": (tiny_video(folder / "empty.mp4", 0), "'empty.mp4' holds no video frame to analyse"),
        "zero frames webm": (tiny_video(folder / "empty.webm", 0, fourcc="VP80"),
                             "'empty.webm' holds no video frame to analyse"),
        "audio only": (folder / "speech.wav", "'speech.wav' holds only sound, no video picture"),
        "not a video": (folder / "notes.mp4", "'notes.mp4' could not be read as a video"),
        "huge resolution": (tiny_video(folder / "huge.mp4", 1, size=(5000, 4000)),
                            "'huge.mp4' is 5,000 x 4,000 pixels, more than the 8,294,400 pixels a frame"),
        # 360 frames at one every 100 s: a file that declares 10 hours
        "10 hours": (tiny_video(folder / "ten-hours.mp4", 360, fps=0.01),
                     "'ten-hours.mp4' says it lasts 10 h 0 min, longer than the 3 h 0 min"),
    }


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return bad_files(tmp_path_factory.mktemp("bad-videos"))


def test_each_bad_file_gets_its_sentence(bad):
    detection_only = Predictor(None)
    try:
        for what, (path, sentence) in bad.items():
            with pytest.raises(AudienceError) as refused:
                for _ in analyse_video(path, detection_only):
                    pass
            message = str(refused.value)
            assert message.startswith(sentence) and message.count(". ") == 0 and "\n" not in message, (what, message)
    finally:
        detection_only.close()


def test_a_gif_is_a_video_and_a_header_that_lies_gains_nothing(tmp_path):
    gif = tmp_path / "wave.gif"
    frames = [Image.fromarray(np.full((48, 64, 3), i * 20, np.uint8)) for i in range(10)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    capture, info = open_video(gif)
    capture.release()
    assert (info.width, info.height, info.frame_count) == (64, 48, 10)
    # a stream longer than its header said: the bound holds while decoding
    capture, _ = open_video(tiny_video(tmp_path / "two-s.mp4", 20))
    try:
        lying = VideoInfo("two-s.mp4", 64, 48, 10.0, 0, 0.0)
        with pytest.raises(AudienceError, match="runs past 1.0 s, the longest video"):
            list(sample_frames(capture, lying, None, VideoLimits(max_seconds=1, max_pixels=10_000, max_frames=100)))
    finally:
        capture.release()


def test_public_bounds_duration_resolution_and_frames_with_one_sentence_each():
    cases = {
        "resolution": (VideoInfo("wide.mp4", 2560, 1440, 30, 300, 10), 5,
                       "'wide.mp4' is 2,560 x 1,440 pixels, more than the 2,073,600 pixels a frame this app analyses"),
        "duration": (VideoInfo("long.mp4", 640, 360, 30, 2700, 90), 5,
                     "'long.mp4' says it lasts 1 min 30 s, longer than the 1 min 0 s this app analyses"),
        "frames": (VideoInfo("busy.mp4", 640, 360, 30, 1200, 40), None,
                   "'busy.mp4' needs 1,200 frames analysed at every frame, more than the 300 per video"),
    }
    for what, (info, rate, sentence) in cases.items():
        check_info(info, LOCAL_LIMITS, rate)  # a local run analyses it
        with pytest.raises(AudienceError) as refused:
            check_info(info, PUBLIC_LIMITS, rate)
        assert str(refused.value).startswith(sentence), (what, str(refused.value))
    check_info(cases["frames"][0], PUBLIC_LIMITS, 5)  # 40 s at 5 frames/s: 200 frames, within the bound


def test_the_video_view_answers_bad_files_and_public_bounds_with_a_status_sentence(bad, tmp_path, monkeypatch):
    """The handler (what /predict_video runs): files outside gradio's uploads are refused; each bad upload, and a
    clip over a public bound, ends in one status sentence and empty outputs, never an exception."""
    from audience.ui import predict_video as view
    from audience.ui import uploads

    monkeypatch.setattr(uploads, "upload_folders", lambda: [bad["truncated"][0].parent.resolve()])
    local, public = SimpleNamespace(server_name="127.0.0.1", share=False), SimpleNamespace(server_name="0.0.0.0",
                                                                                          share=False)

    def answer(payload, demo=local, rate=5):
        return list(view.predict_video(payload, "none", rate, demo=demo, progress=lambda *a, **k: None))[-1]

    for what, (path, sentence) in bad.items():
        outputs = answer({"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}})
        assert outputs[0] is None and outputs[4].startswith(f"**Error:** {sentence}"), (what, outputs[4])
    wide = tiny_video(bad["truncated"][0].parent / "wide.mp4", 3, size=(2560, 1440))
    assert answer(str(wide), demo=public)[4].startswith("**Error:** 'wide.mp4' is 2,560 x 1,440 pixels")
    outputs = answer(str(wide), demo=local)
    assert outputs[4].startswith("0 tracks in 2 frames analysed (5 frames/s) of 'wide.mp4'")
    capture = cv2.VideoCapture(outputs[0])  # the annotated copy is scaled down to OUTPUT_MAX_SIDE
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (854, 480)
    capture.release()
    outside = tiny_video(tmp_path / "outside.mp4", 3)
    assert answer(str(outside))[4] == f"**Error:** {uploads.REFUSED}"
    assert answer(str(wide), rate="fast")[4].startswith("**Error:** The rate must be a number of frames per second")
    assert answer(None)[4] == view.NO_VIDEO


def test_predict_cli_prints_one_line_per_track_and_json_lines(clips, tmp_path, capsys):
    env_python = [sys.executable, str(PROJECT_ROOT / "scripts" / "predict.py")]
    text = subprocess.run([*env_python, str(clips["return"]), "--checkpoint", str(SHIPPED), "--fps", "5",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=HANG_S, cwd=PROJECT_ROOT)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.strip().splitlines()
    assert lines[0] == f"{clips['return']}: 2 tracks in 25 frames analysed (5 frames/s)"
    assert lines[1].startswith("  track 1: 0.0-4.8 s, 25 frames, age ")
    assert lines[2].startswith("  track 2: 0.0-4.8 s, 15 frames, came back 1 time, age ")
    assert (tmp_path / "leave-and-return-tracked.webm").stat().st_size > 0
    from audience.cli.predict import main

    capsys.readouterr()
    assert main([str(clips["two"]), "--checkpoint", str(SHIPPED), "--fps", "2", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    frames, last = records[:-1], records[-1]
    assert [r["frame"] for r in frames] == [0, 5, 10, 15, 20, 25]
    assert all([f["track"] for f in r["faces"]] == [1, 2] and r["faces"][0]["age"]["probs"] for r in frames)
    assert [(t["track"], t["frames"]) for t in last["tracks"]] == [(1, 6), (2, 6)]
    assert main([str(tmp_path / "missing.mp4"), "--checkpoint", str(SHIPPED)]) == 1
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'missing.mp4'}: error: 'missing.mp4': no such video file.")
    assert main([str(tmp_path / "missing.mp4"), "--checkpoint", str(SHIPPED), "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"video": str(tmp_path / "missing.mp4"),
                                                   "error": "'missing.mp4': no such video file."}
    with pytest.raises(SystemExit) as usage:
        main([str(clips["two"]), "--fps", "fast"])
    assert usage.value.code == 2 and "--fps: must be 0 (every frame) or a positive number" in capsys.readouterr().err


# --- over raw HTTP: /gradio_api/upload, then /gradio_api/call/predict_video -----------------------------------


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, demo_root):
    from fixtures.app_server import shared_app_server

    return shared_app_server(request, tmp_path_factory, demo_root)


def upload(server, path: Path) -> dict:
    import httpx

    answer = httpx.post(server.url + "gradio_api/upload", files={"files": (path.name, path.read_bytes())},
                        timeout=HANG_S)
    answer.raise_for_status()
    return {"path": answer.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def finished(stream: str) -> list:
    """The outputs of a raw call's `complete` event (a generator sends `generating` events and heartbeats first)."""
    assert "Traceback" not in stream and "\nevent: complete\n" in f"\n{stream}", stream
    return json.loads(f"\n{stream}".split("\nevent: complete\ndata:", 1)[1].split("\n", 1)[0])


def test_raw_http_calls_get_a_sentence_per_bad_file_and_a_playable_answer_for_a_clip(server, bad, clips):
    from test_bad_inputs import call_raw

    sse_data = finished

    for what, (path, sentence) in bad.items():
        outputs = sse_data(call_raw(server, "predict_video", [upload(server, path), "e2e-tiny.json", 5]))
        assert outputs[0] is None and outputs[4].startswith(f"**Error:** {sentence}"), (what, outputs)
    for payload, sentence in (("/etc/passwd", "The image must be uploaded through the app"),
                              ({"url": "data:video/mp4;base64,AAAA"}, "The video arrived without a file"),
                              (12, "The video arrived without a file")):
        stream = call_raw(server, "predict_video", [payload, "e2e-tiny.json", 5])
        assert "event: complete" in stream, (payload, stream, server.log_tail())
        outputs = sse_data(stream)
        assert outputs[4].startswith(f"**Error:** {sentence}"), (payload, outputs)
    outputs = sse_data(call_raw(server, "predict_video", [upload(server, clips["two"]), "e2e-tiny.json", 2]))
    video, table, _, files, status = outputs
    assert status.startswith("2 tracks in 6 frames analysed (2 frames/s) of 'two-people.mp4'"), status
    assert video["path"].endswith(".webm") and [Path(f["path"]).suffix for f in files] == [".csv", ".json"]
    assert [row[0] for row in table["data"]] == [1, 2] and [row[3] for row in table["data"]] == [6, 6]
    import httpx

    webm = httpx.get(video["url"], timeout=HANG_S)
    assert webm.status_code == 200 and webm.content[:4] == b"\x1a\x45\xdf\xa3"


def test_stopping_an_analysis_between_frames_releases_the_file_and_keeps_a_playable_video(clips, tmp_path):
    """Stop (gradio cancels the generator) closes analyse_video between two frames: the decoder and the writer are
    released in its `finally`, and the annotated WebM holds the frames done so far."""
    out = tmp_path / "stopped.webm"
    detection_only = Predictor(None)
    try:
        analysis = analyse_video(clips["two"], detection_only, annotated=out)
        assert [next(analysis) for _ in range(3)][-1] == (3, 15)
        analysis.close()
    finally:
        detection_only.close()
    capture = cv2.VideoCapture(str(out))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == 3


def test_the_summary_averages_each_tracks_own_probabilities_and_years():
    """A track's age is the class of the highest MEAN probability over its frames (not the most frequent label),
    its years the mean of its frames' years; first/last times and frames come from its rows."""
    from audience.predict.video import FrameResult, TrackedFace

    def frame_face(age_probs, years, gender=0):
        prediction = face((10, 10, 50, 50), gender=gender)
        prediction.age_probs, prediction.age_years = age_probs, years
        prediction.age_label = AGE_CLASSES[int(np.argmax(age_probs))]
        return TrackedFace(1, prediction, prediction)

    narrow = [0, 0, 0, 0.4, 0.35, 0.25, 0, 0]  # 22-32 wins this frame by a little
    sure = [0, 0, 0, 0.05, 0.9, 0.05, 0, 0]  # 34-43 with 0.9
    result = VideoResult(VideoInfo("x.mp4", 64, 48, 10, 30, 3), 5)
    result.frames = [FrameResult(i * 2, i * 0.2, [frame_face(p, y)]) for i, (p, y) in
                     enumerate([(narrow, 30.0), (narrow, 31.0), (sure, 38.0)])]
    (summary,) = track_summary(result)
    assert [r["age"] for r in frame_rows(result)] == [AGE_CLASSES[3], AGE_CLASSES[3], AGE_CLASSES[4]]
    assert summary["age"] == AGE_CLASSES[4] and summary["p_age"] == pytest.approx((0.35 * 2 + 0.9) / 3, abs=1e-4)
    assert summary["age_years"] == 33.0 and (summary["first_s"], summary["last_s"], summary["frames"]) == (0, 0.4, 3)
    assert summary["gender"] == "f" and summary["p_gender"] == pytest.approx(0.9)


@pytest.fixture(scope="module")
def public_server(request, tmp_path_factory, demo_root):
    from fixtures.app_server import shared_app_server

    return shared_app_server(request, tmp_path_factory, demo_root, public=True)


def test_a_public_server_bounds_each_video_with_one_sentence_over_raw_http(public_server, tmp_path):
    """GRADIO_SERVER_NAME=0.0.0.0: the public bounds (PUBLIC_LIMITS) answer over /gradio_api/call/predict_video."""
    from test_bad_inputs import call_raw

    long = tiny_video(tmp_path / "ninety-seconds.mp4", 90, fps=1)
    wide = tiny_video(tmp_path / "wide.mp4", 1, size=(2560, 1440))
    busy = tiny_video(tmp_path / "busy.mp4", 400, fps=30)  # 13.3 s: 400 frames when every frame is analysed
    for path, rate, sentence in (
            (long, 5, "'ninety-seconds.mp4' says it lasts 1 min 30 s, longer than the 1 min 0 s this app analyses"),
            (wide, 5, "'wide.mp4' is 2,560 x 1,440 pixels, more than the 2,073,600 pixels a frame"),
            (busy, 0, "'busy.mp4' needs 400 frames analysed at every frame, more than the 300 per video")):
        outputs = finished(call_raw(public_server, "predict_video", [upload(public_server, path), None, rate]))
        assert outputs[0] is None and outputs[4].startswith(f"**Error:** {sentence}"), outputs[4]
    outputs = finished(call_raw(public_server, "predict_video", [upload(public_server, busy), None, 2]))
    assert outputs[4].startswith("0 tracks in 27 frames analysed (2 frames/s) of 'busy.mp4'"), outputs[4]


@pytest.mark.slow
def test_the_video_benchmark_measures_each_thread_count_with_and_without_the_webm():
    import torch

    from audience.bench.video_speed import video_benchmark

    threads = torch.get_num_threads()
    lines = []
    report = video_benchmark(SHIPPED, None, threads=(1,), rate=5.0, seconds=0.6, log=lines.append)
    assert [(r["threads"], r["smooth"], r["annotated"], r["frames"]) for r in report["runs"]] == [
        (1, True, True, 3), (1, True, False, 3), (1, False, False, 3)]
    assert all(r["frames_per_s"] > 0 and r["tracks"] == 2 for r in report["runs"]) and len(lines) == 3
    assert torch.get_num_threads() == threads


def test_a_webm_cut_short_is_analysed_up_to_its_cut_and_says_so(tmp_path):
    """A WebM keeps its index at the start: cut short, it still opens, and the frames before the cut are
    analysed, with one sentence saying the file ended before its declared length."""
    whole = tiny_video(tmp_path / "whole.webm", 40, fourcc="VP80", size=(160, 120)).read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(whole[: len(whole) * 6 // 10])
    detection_only = Predictor(None)
    try:
        result = VideoResult(None, None)
        for _ in analyse_video(cut, detection_only, None, result=result):
            pass
    finally:
        detection_only.close()
    assert 0 < len(result.frames) < 40
    assert result.note == (f"The video ended after {result.frames[-1].time_s:.1f} s of the 4.0 s it declares (the "
                           "file may be cut short); the frames before were analysed.")


def iso_box(kind: bytes, payload: bytes = b"") -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


def test_an_mp4_holding_only_sound_says_so(tmp_path):
    """An M4A-like MP4 whose one track has a sound handler (boxes as ISO BMFF lays them out; no video track)."""
    handler = iso_box(b"hdlr", bytes(8) + b"soun" + bytes(12) + b"SoundHandler\x00")
    track = iso_box(b"trak", iso_box(b"tkhd", bytes(84)) + iso_box(b"mdia", iso_box(b"mdhd", bytes(24)) + handler))
    sound = tmp_path / "interview.m4a"
    movie = iso_box(b"moov", iso_box(b"mvhd", bytes(100)) + track)
    sound.write_bytes(iso_box(b"ftyp", b"M4A \x00\x00\x02\x00isomM4A ") + movie + iso_box(b"mdat", bytes(64)))
    with pytest.raises(AudienceError, match=r"^'interview.m4a' holds only sound, no video picture"):
        open_video(sound)
