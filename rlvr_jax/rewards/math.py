"""Math final-answer reward: extract one final answer from a completion and compare it with the
reference through math-verify (LaTeX -> SymPy) under the stricter rules of docs/verifiers.md.

Rules, in order:
- Input: a completion over `max_chars` is `too_long` before any regex runs.
- Extraction: every non-empty balanced `\\boxed{}` / `\\fbox{}`; else every GSM8K `#### x` line;
  else the last `Answer: x` / `The (final) answer is x` phrase (prose says "the answer is not 5",
  so only the last phrase counts). No last-number fallback: an answer must be marked.
- Stray symbols: an answer holding a character no math answer uses (`? 5`, `☃ 5`, `"5"`, an
  emoji) or starting with a dangling `! & ; : ,` is `wrong`, and `extract_answer` gives None for
  it; math-verify would read the number next to the junk. Allowed: ASCII except ? @ " ` and bare
  #, LaTeX escapes (\\! \\; \\# \\"), letters and digits of any script, math and currency
  symbols, brackets, spaces and ° ℃ ℉ · … ′ ″ ‴. The reference is not checked (dataset text).
- One final answer: several distinct answers are `hedged` (reward 0) unless every one of them is
  correct (`\\boxed{0.5} ... \\boxed{\\frac12}`); an answer with "or" (or \\lor, \\vee) is `hedged`.
- Exact values compare exactly: a decimal prediction is read as the rational it spells (0.5 = 1/2,
  3.0 = 3, 0.333333 != 1/3). Only a decimal reference allows a relative tolerance (1e-6).
- No percent leniency: 50% is wrong for a reference 50 or 0.5; a reference 50% accepts 50 and 50%.
  No scale leniency: a scale word (thousand, million, ...) the reference lacks makes it wrong.
  Unit words and a currency sign are dropped (math-verify's normalisation); they never rescale.
- Bounds: answers over MAX_ANSWER_CHARS are `too_long`; exponent towers, huge literals, huge
  factorials and deep nesting are rejected by a cheap pre-scan before SymPy sees them.
- A bad reference (empty, out of bounds, unparsable) or any exception is `verifier_error`, never a
  silent 0 or 1. math-verify's SIGALRM timeout gives `timeout` in a main thread only; for a hard
  wall-clock limit run `score_math_item` in `pool.VerifierPool`.
"""

import dataclasses
import fractions
import re
import threading
import unicodedata

import math_verify
import math_verify.errors
import sympy

STATUSES = ("correct", "wrong", "no_answer", "hedged", "too_long", "verifier_error", "timeout")

MAX_CHARS = 100_000  # a completion longer than this is too_long (characters, not tokens)
MAX_ANSWER_CHARS = 1_000  # one extracted answer
MAX_CANDIDATES = 8  # distinct final answers looked at before calling it a hedge
MAX_DEPTH = 20  # bracket nesting in an answer (the LaTeX parser slows down sharply past this)
MAX_DIGITS = 200  # digits in one number literal
MAX_EXPONENT = 1_000  # largest literal exponent of a non-literal base ((-1)^{1000})
MAX_POWER_DIGITS = 4_000  # digits of a literal power (2^{2024}); CPython's str limit is 4300
MAX_SYMBOLIC_EXPONENT = 24  # literal exponent of a symbolic base: simplify() expands it
MAX_FACTORIAL = 500  # largest factorial operand
FLOAT_REL_TOL = 1e-6  # only when the reference is a decimal
EXACT_REL_TOL = 1e-40  # irrational exact values: equal to 40 digits, evaluated at 60
SYMPY_TIMEOUT_S = 5  # math-verify's own timeout, seconds (main thread only)


@dataclasses.dataclass(frozen=True)
class MathVerdict:
    """One scored completion; `detail` says why, for logs."""

    reward: float
    correct: bool
    extracted: str | None
    status: str
    detail: str = ""

    @property
    def verifier_error(self) -> bool:
        """The verifier failed (a bad reference, an exception, a killed worker): not a 0."""
        return self.status in ("verifier_error", "timeout")


