"""The turn loop every Ecom-RLVE environment shares: parse, run tools, answer as the user, score.

Which errors end an episode (hard fail, reward -1) and which the policy just sees:
- hard fail: a turn over MAX_TURN_CHARS characters; malformed tool-call markup (bad JSON, a call
  without a name or with non-object arguments, unbalanced tags); an unknown tool name; an empty
  turn; the MAX_INVALID-th invalid tool call of the episode.
- tool error ("error: ..." in a tool message, counted in invalid_tool_calls): wrong argument names,
  types or ranges, unknown ids, unmet preconditions (not in cart, not eligible), a bad
  answer.submit, and calls past the per-turn budget B_tool (one error for the lot, not run).
Nothing the policy writes raises.
"""

from __future__ import annotations

import abc
import dataclasses
import zlib
from typing import Any

import numpy as np

from rlvr_jax.envs import actions, base
from rlvr_jax.envs.ecom import catalog as catalog_lib
from rlvr_jax.envs.ecom import difficulty as difficulty_lib
from rlvr_jax.envs.ecom import retrieval, rewards, tools, user_sim

MAX_TURN_CHARS = 4000
MAX_INVALID = 3
SUBMIT = "answer.submit"


@dataclasses.dataclass(frozen=True)
class Score:
    r_task: float
    success: bool
    output_ids: tuple[str, ...] = ()  # product ids the answer names (for r_hall)


@dataclasses.dataclass(frozen=True)
class Built:
    """What an environment's `build` makes for one episode."""

    goal: Any  # the environment's own frozen goal
    user: user_sim.UserSim
    goal_after_switch: Any = None  # the goal once the user's switch is delivered


@dataclasses.dataclass
class _Episode:
    theta: difficulty_lib.Theta
    session: tools.Session
    built: Built
    goal: Any
    turns: int = 0
    clarify_turns: int = 0
    answer: dict[str, Any] | None = None
    done: bool = False
    last_act: str = "inform"


