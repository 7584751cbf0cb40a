"""Code tasks: loaders for MBPP-, HumanEval- and APPS-shaped jsonl files into `CodeTask`s (the
verifier's input types, rewards/code_types.py). The embedded task set (reference and known-wrong
solutions, for tests and smoke runs) lives in `code_tasks_embedded`.

Assert-style tests (MBPP `test_list`, HumanEval `check(candidate)`) become `CallTest`s: the call's
literal arguments and the literal it must equal, so the verifier compares values in the parent
and never runs an `==` inside the untrusted program. An assert of another shape is unsupported:
its row is skipped with a warning (or raises with `strict=True`). A malformed row always raises,
naming the file and its 1-based line. Host-side only: nothing here imports JAX.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

from rlvr_jax.rewards.code_types import CallTest, CodeTask, StdioTest

log = logging.getLogger(__name__)


class UnsupportedTest(ValueError):
    """An assert the verifier cannot turn into a literal call test."""


# --- Asserts -> call tests ---


_PLAIN = (type(None), bool, int, float, str, bytes, list, tuple, set, frozenset, dict)


def _plain(value: Any) -> bool:
    """Whether the verifier's typed JSON can carry `value` (exact builtin types only)."""
    if type(value) not in _PLAIN:
        return False
    if type(value) is dict:
        return all(_plain(k) and _plain(v) for k, v in value.items())
    if type(value) in (list, tuple, set, frozenset):
        return all(_plain(v) for v in value)
    return True


def _literal(node: ast.expr, what: str) -> Any:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
        raise UnsupportedTest(f"{what} is not a literal: {ast.unparse(node)[:80]}") from e
    if not _plain(value):
        raise UnsupportedTest(f"{what} has an unsupported type: {ast.unparse(node)[:80]}")
    return value


def _call(node: ast.expr, aliases: dict[str, str]) -> tuple[str, tuple] | None:
    """(function name, literal args) if `node` is `name(literal, ...)`, else None."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return None
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise UnsupportedTest(f"keyword or starred arguments: {ast.unparse(node)[:80]}")
    args = tuple(_literal(a, f"an argument of {node.func.id}()") for a in node.args)
    return aliases.get(node.func.id, node.func.id), args


def _isclose(node: ast.Call, aliases: dict[str, str]) -> CallTest | None:
    """`math.isclose(f(x), v[, rel_tol=, abs_tol=])`, either argument order."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name != "isclose" or len(node.args) != 2:
        return None
    tol = {k.arg: float(_literal(k.value, "a tolerance")) for k in node.keywords}
    if set(tol) - {"rel_tol", "abs_tol"}:
        raise UnsupportedTest(f"isclose keywords: {sorted(tol)}")
    for call_node, value_node in (node.args, node.args[::-1]):
        if call := _call(call_node, aliases):
            expected = _literal(value_node, "the expected value")
            return CallTest(*call, expected, tol.get("rel_tol", 1e-9), tol.get("abs_tol", 0.0))
    return None


def call_test_from_assert(stmt: ast.Assert, aliases: dict[str, str] | None = None) -> CallTest:
    """Turn one assert into a CallTest, or raise UnsupportedTest.

    Shapes: `f(..) == v` (either side), `f(..) is True/False/None`, `f(..)` (must return True),
    `not f(..)` (must return False), `math.isclose(f(..), v, ...)`, `abs(f(..) - v) < eps`
    (also `<=`). `aliases` renames callees, e.g. {"candidate": entry_point}.
    """
    aliases = aliases or {}
    test = stmt.test
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, op, right = test.left, test.ops[0], test.comparators[0]
        if isinstance(op, ast.Eq | ast.Is):
            for call_node, value_node in ((left, right), (right, left)):
                if call := _call(call_node, aliases):
                    expected = _literal(value_node, "the expected value")
                    if isinstance(op, ast.Is) and expected not in (True, False, None):
                        break
                    return CallTest(*call, expected)
        if (
            isinstance(op, ast.Lt | ast.LtE)
            and isinstance(left, ast.Call)
            and getattr(left.func, "id", "") == "abs"
            and len(left.args) == 1
            and isinstance(left.args[0], ast.BinOp)
            and isinstance(left.args[0].op, ast.Sub)
        ):
            diff = left.args[0]
            for call_node, value_node in ((diff.left, diff.right), (diff.right, diff.left)):
                if call := _call(call_node, aliases):
                    eps = float(_literal(right, "a tolerance"))
                    return CallTest(*call, _literal(value_node, "the expected value"), 0.0, eps)
    elif isinstance(test, ast.Call):
        if call := _call(test, aliases):
            return CallTest(*call, True)
        if found := _isclose(test, aliases):
            return found
    elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        if call := _call(test.operand, aliases):
            return CallTest(*call, False)
    raise UnsupportedTest(f"unsupported assert: {ast.unparse(stmt)[:120]}")


def _asserts(source: str, what: str) -> list[ast.Assert]:
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise UnsupportedTest(f"{what} does not parse: {e.msg}") from e
    return [s for s in tree.body if isinstance(s, ast.Assert)] if tree.body else []


def _check_asserts(test_source: str, entry_point: str) -> list[CallTest]:
    """HumanEval's `def check(candidate): assert ...` as call tests of `entry_point`."""
    try:
        tree = ast.parse(test_source)
    except SyntaxError as e:
        raise UnsupportedTest(f"test code does not parse: {e.msg}") from e
    checks = [s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == "check"]
    if len(checks) != 1 or len(checks[0].args.args) != 1:
        raise UnsupportedTest("no `def check(candidate)` in the test code")
    check = checks[0]
    aliases = {check.args.args[0].arg: entry_point}
    tests = []
    for stmt in check.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring
        if not isinstance(stmt, ast.Assert):
            raise UnsupportedTest(f"statement in check(): {ast.unparse(stmt)[:80]}")
        if isinstance(stmt.test, ast.Constant):
            continue  # `assert True, "..."`
        tests.append(call_test_from_assert(stmt, aliases))
    if not tests:
        raise UnsupportedTest("check() has no call asserts")
    return tests