class _BadReference(ValueError):
    """The reference answer is empty, out of bounds or unparsable: a data error."""


_BOX_RE = re.compile(r"\\(?:boxed|fbox)[ \t]*\{")
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.S)
_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_RE = re.compile(r"answer[ \t]*(?:is|:)[ \t]*:?[ \t]*\n?[ \t]*([^\n]*)", re.I)
_SENTENCE_END_RE = re.compile(r"\.\s")
_DELIMITER_RE = re.compile(r"\\?\$|\\[()\[\]]|\\displaystyle|\\textstyle|\\!")
_THOUSANDS_RE = re.compile(r"(?<=\d)(?:\{,\}|\\,|\\ |\\;|~)(?=\d{3}(?!\d))")
_GROUPED_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PERCENT_RE = re.compile(r"\\?%|(?<![a-z\\])per ?cent(?:age)?(?![a-z])", re.I)
_EMPTY_TEXT_RE = re.compile(r"\\(?:text|textrm|mathrm|mbox)\{\s*\}")
_SCALE_RE = re.compile(
    r"(?<![a-z\\])(hundred|thousand|million|billion|trillion|dozen|lakh|crore)s?(?![a-z])", re.I
)
_OR_RE = re.compile(r"(?<![a-z\\])or(?![a-z])|\\lor(?![a-z])|\\vee(?![a-z])", re.I)
_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)")
_FRACTION_RE = re.compile(r"([-+]?)(?:\\[dt]?frac\{([-+]?\d+)\}\{(\d+)\}|(\d+)/(\d+))")
_TOKEN_RE = re.compile(r"\\[a-zA-Z]+|\d+|.", re.S)
_LONG_NUMBER_RE = re.compile(r"\d{%d}" % (MAX_DIGITS + 1))  # noqa: UP031 - braces
_TAIL_TOKEN_RE = re.compile(r"(?:\d+|\\?[a-zA-Z]+|.)$", re.S)
_COMMAND_RE = re.compile(r"\\[a-zA-Z]+")
_LETTER_RE = re.compile(r"[a-zA-Z]")
_EXPANDING_RE = re.compile(r"\\(?:[dt]?binom|choose|Gamma|sum|prod|i*nt|lim)(?![a-zA-Z])")
_DECIMAL_RE = re.compile(r"(?<![\d.])(\d*)\.(\d+)(?![\d.])")
_UNICODE = str.maketrans(
    {"\u2212": "-", "\u00d7": r"\times ", "\u00f7": r"\div ", "\u00b7": r"\cdot ",
     "\u03c0": r"\pi ", "\u221e": r"\infty ", "\u00a0": " ", "\u2009": " ", "\u202f": " "}
)  # fmt: skip
_LATEX_ESCAPE_RE = re.compile(r"\\[ -~]")  # \! \; \# \" \\ ... (and a command's 1st letter)
_STRAY_ASCII = frozenset('?@"`#')  # no LaTeX meaning unescaped (# is a macro parameter)
_DANGLING = frozenset("!&;:,")  # an operator or separator with nothing before it
_MATH_UNICODE = frozenset("\u00b0\u2103\u2109\u00b7\u2026\u2032\u2033\u2034")  # ° ℃ ℉ · … ′ ″ ‴
_MATH_CATEGORIES = ("L", "M", "N", "Sm", "Sc", "Ps", "Pe", "Z")  # letters, digits, math, brackets
_EXTRACTION = (
    math_verify.LatexExtractionConfig(boxed_match_priority=0),
    math_verify.ExprExtractionConfig(),
)


# --- Extraction ---


def _match_braces(text: str) -> dict[int, int]:
    """Index of each balanced `{` -> index of its `}` (`\\{` is a literal brace); one pass."""
    stack, match = [], {}
    for m in _BRACE_TOKEN_RE.finditer(text):
        if m.group() == "{":
            stack.append(m.start())
        elif m.group() == "}" and stack:
            match[stack.pop()] = m.start()
    return match


