"""The one record every data source returns: a prompt with its reference final answer."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Example:
    """A verifiable prompt.

    `answer` is the reference final answer as a string ("42", "\\frac{1}{2}"), the thing a verifier
    compares against. `solution` is a worked solution when the source has one. `source` names where
    the example came from ("gsm8k", "math", "synthetic", ...); `meta` holds source-specific,
    JSON-serialisable extras (MATH level, the synthetic task's intermediate values, ...). Not
    hashable when `meta` is set (a dict); key collections by `uid`.
    """

    uid: str
    prompt: str
    answer: str
    solution: str | None = None
    source: str = ""
    meta: dict[str, Any] | None = None
