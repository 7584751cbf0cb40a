"""Code verifier tests: the embedded task set (every reference passes, every known-wrong solution
fails), both reward modes, feedback, extraction, the comparison rule, assert conversion, and the
MBPP / HumanEval / APPS loaders on small files (malformed rows name file:line)."""

import ast
import json
import math

import pytest

from rlvr_jax.data import code_tasks, code_tasks_embedded
from rlvr_jax.rewards import code as code_lib
from rlvr_jax.rewards import code_types, sandbox
from tests import fixtures

# Linux namespaces are probed, not assumed (see tests/fixtures.sandbox_mark).
pytestmark = fixtures.sandbox_mark()

CFG = code_lib.CodeConfig(max_workers=4, sandbox=sandbox.SandboxConfig(timeout_s=5.0))
TASKS = code_tasks_embedded.embedded_tasks()


def _fenced(program: str) -> str:
    return f"Here is my solution.\n```python\n{program}\n```\nDone."


@pytest.mark.parametrize("mode", code_lib.REWARD_MODES)
def test_embedded_references_pass_and_wrong_solutions_fail(mode):
    cfg = code_lib.CodeConfig(max_workers=4, reward_mode=mode, sandbox=CFG.sandbox)
    pairs = [(t.reference_solution, t, True) for t in TASKS]
    pairs += [(w, t, False) for t in TASKS for w in t.wrong_solutions]
    verdicts = code_lib.score_many([_fenced(p) for p, _, _ in pairs], [t for _, t, _ in pairs], cfg)
    for (_, task, good), v in zip(pairs, verdicts, strict=True):
        assert (v.status == "ok") == good, (task.uid, v)
        assert v.reward == (1.0 if good else v.passed / v.total if mode == "fraction" else 0.0)
        assert v.total == len(task.tests) and (v.passed == v.total) == good
    assert len(TASKS) >= 12 and all(t.wrong_solutions for t in TASKS)
    assert {type(t.tests[0]) for t in TASKS} == {code_types.StdioTest, code_types.CallTest}


def test_fraction_counts_passed_tests_and_all_pass_does_not():
    task = next(t for t in TASKS if t.uid == "embedded/max_of_list")
    wrong = _fenced(task.wrong_solutions[0])  # starts from 0: fails the two all-negative tests
    fraction = code_lib.score_code(wrong, task, code_lib.CodeConfig(reward_mode="fraction"))
    assert (fraction.reward, fraction.passed, fraction.status) == (0.5, 2, "wrong")
    all_pass = code_lib.score_code(wrong, task, CFG)
    assert (all_pass.reward, all_pass.passed, all_pass.status) == (0.0, 1, "wrong")


def test_feedback_names_the_first_failing_test():
    stdio = next(t for t in TASKS if t.uid == "embedded/sum_two")
    v = code_lib.score_code(_fenced(stdio.wrong_solutions[0]), stdio, CFG)
    assert v.feedback.startswith("Test 1 of 4 failed (wrong answer).")
    assert "Input:\n1 2" in v.feedback and "Expected:\n3" in v.feedback
    assert "Got:\n-1" in v.feedback
    call = next(t for t in TASKS if t.uid == "embedded/pair_sum")
    v = code_lib.score_code(_fenced(call.wrong_solutions[0]), call, CFG)
    assert "pair_sum([2, 7, 11, 15], 9)" in v.feedback
    assert "Expected:\n(0, 1)" in v.feedback and "Got:\n[0, 1]" in v.feedback
    crash = code_lib.score_code(_fenced("def pair_sum(n, t):\n    return 1 / 0"), call, CFG)
    assert crash.status == "runtime_error" and "ZeroDivisionError" in crash.feedback
    loop = code_lib.CodeConfig(sandbox=sandbox.SandboxConfig(timeout_s=1.0))
    slow = code_lib.score_code(_fenced("while True:\n    pass"), stdio, loop)
    assert slow.status == "timeout" and "Test 1 of 4 failed (time limit)" in slow.feedback
    ok = code_lib.score_code(_fenced(stdio.reference_solution), stdio, CFG)
    assert (ok.status, ok.feedback) == ("ok", "All 4 tests passed.")


