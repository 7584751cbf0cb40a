"""A synthetic code task family a tiny model learns on a CPU: short Python programs whose constants
and operators the prompt states, checked by real tests in the sandbox.

Three families, alternating: a stdin/stdout affine map, a two-argument arithmetic function and a
list aggregate. Deterministic from a seed, with the hash-partitioned held-out split of
synthetic.py. Each task carries its reference solution in a ```python block (the warm start's
target). Host-side only: nothing here imports JAX.
"""

from __future__ import annotations

import random

from rlvr_jax.data import synthetic, types
from rlvr_jax.rewards.code_types import CallTest, CodeTask, StdioTest

FAMILIES = ("affine_stdio", "pair_call", "list_call")
SPLITS = synthetic.SPLITS
SYSTEM = "Reply with a Python program in one ```python block."  # the experiment's data.system
_OPS = ("+", "-", "*")
_AGGS = ("sum", "max", "min", "len")


def _fence(program: str) -> str:
    return f"```python\n{program.rstrip()}\n```"


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _draw(rng: random.Random, family: str) -> tuple[str, tuple[tuple, str]]:
    """(prompt, (tests, reference program)) of one task."""
    if family == "affine_stdio":
        a, b = rng.randint(2, 9), rng.randint(1, 99)
        prompt = f"Read an integer n from standard input and print n * {a} + {b}."
        tests = tuple(StdioTest(f"{n}\n", f"{n * a + b}\n") for n in (0, 3, -7))
        return prompt, (tests, f"n = int(input())\nprint(n * {a} + {b})\n")
    if family == "pair_call":
        op1, op2, k = rng.choice(_OPS), rng.choice(("+", "-")), rng.randint(1, 99)
        prompt = f"Write a Python function f(x, y) that returns x {op1} y {op2} {k}."
        cases = ((2, 3), (-4, 5), (10, 0))
        tests = tuple(CallTest("f", (x, y), _apply(op2, _apply(op1, x, y), k)) for x, y in cases)
        return prompt, (tests, f"def f(x, y):\n    return x {op1} y {op2} {k}\n")
    agg, k = rng.choice(_AGGS), rng.randint(1, 99)
    prompt = f"Write a Python function g(xs) that returns the {agg} of the list xs plus {k}."
    lists = ([1, 2, 3], [5, -2], [7, 7, 0, 4])
    fn = {"sum": sum, "max": max, "min": min, "len": len}[agg]
    tests = tuple(CallTest("g", (xs,), fn(xs) + k) for xs in lists)
    return prompt, (tests, f"def g(xs):\n    return {agg}(xs) + {k}\n")


def make_split(split: str, n: int, seed: int) -> list[CodeTask]:
    """`n` distinct tasks of `split` ("train" or "test"), families alternating, the same for the
    same arguments; train and test never share a prompt (synthetic.is_held_out). uids are
    "code_synth/<split>/<seed>/<index>"."""
    draws = synthetic.distinct_draws(
        "rlvr_jax.data.code_synthetic", split, n, seed, _draw, FAMILIES
    )
    return [
        CodeTask(f"code_synth/{split}/{seed}/{i}", prompt, tests, program, (), "code_synthetic")
        for i, (prompt, (tests, program)) in enumerate(draws)
    ]


def to_example(task: CodeTask) -> types.Example:
    """The loop's record of a code task: the verifier finds the tests by `uid`; `solution` is the
    reference program in a ```python block (what the warm start fits), when there is one."""
    solution = None if task.reference_solution is None else _fence(task.reference_solution)
    return types.Example(
        uid=task.uid, prompt=task.prompt, answer="", solution=solution, source=task.source
    )