def _boxes(text: str) -> list[str]:
    """Contents of the outermost balanced boxes, in order; an unclosed box is skipped."""
    out, end, match = [], -1, None
    for m in _BOX_RE.finditer(text):
        if m.start() < end:
            continue  # nested inside the previous box
        match = _match_braces(text) if match is None else match
        close = match.get(m.end() - 1)
        if close is not None:
            out.append(text[m.end() : close])
            end = close
    return out


def _balanced(s: str) -> bool:
    depth = 0
    for m in _BRACE_TOKEN_RE.finditer(s):
        depth += {"{": 1, "}": -1}.get(m.group(), 0)
        if depth < 0:
            return False
    return depth == 0


def _candidates(text: str) -> tuple[list[str], bool]:
    """(final-answer candidates from the highest-priority source, whether a box was found)."""
    boxes = [b for b in _boxes(text) if b.strip()]
    if boxes:
        return boxes, True
    hashes = [v for v in (m.group(1).strip() for m in _HASH_RE.finditer(text)) if v]
    if hashes:
        return [h for h in hashes if _balanced(h)], False
    last = None
    for m in _ANSWER_RE.finditer(text):
        last = m
    if last is None:
        return [], False
    value = _SENTENCE_END_RE.split(last.group(1), maxsplit=1)[0].strip()
    return ([value] if value and _balanced(value) else []), False


def extract_answer(text: str) -> str | None:
    """The final answer of a completion or a reference solution (`...#### 42` -> "42"), or None.

    The last box, else the last `####` line, else the last `Answer:` phrase; only the last
    MAX_CHARS characters are read. None too for an answer with a stray symbol (`? 5`): score_math
    scores it wrong against any reference, so it must not join a cluster vote.
    """
    candidates, _ = _candidates(text[-MAX_CHARS:])
    answer = candidates[-1].strip() if candidates else None
    return None if answer is None or _stray_symbol(_normalize(answer)) else answer


# --- Normalisation and pre-scan ---


def _normalize(answer: str) -> str:
    """Drop math delimiters, bold, a wrapping box, thousands separators and a final period."""
    s = _DELIMITER_RE.sub("", answer.translate(_UNICODE))
    s = _THOUSANDS_RE.sub("", s)
    for _ in range(2):  # markdown bold and a final period, in either order: **42**.
        s = s.strip().rstrip(".").strip().strip("*")
    s = s.strip()
    while (m := _BOX_RE.match(s)) and _match_braces(s).get(m.end() - 1) == len(s) - 1:
        s = s[m.end() : -1].strip()
    if _GROUPED_RE.fullmatch(s):
        s = s.replace(",", "")  # 1,000,050 -> 1000050 (a whole-answer number, not a set)
    return s


def _stray_symbol(s: str) -> str | None:
    """The first non-mathematical character of a normalised answer (`? 5` -> "?"), or None."""
    if s[:1] in _DANGLING:
        return s[0]
    for ch in _LATEX_ESCAPE_RE.sub("", s):
        if ch.isascii():
            if ch in _STRAY_ASCII:
                return ch
        elif ch not in _MATH_UNICODE and not unicodedata.category(ch).startswith(_MATH_CATEGORIES):
            return ch
    return None


def _split_percent(s: str) -> tuple[str, bool]:
    stripped = _EMPTY_TEXT_RE.sub("", _PERCENT_RE.sub("", s)).strip()
    return stripped, stripped != s.strip()


def _scale_words(s: str) -> set[str]:
    return {w.lower() for w in _SCALE_RE.findall(s)}


def _operand_after(s: str, i: int) -> str:
    """The operand starting at s[i]: a bracket group, a command with its brace groups, a token."""
    start = i
    while i < len(s) and s[i] in " -+":  # signs, iteratively: 2^{------1} must not recurse
        i += 1
    if i >= len(s):
        return s[start:]
    depth, j = 0, i
    if s[i] in "{([":
        for j in range(i, len(s)):
            depth += (s[j] in "{([") - (s[j] in "})]")
            if depth == 0:
                break
        return s[start : j + 1]
    m = _TOKEN_RE.match(s, i)
    if m.group().startswith("\\") and m.end() < len(s) and s[m.end()] == "{":
        return s[start : m.end()] + _operand_after(s, m.end())  # \frac{..}: its first group
    return s[start : m.end()]


