"""Per-device bytes of one RL step: parameters, optimizer state, KV cache and activations.

Shapes and shardings come from the library itself (`params.param_shapes`, `params.param_axes`,
`mesh.DEFAULT_RULES`, the optimizer's own `init`), so they follow the code. Activation figures are
counts of the buffers live at each phase's peak: the residuals JAX saves for the backward pass of
`train.step.completion_logps` (read off `jax.ad_checkpoint` residuals of `models/transformer.py`),
calibrated against XLA's buffer assignment (`compiled.memory_analysis()`) on CPU. tests/plan_test.py
checks the totals against compiled functions.

Calibration (train step, one CPU device, f32 params): tiny, qwen2_3m and qwen2_30m with and without
remat land within 7% of `memory_analysis()` at 8 rows. With bfloat16 compute they land 6-12% under:
XLA:CPU emulates bfloat16 arithmetic in float32 and keeps some float32 intermediates, while the
count here assumes native bfloat16 as on TPU and GPU. Remat scans the layers
(transformer._remat_scan), so it takes effect on CPU too; the chunked LM head and blocked attention
(`logits_chunk`, `attention_chunk`; docs/long_context.md) are counted by their chunk sizes.

Dimensions as in train/state.py and sampling.py: b rows on one device, T = Tp + Tc tokens, S
KV-cache slots, D, H, N, K, F, V. Heads and F split over `tensor`; D, T and V do not
(mesh.DEFAULT_RULES).
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from rlvr_jax import mesh as mesh_lib
from rlvr_jax import sampling
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.train import state as state_lib

MeshShape = tuple[int, int, int]  # (data, fsdp, tensor), mesh.MESH_AXES order

# --- Calibrated buffer counts (per decoder layer, per token unless noted) ---
# Saved for the backward pass without remat: layer input, both RMSNorm outputs and the mid-layer
# stream (7 D-sized, compute dtype) plus the RMSNorms' float32 path (2 D-sized); q and the
# attention output (H*K each), the layer's keys and values (N*K each); gate, up, silu(gate), its
# derivative term and the product (5 F-sized).
_D_SLOTS, _D_SLOTS_F32, _QO_SLOTS, _KV_SLOTS, _F_SLOTS = 7, 2, 2, 2, 5
_QK_NORM_SLOTS_F32 = 2  # Qwen3's q/k RMSNorm keeps its float32 path for q and k
# Attention scores per (head, query, key): float32 scores and probabilities plus the bool mask;
# XLA fuses the where() into the exponent, leaving ~11 bytes.
_SCORE_BYTES_TRAIN = 11
_SCORE_BYTES_FWD = 7.5  # forward only (scoring, prefill): one layer's scores and softmax
# Blocked attention's backward: one block's recomputed scores (tiny at T=2048, blocks of 128 vs 256
# queries: 4 bytes per (head, query, key) with remat, 2.4 without).
_SCORE_BYTES_BLOCK = 4
# [Tc, V] float32 buffers at the LM head while training: logits, log-softmax, the entropy metric's
# p and p*log p, then d(logits). Forward-only scoring needs one (log_softmax fuses into the gather).
_HEAD_SLOTS_TRAIN, _HEAD_SLOTS_FWD = 3.9, 1.0
_BWD_WORKSPACE = 0.3  # a layer's backward temporaries, as a fraction of its saved residuals
_EMBED_GRAD_EXTRA = 1.25  # the embedding's scatter-add gradient (and the tied head's second term)
_SAMPLER_VOCAB_SLOTS = 3  # [b, V] float32: logits, log-softmax and cdf of the sampled step


def _itemsize(dtype: str) -> int:
    return jnp.dtype(dtype).itemsize


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _local_size(shape: tuple[int, ...], spec: P, mesh_shape: MeshShape) -> int:
    """Elements of one device's shard of an array of `shape` laid out by mesh-axis `spec`."""
    sizes = dict(zip(mesh_lib.MESH_AXES, mesh_shape, strict=True))
    n = 1
    for i, dim in enumerate(shape):
        axis = spec[i] if i < len(spec) else None
        n *= _ceil_div(dim, sizes[axis]) if axis is not None else dim
    return n


