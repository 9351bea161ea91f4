"""CPU latency of one face through a model, measured once per (arch, image size) and cached.

Timing does not depend on the weights' values, so a random-init model stands in for a trained
one; the number is the median of `repeats` batch-1 forward passes after a warm-up, on this
machine's CPU with torch's current thread count (the minimum is kept too: on a busy machine the
median includes waiting for the CPU). The cache is a JSON file under AUDIENCE_HOME, so
the Compare tab measures an architecture once, not on every refresh.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from audience import settings
from audience.files import read_json, write_json_atomic

CACHE_NAME = "cpu_latency.json"
_lock = threading.Lock()


def _cache_path() -> Path:
    return settings.home_dir() / CACHE_NAME


def _key(arch: str, image_size: int) -> str:
    return f"{arch}@{int(image_size)}"


def _read_cache() -> dict:
    try:
        value = read_json(_cache_path())
    except (OSError, ValueError):
        return {}  # absent or damaged: measure again
    return value if isinstance(value, dict) else {}


def cached_latency(arch: str, image_size: int) -> dict | None:
    """The cached measurement {"ms" (median), "min_ms", "threads", "repeats", "measured", "torch"} or None."""
    entry = _read_cache().get(_key(arch, image_size))
    return entry if isinstance(entry, dict) and isinstance(entry.get("ms"), int | float) else None


def time_model(model, image_size: int, repeats: int = 10, threads: int | None = None) -> dict:
    """CPU milliseconds per face of `model` (in eval mode, batch 1 at `image_size`): {"ms" (median), "min_ms",
    "threads", "repeats", "measured", "torch"}, after two warm-up passes; with `threads` torch computes with that
    many threads for the measurement (its setting is restored after)."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        model = model.eval()
        image = torch.zeros(1, 3, int(image_size), int(image_size))
        timings = []
        with torch.inference_mode():
            for index in range(repeats + 2):
                started = time.perf_counter()
                model(image)
                if index >= 2:  # the first passes pay for allocation and kernel selection
                    timings.append(time.perf_counter() - started)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    return {
        "ms": float(np.median(timings) * 1000), "min_ms": float(np.min(timings) * 1000),
        "threads": used, "repeats": repeats,
        "measured": datetime.now().astimezone().isoformat(timespec="seconds"), "torch": torch.__version__,
    }


def measure_cpu_latency(arch: str, image_size: int, repeats: int = 10, refresh: bool = False) -> dict:
    """Median CPU milliseconds per face (batch 1, random-init `arch` at `image_size`), cached."""
    from audience.model.network import build_model
    from audience.train.config import check_setting

    check_setting("arch", arch)
    check_setting("image_size", image_size)  # a run's config.json may say -5 or 10^6
    if not refresh and (entry := cached_latency(arch, image_size)):
        return entry
    with _lock:
        entry = time_model(build_model(arch, "age+gender", pretrained=False), image_size, repeats)
        cache = _read_cache()
        cache[_key(arch, image_size)] = entry
        write_json_atomic(_cache_path(), cache)
    return entry