def _operand_before(s: str, i: int) -> str:
    """The operand ending just before s[i]: a bracket group, a number, a word or one character."""
    s = s[:i].rstrip()
    if not s:
        return ""
    depth = 0
    if s[-1] in ")}]":
        for j in range(len(s) - 1, -1, -1):
            depth += (s[j] in ")}]") - (s[j] in "({[")
            if depth == 0:
                return s[j:]
        return s
    return _TAIL_TOKEN_RE.search(s).group()


def _prescan(s: str) -> str | None:
    """Why `s` is unsafe to hand to SymPy, or None: a cheap guard against compute bombs.

    SymPy evaluates numeric powers and factorials eagerly and expands symbolic powers in
    simplify(); a single bignum operation cannot be interrupted, so these are bounded up front.
    """
    if len(s) > MAX_ANSWER_CHARS:
        return f"answer longer than {MAX_ANSWER_CHARS} chars"
    depth = max_depth = 0
    for ch in s:
        depth = max(0, depth + (ch in "{([") - (ch in "})]"))
        max_depth = max(max_depth, depth)
    if max_depth > MAX_DEPTH:
        return f"nesting deeper than {MAX_DEPTH}"
    if _LONG_NUMBER_RE.search(s):
        return f"a number with more than {MAX_DIGITS} digits"
    if "\\uparrow" in s:
        return "arrow notation"  # math-verify reads 3\uparrow\uparrow 3 as 3
    if _EXPANDING_RE.search(s) and re.search(r"\^|!|\d{5}", s):
        return "a large sum, product, integral, binomial or Gamma"
    for m in re.finditer(r"\^|\*\*", s):
        base, exp = _operand_before(s, m.start()), _operand_after(s, m.end())
        if re.search(r"\^|\*\*|!", exp):
            return "exponent tower"
        e = max((int(d) for d in re.findall(r"\d+", exp)), default=0)
        if base.isdigit() and len(base) * e > MAX_POWER_DIGITS:
            return f"a power with more than {MAX_POWER_DIGITS} digits"
        if _LETTER_RE.search(_COMMAND_RE.sub("", base)) and e > MAX_SYMBOLIC_EXPONENT:
            return f"a symbolic power above {MAX_SYMBOLIC_EXPONENT}"
        if "^" in base and e > MAX_SYMBOLIC_EXPONENT:
            return "a large power of a power"
        if not base.isdigit() and e > MAX_EXPONENT:
            return f"an exponent above {MAX_EXPONENT}"
    for m in re.finditer(r"!(?!=)", s):
        operand = _operand_before(s, m.start())
        if operand.isdigit() and int(operand) > MAX_FACTORIAL:
            return f"a factorial above {MAX_FACTORIAL}"
        if not operand.isdigit() and re.search(r"\^|!|\d{4}", operand):
            return "a factorial of a large expression"
    return None


# --- Comparison ---


def _plain_number(s: str) -> fractions.Fraction | None:
    """An integer, decimal or integer fraction as an exact Fraction (no SymPy), else None."""
    t = s.replace(" ", "")
    if _NUMBER_RE.fullmatch(t):
        return fractions.Fraction(t)
    m = _FRACTION_RE.fullmatch(t)
    if m is None:
        return None
    num, den = (m.group(2), m.group(3)) if m.group(2) is not None else (m.group(4), m.group(5))
    if int(den) == 0:
        return None
    value = fractions.Fraction(int(num), int(den))
    return -value if m.group(1) == "-" else value


def _as_fraction(m: re.Match) -> str:
    """A decimal literal rewritten as the exact fraction it spells: 0.25 -> {\\frac{25}{100}}."""
    num, den = int(m.group(1) + m.group(2)), 10 ** len(m.group(2))
    return "{\\frac{" + str(num) + "}{" + str(den) + "}}"


