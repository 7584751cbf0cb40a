"""LongTraceRL's rewards: the outcome by normalised exact match, the entity rubric on the final
content, and their combinations (docs/longtrace.md).

- Normalisation (the authors' reward server): lowercase, the words `[a-zA-Z0-9_]+`, joined by
  single spaces. "The Doravel-Marn river!" -> "the doravel marn river".
- Final content: the text after the last `</think>` (the released scripts score the content,
  not the reasoning); the whole text when there is none.
- Outcome `r_ans`: the final answer is the rest of the last line that starts with `Answer:`
  (case-insensitive); it is correct when its normalised form equals the gold answer's. No
  `Answer:` line is `no_answer` (reward 0), never a guess from the last word.
- Rubric `r_rub`: the share of gold entities whose normalised name is a substring of the
  normalised final content (plain substring, as the authors: "doravel" is found in "doravell").
- Group normalisation: `r_rub / max over the group's G rollouts` (0 when the maximum is 0).
- Combinations, with eta = `rubric_eta` (0.3):
    positive_only  r = 0 if wrong else (1 - eta) + eta * r_rub_norm      (the paper's)
    negative_only  r = 1 if correct else eta * r_rub_norm                (partial credit)
    ungated        r = (1 - eta) * r_ans + eta * r_rub_norm
    outcome        r = r_ans
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

STATUSES = ("correct", "wrong", "no_answer", "verifier_error")
COMBINATIONS = ("positive_only", "negative_only", "ungated", "outcome")
MAX_CHARS = 200_000  # a completion longer than this is scored on its first MAX_CHARS characters

_WORD = re.compile(r"[a-zA-Z0-9_]+")
_ANSWER = re.compile(r"^\s*answer\s*:(.*)$", re.IGNORECASE | re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class LongTraceVerdict:
    """One scored completion. `reward` is the outcome; the training reward is `combine`'s."""

    reward: float  # r_ans in {0, 1}
    correct: bool
    status: str  # one of STATUSES
    rubric: float  # r_rub before group normalisation: share of gold entities found
    extracted: str | None = None  # the final answer as written

    @property
    def verifier_error(self) -> bool:
        return self.status == "verifier_error"


def normalize(text: str) -> str:
    """Lowercase words [a-zA-Z0-9_]+ joined by single spaces."""
    return " ".join(_WORD.findall(text.lower()))


def final_content(text: str) -> str:
    """What follows the last `</think>`, or the whole text."""
    _, sep, tail = text.rpartition("</think>")
    return tail if sep else text


def final_answer(content: str) -> str | None:
    """The rest of the last `Answer:` line, stripped; None when there is none."""
    found = _ANSWER.findall(content)
    return found[-1].strip() if found else None


def rubric_share(content: str, gold_entities: Sequence[str]) -> float:
    """Share of gold entities whose normalised name occurs in the normalised content."""
    names = [n for n in (normalize(e) for e in gold_entities) if n]
    if not names:
        return 0.0
    haystack = normalize(content)
    return sum(name in haystack for name in names) / len(names)


def score(text: str, answer: str, gold_entities: Sequence[str]) -> LongTraceVerdict:
    """One completion against its gold answer and gold entity chain."""
    gold = normalize(answer)
    if not gold:
        return LongTraceVerdict(0.0, False, "verifier_error", 0.0)
    content = final_content(text[:MAX_CHARS])
    rubric = rubric_share(content, gold_entities)
    extracted = final_answer(content)
    if extracted is None:
        return LongTraceVerdict(0.0, False, "no_answer", rubric)
    correct = normalize(extracted) == gold
    return LongTraceVerdict(
        float(correct), correct, "correct" if correct else "wrong", rubric, extracted
    )


def group_normalize(rubric_B: np.ndarray, G: int) -> np.ndarray:
    """r_rub / max over each group of G consecutive rows (0 where the group's maximum is 0)."""
    rubric_PxG = np.asarray(rubric_B, np.float64).reshape(-1, G)
    max_Px1 = rubric_PxG.max(axis=1, keepdims=True)
    safe_Px1 = np.where(max_Px1 > 0, max_Px1, 1.0)
    return np.where(max_Px1 > 0, rubric_PxG / safe_Px1, 0.0).reshape(-1)


def combine(
    correct_B: np.ndarray, rubric_B: np.ndarray, G: int, *, mode: str, eta: float
) -> np.ndarray:
    """Training rewards [B] (float32) of a group-major rollout; see the module docstring."""
    if mode not in COMBINATIONS:
        raise ValueError(f"rubric combination {mode!r} is not one of {COMBINATIONS}")
    r_ans_B = np.asarray(correct_B, np.float64)
    r_rub_B = group_normalize(rubric_B, G)
    if mode == "positive_only":
        r_B = np.where(r_ans_B > 0, (1.0 - eta) + eta * r_rub_B, 0.0)
    elif mode == "negative_only":
        r_B = np.where(r_ans_B > 0, 1.0, eta * r_rub_B)
    elif mode == "ungated":
        r_B = (1.0 - eta) * r_ans_B + eta * r_rub_B
    else:
        r_B = r_ans_B
    return r_B.astype(np.float32)
