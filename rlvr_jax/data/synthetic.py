"""Embedded verifiable task: multi-step arithmetic word problems with worked, boxed solutions.

The wording follows the tiny tokenizer's corpus (models/build_tiny_tokenizer.py), so prompts stay
short. `meta["values"]` holds the correct running total after every step, so a grader can find the
first step where a solution goes wrong and the value it should have reached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Any

from rlvr_jax.data import types

OPS = ("+", "-", "*")
SPLITS = ("train", "test")
# A prompt is held out iff sha256(prompt) lands in bucket 0: train and test can never share a
# prompt, whatever the seeds and sizes. 1 in 8 possible prompts belongs to the test split.
TEST_BUCKETS = 8
# Give up after this many draws in a row yield nothing new: the config admits too few prompts.
_MAX_FAILED_DRAWS = 2000

# Pronouns follow the name; names and items are the ones the tiny tokenizer spells in few tokens.
NAMES = (
    ("Tom", "he"), ("Anna", "she"), ("Sam", "he"), ("Mia", "she"), ("Ben", "he"),
    ("Lily", "she"), ("Max", "he"), ("Emma", "she"), ("Leo", "he"), ("Zoe", "she"),
    ("Jack", "he"), ("Sara", "she"), ("John", "he"), ("Kate", "she"), ("Noah", "he"),
    ("Ella", "she"), ("Liam", "he"), ("Ava", "she"), ("James", "he"), ("Maria", "she"),
    ("Omar", "he"), ("Nina", "she"),
)  # fmt: skip
ITEMS = (  # (singular, plural)
    ("apple", "apples"), ("orange", "oranges"), ("marble", "marbles"), ("sticker", "stickers"),
    ("candy", "candies"), ("toy", "toys"), ("coin", "coins"), ("flower", "flowers"),
    ("shell", "shells"), ("pen", "pens"), ("muffin", "muffins"), ("ticket", "tickets"),
)  # fmt: skip
GAIN = ("buys {n} more", "finds {n} more", "gets {n} more", "receives {n} more", "makes {n} more")
LOSS = ("gives away {n}", "eats {n}", "loses {n}", "sells {n}", "uses {n}", "gives {n} to a friend")
TIMES = ("in the morning", "in the afternoon", "on Monday", "on Tuesday", "on the weekend")
QUESTIONS = (
    "How many {items} does {pro} have now?",
    "How many {items} does {name} have now?",
    "How many {items} does {name} have in the end?",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Difficulty knobs. Every running total, the answer included, stays in [1, max_answer]."""

    min_steps: int = 1  # operations applied to the starting amount, drawn uniformly
    max_steps: int = 1
    max_operand: int = 10  # the starting amount and each +/- operand lie in [1, max_operand]
    max_factor: int = 3  # a '*' step multiplies by a factor in [2, max_factor]
    max_answer: int = 20  # bound on every running total
    ops: tuple[str, ...] = ("+", "-")  # a subset of OPS

    def __post_init__(self):
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self}")
        if self.max_operand < 1 or self.max_answer < 2 or self.max_factor < 2:
            raise ValueError(f"need max_operand >= 1, max_answer >= 2, max_factor >= 2: {self}")
        if (
            not self.ops
            or any(op not in OPS for op in self.ops)
            or len(set(self.ops)) < len(self.ops)
        ):
            raise ValueError(f"ops must be distinct members of {OPS}, got {self.ops}")


# Level 1: one +/- step with small numbers ... level 4: 3-4 steps with *, totals up to 200.
LEVELS = {
    1: SyntheticConfig(min_steps=1, max_steps=1, max_operand=10, max_answer=20, ops=("+", "-")),
    2: SyntheticConfig(min_steps=2, max_steps=2, max_operand=20, max_answer=50, ops=("+", "-")),
    3: SyntheticConfig(
        min_steps=2, max_steps=3, max_operand=20, max_factor=3, max_answer=100, ops=OPS
    ),
    4: SyntheticConfig(
        min_steps=3, max_steps=4, max_operand=30, max_factor=4, max_answer=200, ops=OPS
    ),
}


