"""Exploratory analysis of a face table: AdienceData in, a dict, DataFrames or plotly figures out.

Pure functions of the table (no I/O). The charts that read images live in audience.eda.images, the whole
bundle, HTML report and label file in audience.eda.report. Every figure title ends in "(synthetic demo
data)" for the demo set, so its charts are never mistaken for Adience.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from audience.data.adience import N_FOLDS, AdienceData
from audience.figures import empty_figure
from audience.labels import (
    AGE_CLASSES,
    AGE_RANGES,
    GENDER_CLASSES,
    NO_CLASS,
    age_class_of,
    age_label,
    gender_label,
    parse_age,
    parse_gender,
)

SYNTHETIC_MARK = "(synthetic demo data)"
EMPTY_RAW = "(empty)"  # how an empty label cell is shown in the noise table


def title_for(data: AdienceData, text: str) -> str:
    """A figure title, marked when the data is the synthetic demo set."""
    return f"{text} {SYNTHETIC_MARK}" if data.synthetic else text


def set_title(figure: go.Figure, data: AdienceData, text: str, detail: str = "") -> go.Figure:
    """A short title (marked for synthetic data) with the detail on a smaller second line.

    Half-width charts are about 550 px wide: a one-line title with its detail was cut off there.
    """
    figure.update_layout(title={"text": title_for(data, text), "subtitle": {"text": detail}})
    return figure


def headroom(figure: go.Figure, top: float) -> go.Figure:
    """Room above the tallest bar for its outside label, which plotly would otherwise clip."""
    figure.update_traces(cliponaxis=False, selector={"type": "bar"})
    figure.update_yaxes(range=[0, max(top, 1) * 1.15])
    return figure


def _class_counts(classes: pd.Series, n_classes: int) -> list[int]:
    values = classes.to_numpy(dtype=np.int64)
    return [int(c) for c in np.bincount(values[values != NO_CLASS], minlength=n_classes)]


def _rows_per_fold(faces: pd.DataFrame) -> list[int]:
    counts = faces["fold"].value_counts()
    return [int(counts.get(fold, 0)) for fold in range(N_FOLDS)]


def summarize(data: AdienceData) -> dict:
    """The headline numbers of a dataset as a JSON-ready dict (what `python -m audience.cli.eda --json` prints).

    Class counts are in class order (labels.AGE_CLASSES, GENDER_CLASSES); `no_*_class` count the rows
    without that label under the policy; `missing_images` the rows left out because their image is absent.
    """
    faces = data.faces
    gender_counts = _class_counts(faces["gender_class"], len(GENDER_CLASSES))
    return {
        "dataset": data.name,
        "synthetic": bool(data.synthetic),
        "root": str(data.root),
        "policy": data.policy,
        "images": data.images,
        "rows": int(len(faces)),
        "users": int(faces["user_id"].nunique()),
        "subjects": int(faces["subject"].nunique()),
        "rows_per_fold": _rows_per_fold(faces),
        "age_rows_per_fold": _rows_per_fold(faces[faces["age_class"] != NO_CLASS]),
        "age_counts": _class_counts(faces["age_class"], len(AGE_CLASSES)),
        "gender_counts": dict(zip(GENDER_CLASSES, gender_counts, strict=True)),
        "missing_images": int(data.missing_images),
        "no_age_class": int((faces["age_class"] == NO_CLASS).sum()),
        "no_gender_class": int((faces["gender_class"] == NO_CLASS).sum()),
        # rows that repeat an earlier row's image (the real fold files list 114 images more than once)
        "duplicate_rows": int(faces.duplicated(["user_id", "face_id", "original_image"]).sum()),
        "format": data.format,
        "split_level": data.split_level,
        # images left out because their name or labels could not be read (UTKFace), with a few names each
        "dropped": {reason: len(names) for reason, names in data.dropped.items()},
        "dropped_examples": {reason: names[:3] for reason, names in data.dropped.items()},
        # exact ages in no age group of the policy (UTKFace: 7, 14, 21, 33, 44, 54, over 100): kept, no age class
        "between_groups": int(data.between_groups),
        **({"race_counts": {str(k): int(v) for k, v in faces["race"].fillna("unknown").value_counts().items()}}
           if "race" in faces else {}),
    }


def _distribution(classes: pd.Series, names: tuple[str, ...]) -> pd.DataFrame:
    counts = _class_counts(classes, len(names))
    total = sum(counts)
    shares = [count / total if total else 0.0 for count in counts]
    return pd.DataFrame({"class": list(names), "rows": counts, "share": shares})


def age_table(data: AdienceData) -> pd.DataFrame:
    """Rows per age class (columns class, rows, share of the rows that have an age class)."""
    return _distribution(data.faces["age_class"], AGE_CLASSES)


def gender_classes_of(data: AdienceData) -> tuple[str, ...]:
    """The gender classes the data's format can label: UTKFace names only f and m (an empty "u" bar would read
    as "no face of unknown gender" where the format has no such label), Adience all three."""
    return tuple(name for name in GENDER_CLASSES if name != "u") if data.format == "utkface" else GENDER_CLASSES


def gender_table(data: AdienceData) -> pd.DataFrame:
    """Rows per gender class the format labels (columns class, rows, share of the rows that have a gender class)."""
    table = _distribution(data.faces["gender_class"], GENDER_CLASSES)
    return table[table["class"].isin(gender_classes_of(data))].reset_index(drop=True)


def age_gender_table(data: AdienceData) -> pd.DataFrame:
    """Rows per age class (index) and gender (columns f, m, u, dropped), for rows with an age class."""
    aged = data.faces[data.faces["age_class"] != NO_CLASS]
    table = pd.crosstab(aged["age_class"].astype(int), aged["gender_class"].astype(int))
    table = table.reindex(index=range(len(AGE_CLASSES)), columns=[*range(len(GENDER_CLASSES)), NO_CLASS])
    table = table.fillna(0).astype(int)
    table.index = list(AGE_CLASSES)
    table.columns = [gender_label(c) for c in table.columns]
    return table[[column for column in table.columns if column in gender_classes_of(data) or column not in
                  GENDER_CLASSES]]


def fold_class_table(data: AdienceData) -> pd.DataFrame:
    """Rows per fold (index 0..4) and age class (columns), for rows with an age class."""
    aged = data.faces[data.faces["age_class"] != NO_CLASS]
    table = pd.crosstab(aged["fold"].astype(int), aged["age_class"].astype(int))
    table = table.reindex(index=range(N_FOLDS), columns=range(len(AGE_CLASSES))).fillna(0).astype(int)
    table.columns = list(AGE_CLASSES)
    table.index.name = "fold"
    return table


def subject_image_counts(data: AdienceData) -> pd.Series:
    """Images (rows) per subject, one entry per user_id/face_id."""
    return data.faces.groupby("subject").size().rename("images")


def label_noise_table(data: AdienceData) -> pd.DataFrame:
    """Each raw age and gender string, its row count and the class it gets under each policy.

    Columns: field ("age" or "gender"), raw, rows, bins, strict (a class name or "dropped").
    Computed with labels.parse_age / parse_gender, so it always shows what the loader does.
    """
    records = []
    exact = data.format == "utkface"  # exact ages: the policy's ranges decide (labels.age_class_of)
    for field, column in (("age", "age_raw"), ("gender", "gender_raw")):
        counts = data.faces[column].fillna("").value_counts(sort=False)
        for raw, rows in counts.items():
            if field == "age" and exact:
                bins, strict = age_label(age_class_of(int(raw), "bins")), age_label(age_class_of(int(raw), "strict"))
            elif field == "age":
                bins, strict = age_label(parse_age(raw, "bins")), age_label(parse_age(raw, "strict"))
            else:
                bins = strict = gender_label(parse_gender(raw))
            records.append((field, raw if raw != "" else EMPTY_RAW, int(rows), bins, strict))
    table = pd.DataFrame(records, columns=["field", "raw", "rows", "bins", "strict"])
    return table.sort_values(["field", "rows", "raw"], ascending=[True, False, True], ignore_index=True)


def _share_bars(data: AdienceData, table: pd.DataFrame, axis: str, title: str, detail: str) -> go.Figure:
    """Bars of rows per class, each labelled with its share (the age and gender distributions)."""
    figure = go.Figure(go.Bar(
        x=table["class"], y=table["rows"], text=[f"{s:.1%}" for s in table["share"]], textposition="outside",
    ))
    figure.update_layout(xaxis_title=axis, yaxis_title="rows")
    set_title(figure, data, title, detail)
    return headroom(figure, table["rows"].max())


def plot_age(data: AdienceData) -> go.Figure:
    dropped = int((data.faces["age_class"] == NO_CLASS).sum())
    return _share_bars(data, age_table(data), "age class", "Age classes",
                       f"{data.policy} policy; {dropped} rows without an age class")


def plot_gender(data: AdienceData) -> go.Figure:
    dropped = int((data.faces["gender_class"] == NO_CLASS).sum())
    return _share_bars(data, gender_table(data), "gender", "Gender", f"{dropped} rows without a gender")


def plot_age_gender(data: AdienceData) -> go.Figure:
    table = age_gender_table(data)
    figure = go.Figure([go.Bar(name=column, x=list(table.index), y=table[column]) for column in table.columns])
    figure.update_layout(
        barmode="group", xaxis_title="age class", yaxis_title="rows", legend_title="gender",
    )
    return set_title(figure, data, "Age class by gender", "rows with an age class; dropped = no gender")


def plot_fold_classes(data: AdienceData) -> go.Figure:
    """Share of each fold's labelled rows per age class: folds split by album, so their mixes differ."""
    counts = fold_class_table(data)
    totals = counts.sum(axis=1).replace(0, np.nan)
    shares = counts.div(totals, axis=0).fillna(0.0)
    figure = go.Figure([
        go.Bar(name=f"fold {fold} ({int(counts.loc[fold].sum())} rows)", x=list(shares.columns), y=shares.loc[fold],
               customdata=counts.loc[fold], hovertemplate="%{x}: %{y:.1%} (%{customdata} rows)<extra></extra>")
        for fold in shares.index
    ])
    figure.update_layout(
        barmode="group", xaxis_title="age class", yaxis_title="share of fold", yaxis_tickformat=".0%",
        legend_title="fold",
    )
    return set_title(figure, data, "Age classes per fold", "share of each fold's rows with an age class")


