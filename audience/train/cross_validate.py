"""Cross-validated training runs: `cross_validate(config)` trains the requested folds into a run folder.

`TrainConfig` (audience.train.config) holds every setting. `fit` (audience.train.fold) trains one fold.
Progress is reported only through `on_event(dict)`; the core never prints and never imports a UI.

Event schema (plain dicts; every event has "type"; every event except "batch" has "message", the
human line that the CLI prints and train.log records; cross_validate adds "time" (epoch seconds)
to all and "eta_s" (seconds left in the whole run, None until measurable) to batch and epoch):

    log         a free line: cache progress, warnings (unreadable images: one line with a count and a
                few examples; CPU; leaky protocol). Cache lines come before run_start: the data are
                checked and cached before the run folder is made, so a run that cannot start (bad
                split, no readable image) raises AudienceError and leaves no folder.
    run_start   run_dir, run_id, folds (list of test folds), epochs, device, resumed (bool), leaky (bool)
    fold_start  fold, epoch (epochs already done: >0 when resuming), epochs, steps (batches per epoch),
                sizes {"train","val","test"}
    batch       fold, epoch, epochs, step, steps, loss, lr, images_per_s, seconds_per_step,
                fold_eta_s, eta_s; no message
    epoch       fold, epoch, epochs, loss (train), lr, images_per_s, best (bool), eta_s, fold_eta_s,
                metrics {epoch, train_loss, val_loss, val_age_exact, val_age_one_off, val_gender_acc,
                         val_gender_acc_fm, lr, images_per_s, seconds} (the metrics.csv row)
    fold_end    fold, best_epoch, temperature {head: T}, calibration {head: {temperature, applied, reason}}
                (metrics.choose_temperature: T = 1 when validation is too small or the fit does not
                help), metrics {age_exact, age_one_off, age_f1, age_ece, gender_acc, gender_acc_fm,
                gender_f1, gender_ece, *_ece_uncalibrated} (test)
    stopped     run_dir, fold, epoch (last completed), resume (the command that continues it)
    run_end     run_dir, summary (the cv_summary.json content)
    error       run_dir, message (the run is marked failed; cross_validate then raises AudienceError).
                Any other exception (a bug) marks the run failed, appends its traceback to train.log
                and propagates.

Accuracies are fractions (0-1). A stop Event set by the caller ends the run after the current
batch; `resume(run_dir)` (or cross_validate(..., resume=run_dir)) continues at the fold and epoch
where it stopped and, on the same machine and settings, ends with the same metrics as a run that
never stopped.
"""

from __future__ import annotations

import errno
import shlex
import shutil
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from audience import settings
from audience.data.adience import AdienceData
from audience.data.cache import ImageCache
from audience.data.formats import DATA_FORMATS
from audience.data.splits import make_split
from audience.errors import AudienceError
from audience.faces.align import measure_framing
from audience.files import write_json_atomic
from audience.model.network import build_model, count_flops, count_params
from audience.registry import HEADLINE_KEYS, SUMMARY_KEYS
from audience.train import distributed
from audience.train.config import TrainConfig
from audience.train.distributed import SINGLE, Ranks, StopSignal
from audience.train.fold import FoldResult, fit, read_resume_state
from audience.train.loop import LossNotFinite, describe_device, resolve_device
from audience.train.metrics import summarize_folds
from audience.train.prepare import build_cache_for, read_data, read_run_config, resolve_config
from audience.train.runs import RunEmitter, claim_run, create_run_dir, fold_dir, now_iso, release_run

__all__ = ["cross_validate", "resume"]



def check_readable(data: AdienceData, splits: dict, cache: ImageCache) -> None:
    """AudienceError when a fold has too few readable images to train and test on."""
    rows = cache.rows_of(data.faces["path"].astype(str).tolist())
    for fold, split in splits.items():
        for name in ("train", "val", "test"):
            index = getattr(split, name)
            kept = int((rows[index] >= 0).sum())
            if kept >= (2 if name == "train" else 1):
                continue
            if not (rows >= 0).any():
                why = (f"none of the {len(cache.paths)} images of {data.root} could be read, e.g. "
                       f"{next(iter(cache.failed.values()), 'no image').rstrip('.')}; check the image folder")
            else:
                why = f"{len(index) - kept} of its {len(index)} {name} images could not be read"
            raise AudienceError(f"Fold {fold} has {kept} readable {name} image(s), too few to train and test: "
                                f"{why}.")


