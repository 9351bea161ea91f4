"""Training of one fold: epochs with per-epoch checkpoints, then calibration and the test evaluation.

Files written in `fold_dir` (see audience.train.runs for the whole run folder): metrics.csv (a row per
completed epoch), best.* (best validation epoch), last.* + last_state.pt (the last completed epoch,
for resume), and at the end test_metrics.json. Checkpoints and state are replaced atomically, and
last_state.pt is written last, so after any interruption the files describe one completed epoch.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from timm.optim import create_optimizer_v2

from audience.data.adience import AdienceData
from audience.data.cache import CachedFaces, ImageCache
from audience.data.splits import Split
from audience.data.transforms import build_eval_transform, build_train_transform
from audience.errors import AudienceError
from audience.files import atomic_path, write_json_atomic
from audience.labels import HEADS_OF_TASK
from audience.model.checkpoint import load_checkpoint, save_checkpoint
from audience.model.network import build_model, count_flops, model_data_config
from audience.model.state import load_state_strictly
from audience.registry import ACCURACY_KEYS, SELECTION_KEYS, SUMMARY_KEYS, format_percent
from audience.train.distributed import (
    SINGLE,
    Ranks,
    SeededDistributedSampler,
    broadcast_module,
    eval_sampler,
    gather_predictions,
)
from audience.train.evaluation import calibrate_heads, calibration_line
from audience.train.loop import (
    BalancedSampler,
    LossNotFinite,
    build_scheduler,
    epoch_seed,
    logits_loss,
    make_loader,
    predict_logits,
    resolve_device,
    steps_per_epoch,
    train_epoch,
)
from audience.train.metrics import compute_metrics
from audience.train.prepare import build_cache_for, exposure_reference, resolve_config
from audience.train.prior import age_head_metadata, choose_tau, prior_adjustment, prior_metadata, training_prior
from audience.train.runs import read_epochs, write_epochs

STATE_FORMAT = 1


@dataclass
class FoldResult:
    fold: int
    state: str  # "finished" or "stopped"
    epochs_done: int
    best_epoch: int | None = None
    test_metrics: dict | None = None  # scalar test metrics (for the cross-validation summary)


def selection_score(metrics: dict, val_loss: float, task: str) -> float:
    """Higher is better: the sum of the validation accuracies of the task's heads (age_exact, gender_acc);
    -loss when validation has no labelled row for them.

    One checkpoint serves both heads, so both choose it: on age alone a small validation set often
    picked an early epoch whose gender head was still poor (demo data: f/m 0.80 instead of 0.89).
    """
    values = [metrics.get(SELECTION_KEYS[head]) for head in HEADS_OF_TASK[task]]
    values = [float(v) for v in values if v is not None]
    return sum(values) if values else -val_loss


def read_resume_state(fold_dir: Path) -> dict | None:
    """The saved state of the last completed epoch of a fold, or None when it has none."""
    path = Path(fold_dir) / "last_state.pt"
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable state is the same problem for the user
        raise AudienceError(f"{path}: the saved training state cannot be read ({type(error).__name__}).") from None


def _save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as temp:
        torch.save(state, temp)


def _scalars(metrics: dict) -> dict:
    return {key: metrics.get(key) for key in SUMMARY_KEYS}


def _pct(value) -> str:
    return format_percent(value, unit="%")


def epoch_line(fold: int, row: dict, epochs: int, best: bool) -> str:
    return (
        f"fold {fold} epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f} train / {row['val_loss']:.4f} val, "
        f"val age {_pct(row['val_age_exact'])} (1-off {_pct(row['val_age_one_off'])}), "
        f"gender {_pct(row['val_gender_acc'])} (f/m {_pct(row['val_gender_acc_fm'])}), "
        f"lr {row['lr']:.2e}, {row['images_per_s']:.0f} img/s, {row['seconds']:.0f} s" + ("  [best]" if best else "")
    )


class _FoldTrainer:
    """State shared by the epochs of one fold (kept out of fit() to keep each step readable)."""

    def __init__(self, config, data: AdienceData, split: Split, fold_dir: Path, cache: ImageCache, emit: Callable,
                 ranks: Ranks = SINGLE):
        self.config, self.data, self.split, self.fold_dir, self.emit = config, data, split, Path(fold_dir), emit
        self.ranks = ranks
        # Data parallel: only rank 0 writes; parallel folds: each process writes the folds it trains.
        self.writes = ranks.main or not ranks.data_parallel
        self.fold = split.test_fold
        self.device = resolve_device(config.device)
        self.heads = HEADS_OF_TASK[config.task]
        preprocessing = model_data_config(config.arch)
        self.mean, self.std = preprocessing["mean"], preprocessing["std"]
        rows = cache.rows_of(data.faces["path"].astype(str).tolist())
        self.sets = {name: self._usable(name, getattr(split, name), rows) for name in ("train", "val", "test")}
        workers = config.default_workers(self.device.type)
        size = config.image_size
        transforms = self._transforms(size)
        age, gender = data.faces["age_class"].to_numpy(), data.faces["gender_class"].to_numpy()
        if "age" not in self.heads:
            age = np.full_like(age, -1)
        if "gender" not in self.heads:
            gender = np.full_like(gender, -1)
        years = None
        if "age" in self.heads and config.age_head == "years":
            # exact ages where the data has them (UTKFace); -1 elsewhere: those rows learn from their group
            years = (data.faces["age_years"].fillna(-1).to_numpy(dtype=np.int64) if "age_years" in data.faces
                     else np.full(len(age), -1, dtype=np.int64))
        self.age_classes = age
        self.loaders, self.shares = {}, {}
        for name, index in self.sets.items():
            dataset = CachedFaces(cache, rows[index], age[index], gender[index],
                                  transforms["train" if name == "train" else "eval"],
                                  None if years is None else years[index])
            sampler = None
            if name == "train" and config.balance != "none":
                if ranks.data_parallel:
                    raise AudienceError(f"balance {config.balance} is not available with several processes sharing "
                                        "a fold (data parallel); run it on one GPU or with parallel folds.")
                labels = age[index] if config.balance == "age" else data.faces["race"].to_numpy()[index]
                sampler = BalancedSampler(labels, power=config.balance_power)
            elif ranks.data_parallel:
                sampler = (SeededDistributedSampler(len(dataset), ranks) if name == "train"
                           else eval_sampler(len(dataset), ranks))
                self.shares[name] = list(sampler)
            self.loaders[name] = make_loader(dataset, config.batch_size, self.device, workers, train=name == "train",
                                             persistent=config.persistent_workers and name != "test",
                                             pin_memory=config.pin_memory, sampler=sampler)
        self.steps = steps_per_epoch(self.loaders["train"], config.max_train_batches)

        torch.manual_seed(epoch_seed(config.seed, self.fold, 0))
        self.model = build_model(config.arch, config.task, pretrained=bool(config.pretrained),
                                 weights_file=config.weights_file, drop_rate=config.drop_rate,
                                 age_head=config.age_head, gap_rule=config.gap_rule)
        self.flops = count_flops(self.model, size)
        if config.channels_last:
            self.model.to(self.device, memory_format=torch.channels_last)
        else:
            self.model.to(self.device)
        self.train_model = self.model  # wrap() makes it the DDP and/or compiled form
        self.optimizer = create_optimizer_v2(self.model, opt="adamw", lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, config, self.steps * config.epochs)

    def wrap(self) -> None:
        """The network as trained: DistributedDataParallel across processes (its constructor copies rank 0's
        weights to all), torch.compile'd when asked for. Checkpoints and evaluation use the plain network."""
        if self.ranks.data_parallel:
            ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
                if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self.config.compile:
            self.train_model = torch.compile(self.train_model)

    def _usable(self, name: str, index: np.ndarray, rows: np.ndarray) -> np.ndarray:
        kept = index[rows[index] >= 0]
        if len(kept) < len(index):
            self.emit({"type": "log", "message": f"fold {self.fold}: {len(index) - len(kept)} {name} image(s) "
                       "could not be read and are left out"})
        if len(kept) < (2 if name == "train" else 1):
            raise AudienceError(
                f"Fold {self.fold} has {len(kept)} readable {name} image(s), too few to train and test."
            )
        return kept

    def _transforms(self, size: int) -> dict:
        """The train and eval pipelines; with --standardize-exposure both start by standardising the crop to the
        training faces' reference (`self.exposure`: a fixed sample of them, so the same again on resuming)."""
        config, train = self.config, self.split.train
        self.exposure = ({**exposure_reference(self.data.faces["path"].to_numpy()[train]), "data": config.data}
                         if config.standardize_exposure else None)
        reference = None if self.exposure is None else (self.exposure["mean"], self.exposure["std"])
        return {"train": build_train_transform(size, self.mean, self.std, strength=config.augment, exposure=reference),
                "eval": build_eval_transform(size, self.mean, self.std, exposure=reference)}

    def metadata(self, epoch: int, metrics: dict, temperature: dict | None = None, **extra) -> dict:
        data = self.data
        return {
            "image_size": self.config.image_size, "mean": self.mean, "std": self.std,
            "temperature": temperature or dict.fromkeys(self.heads, 1.0),
            "dataset": data.describe(), "split_level": data.split_level, **({"crop": data.crop} if data.crop else {}),
            **({"alignment": data.alignment} if data.alignment else {}),
            "protocol": self.split.protocol, "leaky": self.split.leaky, "fold": self.fold, "epoch": epoch,
            "metrics": metrics, "flops": self.flops, "train_config": self.config.to_dict(),
            **(age_head_metadata(self.model, self.config) if "age" in self.heads else {}),
            **({"exposure": self.exposure} if self.exposure else {}), **extra,
        }

    def evaluate(self, name: str) -> tuple[dict, dict, float]:
        predicted = predict_logits(self.model, self.loaders[name], self.device, self.config.bf16,
                                   self.config.channels_last)
        if self.ranks.data_parallel:
            predicted = gather_predictions(predicted, self.shares[name], len(self.sets[name]), self.ranks)
        loss = logits_loss(predicted, self.config)
        if not math.isfinite(loss):
            # A model with a NaN/inf loss must never become "best" nor "last": the run stops here and the files
            # of the previous epoch stay as they were.
            raise LossNotFinite(f"the {'validation' if name == 'val' else name} loss is {loss}")
        metrics = compute_metrics(predicted["age_true"], predicted.get("age"), predicted["gender_true"],
                                  predicted.get("gender"))
        return predicted, metrics, loss

    def restore(self, state: dict) -> tuple[int, float, int | None]:
        if state.get("steps_per_epoch") != self.steps or state.get("fold") != self.fold:
            raise AudienceError(
                f"{self.fold_dir}: the saved state has {state.get('steps_per_epoch')} batches per epoch but the data "
                f"now gives {self.steps}; the data or settings changed since the run stopped, so it cannot resume."
            )
        if self.writes:  # data parallel: rank 0 loads, wrap() copies its weights to the others
            model, _, _ = load_checkpoint(self.fold_dir / "last", device="cpu")
            load_state_strictly(self.model, model.state_dict(),
                                f"{self.fold_dir / 'last'} does not fit the run's model")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        return int(state["epoch"]), float(state["best_score"]), state.get("best_epoch")


