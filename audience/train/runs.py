"""Run folders: create one per training run, list them, read one back (the Compare tab reads these).

Layout of `runs/<run-id>/` (run-id: `YYYYMMDD-HHMMSS-<arch>-<protocol>[-<run_name>]`, made unique):

    config.json        the TrainConfig (as resolved: image size and pretrained filled in)
    status.json        state running|stopped|finished|failed, fold, epoch, started, ended, device, message
    train.log          the lines the CLI printed
    cv_summary.json    per-metric mean/std/per_fold over the folds done so far, plus what was run
    command.txt        the command line(s) of audience.cli.train that started (and resumed) the run
    owner.lock         while a process trains the run: its host, pid and start (one owner at a time)
    fold<k>/metrics.csv        one row per epoch (METRICS_COLUMNS)
    fold<k>/best.safetensors + best.json   best epoch by validation, with test metrics and temperature
    fold<k>/last.safetensors + last.json + last_state.pt   the last completed epoch (resume)
    fold<k>/test_metrics.json  full test metrics of fold k (confusion matrices, ECE before/after)

Every JSON file is written atomically (temporary file, then rename), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, FiniteFloat, ValidationError, create_model

from audience.errors import AudienceError
from audience.files import atomic_path, write_json_atomic
from audience.inputs import name_slug
from audience.model.metadata import first_problem
from audience.registry import ACCURACY_KEYS, SUMMARY_KEYS

# metrics.csv: one row per epoch; the validation accuracies are those of the metric table (audience.registry).
METRICS_COLUMNS: tuple[str, ...] = (
    "epoch", "train_loss", "val_loss", *(f"val_{key}" for key in ACCURACY_KEYS), "lr", "images_per_s", "seconds",
)
STATES: tuple[str, ...] = ("running", "stopped", "finished", "failed")
COMMAND_FILE = "command.txt"
OWNER_FILE = "owner.lock"  # the process training the run: {host, pid, since}; removed when it ends
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


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def host_and_pid() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def run_owner(run_dir: str | Path) -> dict | None:
    """The live process that owns the run folder ({host, pid, since}), or None (no owner, or it has ended)."""
    try:
        owner = json.loads((Path(run_dir) / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(owner, dict) or not _process_alive(owner):
        return None
    return owner


def describe_owner(run_dir: Path, owner: dict) -> str:
    return (f"Run {Path(run_dir).name} is being trained by process {owner.get('pid')} on {owner.get('host')} "
            f"(since {owner.get('since')}); stop that run first, or delete {Path(run_dir) / OWNER_FILE} if that "
            "process is gone.")


def claim_run(run_dir: str | Path) -> None:
    """Make this process the run folder's one owner (OWNER_FILE: host, pid, since); AudienceError naming the
    owner when another live process holds it. A lock left by a process that has ended is taken over."""
    path = Path(run_dir) / OWNER_FILE
    record = json.dumps({**host_and_pid(), "since": now_iso()})
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = run_owner(run_dir)
            if owner is not None:
                raise AudienceError(describe_owner(Path(run_dir), owner)) from None
            path.unlink(missing_ok=True)  # stale: its process has ended
            continue
        except OSError as error:
            raise AudienceError(f"{path}: cannot claim the run folder ({error.strerror}).") from None
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(record)
        return
    raise AudienceError(f"Run {Path(run_dir).name}: another process keeps claiming it; try again.")


def release_run(run_dir: str | Path) -> None:
    """Give up the run folder if this process owns it (a lock of another process is left alone)."""
    path = Path(run_dir) / OWNER_FILE
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(owner, dict) and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


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
        if state == "running" and not _process_alive(self.status or {}):
            return "interrupted"
        return state

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
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        errors.append(f"{path.name}: cannot be read ({type(error).__name__})")
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
                          **{key: (MetricSummary | None, None) for key in SUMMARY_KEYS})


def _checked_summary(summary: dict | None, errors: list[str]) -> dict | None:
    """`summary` when its metrics have the types the readers need, else None and the reason in `errors`."""
    if summary is None:
        return None
    try:
        RunSummary.model_validate(summary)
    except ValidationError as error:
        errors.append(f"cv_summary.json: {first_problem(error)}")
        return None
    return summary


def read_run(run_dir: str | Path, details: bool = True) -> RunInfo:
    """Everything a run folder holds; a damaged run is read as far as it goes (see RunInfo.errors).

    Raises AudienceError only when `run_dir` is not a folder.

    details=False skips the per-fold metrics.csv and test_metrics.json (for a quick listing).
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise AudienceError(f"{path}: run folder not found.")
    info = RunInfo(path=path, run_id=path.name)
    info.config = _read_json(path / "config.json", info.errors)
    if not (path / "config.json").is_file():
        info.errors.append("config.json: missing")
    info.status = _read_json(path / "status.json", info.errors)
    info.summary = _checked_summary(_read_json(path / "cv_summary.json", info.errors), info.errors)
    if not details:
        return info
    for fold in info.folds:
        folder = fold_dir(path, fold)
        csv = folder / "metrics.csv"
        if csv.is_file():
            try:
                info.epochs[fold] = pd.read_csv(csv)
            except (OSError, ValueError, pd.errors.ParserError) as error:
                info.errors.append(f"fold{fold}/metrics.csv: cannot be read ({type(error).__name__})")
        metrics = _read_json(folder / "test_metrics.json", info.errors)
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
