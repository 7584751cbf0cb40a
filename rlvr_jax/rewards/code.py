"""Code reward: extract a program from a completion, run it on a task's tests in the sandbox, and
decide every verdict in this (the parent) process.

- Extraction: the last ```python (or ```py, ```python3) block; else the whole completion if it
  parses as Python; else `no_code`.
- Stdin/stdout tests: one sandboxed run per test; it passes iff the run exits 0 within the
  timeout and its stdout equals the expected output after dropping trailing whitespace on each
  line and trailing blank lines ("\\r\\n" counts as "\\n").
- Function-call tests: one sandboxed run of a fixed harness per task. It reads the calls and a
  random per-run nonce from stdin, execs the program as module `solution`, sends the program's
  own stdout to /dev/null, and writes one `<nonce> <test index> <json>` line per call to a private
  descriptor. The value is encoded with exact builtin types only (a subclass, or any other
  object, is an error), so an always-equal object cannot pass; exiting early leaves results
  missing, which fails; two lines for one test fail it. The program shares the harness's
  interpreter, so it can learn the nonce and write a line itself, but it can only claim a value
  it could have returned: expected values never enter the sandbox.
- Comparison rule (decoded JSON, in the parent): bool only equals bool (True != 1), None only
  None, str only str, list != tuple; int and float compare by value (1 == 1.0, as Python's
  asserts do); NaN equals NaN; sets compare as sets (set == frozenset), dicts by keys and
  values. A test with a tolerance compares numbers with math.isclose(rel_tol, abs_tol).
- Verdict status: ok | wrong | timeout (the wall clock, or SIGXCPU from the CPU limit) |
  runtime_error | no_code | verifier_error (a sandbox that could not be set up, or a verifier
  exception: logged and counted apart, never a silent 0 or 1). `SandboxUnavailable` propagates.
"""

import ast
import concurrent.futures
import dataclasses
import inspect
import json
import logging
import math
import re
import secrets
import signal
from collections.abc import Sequence

from rlvr_jax.rewards import code_types
from rlvr_jax.rewards import sandbox as sandbox_lib

STATUSES = ("ok", "wrong", "timeout", "runtime_error", "no_code", "verifier_error")
REWARD_MODES = ("all_pass", "fraction")
SOLUTION_FILE = "solution.py"  # beside the harness, which is the run's main program

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CodeConfig:
    """How completions are scored; `sandbox` limits each run (one per stdio test, one per task's
    call tests)."""

    reward_mode: str = "all_pass"  # all_pass: 1.0 iff every test passes; fraction: share passed
    max_workers: int = 4  # programs run at once by score_many (threads, each one subprocess)
    sandbox: sandbox_lib.SandboxConfig = sandbox_lib.SandboxConfig()
    max_chars: int = 100_000  # a longer completion is no_code, before any regex runs
    feedback_chars: int = 1_000  # each of input / expected / got in the feedback

    def __post_init__(self):
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}: {self.reward_mode!r}")
        if self.max_workers < 1 or self.max_chars < 1 or self.feedback_chars < 20:
            raise ValueError(f"max_workers, max_chars, feedback_chars too small: {self}")


@dataclasses.dataclass(frozen=True)
class CodeVerdict:
    """One scored completion; `feedback` describes the first failing test (for DistIL). In
    all_pass mode the tests after the first failure are not run: `passed` counts those before."""

    reward: float
    passed: int
    total: int
    status: str
    feedback: str

    @property
    def correct(self) -> bool:
        """Every test passed (in fraction mode too)."""
        return self.status == "ok"

    @property
    def verifier_error(self) -> bool:
        """The verifier failed; a program's own timeout or crash is its fault, not this."""
        return self.status == "verifier_error"


# --- Extraction ---

_FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\r?\n(.*?)```", re.S | re.I)


def extract_program(completion: str, max_chars: int = 100_000) -> str | None:
    """The last ```python block's code, else the whole text if it parses, else None."""
    if len(completion) > max_chars:
        return None
    blocks = _FENCE_RE.findall(completion)
    if blocks:
        return blocks[-1] if blocks[-1].strip() else None
    if not completion.strip():
        return None
    try:
        ast.parse(completion)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    return completion


# --- Typed JSON: these two functions are also pasted into the harness, so they use builtins only


