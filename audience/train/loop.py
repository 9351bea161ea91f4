"""The parts of one training epoch: device, seeded sampling, loaders, loss, schedule, steps, inference.

Reproducibility: an epoch's randomness is a pure function of (seed, fold, epoch) (`epoch_seed`).
The sampler draws the order and one augmentation seed per sample from it, and torch (dropout,
initialisation) is reseeded from it, so the same epoch gives the same batches whatever the number
of workers, and a run resumed at an epoch boundary continues exactly as if it had not stopped.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from audience.errors import AudienceError
from audience.labels import HEADS, NO_CLASS
from audience.model.age_years import DEFAULT_SIGMA, years_targets
from audience.model.network import YEARS_OUTPUT


class LossNotFinite(RuntimeError):
    """The training loss became NaN or infinite (the step was not applied)."""


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; an unavailable CUDA request is an AudienceError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AudienceError(f"device {name} was asked for but no CUDA GPU is available; use --device cpu or auto.")
    return torch.device(name)


def describe_device(device: torch.device, threads: int | None = None) -> str:
    """The device as the log names it; `threads`: the compute threads the run will use (default: the current count)."""
    threads = threads or torch.get_num_threads()
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}, {threads} CPU threads)"
    return f"cpu ({os.cpu_count()} cores, {threads} threads)"


def epoch_seed(seed: int, fold: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, fold, epoch]).generate_state(1)[0])


class SeededSampler(Sampler):
    """Yields (index, augmentation seed) pairs: a permutation and per-sample seeds drawn from `seed`."""

    def __init__(self, n: int, shuffle: bool = True):
        self.n, self.shuffle, self.seed = n, shuffle, 0

    def set_seed(self, seed: int) -> None:
        self.seed = seed

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        seeds = rng.integers(0, 2**63 - 1, size=self.n)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))

    def __len__(self) -> int:
        return self.n


class BalancedSampler(SeededSampler):
    """SeededSampler's (index, augmentation seed) pairs, as many per epoch, drawn with replacement so that each
    label (an age group, a race; rows without one form a group of their own) comes up equally often on average:
    the training faces' class balance for `--balance` (a rare group's faces are seen several times an epoch, a
    common group's not all). With `power` under 1 (`--balance-power`) the groups are only partly evened out: a
    face's weight is its group's size to the -power, so a group comes up in proportion to its size^(1 - power)."""

    def __init__(self, labels, power: float = 1.0):
        names = np.array(["" if label is None or label != label else str(label) for label in labels], dtype=object)
        _, group, counts = np.unique(names.astype(str), return_inverse=True, return_counts=True)
        weights = counts[group].astype(float) ** -power
        self.p = weights / weights.sum()
        super().__init__(len(names))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng(self.seed)
        order = rng.choice(self.n, size=self.n, replace=True, p=self.p)
        seeds = rng.integers(0, 2**63 - 1, size=self.n)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


def _init_worker(_: int) -> None:
    # Ctrl-C is the main process's business (it sets the stop flag); workers must not die of it.
    # (No cv2.setNumThreads here: in a forked worker it waits forever for the parent's pool threads.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def switch_on(setting: str, device: torch.device) -> bool:
    """A GPU-path setting ("auto", "on", "off"): auto means on with CUDA, off on the CPU."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def make_loader(
    dataset: Dataset, batch_size: int, device: torch.device, workers: int, train: bool, persistent: bool = True,
    pin_memory: str = "auto", sampler: Sampler | None = None,
) -> DataLoader:
    """A training loader (seeded shuffle, drops a last partial batch when there is more than one) or an eval loader.

    `sampler` replaces the default one (a distributed run gives each process its share of the rows).
    """
    options = {
        "batch_size": batch_size,
        "num_workers": workers,
        "pin_memory": switch_on(pin_memory, device),
        "worker_init_fn": _init_worker if workers else None,
        "persistent_workers": bool(workers) and persistent,
        # Starting or resetting an iterator draws worker seeds; from its own generator it leaves the global
        # torch RNG (dropout) alone, which otherwise would depend on whether the workers were already running.
        "generator": torch.Generator().manual_seed(0),
    }
    if workers:
        options["prefetch_factor"] = 4
    if train:
        sampler = sampler if sampler is not None else SeededSampler(len(dataset))
        return DataLoader(dataset, sampler=sampler, drop_last=len(sampler) > batch_size, **options)
    return DataLoader(dataset, shuffle=False, sampler=sampler, **options)


