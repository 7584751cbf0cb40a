"""The rollout engine's device side: S decode slots over one KV cache, as pure jitted functions.

Each slot holds one row (a prompt and what the policy has sampled after it, or a multi-turn
episode's whole history) at cache positions [0, len): no left padding, so a slot's cache position
is also its RoPE position. Rows of different lengths share the cache because every write goes to
the row's own index (`transformer.write_at` with one index per row).

- `prefill_chunk`: one chunk of a batch of right-padded prompts into a staging cache.
- `insert`: copies staged prompts into slots; a staged prompt may fill any number of slots, which
  is how the G samples of a prompt share one prefill.
- `decode`: up to K decode steps of every live slot in one `lax.while_loop`; a slot stops on one
  of its stop ids or when its sampled-token count reaches its budget.
- `append`: writes tokens (an environment's observation) onto some slots' caches and leaves their
  next-token logits ready for `decode`.
- `take`: gathers some slots into a smaller set (the tail of a batch, when few rows are left).

Sampling draws slot s's t-th token with the t-th uniform of its row's stream (`u_SxTo`, copied in
at `insert`), so a row's tokens do not depend on the slot or the step it ran in.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from rlvr_jax import sampling
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import transformer


@struct.dataclass
class Slots:
    """Every slot's cache and decoding state. Arrays lead with the slot axis S."""

    cache: transformer.KVCache  # [S, ..., L] keys and values; mask_SxL marks valid positions
    logits_SxV: jax.Array  # float32: next-token logits after each slot's last cached token
    len_S: jax.Array  # int32: tokens in the cache; the next write index and RoPE position
    live_S: jax.Array  # bool: decoding
    stopped_S: jax.Array  # bool: the last decode ended on a stop id (False: on its budget)
    count_S: jax.Array  # int32: tokens this slot's row has sampled so far (over every turn)
    budget_S: jax.Array  # int32: a live slot stops when count_S reaches it
    stop_SxX: jax.Array  # int32 stop ids, -1 padded
    u_SxTo: jax.Array  # float32: the row's uniforms, one per sampled token
    tokens_SxTo: jax.Array  # int32: sampled tokens, by count
    logps_SxTo: jax.Array  # float32: their log-probs under the tempered policy
    certainty_SxTo: jax.Array  # float32: self-certainty of each sampling step


def init_slots(model_cfg: config_lib.ModelConfig, S: int, L: int, To: int, X: int) -> Slots:
    """S empty slots of L cache positions, To sampled tokens and X stop ids each."""
    zeros = lambda shape, dtype: jnp.zeros(shape, dtype)
    return Slots(
        cache=transformer.init_cache(model_cfg, S, L),
        logits_SxV=zeros((S, model_cfg.vocab_size), jnp.float32),
        len_S=zeros((S,), jnp.int32),
        live_S=zeros((S,), bool),
        stopped_S=zeros((S,), bool),
        count_S=zeros((S,), jnp.int32),
        budget_S=zeros((S,), jnp.int32),
        stop_SxX=jnp.full((S, X), -1, jnp.int32),
        u_SxTo=zeros((S, To), jnp.float32),
        tokens_SxTo=zeros((S, To), jnp.int32),
        logps_SxTo=zeros((S, To), jnp.float32),
        certainty_SxTo=zeros((S, To), jnp.float32),
    )