def _write_summary(run_dir: Path, config: TrainConfig, data: AdienceData, results: dict[int, dict],
                   extra: dict) -> dict:
    per_fold = summarize_folds(results)
    summary = {key: per_fold[key] for key in SUMMARY_KEYS if key in per_fold}
    summary.update({
        "protocol": config.protocol, "leaky": config.protocol == "random", "policy": data.policy,
        "images": data.images, "dataset": data.name, "synthetic": data.synthetic, "arch": config.arch,
        "data_format": data.format, "split_level": data.split_level,
        "task": config.task, "image_size": config.image_size, "pretrained": config.pretrained,
        "folds": config.fold_list(), "folds_done": sorted(results), **extra,
    })
    write_json_atomic(run_dir / "cv_summary.json", summary)
    return summary


def _model_size(config: TrainConfig) -> dict:
    """Params and FLOPs; building the model as configured also fails early on unavailable weights."""
    model = build_model(config.arch, config.task, pretrained=bool(config.pretrained), weights_file=config.weights_file)
    return {"params": count_params(model), "flops": count_flops(model, config.image_size)}


def _announce(emit: RunEmitter, config: TrainConfig, data: AdienceData, device, resumed: bool,
              ranks: Ranks = SINGLE) -> None:
    leaky = config.protocol == "random"
    folds = emit.folds
    emit({"type": "run_start", "run_dir": str(emit.run_dir), "run_id": emit.run_dir.name, "folds": folds,
          "epochs": config.epochs, "device": emit.device, "resumed": resumed, "leaky": leaky,
          "message": f"{'resuming' if resumed else 'starting'} run {emit.run_dir.name}: {config.arch}, "
                     f"task {config.task}, protocol {config.protocol}, folds {','.join(map(str, folds))}, "
                     f"{config.epochs} epochs, {data.name} ({DATA_FORMATS[data.format]}, {len(data.faces)} faces), "
                     f"device {emit.device}"})
    shared = ranks.describe(config.batch_size)
    if shared:
        emit({"type": "log", "message": shared})
    elif config.parallel_folds:
        emit({"type": "log", "message": "note: parallel_folds takes effect under torchrun with several processes; "
                                        "this one process trains the folds one after another"})
    if device.type == "cpu" and config.arch != "tiny":  # with tiny chosen the advice has been taken
        emit({"type": "log", "message": "warning: no GPU, training on the CPU is slow (use the tiny arch or a "
                                        "small --image-size for a quick try)"})
    if leaky:
        emit({"type": "log", "message": "warning: protocol 'random' splits images, not people: the same people are "
                                        "in training and test, so its accuracies are inflated (leaky)"})
    elif data.split_level == "image":
        emit({"type": "log", "message": f"note: {data.name} lists no identities, so its folds split images by file "
                                        "name (image-level, not subject-exclusive): one person may be on both sides"})
    if data.crop:
        emit({"type": "log", "message": describe_crop(data.crop)})
    if data.alignment:
        tilt = data.alignment["angle_median"]
        emit({"type": "log", "message": f"the training faces are level (median tilt {tilt:.1f} degrees): Predict "
                                        "turns a face tilted more than the training faces are"})


