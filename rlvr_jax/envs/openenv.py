"""OpenEnv (Meta/PyTorch `openenv-core`) environments as rlvr_jax Environments, in-process.

An OpenEnv environment (`openenv.core.env_server.interfaces.Environment`) has `reset(seed=...)`
and `step(action)`, both returning a pydantic Observation with `reward` and `done`. The adapter
calls it directly, with no HTTP server or container: the assistant's text becomes the
environment's Action through a function you give; Observations become chat messages. Works with
openenv-core 0.3.0 (`pip install openenv-core`; importing it needs fastapi and fastmcp, not
gradio). This module imports nothing from openenv-core itself: the adapter only calls the two
methods and reads the Observation's fields.

Rewards: OpenEnv rewards are per step; the episode's reward (what rlvr_jax's policy gets) is
their sum ("sum", the default, also right for environments that reward only the last step) or
the last one ("last", for environments whose reward is already cumulative).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rlvr_jax.envs import base

REWARDS = ("sum", "last")
_RESERVED = ("done", "reward", "metadata")  # Observation's base fields, not its content


def render_observation(observation: Any, role: str = "user") -> list[base.Message]:
    """One message holding the Observation's own fields: a lone string field as is, else JSON."""
    fields = {k: v for k, v in observation.model_dump(mode="json").items() if k not in _RESERVED}
    if len(fields) == 1 and isinstance(text := next(iter(fields.values())), str):
        return [{"role": role, "content": text}]
    return [{"role": role, "content": json.dumps(fields, sort_keys=True)}]


class OpenEnvAdapter(base.Environment):
    """Wraps one OpenEnv environment object; one episode at a time, like every Environment.

    `to_action(text)` builds the OpenEnv Action from the assistant's turn; a ValueError (pydantic's
    ValidationError is one) ends the episode as a hard fail with reward 0. `seed_kwarg` and
    `difficulty_kwarg` name the reset keywords that take the seed and difficulty (None: not
    passed; an environment without a seed is then only as deterministic as it is). `success` is
    the Observation's `metadata["success"]` when it has one, else whether the reward is positive.
    Exceptions from the OpenEnv environment propagate (EnvPool turns them into env_error).
    """

    def __init__(
        self,
        env: Any,
        to_action: Callable[[str], Any],
        *,
        render: Callable[[Any], list[base.Message]] = render_observation,
        reward: str = "sum",
        seed_kwarg: str | None = "seed",
        difficulty_kwarg: str | None = None,
        name: str | None = None,
    ):
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        self._env, self._to_action, self._render, self._reward = env, to_action, render, reward
        self._seed_kwarg, self._difficulty_kwarg = seed_kwarg, difficulty_kwarg
        self.name = name or type(env).__name__
        self._total, self._last, self._steps = 0.0, 0.0, 0

    def reset(self, seed: int, difficulty: int) -> list[base.Message]:
        kwargs = {}
        if self._seed_kwarg is not None:
            kwargs[self._seed_kwarg] = seed
        if self._difficulty_kwarg is not None:
            kwargs[self._difficulty_kwarg] = difficulty
        self._total, self._last, self._steps = 0.0, 0.0, 0
        return self._render(self._env.reset(**kwargs))

    def step(self, action: str) -> base.Step:
        try:
            openenv_action = self._to_action(action)
        except ValueError as e:
            info = {"status": "hard_fail", "success": False, "error": str(e)[:1000]}
            return base.Step([], 0.0, True, {**info, "steps": self._steps})
        observation = self._env.step(openenv_action)
        self._steps += 1
        self._last = float(observation.reward or 0.0)
        self._total += self._last
        if not observation.done:
            return base.Step(self._render(observation))
        reward = self._episode_reward()
        success = observation.metadata.get("success", reward > 0)
        info = {"status": "ok", "success": bool(success), "steps": self._steps}
        return base.Step([], reward, True, info)

    def finish(self, reason: str) -> base.Step:
        """Cut short: the reward as things stand, status "truncated"."""
        info = {"status": "truncated", "success": False, "reason": reason, "steps": self._steps}
        return base.Step([], self._episode_reward(), True, info)

    def _episode_reward(self) -> float:
        return self._total if self._reward == "sum" else self._last
