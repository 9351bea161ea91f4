"""Plotly figures of training runs (Compare tab, Train tab live curves): data in, figure out.

An empty input gives a figure that says why (eda.empty_figure), never a blank chart. Accuracies
are fractions in the run files and percent on the axes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from audience.compare import tables as compare
from audience.eda.tables import empty_figure
from audience.labels import AGE_CLASSES, GENDER_CLASSES
from audience.registry import GLANCE_KEYS, LEAKAGE_CHART_KEYS, column_of

PALETTE = px.colors.qualitative.Plotly
# (metrics.csv column, subplot, dash): loss on the left, validation accuracy on the right.
CURVES = (("train_loss", 1, "solid"), ("val_loss", 1, "dash"), ("val_age_exact", 2, "solid"),
          ("val_gender_acc", 2, "dot"))
# The line styles are explained once in the subtitle, so the legend holds one short entry per run:
# an entry per run and curve did not fit beside a half-width chart.
CURVE_KEY = "loss: train solid, val dashed · accuracy: age solid, gender dotted"
# Under the chart, where a long run id has the full width: at the right it squeezed the plot.
BOTTOM_LEGEND = {"orientation": "h", "x": 0, "xanchor": "left", "y": -0.2, "yanchor": "top", "font": {"size": 10}}


def _color(index: int) -> str:
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
                showlegend=not shown, meta=column, line={"color": _color(index), "dash": dash},
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


def plot_learning_curves(runs: list) -> go.Figure:
    """Learning curves of the chosen runs overlaid (every fold of each run)."""
    frames = {}
    for run in runs:
        for fold, frame in sorted(run.epochs.items()):
            label = run.run_id if len(run.epochs) == 1 else f"{run.run_id} f{fold}"
            frames[label] = frame
    return plot_epoch_curves(frames, "Learning curves of the chosen runs")


def plot_fold_accuracy(runs: list) -> go.Figure:
    """Test accuracy per fold of each chosen run: age exact and gender side by side."""
    frame = compare.fold_metric_frame(runs)
    title = "Test accuracy per fold"
    if frame.empty:
        return empty_figure(title, "No chosen run has a finished fold.")
    keys = GLANCE_KEYS
    figure = make_subplots(rows=1, cols=len(keys), subplot_titles=[column_of(k) for k in keys])
    for index, run_id in enumerate(dict.fromkeys(frame["run"])):
        for col, key in enumerate(keys, start=1):
            rows = frame[(frame["run"] == run_id) & (frame["metric"] == key)]
            figure.add_trace(go.Bar(x=[f"fold {f}" for f in rows["fold"]], y=rows["value"] * 100, name=run_id,
                                    legendgroup=run_id, showlegend=col == 1, marker_color=_color(index)),
                             row=1, col=col)
    figure.update_layout(title=title, barmode="group", legend=BOTTOM_LEGEND)
    figure.update_yaxes(range=[0, 100])
    return figure


def plot_confusion(run, head: str = "age", fold: int | None = None) -> go.Figure:
    """Row-normalised test confusion matrix (counts in the cells) of one run, one fold or all folds summed."""
    names = AGE_CLASSES if head == "age" else GENDER_CLASSES
    which = f"fold {fold}" if fold is not None else "all folds"
    title = f"{head.capitalize()} confusion ({which})"
    if run is None:
        return empty_figure(title, "Choose a run.")
    title = f"{head.capitalize()} confusion of {run.run_id} ({which})"
    matrix = compare.summed_confusion(run, head, fold)
    if matrix is None or matrix.shape != (len(names), len(names)):
        return empty_figure(title, f"This run has no {head} test confusion matrix yet.")
    support = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0) * 100
    figure = go.Figure(go.Heatmap(
        z=share, x=list(names), y=list(names), colorscale="Blues", zmin=0, zmax=100,
        text=matrix, texttemplate="%{text}",
        hovertemplate="true %{y}, predicted %{x}: %{z:.1f}% (%{text})<extra></extra>",
        colorbar={"title": "% of row"},
    ))
    figure.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed")
    return figure


def plot_per_class(runs: list, head: str = "age") -> go.Figure:
    """Test recall per class of each chosen run (the youngest and oldest groups are the usual question)."""
    frame = compare.per_class_frame(runs, head)
    title = f"{head.capitalize()} accuracy per class (test, all folds)"
    if head == "age":
        title += "<br><sup>the youngest (0-2) and oldest (55-100) groups are the ones people ask about</sup>"
    if frame.empty:
        return empty_figure(title, "No chosen run has test results yet.")
    figure = go.Figure()
    for index, run_id in enumerate(dict.fromkeys(frame["run"])):
        rows = frame[frame["run"] == run_id]
        figure.add_trace(go.Bar(x=rows["class"], y=rows["recall"] * 100, name=run_id, marker_color=_color(index),
                                customdata=rows["support"], hovertemplate="%{x}: %{y:.1f}% of %{customdata}"))
    figure.update_layout(title=title, barmode="group", yaxis={"title": "correct %", "range": [0, 100]})
    return figure


def plot_leakage(frame: pd.DataFrame) -> go.Figure:
    """Age exact and gender accuracy of random vs folds runs beside the published reference numbers."""
    title = "Leakage: the same arch under 'random' and 'folds', with published numbers"
    if frame.empty:
        return empty_figure(title, "No run yet.")
    labels = [_leakage_label(row) for row in frame.itertuples()]
    figure = go.Figure()
    # The bars are the leakage table's columns under the same names: Levi & Hassner report gender on f/m
    # faces only, the original notebooks one gender number (f/m/u here), so a row has the bar it reports.
    for index, key in enumerate(LEAKAGE_CHART_KEYS):
        values = frame[key] if key in frame else pd.Series([None] * len(frame), dtype=float)
        figure.add_trace(go.Bar(y=labels, x=values.astype(float) * 100, name=column_of(key), orientation="h",
                                marker_color=_color(index)))
    # the footnote is the subtitle: as an annotation under the axis it ran into the tick labels
    figure.update_layout(title={"text": title, "subtitle": {"text": "* published, not comparable: other data "
                                                                    "and protocol (the table above has the details)"}},
                         barmode="group", xaxis={"title": "accuracy %", "range": [0, 100]},
                         yaxis={"autorange": "reversed"}, height=max(350, 40 * len(frame) + 150))
    return figure


def _leakage_label(row) -> str:
    """A short y label: the full protocol sentence of a published row is in the leakage table."""
    source = str(row.source)
    if source.startswith("the original"):
        return f"{row.arch} · original notebooks: random image split *"
    if source.startswith("Levi"):
        return f"{row.arch} · Levi & Hassner: 5 folds *"
    synthetic = " · SYNTHETIC data" if "synthetic" in str(getattr(row, "dataset", "")) else ""
    return f"{row.arch} · {row.protocol}{synthetic}"