def describe_crop(crop: dict) -> str:
    """The training images' framing (crop geometry) in plain words, for the log.

    `margin` is how far the crop reaches beyond each side of the detector's face box, `shift_x`/`shift_y`
    how far its centre sits from the box's centre (right/down positive), all in box sizes."""
    def offset(value: float, positive: str, negative: str) -> str | None:
        if abs(value) < 0.005:
            return None
        return f"{abs(value):.2f} box sizes {positive if value > 0 else negative}"

    moves = [part for part in (offset(crop["shift_x"], "to the right", "to the left"),
                               offset(crop["shift_y"], "lower", "higher")) if part]
    centre = f"its centre {' and '.join(moves)}" if moves else "centred on the box"
    return (f"framing of the training faces (measured on {crop['measured_on']} of {crop['sampled']} sampled images): "
            f"each face fills a crop that reaches {crop['margin']:.2f} box sizes beyond each side of the face "
            f"detector's box, {centre}; Predict cuts faces the same way, so they look like these "
            f"(crop margin {crop['margin']:.2f}, shift {crop['shift_x']:+.2f}, {crop['shift_y']:+.2f})")


TRAIN_PROGRAMS = ("train.py",)  # a script of this name, or a module of audience.train, is the training command
TRAIN_MODULE = "audience.cli.train"
INTERPRETER_OPTIONS_WITH_VALUE = ("-X", "-W", "--check-hash-based-pycs")


def invoked_train_command(argv: list[str] | None = None) -> list[str] | None:
    """How this process's training command was typed, without its arguments: the interpreter and the script or
    `-m module` from sys.orig_argv (e.g. ['.venv/bin/python', 'train.py'] or ['python', '-m',
    'audience.cli.train']); None when this process is not the training command (a test, the app)."""
    argv = list(getattr(sys, "orig_argv", None) or []) if argv is None else list(argv)
    index = 1
    while index < len(argv):
        part = argv[index]
        if part == "-m" and index + 1 < len(argv):
            module = argv[index + 1]
            return argv[:index + 2] if module.split(".__main__")[0].startswith(TRAIN_MODULE) else None
        if part.startswith("-c") or part.startswith("-m"):
            return None
        if part in INTERPRETER_OPTIONS_WITH_VALUE:
            index += 2
            continue
        if part.startswith("-"):
            index += 1
            continue
        return argv[:index + 1] if Path(part).name in TRAIN_PROGRAMS else None
    return None


def resume_command(run_dir: Path, ranks: Ranks = SINGLE) -> str:
    """The command that continues `run_dir`: the user's own training command (its interpreter and script as
    typed), else `python -m audience.cli.train`; under torchrun, torchrun with this run's process count."""
    invoked = invoked_train_command()
    if ranks.world == 1:
        return shlex.join([*(invoked or ["python", "-m", TRAIN_MODULE]), "--resume", str(run_dir)])
    program = (["-m", invoked[-1]] if invoked[-2:-1] == ["-m"] else [invoked[-1]]) if invoked else ["-m", TRAIN_MODULE]
    return shlex.join(["torchrun", "--nproc_per_node", str(ranks.local_world), *program, "--resume", str(run_dir)])


def _report_stop(emit: RunEmitter, run_dir: Path, fold: int, epochs_done: int, ranks: Ranks) -> None:
    command = resume_command(run_dir, ranks)
    emit.set_status(state="stopped", ended=now_iso(), epoch=epochs_done,
                    message=f"stopped in fold {fold} after epoch {epochs_done}")
    emit({"type": "stopped", "run_dir": str(run_dir), "fold": fold, "epoch": epochs_done,
          "resume": command, "message": f"stopped in fold {fold} after {epochs_done} completed "
                                        f"epoch(s); continue with: {command}"})


