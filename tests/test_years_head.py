"""The years age head and the age prior correction through the network, training, checkpoints and Predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audience.errors import AudienceError
from audience.labels import AGE_CLASSES, AGE_RANGES, NO_CLASS
from audience.model.age_years import N_YEARS, prior_adjustment, year_to_group_matrix, years_targets
from audience.model.checkpoint import load_checkpoint, read_checkpoint_metadata
from audience.model.network import YEARS_OUTPUT, build_model
from audience.model.runtime import _cache_name
from audience.predict.drawing import label_of
from audience.predict.predictor import FacePrediction, Predictor, with_probs
from audience.predict.smoothing import FaceTracker
from audience.train import loop
from audience.train.config import TrainConfig
from audience.train.prior import MIN_CHOICE_ROWS, choose_tau, tau_scores, training_prior
from tests.fixtures.checkpoints import save_tiny_checkpoint

SKEWED_PRIOR = [0.05, 0.05, 0.05, 0.1, 0.4, 0.2, 0.1, 0.05]


def _years_model(**kwargs):
    torch.manual_seed(0)
    return build_model("tiny", "age+gender", age_head="years", **kwargs).eval()


# ---------------------------------------------------------------- the network


def test_a_years_head_answers_groups_as_sums_over_its_years():
    model = _years_model()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32))
    assert out[YEARS_OUTPUT].shape == (3, N_YEARS) and out["age"].shape == (3, len(AGE_CLASSES))
    years = torch.softmax(out[YEARS_OUTPUT], dim=1).double().numpy()
    expected = years @ year_to_group_matrix("split")
    assert np.allclose(torch.exp(out["age"]).numpy(), expected, atol=1e-5)
    assert np.allclose(torch.exp(out["age"]).sum(dim=1).numpy(), 1.0, atol=1e-5)
    assert model.outputs == ("age", "gender", YEARS_OUTPUT)


def test_the_gap_rule_decides_where_a_gap_year_counts():
    lower, upper = _years_model(gap_rule="lower"), _years_model(gap_rule="upper")
    upper.load_state_dict(lower.state_dict())
    with torch.no_grad():
        image = torch.randn(1, 3, 32, 32)
        a, b = torch.exp(lower(image)["age"])[0], torch.exp(upper(image)["age"])[0]
        years = torch.softmax(lower(image)[YEARS_OUTPUT], dim=1)[0]
    # "lower" gives a gap year to the group below it, "upper" to the group above: 15-20 (group 3) gets 21 from
    # "lower" and 14 from "upper"; 22-32 (group 4) gets 33 from "lower" and 21 from "upper"
    assert float(a[3] - b[3]) == pytest.approx(float(years[21] - years[14]), abs=1e-5)
    assert float(b[4] - a[4]) == pytest.approx(float(years[21] - years[33]), abs=1e-5)


def test_an_unknown_age_head_is_one_sentence():
    with pytest.raises(AudienceError, match="Unknown age head 'decades'"):
        build_model("tiny", age_head="decades")


def test_the_prior_correction_shifts_a_groups_head_by_tau_log_prior():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(image)["age"]
        model.set_age_adjustment(prior_adjustment(SKEWED_PRIOR, 0.5))
        corrected = model(image)["age"]
    shift = torch.as_tensor(prior_adjustment(SKEWED_PRIOR, 0.5), dtype=torch.float32)
    assert torch.allclose(corrected, plain - shift, atol=1e-5)
    with pytest.raises(AudienceError, match="8 finite numbers"):
        model.set_age_adjustment([1.0, 2.0])


def test_the_prior_correction_moves_a_years_head_away_from_the_common_group():
    model = _years_model()
    image = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        plain = torch.exp(model(image)["age"])
        model.set_age_adjustment(prior_adjustment(SKEWED_PRIOR, 1.0))
        out = model(image)
        corrected = torch.exp(out["age"])
    common = int(np.argmax(SKEWED_PRIOR))
    assert torch.all(corrected[:, common] < plain[:, common])
    assert torch.allclose(corrected.sum(dim=1), torch.ones(4), atol=1e-5)
    # the years agree with the corrected groups: their sums are the group probabilities
    years = torch.softmax(out[YEARS_OUTPUT], dim=1).double().numpy()
    assert np.allclose(years @ year_to_group_matrix("split"), corrected.numpy(), atol=1e-5)


# ---------------------------------------------------------------- training signal


def test_years_targets_use_exact_ages_then_groups_then_nothing():
    ages = torch.tensor([30, -1, -1, 21])
    groups = torch.tensor([4, 1, NO_CLASS, NO_CLASS])  # 21 is a gap year: no group, yet an exact age
    targets, labelled = years_targets(ages, groups, sigma=2.0)
    assert labelled.tolist() == [True, True, False, True]
    assert int(targets[0].argmax()) == 30 and int(targets[3].argmax()) == 21
    low, high = AGE_RANGES[1]
    assert torch.allclose(targets[1][low:high + 1], torch.full((high - low + 1,), 1 / (high - low + 1)))
    assert float(targets[1].sum()) == pytest.approx(1.0) and float(targets[2].sum()) == 0.0


def test_the_years_loss_is_soft_cross_entropy_over_the_labelled_rows():
    config = TrainConfig(data="demo", age_head="years", age_sigma=3.0)
    logits = torch.randn(3, N_YEARS)
    outputs = {YEARS_OUTPUT: logits, "age": torch.zeros(3, 8)}
    age, gender, years = torch.tensor([4, NO_CLASS, 2]), torch.full((3,), NO_CLASS), torch.tensor([25, -1, -1])
    loss = loop.task_loss(outputs, age, gender, config, years)
    targets, labelled = years_targets(years, age, 3.0)
    manual = -(targets * torch.log_softmax(logits, dim=1)).sum() / labelled.sum()
    assert float(loss) == pytest.approx(float(manual), rel=1e-5)
    nothing = loop.task_loss(outputs, torch.full((3,), NO_CLASS), gender, config, torch.full((3,), -1))
    assert float(nothing) == 0.0


# ---------------------------------------------------------------- the prior and its choice


def test_the_training_prior_counts_the_groups_and_never_gives_zero():
    prior = training_prior([0, 0, 4, 4, 4, NO_CLASS])
    counts = np.array([3, 1, 1, 1, 4, 1, 1, 1], dtype=float)
    assert np.allclose(prior, counts / counts.sum())


def _skewed_validation(n_per_group=40, seed=0):
    """Scores of a model pulled toward 22-32: every face's own group is likely, 22-32 a little likelier."""
    rng = np.random.default_rng(seed)
    true = np.repeat(np.arange(8), n_per_group)
    scores = rng.normal(0, 0.3, size=(len(true), 8))
    scores[np.arange(len(true)), true] += 1.0
    scores[:, 4] += 1.2
    return scores, true


