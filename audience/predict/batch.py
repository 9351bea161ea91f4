"""Prediction over files and folders (the engine of scripts/predict.py): one record per image."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from audience.data.images import read_image
from audience.errors import AudienceError, shorten
from audience.files import write_json_atomic
from audience.model.checkpoint import METADATA_SUFFIX, read_checkpoint_metadata
from audience.predict.drawing import draw_predictions
from audience.predict.predictor import Predictor, capped_note
from audience.settings import checkpoints_dir, models_dir

log = logging.getLogger(__name__)


DEFAULT_CHOICE_FILE = ".default-model.json"  # in settings.models_dir(): the model served when none is named
DEFAULT_CHOICE_MAX_BYTES = 4096


def served_folders() -> list[Path]:
    """The folders whose checkpoints are served: the shipped checkpoints/ first, then the user's models/."""
    folders = [checkpoints_dir(), models_dir()]
    return [folder for number, folder in enumerate(folders) if folder not in folders[:number]]


def _checkpoints_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [path for path in folder.glob(f"*{METADATA_SUFFIX}") if path.is_file() and not path.name.startswith(".")]


def list_checkpoints(folder: str | Path | None = None) -> list[Path]:
    """The checkpoint .json files of `folder` (default: every served folder, served_folders()), newest first.

    A file name is served once: when both folders hold it, the shipped folder's copy is the one listed
    (promote_checkpoint never makes such a pair)."""
    found: dict[str, Path] = {}
    for where in served_folders() if folder is None else [Path(folder)]:
        for path in _checkpoints_in(where):
            found.setdefault(path.name, path)
    return sorted(found.values(), key=lambda path: (path.stat().st_mtime_ns, path.name), reverse=True)


def find_served_checkpoint(name: str) -> Path | None:
    """The served checkpoint whose file name is `name` (NAME.json), None when no served folder has it."""
    return next((path for path in list_checkpoints() if path.name == name), None)


def default_choice_path() -> Path:
    return models_dir() / DEFAULT_CHOICE_FILE


def read_default_choice() -> str | None:
    """The model value the user last chose as the default ('Use this model', 'Make default'), or None.

    The choice is a small JSON file ({"model": "NAME.json"}); an unreadable, oversized or malformed one
    counts as no choice (and is logged), never as an error."""
    path = default_choice_path()
    try:
        with open(path, "rb") as file:
            data = file.read(DEFAULT_CHOICE_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("the default model choice %s cannot be read (%s)", path, error.strerror or error)
        return None
    try:
        if len(data) > DEFAULT_CHOICE_MAX_BYTES:
            raise ValueError("too large")
        value = json.loads(data.decode("utf-8")).get("model")
        if not isinstance(value, str) or not value or Path(value).name != value:
            raise ValueError("no model file name")
    except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
        log.warning("the default model choice %s is not a JSON object naming a model; it is ignored", path)
        return None
    return value


def save_default_choice(value: str) -> Path:
    """Store `value` (a served checkpoint's file name, or a Hub model's value) as the default model."""
    try:
        return write_json_atomic(default_choice_path(), {"model": str(value)})
    except OSError as error:
        reason = error.strerror or error
        raise AudienceError(f"Cannot store the default model in the models folder ({reason}).") from None


def is_synthetic(metadata: dict) -> bool:
    return bool((metadata.get("dataset") or {}).get("synthetic"))


def find_default_checkpoint() -> Path | None:
    """The model served when none is named (the Predict tab's first pick, scripts/predict.py's default).

    The user's stored choice when it still names a readable served checkpoint; else the shipped real
    model: a checkpoint of the shipped folder trained on real data, the one marked `shipped` first,
    else its newest; None (detection only) when there is none. A synthetic (demo) model is the default
    only when the user chose it. Nothing is guessed from which file is newest across folders.
    """
    choice = read_default_choice()
    chosen = find_served_checkpoint(choice) if choice else None
    if chosen is not None:
        try:
            read_checkpoint_metadata(chosen)
            return chosen
        except AudienceError as error:
            log.warning("the chosen default model %s cannot be read: %s", choice, error)
    real = []
    for path in list_checkpoints(checkpoints_dir()):
        try:
            metadata = read_checkpoint_metadata(path)
        except AudienceError:
            continue  # a stray .json (README data, a broken save) is not a checkpoint
        if not is_synthetic(metadata):
            real.append((not metadata.get("shipped"), path))
    return min(real, key=lambda item: item[0])[1] if real else None  # min is stable: newest among equals


def _annotated_path(out_dir: Path, image_path: Path, used: set[Path]) -> Path:
    """out_dir/<stem>.jpg, with a number added when two inputs share a stem (no output is overwritten)."""
    target = out_dir / f"{image_path.stem}.jpg"
    number = 1
    while target in used:
        number += 1
        target = out_dir / f"{image_path.stem}-{number}.jpg"
    used.add(target)
    return target


def _make_out_folder(out: Path) -> None:
    """Create the folder for annotated images, or AudienceError saying why it cannot be one (nothing is
    written over an existing file)."""
    if out.exists() and not out.is_dir():
        raise AudienceError(f"The output folder {shorten(out)} is an existing file, not a folder; give a folder "
                            "for the annotated images (the file is left as it is).")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = ("a part of the path is a file" if isinstance(error, FileExistsError | NotADirectoryError)
                  else error.strerror or error)
        raise AudienceError(f"Cannot create the output folder {shorten(out)} for the annotated images "
                            f"({reason}).") from None


def predict_files(
    images: Iterable[Path],
    predictor: Predictor,
    out_dir: str | Path | None = None,
    whole_image: bool = False,
    tta_flip: bool | None = None,
) -> Iterator[dict]:
    """For each image: {"image": path, "faces": [face dicts], "faces_found": n} or {"image": path, "error": sentence}.

    `faces_found` counts the faces before the predictor's max_faces cut; when it is larger than
    len(faces), the record also has a "note" saying so.

    A file that cannot be read yields its error record and the others go on. With `out_dir`, an
    annotated JPEG per readable image is written there (the record gains "annotated": path).
    """
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        _make_out_folder(out)
    used: set[Path] = set()
    for path in images:
        record: dict = {"image": str(path)}
        try:
            image = read_image(path)
            predictions, timings = predictor.predict_timed(image, whole_image=whole_image, tta_flip=tta_flip)
        except AudienceError as error:
            record["error"] = str(error)
            yield record
            continue
        record["faces"] = [prediction.to_dict() for prediction in predictions]
        record["faces_found"] = timings.faces_found
        note = capped_note(len(predictions), timings.faces_found, "raise --max-faces to see the rest")
        if note:
            record["note"] = note
        if out is not None:
            target = _annotated_path(out, Path(path), used)
            annotated = draw_predictions(image, predictions)
            try:
                Image.fromarray(np.asarray(annotated)).save(target, quality=92)
            except OSError as error:
                reason = error.strerror or error
                raise AudienceError(f"Cannot write the annotated image {target} ({reason}).") from error
            record["annotated"] = str(target)
        yield record
