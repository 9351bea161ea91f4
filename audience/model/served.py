"""Checkpoints served from the Hugging Face Hub (publishing one is audience.publish.hub_push).

A Space (or any server) serves the checkpoints of settings.checkpoints_dir() and, when
AUDIENCE_MODEL_REPO names a Hub model repo, that repo's checkpoint: `<file>.json` (AUDIENCE_MODEL_FILE,
default model.json) and the `.safetensors` beside it, at AUDIENCE_MODEL_REVISION (default main).
They are downloaded once into the Hugging Face cache and loaded from there.

huggingface_hub retries an unreachable Hub for about 23-46 s; here HF_HUB_OFFLINE, or a TCP probe
that fails within PROBE_TIMEOUT_S, switches to the local cache at once, so an offline start is
fast and ends in a note (detection-only when nothing else is served), never a hang.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from huggingface_hub import errors as hub_errors

from audience import settings
from audience.errors import AudienceError, quoted
from audience.model.checkpoint import METADATA_SUFFIX, WEIGHTS_SUFFIX, load_checkpoint
from audience.model.hub_access import PROBE_TIMEOUT_S as PROBE_TIMEOUT_S  # re-exported: the docstring and tests name it
from audience.model.hub_access import hub_offline, hub_reachable

log = logging.getLogger(__name__)

ENV_REPO, ENV_FILE, ENV_REVISION = settings.MODEL_REPO_VAR, settings.MODEL_FILE_VAR, settings.MODEL_REVISION_VAR
DEFAULT_FILE = "model.json"
VALUE_PREFIX = "hub--"  # dropdown values of Hub checkpoints: a file name (no '/'), distinct from local ones
RETRY_AFTER_S = 300.0  # a failed download is retried at most this often (a network blip at start-up heals)


@dataclass(frozen=True)
class HubModel:
    """A checkpoint in a Hub model repo: `filename` is its .json inside the repo."""

    repo_id: str
    filename: str = DEFAULT_FILE
    revision: str | None = None

    @property
    def value(self) -> str:
        """The Predict dropdown's value for this checkpoint, e.g. hub--user--ages--model.json."""
        return VALUE_PREFIX + "--".join([*self.repo_id.split("/"), *PurePosixPath(self.filename).parts])

    @property
    def weights_filename(self) -> str:
        return str(PurePosixPath(self.filename).with_suffix(WEIGHTS_SUFFIX))


def configured_hub_model() -> HubModel | None:
    """The HubModel named by AUDIENCE_MODEL_REPO (+ _FILE, _REVISION), None when unset; AudienceError if malformed."""
    repo_id, filename, revision = settings.hub_model_settings()
    if not repo_id:
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise AudienceError(f"{ENV_REPO}={quoted(repo_id)} is not a Hub repo id such as user/model-name.") from None
    filename = filename or DEFAULT_FILE
    if not filename.endswith(METADATA_SUFFIX):
        filename = str(PurePosixPath(filename).with_suffix(METADATA_SUFFIX))
    if filename.startswith("/") or ".." in PurePosixPath(filename).parts:
        raise AudienceError(f"{ENV_FILE}={quoted(filename)} must be a file path inside the repo, such as model.json.")
    return HubModel(repo_id, filename, revision or None)


def _download_reason(error: Exception) -> str:
    if isinstance(error, hub_errors.RepositoryNotFoundError):
        return "the repo does not exist or is private (set HF_TOKEN for a private one)"
    if isinstance(error, hub_errors.RevisionNotFoundError):
        return "that revision does not exist"
    if isinstance(error, hub_errors.LocalEntryNotFoundError):
        return "it is not in the local Hugging Face cache and the Hub cannot be reached"
    if isinstance(error, hub_errors.EntryNotFoundError):
        return "the repo has no such file"
    return f"the download failed ({type(error).__name__})"


