"""The Train tab: a form made from TrainConfig, one background run for the whole server, live progress.

The form's fields, choices, help texts and defaults come from TrainConfig (its `SETTINGS`); the
demo preset only overrides a few of them (`DEMO_PRESET`), so there is no second list of defaults.
The run itself lives in audience.train.job (a daemon thread), so a reload or a second browser sees the
same job; a gr.Timer polls it every second while it runs and once at page load.

API: `/train_start` (the form's fields as keyword arguments; unspecified ones keep the form's
initial value) -> (message, timer); `/train_status` -> (progress, log, curves, status JSON, timer);
`/train_stop` -> message; `/train_resume` (run id) -> (message, timer); `/clear_cache` -> message (what was
freed, or why not while a run trains). Nothing raises: a refusal
or bad input is a sentence in the message (and a toast in the browser).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from audience.data.cache import describe_bytes
from audience.errors import AudienceError
from audience.figures import plot_job_curves
from audience.model.archs import ARCHS
from audience.settings import allowed_data_dirs, public_deployment
from audience.train import job as jobs
from audience.train.config import DEMO_RECIPE, SETTINGS, Setting, TrainConfig

POLL_S = 1.0
LOG_LINES_SHOWN = 200
MAIN_FIELDS = ("data", "policy", "images", "arch", "task", "protocol", "folds", "epochs", "batch_size", "lr",
               "schedule", "image_size", "pretrained")
# Server paths are the operator's business (CLI), never a visitor's; the rest goes under "Advanced".
HIDDEN_FIELDS = ("out", "cache_dir", "weights_file", "bf16", "channels_last", "pin_memory", "persistent_workers",
                 "compile", "parallel_folds", "dist_timeout", "threads")
ADVANCED_PER_ROW = 6
FOLD_CHOICES = ["all", "0", "1", "2", "3", "4"]
NULLABLE = tuple(setting.name for setting in SETTINGS if setting.optional)
TEXT_FIELDS = tuple(setting.name for setting in SETTINGS if setting.kind is str)
TRISTATE = {"auto": None, "yes": True, "no": False}
# With more than one GPU the tab offers them all: torchrun runs the training, one process per GPU.
GPU_MODES = {"one GPU": None, "all GPUs: parallel folds": True, "all GPUs: data parallel": False}
GPU_MODES_INFO = ("parallel folds: each GPU trains whole folds (best for small models such as MobileNetV3); "
                  "data parallel: every GPU shares each batch of one fold")
ARCH_TRADE_OFF = "MobileNetV3 is fast; ResNet-50 more accurate but slow on a CPU; tiny is for smoke runs"

# The demo preset is the training recipe that learns the demo set quickly on a CPU (its time: docs/measurements.md)
# (audience.train.config.DEMO_RECIPE; the numbers are in docs/measurements.md); the form starts from it.
DEMO_PRESET: dict = dict(DEMO_RECIPE)


def preset_values(preset: dict | None = None) -> dict:
    """Every form field's value: TrainConfig's defaults with `preset` applied (validated)."""
    config = TrainConfig(**(preset if preset is not None else DEMO_PRESET))
    return {f.name: getattr(config, f.name) for f in form_fields()}


def full_preset() -> dict:
    """TrainConfig's own defaults on the configured data root (AUDIENCE_DATA) or the demo set."""
    from audience.settings import configured_data_root

    root = configured_data_root()
    return {"data": str(root) if root is not None else "demo"}


def initial_preset() -> dict:
    """The form's first values: the configured dataset (AUDIENCE_DATA) with the full-run defaults, else the demo."""
    from audience.settings import configured_data_root

    return full_preset() if configured_data_root() is not None else DEMO_PRESET


def data_root_hint() -> str:
    """The data-root field's info line: on a local run any folder; on a public deployment 'demo' and the folders
    a typed root may lie under (the real allow-list)."""
    from audience.settings import demo_root

    home = Path.home()

    def short(folder: Path) -> str:
        return "~/" + str(folder.relative_to(home)) if folder.is_relative_to(home) else str(folder)

    if public_deployment() is None:
        return "'demo', or any Adience root or UTKFace folder on this machine"
    folders = [short(d) for d in allowed_data_dirs() if d != demo_root()]
    if not folders:
        return ("'demo' (the built-in synthetic set); to open your Adience or UTKFace copy, start the app "
                "with AUDIENCE_DATA=/path (or AUDIENCE_DATA_DIRS)")
    return "'demo', or an Adience root or UTKFace folder in or under: " + "; ".join(folders)


def form_fields() -> list[Setting]:
    return [setting for setting in SETTINGS if setting.name not in HIDDEN_FIELDS]


