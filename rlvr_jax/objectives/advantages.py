"""Group-relative advantages of outcome rewards: GRPO, Dr. GRPO and RLOO (docs/grpo.md).

`rewards_B` is group-major: rows p*G .. p*G+G-1 are the G completions of prompt p. Every estimator
returns `adv_B` in float32, and gives exactly 0 to every member of a zero-variance group (all
rewards equal), where the group carries no learning signal (DAPO's dynamic sampling drops them).
"""

# pylint: disable=invalid-name
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from rlvr_jax.objectives import rl_config


def _groups(rewards_B: jax.Array, G: int) -> tuple[jax.Array, jax.Array]:
    """Reshape to [P, G] float32, and flag the groups whose rewards are all equal."""
    chex.assert_rank(rewards_B, 1)
    if G < 1 or rewards_B.shape[0] % G:
        raise ValueError(f"batch of {rewards_B.shape[0]} rewards is not a multiple of G={G}")
    r_PxG = rewards_B.astype(jnp.float32).reshape(-1, G)
    # Exact test (max == min), not std == 0: a float mean can miss equal values by one ulp.
    flat_P = jnp.max(r_PxG, axis=1) == jnp.min(r_PxG, axis=1)
    return r_PxG, flat_P


def grpo(rewards_B: jax.Array, G: int, eps: float = 1e-6, ddof: int = 1) -> jax.Array:
    """GRPO (Shao et al. 2024, arXiv 2402.03300): A_i = (r_i - mean(r)) / (std(r) + eps).

    std is over the group's G rewards with `ddof` delta degrees of freedom: 1 (default) is the
    unbiased std that verl, TRL and the GDPO authors use (torch.std); 0 the population std, which
    makes every advantage sqrt((G-1)/G) of theirs (0.87 at G=4). eps = 1e-6 by default (verl's;
    TRL's is 1e-4). Zero-variance groups get A = 0; G = 1 groups are always flat.
    """
    if ddof not in (0, 1):
        raise ValueError(f"ddof={ddof!r} must be 0 (population std) or 1 (unbiased std)")
    r_PxG, flat_P = _groups(rewards_B, G)
    mean_Px1 = jnp.mean(r_PxG, axis=1, keepdims=True)
    std_Px1 = jnp.std(r_PxG, axis=1, keepdims=True, ddof=ddof if G > 1 else 0)
    # Flat groups divide by 1, so eps = 0 is safe too (no 0/0 even in the discarded branch).
    adv_PxG = (r_PxG - mean_Px1) / jnp.where(flat_P[:, None], 1.0, std_Px1 + eps)
    return jnp.where(flat_P[:, None], 0.0, adv_PxG).reshape(-1)


def dr_grpo(rewards_B: jax.Array, G: int) -> jax.Array:
    """Dr. GRPO (Liu et al. 2025, arXiv 2503.20783): A_i = r_i - mean(r), no std division.

    No eps is needed. Zero-variance groups get A = 0 (exactly, not up to rounding of the mean).
    """
    r_PxG, flat_P = _groups(rewards_B, G)
    adv_PxG = r_PxG - jnp.mean(r_PxG, axis=1, keepdims=True)
    return jnp.where(flat_P[:, None], 0.0, adv_PxG).reshape(-1)


def rloo(rewards_B: jax.Array, G: int) -> jax.Array:
    """RLOO (Kool et al. 2019; Ahmadian et al. 2024, arXiv 2402.14740): leave-one-out baseline.

    A_i = r_i - 1/(G-1) sum_{j != i} r_j  (= G/(G-1) * (r_i - mean(r))). Needs G >= 2; no eps.
    Zero-variance groups get A = 0.
    """
    if G < 2:
        raise ValueError(f"rloo needs G >= 2, got G={G}")
    r_PxG, flat_P = _groups(rewards_B, G)
    others_PxG = (jnp.sum(r_PxG, axis=1, keepdims=True) - r_PxG) / (G - 1)
    return jnp.where(flat_P[:, None], 0.0, r_PxG - others_PxG).reshape(-1)


def compute(rewards_B: jax.Array, rl: rl_config.RLConfig) -> jax.Array:
    """Advantages of `rewards_B` by `rl.adv_estimator`, with groups of `rl.group_size`."""
    if rl.adv_estimator == "grpo":
        return grpo(rewards_B, rl.group_size, rl.adv_eps, rl.adv_std_ddof)
    elif rl.adv_estimator == "dr_grpo":
        return dr_grpo(rewards_B, rl.group_size)
    elif rl.adv_estimator == "rloo":
        return rloo(rewards_B, rl.group_size)
    raise ValueError(
        f"RLConfig.adv_estimator={rl.adv_estimator!r} is not one of {rl_config.ADV_ESTIMATORS}"
    )