def test_stdout_comparison_ignores_trailing_whitespace_only():
    task = code_types.CodeTask("t/ws", "", (code_types.StdioTest("", "a b\nc\n"),))
    for program, ok in [
        ("print('a b   ')\nprint('c')\nprint()\nprint()", True),
        ("import sys\nsys.stdout.write('a b\\r\\nc')", True),
        ("print('a  b')\nprint('c')", False),
        ("print('a b')\nprint()\nprint('c')", False),
        ("print(' a b')\nprint('c')", False),
    ]:
        assert (code_lib.score_code(_fenced(program), task, CFG).status == "ok") == ok, program
    assert code_lib.normalize_output("x \r\ny\t\n\n") == "x\ny"


def test_large_expected_output_raises_the_cap_for_that_run():
    big = "\n".join(str(i) for i in range(30_000)) + "\n"  # about 170 kB > the 64 kB default
    task = code_types.CodeTask("t/big", "", (code_types.StdioTest("", big),))
    v = code_lib.score_code(_fenced("for i in range(30000):\n    print(i)"), task, CFG)
    assert v.status == "ok"


@pytest.mark.parametrize(
    "completion, program",
    [
        ("```python\nprint(1)\n```\ntext\n```python\nprint(2)\n```", "print(2)\n"),
        ("```py\nx = 1\n```", "x = 1\n"),
        ("```Python3\r\ny = 2\r\n```", "y = 2\r\n"),
        ("def f():\n    return 1\n", "def f():\n    return 1\n"),
        ("```\nprint(1)\n```", None),  # no language tag, and the text is not Python
        ("I think the answer is to loop.", None),
        ("```python\nprint(1)\n", None),  # an unclosed block
        ("```python\n\n```", None),
        ("", None),
        ("x = 1\n" * 30_000, None),  # over max_chars
    ],
)
def test_extract_program(completion, program):
    assert code_lib.extract_program(completion) == program


def test_no_code_verdict():
    v = code_lib.score_code("The answer is 42.", TASKS[0], CFG)
    assert (v.status, v.reward, v.passed, v.total) == ("no_code", 0.0, 0, len(TASKS[0].tests))


def _eq(expected, result, **tol) -> bool:
    return code_lib.values_equal(code_types.CallTest("f", (), expected, **tol), result)


@pytest.mark.parametrize(
    "expected, result, equal",
    [
        (True, True, True), (True, 1, False), (1, True, False), (0, False, False),
        (1, 1.0, True), (2.0, 2, True), (2.5, 2, False), (None, None, True), (None, 0, False),
        ((1, 2), {"tuple": [1, 2]}, True), ((1, 2), [1, 2], False), ([1, 2], [1, 2], True),
        ({1, 2}, {"set": [2, 1]}, True), ({1, 2}, {"frozenset": [1, 2]}, True),
        ({1, 2}, [1, 2], False), ({True}, {"set": [1]}, False),
        ({"a": 1}, {"dict": [["a", 1]]}, True), ({1: "a"}, {"dict": [["1", "a"]]}, False),
        ({"a": 1}, {"dict": [["a", 1], ["a", 2]]}, False), ("1", 1, False),
        (b"\x00", {"bytes": "00"}, True), (float("nan"), {"float": "nan"}, True),
        (float("inf"), {"float": "inf"}, True), (10**20, 1e20, True), (1.0, "1.0", False),
        ([1, [True]], [1, [1]], False),
    ],
)  # fmt: skip
def test_comparison_rule(expected, result, equal):
    assert _eq(expected, result) == equal


