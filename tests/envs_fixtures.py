"""Small environments for the EnvPool tests: a seeded counting game, and traps that raise, hang,
exit or segfault when told to. Top-level and importable, so worker processes can build them."""

import ctypes
import os
import random
import time

from rlvr_jax.envs import base
from rlvr_jax.envs import pool as pool_lib

FACTORY = "tests.envs_fixtures:make_env"
BUILDS = []  # one entry per environment object built in this process


class CountEnv(base.Environment):
    """Say the numbers from a seeded start; `difficulty` numbers end the episode.

    Each step answers with a seeded token, so trajectories are deterministic by (seed, difficulty)
    and differ across seeds. The reward is the fraction of numbers said right.
    """

    name = "count"

    def __init__(self, *, trap_step: int | None = None, trap_reset: str = ""):
        BUILDS.append(id(self))
        self._trap_step, self._trap_reset = trap_step, trap_reset

    def reset(self, seed: int, difficulty: int) -> list[base.Message]:
        _trap(self._trap_reset)
        self._rng = random.Random(seed * 1000 + difficulty)
        self._next, self._left, self._right, self._turns = (
            self._rng.randrange(100),
            difficulty,
            0,
            0,
        )
        return [{"role": "user", "content": f"count from {self._next}, {difficulty} numbers"}]

    def step(self, action: str) -> base.Step:
        self._turns += 1
        if self._trap_step is not None and self._turns == self._trap_step:
            raise ValueError(f"trap on step {self._turns}")
        _trap(action)
        self._right += action.strip() == str(self._next)
        self._next, self._left = self._next + 1, self._left - 1
        token = self._rng.randrange(10**6)
        info = {"builds": len(BUILDS), "pid": os.getpid()}
        if self._left > 0:
            return base.Step([{"role": "tool", "content": f"next please ({token})"}], info=info)
        info.update(status="ok", success=self._right == self._turns)
        return base.Step([], self._right / self._turns, True, info)

    def finish(self, reason: str) -> base.Step:
        _trap(reason)
        reward = self._right / max(self._turns, 1)
        return base.Step([], reward, True, {"status": "truncated", "success": False})


def _trap(text: str):
    """Misbehave as the text says."""
    if text == "raise":
        raise KeyError("raised on purpose")
    if text == "hang":
        time.sleep(3600)
    if text == "exit":
        os._exit(3)
    if text == "segfault":
        ctypes.string_at(0)


class NotStepEnv(CountEnv):
    def step(self, action: str):
        return {"observation": action}


def make_env(name: str = "count", **kwargs) -> base.Environment:
    """The factory an EnvSpec names."""
    if name == "count":
        return CountEnv(**kwargs)
    if name == "not_step":
        return NotStepEnv(**kwargs)
    if name == "slow_build":
        time.sleep(kwargs.pop("build_s"))
        return CountEnv(**kwargs)
    raise ValueError(f"unknown fixture env {name!r}")


def spec(**kwargs) -> pool_lib.EnvSpec:
    return pool_lib.EnvSpec(FACTORY, kwargs)


def play(pool: pool_lib.EnvPool, episodes, *, turns: int = 10) -> list[list[base.Step]]:
    """Plays episodes to the end, answering each turn with the right number (parsed from the
    first message) and stripping pids; each episode's Steps, from its reset on."""
    ids, firsts = pool.reset(episodes)
    steps = [[s] for s in firsts]
    nxt = {eid: _start(s) for eid, s in zip(ids, firsts, strict=True) if not s.done}
    for _ in range(turns):
        live = [(i, eid) for i, eid in enumerate(ids) if not steps[i][-1].done]
        if not live:
            break
        out = pool.step([eid for _, eid in live], [str(nxt[eid]) for _, eid in live])
        for (i, eid), s in zip(live, out, strict=True):
            nxt[eid] += 1
            steps[i].append(s)
    pool.close(ids)
    return [[_strip(s) for s in ep] for ep in steps]


def _start(first: base.Step) -> int:
    return int(first.observation[0]["content"].split()[2].rstrip(","))


def _strip(step: base.Step) -> base.Step:
    info = {k: v for k, v in step.info.items() if k not in ("pid", "builds")}
    return base.Step(step.observation, step.reward, step.done, info)
