"""Table tests for the math verifier: equivalent forms, near misses, hedges, malformed and
oversized completions, and compute bombs (which must come back quickly, never hang)."""

import concurrent.futures
import dataclasses

import pytest

from rlvr_jax.rewards import math as math_lib

GSM8K_REF = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
B = "\\boxed"
DEEP_BRACES = "{" * 200 + "1" + "}" * 200
DEEP_FRACS = "\\frac{" * 60 + "1" + "}{2}" * 60
MATRIX = "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"

# (id, completion, reference, expected status)
CASES = [
    # --- Equivalent forms ---
    ("decimal_for_frac", f"{B}{{0.5}}", "\\frac{1}{2}", "correct"),  # 0.5 is exactly 1/2
    ("frac_for_decimal", f"{B}{{\\frac{{1}}{{2}}}}", "0.5", "correct"),
    ("dfrac_short", f"{B}{{\\dfrac12}}", "1/2", "correct"),
    ("tfrac", f"{B}{{\\tfrac{{3}}{{4}}}}", "0.75", "correct"),
    ("sqrt_forms", f"{B}{{2\\sqrt{{2}}}}", "\\sqrt{8}", "correct"),
    ("int_as_float", f"{B}{{3.0}}", "3", "correct"),
    ("unicode_minus", f"{B}{{\u22125}}", "-5", "correct"),
    ("negative_frac", f"{B}{{-\\frac{{3}}{{4}}}}", "-0.75", "correct"),
    ("set_order", f"{B}{{\\{{2, 1\\}}}}", "\\{1,2\\}", "correct"),
    ("assignment", f"{B}{{x = 3}}", "3", "correct"),
    ("choice_text", f"{B}{{\\text{{(B)}}}}", "B", "correct"),
    ("choice_paren", f"{B}{{(B)}}", "\\text{(B)}", "correct"),
    ("thousands_comma", f"{B}{{1,000}}", "1000", "correct"),
    ("thousands_brace", f"{B}{{1{{,}}000}}", "1000", "correct"),
    ("thousands_thin_space", f"{B}{{1\\,000}}", "1000", "correct"),
    ("million_commas", f"{B}{{1,000,000}}", "1000000", "correct"),
    ("pi_frac", f"{B}{{\\frac{{\\pi}}{{2}}}}", "\\pi/2", "correct"),
    ("polynomial", f"{B}{{x^2+2x+1}}", "(x+1)^2", "correct"),
    ("interval", f"{B}{{(1, 2]}}", "(1,2]", "correct"),
    ("tuple", f"{B}{{(1, -2)}}", "(1,-2)", "correct"),
    ("text_answer", f"{B}{{\\text{{Monday}}}}", "\\text{Monday}", "correct"),
    ("infinity", f"{B}{{\\infty}}", "\\infty", "correct"),
    ("big_power", f"{B}{{2^{{100}}}}", "1267650600228229401496703205376", "correct"),
    ("inline_math", "Thus $\\boxed{\\frac34}$.", "0.75", "correct"),
    ("fbox", "\\fbox{9}", "9", "correct"),
    ("nested_box", f"{B}{{{B}{{7}}}}", "7", "correct"),
    ("same_box_twice", f"First {B}{{12}}, so again {B}{{12}}.", "12", "correct"),
    ("equivalent_boxes", f"{B}{{0.5}} that is {B}{{\\frac12}}", "1/2", "correct"),
    ("gsm8k_hash", "24 + 48 = 72\n#### 72", GSM8K_REF, "correct"),
    ("answer_line", "Work...\nAnswer: 7", "7", "correct"),
    ("answer_sentence", "So the answer is $\\frac{1}{2}$. Done.", "0.5", "correct"),
    ("markdown_bold", "**Final Answer:** **42**.", "42", "correct"),
    ("boxed_reference", f"{B}{{5}}", "Hence the total is $\\boxed{5}$.", "correct"),
    ("dollar_sign", f"{B}{{\\$18}}", "18", "correct"),  # a currency sign never rescales
    ("unit_word", f"{B}{{18 \\text{{ dollars}}}}", "18", "correct"),
    ("percent_both", f"{B}{{50\\%}}", "50\\%", "correct"),
    ("bare_for_percent_ref", f"{B}{{50}}", "50\\%", "correct"),
    ("decimal_ref_tolerance", f"{B}{{\\frac13}}", "0.3333333", "correct"),  # rel. 1e-6
    ("unclosed_then_valid", f"{B}{{3}} and {B}{{4", "3", "correct"),
    # --- Near misses ---
    ("close_decimal", f"{B}{{3.01}}", "3", "wrong"),
    ("other_fraction", f"{B}{{1/3}}", "1/2", "wrong"),
    ("extra_zero", f"{B}{{100}}", "10", "wrong"),
    ("big_near_miss", f"{B}{{1,000,050}}", "1,000,000", "wrong"),  # no relative tolerance
    ("rounded_exact", f"{B}{{0.333333}}", "\\frac{1}{3}", "wrong"),  # exact reference
    ("tiny_values", f"{B}{{10^{{-30}}}}", "2\\times 10^{-30}", "wrong"),  # not rounded to 0
    ("tiny_sets", f"{B}{{\\{{10^{{-30}}\\}}}}", "\\{2\\times 10^{-30}\\}", "wrong"),
    ("decimal_ref_miss", f"{B}{{\\sqrt{{2}}}}", "1.414", "wrong"),
    ("sign", f"{B}{{-5}}", "5", "wrong"),
    ("superset", f"{B}{{\\{{1, 2, 3\\}}}}", "\\{1,2\\}", "wrong"),
    ("other_choice", f"{B}{{(B)}}", "C", "wrong"),
    ("other_polynomial", f"{B}{{x+1}}", "x-1", "wrong"),
    ("plus_minus", f"{B}{{\\pm 2}}", "2", "wrong"),
    ("division_by_zero", f"{B}{{1/0}}", "3", "wrong"),
    ("percent_for_bare", f"{B}{{50\\%}}", "50", "wrong"),  # no percent leniency
    ("fraction_for_percent", f"{B}{{0.5}}", "50\\%", "wrong"),
    ("percent_for_fraction", f"{B}{{50\\%}}", "0.5", "wrong"),
    ("scale_word", f"{B}{{1 \\text{{ thousand}}}}", "1000", "wrong"),
    ("scale_word_kept_number", f"{B}{{1000 \\text{{ thousand}}}}", "1000", "wrong"),
    ("million", "The answer is 5 million.", "5", "wrong"),
    ("prose_not_anchor", "Answer: 3\nActually, the answer is 4.", "3", "wrong"),  # last one
    # --- Hedging ---
    ("two_boxes", f"{B}{{3}} or maybe {B}{{4}}", "3", "hedged"),
    ("two_wrong_boxes", f"{B}{{5}} ... {B}{{6}}", "3", "hedged"),
    ("or_in_box", f"{B}{{3 \\text{{ or }} 4}}", "3", "hedged"),
    ("or_plain", f"{B}{{3 or 4}}", "3", "hedged"),
    ("or_sentence", "The answer is 3 or 4.", "3", "hedged"),
    ("many_boxes", "".join(f"{B}{{{i}}}" for i in range(20)), "19", "hedged"),
    ("two_hashes", "#### 3\n#### 4", "3", "hedged"),
    # --- Malformed, no answer ---
    ("unbalanced_box", f"so {B}{{3", "3", "no_answer"),
    ("empty_box", f"{B}{{}}", "3", "no_answer"),
    ("blank_box", f"{B}{{  }}", "3", "no_answer"),
    ("dollars_only_box", f"{B}{{$$}}", "3", "no_answer"),
    ("no_anchor", "I think it is 42", "42", "no_answer"),
    ("empty_completion", "", "42", "no_answer"),
    ("unbalanced_answer_line", "Answer: \\frac{1}{2", "1/2", "no_answer"),
    ("bad_reference_empty", f"{B}{{3}}", "", "verifier_error"),
    ("bad_reference_unbalanced", f"{B}{{3}}", "\\frac{1}{", "verifier_error"),
    # --- Oversized ---
    ("ten_megabytes", "x" * 10_000_000 + f"{B}{{3}}", "3", "too_long"),
    ("long_answer", f"{B}{{{'1+' * 600}1}}", "1201", "too_long"),
    # --- Compute bombs: rejected before SymPy ---
    ("tower", f"{B}{{9^{{9^{{9^9}}}}}}", "3", "wrong"),
    ("tower_python", f"{B}{{9**9**9**9}}", "3", "wrong"),
    ("exponent_of_power", f"{B}{{2^{{10^{{100}}}}}}", "3", "wrong"),
    ("factorial", f"{B}{{10000!}}", "3", "wrong"),
    ("double_factorial", f"{B}{{100000!!}}", "3", "wrong"),
    ("deep_braces", f"{B}{{{DEEP_BRACES}}}", "1", "wrong"),
    ("deep_fracs", f"{B}{{{DEEP_FRACS}}}", "1", "wrong"),
    ("huge_literal", f"{B}{{{'9' * 5000}}}", "3", "too_long"),
    ("huge_power", f"{B}{{\\lfloor 10^{{9999}} \\pi \\rfloor}}", "3", "wrong"),
    ("power_of_power", f"{B}{{(10^{{200}})^{{1000}}}}", "3", "wrong"),
    ("symbolic_expansion", f"{B}{{(x+y+1)^{{100}}}}", "x^2", "wrong"),
    ("gamma", f"{B}{{\\Gamma(10^{{6}})}}", "3", "wrong"),
    ("binomial", f"{B}{{\\binom{{1000000}}{{500000}}}}", "3", "wrong"),
    ("big_sum", f"{B}{{\\sum_{{k=1}}^{{9999}} k^{{k}}}}", "3", "wrong"),
    ("arrows", f"{B}{{3\\uparrow\\uparrow 3}}", "3", "wrong"),
    # --- Stray symbols: math-verify's plain-expression fallback reads "? 5" as 5 ---
    ("stray_question_before", f"{B}{{? 5}}", "5", "wrong"),
    ("stray_snowman_before", f"{B}{{\u2603 5}}", "5", "wrong"),
    ("stray_snowman_after", f"{B}{{5 \u2603}}", "5", "wrong"),
    ("stray_question_after", f"{B}{{5?}}", "5", "wrong"),
    ("stray_star", f"{B}{{\u2605 5}}", "5", "wrong"),
    ("stray_emoji", f"{B}{{\U0001f600 5}}", "5", "wrong"),
    ("stray_check_mark", f"{B}{{\u2713 5}}", "5", "wrong"),
    ("stray_at", f"{B}{{@ 5}}", "5", "wrong"),
    ("stray_hash", f"{B}{{# 5}}", "5", "wrong"),
    ("stray_double_quote", f'{B}{{" 5}}', "5", "wrong"),
    ("stray_backtick", f"{B}{{` 5}}", "5", "wrong"),
    ("stray_curly_quote", f"{B}{{\u2018 5}}", "5", "wrong"),
    ("stray_inverted_question", f"{B}{{\u00bf 5}}", "5", "wrong"),
    ("stray_in_text", f"{B}{{5 \\text{{?}}}}", "5", "wrong"),
    ("dangling_bang", f"{B}{{! 5}}", "5", "wrong"),
    ("dangling_semicolon", f"{B}{{; 5}}", "5", "wrong"),
    ("dangling_ampersand", f"{B}{{& 5}}", "5", "wrong"),
    ("dangling_colon", f"{B}{{: 5}}", "5", "wrong"),
    ("stray_answer_line", "The answer is ? 5", "5", "wrong"),
    ("stray_hash_line", "#### \u2603 5", "5", "wrong"),
    ("stray_box_is_a_hedge", f"{B}{{5}} so {B}{{? 5}}", "5", "hedged"),
    ("factorial_is_not_five", f"{B}{{5!}}", "5", "wrong"),  # 5! = 120
    # --- Legitimate symbols stay accepted ---
    ("unicode_times", f"{B}{{2\u00d72.5}}", "5", "correct"),
    ("unicode_divide", f"{B}{{10\u00f72}}", "5", "correct"),
    ("unicode_pi", f"{B}{{\u03c0/2}}", "\\frac{\\pi}{2}", "correct"),
    ("unicode_union", f"{B}{{[1,2]\u222a(3,\u221e)}}", "[1,2]\\cup(3,\\infty)", "correct"),
    ("unicode_le", f"{B}{{x \u2264 5}}", "x \\le 5", "correct"),
    ("unicode_degree", f"{B}{{40\u00b0}}", "40\u00b0", "correct"),
    ("greek_letter", f"{B}{{2\u03b1}}", "2\\alpha", "correct"),
    ("accented_text", f"{B}{{\\text{{Z\u00fcrich}}}}", "\\text{Z\u00fcrich}", "correct"),
    ("umlaut_escape", f'{B}{{\\text{{G\\"odel}}}}', '\\text{G\\"odel}', "correct"),
    ("fullwidth_digit", f"{B}{{\uff15}}", "5", "correct"),
    ("nbsp_thousands", f"{B}{{1\u00a0000}}", "1000", "correct"),
    ("latex_spacing", f"{B}{{\\;5\\,}}", "5", "correct"),
    ("tilde_spacing", f"{B}{{~ 5}}", "5", "correct"),
    ("spacing_then_factorial", f"{B}{{\\!5!}}", "120", "correct"),
    ("aligned_ampersand", f"{B}{{x &= 5}}", "5", "correct"),
    ("matrix_ampersand", f"{B}{{{MATRIX}}}", MATRIX, "correct"),
    ("semicolon_list", f"{B}{{(1,2); (3,4)}}", "(1,2); (3,4)", "correct"),
    ("ratio_colon", f"{B}{{3:4}}", "3:4", "correct"),
    ("absolute_value", f"{B}{{|-5|}}", "5", "correct"),
]


