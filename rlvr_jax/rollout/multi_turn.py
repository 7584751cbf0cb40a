"""Multi-turn rollouts: episodes against host-side environments, on the engine's slot API.

Every episode lives in one engine slot from its first prompt to its end. The policy samples a turn
until its end-of-turn token (or the turn budget); the host decodes the turn's tokens, steps the
episode's environment with the text, renders the answer (tool results, the simulated user) with the
chat template's own roles, writes those tokens onto the slot's live cache (`Engine.append`) and
lets the slot sample again (`Engine.resume`). The history is never re-prefilled, and never
re-tokenised: the trained completion is the exact sequence of sampled and observation tokens, the
observations masked out of the loss and without log-probs. All P x G episodes are in flight at
once through S slots; an ended episode frees its slot for the next.

An episode ends when its environment says done, at `max_turns` turns, when its next turn would not
fit (`episode_tokens` of context or `sampled_tokens` sampled), or on a turn that hit `turn_tokens`
without its end-of-turn token; the last three call `finish(reason)`, so the environment scores
what exists. Its reward is the environment's, one per episode.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import jax
import numpy as np

from rlvr_jax import sampling
from rlvr_jax.data import types as data_types
from rlvr_jax.engine import engine as engine_lib
from rlvr_jax.envs import base as env_base
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.rollout import types as types_lib

_PLACEHOLDER = "\x00turn\x00"  # stands for an assistant turn while rendering what follows it
# Padded prompt and episode lengths: finer than powers of two, since attention over an episode's
# padding is most of a small model's train step (the train step compiles once per pair used).
BUCKETS = (64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MultiTurnConfig:
    """Per-episode budgets (the environment may end an episode sooner)."""

    max_turns: int = 8  # assistant turns
    turn_tokens: int = 64  # sampled tokens per turn
    sampled_tokens: int = 256  # sampled tokens per episode, over all its turns
    episode_tokens: int = 1024  # the whole context: prompt, turns and observations

    def __post_init__(self):
        for name in ("max_turns", "turn_tokens", "sampled_tokens", "episode_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"MultiTurnConfig.{name}={getattr(self, name)} must be >= 1")
        if self.turn_tokens > self.sampled_tokens:
            raise ValueError(
                f"MultiTurnConfig.turn_tokens={self.turn_tokens} exceeds "
                f"sampled_tokens={self.sampled_tokens}"
            )


class Episodes(Protocol):
    """The environments' side, batched by episode index (an EnvPool, or environments in-process).

    `reset(examples)` starts one episode per example (replacing the previous call's) and returns
    each one's first Step: its first messages as the observation, or a done env_error; `step(idx,
    actions)` and `finish(idx, reason)` answer episodes idx[i]; none of them raises for an
    environment's error (that episode ends with status env_error). `close()` ends the call.
    """

    def reset(self, examples: Sequence[data_types.Example]) -> list[env_base.Step]: ...

    def step(self, idx: Sequence[int], actions: Sequence[str]) -> list[env_base.Step]: ...

    def finish(self, idx: Sequence[int], reason: str) -> list[env_base.Step]: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class EpisodeVerdict:
    """An episode's outcome, shaped like a verifier's verdict (the loop's rollout metrics)."""

    reward: float
    correct: bool  # the environment's IsCorrect
    status: str  # env_base.STATUSES
    turns: int
    info: dict[str, Any]

    @property
    def verifier_error(self) -> bool:
        return self.status == "env_error"


class InProcess:
    """`Episodes` over environment objects in this process (tests, debugging): a raising
    environment ends its episode as env_error; nothing bounds a hang."""

    def __init__(self, make_env):
        self.make_env, self.envs = make_env, []

    def reset(self, examples):
        self.envs = [self.make_env(ex) for ex in examples]
        seed_of = lambda ex: (int(ex.meta["seed"]), int(ex.meta.get("difficulty", 0)))
        return [
            self._call(i, lambda e, ex=ex: env_base.Step(e.reset(*seed_of(ex))))
            for i, ex in enumerate(examples)
        ]

    def _call(self, i, fn):
        try:
            return fn(self.envs[i])
        except Exception as e:  # noqa: BLE001 - an environment's bug ends its episode, not the run
            return env_base.env_error(f"{type(e).__name__}: {e}")

    def step(self, idx, actions):
        return [self._call(i, lambda e, a=a: e.step(a)) for i, a in zip(idx, actions, strict=True)]

    def finish(self, idx, reason):
        return [self._call(i, lambda e: e.finish(reason)) for i in idx]

    def close(self):
        self.envs = []


class Pooled:
    """`Episodes` in an EnvPool's worker processes (a per-step timeout; a hang or a crash ends
    only the episodes of that worker). `spec_of(example)` -> (EnvSpec, seed, difficulty)."""

    def __init__(self, pool, spec_of):
        self.pool, self.spec_of, self.ids = pool, spec_of, []

    def reset(self, examples):
        self.close()
        self.ids, first = self.pool.reset([self.spec_of(ex) for ex in examples])
        return first

    def step(self, idx, actions):
        return self.pool.step([self.ids[i] for i in idx], actions)

    def finish(self, idx, reason):
        return self.pool.finish([self.ids[i] for i in idx], reason)

    def close(self):
        if self.ids:
            self.pool.close(self.ids)
        self.ids = []


def observation_tokens(
    tok: tokenizer_lib.Tokenizer, messages: Sequence[env_base.Message], stop_text: str
) -> list[int]:
    """The tokens that follow an assistant turn's end-of-turn token when `messages` are appended:
    what the chat template renders between that token and the next assistant turn's first token
    (e.g. ChatML's "\\n<|im_start|>tool\\n...<|im_end|>\\n<|im_start|>assistant\\n")."""
    turn = [{"role": "assistant", "content": _PLACEHOLDER}]
    text = tok.render_chat(turn + [dict(m) for m in messages], add_generation_prompt=True)
    end = text.index(_PLACEHOLDER) + len(_PLACEHOLDER)
    if not text.startswith(stop_text, end):
        raise ValueError(
            f"the chat template does not end an assistant turn with {stop_text!r}: multi-turn "
            "rollouts need the turn's stop token to be the template's end of turn"
        )
    return tok.encode(text[end + len(stop_text) :])


def transcript_tokens(
    tok: tokenizer_lib.Tokenizer,
    first: Sequence[env_base.Message],
    turns: Sequence[tuple[str, Sequence[env_base.Message]]],
) -> tuple[list[int], list[int], list[bool]]:
    """A played episode as the rollout tokenises it: (prompt, completion, loss mask). `turns` are
    (assistant text, the observation that followed it; empty after the last turn). Each turn is
    its text's tokens plus the end-of-turn token (trained on), each observation the template's
    tokens between turns (context). For warm starts on scripted episodes."""
    stop_id = tok.eos_ids[0]
    stop_text = tok.decode([stop_id])
    completion, mask = [], []
    for text, obs in turns:
        ids = tok.encode(text) + [stop_id]
        completion += ids
        mask += [True] * len(ids)
        if obs:
            ids = observation_tokens(tok, obs, stop_text)
            completion += ids
            mask += [False] * len(ids)
    return tok.apply_chat_template(list(first)), completion, mask


@dataclasses.dataclass
class _Episode:
    slot: int = -1
    turns: int = 0
    turn_start: int = 0  # sampled-token count where this turn began
    pieces: list = dataclasses.field(default_factory=list)  # (tokens, logps, cert, is_policy)
    final: env_base.Step | None = None
    stopped: bool = True


def sample(
    params,
    tok: tokenizer_lib.Tokenizer,
    examples: Sequence[data_types.Example],
    episodes: Episodes,
    key: jax.Array,
    *,
    G: int,
    model_cfg: config_lib.ModelConfig,
    sampling_cfg: sampling.SamplingConfig,
    engine_cfg: engine_lib.EngineConfig,
    mt: MultiTurnConfig,
    engine: engine_lib.Engine | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[types_lib.Rollout, engine_lib.Engine]:
    """G episodes per example (group-major rows: p*G + g) played to their end; returns the
    rollout (prompt = the first messages, completion = every later token, loss mask on the
    policy's) and the engine, to pass back in for its buffers and compiled shapes."""
    R = len(examples) * G
    rows = [ex for ex in examples for _ in range(G)]
    eps = [_Episode() for _ in range(R)]
    prompts = [[] for _ in range(R)]
    for e, step in enumerate(episodes.reset(rows)):
        if step.done:  # the environment failed to start: the episode ends empty
            eps[e].final = step
        else:
            prompts[e] = tok.apply_chat_template(step.observation)
    for p in range(len(examples)):
        started = [prompts[p * G + g] for g in range(G) if eps[p * G + g].final is None]
        if any(x != started[0] for x in started):
            raise ValueError(f"example {p}: its G episodes start differently (seed the env)")
        if started:  # an episode that failed to start still needs a prompt row
            for g in range(G):
                prompts[p * G + g] = prompts[p * G + g] or started[0]
    if not any(prompts):
        prompts = [[tok.pad_id]] * R
    prompts = [pr or next(x for x in prompts if x) for pr in prompts]
    if not tok.eos_ids:
        raise ValueError("multi-turn rollouts need an end-of-turn token (tokenizer eos_ids)")
    stop_text = tok.decode([tok.eos_ids[0]])
    stops_RxX = sampling.stop_table(R, sampling_cfg)
    To, Tctx = mt.sampled_tokens, mt.episode_tokens
    if (
        engine is None
        or engine.capacity != Tctx
        or engine.To != To
        or engine.ecfg != engine_cfg
        or engine.cfg != engine_lib.compiled_part(sampling_cfg)  # e.g. greedy eval vs sampling
    ):
        engine = engine_lib.Engine(
            model_cfg,
            sampling_cfg,
            engine_cfg,
            capacity=Tctx,
            sampled=To,
            stop_width=stops_RxX.shape[1],
            mesh=mesh,
        )
    u_RxTo = engine_lib._uniforms_jit(key, (R, To))  # noqa: SLF001 - the engine's row streams
    slot_ep = np.full(engine_cfg.slots, -1, np.int64)
    pending = collections.deque(range(len(examples)))  # groups not yet admitted

    def admit():
        """Opens whole groups while their G slots are free (one prefill per group)."""
        take = []
        while pending and len(engine.free_slots) >= G * (len(take) + 1):
            p = pending.popleft()
            if any(eps[p * G + g].final is None for g in range(G)):
                take.append(p)
        if not take:
            return
        *_, staged = engine.prefill(params, [prompts[p * G] for p in take])  # every chunk
        free = list(engine.free_slots)
        slot_ids, src, idx = [], [], []
        for j, p in enumerate(take):
            for e in range(p * G, p * G + G):
                if eps[e].final is None:
                    slot_ids.append(free.pop(0))
                    src.append(j)
                    idx.append(e)
        budgets = [min(mt.turn_tokens, Tctx - len(prompts[e])) for e in idx]
        engine.open(staged, slot_ids, src, budgets, stops_RxX[idx], u_RxTo[np.asarray(idx)])
        for s, e in zip(slot_ids, idx, strict=True):
            eps[e].slot, slot_ep[s] = s, e

    def end(e: int, step: env_base.Step) -> None:
        eps[e].final = step
        engine.free([eps[e].slot])
        slot_ep[eps[e].slot] = -1

    admit()
    while pending or engine.live_S.any():
        if not engine.live_S.any():
            admit()
            continue
        ended = engine.step(params)
        if not len(ended):
            continue
        turns = engine.sampled(ended, [eps[slot_ep[s]].turn_start for s in ended])
        acting, actions, cut = [], [], collections.defaultdict(list)
        for s, (tokens, logps, cert, stopped) in zip(ended, turns, strict=True):
            e = int(slot_ep[s])
            ep = eps[e]
            ep.pieces.append((tokens, logps, cert, True))
            ep.turns += 1
            ep.stopped = bool(stopped)
            if not stopped:
                cut[env_base.OVERLONG_TURN].append(e)  # the turn ran out of tokens mid-way
                continue
            acting.append(e)
            actions.append(tok.decode(tokens[:-1]))  # without the end-of-turn token
        resume_slots, resume_budgets, obs_lists = [], [], []
        for e, step in zip(acting, episodes.step(acting, actions) if acting else [], strict=True):
            ep = eps[e]
            if step.done:
                end(e, step)
                continue
            obs = observation_tokens(tok, step.observation, stop_text)
            used = int(engine.len_S[ep.slot]) + len(obs)
            count = int(engine.count_S[ep.slot])
            room = min(mt.turn_tokens, To - count, Tctx - used)
            if ep.turns >= mt.max_turns:
                cut[env_base.TURN_LIMIT].append(e)
            elif room < 1:
                cut[env_base.TOKEN_BUDGET].append(e)
            else:
                ep.pieces.append((np.asarray(obs, np.int32), None, None, False))
                ep.turn_start = count
                resume_slots.append(ep.slot)
                resume_budgets.append(room)
                obs_lists.append(obs)
        for reason, idx in cut.items():
            for e, step in zip(idx, episodes.finish(idx, reason), strict=True):
                end(e, step)
        if resume_slots:
            engine.append(params, resume_slots, obs_lists)
            stops = stops_RxX[slot_ep[np.asarray(resume_slots)]]
            engine.resume(params, resume_slots, resume_budgets, stops)
        admit()
    episodes.close()
    return _to_rollout(tok, examples, prompts, eps, sampling_cfg), engine


def _to_rollout(tok, examples, prompts, eps, cfg: sampling.SamplingConfig) -> types_lib.Rollout:
    R = len(eps)
    cfg = dataclasses.replace(cfg, prompt_buckets=BUCKETS, completion_buckets=BUCKETS)
    prompt_BxTp, prompt_mask_BxTp = sampling.pad_prompts(prompts, cfg)
    lengths_R = np.asarray([sum(len(p[0]) for p in ep.pieces) for ep in eps], np.int32)
    Tc = sampling.bucket(max(int(lengths_R.max(initial=1)), 1), cfg.completion_buckets, "episode")
    tokens = np.full((R, Tc), cfg.pad_id, np.int32)
    logps = np.zeros((R, Tc), np.float32)
    cert = np.zeros((R, Tc), np.float32)
    policy = np.zeros((R, Tc), bool)
    verdicts, texts = [], []
    for r, ep in enumerate(eps):
        t = 0
        for toks, lp, ce, is_policy in ep.pieces:
            n = len(toks)
            tokens[r, t : t + n] = toks
            if is_policy:
                logps[r, t : t + n], cert[r, t : t + n], policy[r, t : t + n] = lp, ce, True
            t += n
        final = ep.final or env_base.Step([], 0.0, True, {"status": "truncated"})
        info = dict(final.info)
        verdicts.append(
            EpisodeVerdict(
                reward=float(final.reward),
                correct=bool(info.get("success", False)),
                status=str(info.get("status", "ok")),
                turns=ep.turns,
                info=info,
            )
        )
        texts.append(tok.decode(tokens[r, : lengths_R[r]]))
    out = sampling.SampleOutput(
        prompt_BxTp=prompt_BxTp,
        prompt_mask_BxTp=prompt_mask_BxTp,
        tokens_BxTc=tokens,
        mask_BxTc=np.arange(Tc)[None, :] < lengths_R[:, None],
        logps_BxTc=logps,
        certainty_BxTc=cert,
        lengths_B=lengths_R,
        stopped_B=np.asarray([ep.stopped for ep in eps], bool),
    )
    return types_lib.Rollout(
        examples=list(examples),
        sample=out,
        texts=texts,
        rewards_B=np.asarray([v.reward for v in verdicts], np.float32),
        correct_B=np.asarray([v.correct for v in verdicts], bool),
        verdicts=verdicts,
        policy_mask_BxTc=policy,
    )


class MultiTurn:
    """The loop's rollout engine for multi-turn tasks: `(params, examples, key, sampling_cfg,
    episodes) -> Rollout`, keeping the engine (its buffers, compiled shapes) between calls.
    `prepare(examples, key)` sets each example's episode (e.g. its environment and difficulty)."""

    def __init__(self, tok, model_cfg, G, *, engine_cfg, mt, mesh=None, prepare=None):
        self.tok, self.model_cfg, self.G = tok, model_cfg, G
        self.engine_cfg, self.mt, self.mesh = engine_cfg, mt, mesh
        self.prepare = prepare or (lambda examples, key: list(examples))
        self._engines = {}  # one per sampling config (greedy eval, sampled rollouts)

    def __call__(self, params, examples, key, sampling_cfg, episodes, G=None):
        if self.mesh is not None and jax.process_count() > 1:
            raise ValueError("multi-turn rollouts run in one process")
        which = engine_lib.compiled_part(sampling_cfg)
        ro, self._engines[which] = sample(
            params,
            self.tok,
            self.prepare(examples, key),
            episodes,
            key,
            G=G or self.G,
            model_cfg=self.model_cfg,
            sampling_cfg=sampling_cfg,
            engine_cfg=self.engine_cfg,
            mt=self.mt,
            engine=self._engines.get(which),
            mesh=self.mesh,
        )
        return ro


def episode_metrics(ro: types_lib.Rollout, prefix: str) -> dict[str, float]:
    """`verdict_metrics` of a multi-turn rollout."""
    return verdict_metrics(ro.examples, ro.verdicts, prefix)


def verdict_metrics(
    examples: Sequence[data_types.Example], verdicts: Sequence[EpisodeVerdict], prefix: str
) -> dict[str, float]:
    """Reward, success, turns and endings of episodes (group-major: len(verdicts) // len(examples)
    per example), overall and per example group (`meta["group"]`, e.g. the environment), plus the
    mean of every numeric `info` entry and tool calls per turn."""
    G = len(verdicts) // max(len(examples), 1)
    groups = [str((ex.meta or {}).get("group", "")) for ex in examples for _ in range(G)]
    out: dict[str, float] = {}
    names = sorted(set(groups) - {""})
    for name in [*names, None]:
        idx = [i for i, g in enumerate(groups) if name is None or g == name]
        if not idx:
            continue
        vs = [verdicts[i] for i in idx]
        key = prefix if name is None else f"{prefix}/{name}"
        out[f"{key}/reward"] = float(np.mean([v.reward for v in vs]))
        out[f"{key}/success"] = float(np.mean([v.correct for v in vs]))
        out[f"{key}/turns"] = float(np.mean([v.turns for v in vs]))
        for status in env_base.STATUSES[1:]:
            out[f"{key}/{status}"] = float(np.mean([v.status == status for v in vs]))
        numeric = collections.defaultdict(list)
        for v in vs:
            for k, x in v.info.items():
                if isinstance(x, int | float | bool) and k not in ("reward", "success", "turns"):
                    numeric[k].append(float(x))
        for k, xs in numeric.items():
            out[f"{key}/{k}"] = float(np.mean(xs))
        if "tool_calls" in numeric:
            out[f"{key}/tool_calls_per_turn"] = float(
                np.sum(numeric["tool_calls"]) / max(sum(v.turns for v in vs), 1)
            )
    return out
