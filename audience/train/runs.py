"""Run folders: create one per training run, list them, read one back (the Compare tab reads these).

Layout of `runs/<run-id>/` (run-id: `YYYYMMDD-HHMMSS-<arch>-<protocol>[-<run_name>]`, made unique):

    config.json        the TrainConfig (as resolved: image size and pretrained filled in)
    status.json        state running|stopped|finished|failed, fold, epoch, started, ended, device, message
    train.log          the lines the CLI printed
    cv_summary.json    per-metric mean/std/per_fold over the folds done so far, plus what was run
    command.txt        the command line(s) of the training command (python -m audience.cli.train, or
                       the repository's wrapper of it) that started (and resumed) the run
    owner.lock         while a process trains the run it holds an flock on this file (one owner at a time);
                       inside, its host, pid and start for messages
    fold<k>/metrics.csv        one row per epoch (METRICS_COLUMNS)
    fold<k>/best.safetensors + best.json   best epoch by validation, with test metrics and temperature
    fold<k>/last.safetensors + last.json + last_state.pt   the last completed epoch (resume)
    fold<k>/test_metrics.json  full test metrics of fold k (confusion matrices, ECE before/after)

Every JSON file is written atomically (temporary file, then rename), so a reader never sees half a file.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, FiniteFloat, StrictBool, StrictInt, StrictStr, ValidationError, create_model

from audience.errors import AudienceError
from audience.files import JSON_MAX_BYTES, JsonFileError, atomic_path, read_json, write_json_atomic
from audience.inputs import name_slug
from audience.model.metadata import first_problem
from audience.registry import ACCURACY_KEYS, SUMMARY_KEYS
from audience.train.run_lock import (  # noqa: F401 - the run folder's lock, re-exported where runs are read
    OWNER_FILE,
    claim_run,
    describe_owner,
    holds_run,
    host_and_pid,
    now_iso,
    release_all_runs,
    release_run,
    run_owner,
)

# metrics.csv: one row per epoch; the validation accuracies are those of the metric table (audience.registry).
METRICS_COLUMNS: tuple[str, ...] = (
    "epoch", "train_loss", "val_loss", *(f"val_{key}" for key in ACCURACY_KEYS), "lr", "images_per_s", "seconds",
)
STATES: tuple[str, ...] = ("running", "stopped", "finished", "failed")
COMMAND_FILE = "command.txt"
_FOLD_DIR = re.compile(r"^fold(\d+)$")


def write_epochs(path: str | Path, rows: list[dict]) -> Path:
    """Write a fold's metrics.csv (one row per completed epoch, METRICS_COLUMNS) atomically."""
    path = Path(path)
    with atomic_path(path) as temp:
        pd.DataFrame(rows, columns=list(METRICS_COLUMNS)).to_csv(temp, index=False)
    return path


def read_epochs(path: str | Path, upto: int | None = None) -> list[dict]:
    """The rows of a fold's metrics.csv (those of epochs <= upto when given); [] when there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    frame = pd.read_csv(path)
    if upto is not None:
        frame = frame[frame["epoch"] <= upto]
    return frame.to_dict("records")


def create_run_dir(out: str | Path, config) -> Path:
    """A new, empty run folder under `out`, named from the time, arch, protocol and run_name."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AudienceError(f"{out}: cannot create the runs folder ({error.strerror}).") from None
    parts = [datetime.now().strftime("%Y%m%d-%H%M%S"), config.arch, config.protocol]
    if config.run_name:
        parts.append(name_slug(config.run_name, "run_name"))
    base = "-".join(p for p in parts if p)
    for attempt in range(1, 1000):
        candidate = out / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise AudienceError(f"{out}: could not find a free run folder name for {base}.")


def fold_dir(run_dir: str | Path, fold: int) -> Path:
    return Path(run_dir) / f"fold{fold}"