def download_checkpoint(model: HubModel, cache_dir: str | Path | None = None) -> Path:
    """The checkpoint's .json in the Hugging Face cache, downloaded with its weights when not there yet.

    Offline (HF_HUB_OFFLINE, or the Hub unreachable within PROBE_TIMEOUT_S) only the cache is used.
    The weights come from the same commit as the JSON. AudienceError names the repo and the reason.
    """
    from huggingface_hub import hf_hub_download

    where = f"{model.repo_id}/{model.filename}" + (f"@{model.revision}" if model.revision else "")
    offline = hub_offline()
    cache_only = offline or not hub_reachable()
    try:
        json_path = Path(hf_hub_download(model.repo_id, model.filename, revision=model.revision,
                                         cache_dir=cache_dir, local_files_only=cache_only))
        # snapshots/<commit>/<filename>: pin the weights to the commit the JSON came from
        commit = json_path.parents[len(PurePosixPath(model.filename).parts) - 1].name
        hf_hub_download(model.repo_id, model.weights_filename, revision=commit, cache_dir=cache_dir,
                        local_files_only=cache_only)
    except (hub_errors.HfHubHTTPError, hub_errors.LocalEntryNotFoundError, hub_errors.EntryNotFoundError,
            OSError, ValueError) as error:
        reason = _download_reason(error)
        if cache_only and isinstance(error, hub_errors.LocalEntryNotFoundError):
            reason = ("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache" if offline
                      else "the Hugging Face Hub cannot be reached and it is not in the local cache")
        raise AudienceError(f"Model {where} cannot be loaded: {reason}.") from None
    return json_path


def _check_served(json_path: Path, model: HubModel) -> None:
    """A downloaded checkpoint must load (valid JSON, weights matching their sha256 and the architecture)."""
    try:
        load_checkpoint(json_path)
    except AudienceError as error:
        raise AudienceError(f"Model {model.repo_id}/{model.filename} is not a usable checkpoint: {error}") from None


class _Served:
    """The one download per process: the path or the note, retried after RETRY_AFTER_S when it failed."""

    def __init__(self):
        self.lock = threading.Lock()
        self.model: HubModel | None = None
        self.path: Path | None = None
        self.note: str | None = None
        self.failed_at = 0.0

    def get(self, model: HubModel) -> tuple[Path | None, str | None]:
        with self.lock:
            fresh = model != self.model or (self.path is None and time.monotonic() - self.failed_at > RETRY_AFTER_S)
            if fresh:
                self.model, self.path, self.note = model, None, None
                try:
                    self.path = download_checkpoint(model)
                    _check_served(self.path, model)
                except AudienceError as error:
                    self.path, self.note, self.failed_at = None, str(error), time.monotonic()
                    log.warning("%s", error)
            return self.path, self.note


_served = _Served()


def served_hub_checkpoint() -> tuple[Path | None, str | None]:
    """(the configured Hub checkpoint's .json in the cache, None) or (None, a sentence why not) or (None, None)."""
    try:
        model = configured_hub_model()
    except AudienceError as error:
        return None, str(error)
    return (None, None) if model is None else _served.get(model)


def resolve_served_checkpoints() -> tuple[list[Path], str | None]:
    """The checkpoints the app serves: the Hub one first (when configured and available), then the
    local folder's newest first; and a note when the configured Hub model is unavailable."""
    from audience.model.catalog import list_checkpoints

    hub_path, note = served_hub_checkpoint()
    return ([hub_path] if hub_path is not None else []) + list_checkpoints(), note


def served_name(path: Path) -> str:
    """The dropdown value of a served checkpoint: HubModel.value for the Hub one, else the file name."""
    hub_path, _ = served_hub_checkpoint()
    model = configured_hub_model() if hub_path is not None else None
    return model.value if model is not None and Path(path) == hub_path else Path(path).name


def served_label(path: Path) -> str:
    """What the model picker shows for a served checkpoint: 'USER/NAME (Hub)' or the local file's stem."""
    value = served_name(path)
    if value == Path(path).name:
        return Path(path).stem
    model = configured_hub_model()
    return f"{model.repo_id} (Hub{', ' + model.filename if model.filename != DEFAULT_FILE else ''})"


def find_hub_checkpoint(name: str | None) -> Path | None:
    """The Hub checkpoint a dropdown value (or API argument) names; None when it names none."""
    if not name or not str(name).startswith(VALUE_PREFIX):
        return None
    model = configured_hub_model()
    if model is None or name != model.value:
        raise AudienceError(f"Model {name} is not served here: press the refresh button and pick another.")
    path, note = _served.get(model)
    if path is None:
        raise AudienceError(note or f"Model {model.repo_id} is not available.")
    return path
