"""Covariance-based entropy control (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning
LMs", arXiv 2505.22617; docs/rlif.md): which tokens KL-Cov penalises and Clip-Cov detaches.

Both rank tokens by Cov_t = (log pi_t - mean(log pi)) (A_t - mean(A)), the means over the valid
tokens of the micro-batch (verl computes it per micro-batch forward too). The loss terms
themselves are applied in policy_loss.py (`RLConfig.policy_loss`).
"""

# pylint: disable=invalid-name
from __future__ import annotations

import fractions

import chex
import jax
import jax.numpy as jnp

# A ratio is read as the nearest fraction num/den with den <= this, so that floor(ratio * N) is
# exact integer arithmetic in int32 (0.002 = 1/500; a float32 product can round 2.9999 to 3).
MAX_RATIO_DEN = 100_000


def token_covariance(logps_BxT: jax.Array, adv_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """Cov_t = (logp_t - mean(logp)) (A_t - mean(A)) over the valid tokens, float32, stop-gradient;
    0 on padding (whatever it holds)."""
    chex.assert_equal_shape([logps_BxT, adv_BxT, mask_BxT])
    sg = jax.lax.stop_gradient
    valid_BxT = mask_BxT.astype(bool)
    n = jnp.maximum(jnp.sum(valid_BxT), 1).astype(jnp.float32)
    lp_BxT = jnp.where(valid_BxT, sg(logps_BxT).astype(jnp.float32), 0.0)
    a_BxT = jnp.where(valid_BxT, sg(adv_BxT).astype(jnp.float32), 0.0)
    cov_BxT = (lp_BxT - jnp.sum(lp_BxT) / n) * (a_BxT - jnp.sum(a_BxT) / n)
    return jnp.where(valid_BxT, cov_BxT, 0.0)


def token_count(n: jax.Array, ratio: float) -> jax.Array:
    """verl's token count max(1, floor(ratio * n)) for n > 0 and ratio > 0, else 0; exact int32
    arithmetic (ratio as num/den, den <= MAX_RATIO_DEN)."""
    frac = fractions.Fraction(ratio).limit_denominator(MAX_RATIO_DEN)
    num, den = frac.numerator, frac.denominator
    if num == 0:
        return jnp.zeros_like(n)
    q, r = n // den, n % den  # n = q den + r: no int32 overflow in r * num
    return jnp.where(n > 0, jnp.maximum(q * num + (r * num) // den, 1), 0)


def _first_by_key(key_BxT: jax.Array, count: jax.Array) -> jax.Array:
    """The `count` tokens with the smallest key (ties: lower row-major index first)."""
    B, T = key_BxT.shape
    order = jnp.argsort(key_BxT.reshape(-1), stable=True)
    rank_N = jnp.zeros(B * T, jnp.int32).at[order].set(jnp.arange(B * T, dtype=jnp.int32))
    return rank_N.reshape(B, T) < count


def kl_cov_select(
    logps_BxT: jax.Array, adv_BxT: jax.Array, mask_BxT: jax.Array, ratio: float
) -> jax.Array:
    """KL-Cov's tokens (verl's compute_policy_loss_kl_cov): the top max(1, floor(ratio N)) of the N
    valid tokens by Cov, ties to the lower row-major index (torch.topk leaves ties unspecified).
    Returns selected_BxT (bool; never padding)."""
    valid_BxT = mask_BxT.astype(bool)
    cov_BxT = token_covariance(logps_BxT, adv_BxT, mask_BxT)
    # Ascending key: the largest Cov first, padding last; -0.0 made +0.0 so that zeros tie.
    key_BxT = jnp.where(valid_BxT, -cov_BxT, jnp.inf)
    key_BxT = jnp.where(key_BxT == 0, 0.0, key_BxT)
    return valid_BxT & _first_by_key(key_BxT, token_count(jnp.sum(valid_BxT), ratio))


def clip_cov_select(
    logps_BxT: jax.Array,
    adv_BxT: jax.Array,
    mask_BxT: jax.Array,
    clipped_BxT: jax.Array,
    key: jax.Array,
    *,
    ratio: float,
    lb: float,
    ub: float,
) -> jax.Array:
    """Clip-Cov's tokens (verl's compute_policy_loss_clip_cov): among the valid tokens that the PPO
    clip has not already clipped (`clipped_BxT`) and whose Cov lies strictly inside (lb, ub), a
    uniformly random subset of max(1, floor(ratio N)) (all of them if fewer), N the valid tokens.
    Returns selected_BxT (bool): their loss is zeroed, so they carry no gradient."""
    chex.assert_equal_shape([logps_BxT, clipped_BxT])
    valid_BxT = mask_BxT.astype(bool)
    cov_BxT = token_covariance(logps_BxT, adv_BxT, mask_BxT)
    candidate_BxT = valid_BxT & ~clipped_BxT.astype(bool) & (cov_BxT > lb) & (cov_BxT < ub)
    # A random order of the candidates: uniform keys, the rest pushed past them.
    u_BxT = jax.random.uniform(key, logps_BxT.shape)
    key_BxT = jnp.where(candidate_BxT, u_BxT, 2.0)
    return candidate_BxT & _first_by_key(key_BxT, token_count(jnp.sum(valid_BxT), ratio))
