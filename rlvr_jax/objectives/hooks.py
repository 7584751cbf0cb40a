"""The host side of an objective: what a technique does around the jitted step.

The loop calls every hook of the run, in order, at fixed points of an RL step, and never names
a technique. Each hook lives in its technique's module; `rlvr_jax/train/build.py` lists them.

  sampling(cfg, step)        the sampler config of this step (TOPD/POPD horizon)
  keep_groups(rewards_B, G)  which groups to keep (DAPO's dynamic sampling; None: all)
  rewards(r, rewards_B)      reward shaping on top of the task's (DAPO's overlong penalty)
  advantages(r, rewards_B)   per-row advantages instead of the estimator's (label-free RLIF)
  batch(r, batch, params)    this process's TrainBatch before the updates (overlong filter,
                             DistIL teacher targets, DelTA once before several updates)
  minibatch(part)            each global mini-batch before its update (reference and OPD
                             teacher log-probs)

`r` is a rollout_types.Rollout. Every method returns metrics (floats or scalars) beside its
value; they are logged under the hook's own prefix.
"""

# pylint: disable=invalid-name
from __future__ import annotations

from typing import Any

import numpy as np

from rlvr_jax import sampling

Metrics = dict[str, Any]


class Hook:
    """No-op defaults; a technique overrides what it needs."""

    max_resample_rounds: int = 0  # extra rollout rounds keep_groups may ask for

    def sampling(self, cfg: sampling.SamplingConfig, step: int) -> sampling.SamplingConfig:
        del step
        return cfg

    def keep_groups(self, rewards_B: np.ndarray, G: int) -> np.ndarray | None:
        del rewards_B, G
        return None

    def rewards(self, r, rewards_B: np.ndarray) -> tuple[np.ndarray, Metrics]:
        del r
        return rewards_B, {}

    def advantages(self, r, rewards_B: np.ndarray) -> tuple[np.ndarray | None, Metrics]:
        del r, rewards_B
        return None, {}

    def batch(self, r, batch, params) -> tuple[Any, Metrics]:
        del r, params
        return batch, {}

    def minibatch(self, part) -> tuple[Any, Metrics]:
        return part, {}
