"""Sampler/trainer mismatch: importance weights that correct for the sampler's log-probs mu
differing from the trainer's pi_old on the same tokens, their metrics, and the recompute pass that
gives pi_old when a rollout batch takes several updates (docs/mismatch.md).

With delta_t = log pi_old(y_t) - log mu(y_t) on the loss tokens (m_t = 1):
  token_tis   min(e^delta_t, C)                       (verl rollout_is=token, slime --use-tis)
  seq_tis     min(W_i, C),  W_i = exp(sum_t m_t delta_t)  on every token of sequence i
  token_mis   e^delta_t * 1[lo <= e^delta_t <= C]     (IcePop; TRL token_mask)
  seq_mis     W_i * 1[lo <= W_i <= C]                 (TRL sequence_mask)
with lo = rl.rollout_clip_low, C = rl.rollout_clip_high. Token and sequence log-ratios are clamped
to +-20 before exp, as verl does. The weight is a constant (stop-gradient) that multiplies each
token's already-clipped policy loss; a zero weight keeps the token in the aggregation's denominator.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rlvr_jax import distributed
from rlvr_jax.objectives import batch as batch_lib
from rlvr_jax.objectives import hooks, rl_config

LOG_BOUND = 20.0  # |log weight| cap before exp (verl's SAFETY_BOUND)


def _mean(x_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """Masked token mean, float32 (0 when no token)."""
    x_BxT = jnp.where(mask_BxT, x_BxT.astype(jnp.float32), 0.0)
    return jnp.sum(x_BxT) / jnp.maximum(jnp.sum(mask_BxT), 1).astype(jnp.float32)


def _max(x_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """Masked maximum of a nonnegative quantity (0 when no token)."""
    return jnp.max(jnp.where(mask_BxT, x_BxT.astype(jnp.float32), 0.0))


def log_ratio(
    old_logps_BxT: jax.Array, sampler_logps_BxT: jax.Array, mask_BxT: jax.Array
) -> jax.Array:
    """delta = log pi_old - log mu, float32, zero on padding, no gradient."""
    chex.assert_equal_shape([old_logps_BxT, sampler_logps_BxT, mask_BxT])
    delta_BxT = old_logps_BxT.astype(jnp.float32) - sampler_logps_BxT.astype(jnp.float32)
    return jax.lax.stop_gradient(jnp.where(mask_BxT.astype(bool), delta_BxT, 0.0))


def weights(
    old_logps_BxT: jax.Array,
    sampler_logps_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    rl: rl_config.RLConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The stop-gradient correction weights [B, T] of `rl.rollout_correction` (not "none"), and
    their metrics, taken after truncation or masking over the loss tokens:
      rl/is_weight_mean, rl/is_weight_max  the weights applied;
      rl/is_oob_frac  share of tokens whose raw weight the correction changed (truncated above
        C for *_tis; outside [lo, C], hence zeroed, for *_mis).
    There is deliberately no _min: the train step combines micro-batches by sum or by max only.
    """
    mode = rl.rollout_correction
    if mode not in rl_config.ROLLOUT_CORRECTIONS or mode == "none":
        raise ValueError(f"rollout_correction={mode!r} has no weights")
    mask_BxT = mask_BxT.astype(bool)
    delta_BxT = log_ratio(old_logps_BxT, sampler_logps_BxT, mask_BxT)
    lo, hi = rl.rollout_clip_low, rl.rollout_clip_high
    if mode.startswith("seq_"):
        log_w_B = jnp.clip(jnp.sum(delta_BxT, axis=1), -LOG_BOUND, LOG_BOUND)
        raw_BxT = jnp.broadcast_to(jnp.exp(log_w_B)[:, None], delta_BxT.shape)
    else:
        raw_BxT = jnp.exp(jnp.clip(delta_BxT, -LOG_BOUND, LOG_BOUND))
    if mode.endswith("_tis"):
        oob_BxT = raw_BxT > hi
        w_BxT = jnp.minimum(raw_BxT, hi)
    else:  # *_mis: the ratio inside the band, 0 outside (not 1: MIS and IcePop keep the ratio)
        oob_BxT = (raw_BxT < lo) | (raw_BxT > hi)
        w_BxT = jnp.where(oob_BxT, 0.0, raw_BxT)
    w_BxT = jax.lax.stop_gradient(jnp.where(mask_BxT, w_BxT, 0.0))
    metrics = {
        "rl/is_weight_mean": _mean(w_BxT, mask_BxT),
        "rl/is_weight_max": _max(w_BxT, mask_BxT),
        "rl/is_oob_frac": _mean(oob_BxT, mask_BxT),
    }
    return w_BxT, metrics


def metrics(
    old_logps_BxT: jax.Array, sampler_logps_BxT: jax.Array, mask_BxT: jax.Array
) -> dict[str, jax.Array]:
    """How far the sampler's log-probs mu are from the trainer's pi_old on the loss tokens:
    rl/mismatch_kl  mean(log mu - log pi_old), the k1 estimate of KL(mu || pi_old) (verl's kl);
    rl/mismatch_k3  mean(w - 1 - delta), its k3 estimate (>= 0);
    rl/mismatch_logp_abs_diff_mean / _max  |log pi_old - log mu| (TRL's sampling_logp_difference).
    """
    mask_BxT = mask_BxT.astype(bool)
    delta_BxT = log_ratio(old_logps_BxT, sampler_logps_BxT, mask_BxT)
    bounded_BxT = jnp.clip(delta_BxT, -LOG_BOUND, LOG_BOUND)
    abs_BxT = jnp.abs(delta_BxT)
    return {
        "rl/mismatch_kl": _mean(-delta_BxT, mask_BxT),
        "rl/mismatch_k3": _mean(jnp.expm1(bounded_BxT) - bounded_BxT, mask_BxT),
        "rl/mismatch_logp_abs_diff_mean": _mean(abs_BxT, mask_BxT),
        "rl/mismatch_logp_abs_diff_max": _max(abs_BxT, mask_BxT),
    }


class TrainerLogps(hooks.Hook):
    """pi_old for several updates per rollout batch (rl.num_updates > 1 with a correction): one
    no-grad trainer forward at the rollout weights over the whole global batch, before the first
    update, stored as `TrainBatch.trainer_logps_BxTc` and fixed for every update of the batch.

    `logps_fn` is forward.make_logps_fn's jitted scorer (the policy's model config, temperature
    and shardings); `pad_rows` is rollout.types.pad_rows (empty rows the scorer ignores).
    """

    def __init__(self, logps_fn, rows_multiple: int, mesh, pad_rows):
        self.logps_fn, self.rows_multiple, self.mesh = logps_fn, rows_multiple, mesh
        self.pad_rows = pad_rows

    def batch(self, r, batch, params):
        del r
        n = batch.completion_BxTc.shape[0]
        multiple = self.rows_multiple
        rows = -(-distributed.max_over_processes(n) // multiple) * multiple
        full = distributed.global_rows(self.pad_rows(batch, rows), self.mesh)
        logps_BxTc = self.logps_fn(
            params,
            full.prompt_BxTp,
            full.prompt_mask_BxTp,
            full.completion_BxTc,
            batch_lib.attention_mask(full),
        )
        logps_BxTc = np.asarray(distributed.local_rows(logps_BxTc, self.mesh))[:n]
        return batch.replace(trainer_logps_BxTc=logps_BxTc.astype(np.float32)), {}
