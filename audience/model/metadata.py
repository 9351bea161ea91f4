"""The checkpoint as a typed object: the one schema of a checkpoint's JSON metadata (pydantic), checked
whenever a checkpoint is read, and what every reader uses instead of the raw JSON.

A served checkpoint's JSON is input like any other: a `"dataset": "x"`, a temperature of "hot" or
-1, an `image_size` of "abc" once broke the app at import or inverted probabilities. The schema
states the types and ranges every reader relies on; other keys pass through unchanged, and the
format on disk is the same as before. Reading gives a `CheckpointMetadata`: its fields, the
temperatures per head, and the crop geometry and alignment that Predict cuts faces with, each parsed
once. A writer that changes a checkpoint starts from `as_json()`, the JSON object as it was read.
"""

from __future__ import annotations

import copy
import math
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

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


class DatasetInfo(BaseModel):
    """The data a checkpoint was trained on. Checked: its name and whether it was synthetic. Read as recorded: which
    reader made the table, the label policy, subject- or image-level folds, the image folder, the counts of faces,
    of faces between two age groups and of those dropped, the licence."""

    model_config = ConfigDict(extra="allow")
    name: StrictStr | None = None
    format: Any = None
    policy: Any = None
    split_level: Any = None
    images: Any = None
    synthetic: StrictBool | None = None
    faces: Any = None
    between_groups: Any = None
    dropped: Any = None
    licence: Any = None


class WeightsInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    file: StrictStr | None = None
    bytes: Annotated[StrictInt, Field(ge=0)] | None = None
    sha256: StrictStr | None = None


class AlignmentInfo(BaseModel):
    """How the training images were aligned (audience.faces.align): eyes level, their midpoint here ("eyes"),
    or eyes level in the crop geometry's framing ("level")."""

    model_config = ConfigDict(extra="allow")
    method: Literal["eyes", "level"]
    eye_x: Fraction | None = None  # required by "eyes" (audience.faces.align.alignment_of says so)
    eye_y: Fraction | None = None
    # what it was measured on, read by the model card and not checked (as before)
    measured_on: Any = None
    sampled: Any = None
    angle_median: Any = None


class StabilityInfo(BaseModel):
    """The stability benchmark's figures (audience.bench.stability): how often an answer survives a small
    change of the photo, with the images and perturbations they were measured on."""

    model_config = ConfigDict(extra="allow")
    age_agreement: Fraction
    gender_agreement: Fraction
    images: Annotated[StrictInt, Field(ge=1)]
    versions: Annotated[StrictInt, Field(ge=1)]
    data: StrictStr | None = None
    peer: dict | None = None
    # read by the model card, not checked (as before)
    perturbations: Any = None
    aligned: Any = None
    measured: Any = None


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
    metrics: dict | None = None
    crop: dict | None = None
    alignment: AlignmentInfo | None = None
    stability: StabilityInfo | None = None
    # What the trainer, promote and the stability benchmark record beside them; read as they are, not checked.
    age_classes: Any = None
    gender_classes: Any = None
    timm_name: Any = None
    params: Any = None
    flops: Any = None
    versions: Any = None
    created: Any = None
    selected_epoch: Any = None
    metrics_on: Any = None
    calibration: Any = None
    split_level: Any = None
    leaky: Any = None
    training: Any = None
    train_config: Any = None
    promoted_from: Any = None
    shipped: Any = None
    # The age head (audience.model.network): "groups" (8 logits) or "years" (one per year 0-100 summed into the
    # groups with `gap_rule`); checkpoints made before it existed have groups heads.
    age_head: Literal["groups", "years"] = "groups"
    gap_rule: Literal["split", "lower", "upper"] = "split"
    age_sigma: Annotated[FiniteFloat, Field(gt=0)] | None = None
    # The age prior correction (audience.train.prior): tau * log(age_prior) is subtracted from the age scores.
    age_prior: Annotated[list[Annotated[FiniteFloat, Field(gt=0)]], Field(min_length=8, max_length=8)] | None = None
    prior_tau: Annotated[FiniteFloat, Field(ge=0, le=2)] | None = None
    prior_choice: Any = None
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
        return crop_geometry_of(self._json)

    @cached_property
    def face_alignment(self) -> Alignment | None:
        """How Predict turns a face for this model (`alignment`), or None: faces are cut unturned.
        AudienceError for a recorded value that is not a fraction."""
        return alignment_of(self._json)

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
