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
    # float32, tempered: only on the direct path (model_cfg.logits_chunk == 0), else None.
    logits_BxTcxV: jax.Array | None = None
    # float32 log pi at the `gather_ids_BxTcxK` asked for (DistIL's student at the teacher top-k).
    gathered_logps_BxTcxK: jax.Array | None = None
    # This model's `top_k` most likely ids (int32) and their renormalised probs (teacher scoring).
    top_ids_BxTcxK: jax.Array | None = None
    top_probs_BxTcxK: jax.Array | None = None


def _head_outputs(logits_BxTxV, tokens_BxT, ids_BxTxK, top_k: int) -> dict[str, jax.Array]:
    """Everything the losses read off tempered logits: log-probs, entropy, gathered log-probs and
    the stop-gradient top-k."""
    out = {
        "logps_BxTc": policy_loss.token_logps(logits_BxTxV, tokens_BxT),
        "entropy_BxTc": policy_loss.entropy(logits_BxTxV),
    }
    if ids_BxTxK is not None:
        logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
        out["gathered_logps_BxTcxK"] = jnp.take_along_axis(logp_BxTxV, ids_BxTxK, axis=-1)
    if top_k:
        top_BxTxK, ids_BxTxK = jax.lax.top_k(jax.lax.stop_gradient(logits_BxTxV), top_k)
        out["top_ids_BxTcxK"] = ids_BxTxK.astype(jnp.int32)
        out["top_probs_BxTcxK"] = jax.nn.softmax(top_BxTxK.astype(jnp.float32), axis=-1)
    return out


def chunked_head(
    params: params_lib.Params,
    hidden_BxTxD: jax.Array,
    tokens_BxT: jax.Array,
    *,
    chunk: int,
    temperature: float = 1.0,
    ids_BxTxK: jax.Array | None = None,
    top_k: int = 0,
) -> dict[str, jax.Array]:
    """`_head_outputs` of `lm_logits(hidden) / temperature`, `chunk` tokens at a time.

    The B x T positions are flattened and padded to a multiple of `chunk`; a `lax.map` over the
    chunks computes each chunk's [chunk, V] float32 logits and reduces them at once, and its body
    is `jax.checkpoint`ed, so the backward pass recomputes a chunk's logits from its hidden states
    instead of keeping [B, T, V] (or its gradient) alive. The weights' gradient accumulates over
    the chunks.
    """
    chex.assert_rank([hidden_BxTxD, tokens_BxT], [3, 2])
    chex.assert_equal_shape_prefix([hidden_BxTxD, tokens_BxT], 2)
    if chunk < 1:
        raise ValueError(f"chunked_head needs chunk >= 1, got {chunk}")
    B, T, _ = hidden_BxTxD.shape
    N = B * T
    n = -(-N // chunk)
    pad = n * chunk - N

    def split(x):  # [B, T, ...] -> [n, chunk, ...]
        x = x.reshape(N, *x.shape[2:])
        x = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
        return x.reshape(n, chunk, *x.shape[1:])

    xs = (split(hidden_BxTxD), split(tokens_BxT), None if ids_BxTxK is None else split(ids_BxTxK))

    @jax.checkpoint
    def body(xs):
        h_CxD, tok_C, ids_CxK = xs
        logits_1xCxV = transformer.lm_logits(params, h_CxD[None]) / temperature
        ids_1xCxK = None if ids_CxK is None else ids_CxK[None]
        out = _head_outputs(logits_1xCxV, tok_C[None], ids_1xCxK, top_k)
        return {k: v[0] for k, v in out.items()}

    out = jax.lax.map(body, xs)  # leaves [n, chunk, ...]
    return {
        k: v.reshape(n * chunk, *v.shape[2:])[:N].reshape(B, T, *v.shape[2:])
        for k, v in out.items()
    }


def completion_forward(
    params: params_lib.Params,
    prompt_BxTp: jax.Array,
    prompt_mask_BxTp: jax.Array,
    completion_BxTc: jax.Array,
    completion_mask_BxTc: jax.Array,
    *,
    model_cfg: config_lib.ModelConfig,
    temperature: float = 1.0,
    gather_ids_BxTcxK: jax.Array | None = None,
    top_k: int = 0,
) -> CompletionForward:
    """One forward pass over prompt + completion; only the Tc positions that predict completion
    tokens go through the LM head. Temperature matches the sampler's, so on-policy ratios are
    exactly 1.

    With `model_cfg.logits_chunk` > 0 the head runs in chunks (`chunked_head`) and no [B, Tc, V]
    tensor is returned: what a loss needs of the vocabulary comes back reduced, the log-probs at
    `gather_ids_BxTcxK` (if given) and this model's `top_k` ids and probs (if > 0). The direct
    path returns the same fields, plus the logits.
    """
    chex.assert_equal_shape([prompt_BxTp, prompt_mask_BxTp])
    chex.assert_equal_shape([completion_BxTc, completion_mask_BxTc])
    if gather_ids_BxTcxK is not None:
        chex.assert_equal_shape_prefix([gather_ids_BxTcxK, completion_BxTc], 2)
    Tp = prompt_BxTp.shape[1]
    tokens_BxT = jnp.concatenate([prompt_BxTp, completion_BxTc], axis=1)
    mask_BxT = jnp.concatenate([prompt_mask_BxTp, completion_mask_BxTc], axis=1)
    positions_BxT = transformer.positions_from_mask(mask_BxT)
    hidden_BxTxD, _ = transformer.decode_hidden(
        params, tokens_BxT, positions_BxT, mask_BxT, model_cfg
    )
    hidden_BxTcxD = hidden_BxTxD[:, Tp - 1 : -1]
    temp = temperature if temperature > 0 else 1.0
    if model_cfg.logits_chunk:
        out = chunked_head(
            params,
            hidden_BxTcxD,
            completion_BxTc,
            chunk=model_cfg.logits_chunk,
            temperature=temp,
            ids_BxTxK=gather_ids_BxTcxK,
            top_k=top_k,
        )
        return CompletionForward(hidden_BxTcxD=hidden_BxTcxD, **out)
    logits_BxTcxV = transformer.lm_logits(params, hidden_BxTcxD) / temp
    out = _head_outputs(logits_BxTcxV, completion_BxTc, gather_ids_BxTcxK, top_k)
    return CompletionForward(hidden_BxTcxD=hidden_BxTcxD, logits_BxTcxV=logits_BxTcxV, **out)


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
    top_k: int = 0,
):
    """Jitted, no-grad `head(completion_forward(...))` over (params, prompt, prompt mask,
    completion, completion mask): every output leaf keeps the rows as its leading axis. With
    `param_shardings`, the rows are split over the mesh's data x fsdp axes.

    `num_micro` > 1 scores the rows in that many sequential micro-batches (strided, as the train
    step's), so the activations and logits of only one are alive at a time. With
    `model_cfg.logits_chunk` > 0 the scorer never holds [B, Tc, V] logits at all: `head` then reads
    the reduced fields (log-probs, entropy, `top_k` ids and probs), not `logits_BxTcxV`.
    """

    def one(params, *rows):
        fwd = completion_forward(
            params, *rows, model_cfg=model_cfg, temperature=temperature, top_k=top_k
        )
        return head(fwd)

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