# --- Files ---


def _rows(path: str) -> Iterator[tuple[int, dict]]:
    """(1-based line, object) for each non-blank line of a jsonl file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset file not found: {path}")
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}, line {line_no}: malformed JSON ({e})") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {line_no}: expected a JSON object")
            yield line_no, row


def _field(row: dict, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = row.get(name)
    if not isinstance(value, kind) or (isinstance(value, str | list) and not value):
        raise ValueError(f"{where}: missing, empty or mistyped field '{name}'")
    return value


def _load(path: str, source: str, convert, strict: bool) -> list[CodeTask]:
    tasks, skipped = [], []
    for line_no, row in _rows(path):
        where = f"{path}, line {line_no}"
        try:
            task = convert(row, where)
        except UnsupportedTest as e:
            if strict:
                raise ValueError(f"{where}: {e}") from e
            skipped.append(f"{where}: {e}")
            continue
        uid = row.get("task_id", row.get("problem_id"))
        uid = f"{source}/{uid}" if uid is not None else f"{os.path.basename(path)}:{line_no}"
        tasks.append(dataclasses.replace(task, uid=uid, source=source))
    if skipped:
        log.warning(
            "%s: skipped %d rows with unsupported tests: %s", path, len(skipped), skipped[0]
        )
    return tasks


def _mbpp_row(row: dict, where: str) -> CodeTask:
    text = _field(row, "text", str, where)
    code = _field(row, "code", str, where)
    test_list = _field(row, "test_list", list, where)
    if not all(isinstance(t, str) for t in test_list):
        raise ValueError(f"{where}: field 'test_list' must be a list of strings")
    if str(row.get("test_setup_code") or "").strip():
        raise UnsupportedTest("test_setup_code is not supported")
    tests = []
    for t in test_list:
        found = _asserts(t, "a test")
        if len(found) != 1:
            raise UnsupportedTest(f"not a single assert: {t[:80]}")
        tests.append(call_test_from_assert(found[0]))
    prompt = f"{text}\nYour code should pass these tests:\n\n" + "\n".join(test_list)
    return CodeTask("", prompt, tuple(tests), code)


def _humaneval_row(row: dict, where: str) -> CodeTask:
    prompt = _field(row, "prompt", str, where)
    entry_point = _field(row, "entry_point", str, where)
    test = _field(row, "test", str, where)
    solution = row.get("canonical_solution")
    if solution is not None and not isinstance(solution, str):
        raise ValueError(f"{where}: field 'canonical_solution' must be a string")
    tests = _check_asserts(test, entry_point)
    return CodeTask("", prompt, tuple(tests), prompt + solution if solution else None)


def _json_field(value: Any, where: str, field: str) -> Any:
    """`value`, parsed first when it is a JSON string (APPS stores fields either way)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as e:
        raise ValueError(f"{where}: field '{field}' is not JSON ({e})") from e


def _lines(value: Any, where: str, field: str) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = "\n".join(value)
    if not isinstance(value, str):
        raise ValueError(f"{where}: '{field}' entries must be strings or lists of strings")
    return value


def _apps_row(row: dict, where: str) -> CodeTask:
    question = _field(row, "question", str, where)
    io = row.get("input_output")
    if io in (None, ""):
        raise UnsupportedTest("no input_output tests")
    io = _json_field(io, where, "input_output")
    if not isinstance(io, dict):
        raise ValueError(f"{where}: field 'input_output' must be an object")
    if io.get("fn_name"):
        raise UnsupportedTest("call-based APPS problems (fn_name) are not supported")
    inputs, outputs = io.get("inputs"), io.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or not inputs:
        raise ValueError(f"{where}: 'input_output' needs non-empty lists 'inputs' and 'outputs'")
    if len(inputs) != len(outputs):
        raise ValueError(f"{where}: {len(inputs)} inputs but {len(outputs)} outputs")
    tests = tuple(
        StdioTest(_lines(i, where, "inputs"), _lines(o, where, "outputs"))
        for i, o in zip(inputs, outputs, strict=True)
    )
    solutions = _json_field(row.get("solutions") or [], where, "solutions")
    if not isinstance(solutions, list) or not all(isinstance(s, str) for s in solutions):
        raise ValueError(f"{where}: field 'solutions' must be a list of strings")
    prompt = f"{question}\nRead from standard input and write to standard output."
    return CodeTask("", prompt, tests, solutions[0] if solutions else None)


def load_mbpp(path: str, *, strict: bool = False) -> list[CodeTask]:
    """MBPP-shaped jsonl: `text`, `code`, `test_list` (one assert each), optional `task_id`."""
    return _load(path, "mbpp", _mbpp_row, strict)


def load_humaneval(path: str, *, strict: bool = False) -> list[CodeTask]:
    """HumanEval-shaped jsonl: `prompt`, `entry_point`, `test` (check(candidate)), solution."""
    return _load(path, "humaneval", _humaneval_row, strict)


def load_apps(path: str, *, strict: bool = False) -> list[CodeTask]:
    """APPS-shaped jsonl: `question`, `input_output` {inputs, outputs} for stdin, `solutions`."""
    return _load(path, "apps", _apps_row, strict)
