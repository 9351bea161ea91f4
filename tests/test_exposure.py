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