SUBJECT_BIN_EDGES = (1, 2, 3, 4, 5, 6, 8, 11, 16, 26, 51, 101, 201, 501)  # a bin is [edge, next edge)


def subject_count_bins(counts: pd.Series) -> pd.Series:
    """Subjects per bin of images per subject: one bin per count up to 5, then wider (6-7, 8-10, 11-15, ...
    201-500, 501+) so a long tail (Adience has subjects with hundreds of images) does not squash the chart.
    Indexed by the bin's label, empty bins beyond the largest count left out."""
    edges = [*SUBJECT_BIN_EDGES, max(SUBJECT_BIN_EDGES[-1], int(counts.max()) + 1) + 1]
    labels = [str(low) if high - low == 1 else (f"{low}+" if high == edges[-1] else f"{low}-{high - 1}")
              for low, high in zip(edges, edges[1:], strict=False)]
    binned = pd.cut(counts, bins=edges, right=False, labels=labels).value_counts().reindex(labels, fill_value=0)
    last = max(i for i, label in enumerate(labels) if binned[label] > 0) if binned.any() else 0
    return binned.iloc[: last + 1].rename("subjects")


def plot_images_per_subject(data: AdienceData) -> go.Figure:
    """Subjects per number of their images (widening bins, log y), with the share of images whose subject
    has more than one."""
    counts = subject_image_counts(data)
    title = title_for(data, "Images per subject")
    if counts.empty:
        return empty_figure(title, "No rows to count.")
    if data.split_level == "image":
        return empty_figure(title, f"{data.name} lists no identities: each image is its own subject, so its "
                                   "folds are image-level (one person may be in two).")
    shared = int(counts[counts > 1].sum())
    binned = subject_count_bins(counts)
    figure = go.Figure(go.Bar(x=list(binned.index), y=binned.tolist(), text=binned.tolist(), textposition="outside",
                              cliponaxis=False))
    figure.update_layout(xaxis_title="images of the same subject", yaxis_title="subjects (log scale)", bargap=0.05,
                         xaxis_type="category", yaxis_type="log", margin={"b": 120})
    set_title(figure, data, "Images per subject", "subject = user_id + face_id: one person in one album")
    # a caption under the axis title, in two lines: one line did not fit a half-width chart
    figure.add_annotation(
        text=(f"{shared} of {int(counts.sum())} images ({shared / counts.sum():.0%}) share their subject with "
              "another image:<br>a random image split puts the same person in train and test."),
        xref="paper", yref="paper", x=0, y=-0.28, showarrow=False, xanchor="left", yanchor="top", align="left",
    )
    return figure


