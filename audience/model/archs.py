"""The model allow-list and the age head names, without torch: what the app's forms and TrainConfig read.

`ARCHS` is the one list that CLI choices, the UI dropdown and the checks read; `AGE_HEADS` the age heads
(audience.model.network builds both). Kept apart from the network so that importing them (the app does at
start) does not import torch or timm (issue 19's cold start).
"""

from __future__ import annotations

from audience.errors import AudienceError, quoted

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


AGE_HEADS: tuple[str, ...] = ("groups", "years")
YEARS_OUTPUT = "age_years"  # the extra output of a years head: (N, N_YEARS) logits over the years 0-100


def check_arch(arch: str) -> dict:
    """The ARCHS entry of `arch`, or AudienceError naming the allowed values."""
    if arch not in ARCHS:
        raise AudienceError(f"Unknown architecture {quoted(arch)}: use one of {', '.join(ARCHS)}.")
    return ARCHS[arch]
