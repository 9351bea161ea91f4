"""Paths and switches read from the environment, in one place: no other module reads these variables.

AUDIENCE_DATA            an Adience root (or the demo root) the app opens first; unset: the demo set
AUDIENCE_DATA_DIRS       extra folders (os.pathsep-separated) under which the UI may open data roots
AUDIENCE_HOME            where the app keeps its own files (demo data, image cache); default ~/.cache/audience
AUDIENCE_RUNS            training runs folder; default ./runs
AUDIENCE_CHECKPOINTS     served checkpoints folder; default ./checkpoints
AUDIENCE_KEEP_FILES_S    seconds an upload and the images made from it are kept; default 600
AUDIENCE_CACHE_GB        the size the decoded-image caches may take together; default 8
AUDIENCE_ALLOW_TRAINING  1: allow training on a public deployment (local runs always may)
AUDIENCE_MODEL_REPO      a Hugging Face Hub model repo to serve (with AUDIENCE_MODEL_FILE, default
AUDIENCE_MODEL_FILE        model.json, and AUDIENCE_MODEL_REVISION, default main)
AUDIENCE_MODEL_REVISION
AUDIENCE_DEBUG           the command lines also print an internal error's traceback (like --debug)
SPACE_ID                 set by Hugging Face Spaces: the app runs as a public Space
GRADIO_SERVER_NAME       the address app.py serves on (default 127.0.0.1; not loopback: a public deployment)
GRADIO_SERVER_PORT       the port app.py serves on (default 7860)

(HF_HUB_OFFLINE is huggingface_hub's own switch; audience.model.hub_access reads it with huggingface_hub.)
"""

from __future__ import annotations

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


DEFAULT_CACHE_GB = 8.0  # UTKFace at 128 px is 1.0 GB, Adience (19,487 faces) at 256 px 3.8 GB


def cache_max_bytes() -> int:
    """The size the image caches may take together (AUDIENCE_CACHE_GB, default 8); older ones are evicted."""
    text = os.environ.get("AUDIENCE_CACHE_GB", "").strip()
    try:
        gigabytes = float(text) if text else DEFAULT_CACHE_GB
    except ValueError:
        gigabytes = DEFAULT_CACHE_GB
    return int(max(gigabytes, 0.0) * 1e9)


def runs_dir() -> Path:
    return _path_from_env("AUDIENCE_RUNS", PROJECT_ROOT / "runs")


def checkpoints_dir() -> Path:
    return _path_from_env("AUDIENCE_CHECKPOINTS", PROJECT_ROOT / "checkpoints")


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


# The three variables that name a Hub model to serve (audience.publish.served checks their values).
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
