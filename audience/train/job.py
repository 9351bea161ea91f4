"""One background training job for the whole server, so the UI can start, watch, stop and resume it.

The state lives in this module (a registry under a lock), not in a browser session: reloading the
page or opening a second browser shows the same job. `cross_validate` runs in a daemon thread and
reports through `on_event`; this module turns the events into a progress line, a log tail and
per-epoch curve points. Stopping sets the trainer's stop Event, so the run ends after the current
batch with valid files. No gradio here: the Train tab polls `job_status()`.

Threads: the job trains in a thread of the server process, and torch's intra-op thread count is
per process. On the CPU, cross_validate sets it to (cores - loader workers) for the run and puts
the previous value back when the run ends, however it ends; predictions served meanwhile run on
those same threads next to the training and are slower until it ends, then back to normal.

A job is refused (AudienceError, nothing started) on a public deployment without
AUDIENCE_ALLOW_TRAINING=1 (`training_allowed`), on a public deployment for a data root outside
settings.allowed_data_dirs() (a local run opens any folder), and while another job runs.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import replace
from pathlib import Path

from audience import settings
from audience.data.roots import DEMO_DATA, is_demo_root, resolve_data_root
from audience.errors import AudienceError, shorten
from audience.inputs import check_path
from audience.train.config import config_arguments
from audience.train.job_status import JobStatus, apply_event
from audience.train.prepare import read_run_config
from audience.train.runs import describe_owner, run_owner

LOG_LINES = 400  # kept in memory; the full log is the run's train.log
TAIL_LINES = 200  # returned by job_status()


class _Job:
    """The live job: the status the events update, the stop Event, the thread."""

    def __init__(self, config, resume: Path | None, processes: int = 1):
        self.config = config
        self.resume = resume
        self.processes = processes  # more than 1: torchrun runs audience.cli.train, one process per GPU
        self.stop = threading.Event()
        self.status = JobStatus(state="running", started_at=time.time(), arch=getattr(config, "arch", None))
        self.log: deque[str] = deque(maxlen=LOG_LINES)
        self.thread: threading.Thread | None = None

    def add_log(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        for part in str(line).splitlines() or [""]:
            self.log.append(f"{stamp} {part}")


_lock = threading.Lock()
_job: _Job | None = None


# ---------------------------------------------------------------- permission and data root


def training_allowed(server_name: str | None = None, share: bool = False) -> tuple[bool, str]:
    """(allowed, reason). Public deployments train only with AUDIENCE_ALLOW_TRAINING=1.

    Public means: on Hugging Face Spaces (env SPACE_ID), or served on a non-loopback address
    (`server_name`, else env GRADIO_SERVER_NAME), or through a share link.
    """
    if settings.training_allowed_anywhere():
        return True, "Training is enabled (AUDIENCE_ALLOW_TRAINING=1)."
    where = settings.public_deployment(server_name, share)
    if where is None:
        return True, "Training is enabled (the app runs locally)."
    return False, (
        f"Training is turned off because this app is served {where}; start it with the environment variable "
        "AUDIENCE_ALLOW_TRAINING=1 to allow training (it uses the server's CPU/GPU for minutes to hours)."
    )


def server_change_refusal(action: str, server_name: str | None = None, share: bool = False) -> str | None:
    """One sentence refusing `action` (e.g. "'Use this model'") on a public deployment, where a visitor must
    not change what every other visitor gets nor spend the server's CPU; None where it is allowed (a local
    run, or AUDIENCE_ALLOW_TRAINING=1, as for training)."""
    if settings.env_flag("AUDIENCE_ALLOW_TRAINING"):
        return None
    where = settings.public_deployment(server_name, share)
    if where is None:
        return None
    return (f"{action} is turned off because this app is served {where}; start it with the environment variable "
            "AUDIENCE_ALLOW_TRAINING=1 to allow it.")


def training_data_root(text: str | None, server_name: str | None = None, share: bool = False) -> Path:
    """The data root the UI may train on: 'demo' or empty means the demo dataset (made on first use);
    on a public deployment any other path must lie under settings.allowed_data_dirs(), on a local run
    any folder is opened (settings.data_dirs_for)."""
    return resolve_data_root((text or "").strip() or DEMO_DATA, allowed=settings.data_dirs_for(server_name, share))


def _resolve_run_dir(run_dir: str | Path) -> Path:
    runs = settings.runs_dir().resolve()
    path = Path(check_path(run_dir, "Run id", base=runs))
    path = (path if path.is_absolute() else runs / path).resolve()
    if not path.is_relative_to(runs) or path == runs:
        # the run id as typed: where the runs folder is on the server is no visitor's business
        raise AudienceError(f"Run {shorten(str(run_dir))} is not a folder under the runs folder; pick a run from "
                            "the list.")
    if not (path / "config.json").is_file():
        raise AudienceError(f"Run {path.name} has no config.json, so it cannot be resumed.")
    return path


# ---------------------------------------------------------------- the training thread


def _on_event(job: _Job, event: dict) -> None:
    with _lock:
        try:
            line = apply_event(job.status, event)
            if line:
                job.add_log(line)
        except Exception as error:  # noqa: BLE001 - a malformed event must not kill the training thread
            job.add_log(f"(could not read a progress event: {error})")


TRAIN_MODULE = "audience.cli.train"  # the train command, run as a module: an installed package trains too
PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder that holds the audience package


def torchrun_command(job: _Job) -> list[str]:
    """`torchrun --standalone --nproc_per_node N -m audience.cli.train ...` for the job's config or resume."""
    flags = ["--resume", str(job.resume)] if job.resume is not None else config_arguments(job.config)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(job.processes),
            "-m", TRAIN_MODULE, "--quiet", *flags]