@dataclass
class RunInfo:
    """What is known about one run folder; `errors` names the files that could not be read."""

    path: Path
    run_id: str
    config: dict | None = None
    status: dict | None = None
    summary: dict | None = None
    epochs: dict[int, pd.DataFrame] = field(default_factory=dict)  # fold -> metrics.csv
    test_metrics: dict[int, dict] = field(default_factory=dict)  # fold -> test_metrics.json
    errors: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        """running / stopped / finished / failed, "interrupted" for a running run whose process is gone."""
        state = (self.status or {}).get("state", "unknown")
        if state == "running" and (not _process_alive(self.status or {}) or self._left_by_own_pid()):
            return "interrupted"
        return state

    def _left_by_own_pid(self) -> bool:
        """A status naming this very process, which does not hold the run: written by an earlier process with
        the same PID (a container restarted: the server is often PID 1 again)."""
        status = self.status or {}
        if status.get("host") != socket.gethostname() or status.get("pid") != os.getpid():
            return False
        return not holds_run(self.path)

    @property
    def leaky(self) -> bool:
        return bool((self.summary or {}).get("leaky", (self.config or {}).get("protocol") == "random"))

    @property
    def folds(self) -> list[int]:
        """Folds with a fold<k> folder."""
        return sorted(int(m.group(1)) for p in self.path.iterdir() if (m := _FOLD_DIR.match(p.name)) and p.is_dir())