def test_tau_is_chosen_on_validation_for_exact_plus_balanced_accuracy():
    scores, true = _skewed_validation()
    prior = [0.04, 0.04, 0.04, 0.1, 0.5, 0.14, 0.08, 0.06]
    choice = choose_tau(scores, true, prior)
    plain = tau_scores(scores, true, prior, 0.0)
    chosen = next(row for row in choice["table"] if row["tau"] == choice["tau"])
    assert choice["tau"] > 0 and chosen["balanced_age_exact"] > plain["balanced_age_exact"]
    assert chosen["age_exact"] + chosen["balanced_age_exact"] == max(
        row["age_exact"] + row["balanced_age_exact"] for row in choice["table"])


def test_too_few_validation_faces_choose_no_correction():
    scores, true = _skewed_validation(n_per_group=(MIN_CHOICE_ROWS - 1) // 8)
    choice = choose_tau(scores, true, SKEWED_PRIOR)
    assert choice["tau"] == 0.0 and "fewer than" in choice["chosen_on"]


# ---------------------------------------------------------------- checkpoints, ONNX cache, Predict


def test_a_years_checkpoint_round_trips_with_its_correction(tmp_path):
    path = save_tiny_checkpoint(tmp_path, "years", {"age_prior": SKEWED_PRIOR, "prior_tau": 0.5}, age_head="years")
    metadata = read_checkpoint_metadata(path)
    assert metadata.age_head == "years" and metadata.gap_rule == "split" and metadata.prior_tau == 0.5
    model, _, _ = load_checkpoint(path)
    assert model.age_head == "years"
    assert torch.allclose(model.age_adjustment, torch.tensor(prior_adjustment(SKEWED_PRIOR, 0.5), dtype=torch.float32))
    plain = save_tiny_checkpoint(tmp_path, "plain")
    assert read_checkpoint_metadata(plain).age_head == "groups" and load_checkpoint(plain)[0].age_adjustment is None


def test_a_bad_prior_in_a_checkpoint_is_one_sentence(tmp_path):
    path = save_tiny_checkpoint(tmp_path, "bad", age_head="years")
    data = json.loads(path.read_text())
    data["age_prior"] = [0.5, -0.5]
    path.write_text(json.dumps(data))
    with pytest.raises(AudienceError, match="age_prior"):
        read_checkpoint_metadata(path)


def test_the_onnx_cache_tells_apart_two_corrections_of_the_same_weights():
    model = _years_model()
    before = _cache_name(model, ("age", "gender"), 32)
    model.set_age_adjustment(prior_adjustment(SKEWED_PRIOR, 1.0))
    assert _cache_name(model, ("age", "gender"), 32) != before


def test_predict_gives_an_age_in_years_beside_the_group(tmp_path):
    path = save_tiny_checkpoint(tmp_path, "years", age_head="years")
    image = (np.random.default_rng(0).random((48, 48, 3)) * 255).astype(np.uint8)
    with Predictor(path, runtime="torch") as predictor:
        face = predictor.predict(image, whole_image=True)[0]
        flipped = predictor.predict(image, whole_image=True, tta_flip=True)[0]
    record = face.to_dict()
    assert 0 <= record["age"]["years"] <= 100 and record["age"]["label"] in AGE_CLASSES
    assert face.shown_label("age") == f"{face.age_label}, about {face.age_years:.0f}"
    assert f"about {face.age_years:.0f}" in label_of(face)
    assert flipped.age_years is not None and flipped.age_years != face.age_years
    with Predictor(save_tiny_checkpoint(tmp_path, "groups"), runtime="torch") as predictor:
        groups = predictor.predict(image, whole_image=True)[0]
    assert "years" not in groups.to_dict()["age"] and groups.shown_label("age") == groups.age_label


def test_the_webcam_smooths_the_age_in_years():
    tracker = FaceTracker(uncertain_below=0.5)
    base = FacePrediction(box=(0, 0, 40, 40), score=0.9, crop_box=(0, 0, 40, 40))
    probs = {"age": np.eye(8)[4], "gender": np.array([0.9, 0.1, 0.0])}
    first = tracker.update([with_probs(base, {**probs, YEARS_OUTPUT: np.float64(20.0)}, 0.5)])[0]
    second = tracker.update([with_probs(base, {**probs, YEARS_OUTPUT: np.float64(40.0)}, 0.5)])[0]
    assert first.age_years == pytest.approx(20.0)
    assert 20.0 < second.age_years < 40.0


def test_the_predict_command_prints_the_age_in_years(tmp_path, capsys):
    from PIL import Image

    from audience.cli.predict import main

    path = save_tiny_checkpoint(tmp_path, "years", age_head="years")
    photo = tmp_path / "face.png"
    Image.fromarray((np.random.default_rng(1).random((48, 48, 3)) * 255).astype(np.uint8)).save(photo)
    assert main([str(photo), "--checkpoint", str(path), "--whole-image", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= record["faces"][0]["age"]["years"] <= 100
    assert main([str(photo), "--checkpoint", str(path), "--whole-image"]) == 0
    assert ", about " in capsys.readouterr().out


# ---------------------------------------------------------------- a whole run


def test_a_years_run_records_its_head_and_prior_correction(small_root, tmp_path):
    from audience.train.cross_validate import cross_validate

    config = TrainConfig.from_dict({"data": str(small_root), "arch": "tiny", "folds": "0", "epochs": 1,
                                    "batch_size": 16, "image_size": 32, "workers": 0, "max_train_batches": 2,
                                    "out": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
                                    "age_head": "years", "prior_tau": 0.5})
    run = cross_validate(config)
    metadata = read_checkpoint_metadata(run / "fold0" / "best")
    assert metadata.age_head == "years" and metadata.age_sigma == 2.0 and metadata.prior_tau == 0.5
    assert len(metadata.age_prior) == 8 and metadata.prior_choice.chosen_on == "config"
    test = json.loads((run / "fold0" / "test_metrics.json").read_text())
    assert test["age_prior_correction"]["tau"] == 0.5


def test_a_utkface_run_learns_from_exact_ages_and_records_the_races(tmp_path, unmeasured_framing):
    from audience.train.cross_validate import cross_validate
    from tests.test_group_metrics import _utkface_folder

    folder = _utkface_folder(tmp_path)
    config = TrainConfig.from_dict({"data": str(folder), "arch": "tiny", "folds": "0", "epochs": 1,
                                    "batch_size": 8, "image_size": 32, "workers": 0, "max_train_batches": 2,
                                    "out": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
                                    "age_head": "years", "pretrained": False})
    run = cross_validate(config)
    test = json.loads((run / "fold0" / "test_metrics.json").read_text())
    assert set(test["metrics"]["per_race"]) <= {"White", "Black", "Asian", "Indian", "Others"}
    assert test["metrics"]["per_race"] and "race_gap" in test["metrics"]
    assert read_checkpoint_metadata(run / "fold0" / "best").age_head == "years"


def test_the_prior_benchmark_measures_each_tau_and_writes_the_choice(small_root, tmp_path, monkeypatch):
    from audience.bench.prior_correction import measure_prior_correction, prior_lines
    from audience.train import prior as prior_module
    from audience.train.cross_validate import cross_validate

    config = TrainConfig.from_dict({"data": str(small_root), "arch": "tiny", "folds": "0", "epochs": 1,
                                    "batch_size": 16, "image_size": 32, "workers": 0, "max_train_batches": 2,
                                    "out": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")})
    best = cross_validate(config) / "fold0" / "best.json"
    old = {key: value for key, value in json.loads(best.read_text()).items()  # as trained before the correction
           if key not in ("age_prior", "prior_tau", "prior_choice")}
    best.write_text(json.dumps(old))
    monkeypatch.setattr(prior_module, "MIN_CHOICE_ROWS", 1)  # the small set's validation may choose a tau
    result = measure_prior_correction(best, write=True)
    assert [row["tau"] for row in result["test"]] == list(prior_module.TAUS)
    plain = result["test"][0]
    assert plain["age_exact"] == pytest.approx(read_checkpoint_metadata(best).metrics.age_exact)
    lines = prior_lines(result)
    assert lines[2].startswith(f"validation chooses tau {result['choice']['tau']:g}") and len(lines) == 4 + 5
    metadata = read_checkpoint_metadata(best)
    assert metadata.prior_tau == result["choice"]["tau"] and metadata.age_prior == pytest.approx(result["prior"])
    assert metadata.prior_choice.chosen_on.endswith("applied after training")
    chosen = next(row for row in result["test"] if row["tau"] == result["choice"]["tau"])
    assert metadata.metrics.age_exact == pytest.approx(chosen["age_exact"])
    assert load_checkpoint(best)[0] is not None  # the weights are untouched: their checksum still holds


def test_a_race_balanced_utkface_run_draws_its_training_faces_by_race(tmp_path, unmeasured_framing, monkeypatch):
    from audience.train import fold, loop
    from audience.train.cross_validate import cross_validate
    from tests.test_group_metrics import _utkface_folder

    seen = []

    class Recording(loop.BalancedSampler):
        def __init__(self, labels, power=1.0):
            seen.append(list(labels))
            super().__init__(labels, power=power)

    monkeypatch.setattr(fold, "BalancedSampler", Recording)
    config = TrainConfig.from_dict({"data": str(_utkface_folder(tmp_path)), "arch": "tiny", "folds": "0", "epochs": 1,
                                    "batch_size": 8, "image_size": 32, "workers": 0, "max_train_batches": 2,
                                    "out": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
                                    "balance": "race", "pretrained": False})
    run = cross_validate(config)
    assert len(seen) == 1 and seen[0] and set(seen[0]) <= {"White", "Black", "Asian", "Indian", "Others", None}
    assert len(set(seen[0])) >= 2
    assert json.loads((run / "config.json").read_text())["balance"] == "race"
