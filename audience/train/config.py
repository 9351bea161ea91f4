"""`TrainConfig`: the one definition of the training settings, a frozen pydantic model.

The CLI flags (`add_config_arguments`), the Train tab's form (`SETTINGS`) and a run's `config.json`
are all made from the fields below: name, type, choices, range, default and help text live here and
nowhere else, and pydantic validates them; its errors become the project's one-sentence messages
(`AudienceError`, naming the field). Reading the data and building the image cache for a config is
audience.train.prepare; reading a run folder's config.json is audience.train.runs.read_run_config.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from audience.data.adience import IMAGE_MODES, N_FOLDS
from audience.data.roots import DEMO_DATA
from audience.data.splits import PROTOCOLS
from audience.data.transforms import AUGMENT_STRENGTHS
from audience.errors import AudienceError, quoted, shorten
from audience.inputs import check_path, name_slug
from audience.labels import POLICIES, TASKS
from audience.model.age_years import DEFAULT_GAP_RULE, DEFAULT_SIGMA, GAP_RULES
from audience.model.archs import AGE_HEADS, ARCHS

SCHEDULES: tuple[str, ...] = ("onecycle", "cosine")
BALANCES: tuple[str, ...] = ("none", "age", "race")  # how the training faces are drawn
SWITCHES: tuple[str, ...] = ("auto", "on", "off")  # a GPU path: auto = on with CUDA
# The demo recipe (the Train tab's demo preset and the learnability test): chosen because it clearly
# learns fold 0 of the default demo data in seconds on a CPU; the numbers are in docs/measurements.md.
DEMO_RECIPE: dict = {"data": DEMO_DATA, "arch": "tiny", "folds": "0", "epochs": 15, "batch_size": 16, "lr": 1e-2,
                     "image_size": 64, "augment": "none", "drop_rate": 0.0, "workers": 0}
MESSAGE_LIMIT = 200  # characters of a validation sentence (its quoted input is cut before that)
QUOTE_LIMIT = 60  # characters of a typed value a validation sentence repeats

# The choices of a setting are its type: pydantic checks them.
Policy = Literal[POLICIES]
ImageFolder = Literal[tuple(m for m in IMAGE_MODES if m != "none")]
Arch = Literal[tuple(ARCHS)]
Task = Literal[TASKS]
Protocol = Literal[PROTOCOLS]
Schedule = Literal[SCHEDULES]
Augment = Literal[AUGMENT_STRENGTHS]
Switch = Literal[SWITCHES]
AgeHead = Literal[AGE_HEADS]
GapRule = Literal[GAP_RULES]
Balance = Literal[BALANCES]


def _setting(default, help: str, flags: tuple[str, ...] = (), minimum=None, maximum=None):
    """A field with its help text, extra CLI flags and range (ge/le: pydantic checks them, --help shows them)."""
    return Field(default=default, description=help, ge=minimum, le=maximum,
                 json_schema_extra={"flags": list(flags)} if flags else None)


class TrainConfig(BaseModel):
    """Every setting of a training run (see each field's help). Built validated, never changed (frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True,
                              validate_default=True)

    data: str = _setting("", "Adience root (the folder with fold_0_data.txt ... fold_4_data.txt), a UTKFace folder "
                         "(*.jpg.chip.jpg; image-level folds), or 'demo' for the built-in synthetic demo dataset")
    policy: Policy = _setting("bins", "age label policy: bins (single ages and intervals inside one class count) or "
                              "strict (only the eight official age groups)")
    images: ImageFolder = _setting("auto", "image folder: aligned, faces, or auto (aligned if present)")
    arch: Arch = _setting("mobilenetv3_large_100", "network architecture")
    task: Task = _setting("age+gender", "what to predict")
    age_head: AgeHead = _setting("groups", "age head: groups (8 logits) or years (one per year 0-100, learning from "
                                 "exact ages where the data has them, as UTKFace does, and from a group's years "
                                 "evenly where it has groups, as Adience does)")
    age_sigma: float = _setting(DEFAULT_SIGMA, "years head: spread in years of the soft target around an exact age",
                                minimum=0.1, maximum=30.0)
    gap_rule: GapRule = _setting(DEFAULT_GAP_RULE, "years head: where a year between two groups (7, 14, 21, 33, 44, "
                                 "54) counts: split (half to each neighbour), lower or upper group")
    prior_tau: float | None = _setting(None, "age prior correction (logit adjustment by the training set's group "
                                       "frequencies) from 0 (none) to 1 (full); default: chosen on the validation "
                                       "set among 0, 0.25, 0.5, 0.75, 1", minimum=0.0, maximum=2.0)
    protocol: Protocol = _setting("folds", "folds: test on official fold k, train and validate (by album) on the "
                                  "others; random: the seed's leaky random split (val_fraction of the images)")
    folds: str = _setting("all", "test folds to run: all, or a comma list such as 0 or 0,2")
    epochs: int = _setting(10, "training epochs per fold", minimum=1, maximum=10_000)
    batch_size: int = _setting(64, "images per training batch", minimum=1, maximum=4096)
    lr: float = _setting(1e-3, "peak learning rate (AdamW)", minimum=0.0, maximum=10.0)
    weight_decay: float = _setting(0.05, "AdamW weight decay (not applied to biases and norm layers)", minimum=0.0,
                                   maximum=10.0)
    schedule: Schedule = _setting("onecycle", "learning-rate schedule, stepped every batch")
    warmup_pct: float = _setting(0.2, "fraction of the steps spent warming up to the peak rate", minimum=0.0)
    div_factor: float = _setting(50.0, "initial rate = lr / div_factor", minimum=1.0, maximum=1e6)
    final_div_factor: float = _setting(1e3, "final rate = initial rate / final_div_factor", minimum=1.0,
                                       maximum=1e9)
    label_smoothing: float = _setting(0.1, "label smoothing of both cross-entropy losses", minimum=0.0)
    age_weight: float = _setting(1.0, "weight of the age loss", minimum=0.0, maximum=100.0)
    gender_weight: float = _setting(1.0, "weight of the gender loss", minimum=0.0, maximum=100.0)
    drop_rate: float = _setting(0.2, "dropout before the heads", minimum=0.0)
    augment: Augment = _setting("default", "training augmentation strength")
    standardize_exposure: bool = _setting(False, "set each face crop's brightness and contrast to the training "
                                          "faces' average before the model sees it, in training and in Predict "
                                          "(a washed-out, flat or dim photo then reads like a well-lit one)")
    balance: Balance = _setting("none", "how training faces are drawn each epoch: none (each once), age (with "
                                "replacement, each age group equally often) or race (each race equally often; "
                                "UTKFace)")
    balance_power: float = _setting(1.0, "how far --balance evens the groups out: a face is drawn with weight (its "
                                    "group's size)^-power, so 1 draws each group equally often and 0.5 by the "
                                    "square root of its size", minimum=0.0, maximum=1.0)
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
    bf16: Switch = _setting("auto", "bfloat16 autocast of the forward pass (auto: on with CUDA, off on the CPU)")
    channels_last: bool = _setting(True, "channels-last memory layout of the network and its input batches")
    pin_memory: Switch = _setting("auto", "page-locked loader memory for faster host-to-GPU copies (auto: with CUDA)")
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

    def __init__(self, **values):
        """A validated config; AudienceError (one sentence naming the field) for a bad or unknown setting."""
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise AudienceError(validation_sentence(error)) from None
        except AudienceError as error:  # a rule of _check_combinations or of audience.inputs
            raise AudienceError(_bounded(str(error))) from None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value, info):
        """An optional setting left blank ('' from a form or a flag) is unset (None)."""
        if isinstance(value, str) and not value.strip() and SETTING_OF[info.field_name].optional:
            return None
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        """The rules a single field's type and range cannot say."""
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
            shown = quoted(self.device, QUOTE_LIMIT)
            raise AudienceError(f"device must be auto, cpu, cuda or cuda:N; got {shown}.")
        self.fold_list()
        return self

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A validated config from plain values (JSON, a UI form: numbers may come as floats or strings)."""
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise AudienceError(unknown_setting_sentence(unknown[0]))
        return cls(**values)

    def to_dict(self) -> dict:
        return self.model_dump()

    def replace(self, **changes) -> TrainConfig:
        """A validated copy with `changes` (pydantic's model_copy would not validate them)."""
        return type(self).from_dict({**self.model_dump(), **changes})

    def validated(self) -> TrainConfig:
        """Self: a TrainConfig is validated when it is made."""
        return self

    def fold_list(self) -> list[int]:
        """The test folds to run, in order."""
        text = str(self.folds).strip().lower()
        if text == "all":
            return list(range(N_FOLDS))
        try:
            folds = [int(part) for part in text.replace(" ", "").split(",") if part != ""]
        except ValueError:
            raise AudienceError(f"folds must be 'all' or a comma list of fold numbers such as 0,2; "
                                f"got {quoted(self.folds, QUOTE_LIMIT)}.") from None
        if not folds or any(f not in range(N_FOLDS) for f in folds) or len(set(folds)) != len(folds):
            raise AudienceError(
                f"folds must be 'all' or distinct fold numbers 0 to {N_FOLDS - 1} such as 0,2; "
                f"got {quoted(self.folds, QUOTE_LIMIT)}."
            )
        return folds

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


@dataclass(frozen=True)
class Setting:
    """One field of TrainConfig as the CLI and the Train tab show it, read from the model once."""

    name: str
    kind: type  # bool, int, float or str
    optional: bool  # None is a value (automatic, or unset)
    default: object
    help: str
    choices: tuple  # the allowed values, () for any
    flags: tuple[str, ...]  # extra CLI flags besides --name-with-dashes
    minimum: float | None
    maximum: float | None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _setting_of(name: str, info) -> Setting:
    hint = info.annotation
    optional = isinstance(hint, types.UnionType) and type(None) in hint.__args__
    base = next(arg for arg in hint.__args__ if arg is not type(None)) if optional else hint
    choices = typing.get_args(base) if typing.get_origin(base) is Literal else ()
    bounds = {type(item).__name__: item for item in info.metadata}
    extra = info.json_schema_extra or {}
    return Setting(name=name, kind=type(choices[0]) if choices else base, optional=optional, default=info.default,
                   help=info.description or "", choices=choices, flags=tuple(extra.get("flags", ())),
                   minimum=bounds["Ge"].ge if "Ge" in bounds else None,
                   maximum=bounds["Le"].le if "Le" in bounds else None)


SETTINGS: tuple[Setting, ...] = tuple(_setting_of(name, info) for name, info in TrainConfig.model_fields.items())
SETTING_OF: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _shown(value) -> str:
    """A typed value in a sentence: a number typed on the command line reads as the same number sent as JSON
    ('got 1.5', not "got '1.5'"); anything else quoted."""
    return shorten(value.strip(), QUOTE_LIMIT) if isinstance(value, str) and _is_number(value) \
        else quoted(value, QUOTE_LIMIT)


def _number(setting: Setting, value):
    """The value pydantic compared with a bound (its input converted to the field's type)."""
    if setting.kind is int:
        return value if isinstance(value, int) else int(float(value))
    return float(value)


def unknown_setting_sentence(name: str) -> str:
    """The sentence for a setting TrainConfig does not have, with the closest name when there is one."""
    close = difflib.get_close_matches(str(name), list(SETTING_OF), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (f"Unknown training setting {quoted(name, QUOTE_LIMIT)}; {hint}the {len(SETTING_OF)} settings are listed "
            "by python -m audience.cli.train --help.")


def _error_sentence(error: dict) -> str:
    """One pydantic error as the project's sentence, naming the field."""
    kind, value, location = error["type"], error.get("input"), error.get("loc") or ()
    name = str(location[0]) if location else "a setting"
    setting = SETTING_OF.get(name)
    if kind == "extra_forbidden":
        return unknown_setting_sentence(name)
    if setting is None:
        return f"{name}: {error.get('msg', 'is not valid')}."
    if value is None:
        return f"{name} needs a value."
    if kind == "literal_error":
        return f"{name} must be one of {', '.join(map(str, setting.choices))}; got {quoted(value, QUOTE_LIMIT)}."
    if kind == "finite_number":
        return f"{name} must be a finite number; got {shorten(value, QUOTE_LIMIT)}."
    if kind == "greater_than_equal":
        return f"{name} must be at least {setting.minimum}; got {_number(setting, value)}."
    if kind == "less_than_equal":
        shown = shorten(f"{_number(setting, value):,}", QUOTE_LIMIT)
        return f"{name} must be at most {setting.maximum:,}; got {shown}."
    if kind.startswith(("int_", "float_", "bool_", "string_")):  # int_parsing, int_from_float, bool_type ...
        return f"{name} must be {setting.kind.__name__}; got {_shown(value)}."
    return f"{name}: {error.get('msg', 'is not valid')}; got {quoted(value, QUOTE_LIMIT)}."


def _bounded(sentence: str) -> str:
    return sentence if len(sentence) <= MESSAGE_LIMIT else sentence[:MESSAGE_LIMIT - 5].rstrip() + " ...."


def validation_sentence(error: ValidationError) -> str:
    """The first of pydantic's errors as one sentence naming the field, at most MESSAGE_LIMIT characters."""
    return _bounded(_error_sentence(error.errors(include_url=False)[0]))


def check_setting(name: str, value):
    """`value` converted to the type of TrainConfig's field `name`, or AudienceError when it breaks the field's
    rules: for values read back from a run's config.json (which may have been edited) one at a time."""
    if value is None and SETTING_OF[name].optional:
        return None
    return getattr(TrainConfig(data=DEMO_DATA, **{name: value}), name)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (--batch-size for batch_size ...); unset flags stay absent."""
    for setting in SETTINGS:
        notes = ([] if setting.default in (None, "") else [f"default: {setting.default}"]) + \
            ([f"{_plain(setting.minimum)} to {_plain(setting.maximum)}"] if setting.maximum is not None else [])
        help_text = setting.help + (f" ({'; '.join(notes)})" if notes else "")
        options = {"dest": setting.name, "default": argparse.SUPPRESS, "help": help_text}
        flags = [setting.flag, *setting.flags]
        if setting.kind is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **options)
        else:
            metavar = "{" + ",".join(setting.choices) + "}" if setting.choices else setting.name.upper()
            parser.add_argument(*flags, type=str, metavar=metavar, **options)


def _plain(number) -> str:
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


def config_arguments(config: TrainConfig) -> list[str]:
    """The flags that give `config` again (add_config_arguments' inverse; unset optional fields left out)."""
    argv = []
    for setting in SETTINGS:
        value, flag = getattr(config, setting.name), setting.flag
        if value is None:
            continue
        argv += [flag if value else f"--no-{flag[2:]}"] if isinstance(value, bool) else [flag, str(value)]
    return argv


def config_from_args(namespace: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the flags given (the rest take the field defaults)."""
    return TrainConfig.from_dict({k: v for k, v in vars(namespace).items() if k in SETTING_OF})
