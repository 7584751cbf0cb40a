"""The forward pass of the decoder family as pure functions of a `Params` pytree, with a KV cache.

Matches transformers' Qwen2 / Qwen3 / Llama modelling numerically: RMSNorm computed in float32 then
cast back before the weight multiply, rotate-half RoPE in float32, softmax in float32. Attention
takes a per-row key mask and per-row positions, so left-padded prompts of different lengths share
one batch.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
from flax import struct

from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib

_MASKED = -1e30  # finite, so a fully masked (padding) query row gives a uniform softmax, never NaN


@struct.dataclass
class KVCache:
    """Preallocated keys/values of every layer; slot s of row b is attendable iff mask_BxS[b, s]."""

    # Layouts chosen so both attention einsums are plain batched matmuls over (B, N) with no
    # transpose of the cache per decode step: keys [B, N, K, S] (slots last), values [B, N, S, K].
    k: tuple[jax.Array, ...]  # per layer [B, N, K, S]
    v: tuple[jax.Array, ...]  # per layer [B, N, S, K]
    mask_BxS: jax.Array  # bool


def init_cache(cfg: config_lib.ModelConfig, batch: int, length: int) -> KVCache:
    """An empty cache for `batch` rows of `length` slots, in the compute dtype."""
    B, N, S, K = batch, cfg.num_kv_heads, length, cfg.head_dim
    dtype = jnp.dtype(cfg.compute_dtype)
    return KVCache(
        k=tuple(jnp.zeros((B, N, K, S), dtype) for _ in range(cfg.num_layers)),
        v=tuple(jnp.zeros((B, N, S, K), dtype) for _ in range(cfg.num_layers)),
        mask_BxS=jnp.zeros((batch, length), bool),
    )


def cache_prefix(cache: KVCache, length: int) -> KVCache:
    """The first `length` slots of every layer's cache (a static slice)."""
    return KVCache(
        k=tuple(k[..., :length] for k in cache.k),
        v=tuple(v[:, :, :length] for v in cache.v),
        mask_BxS=cache.mask_BxS[:, :length],
    )


def write_prefix(cache: KVCache, prefix: KVCache) -> KVCache:
    """`cache` with its first slots replaced by `prefix` (in place when `cache` is donated)."""
    return KVCache(
        k=tuple(
            jax.lax.dynamic_update_slice_in_dim(k, p, 0, 3)
            for k, p in zip(cache.k, prefix.k, strict=True)
        ),
        v=tuple(
            jax.lax.dynamic_update_slice_in_dim(v, p, 0, 2)
            for v, p in zip(cache.v, prefix.v, strict=True)
        ),
        mask_BxS=jax.lax.dynamic_update_slice_in_dim(cache.mask_BxS, prefix.mask_BxS, 0, 1),
    )


def rope_inv_freq(cfg: config_lib.ModelConfig) -> jax.Array:
    """Inverse frequencies [K/2] with the checkpoint's theta and scaling
    (HF `_compute_*_parameters`)."""
    K = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, K, 2, dtype=jnp.float32) / K))
    scaling = cfg.rope_scaling
    if scaling.rope_type == "linear":
        inv_freq = inv_freq / scaling.factor
    elif scaling.rope_type == "llama3":
        old_len = scaling.original_max_position_embeddings
        low_wavelen = old_len / scaling.low_freq_factor
        high_wavelen = old_len / scaling.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = jnp.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
        smooth = (old_len / wavelen - scaling.low_freq_factor) / (
            scaling.high_freq_factor - scaling.low_freq_factor
        )
        smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv_freq = jnp.where(medium, smoothed, scaled)
    return inv_freq


