"""Feedback for DistIL's teacher: the first wrong step of hand-written completions, missing and
unboxed answers, all-correct solutions, sibling and reference feedback, and the teacher prompt."""

import dataclasses

import pytest

from rlvr_jax.data import feedback, synthetic, types

# Jack has 18 muffins, gives 2 away, makes 6 more, then has 3 times as many: 16, 22, 66.
JACK = types.Example(
    uid="hand/0",
    prompt="Jack has 18 muffins. He gives 2 to a friend in the morning and makes 6 more. "
    "Then he has 3 times as many. How many muffins does Jack have in the end?",
    answer="66",
    solution="Then he has 18 - 2 = 16 muffins.\nThen he has 16 + 6 = 22 muffins.\n"
    "Then he has 22 * 3 = 66 muffins.\nThe answer is \\boxed{66}.",
    source="synthetic",
    meta={"start": 18, "ops": ["-", "+", "*"], "operands": [2, 6, 3], "values": [16, 22, 66]},
)
# The same problem as a plain file row: no worked solution, no intermediate values.
JACK_BARE = dataclasses.replace(JACK, solution=None, meta=None)


def _lines(*steps, answer=None):
    body = [f"Then he has {step} muffins." for step in steps]
    return "\n".join(body + ([f"The answer is \\boxed{{{answer}}}."] if answer else []))


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (  # an arithmetic slip in step 2, carried on
            _lines("18 - 2 = 16", "16 + 6 = 21", "21 * 3 = 63", answer=63),
            "Step 2 is wrong: 16 + 6 = 22, not 21.",
        ),
        (  # a slip in the first step
            _lines("18 - 2 = 15", "15 + 6 = 21", answer=21),
            "Step 1 is wrong: 18 - 2 = 16, not 15.",
        ),
        (  # right arithmetic on the wrong numbers: the step it should have been
            _lines("18 - 2 = 16", "16 + 6 = 22", "22 * 2 = 44", answer=44),
            "Step 3 is wrong: it should be 22 * 3 = 66, not 22 * 2 = 44.",
        ),
        (  # the last step's slip only
            _lines("18 - 2 = 16", "16 + 6 = 22", "22 * 3 = 67", answer=67),
            "Step 3 is wrong: 22 * 3 = 66, not 67.",
        ),
        (  # correct steps, unboxed
            _lines("18 - 2 = 16", "16 + 6 = 22", "22 * 3 = 66") + "\nSo he has 66.",
            feedback.FINISH,
        ),
        (  # correct steps, wrong box
            _lines("18 - 2 = 16", "16 + 6 = 22", "22 * 3 = 66", answer=22),
            feedback.FINISH,
        ),
        (  # stopped early
            _lines("18 - 2 = 16", "16 + 6 = 22", answer=22),
            "Step 3 is missing: 22 * 3 = 66.",
        ),
        ("The answer is \\boxed{7}.", "Step 1 is missing: 18 - 2 = 16."),
        (  # a step too many, off the right total
            _lines("18 - 2 = 16", "16 + 6 = 22", "22 * 3 = 66", "66 + 2 = 68", answer=68),
            "The problem has 3 steps; stop after step 3, at 66.",
        ),
        (JACK.solution, feedback.ALL_CORRECT),
        (_lines("18-2=16", "16+6=22", "22*3=66", answer="66"), feedback.ALL_CORRECT),
    ],
)
def test_verifier_feedback_with_synthetic_meta(completion, expected):
    assert feedback.verifier_feedback(JACK, completion) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (  # no ground-truth steps: the written arithmetic is re-evaluated
            _lines("18 - 2 = 16", "16 + 6 = 21", "21 * 3 = 63", answer=63),
            "Step 2 is wrong: 16 + 6 = 22, not 21.",
        ),
        (_lines("18 - 2 = 16", "16 + 6 = 22", "22 * 3 = 66"), feedback.FINISH),
        (_lines("18 - 2 = 16", "16 + 6 = 22", "22 * 3 = 66", answer=66), feedback.ALL_CORRECT),
        (
            _lines("18 - 2 = 16", "16 + 6 = 22", "22 * 2 = 44", answer=44),
            "The arithmetic is right, but the answer is wrong; check the numbers each step uses.",
        ),
        ("I think it is \\boxed{5}.", feedback.NO_STEPS),
    ],
)
def test_verifier_feedback_without_meta(completion, expected):
    assert feedback.verifier_feedback(JACK_BARE, completion) == expected


def test_generated_examples_and_noisy_slips():
    examples = synthetic.make_split(synthetic.config_for_level(4), "train", 30, seed=3)
    for ex in examples:
        assert feedback.verifier_feedback(ex, ex.solution) == feedback.ALL_CORRECT
    noisy = synthetic.noisy_solutions(examples, slip_frac=1.0, unanswered_frac=0.3, seed=0)
    for ex in noisy:
        hint = feedback.verifier_feedback(ex, ex.solution)
        if "\\boxed" not in ex.solution:
            assert hint == feedback.FINISH
        else:  # the slip is always in the last step
            n = ex.meta["num_steps"]
            right = ex.meta["values"][-1]
            assert hint.startswith(f"Step {n} is wrong: ") and f"= {right}, not " in hint


def test_sibling_reference_and_prompt():
    assert (
        feedback.sibling_feedback("  5 + 3 = 8\n\\boxed{8} ")
        == "A correct solution: 5 + 3 = 8\n\\boxed{8}"
    )
    assert feedback.reference_feedback(JACK) == f"A correct solution: {JACK.solution}"
    assert feedback.reference_feedback(JACK_BARE) == "The correct answer is 66."
    prompt = feedback.feedback_prompt("How many? ", "Step 1 is wrong: 1 + 1 = 2, not 3.")
    assert prompt == "How many?\n\nFeedback: Step 1 is wrong: 1 + 1 = 2, not 3."


def test_group_feedback():
    right, wrong = JACK.solution, _lines("18 - 2 = 15", answer=15)
    texts, correct = [wrong, right, wrong], [False, True, False]
    sib = feedback.group_feedback("sibling", JACK, texts, correct)
    assert sib[0] == sib[2] == feedback.sibling_feedback(right)
    # The only correct rollout has no other correct sibling: it gets the verifier's verdict.
    assert sib[1] == feedback.ALL_CORRECT
    hint = "Step 1 is wrong: 18 - 2 = 16, not 15."
    assert feedback.group_feedback("sibling", JACK, [wrong, wrong], [False, False]) == [hint] * 2
    assert feedback.group_feedback("verifier", JACK, texts, correct)[0] == hint
    ref = feedback.group_feedback("reference", JACK, texts, correct)
    assert ref == [feedback.reference_feedback(JACK)] * 3
    with pytest.raises(ValueError, match="oracle"):
        feedback.group_feedback("oracle", JACK, texts, correct)
    with pytest.raises(ValueError, match="correct flags"):
        feedback.group_feedback("verifier", JACK, texts, correct[:2])