def _encode(value, depth=0):
    """A value of exact builtin types -> a JSON tree keeping tuple/set/dict-key/float types."""
    if depth > 200:
        raise ValueError("value nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is int:
        return value
    if kind is float:
        return value if value - value == 0 else {"float": repr(value)}  # nan and inf by name
    if kind is list:
        return [_encode(v, depth + 1) for v in value]
    if kind is tuple or kind is set or kind is frozenset:
        return {kind.__name__: [_encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"dict": [[_encode(k, depth + 1), _encode(v, depth + 1)] for k, v in value.items()]}
    if kind is bytes:
        return {"bytes": value.hex()}
    raise TypeError(f"unsupported value type {kind.__name__} (only exact builtin types)")


def _decode(tree):
    """The inverse of _encode; raises ValueError on a tree it did not make."""
    if tree is None or type(tree) in (bool, str, int, float):
        return tree
    if type(tree) is list:
        return [_decode(v) for v in tree]
    if type(tree) is dict and len(tree) == 1:
        (tag, body), = tree.items()  # fmt: skip
        if tag == "float" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag == "bytes" and type(body) is str:
            return bytes.fromhex(body)
        if type(body) is list:
            if tag == "tuple":
                return tuple(_decode(v) for v in body)
            if tag == "set":
                return {_decode(v) for v in body}
            if tag == "frozenset":
                return frozenset(_decode(v) for v in body)
            if tag == "dict" and all(type(p) is list and len(p) == 2 for p in body):
                return {_decode(k): _decode(v) for k, v in body}
    raise ValueError(f"not an encoded value: {str(tree)[:80]}")


_HARNESS_MAIN = r"""
import json
import os
import sys


def _describe(e):
    try:
        return (type(e).__name__ + ": " + str(e))[:500]
    except BaseException:  # a hostile __str__
        return "exception"


def _main():
    spec = json.loads(sys.stdin.read())
    nonce, calls = spec["nonce"], spec["calls"]
    out = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the program's own output goes nowhere; results go to `out`
    dumps, write = json.dumps, os.write

    def emit(tag, text):
        write(out, (nonce + " " + tag + " " + text + "\n").encode())

    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        with open("solution.py", encoding="utf-8") as f:
            code = compile(f.read(), "solution.py", "exec")
        exec(code, namespace)
    except BaseException as e:
        emit("import", dumps({"error": _describe(e)}))
        return
    for i, (fn, args) in enumerate(calls):
        try:
            if fn not in namespace:
                raise NameError("the program defines no function " + repr(fn))
            text = dumps({"value": _encode(namespace[fn](*_decode(args)))})
        except BaseException as e:
            text = dumps({"error": _describe(e)})
        emit(str(i), text)


_main()
"""
HARNESS = inspect.getsource(_encode) + "\n\n" + inspect.getsource(_decode) + _HARNESS_MAIN


# --- Comparison ---


def _canon(tree):
    """A hashable, type-tagged form of a decoded JSON tree: equal forms are equal values."""
    if tree is None:
        return ("none",)
    if type(tree) is bool:
        return ("bool", tree)
    if type(tree) is int:
        return ("num", tree)
    if type(tree) is float:
        if tree != tree:
            return ("nan",)
        return ("num", int(tree)) if tree.is_integer() else ("num", tree)
    if type(tree) is str:
        return ("str", tree)
    if type(tree) is list:
        return ("list", tuple(_canon(v) for v in tree))
    if type(tree) is dict and len(tree) == 1:
        (tag, body), = tree.items()  # fmt: skip
        if tag == "float" and body in ("nan", "inf", "-inf"):
            return _canon(float(body))
        if tag == "bytes" and type(body) is str:
            return ("bytes", body.lower())
        if type(body) is list:
            if tag == "tuple":
                return ("tuple", tuple(_canon(v) for v in body))
            if tag in ("set", "frozenset"):
                return ("set", frozenset(_canon(v) for v in body))
            if tag == "dict" and all(type(p) is list and len(p) == 2 for p in body):
                return ("dict", frozenset((_canon(k), _canon(v)) for k, v in body))
    raise ValueError(f"not an encoded value: {str(tree)[:80]}")


def _close(want, got, rel_tol: float, abs_tol: float) -> bool:
    """Canonical forms equal, numbers (also inside lists and tuples) within the tolerance."""
    if want[0] == "num" and got[0] == "num":
        return math.isclose(want[1], got[1], rel_tol=rel_tol, abs_tol=abs_tol)
    if want[0] == got[0] and want[0] in ("list", "tuple") and len(want[1]) == len(got[1]):
        return all(_close(w, g, rel_tol, abs_tol) for w, g in zip(want[1], got[1], strict=True))
    return want == got


def values_equal(test: code_types.CallTest, got_tree) -> bool:
    """Whether a decoded result tree satisfies the test, under the comparison rule above."""
    want, got = _canon(_encode(test.expected)), _canon(got_tree)
    if test.rel_tol or test.abs_tol:
        return _close(want, got, test.rel_tol, test.abs_tol)
    return want == got


def normalize_output(text: str) -> str:
    """Trailing whitespace of each line and trailing blank lines dropped; CRLF as LF."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).rstrip("\n")


# --- Running tests ---


@dataclasses.dataclass(frozen=True)
class _Outcome:
    """One test's result: status in ok | wrong | timeout | runtime_error, and what it printed."""

    status: str
    got: str = ""
    detail: str = ""


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n // 2] + "\n...\n" + text[-n // 2 :]


def _show(value, n: int) -> str:
    try:
        return _clip(repr(value), n)
    except ValueError:  # an int past CPython's digit limit
        return "<a value too large to print>"


def _show_tree(tree, n: int) -> str:
    try:
        return _show(_decode(tree), n)
    except (ValueError, TypeError, RecursionError):
        return _clip(json.dumps(tree), n)


def _run_stdio(program: str, test: code_types.StdioTest, cfg: CodeConfig) -> _Outcome:
    sandbox = cfg.sandbox
    need = 2 * len(test.expected.encode()) + 1024  # room to see a wrong answer past the cap
    if need > sandbox.max_output_bytes:
        sandbox = dataclasses.replace(sandbox, max_output_bytes=need)
    run = sandbox_lib.run_program(program, test.stdin, sandbox)
    stderr = _clip(run.stderr, cfg.feedback_chars)
    if run.timed_out or run.exit_code == -signal.SIGXCPU:
        return _Outcome("timeout", run.stdout, f"no exit within {sandbox.timeout_s}s")
    if run.truncated:  # the cap closed the pipe, so a crash that follows is ours
        return _Outcome("wrong", run.stdout, f"output over {sandbox.max_output_bytes} bytes")
    if run.exit_code != 0:
        return _Outcome("runtime_error", run.stdout, f"exit code {run.exit_code}\n{stderr}")
    if normalize_output(run.stdout) != normalize_output(test.expected):
        return _Outcome("wrong", run.stdout)
    return _Outcome("ok", run.stdout)


def _run_calls(program: str, tests: list[code_types.CallTest], cfg: CodeConfig) -> list[_Outcome]:
    """Every call test of a task in one harness run; outcomes in order."""
    nonce = secrets.token_hex(16)
    calls = [[t.fn, _encode(list(t.args))] for t in tests]
    expected_bytes = sum(len(json.dumps(_encode(t.expected))) for t in tests)
    sandbox = cfg.sandbox
    need = 2 * expected_bytes + 200 * len(tests) + 4096
    if need > sandbox.max_output_bytes:
        sandbox = dataclasses.replace(sandbox, max_output_bytes=need)
    stdin = json.dumps({"nonce": nonce, "calls": calls})
    run = sandbox_lib.run_program(HARNESS, stdin, sandbox, files={SOLUTION_FILE: program})
    results: dict[int, str] = {}
    duplicated: set[int] = set()
    import_error = None
    for line in run.stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) != 3 or parts[0] != nonce:
            continue
        if parts[1] == "import":
            import_error = _error_text(parts[2])
        elif parts[1].isdigit() and int(parts[1]) < len(tests):
            i = int(parts[1])
            if i in results:
                duplicated.add(i)  # a hedge: only one result per test counts
            results[i] = parts[2]
    stderr = _clip(run.stderr, cfg.feedback_chars)
    outcomes = []
    for i, test in enumerate(tests):
        if i in duplicated:
            outcomes.append(_Outcome("wrong", "", "several results for one test"))
        elif i in results:
            outcomes.append(_judge_call(test, results[i], cfg))
        elif import_error is not None:
            outcomes.append(_Outcome("runtime_error", "", f"loading the program: {import_error}"))
        elif run.timed_out or run.exit_code == -signal.SIGXCPU:
            outcomes.append(_Outcome("timeout", "", f"no result within {sandbox.timeout_s}s"))
        elif run.truncated:
            outcomes.append(_Outcome("wrong", "", "output truncated"))
        else:
            why = f"the program ended (exit code {run.exit_code}) before this test's result"
            outcomes.append(_Outcome("runtime_error", "", f"{why}\n{stderr}".strip()))
    return outcomes


def _error_text(text: str) -> str:
    """The message of a harness `{"error": ...}` line (or the raw line if it is not one)."""
    try:
        payload = json.loads(text)
        return payload["error"] if type(payload["error"]) is str else text
    except (ValueError, KeyError, TypeError, RecursionError):
        return text


def _judge_call(test: code_types.CallTest, text: str, cfg: CodeConfig) -> _Outcome:
    try:
        payload = json.loads(text)
        if type(payload) is not dict or len(payload) != 1:
            raise ValueError("not a result object")
        if "error" in payload:
            error = payload["error"] if type(payload["error"]) is str else "error"
            return _Outcome("runtime_error", "", _clip(error, cfg.feedback_chars))
        tree = payload["value"]
        ok = values_equal(test, tree)
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        return _Outcome("wrong", "", f"malformed result: {type(e).__name__}")
    return _Outcome("ok" if ok else "wrong", _show_tree(tree, cfg.feedback_chars))


def _feedback(i: int, n: int, test, outcome: _Outcome, cfg: CodeConfig) -> str:
    k = cfg.feedback_chars
    reason = {"wrong": "wrong answer", "timeout": "time limit", "runtime_error": "runtime error"}
    if isinstance(test, code_types.CallTest):
        args = ", ".join(_show(a, k) for a in test.args)
        shown_input, expected = _clip(f"{test.fn}({args})", k), _show(test.expected, k)
        if test.rel_tol or test.abs_tol:
            expected += f" (rel_tol={test.rel_tol}, abs_tol={test.abs_tol})"
    else:
        shown_input, expected = _clip(test.stdin, k), _clip(test.expected, k)
    parts = [
        f"Test {i + 1} of {n} failed ({reason[outcome.status]}).",
        f"Input:\n{shown_input}",
        f"Expected:\n{expected}",
        f"Got:\n{_clip(outcome.got, k) if outcome.got else '(nothing)'}",
    ]
    if outcome.detail:
        parts.append(f"Details:\n{outcome.detail}")
    return "\n".join(parts)


def score_code(completion: str, task: code_types.CodeTask, cfg: CodeConfig) -> CodeVerdict:
    """Score one completion on one task (see the module docstring for every rule)."""
    total = len(task.tests)
    program = extract_program(completion, cfg.max_chars)
    if program is None:
        why = "No Python program found: put the whole program in one ```python block."
        return CodeVerdict(0.0, 0, total, "no_code", why)
    try:
        calls = [t for t in task.tests if isinstance(t, code_types.CallTest)]
        call_outcomes = iter(_run_calls(program, calls, cfg) if calls else [])
        passed, first_fail = 0, None
        for i, test in enumerate(task.tests):
            if isinstance(test, code_types.CallTest):
                outcome = next(call_outcomes)
            else:
                outcome = _run_stdio(program, test, cfg)
            if outcome.status == "ok":
                passed += 1
            elif first_fail is None:
                first_fail = (i, test, outcome)
                if cfg.reward_mode == "all_pass":
                    break  # the reward is 0 whatever the rest do
    except sandbox_lib.SandboxUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - counted as verifier_error, never a silent 0 or 1
        log.warning("code verifier: %s on %s: %s", type(e).__name__, task.uid, e)
        return CodeVerdict(0.0, 0, total, "verifier_error", f"{type(e).__name__}: {e}"[:500])
    if cfg.reward_mode == "all_pass":
        reward = float(passed == total)
    else:
        reward = passed / total
    if first_fail is None:
        return CodeVerdict(reward, passed, total, "ok", f"All {total} tests passed.")
    i, test, outcome = first_fail
    feedback = _feedback(i, total, test, outcome, cfg)
    return CodeVerdict(reward, passed, total, outcome.status, feedback)


def score_many(
    completions: Sequence[str], tasks: Sequence[code_types.CodeTask], cfg: CodeConfig
) -> list[CodeVerdict]:
    """score_code over pairs, `cfg.max_workers` at a time; each program is its own sandbox."""
    if len(completions) != len(tasks):
        raise ValueError(f"{len(completions)} completions for {len(tasks)} tasks")
    if not cfg.sandbox.allow_weak:
        sandbox_lib.probe_isolation()  # fail loudly here, before any thread starts
    with concurrent.futures.ThreadPoolExecutor(cfg.max_workers, "code-verifier") as pool:
        return list(pool.map(score_code, completions, tasks, [cfg] * len(tasks)))
