"""What the Predict tab shows, without gradio: the model list, a predictor cache, table, chart, status.

The tab's handlers (audience/ui/predict.py) are thin adapters over these functions, which tests
call directly.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from audience.errors import AudienceError, quoted
from audience.inputs import check_path
from audience.labels import AGE_CLASSES, GENDER_CLASSES
from audience.model.checkpoint import METADATA_SUFFIX, read_checkpoint_metadata
from audience.predict.predictor import (
    DETECTION_ONLY_NOTE,
    NO_FACE_NOTE,
    FacePrediction,
    Predictor,
    Timings,
    capped_note,
)
from audience.publish import served as hub
from audience.settings import checkpoints_dir

log = logging.getLogger(__name__)
MORE_FACES = "`python -m audience.cli.predict --max-faces N` shows more"  # the app shows at most Predictor's max_faces

NO_MODEL = "none"  # dropdown value of detection-only mode (a checkpoint value always ends in .json)
NO_MODEL_LABEL = "No model: detect faces only"
TABLE_COLUMNS = ["face", "box (x, y, w, h)", "detector score", "age", "p(age)", "gender", "p(gender)", "uncertain"]
CACHE_SIZE = 2  # predictors kept loaded; a ResNet-50 is ~100 MB, and the UI rarely switches between more

_cache: OrderedDict[tuple, Predictor] = OrderedDict()
_cache_lock = threading.Lock()


def describe_checkpoint(metadata: dict) -> str:
    """'mobilenetv3_large_100, age+gender, Adience (real data)' - what the dropdown shows beside a name."""
    dataset = metadata.get("dataset") or {}
    name = dataset.get("name") or "unknown data"
    kind = "synthetic data" if dataset.get("synthetic") else "real data" if dataset.get("synthetic") is False else "?"
    return f"{metadata['arch']}, {metadata['task']}, {name} ({kind})"


def model_choices() -> list[tuple[str, str]]:
    """(label, value) of every served checkpoint (hub.resolve_served_checkpoints: the Hub model, then the
    checkpoints folder's newest first), then detection-only."""
    choices = []
    for path in hub.resolve_served_checkpoints()[0]:
        try:
            metadata = read_checkpoint_metadata(path)
        except AudienceError as error:
            log.warning("skipping %s: %s", path, error)
            continue
        choices.append((f"{hub.served_label(path)} - {describe_checkpoint(metadata)}", hub.served_name(path)))
    return [*choices, (NO_MODEL_LABEL, NO_MODEL)]


def default_model() -> str:
    """The newest checkpoint's value, or NO_MODEL."""
    return model_choices()[0][1]


def resolve_checkpoint(name: str | None) -> Path | None:
    """The checkpoint file a dropdown value (or API argument) names, inside checkpoints_dir() only.

    No name (an API call that leaves it out) means the default model, the one the tab opens with;
    NO_MODEL asks for detection only.
    """
    if name is None or not str(name).strip():
        name = default_model()
    if str(name).strip() == NO_MODEL:
        return None
    name = check_path(name, "Model name").strip()
    hub_path = hub.find_hub_checkpoint(name)  # None unless `name` is the configured Hub model's value
    if hub_path is not None:
        return hub_path
    if not name.endswith(METADATA_SUFFIX):
        name += METADATA_SUFFIX
    folder = checkpoints_dir()
    if Path(name).name != name:  # no paths: the UI serves only the checkpoints folder
        raise AudienceError(f"Model name {quoted(name)} must be a file name in {folder}, not a path.")
    path = folder / name
    if not path.is_file():
        raise AudienceError(f"Model {name} is not in {folder}: press the refresh button and pick another.")
    return path


def get_predictor(checkpoint: Path | None) -> Predictor:
    """A loaded Predictor for `checkpoint` (None: detection-only), kept in an LRU of CACHE_SIZE.

    Keyed by path and modification time, so a checkpoint overwritten by a new training run is
    reloaded. Evicted predictors are not closed: a request may still be using one, and their
    detector is released when the last reference goes.
    """
    key = (None,) if checkpoint is None else (str(checkpoint.resolve()), checkpoint.stat().st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        predictor = Predictor(checkpoint)  # under the lock: two requests never load the same model twice
        _cache[key] = predictor
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return predictor


def clear_predictor_cache() -> None:
    with _cache_lock:
        _cache.clear()


def model_banner(name: str | None) -> str:
    """Markdown shown above the outputs: a warning for synthetic or missing models, else the model's description."""
    hub_note = hub.served_hub_checkpoint()[1]
    note = f"\n\n{hub_note}" if hub_note else ""
    try:
        path = resolve_checkpoint(name)
        if path is None:
            return f"**Detection only.** {DETECTION_ONLY_NOTE}{note}"
        metadata = read_checkpoint_metadata(path)
    except AudienceError as error:
        return f"**Error:** {error}{note}"
    if (metadata.get("dataset") or {}).get("synthetic"):
        return f"**Warning: trained on synthetic demo data: predictions on real photos are meaningless.**{note}"
    return f"Model: {hub.served_label(path)} ({describe_checkpoint(metadata)}).{note}"


def faces_table(predictions: list[FacePrediction]) -> pd.DataFrame:
    rows = []
    for number, p in enumerate(predictions, 1):
        rows.append([
            number,
            ", ".join(str(v) for v in p.box),
            None if p.score is None else round(p.score, 3),
            p.age_label or "",
            None if p.age_probs is None else round(max(p.age_probs), 3),
            p.gender_label or "",
            None if p.gender_probs is None else round(max(p.gender_probs), 3),
            "yes" if p.uncertain else "",
        ])
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def probability_chart(face: dict | None, number: int = 1) -> go.Figure | None:
    """Bar chart of one face's 8 age and 3 gender probabilities (a face dict of FacePrediction.to_dict())."""
    if not face or (face.get("age") is None and face.get("gender") is None):
        return None
    figure = make_subplots(rows=1, cols=2, column_widths=[0.72, 0.28], subplot_titles=("Age group", "Gender"))
    for column, head, classes in ((1, "age", AGE_CLASSES), (2, "gender", GENDER_CLASSES)):
        if face.get(head) is None:
            continue
        probs = face[head]["probs"]
        colours = ["#2ecc40" if c == face[head]["label"] else "#7f8c8d" for c in classes]
        figure.add_trace(
            go.Bar(x=list(classes), y=probs, marker_color=colours, text=[f"{p:.2f}" for p in probs],
                   textposition="outside", name=head, showlegend=False),
            row=1, col=column,
        )
    figure.update_yaxes(range=[0, 1.1], title_text="probability", row=1, col=1)
    figure.update_yaxes(range=[0, 1.1], row=1, col=2)
    figure.update_layout(title=f"Face {number}", height=320, margin={"l": 40, "r": 10, "t": 60, "b": 30})
    return figure


def status_text(predictions: list[FacePrediction], timings: Timings, predictor: Predictor, whole_image: bool) -> str:
    if not predictions:
        lines = [f"{NO_FACE_NOTE.split(';')[0]}. Tick **the image is already a face crop** to classify it whole."]
    else:
        count = len(predictions)
        what = "the whole image as one face" if whole_image else f"{count} face{'s' if count != 1 else ''} found"
        lines = [
            f"{what[0].upper()}{what[1:]} in {timings.total_ms:.0f} ms (decode {timings.decode_ms:.0f}, "
            f"detect {timings.detect_ms:.0f}, classify {timings.classify_ms:.0f})."
        ]
        capped = capped_note(count, timings.faces_found, MORE_FACES)
        if capped:
            lines.append(f"**{capped}**")
        uncertain = sum(p.uncertain for p in predictions)
        if uncertain and not predictor.detection_only:
            threshold = predictor.uncertain_below
            lines.append(f"{uncertain} uncertain (a top probability below {threshold:.2f}), drawn dashed.")
    if predictor.note:
        lines.append(f"**{predictor.note}**")
    return "\n\n".join(lines)
