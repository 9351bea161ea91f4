"""The model allow-list and the two-head age/gender network over a timm backbone.

`ARCHS` is the one list that CLI choices, the UI dropdown and the checks read. A model is a
shared timm backbone (pooled features, no classifier) with a linear age head (8 classes) and a
linear gender head (3 classes: f, m, u); a task that lacks a head does not build it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from audience.errors import AudienceError, quoted
from audience.labels import AGE_CLASSES, GENDER_CLASSES, check_task
from audience.model.pretrained import create_pretrained_backbone, load_imagenet_weights

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
        raise AudienceError(f"Unknown architecture {quoted(arch)}: use one of {', '.join(ARCHS)}.")
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


def _create_backbone(arch: str, pretrained: bool, weights_file: str | Path | None) -> nn.Module:
    import timm  # here, not at the top: its import (~4 s) is kept off the app's start

    spec = check_arch(arch)
    timm_name = spec["timm_name"]
    kwargs = {"num_classes": 0, "drop_rate": 0.0}
    if weights_file is not None:
        backbone = timm.create_model(timm_name, pretrained=False, **kwargs)
        load_imagenet_weights(backbone, Path(weights_file), timm_name)
        return backbone
    if not pretrained:
        return timm.create_model(timm_name, pretrained=False, **kwargs)
    if not spec.get("pretrained", True):
        raise AudienceError(f"Architecture {arch} has no pretrained weights: train it with --no-pretrained.")
    return create_pretrained_backbone(arch, timm_name, **kwargs)


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
    import timm  # here, not at the top: its import (~4 s) is kept off the app's start

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