def _soft_timeout() -> int | None:
    # math-verify's SIGALRM timeout raises outside the main thread, so it is off there.
    return SYMPY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _parse(s: str, timeout_s: int | None) -> list:
    return math_verify.parse(
        "\\boxed{" + s + "}",
        extraction_config=_EXTRACTION,
        parsing_timeout=timeout_s,
        raise_on_error=True,
    )


def _is_number(e) -> bool:
    return isinstance(e, sympy.Expr) and bool(e.is_number)


def _numbers_equal(g: sympy.Expr, p: sympy.Expr, decimal_gold: bool) -> bool:
    """Exact for rationals; 60-digit numerics for the rest (rel. 1e-40, or 1e-6 if decimal)."""
    g, p = g.doit(), p.doit()
    if g.is_Rational and p.is_Rational and (g == p or not decimal_gold):
        return bool(g == p)
    gv, pv = sympy.N(g, 60), sympy.N(p, 60)
    if not (gv.is_finite and pv.is_finite):
        return bool(g == p)  # oo, zoo, nan: structural equality only
    tol = FLOAT_REL_TOL if decimal_gold else EXACT_REL_TOL
    return bool(abs(gv - pv) <= tol * max(abs(gv), abs(pv)))


def _sympy_equal(gold_s: str, pred_s: str, decimal_gold: bool) -> bool:
    timeout_s = _soft_timeout()
    gold = _parse(gold_s, timeout_s)
    if not gold:
        raise _BadReference("math-verify extracts nothing from the reference")
    pred = _parse(pred_s, timeout_s)
    if not pred:
        return False
    g, p = gold[0], pred[0]
    if isinstance(p, sympy.Eq) and not isinstance(g, sympy.core.relational.Relational):
        p = p.rhs  # x = 3 -> 3
    if _is_number(g) and _is_number(p):
        return _numbers_equal(g, p, decimal_gold)
    if isinstance(g, sympy.FiniteSet) and isinstance(p, sympy.FiniteSet):
        if all(_is_number(x) for x in (*g.args, *p.args)):
            # Our numeric rule per element (math-verify would round tiny elements to zero).
            left = list(p.args)
            for x in g.args:
                hit = next((y for y in left if _numbers_equal(x, y, decimal_gold)), None)
                if hit is None:
                    return False
                left.remove(hit)
            return not left
    return math_verify.verify(gold, pred, timeout_seconds=timeout_s, raise_on_error=True)


def _judge_one(gold_s: str, pred_s: str) -> tuple[str, str]:
    """(status, detail) of one normalised prediction against the normalised reference."""
    if len(pred_s) > MAX_ANSWER_CHARS:
        return "too_long", f"answer longer than {MAX_ANSWER_CHARS} chars"
    if _OR_RE.search(pred_s) and not _OR_RE.search(gold_s):
        return "hedged", "'or' in the answer"
    if stray := _stray_symbol(pred_s):
        return "wrong", f"stray symbol {stray!r} in the answer"
    gold_s, gold_pct = _split_percent(gold_s)
    pred_s, pred_pct = _split_percent(pred_s)
    if pred_pct and not gold_pct:
        return "wrong", "percent answer, the reference has none"
    if extra := _scale_words(pred_s) - _scale_words(gold_s):
        return "wrong", f"scale word {sorted(extra)[0]!r} not in the reference"
    if why := _prescan(pred_s):
        return "wrong", f"rejected before SymPy: {why}"
    decimal_gold = bool(_DECIMAL_RE.search(gold_s))
    g, p = _plain_number(gold_s), _plain_number(pred_s)
    if g is not None and p is not None:
        equal = g == p or (decimal_gold and abs(g - p) <= FLOAT_REL_TOL * abs(g))
    else:
        if not decimal_gold:
            pred_s = _DECIMAL_RE.sub(_as_fraction, pred_s)
        equal = _sympy_equal(gold_s, pred_s, decimal_gold)
    return ("correct", "") if equal else ("wrong", "")


