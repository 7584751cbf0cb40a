"""One RL step's rollout: sample, score, and (when a hook asks, as DAPO's dynamic sampling does)
drop groups and sample more prompts until P groups are kept or the rounds run out."""

# pylint: disable=invalid-name
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rlvr_jax import distributed
from rlvr_jax.rollout import types as types_lib


def collect(
    sample_round: Callable[[int], types_lib.Rollout],
    keep_fns: Sequence[Callable[[np.ndarray, int], np.ndarray | None]],
    *,
    P: int,
    G: int,
    max_rounds: int,
) -> tuple[types_lib.Rollout, int]:
    """(the kept rollout, the number of extra rounds). `sample_round(i)` samples and scores round
    i's prompts (each process its own); every `keep_fns` entry may return keep_P (None: keep all).
    The kept groups are the first P in global order, what one process sampling it all would keep.
    """
    rounds, keeps = [], []
    for round_ in range(1 + max_rounds):
        r = sample_round(round_)
        keep_P = np.ones(len(r.examples), bool)
        for keep_fn in keep_fns:
            k = keep_fn(r.rewards_B, G)
            if k is not None:
                keep_P &= k
        rounds.append(r)
        keeps.append(keep_P)
        if distributed.count(sum(int(k.sum()) for k in keeps)) >= P:  # over processes
            break
    keeps = distributed.first_groups(keeps, P)
    kept = types_lib.concat(
        [types_lib.select_groups(x, k, G) for x, k in zip(rounds, keeps, strict=True)]
    )
    return kept, len(rounds) - 1
