"""Splits: subject-exclusive folds, every labelled face tested once, the leaky random protocol, errors."""

from __future__ import annotations

import numpy as np
import pytest

from audience.data.adience import read_adience
from audience.data.splits import fold_rows, labelled_mask, make_split
from audience.errors import AudienceError
from audience.labels import NO_CLASS


@pytest.fixture(scope="module")
def demo_faces(demo_root):
    return read_adience(demo_root).faces


@pytest.fixture(scope="module")
def meta_faces(adience_meta):
    return read_adience(adience_meta, policy="strict", images="none").faces


def _groups(faces, index, column):
    return set(faces[column].to_numpy()[index])


@pytest.mark.parametrize("column", ["subject", "user_id"])
def test_folds_share_no_person_between_train_val_test(demo_faces, column):
    for fold in range(5):
        split = make_split(demo_faces, "folds", fold)
        train, val, test = (_groups(demo_faces, i, column) for i in (split.train, split.val, split.test))
        assert len(split.train) and len(split.val) and len(split.test)
        assert not train & val and not train & test and not val & test
        assert not split.leaky


def test_every_labelled_face_is_tested_exactly_once(demo_faces):
    for task in ("age+gender", "age", "gender"):
        tested = np.concatenate([make_split(demo_faces, "folds", k, task=task).test for k in range(5)])
        assert len(tested) == len(set(tested))
        assert set(tested) == set(np.flatnonzero(labelled_mask(demo_faces, task)))


def test_rows_without_a_label_for_the_task_are_left_out(demo_faces):
    age, gender = demo_faces["age_class"].to_numpy(), demo_faces["gender_class"].to_numpy()
    assert (age == NO_CLASS).any() and (gender == NO_CLASS).any()  # the demo data carries unlabelled rows
    for task, usable in (("age", age != NO_CLASS), ("gender", gender != NO_CLASS),
                         ("age+gender", (age != NO_CLASS) | (gender != NO_CLASS))):
        split = make_split(demo_faces, "folds", 1, task=task)
        used = np.concatenate([split.train, split.val, split.test])
        assert usable[used].all()
    both = make_split(demo_faces, "folds", 1, task="age+gender")
    used = np.concatenate([both.train, both.val, both.test])
    assert (age[used] == NO_CLASS).any(), "a face with only a gender label still trains the gender head"


def test_the_split_is_a_function_of_the_seed(demo_faces):
    first, again = make_split(demo_faces, "folds", 2, seed=3), make_split(demo_faces, "folds", 2, seed=3)
    assert np.array_equal(first.val, again.val) and np.array_equal(first.train, again.train)
    others = [make_split(demo_faces, "folds", 2, seed=s).val for s in range(4, 9)]
    assert any(not np.array_equal(first.val, other) for other in others)


def test_real_folds_match_the_literature_test_sizes(meta_faces):
    sizes = [len(make_split(meta_faces, "folds", k, task="age").test) for k in range(5)]
    assert sizes == [4316, 3101, 3339, 2975, 3693]
    for k in range(5):
        split = make_split(meta_faces, "folds", k, task="age")
        users = [_groups(meta_faces, i, "user_id") for i in (split.train, split.val, split.test)]
        assert not users[0] & users[1] and not users[0] & users[2] and not users[1] & users[2]
        share = len(split.val) / (len(split.val) + len(split.train))
        assert 0.09 <= share <= 0.2, share  # whole albums, about val_fraction of the images


def test_random_protocol_is_marked_leaky_and_reports_val_as_test(demo_faces):
    split = make_split(demo_faces, "random", 0, val_fraction=0.1)
    assert split.leaky and np.array_equal(split.val, split.test)
    assert not set(split.train) & set(split.val)
    labelled = np.flatnonzero(labelled_mask(demo_faces))
    assert set(split.train) | set(split.val) == set(labelled)
    assert len(split.val) == round(0.1 * len(labelled)) and len(set(split.val)) == len(split.val)
    people = _groups(demo_faces, split.train, "subject") & _groups(demo_faces, split.val, "subject")
    assert people, "the random split puts the same people on both sides (that is why it is leaky)"
    assert not np.array_equal(make_split(demo_faces, "random", 1).val, split.val)


def test_an_empty_fold_is_one_sentence(demo_faces):
    without_fold_2 = demo_faces[demo_faces["fold"] != 2].reset_index(drop=True)
    with pytest.raises(AudienceError, match="Fold 2 is empty"):
        make_split(without_fold_2, "folds", 2)


def test_a_fold_without_labels_for_the_task_is_one_sentence(demo_faces):
    faces = demo_faces.copy()
    faces.loc[faces["fold"] == 3, "age_class"] = NO_CLASS
    with pytest.raises(AudienceError, match="Fold 3 has no face labelled for task age"):
        make_split(faces, "folds", 3, task="age")
    assert len(make_split(faces, "folds", 3, task="gender").test)  # gender labels are still there
    with pytest.raises(AudienceError, match="Fold 3 has no face labelled"):
        fold_rows(faces, 3, "age")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"protocol": "kfold"}, "Unknown protocol"),
    ({"test_fold": 5}, "Fold 5 does not exist"),
    ({"val_fraction": 0.0}, "val_fraction"),
    ({"task": "race"}, "Unknown task"),
])
def test_bad_arguments_are_one_sentence(demo_faces, kwargs, message):
    with pytest.raises(AudienceError, match=message):
        make_split(demo_faces, **kwargs)
