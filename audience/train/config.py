"""`TrainConfig`: the one definition of the training settings.

The CLI flags (`add_config_arguments`), the UI form and a run's `config.json` are all made from
the fields below: name, type, default and help text live here and nowhere else.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from audience.data.adience import IMAGE_MODES, N_FOLDS, AdienceData
from audience.data.cache import ImageCache, build_image_cache, cache_size_for, describe_unreadable
from audience.data.formats import read_dataset
from audience.data.roots import DEMO_DATA, resolve_data_root
from audience.data.splits import PROTOCOLS
from audience.data.transforms import AUGMENT_STRENGTHS
from audience.errors import AudienceError, quoted
from audience.inputs import check_path, name_slug
from audience.labels import POLICIES, TASKS
from audience.model.network import ARCHS, model_data_config

SCHEDULES: tuple[str, ...] = ("onecycle", "cosine")
SWITCHES: tuple[str, ...] = ("auto", "on", "off")  # a GPU path: auto = on with CUDA
# The demo recipe (the Train tab's demo preset and the learnability test): chosen because it clearly
# learns fold 0 of the default demo data in seconds on a CPU; the numbers are in docs/measurements.md.
DEMO_RECIPE: dict = {"data": DEMO_DATA, "arch": "tiny", "folds": "0", "epochs": 15, "batch_size": 16, "lr": 1e-2,
                     "image_size": 64, "augment": "none", "drop_rate": 0.0, "workers": 0}


def _setting(default, help: str, choices: tuple | None = None, flags: tuple[str, ...] = (), minimum=None,
             maximum=None):
    return field(default=default, metadata={"help": help, "choices": choices, "flags": flags, "minimum": minimum,
                                            "maximum": maximum})


def _check_field(item: dataclasses.Field, value) -> None:
    """AudienceError when `value` is not among the field's choices, not finite or outside its range."""
    choices, minimum, maximum = item.metadata["choices"], item.metadata["minimum"], item.metadata["maximum"]
    if choices and value not in choices:
        raise AudienceError(f"{item.name} must be one of {', '.join(map(str, choices))}; got {quoted(value)}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise AudienceError(f"{item.name} must be a finite number; got {value}.")
    if minimum is not None and value < minimum:
        raise AudienceError(f"{item.name} must be at least {minimum}; got {value}.")
    if maximum is not None and value > maximum:
        raise AudienceError(f"{item.name} must be at most {maximum:,}; got {value:,}.")


@dataclass
class TrainConfig:
    """Every setting of a training run (see each field's help)."""

    data: str = _setting("", "Adience root (the folder with fold_0_data.txt ... fold_4_data.txt), a UTKFace folder "
                         "(*.jpg.chip.jpg; image-level folds), or 'demo' for the built-in synthetic demo dataset")
    policy: str = _setting("bins", "age label policy: bins (single ages and intervals inside one class count) or "
                           "strict (only the eight official age groups)", POLICIES)
    images: str = _setting("auto", "image folder: aligned, faces, or auto (aligned if present)",
                           tuple(m for m in IMAGE_MODES if m != "none"))
    arch: str = _setting("mobilenetv3_large_100", "network architecture", tuple(ARCHS))
    task: str = _setting("age+gender", "what to predict", TASKS)
    protocol: str = _setting("folds", "folds: test on official fold k, train and validate (by album) on the "
                             "others; random: the seed's leaky random split (val_fraction of the images)", PROTOCOLS)
    folds: str = _setting("all", "test folds to run: all, or a comma list such as 0 or 0,2")
    epochs: int = _setting(10, "training epochs per fold", minimum=1, maximum=10_000)
    batch_size: int = _setting(64, "images per training batch", minimum=1, maximum=4096)
    lr: float = _setting(1e-3, "peak learning rate (AdamW)", minimum=0.0, maximum=10.0)
    weight_decay: float = _setting(0.05, "AdamW weight decay (not applied to biases and norm layers)", minimum=0.0,
                                  maximum=10.0)
    schedule: str = _setting("onecycle", "learning-rate schedule, stepped every batch", SCHEDULES)
    warmup_pct: float = _setting(0.2, "fraction of the steps spent warming up to the peak rate", minimum=0.0)
    div_factor: float = _setting(50.0, "initial rate = lr / div_factor", minimum=1.0, maximum=1e6)
    final_div_factor: float = _setting(1e3, "final rate = initial rate / final_div_factor", minimum=1.0,
                                      maximum=1e9)
    label_smoothing: float = _setting(0.1, "label smoothing of both cross-entropy losses", minimum=0.0)
    age_weight: float = _setting(1.0, "weight of the age loss", minimum=0.0, maximum=100.0)
    gender_weight: float = _setting(1.0, "weight of the gender loss", minimum=0.0, maximum=100.0)
    drop_rate: float = _setting(0.2, "dropout before the heads", minimum=0.0)
    augment: str = _setting("default", "training augmentation strength", AUGMENT_STRENGTHS)
    image_size: int | None = _setting(None, "input size in pixels (default: the architecture's)", minimum=8,
                                      maximum=1024)
    pretrained: bool | None = _setting(None, "start from ImageNet weights (default: yes for real data, "
                                       "no for the synthetic demo data)")
    weights_file: str | None = _setting(None, "local ImageNet weights (.safetensors/.pth) for the backbone",
                                        flags=("--weights",))
    val_fraction: float = _setting(0.1, "share of the training images held out (whole albums) for validation")
    seed: int = _setting(0, "random seed (splits, initialisation, augmentation, order)", minimum=0,
                         maximum=2**32 - 1)
    workers: int | None = _setting(None, "data-loading worker processes (default: cores - 1 up to 8 with a GPU, "
                                   "a quarter of the cores on the CPU)", minimum=0,
                                   maximum=64)
    threads: int | None = _setting(None, "torch compute threads per process (default: on the CPU the process's share "
                                   "of the cores less the loader workers, with a GPU torch's own); float rounding "
                                   "depends on it, so two runs agree bit for bit only at the same count",
                                   minimum=1, maximum=1024)
    device: str = _setting("auto", "auto, cpu, cuda or cuda:N")
    bf16: str = _setting("auto", "bfloat16 autocast of the forward pass (auto: on with CUDA, off on the CPU)", SWITCHES)
    channels_last: bool = _setting(True, "channels-last memory layout of the network and its input batches")
    pin_memory: str = _setting("auto", "page-locked loader memory for faster host-to-GPU copies (auto: with CUDA)",
                               SWITCHES)
    persistent_workers: bool = _setting(True, "keep the loader's worker processes alive between epochs")
    compile: bool = _setting(False, "torch.compile the training network (slow to start; pays off on long GPU runs)")
    parallel_folds: bool = _setting(False, "under torchrun: each process trains whole folds (rank r takes folds r, "
                                    "r+N, ...) instead of sharing every batch (data parallel)")
    dist_timeout: int = _setting(300, "under torchrun: seconds a process waits for the others before giving up",
                                 minimum=10, maximum=86_400)
    grad_clip: float = _setting(1.0, "gradient-norm clipping (0: off)", minimum=0.0, maximum=1e6)
    out: str | None = _setting(None, "runs folder (default: AUDIENCE_RUNS or ./runs)")
    run_name: str | None = _setting(None, "a name added to the run folder's name")
    max_train_batches: int | None = _setting(None, "stop each epoch after this many batches (smoke tests)",
                                             minimum=1, maximum=10**9)
    calibrate: bool = _setting(True, "fit a temperature per head on the validation set")
    cache_dir: str | None = _setting(None, "decoded-image cache folder (default: AUDIENCE_HOME/image-cache)")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A validated config from plain values (JSON, a UI form: numbers may come as floats or strings)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise AudienceError(f"Unknown training setting {quoted(unknown[0])}; the settings are {', '.join(known)}.")
        hints = typing.get_type_hints(cls)
        converted = {name: _convert(name, value, hints[name]) for name, value in values.items()}
        return cls(**converted).validated()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes).validated()

    def fold_list(self) -> list[int]:
        """The test folds to run, in order."""
        text = str(self.folds).strip().lower()
        if text == "all":
            return list(range(N_FOLDS))
        try:
            folds = [int(part) for part in text.replace(" ", "").split(",") if part != ""]
        except ValueError:
            raise AudienceError(
                f"folds must be 'all' or a comma list of fold numbers such as 0,2; got {quoted(self.folds)}."
            ) from None
        if not folds or any(f not in range(N_FOLDS) for f in folds) or len(set(folds)) != len(folds):
            raise AudienceError(
                f"folds must be 'all' or distinct fold numbers 0 to {N_FOLDS - 1} such as 0,2; "
                f"got {quoted(self.folds)}."
            )
        return folds

    def validated(self) -> TrainConfig:
        """Self, or AudienceError naming the first bad setting."""
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is None and _optional(hints[item.name]):
                continue
            _check_field(item, value)
        self._check_combinations()
        self.fold_list()
        return self

    def _check_combinations(self) -> None:
        """The rules a single field's choices and minimum cannot say."""
        if not str(self.data).strip():
            raise AudienceError("data is required: give an Adience root folder, or 'demo' for the demo dataset.")
        for name in ("data", "out", "cache_dir", "weights_file"):
            if getattr(self, name):
                check_path(getattr(self, name), name)
        if self.run_name:
            name_slug(self.run_name, "run_name")
        if self.lr <= 0:
            raise AudienceError(f"lr must be greater than 0; got {self.lr}.")
        for name in ("warmup_pct", "label_smoothing", "drop_rate"):
            if not getattr(self, name) < 1:
                raise AudienceError(f"{name} must be below 1; got {getattr(self, name)}.")
        if not 0 < self.val_fraction < 0.5:
            raise AudienceError(f"val_fraction must be between 0 and 0.5 (exclusive); got {self.val_fraction}.")
        if self.task == "age+gender" and self.age_weight == 0 and self.gender_weight == 0:
            raise AudienceError("age_weight and gender_weight cannot both be 0.")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d{1,3}", self.device)):
            raise AudienceError(f"device must be auto, cpu, cuda or cuda:N; got {quoted(self.device)}.")

    def default_workers(self, device_type: str) -> int:
        """`workers`, or the automatic count for a device type ("cuda" or "cpu").

        A GPU needs batches fast and the main process needs little CPU: cores - 1 workers, at most 8.
        On the CPU the network's compute dominates and the cached data path is cheap, so a quarter
        of the cores load data and the rest compute (0 workers on one or two cores).
        """
        if self.workers is not None:
            return self.workers
        cores = os.cpu_count() or 1
        return min(8, max(0, cores - 1)) if device_type == "cuda" else cores // 4

    def compute_threads(self, device_type: str, processes_per_node: int = 1) -> int | None:
        """`threads`, or the automatic count: on the CPU the cores of this process's share of the node less the
        loader's workers (more compute threads than free cores thrash); None (torch's own) with a GPU."""
        if self.threads is not None:
            return self.threads
        if device_type != "cpu":
            return None
        cores = (os.cpu_count() or 1) // max(1, processes_per_node)
        return max(1, cores - self.default_workers(device_type))


