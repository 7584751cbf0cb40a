"""Label-free multi-reward RLIF (Joarder et al. 2026, arXiv 2605.22620; RESEARCH.md 7): answer-level
cluster voting (host side), token-wise self-certainty, GDPO's decoupled normalisation of several
rewards, and the KL-Cov penalty on the highest-covariance tokens. Also RLIFConfig.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
import fractions
from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rlvr_jax.objectives import advantages
from rlvr_jax.objectives.rl_config import is_num

REWARDS = ("cluster_vote", "self_certainty")
TIE_BREAKS = ("first", "none")
# k_frac is read as the nearest fraction num/den with den <= this, so that ceil(k_frac * N) is
# exact integer arithmetic in int32 (0.002 = 1/500; a float32 product can round 3.0 up to 4).
MAX_K_DEN = 10_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class RLIFConfig:
    """The RLIF recipe of RESEARCH.md 7. Frozen, hashable: a static jit argument."""

    rewards: tuple[str, ...] = REWARDS  # subset of REWARDS, in the column order of rewards_BxR
    weights: tuple[float, ...] = (1.0, 1.0)  # GDPO w_k, one per reward (w_sc ~ 0.5 if SC dominates)
    soft_share: bool = False  # cluster vote reward |C(a_i)| / G instead of majority membership
    tie_break: str = "first"  # largest clusters tied: "first" to appear wins (TTRL), "none": no one
    adv_eps: float = 1e-6  # GDPO's eps, in both the group and the batch normalisation
    kl_cov_k_frac: float = 0.002  # k: fraction of valid tokens that get the penalty (verl default)
    kl_cov_coef: float = 1.0  # beta: weight of |logp - old_logp| on the selected tokens

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
        if not is_num(self.kl_cov_k_frac) or not 0 <= self.kl_cov_k_frac <= 1:
            fail("kl_cov_k_frac", "must be a number in [0, 1]")
        if not is_num(self.kl_cov_coef) or self.kl_cov_coef < 0:
            fail("kl_cov_coef", "must be a finite number >= 0")


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
    rewards_BxR: jax.Array, weights_R: jax.Array | Sequence[float], G: int, eps: float = 1e-6
) -> jax.Array:
    """GDPO (Liu et al. 2026, arXiv 2601.05242): normalise each reward within its group, combine,
    then normalise over the batch. float32, with eps = 1e-6 by default in both places:

      A_{k,i} = (r_{k,i} - mean_g(r_k)) / (std_g(r_k) + eps)   (advantages.grpo; 0 if flat)
      S_i = sum_k w_k A_{k,i};   adv_i = (S_i - mean_B(S)) / (std_B(S) + eps)

    Population stds (ddof=0). A batch whose S are all equal gets adv = 0.
    """
    chex.assert_rank(rewards_BxR, 2)
    R = rewards_BxR.shape[1]
    weights_R = jnp.asarray(weights_R, jnp.float32)
    chex.assert_shape(weights_R, (R,))
    group_norm = jax.vmap(lambda r_B: advantages.grpo(r_B, G, eps), in_axes=1, out_axes=1)
    adv_BxR = group_norm(rewards_BxR.astype(jnp.float32))
    S_B = jnp.einsum("br,r->b", adv_BxR, weights_R, precision=jax.lax.Precision.HIGHEST)
    flat = jnp.max(S_B) == jnp.min(S_B)  # exact, like advantages._groups
    adv_B = (S_B - jnp.mean(S_B)) / jnp.where(flat, 1.0, jnp.std(S_B) + eps)
    return jnp.where(flat, 0.0, adv_B)


# --- KL-Cov ---


def _top_count(n: jax.Array, k_frac: float) -> jax.Array:
    """ceil(k_frac * n) in exact int32 arithmetic, k_frac as num/den with den <= MAX_K_DEN."""
    frac = fractions.Fraction(k_frac).limit_denominator(MAX_K_DEN)
    num, den = frac.numerator, frac.denominator
    q, r = n // den, n % den  # n = q den + r: q num <= n and r num < den^2, no int32 overflow
    return q * num + (r * num + den - 1) // den


def kl_cov_penalty(
    logps_BxT: jax.Array,
    old_logps_BxT: jax.Array,
    adv_BxT: jax.Array,
    mask_BxT: jax.Array,
    k_frac: float,
    coef: float,
) -> tuple[jax.Array, jax.Array]:
    """KL-Cov (Cui et al. 2025, arXiv 2505.22617; verl's compute_policy_loss_kl_cov), float32.

    Over the N valid tokens (means over valid tokens, stop-gradient):
      Cov_t = (logp_t - mean(logp)) (A_t - mean(A))
    the top k = ceil(k_frac N) tokens by Cov are selected (ties: the lower row-major index
    first; verl uses max(1, floor(k_frac N))), and get penalty_t = coef |logp_t - old_logp_t|,
    differentiable in logps; every other token, padding included, gets exactly 0 (and no
    gradient). Add it to the per-token policy loss: l_t = -A_t rho_t + penalty_t.
    Returns (penalty_BxT, selected_BxT bool).
    """
    chex.assert_rank(logps_BxT, 2)
    chex.assert_equal_shape([logps_BxT, old_logps_BxT, adv_BxT, mask_BxT])
    if not is_num(k_frac) or not 0 <= k_frac <= 1:
        raise ValueError(f"k_frac={k_frac!r} must be a number in [0, 1]")
    B, T = logps_BxT.shape
    sg = jax.lax.stop_gradient
    valid_BxT = mask_BxT.astype(bool)
    n = jnp.sum(valid_BxT)
    n_f = jnp.maximum(n, 1).astype(jnp.float32)
    lp_BxT = jnp.where(valid_BxT, sg(logps_BxT).astype(jnp.float32), 0.0)
    a_BxT = jnp.where(valid_BxT, sg(adv_BxT).astype(jnp.float32), 0.0)
    cov_BxT = (lp_BxT - jnp.sum(lp_BxT) / n_f) * (a_BxT - jnp.sum(a_BxT) / n_f)
    # Ascending sort key: the largest Cov first, padding last; -0.0 made +0.0 so zeros tie.
    key_BxT = jnp.where(valid_BxT, -cov_BxT, jnp.inf)
    key_BxT = jnp.where(key_BxT == 0, 0.0, key_BxT)
    order = jnp.argsort(key_BxT.reshape(-1), stable=True)
    rank_BxT = jnp.zeros(B * T, jnp.int32).at[order].set(jnp.arange(B * T, dtype=jnp.int32))
    selected_BxT = valid_BxT & (rank_BxT.reshape(B, T) < _top_count(n, k_frac))
    diff_BxT = logps_BxT.astype(jnp.float32) - sg(old_logps_BxT).astype(jnp.float32)
    # where before abs: garbage in unselected slots never reaches the value or the gradient.
    penalty_BxT = coef * jnp.abs(jnp.where(selected_BxT, diff_BxT, 0.0))
    return penalty_BxT, selected_BxT
