"""Error messages repeat a user's input only in part: a 2 MB header line, root or model name comes back cut."""

from __future__ import annotations

import shutil

import pytest

from audience.data.adience import read_adience
from audience.data.roots import resolve_data_root
from audience.errors import QUOTE_LIMIT, AudienceError, quoted, shorten
from audience.train.config import TrainConfig
from audience.ui import predict_view


def test_quoted_and_shorten_cut_long_input_and_keep_short_input():
    assert quoted("abc") == "'abc'" and shorten("abc") == "abc"
    long = "x" * 5000
    assert quoted(long) == f"{'x' * QUOTE_LIMIT!r}... (5,000 characters)"
    assert shorten(long) == f"{'x' * QUOTE_LIMIT}... (5,000 characters)"
    assert len(quoted(list(range(10_000)))) < QUOTE_LIMIT + 40


def message_of(call) -> str:
    with pytest.raises(AudienceError) as refused:
        call()
    return str(refused.value)


def test_error_messages_quote_long_input_in_part(demo_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(demo_root, root)
    (root / "fold_1_data.txt").write_text("H" * 2_000_000 + "\n")
    header = message_of(lambda: read_adience(root))
    assert "line 1: wrong header" in header and "(2,000,000 characters)" in header and len(header) < 1000
    typed = "/nowhere/" + "d" * 3000
    for call in (lambda: resolve_data_root(typed), lambda: resolve_data_root(typed, allowed=[tmp_path]),
                 lambda: predict_view.resolve_checkpoint("a/" + "m" * 5000),
                 lambda: TrainConfig(folds="9" * 5000).fold_list()):
        assert len(message_of(call)) < 1000
