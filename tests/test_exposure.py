"""`benchmark.py exposure`: the same faces washed out, flat and dark, ours beside the peer."""

from __future__ import annotations

import numpy as np
import pytest
from test_group_metrics import _stand_in_peer, _tiny_checkpoint, _utkface_folder

from audience.bench.exposure import EXPOSURES, darkened, exposure_benchmark, exposure_scores, washed_out
from audience.labels import AGE_CLASSES


def test_washed_out_is_lighter_and_flatter_and_dark_is_darker():
    rows, cols = np.mgrid[0:40, 0:40]
    image = np.stack([rows * 5, cols * 5, (rows + cols) * 3], axis=-1).astype(np.uint8)
    washed = washed_out(image, 0.5, 0.4)
    assert washed.mean() > image.mean() + 40
    # contrast 0.5, then 60 % of what is left: the spread is 0.3 of the photo's
    assert washed.astype(float).std() == pytest.approx(0.3 * image.astype(float).std(), rel=0.02)
    assert np.array_equal(washed_out(image, 1.0, 0.0), image)
    dark = darkened(image, 2.0)
    assert dark.mean() < image.mean() - 20 and dark.max() <= image.max() and dark.min() == image.min() == 0
    assert list(EXPOSURES)[0] == "as taken" and np.array_equal(EXPOSURES["as taken"][1](image), image)


def test_exposure_scores_count_the_young_answered_old():
    young, old = AGE_CLASSES.index("22-32"), AGE_CLASSES.index("55-100")
    age_true = np.array([0, young, young, old, -1])
    age_pred = np.array([old, old, young, old, 3])
    gender_true, gender_pred = np.array([0, 1, 1, 0, -1]), np.array([0, 0, 1, 0, 1])
    scores = exposure_scores(age_true, age_pred, gender_true, gender_pred)
    assert scores["young_said_old"] == pytest.approx(2 / 3) and scores["n_young"] == 3
    assert scores["age_exact"] == pytest.approx(0.5) and scores["n_age"] == 4
    assert scores["gender_acc"] == pytest.approx(0.75) and scores["n_gender"] == 4
    none = exposure_scores(np.array([-1]), np.array([0]), np.array([-1]), np.array([0]))
    assert none["age_exact"] is None and none["young_said_old"] is None and none["n_young"] == 0


def test_the_exposure_benchmark_scores_both_systems_on_each_exposure(tmp_path, monkeypatch):
    from audience.bench.peer_accuracy import accuracy_benchmark

    folder = _utkface_folder(tmp_path)
    # the stand-in peer says 60 years (55-100) and "male" for every face, whatever the exposure
    _stand_in_peer(monkeypatch, {"age": {"value": 60}, "gender": {"value": "male"}})
    checkpoint = _tiny_checkpoint(tmp_path)
    lines: list[str] = []
    result = exposure_benchmark(checkpoint, folder, split="all", limit=None, log=lines.append)
    assert [entry["exposure"] for entry in result["exposures"]] == list(EXPOSURES)
    assert result["images"] == 40 and lines[0].startswith("40 faces of UTKFace (all), 25 of them 32 or younger")
    for entry in result["exposures"]:
        assert entry["peer"]["young_said_old"] == 1.0 and entry["peer"]["gender_acc"] == 0.5
        assert entry["peer"]["age_exact"] == pytest.approx(5 / 40)  # the faces of 70
    # "as taken" is the accuracy benchmark's own figure on the same faces
    plain = accuracy_benchmark(checkpoint, folder, split="all", log=lambda line: None)["audience"]
    assert result["exposures"][0]["audience"]["age_exact"] == pytest.approx(plain["age_exact"])
    assert result["exposures"][0]["audience"]["gender_acc"] == pytest.approx(plain["gender_acc"])
    table = lines[lines.index(next(line for line in lines if line.startswith("accuracy by exposure"))) + 2:]
    assert [line.split("  ")[1].strip() for line in table] == list(EXPOSURES)
    assert all(line.split()[-1] == "100.0" for line in table)  # the peer's "said 55-100" column, last


