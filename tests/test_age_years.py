"""The years head's arithmetic: soft targets, years-to-groups sums (gap years included), prior correction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audience.errors import AudienceError
from audience.labels import AGE_CLASSES, AGE_RANGES
from audience.model.age_years import (
    GAP_RULES,
    N_YEARS,
    expected_age,
    gaussian_targets,
    group_probabilities,
    prior_adjusted,
    soft_cross_entropy,
    uniform_group_targets,
    year_to_group_matrix,
)

GAP_YEARS = (7, 14, 21, 33, 44, 54)


@pytest.mark.parametrize("rule", GAP_RULES)
def test_every_year_gives_all_its_probability_to_the_groups(rule):
    matrix = year_to_group_matrix(rule)
    assert matrix.shape == (N_YEARS, len(AGE_CLASSES))
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    for group, (low, high) in enumerate(AGE_RANGES):
        for year in range(low, min(high, 100) + 1):
            assert matrix[year, group] == 1.0, (year, group)


@pytest.mark.parametrize(("rule", "shares"), [
    ("split", {7: {1: 0.5, 2: 0.5}, 14: {2: 0.5, 3: 0.5}, 21: {3: 0.5, 4: 0.5}, 33: {4: 0.5, 5: 0.5},
               44: {5: 0.5, 6: 0.5}, 54: {6: 0.5, 7: 0.5}}),
    ("lower", {7: {1: 1.0}, 14: {2: 1.0}, 21: {3: 1.0}, 33: {4: 1.0}, 44: {5: 1.0}, 54: {6: 1.0}}),
    ("upper", {7: {2: 1.0}, 14: {3: 1.0}, 21: {4: 1.0}, 33: {5: 1.0}, 44: {6: 1.0}, 54: {7: 1.0}}),
])
def test_gap_years_go_to_their_neighbours_by_the_rule(rule, shares):
    matrix = year_to_group_matrix(rule)
    for year in GAP_YEARS:
        got = {group: matrix[year, group] for group in np.flatnonzero(matrix[year])}
        assert got == shares[year], (year, got)


def test_group_probabilities_are_sums_over_the_years():
    probs = torch.zeros(3, N_YEARS)
    probs[0, 25] = 1.0  # inside 22-32
    probs[1, 21] = 1.0  # a gap year between 15-20 and 22-32
    probs[2, 40], probs[2, 50] = 0.25, 0.75
    groups = group_probabilities(probs)
    assert groups[0].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    assert groups[1].tolist() == [0, 0, 0, 0.5, 0.5, 0, 0, 0]
    assert groups[2].tolist() == [0, 0, 0, 0, 0, 0.25, 0.75, 0]
    assert group_probabilities(probs, "upper")[1].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    with pytest.raises(AudienceError, match="gap rule 'middle' is not one of split, lower, upper"):
        year_to_group_matrix("middle")


def test_gaussian_targets_centre_on_the_age_and_sum_to_one():
    targets = gaussian_targets(torch.tensor([0, 30, 57, 116]), sigma=2.0)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(4))
    assert targets.argmax(dim=1).tolist() == [0, 30, 57, 100]  # over 100 counts as 100
    assert targets[1, 29] == pytest.approx(targets[1, 31]) and targets[1, 29] < targets[1, 30]
    assert targets[1, 30] / targets[1, 32] == pytest.approx(np.exp(2 * 2 / (2 * 4)), rel=1e-4)
    wide = gaussian_targets(torch.tensor([30]), sigma=5.0)
    assert wide[0, 30] < targets[1, 30]
    assert float(expected_age(targets[1:2])) == pytest.approx(30.0, abs=1e-3)
    with pytest.raises(AudienceError, match="sigma must be above 0"):
        gaussian_targets(torch.tensor([3]), sigma=0)


def test_group_labels_spread_evenly_over_the_group_years():
    targets = uniform_group_targets(torch.tensor([0, 4, 7]))
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(3))
    assert targets[0, :3].tolist() == pytest.approx([1 / 3] * 3) and targets[0, 3:].sum() == 0
    assert torch.count_nonzero(targets[1]) == 11 and targets[1, 22] == pytest.approx(1 / 11)
    assert torch.count_nonzero(targets[2]) == 46  # 55-100
    # the group sums of a group target give all of it to that group, whatever the gap rule
    for rule in GAP_RULES:
        assert group_probabilities(targets, rule).argmax(dim=1).tolist() == [0, 4, 7]
        torch.testing.assert_close(group_probabilities(targets, rule).max(dim=1).values, torch.ones(3))


def test_soft_cross_entropy_is_least_at_the_target():
    targets = gaussian_targets(torch.tensor([30.0]))
    right = torch.log(targets + 1e-12)
    wrong = torch.log(gaussian_targets(torch.tensor([60.0])) + 1e-12)
    assert soft_cross_entropy(right, targets) < soft_cross_entropy(wrong, targets)
    hard = torch.zeros(1, N_YEARS)
    hard[0, 30] = 1.0
    logits = torch.randn(1, N_YEARS)
    torch.testing.assert_close(soft_cross_entropy(logits, hard),
                               torch.nn.functional.cross_entropy(logits, torch.tensor([30])))


def test_prior_adjustment_favours_the_rare_group():
    log_probs = torch.log(torch.tensor([[0.45, 0.55]]))
    prior = torch.tensor([0.2, 0.8])
    assert prior_adjusted(log_probs, prior, tau=0.0).exp().argmax().item() == 1
    adjusted = prior_adjusted(log_probs, prior, tau=1.0).exp()
    assert adjusted.argmax().item() == 0 and float(adjusted.sum()) == pytest.approx(1.0)
    # 0.45/0.2 : 0.55/0.8 = 2.25 : 0.6875
    assert float(adjusted[0, 0]) == pytest.approx(2.25 / (2.25 + 0.6875))
    with pytest.raises(AudienceError, match="a class prior needs 2 positive numbers"):
        prior_adjusted(log_probs, torch.tensor([0.0, 1.0]))