def _train_folds(config: TrainConfig, data: AdienceData, emit: RunEmitter, stop, model_size: dict,
                 cache: ImageCache, run_dir: Path, ranks: Ranks = SINGLE) -> dict | None:
    """Train every fold not finished yet (this process's share of them under torchrun); the summary (on
    rank 0), or None when stopped."""
    extra = {**model_size, "device": emit.device, "run_id": run_dir.name}
    results: dict[int, dict] = {}
    summary, stopped = None, None
    for fold in ranks.my_folds(emit.folds):
        result = _run_fold(config, data, run_dir, fold, emit, stop, cache, ranks)
        if result.state == "stopped":
            stopped = (fold, result.epochs_done)
            break
        results[fold] = result.test_metrics
        if ranks.main:
            summary = _write_summary(run_dir, config, data, results,
                                     {**extra, "train_seconds": _train_seconds(run_dir)})
    if ranks.parallel_folds:
        # Rank 0 merges: every process's fold results and log lines, and the first stop.
        shares = distributed.gather((results, stopped, emit.pending), ranks)
        emit.pending = []
        results = {fold: metrics for share, _, _ in shares for fold, metrics in share.items()}
        stopped = next((share_stopped for _, share_stopped, _ in shares if share_stopped), None)
        if ranks.main:
            for rank, (_, _, lines) in enumerate(shares[1:], start=1):
                for line in lines:
                    emit.write_log(f"[rank {rank}] {line}")
            if results:
                summary = _write_summary(run_dir, config, data, dict(sorted(results.items())),
                                         {**extra, "train_seconds": _train_seconds(run_dir)})
    if stopped is not None:
        _report_stop(emit, run_dir, *stopped, ranks)
        return None
    return summary


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# How writers that are not Python's own files say it: safetensors ("I/O error: No space left on device
# (os error 28)"), torch.save ("PytorchStreamWriter failed writing file ...: file write failed").
DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "os error 28", "os error 122")
LOW_DISK_BYTES = 64 * 2**20


def is_disk_full(error: BaseException, folder: Path) -> bool:
    """Whether `error` (or one it was raised from) is a write that failed for lack of space in `folder`."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL:
            return True
        text = str(seen).lower()
        if any(part in text for part in DISK_FULL_TEXT):
            return True
        if "file write failed" in text:  # torch.save names no cause: ask the disk
            try:
                return shutil.disk_usage(folder).free < LOW_DISK_BYTES
            except OSError:
                return False
        seen = seen.__cause__ or seen.__context__
    return False


def _failure_sentence(error: Exception, config: TrainConfig, run_dir: Path) -> str | None:
    """The sentence a failed run ends with; None for an OSError that is not a full disk (a bug)."""
    if isinstance(error, distributed.GroupFailure):
        return (f"{error}; the files of the last completed epoch in {run_dir} stay valid. Continue with: "
                f"{resume_command(run_dir, distributed.current())}")
    if isinstance(error, LossNotFinite):
        return (f"Training stopped: {error} (lr {config.lr}); lower --lr or raise --grad-clip. "
                f"The files of the last completed epoch in {run_dir} stay valid.")
    if is_disk_full(error, run_dir):
        filename = error.filename if isinstance(error, OSError) else None
        command = resume_command(run_dir, distributed.current())
        return (f"The disk is full: {filename or 'a file of the run'} could not be written. Free some space, "
                f"then continue with: {command} (the files of the last completed epoch stay valid).")
    if isinstance(error, OSError):
        return None
    if not isinstance(error, AudienceError):
        return None  # a bug
    return str(error)


def _record_failure(emit: RunEmitter, run_dir: Path, message: str) -> None:
    """Mark the run failed with its sentence, as far as the disk allows (a full disk may refuse even that)."""
    try:
        emit.set_status(state="failed", ended=now_iso(), message=message)
    except OSError:
        pass
    try:
        emit({"type": "error", "run_dir": str(run_dir), "message": f"error: {message}"})
    except OSError:
        if emit.on_event is not None:  # the log line could not be written; the caller still hears of it
            emit.on_event({"type": "error", "run_dir": str(run_dir), "message": f"error: {message}"})


def _record_bug(emit: RunEmitter, error: BaseException) -> None:
    """Mark the run failed and keep a bug's traceback in train.log (Ctrl-C is not a bug)."""
    try:
        emit.set_status(state="failed", ended=now_iso(), message=f"{type(error).__name__}: {error}")
        if not isinstance(error, KeyboardInterrupt):  # a bug: its traceback is for whoever reports it
            emit.write_log("internal error:\n" + traceback.format_exc())
    except OSError:
        pass


