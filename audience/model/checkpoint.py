"""Checkpoints: `<stem>.safetensors` (the state_dict) beside `<stem>.json` (everything needed to
rebuild and trust it). Loading never unpickles.

Both files are written to fsynced temp files in the same folder, then renamed over the old ones
(os.replace), weights first, so a JSON that exists describes complete weights; the JSON records the
weights' size and sha256, checked on load, which also catches a crash between the two renames.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import audience
from audience.data.transforms import build_eval_transform
from audience.errors import AudienceError, quoted
from audience.files import read_json_object, replace_into, write_temp_beside
from audience.labels import AGE_CLASSES, GENDER_CLASSES, HEADS_OF_TASK
from audience.model.archs import ARCHS
from audience.model.metadata import CheckpointMetadata, check_checkpoint_metadata
from audience.model.state import load_state_strictly

if TYPE_CHECKING:  # torch, safetensors and the network are imported where weights are saved or loaded: the app
    import torch  # reads checkpoint metadata at start without them (issue 19's cold start)

    from audience.model.network import AgeGenderNet

FORMAT_VERSION = 1
WEIGHTS_SUFFIX = ".safetensors"
METADATA_SUFFIX = ".json"


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights_path, json_path) of a checkpoint given as its .safetensors, its .json or its stem."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (WEIGHTS_SUFFIX, METADATA_SUFFIX) else path
    return stem.with_name(stem.name + WEIGHTS_SUFFIX), stem.with_name(stem.name + METADATA_SUFFIX)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain(value):
    """Metadata as plain JSON: numpy/torch scalars and arrays to Python, NaN and infinity to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    torch = sys.modules.get("torch")  # a tensor can only be here once torch was imported
    if isinstance(value, np.ndarray) or (torch is not None and isinstance(value, torch.Tensor)):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _complete_metadata(model: AgeGenderNet, metadata: dict) -> dict:
    import torch

    from audience.model.network import model_data_config

    data_config = model_data_config(model.arch)
    heads = HEADS_OF_TASK[model.task]
    defaults = {
        "image_size": data_config["image_size"],
        "mean": data_config["mean"],
        "std": data_config["std"],
        "temperature": dict.fromkeys(heads, 1.0),
        "dataset": {"name": None, "synthetic": None, "policy": None, "images": None},
        "protocol": None,
        "fold": None,
        "metrics": {},
        "epoch": None,
    }
    automatic = {
        "arch": model.arch,
        "timm_name": ARCHS[model.arch]["timm_name"],
        "task": model.task,
        **({"age_head": model.age_head} if "age" in heads else {}),
        **({"gap_rule": model.gap_rule} if "age" in heads and model.age_head == "years" else {}),
        "age_classes": list(AGE_CLASSES) if "age" in heads else None,
        "gender_classes": list(GENDER_CLASSES) if "gender" in heads else None,
        "params": sum(p.numel() for p in model.parameters()),
        "versions": {"torch": torch.__version__, "timm": importlib.metadata.version("timm"),
                     "audience": audience.__version__},
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return {**defaults, **metadata, **automatic}


def save_checkpoint(stem: str | Path, model: AgeGenderNet, metadata: dict) -> Path:
    """Write `<stem>.safetensors` then `<stem>.json`; return the weights path.

    `metadata` from the trainer (defaults fill what is absent): image_size (int), mean, std (3 floats
    each), temperature ({"age": T, "gender": T}, 1.0 = uncalibrated), dataset ({"name", "synthetic",
    "policy", "images"}), protocol (str), fold (int or None), metrics (dict from compute_metrics),
    epoch (int). Added automatically: arch, timm_name, task, age_classes, gender_classes, params,
    versions (torch, timm, audience), format_version, created (UTC ISO time) and weights ({"file",
    "bytes", "sha256"}). Keys of the model (arch, task, ...) override the same keys in `metadata`.
    """
    import safetensors.torch

    weights_path, json_path = checkpoint_paths(stem)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    header = {"format": "pt", "arch": model.arch, "task": model.task, "audience_format_version": str(FORMAT_VERSION)}
    # Both files are complete on disk before either replaces an older checkpoint, weights first: a
    # failure (disk full, metadata that is not JSON) leaves the previous checkpoint as it was.
    temps = [write_temp_beside(weights_path,
                               lambda temp: safetensors.torch.save_file(tensors, str(temp), metadata=header))]
    try:
        full = _complete_metadata(model, metadata)
        full["weights"] = {"file": weights_path.name, "bytes": temps[0].stat().st_size, "sha256": file_sha256(temps[0])}
        text = json.dumps(_plain(full), indent=2, allow_nan=False) + "\n"
        temps.append(write_temp_beside(json_path, lambda temp: temp.write_text(text, encoding="utf-8")))
        replace_into(temps[0], weights_path)
        replace_into(temps[1], json_path)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return weights_path


def read_checkpoint_metadata(path: str | Path) -> CheckpointMetadata:
    """The checkpoint's metadata as a typed object (the weights are not read), checked for the keys a load needs."""
    _, json_path = checkpoint_paths(path)
    if not json_path.is_file():
        raise AudienceError(f"Checkpoint metadata {json_path} does not exist.")
    metadata = read_json_object(json_path, f"Checkpoint metadata {json_path}")
    missing = [key for key in ("arch", "task", "image_size", "mean", "std", "format_version") if key not in metadata]
    if missing:
        raise AudienceError(f"Checkpoint metadata {json_path} lacks the key(s) {', '.join(missing)}.")
    if not isinstance(metadata["format_version"], int) or metadata["format_version"] > FORMAT_VERSION:
        raise AudienceError(
            f"Checkpoint metadata {json_path} has format_version {quoted(metadata['format_version'])}, "
            f"newer than this version of audience reads ({FORMAT_VERSION})."
        )
    if metadata["arch"] not in ARCHS or metadata["task"] not in HEADS_OF_TASK:
        raise AudienceError(
            f"Checkpoint metadata {json_path} names architecture {quoted(metadata['arch'])} and task "
            f"{quoted(metadata['task'])}; this version knows {', '.join(ARCHS)} and {', '.join(HEADS_OF_TASK)}."
        )
    return check_checkpoint_metadata(metadata, str(json_path))


def _check_weights_file(weights_path: Path, json_path: Path, metadata: CheckpointMetadata) -> None:
    if not weights_path.is_file():
        raise AudienceError(f"Checkpoint weights {weights_path} do not exist (the metadata is {json_path}).")
    recorded = metadata.weights
    size = weights_path.stat().st_size
    if recorded is not None and recorded.bytes is not None and recorded.bytes != size:
        raise AudienceError(
            f"Checkpoint weights {weights_path} have {size} bytes but {json_path} records {recorded.bytes} "
            "(the file is truncated or was replaced)."
        )
    if recorded is not None and recorded.sha256 is not None and recorded.sha256 != file_sha256(weights_path):
        raise AudienceError(
            f"Checkpoint weights {weights_path} do not match the sha256 recorded in {json_path} (the file was changed)."
        )


def _load_state(model: AgeGenderNet, weights_path: Path, metadata: CheckpointMetadata) -> None:
    import safetensors
    import safetensors.torch

    try:
        state = safetensors.torch.load_file(str(weights_path))
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise AudienceError(
            f"Checkpoint weights {weights_path} are not a readable safetensors file ({error})."
        ) from error
    load_state_strictly(model, state, f"Checkpoint weights {weights_path} do not fit a {metadata.arch} model "
                                      f"for task {quoted(metadata.task)}")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[AgeGenderNet, Callable, CheckpointMetadata]:
    """(model in eval mode on `device`, its eval transform, its typed metadata) from a checkpoint.

    `path` is the .safetensors, the .json or the stem. Any problem (missing file, invalid JSON,
    checksum mismatch, weights that do not fit the arch/task) raises AudienceError naming the file.
    """
    metadata = read_checkpoint_metadata(checkpoint_paths(path)[1])
    return (*load_checkpoint_model(path, metadata, device), metadata)


def load_checkpoint_model(path: str | Path, metadata: CheckpointMetadata, device: str | torch.device = "cpu"
                          ) -> tuple[AgeGenderNet, Callable]:
    """(model in eval mode on `device`, its eval transform) of the checkpoint at `path` whose metadata was read
    already (read_checkpoint_metadata); its weights are checked against that metadata as load_checkpoint does."""
    from audience.model.network import build_model

    weights_path, json_path = checkpoint_paths(path)
    _check_weights_file(weights_path, json_path, metadata)
    model = build_model(metadata.arch, metadata.task, pretrained=False, age_head=metadata.age_head,
                        gap_rule=metadata.gap_rule)
    _load_state(model, weights_path, metadata)
    model.set_age_adjustment(metadata.age_adjustment)
    model.set_flip_average(bool(metadata.flip_average))
    model.to(device).eval()
    exposure = None if metadata.exposure is None else metadata.exposure.reference
    return model, build_eval_transform(metadata.image_size, metadata.mean, metadata.std, exposure=exposure)
