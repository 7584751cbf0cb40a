"""The parameter pytree of the decoder family, its logical axis names, and random init.

Representation: registered frozen dataclasses (`flax.struct.dataclass`) holding plain arrays, one
`LayerParams` per layer in a tuple. We chose this over NNX modules because every consumer of the
weights (jitted losses, the sampler, HF import/export, checkpoints, RELEX's per-tensor streaming,
sharding rules) wants a plain pytree with stable field names; NNX would need `nnx.split` at every
one of those boundaries and would add nothing the forward pass uses. Optional tensors (q/k/v biases,
q/k norms, an untied LM head) are `None` when the config does not use them, so the pytree structure
follows the config.

Weight layouts put the contracted input dimension first (`q: [D, H, K]`, `down: [F, D]`), so the
forward pass is a set of einsums whose subscripts document the shapes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import PartitionSpec as P

from rlvr_jax.models import config as config_lib


@struct.dataclass
class LayerParams:
    attn_norm: jax.Array  # [D]
    q: jax.Array  # [D, H, K]
    k: jax.Array  # [D, N, K]
    v: jax.Array  # [D, N, K]
    o: jax.Array  # [H, K, D]
    mlp_norm: jax.Array  # [D]
    gate: jax.Array  # [D, F]
    up: jax.Array  # [D, F]
    down: jax.Array  # [F, D]
    q_bias: jax.Array | None = None  # [H, K]   (qkv_bias)
    k_bias: jax.Array | None = None  # [N, K]
    v_bias: jax.Array | None = None  # [N, K]
    q_norm: jax.Array | None = None  # [K]      (qk_norm)
    k_norm: jax.Array | None = None  # [K]


@struct.dataclass
class Params:
    embed: jax.Array  # [V, D]
    layers: tuple[LayerParams, ...]
    final_norm: jax.Array  # [D]
    lm_head: jax.Array | None = None  # [D, V]; None when embeddings are tied


def _layer_axes(cfg: config_lib.ModelConfig) -> LayerParams:
    bias = cfg.qkv_bias
    norm = cfg.qk_norm
    return LayerParams(
        attn_norm=P("norm"),
        q=P("embed", "heads", "head_dim"),
        k=P("embed", "kv_heads", "head_dim"),
        v=P("embed", "kv_heads", "head_dim"),
        o=P("heads", "head_dim", "embed"),
        mlp_norm=P("norm"),
        gate=P("embed", "mlp"),
        up=P("embed", "mlp"),
        down=P("mlp", "embed"),
        q_bias=P("heads", "head_dim") if bias else None,
        k_bias=P("kv_heads", "head_dim") if bias else None,
        v_bias=P("kv_heads", "head_dim") if bias else None,
        q_norm=P("head_dim") if norm else None,
        k_norm=P("head_dim") if norm else None,
    )


def param_axes(cfg: config_lib.ModelConfig) -> Params:
    """Logical axis names of every parameter, as a Params pytree of PartitionSpecs (leaves).

    `rlvr_jax.mesh` maps these logical names to mesh axes; the model never names a mesh axis.
    """
    return Params(
        embed=P("vocab", "embed"),
        layers=tuple(_layer_axes(cfg) for _ in range(cfg.num_layers)),
        final_norm=P("norm"),
        lm_head=None if cfg.tie_embeddings else P("embed", "vocab"),
    )


def param_shapes(cfg: config_lib.ModelConfig) -> Params:
    """Abstract params (`jax.ShapeDtypeStruct` leaves) without allocating anything."""
    return jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))


def init_params(cfg: config_lib.ModelConfig, key: jax.Array, std: float = 0.02) -> Params:
    """Random init: normal(std) matrices, unit norms, zero biases; stored in `cfg.param_dtype`."""
    D, H, N, K, F, V = cfg.dims
    dtype = jnp.dtype(cfg.param_dtype)
    keys = iter(jax.random.split(key, 2 + 7 * cfg.num_layers))

    def normal(*shape: int) -> jax.Array:
        return (std * jax.random.normal(next(keys), shape, jnp.float32)).astype(dtype)

    def layer() -> LayerParams:
        return LayerParams(
            attn_norm=jnp.ones((D,), dtype),
            q=normal(D, H, K),
            k=normal(D, N, K),
            v=normal(D, N, K),
            o=normal(H, K, D),
            mlp_norm=jnp.ones((D,), dtype),
            gate=normal(D, F),
            up=normal(D, F),
            down=normal(F, D),
            q_bias=jnp.zeros((H, K), dtype) if cfg.qkv_bias else None,
            k_bias=jnp.zeros((N, K), dtype) if cfg.qkv_bias else None,
            v_bias=jnp.zeros((N, K), dtype) if cfg.qkv_bias else None,
            q_norm=jnp.ones((K,), dtype) if cfg.qk_norm else None,
            k_norm=jnp.ones((K,), dtype) if cfg.qk_norm else None,
        )

    embed = normal(V, D)
    head_key = next(keys)
    layers = tuple(layer() for _ in range(cfg.num_layers))
    lm_head = None
    if not cfg.tie_embeddings:
        lm_head = (std * jax.random.normal(head_key, (D, V), jnp.float32)).astype(dtype)
    return Params(embed=embed, layers=layers, final_norm=jnp.ones((D,), dtype), lm_head=lm_head)


def count_params(params: Params) -> int:
    """Number of scalars in a params pytree."""
    return sum(x.size for x in jax.tree.leaves(params))
