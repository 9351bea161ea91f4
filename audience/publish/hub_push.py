"""Publishing a checkpoint to a Hugging Face Hub model repo: weights, public metadata and a model card.

`stage_checkpoint` writes the three files into a folder (`python -m audience.cli.push_to_hub --dry-run`);
`push_checkpoint` stages them in a temporary folder and uploads it. The repo is what
audience.model.served serves with AUDIENCE_MODEL_REPO.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from huggingface_hub import HfApi, get_token
from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors

from audience.errors import AudienceError
from audience.files import replace_into, write_temp_beside, write_text_atomic
from audience.model.checkpoint import WEIGHTS_SUFFIX, checkpoint_paths, load_checkpoint
from audience.model.hub_access import hub_offline, hub_reachable
from audience.model.metadata import CheckpointMetadata
from audience.model.served import DEFAULT_FILE
from audience.publish.model_card import build_model_card, find_run_summary

LOCAL_PATH_SETTINGS = ("data", "out", "cache_dir", "weights_file")  # TrainConfig fields that hold local paths


def public_metadata(metadata: CheckpointMetadata, weights_file: str) -> dict:
    """The JSON to publish: the checkpoint's, with the weights' new file name, and local folders of the
    training machine (data root, runs and cache folders) reduced to their last component."""
    published = metadata.as_json()
    published["weights"] = {**(published.get("weights") or {}), "file": weights_file}
    if metadata.train_config is not None:
        config = published["train_config"]
        for name in LOCAL_PATH_SETTINGS:
            value = getattr(metadata.train_config, name)
            if isinstance(value, str) and ("/" in value or "\\" in value):
                config[name] = PurePosixPath(value.replace("\\", "/")).name
    return published


def stage_checkpoint(checkpoint: str | Path, out_dir: str | Path, repo_id: str) -> Path:
    """Write model.safetensors, model.json and a model card README.md for `checkpoint` into `out_dir`.

    The checkpoint is loaded first (checksum and architecture checked), so a damaged file is never
    published. Existing files of those three names in `out_dir` are replaced; nothing else is touched.
    """
    weights, json_path = checkpoint_paths(checkpoint)
    _, _, metadata = load_checkpoint(json_path)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        stem = Path(DEFAULT_FILE).stem
        target = out / f"{stem}{WEIGHTS_SUFFIX}"
        replace_into(write_temp_beside(target, lambda temp: shutil.copyfile(weights, temp)), target)
        published = public_metadata(metadata, f"{stem}{WEIGHTS_SUFFIX}")
        write_text_atomic(out / DEFAULT_FILE, json.dumps(published, indent=2) + "\n")
        card = build_model_card(metadata, find_run_summary(json_path, metadata), repo_id)
        write_text_atomic(out / "README.md", card)
    except OSError as error:
        raise AudienceError(f"Cannot write the files to publish into {out} ({error.strerror or error}).") from None
    return out


def push_checkpoint(checkpoint: str | Path, repo_id: str, private: bool = False) -> str:
    """Publish `checkpoint` (weights, metadata, model card) to the Hub model repo `repo_id`; return its URL."""
    if hub_offline():
        raise AudienceError("HF_HUB_OFFLINE is set: unset it to publish, or use --dry-run OUTDIR to write the files.")
    if not get_token():
        raise AudienceError("No Hugging Face token: run `hf auth login` or set HF_TOKEN (a write token) to publish.")
    if not hub_reachable():
        raise AudienceError("The Hugging Face Hub cannot be reached: check the connection, or use --dry-run OUTDIR.")
    with tempfile.TemporaryDirectory(prefix="audience-push-") as folder:
        stage_checkpoint(checkpoint, folder, repo_id)
        api = HfApi()
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                              commit_message=f"Upload {Path(checkpoint).name} with its model card")
        except hub_errors.HfHubHTTPError as error:
            status = getattr(getattr(error, "response", None), "status_code", None)
            raise AudienceError(f"The Hub refused the upload to {repo_id} (HTTP {status}): check that the token "
                                "can write there.") from None
        except OSError as error:
            raise AudienceError(f"The upload to {repo_id} failed ({type(error).__name__}).") from None
    return f"{hub_constants.ENDPOINT}/{repo_id}"
