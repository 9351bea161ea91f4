"""What the age prior correction does to a trained model: per tau, overall and per-group accuracy on its own
held-out fold, and the tau its validation set would choose (audience.train.prior).

`python -m audience.cli.benchmark prior --checkpoint CKPT [--data ROOT]` rebuilds the checkpoint's split from its
training settings (`train_config`: data, protocol, fold, validation share, seed), takes the prior from its
training faces, runs the model once over the validation and test faces (whole images from the training
cache, as the trainer's test does) without any correction, and prints one row per tau. `--write` stores the
validation's choice in the checkpoint (`age_prior`, `prior_tau`, `prior_choice`), with its test metrics
measured again under it (`metrics`), so a model trained before the correction existed gets it too.
"""

from __future__ import annotations

from pathlib import Path

from audience.data.cache import CachedFaces
from audience.errors import AudienceError
from audience.files import write_json_atomic
from audience.labels import AGE_CLASSES
from audience.model.age_years import prior_adjustment
from audience.model.checkpoint import checkpoint_paths, load_checkpoint_model, read_checkpoint_metadata
from audience.model.metadata import check_checkpoint_metadata
from audience.train.loop import make_loader, predict_logits, resolve_device
from audience.train.prepare import build_cache_for, checkpoint_split
from audience.train.prior import TAUS, choose_tau, tau_scores, training_prior

__all__ = ["measure_prior_correction", "prior_lines"]


def measure_prior_correction(checkpoint: str | Path, data: str | None = None, taus: tuple[float, ...] = TAUS,
                             device: str = "cpu", batch_size: int = 128, write: bool = False) -> dict:
    """{"checkpoint", "data", "fold", "prior", "choice" (choose_tau on validation), "test" (a row per tau: exact,
    1-off, balanced exact and per-group exact accuracy on the test fold)}; with `write`, the checkpoint JSON
    gets the chosen correction and the test metrics under it (`written`: the JSON's path)."""
    metadata = read_checkpoint_metadata(checkpoint)
    if "age" not in metadata.heads:
        raise AudienceError(f"{checkpoint}: the model has no age head, so it has no age prior to correct.")
    config, dataset, split = checkpoint_split(checkpoint, metadata, data)
    cache = build_cache_for(config.replace(image_size=metadata.image_size), dataset, lambda event: None)
    target = resolve_device(device)
    model, transform = load_checkpoint_model(checkpoint, metadata, device=target)
    model.set_age_adjustment(None)  # measured from the plain scores
    rows = cache.rows_of(dataset.faces["path"].astype(str).tolist())
    age = dataset.faces["age_class"].to_numpy()
    gender = dataset.faces["gender_class"].to_numpy()
    prior = training_prior(age[split.train])
    def predict(name: str) -> dict:
        index = getattr(split, name)
        index = index[rows[index] >= 0]
        faces = CachedFaces(cache, rows[index], age[index], gender[index], transform)
        return predict_logits(model, make_loader(faces, batch_size, target, 0, train=False, persistent=False), target)

    scores = {name: (predicted["age"], predicted["age_true"]) for name in ("val", "test")
              for predicted in (predict(name),)}
    choice = choose_tau(*scores["val"], prior, taus)
    test = [tau_scores(*scores["test"], prior, tau) for tau in taus]
    result = {"checkpoint": str(checkpoint), "data": config.data, "fold": metadata.fold, "prior": prior,
              "recorded_tau": metadata.prior_tau, "choice": choice, "test": test}
    if write:
        # the test faces again through the network with the correction, as every path that serves it runs it
        model.set_age_adjustment(prior_adjustment(choice["prior"], choice["tau"]) if choice["tau"] else None)
        index = split.test[rows[split.test] >= 0]
        race = dataset.faces["race"].to_numpy()[index] if "race" in dataset.faces else None
        result["written"] = str(write_prior(checkpoint, choice, predict("test"), race))
    return result


def write_prior(checkpoint: str | Path, choice: dict, test: dict, race=None) -> Path:
    """Store `choice` (choose_tau's) in the checkpoint JSON, and its test metrics measured again with it and the
    checkpoint's temperatures (`test`: predict_logits of its test faces by the network with the correction set).
    The weights are untouched. A checkpoint that recorded no correction says it was applied after training."""
    from audience.train.metrics import compute_metrics, softmax_with_temperature

    path = checkpoint_paths(checkpoint)[1]
    metadata = read_checkpoint_metadata(path)
    temperature = metadata.temperatures
    gender = test.get("gender")
    metrics = compute_metrics(test["age_true"], softmax_with_temperature(test["age"], temperature["age"]),
                              test["gender_true"],
                              None if gender is None else softmax_with_temperature(gender, temperature["gender"]),
                              race=race)
    updated = metadata.as_json()
    after = "" if metadata.prior_tau is not None else ", applied after training"
    updated.update({"age_prior": choice["prior"], "prior_tau": choice["tau"], "metrics": metrics,
                    "prior_choice": {"chosen_on": f"{choice['chosen_on']}{after}", "table": choice["table"]}})
    check_checkpoint_metadata(updated, str(path))
    write_json_atomic(path, updated)
    return path


def prior_lines(result: dict) -> list[str]:
    """The report as text: the prior, the validation's choice, and a row per tau on the test fold."""
    pct = lambda value: "-" if value is None else f"{100 * value:.1f}"  # noqa: E731
    lines = [f"{result['checkpoint']}: age prior correction on {result['data']}, fold {result['fold']} "
             f"(the trainer's test: whole images; image-level folds for UTKFace)",
             "training prior: " + ", ".join(f"{name} {p:.3f}" for name, p in zip(AGE_CLASSES, result["prior"],
                                                                                 strict=True)),
             f"validation chooses tau {result['choice']['tau']:g} ({result['choice']['chosen_on']})",
             "tau   | exact | 1-off | balanced | " + " | ".join(AGE_CLASSES)]
    for row in result["test"]:
        groups = " | ".join(pct(value) for value in row["per_group"])
        lines.append(f"{row['tau']:<5g} | {pct(row['age_exact'])} | {pct(row['age_one_off'])} | "
                     f"{pct(row['balanced_age_exact'])} | {groups}")
    return lines
