"""DAPO's host-side batch shaping (Yu et al. 2025, arXiv 2503.14476; docs/dapo.md): dynamic
sampling's group filter, overlong filtering and the soft overlong punishment. numpy, no jit."""

# pylint: disable=invalid-name
from __future__ import annotations

import numpy as np

from rlvr_jax.objectives import hooks


def keep_groups(rewards_B: np.ndarray, G: int) -> np.ndarray:
    """Dynamic sampling: keep_P[p] is False iff all G rewards of prompt p are equal.

    Such groups (all correct or all wrong) have zero advantage under every estimator, hence no
    gradient; DAPO drops them and samples more prompts. rewards_B is group-major.
    """
    rewards_B = np.asarray(rewards_B)
    if rewards_B.ndim != 1 or G < 1 or rewards_B.shape[0] % G:
        raise ValueError(
            f"rewards of shape {rewards_B.shape} are not a flat batch of groups of {G}"
        )
    r_PxG = rewards_B.reshape(-1, G)
    return r_PxG.max(axis=1) != r_PxG.min(axis=1)


def soft_overlong_penalty(lengths_B: np.ndarray, max_len: int, cache_len: int) -> np.ndarray:
    """Soft overlong punishment R_len, added to the correctness reward (float32):

    0 if |y| <= L_max - L_cache;  ((L_max - L_cache) - |y|) / L_cache if |y| <= L_max;  -1 beyond.
    DAPO uses L_max = 20480, L_cache = 4096. The penalty falls linearly from 0 to -1 over the cache.
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(f"need 0 < cache_len <= max_len, got {cache_len=}, {max_len=}")
    lengths_B = np.asarray(lengths_B, dtype=np.float64)
    start = max_len - cache_len
    penalty_B = np.where(
        lengths_B <= start,
        0.0,
        np.where(lengths_B <= max_len, (start - lengths_B) / cache_len, -1.0),
    )
    return penalty_B.astype(np.float32)


def overlong_mask(truncated_B: np.ndarray) -> np.ndarray:
    """Overlong filtering: keep_B is False for completions cut off at the length limit (their
    reward says nothing about the answer)."""
    return ~np.asarray(truncated_B, dtype=bool)


def filter_overlong(batch, truncated_B: np.ndarray):
    """The TrainBatch with the completion mask of truncated rows zeroed: they leave the loss
    entirely (no policy-gradient, KL or entropy term, and out of every aggregation's token and
    sequence counts), as DAPO and TRL's mask_truncated_completions do. Zeroing only their
    advantage would keep them in the token-mean denominator and keep their KL and entropy."""
    keep_Bx1 = overlong_mask(truncated_B)[:, None]
    return batch.replace(completion_mask_BxTc=np.asarray(batch.completion_mask_BxTc) & keep_Bx1)


# --- DAPO's hooks around the train step (objectives/hooks.py) ---


class DynamicSampling(hooks.Hook):
    """Drops groups with equal rewards and samples more prompts, up to `max_resample_rounds`."""

    def __init__(self, max_resample_rounds: int):
        self.max_resample_rounds = max_resample_rounds

    def keep_groups(self, rewards_B, G):
        return keep_groups(rewards_B, G)


class OverlongPenalty(hooks.Hook):
    """The soft overlong punishment, added to the task's reward."""

    def __init__(self, max_len: int, cache_len: int):
        self.max_len, self.cache_len = max_len, cache_len

    def rewards(self, r, rewards_B):
        lengths_B = np.asarray(r.sample.lengths_B)
        return rewards_B + soft_overlong_penalty(lengths_B, self.max_len, self.cache_len), {}


class OverlongFilter(hooks.Hook):
    """Truncated completions leave the loss entirely (`filter_overlong`)."""

    def batch(self, r, batch, params):
        del params
        return filter_overlong(batch, ~np.asarray(r.sample.stopped_B)), {}
