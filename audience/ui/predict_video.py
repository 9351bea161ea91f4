"""The Predict tab's Video view: a video file in, every face tracked, one steady answer per person out.

API: `/predict_video` (video file, model name, frames per second to analyse) -> (annotated WebM, per-track table,
timeline plot, CSV and JSON downloads, status). A generator: gradio shows the frames done and the time left, and
Stop (or a client's cancel) ends the analysis between two frames. Bad input never raises: the status says what is
wrong in one sentence. A public deployment analyses less per request (audience.predict.video.PUBLIC_LIMITS).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import gradio as gr
import pandas as pd
from gradio.data_classes import FileData
from pydantic import model_validator

from audience.errors import AudienceError, quoted
from audience.settings import public_deployment
from audience.ui.predict_view import get_predictor, resolve_checkpoint
from audience.ui.uploads import uploaded_file

RATE_CHOICES = [("every frame", 0), ("10 frames/s", 10), ("5 frames/s", 5), ("2 frames/s", 2), ("1 frame/s", 1)]
DEFAULT_RATE = 5
MAX_RATE = 60  # frames/s a request may ask for (above any usual video's own rate)
VIDEO_TYPES = [".mp4", ".m4v", ".webm", ".mov", ".mkv", ".avi", ".gif"]
STATUS_EVERY = 10  # frames between two status lines while the analysis runs
NO_VIDEO = "Upload a video (MP4, WebM, MOV, MKV, AVI or GIF)."


class VideoPayload(FileData):
    """A video file uploaded through /gradio_api/upload: {"path": what the upload answered, "meta": {"_type":
    "gradio.FileData"}, "orig_name": its name}."""

    # Also a plain string (the path it names) or any other JSON value (a payload without a file): a raw request's
    # odd value then gets the handler's sentence, not gradio's bare error.

    @model_validator(mode="before")
    @classmethod
    def _any_json(cls, value):
        if isinstance(value, FileData):
            return value
        if not isinstance(value, dict):
            value = {"path": value if isinstance(value, str) else ""}
        # gradio checked the upload folder before this validation for a payload carrying `meta`; one without it
        # is checked by the handler (uploads.uploaded_file), so it may pass as FileData here
        return {**value, "path": value["path"] if isinstance(value.get("path"), str) else "",
                "meta": {"_type": "gradio.FileData"}}


def _empty_table() -> pd.DataFrame:
    from audience.predict.video_report import SUMMARY_COLUMNS

    return pd.DataFrame(columns=SUMMARY_COLUMNS)


def _failed(message: str):
    return None, _empty_table(), None, None, f"**Error:** {message}"


def video_of(payload) -> tuple[Path, str]:
    """(the uploaded file, the name its sender gave it) of a request's video payload: a gradio FileData dict, or a
    VideoData dict holding one, or a path string; only files gradio received are opened (uploads.uploaded_file)."""
    if isinstance(payload, dict) and isinstance(payload.get("video"), dict):
        payload = payload["video"]
    if isinstance(payload, dict):
        path = payload.get("path")
        if not isinstance(path, str) or not path:
            raise AudienceError("The video arrived without a file; upload it (POST /gradio_api/upload) and send "
                                "the file it answers.")
        name = payload.get("orig_name") if isinstance(payload.get("orig_name"), str) else None
    elif isinstance(payload, str):
        path, name = payload, None
    else:
        raise AudienceError("The video must be an uploaded file (POST /gradio_api/upload), not "
                            f"{type(payload).__name__}.")
    file = uploaded_file(path)
    return file, (name or file.name)[:200]


def rate_of(value) -> float | None:
    """Frames per second to analyse from the rate field (0, '', None: the default; 'every frame' / -1: None)."""
    if value is None or value == "":
        return float(DEFAULT_RATE)
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise AudienceError(f"The rate must be a number of frames per second (0 for every frame), not "
                            f"{quoted(str(value), 40)}.") from None
    if rate == 0:
        return None
    if not math.isfinite(rate) or not 0 < rate <= MAX_RATE:
        raise AudienceError(f"The rate must be between 0 (every frame) and {MAX_RATE} frames per second, "
                            f"not {value}.")
    return rate


def predict_video(video, model_name: str | None, rate=DEFAULT_RATE, demo: gr.Blocks | None = None,
                  progress=gr.Progress()):  # noqa: B008 - gradio's way of asking for its progress bar
    """The /predict_video handler (a generator): status lines while it runs, then
    (annotated video, track table, timeline, [CSV, JSON], status)."""
    from audience.predict.video import LOCAL_LIMITS, PUBLIC_LIMITS, VideoResult, analyse_video, duration_text
    from audience.predict.video_report import (
        frame_rows,
        summary_table,
        timeline_figure,
        track_summary,
        write_downloads,
    )
    from audience.ui.uploads import upload_folders

    if video is None:
        yield None, _empty_table(), None, None, NO_VIDEO
        return
    public = public_deployment(getattr(demo, "server_name", None), bool(getattr(demo, "share", False)))
    limits = PUBLIC_LIMITS if public else LOCAL_LIMITS
    try:
        path, name = video_of(video)
        rate = rate_of(rate)
        predictor = get_predictor(resolve_checkpoint(model_name))
        # beside the uploads: the sweeper deletes them after AUDIENCE_KEEP_FILES_S like every upload
        folder = Path(tempfile.mkdtemp(prefix="video-", dir=upload_folders()[0]))
        result = VideoResult(None, rate)
        started = time.perf_counter()
        progress((0, None), desc="decoding", unit="frames")
        for done, total in analyse_video(path, predictor, rate, limits, annotated=folder / "annotated.webm",
                                         name=name, result=result):
            progress((done, total or None), desc="frames analysed", unit="frames")
            if done % STATUS_EVERY == 0:
                yield (gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                       f"Analysing {quoted(name)}: {done}{f' of {total}' if total else ''} frames.")
    except AudienceError as error:
        yield _failed(str(error))
        return
    rows = frame_rows(result)
    summary = track_summary(result)
    csv_path, json_path = write_downloads(rows, summary, result, folder, Path(name).stem[:60] or "video")
    info, elapsed = result.info, time.perf_counter() - started
    tracks = len(summary)
    how = "every frame" if rate is None else f"{rate:g} frames/s"
    lines = [f"{tracks} track{'s' if tracks != 1 else ''} in {len(result.frames)} frames analysed ({how}) of "
             f"{quoted(name)} ({duration_text(info.declared_s or result.frames[-1].time_s)}, {info.width} x "
             f"{info.height}) in {elapsed:.1f} s ({len(result.frames) / max(elapsed, 1e-9):.1f} frames/s)."]
    returned = sum(s["returns"] for s in summary)
    if returned:
        lines.append(f"{returned} return{'s' if returned != 1 else ''}: a face that left and came back was "
                     "re-linked to its first track by the model's face features (the returns column).")
    if result.note:
        lines.append(f"**{result.note}**")
    if predictor.note:
        lines.append(f"**{predictor.note}**")
    yield (str(folder / "annotated.webm"), summary_table(summary), timeline_figure(rows),
           [str(csv_path), str(json_path)], "\n\n".join(lines))


def build_video_view(model: gr.Dropdown, demo: gr.Blocks) -> None:
    """The Video sub-tab's components and events; call inside `with gr.Tab("Video"):` (`model`: the tab's picker)."""
    import functools

    gr.Markdown("Every face of a video file tracked, one steady answer per person: labels are smoothed along each "
                "track as in the live webcam; a face that leaves and comes back keeps its track.")
    with gr.Row():
        with gr.Column():
            video_in = gr.File(label="Video (MP4, WebM, MOV, MKV, AVI or GIF)", file_types=VIDEO_TYPES,
                               elem_id="predict-video-file")
            video_in.data_model = VideoPayload  # a raw request's plain string or number gets the status sentence
            rate = gr.Dropdown(RATE_CHOICES, value=DEFAULT_RATE, label="Frames analysed",
                               info="Fewer frames per second: faster; every frame: the steadiest tracks.")
            with gr.Row():
                run = gr.Button("Analyse video", variant="primary")
                stop = gr.Button("Stop", variant="secondary")
        with gr.Column():
            annotated = gr.Video(label="Tracked faces", interactive=False, elem_id="predict-video-out")
            status = gr.Markdown()
    table = gr.Dataframe(_empty_table(), label="Tracks (age and gender: the class with the highest probability "
                                               "averaged over the track)", interactive=False)
    with gr.Row():
        timeline = gr.Plot(label="Timeline")
        downloads = gr.File(label="Per-frame rows (CSV, JSON)", file_count="multiple", interactive=False)
    event = run.click(
        functools.partial(predict_video, demo=demo),
        inputs=[video_in, model, rate],
        outputs=[annotated, table, timeline, downloads, status],
        api_name="predict_video",
        preprocess=False,  # our own checks open only gradio's uploads and answer a bad file with a sentence
        concurrency_limit=1,  # one video at a time: an analysis uses every core
        show_progress="full",
    )
    stop.click(None, cancels=[event], api_visibility="private")