def test_the_exposure_command_names_a_bad_limit_and_a_model_without_both_heads(tmp_path, capsys):
    from audience.cli import benchmark

    folder = _utkface_folder(tmp_path)
    code = benchmark.main(["exposure", "--checkpoint", _tiny_checkpoint(tmp_path), "--data", str(folder),
                           "--limit", "-3"])
    assert code == 2 and capsys.readouterr().err.strip() == "error: --limit must be 0 (all faces) or more; got -3."
    code = benchmark.main(["exposure", "--checkpoint", str(tmp_path / "missing.json"), "--data", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "missing" in err and "Traceback" not in err


def _gradient(size: int = 48, offset: int = 0) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size]
    return np.stack([rows * 4 + offset, cols * 4 + offset, (rows + cols) * 2 + offset], axis=-1).clip(0, 255).astype(
        np.uint8)


def test_standardising_undoes_a_washed_out_or_flat_exposure():
    from audience.data.exposure import standardize_exposure

    image = _gradient()
    plain = standardize_exposure(image, 120.0, 55.0)
    assert plain.dtype == np.uint8 and plain.shape == image.shape
    assert plain.astype(float).mean() == pytest.approx(120.0, abs=1.0)
    assert plain.astype(float).std() == pytest.approx(55.0, rel=0.03)
    for changed in (washed_out(image, 0.5, 0.4), washed_out(image, 0.6, 0.0)):  # no pixel clipped by either
        assert np.abs(changed.astype(int) - image).max() > 30
        # the same face after standardising, up to the rounding of the changed photo's pixels
        assert np.abs(standardize_exposure(changed, 120.0, 55.0).astype(int) - plain).max() <= 4
    # colour is kept: all channels move alike, so the channels' order of brightness stays
    assert np.array_equal(np.argsort(plain.reshape(-1, 3).mean(0)), np.argsort(image.reshape(-1, 3).mean(0)))
    blank = np.full((8, 8, 3), 200, np.uint8)
    assert standardize_exposure(blank, 120.0, 55.0) is blank  # nothing to scale: left as it is


def test_exposure_statistics_are_the_mean_brightness_and_spread_of_the_images():
    from audience.data.exposure import exposure_statistics
    from audience.errors import AudienceError

    dark, light = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 200, np.uint8)
    light[:2] = 100  # spread 50
    stats = exposure_statistics([dark, light])
    assert stats == {"mean": 75.0, "std": 25.0, "images": 2}
    with pytest.raises(AudienceError, match="No readable image"):
        exposure_statistics([])


def test_the_eval_transform_standardises_only_when_the_checkpoint_records_a_reference():
    from audience.data.transforms import build_eval_transform

    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    image, washed = _gradient(), washed_out(_gradient(), 0.5, 0.4)
    plain = build_eval_transform(32, mean, std)
    assert (plain(image) - plain(washed)).abs().max() > 0.5
    standardised = build_eval_transform(32, mean, std, exposure=(120.0, 55.0))
    assert (standardised(image) - standardised(washed)).abs().max() < 0.1
    # the padding added after standardising stays black (the face's shape is not standardised)
    tall = standardised(_gradient()[:, :24].copy())
    assert float(tall[0, 0, 0]) == pytest.approx((0 - 0.5) / 0.25)


def test_a_reference_out_of_range_is_refused_in_one_sentence(tmp_path):
    import json

    from fixtures.checkpoints import save_tiny_checkpoint

    from audience.errors import AudienceError
    from audience.model.checkpoint import load_checkpoint

    path = save_tiny_checkpoint(tmp_path, "bad", {"image_size": 32, "exposure": {"mean": 120.0, "std": 0.5}})
    with pytest.raises(AudienceError, match=r"exposure\.std") as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)
    record = json.loads(path.read_text())
    record["exposure"] = {"mean": 120.0, "std": 55.0, "images": 9}
    path.write_text(json.dumps(record))
    assert load_checkpoint(path)[2].exposure.reference == (120.0, 55.0)


def test_the_predictor_answers_a_washed_out_face_as_the_face_once_standardised(tmp_path):
    import json

    from fixtures.checkpoints import save_tiny_checkpoint

    from audience.predict.predictor import Predictor

    path = save_tiny_checkpoint(tmp_path, "tiny", {"image_size": 32})
    image, washed = _gradient(64), washed_out(_gradient(64), 0.5, 0.4)

    def probabilities() -> np.ndarray:
        with Predictor(path) as predictor:
            return np.array([predictor.predict(face, whole_image=True)[0].age_probs for face in (image, washed)])

    before = probabilities()
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "exposure": {"mean": 120.0, "std": 55.0}}))
    after = probabilities()
    assert np.abs(before[0] - before[1]).max() > 3 * np.abs(after[0] - after[1]).max()


