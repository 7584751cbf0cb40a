"""Difficulty: the 12-axis map theta(d), the RLVE adaptive controller, the environment curriculum.

The controller follows RLVE (Zeng et al., arXiv 2511.07317): each environment keeps (l, h, a, b);
difficulties are drawn uniformly from [l, h]; only frontier episodes (d == h) count, and after
tau_num of them the frontier moves up when accuracy reached tau_acc. States are frozen dataclasses
updated by pure functions, with a JSON-able record for checkpoints.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

TAU_NUM = 32  # frontier episodes per decision
TAU_ACC = 0.9  # accuracy needed to promote
D_DELTA = 4  # width of the sampled window below the frontier


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclasses.dataclass(frozen=True)
class Theta:
    """What difficulty d means, axis by axis (Ecom-RLVE's mapping)."""

    d: int
    m: int  # number of constraints
    k_rec: int  # items to return
    t_max: int  # maximum assistant turns
    p_missing: float  # probability a slot is left out of the first user message
    p_noise: float  # typo rate on the user's content words
    p_switch: float  # intent-switch probability
    top_k: int  # retrieval depth
    eps_rank: float  # retrieval corruption (neighbour-swap probability)
    p_oos: float  # probability a matching product is out of stock
    h_orders: int  # order-history depth
    b_branch: int  # policy branching (facts a policy answer combines)
    b_tool: int  # tool calls allowed per assistant turn


def theta(d: int) -> Theta:
    """theta(d), exactly as in the Ecom-RLVE mapping."""
    if d < 0:
        raise ValueError(f"difficulty must be >= 0, got {d}")
    return Theta(
        d=d,
        m=2 + d // 2,
        k_rec=min(10, 3 + d // 3),
        t_max=4 + d // 2,
        p_missing=0.8 * _sigmoid((d - 3) / 1.5),
        p_noise=min(max(0.01 * d, 0.0), 0.125),
        p_switch=0.6 * _sigmoid((d - 5) / 2),
        top_k=max(20, 200 - 10 * d),
        eps_rank=min(0.4, 0.02 * d),
        p_oos=min(0.5, 0.05 * d),
        h_orders=1 + d // 2,
        b_branch=1 + d // 3,
        b_tool=1 + d // 2,
    )


@dataclasses.dataclass(frozen=True)
class AdaptiveState:
    """One environment's controller: window [l, h], frontier correct a out of b attempts."""

    l: int = 0  # noqa: E741 (the paper's name)
    h: int = 0
    a: int = 0
    b: int = 0


def sample_difficulty(state: AdaptiveState, rng: np.random.Generator) -> int:
    """d ~ UniformInt[l, h]."""
    return int(rng.integers(state.l, state.h + 1))


def update(
    state: AdaptiveState,
    d: int,
    correct: bool,
    *,
    tau_num: int = TAU_NUM,
    tau_acc: float = TAU_ACC,
    d_delta: int = D_DELTA,
) -> AdaptiveState:
    """The state after one episode at difficulty d; only the frontier (d == h) counts."""
    if d != state.h:
        return state
    a, b = state.a + int(bool(correct)), state.b + 1
    if b < tau_num:
        return dataclasses.replace(state, a=a, b=b)
    l, h = state.l, state.h
    if a / b >= tau_acc:
        h += 1
        l = max(l, h - d_delta)
    return AdaptiveState(l=l, h=h, a=0, b=0)


def to_record(states: dict[str, AdaptiveState]) -> dict[str, dict[str, int]]:
    """Per-environment states as a JSON-able dict (for the checkpoint's metadata)."""
    return {name: dataclasses.asdict(s) for name, s in sorted(states.items())}


def from_record(record: dict[str, dict[str, int]]) -> dict[str, AdaptiveState]:
    return {name: AdaptiveState(**{k: int(v) for k, v in s.items()}) for name, s in record.items()}


# The environment-set curriculum: C1 -> C2 -> C4 -> C8, each stage adding environments.
CURRICULUM = (
    ("PD",),
    ("PD", "SUB"),
    ("PD", "SUB", "CART", "RETURN"),
    ("PD", "SUB", "CART", "RETURN", "STATUS", "POLICY", "BUNDLE", "JOURNEY"),
)


def curriculum_envs(stage: int, available: tuple[str, ...]) -> tuple[str, ...]:
    """The environment set at curriculum stage `stage` (clamped to the last), keeping only the
    environments in `available` (e.g. envs.ENV_NAMES, or a run's configured subset)."""
    if stage < 0:
        raise ValueError(f"stage must be >= 0, got {stage}")
    names = CURRICULUM[min(stage, len(CURRICULUM) - 1)]
    return tuple(n for n in names if n in available)
