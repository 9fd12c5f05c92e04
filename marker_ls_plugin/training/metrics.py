"""Recognition metrics over validation lines: CER and WER (jiwer), exact-line accuracy, per label, worst lines.

CER = (substitutions + deletions + insertions) / reference characters, summed over all lines (not a mean of
per-line rates), which is what jiwer computes for a list of lines. WER is the same over whitespace-split words.
Texts are compared after stripping leading/trailing whitespace; nothing else is normalised.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jiwer


@dataclass(frozen=True)
class LinePair:
    """One validation line: what the annotator wrote and what a model read."""

    reference: str
    hypothesis: str
    label: str = ""
    key: str = ""  # a stable id (task:region) to pair the same line across models


def line_cer(reference: str, hypothesis: str) -> float:
    """CER of one line; a line with an empty reference scores 0 if the model read nothing, else 1."""
    reference, hypothesis = reference.strip(), hypothesis.strip()
    if not reference:
        return 0.0 if not hypothesis else 1.0
    return float(jiwer.cer(reference, hypothesis))


def score(pairs: Sequence[LinePair]) -> dict[str, Any]:
    """CER, WER and exact-line accuracy over ``pairs``, overall and per label (rounded to 4 digits)."""
    by_label: dict[str, list[LinePair]] = defaultdict(list)
    for pair in pairs:
        by_label[pair.label].append(pair)
    result = _score(pairs)
    result["per_label"] = {label: _score(items) for label, items in sorted(by_label.items())}
    return result


def _score(pairs: Sequence[LinePair]) -> dict[str, Any]:
    kept = [(p.reference.strip(), p.hypothesis.strip()) for p in pairs if p.reference.strip()]
    if not kept:
        return {"lines": 0, "cer": None, "wer": None, "exact": None}
    references, hypotheses = zip(*kept, strict=True)
    chars = jiwer.process_characters(list(references), list(hypotheses))
    words = jiwer.process_words(list(references), list(hypotheses))
    exact = sum(ref == hyp for ref, hyp in kept) / len(kept)
    return {
        "lines": len(kept),
        "cer": round(chars.cer, 4),
        "wer": round(words.wer, 4),
        "exact": round(exact, 4),
        "char_errors": chars.substitutions + chars.deletions + chars.insertions,
        "chars": sum(len(ref) for ref in references),
    }


def worst_lines(before: Sequence[LinePair], after: Sequence[LinePair], limit: int = 20) -> list[dict[str, Any]]:
    """The lines the fine-tuned model reads worst (ties: largest regression first), with both readings."""
    base = {pair.key: pair for pair in before}
    rows = []
    for pair in after:
        old = base.get(pair.key)
        cer_after = line_cer(pair.reference, pair.hypothesis)
        cer_before = line_cer(old.reference, old.hypothesis) if old else None
        rows.append({
            "key": pair.key, "label": pair.label, "reference": pair.reference,
            "before": old.hypothesis if old else None, "after": pair.hypothesis,
            "cer_before": None if cer_before is None else round(cer_before, 4), "cer_after": round(cer_after, 4),
        })
    rows.sort(key=lambda row: (-row["cer_after"], (row["cer_before"] or 0) - row["cer_after"], row["key"]))
    return rows[:limit]
