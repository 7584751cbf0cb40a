"""The Ecom-RLVE task: multi-turn episodes in the e-commerce environments (rlvr_jax/envs/ecom),
with RLVE's adaptive difficulty per environment and the C1 -> C8 curriculum.

Train examples are episode seeds; at each rollout `episode_examples` gives each one an environment
(of the current curriculum stage) and a difficulty (drawn from that environment's window [l, h],
or the fixed `ecom.difficulty`). Held-out examples are fixed (environment, seed) pairs at
`ecom.eval_difficulty`. The environments run in an EnvPool (worker processes, a timeout per call);
the episode reward is the environment's composed reward. `shape` moves each environment's
difficulty counters (frontier episodes only) and the curriculum's step count: both are the task's
checkpointed state, so a resumed run continues with the same windows. The warm start fits the
scripted experts' episodes, tokenised as the rollout tokenises (rollout.multi_turn).
"""

# pylint: disable=invalid-name
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from rlvr_jax.data import types as data_types
from rlvr_jax.envs import base as env_base
from rlvr_jax.envs import pool as pool_lib
from rlvr_jax.envs.ecom import difficulty as difficulty_lib
from rlvr_jax.envs.ecom import envs as envs_lib
from rlvr_jax.envs.ecom import experts as experts_lib
from rlvr_jax.errors import ConfigError
from rlvr_jax.rollout import multi_turn
from rlvr_jax.tasks import base
from rlvr_jax.tasks import config as task_config

SOURCES = ("ecom",)
FACTORY = "rlvr_jax.envs.ecom.envs:make_env"
EVAL_SEED0 = 1_000_000  # held-out episode seeds start here (train seeds are 0 .. train_size-1)
EXPERT_SEED0 = 2_000_000  # warm-start episode seeds


@dataclasses.dataclass(frozen=True)
class EcomState:
    """The task's checkpointed state: each environment's adaptive window and counters, and the
    number of shaped rollouts (RL steps), which sets the curriculum stage."""

    adaptive: dict[str, difficulty_lib.AdaptiveState]
    steps: int = 0


def validate(cfg: task_config.TaskConfig, processes: int = 1) -> None:
    unknown = [e for e in cfg.ecom.envs if e not in envs_lib.ENV_NAMES]
    if unknown:
        raise ConfigError(f"ecom.envs: unknown {unknown}; known: {envs_lib.ENV_NAMES}")
    if processes > 1:
        raise ConfigError(
            f"data.source='ecom' runs its episodes on one host's engine; this run has {processes} "
            "processes"
        )
    if cfg.data.eval_size < len(cfg.ecom.envs):
        raise ConfigError(
            f"data.eval_size={cfg.data.eval_size} gives no held-out episode to some of the "
            f"{len(cfg.ecom.envs)} environments in ecom.envs"
        )