def _last_logits(params, hidden_BxCxD: jax.Array, last_B: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(logits at chunk index last_B per row, whether that index lies in the chunk)."""
    C = hidden_BxCxD.shape[1]
    in_chunk_B = (last_B >= 0) & (last_B < C)
    idx_Bx1x1 = jnp.clip(last_B, 0, C - 1)[:, None, None]
    h_Bx1xD = jnp.take_along_axis(hidden_BxCxD, idx_Bx1x1, axis=1)
    return transformer.lm_logits(params, h_Bx1xD)[:, 0], in_chunk_B


def prefill_chunk(
    params,
    cache: transformer.KVCache,
    logits_BxV: jax.Array,
    tokens_BxC: jax.Array,
    lengths_B: jax.Array,
    start: jax.Array,
    *,
    model_cfg: config_lib.ModelConfig,
) -> tuple[transformer.KVCache, jax.Array]:
    """Positions [start, start + C) of right-padded prompts of `lengths_B` tokens into `cache`.

    Returns the cache and, for rows whose last prompt token is in this chunk, its next-token
    logits (other rows keep `logits_BxV`).
    """
    B, C = tokens_BxC.shape
    positions_BxC = jnp.broadcast_to(start + jnp.arange(C, dtype=jnp.int32)[None, :], (B, C))
    mask_BxC = positions_BxC < lengths_B[:, None]
    hidden, cache = transformer.decode_hidden(
        params, tokens_BxC, positions_BxC, mask_BxC, model_cfg, cache, start
    )
    logits, in_chunk_B = _last_logits(params, hidden, lengths_B - 1 - start)
    return cache, jnp.where(in_chunk_B[:, None], logits, logits_BxV)


def insert(
    slots: Slots,
    staged: transformer.KVCache,
    staged_logits_BxV: jax.Array,
    staged_len_B: jax.Array,
    src_S: jax.Array,
    budget_S: jax.Array,
    stop_SxX: jax.Array,
    u_SxTo: jax.Array,
) -> Slots:
    """Slots with `src_S >= 0` take staged prompt `src_S` (its cache, logits and length), a fresh
    sampling state and go live with their budget, stop ids and uniforms; the others are unchanged.
    """
    S, L = slots.cache.mask_BxS.shape
    Tp = staged.mask_BxS.shape[1]
    new_S = src_S >= 0
    dst_S = jnp.where(new_S, jnp.arange(S), S)  # out of range: dropped by the scatters
    src_S = jnp.maximum(src_S, 0)
    k = tuple(
        c.at[dst_S, :, :, :Tp].set(s[src_S], mode="drop")
        for c, s in zip(slots.cache.k, staged.k, strict=True)
    )
    v = tuple(
        c.at[dst_S, :, :Tp, :].set(s[src_S], mode="drop")
        for c, s in zip(slots.cache.v, staged.v, strict=True)
    )
    mask_row_SxL = jnp.pad(staged.mask_BxS[src_S], ((0, 0), (0, L - Tp)))
    mask = slots.cache.mask_BxS.at[dst_S].set(mask_row_SxL, mode="drop")
    where = lambda new, old: jnp.where(new_S.reshape((S,) + (1,) * (old.ndim - 1)), new, old)
    return slots.replace(
        cache=transformer.KVCache(k=k, v=v, mask_BxS=mask),
        logits_SxV=where(staged_logits_BxV[src_S], slots.logits_SxV),
        len_S=where(staged_len_B[src_S], slots.len_S),
        live_S=slots.live_S | new_S,
        stopped_S=where(False, slots.stopped_S),
        count_S=where(0, slots.count_S),
        budget_S=where(budget_S, slots.budget_S),
        stop_SxX=where(stop_SxX, slots.stop_SxX),
        u_SxTo=where(u_SxTo, slots.u_SxTo),
    )


def _decode_step(params, s: Slots, model_cfg, cfg: sampling.SamplingConfig) -> Slots:
    """One token for every live slot; dead slots compute but change nothing they own."""
    S, To = s.u_SxTo.shape
    idx_Sx1 = jnp.minimum(s.count_S, To - 1)[:, None]
    u_S = jnp.take_along_axis(s.u_SxTo, idx_Sx1, axis=1)[:, 0]
    tok_S, logp_S, cert_S = sampling.sample_token(s.logits_SxV, u_S, cfg)
    live_S = s.live_S
    tok_S = jnp.where(live_S, tok_S, cfg.pad_id)
    col_S = jnp.where(live_S, s.count_S, To)  # dead slots write nowhere
    rows_S = jnp.arange(S)
    tokens = s.tokens_SxTo.at[rows_S, col_S].set(tok_S, mode="drop")
    logps = s.logps_SxTo.at[rows_S, col_S].set(logp_S, mode="drop")
    certainty = s.certainty_SxTo.at[rows_S, col_S].set(cert_S, mode="drop")
    count_S = s.count_S + live_S
    hit_stop_S = live_S & jnp.any(tok_S[:, None] == s.stop_SxX, axis=1)
    ends_S = hit_stop_S | (live_S & (count_S >= s.budget_S))
    # The sampled token (a stop token too) goes into the cache: a later turn continues after it.
    hidden_Sx1xD, cache = transformer.decode_hidden(
        params, tok_S[:, None], s.len_S[:, None], live_S[:, None], model_cfg, s.cache, s.len_S
    )
    logits_SxV = transformer.lm_logits(params, hidden_Sx1xD)[:, 0]
    return s.replace(
        cache=cache,
        logits_SxV=jnp.where(live_S[:, None], logits_SxV, s.logits_SxV),
        len_S=s.len_S + live_S,
        live_S=live_S & ~ends_S,
        stopped_S=jnp.where(ends_S, hit_stop_S, s.stopped_S),
        count_S=count_S,
        tokens_SxTo=tokens,
        logps_SxTo=logps,
        certainty_SxTo=certainty,
    )


def decode(
    params,
    slots: Slots,
    *,
    steps: int,
    window: int,
    model_cfg: config_lib.ModelConfig,
    cfg: sampling.SamplingConfig,
) -> Slots:
    """Up to `steps` decode steps, fewer if every slot stops. Attention sees the first `window`
    cache positions only: the caller picks one that holds every occupied slot's history and this
    call's tokens, so later positions (all empty) are not streamed at every step."""
    full = slots.cache
    L = full.mask_BxS.shape[1]
    s = slots if window >= L else slots.replace(cache=transformer.cache_prefix(full, window))

    def cond(carry):
        i, s = carry
        return (i < steps) & jnp.any(s.live_S)

    def body(carry):
        i, s = carry
        return i + 1, _decode_step(params, s, model_cfg, cfg)

    _, s = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), s))
    if window >= L:
        return s
    return s.replace(cache=transformer.write_prefix(full, s.cache))


