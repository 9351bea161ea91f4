"""The Predict tab: pick a model, give an image (upload, webcam snapshot, clipboard) or stream the
webcam, see every face boxed with its age group and gender, a table, a probability chart and JSON.

API: `/predict` (image, model name, whole_image, tta) -> (annotated image, faces table, chart,
JSON, status); `/predict_video` (video file, model name, frames/s) in the Video view
(audience/ui/predict_video.py). Bad input never raises: the status says what is wrong in one sentence. `/make_default`
(model name) -> (model list, banner) stores the model served when none is named (refused on a public
deployment unless AUDIENCE_ALLOW_TRAINING=1).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from audience.data.images import LARGE_PIXELS, read_image, release_memory_soon
from audience.errors import AudienceError
from audience.labels import HEADS
from audience.model.catalog import save_default_choice
from audience.predict.drawing import draw_predictions, face_number
from audience.predict.predictor import capped_note, classes_seen
from audience.predict.smoothing import FaceTracker
from audience.train import job as jobs
from audience.ui.payloads import ImagePayload
from audience.ui.predict_video import build_video_view
from audience.ui.predict_view import (
    MORE_FACES,
    NO_MODEL,
    TABLE_COLUMNS,
    default_model,
    faces_table,
    get_predictor,
    model_banner,
    model_choices,
    probability_chart,
    resolve_checkpoint,
    status_text,
)
from audience.ui.uploads import source_of

# Photos that can be shown anywhere (public domain; audience/assets/NOTICE.md): a Space visitor has one to click.
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
EXAMPLE_PHOTOS = ("astronaut.jpg",)
STREAM_EVERY_S = 0.2  # 5 frames/s: what a CPU classifies in time (docs/measurements.md)
STREAM_TIME_LIMIT_S = 120  # one viewer holds the stream queue this long before it must restart
# /predict's workers: more than the decode slots (audience/data/images.py), so that requests waiting for a
# slot (DECODE_WAIT_S at most) or for the model leave workers to a small photo; the slots and the decode
# budget, not this number, bound the memory and CPU that large images take.
PREDICT_CONCURRENCY = 8
EMPTY_TABLE = pd.DataFrame(columns=TABLE_COLUMNS)


def predict_image(image, model_name: str | None, whole_image: bool = False, tta: bool = False):
    """The /predict handler: (annotated image, table, chart, JSON, status markdown).

    `image` is a gradio file payload (the event runs with preprocess=False so that our own decoder
    validates uploads and reports bad files in the status), a path, bytes or an RGB array.
    """
    if image is None:
        return None, EMPTY_TABLE, None, None, "Upload an image, paste one or take a webcam snapshot."
    try:
        started = time.perf_counter()
        rgb = read_image(source_of(image))
        decode_ms = (time.perf_counter() - started) * 1000  # predict_timed gets the decoded array: it would say 0
        checkpoint = resolve_checkpoint(model_name)
        predictor = get_predictor(checkpoint)
        predictions, timings = predictor.predict_timed(rgb, whole_image=bool(whole_image), tta_flip=bool(tta))
        timings.decode_ms = decode_ms
    except AudienceError as error:
        return None, EMPTY_TABLE, None, None, f"**Error:** {error}"
    if rgb.shape[0] * rgb.shape[1] > LARGE_PIXELS:
        release_memory_soon()  # hand the large image's memory back once gradio has encoded the answer
    faces = [prediction.to_dict() for prediction in predictions]
    result = {"model": None if checkpoint is None else checkpoint.name, "note": predictor.note, "faces": faces,
              "faces_found": timings.faces_found,
              # the classes the model learned from: the chart draws these bars (no "u" for a UTKFace model)
              "classes": {head: list(classes_seen(predictor.metadata, head)) for head in predictor.heads}}
    return (
        draw_predictions(rgb, predictions),
        faces_table(predictions),
        probability_chart(faces[0] if faces else None, 1, result["classes"]),
        result,
        status_text(predictions, timings, predictor, bool(whole_image)),
    )


def show_selected_face(result: dict | None, event: gr.SelectData):
    """Chart of the face whose table row was clicked."""
    faces = (result or {}).get("faces") or []
    row = event.index[0] if isinstance(event.index, list | tuple) else event.index
    if not isinstance(row, int) or not 0 <= row < len(faces):
        return gr.skip()
    return probability_chart(faces[row], row + 1, (result or {}).get("classes"))


def stream_frame(frame, model_name: str | None, session: dict | None):
    """One webcam frame -> (annotated frame, session state, status); probabilities smoothed per session.

    `frame` is the raw payload (an uploaded file or a data: URL; arrays from Python callers), decoded
    with the same checks as /predict's image."""
    if frame is None:
        return None, session, gr.skip()
    session = session if session and session.get("model") == model_name else {"model": model_name, "tracker": None}
    start = time.perf_counter()
    try:
        frame = read_image(source_of(frame))
        predictor = get_predictor(resolve_checkpoint(model_name))
        predictions, timings = predictor.predict_timed(frame)
    except AudienceError as error:
        return None, session, f"**Error:** {error}"
    if session["tracker"] is None:
        session["tracker"] = FaceTracker(uncertain_below=predictor.uncertain_below)
    smoothed = session["tracker"].update(predictions)
    elapsed = (time.perf_counter() - start) * 1000
    note = f" **{predictor.note}**" if predictor.note else ""
    capped = capped_note(len(predictions), timings.faces_found, MORE_FACES)
    note = f" {capped}{note}" if capped else note
    # the smoothed classes in words too (numbered as in the picture): readable without the image
    labels = "; ".join(
        f"{face_number(number)} " + " · ".join(p.shown_label(head) for head in HEADS if p.probs_of(head) is not None)
        for number, p in enumerate(smoothed, 1) if p.age_probs is not None or p.gender_probs is not None)
    status = (f"{len(smoothed)} face{'s' if len(smoothed) != 1 else ''}, {elapsed:.0f} ms per frame"
              f"{': ' + labels if labels else ''}.{note}")
    return draw_predictions(frame, smoothed), session, status