def _reference_answer(reference: str) -> str:
    if not isinstance(reference, str):
        raise _BadReference(f"reference is a {type(reference).__name__}, not a str")
    candidates, _ = _candidates(reference[-MAX_CHARS:])
    gold_s = _normalize(candidates[-1] if candidates else reference)
    if not gold_s:
        raise _BadReference("empty reference")
    if not _balanced(gold_s):
        raise _BadReference("unbalanced braces")
    if why := _prescan(_split_percent(gold_s)[0]):
        raise _BadReference(why)
    return gold_s


def _judge(gold_s: str, candidates: list[str]) -> tuple[str, str]:
    if any(len(c) > 2 * MAX_ANSWER_CHARS for c in candidates):  # before any normalisation
        return "too_long", f"an answer longer than {2 * MAX_ANSWER_CHARS} chars"
    answers = list(dict.fromkeys(a for a in map(_normalize, candidates) if a))
    if not answers:
        return "no_answer", "the marked answer is empty"
    if len(answers) > MAX_CANDIDATES:
        return "hedged", f"{len(answers)} different final answers"
    if len(answers) == 1:
        return _judge_one(gold_s, answers[0])
    for a in answers:
        if _judge_one(gold_s, a)[0] != "correct":
            return "hedged", f"{len(answers)} different final answers"
    return "correct", f"{len(answers)} equivalent final answers"


def _describe(e: BaseException) -> str:
    # Never str() an arbitrary exception: its args may hold a huge SymPy object.
    msg = e.args[0] if e.args and isinstance(e.args[0], str) else ""
    return f"{type(e).__name__}: {msg}"[:300]


def score_math(
    completion: str,
    reference: str,
    *,
    format_reward: float = 0.0,
    max_chars: int = MAX_CHARS,
) -> MathVerdict:
    """Score a completion against a reference answer (bare, boxed, or GSM8K `#### x`).

    reward = 1.0 if correct else 0.0, plus `format_reward` when the completion holds a non-empty
    balanced `\\boxed{}` and its status is "correct" or "wrong" (a hedge or an error earns 0).
    """
    if len(completion) > max_chars:
        return MathVerdict(0.0, False, None, "too_long", f"{len(completion)} > {max_chars} chars")
    extracted = None
    try:
        gold_s = _reference_answer(reference)
        candidates, has_box = _candidates(completion)
        if not candidates:
            return MathVerdict(0.0, False, None, "no_answer")
        extracted = candidates[-1].strip()[:MAX_ANSWER_CHARS]
        status, detail = _judge(gold_s, candidates)
    except _BadReference as e:
        return MathVerdict(0.0, False, extracted, "verifier_error", f"bad reference: {e}")
    except math_verify.errors.TimeoutException:
        return MathVerdict(0.0, False, extracted, "timeout", "math-verify timeout")
    except Exception as e:  # noqa: BLE001 - counted as verifier_error, never a silent 0 or 1
        return MathVerdict(0.0, False, extracted, "verifier_error", _describe(e))
    correct = status == "correct"
    bonus = format_reward if has_box and status in ("correct", "wrong") else 0.0
    return MathVerdict(float(correct) + bonus, correct, extracted, status, detail)


def score_math_item(item: tuple[str, str], **kwargs) -> MathVerdict:
    """`score_math(completion, reference, **kwargs)` as one picklable argument, for the pool."""
    completion, reference = item
    return score_math(completion, reference, **kwargs)


def timeout_verdict(item: object) -> MathVerdict:
    """The pool's `on_timeout`: the worker was killed at the hard wall-clock limit."""
    del item
    return MathVerdict(0.0, False, None, "timeout", "hard timeout: worker killed")


def error_verdict(item: object, message: str) -> MathVerdict:
    """The pool's `on_error`: the worker raised or died."""
    del item
    return MathVerdict(0.0, False, None, "verifier_error", message[-300:])
