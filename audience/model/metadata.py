"""The checkpoint as a typed object: the one schema of a checkpoint's JSON metadata (pydantic), checked
whenever a checkpoint is read, and what every reader uses instead of the raw JSON.

A served checkpoint's JSON is input like any other: a `"dataset": "x"`, a temperature of "hot" or
-1, an `image_size` of "abc" once broke the app at import or inverted probabilities. The schema
states the types and ranges every reader relies on; other keys pass through unchanged, and the
format on disk is the same as before. Reading gives a `CheckpointMetadata`: its fields, the
temperatures per head, and the crop geometry and alignment that Predict cuts faces with, each parsed
once. A writer that changes a checkpoint starts from `as_json()`, the JSON object as it was read.

Every block of the JSON is a typed object too (`metrics`, `training`, `calibration`, `crop`, `train_config`,
`promoted_from`, `stability` and its `peer`, ...), so no module outside the model stage indexes the metadata
as a dict (tests/test_metadata_access.py checks it). What the app relies on is checked (the schema above);
what it only shows was read leniently before it was typed, and still is (`Lenient`): a value of another
type reads as None, as if it were missing, and an old checkpoint stays readable. Keys the models do not
name pass through (extra="allow"): a run's metrics may gain keys the registry adds.
"""

from __future__ import annotations

import copy
import math
from functools import cached_property
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    WrapValidator,
    create_model,
)

from audience.data.exposure import MEAN_RANGE as EXPOSURE_MEAN_RANGE
from audience.data.exposure import STD_RANGE as EXPOSURE_STD_RANGE
from audience.errors import AudienceError, quoted
from audience.faces.align import Alignment, alignment_of
from audience.faces.crop_geometry import CropGeometry, crop_geometry_of
from audience.labels import HEADS_OF_TASK

Fraction = Annotated[FiniteFloat, Field(ge=0, le=1)]
# Normalisation is (pixel / 255 - mean) / std: ImageNet's is about 0.45 and 0.23. A mean of 1e308 or a std of
# 1e-300 is finite, yet the network's input becomes infinity and every probability NaN; these ranges hold
# every real normalisation many times over.
MEAN_LIMIT = 10.0
STD_RANGE = (1e-3, 10.0)
# Calibration keeps T in [0.5, 5] (train.metrics.TEMPERATURE_RANGE); a hand-set T may go ten times beyond
# that either way. A T <= 0 would invert the probabilities, a T of 1e-300 overflow them.
TEMPERATURE_LIMITS = (0.05, 50.0)
Channels = Annotated[list[Annotated[FiniteFloat, Field(ge=-MEAN_LIMIT, le=MEAN_LIMIT)]],
                     Field(min_length=3, max_length=3)]
T = TypeVar("T")


def _or_none(value, handler):
    try:
        return handler(value)
    except ValidationError:
        return None


# A value the app shows but does not rely on: of type T, or None when it is missing or of another type (read
# leniently before it was typed: an odd value showed as missing and never made a checkpoint unreadable).
Lenient = Annotated[T | None, WrapValidator(_or_none)]
Number = Lenient[StrictInt | StrictFloat]  # an int stays an int, a float a float
Count = Lenient[StrictInt]