def _torchrun_environment() -> dict[str, str]:
    """This process's environment, unbuffered, with this package importable in the launched processes (also when
    it runs from a source folder rather than installed)."""
    paths = [str(PACKAGE_PARENT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def _run_torchrun(job: _Job) -> Path | None:
    """Train in torchrun's processes, their lines (every rank's) into the job's log; a stop leaves the run
    folder's STOP file, which rank 0 passes on to every process. AudienceError with the run's last error line."""
    from audience.train.distributed import STOP_FILE

    run_dir = job.resume
    process = subprocess.Popen(torchrun_command(job), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=_torchrun_environment())
    errors = []

    def relay_stop() -> None:
        job.stop.wait()
        if process.poll() is None:
            if run_dir is not None and run_dir.is_dir():
                (run_dir / STOP_FILE).touch()
            else:
                process.send_signal(signal.SIGINT)

    threading.Thread(target=relay_stop, name="audience-torchrun-stop", daemon=True).start()
    for line in process.stdout:
        line = line.rstrip("\n")
        if line.startswith("starting run ") or line.startswith("resuming run "):
            run_id = line.split()[2].rstrip(":")
            run_dir = Path(job.config.out or settings.runs_dir()) / run_id if job.resume is None else job.resume
            with _lock:
                job.status.run_dir, job.status.run_id = str(run_dir), run_id
        if line.startswith("error:"):
            errors.append(line.removeprefix("error: "))
        with _lock:
            job.add_log(line)
    code = process.wait()
    if code not in (0, 130):
        raise AudienceError(errors[-1] if errors else f"torchrun ended with exit status {code}; see the log.")
    return run_dir


def _run(job: _Job) -> None:
    from audience.train.cross_validate import cross_validate

    run_dir, error = None, None
    try:
        if job.processes > 1:
            run_dir = _run_torchrun(job)
        else:
            run_dir = cross_validate(job.config, on_event=lambda e: _on_event(job, e), stop=job.stop,
                                     resume=job.resume)
        outcome = "stopped" if job.stop.is_set() else "finished"
    except AudienceError as exc:
        outcome, error = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - the UI must show the failure, not lose it in a thread
        outcome, error = "failed", f"Training failed with {type(exc).__name__}: {exc}"
        with _lock:
            job.add_log(traceback.format_exc())
    with _lock:
        status = job.status
        if run_dir is not None:
            status.run_dir, status.run_id = str(run_dir), Path(run_dir).name
        status.state, status.finished_at, status.eta_s = outcome, time.time(), None
        if error:
            already_logged = status.error == error
            status.error = error
            if not already_logged:
                job.add_log(f"error: {error}")
        elif outcome == "stopped":
            job.add_log(f"run {status.run_id} stopped; resume it from the Resume list")


# ---------------------------------------------------------------- public API


def _where(status: JobStatus) -> str:
    where = f"run {status.run_id or '(starting)'}"
    if status.n_folds and status.fold_index:
        where += f", fold {status.fold_index}/{status.n_folds}"
    if status.epochs:
        where += f", epoch {status.epoch}/{status.epochs}"
    return where


def _refusal(status: JobStatus) -> AudienceError:
    return AudienceError(f"A training run is already in progress ({_where(status)}); stop it or wait.")


def _checked_data(config, server_name: str | None = None, share: bool = False):
    """The config with its data root checked (and resolved, unless it is the demo set)."""
    if is_demo_root(config.data) or not str(config.data).strip():
        return config.replace(data=DEMO_DATA)
    return config.replace(data=str(training_data_root(config.data, server_name, share)))


def _check_memory(config) -> None:
    """Refuse (AudienceError) a run whose training step would not fit in the memory there is (train/memory.py)."""
    from audience.model.network import model_data_config
    from audience.train.memory import check_training_memory

    image_size = config.image_size or model_data_config(config.arch)["image_size"]
    check_training_memory(config.arch, config.batch_size, image_size)


def _start_line(config) -> str:
    """The log's first line: what this run trains, so a log is never mistaken for another run's."""
    data = "the demo set" if config.data == DEMO_DATA else config.data
    epochs = f"{config.epochs} epoch" + ("" if config.epochs == 1 else "s")
    return f"starting a training run: {config.arch}, folds {config.folds}, {epochs}, data {data}"


def _launch(config, resume: Path | None, server_name: str | None, share: bool, processes: int = 1) -> JobStatus:
    global _job
    allowed, reason = training_allowed(server_name, share)
    if not allowed:
        raise AudienceError(reason)
    config = _checked_data(config, server_name, share)
    _check_memory(config)
    with _lock:
        if _job is not None and _job.status.active:
            raise _refusal(_job.status)
        job = _Job(config, resume, processes)
        if resume is not None:
            job.status.run_dir, job.status.run_id = str(resume), resume.name
        job.add_log(f"resuming run {resume.name}" if resume is not None else _start_line(config))
        job.thread = threading.Thread(target=_run, args=(job,), name="audience-training", daemon=True)
        _job = job
        job.thread.start()
        return _snapshot(job)


def start_job(config, *, server_name: str | None = None, share: bool = False, processes: int = 1) -> JobStatus:
    """Start cross_validate(config) in the background; AudienceError (nothing started) when training is
    not allowed here or a run is already in progress.

    `processes` > 1: torchrun trains it in that many processes (one per GPU; config.parallel_folds picks the
    mode), and the log shows their lines."""
    return _launch(config, None, server_name, share, processes)


def resume_job(run_dir: str | Path, *, server_name: str | None = None, share: bool = False,
               processes: int = 1) -> JobStatus:
    """Resume a stopped or interrupted run (a folder under the runs folder) from its saved state; refused at
    once (AudienceError naming the process) when another live process is training that run."""
    path = _resolve_run_dir(run_dir)
    owner = run_owner(path)
    if owner is not None:
        raise AudienceError(describe_owner(path, owner))
    return _launch(read_run_config(path), path, server_name, share, processes)


def clear_image_cache(*, server_name: str | None = None, share: bool = False) -> int:
    """Delete the decoded-image caches (settings.cache_dir()) and return the bytes freed.

    Refused (AudienceError) where training is not allowed (the cache only serves training) and while
    the server's job runs: it may be building or about to open a cache. The job lock is held while
    the files are deleted, so no job starts meanwhile.
    """
    from audience.data.cache import clear_caches

    allowed, reason = training_allowed(server_name, share)
    if not allowed:
        raise AudienceError(reason)
    with _lock:
        if _job is not None and _job.status.active:
            raise AudienceError(f"The image cache is in use by the training run in progress ({_where(_job.status)}); "
                                "stop it or wait for it to end, then clear the cache.")
        try:
            return clear_caches(settings.cache_dir())
        except OSError as error:
            raise AudienceError(f"The image cache could not be cleared ({error.strerror or error}).") from None


def stop_job() -> JobStatus:
    """Ask the running job to stop after its current batch (its files stay valid); no-op when idle."""
    with _lock:
        if _job is not None and _job.status.state == "running":
            _job.stop.set()
            _job.status.state = "stopping"
            _job.add_log("stop requested: the run ends after the current batch")
        return _snapshot(_job)


def job_status(tail: int = TAIL_LINES) -> JobStatus:
    """A snapshot of the server's job (state 'idle' before the first run)."""
    with _lock:
        return _snapshot(_job, tail)


def wait_job(timeout: float | None = None) -> JobStatus:
    """Block until the current job's thread ends (or `timeout` seconds); return its status."""
    with _lock:
        thread = _job.thread if _job is not None else None
    if thread is not None:
        thread.join(timeout)
    return job_status()


def _snapshot(job: _Job | None, tail: int = TAIL_LINES) -> JobStatus:
    if job is None:
        return JobStatus()
    status = replace(job.status, curves=copy.deepcopy(job.status.curves), folds=list(job.status.folds))
    status.log = list(job.log)[-tail:] if tail else []
    return status


RESUMABLE_STATES = ("stopped", "interrupted", "failed")


def resumable_runs() -> list[tuple[str, str]]:
    """(label, run id) of the runs under the runs folder that stopped before the end, newest first."""
    from audience.train.runs import list_runs

    with _lock:
        busy = _job.status.run_id if _job is not None and _job.status.active else None
    choices = []
    for run in list_runs(settings.runs_dir()):
        if run.config is None or run.run_id == busy or run.state not in RESUMABLE_STATES:
            continue
        status = run.status or {}
        where = f"fold {status.get('fold')}, epoch {status.get('epoch')}" if status.get("fold") is not None else ""
        choices.append((f"{run.run_id} ({run.state}{', ' + where if where else ''})", run.run_id))
    return choices
