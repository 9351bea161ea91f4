"""Training-throughput benchmark: this pipeline against a seed-like naive one, on the same machine.

This pipeline: images decoded once into the memory-mapped cache, worker processes, the project's
albumentations train transform, bf16 autocast + channels_last on CUDA. Naive (the seed's data
path): the full-size file decoded with cv2 at every step, no workers, fp32, no cache, with the
same train transform, so the ratio measures the data path and not a choice of augmentations; the
seed's own (lighter) augmentation list is timed too ("seed"). Loaders and steps are timed in
alternation, best of `repeats`, to damp other load on the machine.

Decoding cost grows with the image size: the demo images are 128 px while real Adience aligned
faces are 816 x 816 JPEGs, so on small images a "full-size" copy (the same images upscaled to
816 px with a little photographic grain, as JPEGs in a temporary folder; their mean size is
reported) is measured too, and both are reported.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, Dataset

from audience.data.cache import CachedFaces, build_image_cache, cache_size_for
from audience.data.formats import read_dataset
from audience.data.roots import resolve_data_root
from audience.data.splits import labelled_mask
from audience.data.transforms import build_train_transform
from audience.errors import AudienceError
from audience.model.network import build_model, model_data_config
from audience.train.config import TrainConfig
from audience.train.loop import describe_device, make_loader, resolve_device, task_loss

FULL_SIZE_PX = 816  # Adience aligned faces
# For the run-time estimate: about 17.4k labelled faces, 4/5 of them in training folds, 9/10 of those trained on.
ADIENCE_TRAIN_IMAGES_PER_FOLD = 12_500
ADIENCE_EVAL_IMAGES_PER_FOLD = 1_400 + 3_500  # validation every epoch + the test fold once (mostly the former)


def seed_augmentations(image_size: int) -> A.Compose:
    """The seed notebooks' training augmentations (albumentations 2 spelling)."""
    return A.Compose([
        A.RandomResizedCrop(size=(image_size, image_size), scale=(0.6, 1.0)),
        A.HorizontalFlip(),
        A.RandomBrightnessContrast(),
        A.OneOf([A.CLAHE(), A.Blur(blur_limit=5), A.RGBShift()], p=1.0),
        A.Normalize(),
        ToTensorV2(),
    ], seed=0)


