"""The EDA tab: a data root, label policy and image folder in; summary, charts, noise table and faces out.

A thin adapter over audience.eda. A local run (loopback address, not a Space, no share link) opens
any folder the person at the keyboard types; a public deployment opens only roots under
settings.allowed_data_dirs() (settings.data_dirs_for, audience.data.roots.resolve_data_root), so a
visitor cannot make the server read arbitrary paths, and its messages quote the root as typed.
"""

from __future__ import annotations

import re

import gradio as gr
import pandas as pd

from audience import settings
from audience.data.adience import IMAGE_MODES
from audience.data.formats import DATA_FORMATS, images_to_explore, read_dataset
from audience.data.roots import hide_resolved, resolve_data_root
from audience.eda.report import FIGURE_NAMES, UTKFACE_FIGURES, build_eda
from audience.errors import AudienceError
from audience.labels import AGE_CLASSES, POLICIES

SIZE_SAMPLE = 200  # image headers read for the size chart
NOISE_COLUMNS = ["field", "raw", "rows", "bins", "strict"]
FIGURE_LABELS = {
    "age": "Age classes", "gender": "Gender", "age_gender": "Age class by gender",
    "fold_classes": "Age classes per fold", "images_per_subject": "Images per subject", "image_sizes": "Image sizes",
    "age_years": "Exact ages (UTKFace)", "race": "Race (UTKFace)",
}
SYNTHETIC_BANNER = (
    "> **Synthetic demo data.** These numbers and charts describe generated faces, not Adience. "
    "Point the data root at an Adience folder for the real analysis."
)
LABELS_ONLY_NOTE = ("> **Labels only.** This root has its fold files but neither `aligned/` nor `faces/`, so "
                    "images are **none**: the label charts below are complete; image sizes and sample faces need "
                    "a root with images.")
IMAGE_SPLIT_NOTE = ("> **Image-level folds.** This dataset lists no identities, so its folds split images by file "
                    "name: one person may be in two folds, and its test numbers are not subject-exclusive.")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+|!~])")


