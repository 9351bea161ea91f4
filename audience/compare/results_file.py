"""Results files: a model's test results without its weights, as a Compare row (issue 18).

A model whose weights are too large for the repository (a ResNet50 is about 100 MB) ships its results
only: `checkpoints/results/NAME.json` (the `results/` subfolder of the checkpoints folder, which the
checkpoint listing does not descend into, so it is never taken for a model). The file says what was
trained (arch, dataset, protocol, image size, epochs, the recipe from the run's config), each test fold's
metrics with the per-group fields (the same keys a run's test_metrics.json holds), parameters, FLOPs, the
latency per face measured with the trained weights at one thread on a named machine, the date, a note,
and the Hub repo id where the weights would be published (nothing is uploaded).

`ResultsFile` is the format (pydantic: every field the Compare tab reads is typed and bounded, unknown
metric keys are dropped); `read_results_file` reads one through the bounded JSON reader; `results_runs`
turns each file into a `RunInfo` row, a bad file into a row whose problems column names it.
`audience.compare.results_writer` makes one from a finished run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from audience import settings
from audience.errors import AudienceError, quoted
from audience.files import read_json_object
from audience.labels import AGE_CLASSES, GENDER_CLASSES
from audience.model.metadata import first_problem
from audience.registry import SUMMARY_KEYS, protocol_label
from audience.train.group_metrics import RACE_GAP_KEYS
from audience.train.metrics import summarize_folds
from audience.train.runs import METRICS_COLUMNS, RunInfo

FORMAT = "audience-results"
FORMAT_VERSION = 1
RESULTS_FOLDER = "results"  # inside the checkpoints folder (settings.checkpoints_dir())
RESULTS_PREFIX = "results:"  # the run id of a results row in the Compare tab
RESULTS_STATE = "results only"  # the state column (narrow); the tab's message says the weights are not shipped
# A results file is a few tens of KB (one fold: about 6 KB with its curves); the reader's general 16 MB is
# far more than one needs.
RESULTS_MAX_BYTES = 1024 * 1024
NOTE_LIMIT = 500
TEXT_LIMIT = 200

Fraction = Annotated[StrictFloat, Field(ge=0, le=1, allow_inf_nan=False)]
Number = Annotated[StrictFloat, Field(allow_inf_nan=False)]
Count = Annotated[StrictInt, Field(ge=0)]
Text = Annotated[StrictStr, Field(max_length=TEXT_LIMIT)]


def _per_class(kind, classes: tuple[str, ...]):
    return Annotated[list[kind], Field(min_length=len(classes), max_length=len(classes))]


def _matrix(classes: tuple[str, ...]):
    return _per_class(_per_class(Count, classes), classes)


class _Strict(BaseModel):
    """Keys the format names are typed; other keys are dropped (nothing untyped reaches a table)."""

    model_config = ConfigDict(extra="ignore")


class RaceScores(_Strict):
    """One race's row of per_race (audience.train.group_metrics.race_scores)."""

    n: Count
    n_age: Count | None = None
    age_exact: Fraction | None = None
    age_one_off: Fraction | None = None
    n_gender: Count | None = None
    gender_acc_fm: Fraction | None = None
    gender_acc_female: Fraction | None = None
    gender_acc_male: Fraction | None = None
    gender_n_female: Count | None = None
    gender_n_male: Count | None = None


class FoldMetrics(_Strict):
    """A test fold's metrics as the trainer records them (compute_metrics' keys: test_metrics.json "metrics")."""

    age_exact: Fraction | None = None
    age_one_off: Fraction | None = None
    age_f1: Fraction | None = None
    age_ece: Fraction | None = None
    age_n: Count | None = None
    age_confusion: _matrix(AGE_CLASSES) | None = None
    age_per_class: _per_class(Fraction | None, AGE_CLASSES) | None = None
    age_per_class_one_off: _per_class(Fraction | None, AGE_CLASSES) | None = None
    age_per_class_n: _per_class(Count, AGE_CLASSES) | None = None
    balanced_age_exact: Fraction | None = None
    balanced_age_one_off: Fraction | None = None
    gender_acc: Fraction | None = None
    gender_acc_fm: Fraction | None = None
    gender_f1: Fraction | None = None
    gender_ece: Fraction | None = None
    gender_n: Count | None = None
    gender_n_fm: Count | None = None
    gender_confusion: _matrix(GENDER_CLASSES) | None = None
    gender_per_class: _per_class(Fraction | None, GENDER_CLASSES) | None = None
    gender_acc_female: Fraction | None = None
    gender_acc_male: Fraction | None = None
    gender_n_female: Count | None = None
    gender_n_male: Count | None = None
    per_race: Annotated[dict[Annotated[StrictStr, Field(max_length=40)], RaceScores],
                        Field(max_length=20)] | None = None
    race_gap: dict[Literal[RACE_GAP_KEYS], Fraction] | None = None


