"""What a run trains on, from its TrainConfig: the face table, the automatic settings decided for that
data and the decoded-image cache of every face; the exposure reference of its training faces
(--standardize-exposure); and the TrainConfig a run folder saved (to resume it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from audience.data.adience import AdienceData
from audience.data.cache import ImageCache, build_image_cache, cache_size_for, describe_unreadable
from audience.data.exposure import REFERENCE_SAMPLE, STD_RANGE, exposure_statistics
from audience.data.formats import read_dataset
from audience.data.images import read_image
from audience.data.roots import resolve_data_root
from audience.data.splits import Split, make_split
from audience.errors import AudienceError
from audience.faces.crop_geometry import sample_paths
from audience.files import read_json
from audience.inputs import check_path
from audience.model.archs import ARCHS
from audience.train.config import TrainConfig


def read_data(config: TrainConfig) -> AdienceData:
    """The face table of config.data: an Adience root, a UTKFace folder, or 'demo' (the built-in synthetic set)."""
    return read_dataset(resolve_data_root(config.data), policy=config.policy, images=config.images)


def checkpoint_config(checkpoint, metadata, data: str | Path | None = None) -> TrainConfig:
    """The TrainConfig a checkpoint recorded (`train_config`), with `data` (a data root that moved since) replacing
    its data; AudienceError when it recorded none (its training images cannot be found again)."""
    recorded = metadata.train_config.as_dict() if metadata.train_config is not None else None
    if not recorded:
        raise AudienceError(f"{checkpoint}: it records no training settings (train_config), so its training, "
                            "validation and test faces cannot be found again.")
    return TrainConfig.from_dict({**recorded, **({"data": str(data)} if data else {})})


def checkpoint_split(checkpoint, metadata, data: str | Path | None = None) -> tuple[TrainConfig, AdienceData, Split]:
    """(its TrainConfig, its face table, its split) of a checkpoint this project trained: the training, validation
    and test faces of its fold rebuilt from its `train_config` (checkpoint_config; `data` as there)."""
    config = checkpoint_config(checkpoint, metadata, data)
    dataset = read_data(config)
    split = make_split(dataset, config.protocol, int(metadata.fold or 0), config.val_fraction, config.seed,
                       config.task)
    return config, dataset, split


def resolve_config(config: TrainConfig, data: AdienceData) -> TrainConfig:
    """The config with its automatic settings decided: image size from the arch, pretrained from the data."""
    from audience.model.network import model_data_config  # torch and timm: not at the app's start

    image_size = config.image_size or model_data_config(config.arch)["image_size"]
    pretrained = config.pretrained
    if pretrained is None:
        pretrained = not data.synthetic and ARCHS[config.arch].get("pretrained", True) and not config.weights_file
    if config.balance == "race" and ("race" not in data.faces or data.faces["race"].isna().all()):
        raise AudienceError(f"balance race draws each race equally often, but {data.name} records no race "
                            "(UTKFace's file names do); choose balance none or age.")
    return config.replace(image_size=image_size, pretrained=pretrained)


def build_cache_for(config: TrainConfig, data: AdienceData, emit: Callable[[dict], None]) -> ImageCache:
    """The decoded-image cache of every face of `data` at the size the config's transforms crop from."""
    paths = data.faces["path"].astype(str).tolist()
    size = cache_size_for(config.image_size)

    def progress(done: int, total: int) -> None:
        emit({"type": "log", "message": f"caching images: {done}/{total} decoded at {size} px"})

    cache = build_image_cache(paths, size, cache_dir=config.cache_dir, on_progress=progress)
    if cache.decoded:
        emit({"type": "log", "message": f"image cache built: {cache.decoded} images in {cache.seconds:.1f} s "
                                        f"({cache.array_path})"})
    warning = describe_unreadable(cache)
    if warning:
        emit({"type": "log", "message": f"warning: {warning}"})
    return cache


def read_run_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig saved in a run folder's config.json (to resume it); AudienceError says what is wrong."""
    run_dir = Path(check_path(run_dir, "The run folder"))
    path = run_dir / "config.json"
    if not path.is_file():
        raise AudienceError(f"{run_dir}: not a run folder (it has no config.json), so it cannot be resumed.")
    try:
        values = read_json(path)
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or type(error).__name__
        raise AudienceError(f"{run_dir}: its config.json cannot be read ({reason}), so the run cannot "
                            "be resumed.") from None
    if not isinstance(values, dict):
        raise AudienceError(f"{path}: not a JSON object, so the run cannot be resumed.")
    return TrainConfig.from_dict(values)


def exposure_reference(paths: Sequence[str], limit: int = REFERENCE_SAMPLE) -> dict:
    """exposure_statistics of a fixed sample of `limit` of the image files `paths` (the same sample on every
    machine; an unreadable image is left out). AudienceError when none can be read or their spread is out of
    STD_RANGE (the trainer with --standardize-exposure stops before its first epoch)."""
    def readable():
        for path in sample_paths([str(path) for path in paths if isinstance(path, str) and path], limit):
            try:
                yield read_image(path)
            except AudienceError:
                continue

    reference = exposure_statistics(readable())
    low, high = STD_RANGE
    if not low <= reference["std"] <= high:
        raise AudienceError(f"The training faces have a pixel spread of {reference['std']:.1f} on average, outside "
                            f"{low:.0f}-{high:.0f} (almost uniform images?), so there is no exposure to standardise "
                            "to.")
    return reference
