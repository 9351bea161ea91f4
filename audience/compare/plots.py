"""Plotly figures of training runs for the Compare tab (the learning curves it shares with the Train tab
are audience.figures'): data in, figure out.

An empty input gives a figure that says why (figures.empty_figure), never a blank chart. Accuracies
are fractions in the run files and percent on the axes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from audience.compare import tables as compare
from audience.figures import BOTTOM_LEGEND, color_of, empty_figure, plot_epoch_curves
from audience.labels import AGE_CLASSES, GENDER_CLASSES
from audience.registry import GLANCE_KEYS, LEAKAGE_CHART_KEYS, column_of


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
                                    legendgroup=run_id, showlegend=col == 1, marker_color=color_of(index)),
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
        figure.add_trace(go.Bar(x=rows["class"], y=rows["recall"] * 100, name=run_id, marker_color=color_of(index),
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
                                marker_color=color_of(index)))
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
