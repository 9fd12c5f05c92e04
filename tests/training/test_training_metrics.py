"""CER / WER / exact-line accuracy against a reference computation on fixed line pairs."""

from __future__ import annotations

import pytest

from marker_ls_plugin.training.metrics import LinePair, line_cer, score, worst_lines

PAIRS = [
    LinePair("hello world", "hello world", "Text", "1:a"),  # exact
    LinePair("hello world", "helo world", "Text", "1:b"),  # 1 deletion
    LinePair("abc def", "abd def", "Handwriting", "2:a"),  # 1 substitution
    LinePair("Total 42", "Total 42.", "Text", "2:b"),  # 1 insertion
    LinePair("xyz", "", "Handwriting", "3:a"),  # 3 deletions, 1 word missing
    LinePair("  spaced  ", "spaced", "Text", "3:b"),  # stripped: exact
]


def levenshtein(a, b):
    """Reference edit distance (the textbook dynamic programme), for sequences of characters or words."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def reference(pairs):
    pairs = [(p.reference.strip(), p.hypothesis.strip()) for p in pairs]
    chars = sum(levenshtein(r, h) for r, h in pairs) / sum(len(r) for r, _ in pairs)
    words = sum(levenshtein(r.split(), h.split()) for r, h in pairs) / sum(len(r.split()) for r, _ in pairs)
    exact = sum(r == h for r, h in pairs) / len(pairs)
    return chars, words, exact


def test_overall_metrics_match_the_reference():
    result = score(PAIRS)
    cer, wer, exact = reference(PAIRS)
    assert result["cer"] == pytest.approx(cer, abs=1e-4)
    assert result["wer"] == pytest.approx(wer, abs=1e-4)
    assert result["exact"] == pytest.approx(exact, abs=1e-4)
    # by hand: 6 character edits over 11+11+7+8+3+6 = 46 characters; words: 1+1+1+1 of 2+2+2+2+1+1 = 10
    assert result["char_errors"] == 6 and result["chars"] == 46
    assert result["cer"] == pytest.approx(6 / 46, abs=1e-4)
    assert result["wer"] == pytest.approx(4 / 10, abs=1e-4)
    assert result["exact"] == pytest.approx(2 / 6, abs=1e-4)


def test_per_label_metrics_match_the_reference():
    result = score(PAIRS)
    for label in ("Text", "Handwriting"):
        subset = [p for p in PAIRS if p.label == label]
        cer, wer, exact = reference(subset)
        assert result["per_label"][label]["cer"] == pytest.approx(cer, abs=1e-4)
        assert result["per_label"][label]["wer"] == pytest.approx(wer, abs=1e-4)
        assert result["per_label"][label]["lines"] == len(subset)


def test_empty_input_and_empty_references():
    assert score([])["cer"] is None
    assert line_cer("", "") == 0.0 and line_cer("", "x") == 1.0
    assert line_cer("abcd", "abed") == 0.25


def test_worst_lines_pair_before_and_after_by_key():
    before = [LinePair(p.reference, "", p.label, p.key) for p in PAIRS]
    worst = worst_lines(before, PAIRS, limit=3)
    assert [row["key"] for row in worst] == ["3:a", "2:a", "2:b"]
    assert worst[0] == {"key": "3:a", "label": "Handwriting", "reference": "xyz", "before": "", "after": "",
                        "cer_before": 1.0, "cer_after": 1.0}
