"""The two-head age/gender network over a timm backbone (the allow-list `ARCHS`: audience.model.archs).

A model is a
shared timm backbone (pooled features, no classifier) with a linear age head and a linear gender head
(3 classes: f, m, u); a task that lacks a head does not build it.

The age head is one of `AGE_HEADS`: "groups" (8 logits, one per Adience group) or "years" (one logit per
year 0-100, audience.model.age_years; its "age" output is then the log of the eight group probabilities,
the sums over each group's years, with the checkpoint's gap rule). Either way "age" is (N, 8) scores whose
softmax is the group distribution, so evaluation, calibration and Predict read both heads alike.

An optional class-prior correction (`set_age_adjustment`, logit adjustment: the checkpoint's `age_prior`
times `prior_tau`) is subtracted from the "age" scores inside forward, so every path that runs the network
(the trainer's test, evaluate, Predict, ONNX Runtime) answers with it. Likewise the mirror average
(`set_flip_average`, the checkpoint's `flip_average`): the features of the face and of its mirror image are
averaged before the heads, so every output is the mean of the two views' scores.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from audience.errors import AudienceError, quoted
from audience.labels import AGE_CLASSES, GENDER_CLASSES, check_task
from audience.model.age_years import DEFAULT_GAP_RULE, N_YEARS, year_to_group_matrix

# The allow-list and the head names live in the torch-free archs module (the app reads them at start); they
# are importable from here as before.
from audience.model.archs import AGE_HEADS, ARCHS, YEARS_OUTPUT, check_arch  # noqa: F401
from audience.model.pretrained import create_pretrained_backbone, load_imagenet_weights


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
    """Shared timm backbone with an age head and/or a gender head (3 logits).

    `forward(x)` returns a dict with the keys of the task's heads ("age", "gender"), values (N, classes)
    scores whose softmax is the head's distribution; a years age head adds "age_years", the (N, 101)
    logits over the years.
    """

    def __init__(self, backbone: nn.Module, arch: str, task: str = "age+gender", drop_rate: float = 0.0,
                 age_head: str = "groups", gap_rule: str = DEFAULT_GAP_RULE):
        super().__init__()
        heads = check_task(task)
        if age_head not in AGE_HEADS:
            raise AudienceError(f"Unknown age head {quoted(age_head)}: use one of {', '.join(AGE_HEADS)}.")
        self.arch = arch
        self.task = task
        self.age_head = age_head
        self.gap_rule = gap_rule
        self.backbone = backbone
        self.feature_width = _pooled_width(backbone)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        age_outputs = N_YEARS if age_head == "years" else len(AGE_CLASSES)
        self.age = nn.Linear(self.feature_width, age_outputs) if "age" in heads else None
        self.gender = nn.Linear(self.feature_width, len(GENDER_CLASSES)) if "gender" in heads else None
        # Not saved with the weights (persistent=False): the gap rule and the prior live in the checkpoint's JSON.
        matrix = torch.as_tensor(year_to_group_matrix(gap_rule), dtype=torch.float32) if age_head == "years" else None
        self.register_buffer("year_to_group", matrix, persistent=False)
        self.register_buffer("age_adjustment", None, persistent=False)
        self.flip_average = False

    @property
    def outputs(self) -> tuple[str, ...]:
        """The keys forward returns, in a fixed order (the ONNX outputs)."""
        heads = tuple(head for head in ("age", "gender") if getattr(self, head) is not None)
        return heads + ((YEARS_OUTPUT,) if self.age is not None and self.age_head == "years" else ())

    def set_age_adjustment(self, adjustment) -> None:
        """Subtract `adjustment` (8 numbers: tau * log prior, audience.model.age_years.prior_adjustment) from the
        age scores from now on; None removes it."""
        if adjustment is None:
            self.age_adjustment = None
            return
        values = torch.as_tensor(adjustment, dtype=torch.float32).reshape(-1)
        if values.numel() != len(AGE_CLASSES) or not torch.isfinite(values).all():
            raise AudienceError(f"an age prior adjustment needs {len(AGE_CLASSES)} finite numbers.")
        device = self.age.weight.device if self.age is not None else None
        self.age_adjustment = values.to(device)

    def set_flip_average(self, on: bool) -> None:
        """From now on, average the features of each image and of its mirror image (left-right) before the heads
        (twice the backbone's compute); False: one view."""
        self.flip_average = bool(on)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.flip_average:  # one backbone pass over both views (a batch of 2N costs less than two of N)
            both = self.backbone(torch.cat([x, torch.flip(x, dims=(3,))]))
            features = (both[: x.shape[0]] + both[x.shape[0]:]) / 2
        else:
            features = self.backbone(x)
        features = self.dropout(features)
        logits = {}
        if self.age is not None:
            scores = self.age(features)
            if self.year_to_group is not None:
                if self.age_adjustment is not None:
                    # per year, its groups' correction: the group sums below then carry exactly the groups' one
                    # (a gap year's is the mean of its two neighbours'), and the years' answer agrees with the group
                    scores = scores - self.year_to_group @ self.age_adjustment
                logits[YEARS_OUTPUT] = scores
                groups = torch.softmax(scores.float(), dim=1) @ self.year_to_group
                scores = torch.log(groups.clamp_min(1e-12))
            elif self.age_adjustment is not None:
                scores = scores - self.age_adjustment
            logits["age"] = scores
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
    age_head: str = "groups",
    gap_rule: str = DEFAULT_GAP_RULE,
) -> AgeGenderNet:
    """An AgeGenderNet for `arch` (an ARCHS key) and `task` (one of TASKS).

    pretrained=True downloads the ImageNet backbone through timm (offline: AudienceError within
    seconds, never a silent random init). `weights_file` loads the ImageNet backbone from a local
    .safetensors/.pth instead (its classifier is dropped; every backbone tensor must be in the file).
    `drop_rate` is dropout before the heads. `age_head` "groups" or "years" (with its `gap_rule`).
    """
    check_arch(arch)
    check_task(task)
    backbone = _create_backbone(arch, pretrained, weights_file)
    return AgeGenderNet(backbone, arch=arch, task=task, drop_rate=drop_rate, age_head=age_head, gap_rule=gap_rule)


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