def config_for_level(level: int) -> SyntheticConfig:
    """The preset difficulty for `level` in LEVELS (1 easiest, 4 hardest)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {sorted(LEVELS)}, got {level}")
    return LEVELS[level]


def _draw_step(rng: random.Random, cfg: SyntheticConfig, total: int) -> tuple[str, int] | None:
    """One operation and operand that keep the total in [1, max_answer]; None if none can."""
    feasible = []
    for op in cfg.ops:
        if op == "+" and total < cfg.max_answer:
            feasible.append((op, min(cfg.max_operand, cfg.max_answer - total)))
        elif op == "-" and total >= 2:
            feasible.append((op, min(cfg.max_operand, total - 1)))
        elif op == "*" and 2 * total <= cfg.max_answer:
            feasible.append((op, min(cfg.max_factor, cfg.max_answer // total)))
    if not feasible:
        return None
    op, high = rng.choice(feasible)
    return op, rng.randint(2 if op == "*" else 1, high)


def _apply(op: str, total: int, operand: int) -> int:
    """The running total after one step."""
    if op == "+":
        return total + operand
    if op == "-":
        return total - operand
    return total * operand


def _draw_problem(rng: random.Random, cfg: SyntheticConfig) -> dict | None:
    """The arithmetic of one problem: start, ops, operands, running totals; None on a dead end."""
    total = rng.randint(1, min(cfg.max_operand, cfg.max_answer))
    start, ops, operands, values = total, [], [], []
    for _ in range(rng.randint(cfg.min_steps, cfg.max_steps)):
        step = _draw_step(rng, cfg, total)
        if step is None:
            return None
        op, operand = step
        total = _apply(op, total, operand)
        ops.append(op)
        operands.append(operand)
        values.append(total)
    return {"start": start, "ops": ops, "operands": operands, "values": values}


def _action(rng: random.Random, op: str, operand: int) -> str:
    """The verb phrase of one step, after its subject ('he buys 7 more')."""
    if op == "+":
        return rng.choice(GAIN).format(n=operand)
    if op == "-":
        return rng.choice(LOSS).format(n=operand)
    return "has twice as many" if operand == 2 else f"has {operand} times as many"


def _render(rng: random.Random, arith: dict) -> tuple[str, str]:
    """The prompt and the worked solution (one line per step, then the boxed answer)."""
    (name, pro), (item, items) = rng.choice(NAMES), rng.choice(ITEMS)
    story = f"{name} has {arith['start']} {item if arith['start'] == 1 else items}."
    joined = False  # at most two steps per sentence: "He buys 7 more and gives away 5."
    for i, (op, operand) in enumerate(zip(arith["ops"], arith["operands"], strict=True)):
        action = _action(rng, op, operand)
        if i == 0 and op != "*":
            # GSM8K-style filler on the first step: the easiest level stays at 25-45 tokens.
            story += f" {pro.capitalize()} {action} {rng.choice(TIMES)}"
        elif op != "*" and arith["ops"][i - 1] != "*" and not joined and rng.random() < 0.5:
            story += f" and {action}"
            joined = True
        else:
            # '*' always opens its own sentence, so "twice as many" refers to the running total.
            story += ("." if i else "") + f" Then {pro} {action}"
            joined = False
    question = rng.choice(QUESTIONS).format(items=items, pro=pro, name=name)
    prompt = f"{story}. {question}"
    lines, total = [], arith["start"]
    for op, operand, value in zip(arith["ops"], arith["operands"], arith["values"], strict=True):
        noun = item if value == 1 else items
        lines.append(f"Then {pro} has {total} {op} {operand} = {value} {noun}.")
        total = value
    lines.append(f"The answer is \\boxed{{{total}}}.")
    return prompt, "\n".join(lines)


def config_tag(cfg: SyntheticConfig) -> str:
    """A short name for `cfg` in uids: "L2" for a LEVELS preset, else a hash of its fields."""
    for level, preset in LEVELS.items():
        if cfg == preset:
            return f"L{level}"
    return "c" + hashlib.sha256(repr(cfg).encode("utf-8")).hexdigest()[:8]


def is_held_out(prompt: str) -> bool:
    """Whether `prompt` belongs to the test split (a fixed hash partition of all prompts)."""
    return hashlib.sha256(prompt.encode("utf-8")).digest()[0] % TEST_BUCKETS == 0


def distinct_draws(
    namespace: str,
    split: str,
    n: int,
    seed: int,
    draw: Callable[[random.Random, str], tuple[str, Any]],
    families: Sequence[str],
    max_failed: int = 2000,
) -> list[tuple[str, Any]]:
    """`n` (prompt, payload) draws of `split` with distinct prompts, the held-out partition of
    `is_held_out` respected, deterministic for (namespace, split, seed). The i-th kept draw is of
    family `families[i % len(families)]`, made by `draw(rng, family)`; after `max_failed` rejected
    candidates in a row it raises."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"{namespace}/{split}/{seed}")
    out, seen, failed = [], set(), 0
    while len(out) < n and failed < max_failed:
        failed += 1
        prompt, payload = draw(rng, families[len(out) % len(families)])
        if prompt in seen or is_held_out(prompt) != (split == "test"):
            continue
        failed = 0
        seen.add(prompt)
        out.append((prompt, payload))
    if len(out) < n:
        raise ValueError(f"only {len(out)} distinct {split} prompts from {namespace}, wanted {n}")
    return out