class NaiveFaces(Dataset):
    """The seed's data path: cv2.imread of the full file and then the augmentations, every time."""

    def __init__(self, paths: list[str], age: np.ndarray, gender: np.ndarray, pipeline: A.Compose):
        self.paths, self.age, self.gender, self.pipeline = paths, age, gender, pipeline

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = cv2.cvtColor(cv2.imread(self.paths[index], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return self.pipeline(image=image)["image"], int(self.age[index]), int(self.gender[index])


def _time_loader(loader: DataLoader, batches: int, step: Callable | None = None) -> float:
    """Images per second over `batches` batches after one warm-up batch (worker start-up excluded)."""
    iterator = iter(loader)
    warm = next(iterator)
    if step is not None:
        step(*warm)
    images, started = 0, time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        if step is not None:
            step(*batch)
        images += len(batch[0])
    if step is not None and torch.cuda.is_available():
        torch.cuda.synchronize()
    return images / (time.perf_counter() - started)


def _stepper(arch: str, device: torch.device, fast: bool) -> Callable:
    """One training step (forward, loss, backward, AdamW) per call; `fast`: bf16 + channels_last on CUDA."""
    model = build_model(arch, "age+gender", pretrained=False).to(device)
    cuda = device.type == "cuda"
    if fast and cuda:
        model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    config = TrainConfig(data="-", age_weight=1.0, gender_weight=1.0, label_smoothing=0.0)

    def step(images, age, gender):
        if fast and cuda:
            images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
        else:
            images = images.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=fast and cuda):
            outputs = model(images)
        loss = task_loss(outputs, age.to(device), gender.to(device), config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _full_size_copy(paths: list[str], folder: Path, size: int) -> list[str]:
    """Upscaled JPEG copies, with mild grain: a smooth upscale decodes faster than a real photo of that size."""
    rng = np.random.default_rng(0)
    copies = []
    for index, path in enumerate(paths):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise AudienceError(f"{path}: OpenCV cannot read this image.")
        large = cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        large = np.clip(large + rng.normal(0.0, 3.0, large.shape), 0, 255).astype(np.uint8)
        target = folder / f"{index:05d}.jpg"
        cv2.imwrite(str(target), large, [cv2.IMWRITE_JPEG_QUALITY, 95])
        copies.append(str(target))
    return copies


def _best_of(repeats: int, measurements: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Run the measurements in alternation `repeats` times; the best (least disturbed) value of each."""
    best = dict.fromkeys(measurements, 0.0)
    for _ in range(repeats):
        for name, measure in measurements.items():
            best[name] = max(best[name], measure())
    return best


def _measure(paths, age, gender, arch, image_size, batch_size, batches, loader_workers, step_workers, device,
             cache_dir: Path, repeats: int, say: Callable[[str], None]) -> dict:
    config = model_data_config(arch)
    cache = build_image_cache(paths, cache_size_for(image_size), cache_dir=cache_dir)
    result = {"images": len(paths), "source_px": int(max(cv2.imread(paths[0]).shape[:2])),
              "source_kb": float(np.mean([os.path.getsize(p) for p in set(paths)]) / 1024),
              "cache_build_images_per_s": len(cache.paths) / max(cache.seconds, 1e-9)}
    transform = build_train_transform(image_size, config["mean"], config["std"])
    ours = CachedFaces(cache, cache.rows_of(paths), age, gender, transform)
    naive = NaiveFaces(paths, age, gender, transform.pipeline)
    seed = NaiveFaces(paths, age, gender, seed_augmentations(image_size))

    def our_loader(workers: int) -> DataLoader:
        loader = make_loader(ours, batch_size, device, workers, train=True, persistent=False)
        loader.sampler.set_seed(0)
        return loader

    def naive_loader(dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0,
                          generator=torch.Generator().manual_seed(0))

    speeds = _best_of(repeats, {
        "loader": lambda: _time_loader(our_loader(loader_workers), batches),
        "naive_loader": lambda: _time_loader(naive_loader(naive), batches),
        "seed_loader": lambda: _time_loader(naive_loader(seed), batches),
    })
    result.update({f"{name}_images_per_s": value for name, value in speeds.items()})
    result["loader_ratio"] = speeds["loader"] / speeds["naive_loader"]
    result["loader_ratio_vs_seed_augmentations"] = speeds["loader"] / speeds["seed_loader"]
    say(f"  loader: {speeds['loader']:.0f} img/s (cache + {loader_workers} workers) vs {speeds['naive_loader']:.0f} "
        f"naive -> {result['loader_ratio']:.1f}x (naive with the seed's augmentations: {speeds['seed_loader']:.0f} "
        f"img/s -> {result['loader_ratio_vs_seed_augmentations']:.1f}x)")
    cores, threads = os.cpu_count() or 1, torch.get_num_threads()
    our_step, naive_step = _stepper(arch, device, True), _stepper(arch, device, False)

    def our_steps() -> float:
        # As the trainer does on CPU: compute threads only on the cores the workers leave free.
        torch.set_num_threads(max(1, cores - step_workers) if device.type == "cpu" else threads)
        try:
            return _time_loader(our_loader(step_workers), batches, our_step)
        finally:
            torch.set_num_threads(threads)

    steps = _best_of(repeats, {"step": our_steps,
                               "naive_step": lambda: _time_loader(naive_loader(naive), batches, naive_step)})
    result.update({f"{name}_images_per_s": value for name, value in steps.items()})
    result["step_ratio"] = steps["step"] / steps["naive_step"]
    say(f"  training steps: {steps['step']:.1f} img/s vs {steps['naive_step']:.1f} img/s naive -> "
        f"{result['step_ratio']:.2f}x")
    return result


def benchmark_train(
    data: str | Path,
    arch: str = "mobilenetv3_large_100",
    batches: int = 10,
    batch_size: int = 32,
    image_size: int | None = None,
    workers: int | None = None,
    device: str = "auto",
    full_size: int = FULL_SIZE_PX,
    repeats: int = 2,
    say: Callable[[str], None] = print,
) -> dict:
    """Measure both pipelines (see the module docstring) and return the numbers as plain data.

    `workers`: loader processes of this pipeline for the loader-alone test (default: every core);
    training steps use the trainer's default (TrainConfig.default_workers). Each pipeline reads the same images.
    """
    if batches < 1 or batch_size < 1 or repeats < 1:
        raise AudienceError("batches, batch size and repeats must be at least 1.")
    target = resolve_device(device)
    table = read_dataset(resolve_data_root(data), images="auto")
    faces = table.faces[labelled_mask(table.faces, "age+gender")]
    if faces.empty:
        raise AudienceError(f"{table.root}: no labelled face with an image to benchmark on.")
    count = (batches + 1) * batch_size
    chosen = faces.iloc[np.resize(np.arange(len(faces)), min(count, len(faces)))]
    paths = chosen["path"].astype(str).tolist()
    age, gender = chosen["age_class"].to_numpy(), chosen["gender_class"].to_numpy()
    image_size = image_size or model_data_config(arch)["image_size"]
    cores = os.cpu_count() or 1
    loader_workers = cores if workers is None else workers
    step_workers = TrainConfig(data="-", workers=workers).default_workers(target.type)
    say(f"benchmark train: {arch} at {image_size} px, batch {batch_size}, {batches} batches, "
        f"{describe_device(target)}, data {table.name} ({len(paths)} images)")
    report = {"benchmark": "train", "arch": arch, "device": describe_device(target), "cores": cores,
              "torch_threads": torch.get_num_threads(), "repeats": repeats, "batch_size": batch_size,
              "batches": batches,
              "image_size": image_size, "loader_workers": loader_workers, "step_workers": step_workers,
              "data": table.name, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="audience-bench-") as scratch:
        scratch = Path(scratch)
        variants = {"given": paths}
        source_px = max(cv2.imread(paths[0]).shape[:2])
        if source_px < full_size * 0.75:
            say(f"making a full-size copy: {len(set(paths))} images upscaled from {source_px} to {full_size} px JPEGs")
            unique = list(dict.fromkeys(paths))
            (scratch / "full").mkdir()
            copies = dict(zip(unique, _full_size_copy(unique, scratch / "full", full_size), strict=True))
            variants["full_size"] = [copies[p] for p in paths]
        for name, variant_paths in variants.items():
            say(f"{name} images ({'as given' if name == 'given' else f'{full_size} px'}):")
            report["variants"][name] = _measure(variant_paths, age, gender, arch, image_size, batch_size, batches,
                                                loader_workers, step_workers, target, scratch / f"cache-{name}",
                                                repeats, say)
    headline = report["variants"].get("full_size", report["variants"]["given"])
    report["loader_ratio"] = headline["loader_ratio"]
    report["step_ratio"] = headline["step_ratio"]
    report["headline_variant"] = "full_size" if "full_size" in report["variants"] else "given"
    report["estimate"] = _estimate(headline["step_images_per_s"], arch)
    say(f"estimate: a 5-fold x 10-epoch {arch} run on real Adience would take about "
        f"{report['estimate']['hours']:.1f} h here")
    if target.type == "cuda":
        report["cuda"] = _cuda_steps(paths, age, gender, image_size, batch_size,
                                     batches, step_workers, target, say)
    return report


def _estimate(train_images_per_s: float, arch: str) -> dict:
    # Inference is taken as 3x faster per image than a training step (no backward pass).
    per_fold = 10 * (ADIENCE_TRAIN_IMAGES_PER_FOLD / train_images_per_s
                     + ADIENCE_EVAL_IMAGES_PER_FOLD / (3 * train_images_per_s))
    return {"arch": arch, "folds": 5, "epochs": 10, "train_images_per_fold": ADIENCE_TRAIN_IMAGES_PER_FOLD,
            "seconds": 5 * per_fold, "hours": 5 * per_fold / 3600}


def _cuda_steps(paths, age, gender, image_size, batch_size, batches, workers, device, say) -> dict:
    """Training steps per second of both real archs with this pipeline (CUDA only)."""
    result = {}
    with tempfile.TemporaryDirectory(prefix="audience-bench-cuda-") as scratch:
        for arch in ("mobilenetv3_large_100", "resnet50"):
            config = model_data_config(arch)
            cache = build_image_cache(paths, cache_size_for(image_size), cache_dir=scratch)
            dataset = CachedFaces(cache, cache.rows_of(paths), age, gender,
                                  build_train_transform(image_size, config["mean"], config["std"]))
            loader = make_loader(dataset, batch_size, device, workers, train=True, persistent=False)
            images_per_s = _time_loader(loader, batches, _stepper(arch, device, True))
            result[arch] = {"images_per_s": images_per_s, "steps_per_s": images_per_s / batch_size,
                            "estimate": _estimate(images_per_s, arch)}
            say(f"cuda {arch}: {images_per_s / batch_size:.1f} steps/s ({images_per_s:.0f} img/s); 5x10 run "
                f"about {result[arch]['estimate']['hours']:.2f} h")
    return result