def check_setting(name: str, value):
    """`value` converted to the type of TrainConfig's field `name`, or AudienceError when it breaks the field's
    rules: for values read back from a run's config.json (which may have been edited) one at a time."""
    item = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
    converted = _convert(name, value, typing.get_type_hints(TrainConfig)[name])
    if converted is not None:
        _check_field(item, converted)
    return converted


def _optional(hint) -> bool:
    return isinstance(hint, types.UnionType) and type(None) in hint.__args__


def _base_type(hint):
    if isinstance(hint, types.UnionType):
        return next(arg for arg in hint.__args__ if arg is not type(None))
    return hint


def _convert(name: str, value, hint):
    if value is None or (isinstance(value, str) and value.strip() == "" and _optional(hint)):
        if _optional(hint):
            return None
        raise AudienceError(f"{name} needs a value.")
    kind = _base_type(hint)
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return lowered in ("true", "1", "yes")
            return bool(value)
        if kind is int:
            number = float(value)
            if not number.is_integer():
                raise ValueError(value)
            return int(number)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        # a number typed on the command line reads as the same number sent as JSON: "got 1.5", not "got '1.5'"
        shown = value.strip() if isinstance(value, str) and _is_number(value) else quoted(value)
        raise AudienceError(f"{name} must be {kind.__name__}; got {shown}.") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (--batch-size for batch_size ...); unset flags stay absent."""
    hints = typing.get_type_hints(TrainConfig)
    for item in dataclasses.fields(TrainConfig):
        flags = [f"--{item.name.replace('_', '-')}", *item.metadata["flags"]]
        kind = _base_type(hints[item.name])
        default = item.default
        minimum, maximum = item.metadata["minimum"], item.metadata["maximum"]
        notes = ([] if default in (None, "") else [f"default: {default}"]) + \
            ([f"{_plain(minimum)} to {_plain(maximum)}"] if maximum is not None else [])
        help_text = item.metadata["help"] + (f" ({'; '.join(notes)})" if notes else "")
        options = {"dest": item.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **options)
        else:
            choices = item.metadata["choices"]
            metavar = "{" + ",".join(choices) + "}" if choices else item.name.upper()
            parser.add_argument(*flags, type=str, metavar=metavar, **options)


def _plain(number) -> str:
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


def config_arguments(config: TrainConfig) -> list[str]:
    """The flags that give `config` again (add_config_arguments' inverse; unset optional fields left out)."""
    argv = []
    for item in dataclasses.fields(TrainConfig):
        value, flag = getattr(config, item.name), item.name.replace("_", "-")
        if value is None:
            continue
        argv += [f"--{flag}" if value else f"--no-{flag}"] if isinstance(value, bool) else [f"--{flag}", str(value)]
    return argv


def config_from_args(namespace: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the flags given (the rest take the field defaults)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig.from_dict({k: v for k, v in vars(namespace).items() if k in names})


def read_data(config: TrainConfig) -> AdienceData:
    """The face table of config.data: an Adience root, a UTKFace folder, or 'demo' (the built-in synthetic set)."""
    return read_dataset(resolve_data_root(config.data), policy=config.policy, images=config.images)


def resolve_config(config: TrainConfig, data: AdienceData) -> TrainConfig:
    """The config with its automatic settings decided: image size from the arch, pretrained from the data."""
    image_size = config.image_size or model_data_config(config.arch)["image_size"]
    pretrained = config.pretrained
    if pretrained is None:
        pretrained = not data.synthetic and ARCHS[config.arch].get("pretrained", True) and not config.weights_file
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
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise AudienceError(f"{run_dir}: its config.json cannot be read ({type(error).__name__}), so the run cannot "
                            "be resumed.") from None
    if not isinstance(values, dict):
        raise AudienceError(f"{path}: not a JSON object, so the run cannot be resumed.")
    return TrainConfig.from_dict(values)