def _number(value) -> float | int | None:
    """`value` when it is a number (not a bool), else None."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


class Record(BaseModel):
    """A block of the checkpoint JSON: named keys typed, other keys kept as they are."""

    model_config = ConfigDict(extra="allow")

    def as_dict(self) -> dict:
        """The block as a plain dict (the keys it was read with, unknown ones included), for a table or a run
        summary that takes dicts."""
        return self.model_dump(exclude_unset=True)


class _MetricsRecord(Record):
    def number(self, key: str) -> float | int | None:
        """The metric `key` (a registry key, named here or not) when it is recorded as a number, else None."""
        value = getattr(self, key, None) if key in type(self).model_fields else (self.model_extra or {}).get(key)
        return _number(value)


# What each head records (HEAD_f1, HEAD_ece, ...), then what one head alone records.
_HEAD_METRICS = {"f1": Number, "ece": Number, "n": Count, "confusion": Lenient[list[list[StrictInt]]],
                 "per_class": Lenient[list[Number]]}  # per_class: None for a class with no test face
_OWN_METRICS = {"age_exact": Number, "age_one_off": Number, "gender_acc": Number, "gender_acc_fm": Number,
                "gender_n_fm": Count}
Metrics = create_model(
    "Metrics", __base__=_MetricsRecord, __module__=__name__,
    __doc__="The test (or validation, see `metrics_on`) metrics of the checkpoint's fold, keyed as the metric "
            "registry (audience.registry) names them; per-group metrics the registry adds pass through as extra keys.",
    **{f"{head}_{name}": (kind, None) for head in ("age", "gender") for name, kind in _HEAD_METRICS.items()},
    **{name: (kind, None) for name, kind in _OWN_METRICS.items()},
)


class TrainingInfo(Record):
    """How the run was made (promote records it for the model card): its command lines, seconds of epochs, device."""

    commands: Lenient[list[StrictStr]] = None
    train_seconds: Number = None
    device: Lenient[StrictStr] = None
    machine: Lenient[StrictStr] = None


class HeadCalibration(Record):
    """Temperature scaling of one head: T, whether it was applied, and the ECE/NLL before and after."""

    temperature: Number = None
    applied: Lenient[StrictBool] = None
    reason: Lenient[StrictStr] = None
    val_rows: Count = None
    val_nll_before: Number = None
    val_nll_after: Number = None
    val_ece_before: Number = None
    val_ece_after: Number = None
    test_ece_before: Number = None
    test_ece_after: Number = None


class Calibration(Record):
    """The calibration of each head (`age`, `gender`)."""

    age: Lenient[HeadCalibration] = None
    gender: Lenient[HeadCalibration] = None

    @property
    def heads(self) -> tuple[str, ...]:
        """The heads recorded, as in the JSON (a head of another name included)."""
        return tuple(sorted(set(self.model_fields_set) | set(self.model_extra or {})))

    def of(self, head: str) -> HeadCalibration | None:
        """The calibration of `head`, or None when none (or an unreadable one) is recorded."""
        if head in type(self).model_fields:
            return getattr(self, head)
        value = (self.model_extra or {}).get(head)
        return HeadCalibration.model_validate(value) if isinstance(value, dict) else None


class CropInfo(Record):
    """The framing of the training images (audience.faces.crop_geometry). The numbers Predict uses are parsed and
    range-checked by `CheckpointMetadata.crop_geometry`; these attributes are what the model card shows."""

    margin: Number = None
    shift_x: Number = None
    shift_y: Number = None
    measured_on: Count = None
    sampled: Count = None
    detector: Lenient[StrictStr] = None


class ExposureInfo(Record):
    """The exposure reference Predict standardises each face crop to (audience.data.exposure): the training faces'
    mean pixel and spread on the 0-255 scale (checked: the transform relies on them), and what they were
    measured on (shown only)."""

    mean: Annotated[FiniteFloat, Field(ge=EXPOSURE_MEAN_RANGE[0], le=EXPOSURE_MEAN_RANGE[1])]
    std: Annotated[FiniteFloat, Field(ge=EXPOSURE_STD_RANGE[0], le=EXPOSURE_STD_RANGE[1])]
    images: Count = None
    data: Lenient[StrictStr] = None

    @property
    def reference(self) -> tuple[float, float]:
        return float(self.mean), float(self.std)


class PromotedFrom(Record):
    """The run fold a promoted checkpoint was copied from, and the sha256 of the weights it was copied from."""

    run: Lenient[StrictStr] = None
    fold: Lenient[StrictInt] = None
    sha256: Lenient[StrictStr] = None


class TrainConfigRecord(Record):
    """The training settings recorded with the checkpoint (TrainConfig's fields as they were then; old and new
    settings pass through). Named here: those the app reads (the local paths hub_push shortens, arch, task)."""

    data: Lenient[StrictStr] = None
    out: Lenient[StrictStr] = None
    cache_dir: Lenient[StrictStr] = None
    weights_file: Lenient[StrictStr] = None
    arch: Lenient[StrictStr] = None
    task: Lenient[StrictStr] = None


class PriorChoice(Record):
    """How the age prior correction's tau was chosen (audience.train.prior): on what, and each tau's validation
    accuracy (exact, 1-off, balanced)."""

    chosen_on: Lenient[StrictStr] = None
    table: Lenient[list[dict]] = None


class DatasetInfo(BaseModel):
    """The data a checkpoint was trained on. Checked: its name and whether it was synthetic. Read as recorded: which
    reader made the table, the label policy, subject- or image-level folds, the image folder, the counts of faces,
    of faces between two age groups and of those dropped, the licence."""

    model_config = ConfigDict(extra="allow")
    name: StrictStr | None = None
    format: Lenient[StrictStr] = None
    policy: Lenient[StrictStr] = None
    split_level: Lenient[StrictStr] = None
    images: Lenient[StrictStr] = None
    synthetic: StrictBool | None = None
    faces: Lenient[StrictInt] = None
    between_groups: Lenient[StrictInt] = None
    dropped: Lenient[dict[str, Any]] = None  # reason -> count
    licence: Lenient[StrictStr] = None


class WeightsInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    file: StrictStr | None = None
    bytes: Annotated[StrictInt, Field(ge=0)] | None = None
    sha256: StrictStr | None = None


class AlignmentInfo(Record):
    """How the training images were aligned (audience.faces.align): eyes level, their midpoint here ("eyes"),
    or eyes level in the crop geometry's framing ("level")."""

    method: Literal["eyes", "level"]
    eye_x: Fraction | None = None  # required by "eyes" (audience.faces.align.alignment_of says so)
    eye_y: Fraction | None = None
    # what it was measured on, read by the model card and not checked (as before)
    measured_on: Count = None
    sampled: Count = None
    angle_median: Number = None