def _component(item: Setting, value) -> gr.components.Component:
    help_text, choices = item.help, item.choices
    label = item.name.replace("_", " ")
    optional, base = item.optional, item.kind
    if item.name == "arch":
        # twice the width of its neighbours: the labels are the longest choices on the form; the
        # trade-off goes in the info line so that the labels stay short enough to show whole
        return gr.Dropdown([(spec["label"], name) for name, spec in ARCHS.items()], value=value, label=label,
                           info=f"{help_text}: {ARCH_TRADE_OFF}", scale=2)
    if item.name == "folds":
        return gr.Dropdown(FOLD_CHOICES, value=value, label=label, allow_custom_value=True,
                           info="'all' = the five folds; one fold (0-4) for a quick run; or a list such as 0,2")
    if item.name == "data":
        return gr.Textbox(value=value, label="data root", info=data_root_hint())
    if choices:
        return gr.Dropdown(list(choices), value=value, label=label, info=help_text)
    if base is bool and optional:
        current = next(k for k, v in TRISTATE.items() if v is value)
        return gr.Radio(list(TRISTATE), value=current, label=label, info=help_text)
    if base is bool:
        return gr.Checkbox(value=bool(value), label=label, info=help_text)
    if base in (int, float):
        # No precision=0: gradio would round an API caller's 1.5 epochs to 2 unsaid; TrainConfig refuses it,
        # with the same sentence as the CLI.
        return gr.Number(value=value, label=label, info=help_text, precision=None, step=1 if base is int else None)
    return gr.Textbox(value="" if value is None else str(value), label=label, info=help_text)


def config_from_form(values: dict) -> TrainConfig:
    """The TrainConfig of the form's values (AudienceError names a bad field)."""
    converted = {}
    for name, value in values.items():
        if isinstance(value, str) and value in TRISTATE and name == "pretrained":
            value = TRISTATE[value]
        converted[name] = value
    return TrainConfig.from_dict(converted)


# gradio's own autoscroll (Textbox autoscroll=True) scrolls only when the box was near its end before
# the update: a log filled while the Train tab was hidden (after a reload, or a run that ended on
# another tab) showed its first lines. This page script keeps the log at its end whenever its text
# changes or it comes into view, unless the reader scrolled up (scrolling back down re-attaches).
KEEP_LOG_AT_END_JS = """
() => {
  const follow = () => {
    const box = document.querySelector('#train-log textarea');
    if (!box) return;
    if (box.audienceFollow === undefined) {
      box.audienceFollow = true;
      const settle = () => setTimeout(() => {
        box.audienceFollow = box.scrollHeight - box.scrollTop - box.clientHeight <= 4;
      }, 50);
      for (const name of ['wheel', 'touchmove', 'keyup', 'mouseup']) {
        box.addEventListener(name, settle, {passive: true});
      }
    }
    const shown = box.offsetParent !== null;
    if (shown && (box.value !== box.audienceText || !box.audienceShown)) {
      if (box.audienceText && !box.value.startsWith(box.audienceText.split('\\n')[0])) box.audienceFollow = true;
      if (box.audienceFollow) box.scrollTop = box.scrollHeight;
      box.audienceText = box.value;
    }
    box.audienceShown = shown;
  };
  setInterval(follow, 200);
}
"""


@dataclass
class TrainTabEvents:
    """What other tabs may listen to: `run_ended` changes (to the run id) whenever a run ends."""

    run_ended: gr.State
    timer: gr.Timer


def _server(demo: gr.Blocks) -> tuple[str | None, bool]:
    return getattr(demo, "server_name", None), bool(getattr(demo, "share", False))


def _timer(active: bool) -> gr.Timer:
    return gr.Timer(POLL_S, active=active)


def _refusal(error: AudienceError) -> str:
    gr.Warning(str(error))
    return f"**Not started:** {error}"


def check_permission(demo: gr.Blocks):
    """The banner and the two buttons' state: training may be off on a public server."""
    allowed, reason = jobs.training_allowed(*_server(demo))
    text = "" if allowed else f"> **Training is off on this server.** {reason}"
    return text, gr.Button(interactive=allowed), gr.Button(interactive=allowed)


# Where a Linux GPU driver shows itself (NVIDIA, AMD ROCm): without one torch counts no GPU, and the tab is built
# without importing torch (several seconds of the app's start on a small CPU box; issue 19's cold start).
GPU_DRIVER_PATHS = ("/proc/driver/nvidia/gpus", "/dev/kfd")


def gpu_count() -> int:
    if sys.platform == "linux" and not any(Path(path).exists() for path in GPU_DRIVER_PATHS):
        return 0
    import torch

    return torch.cuda.device_count()


