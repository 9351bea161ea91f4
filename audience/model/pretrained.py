"""ImageNet weights for a backbone: from the Hugging Face Hub, its local cache, or a file of the user's.

Offline (HF_HUB_OFFLINE, or the Hub not reachable within hub_access.PROBE_TIMEOUT_S), weights
downloaded earlier are looked up in the local cache with `hf_hub_download(local_files_only=True)`:
nothing process-wide is switched, so other threads keep their own Hub settings. Every file, cached
or the user's, is loaded strictly (every backbone tensor must come from it).
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import hf_hub_download
from torch import nn

from audience.errors import AudienceError
from audience.model.hub_access import hub_offline, hub_reachable
from audience.model.state import load_state_strictly

# The file names timm publishes ImageNet weights under, in the order timm itself tries them.
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def no_hub_message(arch: str, timm_name: str, reason: str) -> str:
    return (
        f"ImageNet weights for {arch} cannot be downloaded: {reason}. Connect, or pass --weights FILE "
        f"(an ImageNet .safetensors/.pth for {timm_name}), or train with --no-pretrained."
    )


def load_imagenet_weights(backbone: nn.Module, path: Path, timm_name: str) -> None:
    """Load an ImageNet state_dict into a classifier-less backbone; its classifier is dropped.

    timm's own pretrained_cfg_overlay path loads non-strictly once the classifier differs, so a file
    for another model would leave a silent random init; here every backbone tensor must come from the file.
    """
    if not path.is_file():
        raise AudienceError(f"Weights file {path} does not exist.")
    try:
        import timm  # here, not at the top: its import (~4 s) is kept off the app's start

        state = timm.models.load_state_dict(str(path))  # safetensors, or torch.load(weights_only=True)
        state = dict(state.items())
    except Exception as error:  # noqa: BLE001 - whatever fails to parse is a bad file
        reason = str(error).split(". ")[0][:160]
        raise AudienceError(
            f"Weights file {path} is not a readable .safetensors/.pth state_dict ({reason})."
        ) from error
    classifier = backbone.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    expected = backbone.state_dict()
    state = {k: v for k, v in state.items() if k in expected or k.rpartition(".")[0] not in classifier}
    load_state_strictly(backbone, state, f"Weights file {path} does not hold ImageNet weights for {timm_name}")


def cached_weights_file(timm_name: str) -> Path | None:
    """The ImageNet weights of `timm_name` in the local Hugging Face cache, or None; never uses the network."""
    import timm  # here, not at the top: its import (~4 s) is kept off the app's start

    hub_id = getattr(timm.models.get_pretrained_cfg(timm_name), "hf_hub_id", None)
    if not hub_id:
        return None
    for filename in HUB_WEIGHT_FILES:
        try:
            return Path(hf_hub_download(hub_id, filename, local_files_only=True))
        except Exception:  # noqa: BLE001, S112 - not cached (or a broken cache entry): try the next name
            continue
    return None


def create_pretrained_backbone(arch: str, timm_name: str, **kwargs) -> nn.Module:
    """A timm backbone with ImageNet weights: downloaded when the Hub is reachable, else from the cache."""
    import timm  # here, not at the top: its import (~4 s) is kept off the app's start

    reason = None
    if hub_offline():
        reason = "HF_HUB_OFFLINE is set"
    elif not hub_reachable():  # a fast probe: huggingface_hub would retry for about 46 s
        reason = "no connection to the Hugging Face Hub"
    if reason is None:
        try:
            return timm.create_model(timm_name, pretrained=True, **kwargs)
        except Exception as error:  # noqa: BLE001 - hub, HTTP and cache errors have no common base class
            raise AudienceError(no_hub_message(arch, timm_name, f"the download failed ({type(error).__name__})")) \
                from error
    cached = cached_weights_file(timm_name)
    if cached is None:
        raise AudienceError(no_hub_message(arch, timm_name, reason))
    backbone = timm.create_model(timm_name, pretrained=False, **kwargs)
    load_imagenet_weights(backbone, cached, timm_name)
    return backbone