def append(
    params,
    slots: Slots,
    idx_A: jax.Array,
    tokens_AxT: jax.Array,
    n_A: jax.Array,
    *,
    model_cfg: config_lib.ModelConfig,
) -> Slots:
    """Writes `n_A` tokens (right-padded in `tokens_AxT`) onto slots `idx_A` (S: a padding entry,
    ignored) at their current length, and sets their next-token logits after the last one.

    The caller keeps len + T within the cache (`Engine` allocates that margin).
    """
    S = slots.len_S.shape[0]
    A, T = tokens_AxT.shape
    take = lambda x: x[jnp.minimum(idx_A, S - 1)]
    sub = jax.tree.map(take, slots.cache)
    len_A = take(slots.len_S)
    positions_AxT = len_A[:, None] + jnp.arange(T, dtype=jnp.int32)[None, :]
    mask_AxT = jnp.arange(T)[None, :] < n_A[:, None]
    hidden, sub = transformer.decode_hidden(
        params, tokens_AxT, positions_AxT, mask_AxT, model_cfg, sub, len_A
    )
    logits_AxV, _ = _last_logits(params, hidden, n_A - 1)
    put = lambda x, new: x.at[idx_A].set(new, mode="drop")
    cache = jax.tree.map(put, slots.cache, sub)
    return slots.replace(
        cache=cache,
        logits_SxV=put(slots.logits_SxV, logits_AxV),
        len_S=put(slots.len_S, len_A + n_A),
    )


def take(slots: Slots, idx_N: jax.Array, keep_N: jax.Array) -> Slots:
    """N slots gathered from `slots` (slot i <- idx_N[i]); live only where `keep_N` (the rest are
    padding copies). How the engine moves its last rows into fewer slots."""
    out = jax.tree.map(lambda x: x[idx_N], slots)
    return out.replace(live_S=out.live_S & keep_N)


def resume(slots: Slots, go_S: jax.Array, budget_S: jax.Array, stop_SxX: jax.Array) -> Slots:
    """Slots with `go_S` go live again with a new budget (a count to reach) and stop ids."""
    where = lambda new, old: jnp.where(go_S.reshape(go_S.shape + (1,) * (old.ndim - 1)), new, old)
    return slots.replace(
        live_S=slots.live_S | go_S,
        budget_S=where(budget_S, slots.budget_S),
        stop_SxX=where(stop_SxX, slots.stop_SxX),
    )