def _processes(gpus: str | None) -> tuple[int, bool | None]:
    """(processes, parallel_folds) of the GPUs choice: one process, or one per GPU in the chosen mode."""
    mode = GPU_MODES.get(gpus or "one GPU")
    return (1, None) if mode is None or gpu_count() < 2 else (gpu_count(), mode)


def start_training(demo: gr.Blocks, *, image_size=None, workers=None, max_train_batches=None, prior_tau=None,
                   gpus=None, **form):
    """Start a run from the form's values; API callers may give only the fields they change.

    Gradio makes an API argument optional when its component has a value or the handler's parameter
    defaults to None: the number fields that may start empty are therefore named here (a test checks
    that every such field of TrainConfig is); every other field arrives in **form.
    """
    form.update(image_size=image_size, workers=workers, max_train_batches=max_train_batches, prior_tau=prior_tau)
    processes, parallel_folds = _processes(gpus)
    if parallel_folds is not None:
        form["parallel_folds"] = parallel_folds
    try:
        config = config_from_form({k: v for k, v in form.items() if v is not None or k in NULLABLE})
        jobs.start_job(config, server_name=_server(demo)[0], share=_server(demo)[1], processes=processes)
    except AudienceError as error:
        return _refusal(error), _timer(jobs.job_status().active)
    return f"Started a training run ({config.arch}, folds {config.folds}, {config.epochs} epochs).", _timer(True)


def resume_training(demo: gr.Blocks, run_id: str | None, gpus: str | None = None):
    if not run_id:
        return "Choose a stopped run to resume.", _timer(jobs.job_status().active)
    try:
        status = jobs.resume_job(run_id, server_name=_server(demo)[0], share=_server(demo)[1],
                                 processes=_processes(gpus)[0])
    except AudienceError as error:
        return _refusal(error), _timer(jobs.job_status().active)
    return f"Resuming run {status.run_id}.", _timer(True)


def stop_training():
    status = jobs.stop_job()
    if status.state == "stopping":
        return "Stopping after the current batch; the files of the last completed epoch stay valid."
    return f"Nothing to stop ({status.state})."


def clear_cache(demo: gr.Blocks) -> str:
    """Delete the decoded-image caches; the message says how much was freed, or why nothing was."""
    try:
        freed = jobs.clear_image_cache(server_name=_server(demo)[0], share=_server(demo)[1])
    except AudienceError as error:
        gr.Warning(str(error))
        return f"**Not cleared:** {error}"
    if not freed:
        return "The image cache was already empty."
    return f"Cleared the image cache: freed {describe_bytes(freed)}. The next run decodes its images again."


FINISHED_POINTER = ("**Next:** see run `{run}` beside the others in the **Compare** tab; pick it there under "
                    "**Use this model** to serve it in the **Predict** tab.")


def stop_button(active: bool) -> gr.Button:
    """Red (the stop variant) only while a run trains: a red button with nothing to stop read as an alarm."""
    return gr.Button(variant="stop" if active else "secondary")


def poll(points_shown: int, ended: str | None):
    """The job's progress, log, curves (redrawn only when a point was added), JSON status, and the Stop
    button's colour; a finished run points to Compare and "Use this model"."""
    status = jobs.job_status(LOG_LINES_SHOWN)
    figure = plot_job_curves(status.curves) if len(status.curves) != points_shown else gr.skip()
    text = f"**{status.progress_line()}**" + (f"  \n{status.device_line()}" if status.device_line() else "")
    if status.error:
        text += f"  \n**Error:** {status.error}"
    if status.state == "finished" and status.run_id:
        text += "  \n" + FINISHED_POINTER.format(run=status.run_id)
    if not status.active and status.run_id and status.state != "idle":
        ended = f"{status.run_id}:{status.state}"
    details = {k: v for k, v in status.to_dict().items() if k not in ("log", "curves")}
    return (text, "\n".join(status.log), figure, details, _timer(status.active), len(status.curves), ended,
            stop_button(status.active))


def refresh_resumable():
    return gr.Dropdown(choices=jobs.resumable_runs(), value=None)


def load_preset(names: list[str], preset: dict | None = None) -> list:
    """The form's values for `preset` (None: the demo preset), in the order of `names`."""
    chosen = preset_values(preset)
    return [_form_value(name, chosen[name]) for name in names]


