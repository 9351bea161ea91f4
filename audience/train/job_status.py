"""The status of the server's training job, and how trainer events update it (plain data, no threads).

`apply_event(status, event)` folds one audience.train.cross_validate event (see its module docstring for the
schema) into a JobStatus and returns the log line it adds (None for per-batch events, which only
move the progress line).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from audience.registry import METRIC_OF, format_percent, format_seconds

ACTIVE_STATES = ("running", "stopping")


@dataclass
class JobStatus:
    """What the UI shows about the server's training job (a snapshot; plain data)."""

    state: str = "idle"  # idle | running | stopping | stopped | finished | failed
    run_dir: str | None = None
    run_id: str | None = None
    arch: str | None = None
    fold: int | None = None  # the fold being trained (its number, 0-4)
    fold_index: int = 0  # 1-based position of that fold among the folds of this run
    n_folds: int = 0
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    eta_s: float | None = None
    images_per_s: float | None = None
    device: str = ""
    folds: list[int] = field(default_factory=list)  # the test folds of the run, in order
    log: list[str] = field(default_factory=list)
    curves: list[dict] = field(default_factory=list)  # one dict per (fold, epoch): fold, epoch, metric values
    error: str | None = None
    result: str | None = None  # the finished run's test accuracy, for the status line
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def progress_line(self) -> str:
        """'fold 1/5 · epoch 2/10 · ETA 1:05' (what is known so far)."""
        if self.state == "idle":
            return "No training run yet."
        parts = [self.state]
        if self.run_id:
            parts.append(f"run {self.run_id}")
        if self.n_folds and self.fold_index:
            parts.append(f"fold {self.fold_index}/{self.n_folds} (test fold {self.fold})")
        elif self.n_folds:
            parts.append(f"{self.n_folds} fold(s), preparing data")
        if self.epochs:
            parts.append(f"epoch {self.epoch}/{self.epochs}")
        if self.steps and self.active:
            parts.append(f"batch {self.step}/{self.steps}")
        if self.active and self.eta_s is not None:
            parts.append(f"ETA {format_seconds(self.eta_s, clock=True)}")
        if self.images_per_s and self.active:
            parts.append(f"{self.images_per_s:.0f} img/s")
        if self.result and not self.active:
            parts.append(self.result)
        return " · ".join(parts)

    def device_line(self) -> str:
        if not self.device:
            return ""
        if self.device.lower().startswith("cpu"):
            if self.arch == "tiny":  # the advice would name what is already chosen
                return f"Device: {self.device} (no GPU: the tiny arch keeps a CPU run short)"
            return f"Device: {self.device} (no GPU: training is slow; use the tiny arch or small images for a demo)"
        return f"Device: {self.device}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(progress=self.progress_line(), device_line=self.device_line(), active=self.active)
        return data


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def curve_point(event: dict) -> dict:
    point = {"fold": event.get("fold"), "epoch": event.get("epoch")}
    if _number(event.get("loss")) is not None:
        point["loss"] = float(event["loss"])
    for key, value in (event.get("metrics") or {}).items():
        if _number(value) is not None:
            point[key] = float(value)
    return point


def describe(event: dict) -> str | None:
    """The log line of an event (None for the per-batch events, which only move the progress line)."""
    if event.get("type") == "batch":
        return None
    return str(event["message"]) if event.get("message") else str(event.get("type"))


def summary_line(summary: dict) -> str | None:
    """'test: age exact 61.2 ± 1.0 %, gender f/m 92.0 %' from a cv_summary (mean ± std over folds; registry labels)."""
    parts = []
    for key in ("age_exact", "gender_acc_fm"):
        name = METRIC_OF[key].label
        stat = summary.get(key)
        if isinstance(stat, dict) and stat.get("mean") is not None:
            std = stat.get("std") if len(stat.get("per_fold") or {}) > 1 else None
            parts.append(f"{name} {format_percent(stat['mean'], std)} %")
    return "test: " + ", ".join(parts) if parts else None


def apply_event(status: JobStatus, event: dict) -> str | None:
    """Update `status` from one trainer event; return the log line of the event (or None)."""
    _apply_progress(status, event)
    kind = event.get("type")
    if kind == "run_start" and isinstance(event.get("folds"), list):
        status.folds = [int(f) for f in event["folds"]]
        status.n_folds = len(status.folds)
    if kind == "fold_start":
        status.step = 0
    elif kind == "epoch":
        status.curves.append(curve_point(event))
    elif kind == "run_end" and isinstance(event.get("summary"), dict):
        status.result = summary_line(event["summary"])
    elif kind == "error" and event.get("message"):
        status.error = str(event["message"]).removeprefix("error: ")
    return describe(event)


def _apply_progress(status: JobStatus, event: dict) -> None:
    """The counters, rates and places any event may carry (fold, epoch, ETA, device, run folder)."""
    for key in ("epoch", "epochs", "step", "steps"):
        if isinstance(event.get(key), int) and not isinstance(event.get(key), bool):
            setattr(status, key, event[key])
    if isinstance(event.get("fold"), int):
        status.fold = event["fold"]
        if status.fold in status.folds:
            status.fold_index = status.folds.index(status.fold) + 1
    if "eta_s" in event:
        status.eta_s = _number(event["eta_s"])
    if _number(event.get("images_per_s")) is not None:
        status.images_per_s = float(event["images_per_s"])
    if event.get("device"):
        status.device = str(event["device"])
    if event.get("run_dir"):
        status.run_dir = str(event["run_dir"])
        status.run_id = Path(status.run_dir).name