def refresh_models(current: str | None):
    """New dropdown choices (keeping the current pick when it still exists, else the default) and the banner."""
    choices = model_choices()
    values = [value for _, value in choices]
    value = current if current in values else default_model()
    return gr.Dropdown(choices=choices, value=value), model_banner(value)


def select_default_model():
    """New dropdown choices with the default model picked (after 'Use this model' made one), and the banner."""
    value = default_model()
    return gr.Dropdown(choices=model_choices(), value=value), model_banner(value)


def make_default(model_name: str | None, demo: gr.Blocks | None = None):
    """The /make_default handler: store the picked model as the default (served when no model is named, and
    picked first after a restart). Refused on a public deployment unless AUDIENCE_ALLOW_TRAINING=1."""
    server = getattr(demo, "server_name", None), bool(getattr(demo, "share", False))
    try:
        refusal = jobs.server_change_refusal("'Make default'", *server)
        if refusal:
            raise AudienceError(refusal)
        value = str(model_name or "").strip()
        if value == NO_MODEL:
            raise AudienceError("Pick a model to make it the default (detection only cannot be the default).")
        resolve_checkpoint(value)  # a served model, or a sentence saying why not
        save_default_choice(value)
    except AudienceError as error:
        gr.Warning(str(error))
        return gr.skip(), f"**Not changed:** {error}"
    return gr.Dropdown(choices=model_choices(), value=value), model_banner(value)