def test_tolerance_applies_to_numbers_only():
    assert _eq(1 / 3, 0.3333333333, rel_tol=1e-9)
    assert not _eq(1 / 3, 0.3333, rel_tol=1e-9)
    assert _eq([0.1, (0.2,)], [0.1000000001, {"tuple": [0.2]}], rel_tol=1e-6)
    assert not _eq(1.0, True, abs_tol=1.0)
    assert _eq(2.0, 2.05, abs_tol=0.1)


def test_malformed_result_trees_are_not_equal_and_do_not_raise():
    for tree in ({"tuple": 5}, {"what": []}, {"a": 1, "b": 2}, {"dict": [[1]]}):
        with pytest.raises(ValueError):
            code_lib._canon(tree)
        verdict = code_lib._judge_call(code_types.CallTest("f", (), 1), json.dumps(tree), CFG)
        assert verdict.status == "wrong"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("assert f(1, 'a') == [1]", ("f", (1, "a"), [1], 0.0, 0.0)),
        ("assert (2, 3) == g((1,), {2})", ("g", ((1,), {2}), (2, 3), 0.0, 0.0)),
        ("assert h(-1) is None", ("h", (-1,), None, 0.0, 0.0)),
        ("assert h(2)", ("h", (2,), True, 0.0, 0.0)),
        ("assert not h(3), 'msg'", ("h", (3,), False, 0.0, 0.0)),
        ("assert math.isclose(k(2), 1.5, rel_tol=0.001)", ("k", (2,), 1.5, 0.001, 0.0)),
        ("assert abs(k(2) - 1.5) < 1e-6", ("k", (2,), 1.5, 0.0, 1e-6)),
        ("assert candidate([]) == 0", ("entry", ([],), 0, 0.0, 0.0)),
    ],
)
def test_asserts_become_call_tests(source, expected):
    stmt = ast.parse(source).body[0]
    t = code_tasks.call_test_from_assert(stmt, {"candidate": "entry"})
    assert (t.fn, t.args, t.expected, t.rel_tol, t.abs_tol) == expected


@pytest.mark.parametrize(
    "source",
    [
        "assert f(x) == 1",  # a name, not a literal
        "assert set(f(1)) == {1}",
        "assert f(1) == sorted([2, 1])",
        "assert f(a=1) == 2",
        "assert obj.f(1) == 2",
        "assert f(1) is 2",
        "assert f(1) > 2",
        "assert f(1j) == 2",  # complex is not carried by the typed JSON
    ],
)
def test_unsupported_asserts_are_refused(source):
    with pytest.raises(code_tasks.UnsupportedTest):
        code_tasks.call_test_from_assert(ast.parse(source).body[0])


def _write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


MBPP_ROW = {
    "task_id": 2, "text": "Write a function to find the shared elements of two lists.",
    "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))",
    "test_list": ["assert similar_elements((3, 4), (4, 5)) == (4,)",
                  "assert similar_elements((1, 2), (3,)) == ()"],
}  # fmt: skip
HUMANEVAL_ROW = {
    "task_id": "HumanEval/0",
    "prompt": 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n',
    "canonical_solution": "    return a + b\n",
    "entry_point": "add",
    "test": "METADATA = {}\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n"
    "    assert True, 'debugging aid'\n    assert abs(candidate(0.1, 0.2) - 0.3) < 1e-9\n",
}
APPS_ROW = {
    "problem_id": 7, "question": "Print the sum of the numbers on the first line.",
    "solutions": json.dumps(["print(sum(map(int, input().split())))"]),
    "input_output": json.dumps({"inputs": ["1 2 3\n", ["4", "5"]], "outputs": ["6\n", "4\n"]}),
}  # fmt: skip


