"""The loss's input: one rollout batch as arrays, rows group-major."""

# pylint: disable=invalid-name
from __future__ import annotations

import jax
from flax import struct


@struct.dataclass
class TrainBatch:
    """One rollout batch, ready for the loss. Advantages are per token (broadcast from per
    sequence)."""

    prompt_BxTp: jax.Array  # int32, left padded
    prompt_mask_BxTp: jax.Array  # bool
    completion_BxTc: jax.Array  # int32, right padded
    completion_mask_BxTc: jax.Array  # bool: tokens that carry loss
    old_logps_BxTc: jax.Array  # float32: the sampler's log-probs (behaviour policy)
    adv_BxTc: jax.Array  # float32
    ref_logps_BxTc: jax.Array | None = None  # float32, only when beta > 0
    # The trainer's log-probs at the rollout weights (pi_old), from one recompute pass before the
    # first of several updates (objectives/mismatch.py; only with rl.rollout_correction and
    # rl.num_updates > 1). None: pi_old is the loss's own forward, sg[log pi_theta].
    trainer_logps_BxTc: jax.Array | None = None  # float32
    # DistIL: the feedback-conditioned teacher's top-k tokens and renormalised probabilities.
    teacher_ids_BxTcxK: jax.Array | None = None  # int32
    teacher_probs_BxTcxK: jax.Array | None = None  # float32
    # Multi-turn: completion-side tokens that are context only (environment observations between
    # the policy's turns): attended to, never trained on (no loss, no log-prob of the sampler).
    context_mask_BxTc: jax.Array | None = None  # bool


def attention_mask(batch: TrainBatch) -> jax.Array:
    """[B, Tc] completion-side tokens the forward attends to: the loss tokens and the context."""
    if batch.context_mask_BxTc is None:
        return batch.completion_mask_BxTc
    return batch.completion_mask_BxTc | batch.context_mask_BxTc