def _process_alive(status: dict) -> bool:
    if status.get("host") != socket.gethostname() or not isinstance(status.get("pid"), int):
        return True  # another machine's run: cannot tell, trust the file
    try:
        os.kill(status["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_json(path: Path, errors: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        value = read_json(path)
    except JsonFileError as error:
        errors.append(f"{path.name}: cannot be read ({error.reason})")
        return None
    except OSError as error:
        errors.append(f"{path.name}: cannot be read ({error.strerror or type(error).__name__})")
        return None
    if not isinstance(value, dict):
        errors.append(f"{path.name}: not a JSON object")
        return None
    return value


class MetricSummary(BaseModel):
    """One metric of cv_summary.json, as summarize_folds writes it."""

    model_config = ConfigDict(extra="allow")
    mean: FiniteFloat | None = None
    std: FiniteFloat | None = None
    per_fold: dict[str, FiniteFloat | None] = {}


# The metrics the Compare tab reads; other keys (what was run) pass through.
RunSummary = create_model("RunSummary", __config__=ConfigDict(extra="allow"),
                          **{key: (MetricSummary | None, None) for key in SUMMARY_KEYS},
                          **{key: (StrictStr | None, None) for key in ("protocol", "arch", "task", "split_level")},
                          dataset=(StrictStr | dict | None, None), synthetic=(StrictBool | None, None),
                          leaky=(StrictBool | None, None), folds_done=(list[StrictInt] | StrictInt | None, None),
                          params=(StrictInt | FiniteFloat | None, None), flops=(FiniteFloat | None, None),
                          train_seconds=(FiniteFloat | None, None), stability=(dict | None, None))


# The fields the Compare tab and the resume check read, with the types they need (other keys pass through):
# a config.json whose `arch` is a list, or a status.json whose `state` is an object, is a problem row,
# not a crash of /compare or /measure_latency.
Text = StrictStr | None


class RunConfigFile(BaseModel):
    model_config = ConfigDict(extra="allow")
    arch: Text = None
    task: Text = None
    protocol: Text = None
    data: Text = None
    folds: StrictStr | StrictInt | None = None
    image_size: StrictInt | None = None


class RunStatusFile(BaseModel):
    model_config = ConfigDict(extra="allow")
    state: Text = None
    host: Text = None
    pid: StrictInt | None = None
    run_id: Text = None
    fold: StrictInt | None = None
    epoch: StrictInt | None = None
    epochs: StrictInt | None = None
    steps: StrictInt | None = None
    message: Text = None


class TestMetricsFile(BaseModel):
    model_config = ConfigDict(extra="allow")
    summary: dict[str, FiniteFloat | None] | None = None
    metrics: dict | None = None


def _checked(value: dict | None, schema: type[BaseModel], name: str, errors: list[str]) -> dict | None:
    """`value` when the fields its readers use have the types they need, else None and the reason in `errors`."""
    if value is None:
        return None
    try:
        schema.model_validate(value)
    except ValidationError as error:
        errors.append(f"{name}: {first_problem(error)}")
        return None
    return value


def _checked_summary(summary: dict | None, errors: list[str]) -> dict | None:
    """`summary` when its metrics have the types the readers need, else None and the reason in `errors`."""
    return _checked(summary, RunSummary, "cv_summary.json", errors)


def read_run(run_dir: str | Path, details: bool = True) -> RunInfo:
    """Everything a run folder holds; a damaged run is read as far as it goes (see RunInfo.errors).

    Raises AudienceError only when `run_dir` is not a folder.

    details=False skips the per-fold metrics.csv and test_metrics.json (for a quick listing).
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise AudienceError(f"{path}: run folder not found.")
    info = RunInfo(path=path, run_id=path.name)
    info.config = _checked(_read_json(path / "config.json", info.errors), RunConfigFile, "config.json", info.errors)
    if not (path / "config.json").is_file():
        info.errors.append("config.json: missing")
    info.status = _checked(_read_json(path / "status.json", info.errors), RunStatusFile, "status.json", info.errors)
    info.summary = _checked_summary(_read_json(path / "cv_summary.json", info.errors), info.errors)
    if not details:
        return info
    for fold in info.folds:
        folder = fold_dir(path, fold)
        csv = folder / "metrics.csv"
        if csv.is_file():
            try:
                if csv.stat().st_size > JSON_MAX_BYTES:  # one row per epoch: far below this (10,000 epochs: 2 MB)
                    raise JsonFileError(f"larger than {JSON_MAX_BYTES:,} bytes")
                info.epochs[fold] = pd.read_csv(csv)
            except JsonFileError as error:
                info.errors.append(f"fold{fold}/metrics.csv: cannot be read ({error.reason})")
            except (OSError, ValueError, pd.errors.ParserError) as error:
                info.errors.append(f"fold{fold}/metrics.csv: cannot be read ({type(error).__name__})")
        metrics = _checked(_read_json(folder / "test_metrics.json", info.errors), TestMetricsFile,
                           f"fold{fold}/test_metrics.json", info.errors)
        if metrics is not None:
            info.test_metrics[fold] = metrics
    return info


def list_runs(runs_dir: str | Path, details: bool = False) -> list[RunInfo]:
    """Every run folder under `runs_dir` (newest first); a missing folder gives an empty list."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    runs = []
    for child in runs_dir.iterdir():
        if child.is_dir() and not child.name.startswith("."):
            try:
                runs.append(read_run(child, details=details))
            except (OSError, AudienceError) as error:  # e.g. a folder removed while listing
                runs.append(RunInfo(path=child, run_id=child.name, errors=[f"cannot be read ({error})"]))
    return sorted(runs, key=lambda run: run.run_id, reverse=True)


class RunEmitter:
    """Stamps training events, writes their message to train.log, keeps status.json current, forwards them.

    It can start before the run folder exists (data checks and the image cache come first, so that a
    run that cannot start leaves no folder): messages wait in `pending` until `attach(run_dir)`
    writes them to train.log, so train.log still holds every message in order.
    """

    def __init__(self, on_event: Callable[[dict], None] | None, folds: list[int], device: str, record: bool = True):
        self.run_dir: Path | None = None
        self.on_event, self.folds, self.device = on_event, folds, device
        self.record = record  # False: another process (distributed rank 0) writes train.log and status.json
        self.fold_index = 0
        self.pending: list[str] = []
        self.status = {"state": "running", "run_id": None, "folds": folds, "fold": None, "epoch": 0,
                       "device": device, "started": now_iso(), "ended": None, "message": "", **host_and_pid()}

    def attach(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.status["run_id"] = self.run_dir.name
        lines, self.pending = self.pending, []
        for line in lines:
            self.write_log(line)
        self.set_status()

    def write_log(self, text: str) -> None:
        if self.run_dir is None or not self.record:
            self.pending.append(text)
            return
        with open(self.run_dir / "train.log", "a", encoding="utf-8") as log:
            log.write(text.rstrip("\n") + "\n")

    def set_status(self, **changes) -> None:
        self.status.update(changes, updated=now_iso())
        if self.run_dir is not None and self.record:
            write_json_atomic(self.run_dir / "status.json", self.status)

    def __call__(self, event: dict) -> None:
        event = {**event, "time": time.time()}
        kind = event["type"]
        if "fold_eta_s" in event:
            remaining_folds = len(self.folds) - self.fold_index - 1
            per_step = event.get("seconds_per_step")
            steps = self.status.get("steps") or 0
            event["eta_s"] = (event["fold_eta_s"] + remaining_folds * per_step * steps * self.status.get("epochs", 0)
                              if per_step else None)
        if kind == "fold_start":
            self.fold_index = self.folds.index(event["fold"])
            self.set_status(fold=event["fold"], epoch=event["epoch"], epochs=event["epochs"], steps=event["steps"])
        elif kind == "epoch":
            self.set_status(epoch=event["epoch"], message=event["message"])
        if kind != "batch" and event.get("message"):
            self.write_log(event["message"])
        if self.on_event is not None:
            self.on_event(event)
