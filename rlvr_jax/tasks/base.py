"""The Task seam: what the loop and the evaluator need from a task kind, and nothing more.

A task owns its examples, its scorer (a context manager that owns its worker pools or sandbox),
its reward shaping with the shaping's own checkpointable state (POW3R's memory is the rubric
task's), and its metrics. The loop and the evaluator call these and never test a task's kind;
`rlvr_jax/tasks/__init__.py` picks the task by `data.source`.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from rlvr_jax import sampling
from rlvr_jax.data import types as data_types
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.rewards import pool as pool_lib
from rlvr_jax.rollout import types as rollout_types

ScoreFn = rollout_types.ScoreFn


@dataclasses.dataclass(frozen=True)
class TaskContext:
    """What a task may use besides the config: the policy's tokenizer, model and sampler (a judge
    model runs on them)."""

    tok: tokenizer_lib.Tokenizer
    model_cfg: config_lib.ModelConfig
    sampling_cfg: sampling.SamplingConfig
    mesh: jax.sharding.Mesh  # the sampler's mesh
    policy_params: Callable[[], params_lib.Params]  # the current weights, on the sampler's mesh
    # generate(params, prompt ids, model_cfg, sampling_cfg) -> sampling.SampleOutput (numpy)
    generate: Callable[..., sampling.SampleOutput]
    processes: int = 1


@dataclasses.dataclass(frozen=True)
class Shaped:
    """One rollout's training rewards, the shaping's state for the next step, and metrics."""

    rewards_B: np.ndarray  # float32
    state: Any
    metrics: dict[str, float]


class Task:
    """The interface; a task kind subclasses it and overrides what it needs.

    `train` and `test` are the examples; `scorer()` yields a ScoreFn; `shape` turns one rollout's
    verdicts into training rewards (default: each verdict's own reward); `init_state`,
    `state_to_record` and `state_from_record` make the shaping's state part of the checkpoint.
    """

    train: list[data_types.Example]
    test: list[data_types.Example]
    # How the loop samples the task: "single_turn" (one completion per prompt, scored by the
    # scorer's ScoreFn) or "multi_turn" (episodes against environments: the scorer yields their
    # `rollout.multi_turn.Episodes`, and `episode_examples` says which episode each example is).
    rollout: str = "single_turn"

    def episode_examples(
        self, examples: Sequence[data_types.Example], state: Any, key: jax.Array
    ) -> list[data_types.Example]:
        """Multi-turn: the examples as episodes (e.g. their environment and difficulty, from the
        shaping state); `key` is the rollout's, for any random choice."""
        del state, key
        return list(examples)

    def warm_rows(
        self, tok: tokenizer_lib.Tokenizer, seed: int, max_tokens: int | None = None
    ) -> list | None:
        """The warm start's token rows ((prompt, completion, loss mask) each, at most `max_tokens`
        long), or None to warm start on the examples' worked solutions."""
        del tok, seed, max_tokens
        return None

    def scorer(self) -> contextlib.AbstractContextManager[ScoreFn]:
        raise NotImplementedError

    def init_state(self) -> Any:
        return None

    def shape(
        self,
        examples: Sequence[data_types.Example],
        verdicts: Sequence[Any],
        G: int,
        state: Any,
    ) -> Shaped:
        """Training rewards of a group-major rollout (rows p*G .. p*G+G-1 are prompt p's)."""
        del examples, G
        rewards_B = np.asarray([v.reward for v in verdicts], np.float32)
        return Shaped(rewards_B, state, self.metrics(verdicts))

    def metrics(self, verdicts: Sequence[Any]) -> dict[str, float]:
        """Task metrics of this process's verdicts (logged beside the rollout's)."""
        del verdicts
        return {}

    def eval_metrics(
        self, examples: Sequence[data_types.Example], verdicts: Sequence[Any]
    ) -> dict[str, float]:
        """Held-out metrics beyond the evaluator's own (e.g. accuracy per group), from the
        greedy pass's examples and verdicts, one each (this process's share on a mesh)."""
        del examples, verdicts
        return {}

    def state_to_record(self, state: Any) -> dict[str, Any]:
        """The shaping state as JSON entries of the checkpoint record ({} when stateless)."""
        del state
        return {}

    def state_from_record(self, record: dict[str, Any]) -> Any:
        del record
        return self.init_state()


@contextlib.contextmanager
def no_resources(score_fn: ScoreFn) -> Iterator[ScoreFn]:
    """A scorer that owns nothing (in-process scoring)."""
    yield score_fn


@contextlib.contextmanager
def pooled(verifier, preload: tuple[str, ...], make_score_fn) -> Iterator[ScoreFn]:
    """A scorer that runs in a verifier pool (`verifier.workers`, hard `verifier.timeout_s` per
    item): `make_score_fn(pool)` is the ScoreFn, the pool lives as long as the context."""
    with pool_lib.VerifierPool(verifier.workers, verifier.timeout_s, preload=preload) as pool:
        yield make_score_fn(pool)
