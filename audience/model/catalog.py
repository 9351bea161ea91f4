"""Which checkpoints the app serves, and which one it serves when none is named (the default model).

Two folders are served: the shipped `checkpoints/` (tracked by git, never written by the app) and the
user's `models/` (settings.models_dir(): "Use this model" and `python -m audience.cli.export_onnx` write there, git
ignores it). The default model is a stored choice (`.default-model.json` in the models folder, written by
"Use this model" and "Make default"), never guessed from which file is newest; without a choice it is
the shipped real model, and a synthetic (demo) model is the default only when the user chose it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from audience.errors import AudienceError
from audience.files import write_json_atomic
from audience.model.checkpoint import METADATA_SUFFIX, read_checkpoint_metadata
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


def find_default_checkpoint() -> Path | None:
    """The model served when none is named (the Predict tab's first pick, the predict command's default).

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
        if not metadata.synthetic:
            real.append((not metadata.shipped, path))
    return min(real, key=lambda item: item[0])[1] if real else None  # min is stable: newest among equals