def _calibrate(trainer: _FoldTrainer) -> tuple[dict, dict, dict]:
    val, _, _ = trainer.evaluate("val")
    test, _, _ = trainer.evaluate("test")
    faces = trainer.data.faces  # UTKFace's race per test face: the test metrics add the accuracy per race
    race = faces["race"].to_numpy()[trainer.sets["test"]] if "race" in faces else None
    return calibrate_heads(val, test, trainer.heads, trainer.config.calibrate, race=race)


def _correct_prior(trainer: _FoldTrainer) -> dict | None:
    """Choose the age prior correction on validation (or take the configured tau) and set it on the model;
    the checkpoint's `prior` record (audience.train.prior), or None for a model without an age head."""
    if "age" not in trainer.heads:
        return None
    prior = training_prior(trainer.age_classes[trainer.sets["train"]])
    if trainer.config.prior_tau is not None:
        record = {"prior": prior, "tau": float(trainer.config.prior_tau), "chosen_on": "config", "table": []}
    else:
        val, _, _ = trainer.evaluate("val")
        record = choose_tau(val["age"], val["age_true"], prior)
    trainer.model.set_age_adjustment(prior_adjustment(record["prior"], record["tau"]) if record["tau"] else None)
    return record


def _batch_reporter(trainer: _FoldTrainer, epoch: int, started: float, measured: float | None) -> Callable:
    """The on_batch callback of one epoch: a batch event with the fold's ETA."""
    fold, epochs, steps = trainer.fold, trainer.config.epochs, trainer.steps

    def on_batch(step: int, loss: float, images_per_s: float) -> None:
        # Until an epoch is complete the ETA uses this epoch's pace; afterwards the last epoch's (incl. validation).
        per_step = measured or (time.perf_counter() - started) / step
        remaining = (steps - step) + (epochs - epoch) * steps
        trainer.emit({"type": "batch", "fold": fold, "epoch": epoch, "epochs": epochs, "step": step, "steps": steps,
                      "loss": loss, "lr": trainer.optimizer.param_groups[0]["lr"], "images_per_s": images_per_s,
                      "seconds_per_step": per_step, "fold_eta_s": remaining * per_step})

    return on_batch


