"""The rollout sampler: jitted prefill, then the whole decode loop in one jitted `lax.while_loop`.

Prompts of different lengths share a batch by left padding to a common bucket, so every row writes
the same KV-cache slot at each decode step (one `dynamic_update_slice` per layer) while keeping its
own RoPE positions. Prompt and completion lengths are rounded up to a small set of buckets, so a
training run compiles the sampler once per bucket pair, not once per batch. The cache is allocated
by the prefill and donated to the decode loop, which updates it in place.

Returned log-probabilities are those of the sampled tokens under the tempered policy,
`log_softmax(logits / temperature)` (temperature 1 for greedy), before top-k / top-p truncation:
that is the distribution a training forward pass can reproduce, so it is what importance ratios
need.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import bisect
import dataclasses
import functools
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import PartitionSpec as P

from rlvr_jax import mesh as mesh_lib
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import transformer

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How to sample. Frozen and hashable: a static argument of the jitted sampler."""

    max_new_tokens: int  # completion budget, tokens
    temperature: float = 1.0  # 0 means greedy
    top_k: int = 0  # 0 disables top-k
    top_p: float = 1.0  # 1 disables nucleus sampling
    eos_ids: tuple[int, ...] = ()  # stop tokens shared by every row
    pad_id: int = 0  # written after a row stops
    prompt_buckets: tuple[int, ...] = DEFAULT_BUCKETS  # padded prompt lengths, tokens
    completion_buckets: tuple[int, ...] = DEFAULT_BUCKETS  # padded completion lengths, tokens
    # The decode loop runs in this many geometric segments (Tc/8, Tc/4, Tc/2, Tc for 4), each
    # attending only to the cache prefix it can have filled: less KV-cache traffic per step, at the
    # cost of one compiled loop body per segment. 1 attends to the whole cache at every step.
    decode_segments: int = 4

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingConfig.max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"SamplingConfig.temperature={self.temperature} must be >= 0")
        if self.decode_segments < 1:
            raise ValueError(f"SamplingConfig.decode_segments={self.decode_segments} must be >= 1")
        if self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k={self.top_k} must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p={self.top_p} must be in (0, 1]")
        for name in ("prompt_buckets", "completion_buckets"):
            buckets = getattr(self, name)
            if not buckets or list(buckets) != sorted(set(buckets)):
                raise ValueError(f"SamplingConfig.{name}={buckets} must be increasing, non-empty")
        if self.max_new_tokens > self.completion_buckets[-1]:
            raise ValueError(
                f"SamplingConfig.max_new_tokens={self.max_new_tokens} exceeds the largest "
                f"completion bucket {self.completion_buckets[-1]}"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@struct.dataclass
class SampleOutput:
    """A batch of rollouts. Prompts are left-padded; completions are right-padded with pad_id."""

    prompt_BxTp: jax.Array  # int32
    prompt_mask_BxTp: jax.Array  # bool
    tokens_BxTc: jax.Array  # int32, the sampled completion (stop token included)
    mask_BxTc: jax.Array  # bool, True on generated tokens up to and including the stop token
    logps_BxTc: jax.Array  # float32, log-prob of each sampled token under the tempered policy
    # float32, self-certainty of each step's distribution, KL(U || pi) = -mean_v log pi_v - log V
    # (docs/rlif.md), from the same logits as logps; 0 after a row stops.
    certainty_BxTc: jax.Array
    lengths_B: jax.Array  # int32, number of completion tokens
    stopped_B: jax.Array  # bool, ended on a stop token (False: ran out of max_new_tokens)


@struct.dataclass
class _LoopState:
    step: jax.Array  # scalar int32: tokens emitted so far
    cache: transformer.KVCache
    logits_BxV: jax.Array  # float32, next-token logits
    done_B: jax.Array
    tokens_BxTc: jax.Array
    logps_BxTc: jax.Array
    certainty_BxTc: jax.Array


def bucket(n: int, buckets: Sequence[int], what: str) -> int:
    """The smallest bucket >= n."""
    i = bisect.bisect_left(buckets, n)
    if i == len(buckets):
        raise ValueError(f"{what} of {n} tokens exceeds the largest bucket {buckets[-1]}")
    return buckets[i]


def filter_logits(logits_BxV: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """Tempered logits with top-k / top-p truncation applied (masked entries at -inf)."""
    logits_BxV = logits_BxV / cfg.temperature
    if cfg.top_k:
        kth_Bx1 = jax.lax.top_k(logits_BxV, cfg.top_k)[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
    if cfg.top_p < 1:
        sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
        probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before
        # it < p.
        before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
        n_keep_B = jnp.sum(before_BxV < cfg.top_p, axis=-1)
        cutoff_Bx1 = jnp.take_along_axis(sorted_BxV, n_keep_B[:, None] - 1, axis=-1)
        logits_BxV = jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)
    return logits_BxV


def sample_token(logits_BxV: jax.Array, u_B: jax.Array, cfg: SamplingConfig):
    """Samples one token per row; returns (tokens_B, logps_B, certainty_B): logps under the
    tempered policy, certainty its KL from uniform (self-certainty).

    Sampling is by inverse CDF with one uniform `u_B` per row: exact for the categorical
    distribution and much cheaper on CPU than Gumbel-max, which draws a random number per vocabulary
    entry.
    """
    if cfg.greedy:
        tokens_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
        logps_BxV = jax.nn.log_softmax(logits_BxV, axis=-1)
    else:
        logps_BxV = jax.nn.log_softmax(logits_BxV / cfg.temperature, axis=-1)
        if cfg.top_k or cfg.top_p < 1:
            probs_BxV = jax.nn.softmax(filter_logits(logits_BxV, cfg), axis=-1)
        else:
            probs_BxV = jnp.exp(logps_BxV)
        cdf_BxV = jnp.cumsum(probs_BxV, axis=-1)
        u_B = u_B * cdf_BxV[:, -1]
        # The first index whose cdf exceeds u; zero-probability entries never qualify.
        tokens_B = jnp.sum(cdf_BxV <= u_B[:, None], axis=-1, dtype=jnp.int32)
        tokens_B = jnp.minimum(tokens_B, logits_BxV.shape[-1] - 1)
    certainty_B = -jnp.mean(logps_BxV, axis=-1) - jnp.log(jnp.float32(logits_BxV.shape[-1]))
    return tokens_B, jnp.take_along_axis(logps_BxV, tokens_B[:, None], axis=-1)[:, 0], certainty_B


def _prefill(params, prompt_BxTp, prompt_mask_BxTp, *, model_cfg, Tc):
    """Runs the prompt through the model into a fresh cache of Tp + Tc slots."""
    B, Tp = prompt_BxTp.shape
    cache = transformer.init_cache(model_cfg, B, Tp + Tc)
    positions_BxTp = transformer.positions_from_mask(prompt_mask_BxTp)
    hidden_BxTxD, cache = transformer.decode_hidden(
        params, prompt_BxTp, positions_BxTp, prompt_mask_BxTp, model_cfg, cache, 0
    )
    logits_BxV = transformer.lm_logits(params, hidden_BxTxD[:, -1:])[:, 0]
    return cache, logits_BxV


def segment_ends(Tc: int, segments: int) -> tuple[int, ...]:
    """Step counts at which the decode loop's segments end: geometric, the last one Tc."""
    ends = {max(1, -(-Tc // 2 ** (segments - 1 - i))) for i in range(segments)}
    return tuple(sorted(ends))


def _decode(
    params, cache, logits_BxV, prompt_mask_BxTp, stop_BxX, max_new, u_BxTc, *, model_cfg, cfg, Tc
):
    """The decode loop: one token per iteration until max_new tokens or every row has stopped.

    The loop runs in segments (`segment_ends`); segment j only sees the first Tp + end_j cache
    slots, which is every slot it can attend to, so early steps do not stream the empty tail of
    the cache. `u_BxTc` holds every uniform the sampler will use, drawn up front: no PRNG work
    inside the loop body.
    """
    B, Tp = prompt_mask_BxTp.shape
    prompt_len_B = jnp.sum(prompt_mask_BxTp, axis=1, dtype=jnp.int32)

    def cond(s: _LoopState, end: int):
        return (s.step < jnp.minimum(max_new, end)) & ~jnp.all(s.done_B)

    def body(s: _LoopState) -> _LoopState:
        u_B = jax.lax.dynamic_index_in_dim(u_BxTc, s.step, axis=1, keepdims=False)
        tok_B, logp_B, cert_B = sample_token(s.logits_BxV, u_B, cfg)
        live_B = ~s.done_B
        tok_B = jnp.where(live_B, tok_B, cfg.pad_id)
        tokens = jax.lax.dynamic_update_slice_in_dim(s.tokens_BxTc, tok_B[:, None], s.step, 1)
        logps = jax.lax.dynamic_update_slice_in_dim(
            s.logps_BxTc, jnp.where(live_B, logp_B, 0.0)[:, None], s.step, 1
        )
        certainty = jax.lax.dynamic_update_slice_in_dim(
            s.certainty_BxTc, jnp.where(live_B, cert_B, 0.0)[:, None], s.step, 1
        )
        done_B = s.done_B | jnp.any(tok_B[:, None] == stop_BxX, axis=1)
        hidden_Bx1xD, new_cache = transformer.decode_hidden(
            params,
            tok_B[:, None],
            (prompt_len_B + s.step)[:, None],
            live_B[:, None],
            model_cfg,
            s.cache,
            Tp + s.step,
        )
        logits = transformer.lm_logits(params, hidden_Bx1xD)[:, 0]
        return _LoopState(s.step + 1, new_cache, logits, done_B, tokens, logps, certainty)

    init = _LoopState(
        step=jnp.zeros((), jnp.int32),
        cache=cache,
        logits_BxV=logits_BxV,
        done_B=jnp.zeros((B,), bool),
        tokens_BxTc=jnp.full((B, Tc), cfg.pad_id, jnp.int32),
        logps_BxTc=jnp.zeros((B, Tc), jnp.float32),
        certainty_BxTc=jnp.zeros((B, Tc), jnp.float32),
    )
    s = init
    for end in segment_ends(Tc, cfg.decode_segments):
        s = s.replace(cache=transformer.cache_prefix(cache, Tp + end))
        s = jax.lax.while_loop(functools.partial(cond, end=end), body, s)
        cache = transformer.write_prefix(cache, s.cache)
    # A row's completion is everything up to and including its stop token (pad_id may be sampled
    # legitimately mid-sequence, so the mask comes from the stop position, not from token values).
    is_stop_BxTc = jnp.any(s.tokens_BxTc[:, :, None] == stop_BxX[:, None, :], axis=-1)
    is_stop_BxTc &= jnp.arange(Tc)[None, :] < s.step  # only emitted slots; the rest is pad_id
    stopped_B = jnp.any(is_stop_BxTc, axis=1)
    first_stop_B = jnp.argmax(is_stop_BxTc, axis=1)
    lengths_B = jnp.where(stopped_B, first_stop_B + 1, jnp.minimum(s.step, Tc)).astype(jnp.int32)
    mask_BxTc = jnp.arange(Tc)[None, :] < lengths_B[:, None]
    return cache, s.tokens_BxTc, mask_BxTc, s.logps_BxTc, s.certainty_BxTc, lengths_B, stopped_B


_prefill_jit = jax.jit(_prefill, static_argnames=("model_cfg", "Tc"))
_decode_jit = jax.jit(
    _decode, static_argnames=("model_cfg", "cfg", "Tc"), donate_argnames=("cache",)
)
_uniforms_jit = jax.jit(
    lambda key, shape: jax.random.uniform(key, shape, jnp.float32), static_argnums=1
)


@functools.lru_cache(maxsize=64)
def _data_parallel_fns(mesh, model_cfg, cfg, Tc):
    """Prefill and decode under `shard_map` over the batch axes, params replicated.

    Each device runs its own loop on its rows with no communication at all, including the
    early-exit test, which under plain SPMD partitioning would be an all-reduce every step.
    """
    rows = P(mesh_lib.BATCH_AXES)
    prefill = jax.shard_map(
        functools.partial(_prefill, model_cfg=model_cfg, Tc=Tc),
        mesh=mesh,
        in_specs=(P(), rows, rows),
        out_specs=(rows, rows),
        check_vma=False,  # loop carries start replicated (zeros) and become per-device
    )
    decode = jax.shard_map(
        functools.partial(_decode, model_cfg=model_cfg, cfg=cfg, Tc=Tc),
        mesh=mesh,
        in_specs=(P(), rows, rows, rows, rows, P(), rows),
        out_specs=rows,
        check_vma=False,
    )
    return jax.jit(prefill), jax.jit(decode, donate_argnums=1)


def pad_prompts(
    prompts: Sequence[Sequence[int]], cfg: SamplingConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Left-pads token lists to the prompt bucket; returns (prompt_BxTp int32, mask_BxTp bool)."""
    if not prompts:
        raise ValueError("generate: no prompts")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"generate: prompt {i} is empty")
    Tp = bucket(max(len(p) for p in prompts), cfg.prompt_buckets, "prompt")
    prompt_BxTp = np.full((len(prompts), Tp), cfg.pad_id, np.int32)
    mask_BxTp = np.zeros((len(prompts), Tp), bool)
    for i, p in enumerate(prompts):
        prompt_BxTp[i, Tp - len(p) :] = p
        mask_BxTp[i, Tp - len(p) :] = True
    return prompt_BxTp, mask_BxTp


def stop_table(
    batch: int, cfg: SamplingConfig, extra_stop_ids: Sequence[Sequence[int]] | None = None
) -> np.ndarray:
    """Per-row stop tokens [B, X]: the shared eos_ids plus each row's extras, padded with -1."""
    rows = [
        list(cfg.eos_ids) + list(extra_stop_ids[i] if extra_stop_ids else []) for i in range(batch)
    ]
    width = max(1, max(len(r) for r in rows))
    width = 1 << (width - 1).bit_length()  # a power of two, so varied extras rarely recompile
    table = np.full((batch, width), -1, np.int32)
    for i, r in enumerate(rows):
        table[i, : len(r)] = r
    return table


def generate(
    params: params_lib.Params,
    prompts: Sequence[Sequence[int]] | tuple[np.ndarray, np.ndarray],
    key: jax.Array,
    *,
    model_cfg: config_lib.ModelConfig,
    cfg: SamplingConfig,
    extra_stop_ids: Sequence[Sequence[int]] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> SampleOutput:
    """Samples up to `cfg.max_new_tokens` tokens for each prompt.

    `prompts` is a list of token-id lists, or an already left-padded (prompt_BxTp, mask_BxTp) pair
    whose length is a bucket. Deterministic for a given key. The returned completion arrays have the
    completion bucket's length; entries past `lengths_B` are padding.

    With a `mesh`, the batch is split over its data x fsdp axes (the batch must divide evenly) and
    `params` must already live on the mesh (placed with `mesh.param_shardings`). A pure data mesh
    (fsdp = tensor = 1) runs one independent loop per device under `shard_map`; other meshes are
    partitioned by XLA from the parameter shardings.
    """
    padded = (
        isinstance(prompts, tuple)
        and len(prompts) == 2
        and all(getattr(a, "ndim", 0) == 2 for a in prompts)
    )
    if padded:
        prompt_BxTp, mask_BxTp = prompts
        chex.assert_equal_shape([prompt_BxTp, mask_BxTp])
    else:
        prompt_BxTp, mask_BxTp = pad_prompts(prompts, cfg)
    B = prompt_BxTp.shape[0]
    Tc = bucket(cfg.max_new_tokens, cfg.completion_buckets, "max_new_tokens")
    stop_BxX = stop_table(B, cfg, extra_stop_ids)
    # The static form drops what is passed as data, so a new budget or stop set does not recompile.
    static_cfg = dataclasses.replace(cfg, max_new_tokens=Tc, eos_ids=())
    if mesh is not None:
        shards = mesh_lib.batch_size_of(mesh)
        if B % shards:
            raise ValueError(f"generate: batch of {B} prompts does not split over {shards} shards")
        prompt_BxTp, mask_BxTp, stop_BxX = jax.device_put(
            (prompt_BxTp, mask_BxTp, stop_BxX), mesh_lib.batch_sharding(mesh)
        )
    u_BxTc = _uniforms_jit(key, (B, Tc))
    max_new = np.int32(cfg.max_new_tokens)
    if mesh is not None and mesh.shape["fsdp"] == mesh.shape["tensor"] == 1:
        u_BxTc = jax.device_put(u_BxTc, mesh_lib.batch_sharding(mesh))
        prefill, decode = _data_parallel_fns(mesh, model_cfg, static_cfg, Tc)
        cache, logits_BxV = prefill(params, prompt_BxTp, mask_BxTp)
        _, tokens, mask, logps, certainty, lengths, stopped = decode(
            params, cache, logits_BxV, mask_BxTp, stop_BxX, max_new, u_BxTc
        )
    else:
        cache, logits_BxV = _prefill_jit(params, prompt_BxTp, mask_BxTp, model_cfg=model_cfg, Tc=Tc)
        _, tokens, mask, logps, certainty, lengths, stopped = _decode_jit(
            params,
            cache,
            logits_BxV,
            mask_BxTp,
            stop_BxX,
            max_new,
            u_BxTc,
            model_cfg=model_cfg,
            cfg=static_cfg,
            Tc=Tc,
        )
    return SampleOutput(
        prompt_BxTp=jnp.asarray(prompt_BxTp),
        prompt_mask_BxTp=jnp.asarray(mask_BxTp),
        tokens_BxTc=tokens,
        mask_BxTc=mask,
        logps_BxTc=logps,
        certainty_BxTc=certainty,
        lengths_B=lengths,
        stopped_B=stopped,
    )