class EcomEnv(base.Environment, abc.ABC):
    """An Ecom-RLVE environment: subclasses say which tools it has, build the episode's goal and
    user, check the final answer's arguments and score it."""

    name = "ecom"
    tool_names: tuple[str, ...] = ()
    submit_spec: dict[str, tuple[type, bool]] = {}
    submit_help = ""  # how the system message describes answer.submit's arguments
    system_extra = ""

    def __init__(self, catalog_seed: int = 0):
        self.cat = catalog_lib.make_catalog(catalog_seed)
        retrieval.product_index(self.cat)  # build the indexes now, not inside the first step
        retrieval.policy_index(self.cat)
        self._ep: _Episode | None = None

    # --- Subclass hooks ---
    @abc.abstractmethod
    def build(self, rng: np.random.Generator, th: difficulty_lib.Theta, s: tools.Session) -> Built:
        """The episode's goal and user (may set the session's user, orders and oos overlay)."""

    @abc.abstractmethod
    def score(self, goal: Any, s: tools.Session, answer: dict[str, Any] | None) -> Score:
        """r_task and IsCorrect of what exists (answer None: nothing was submitted)."""

    def check_submit(self, args: dict[str, Any]) -> None:
        """Raises tools.ToolError when answer.submit's arguments are unusable."""
        tools.check_args(self.submit_spec, args)

    # --- The interface ---
    def reset(self, seed: int, difficulty: int) -> list[base.Message]:
        th = difficulty_lib.theta(difficulty)
        salt = zlib.crc32(self.name.encode())
        rng = np.random.default_rng([seed, difficulty, salt])
        session = tools.Session(
            self.cat, np.random.default_rng([seed, difficulty, salt, 1]), th.top_k, th.eps_rank
        )
        built = self.build(rng, th, session)
        self._ep = _Episode(th, session, built, built.goal)
        return [
            {"role": "system", "content": self._system(th)},
            {"role": "user", "content": built.user.opening().text},
        ]

    def step(self, action: str) -> base.Step:
        ep = self._ep
        if ep is None or ep.done:
            return base.env_error("step() without an episode in progress")
        ep.turns += 1
        if len(action) > MAX_TURN_CHARS:
            return self._hard_fail(f"turn longer than {MAX_TURN_CHARS} characters")
        parsed = actions.parse_action(action)
        if parsed.errors:
            return self._hard_fail(parsed.errors[0])
        if not parsed.tool_calls:
            if not parsed.message:
                return self._hard_fail("empty turn")
            act = ep.built.user.reply(parsed.message)
            ep.last_act = act.act
            if act.act == "clarify":
                ep.clarify_turns += 1  # clarification turns are not charged to efficiency
            if act.act == "quit":
                return self._end("user quit")
            return self._next([{"role": "user", "content": act.text}])
        for call in parsed.tool_calls:
            if call.name != SUBMIT and call.name not in self.tool_names:
                return self._hard_fail(f"unknown tool {call.name}")
        obs = []
        s = ep.session
        for i, call in enumerate(parsed.tool_calls):
            if i == ep.theta.b_tool:
                s.invalid_calls += 1
                extra = len(parsed.tool_calls) - i
                msg = f"error: at most {i} tool calls per turn; {extra} not run"
                obs.append(_tool(call.name, msg))
                break
            if call.name == SUBMIT:
                s.tool_calls += 1
                try:
                    self.check_submit(call.arguments)
                except tools.ToolError as e:
                    s.invalid_calls += 1
                    obs.append(_tool(SUBMIT, f"error: {e}"))
                    continue
                ep.answer = dict(call.arguments)
                return self._end("submitted")
            obs.append(_tool(call.name, tools.call_tool(s, call.name, call.arguments)))
        if s.invalid_calls >= MAX_INVALID:
            return self._hard_fail(f"{s.invalid_calls} invalid tool calls")
        switch = ep.built.user.maybe_switch()
        if switch is not None:
            ep.goal, ep.last_act = ep.built.goal_after_switch, switch.act
            obs.append({"role": "user", "content": switch.text})
        return self._next(obs)

    def finish(self, reason: str) -> base.Step:
        if self._ep is None or self._ep.done:
            return super().finish(reason)
        if reason == base.OVERLONG_TURN:
            # A turn that never ended is an over-long turn (a hard fail, as one over
            # MAX_TURN_CHARS): scoring it as merely truncated would pay a policy to ramble past
            # its turn budget rather than risk a malformed call.
            return self._hard_fail("turn ran out of tokens without ending")
        return self._end(reason, status="truncated")

    # --- Internals ---
    def _system(self, th: difficulty_lib.Theta) -> str:
        sigs = " ".join(tools.signature(n) for n in self.tool_names)
        return (
            "You are a shop assistant. Call tools as "
            '<tool_call>{"name":...,"arguments":{...}}</tool_call>, '
            f"at most {th.b_tool} per turn; plain text goes to the user. Tools: {sigs}. "
            + (self.system_extra + " " if self.system_extra else "")
            + f"Finish with answer.submit({self.submit_help})."
        )

    def _next(self, obs: list[base.Message]) -> base.Step:
        if self._ep.turns >= self._ep.theta.t_max:
            return self._end("turn limit")
        return base.Step(obs)

    def _info(self, score: Score, status: str, reason: str) -> dict[str, Any]:
        ep = self._ep
        s = ep.session
        return {
            "status": status,
            "success": bool(score.success) and status != "hard_fail",
            "reason": reason,
            "env": self.name,
            "difficulty": ep.theta.d,
            "r_task": score.r_task,
            "r_eff": rewards.efficiency(ep.turns - ep.clarify_turns, ep.theta.t_max),
            "r_hall": rewards.hallucination(score.output_ids, s.surfaced),
            "turns": ep.turns,
            "clarify_turns": ep.clarify_turns,
            "tool_calls": s.tool_calls,
            "invalid_tool_calls": s.invalid_calls,
            "hallucinated_ids": sorted({p for p in score.output_ids if p not in s.surfaced}),
            "submitted": ep.answer is not None,
            "user_act": ep.last_act,
        }

    def _end(self, reason: str, status: str = "ok") -> base.Step:
        ep = self._ep
        ep.done = True
        score = self.score(ep.goal, ep.session, ep.answer)
        info = self._info(score, status, reason)
        reward = rewards.compose(info["r_task"], info["r_eff"], info["r_hall"])
        return base.Step([], reward, True, info)

    def _hard_fail(self, reason: str) -> base.Step:
        ep = self._ep
        ep.done = True
        info = self._info(self.score(ep.goal, ep.session, ep.answer), "hard_fail", reason)
        return base.Step([], rewards.HARD_FAIL_REWARD, True, info)


def _tool(name: str, content: str) -> base.Message:
    return {"role": "tool", "name": name, "content": content}