def escape_markdown(text: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def format_summary(summary: dict) -> str:
    """The summary dict as Markdown, with a banner on top for synthetic data."""
    per_class = ", ".join(f"{name}: {count}" for name, count in zip(AGE_CLASSES, summary["age_counts"], strict=True))
    genders = ", ".join(f"{name}: {count}" for name, count in summary["gender_counts"].items())
    identities = ([("identities", "none listed: each image counts as its own subject")]
                  if summary.get("split_level") == "image" else
                  [("albums (user_id)", summary["users"]), ("subjects (user_id + face_id)", summary["subjects"])])
    rows = [
        ("rows (faces)", summary["rows"]),
        *identities,
        ("rows per fold", " / ".join(map(str, summary["rows_per_fold"]))),
        ("rows with an age class per fold", " / ".join(map(str, summary["age_rows_per_fold"]))),
        ("age classes", per_class),
        ("genders", genders),
        ("rows without an age class", summary["no_age_class"]),
        ("rows without a gender", summary["no_gender_class"]),
        ("rows left out (image missing)", summary["missing_images"]),
        ("rows repeating another row's image", summary.get("duplicate_rows", 0)),
        ("images between age groups (kept, no age class)", summary.get("between_groups", 0)),
        *((f"images dropped: {reason}",
           f"{count} (e.g. {escape_markdown(', '.join(summary['dropped_examples'][reason]))})")
          for reason, count in summary.get("dropped", {}).items()),
    ]
    lines = [SYNTHETIC_BANNER, ""] if summary["synthetic"] else []
    lines += [
        f"**{escape_markdown(summary['dataset'])}** ({DATA_FORMATS.get(summary.get('format'), 'Adience layout')}) at "
        f"`{summary['root'].replace('`', '')}`: policy **{summary['policy']}**, images **{summary['images']}**",
        *([f"\n{IMAGE_SPLIT_NOTE}"] if summary.get("split_level") == "image" else []),
        "",
        "| what | value |",  # a blank header renders as an empty first row
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    return "\n".join(lines)


def _chart(name: str, figure):
    """A chart's output: the figure; for the UTKFace-only charts also whether it is shown (a dataset without
    exact ages or race, such as Adience, would leave a row of two empty panels)."""
    return gr.Plot(value=figure, visible=figure is not None) if name in UTKFACE_FIGURES else figure


def _cleared_outputs() -> list:
    """Every chart, the noise table and the faces emptied, so that nothing of the last root stays under a
    refusal; the UTKFace-only charts hidden."""
    return [*(_chart(name, None) for name in FIGURE_NAMES), pd.DataFrame(columns=NOISE_COLUMNS), None]


def _refusal(message: str) -> tuple:
    """The summary says why the root was refused or failed; the charts, table and faces are cleared."""
    return (f"**Could not load the data:** {escape_markdown(message)}", *_cleared_outputs())


def run_eda(root: str, policy: str, images: str, server_name: str | None = None, share: bool = False) -> tuple:
    """(summary Markdown, one plotly figure per FIGURE_NAMES, noise table, sample montage) for a data root.

    On a local run any folder is opened; on a public deployment (settings.public_deployment: `server_name`,
    `share`, a Space) only folders under the allow-list, and every message quotes the root as typed, never
    where it resolves to. A refused or failed root clears the charts; `images="auto"` on an Adience root
    without an image folder reads its labels only and says so. The charts a dataset cannot have (exact ages
    and race on Adience) are hidden.
    """
    note, resolved = "", None
    public = settings.public_deployment(server_name, share) is not None

    def told(text: str) -> str:
        return hide_resolved(text, resolved, root) if public and resolved is not None else text

    try:
        resolved = resolve_data_root(root, allowed=settings.data_dirs_for(server_name, share))
        if images_to_explore(resolved, images) != images:
            images, note = "none", LABELS_ONLY_NOTE
        data = read_dataset(resolved, policy=policy, images=images)
        result = build_eda(data, sample=SIZE_SAMPLE)
    except AudienceError as exc:
        return _refusal(told(str(exc)))
    except OSError as exc:  # e.g. a fold file without read permission
        return _refusal(told(f"{exc.filename or root}: cannot be read ({exc.strerror or exc})."))
    summary = told(format_summary(result.summary))
    plots = [_chart(name, result.figures.get(name)) for name in FIGURE_NAMES]
    return (f"{note}\n\n{summary}" if note else summary, *plots, result.noise, result.grid)


def build_eda_tab(default_root: str, demo: gr.Blocks | None = None) -> None:
    """Lay out the EDA tab inside the current gr.Tab; with `demo`, the tab also fills itself at page load."""
    gr.Markdown("Explore an Adience root or a UTKFace folder (the format is detected): label counts per class "
                "and fold, label noise, images per subject, exact ages and race (UTKFace), image sizes and sample "
                "faces.")
    with gr.Row():
        root = gr.Textbox(value=default_root, label="Data root", scale=3, elem_id="eda-root",
                          info="An Adience root (fold_0_data.txt ... fold_4_data.txt and aligned/ or faces/) "
                               "or a UTKFace folder (*.jpg.chip.jpg).")
        policy = gr.Radio(list(POLICIES), value="bins", label="Age label policy",
                          info="bins: every age inside one class; strict: the 8 canonical strings only.")
        images = gr.Radio(list(IMAGE_MODES), value="auto", label="Image folder",
                          info="none: labels only, no image is read.")
    load = gr.Button("Load", variant="primary")
    summary = gr.Markdown(elem_id="eda-summary")
    plots = []
    for first in range(0, len(FIGURE_NAMES), 2):
        with gr.Row():
            plots += [gr.Plot(label=FIGURE_LABELS[name], visible=name not in UTKFACE_FIGURES)
                      for name in FIGURE_NAMES[first:first + 2]]
    noise = gr.Dataframe(value=pd.DataFrame(columns=NOISE_COLUMNS), interactive=False,
                         label="Label noise: each raw string, its rows and the class it gets under each policy")
    grid = gr.Image(label="Sample faces per age class", type="pil", format="png", interactive=False)
    inputs, outputs = [root, policy, images], [summary, *plots, noise, grid]

    def eda(root: str, policy: str, images: str) -> tuple:
        server_name = getattr(demo, "server_name", None) if demo is not None else None
        return run_eda(root, policy, images, server_name, bool(getattr(demo, "share", False)))

    load.click(eda, inputs, outputs, api_name="eda")
    if demo is not None:
        demo.load(eda, inputs, outputs, api_visibility="private")
