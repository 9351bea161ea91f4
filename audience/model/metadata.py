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

Channels = Annotated[list[FiniteFloat], Field(min_length=3, max_length=3)]
Fraction = Annotated[FiniteFloat, Field(ge=0, le=1)]


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
    """How the training images were aligned (audience.faces.align): eyes level, their midpoint here ("eyes"),
    or eyes level in the crop geometry's framing ("level")."""

    model_config = ConfigDict(extra="allow")
    method: Literal["eyes", "level"]
    eye_x: Fraction | None = None  # required by "eyes" (audience.faces.align.alignment_of says so)
    eye_y: Fraction | None = None


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


class CheckpointMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    format_version: StrictInt
    arch: StrictStr
    task: StrictStr
    image_size: Annotated[StrictInt, Field(ge=16, le=1024)]
    mean: Channels
    std: Annotated[list[Annotated[FiniteFloat, Field(gt=0)]], Field(min_length=3, max_length=3)]
    # 1.0 is uncalibrated; calibration keeps T in [0.5, 5]; a T <= 0 would invert the probabilities
    temperature: dict[str, Annotated[FiniteFloat, Field(gt=0, le=100)] | None] | None = None
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