def _train_epoch(trainer: _FoldTrainer, epoch: int, measured: float | None, stop) -> tuple[dict, dict, float] | None:
    """Train and validate one epoch: (metrics.csv row, validation metrics, validation loss), or None if stopped.

    `stop`: the should_stop callable (None: never)."""
    config = trainer.config
    started = time.perf_counter()
    seed = epoch_seed(config.seed, trainer.fold, epoch)
    torch.manual_seed(seed)
    trainer.loaders["train"].sampler.set_seed(seed)
    lr = trainer.optimizer.param_groups[0]["lr"]
    train_loss, images, stopped = train_epoch(trainer.train_model, trainer.loaders["train"], trainer.optimizer,
                                              trainer.scheduler, config, trainer.device, trainer.steps,
                                              _batch_reporter(trainer, epoch, started, measured), stop)
    if stopped:
        return None
    train_seconds = time.perf_counter() - started
    try:
        _, val_metrics, val_loss = trainer.evaluate("val")
    except LossNotFinite as error:
        raise LossNotFinite(f"{error} after epoch {epoch} (training loss {train_loss:.4g})") from None
    row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
           **{f"val_{k}": val_metrics[k] for k in ACCURACY_KEYS},
           "lr": lr, "images_per_s": images * trainer.ranks.world / train_seconds if trainer.ranks.data_parallel
           else images / train_seconds, "seconds": time.perf_counter() - started}
    return row, val_metrics, val_loss