def steps_per_epoch(loader: DataLoader, max_batches: int | None) -> int:
    return min(len(loader), max_batches) if max_batches else len(loader)


def build_scheduler(optimizer: torch.optim.Optimizer, config, total_steps: int):
    """OneCycle or warm-up + cosine, both stepped once per batch over exactly `total_steps` steps."""
    if config.schedule == "onecycle" and total_steps >= 3:
        # OneCycleLR divides by the length of its warm-up phase, pct_start * total_steps - 1 steps: with a
        # short run (1 epoch of 5 batches at pct 0.2) that is 0 and it raises ZeroDivisionError, so the
        # warm-up is kept at 2 steps or more and leaves at least 1 step to anneal.
        pct_start = min(max(config.warmup_pct, 2 / total_steps), 1 - 1 / total_steps)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=pct_start,
            div_factor=config.div_factor, final_div_factor=config.final_div_factor,
        )
    # warm-up + cosine (also one-cycle's stand-in for runs of 1-2 steps, too short for OneCycleLR)
    warmup = max(1, round(config.warmup_pct * total_steps)) if config.warmup_pct > 0 else 0
    start, end = 1.0 / config.div_factor, 1.0 / (config.div_factor * config.final_div_factor)

    def factor(step: int) -> float:
        if step < warmup:
            return start + (1.0 - start) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - 1 - warmup))
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress))

    for group in optimizer.param_groups:
        group["lr"] = config.lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def head_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Mean cross-entropy over the rows that have a label; 0 when none has (plain CE would give NaN)."""
    labelled = (target != NO_CLASS).sum()
    total = F.cross_entropy(logits.float(), target, ignore_index=NO_CLASS, label_smoothing=smoothing, reduction="sum")
    return total / labelled.clamp(min=1)


def years_loss(logits: torch.Tensor, years: torch.Tensor, groups: torch.Tensor, sigma: float) -> torch.Tensor:
    """Mean soft cross-entropy of a years head over the rows with an exact age or an age group; 0 when none has."""
    targets, labelled = years_targets(years, groups, sigma)
    total = -(targets * torch.log_softmax(logits.float(), dim=1)).sum()
    return total / labelled.sum().clamp(min=1)


def task_loss(outputs: dict, age: torch.Tensor, gender: torch.Tensor, config,
              years: torch.Tensor | None = None) -> torch.Tensor:
    """The training objective: the weighted losses of the task's heads. A years age head ("age_years" in
    `outputs`) learns from `years` (exact ages, -1 where unknown) and the age groups (`age`)."""
    loss = torch.zeros((), device=age.device)
    if YEARS_OUTPUT in outputs:
        years = years if years is not None else torch.full_like(age, -1)
        sigma = getattr(config, "age_sigma", None) or DEFAULT_SIGMA
        loss = loss + config.age_weight * years_loss(outputs[YEARS_OUTPUT], years, age, sigma)
    elif "age" in outputs:
        loss = loss + config.age_weight * head_loss(outputs["age"], age, config.label_smoothing)
    if "gender" in outputs:
        loss = loss + config.gender_weight * head_loss(outputs["gender"], gender, config.label_smoothing)
    return loss


def _labels(item) -> tuple:
    """(images, age, gender, years or None) of a loader's batch: datasets with exact ages add a fourth item."""
    batch, age, gender, *rest = item
    return batch, age, gender, (rest[0] if rest else None)


