"""The environment interface: host side, deterministic by seed, in the style of gymnasium/OpenEnv.

An episode: `reset(seed, difficulty)` returns its first messages (system and user turns, chat
dicts); the policy writes an assistant turn; `step(action_text)` answers with the messages to append
(role "tool" for tool results, "user" for the simulated user), and, when the episode is over, its
reward and `done`. `finish(reason)` ends an episode the rollout cut short (its turn or token budget)
and returns its reward as things stand. Rewards are the episode's: the policy gets one number per
episode (and the advantage is per episode).

`info` of the final Step carries `status` (one of STATUSES) and `success` (the environment's
IsCorrect), plus the environment's own numbers (reward components, tool calls, invalid calls...),
which the rollout logs as metrics.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

Message = dict[str, str]  # {"role": "system" | "user" | "assistant" | "tool", "content": ...}

# How an episode ended: solved or answered ("ok"), a hard fail (malformed action, invalid tool
# call, safety), the environment raising or hanging ("env_error"), or cut by the rollout's
# turn/token budget ("truncated").
STATUSES = ("ok", "hard_fail", "env_error", "truncated")
# `finish` reasons a rollout gives: a turn cut at its token budget without its end-of-turn token
# (an environment may rule it a hard fail), the rollout's turn limit, its episode token budget.
OVERLONG_TURN, TURN_LIMIT, TOKEN_BUDGET = "turn_budget", "turn_limit", "token_budget"


@dataclasses.dataclass(frozen=True)
class Step:
    """What the environment answers to one assistant turn."""

    observation: list[Message]  # messages to append (empty when done)
    reward: float = 0.0  # the episode's reward, set when done
    done: bool = False
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


class Environment(abc.ABC):
    """One episode at a time; a new `reset` starts the next."""

    name: str = "env"

    @abc.abstractmethod
    def reset(self, seed: int, difficulty: int) -> list[Message]:
        """Starts an episode; returns its first messages. Same (seed, difficulty), same episode."""

    @abc.abstractmethod
    def step(self, action: str) -> Step:
        """Answers one assistant turn (its text, without the end-of-turn token)."""

    def finish(self, reason: str) -> Step:
        """Ends the episode early (the rollout's budget ran out): the reward as things stand.
        Default: no reward, status "truncated"."""
        return Step([], 0.0, True, {"status": "truncated", "success": False, "reason": reason})


def env_error(message: str) -> Step:
    """The final Step of an episode whose environment raised or hung."""
    return Step([], 0.0, True, {"status": "env_error", "success": False, "error": message})