def _save_epoch(trainer: _FoldTrainer, row: dict, val_metrics: dict, improved: bool, best: tuple) -> None:
    """The epoch's checkpoints (best when improved, always last) and the optimizer state to resume from."""
    epoch, fold_dir = row["epoch"], trainer.fold_dir
    if improved:
        save_checkpoint(fold_dir / "best", trainer.model, trainer.metadata(epoch, val_metrics, metrics_on="val"))
    save_checkpoint(fold_dir / "last", trainer.model, trainer.metadata(epoch, val_metrics, metrics_on="val"))
    _save_state(fold_dir / "last_state.pt", {
        "format": STATE_FORMAT, "fold": trainer.fold, "epoch": epoch, "steps_per_epoch": trainer.steps,
        "optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict(),
        "best_score": best[0], "best_epoch": best[1], "torch_rng": torch.get_rng_state(),
    })


def _finish_fold(trainer: _FoldTrainer, best_epoch: int | None, sizes: dict) -> FoldResult:
    """Reload the best epoch, calibrate it on validation, test it, and write best.* and test_metrics.json."""
    fold, fold_dir, split = trainer.fold, trainer.fold_dir, trainer.split
    if trainer.writes:
        best_model, _, _ = load_checkpoint(fold_dir / "best", device="cpu")
        load_state_strictly(trainer.model, best_model.state_dict(), f"{fold_dir / 'best'} does not fit the run's model")
    if trainer.ranks.data_parallel:
        broadcast_module(trainer.model, trainer.ranks)
    prior = _correct_prior(trainer)
    temperature, test_metrics, calibration = _calibrate(trainer)
    scalars = _scalars(test_metrics)
    scalars.update({f"{head}_ece_uncalibrated": calibration[head]["test_ece_before"] for head in trainer.heads})
    if trainer.writes:
        save_checkpoint(fold_dir / "best", trainer.model, trainer.metadata(
            best_epoch, test_metrics, temperature, metrics_on="test", calibration=calibration,
            selected_epoch=best_epoch, **prior_metadata(prior)))
        write_json_atomic(fold_dir / "test_metrics.json", {
            "fold": fold, "protocol": split.protocol, "leaky": split.leaky, "best_epoch": best_epoch, "sizes": sizes,
            "temperature": temperature, "calibration": calibration, "metrics": test_metrics, "summary": scalars,
            **({"age_prior_correction": prior} if prior else {}),
        })
    trainer.emit({"type": "fold_end", "fold": fold, "best_epoch": best_epoch, "metrics": scalars,
                  "temperature": temperature,
                  "calibration": {head: {key: c[key] for key in ("temperature", "applied", "reason")}
                                  for head, c in calibration.items()},
                  "message": f"fold {fold} test{' (leaky)' if split.leaky else ''}: age "
                             f"{_pct(scalars['age_exact'])} (1-off {_pct(scalars['age_one_off'])}), gender "
                             f"{_pct(scalars['gender_acc'])} (f/m {_pct(scalars['gender_acc_fm'])}); "
                             f"best epoch {best_epoch}; calibration: {calibration_line(calibration)}"})
    return FoldResult(fold, "finished", trainer.config.epochs, best_epoch, scalars)