@functools.lru_cache(maxsize=32)
def _param_leaves(cfg: config_lib.ModelConfig) -> tuple[tuple[tuple[int, ...], P, bool], ...]:
    """(shape, mesh spec, is embedding/head) of every parameter array, in pytree order."""
    shapes = params_lib.param_shapes(cfg)
    axes = params_lib.param_axes(cfg)
    is_p = lambda x: isinstance(x, P)
    specs = [mesh_lib.logical_to_spec(s) for s in jax.tree.leaves(axes, is_leaf=is_p)]
    leaves = jax.tree.leaves(shapes)
    embed = {id(shapes.embed), id(shapes.lm_head)}
    return tuple((tuple(x.shape), s, id(x) in embed) for x, s in zip(leaves, specs, strict=True))


def param_bytes(
    cfg: config_lib.ModelConfig,
    mesh_shape: MeshShape,
    dtype: str | None = None,
    *,
    only_embed: bool = False,
) -> int:
    """Bytes of one device's parameter shards (in `dtype`, default the config's param dtype)."""
    size = _itemsize(dtype or cfg.param_dtype)
    return sum(
        _local_size(shape, spec, mesh_shape) * size
        for shape, spec, is_embed in _param_leaves(cfg)
        if is_embed or not only_embed
    )


def gathered(mesh_shape: MeshShape) -> MeshShape:
    """The mesh as seen by a parameter after its FSDP all-gather (still split over tensor)."""
    return (mesh_shape[0], 1, mesh_shape[2])


@functools.lru_cache(maxsize=32)
def _opt_state_params_dtypes(cfg: config_lib.ModelConfig) -> tuple[tuple[str, ...], int]:
    """The dtypes of the params-shaped trees in the optimizer state, and its scalar bytes.

    Read off the real optimizer (`train.state.make_optimizer`), so AdamW's mu/nu dtypes follow
    optax (the params' dtype unless `mu_dtype` is set).
    """
    optimizer = state_lib.make_optimizer(state_lib.OptConfig())
    opt = jax.eval_shape(optimizer.init, params_lib.param_shapes(cfg))
    is_params = lambda x: isinstance(x, params_lib.Params)
    trees = [t for t in jax.tree.leaves(opt, is_leaf=is_params) if is_params(t)]
    dtypes = tuple(str(jax.tree.leaves(t)[0].dtype) for t in trees)
    rest = [x for x in jax.tree.leaves(opt, is_leaf=is_params) if not is_params(x)]
    return dtypes, sum(x.size * x.dtype.itemsize for x in rest)


def optimizer_bytes(cfg: config_lib.ModelConfig, mesh_shape: MeshShape) -> int:
    """One device's optimizer state: each moment sharded like the params."""
    dtypes, scalars = _opt_state_params_dtypes(cfg)
    return sum(param_bytes(cfg, mesh_shape, d) for d in dtypes) + scalars


def kv_cache_bytes(cfg: config_lib.ModelConfig, rows: int, slots: int, tensor: int) -> int:
    """Keys and values of every layer for `rows` sequences of `slots` slots (compute dtype)."""
    N_loc = _ceil_div(cfg.num_kv_heads, tensor)
    per_layer = 2 * rows * N_loc * slots * cfg.head_dim * _itemsize(cfg.compute_dtype)
    return cfg.num_layers * per_layer + rows * slots  # + the bool slot mask


def batch_bytes(rows: int, Tp: int, Tc: int, reference: bool) -> int:
    """One device's TrainBatch: int32 tokens, bool masks, float32 old logps, advantages, ref."""
    return rows * (Tp * 5 + Tc * (5 + 4 + 4 + 4 * reference))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainActivations:
    """Activation bytes of one micro-batch's forward + backward on one device."""

    saved: int  # residuals kept for the backward pass, all layers
    layer: int  # one layer's full residual set (what remat recomputes)
    head: int  # the LM head and loss at their peak
    peak: int  # the most live at once