class EcomTask(base.Task):
    rollout = "multi_turn"

    def __init__(self, cfg: task_config.TaskConfig, ctx: base.TaskContext | None = None):
        del ctx
        self.cfg, self.ecom = cfg, cfg.ecom
        self.train = [
            data_types.Example(f"ecom-{i}", "", "", source="ecom", meta={"seed": i})
            for i in range(cfg.data.train_size)
        ]
        per_env = cfg.data.eval_size // len(self.ecom.envs)
        self.test = [
            data_types.Example(
                f"ecom-eval-{name}-{j}",
                "",
                "",
                source="ecom",
                meta=_episode(name, EVAL_SEED0 + j, self.ecom.eval_difficulty),
            )
            for j in range(per_env)
            for name in self.ecom.envs
        ]

    # --- episodes ---------------------------------------------------------------------------

    def stage_envs(self, state: EcomState) -> tuple[str, ...]:
        """The environments trained at this point of the curriculum."""
        if not self.ecom.curriculum_every:
            return tuple(self.ecom.envs)
        stage = state.steps // self.ecom.curriculum_every
        return difficulty_lib.curriculum_envs(stage, tuple(self.ecom.envs)) or tuple(self.ecom.envs)

    def episode_examples(self, examples, state, key):
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
        names = self.stage_envs(state)
        out = []
        for ex in examples:
            if "env" in ex.meta:  # held-out: already fixed
                out.append(ex)
                continue
            name = names[rng.integers(len(names))]
            d = self.ecom.difficulty
            if self.ecom.adaptive:
                d = difficulty_lib.sample_difficulty(state.adaptive[name], rng)
            out.append(dataclasses.replace(ex, meta=_episode(name, ex.meta["seed"], d)))
        return out

    @contextlib.contextmanager
    def scorer(self) -> Iterator[multi_turn.Pooled]:
        """The environments' worker pool, as the rollout's `Episodes`."""
        catalog_seed = self.ecom.catalog_seed

        def spec_of(ex):
            spec = pool_lib.EnvSpec(FACTORY, {"name": ex.meta["env"], "catalog_seed": catalog_seed})
            return spec, int(ex.meta["seed"]), int(ex.meta["difficulty"])

        with pool_lib.EnvPool(
            self.ecom.workers, self.ecom.timeout_s, preload=("rlvr_jax.envs.ecom.envs",)
        ) as pool:
            yield multi_turn.Pooled(pool, spec_of)

    # --- rewards and difficulty ---------------------------------------------------------------

    def init_state(self) -> EcomState:
        return EcomState({name: difficulty_lib.AdaptiveState() for name in self.ecom.envs})

    def shape(self, examples, verdicts, G, state: EcomState) -> base.Shaped:
        """The environments' rewards; each frontier episode moves its environment's counters."""
        adaptive = dict(state.adaptive)
        if self.ecom.adaptive:
            for i, v in enumerate(verdicts):
                meta = examples[i // G].meta
                if v.status == env_base.STATUSES[2]:  # env_error: says nothing about the policy
                    continue
                adaptive[meta["env"]] = difficulty_lib.update(
                    adaptive[meta["env"]],
                    int(meta["difficulty"]),
                    bool(v.correct),
                    tau_num=self.ecom.tau_num,
                    tau_acc=self.ecom.tau_acc,
                    d_delta=self.ecom.d_delta,
                )
        new = EcomState(adaptive, state.steps + 1)
        metrics = multi_turn.verdict_metrics(examples, verdicts, "ecom")
        for name, s in adaptive.items():
            metrics[f"ecom/{name}/window_l"] = float(s.l)
            metrics[f"ecom/{name}/window_h"] = float(s.h)
        metrics["ecom/stage_envs"] = float(len(self.stage_envs(new)))
        rewards_B = np.asarray([v.reward for v in verdicts], np.float32)
        return base.Shaped(rewards_B, new, metrics)

    def state_to_record(self, state: EcomState) -> dict[str, Any]:
        adaptive = difficulty_lib.to_record(state.adaptive)
        return {"ecom": {"adaptive": adaptive, "steps": state.steps}}

    def state_from_record(self, record: dict[str, Any]) -> EcomState:
        if "ecom" not in record:
            return self.init_state()
        adaptive = self.init_state().adaptive
        adaptive.update(difficulty_lib.from_record(record["ecom"]["adaptive"]))
        return EcomState(adaptive, int(record["ecom"]["steps"]))

    # --- warm start ---------------------------------------------------------------------------

    def warm_rows(self, tok, seed: int, max_tokens: int | None = None) -> list[tuple]:
        """The scripted experts' solved episodes (every environment in turn, difficulty uniform
        in [0, ecom.expert_max_difficulty]), tokenised as the rollout would have; those longer
        than `max_tokens` (the rollout's episode budget) are left out."""
        rng = np.random.default_rng(seed)
        envs = {name: envs_lib.make_env(name, self.ecom.catalog_seed) for name in self.ecom.envs}
        rows = []
        for i in range(self.ecom.expert_episodes):
            name = self.ecom.envs[i % len(self.ecom.envs)]
            d = int(rng.integers(self.ecom.expert_max_difficulty + 1))
            messages, final = experts_lib.run_episode(
                envs[name], experts_lib.expert_for(name), EXPERT_SEED0 + i, d
            )
            if not final.info.get("success"):
                continue  # only solved episodes teach
            row = multi_turn.transcript_tokens(tok, *split_turns(messages))
            if max_tokens is None or len(row[0]) + len(row[1]) <= max_tokens:
                rows.append(row)
        return rows


def split_turns(
    messages: Sequence[env_base.Message],
) -> tuple[list[env_base.Message], list[tuple[str, list[env_base.Message]]]]:
    """A played transcript as (first messages, [(assistant text, observation that followed)])."""
    first_len = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    turns: list[tuple[str, list[env_base.Message]]] = []
    for m in messages[first_len:]:
        if m["role"] == "assistant":
            turns.append((m["content"], []))
        else:
            turns[-1][1].append(m)
    return list(messages[:first_len]), turns


def _episode(name: str, seed: int, difficulty: int) -> dict[str, Any]:
    return {"env": name, "seed": int(seed), "difficulty": int(difficulty), "group": name}
