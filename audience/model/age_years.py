"""An age head over years (0-100) and how its answer becomes the eight Adience groups.

UTKFace labels every face with its exact age; keeping only the group throws away which end of a group a
face is at (a 21-year-old and a 15-year-old are both "15-20"). A head with one output per year learns
from a soft target around the true age (`gaussian_targets`), and the eight group probabilities are sums
over each group's years (`group_probabilities`). A dataset with group labels only (Adience) trains the
same head with a target spread evenly over the group's years (`uniform_group_targets`).

The groups leave gaps (7, 14, 21, 33, 44, 54): a year in a gap belongs to no group, so its probability is
given to its neighbours by `GAP_RULES` (default `split`: half to the group below, half to the group
above); the checkpoint names the rule it was trained and served with. Ages over 100 count as 100.

Pure torch and numpy functions, tested in tests/test_age_years.py; no I/O. torch is imported inside the
functions that use it: the app reads the constants at start without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from audience.errors import AudienceError
from audience.labels import AGE_RANGES

if TYPE_CHECKING:
    import torch

MAX_YEAR = 100
YEARS = np.arange(MAX_YEAR + 1)  # one output per year, 0 to 100
N_YEARS = len(YEARS)
GAP_RULES: tuple[str, ...] = ("split", "lower", "upper")
DEFAULT_GAP_RULE = "split"
DEFAULT_SIGMA = 2.0  # years: the spread of the soft target around a true age (label noise, look-alike ages)


def _group_of_year(year: int) -> int | None:
    for index, (low, high) in enumerate(AGE_RANGES):
        if low <= year <= high:
            return index
    return None


def year_to_group_matrix(gap_rule: str = DEFAULT_GAP_RULE) -> np.ndarray:
    """A (N_YEARS, 8) matrix whose row y says how year y's probability is shared among the groups.

    Every row sums to 1, so `year_probs @ matrix` is a distribution over the groups. A year inside a
    group goes wholly to it; a gap year (7, 14, 21, 33, 44, 54) goes half and half to the groups on each
    side (`split`), wholly to the group below (`lower`) or wholly to the group above (`upper`).
    """
    if gap_rule not in GAP_RULES:
        raise AudienceError(f"gap rule {gap_rule!r} is not one of {', '.join(GAP_RULES)}.")
    matrix = np.zeros((N_YEARS, len(AGE_RANGES)), dtype=np.float64)
    for year in YEARS:
        group = _group_of_year(int(year))
        if group is not None:
            matrix[year, group] = 1.0
            continue
        below = max(i for i, (_, high) in enumerate(AGE_RANGES) if high < year)
        above = below + 1
        if gap_rule == "split":
            matrix[year, below] = matrix[year, above] = 0.5
        else:
            matrix[year, below if gap_rule == "lower" else above] = 1.0
    return matrix


def group_probabilities(year_probs: torch.Tensor, gap_rule: str = DEFAULT_GAP_RULE) -> torch.Tensor:
    """(N, 8) group probabilities from (N, N_YEARS) year probabilities: sums over each group's years."""
    import torch

    matrix = torch.as_tensor(year_to_group_matrix(gap_rule), dtype=year_probs.dtype, device=year_probs.device)
    return year_probs @ matrix


def gaussian_targets(ages: torch.Tensor, sigma: float = DEFAULT_SIGMA) -> torch.Tensor:
    """(N, N_YEARS) soft targets: a Gaussian of `sigma` years around each exact age, cut to 0-100 and
    normalised to sum to 1 (ages over 100 count as 100)."""
    import torch

    if not sigma > 0:
        raise AudienceError(f"the age target's sigma must be above 0 years, not {sigma}.")
    ages = ages.to(torch.float64).clamp(0, MAX_YEAR).unsqueeze(1)
    years = torch.as_tensor(YEARS, dtype=torch.float64, device=ages.device).unsqueeze(0)
    weights = torch.exp(-0.5 * ((years - ages) / sigma) ** 2)
    return (weights / weights.sum(dim=1, keepdim=True)).to(torch.float32)


def uniform_group_targets(groups: torch.Tensor) -> torch.Tensor:
    """(N, N_YEARS) targets for group labels: the mass spread evenly over the group's years (for Adience)."""
    import torch

    table = torch.zeros(len(AGE_RANGES), N_YEARS, dtype=torch.float32)
    for index, (low, high) in enumerate(AGE_RANGES):
        high = min(high, MAX_YEAR)
        table[index, low:high + 1] = 1.0 / (high - low + 1)
    return table.to(groups.device)[groups.long()]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum(target * log_softmax(logits)): cross entropy against a distribution."""
    import torch

    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def expected_age(year_probs: torch.Tensor) -> torch.Tensor:
    """The mean of each row's distribution over years (an age in years to show beside the group)."""
    import torch

    years = torch.as_tensor(YEARS, dtype=year_probs.dtype, device=year_probs.device)
    return year_probs @ years


def prior_adjustment(prior, tau: float) -> np.ndarray:
    """tau * log(prior / sum(prior)): what `AgeGenderNet.set_age_adjustment` subtracts from the age scores (the
    same correction as `prior_adjusted`, applied inside the network)."""
    prior = np.asarray(prior, dtype=np.float64).reshape(-1)
    if not (prior.size and np.all(np.isfinite(prior)) and np.all(prior > 0)):
        raise AudienceError(f"a class prior needs positive numbers, got {prior.tolist()}.")
    return tau * np.log(prior / prior.sum())


def years_targets(ages: torch.Tensor, groups: torch.Tensor, sigma: float = DEFAULT_SIGMA
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets (N, N_YEARS), labelled (N,) bool) for a batch: a Gaussian around the exact age where there is one
    (`ages` >= 0), else the group's years evenly (`groups` >= 0, Adience), else no target (a zero row)."""
    import torch

    exact = ages >= 0
    grouped = ~exact & (groups >= 0)
    targets = torch.zeros(len(ages), N_YEARS, dtype=torch.float32, device=ages.device)
    if exact.any():
        targets[exact] = gaussian_targets(ages[exact], sigma).to(ages.device)
    if grouped.any():
        targets[grouped] = uniform_group_targets(groups[grouped])
    return targets, exact | grouped


def prior_adjusted(log_probs: torch.Tensor, prior: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Logit adjustment for a skewed class prior (Menon et al. 2021): log p(y|x) - tau * log prior(y).

    With tau 0 it is the plain answer; with tau 1 the answer a balanced test set would reward. The
    result is renormalised to log probabilities.
    """
    import torch

    prior = torch.as_tensor(prior, dtype=log_probs.dtype, device=log_probs.device)
    if prior.ndim != 1 or prior.numel() != log_probs.shape[1] or not torch.all(prior > 0):
        raise AudienceError(f"a class prior needs {log_probs.shape[1]} positive numbers, got {prior.tolist()}.")
    adjusted = log_probs - tau * torch.log(prior / prior.sum())
    return torch.log_softmax(adjusted, dim=1)
