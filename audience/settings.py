"""Paths and switches read from the environment, in one place: no other module reads these variables.

AUDIENCE_DATA              an Adience root (or the demo root) the app opens first; unset: the demo set
AUDIENCE_DATA_DIRS         on a public deployment, extra folders (os.pathsep-separated) under which the UI may
                           open data roots (a local run opens any folder its user types)
AUDIENCE_HOME              where the app keeps its own files (demo data, image cache, ONNX copies of served
                           models); default ~/.cache/audience
AUDIENCE_RUNS              training runs folder; default ./runs
AUDIENCE_CHECKPOINTS       the shipped checkpoints folder (served, tracked by git); default ./checkpoints
AUDIENCE_MODELS            the user's own models ("Use this model", export_onnx.py), not tracked by git;
                           default ./models; also holds the stored choice of the default model
AUDIENCE_KEEP_FILES_S      seconds an upload and the images made from it are kept; default 600
AUDIENCE_UPLOAD_QUOTA_MB   bytes gradio's upload folder may hold, all visitors together; default 512
AUDIENCE_SHUTDOWN_WAIT_S   seconds a stopping server (SIGTERM, Ctrl-C) waits for its run to stop; default 8
AUDIENCE_CACHE_GB          the size the decoded-image caches may take together; default 8
AUDIENCE_ALLOW_TRAINING    1: allow training, promote, make-default and latency on a public deployment
                           (local runs always may)
AUDIENCE_MODEL_REPO        a Hugging Face Hub model repo to serve (with AUDIENCE_MODEL_FILE, default
AUDIENCE_MODEL_FILE          model.json, and AUDIENCE_MODEL_REVISION, default main)
AUDIENCE_MODEL_REVISION
AUDIENCE_DEBUG             the command lines also print an internal error's traceback (like --debug)
SPACE_ID                   set by Hugging Face Spaces: the app runs as a public Space
GRADIO_SERVER_NAME         the address app.py serves on (default 127.0.0.1; not loopback: a public deployment)
GRADIO_SERVER_PORT         the port app.py serves on (default 7860)

(HF_HUB_OFFLINE is huggingface_hub's own switch; audience.model.hub_access reads it with huggingface_hub.)
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _path_from_env(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser().resolve() if value else default


def home_dir() -> Path:
    """Folder for files the app makes itself (demo dataset, image cache)."""
    return _path_from_env("AUDIENCE_HOME", Path.home() / ".cache" / "audience")


def demo_root() -> Path:
    """Where the built-in synthetic demo dataset lives (made on first use)."""
    return home_dir() / "demo-data"


def cache_dir() -> Path:
    """Where decoded-image caches are kept."""
    return home_dir() / "image-cache"


DEFAULT_KEEP_FILES_S = 600  # uploads and the images made from them: 10 minutes, then deleted


def keep_files_seconds() -> int:
    """How long gradio keeps an uploaded photo and its annotated copy (AUDIENCE_KEEP_FILES_S, default 600)."""
    text = os.environ.get("AUDIENCE_KEEP_FILES_S", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else DEFAULT_KEEP_FILES_S


def _float_setting(name: str, default: float) -> float:
    """The number an environment variable holds, or `default` when it is unset or not a number."""
    text = os.environ.get(name, "").strip()
    try:
        return float(text) if text else default
    except ValueError:
        return default


DEFAULT_UPLOAD_QUOTA_MB = 512  # gradio's upload folder, all visitors together (a file is at most 20 MB)


def upload_quota_bytes() -> int:
    """What gradio's upload folder may hold, all clients together (AUDIENCE_UPLOAD_QUOTA_MB, default 512);
    an upload that would pass it is answered 413."""
    megabytes = _float_setting("AUDIENCE_UPLOAD_QUOTA_MB", DEFAULT_UPLOAD_QUOTA_MB)
    if not megabytes > 0 or megabytes == float("inf"):
        megabytes = DEFAULT_UPLOAD_QUOTA_MB
    return int(megabytes * 1024 * 1024)


DEFAULT_SHUTDOWN_WAIT_S = 8.0  # a container gets about 10 s between SIGTERM and SIGKILL (docker stop's default)


def shutdown_wait_seconds() -> float:
    """How long a stopping server waits for its training run to stop at a safe point (AUDIENCE_SHUTDOWN_WAIT_S)."""
    seconds = _float_setting("AUDIENCE_SHUTDOWN_WAIT_S", DEFAULT_SHUTDOWN_WAIT_S)
    return seconds if 0 <= seconds <= 3600 else DEFAULT_SHUTDOWN_WAIT_S


DEFAULT_CACHE_GB = 8.0  # UTKFace at 128 px is 1.0 GB, Adience (19,487 faces) at 256 px 3.8 GB


def cache_max_bytes() -> int:
    """The size the image caches may take together (AUDIENCE_CACHE_GB, default 8); older ones are evicted."""
    gigabytes = _float_setting("AUDIENCE_CACHE_GB", DEFAULT_CACHE_GB)
    return int(max(gigabytes, 0.0) * 1e9)


def runs_dir() -> Path:
    return _path_from_env("AUDIENCE_RUNS", PROJECT_ROOT / "runs")


def checkpoints_dir() -> Path:
    """The shipped models (tracked by git): served, never written by the app."""
    return _path_from_env("AUDIENCE_CHECKPOINTS", PROJECT_ROOT / "checkpoints")


def models_dir() -> Path:
    """The user's own models (promoted runs, ONNX exports): served beside checkpoints_dir(), ignored by git."""
    return _path_from_env("AUDIENCE_MODELS", PROJECT_ROOT / "models")


