"""Label-free multi-reward RLIF (Joarder et al. 2026, arXiv 2605.22620; docs/rlif.md): answer-level
cluster voting (host side), token-wise self-certainty and GDPO's decoupled normalisation of several
rewards. Also RLIFConfig. KL-Cov and Clip-Cov, which the recipe adds to the loss, are policy-loss
modes of any objective (objectives/cov.py, RLConfig.policy_loss).
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rlvr_jax import distributed
from rlvr_jax.objectives import advantages, hooks
from rlvr_jax.rewards import math as math_lib
from rlvr_jax.values import is_num

REWARDS = ("cluster_vote", "self_certainty")
TIE_BREAKS = ("first", "none")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RLIFConfig:
    """The RLIF recipe of docs/rlif.md. Frozen, hashable: a static jit argument."""

    enabled: bool = False  # label-free rewards instead of the verifier's
    rewards: tuple[str, ...] = REWARDS  # subset of REWARDS, in the column order of rewards_BxR
    weights: tuple[float, ...] = (1.0, 1.0)  # GDPO w_k, one per reward (w_sc ~ 0.5 if SC dominates)
    soft_share: bool = False  # cluster vote reward |C(a_i)| / G instead of majority membership
    tie_break: str = "first"  # largest clusters tied: "first" to appear wins (TTRL), "none": no one
    adv_eps: float = 1e-6  # GDPO's eps, in both the group and the batch normalisation
    adv_std_ddof: int = 1  # GDPO's stds: 1 unbiased (the GDPO authors' torch.std), 0 population

    def __post_init__(self):
        def fail(name: str, why: str):
            raise ValueError(f"RLIFConfig.{name}={getattr(self, name)!r} {why}")

        # ConfigDict hands lists over: keep tuples, so the config stays hashable.
        for name in ("rewards", "weights"):
            if not isinstance(getattr(self, name), list | tuple):
                fail(name, "must be a tuple")
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.rewards or any(r not in REWARDS for r in self.rewards):
            fail("rewards", f"must be a non-empty tuple of members of {REWARDS}")
        if len(set(self.rewards)) < len(self.rewards):
            fail("rewards", "has a repeated reward")
        if len(self.weights) != len(self.rewards) or not all(map(is_num, self.weights)):
            fail("weights", f"must be {len(self.rewards)} finite numbers, one per reward")
        if not any(self.weights):
            fail("weights", "must not be all zero")
        if not isinstance(self.soft_share, bool):
            fail("soft_share", "must be a bool")
        if self.tie_break not in TIE_BREAKS:
            fail("tie_break", f"is not one of {TIE_BREAKS}")
        if not is_num(self.adv_eps) or self.adv_eps < 0:
            fail("adv_eps", "must be a finite number >= 0")
        if isinstance(self.adv_std_ddof, bool) or self.adv_std_ddof not in (0, 1):
            fail("adv_std_ddof", "must be 0 (population std) or 1 (unbiased std)")


# --- Answer-level reward: cluster voting (host side) ---


def cluster_votes(
    answers: Sequence[str | None],
    equivalent: Callable[[str, str], bool],
    G: int | None = None,
    tie_break: str = "first",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TTRL-style voting (Zuo et al. 2025, arXiv 2504.16084) within each group of G answers.

    Answers join the first cluster, in order of appearance, whose first member is `equivalent`
    to them (identical strings join without a call); None (no answer) never joins a cluster.
    Returns (cluster_ids_B int32, -1 for None and numbered per group; majority_B float32:
    1[a_i in C*], C* the largest cluster, ties to the first to appear ("first", TTRL's
    Counter.most_common) or to nobody ("none"); soft_B float32: |C(a_i)| / G, 0 for None).
    G = None: the whole list is one group. For math answers pass e.g.
    `lambda a, b: math.score_math(f"\\\\boxed{{{a}}}", b).correct` (rewards/math.py).
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break={tie_break!r} is not one of {TIE_BREAKS}")
    B = len(answers)
    G = B if G is None else G
    if G < 1 or B % G:
        raise ValueError(f"{B} answers is not a multiple of G={G}")
    ids_B = np.full(B, -1, np.int32)
    majority_B, soft_B = np.zeros(B, np.float32), np.zeros(B, np.float32)
    for start in range(0, B, G):
        reps: list[str] = []  # the first member of each cluster
        sizes: list[int] = []
        for i in range(start, start + G):
            a = answers[i]
            if a is None:
                continue
            k = next((j for j, r in enumerate(reps) if a == r or equivalent(a, r)), len(reps))
            if k == len(reps):
                reps.append(a)
                sizes.append(0)
            sizes[k] += 1
            ids_B[i] = k
        if not sizes:
            continue
        top = max(sizes)
        winners = [k for k, s in enumerate(sizes) if s == top]
        winner = winners[0] if tie_break == "first" or len(winners) == 1 else -1
        group = slice(start, start + G)
        in_cluster = ids_B[group] >= 0
        majority_B[group] = (ids_B[group] == winner) & in_cluster
        size_of = np.array(sizes + [0])  # id -1 (no answer) indexes the trailing 0
        soft_B[group] = size_of[ids_B[group]] / G
    return ids_B, majority_B, soft_B


# --- Completion-level reward: self-certainty ---


def self_certainty(logits_BxTxV: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """Token-wise self-certainty (Intuitor, Zhao et al. 2025, arXiv 2505.19590), float32:

      SC = 1/|o| sum_t KL(U || pi(.|q, o_<t)) = -1/(|o| |V|) sum_t sum_j log(|V| pi(j|q, o_<t))

    the masked mean over completion tokens (0 for an empty row), fp32 log-softmax over the full
    vocabulary (logits must be finite: slice off padded vocabulary entries first). It is >= 0,
    and 0 exactly for uniform next-token distributions. A reward: stop its gradient.
    """
    chex.assert_rank([logits_BxTxV, mask_BxT], [3, 2])
    chex.assert_equal_shape_prefix([logits_BxTxV, mask_BxT], 2)
    V = logits_BxTxV.shape[-1]
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
    kl_BxT = -jnp.mean(logp_BxTxV, axis=-1) - jnp.log(jnp.float32(V))
    mask_BxT = mask_BxT.astype(bool)
    kl_BxT = jnp.where(mask_BxT, kl_BxT, 0.0)  # where, not a product: padding may hold nan
    n_B = jnp.maximum(jnp.sum(mask_BxT, axis=1), 1).astype(jnp.float32)
    return jnp.sum(kl_BxT, axis=1) / n_B


# --- GDPO ---


def gdpo_advantages(
    rewards_BxR: jax.Array,
    weights_R: jax.Array | Sequence[float],
    G: int,
    eps: float = 1e-6,
    ddof: int = 1,
) -> jax.Array:
    """GDPO (Liu et al. 2026, arXiv 2601.05242): normalise each reward within its group, combine,
    then normalise over the batch. float32, with eps = 1e-6 by default in both places:

      A_{k,i} = (r_{k,i} - mean_g(r_k)) / (std_g(r_k) + eps)   (advantages.grpo; 0 if flat)
      S_i = sum_k w_k A_{k,i};   adv_i = (S_i - mean_B(S)) / (std_B(S) + eps)

    Both stds with `ddof` (1: unbiased, as the GDPO authors' torch.std; 0: population). The batch
    is the global one: on several processes, gather every process's rows first. A batch whose S
    are all equal gets adv = 0.
    """
    chex.assert_rank(rewards_BxR, 2)
    R = rewards_BxR.shape[1]
    weights_R = jnp.asarray(weights_R, jnp.float32)
    chex.assert_shape(weights_R, (R,))
    group_norm = jax.vmap(lambda r_B: advantages.grpo(r_B, G, eps, ddof), in_axes=1, out_axes=1)
    adv_BxR = group_norm(rewards_BxR.astype(jnp.float32))
    S_B = jnp.einsum("br,r->b", adv_BxR, weights_R, precision=jax.lax.Precision.HIGHEST)
    flat = jnp.max(S_B) == jnp.min(S_B)  # exact, like advantages._groups
    std = jnp.std(S_B, ddof=ddof if S_B.shape[0] > 1 else 0)
    adv_B = (S_B - jnp.mean(S_B)) / jnp.where(flat, 1.0, std + eps)
    return jnp.where(flat, 0.0, adv_B)


# --- The loop's side: label-free advantages of a rollout (objectives/hooks.py) ---


def _same_answer(a: str, b: str) -> bool:
    """Math equivalence of two extracted answers (the verifier's rules, either as reference)."""
    return math_lib.score_math(f"\\boxed{{{a}}}", b).status == "correct"


def rollout_advantages(r, cfg: RLIFConfig, G: int) -> tuple[np.ndarray, dict[str, float]]:
    """Label-free advantages (docs/rlif.md) of a rollout_types.Rollout: each completion's rewards
    from the group alone (cluster vote over math-equivalent final answers; the sampler's
    self-certainty), combined by GDPO over the global batch (every process's rows). No reference
    answer is read. Returns (this process's adv_B, metrics)."""
    metrics = {}
    texts = r.texts
    if "cluster_vote" in cfg.rewards:
        answers = [math_lib.extract_answer(t) for t in texts]
        _, majority_B, soft_B = cluster_votes(answers, _same_answer, G, cfg.tie_break)
        vote_B = soft_B if cfg.soft_share else majority_B
        metrics["rlif/vote_reward"] = float(np.mean(vote_B))
        metrics["rlif/no_answer_frac"] = float(np.mean([a is None for a in answers]))
        # How often the majority is right: read only for this metric, never for training.
        metrics["rlif/vote_precision"] = float(
            np.sum(vote_B * r.correct_B) / max(np.sum(vote_B), 1e-9)
        )
    if "self_certainty" in cfg.rewards:
        mask = np.asarray(r.sample.mask_BxTc, bool)
        cert = np.asarray(r.sample.certainty_BxTc, np.float32)
        sc_B = (cert * mask).sum(1) / np.maximum(mask.sum(1), 1)
        metrics["rlif/self_certainty"] = float(np.mean(sc_B))
    by_name = {"cluster_vote": lambda: vote_B, "self_certainty": lambda: sc_B}
    rewards_BxR = np.stack([by_name[name]() for name in cfg.rewards], axis=1).astype(np.float32)
    # GDPO's batch statistics span the global batch: gather every process's rows (whole groups,
    # so the group statistics are unchanged), then keep this process's block.
    counts = distributed.gather_rows(np.asarray([len(rewards_BxR)], np.int64))
    start = int(counts[: jax.process_index()].sum())
    all_BxR = distributed.gather_rows(rewards_BxR)
    adv_B = gdpo_advantages(all_BxR, cfg.weights, G, cfg.adv_eps, cfg.adv_std_ddof)
    return np.asarray(adv_B, np.float32)[start : start + len(rewards_BxR)], metrics


class LabelFree(hooks.Hook):
    """RLIF: advantages from votes and self-certainty instead of the verifier's reward."""

    def __init__(self, cfg: RLIFConfig, G: int):
        self.cfg, self.G = cfg, G

    def advantages(self, r, rewards_B):
        del rewards_B
        return rollout_advantages(r, self.cfg, self.G)