def _prepare(config: TrainConfig) -> tuple[TrainConfig, AdienceData]:
    """The data and the config with its automatic settings; the data's crop geometry and alignment, measured
    by the face detector on a sample of the training images (faces.align.measure_framing), which the
    checkpoints record so that Predict cuts faces the way the model saw them."""
    data = read_data(config)
    config = resolve_config(config, data)
    framing = measure_framing(data.faces["path"].dropna().astype(str).tolist()) or {}
    data.crop, data.alignment = framing.get("crop"), framing.get("alignment")
    return config, data


def cross_validate(
    config: TrainConfig,
    on_event: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
    resume: str | Path | None = None,
) -> Path:
    """Train config.folds into a new run folder (or continue the run folder `resume`); return its path.

    With `resume`, the run's saved config.json is used (the `config` argument is ignored). A run
    that cannot start (bad settings, a fold that cannot be split, too few readable images) raises
    AudienceError before its folder is made. A stop leaves status "stopped" and returns normally; a
    NaN/inf loss or bad input met while training marks the run failed and raises AudienceError; any
    other exception marks it failed, appends its traceback to train.log and propagates.

    A run folder has one owner at a time (runs.claim_run): resuming a run that another live process
    (a CLI run beside the app, say) is training is refused with a sentence naming that process.
    """
    held: list[Path] = []  # the run folder this call owns; released whatever happens
    # Under torchrun every process joins the group; a resume reads its timeout from the run's config.
    ranks = SINGLE
    if distributed.launched():
        ranks = distributed.start(read_run_config(resume) if resume is not None else config.validated())
    try:
        return _cross_validate(config, on_event, stop, resume, held, ranks)
    finally:
        for run_dir in held:
            release_run(run_dir)
        distributed.finish(ranks)


def _rank_events(on_event, ranks: Ranks):
    """What a process other than rank 0 reports: data parallel, nothing (rank 0 speaks for all); parallel folds,
    its lines marked with its rank (the lines also reach train.log through rank 0 at the end)."""
    if on_event is None or ranks.main:
        return on_event
    if ranks.data_parallel:
        return None

    def forward(event: dict) -> None:
        if event.get("message"):
            event = {**event, "message": f"[rank {ranks.rank}] {event['message']}"}
        on_event(event)

    return forward


def _new_run_dir(config: TrainConfig, ranks: Ranks, held: list[Path]) -> Path:
    """Rank 0 makes, claims and describes the run folder; the others learn its name (under their own --out,
    a node's own path)."""
    if ranks.main:
        run_dir = create_run_dir(config.out or settings.runs_dir(), config)
        claim_run(run_dir)
        held.append(run_dir)
        write_json_atomic(run_dir / "config.json", config.to_dict())
    name = distributed.broadcast(run_dir.name if ranks.main else None, ranks)
    return Path(config.out or settings.runs_dir()) / name


def _cross_validate(config: TrainConfig, on_event, stop, resume, held: list[Path], ranks: Ranks = SINGLE) -> Path:
    if resume is not None:
        run_dir = Path(resume)
        if ranks.main:
            claim_run(run_dir)
            held.append(run_dir)
        config = read_run_config(run_dir)
    config, data = _prepare(config.validated())
    folds = config.fold_list()
    # Everything that can refuse the run comes before its folder exists: a run that cannot start leaves none.
    splits = {fold: make_split(data, config.protocol, fold, config.val_fraction, config.seed, config.task)
              for fold in folds}
    device = resolve_device(config.device)
    model_size = _model_size(config)
    threads = config.compute_threads(device.type, ranks.local_world)
    emit = RunEmitter(_rank_events(on_event, ranks), folds, describe_device(device, threads), record=ranks.main)
    cache = distributed.local_first(ranks, lambda: build_cache_for(config, data, emit))
    check_readable(data, splits, cache)
    if resume is None:
        run_dir = _new_run_dir(config, ranks, held)
    emit.attach(run_dir)
    if ranks.world > 1:
        if ranks.main:
            (run_dir / distributed.STOP_FILE).unlink(missing_ok=True)  # a resume must not stop at once
        distributed.barrier(ranks)
        stop = StopSignal(stop, ranks, run_dir / distributed.STOP_FILE)
    _announce(emit, config, data, device, resume is not None, ranks)
    # torch's thread count belongs to the whole process (in the app, predictions share it): set for the
    # run, restored after it whatever happens. Float rounding depends on it: a parallel-folds process on the
    # CPU computes with its share of the cores, a sequential run with all of them, so their folds agree bit
    # for bit only when both are given the same `threads` (docs: README, Several GPUs).
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        summary = _train_folds(config, data, emit, stop, model_size, cache, run_dir, ranks)
    except BaseException as error:
        distributed.failing()  # a SIGTERM from torchrun must not cut the failure's record short
        failure = distributed.lost_contact(error, ranks) or error
        message = _failure_sentence(failure, config, run_dir) if isinstance(failure, Exception) else None
        if message is None:  # a bug (an OSError other than a full disk is one too)
            _record_bug(emit, error)
            raise
        _record_failure(emit, run_dir, message)
        raise AudienceError(message) from None
    finally:
        torch.set_num_threads(before)
    if summary is not None and ranks.main:
        _report_end(emit, config, run_dir, summary)
    return run_dir


