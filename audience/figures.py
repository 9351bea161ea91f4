"""The plotly basics that the EDA, Compare and Train charts share: a figure that says why it is empty, the
palette, and the per-epoch learning curves (the Train tab's live curves and Compare's runs overlaid).

A base module, so that no stage borrows charts from a stage beside it.
"""

from __future__ import annotations

import textwrap

import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

EMPTY_NOTE_WIDTH = 48  # characters per line of an empty chart's note: a half-width chart shows about 55


def empty_figure(title: str, message: str) -> go.Figure:
    """A figure with no data that says why, so an empty chart is never mistaken for a broken one.

    The note is wrapped into short lines: plotly does not wrap text, and one long line was cut off on both
    sides of a half-width chart."""
    figure = go.Figure()
    text = "<br>".join(textwrap.wrap(message, EMPTY_NOTE_WIDTH))
    figure.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False, font={"size": 14})
    figure.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False})
    return figure


PALETTE = plotly.colors.qualitative.Plotly  # not through plotly.express: its import is 0.15 s of the app's start
# (metrics.csv column, subplot, dash): loss on the left, validation accuracy on the right.
CURVES = (("train_loss", 1, "solid"), ("val_loss", 1, "dash"), ("val_age_exact", 2, "solid"),
          ("val_gender_acc", 2, "dot"))
# The line styles are explained once in the subtitle, so the legend holds one short entry per run:
# an entry per run and curve did not fit beside a half-width chart.
CURVE_KEY = "loss: train solid, val dashed · accuracy: age solid, gender dotted"
# Under the chart, where a long run id has the full width: at the right it squeezed the plot.
BOTTOM_LEGEND = {"orientation": "h", "x": 0, "xanchor": "left", "y": -0.2, "yanchor": "top", "font": {"size": 10}}


def color_of(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


MAX_EPOCH_TICKS = 8


def plot_epoch_curves(frames: dict[str, pd.DataFrame], title: str = "Learning curves") -> go.Figure:
    """Loss (train solid, val dashed) and validation accuracy (age solid, gender dotted) per epoch,
    one colour per entry of `frames` (label -> metrics.csv rows)."""
    frames = {label: frame for label, frame in frames.items() if frame is not None and len(frame)}
    if not frames:
        return empty_figure(title, "No completed epoch yet.")
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", "validation accuracy %"))
    for index, (label, frame) in enumerate(frames.items()):
        shown = False
        for column, col, dash in CURVES:
            if column not in frame or frame[column].isna().all():
                continue
            values = frame[column] * (100 if column.startswith("val_") and "loss" not in column else 1)
            figure.add_trace(go.Scatter(
                x=frame["epoch"], y=values, mode="lines+markers", name=label, legendgroup=label,
                showlegend=not shown, meta=column, line={"color": color_of(index), "dash": dash},
                hovertemplate="%{fullData.name} %{meta}, epoch %{x}: %{y:.3f}<extra></extra>",
            ), row=1, col=col)
            shown = True
    # One tick per epoch crammed 0-16 together in a half-width subplot: at most ~8 whole-epoch ticks.
    last = max(int(frame["epoch"].max()) for frame in frames.values())
    figure.update_xaxes(title_text="epoch", dtick=max(1, -(-last // MAX_EPOCH_TICKS)), tickformat="d")
    figure.update_layout(title={"text": title, "subtitle": {"text": CURVE_KEY}}, legend=BOTTOM_LEGEND,
                         margin={"t": 110})
    return figure


def plot_job_curves(points: list[dict]) -> go.Figure:
    """The Train tab's live curves: the job's per-epoch points (jobs.JobStatus.curves), one colour per fold."""
    frame = pd.DataFrame(points)
    if frame.empty or "fold" not in frame:
        return plot_epoch_curves({}, "Training curves")
    frames = {f"fold {fold}": rows.sort_values("epoch") for fold, rows in frame.groupby("fold", sort=True)}
    return plot_epoch_curves(frames, "Training curves (per epoch)")
