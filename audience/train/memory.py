"""How much memory a training run asks for, against what the machine has: a run that cannot fit is refused
before it starts (batch 4,096 or image size 512 passed the settings' ranges and took the server down).

The estimate is a training step's peak: batch x image_size^2 x TRAIN_BYTES_PER_PIXEL[arch] for the
activations kept for the backward pass, plus 16 bytes per parameter (weights, gradients, two AdamW
moments). The factors were measured on CPU (peak RSS of two AdamW steps at batch 8-64, minus the
parameters' memory; docs/measurements.md), then rounded up: tiny 540-580, mobilenetv3_large_100
1,380-1,460, resnet50 about 2,570 bytes per input pixel and sample.
"""

from __future__ import annotations

import os
from pathlib import Path

from audience.errors import AudienceError

TRAIN_BYTES_PER_PIXEL = {"tiny": 640, "mobilenetv3_large_100": 1600, "resnet50": 2800}
UNKNOWN_ARCH_BYTES_PER_PIXEL = 3000
BYTES_PER_PARAMETER = 16
PARAMETERS = {"tiny": 100_000, "mobilenetv3_large_100": 4_300_000, "resnet50": 23_600_000}
MEMORY_FRACTION = 0.5  # a run may plan on at most this share of the memory available when it starts


def training_bytes(arch: str, batch_size: int, image_size: int) -> int:
    """The estimated peak memory of one training step (bytes)."""
    per_pixel = TRAIN_BYTES_PER_PIXEL.get(arch, UNKNOWN_ARCH_BYTES_PER_PIXEL)
    return int(batch_size) * int(image_size) ** 2 * per_pixel + PARAMETERS.get(arch, 25_000_000) * BYTES_PER_PARAMETER


def available_bytes() -> tuple[int, str]:
    """(bytes, where): free GPU memory when training would run on a GPU, else the host's available memory
    (MemAvailable, or what the container's cgroup still allows, whichever is smaller)."""
    import torch

    if torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        return int(free), "free GPU memory"
    available = _meminfo_available()
    limit = _cgroup_room()
    if limit is not None and (available is None or limit < available):
        return limit, "memory the container may still use"
    return (available if available is not None else 0), "available memory"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return None
    return None


def _cgroup_room() -> int | None:
    """cgroup v2 memory.max minus memory.current, or None when unlimited or not readable."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def _gb(value: int) -> str:
    return f"{value / 1e9:,.1f} GB"


def check_training_memory(arch: str, batch_size: int, image_size: int, available: tuple[int, str] | None = None) -> int:
    """The estimate (bytes) when it fits in MEMORY_FRACTION of the available memory; else AudienceError
    naming the estimate, the memory there is and what to lower."""
    needed = training_bytes(arch, batch_size, image_size)
    room, where = available if available is not None else available_bytes()
    if needed > room * MEMORY_FRACTION:
        raise AudienceError(
            f"Training {arch} at batch size {batch_size:,} and image size {image_size:,} needs about {_gb(needed)} "
            f"of memory, more than half of the {_gb(room)} of {where} here; lower the batch size or the image size."
        )
    return needed
