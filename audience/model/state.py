"""The one strict state-dict check: every tensor a model expects, none more, each of its shape.

torch's own `load_state_dict(strict=True)` raises a long RuntimeError listing every key; a person
needs one sentence with counts and an example. Used for checkpoints and for ImageNet weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from audience.errors import AudienceError

if TYPE_CHECKING:
    from torch import nn


def load_state_strictly(module: nn.Module, state: Mapping, what: str) -> None:
    """Load `state` into `module`, or AudienceError '<what> (N missing, N unexpected, N wrong-shaped tensors, e.g. k)'.

    `what` starts the sentence and says what did not fit, e.g. "Weights file X does not hold ImageNet
    weights for resnet50".
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or misshaped:
        example = (missing or unexpected or misshaped)[0]
        raise AudienceError(f"{what} ({len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} "
                            f"wrong-shaped tensors, e.g. {example}).")
    module.load_state_dict(state, strict=True)