def make_split(cfg: SyntheticConfig, split: str, n: int, seed: int) -> list[types.Example]:
    """`n` distinct problems of `split` ("train" or "test"), the same for the same arguments.

    Each split draws from its own seed stream and keeps only prompts on its side of the hash
    partition (`is_held_out`), so train and test never share a prompt. Solution line i works step
    i; `meta["values"][i]` is the correct total after it, and the answer is the last value.
    uids are "synthetic/<config_tag>/<split>/<seed>/<index>", unique across levels and splits.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"rlvr_jax.data.synthetic/{split}/{seed}")  # str seeds are stable
    tag = config_tag(cfg)
    want_held_out = split == "test"
    examples, seen, failed = [], set(), 0
    while len(examples) < n and failed < _MAX_FAILED_DRAWS:
        failed += 1
        arith = _draw_problem(rng, cfg)
        if arith is None:
            continue
        prompt, solution = _render(rng, arith)
        if prompt in seen or is_held_out(prompt) != want_held_out:
            continue
        failed = 0
        seen.add(prompt)
        arith["num_steps"] = len(arith["ops"])
        arith["config"] = tag
        examples.append(
            types.Example(
                uid=f"synthetic/{tag}/{split}/{seed}/{len(examples)}",
                prompt=prompt,
                answer=str(arith["values"][-1]),
                solution=solution,
                source="synthetic",
                meta=arith,
            )
        )
    if len(examples) < n:
        raise ValueError(f"{cfg} gave only {len(examples)} distinct {split} prompts, wanted {n}")
    return examples


def noisy_solutions(
    examples: list[types.Example], *, slip_frac: float, unanswered_frac: float, seed: int
) -> list[types.Example]:
    """A copy of `examples` whose worked solutions carry the noise of a real corpus.

    An `unanswered_frac` share stops after the worked steps, without the final boxed answer (the
    verifier scores such a completion as no answer). Of the rest, a `slip_frac` share ends in an
    arithmetic slip: the last step and the boxed answer are off by 1 or 2 from the correct total.
    The `answer` field always keeps the correct value. This is the supervised corpus of the tiny
    default: imitation reproduces both habits at about their rates, and only a verified reward
    tells the model which habits are right. The choice of examples and offsets is fixed by `seed`.
    """
    for name, frac in (("slip", slip_frac), ("unanswered", unanswered_frac)):
        if not 0.0 <= frac <= 1.0:
            raise ValueError(f"{name} fraction must lie in [0, 1], got {frac}")
    rng = random.Random(f"rlvr_jax.data.synthetic/noise/{seed}")
    out = []
    for ex in examples:
        values = (ex.meta or {}).get("values")
        if not values or ex.solution is None:
            raise ValueError(f"{ex.uid}: noisy solutions need a synthetic worked solution")
        *steps, _ = ex.solution.split("\n")
        if rng.random() < unanswered_frac:
            out.append(dataclasses.replace(ex, solution="\n".join(steps)))
        elif rng.random() < slip_frac:
            right = values[-1]
            wrong = right + rng.choice((-2, -1, 1, 2) if right > 2 else (1, 2))
            head, noun = steps[-1].rsplit("=", 1)[0], steps[-1].rsplit(" ", 1)[1]
            lines = [*steps[:-1], f"{head}= {wrong} {noun}", f"The answer is \\boxed{{{wrong}}}."]
            out.append(dataclasses.replace(ex, solution="\n".join(lines)))
        else:
            out.append(ex)
    return out