def _layer_residual_bytes(cfg: config_lib.ModelConfig, b: int, T: int, tensor: int) -> float:
    """Residuals one decoder layer saves for its backward pass, without remat."""
    D, H, N, K, F, _ = cfg.dims
    H_loc, N_loc, F_loc = (_ceil_div(x, tensor) for x in (H, N, F))
    c = _itemsize(cfg.compute_dtype)
    per_token = (
        D * (_D_SLOTS * c + _D_SLOTS_F32 * 4)
        + H_loc * K * _QO_SLOTS * c
        + N_loc * K * _KV_SLOTS * c
        + F_loc * _F_SLOTS * c
        + cfg.qk_norm * (H_loc + N_loc) * K * _QK_NORM_SLOTS_F32 * 4
    )
    # Blocked attention (cfg.attention_chunk) keeps no scores: its checkpointed blocks save their
    # queries, keys and values (counted above) and recompute one block's scores in the backward.
    scores = 0 if _attention_blocked(cfg, T) else H_loc * T * T * _SCORE_BYTES_TRAIN
    return b * (T * per_token + scores)


def _attention_blocked(cfg: config_lib.ModelConfig, T: int) -> bool:
    """Whether T queries attend in blocks of cfg.attention_chunk (transformer._attention)."""
    return 0 < cfg.attention_chunk < T


def _score_rows(cfg: config_lib.ModelConfig, T: int) -> int:
    """Query rows whose scores are live at once: all T, or one block of them."""
    return cfg.attention_chunk if _attention_blocked(cfg, T) else T


def _head_rows(cfg: config_lib.ModelConfig, b: int, Tc: int) -> int:
    """Token rows of [rows, V] float32 LM-head buffers live at once: all b x Tc, or one chunk
    (cfg.logits_chunk, forward.chunked_head)."""
    return min(cfg.logits_chunk, b * Tc) if cfg.logits_chunk else b * Tc


def stacked_layer_bytes(cfg: config_lib.ModelConfig, mesh_shape: MeshShape) -> int:
    """Remat scans the layers over their stacked params (transformer._remat_scan): one stacked
    copy of the layer weights, and one of their gradient in the backward pass. 0 without remat.
    The stack is of this device's shards, in the param dtype: it is sharded like the params."""
    if not cfg.remat:
        return 0
    return cfg.num_layers * _layer_weights(cfg, mesh_shape, cfg.param_dtype)


def _layer_weights(cfg: config_lib.ModelConfig, mesh_shape: MeshShape, dtype: str) -> int:
    """One decoder layer's weights on one device, in `dtype`."""
    return (
        param_bytes(cfg, mesh_shape, dtype) - param_bytes(cfg, mesh_shape, dtype, only_embed=True)
    ) // cfg.num_layers


def _transient_weights(cfg: config_lib.ModelConfig, mesh_shape: MeshShape) -> tuple[int, int]:
    """(one layer, embedding/head) weights materialised for a matmul: the FSDP all-gather and the
    cast to the compute dtype. Zero when neither happens."""
    g = gathered(mesh_shape)
    if mesh_shape[1] == 1 and cfg.param_dtype == cfg.compute_dtype:
        return 0, 0
    layer = _layer_weights(cfg, g, cfg.compute_dtype)
    head = param_bytes(cfg, g, cfg.compute_dtype, only_embed=True)
    if not cfg.tie_embeddings:
        head //= 2  # the forward uses the LM head; the embedding is a gather
    return layer, head


def train_activations(
    cfg: config_lib.ModelConfig, mesh_shape: MeshShape, b: int, Tp: int, Tc: int
) -> TrainActivations:
    """Peak activation bytes of `train.step` on one micro-batch of `b` rows per device.

    Without remat every layer's residuals stay live until its backward; with remat
    (`cfg.remat`, a scanned jax.checkpoint per layer) each layer keeps only its input, plus the
    stacked layer weights, and the backward recomputes one layer at a time. Blocked attention
    (`cfg.attention_chunk`) drops the [T, T] scores from the residuals and recomputes one block's
    in the backward; the chunked LM head (`cfg.logits_chunk`) keeps one chunk's [chunk, V]
    buffers instead of [b * Tc, V].
    """
    T, tensor = Tp + Tc, mesh_shape[2]
    D, V, c = cfg.d_model, cfg.vocab_size, _itemsize(cfg.compute_dtype)
    layer = _layer_residual_bytes(cfg, b, T, tensor)
    layer_w, head_w = _transient_weights(cfg, mesh_shape)
    if not cfg.remat and cfg.param_dtype != cfg.compute_dtype:
        layer += _layer_weights(cfg, gathered(mesh_shape), cfg.compute_dtype)  # saved casts
    saved_per_layer = b * T * D * c if cfg.remat else layer
    # Embedding output and final hidden states, plus the float32 [Tc, V] head buffers.
    head = 2 * b * T * D * c + _HEAD_SLOTS_TRAIN * _head_rows(cfg, b, Tc) * V * 4 + head_w
    block = 0
    if _attention_blocked(cfg, T):  # one block's scores, recomputed in the backward
        block = b * _ceil_div(cfg.num_heads, tensor) * cfg.attention_chunk * T * _SCORE_BYTES_BLOCK
    stack = stacked_layer_bytes(cfg, mesh_shape)
    backward = (layer if cfg.remat else 0) + _BWD_WORKSPACE * layer + layer_w + block + stack
    saved = cfg.num_layers * saved_per_layer + stack
    return TrainActivations(
        saved=int(saved),
        layer=int(layer),
        head=int(head),
        peak=int(saved + max(head, backward)),
    )