@pytest.mark.parametrize(
    ("completion", "reference", "status"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_score_math_table(completion, reference, status):
    verdict = math_lib.score_math(completion, reference)
    assert verdict.status == status, verdict
    assert verdict.correct == (status == "correct")
    assert verdict.reward == (1.0 if status == "correct" else 0.0)
    assert verdict.status in math_lib.STATUSES


def test_table_size_and_unique_ids():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GSM8K_REF, "72"),
        ("... so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        (
            "\\boxed{1} then \\boxed{\\{1, \\{2\\}\\}}",
            "\\{1, \\{2\\}\\}",
        ),  # last box, nested braces
        ("The final answer is 5. Then more prose.", "5"),
        ("Answer:\n 12", "12"),
        ("no marked answer 42", None),
        ("\\boxed{3", None),
        ("\\boxed{? 5}", None),  # a stray symbol: no answer to vote for
        ("\\boxed{\u2603 5}", None),
        ("The answer is 5 \u2603", None),
        ("\\boxed{2\u00d72.5}", "2\u00d72.5"),
        ("\\boxed{\\;5\\,}", "\\;5\\,"),
    ],
    ids=[
        "gsm8k",
        "boxed_frac",
        "last_nested",
        "phrase",
        "answer_newline",
        "none",
        "unclosed",
        "stray_question",
        "stray_snowman",
        "stray_phrase",
        "unicode_times",
        "latex_spacing",
    ],
)
def test_extract_answer(text, expected):
    assert math_lib.extract_answer(text) == expected