def test_loaders_read_all_three_shapes_and_their_references_pass(tmp_path):
    unsupported = dict(MBPP_ROW, task_id=3, test_list=["assert set(f(1)) == {1}"])
    mbpp = code_tasks.load_mbpp(_write_jsonl(tmp_path / "mbpp.jsonl", [MBPP_ROW, "", unsupported]))
    humaneval = code_tasks.load_humaneval(_write_jsonl(tmp_path / "he.jsonl", [HUMANEVAL_ROW]))
    apps = code_tasks.load_apps(_write_jsonl(tmp_path / "apps.jsonl", [APPS_ROW]))
    assert [t.uid for t in mbpp + humaneval + apps] == ["mbpp/2", "humaneval/HumanEval/0", "apps/7"]
    assert mbpp[0].tests[0] == code_types.CallTest("similar_elements", ((3, 4), (4, 5)), (4,))
    assert "similar_elements((3, 4), (4, 5))" in mbpp[0].prompt
    assert humaneval[0].tests[1] == code_types.CallTest("add", (0.1, 0.2), 0.3, 0.0, 1e-9)
    assert apps[0].tests[1] == code_types.StdioTest("4\n5", "4\n")
    tasks = mbpp + humaneval + apps
    verdicts = code_lib.score_many([_fenced(t.reference_solution) for t in tasks], tasks, CFG)
    assert [v.status for v in verdicts] == ["ok", "ok", "ok"], verdicts
    with pytest.raises(ValueError, match=r"mbpp\.jsonl, line 3: an argument of set\(\) is not"):
        code_tasks.load_mbpp(str(tmp_path / "mbpp.jsonl"), strict=True)


@pytest.mark.parametrize(
    "loader, row, message",
    [
        ("load_mbpp", "{not json", "malformed JSON"),
        ("load_mbpp", "[1, 2]", "expected a JSON object"),
        ("load_mbpp", dict(MBPP_ROW, text=""), "field 'text'"),
        ("load_mbpp", dict(MBPP_ROW, test_list="assert f(1) == 1"), "field 'test_list'"),
        ("load_mbpp", dict(MBPP_ROW, test_list=[1]), "list of strings"),
        ("load_humaneval", dict(HUMANEVAL_ROW, entry_point=None), "field 'entry_point'"),
        ("load_humaneval", dict(HUMANEVAL_ROW, canonical_solution=3), "canonical_solution"),
        ("load_apps", dict(APPS_ROW, input_output="{oops"), "'input_output' is not JSON"),
        ("load_apps", dict(APPS_ROW, input_output=json.dumps({"inputs": ["1"], "outputs": []})),
         "1 inputs but 0 outputs"),
        ("load_apps", dict(APPS_ROW, input_output=json.dumps({"inputs": [1], "outputs": ["1"]})),
         "'inputs' entries"),
        ("load_apps", dict(APPS_ROW, solutions="[1]"), "field 'solutions'"),
    ],
)  # fmt: skip
def test_malformed_rows_name_file_and_line(tmp_path, loader, row, message):
    path = _write_jsonl(tmp_path / "data.jsonl", [MBPP_ROW if loader == "load_mbpp" else
                                                  HUMANEVAL_ROW if loader == "load_humaneval"
                                                  else APPS_ROW, "", row])  # fmt: skip
    with pytest.raises(ValueError, match=rf"data\.jsonl, line 3: .*{message}"):
        getattr(code_tasks, loader)(path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        getattr(code_tasks, loader)(str(tmp_path / "missing.jsonl"))


def test_sandbox_failures_are_verifier_errors(monkeypatch):
    def broken(*args, **kwargs):
        raise sandbox.SandboxError("launcher: mount failed")

    monkeypatch.setattr(sandbox, "run_program", broken)
    v = code_lib.score_code(_fenced("print(3)"), TASKS[0], CFG)
    assert (v.status, v.reward) == ("verifier_error", 0.0) and "mount failed" in v.feedback


def test_config_is_validated():
    with pytest.raises(ValueError, match="reward_mode"):
        code_lib.CodeConfig(reward_mode="mean")
    with pytest.raises(ValueError):
        sandbox.SandboxConfig(timeout_s=0)
    with pytest.raises(ValueError, match="completions"):
        code_lib.score_many(["x"], [], CFG)
    assert math.isclose(code_lib.CodeConfig().sandbox.timeout_s, 5.0)