def train_step_temp(
    cfg: config_lib.ModelConfig, mesh_shape: MeshShape, b: int, Tp: int, Tc: int
) -> int:
    """XLA temporaries of one `train.step.train_step` call on one device.

    At the start of the backward pass the activations peak; at its end two gradient trees (the
    micro-batch's and the accumulated one, param dtype) and the embedding's scatter-add gradient
    are live. Since the non-finite guard became a `lax.cond` around the update (the update runs in
    place on the donated state), XLA:CPU's compiled temporaries are the larger of the two, with no
    separate accumulator on top (tests/plan_test.py checks 1x and 2x micro-batches, remat, bf16).
    """
    grads = param_bytes(cfg, mesh_shape)
    embed = param_bytes(cfg, mesh_shape, only_embed=True)
    acts = train_activations(cfg, mesh_shape, b, Tp, Tc).peak
    return int(max(acts, 2 * grads + _EMBED_GRAD_EXTRA * embed))


def _forward_layer_bytes(cfg: config_lib.ModelConfig, b: int, T: int, S: int, tensor: int) -> float:
    """Temporaries of one layer of a forward pass without gradients (T queries, S keys)."""
    H_loc, F_loc = _ceil_div(cfg.num_heads, tensor), _ceil_div(cfg.mlp_dim, tensor)
    c = _itemsize(cfg.compute_dtype)
    return b * (H_loc * _score_rows(cfg, T) * S * _SCORE_BYTES_FWD + T * F_loc * c)


def scoring_temp(
    cfg: config_lib.ModelConfig, mesh_shape: MeshShape, b: int, Tp: int, Tc: int
) -> int:
    """Temporaries of `train.step.make_logps_fn` (reference scoring) on `b` rows per device."""
    T, c = Tp + Tc, _itemsize(cfg.compute_dtype)
    layer_w, head_w = _transient_weights(cfg, mesh_shape)
    layer = _forward_layer_bytes(cfg, b, T, T, mesh_shape[2]) + layer_w
    head = _HEAD_SLOTS_FWD * _head_rows(cfg, b, Tc) * cfg.vocab_size * 4
    head += b * T * cfg.d_model * c + head_w
    return int(max(layer, head))


def sampling_temp(
    cfg: config_lib.ModelConfig,
    mesh_shape: MeshShape,
    b: int,
    Tp: int,
    Tc: int,
    decode_segments: int,
) -> int:
    """Temporaries of the sampler beyond its KV cache: the prefill's per-layer working set, or
    the decode loop's copy of the cache prefix its current segment attends to."""
    S, tensor = Tp + Tc, mesh_shape[2]
    layer_w, head_w = _transient_weights(cfg, mesh_shape)
    prefill = _forward_layer_bytes(cfg, b, Tp, S, tensor) + layer_w
    ends = sampling.segment_ends(Tc, decode_segments)
    prefix = kv_cache_bytes(cfg, b, Tp + ends[-2], tensor) if len(ends) > 1 else 0
    decode = prefix + _SAMPLER_VOCAB_SLOTS * b * cfg.vocab_size * 4 + max(layer_w, head_w)
    return int(max(prefill, decode))


def rows_per_device(rows: int, mesh_shape: MeshShape) -> int:
    """Rows of a batch on one device: split over data x fsdp, rounded up."""
    return _ceil_div(rows, mesh_shape[0] * mesh_shape[1])
