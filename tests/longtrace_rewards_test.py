"""LongTraceRL's rewards: normalisation, extraction, the rubric share and the combinations, each
against values worked out by hand."""

# pylint: disable=invalid-name
import numpy as np
import pytest

from rlvr_jax.rewards import longtrace as lt


def test_normalize_as_the_authors():
    assert lt.normalize("The Doravel-Marn river!") == "the doravel marn river"
    assert lt.normalize("  Kelvan_Tor  (2nd)") == "kelvan_tor 2nd"
    assert lt.normalize("Ünter Straße") == "nter stra e"  # ASCII words only, as theirs
    assert lt.normalize("") == ""


def test_final_content_and_answer():
    text = "<think>Answer: wrong one</think>Chain: A -> B\nAnswer: Doravel"
    assert lt.final_content(text) == "Chain: A -> B\nAnswer: Doravel"
    assert lt.final_answer(lt.final_content(text)) == "Doravel"
    assert lt.final_answer("answer:  Marn  \nmore text\nANSWER: Oska\n") == "Oska"  # the last
    assert lt.final_answer("the answer is Oska") is None  # only an Answer: line counts
    assert lt.final_content("no think tags") == "no think tags"


def test_score_outcome_and_rubric():
    gold = ["Kelvan Tor", "Aldon Varsk", "Doravel", "Marn"]
    v = lt.score("Chain: kelvan tor -> Doravel\nAnswer: the marn", "Marn", gold)
    # "the marn" normalises to "the marn" != "marn": exact match, not containment.
    assert (v.correct, v.status, v.reward) == (False, "wrong", 0.0)
    # Found: kelvan tor, doravel, marn (3 of 4); Aldon Varsk missing.
    assert v.rubric == pytest.approx(0.75)
    v = lt.score("Chain: Kelvan-Tor, Aldon Varsk\nAnswer: MARN!", "Marn", gold)
    assert (v.correct, v.status, v.reward, v.extracted) == (True, "correct", 1.0, "MARN!")
    # kelvan tor, aldon varsk, and "marn" from the answer line itself; doravel missing: 3 of 4.
    assert v.rubric == pytest.approx(0.75)
    v = lt.score("Doravel and Marn", "Marn", gold)
    assert (v.status, v.reward, v.rubric) == ("no_answer", 0.0, 0.5)
    # The rubric reads the content only: entities inside <think> do not count.
    v = lt.score("<think>Kelvan Tor Aldon Varsk Doravel</think>Answer: Marn", "Marn", gold)
    assert v.correct and v.rubric == pytest.approx(0.25)
    # Plain substring, as the authors: a confusable longer name contains the shorter one.
    assert lt.rubric_share("doravell", ["Doravel"]) == 1.0
    assert lt.score("Answer: x", "", gold).status == "verifier_error"
    assert lt.rubric_share("anything", []) == 0.0


def test_group_normalize():
    rubric_B = np.array([0.2, 0.4, 0.0, 0.1, 0.0, 0.0])
    np.testing.assert_allclose(lt.group_normalize(rubric_B, G=3), [0.5, 1.0, 0.0, 1.0, 0.0, 0.0])


def test_combinations_by_hand():
    # One group of 4: correct with rubric 0.5 and 1.0, wrong with 0.8 and 0.0; max = 1.0.
    correct_B = np.array([True, True, False, False])
    rubric_B = np.array([0.5, 1.0, 0.8, 0.0])
    eta = 0.3
    got = {m: lt.combine(correct_B, rubric_B, 4, mode=m, eta=eta) for m in lt.COMBINATIONS}
    # positive_only: wrong -> 0; right -> 0.7 + 0.3 r
    np.testing.assert_allclose(got["positive_only"], [0.85, 1.0, 0.0, 0.0], atol=1e-7)
    # negative_only: right -> 1; wrong -> 0.3 r
    np.testing.assert_allclose(got["negative_only"], [1.0, 1.0, 0.24, 0.0], atol=1e-7)
    # ungated: 0.7 r_ans + 0.3 r
    np.testing.assert_allclose(got["ungated"], [0.85, 1.0, 0.24, 0.0], atol=1e-7)
    np.testing.assert_allclose(got["outcome"], [1.0, 1.0, 0.0, 0.0])
    assert all(r.dtype == np.float32 for r in got.values())
    # Normalised by the group's max: a group whose best share is 0.4 lifts 0.4 to 1.
    r = lt.combine(np.array([True, True]), np.array([0.2, 0.4]), 2, mode="positive_only", eta=eta)
    np.testing.assert_allclose(r, [0.85, 1.0], atol=1e-7)
    with pytest.raises(ValueError, match="combination"):
        lt.combine(correct_B, rubric_B, 4, mode="both", eta=eta)