class AgreementFigures(Record):
    """One system's figures in the stability benchmark (shown, not checked)."""

    age_agreement: Number = None
    gender_agreement: Number = None
    age_exact: Number = None  # on the original photos
    n_age: Count = None
    faces_found: Count = None
    faces_found_perturbed: Count = None


class PeerStability(AgreementFigures):
    """The peer package's figures on the same photos and changes."""

    package: Lenient[StrictStr] = None


class StabilityInfo(AgreementFigures):
    """The stability benchmark's figures (audience.bench.stability): how often an answer survives a small
    change of the photo, with the images and perturbations they were measured on."""

    age_agreement: Fraction
    gender_agreement: Fraction
    images: Annotated[StrictInt, Field(ge=1)]
    versions: Annotated[StrictInt, Field(ge=1)]
    data: StrictStr | None = None
    peer: PeerStability | None = None
    # read by the model card, not checked (as before)
    perturbations: Lenient[StrictStr] = None
    aligned: Lenient[StrictBool] = None
    measured: Lenient[StrictStr] = None
    seed: Count = None


class CheckpointMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    format_version: StrictInt
    arch: StrictStr
    task: StrictStr
    image_size: Annotated[StrictInt, Field(ge=16, le=1024)]
    mean: Channels
    std: Annotated[list[Annotated[FiniteFloat, Field(ge=STD_RANGE[0], le=STD_RANGE[1])]],
                   Field(min_length=3, max_length=3)]
    # 1.0 is uncalibrated
    temperature: dict[str, Annotated[FiniteFloat, Field(ge=TEMPERATURE_LIMITS[0], le=TEMPERATURE_LIMITS[1])]
                      | None] | None = None
    dataset: DatasetInfo | None = None
    weights: WeightsInfo | None = None
    fold: StrictInt | None = None
    protocol: StrictStr | None = None
    epoch: StrictInt | None = None
    metrics: Metrics | None = None
    crop: CropInfo | None = None
    alignment: AlignmentInfo | None = None
    stability: StabilityInfo | None = None
    # What the trainer, promote and the stability benchmark record beside them; read as they are, not checked.
    age_classes: Any = None
    gender_classes: Any = None
    timm_name: Any = None
    params: Any = None
    flops: Any = None
    versions: Lenient[dict[str, Any]] = None  # package -> version
    created: Any = None
    selected_epoch: Any = None
    metrics_on: Any = None
    calibration: Lenient[Calibration] = None
    split_level: Any = None
    leaky: Any = None
    training: Lenient[TrainingInfo] = None
    train_config: Lenient[TrainConfigRecord] = None
    promoted_from: Lenient[PromotedFrom] = None
    shipped: Any = None
    # The age head (audience.model.network): "groups" (8 logits) or "years" (one per year 0-100 summed into the
    # groups with `gap_rule`); checkpoints made before it existed have groups heads.
    age_head: Literal["groups", "years"] = "groups"
    gap_rule: Literal["split", "lower", "upper"] = "split"
    age_sigma: Annotated[FiniteFloat, Field(gt=0)] | None = None
    # The age prior correction (audience.train.prior): tau * log(age_prior) is subtracted from the age scores.
    age_prior: Annotated[list[Annotated[FiniteFloat, Field(gt=0)]], Field(min_length=8, max_length=8)] | None = None
    prior_tau: Annotated[FiniteFloat, Field(ge=0, le=2)] | None = None
    prior_choice: Lenient[PriorChoice] = None
    # Mirror averaging (AgeGenderNet.set_flip_average): each face and its mirror image, features averaged.
    flip_average: StrictBool | None = None
    # Exposure standardisation (audience.data.exposure): each crop's brightness and contrast set to these first.
    exposure: ExposureInfo | None = None
    _json: dict = PrivateAttr(default_factory=dict)

    @property
    def heads(self) -> tuple[str, ...]:
        """The heads of the task ("age", "gender" or both)."""
        return HEADS_OF_TASK[self.task]

    @cached_property
    def temperatures(self) -> dict[str, float]:
        """The temperature of each head of the task; 1.0 (uncalibrated) where none is recorded."""
        recorded = self.temperature or {}
        return {head: float(recorded.get(head) or 1.0) for head in self.heads}

    @cached_property
    def crop_geometry(self) -> CropGeometry:
        """How Predict cuts a face for this model (`crop`; the Adience default when none is recorded).
        AudienceError for a recorded value out of range."""
        return crop_geometry_of(self._json.get("crop"))

    @cached_property
    def face_alignment(self) -> Alignment | None:
        """How Predict turns a face for this model (`alignment`), or None: faces are cut unturned.
        AudienceError for a recorded value that is not a fraction."""
        return alignment_of(self._json.get("alignment"))

    def metric(self, key: str) -> float | int | None:
        """The recorded metric `key` (a registry key) when it is a number, else None."""
        return None if self.metrics is None else self.metrics.number(key)

    @property
    def age_adjustment(self) -> list[float] | None:
        """What the network subtracts from the age scores (tau * log prior), or None: no correction."""
        if not self.age_prior or not self.prior_tau:
            return None
        total = sum(self.age_prior)
        return [self.prior_tau * math.log(p / total) for p in self.age_prior]

    @property
    def synthetic(self) -> bool:
        """Trained on the synthetic demo set."""
        return bool(self.dataset is not None and self.dataset.synthetic)

    def as_json(self) -> dict:
        """A copy of the JSON object as it was read (every key, also those the schema does not name)."""
        return copy.deepcopy(self._json)


def check_checkpoint_metadata(metadata: dict, name: str) -> CheckpointMetadata:
    """The typed metadata of the JSON object `metadata`; AudienceError naming `name`, the first bad field and its
    value when it breaks the schema."""
    try:
        checked = CheckpointMetadata.model_validate(metadata)
    except ValidationError as error:
        raise AudienceError(f"Checkpoint metadata {name}: {first_problem(error)}.") from None
    checked._json = metadata
    return checked


def first_problem(error: ValidationError) -> str:
    """'field: what is wrong (found VALUE)' for the first problem pydantic found, the value cut short."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "the file"
    found = "" if first["type"] == "missing" else f" (found {quoted(first.get('input'))})"
    reason = first["msg"].split(" or instance of ")[0]  # pydantic names its own class there
    return f"{field}: {reason[:1].lower()}{reason[1:]}{found}"