@pytest.mark.parametrize(
    ("completion", "reward"),
    [
        ("\\boxed{3}", 1.1),  # correct + format
        ("\\boxed{4}", 0.1),  # wrong, but boxed
        ("\\boxed{3} \\boxed{4}", 0.0),  # a hedge earns nothing
        ("#### 3", 1.0),  # correct, not boxed
        ("nothing", 0.0),
    ],
    ids=["correct_boxed", "wrong_boxed", "hedged", "correct_unboxed", "no_answer"],
)
def test_format_reward(completion, reward):
    verdict = math_lib.score_math(completion, "3", format_reward=0.1)
    assert verdict.reward == pytest.approx(reward)


def test_max_chars_is_a_parameter():
    assert math_lib.score_math("\\boxed{3}" + " " * 100, "3", max_chars=50).status == "too_long"
    assert math_lib.score_math("\\boxed{3}" + " " * 100, "3", max_chars=200).status == "correct"


def test_verdict_is_frozen():
    verdict = math_lib.score_math("\\boxed{3}", "3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.reward = 2.0  # type: ignore[misc]  # the point of the test


def test_threads_score_without_signal_timeouts():
    # math-verify's SIGALRM timeout only works in the main thread; ours is switched off there.
    items = [("\\boxed{2\\sqrt{2}}", "\\sqrt{8}"), ("\\boxed{x^2+2x+1}", "(x+1)^2")] * 4
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        verdicts = list(ex.map(math_lib.score_math_item, items))
    assert [v.status for v in verdicts] == ["correct"] * len(items)


def test_pool_failure_verdicts():
    assert math_lib.timeout_verdict(("a", "b")).status == "timeout"
    error = math_lib.error_verdict(("a", "b"), "worker died: killed by SIGSEGV")
    assert (error.status, error.reward, error.correct) == ("verifier_error", 0.0, False)
