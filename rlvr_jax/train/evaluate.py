"""Held-out evaluation: greedy accuracy, and pass@1 / unbiased pass@k from k samples per prompt.

On a mesh, each process evaluates its contiguous share of the prompts and the per-prompt results
are gathered, so every process returns the metrics of all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from rlvr_jax import distributed, sampling
from rlvr_jax.data import types as data_types
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.objectives import metrics as metrics_lib
from rlvr_jax.rollout import multi_turn, single_turn


class Evaluator:
    """Scores a policy on fixed held-out prompts with the training verifier."""

    def __init__(
        self,
        tok: tokenizer_lib.Tokenizer,
        examples: Sequence[data_types.Example],
        *,
        model_cfg: config_lib.ModelConfig,
        system: str | None,
        sampling_cfg: sampling.SamplingConfig,
        k: int,
        mesh: Mesh | None = None,
        breakdown: Callable[[list, list], dict[str, float]] | None = None,
    ):
        examples = list(examples)
        if mesh is not None:  # this process's share (setup.validate checks that it divides)
            n = len(examples) // jax.process_count()
            examples = examples[jax.process_index() * n : (jax.process_index() + 1) * n]
        self.tok, self.examples, self.model_cfg = tok, examples, model_cfg
        self.system, self.sampling_cfg, self.k, self.mesh = system, sampling_cfg, k, mesh
        # The task's own held-out metrics of the greedy pass (Task.eval_metrics), e.g. per group.
        self.breakdown = breakdown

    def __call__(
        self, params: params_lib.Params, key: jax.Array, score_fn: Callable
    ) -> dict[str, Any]:
        common = dict(
            system=self.system, model_cfg=self.model_cfg, score_fn=score_fn, mesh=self.mesh
        )
        greedy_cfg = dataclasses.replace(self.sampling_cfg, temperature=0.0)
        greedy = single_turn.sample(
            params, self.tok, self.examples, key, G=1, sampling_cfg=greedy_cfg, **common
        )
        sampled = single_turn.sample(
            params,
            self.tok,
            self.examples,
            key,
            G=self.k,
            sampling_cfg=self.sampling_cfg,
            **common,
        )
        rows = distributed.gather_rows(
            {
                "greedy_P": greedy.correct_B,
                "greedy_reward_P": greedy.rewards_B,
                "reward_PxK": sampled.rewards_B.reshape(-1, self.k),
                "correct_PxK": sampled.correct_B.reshape(-1, self.k),
                "lengths_PxK": np.asarray(sampled.sample.lengths_B).reshape(-1, self.k),
            }
        )
        correct_PxK = rows["correct_PxK"]
        c_P = correct_PxK.sum(axis=1)
        extra = self.breakdown(greedy.examples, greedy.verdicts) if self.breakdown else {}
        return {
            **extra,
            "eval/greedy_acc": float(rows["greedy_P"].mean()),
            "eval/pass@1": float(correct_PxK.mean()),
            f"eval/pass@{self.k}": float(
                np.mean([metrics_lib.pass_at_k(self.k, int(c), self.k) for c in c_P])
            ),
            "eval/len_mean": float(np.mean(rows["lengths_PxK"])),
            # The verifier's reward (a rubric's human-weighted score, a code test share):
            "eval/reward_mean": float(np.mean(rows["reward_PxK"])),
            "eval/greedy_reward": float(np.mean(rows["greedy_reward_P"])),
        }


class EpisodeEvaluator:
    """Plays fixed held-out episodes greedily (one per example) with the task's environments:
    success (the environments' IsCorrect), reward, turns and endings, overall and per group."""

    def __init__(self, examples: Sequence[data_types.Example], engine, sampling_cfg):
        self.examples, self.engine = list(examples), engine
        self.sampling_cfg = dataclasses.replace(sampling_cfg, temperature=0.0)

    def __call__(self, params, key: jax.Array, episodes) -> dict[str, Any]:
        ro = self.engine(params, self.examples, key, self.sampling_cfg, episodes, G=1)
        return multi_turn.episode_metrics(ro, "eval")
