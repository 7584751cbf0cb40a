"""Embedded rubric task family: structured-answer prompts, each graded by its own rubric of
programmatic criteria of varied difficulty (easy format checks, harder content and style checks,
one pitfall). Deterministic from a seed, with the hash-partitioned held-out split of synthetic.py.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from typing import Any

from rlvr_jax.data import synthetic, types
from rlvr_jax.rewards import rubric
from rlvr_jax.rewards import rubric_checks as rc

FAMILIES = ("person_json", "numbered_list")
SPLITS = synthetic.SPLITS

CITIES = (
    "Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Rome", "Delhi", "Quito", "Berlin", "Sydney",
    "Madrid", "Dublin", "Nairobi", "Seoul", "Vienna", "Lisbon",
)  # fmt: skip
KINDS = {
    "fruits": ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear", "plum"),
    "colors": ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink"),
    "animals": ("cat", "dog", "horse", "lion", "tiger", "rabbit", "mouse", "eagle", "whale"),
    "tools": ("hammer", "saw", "drill", "wrench", "chisel", "pliers", "rake", "shovel", "axe"),
    "sports": ("tennis", "golf", "rugby", "hockey", "boxing", "rowing", "judo", "polo", "chess"),
    "metals": ("iron", "gold", "silver", "copper", "tin", "zinc", "lead", "nickel", "cobalt"),
}
_ITEM_RE = re.compile(r"^\s*\d+\.\s*(.+?)\s*$", re.M)
# Text before or after the one JSON object: the model wrapped it in prose or a code fence.
_OUTSIDE_JSON = r"\A(?!\s*\{[\s\S]*\}\s*\Z)"


@dataclasses.dataclass(frozen=True)
class RubricTask:
    """A prompt (example.answer: a reference response that scores 1.0) and its rubric."""

    example: types.Example
    rubric: rubric.Rubric


def _items_distinct(response: str) -> bool:
    """The numbered items are all different (case-insensitive), and there is at least one."""
    items = [m.casefold() for m in _ITEM_RE.findall(response)]
    return bool(items) and len(set(items)) == len(items)


def _person_json(meta: dict[str, Any]) -> list[rubric.Criterion]:
    city, lo, hi, k = meta["city"], meta["min_age"], meta["max_age"], meta["max_words"]
    string = {"type": "string"}
    fields = {"name": string, "city": string, "summary": string}
    C = rubric.Criterion
    return [
        C(id="json", description="The reply is a JSON object.", weight=1.0, category="format",
          required=True, check=rc.JsonSchema({"type": "object"})),
        C(id="fields", description="It has string fields name, city and summary, and age.",
          weight=1.0, category="format", depends_on=("json",),
          check=rc.JsonSchema({"required": ["name", "age", "city", "summary"],
                               "properties": fields})),
        C(id="age", description=f"age is an integer from {lo} to {hi}.", weight=2.0,
          category="content", depends_on=("json",),
          check=rc.JsonSchema({"required": ["age"], "properties": {
              "age": {"type": "integer", "minimum": lo, "maximum": hi}}})),
        C(id="city", description=f"city is exactly {city}.", weight=1.0, category="content",
          depends_on=("json",),
          check=rc.JsonSchema({"required": ["city"],
                               "properties": {"city": {"enum": [city]}}})),
        C(id="summary_city", description=f"The summary mentions {city}.", weight=2.0,
          category="content", depends_on=("fields",),
          check=rc.Contains(city, field="summary")),
        C(id="summary_short", description=f"The summary is at most {k} words.", weight=2.0,
          category="style", depends_on=("fields",),
          check=rc.Length(min=1, max=k, unit="words", field="summary")),
        C(id="extra_text", description="Pitfall: text outside the JSON object.", weight=-1.0,
          category="style", check=rc.Regex(_OUTSIDE_JSON)),
    ]  # fmt: skip


def _numbered_list(meta: dict[str, Any]) -> list[rubric.Criterion]:
    n, must, max_words = meta["n"], meta["must"], meta["max_words"]
    exact = r"\A\s*" + "".join(rf"{i}\. [^\n]+\n" for i in range(1, n + 1)) + r"Count:"
    C = rubric.Criterion
    return [
        C(id="numbered", description="The reply is a list numbered from '1.'.", weight=1.0,
          category="format", required=True, check=rc.Regex(r"(?m)^1\. \S")),
        C(id="count_line", description=f"A line 'Count: {n}'.", weight=1.0, category="format",
          check=rc.Numeric(n, pattern=r"Count:\s*(\S+)")),
        C(id="exactly_n", description=f"Exactly {n} items numbered 1 to {n}, then the count.",
          weight=2.0, category="content", depends_on=("numbered",), check=rc.Regex(exact)),
        C(id="includes", description=f"The list includes {must}.", weight=2.0,
          category="content", depends_on=("numbered",), check=rc.Contains(must)),
        C(id="distinct", description="No item repeats.", weight=1.0, category="content",
          depends_on=("numbered",), check=rc.Predicate(_items_distinct)),
        C(id="short", description=f"At most {max_words} words in total.", weight=1.0,
          category="style", check=rc.Length(max=max_words, unit="words")),
        C(id="etc", description="Pitfall: trails off with 'etc' or 'and so on'.", weight=-1.0,
          category="style", check=rc.Regex(r"\betc\b|and so on", ignore_case=True)),
    ]  # fmt: skip


# The judge criterion `rubric_for(..., judge=True)` adds: no programmatic check, so a judge
# model grades it from its description.
JUDGE_CRITERION = rubric.Criterion(
    id="on_topic",
    description="The reply answers the request directly, with no unrelated content.",
    weight=1.0,
    category="style",
)


def rubric_for(meta: dict[str, Any], *, judge: bool = False) -> rubric.Rubric:
    """The rubric of a task from its JSON-serialisable parameters (`Example.meta`); `judge` adds
    JUDGE_CRITERION, graded by a judge model."""
    family = meta.get("family")
    if family not in FAMILIES:
        raise ValueError(f"meta family {family!r} is not one of {FAMILIES}")
    criteria = _person_json(meta) if family == "person_json" else _numbered_list(meta)
    return rubric.Rubric(tuple(criteria) + ((JUDGE_CRITERION,) if judge else ()))


def _draw(rng: random.Random, family: str) -> tuple[str, tuple[str, dict[str, Any]]]:
    """(prompt, (reference response, meta)) of one task."""
    if family == "person_json":
        city, (name, _) = rng.choice(CITIES), rng.choice(synthetic.NAMES)
        lo = rng.randint(18, 60)
        hi = rng.randint(lo + 5, 99)
        k = rng.randint(5, 12)
        meta = {"family": family, "city": city, "min_age": lo, "max_age": hi, "max_words": k}
        prompt = (
            f"Give a JSON object with fields name, age (an integer from {lo} to {hi}), city and "
            f"summary. The city is {city}. The summary must mention {city} and be at most {k} "
            "words."
        )
        answer = {"name": name, "age": rng.randint(lo, hi), "city": city,
                  "summary": f"Lives in {city}."}  # fmt: skip
        return prompt, (json.dumps(answer, separators=(",", ":")), meta)
    kind = rng.choice(sorted(KINDS))
    n = rng.randint(3, 6)
    items = rng.sample(KINDS[kind], n)
    must = rng.choice(items)
    meta = {"family": family, "kind": kind, "n": n, "must": must, "max_words": 3 * n + 3}
    prompt = (
        f"List exactly {n} different {kind}, one per line, numbered 1. to {n}., including "
        f"{must}. End with the line 'Count: {n}'. Use at most {3 * n + 3} words in total."
    )
    lines = [f"{i}. {item}" for i, item in enumerate(items, 1)] + [f"Count: {n}"]
    return prompt, ("\n".join(lines), meta)


def make_split(split: str, n: int, seed: int) -> list[RubricTask]:
    """`n` distinct tasks of `split` ("train" or "test"), families alternating, the same for the
    same arguments; train and test never share a prompt (synthetic.is_held_out). uids are
    "rubric/<split>/<seed>/<index>"."""
    tasks = []
    draws = synthetic.distinct_draws("rlvr_jax.data.rubric_tasks", split, n, seed, _draw, FAMILIES)
    for i, (prompt, (answer, meta)) in enumerate(draws):
        uid = f"rubric/{split}/{seed}/{i}"
        ex = types.Example(uid=uid, prompt=prompt, answer=answer, source="rubric", meta=meta)
        tasks.append(RubricTask(ex, rubric_for(meta)))
    return tasks
