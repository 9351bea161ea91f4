"""The one schema of a checkpoint's JSON metadata (pydantic), checked whenever a checkpoint is read.

A served checkpoint's JSON is input like any other: a `"dataset": "x"`, a temperature of "hot" or
-1, an `image_size` of "abc" once broke the app at import or inverted probabilities. The schema
states the types and ranges every reader relies on; other keys pass through unchanged, and the
format on disk is the same as before.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, StrictBool, StrictInt, StrictStr, ValidationError

from audience.errors import AudienceError, quoted

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
    model_config = ConfigDict(extra="allow")
    name: StrictStr | None = None
    synthetic: StrictBool | None = None


class WeightsInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    file: StrictStr | None = None
    bytes: Annotated[StrictInt, Field(ge=0)] | None = None
    sha256: StrictStr | None = None


class AlignmentInfo(BaseModel):
    """How the training images were aligned (audience.predict.align): eyes level, their midpoint here ("eyes"),
    or eyes level in the crop geometry's framing ("level")."""

    model_config = ConfigDict(extra="allow")
    method: Literal["eyes", "level"]
    eye_x: Fraction | None = None  # required by "eyes" (audience.predict.align.alignment_of says so)
    eye_y: Fraction | None = None


class StabilityInfo(BaseModel):
    """The stability benchmark's figures (audience.compare.stability): how often an answer survives a small
    change of the photo, with the images and perturbations they were measured on."""

    model_config = ConfigDict(extra="allow")
    age_agreement: Fraction
    gender_agreement: Fraction
    images: Annotated[StrictInt, Field(ge=1)]
    versions: Annotated[StrictInt, Field(ge=1)]
    data: StrictStr | None = None
    peer: dict | None = None


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


def check_checkpoint_metadata(metadata: dict, name: str) -> None:
    """Raise AudienceError naming `name`, the first bad field and its value when `metadata` breaks the schema."""
    try:
        CheckpointMetadata.model_validate(metadata)
    except ValidationError as error:
        raise AudienceError(f"Checkpoint metadata {name}: {first_problem(error)}.") from None


def first_problem(error: ValidationError) -> str:
    """'field: what is wrong (found VALUE)' for the first problem pydantic found, the value cut short."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "the file"
    found = "" if first["type"] == "missing" else f" (found {quoted(first.get('input'))})"
    reason = first["msg"].split(" or instance of ")[0]  # pydantic names its own class there
    return f"{field}: {reason[:1].lower()}{reason[1:]}{found}"
