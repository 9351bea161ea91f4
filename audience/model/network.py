"""The model allow-list and the two-head age/gender network over a timm backbone.

`ARCHS` is the one list that CLI choices, the UI dropdown and the checks read. A model is a
shared timm backbone (pooled features, no classifier) with a linear age head (8 classes) and a
linear gender head (3 classes: f, m, u); a task that lacks a head does not build it.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import timm
import torch
from huggingface_hub import constants as hub_constants
from torch import nn

from audience.errors import AudienceError
from audience.labels import AGE_CLASSES, GENDER_CLASSES, check_task
from audience.model.hub_access import hub_offline, hub_reachable

ARCHS: dict[str, dict] = {
    "mobilenetv3_large_100": {
        "timm_name": "mobilenetv3_large_100",
        "label": "MobileNetV3 (4.2 M params)",
        "image_size": 224,
        "pretrained": True,
    },
    "resnet50": {
        "timm_name": "resnet50",
        "label": "ResNet-50 (23.5 M params)",
        "image_size": 224,
        "pretrained": True,
    },
    # A real but tiny timm model, for tests and smoke runs on CPU; it has no pretrained weights.
    "tiny": {
        "timm_name": "test_efficientnet",
        "label": "Tiny test net (smoke runs)",
        "image_size": 64,
        "pretrained": False,
    },
}


def check_arch(arch: str) -> dict:
    """The ARCHS entry of `arch`, or AudienceError naming the allowed values."""
    if arch not in ARCHS:
        raise AudienceError(f"Unknown architecture {arch!r}: use one of {', '.join(ARCHS)}.")
    return ARCHS[arch]


def _pooled_width(backbone: nn.Module) -> int:
    # mobilenetv3's pooled output passes through conv_head (1280), wider than num_features (960).
    width = getattr(backbone, "head_hidden_size", None) or getattr(backbone, "num_features", None)
    if width:
        return int(width)
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        width = backbone(torch.zeros(1, 3, 64, 64)).shape[-1]
    backbone.train(was_training)
    return int(width)


class AgeGenderNet(nn.Module):
    """Shared timm backbone with an age head (8 logits) and/or a gender head (3 logits).

    `forward(x)` returns a dict with the keys of the task's heads ("age", "gender"), values the
    logits of shape (N, classes).
    """

    def __init__(self, backbone: nn.Module, arch: str, task: str = "age+gender", drop_rate: float = 0.0):
        super().__init__()
        heads = check_task(task)
        self.arch = arch
        self.task = task
        self.backbone = backbone
        self.feature_width = _pooled_width(backbone)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.age = nn.Linear(self.feature_width, len(AGE_CLASSES)) if "age" in heads else None
        self.gender = nn.Linear(self.feature_width, len(GENDER_CLASSES)) if "gender" in heads else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.dropout(self.backbone(x))
        logits = {}
        if self.age is not None:
            logits["age"] = self.age(features)
        if self.gender is not None:
            logits["gender"] = self.gender(features)
        return logits


@contextlib.contextmanager
def _hub_cache_only():
    """Make huggingface_hub use its local cache only (no 46 s of retries), for this call."""
    previous = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous


def _no_hub_message(arch: str, timm_name: str, reason: str) -> str:
    return (
        f"ImageNet weights for {arch} cannot be downloaded: {reason}. Connect, or pass --weights FILE "
        f"(an ImageNet .safetensors/.pth for {timm_name}), or train with --no-pretrained."
    )


def _load_imagenet_weights(backbone: nn.Module, path: Path, timm_name: str) -> None:
    """Load an ImageNet state_dict into a classifier-less backbone; its classifier is dropped.

    timm's own pretrained_cfg_overlay path loads non-strictly once the classifier differs, so a file
    for another model would leave a silent random init; here every backbone tensor must come from the file.
    """
    if not path.is_file():
        raise AudienceError(f"Weights file {path} does not exist.")
    try:
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
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or misshaped:
        example = (missing or unexpected or misshaped)[0]
        raise AudienceError(
            f"Weights file {path} does not hold ImageNet weights for {timm_name} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(misshaped)} wrong-shaped tensors, e.g. {example})."
        )
    backbone.load_state_dict(state, strict=True)


def _create_backbone(arch: str, pretrained: bool, weights_file: str | Path | None) -> nn.Module:
    spec = check_arch(arch)
    timm_name = spec["timm_name"]
    kwargs = {"num_classes": 0, "drop_rate": 0.0}
    if weights_file is not None:
        backbone = timm.create_model(timm_name, pretrained=False, **kwargs)
        _load_imagenet_weights(backbone, Path(weights_file), timm_name)
        return backbone
    if not pretrained:
        return timm.create_model(timm_name, pretrained=False, **kwargs)
    if not spec.get("pretrained", True):
        raise AudienceError(f"Architecture {arch} has no pretrained weights: train it with --no-pretrained.")
    reason = None
    if hub_offline():
        reason = "HF_HUB_OFFLINE is set"
    elif not hub_reachable():  # a fast probe: huggingface_hub would retry for about 46 s
        reason = "no connection to the Hugging Face Hub"
    try:
        if reason is None:
            return timm.create_model(timm_name, pretrained=True, **kwargs)
        # Offline, weights downloaded earlier still load from the Hugging Face cache.
        with _hub_cache_only():
            return timm.create_model(timm_name, pretrained=True, **kwargs)
    except Exception as error:  # noqa: BLE001 - hub, HTTP and cache errors have no common base class
        reason = reason or f"the download failed ({type(error).__name__})"
        raise AudienceError(_no_hub_message(arch, timm_name, reason)) from error


def build_model(
    arch: str,
    task: str = "age+gender",
    pretrained: bool = False,
    weights_file: str | Path | None = None,
    drop_rate: float = 0.0,
) -> AgeGenderNet:
    """An AgeGenderNet for `arch` (an ARCHS key) and `task` (one of TASKS).

    pretrained=True downloads the ImageNet backbone through timm (offline: AudienceError within
    seconds, never a silent random init). `weights_file` loads the ImageNet backbone from a local
    .safetensors/.pth instead (its classifier is dropped; every backbone tensor must be in the file).
    `drop_rate` is dropout before the heads.
    """
    check_arch(arch)
    check_task(task)
    backbone = _create_backbone(arch, pretrained, weights_file)
    return AgeGenderNet(backbone, arch=arch, task=task, drop_rate=drop_rate)


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int) -> int:
    """FLOPs (2 x multiply-accumulates) of one forward pass at 1x3xSxS, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())


@functools.cache
def _data_config(arch: str) -> tuple:
    spec = check_arch(arch)
    # pretrained_cfg is enough to resolve the config; building on the meta device avoids allocating weights.
    with torch.device("meta"):
        model = timm.create_model(spec["timm_name"], pretrained=False, num_classes=0)
    config = timm.data.resolve_model_data_config(model)
    return (
        int(spec["image_size"]),
        tuple(float(v) for v in config["mean"]),
        tuple(float(v) for v in config["std"]),
        str(config["interpolation"]),
    )


def model_data_config(arch: str) -> dict:
    """Preprocessing of `arch`: image_size (ARCHS default), mean, std, interpolation (timm's pretrained config)."""
    image_size, mean, std, interpolation = _data_config(arch)
    return {"image_size": image_size, "mean": list(mean), "std": list(std), "interpolation": interpolation}
