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
from audience.model import served as hub
from audience.model.catalog import (
    find_default_checkpoint,
    find_served_checkpoint,
    read_default_choice,
)
from audience.model.checkpoint import METADATA_SUFFIX, read_checkpoint_metadata
from audience.model.metadata import CheckpointMetadata, DatasetInfo
from audience.predict.drawing import face_number
from audience.predict.predictor import (
    DETECTION_ONLY_NOTE,
    NO_FACE_NOTE,
    SHOWN_DECIMALS,
    FacePrediction,
    Predictor,
    Timings,
    capped_note,
    check_served_input,
)

log = logging.getLogger(__name__)
MORE_FACES = "`python -m audience.cli.predict --max-faces N` shows more"  # the app shows at most Predictor's max_faces

NO_MODEL = "none"  # dropdown value of detection-only mode (a checkpoint value always ends in .json)
NO_MODEL_LABEL = "No model: detect faces only"
SERVED_FOLDERS = "the checkpoints or models folder"  # named, not resolved: a message never shows a server path
TABLE_COLUMNS = ["face", "box (x, y, w, h)", "detector score", "age", "p(age)", "gender", "p(gender)", "uncertain"]
CACHE_SIZE = 2  # predictors kept loaded; a ResNet-50 is ~100 MB, and the UI rarely switches between more

_cache: OrderedDict[tuple, Predictor] = OrderedDict()
_cache_lock = threading.Lock()


def describe_checkpoint(metadata: CheckpointMetadata) -> str:
    """'mobilenetv3_large_100, age+gender, Adience (real data)' - what the dropdown shows beside a name."""
    dataset = metadata.dataset or DatasetInfo()
    name = dataset.name or "unknown data"
    kind = "synthetic data" if dataset.synthetic else "real data" if dataset.synthetic is False else "?"
    return f"{metadata.arch}, {metadata.task}, {name} ({kind})"


def model_choices() -> list[tuple[str, str]]:
    """(label, value) of every served checkpoint: the default model first (its label says so), then the Hub
    model and both served folders' checkpoints newest first (hub.resolve_served_checkpoints), then
    detection-only."""
    default = default_model()
    choices = []
    for path in hub.resolve_served_checkpoints()[0]:
        try:
            metadata = read_checkpoint_metadata(path)
        except AudienceError as error:
            log.warning("skipping %s: %s", path, error)
            continue
        value = hub.served_name(path)
        label = f"{hub.served_label(path)} - {describe_checkpoint(metadata)}"
        choices.append((f"{label} (default)" if value == default else label, value))
    choices.sort(key=lambda choice: choice[1] != default)  # stable: the rest keep their order
    return [*choices, (NO_MODEL_LABEL, NO_MODEL)]


def default_model() -> str:
    """The value of the model served when none is named: the user's stored choice ('Use this model', 'Make
    default'), else the configured Hub model, else the shipped real model (find_default_checkpoint), else
    NO_MODEL. A synthetic model is the default only when the user chose it."""
    hub_path, _ = hub.served_hub_checkpoint()
    hub_value = hub.served_name(hub_path) if hub_path is not None else None
    choice = read_default_choice()
    if choice is not None and choice == hub_value:
        return choice
    path = find_default_checkpoint()
    chosen = path is not None and choice is not None and path.name == choice
    if hub_value is not None and not chosen:
        return hub_value
    return path.name if path is not None else NO_MODEL


def is_chosen_default(name: str | None) -> bool:
    return name is not None and name == read_default_choice()


