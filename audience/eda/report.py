"""The whole EDA of a dataset in one bundle, its self-contained HTML report, and the label file.

The report embeds plotly.js once and the sample montage as a PNG, so it opens offline. Files are
written atomically (a temporary file in the same folder, then a rename): an interrupted run never
leaves a half-written report or label file in place of a good one.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from audience import files
from audience.data.adience import AdienceData
from audience.eda.images import build_sample_grid, image_size_table, plot_image_sizes
from audience.eda.tables import SYNTHETIC_MARK, build_table_figures, label_noise_table, summarize
from audience.errors import AudienceError
from audience.labels import NO_CLASS

UTKFACE_FIGURES: tuple[str, ...] = ("age_years", "race")  # exact ages and race: UTKFace has them, Adience not
FIGURE_NAMES: tuple[str, ...] = ("age", "gender", "age_gender", "fold_classes", "images_per_subject", "image_sizes",
                                 *UTKFACE_FIGURES)


@dataclass
class EdaResult:
    """Everything the EDA tab and the report show for one dataset."""

    summary: dict
    figures: dict[str, go.Figure]  # keyed and ordered by FIGURE_NAMES; only the charts the data has
    noise: pd.DataFrame
    sizes: pd.DataFrame
    grid: Image.Image


def build_eda(data: AdienceData, sample: int = 200, per_class: int = 4, seed: int = 0) -> EdaResult:
    """The EDA of a dataset: `sample` image headers read for the size chart, `per_class` faces per age class."""
    sizes = image_size_table(data, sample=sample, seed=seed)
    figures = {**build_table_figures(data), "image_sizes": plot_image_sizes(data, sizes)}
    return EdaResult(
        summary=summarize(data),
        figures={name: figures[name] for name in FIGURE_NAMES if name in figures},
        noise=label_noise_table(data),
        sizes=sizes,
        grid=build_sample_grid(data, per_class=per_class, seed=seed),
    )


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file and a rename; AudienceError if it cannot be written."""
    path = Path(path)
    try:
        files.write_text_atomic(path, text)
    except OSError as exc:
        raise AudienceError(f"{path}: cannot write the file ({exc.strerror or exc}).") from None
    return path


def _format_value(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} {count}" for key, count in value.items())
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def _png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
.banner { background: #fff3cd; border: 1px solid #e0b000; padding: 0.8em; font-weight: bold; }
"""


def render_report_html(result: EdaResult) -> str:
    """A self-contained HTML page: summary, every chart (plotly.js inlined once), the noise table, the montage."""
    summary = result.summary
    name = html.escape(str(summary["dataset"]))
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>EDA: {name}</title>",
        f"<style>{_STYLE}</style></head><body><h1>EDA: {name}</h1>",
    ]
    if summary["synthetic"]:
        parts.append(f"<p class='banner'>Synthetic demo data {html.escape(SYNTHETIC_MARK)}: these numbers describe "
                     "generated faces, not Adience. Point --data at an Adience root for the real analysis.</p>")
    rows = "".join(f"<tr><th>{html.escape(key)}</th><td>{html.escape(_format_value(value))}</td></tr>"
                   for key, value in summary.items())
    parts.append(f"<h2>Summary</h2><table>{rows}</table><h2>Charts</h2>")
    for index, (key, figure) in enumerate(result.figures.items()):
        parts.append(figure.to_html(full_html=False, include_plotlyjs=index == 0, div_id=f"eda-{key}"))
    parts.append("<h2>Label noise: each raw string and the class it gets</h2>")
    parts.append(result.noise.to_html(index=False, border=0))
    parts.append(f"<h2>Sample faces</h2><img alt='sample faces per age class' src='{_png_data_uri(result.grid)}'>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(result: EdaResult, path: str | Path) -> Path:
    """Write the HTML report of `result` to `path` (atomically) and return the path."""
    return write_text_atomic(path, render_report_html(result))


def _label_id(index: int) -> int | None:
    return None if index == NO_CLASS else int(index)


def build_label_records(data: AdienceData) -> dict[str, dict[str, int | None]]:
    """{relative image path: {"age_id", "gender_id"}} for every row with an image and at least one label.

    A missing label is None (JSON null). This is the seed's labels.json, with integer ids.
    """
    if data.images == "none":
        raise AudienceError("a label file lists image paths, but images 'none' reads no images; "
                            "choose aligned, faces or auto.")
    faces = data.faces
    usable = faces[faces["path"].notna() & ((faces["age_class"] != NO_CLASS) | (faces["gender_class"] != NO_CLASS))]
    records = {}
    for path, age, gender in zip(usable["path"], usable["age_class"], usable["gender_class"], strict=True):
        key = Path(path).relative_to(data.root).as_posix()
        labels = {"age_id": _label_id(age), "gender_id": _label_id(gender)}
        if records.setdefault(key, labels) != labels:  # a repeated row is fine, a contradicting one is not
            raise AudienceError(f"{key}: the fold files give this image two different labels "
                                f"({records[key]} and {labels}); fix the rows before writing a label file.")
    return records


def write_label_file(data: AdienceData, path: str | Path) -> int:
    """Write build_label_records(data) as one JSON object to `path` (atomically); returns how many entries."""
    records = build_label_records(data)
    write_text_atomic(path, json.dumps(records, indent=1, sort_keys=True) + "\n")
    return len(records)
