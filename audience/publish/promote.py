"""Promoting a run's best checkpoint into the user's models folder ("Use this model").

The copy goes to settings.models_dir() (`models/`, not tracked by git), which is served beside the
shipped checkpoints/.

The fold's best.safetensors and best.json are copied under a readable name
(`<arch>-<task>-<protocol>-fold<k>-<run date>`); the weights are checked against the sha256 in the
metadata first, so a damaged file is never served. Each file is written to a temporary name and
hard-linked into place, which fails rather than replaces when the name is taken: an existing
different checkpoint is never overwritten, the copy gets the next free name (`-2`, `-3`, ...),
and promoting the same weights twice returns the existing copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from audience import settings
from audience.errors import AudienceError
from audience.files import read_json, write_temp_beside
from audience.inputs import name_skeleton, name_slug
from audience.model.catalog import list_checkpoints, served_folders
from audience.model.checkpoint import (
    METADATA_SUFFIX,
    WEIGHTS_SUFFIX,
    checkpoint_paths,
    file_sha256,
    read_checkpoint_metadata,
)
from audience.model.metadata import CheckpointMetadata
from audience.model.served import VALUE_PREFIX
from audience.registry import GLANCE_KEYS, column_of, format_percent, protocol_label
from audience.train.runs import COMMAND_FILE

MAX_NAME_TRIES = 1000
MAX_COMMANDS = 20  # command.txt lines kept (a run resumed many times)
COMMAND_FILE_LIMIT = 1 << 20  # characters of command.txt read (a bigger one is not a run's own record)
# A Hugging Face Space refuses files over 10 MB without Git LFS: a larger checkpoint is stored in float16
# (half the bytes; load_checkpoint reads it back as float32, test_checkpoint checks the predictions agree).
HALF_ABOVE_BYTES = 10 * 1000 * 1000


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", str(text)).strip("-.")


def readable_name(metadata: CheckpointMetadata, run_id: str, fold: int) -> str:
    """e.g. mobilenetv3_large_100-age-gender-folds-fold0-20261126-093128 (-demo for synthetic data)."""
    date = "-".join(run_id.split("-")[:2]) if re.match(r"^\d{8}-\d{6}", run_id) else _slug(run_id)
    parts = [metadata.arch, metadata.task, metadata.protocol or "run", f"fold{fold}", date]
    return _slug("-".join(str(p) for p in parts if p) + ("-demo" if metadata.synthetic else ""))


def check_promoted_name(base: str, folder: Path) -> None:
    """AudienceError when a name given for a promoted model would mislead: one that starts like a Hub model's
    value ('hub--...', which the Predict tab would take for the Hub model), or one that reads like an existing
    model's name without being it (the same letters once Unicode width, case and look-alike letters of other
    scripts are ignored: 'Ｍodel' or 'mоdel' beside 'model')."""
    if name_skeleton(base).startswith(name_skeleton(VALUE_PREFIX)):
        raise AudienceError(f"The checkpoint name {base} starts with '{VALUE_PREFIX}', which names models served from "
                            "the Hugging Face Hub; choose a name that does not.")
    skeleton = name_skeleton(base)
    stems = {path.name[:-len(METADATA_SUFFIX)] for where in {folder, *served_folders()}
             for path in list_checkpoints(where)}
    twin = next((stem for stem in sorted(stems) if stem != base and name_skeleton(stem) == skeleton), None)
    if twin is not None:
        raise AudienceError(f"The checkpoint name {base} looks like the served model {twin} (the same letters once "
                            "width, case and look-alike letters are ignored); choose a clearly different name.")


def _taken_elsewhere(name: str, folder: Path) -> bool:
    """Whether another served folder holds the file `name`: a promoted copy never hides a served model."""
    return any((where / name).exists() for where in served_folders() if where != folder)


def _link_new(source: Path, target: Path) -> bool:
    """Hard-link `source` to `target` unless `target` exists (False then); never replaces a file."""
    try:
        os.link(source, target)
        return True
    except FileExistsError:
        return False


def _same_checkpoint(stem: Path, source_sha256: str) -> bool:
    """Whether `stem` is an intact promoted copy of the weights whose sha256 is `source_sha256`."""
    weights, meta = checkpoint_paths(stem)
    if not (weights.is_file() and meta.is_file()):
        return False
    try:
        metadata = read_checkpoint_metadata(meta)
    except AudienceError:
        return False
    recorded = None if metadata.weights is None else metadata.weights.sha256
    if recorded is None:
        return False
    origin = metadata.promoted_from  # None also for one that is not an object: read as missing
    source = origin.sha256 if origin is not None and "sha256" in origin.model_fields_set else recorded
    return source == source_sha256 and file_sha256(weights) == recorded


def _write_weights(source: Path, temp: Path, half: bool) -> None:
    if not half:
        shutil.copyfile(source, temp)
        return
    import safetensors.torch
    import torch

    with safetensors.safe_open(str(source), framework="pt") as file:
        header = file.metadata() or {}
        tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 - safe_open has no iterator
    tensors = {key: t.half() if t.is_floating_point() else t for key, t in tensors.items()}
    safetensors.torch.save_file(tensors, str(temp), metadata={**header, "dtype": str(torch.float16)})


def training_record(run_dir: Path) -> dict:
    """How the run was made, for the model card: its command lines, training seconds and device."""
    record: dict = {}
    try:
        with open(run_dir / COMMAND_FILE, encoding="utf-8") as file:
            lines = file.read(COMMAND_FILE_LIMIT).splitlines()  # a run's own commands: a few hundred bytes each
        record["commands"] = [line for line in lines if line.strip()][:MAX_COMMANDS]
    except (OSError, UnicodeDecodeError):
        pass
    try:
        summary = read_json(run_dir / "cv_summary.json")
    except (OSError, ValueError):
        summary = {}
    if isinstance(summary, dict):
        record.update({key: summary[key] for key in ("train_seconds", "device", "machine") if key in summary})
    return record


def promote_checkpoint(run_dir: str | Path, fold: int, name: str | None = None,
                       checkpoints_dir: str | Path | None = None, half: bool | None = None,
                       shipped: bool = False, flip_average: bool | None = None) -> Path:
    """Copy fold `fold`'s best checkpoint of `run_dir` into the user's models folder (settings.models_dir(), or
    `checkpoints_dir`); return the new .json.

    `name` (optional) replaces the readable default name; a taken name gets a numbered suffix (a name taken
    in another served folder too); a name that starts like a Hub value or imitates a served model's name is
    refused (check_promoted_name). `half`
    stores the weights in float16; None (default) does so when they exceed HALF_ABOVE_BYTES. The copy's
    JSON records `promoted_from` and `training` (command, time, device); `shipped` marks a model that is
    committed with the app (the Compare tab shows it so). `flip_average` True (or False) records that the model
    averages each face with its mirror image when it answers (the network's set_flip_average); None keeps the
    run's setting.
    """
    run_dir = Path(run_dir)
    source_weights, source_meta = checkpoint_paths(run_dir / f"fold{int(fold)}" / "best")
    if not source_meta.is_file():
        raise AudienceError(f"Run {run_dir.name} has no best checkpoint for fold {fold} (no {source_meta.name}).")
    metadata = read_checkpoint_metadata(source_meta)
    if not source_weights.is_file():
        raise AudienceError(f"Run {run_dir.name} fold {fold}: {source_weights.name} is missing.")
    sha256 = file_sha256(source_weights)
    recorded = None if metadata.weights is None else metadata.weights.sha256
    if recorded and recorded != sha256:
        raise AudienceError(f"Run {run_dir.name} fold {fold}: {source_weights.name} does not match its recorded "
                            "sha256 (the file is damaged or was replaced), so it was not promoted.")
    folder = Path(checkpoints_dir) if checkpoints_dir is not None else settings.models_dir()
    base = name_slug(name, "The checkpoint name") if name else readable_name(metadata, run_dir.name, int(fold))
    if name:
        check_promoted_name(base, folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AudienceError(f"Cannot create the models folder {folder.name} ({error.strerror}).") from None
    half = source_weights.stat().st_size > HALF_ABOVE_BYTES if half is None else bool(half)
    weights_temp = write_temp_beside(folder / ".promote", lambda temp: _write_weights(source_weights, temp, half))
    stored_sha256 = file_sha256(weights_temp) if half else sha256  # float16 bytes differ from the source's
    try:
        for attempt in range(1, MAX_NAME_TRIES):
            stem = folder / (base if attempt == 1 else f"{base}-{attempt}")
            if _same_checkpoint(stem, sha256):
                return stem.with_name(stem.name + METADATA_SUFFIX)
            weights_path, meta_path = stem.with_name(stem.name + WEIGHTS_SUFFIX), stem.with_name(stem.name +
                                                                                                   METADATA_SUFFIX)
            if (meta_path.exists() or _taken_elsewhere(meta_path.name, folder)
                    or not _link_new(weights_temp, weights_path)):
                continue
            stored = {"file": weights_path.name, "bytes": weights_temp.stat().st_size, "sha256": stored_sha256,
                      "dtype": "float16" if half else "float32"}
            source_json = metadata.as_json()
            promoted = {**source_json, "weights": {**(source_json.get("weights") or {}), **stored},
                        "promoted_from": {"run": run_dir.name, "fold": int(fold), "sha256": sha256},
                        "training": training_record(run_dir), **({"shipped": True} if shipped else {}),
                        **({} if flip_average is None else {"flip_average": bool(flip_average)})}
            text = json.dumps(promoted, indent=2) + "\n"
            meta_temp = write_temp_beside(folder / ".promote",
                                              lambda temp, text=text: temp.write_text(text, encoding="utf-8"))
            try:
                if _link_new(meta_temp, meta_path):
                    return meta_path
            finally:
                meta_temp.unlink(missing_ok=True)
            weights_path.unlink(missing_ok=True)  # its JSON name was taken meanwhile: try the next name
        raise AudienceError(f"No free checkpoint name for {base} in the models folder.")
    finally:
        weights_temp.unlink(missing_ok=True)


def checkpoints_table(folder: str | Path | None = None):
    """One row per served checkpoint (both served folders, newest first); an unreadable one is listed with
    the reason."""
    import pandas as pd

    rows = []
    for path in list_checkpoints(folder):
        try:
            meta = read_checkpoint_metadata(path)
        except AudienceError as error:
            rows.append({"checkpoint": path.stem, "problem": str(error)})
            continue
        source = meta.promoted_from
        rows.append({
            "checkpoint": path.stem, "arch": meta.arch, "task": meta.task,
            "protocol": protocol_label(meta.protocol, bool(meta.leaky),
                                       meta.split_level or (meta.dataset and meta.dataset.split_level)),
            "fold": meta.fold,
            "data": "synthetic demo" if meta.synthetic else (meta.dataset and meta.dataset.name),
            **{column_of(key): format_percent(meta.metric(key)) for key in GLANCE_KEYS},
            "metrics on": meta.metrics_on, "from run": source and source.run, "problem": "",
        })
    return pd.DataFrame(rows, columns=["checkpoint", "arch", "task", "protocol", "fold", "data",
                                       *map(column_of, GLANCE_KEYS), "metrics on", "from run", "problem"])
