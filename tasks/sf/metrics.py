"""Slot-filling metrics on decoded strings, defined as SUPERB defines them (s3prl ``downstream/ctc/metric.py``).

A decoded string interleaves words with slot markers, e.g. ``"PLAY B-artist JOHN LENNON E-artist NOW"``. A slot is
``B-<type> <value> E-<type>`` (shortest value, same type at both ends); marker tokens inside a hypothesis value are
removed from it.

- slot-type F1: per utterance, precision/recall over the *set* of slot types (both empty → 1, one empty → 0), then
  the mean over utterances.
- slot-value CER: for every reference slot, the hypothesis value of the same type with the lowest CER (empty string
  when the type is missing); then total character edits / total reference characters over all such pairs.
"""
from __future__ import annotations

import re
from collections import defaultdict

import editdistance

_SLOT = re.compile(r"B-(\S+) (.+?) E-\1")
_OPEN = re.compile(r"B-(\S+) ")
_CLOSE = re.compile(r" E-(\S+)")


def _strip_markers(text: str) -> str:
    return _CLOSE.sub("", _OPEN.sub("", text))


def parse_slots(text: str, strip_inner: bool = True) -> dict[str, list[str]]:
    """Slot type → list of values found in ``text`` (in order)."""
    text = re.sub(r" +", " ", text)
    slots: dict[str, list[str]] = defaultdict(list)
    for slot_type, value in _SLOT.findall(text):
        slots[slot_type].append(_strip_markers(value) if strip_inner else value)
    return dict(slots)


def slot_type_f1(hypotheses: list[str], references: list[str]) -> float:
    """Mean over utterances of the F1 between hypothesis and reference slot-type sets."""
    _check(hypotheses, references)
    scores = []
    for hyp, ref in zip(hypotheses, references):
        hyp_types = set(parse_slots(hyp))
        ref_types = set(parse_slots(ref, strip_inner=False))
        if not hyp_types and not ref_types:
            scores.append(1.0)
            continue
        if not hyp_types or not ref_types:
            scores.append(0.0)
            continue
        common = len(hyp_types & ref_types)
        precision, recall = common / len(hyp_types), common / len(ref_types)
        scores.append(2 * precision * recall / (precision + recall) if common else 0.0)
    return sum(scores) / len(scores)


def slot_value_cer(hypotheses: list[str], references: list[str]) -> float:
    """Character error rate of slot values, each reference value paired with its best same-type hypothesis value."""
    _check(hypotheses, references)
    edits, total = 0, 0
    for hyp, ref in zip(hypotheses, references):
        hyp_slots = parse_slots(hyp)
        for slot_type, ref_values in parse_slots(ref, strip_inner=False).items():
            for ref_value in ref_values:
                candidates = hyp_slots.get(slot_type, [""])
                edits += min(editdistance.eval(c, ref_value) for c in candidates)
                total += len(ref_value)
    return edits / total if total else 0.0


def _check(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"got {len(hypotheses)} hypotheses for {len(references)} references")
    if not references:
        raise ValueError("no utterances to score")
