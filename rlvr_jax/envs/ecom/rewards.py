"""Ecom-RLVE rewards as small pure functions: the composer, efficiency, hallucination, and each
environment's r_task and IsCorrect.

r = clip(0.75 r_task + 0.15 r_eff + 0.10 r_hall, -1, 1), and -1 on a hard fail. r_hall is at most
0, so an episode's reward is at most 0.90; "solved" is IsCorrect, not a reward threshold.

One deliberate difference from the released code: the out-of-stock term of PD and SUB is
r_oos = 1 - 2 oos_rate (in [-1, 1], like every other term) instead of -oos_rate. With -oos_rate
PD's r_task is at most 0.90 and SUB's at most 0.80, both below the IsCorrect threshold of 0.95,
so no episode could ever be correct.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

W_TASK, W_EFF, W_HALL = 0.75, 0.15, 0.10
HARD_FAIL_REWARD = -1.0
CORRECT_AT = 0.95  # IsCorrect threshold for PD, SUB, POLICY


def _clip(x: float) -> float:
    return float(min(1.0, max(-1.0, x)))


def compose(r_task: float, r_eff: float, r_hall: float) -> float:
    """The episode reward when there was no hard fail."""
    return _clip(W_TASK * r_task + W_EFF * r_eff + W_HALL * r_hall)


def efficiency(t_eff: int, t_max: int) -> float:
    """r_eff = 1 - 2 (T_eff - 1)/(T_max - 1): 1 for a one-turn episode, -1 at the turn limit.
    T_eff excludes turns spent on the user's clarifications."""
    t_eff = max(1, t_eff)
    return _clip(1.0 - 2.0 * (t_eff - 1) / max(1, t_max - 1))


def hallucination(output_ids: Sequence[str], surfaced: Iterable[str]) -> float:
    """-(fraction of output product ids no tool ever showed); 0 when nothing was output."""
    if not output_ids:
        return 0.0
    seen = set(surfaced)
    return -sum(pid not in seen for pid in output_ids) / len(output_ids)


def dcg(relevances: Sequence[float]) -> float:
    return sum(r / math.log2(i + 2) for i, r in enumerate(relevances))


def ndcg(relevances: Sequence[float], ideal: Sequence[float]) -> float:
    """DCG of the answer over DCG of the ideal list (both cut to the same k by the caller)."""
    best = dcg(sorted(ideal, reverse=True))
    return 0.0 if best <= 0 else min(1.0, dcg(relevances) / best)


def oos_term(oos_rate: float) -> float:
    """r_oos = 1 - 2 oos_rate (see the module docstring for why not -oos_rate)."""
    return 1.0 - 2.0 * min(1.0, max(0.0, oos_rate))


def pd_alpha(d: int) -> int:
    return 4 + d // 4


def pd_task(ndcg_value: float, s_best: float, oos_rate: float, d: int) -> float:
    """PD: 0.55 (2 nDCG - 1) + 0.35 (2 s_best^alpha(d) - 1) + 0.10 r_oos."""
    return _clip(
        0.55 * (2 * ndcg_value - 1)
        + 0.35 * (2 * s_best ** pd_alpha(d) - 1)
        + 0.10 * oos_term(oos_rate)
    )


def sub_task(ndcg_value: float, oos_rate: float) -> float:
    """SUB: 0.8 r_rank + 0.2 r_oos with r_rank = 2 nDCG - 1."""
    return _clip(0.8 * (2 * ndcg_value - 1) + 0.2 * oos_term(oos_rate))


def unit_f1(required: Mapping[str, int], got: Mapping[str, int]) -> float:
    """F1 over units: each unit of each line is one item (a line of 2 counts twice)."""
    hit = sum(min(q, got.get(k, 0)) for k, q in required.items())
    total = sum(required.values()) + sum(max(0, q) for q in got.values())
    return 1.0 if total == 0 else 2.0 * hit / total


def cart_task(f1: float) -> float:
    """CART: 2 F1_units - 1."""
    return _clip(2 * f1 - 1)


def return_task(r_sel: float, r_ret: float, r_rep: float) -> float:
    """RETURN: 0.45 r_sel + 0.45 r_ret + 0.10 r_rep, each term +-1."""
    return _clip(0.45 * r_sel + 0.45 * r_ret + 0.10 * r_rep)


def status_task(oid_ok: bool, status_ok: bool) -> float:
    """STATUS: 2 (0.5 r_oid + 0.5 r_stat) - 1 with r_oid, r_stat in {0, 1}."""
    return 2 * (0.5 * float(oid_ok) + 0.5 * float(status_ok)) - 1


def policy_numeric(pred: float, gold: float) -> float:
    """POLICY numeric: 2 rho - 1 with rho = (min/max)^4 (both >= 0; both 0 is exact)."""
    if pred < 0 or gold < 0:
        return -1.0
    lo, hi = min(pred, gold), max(pred, gold)
    rho = 1.0 if hi == 0 else (lo / hi) ** 4
    return 2 * rho - 1


def policy_categorical(pred: str, gold: str) -> float:
    """POLICY categorical: +1 on a match (case and spacing ignored), else -1."""
    return 1.0 if " ".join(pred.lower().split()) == " ".join(gold.lower().split()) else -1.0


def is_correct_threshold(r_task: float) -> bool:
    """IsCorrect for PD, SUB and POLICY."""
    return r_task >= CORRECT_AT