def build_predict_tab(demo: gr.Blocks, compare_events=None) -> None:
    """The tab's components and events; call inside `with gr.Tab("Predict", id="predict"):`.

    `compare_events` (what build_compare_tab returns) refreshes the model list after 'Use this model'.
    """
    choices, default = model_choices(), default_model()
    with gr.Row():
        model = gr.Dropdown(choices=choices, value=default, label="Model", scale=5,
                            info="The default model first, then the shipped checkpoints and your own models "
                                 "(models folder), newest first.")
        refresh = gr.Button("Refresh list", scale=1, size="sm")
        set_default = gr.Button("Make default", scale=1, size="sm")
    banner = gr.Markdown(model_banner(default))
    with gr.Tab("Image"):
        with gr.Row():
            with gr.Column():
                image_in = gr.Image(sources=["upload", "webcam", "clipboard"], type="numpy", label="Image",
                                    elem_id="predict-image")
                image_in.data_model = ImagePayload  # a raw request's plain string or number gets the status sentence
                whole_image = gr.Checkbox(False, label="the image is already a face crop",
                                          info="Skip face detection and classify the whole image.")
                tta = gr.Checkbox(False, label="flip test-time augmentation",
                                  info="Also classify the mirrored faces and average (twice the compute).")
                run = gr.Button("Predict", variant="primary")
                # a click puts the photo in the image box, whose change answers it (no cached outputs)
                gr.Examples([[str(EXAMPLES_DIR / name)] for name in EXAMPLE_PHOTOS], inputs=[image_in],
                            label="Example photo (public domain)", cache_examples=False)
            with gr.Column():
                annotated = gr.Image(label="Faces", interactive=False, format="jpeg", elem_id="predict-faces")
                status = gr.Markdown()
        table = gr.Dataframe(EMPTY_TABLE, label="Faces (click a row to chart it)", interactive=False)
        with gr.Row():
            chart = gr.Plot(label="Probabilities")
            # open: every level shown, not "Array(4)" / "Object(2)" to click through
            result = gr.JSON(label="JSON", open=True)
    with gr.Tab("Live webcam"):
        gr.Markdown("Streams the webcam (https or localhost only); labels are smoothed across frames.")
        with gr.Row():
            webcam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam",
                              webcam_options=gr.WebcamOptions(mirror=True))
            webcam.data_model = ImagePayload
            live = gr.Image(label="Live faces", interactive=False, format="jpeg")
        live_status = gr.Markdown()
        session = gr.State(None)
    with gr.Tab("Video"):
        build_video_view(model, demo)

    gr.on(
        # .input fires on a user's change only, so refreshing the model list does not re-run a prediction
        [run.click, image_in.change, model.input, whole_image.input, tta.input],
        predict_image,
        inputs=[image_in, model, whole_image, tta],
        outputs=[annotated, table, chart, result, status],
        api_name="predict",
        preprocess=False,  # our read_image validates the upload, so a bad file becomes a status sentence
        show_progress="minimal",
        # A photo uploaded (or a box ticked) while the previous answer is still computed is answered right
        # after it, with the inputs of that moment: gradio's default for a click ("once") dropped it, and the
        # page kept the answer to the previous photo.
        trigger_mode="always_last",
        concurrency_limit=PREDICT_CONCURRENCY,
    )
    table.select(show_selected_face, inputs=[result], outputs=[chart], api_visibility="private")
    webcam.stream(
        stream_frame,
        inputs=[webcam, model, session],
        outputs=[live, session, live_status],
        stream_every=STREAM_EVERY_S,
        time_limit=STREAM_TIME_LIMIT_S,
        concurrency_limit=2,
        api_visibility="private",  # hidden from the API docs, yet a raw request can still name the event
        preprocess=False,  # gradio's image preprocessing would open any path a frame payload names
        show_progress="hidden",
    )
    refresh.click(refresh_models, inputs=[model], outputs=[model, banner], api_visibility="private")
    model.change(model_banner, inputs=[model], outputs=[banner], api_visibility="private")
    # a new page opens on the default model of now (the value built at start may be an older default)
    demo.load(select_default_model, outputs=[model, banner], api_visibility="private")
    set_default.click(functools.partial(make_default, demo=demo), inputs=[model], outputs=[model, banner],
                      api_name="make_default")
    if compare_events is not None:  # 'Use this model' made the promoted model the default: pick it at once
        compare_events.promoted.change(select_default_model, outputs=[model, banner], api_visibility="private")


__all__ = ["build_predict_tab", "default_model", "predict_image", "stream_frame"]
