"""Strict JSON read from model text: the pattern of one wrapping ``` fence and a json.loads that
rejects NaN and Infinity. Shared by judge.py (verdicts) and rubric_checks.py (extract_json).
Host side: no JAX.
"""

from __future__ import annotations

import json
import re
from typing import Any

FENCE_RE = re.compile(r"\A```[a-zA-Z]*\s*\n([\s\S]*?)\n?```\Z")  # group 1: the fenced text


def reject_constant(name: str) -> float:
    """json's parse_constant hook: NaN, Infinity and -Infinity are not JSON."""
    raise ValueError(f"{name} is not JSON")


def loads(text: str) -> Any:
    """json.loads that raises ValueError on NaN/Infinity as on any malformed text."""
    return json.loads(text, parse_constant=reject_constant)