def apply_rope(x_BxTxHxK: jax.Array, positions_BxT: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotate-half RoPE (HF convention), computed in float32."""
    angles_BxTxK2 = positions_BxT[..., None].astype(jnp.float32) * inv_freq[None, None, :]
    cos = jnp.cos(angles_BxTxK2)[:, :, None, :]
    sin = jnp.sin(angles_BxTxK2)[:, :, None, :]
    x = x_BxTxHxK.astype(jnp.float32)
    x1, x2 = jnp.split(x, 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BxTxHxK.dtype)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """RMSNorm over the last axis: statistics in float32, cast back, then the weight
    (as HF does)."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    # Explicit leading unit axes: the tests run with jax_numpy_rank_promotion="raise".
    weight = weight.astype(x.dtype).reshape((1,) * (x.ndim - 1) + weight.shape)
    return weight * normed.astype(x.dtype)


def _attention_block(q_BxTxHxK, k_BxNxKxS, v_BxNxSxK, key_mask_BxS, query_slot_BxT) -> jax.Array:
    """Grouped-query attention of T queries over all S slots; scores and softmax in float32.

    Query t attends to slot s iff the slot holds a real token and s <= query_slot[t] (causal in
    slot order); the [B, T, S] mask is built here, for just these queries.
    """
    B, T, H, K = q_BxTxHxK.shape
    N, S = k_BxNxKxS.shape[1], k_BxNxKxS.shape[3]
    causal_BxTxS = jnp.arange(S)[None, None, :] <= query_slot_BxT[:, :, None]
    mask_BxTxS = key_mask_BxS[:, None, :] & causal_BxTxS
    q_BxNxGTxK = q_BxTxHxK.reshape(B, T, N, H // N, K).transpose(0, 2, 3, 1, 4)
    q_BxNxGTxK = q_BxNxGTxK.reshape(B, N, (H // N) * T, K)
    scores = jnp.einsum(
        "bnqk,bnks->bnqs", q_BxNxGTxK, k_BxNxKxS, preferred_element_type=jnp.float32
    )
    scores = scores.reshape(B, N, H // N, T, -1) * (K**-0.5)
    scores = jnp.where(mask_BxTxS[:, None, None, :, :], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_BxNxSxK.dtype)
    out = jnp.einsum("bnqs,bnsk->bnqk", probs.reshape(B, N, (H // N) * T, -1), v_BxNxSxK)
    return out.reshape(B, N, H // N, T, K).transpose(0, 3, 1, 2, 4).reshape(B, T, H, K)


def _attention(
    q_BxTxHxK, k_BxNxKxS, v_BxNxSxK, key_mask_BxS, query_slot_BxT, chunk: int = 0
) -> jax.Array:
    """Attention of T queries, all at once (chunk == 0 or T <= chunk) or in blocks of `chunk`
    queries.

    Blocked, only one block's [B, H, chunk, S] float32 scores are live at a time instead of
    [B, H, T, S]: a `lax.map` over query blocks whose body is `jax.checkpoint`ed, so the backward
    pass recomputes each block's scores rather than keeping them. Every query row still sees its
    whole softmax row, so the result is the direct path's up to summation order.
    """
    B, T, H, K = q_BxTxHxK.shape
    if chunk <= 0 or T <= chunk:
        return _attention_block(q_BxTxHxK, k_BxNxKxS, v_BxNxSxK, key_mask_BxS, query_slot_BxT)
    n = -(-T // chunk)
    pad = n * chunk - T
    q_BxTxHxK = jnp.pad(q_BxTxHxK, ((0, 0), (0, pad), (0, 0), (0, 0)))
    query_slot_BxT = jnp.pad(query_slot_BxT, ((0, 0), (0, pad)))  # padded queries: sliced off
    q_nxBxCxHxK = q_BxTxHxK.reshape(B, n, chunk, H, K).swapaxes(0, 1)
    slot_nxBxC = query_slot_BxT.reshape(B, n, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def block(xs):
        q, slot = xs
        return _attention_block(q, k_BxNxKxS, v_BxNxSxK, key_mask_BxS, slot)

    out_nxBxCxHxK = jax.lax.map(block, (q_nxBxCxHxK, slot_nxBxC))
    return out_nxBxCxHxK.swapaxes(0, 1).reshape(B, n * chunk, H, K)[:, :T]


def _dense(x: jax.Array, w: jax.Array, in_axes: int = 1) -> jax.Array:
    """`x`'s last `in_axes` axes contracted with `w`'s first `in_axes`, as one 2-D matmul.

    Same numbers as the einsum. The flat form keeps XLA:CPU from fusing the backward pass's
    elementwise work (e.g. SiLU's derivative) with a strided transpose: with it and the flat
    `lm_logits`, a gradient of the tiny model at B=32, T=80 went from 223 ms to 156 ms
    (forward 34 ms either way).
    """
    lead, din = x.shape[: x.ndim - in_axes], w.shape[:in_axes]
    rows, cols = math.prod(lead), math.prod(din)
    out = x.reshape(rows, cols) @ w.reshape(cols, -1)
    return out.reshape(*lead, *w.shape[in_axes:])


def write_at(x: jax.Array, new: jax.Array, index: jax.Array | int, axis: int) -> jax.Array:
    """`x` with `new` written at `index` along `axis`: one index for every row, or one per row
    (`index` of shape [B]: each row of a slot-based cache at its own length)."""
    if jnp.ndim(index) == 0:
        return jax.lax.dynamic_update_slice_in_dim(x, new, index, axis)
    row_fn = lambda x_, n_, i_: jax.lax.dynamic_update_slice_in_dim(x_, n_, i_, axis - 1)
    return jax.vmap(row_fn)(x, new, index)


def _layer(
    lp: params_lib.LayerParams,
    x_BxTxD: jax.Array,
    positions_BxT: jax.Array,
    kv: tuple[jax.Array, jax.Array] | None,
    key_mask_BxS: jax.Array,
    query_slot_BxT: jax.Array,
    cache_index: jax.Array | int,
    *,
    cfg: config_lib.ModelConfig,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """One pre-norm decoder layer; writes this call's keys/values into `kv` at `cache_index`
    (`kv` None: no cache, this call's keys and values are all the slots)."""
    dtype = x_BxTxD.dtype
    w = lambda a: a.astype(dtype)
    h = rms_norm(x_BxTxD, lp.attn_norm, cfg.rms_norm_eps)
    q, k, v = _dense(h, w(lp.q)), _dense(h, w(lp.k)), _dense(h, w(lp.v))
    if cfg.qkv_bias:
        q, k, v = (
            q + w(lp.q_bias)[None, None],
            k + w(lp.k_bias)[None, None],
            v + w(lp.v_bias)[None, None],
        )
    if cfg.qk_norm:
        q = rms_norm(q, lp.q_norm, cfg.rms_norm_eps)
        k = rms_norm(k, lp.k_norm, cfg.rms_norm_eps)
    inv_freq = rope_inv_freq(cfg)
    q = apply_rope(q, positions_BxT, inv_freq)
    k = apply_rope(k, positions_BxT, inv_freq)
    k_new = k.transpose(0, 2, 3, 1)  # [B, N, K, T]
    v_new = v.transpose(0, 2, 1, 3)  # [B, N, T, K]
    if kv is None:
        k_cache, v_cache = k_new, v_new
    else:
        k_cache, v_cache = kv
        k_cache = write_at(k_cache, k_new.astype(k_cache.dtype), cache_index, 3)
        v_cache = write_at(v_cache, v_new.astype(v_cache.dtype), cache_index, 2)
    attn = _attention(q, k_cache, v_cache, key_mask_BxS, query_slot_BxT, cfg.attention_chunk)
    x_BxTxD = x_BxTxD + _dense(attn, w(lp.o), in_axes=2)
    h = rms_norm(x_BxTxD, lp.mlp_norm, cfg.rms_norm_eps)
    gate, up = _dense(h, w(lp.gate)), _dense(h, w(lp.up))
    x_BxTxD = x_BxTxD + _dense(jax.nn.silu(gate) * up, w(lp.down))
    return x_BxTxD, (k_cache, v_cache)


def decode_hidden(
    params: params_lib.Params,
    tokens_BxT: jax.Array,
    positions_BxT: jax.Array,
    mask_BxT: jax.Array,
    cfg: config_lib.ModelConfig,
    cache: KVCache | None = None,
    cache_index: jax.Array | int = 0,
) -> tuple[jax.Array, KVCache | None]:
    """Runs the decoder stack; returns final-normed hidden states [B, T, D] and the updated cache.

    `mask_BxT` marks real (non-padding) tokens. Without a cache, attention is causal over this
    call's tokens. With a cache, the tokens are written at slots [cache_index, cache_index + T) and
    attend to every valid slot up to their own. `cache_index` is one slot for every row, or one per
    row (shape [B]) for a cache whose rows have different lengths (rlvr_jax/engine).
    """
    chex.assert_rank(tokens_BxT, 2)
    chex.assert_equal_shape([tokens_BxT, positions_BxT, mask_BxT])
    B, T = tokens_BxT.shape
    dtype = jnp.dtype(cfg.compute_dtype)
    use_cache = cache is not None
    if use_cache:
        key_mask_BxS = write_at(cache.mask_BxS, mask_BxT.astype(bool), cache_index, 1)
    else:  # the keys are exactly this call's tokens: slots 0 .. T-1
        key_mask_BxS, cache_index = mask_BxT.astype(bool), 0
    # Causal in slot order: query t sits at slot cache_index + t.
    query_slot_BxT = jnp.reshape(cache_index, (-1, 1)) + jnp.arange(T)[None, :]
    query_slot_BxT = jnp.broadcast_to(query_slot_BxT, (B, T))

    x = params.embed[tokens_BxT].astype(dtype)
    layer_fn = functools.partial(
        _layer,
        positions_BxT=positions_BxT,
        key_mask_BxS=key_mask_BxS,
        query_slot_BxT=query_slot_BxT,
        cache_index=cache_index,
        cfg=cfg,
    )
    if not use_cache:
        if cfg.remat:
            x = _remat_scan(layer_fn, params.layers, x)
        else:
            for lp in params.layers:
                x, _ = layer_fn(lp, x, kv=None)
        return rms_norm(x, params.final_norm, cfg.rms_norm_eps), None
    new_k, new_v = [], []
    for lp, k_cache, v_cache in zip(params.layers, cache.k, cache.v, strict=True):
        x, (k_cache, v_cache) = layer_fn(lp, x, kv=(k_cache, v_cache))
        new_k.append(k_cache)
        new_v.append(v_cache)
    x = rms_norm(x, params.final_norm, cfg.rms_norm_eps)
    return x, KVCache(k=tuple(new_k), v=tuple(new_v), mask_BxS=key_mask_BxS)


def _remat_scan(layer_fn, layers: tuple[params_lib.LayerParams, ...], x_BxTxD: jax.Array):
    """The layers as one `lax.scan` over their stacked params, each step `jax.checkpoint`ed: only
    each layer's input is saved, and the backward pass recomputes one layer at a time.

    Why a scan rather than `jax.checkpoint` around each layer of the Python loop: XLA:CPU expands
    the optimization barriers that keep the recomputation apart (cse_barrier_expander) before its
    CSE pass, which then merges the recomputation back into the forward pass, so per-layer
    checkpointing saves nothing there (tiny, T=1024: 238 vs 242 MiB of temporaries; with the scan
    70 MiB). The forward and backward loops of a scan are separate computations that CSE cannot
    merge, on any backend. The price is one stacked copy of the layer weights (and of their
    gradient) per call.
    """
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)

    @jax.checkpoint
    def body(x, lp):
        x, _ = layer_fn(lp, x, kv=None)
        return x, None

    x_BxTxD, _ = jax.lax.scan(body, x_BxTxD, stacked)
    return x_BxTxD


def lm_logits(params: params_lib.Params, hidden_BxTxD: jax.Array) -> jax.Array:
    """Output logits in float32 (tied embeddings use `embed` transposed)."""
    B, T, D = hidden_BxTxD.shape
    h_NxD = hidden_BxTxD.reshape(B * T, D)  # flat matmul: see _dense
    if params.lm_head is None:
        w_DxV = params.embed.astype(hidden_BxTxD.dtype).T
    else:
        w_DxV = params.lm_head.astype(hidden_BxTxD.dtype)
    logits = jnp.matmul(h_NxD, w_DxV, preferred_element_type=jnp.float32)
    return logits.reshape(B, T, -1)


def forward(
    params: params_lib.Params,
    tokens_BxT: jax.Array,
    positions_BxT: jax.Array,
    mask_BxT: jax.Array,
    cfg: config_lib.ModelConfig,
) -> jax.Array:
    """Float32 logits [B, T, V] of a causal forward pass without a cache."""
    hidden, _ = decode_hidden(params, tokens_BxT, positions_BxT, mask_BxT, cfg)
    return lm_logits(params, hidden)


def positions_from_mask(mask_BxT: jax.Array) -> jax.Array:
    """Per-row positions counting only real tokens (left padding gets position 0)."""
    return jnp.maximum(jnp.cumsum(mask_BxT.astype(jnp.int32), axis=1) - 1, 0)
