"""What a video analysis shows: per-frame rows, one summary row per track, a timeline and the download files.

All three views are made from the same per-frame rows (`frame_rows`), so the table, the timeline and the
CSV/JSON download agree by construction: a track's frames, first and last time are counted from its rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from audience.labels import AGE_CLASSES, CLASSES_OF_HEAD
from audience.predict.video import VideoResult

ROW_COLUMNS = ["frame", "time_s", "track", "x", "y", "w", "h", "age", "p_age", "age_years", "gender", "p_gender",
               "uncertain", "frame_age", "frame_gender"]
SUMMARY_COLUMNS = ["track", "first seen (s)", "last seen (s)", "frames", "returns", "age", "p(age)",
                   "age in years", "gender", "p(gender)"]
# one colour per age group, young to old (plotly's Viridis samples), and grey for detection only
AGE_COLOURS = dict(zip(AGE_CLASSES, ("#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d",
                                     "#a0da39", "#fde725"), strict=True))
NO_CLASS_COLOUR = "#7f8c8d"


def _top(probs: list[float] | None) -> float | None:
    return None if probs is None else round(float(max(probs)), 4)


def frame_rows(result: VideoResult) -> list[dict]:
    """One row per face per analysed frame: where it is, its track, its smoothed labels (what the video shows)
    and its frame's own labels (frame_age, frame_gender: the answer before smoothing)."""
    rows = []
    for frame in result.frames:
        for face in frame.faces:
            shown, raw = face.shown, face.raw
            x, y, w, h = shown.box
            rows.append({
                "frame": frame.frame, "time_s": round(frame.time_s, 3), "track": face.track,
                "x": x, "y": y, "w": w, "h": h,
                "age": shown.age_label, "p_age": _top(shown.age_probs),
                "age_years": None if shown.age_years is None else round(float(shown.age_years), 1),
                "gender": shown.gender_label, "p_gender": _top(shown.gender_probs),
                "uncertain": bool(shown.uncertain),
                "frame_age": raw.age_label, "frame_gender": raw.gender_label,
            })
    return rows


def track_summary(result: VideoResult) -> list[dict]:
    """One dict per track (ids in order): first and last time seen, frames, returns, and per head the class
    whose probability averaged over the track's frames (their own answers) is highest, with that average."""
    per_track: dict[int, dict] = {}
    for frame in result.frames:
        for face in frame.faces:
            entry = per_track.setdefault(face.track, {"track": face.track, "first_s": frame.time_s, "frames": 0,
                                                      "probs": {"age": [], "gender": []}, "years": []})
            entry["last_s"] = frame.time_s
            entry["frames"] += 1
            for head in ("age", "gender"):
                if face.raw.probs_of(head) is not None:
                    entry["probs"][head].append(face.raw.probs_of(head))
            if face.raw.age_years is not None:
                entry["years"].append(face.raw.age_years)
    summary = []
    for track in sorted(per_track):
        entry = per_track[track]
        row = {"track": track, "first_s": round(entry["first_s"], 3), "last_s": round(entry["last_s"], 3),
               "frames": entry["frames"], "returns": int(result.returns.get(track, 0))}
        for head in ("age", "gender"):
            if entry["probs"][head]:
                mean = np.mean(np.asarray(entry["probs"][head], dtype=np.float64), axis=0)
                best = int(np.argmax(mean))
                row[head], row[f"p_{head}"] = CLASSES_OF_HEAD[head][best], round(float(mean[best]), 4)
            else:
                row[head], row[f"p_{head}"] = None, None
        row["age_years"] = round(float(np.mean(entry["years"])), 1) if entry["years"] else None
        summary.append(row)
    return summary


def summary_table(summary: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([[s["track"], s["first_s"], s["last_s"], s["frames"], s["returns"], s["age"] or "",
                          s["p_age"], s["age_years"], s["gender"] or "", s["p_gender"]] for s in summary],
                        columns=SUMMARY_COLUMNS)


def timeline_figure(rows: list[dict]):
    """Plotly: each track a row of markers over time (one per analysed frame it is in), coloured by the age group
    shown in that frame; the legend lists the age groups."""
    import plotly.graph_objects as go

    figure = go.Figure()
    groups = [*AGE_CLASSES, None]
    for group in groups:
        points = [row for row in rows if row["age"] == group]
        if not points:
            continue
        figure.add_trace(go.Scatter(
            x=[row["time_s"] for row in points], y=[f"#{row['track']}" for row in points], mode="markers",
            marker={"color": AGE_COLOURS.get(group, NO_CLASS_COLOUR), "symbol": "square", "size": 9},
            name=group or "face (no model)",
            hovertemplate="track %{y} at %{x:.2f} s<extra>" + (group or "face") + "</extra>"))
    tracks = sorted({row["track"] for row in rows})
    figure.update_yaxes(title_text="track", categoryorder="array", categoryarray=[f"#{t}" for t in tracks])
    figure.update_xaxes(title_text="time (s)")
    figure.update_layout(title="Tracks over time, coloured by age group", legend_title_text="age group",
                         height=max(240, 120 + 30 * len(tracks)), margin={"l": 50, "r": 10, "t": 50, "b": 40})
    return figure


def write_downloads(rows: list[dict], summary: list[dict], result: VideoResult, folder: Path,
                    stem: str = "video") -> tuple[Path, Path]:
    """(CSV of the per-frame rows, JSON of the video's facts, its tracks and its rows) written into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = folder / f"{stem}-frames.csv", folder / f"{stem}-frames.json"
    pd.DataFrame(rows, columns=ROW_COLUMNS).to_csv(csv_path, index=False)
    info = result.info
    document = {"video": info.name, "width": info.width, "height": info.height, "fps": round(info.fps, 3),
                "rate": result.rate, "note": result.note, "tracks": summary, "frames": rows}
    json_path.write_text(json.dumps(document, allow_nan=False, indent=1), encoding="utf-8")
    return csv_path, json_path


def describe_summary(summary: list[dict]) -> list[str]:
    """One line per track for the command line: 'track 1: 0.0-4.8 s, 25 frames, age 25-32 (0.61), gender m (0.93)'."""
    lines = []
    for s in summary:
        parts = [f"track {s['track']}: {s['first_s']:.1f}-{s['last_s']:.1f} s", f"{s['frames']} frames"]
        if s["returns"]:
            parts.append(f"came back {s['returns']} time{'s' if s['returns'] != 1 else ''}")
        if s["age"] is not None:
            years = f", about {s['age_years']:.0f}" if s["age_years"] is not None else ""
            parts.append(f"age {s['age']}{years} ({s['p_age']:.2f})")
        if s["gender"] is not None:
            parts.append(f"gender {s['gender']} ({s['p_gender']:.2f})")
        lines.append("  " + ", ".join(parts))
    return lines


def label_changes(rows: list[dict], column: str = "age") -> dict[int, int]:
    """Per track, how often `column` changes from one of its rows to the next (its label flicker)."""
    last: dict[int, str | None] = {}
    changes: dict[int, int] = {}
    for row in rows:
        track = row["track"]
        changes.setdefault(track, 0)
        if track in last and row[column] != last[track]:
            changes[track] += 1
        last[track] = row[column]
    return changes