def configured_data_root() -> Path | None:
    """The Adience root named by AUDIENCE_DATA, or None when the demo dataset should be used."""
    value = os.environ.get("AUDIENCE_DATA", "").strip()
    return Path(value).expanduser().resolve() if value else None


def allowed_data_dirs() -> list[Path]:
    """Folders under which a data root typed into the UI may lie (no other path is opened)."""
    dirs = [demo_root()]
    configured = configured_data_root()
    if configured is not None:
        dirs.append(configured)
    extra = os.environ.get("AUDIENCE_DATA_DIRS", "")
    dirs += [Path(p).expanduser().resolve() for p in extra.split(os.pathsep) if p.strip()]
    return dirs


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def debug_enabled() -> bool:
    """AUDIENCE_DEBUG=1: the command lines print an internal error's traceback, not only its line."""
    return env_flag("AUDIENCE_DEBUG")


def text_setting(name: str) -> str:
    """The stripped value of an environment variable, '' when unset."""
    return os.environ.get(name, "").strip()


def training_allowed_anywhere() -> bool:
    """AUDIENCE_ALLOW_TRAINING=1: a public deployment may train too."""
    return env_flag("AUDIENCE_ALLOW_TRAINING")


# The three variables that name a Hub model to serve (audience.model.served checks their values).
MODEL_REPO_VAR = "AUDIENCE_MODEL_REPO"
MODEL_FILE_VAR = "AUDIENCE_MODEL_FILE"
MODEL_REVISION_VAR = "AUDIENCE_MODEL_REVISION"


def hub_model_settings() -> tuple[str, str, str]:
    """(repo id, file, revision) as set in AUDIENCE_MODEL_REPO, _FILE and _REVISION ('' for each one unset)."""
    return text_setting(MODEL_REPO_VAR), text_setting(MODEL_FILE_VAR), text_setting(MODEL_REVISION_VAR)


def space_id() -> str:
    """The Hugging Face Space this app runs as (the platform sets SPACE_ID), '' when not on a Space."""
    return text_setting("SPACE_ID")


def on_hf_space() -> bool:
    """True when running as a Hugging Face Space (the platform sets SPACE_ID)."""
    return bool(space_id())


def server_name(default: str | None = "127.0.0.1") -> str | None:
    """The address app.py serves on (GRADIO_SERVER_NAME, as gradio reads it too), else `default`."""
    return os.environ.get("GRADIO_SERVER_NAME", default)


def server_port() -> int:
    """The port app.py serves on (GRADIO_SERVER_PORT, default 7860)."""
    return int(os.environ.get("GRADIO_SERVER_PORT", "7860"))


def default_tab() -> str:
    """The tab the app opens on: Predict on a shared Space (what visitors come for), EDA locally."""
    return "predict" if on_hf_space() else "eda"


LOOPBACK_NAMES = ("localhost", "")


def is_loopback(server_name: str | None) -> bool:
    """Whether `server_name` (a host name or address gradio serves on) is this machine's loopback only."""
    name = (server_name or "").strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def public_deployment(server_name: str | None = None, share: bool = False) -> str | None:
    """Where the app is served to others ("on the Hugging Face Space ..."), or None for a local run.

    Public means: on Hugging Face Spaces (env SPACE_ID), through a share link, or served on a
    non-loopback address (`server_name`, else env GRADIO_SERVER_NAME). A local run serves the person
    at the keyboard: it may open any folder they type, as Jupyter or TensorBoard do.
    """
    server_name = server_name if server_name is not None else os.environ.get("GRADIO_SERVER_NAME")
    if on_hf_space():
        return f"on the Hugging Face Space {os.environ['SPACE_ID'].strip()}"
    if share:
        return "through a public share link"
    if not is_loopback(server_name):
        return f"on the network address {server_name}"
    return None


def data_dirs_for(server_name: str | None = None, share: bool = False) -> list[Path] | None:
    """The allow-list a data root typed into the UI must lie under: None (any folder) on a local run,
    allowed_data_dirs() on a public deployment."""
    return None if public_deployment(server_name, share) is None else allowed_data_dirs()
