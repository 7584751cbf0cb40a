"""The code verifier's input: a `CodeTask` (a programming prompt) and its stdin/stdout
(`StdioTest`) and function-call (`CallTest`) tests. data/code_tasks.py loads datasets into these.
Host side: no JAX.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class StdioTest:
    """Run the program on `stdin`; its stdout must equal `expected` (trailing spaces aside)."""

    stdin: str
    expected: str


@dataclasses.dataclass(frozen=True)
class CallTest:
    """`fn(*args)` must return `expected`; numbers within `rel_tol`/`abs_tol` when set."""

    fn: str
    args: tuple
    expected: Any
    rel_tol: float = 0.0
    abs_tol: float = 0.0


@dataclasses.dataclass(frozen=True)
class CodeTask:
    """A programming prompt and its tests. `wrong_solutions` are known to fail (embedded set)."""

    uid: str
    prompt: str
    tests: tuple[StdioTest | CallTest, ...]
    reference_solution: str | None = None
    wrong_solutions: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self):
        if not self.tests:
            raise ValueError(f"task {self.uid}: no tests")
