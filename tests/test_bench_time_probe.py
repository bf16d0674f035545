"""bench/time_probe.py's scoring: a reply fits its hour by its words, and the figure carries an interval."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from time_probe import score, verdict  # noqa: E402


def test_a_reply_fits_its_hour_by_its_words_and_not_by_both():
    assert verdict("good morning! just woke up", "morning") == 1
    assert verdict("good morning! just woke up", "night") == -1
    assert verdict("so tired, going to bed", "night") == 1
    assert verdict("morning coffee then bed", "morning") == 0  # both hours' words: no verdict
    assert verdict("привет 你好 haha", "night") == 0
    assert verdict("Mornington Crescent is late", "morning") == -1  # whole words only: "late" is the night's


def test_the_score_is_fit_minus_misfit_with_an_interval_around_it():
    value, (lo, hi) = score([(1, 1)] * 30 + [(0, 0)] * 10)
    assert value == 0.75 and lo <= value <= hi and hi - lo > 0
    assert score([(1, -1)] * 20)[0] == 0.0  # told the hour but answered the same both times
