"""The token-level policy loss: PPO clipped surrogate with DAPO's asymmetric clip and an optional
dual clip, KL-Cov / Clip-Cov, GSPO or CISPO (`RLConfig.policy_loss`), the sampler/trainer mismatch
correction (`RLConfig.rollout_correction`, objectives/mismatch.py), a KL penalty to a reference
policy, an entropy bonus, and the masked aggregation modes (docs/grpo.md, docs/rlif.md,
docs/mismatch.md). Also float32 log-prob and entropy helpers over logits.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from rlvr_jax.objectives import cov, mismatch, rl_config


def token_logps(logits_BxTxV: jax.Array, tokens_BxT: jax.Array) -> jax.Array:
    """log pi(tokens | prefix) from logits, float32 (log_softmax in float32 under a bf16 model)."""
    chex.assert_rank([logits_BxTxV, tokens_BxT], [3, 2])
    chex.assert_equal_shape_prefix([logits_BxTxV, tokens_BxT], 2)
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp_BxTxV, tokens_BxT[..., None], axis=-1)[..., 0]


def entropy(logits_BxTxV: jax.Array) -> jax.Array:
    """Entropy H(pi(. | prefix)) = -sum_v p_v log p_v at every position, float32."""
    chex.assert_rank(logits_BxTxV, 3)
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
    p_BxTxV = jnp.exp(logp_BxTxV)
    # 0 * log 0 = 0: a -inf logit (masked vocabulary) must not turn the sum into nan.
    return -jnp.sum(p_BxTxV * jnp.where(p_BxTxV > 0, logp_BxTxV, 0.0), axis=-1)


def kl(logps_BxT: jax.Array, ref_logps_BxT: jax.Array, estimator: str) -> jax.Array:
    """Per-token estimate of KL(pi_theta || pi_ref) at tokens sampled from pi_theta, float32.

    Schulman, "Approximating KL divergence" (2020), with log r = ref_logp - logp:
      k1 = -log r;   k2 = (log r)^2 / 2;   k3 = (r - 1) - log r  (GRPO's; >= 0, unbiased);
      k3+ = k3's value with k2's gradient (straight-through: k2 + sg[k3 - k2]), because k3
      differentiated as a loss is not an unbiased KL gradient while k2's is (on-policy).
    Every estimator is exactly 0 where logp == ref_logp.
    """
    chex.assert_rank(logps_BxT, 2)
    chex.assert_equal_shape([logps_BxT, ref_logps_BxT])
    log_r_BxT = ref_logps_BxT.astype(jnp.float32) - logps_BxT.astype(jnp.float32)
    if estimator == "k1":
        return -log_r_BxT
    elif estimator == "k2":
        return 0.5 * jnp.square(log_r_BxT)
    elif estimator == "k3":
        return jnp.expm1(log_r_BxT) - log_r_BxT  # expm1: exact near r = 1
    elif estimator == "k3+":
        k2_BxT = 0.5 * jnp.square(log_r_BxT)
        k3_BxT = jnp.expm1(log_r_BxT) - log_r_BxT
        return k2_BxT + jax.lax.stop_gradient(k3_BxT - k2_BxT)
    raise ValueError(f"kl estimator={estimator!r} is not one of {rl_config.KL_ESTIMATORS}")


def aggregate(
    per_token_BxT: jax.Array, mask_BxT: jax.Array, mode: str, norm_len: int | None = None
) -> jax.Array:
    """Reduce a per-token loss to a float32 scalar over the tokens where mask_BxT is nonzero.

    token_mean (DAPO): sum over all tokens / max(#tokens, 1).
    seq_mean_token_mean (GRPO, GSPO): each sequence's token mean, then the mean over the sequences
      that have at least one token (all-padding rows are not counted).
    seq_mean_token_sum_norm (Dr. GRPO): sum over all tokens / (B * norm_len), a constant
      denominator; B counts every row, empty ones included.
    """
    chex.assert_rank(per_token_BxT, 2)
    chex.assert_equal_shape([per_token_BxT, mask_BxT])
    mask_BxT = mask_BxT.astype(bool)
    x_BxT = jnp.where(mask_BxT, per_token_BxT.astype(jnp.float32), 0.0)
    if mode == "token_mean":
        return jnp.sum(x_BxT) / jnp.maximum(jnp.sum(mask_BxT), 1).astype(jnp.float32)
    elif mode == "seq_mean_token_mean":
        n_B = jnp.sum(mask_BxT, axis=1)
        seq_B = jnp.sum(x_BxT, axis=1) / jnp.maximum(n_B, 1).astype(jnp.float32)  # 0 if empty
        return jnp.sum(seq_B) / jnp.maximum(jnp.sum(n_B > 0), 1).astype(jnp.float32)
    elif mode == "seq_mean_token_sum_norm":
        if norm_len is None or norm_len <= 0:
            raise ValueError(f"seq_mean_token_sum_norm needs norm_len > 0, got {norm_len!r}")
        return jnp.sum(x_BxT) / jnp.float32(x_BxT.shape[0] * norm_len)
    raise ValueError(f"aggregation mode={mode!r} is not one of {rl_config.LOSS_AGGS}")


def policy_loss(
    logps_BxT: jax.Array,
    old_logps_BxT: jax.Array,
    adv_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    rl: rl_config.RLConfig,
    ref_logps_BxT: jax.Array | None = None,
    entropy_BxT: jax.Array | None = None,
    key: jax.Array | None = None,
    trainer_logps_BxT: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The scalar loss to minimise, and float32 metrics (masked token means unless noted).

    old_logps are the sampler's log-probs mu. pi_old is `trainer_logps` (the trainer at the
    rollout weights, recomputed once before several updates) or, if None, sg[logps] (one update:
    the loss's own forward is at the rollout weights). With rl.rollout_correction="none" the ratio
    is rho = exp(logp - log mu) (bypass); otherwise it is decoupled, rho = exp(logp - log pi_old),
    and the token loss pg below is multiplied by mismatch.weights(pi_old, mu) (docs/mismatch.md).

    Per token, by rl.policy_loss:
      ppo_clip (PPO, Schulman et al. 2017; DAPO clip-higher):
        pg = -min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)
        pg = min(pg, c * |A|) where A < 0, if rl.dual_clip = c (Ye et al. 2020, arXiv 1912.09729)
      kl_cov (Cui et al. 2025, arXiv 2505.22617; verl): no clip, pg = -A * rho, plus
        kl_cov_coef * |logp - old_logp| on the cov.kl_cov_select tokens
      clip_cov: ppo_clip's pg, zeroed (no gradient) on the cov.clip_cov_select tokens (random by
        `key`, which clip_cov needs)
      gspo (GSPO-token, Zheng et al. 2025, arXiv 2507.18071; verl): ppo_clip's pg (no dual clip)
        with rho replaced by s_t = exp(min(sg[mean_t log rho] + logp - sg[logp], 10)), the
        length-normalised sequence ratio carrying each token's gradient
      cispo (MiniMax-M1, arXiv 2506.13585): pg = -sg[clip(rho, 1 - eps_low, 1 + eps_high)] * A *
        logp, so no token loses its gradient
      loss = pg + beta * KL_est(pi_theta || pi_ref) - entropy_coef * entropy
    reduced by `aggregate(., mask, rl.loss_agg, rl.norm_len)`. old_logps, adv and ref_logps are
    constants (stop-gradient). Metrics: rl/clip_frac (= clip_frac_low + clip_frac_high: tokens
    whose clip is active, i.e. A > 0 and rho > 1 + eps_high, or A < 0 and rho < 1 - eps_low; for
    cispo any A), rl/dual_clip_frac (if dual_clip), rl/approx_kl (k3 estimate of KL(pi_old ||
    pi_theta)), rl/ratio_mean, rl/ratio_max (s for gspo) and rl/log_ratio_abs_max (over unmasked
    tokens), rl/pg_loss (aggregated like the loss), rl/kl (whenever ref_logps is given),
    rl/entropy (whenever entropy is given), rl/kl_cov_frac or rl/clip_cov_frac (the share of
    tokens selected), mismatch.metrics (always) and mismatch.weights' (with a correction).
    """
    chex.assert_rank(logps_BxT, 2)
    chex.assert_equal_shape([logps_BxT, old_logps_BxT, adv_BxT, mask_BxT])
    if rl.needs_reference and ref_logps_BxT is None:
        raise ValueError(f"RLConfig.beta={rl.beta} > 0 needs ref_logps_BxT")
    if rl.entropy_coef > 0 and entropy_BxT is None:
        raise ValueError(f"RLConfig.entropy_coef={rl.entropy_coef} > 0 needs entropy_BxT")
    mask_BxT = mask_BxT.astype(bool)

    def clean(x_BxT: jax.Array) -> jax.Array:
        # Zero padded slots before any exp: the gradient of a where is 0 in the dropped branch
        # only if that branch is finite, so garbage there must never reach exp or the loss.
        chex.assert_equal_shape([x_BxT, mask_BxT])
        return jnp.where(mask_BxT, x_BxT.astype(jnp.float32), 0.0)

    def tok_mean(x_BxT: jax.Array) -> jax.Array:
        return aggregate(x_BxT, mask_BxT, "token_mean")

    sg = jax.lax.stop_gradient
    logps_BxT = clean(logps_BxT)
    sampler_logps_BxT = sg(clean(old_logps_BxT))
    adv_BxT = sg(clean(adv_BxT))
    # pi_old: the trainer at the rollout weights (recomputed, or this very forward).
    pi_old_BxT = sg(logps_BxT if trainer_logps_BxT is None else clean(trainer_logps_BxT))
    decoupled = rl.rollout_correction != "none"
    old_logps_BxT = pi_old_BxT if decoupled else sampler_logps_BxT

    ratio_BxT = jnp.exp(logps_BxT - old_logps_BxT)
    if rl.policy_loss == "gspo":  # the sequence's mean log-ratio, each token's own gradient
        n_B = jnp.maximum(jnp.sum(mask_BxT, axis=1), 1).astype(jnp.float32)
        seq_B = jnp.sum(logps_BxT - old_logps_BxT, axis=1) / n_B  # padding is 0 - 0
        log_s_BxT = sg(seq_B)[:, None] + logps_BxT - sg(logps_BxT)
        ratio_BxT = jnp.exp(jnp.minimum(log_s_BxT, 10.0))  # verl's cap
    clipped_BxT = jnp.clip(ratio_BxT, 1.0 - rl.eps_low, 1.0 + rl.eps_high)
    extra = mismatch.metrics(pi_old_BxT, sampler_logps_BxT, mask_BxT)
    if rl.policy_loss == "kl_cov":  # verl's KL-Cov replaces the clipped surrogate entirely
        selected_BxT = cov.kl_cov_select(logps_BxT, adv_BxT, mask_BxT, rl.kl_cov_ratio)
        # where before abs: unselected slots carry neither value nor gradient.
        penalty_BxT = jnp.abs(jnp.where(selected_BxT, logps_BxT - old_logps_BxT, 0.0))
        pg_BxT = -adv_BxT * ratio_BxT + rl.kl_cov_coef * penalty_BxT
        extra["rl/kl_cov_frac"] = tok_mean(selected_BxT)
    elif rl.policy_loss == "cispo":  # a clipped, constant weight on REINFORCE's log-prob
        pg_BxT = -sg(clipped_BxT) * adv_BxT * logps_BxT
    else:
        unclipped_BxT = -adv_BxT * ratio_BxT
        pg_BxT = jnp.maximum(unclipped_BxT, -adv_BxT * clipped_BxT)
        if rl.dual_clip is not None:
            # A bad token whose ratio exploded would otherwise dominate the batch: cap at c |A|.
            pg_BxT = jnp.where(adv_BxT < 0, jnp.minimum(pg_BxT, -adv_BxT * rl.dual_clip), pg_BxT)
        if rl.policy_loss == "clip_cov":
            if key is None:
                raise ValueError("RLConfig.policy_loss='clip_cov' needs a PRNG key")
            detached_BxT = cov.clip_cov_select(
                logps_BxT,
                adv_BxT,
                mask_BxT,
                pg_BxT > unclipped_BxT,  # already clipped by PPO (verl's clip_by_origin)
                key,
                ratio=rl.clip_cov_ratio,
                lb=rl.clip_cov_lb,
                ub=rl.clip_cov_ub,
            )
            pg_BxT = jnp.where(detached_BxT, 0.0, pg_BxT)
            extra["rl/clip_cov_frac"] = tok_mean(detached_BxT)
    if decoupled:  # the mismatch weight multiplies the already-clipped token loss
        w_BxT, w_metrics = mismatch.weights(pi_old_BxT, sampler_logps_BxT, mask_BxT, rl=rl)
        pg_BxT = pg_BxT * w_BxT
        extra.update(w_metrics)
    loss_BxT = pg_BxT

    any_sign = rl.policy_loss == "cispo"  # CISPO clips its weight whatever the advantage's sign
    high_BxT = (ratio_BxT > 1.0 + rl.eps_high) & ((adv_BxT > 0) | any_sign)
    low_BxT = (ratio_BxT < 1.0 - rl.eps_low) & ((adv_BxT < 0) | any_sign)
    metrics = {
        "rl/clip_frac": tok_mean(high_BxT | low_BxT),
        "rl/clip_frac_low": tok_mean(low_BxT),
        "rl/clip_frac_high": tok_mean(high_BxT),
        # Tokens were sampled from pi_old, so (old, current) is (sampler, other) for kl().
        "rl/approx_kl": tok_mean(kl(old_logps_BxT, logps_BxT, "k3")),
        "rl/ratio_mean": tok_mean(ratio_BxT),
        "rl/ratio_max": jnp.max(jnp.where(mask_BxT, ratio_BxT, 0.0)),  # ratio > 0: 0 if empty
        "rl/log_ratio_abs_max": jnp.max(jnp.abs(logps_BxT - old_logps_BxT)),  # 0 on padding
        "rl/pg_loss": aggregate(pg_BxT, mask_BxT, rl.loss_agg, rl.norm_len),
        **extra,
    }
    if rl.dual_clip is not None:
        metrics["rl/dual_clip_frac"] = tok_mean((adv_BxT < 0) & (ratio_BxT > rl.dual_clip))
    if ref_logps_BxT is not None:
        kl_BxT = kl(logps_BxT, sg(clean(ref_logps_BxT)), rl.kl_estimator)
        metrics["rl/kl"] = tok_mean(kl_BxT)
        if rl.beta > 0:
            loss_BxT = loss_BxT + rl.beta * kl_BxT
    if entropy_BxT is not None:
        entropy_BxT = clean(entropy_BxT)
        metrics["rl/entropy"] = tok_mean(entropy_BxT)
        if rl.entropy_coef > 0:
            loss_BxT = loss_BxT - rl.entropy_coef * entropy_BxT
    loss = aggregate(loss_BxT, mask_BxT, rl.loss_agg, rl.norm_len)
    return loss, jax.tree.map(lambda m: sg(m).astype(jnp.float32), metrics)