def test_the_exposure_reference_is_measured_on_the_training_faces_and_written_only_when_asked(tmp_path, capsys):
    import json

    from fixtures.checkpoints import save_tiny_checkpoint
    from PIL import Image

    from audience.cli import benchmark
    from audience.model.checkpoint import file_sha256, load_checkpoint

    folder = tmp_path / "UTKFace"
    folder.mkdir()
    for index in range(30):
        Image.fromarray(_gradient(40, offset=index * 3)).save(
            folder / f"{20 + index}_{index % 2}_0_2017{index:09d}.jpg.chip.jpg", quality=95)
    path = save_tiny_checkpoint(tmp_path, "trained", {
        "image_size": 32, "fold": 0, "dataset": {"name": "UTKFace", "format": "utkface", "synthetic": False},
        "train_config": {"data": str(folder), "arch": "tiny"}})
    weights_sha256, before = file_sha256(path.with_suffix(".safetensors")), path.read_text()

    assert benchmark.main(["exposure-reference", "--checkpoint", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "recorded: none (crops are not standardised)" and lines[2].startswith("measured: mean ")
    measured = json.loads(lines[-1])["measured"]
    assert 0 < measured["images"] < 30  # the training faces only: the held-out fold and validation are left out
    assert 60 < measured["mean"] < 160 and 20 < measured["std"] < 80
    assert path.read_text() == before

    assert benchmark.main(["exposure-reference", "--checkpoint", str(path), "--write"]) == 0
    assert json.loads(path.read_text())["exposure"] == measured
    assert file_sha256(path.with_suffix(".safetensors")) == weights_sha256
    assert load_checkpoint(path)[2].exposure.reference == (measured["mean"], measured["std"])

    for index, image in enumerate(folder.iterdir()):  # blank training faces: nothing to standardise to
        Image.fromarray(np.full((40, 40, 3), 90 + index, np.uint8)).save(image, quality=95)
    assert benchmark.main(["exposure-reference", "--checkpoint", str(path), "--write"]) == 2
    err = capsys.readouterr().err
    assert "almost uniform" in err and "Traceback" not in err
    assert json.loads(path.read_text())["exposure"] == measured  # the recorded reference is kept
    untrained = save_tiny_checkpoint(tmp_path, "untrained", {"image_size": 32})
    assert benchmark.main(["exposure-reference", "--checkpoint", str(untrained)]) == 2
    assert "records no training settings" in capsys.readouterr().err


def test_a_run_trained_with_standardized_exposure_records_its_reference_and_serves_it(small_root, tmp_path):
    from audience.data.splits import make_split
    from audience.model.checkpoint import load_checkpoint, read_checkpoint_metadata
    from audience.train.config import TrainConfig
    from audience.train.cross_validate import cross_validate
    from audience.train.prepare import exposure_reference, read_data

    settings = {"data": str(small_root), "arch": "tiny", "folds": "0", "epochs": 1, "batch_size": 16,
                "image_size": 32, "workers": 0, "max_train_batches": 2, "out": str(tmp_path / "runs"),
                "cache_dir": str(tmp_path / "cache")}
    config = TrainConfig.from_dict({**settings, "standardize_exposure": True})
    run = cross_validate(config)
    metadata = read_checkpoint_metadata(run / "fold0" / "best")
    # the reference of the training faces alone (the held-out fold and validation left out)
    split = make_split(read_data(config), "folds", 0, config.val_fraction, config.seed, config.task)
    expected = exposure_reference(read_data(config).faces["path"].to_numpy()[split.train])
    assert metadata.exposure.reference == (expected["mean"], expected["std"])
    assert metadata.exposure.images == expected["images"] and metadata.exposure.data == str(small_root)
    names = [getattr(step, "name", None) for step in load_checkpoint(run / "fold0" / "best")[1].pipeline]
    assert names[0] == "standardize_exposure"
    plain = cross_validate(TrainConfig.from_dict({**settings, "out": str(tmp_path / "plain")}))
    assert read_checkpoint_metadata(plain / "fold0" / "best").exposure is None


def test_training_on_uniform_faces_with_standardized_exposure_stops_with_one_sentence(tmp_path):
    from audience.errors import AudienceError
    from audience.train.config import TrainConfig
    from audience.train.cross_validate import cross_validate

    folder = _utkface_folder(tmp_path)  # every face one flat grey: no spread to standardise to
    config = TrainConfig.from_dict({"data": str(folder), "arch": "tiny", "folds": "0", "epochs": 1, "batch_size": 8,
                                    "image_size": 32, "workers": 0, "max_train_batches": 1, "pretrained": False,
                                    "out": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
                                    "standardize_exposure": True})
    with pytest.raises(AudienceError, match="almost uniform") as error:
        cross_validate(config)
    assert "\n" not in str(error.value)


def test_the_model_card_says_whether_and_how_crops_are_standardised(tmp_path):
    import json

    from fixtures.checkpoints import save_tiny_checkpoint

    from audience.model.checkpoint import read_checkpoint_metadata
    from audience.publish.model_card import build_model_card

    path = save_tiny_checkpoint(tmp_path, "tiny", {"image_size": 32})
    assert "- exposure: each crop as the photo has it" in build_model_card(read_checkpoint_metadata(path), None, "u/m")
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "exposure": {"mean": 123.5, "std": 56.9, "images": 2000}}))
    card = build_model_card(read_checkpoint_metadata(path), None, "u/m")
    assert "pixel mean 123.5, spread 56.9 on 0-255, from 2000 of them" in card
    assert "added after training" in card
    path.write_text(json.dumps({**record, "exposure": {"mean": 123.5, "std": 56.9},
                                "train_config": {"standardize_exposure": True}}))
    assert "the model was trained so" in build_model_card(read_checkpoint_metadata(path), None, "u/m")
