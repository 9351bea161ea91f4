"""Train/eval pipelines: shapes, normalisation, aspect handling and seeded reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from audience.data.transforms import AUGMENT_STRENGTHS, build_eval_transform, build_train_transform
from audience.errors import AudienceError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture
def face() -> np.ndarray:
    """A non-square RGB image with structure (a gradient), so crops and flips change it."""
    rows, cols = np.mgrid[0:90, 0:70]
    return np.stack([rows * 2, cols * 3, (rows + cols) % 256], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("strength", AUGMENT_STRENGTHS)
def test_train_transform_gives_a_float_tensor_of_the_size(face, strength):
    out = build_train_transform(48, MEAN, STD, strength=strength, seed=0)(face)
    assert out.shape == (3, 48, 48) and out.dtype == torch.float32


def test_eval_transform_keeps_aspect_and_normalises(face):
    out = build_eval_transform(32, MEAN, STD)(face)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    # 90x70 -> 32x25: the 7 padded columns are black, i.e. (0 - mean) / std after Normalize.
    black = torch.tensor([(0 - m) / s for m, s in zip(MEAN, STD, strict=True)])
    left_pad = out[:, :, 0]
    assert torch.allclose(left_pad, black[:, None].expand_as(left_pad), atol=1e-5)
    assert not torch.allclose(out[:, :, 16], black[:, None].expand_as(out[:, :, 16]), atol=1e-2)


def test_eval_transform_is_deterministic(face):
    transform = build_eval_transform(32, MEAN, STD)
    assert torch.equal(transform(face), transform(face))


def test_uniform_image_normalises_to_zero_mean():
    grey = np.full((40, 40, 3), [124, 116, 104], dtype=np.uint8)  # ImageNet mean in 0-255
    out = build_eval_transform(16, MEAN, STD)(grey)
    assert out.abs().max() < 0.02


def test_same_seed_same_augmentations_different_seed_different(face):
    first = build_train_transform(48, MEAN, STD, seed=7)
    second = build_train_transform(48, MEAN, STD, seed=7)
    first_outputs = [first(face) for _ in range(4)]
    assert all(torch.equal(a, second(face)) for a in first_outputs)
    # Successive calls draw new augmentations.
    assert not all(torch.equal(first_outputs[0], other) for other in first_outputs[1:])
    other = build_train_transform(48, MEAN, STD, seed=8)
    assert not all(torch.equal(a, other(face)) for a in first_outputs)
    first.set_seed(7)
    assert torch.equal(first(face), first_outputs[0])


def test_per_call_seed_repeats_that_call(face):
    transform = build_train_transform(48, MEAN, STD, seed=0)
    first = transform(face, seed=11)
    transform(face)
    assert torch.equal(transform(face, seed=11), first)
    assert not torch.equal(transform(face, seed=12), first)


def applied_steps(transform, image, seeds) -> np.ndarray:
    """Which of HorizontalFlip and Affine (both p=0.5 in "default") a call with each per-call seed applied."""
    transform.pipeline.save_applied_params = True
    rows = []
    for seed in seeds:
        transform._restart_rng(seed)  # what transform(image, seed=seed) does first
        names = {step[0] for step in transform.pipeline(image=image)["applied_transforms"]}
        rows.append(("HorizontalFlip" in names, "Affine" in names))
    return np.array(rows)


def test_augmentation_steps_fire_independently(face):
    # albumentations' own seeding gives each step an identical RNG, so from a fresh seed equal-p
    # steps would always fire together.
    applied = applied_steps(build_train_transform(32, MEAN, STD, seed=3), face, range(300))
    assert 0.35 < applied[:, 0].mean() < 0.65 and 0.35 < applied[:, 1].mean() < 0.65
    both = np.mean(applied[:, 0] & applied[:, 1])
    assert 0.15 < both < 0.35  # about 0.25 when independent, 0.5 when locked together


def test_default_seed_follows_torch_manual_seed(face):
    torch.manual_seed(123)
    first = build_train_transform(48, MEAN, STD)(face)
    torch.manual_seed(123)
    assert torch.equal(build_train_transform(48, MEAN, STD)(face), first)


class RepeatedImage(Dataset):
    def __init__(self, image: np.ndarray, transform, length: int = 4):
        self.image, self.transform, self.length = image, transform, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.image)


def test_workers_draw_different_augmentations_yet_repeat_under_the_same_seed(face):
    def epoch_batches(seed: int) -> torch.Tensor:
        dataset = RepeatedImage(face, build_train_transform(32, MEAN, STD, seed=0))
        loader = DataLoader(dataset, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(seed))
        return torch.cat(list(loader))

    batches = epoch_batches(0)
    # Items 0 and 1 come from the two workers' first calls: they must differ.
    assert not torch.equal(batches[0], batches[1])
    assert torch.equal(batches, epoch_batches(0))
    assert not torch.equal(batches, epoch_batches(1))


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 10), dtype=np.uint8),
        np.zeros((10, 10, 4), dtype=np.uint8),
        np.zeros((10, 10, 3), dtype=np.float32),
        np.zeros((0, 10, 3), dtype=np.uint8),
        "face.jpg",
    ],
)
def test_bad_images_raise_one_sentence(image):
    with pytest.raises(AudienceError, match="image"):
        build_eval_transform(16, MEAN, STD)(image)


def test_bad_settings_are_refused():
    with pytest.raises(AudienceError, match="default"):
        build_train_transform(32, MEAN, STD, strength="heavy")
    with pytest.raises(AudienceError, match="too small"):
        build_eval_transform(2, MEAN, STD)


def test_exposure_adds_washed_out_crops_that_default_barely_makes():
    """"exposure" lifts and flattens some crops (a washed-out photo); "default"'s colour jitter rarely does.
    Seeded, so the counts are fixed: 28 and 2 of 400 when written."""
    rows, cols = np.mgrid[0:64, 0:64]
    face = (np.full((64, 64, 3), [150, 110, 90]) + ((rows + cols) % 40)[..., None]).astype(np.uint8)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    centre = (build_eval_transform(48, MEAN, STD)(face) * std + mean)[:, 16:32, 16:32]

    def washed_out(strength: str) -> int:
        transform = build_train_transform(48, MEAN, STD, strength=strength, seed=0)
        crops = torch.stack([(transform(face) * std + mean)[:, 16:32, 16:32] for _ in range(400)])
        lighter = crops.mean(dim=(1, 2, 3)) > centre.mean() + 0.1
        flatter = crops.std(dim=(1, 2, 3)) < 0.8 * centre.std()
        return int((lighter & flatter).sum())

    default, exposure = washed_out("default"), washed_out("exposure")
    assert exposure >= 15 and exposure >= 4 * max(default, 1), (default, exposure)