def _build_form(values: dict) -> dict[str, gr.components.Component]:
    """The form's components: the main fields in two rows, the rest in an accordion."""
    fields = {f.name: f for f in form_fields()}
    inputs: dict[str, gr.components.Component] = {}
    with gr.Group():
        for row in (MAIN_FIELDS[:7], MAIN_FIELDS[7:]):
            with gr.Row(equal_height=True):
                for name in row:
                    inputs[name] = _component(fields[name], values[name])
    advanced = [name for name in fields if name not in MAIN_FIELDS]
    with gr.Accordion("Advanced settings", open=False):
        for start_index in range(0, len(advanced), ADVANCED_PER_ROW):
            with gr.Row(equal_height=True):
                for name in advanced[start_index:start_index + ADVANCED_PER_ROW]:
                    inputs[name] = _component(fields[name], values[name])
    return inputs


def build_train_tab(demo: gr.Blocks) -> TrainTabEvents:
    """The tab's components and events; call inside `with gr.Tab("Train", id="train"):`."""
    permission = gr.Markdown()
    with gr.Row():
        demo_button = gr.Button("Demo preset (one fold, quick on a CPU)", size="sm")
        full_button = gr.Button("Full run preset (TrainConfig defaults)", size="sm")
    inputs = _build_form(preset_values(initial_preset()))
    # Hidden with one GPU or none: nothing changes there.
    gpus = gr.Radio(list(GPU_MODES), value="one GPU", label=f"GPUs ({gpu_count()} visible)", info=GPU_MODES_INFO,
                    visible=gpu_count() > 1)
    with gr.Row():
        start = gr.Button("Train fold(s)", variant="primary")
        stop = gr.Button("Stop", variant="stop" if jobs.job_status().active else "secondary")
    message = gr.Markdown()
    progress = gr.Markdown(jobs.job_status().progress_line())
    with gr.Row():
        log = gr.Textbox(label="Log", lines=16, max_lines=16, autoscroll=True, interactive=False, scale=1,
                         elem_id="train-log")
        curves = gr.Plot(label="Loss and validation accuracy per epoch", scale=1)
    with gr.Accordion("Resume a stopped run", open=False), gr.Row():
        # allow_custom_value: API callers name any run id; resume_job checks it is a run of the runs folder.
        resumable = gr.Dropdown(jobs.resumable_runs(), label="Stopped or interrupted runs", scale=4,
                                allow_custom_value=True)
        refresh_runs = gr.Button("Refresh list", size="sm", scale=1)
        resume = gr.Button("Resume", scale=1)
    with gr.Accordion("Image cache", open=False), gr.Row():
        gr.Markdown("Training decodes each image once into a cache (kept up to `AUDIENCE_CACHE_GB`, least "
                    "recently used deleted first). Clearing it frees the disk; the next run decodes again.")
        clear = gr.Button("Clear image cache", size="sm", scale=0)
    with gr.Accordion("Job status (JSON)", open=False):
        status_json = gr.JSON()
    timer = gr.Timer(POLL_S, active=True)  # ticks once at page load, so a reload picks up a running job
    run_ended = gr.State(None)
    shown_points = gr.State(-1)

    names = list(inputs)
    form_outputs = list(inputs.values())
    demo_button.click(functools.partial(load_preset, names), outputs=form_outputs, api_visibility="private")
    full_button.click(lambda: load_preset(names, full_preset()), outputs=form_outputs, api_visibility="private")
    start.click(functools.partial(start_training, demo), inputs_kwargs={**inputs, "gpus": gpus},
                outputs=[message, timer], api_name="train_start", concurrency_limit=1, concurrency_id="train_control")
    stop.click(stop_training, outputs=[message], api_name="train_stop")
    resume.click(functools.partial(resume_training, demo), inputs=[resumable, gpus], outputs=[message, timer],
                 api_name="train_resume", concurrency_limit=1, concurrency_id="train_control")
    timer.tick(poll, inputs=[shown_points, run_ended],
               outputs=[progress, log, curves, status_json, timer, shown_points, run_ended, stop],
               api_name="train_status", show_progress="hidden")
    refresh_runs.click(refresh_resumable, outputs=[resumable], api_visibility="private")
    clear.click(functools.partial(clear_cache, demo), outputs=[message], api_name="clear_cache",
                concurrency_limit=1, concurrency_id="train_control")
    run_ended.change(refresh_resumable, outputs=[resumable], api_visibility="private")
    demo.load(functools.partial(check_permission, demo), outputs=[permission, start, resume],
              api_visibility="private")
    demo.load(None, js=KEEP_LOG_AT_END_JS)
    return TrainTabEvents(run_ended=run_ended, timer=timer)


def _form_value(name: str, value):
    """A config value as its form component shows it (the tri-state radio, '' in an empty text box)."""
    if name == "pretrained":
        return next(k for k, v in TRISTATE.items() if v is value)
    return "" if value is None and name in TEXT_FIELDS else value