def plot_age_years(data: AdienceData) -> go.Figure:
    """Histogram of exact ages (UTKFace) with the eight age groups shaded; gap ages fall between the bands."""
    title = title_for(data, "Exact ages")
    if "age_years" not in data.faces:
        return empty_figure(title, "Adience labels are age ranges, not exact ages (see the label noise table).")
    ages = data.faces["age_years"].astype(int)
    figure = go.Figure(go.Histogram(x=ages, xbins={"start": 0.5, "end": int(ages.max()) + 0.5, "size": 1},
                                    name="images", marker_color="#4c6ef5"))
    for index, (low, high) in enumerate(AGE_RANGES):
        figure.add_vrect(x0=low - 0.5, x1=high + 0.5, fillcolor="#fab005" if index % 2 else "#82c91e", opacity=0.15,
                         line_width=0)
        # each group's name centred over its band, every other one a line lower: the young groups' bands are
        # a few years wide, and side by side their names ran into each other ("0-2 3-6")
        figure.add_annotation(x=(low + high) / 2, y=1.0 if index % 2 == 0 else 0.93, xref="x", yref="paper",
                              text=AGE_CLASSES[index], showarrow=False, yanchor="bottom", font={"size": 10})
    figure.update_layout(xaxis_title="age in years", yaxis_title="images", bargap=0.05, showlegend=False)
    return set_title(figure, data, "Exact ages and the eight age groups",
                     f"{data.between_groups} images between groups (no age class under {data.policy})")


def plot_race(data: AdienceData) -> go.Figure:
    """Images per race label (UTKFace's third name field)."""
    title = title_for(data, "Race")
    if "race" not in data.faces:
        return empty_figure(title, "This dataset has no race labels.")
    counts = data.faces["race"].fillna("unknown").value_counts()
    table = pd.DataFrame({"class": counts.index, "rows": counts.to_numpy(), "share": counts.to_numpy() / counts.sum()})
    return _share_bars(data, table, "race", "Race", "as labelled in the file names; unknown: the field is missing")


def build_table_figures(data: AdienceData) -> dict[str, go.Figure]:
    """The charts computed from the table alone, by name."""
    return {
        "age": plot_age(data),
        "gender": plot_gender(data),
        "age_gender": plot_age_gender(data),
        "fold_classes": plot_fold_classes(data),
        "images_per_subject": plot_images_per_subject(data),
        # exact ages and race exist in UTKFace only; an Adience table has neither chart
        **({"age_years": plot_age_years(data)} if "age_years" in data.faces else {}),
        **({"race": plot_race(data)} if "race" in data.faces else {}),
    }