class FoldResults(_Strict):
    """One test fold: its number, the best epoch, the run's summary scalars, the full metrics and the
    per-epoch curves (metrics.csv rows)."""

    fold: Annotated[StrictInt, Field(ge=0, le=99)]
    best_epoch: Annotated[StrictInt, Field(ge=1)] | None = None
    test_faces: Count | None = None
    summary: dict[Literal[SUMMARY_KEYS], Number | None]
    metrics: FoldMetrics
    curves: Annotated[list[dict[Literal[METRICS_COLUMNS], StrictInt | Number | None]], Field(max_length=1000)] = []
    metrics_source: Text | None = None  # "recorded by the trainer" or "evaluated again (...)"
    weights_bytes: Count | None = None
    weights_sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class DatasetRecord(_Strict):
    name: Text
    synthetic: StrictBool
    format: Text | None = None
    policy: Text | None = None
    split_level: Literal["subject", "image"] = "subject"
    faces: Count | None = None


class LatencyRecord(_Strict):
    """CPU latency per face of the trained model (audience.bench.model_latency.time_model), where it was measured."""

    ms: Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)]
    min_ms: Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)] | None = None
    threads: Annotated[StrictInt, Field(ge=1)]
    repeats: Annotated[StrictInt, Field(ge=1)]
    batch: Literal[1] = 1
    load: Annotated[list[Number], Field(max_length=3)] | None = None  # os.getloadavg() when it was measured
    machine: dict[Text, Text | StrictInt] = {}  # audience.bench.predict_latency.describe_machine
    measured: Text | None = None
    torch: Text | None = None


class WeightsRecord(_Strict):
    """The weights the results belong to: not shipped; where they would be published and their checksum."""

    published_at: Text  # a Hub repo id (user/name); nothing is uploaded by this project
    file: Text | None = None
    bytes: Count | None = None
    sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")] | None = None

    @field_validator("published_at")
    @classmethod
    def _repo_id(cls, value: str) -> str:
        check_repo_id(value)
        return value


class ResultsFile(_Strict):
    format: Literal["audience-results"] = FORMAT
    format_version: Literal[1] = FORMAT_VERSION
    name: Annotated[StrictStr, Field(min_length=1, max_length=80)]
    arch: Text
    task: Text
    dataset: DatasetRecord
    protocol: Literal["folds", "random"]
    leaky: StrictBool = False
    protocol_label: Text  # audience.registry.protocol_label of protocol, leaky and the split level
    image_size: Annotated[StrictInt, Field(ge=16, le=1024)]
    epochs: Annotated[StrictInt, Field(ge=1)]
    recipe: dict[Text, Text | StrictInt | StrictFloat | StrictBool | None]  # the run's config, local paths cut
    commands: Annotated[list[Annotated[StrictStr, Field(max_length=2000)]], Field(max_length=20)] = []
    folds: Annotated[list[FoldResults], Field(min_length=1, max_length=10)]
    params: Count
    flops: Count
    latency: LatencyRecord
    train_seconds: Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)] | None = None
    created: Text
    source_run: Text | None = None
    note: Annotated[StrictStr, Field(max_length=NOTE_LIMIT)] = ""
    weights: WeightsRecord

    def as_json(self) -> dict:
        """The file's JSON object: the keys it was made or read with (a metric the run did not record, such as
        per_race on Adience, stays absent rather than null)."""
        return self.model_dump(mode="json", exclude_unset=True)


