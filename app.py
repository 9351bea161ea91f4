"""Audience: the Gradio app. Four tabs over the `audience` package: EDA, Train, Compare, Predict.

`demo` is built at import (Hugging Face Spaces and the tests import it); `launch()` runs only under
`__main__`. With no AUDIENCE_DATA set, the EDA and Train tabs open the built-in synthetic demo
dataset, made on first use.
"""

from __future__ import annotations

import gradio as gr
from starlette.middleware import Middleware

from audience import settings
from audience.data.demo import check_demo_folder
from audience.errors import AudienceError
from audience.ui.choice_errors import bound_choice_errors
from audience.ui.compare import build_compare_tab
from audience.ui.eda import build_eda_tab
from audience.ui.gradio_cache import install_atomic_image_cache
from audience.ui.payloads import UploadFormCheck, install_request_sentences
from audience.ui.predict import build_predict_tab
from audience.ui.request_limit import REQUEST_LIMIT_BYTES, RequestSizeLimit, UploadQuota
from audience.ui.shutdown import install_sigterm, shut_down
from audience.ui.theme import THEME
from audience.ui.train import build_train_tab
from audience.ui.uploads import start_upload_sweeper

UPLOAD_LIMIT = "20mb"  # per file; RequestSizeLimit bounds every request, the image reader decoded pixels

INTRO = """# Audience · age group and gender on Adience
Explore the [Adience](https://talhassner.github.io/home/projects/Adience/Adience-data.html) benchmark,
train ResNet50 or MobileNetV3 under the subject-exclusive 5-fold protocol, compare them honestly,
and try a model on your own photos or webcam."""


def default_data_root() -> str:
    """AUDIENCE_DATA when set, else the synthetic demo dataset's folder. The demo data are made on first use
    (the EDA tab's first load, a training run: about 2 s), not before the first page; a folder there that
    holds something else stops the app here."""
    configured = settings.configured_data_root()
    if configured is not None:
        return str(configured)
    try:
        check_demo_folder(settings.demo_root())
        return str(settings.demo_root())
    except AudienceError as exc:  # e.g. the demo folder holds something else: a sentence, not a traceback
        raise SystemExit(f"Audience cannot start: {exc} The demo folder is AUDIENCE_HOME/demo-data: "
                         "set AUDIENCE_HOME to another folder, or AUDIENCE_DATA to a dataset.") from None


def build_demo() -> gr.Blocks:
    root = default_data_root()
    # Uploaded photos and the pictures made from them are deleted from gradio's temp folder once they are
    # KEEP_FILES_S old (checked every minute), not kept until the server restarts.
    with gr.Blocks(title="Audience", delete_cache=(60, settings.keep_files_seconds())) as demo:
        gr.Markdown(INTRO)
        with gr.Tabs(selected=settings.default_tab()):
            with gr.Tab("EDA", id="eda"):
                build_eda_tab(root, demo)
            with gr.Tab("Train", id="train"):
                train_events = build_train_tab(demo)
            with gr.Tab("Compare", id="compare"):
                compare_events = build_compare_tab(demo, train_events)
            with gr.Tab("Predict", id="predict"):
                build_predict_tab(demo, compare_events)
    demo.queue(default_concurrency_limit=4, max_size=64)
    bound_choice_errors(demo)
    return demo


install_atomic_image_cache()
install_request_sentences()
demo = build_demo()


def _kept_files() -> set[str]:
    """Files gradio must keep in its cache (a component's default value, say): the sweeper leaves them."""
    return set().union(*(getattr(block, "keep_in_cache", set()) for block in demo.blocks.values()))


if __name__ == "__main__":
    install_sigterm()  # SIGTERM (a Space restarting) stops the server as Ctrl-C does
    start_upload_sweeper(settings.keep_files_seconds(), _kept_files)  # also files left by an earlier process
    demo.launch(
        server_name=settings.server_name(),
        server_port=settings.server_port(),
        max_file_size=UPLOAD_LIMIT,
        theme=THEME,
        allowed_paths=[],
        app_kwargs={"middleware": [Middleware(RequestSizeLimit, max_bytes=REQUEST_LIMIT_BYTES),
                                   Middleware(UploadQuota, quota_bytes=settings.upload_quota_bytes()),
                                   Middleware(UploadFormCheck)]},
    )
    shut_down(demo)  # launch() returns on Ctrl-C or SIGTERM: stop the run at a safe point, delete the uploads
