"""Rich feedback for DistIL's teacher context (docs/distil.md): a verifier hint that locates the
first wrong step of a synthetic worked solution, a correct sibling rollout, or the reference.

Host-side text only. A worked step is any `a op b = c` in the completion (op in + - *), in order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rlvr_jax.data import types

FEEDBACKS = ("verifier", "sibling", "reference")  # the closed set DistilConfig.feedback draws from
ALL_CORRECT = "The solution is correct."
FINISH = "The steps are right; finish with the final answer in \\boxed{}."
NO_STEPS = "Work it out one step per line, like 3 + 4 = 7, then give the answer in \\boxed{}."

_STEP_RE = re.compile(r"(-?\d+)\s*([-+*])\s*(-?\d+)\s*=\s*(-?\d+)")
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _steps(text: str) -> list[tuple[int, str, int, int]]:
    """Every `a op b = c` the text writes, in order, as (a, op, b, c)."""
    return [(int(a), op, int(b), int(c)) for a, op, b, c in _STEP_RE.findall(text)]


def _boxed(text: str) -> str | None:
    """The content of the last \\boxed{} in the text, stripped; None if there is none."""
    boxes = _BOXED_RE.findall(text)
    return boxes[-1].strip() if boxes else None


def _reference_steps(example: types.Example) -> list[tuple[int, str, int, int]] | None:
    """The correct steps (running total, op, operand, new total) from synthetic meta, or None."""
    meta = example.meta or {}
    if not all(key in meta for key in ("start", "ops", "operands", "values")):
        return None
    totals = [meta["start"], *meta["values"]]
    return list(zip(totals[:-1], meta["ops"], meta["operands"], meta["values"], strict=True))


def _same_answer(boxed: str | None, answer: str) -> bool:
    if boxed is None:
        return False
    try:
        return int(boxed) == int(answer)
    except ValueError:
        return boxed == answer.strip()


def verifier_feedback(example: types.Example, completion_text: str) -> str:
    """A one-sentence hint on `completion_text`: its first wrong step, else what is missing.

    With synthetic meta (start, ops, operands, values), step i is checked against the correct
    step i: a slip gets "Step i is wrong: a op b = <true>, not c.", a wrong setup gets the step it
    should have been, a short solution gets its missing next step. Without meta, each written
    `a op b = c` is only re-evaluated, and the final answer compared with `example.answer`.
    """
    written = _steps(completion_text)
    reference = _reference_steps(example)
    for i, (a, op, b, c) in enumerate(written, start=1):
        if _apply(op, a, b) != c:
            return f"Step {i} is wrong: {a} {op} {b} = {_apply(op, a, b)}, not {c}."
        if reference is not None and i <= len(reference) and c != reference[i - 1][3]:
            right = " ".join(map(str, reference[i - 1][:3])) + f" = {reference[i - 1][3]}"
            return f"Step {i} is wrong: it should be {right}, not {a} {op} {b} = {c}."
    boxed = _boxed(completion_text)
    if reference is not None:
        if len(written) < len(reference):
            ra, rop, rb, rc = reference[len(written)]
            return f"Step {len(written) + 1} is missing: {ra} {rop} {rb} = {rc}."
        if len(written) > len(reference) and written[-1][3] != reference[-1][3]:
            n = len(reference)
            return f"The problem has {n} steps; stop after step {n}, at {reference[-1][3]}."
    if _same_answer(boxed, example.answer):
        return ALL_CORRECT
    if not written:
        return NO_STEPS
    if reference is None and _same_answer(boxed, str(written[-1][3])):
        # Arithmetic right and boxed, yet the wrong answer: a setup error we cannot locate.
        return "The arithmetic is right, but the answer is wrong; check the numbers each step uses."
    return FINISH


def sibling_feedback(correct_sibling_text: str) -> str:
    """Feedback that shows a correct rollout of the same prompt (SDPO's successful sibling)."""
    return f"A correct solution: {correct_sibling_text.strip()}"


def reference_feedback(example: types.Example) -> str:
    """The reference worked solution when the example has one, else its final answer."""
    if example.solution:
        return f"A correct solution: {example.solution.strip()}"
    return f"The correct answer is {example.answer.strip()}."


def feedback_prompt(prompt_text: str, feedback: str) -> str:
    """The teacher's prompt: the student's prompt with the feedback appended in a fixed format.

    The chat template is applied afterwards, as for the student's prompt.
    """
    return f"{prompt_text.rstrip()}\n\nFeedback: {feedback.strip()}"


def group_feedback(
    kind: str,
    example: types.Example,
    completions: Sequence[str],
    correct: Sequence[bool],
    verdicts: Sequence[Any] | None = None,
) -> list[str]:
    """One feedback string per rollout of a group, by `kind` (one of FEEDBACKS).

    The verifier hint is the verdict's own `.feedback` when the verifier writes one (the code
    verifier: the first failing test's input, expected and actual output), else the worked-solution
    hint of `verifier_feedback`. "sibling" shows rollout i the first correct rollout j != i; with
    none, it falls back to the verifier hint on rollout i's own completion.
    """
    if len(completions) != len(correct):
        raise ValueError(f"{len(completions)} completions but {len(correct)} correct flags")

    def hint(text: str, i: int) -> str:
        own = None if verdicts is None else getattr(verdicts[i], "feedback", None)
        return own if own else verifier_feedback(example, text)

    if kind == "verifier":
        return [hint(text, i) for i, text in enumerate(completions)]
    elif kind == "reference":
        return [reference_feedback(example)] * len(completions)
    elif kind == "sibling":
        out = []
        for i, text in enumerate(completions):
            j = next((j for j, ok in enumerate(correct) if ok and j != i), None)
            out.append(hint(text, i) if j is None else sibling_feedback(completions[j]))
        return out
    raise ValueError(f"feedback kind={kind!r} is not one of {FEEDBACKS}")