def fit(
    config,
    data: AdienceData,
    split: Split,
    fold_dir: str | Path,
    on_event: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
    resume_state: dict | None = None,
    cache: ImageCache | None = None,
    ranks: Ranks = SINGLE,
) -> FoldResult:
    """Train one fold and evaluate it on split.test (config's automatic settings are resolved from `data`).

    `resume_state` (read_resume_state) continues after the last completed epoch saved in
    `fold_dir`. Setting `stop` ends the fold after the current batch, keeping the files of the last
    completed epoch (FoldResult.state "stopped"). Raises loop.LossNotFinite on a NaN/inf loss.

    `stop` may also be a should_stop callable (distributed.StopSignal: a stop that reaches every process).
    `ranks` (distributed.start) shares the fold between processes (data parallel: every process gets the
    same resume_state; only rank 0 writes).
    """
    emit = on_event or (lambda event: None)
    should_stop = stop if callable(stop) else (stop.is_set if stop is not None else None)
    fold_dir = Path(fold_dir)
    config = resolve_config(config, data)
    if cache is None:
        cache = build_cache_for(config, data, emit)
    trainer = _FoldTrainer(config, data, split, fold_dir, cache, emit, ranks)
    if trainer.writes:
        fold_dir.mkdir(parents=True, exist_ok=True)
    fold, epochs, steps = trainer.fold, config.epochs, trainer.steps
    start_epoch, best_score, best_epoch = 0, -math.inf, None
    if resume_state is not None:
        start_epoch, best_score, best_epoch = trainer.restore(resume_state)
    trainer.wrap()
    rows = read_epochs(fold_dir / "metrics.csv", upto=start_epoch)
    sizes = {name: len(index) for name, index in trainer.sets.items()}
    emit({"type": "fold_start", "fold": fold, "epoch": start_epoch, "epochs": epochs, "steps": steps, "sizes": sizes,
          "message": f"fold {fold}: {sizes['train']} train, {sizes['val']} val, {sizes['test']} test images, "
                     f"{steps} batches per epoch" + (f", resuming after epoch {start_epoch}" if start_epoch else "")})
    seconds_per_step = None
    for epoch in range(start_epoch + 1, epochs + 1):
        trained = None if should_stop is not None and should_stop() else \
            _train_epoch(trainer, epoch, seconds_per_step, should_stop)
        if trained is None:
            return FoldResult(fold, "stopped", epoch - 1, best_epoch)
        row, val_metrics, val_loss = trained
        rows.append(row)
        seconds_per_step = row["seconds"] / steps
        score = selection_score(val_metrics, val_loss, config.task)
        improved = score > best_score  # ties keep the earlier epoch
        if improved:
            best_score, best_epoch = score, epoch
        if trainer.writes:
            write_epochs(fold_dir / "metrics.csv", rows)
            _save_epoch(trainer, row, val_metrics, improved, (best_score, best_epoch))
        emit({"type": "epoch", "fold": fold, "epoch": epoch, "epochs": epochs, "loss": row["train_loss"],
              "lr": row["lr"], "images_per_s": row["images_per_s"], "metrics": row, "best": improved,
              "seconds_per_step": seconds_per_step, "fold_eta_s": (epochs - epoch) * row["seconds"],
              "message": epoch_line(fold, row, epochs, improved)})
    return _finish_fold(trainer, best_epoch, sizes)