def _report_end(emit: RunEmitter, config: TrainConfig, run_dir: Path, summary: dict) -> None:
    emit.set_status(state="finished", ended=now_iso(), message="finished")
    # a spread over one fold is no spread: "± 0.0000" only said that nothing was measured
    lines = [f"{key} {summary[key]['mean']:.4f}" + (f" ± {summary[key]['std']:.4f}"
                                                   if len(summary[key].get("per_fold") or ()) > 1 else "")
             for key in HEADLINE_KEYS if summary[key]["mean"] is not None]
    emit({"type": "run_end", "run_dir": str(run_dir), "summary": summary,
          "message": f"run {run_dir.name} finished{' (LEAKY protocol)' if config.protocol == 'random' else ''}: "
                     + ", ".join(lines)})


def _train_seconds(run_dir: Path) -> float:
    """Seconds spent in training epochs over all folds (metrics.csv), the same whether or not the run was resumed."""
    import pandas as pd

    total = 0.0
    for csv in run_dir.glob("fold*/metrics.csv"):
        try:
            total += float(pd.read_csv(csv)["seconds"].sum())
        except (OSError, ValueError, KeyError):
            continue
    return total


def _finished_summary(folder: Path, fold: int, emit: Callable) -> dict | None:
    """The test summary of a fold finished before (a resumed run), or None."""
    from audience.files import read_json

    done = folder / "test_metrics.json"
    if done.is_file():
        try:
            summary = read_json(done)["summary"]
            emit({"type": "log", "message": f"fold {fold} was already finished; its test metrics are kept"})
            return summary
        except (OSError, ValueError, KeyError, TypeError):
            emit({"type": "log", "message": f"fold {fold}: test_metrics.json is unreadable; evaluating again"})
    return None


def _run_fold(config: TrainConfig, data: AdienceData, run_dir: Path, fold: int, emit: Callable, stop,
              cache: ImageCache, ranks: Ranks = SINGLE) -> FoldResult:
    folder = fold_dir(run_dir, fold)
    # Data parallel: rank 0's files decide for every process (another node may not see the run folder).
    reads = ranks.main or not ranks.data_parallel
    summary = _finished_summary(folder, fold, emit) if reads else None
    if ranks.data_parallel:
        summary = distributed.broadcast(summary, ranks)
    if summary is not None:
        return FoldResult(fold, "finished", config.epochs, None, summary)
    split = make_split(data, config.protocol, fold, config.val_fraction, config.seed, config.task)
    state = read_resume_state(folder) if reads else None
    if ranks.data_parallel:
        state = distributed.broadcast(state, ranks)
    return fit(config, data, split, folder, emit, stop, state, cache, ranks)


def resume(run_dir: str | Path, on_event: Callable[[dict], None] | None = None,
           stop: threading.Event | None = None) -> Path:
    """Continue a stopped or interrupted run where it stopped (its saved config); return the run folder."""
    return cross_validate(read_run_config(Path(run_dir)), on_event=on_event, stop=stop, resume=run_dir)