def check_repo_id(value: str) -> str:
    """`value` when it is a Hub repo id with an owner (user/name); AudienceError otherwise."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        raise AudienceError(f"{quoted(value)} is not a Hub repo id such as user/model-name.") from None
    if "/" not in value:
        raise AudienceError(f"{quoted(value)} names no owner: give a Hub repo id such as user/model-name.")
    return value


def results_dir(folder: str | Path | None = None) -> Path:
    """The folder of the shipped results files: `results/` in the checkpoints folder (or in `folder`)."""
    return Path(folder if folder is not None else settings.checkpoints_dir()) / RESULTS_FOLDER


def list_results_files(folder: str | Path | None = None) -> list[Path]:
    """The results files (`*.json`, not hidden) of results_dir(folder), by name."""
    where = results_dir(folder)
    if not where.is_dir():
        return []
    return sorted(path for path in where.glob("*.json") if not path.name.startswith(".") and not path.is_dir())


def read_results_file(path: str | Path) -> ResultsFile:
    """The typed results file at `path`; AudienceError with one sentence naming the file and the problem."""
    path = Path(path)
    value = read_json_object(path, f"Results file {path.name}", max_bytes=RESULTS_MAX_BYTES)
    if value.get("format") != FORMAT:
        raise AudienceError(f"Results file {path.name} is not an Audience results file (its \"format\" is not "
                            f"{quoted(FORMAT)}).")
    try:
        return ResultsFile.model_validate(value)
    except ValidationError as error:
        raise AudienceError(f"Results file {path.name}: {first_problem(error)}.") from None


def latency_source(results: ResultsFile) -> str:
    """Where the row's CPU ms comes from, in words (the runs table shortens it to 'results file')."""
    latency = results.latency
    cpu = latency.machine.get("cpu") or "an unnamed CPU"
    load = f", load {latency.load[0]:.2f}" if latency.load else ""
    date = (latency.measured or results.created)[:10]
    return (f"results file ({results.arch} with its trained weights at {results.image_size}px, batch 1, "
            f"{latency.threads} thread{'s' if latency.threads != 1 else ''}, median of {latency.repeats} passes, "
            f"{cpu}{load}, {date})")


def _summary(results: ResultsFile) -> dict:
    per_fold = {fold.fold: fold.summary for fold in results.folds}
    dataset = results.dataset
    return {
        **summarize_folds(per_fold), "protocol": results.protocol, "leaky": results.leaky,
        "dataset": dataset.name, "synthetic": dataset.synthetic, "split_level": dataset.split_level,
        "arch": results.arch, "task": results.task, "image_size": results.image_size,
        "params": results.params, "flops": results.flops, "train_seconds": results.train_seconds,
        "folds_done": sorted(per_fold), "metrics_on": "test",
        "cpu_latency_ms": results.latency.ms, "cpu_latency_source": latency_source(results),
        "note": results.note, "weights_at": results.weights.published_at,
    }


def results_run(path: str | Path) -> RunInfo:
    """One results file as a Compare row (run id `results:NAME`, state RESULTS_STATE); a file that cannot be
    used is a row whose problems column names why."""
    path = Path(path)
    run_id = f"{RESULTS_PREFIX}{path.stem}"
    status = {"state": RESULTS_STATE}
    try:
        results = read_results_file(path)
    except AudienceError as error:
        return RunInfo(path=path.parent, run_id=run_id, status=status, errors=[str(error)])
    config = {**results.recipe, "arch": results.arch, "task": results.task, "protocol": results.protocol,
              "image_size": results.image_size, "epochs": results.epochs,
              "folds": ",".join(str(fold.fold) for fold in results.folds)}
    tests = {fold.fold: {"fold": fold.fold, "best_epoch": fold.best_epoch, "summary": dict(fold.summary),
                         "metrics": fold.metrics.model_dump()} for fold in results.folds}
    epochs = {fold.fold: pd.DataFrame(fold.curves, columns=list(METRICS_COLUMNS)) for fold in results.folds
              if fold.curves}
    return RunInfo(path=path.parent, run_id=run_id, config=config, status=status, summary=_summary(results),
                   epochs=epochs, test_metrics=tests)


def results_runs(folder: str | Path | None = None) -> list[RunInfo]:
    """Every results file of the checkpoints folder's results/ as a Compare row, by name."""
    return [results_run(path) for path in list_results_files(folder)]


def is_results_row(run_id: str | None) -> bool:
    return str(run_id or "").startswith(RESULTS_PREFIX)


def describe_row(run: RunInfo) -> str:
    """One line for the Compare tab's message: what the row is (arch, data, protocol, folds, image size, epochs),
    where its weights would be published, and its note."""
    summary, config = run.summary or {}, run.config or {}
    label = protocol_label(summary.get("protocol"), bool(summary.get("leaky")), summary.get("split_level"))
    folds = ", ".join(str(fold) for fold in summary.get("folds_done") or [])
    note = str(summary.get("note") or "").strip()
    if note and not note.endswith((".", "!", "?")):
        note += "."
    return (f"**{run.run_id}**: {summary.get('arch')} trained on {summary.get('dataset')}, {label}, test fold "
            f"{folds}, {summary.get('image_size')} px, {config.get('epochs')} epochs; weights not shipped (they would "
            f"be published at `{summary.get('weights_at')}`). {note}".rstrip())