def resolve_checkpoint(name: str | None) -> Path | None:
    """The checkpoint file a dropdown value (or API argument) names, inside the served folders only
    (the shipped checkpoints/ and the user's models/, settings.models_dir()).

    No name (an API call that leaves it out) means the default model, the one the tab opens with;
    NO_MODEL asks for detection only.
    """
    if name is None or not str(name).strip():
        name = default_model()
    if str(name).strip() == NO_MODEL:
        return None
    name = check_path(name, "Model name").strip()
    try:
        hub_path = hub.find_hub_checkpoint(name)  # None unless `name` starts as a Hub model's value does
    except AudienceError:
        hub_path = _local_checkpoint(name)  # a local file may be named like a Hub value: it is served too
        if hub_path is None:
            raise
    if hub_path is not None:
        return hub_path
    path = _local_checkpoint(name)
    if path is None:
        if Path(name).name != name:  # no paths: the UI serves only the served folders' files
            raise AudienceError(f"Model name {quoted(name)} must be a file name in {SERVED_FOLDERS}, not a path.")
        raise AudienceError(f"Model {name} is not in {SERVED_FOLDERS}: press the refresh button and pick "
                            "another.")
    return path


def _local_checkpoint(name: str) -> Path | None:
    if not name.endswith(METADATA_SUFFIX):
        name += METADATA_SUFFIX
    return find_served_checkpoint(name) if Path(name).name == name else None


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
        if checkpoint is not None:
            check_served_input(predictor, checkpoint.stem)  # before it is cached: refused on every request
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
        name = name if name is not None and str(name).strip() else default_model()
        path = resolve_checkpoint(name)
        if path is None:
            return f"**Detection only.** {DETECTION_ONLY_NOTE}{note}"
        metadata = read_checkpoint_metadata(path)
    except AudienceError as error:
        return f"**Error:** {error}{note}"
    if metadata.synthetic:
        chosen = (" It is the default model because you chose it ('Use this model' or 'Make default'); make "
                  "another model the default to stop serving it." if is_chosen_default(name) else "")
        return (f"**Warning: trained on synthetic demo data: predictions on real photos are meaningless.**{chosen}"
                f"{note}")
    return f"Model: {hub.served_label(path)} ({describe_checkpoint(metadata)}).{note}"


def faces_table(predictions: list[FacePrediction]) -> pd.DataFrame:
    rows = []
    for number, p in enumerate(predictions, 1):
        rows.append([
            number,
            ", ".join(str(v) for v in p.box),
            None if p.score is None else round(p.score, 3),
            p.shown_label("age") or "",
            None if p.age_probs is None else round(max(p.age_probs), 3),
            p.gender_label or "",
            None if p.gender_probs is None else round(max(p.gender_probs), 3),
            "yes" if p.uncertain else "",
        ])
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def probability_chart(face: dict | None, number: int = 1, classes: dict | None = None) -> go.Figure | None:
    """Bar chart of one face's age and gender probabilities (a face dict of FacePrediction.to_dict()).

    `classes` ({head: class names}, the result's "classes"): the bars to draw, the classes the model learned
    from (predictor.classes_seen: no "u" bar for a model whose training data had no "u")."""
    if not face or (face.get("age") is None and face.get("gender") is None):
        return None
    figure = make_subplots(rows=1, cols=2, column_widths=[0.72, 0.28], subplot_titles=("Age group", "Gender"))
    for column, head, names in ((1, "age", AGE_CLASSES), (2, "gender", GENDER_CLASSES)):
        if face.get(head) is None:
            continue
        probs = face[head]["probs"]
        probs = probs if isinstance(probs, dict) else dict(zip(names, probs, strict=False))
        shown = [name for name in (classes or {}).get(head, names) if name in probs]
        colours = ["#2ecc40" if c == face[head]["label"] else "#7f8c8d" for c in shown]
        figure.add_trace(
            go.Bar(x=shown, y=[probs[c] for c in shown], marker_color=colours,
                   text=[f"{probs[c]:.2f}" for c in shown], textposition="outside", name=head, showlegend=False),
            row=1, col=column,
        )
    figure.update_yaxes(range=[0, 1.1], title_text="probability", row=1, col=1)
    figure.update_yaxes(range=[0, 1.1], row=1, col=2)
    figure.update_layout(title=f"Face {face_number(number)}", height=320, margin={"l": 40, "r": 10, "t": 60, "b": 30})
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
            lines.append(f"{uncertain} uncertain (a top probability below {threshold:.{SHOWN_DECIMALS}f}), "
                         "drawn dashed.")
    if predictor.note:
        lines.append(f"**{predictor.note}**")
    return "\n\n".join(lines)
