"""What one forward pass over prompt + completion gives the losses, and the jitted no-grad
scorers built on it (reference, teacher and old-policy log-probs, teacher top-k).

Micro-batches are strided: row i goes to micro-batch i % M (`to_micro` / `from_micro`). The batch
is split over devices in contiguous blocks, so every device holds its share of every micro-batch
and a scan over them needs no resharding.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct

from rlvr_jax import mesh as mesh_lib
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import transformer
from rlvr_jax.objectives import policy_loss


def to_micro(x: jax.Array, num_micro: int) -> jax.Array:
    """[B, ...] -> [M, B/M, ...], row i in micro-batch i % M."""
    B = x.shape[0]
    return x.reshape(B // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1)


def from_micro(x: jax.Array) -> jax.Array:
    """The inverse of `to_micro`: [M, B/M, ...] -> [B, ...]."""
    return x.swapaxes(0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


@struct.dataclass
class CompletionForward:
    """What one forward pass over prompt + completion gives the losses, at the Tc positions that
    predict completion tokens."""

    logps_BxTc: jax.Array  # float32 log pi(y_t | s_t), tempered
    entropy_BxTc: jax.Array  # float32
    hidden_BxTcxD: jax.Array  # final-normed hidden states fed to the LM head (DelTA's h)
    logits_BxTcxV: jax.Array  # float32, tempered (DistIL's student distribution)


def completion_forward(
    params: params_lib.Params,
    prompt_BxTp: jax.Array,
    prompt_mask_BxTp: jax.Array,
    completion_BxTc: jax.Array,
    completion_mask_BxTc: jax.Array,
    *,
    model_cfg: config_lib.ModelConfig,
    temperature: float = 1.0,
) -> CompletionForward:
    """One forward pass over prompt + completion; only the Tc positions that predict completion
    tokens go through the LM head. Temperature matches the sampler's, so on-policy ratios are
    exactly 1."""
    chex.assert_equal_shape([prompt_BxTp, prompt_mask_BxTp])
    chex.assert_equal_shape([completion_BxTc, completion_mask_BxTc])
    Tp = prompt_BxTp.shape[1]
    tokens_BxT = jnp.concatenate([prompt_BxTp, completion_BxTc], axis=1)
    mask_BxT = jnp.concatenate([prompt_mask_BxTp, completion_mask_BxTc], axis=1)
    positions_BxT = transformer.positions_from_mask(mask_BxT)
    hidden_BxTxD, _ = transformer.decode_hidden(
        params, tokens_BxT, positions_BxT, mask_BxT, model_cfg
    )
    hidden_BxTcxD = hidden_BxTxD[:, Tp - 1 : -1]
    logits_BxTcxV = transformer.lm_logits(params, hidden_BxTcxD)
    logits_BxTcxV = logits_BxTcxV / (temperature if temperature > 0 else 1.0)
    return CompletionForward(
        logps_BxTc=policy_loss.token_logps(logits_BxTcxV, completion_BxTc),
        entropy_BxTc=policy_loss.entropy(logits_BxTcxV),
        hidden_BxTcxD=hidden_BxTcxD,
        logits_BxTcxV=logits_BxTcxV,
    )


def completion_logps(*args, **kwargs) -> tuple[jax.Array, jax.Array]:
    """Log-probs and entropies [B, Tc] of the completion tokens (see `completion_forward`)."""
    out = completion_forward(*args, **kwargs)
    return out.logps_BxTc, out.entropy_BxTc


def sequence_advantages(adv_BxTc: jax.Array, mask_BxTc: jax.Array) -> jax.Array:
    """Per-row advantage [B] from its broadcast per-token form (0 for rows without tokens)."""
    count_B = jnp.sum(mask_BxTc, axis=1, dtype=jnp.float32)
    return jnp.sum(jnp.where(mask_BxTc, adv_BxTc, 0.0), axis=1) / jnp.maximum(count_B, 1.0)


def make_completion_fn(
    head,
    *,
    model_cfg: config_lib.ModelConfig,
    temperature: float = 1.0,
    param_shardings: params_lib.Params | None = None,
    num_micro: int = 1,
):
    """Jitted, no-grad `head(completion_forward(...))` over (params, prompt, prompt mask,
    completion, completion mask): every output leaf keeps the rows as its leading axis. With
    `param_shardings`, the rows are split over the mesh's data x fsdp axes.

    `num_micro` > 1 scores the rows in that many sequential micro-batches (strided, as the train
    step's), so the activations and logits of only one are alive at a time.
    """

    def one(params, *rows):
        return head(completion_forward(params, *rows, model_cfg=model_cfg, temperature=temperature))

    def scored(params, *rows):
        B = rows[0].shape[0]
        if num_micro == 1:
            return one(params, *rows)
        if B % num_micro:
            raise ValueError(f"{B} rows do not split into {num_micro} reference micro-batches")
        micro = [to_micro(x, num_micro) for x in rows]
        out = jax.lax.map(lambda mb: one(params, *mb), micro)  # leaves [M, B/M, ...]
        return jax.tree.map(from_micro, out)

    if param_shardings is None:
        return jax.jit(scored)
    rows = mesh_lib.batch_sharding(jax.tree.leaves(param_shardings)[0].mesh)
    return jax.jit(scored, in_shardings=(param_shardings, *[rows] * 4), out_shardings=rows)


def make_logps_fn(**kwargs):
    """Jitted completion log-probs [B, Tc] (reference, teacher or old-policy scoring), no grad;
    arguments as `make_completion_fn`."""
    return make_completion_fn(lambda fwd: fwd.logps_BxTc, **kwargs)