def _to_device(images: torch.Tensor, device: torch.device, channels_last: bool = True) -> torch.Tensor:
    # channels_last on the CPU too: oneDNN's depthwise convolutions (MobileNetV3) train faster in it than
    # in NCHW (one step of mobilenetv3_large_100, batch 32 at 128 px, 2 threads: 1.55x, measured on a
    # shared 2-core machine under load 11; the README's "Several GPUs" section names the switch).
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return images.to(device, non_blocking=device.type == "cuda", memory_format=layout)


def _autocast(device: torch.device, bf16: str = "auto"):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=switch_on(bf16, device))


def train_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    config,
    device: torch.device,
    steps: int,
    on_batch: Callable[[int, float, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[float, int, bool]:
    """Run up to `steps` batches; return (mean loss, images seen, stopped early).

    `on_batch(step, loss, images_per_s)` after each batch; `should_stop()` is checked before each
    batch. Raises LossNotFinite (before the step is applied) when the loss is NaN or infinite.
    """
    model.train()
    total, images, started = 0.0, 0, time.perf_counter()
    parameters = [p for p in model.parameters() if p.requires_grad]
    for step, item in enumerate(loader, start=1):
        if step > steps:
            break
        if should_stop is not None and should_stop():
            return (total / max(1, step - 1), images, True)
        batch, age, gender, years = _labels(item)
        batch = _to_device(batch, device, config.channels_last)
        age, gender = age.to(device, non_blocking=True), gender.to(device, non_blocking=True)
        years = years.to(device, non_blocking=True) if years is not None else None
        with _autocast(device, config.bf16):
            outputs = model(batch)
        loss = task_loss(outputs, age, gender, config, years)
        value = float(loss.item())
        if not math.isfinite(value):
            raise LossNotFinite(f"the training loss became {value} at batch {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        optimizer.step()
        scheduler.step()
        total += value
        images += len(batch)
        if on_batch is not None:
            on_batch(step, value, images / max(1e-9, time.perf_counter() - started))
    # A stop asked for during the last batch still lets the finished epoch be validated and saved.
    return (total / max(1, steps), images, False)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, loader: DataLoader, device: torch.device, bf16: str = "auto",
                   channels_last: bool = True) -> dict[str, np.ndarray]:
    """Float32 logits of every output over the loader, with the labels: keys age, gender (and age_years for a
    years head), age_true, gender_true (and years_true when the dataset has exact ages)."""
    model.eval()
    logits: dict[str, list] = {}
    labels: dict[str, list] = {"age_true": [], "gender_true": []}
    for item in loader:
        batch, age, gender, years = _labels(item)
        with _autocast(device, bf16):
            outputs = model(_to_device(batch, device, channels_last))
        for head, values in outputs.items():
            logits.setdefault(head, []).append(values.float().cpu().numpy())
        labels["age_true"].append(age.numpy())
        labels["gender_true"].append(gender.numpy())
        if years is not None:
            labels.setdefault("years_true", []).append(years.numpy())
    result = {head: np.concatenate(parts) for head, parts in logits.items()}
    result.update({name: np.concatenate(parts) if parts else np.zeros(0, np.int64) for name, parts in labels.items()})
    return result


def logits_loss(predicted: dict[str, np.ndarray], config) -> float:
    """The training objective (weights and smoothing included) on precomputed logits."""
    outputs = {head: torch.from_numpy(predicted[head]) for head in (*HEADS, YEARS_OUTPUT) if head in predicted}
    age = torch.from_numpy(predicted["age_true"]).long()
    gender = torch.from_numpy(predicted["gender_true"]).long()
    years = torch.from_numpy(predicted["years_true"]).long() if "years_true" in predicted else None
    return float(task_loss(outputs, age, gender, config, years))
